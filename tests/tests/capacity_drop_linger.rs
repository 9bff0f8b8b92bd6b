//! Scenario 7 with lingering connections: the capacity drop of
//! `capacity_drop.rs` while half of the client connections stay open, idle,
//! 5 s on average after their response (keep-alive clients), so the
//! balancer's active-flow gauges count idle connections beside running
//! requests. SED with the configured weights, adaptive SED, `es` and
//! `es-linger` (trained with lingering connections in the simulator) on the
//! same replay; asserts only correctness, never that one agent beats another.

use marllb_testbed::scenario::{
    capacity_drop_with, CAPACITY_DROP_LINGER, CAPACITY_DROP_LINGER_POLICIES,
};

mod common;

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn capacity_drop_with_lingering_connections() {
    marllb_testbed::netns::require_root();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let (dir, prefix) = marllb_testbed::netns::test_place("s7l", "cl", 4);
    let t = std::time::Instant::now();
    let report = capacity_drop_with(
        &prefix,
        &dir,
        &root,
        &CAPACITY_DROP_LINGER_POLICIES,
        CAPACITY_DROP_LINGER,
    )
    .expect("scenario");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "capacity drop, connections lingering {}: {:.0} s for the {} agents",
        CAPACITY_DROP_LINGER,
        t.elapsed().as_secs_f64(),
        CAPACITY_DROP_LINGER_POLICIES.len()
    );
    assert_eq!(report.runs.len(), CAPACITY_DROP_LINGER_POLICIES.len());
    common::check_capacity_drop(&report);
}
