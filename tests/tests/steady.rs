//! Scenario 1: steady load with each policy (ecmp, wcmp, lsq, sed and the
//! shipped QMIX model) on the same trace replay; prints the summary table.

use marllb_testbed::demo::Policy;
use marllb_testbed::scenario::steady;

#[test]
#[ignore = "needs root (network namespaces, veth pairs): cargo xtask test runs it as root"]
fn every_policy_on_the_same_replay() {
    marllb_testbed::netns::require_root();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let (dir, prefix) = marllb_testbed::netns::test_place("s1", "s", 4);
    let report = steady(&prefix, &dir, &root).expect("scenario");
    let _ = std::fs::remove_dir_all(&dir);
    let (runs, backends) = (&report.runs, report.backends);
    for r in runs {
        let s = &r.summary;
        assert!(s.requests > 100, "{}: {s:?}", r.policy);
        // Most requests were answered.
        assert!(s.ok * 10 >= s.requests * 9, "{}: {s:?}", r.policy);
        assert_eq!(s.per_backend.len(), backends, "{}: {s:?}", r.policy);
        let n = |j: usize| s.per_backend.get(&format!("be{j}")).copied().unwrap_or(0);
        if [Policy::Ecmp, Policy::Wcmp, Policy::Lsq].contains(&r.policy) {
            // Placement by weight or by active flows alone: every backend works.
            assert!((0..backends).all(|j| n(j) > 0), "{}: {s:?}", r.policy);
        } else {
            // SED (and QMIX through SED) prefers the large backends, and at
            // light load may leave the small ones idle: that is its design
            // (shortest expected delay), not a failure.
            let small: usize = (0..4).map(n).sum();
            let large: usize = (4..backends).map(n).sum();
            assert!(large > small, "{}: {s:?}", r.policy);
        }
    }
    // Capacity-weighted placement spreads load by capacity; equal placement
    // over unequal backends cannot (Jain of requests per unit of capacity).
    let jain = |p: Policy| runs.iter().find(|r| r.policy == p).unwrap().summary.jain;
    assert!(
        jain(Policy::Wcmp) > jain(Policy::Ecmp),
        "wcmp {} ecmp {}",
        jain(Policy::Wcmp),
        jain(Policy::Ecmp)
    );
}
