//! Issue 16: under load, an operator drains a backend, restarts the
//! controller, removes the drained backend, adds a new nginx backend and
//! restarts the controller again, with 0 failed requests.

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn drain_remove_add_and_restarts_under_load() {
    marllb_testbed::netns::require_root();
    let (dir, prefix) = marllb_testbed::netns::test_place("op", "o", 5);
    let r = marllb_testbed::scenario::operator(&prefix, &dir).expect("scenario");
    assert_eq!(r.summary.failed, 0, "{r:?}");
    assert_eq!(r.summary.resets, 0, "{r:?}");
    // Drained: no new flows, its open connections complete.
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
    // Removed once its flows finished; nothing reaches it after.
    assert!(r.removed_at.is_some(), "{r:?}");
    assert_eq!(r.new_after_remove, 0, "{r:?}");
    // The added backend takes new flows at once (SED sends the next
    // connections to the backend with none; counted, not timed: the seconds
    // to its first connection are reported), and again after the controller
    // restarted from its state file.
    assert!(r.added_of_next_30 >= 5, "{r:?}");
    assert!(r.served_by_added >= 20, "{r:?}");
    assert_eq!(
        r.backends_after_restart,
        // Index order: the added backend took the removed one's index.
        ["198.18.2.100", "198.18.2.103", "198.18.2.102"],
        "{r:?}"
    );
    assert!(r.added_after_restart > 0, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
