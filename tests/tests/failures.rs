//! Scenarios 2, 3 and 6: a backend killed and returned, the controller killed
//! with SIGKILL and restarted, Prometheus on the controller's metrics.

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn backend_and_controller_failures() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("s236", "x", 5);
    let r = marllb_testbed::scenario::failures(&prefix, &dir).expect("scenario");
    // Scenario 2.
    assert!(r.weight_zero_after_s.is_some_and(|s| s < 8.0), "{r:?}");
    assert_eq!(r.failed_outside_outage, 0, "{r:?}");
    let tail = |f: &str| {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    assert!(
        r.nginx_back_after_s.is_some(),
        "be1's nginx did not answer after its restart: {r:?}\nnginx2.out:\n{}",
        tail("be1/nginx2.out")
    );
    assert!(
        r.back_weight_after_s.is_some() && r.served_after_return > 0,
        "{r:?}\ncontroller log (tail):\n{}",
        tail("lb0/ctrl.log")
    );
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
