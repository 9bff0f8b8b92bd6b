//! Scenario 5: two LB nodes behind the router's kernel ECMP, one removed
//! mid-run; which held connections survive, predicted per connection and
//! checked against what happened.

use marllb_testbed::lb::{method_name, Method};

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn run(method: Method, sync: bool) -> marllb_testbed::scenario::FailoverReport {
    let tag = if sync { "y" } else { "n" };
    let name = method_name(method);
    let (dir, prefix) = marllb_testbed::netns::test_place(
        &format!("s5-{name}-{tag}"),
        &format!("f{}{tag}", &name[..1]),
        4,
    );
    let r = marllb_testbed::scenario::lb_failover(&prefix, &dir, method, sync).expect("scenario");
    let _ = std::fs::remove_dir_all(&dir);
    r
}

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn lb_node_removed() {
    marllb_testbed::netns::require_root();
    // The policy method (SED over the controller's weights): node 0's own
    // connections all survive; node 1's survive exactly when the consistent
    // table agrees with where SED put them.
    let sed = run(Method::Sed, false);
    let (n0, s0) = sed.on(0);
    let (n1, _) = sed.on(1);
    assert!(n0 >= 20 && n1 >= 20, "too few held connections: {sed:?}");
    assert_eq!(n0, s0, "a connection on the surviving node broke");
    assert_eq!(sed.mispredicted(), 0, "{:?}", sed.held);
    assert_eq!(sed.other_failures, 0);
    // Stateless consistent placement on both nodes: every connection survives.
    let maglev = run(Method::Maglev, false);
    let (m1, t1) = maglev.on(1);
    assert!(m1 >= 20, "{maglev:?}");
    assert_eq!(
        m1, t1,
        "a connection of the removed node broke under Maglev"
    );
    assert_eq!(maglev.mispredicted(), 0);
    assert_eq!(maglev.summary.failed, 0);
    // SED with flow-state sync between the nodes: node 1's connections are
    // known to node 0 and survive too.
    let synced = run(Method::Sed, true);
    let (y0, z0) = synced.on(0);
    let (y1, z1) = synced.on(1);
    assert!(y1 >= 20, "{synced:?}");
    assert_eq!(
        y0, z0,
        "a connection on the surviving node broke: {synced:?}"
    );
    assert_eq!(
        y1, z1,
        "a synced connection of the removed node broke: {synced:?}"
    );
    assert_eq!(synced.mispredicted(), 0, "{:?}", synced.held);
}
