//! Issue 15, first part: each LB node's controller announces the VIP through
//! its BIRD; the router's multipath route follows a data plane killed and
//! started again, and a BIRD that stops answering.

use marllb_testbed::demo::Policy;

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn the_route_follows_the_nodes() {
    marllb_testbed::netns::require_root();
    // The learned policies (es, the product default; QMIX, the prototype's)
    // and SED, over flow-state sync; Maglev (every node computes the same
    // placement) as the reference.
    for policy in [Policy::Es, Policy::Qmix, Policy::Sed, Policy::Maglev] {
        check(policy);
    }
}

/// At least 99 % of `(held, survived)` survived, of at least `min` held.
fn most(what: &str, (held, survived): (usize, usize), min: usize, r: &impl std::fmt::Debug) {
    assert!(held >= min, "{what}: {held} held, fewer than {min}: {r:?}");
    assert!(
        (held - survived) * 100 <= held,
        "{what}: {survived} of {held} survived: {r:?}"
    );
}

/// All of them survived.
fn all(what: &str, (held, survived): (usize, usize), r: &impl std::fmt::Debug) {
    assert_eq!(
        held, survived,
        "{what}: {survived} of {held} survived: {r:?}"
    );
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn check(policy: Policy) {
    if !marllb_testbed::bgp::bird_installed() {
        return;
    }
    let name = policy.name();
    let (dir, prefix) =
        marllb_testbed::netns::test_place(&format!("bgpf-{name}"), &format!("g{}", &name[..1]), 4);
    let r = marllb_testbed::scenario::bgp(&prefix, &dir, policy).expect("scenario");
    // The policy really ran (not a fallback).
    let want = match policy {
        Policy::Sed | Policy::Maglev => "wcmp".to_string(),
        p => p.name(),
    };
    assert_eq!(r.active_agent.as_deref(), Some(want.as_str()), "{r:?}");
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
    // Withdrawn within 2 s of the data plane's death (the controller's
    // heartbeat timeout, then BIRD's update); the BIRD hold time is 3 s.
    assert!(r.withdrawn_after_kill_s.is_some_and(|s| s <= 2.0), "{r:?}");
    assert!(r.reannounced_after_s.is_some(), "{r:?}");
    assert!(
        r.dropped_after_bird_stop_s.is_some_and(|s| s <= 4.0),
        "{r:?}"
    );
    // The killed node's established connections continue through the other
    // node, each followed from its SYN: at least 99 % of them; all of the
    // surviving node's.
    let k = &r.held_across_kill;
    most("lb0's own across its kill", k.placed_by(0), 10, k);
    all("lb1's across lb0's kill", k.placed_by(1), k);
    assert!(k.connections.iter().all(|c| !c.after.contains(&0)), "{k:?}");
    // Those the router moves to the node when it returns (it announced a new
    // instance; lb1 sent it the records of its established connections), and
    // those it leaves where they are.
    let b = &r.held_across_return;
    most("moved to the returned lb0", b.moved(), 3, b);
    all("staying on lb1 across lb0's return", b.stayed(), b);
    // lb1's connections when its BIRD stops and the router sends them all to
    // lb0.
    let s = &r.held_across_bird_stop;
    most("lb1's across its BIRD stopping", s.placed_by(1), 5, s);
    all("lb0's across lb1's BIRD stopping", s.placed_by(0), s);
    // And those the router moves to a node that joins.
    let j = &r.held_across_join;
    most("moved to the joining lb2", j.moved(), 3, j);
    all("staying across lb2's join", j.stayed(), j);
    // New connections reach the returned and the joined node.
    assert!(r.syns_via_returned > 0, "{r:?}");
    assert!(r.syns_via_joined > 0, "{r:?}");
    // New connections on a settled route all succeed.
    assert_eq!(r.failed_on_settled_routes, 0, "{r:?}");
    assert!(r.summary.ok > 100, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
