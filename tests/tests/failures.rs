//! Scenarios 2, 3 and 6: a backend killed and returned, the controller killed
//! with SIGKILL and restarted, Prometheus on the controller's metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn backend_and_controller_failures() {
    if !marllb_testbed::netns::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("marllb-s236-{}", std::process::id()));
    let prefix = format!("x{}", std::process::id() % 100_000);
    let r = marllb_testbed::scenario::failures(&prefix, &dir).expect("scenario");
    // Scenario 2.
    assert!(r.weight_zero_after_s.is_some_and(|s| s < 8.0), "{r:?}");
    assert_eq!(r.failed_outside_outage, 0, "{r:?}");
    assert!(r.served_after_return > 0, "{r:?}");
    // Scenario 3.
    assert!(r.watchdog_fell_back, "{r:?}");
    assert!(r.followed_new_controller, "{r:?}");
    assert_eq!(r.failed_while_ctrl_dead, 0, "{r:?}");
    // Scenario 6.
    assert!(r.promtool_ok, "{r:?}");
    assert!(r.prometheus_samples > 0, "{r:?}");
    assert!(r.prometheus_fairness_points >= 10, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
