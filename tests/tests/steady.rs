//! Scenario 1: steady load with each policy (ecmp, wcmp, lsq, sed and the
//! shipped QMIX model) on the same trace replay; prints the summary table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use marllb_testbed::demo::{print_table, run_policy, DemoOptions};

#[test]
fn every_policy_on_the_same_replay() {
    if !marllb_testbed::netns::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut o = DemoOptions::new(&root);
    o.duration = 20.0;
    o.live = false;
    let dir = std::env::temp_dir().join(format!("marllb-s1-{}", std::process::id()));
    let mut runs = Vec::new();
    for (i, p) in ["ecmp", "wcmp", "lsq", "sed", "qmix"].iter().enumerate() {
        let prefix = format!("s{i}{}", std::process::id() % 10_000);
        runs.push(run_policy(&prefix, &dir.join(p), &o, p).expect("policy run"));
    }
    print_table(&runs);
    let _ = std::fs::remove_dir_all(&dir);
    for r in &runs {
        let s = &r.summary;
        assert!(s.requests > 100, "{}: {s:?}", r.policy);
        // Every backend took part, and most requests were answered.
        assert_eq!(s.per_backend.len(), o.backends, "{}: {s:?}", r.policy);
        assert!(
            s.per_backend.values().all(|&n| n > 0),
            "{}: {s:?}",
            r.policy
        );
        assert!(s.ok * 10 >= s.requests * 9, "{}: {s:?}", r.policy);
    }
    // Capacity-weighted placement spreads load by capacity; equal placement
    // over unequal backends cannot (Jain of requests per unit of capacity).
    let jain = |p: &str| runs.iter().find(|r| r.policy == p).unwrap().summary.jain;
    assert!(
        jain("wcmp") > jain("ecmp"),
        "wcmp {} ecmp {}",
        jain("wcmp"),
        jain("ecmp")
    );
}
