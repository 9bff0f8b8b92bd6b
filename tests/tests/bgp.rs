//! BGP in the testbed: two LB nodes announce the VIP to the router, which
//! installs one multipath route from what it learned; a withdraw, a stopped
//! speaker (hold time) and a killed one each take their path away. Only the
//! next-hop states are asserted; the times are printed.

use std::net::Ipv4Addr;
use std::time::Duration;

use marllb_testbed::netns::Signal;
use marllb_testbed::topology::{lb_next_hop, Routing, Topology};
use marllb_testbed::VIP;

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn hop(i: usize) -> Ipv4Addr {
    lb_next_hop(i).parse().unwrap()
}

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn router_learns_the_vip_by_bgp() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("bgp", "g", 5);
    // The topology (and with it every namespace and bird) is dropped on a
    // failed assertion too.
    let mut topo = Topology::build_with(&prefix, &[], 2, &dir, Routing::Bgp).expect("topology");
    let bound = Duration::from_secs(15);
    let speaker = |i: usize| topo.lbs[i].bgp.clone().expect("LB node speaker");
    let (s0, s1) = (speaker(0), speaker(1));

    // A command BIRD refuses is an error, although birdc exits 0.
    assert!(marllb_testbed::bgp::birdc(&s0.socket, &["enable", "no_such_protocol"]).is_err());
    // Nothing is announced until a node enables marllb_vip.
    assert_eq!(topo.vip_next_hops().unwrap(), Vec::<Ipv4Addr>::new());
    s0.enable().unwrap();
    s1.enable().unwrap();
    let announce = topo
        .wait_vip_next_hops(&[hop(0), hop(1)], bound)
        .expect("both data-plane next hops");
    // One kernel route, installed by BIRD, with both paths.
    let json = marllb_testbed::netns::run(
        marllb_testbed::netns::in_ns(&topo.router, "ip").args(["-j", "route", "show", VIP]),
    )
    .unwrap();
    eprintln!("router: {json}");
    let routes: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(routes.len(), 1, "{json}");
    assert_eq!(routes[0]["protocol"], "bird", "{json}");
    assert_eq!(
        routes[0]["nexthops"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );

    s0.disable().unwrap();
    let withdraw = topo
        .wait_vip_next_hops(&[hop(1)], bound)
        .expect("lb0 withdrawn");

    // A speaker that stops answering: the router drops it at hold time.
    s0.enable().unwrap();
    topo.wait_vip_next_hops(&[hop(0), hop(1)], bound)
        .expect("lb0 announced again");
    assert!(topo.tb.signal(&s0.label, Signal::STOP));
    let stopped = topo
        .wait_vip_next_hops(&[hop(1)], bound)
        .expect("stopped lb0 dropped");

    // A killed speaker: its kernel closes the TCP session.
    assert!(topo.tb.kill(&s1.label), "lb1's bird was running");
    let killed = topo.wait_vip_next_hops(&[], bound).expect("VIP route gone");

    println!(
        "bgp: announce after {:.3} s, withdraw after {:.3} s, bird killed -> gone after {:.3} s",
        announce.as_secs_f64(),
        withdraw.as_secs_f64(),
        killed.as_secs_f64()
    );
    println!(
        "bgp: bird stopped (SIGSTOP) -> dropped after {:.3} s (hold time 3 s)",
        stopped.as_secs_f64()
    );
    topo.tb.teardown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The BIRD configurations shipped for operators parse (`bird -p`).
#[test]
fn shipped_bird_configs_parse() {
    if !marllb_testbed::bgp::bird_installed() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/bird");
    for f in ["marllb-lb.conf", "marllb-router.conf"] {
        let out = std::process::Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(dir.join(f))
            .output()
            .expect("runs bird");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
