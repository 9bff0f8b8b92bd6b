//! A backend added to a running topology (an operator's new server) is wired
//! and started like the ones `Topology::build` made, and is torn down with
//! them.

use marllb_testbed::backend::probe;
use marllb_testbed::netns::in_ns;
use marllb_testbed::scenario::equal_backends;
use marllb_testbed::topology::Topology;

/// Removes the working directory however the test ends (the namespaces go
/// with the topology's drop, on unwinding too).
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn namespaces() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn a_backend_added_at_run_time_serves_and_is_torn_down() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("addbe", "ab", 5);
    let _rm = RemoveDir(dir.clone());
    let mut topo =
        Topology::build(&prefix, &equal_backends(2, 0.5, 4, 128), 0, &dir).expect("topology");

    let spec = topo.next_backend_spec(0.5, 4, 128);
    assert_eq!(
        (spec.id.as_str(), spec.addr.as_str()),
        ("be2", "198.18.2.102")
    );
    let j = topo.add_backend(spec).expect("add backend");
    assert_eq!(j, 2);
    let b = topo.backends[j].clone();
    eprintln!(
        "added {} at {} MAC {} (ns {})",
        b.spec.id, b.spec.addr, b.mac, b.ns
    );
    assert_eq!(b.mac, topo.tb.mac(&b.ns, "eth0").unwrap());

    // A taken id or address is refused, and the backend holding it survives.
    let mut dup = topo.next_backend_spec(0.5, 4, 128);
    dup.id = "be1".into();
    assert!(topo.add_backend(dup).is_err());
    let mut dup = topo.next_backend_spec(0.5, 4, 128);
    dup.addr = b.spec.addr.clone();
    assert!(topo.add_backend(dup).is_err());
    assert_eq!(topo.backends.len(), 3);

    // Every backend, the new one too, answers from the client across the router.
    for o in &topo.backends {
        assert!(
            probe(&topo.client, &o.spec.addr).unwrap(),
            "{} static page",
            o.spec.id
        );
    }
    // Its own PHP workers answer, under its own name.
    let out = in_ns(&topo.client, "curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}/dummy.php/?n=10", b.spec.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "be2 10");

    let cgroup = format!("/sys/fs/cgroup/cpu/{prefix}-be2");
    assert!(std::path::Path::new(&cgroup).exists(), "{cgroup}");
    assert!(namespaces().contains(&b.ns));
    drop(topo);
    let ns = namespaces();
    assert!(!ns.contains(&prefix), "namespaces left behind: {ns}");
    assert!(
        !std::path::Path::new(&cgroup).exists(),
        "{cgroup} left behind"
    );
}
