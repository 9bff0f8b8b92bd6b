//! Real TCP connections from the client namespace through the router and the
//! DPDK data plane (net_af_packet, L2 direct server return) to real nginx +
//! php-fpm backends, which answer the client directly.

use marllb_testbed::lb::{LbOptions, Method};
use marllb_testbed::load::Summary;
use marllb_testbed::netns::Signal;
use marllb_testbed::scenario::Bed;
use marllb_testbed::topology::Process;

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn requests_flow_through_the_dpdk_data_plane() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("fwd", "f", 5);
    let specs = marllb_testbed::scenario::equal_backends(3, 0.25, 4, 128);
    let mut bed = Bed::builder(&prefix, &dir)
        .backends(specs)
        .dataplane(LbOptions {
            method: Method::Alias,
            ..LbOptions::default()
        })
        .build()
        .expect("topology and data plane");
    let log = bed.dataplane_log(0).expect("data plane log").to_path_buf();
    let topo = &mut bed.topo;
    let lb0 = Process::DataPlane(0).label();
    let loadgen = std::path::Path::new(env!("CARGO_BIN_EXE_marllb-loadgen"));
    let line = topo
        .load(
            loadgen,
            &marllb_testbed::load::LoadArgs::constant(60.0, 20000, 3.0, "be0=1,be1=1,be2=1")
                .expect("load arguments"),
        )
        .expect("load");
    eprintln!("{line}");
    let s: Summary = serde_json::from_str(&line).expect("summary");
    if s.ok != s.requests {
        if std::env::var_os("MARLLB_TB_PAUSE").is_some() {
            eprintln!("paused for 120 s: prefix {prefix}");
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        for (ns, cmd) in [
            (&topo.router, vec!["ip", "neigh"]),
            (&topo.router, vec!["ip", "route"]),
            (&topo.router, vec!["bridge", "fdb", "show", "br", "br0"]),
            (&topo.router, vec!["ip", "-s", "link"]),
            (&topo.lbs[0].ns, vec!["ip", "-s", "link", "show", "data0"]),
        ] {
            let out = marllb_testbed::netns::in_ns(ns, cmd[0])
                .args(&cmd[1..])
                .output()
                .unwrap();
            eprintln!(
                "$ {cmd:?} in {ns}\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        topo.tb.signal(&lb0, Signal::TERM);
        topo.tb.wait(&lb0, std::time::Duration::from_secs(10));
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    assert_eq!(s.ok, 180, "{s:?}");
    for (b, n) in &s.per_backend {
        assert!(*n > 20, "backend {b} got {n} of 180 with equal weights");
    }
    topo.tb.signal(&lb0, Signal::TERM);
    assert!(topo
        .tb
        .wait(&lb0, std::time::Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let summary = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "{}",
        summary
            .lines()
            .filter(|l| l.contains("summary") || l.contains("flows"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
}
