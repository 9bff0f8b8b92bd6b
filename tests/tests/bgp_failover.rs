//! Issue 15, first part: each LB node's controller announces the VIP through
//! its BIRD; the router's multipath route follows a data plane killed and
//! started again, and a BIRD that stops answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_route_follows_the_nodes() {
    if !marllb_testbed::netns::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // The learned policies (es, the product default; QMIX, the prototype's)
    // and SED.
    for policy in ["es", "qmix", "sed"] {
        check(policy);
    }
}

fn check(policy: &str) {
    if !marllb_testbed::bgp::bird_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("marllb-bgpf-{policy}-{}", std::process::id()));
    let prefix = format!("g{}{}", &policy[..1], std::process::id() % 10_000);
    let r = marllb_testbed::scenario::bgp(&prefix, &dir, policy).expect("scenario");
    // The learned policy really ran (not its fallback).
    let want = if policy == "sed" { "wcmp" } else { policy };
    assert_eq!(r.active_agent.as_deref(), Some(want), "{r:?}");
    let hops: Vec<Vec<&str>> = r
        .next_hops
        .iter()
        .map(|h| h.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        hops,
        [
            vec!["198.18.2.200", "198.18.2.201"],
            vec!["198.18.2.201"],
            vec!["198.18.2.200", "198.18.2.201"],
            vec!["198.18.2.200"],
            vec!["198.18.2.200", "198.18.2.201", "198.18.2.202"],
        ],
        "{r:?}"
    );
    assert!(r.withdrawn_after_kill_s.is_some(), "{r:?}");
    assert!(r.reannounced_after_s.is_some(), "{r:?}");
    assert!(r.dropped_after_bird_stop_s.is_some(), "{r:?}");
    // The killed node's established connections continue through the other
    // node (flow-state sync on): at least 99 % of them.
    let (held, broke) = r.held_across_kill;
    assert!(held >= 10, "{r:?}");
    assert!(broke * 100 <= held, "{r:?}");
    // So do the connections the router moves to the node when it returns:
    // it announced a new instance, and the other node sent it the records of
    // its established connections.
    let (held, broke) = r.held_across_return;
    assert!(held >= 10, "{r:?}");
    assert!(broke * 100 <= held, "{r:?}");
    // And those the router moves to a node that joins.
    let (held, broke) = r.held_across_join;
    assert!(held >= 10, "{r:?}");
    assert!(broke * 100 <= held, "{r:?}");
    // New connections on a settled route all succeed.
    assert_eq!(r.failed_on_settled_routes, 0, "{r:?}");
    assert!(r.summary.ok > 100, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
