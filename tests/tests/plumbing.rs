//! The testbed's plumbing without a load balancer: client → router → one real
//! nginx + php-fpm backend with the VIP on loopback, answering directly.

use marllb_testbed::backend::BackendSpec;
use marllb_testbed::load::Summary;
use marllb_testbed::topology::Topology;

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn client_reaches_a_real_backend_through_the_router() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("plumb", "p", 5);
    let specs = vec![
        BackendSpec {
            id: "be0".into(),
            addr: "198.18.2.100".into(),
            cpus: 0.5,
            workers: 4,
            backlog: 128,
        },
        BackendSpec {
            id: "be1".into(),
            addr: "198.18.2.101".into(),
            cpus: 0.5,
            workers: 4,
            backlog: 128,
        },
    ];
    let topo = Topology::build(&prefix, &specs, 0, &dir).expect("topology");
    for b in &topo.backends {
        assert!(
            marllb_testbed::backend::probe(&topo.client, &b.spec.addr).unwrap(),
            "{} static page",
            b.spec.id
        );
    }
    let loadgen = std::path::Path::new(env!("CARGO_BIN_EXE_marllb-loadgen"));
    let line = topo
        .load(
            loadgen,
            &marllb_testbed::load::LoadArgs::constant(20.0, 100000, 2.0, "be0=1,be1=1")
                .expect("load arguments"),
        )
        .expect("load");
    let s: Summary = serde_json::from_str(&line).expect("summary json");
    eprintln!("{line}");
    if s.ok != 40 {
        let out = marllb_testbed::netns::in_ns(&topo.client, "curl")
            .args([
                "-sv",
                "--max-time",
                "5",
                "http://198.18.255.1/dummy.php/?n=10",
            ])
            .output()
            .unwrap();
        eprintln!(
            "curl: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for b in &topo.backends {
            for f in ["nginx-error.log", "php-fpm.log", "php-fpm.out", "nginx.out"] {
                let log = std::fs::read_to_string(b.dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                eprintln!("--- {} {f}\n{}", b.spec.id, tail.join("\n"));
            }
        }
    }
    assert_eq!(s.requests, 40);
    assert_eq!(s.ok, 40, "{s:?}");
    assert_eq!(s.per_backend.get("be0"), Some(&40));
    drop(topo);
    // Everything is gone.
    let ns = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(!ns.contains(&prefix), "namespaces left behind: {ns}");
    let _ = std::fs::remove_dir_all(&dir);
}
