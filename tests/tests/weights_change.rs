//! Scenario 4: weights changed mid-run move no established connection.

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn weight_changes_reset_no_connection() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("s4", "w", 5);
    let r = marllb_testbed::scenario::weight_change(&prefix, &dir).expect("scenario");
    assert_eq!(r.summary.resets, 0, "{r:?}");
    assert_eq!(r.summary.failed, 0, "{r:?}");
    assert!(
        r.spanning >= 3,
        "too few connections spanned a change to show anything: {r:?}"
    );
    assert_eq!(r.spanning_failed, 0);
    // After the last change (weights 0:1:4) be0 gets no new connection.
    assert_eq!(r.after.get("be0").copied().unwrap_or(0), 0, "{r:?}");
    assert!(r.after.get("be2").copied().unwrap_or(0) > 0, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
