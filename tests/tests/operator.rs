//! Issue 16: an operator drains a backend under load, restarts the
//! controller and undrains it, with 0 failed requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn drain_restart_undrain_under_load() {
    if !marllb_testbed::netns::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("marllb-op-{}", std::process::id()));
    let prefix = format!("o{}", std::process::id() % 100_000);
    let r = marllb_testbed::scenario::operator(&prefix, &dir).expect("scenario");
    assert_eq!(r.summary.failed, 0, "{r:?}");
    assert_eq!(r.summary.resets, 0, "{r:?}");
    assert_eq!(r.new_while_drained, 0, "{r:?}");
    assert_eq!(r.spanning_drain_failed, 0, "{r:?}");
    assert!(
        r.spanning_drain_ok >= 3,
        "too few connections were open on the drained backend to show anything: {r:?}"
    );
    assert_eq!(
        r.admin_after_restart,
        Some(1.0),
        "the drain survives the restart: {r:?}"
    );
    assert!(r.new_after_undrain > 0, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
