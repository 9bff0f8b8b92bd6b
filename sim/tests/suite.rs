//! The evaluation suite file parses, keeps its seeds out of the training
//! range, and its report ends with one RESULT line per family and an
//! aggregate one.

use marllb_sim::scenario::TRAIN_SEED_BASE;
use marllb_sim::suite::{report, run, Suite};

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn suite() -> Suite {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).unwrap();
    Suite::load(&root.join("sim/suites/main.toml")).unwrap()
}

#[test]
fn the_main_suite_runs_and_reports_every_family() {
    let mut s = suite();
    assert!(s.seeds.len() >= 10);
    assert!(s.seeds.iter().all(|x| *x < TRAIN_SEED_BASE));
    // One seed and short runs: the report's shape, not its figures.
    s.seeds.truncate(1);
    for sc in &mut s.scenario {
        sc.duration = 20.0;
        sc.warmup = 2.0;
    }
    let res = run(&s, 2).unwrap();
    let text = report(&s, &res, &s.candidate()).unwrap();
    let mut families: Vec<&str> = s.scenario.iter().map(|x| x.family.as_str()).collect();
    families.dedup();
    for f in &families {
        assert!(
            text.contains(&format!("RESULT family={f} policy=es ")),
            "{f}: {text}"
        );
    }
    assert!(text.contains("RESULT family=all policy=es "));
    // SED against itself is exactly 1.
    assert!(text.contains("| sed | 1.000 [1.000, 1.000]"), "{text}");
}

#[test]
fn a_training_seed_in_a_suite_is_refused() {
    let dir = std::env::temp_dir().join(format!("marllb-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("s.toml");
    std::fs::write(
        &f,
        format!(
            "seeds = [1, {TRAIN_SEED_BASE}]\npolicies = [\"sed\", \"adaptive-sed\"]\n[[scenario]]\nname = \"a\"\nfamily = \"b\"\nservers = \"2x2\"\nload = 0.5\n"
        ),
    )
    .unwrap();
    let e = Suite::load(&f).unwrap_err().to_string();
    assert!(e.contains("training seed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_baseline_with_parameters_can_be_the_candidate() {
    let mut s = suite();
    s.seeds.truncate(1);
    s.scenario.truncate(1);
    s.scenario[0].duration = 20.0;
    s.scenario[0].warmup = 2.0;
    let tuned = "adaptive-sed:gain=0.75,rate=0.05";
    s.policies = vec!["sed".into(), "adaptive-sed".into(), tuned.into()];
    s.candidate = Some(tuned.into());
    assert_eq!(s.candidate(), tuned);
    let res = run(&s, 1).unwrap();
    let text = report(&s, &res, &s.candidate()).unwrap();
    assert!(
        text.contains(&format!("RESULT family=all policy={tuned} ")),
        "{text}"
    );
}

#[test]
fn policies_given_instead_of_the_files_are_checked() {
    let mut s = suite();
    s.policies = vec!["sed".into(), "oracle".into()];
    s.candidate = None;
    let e = s.check_policies().unwrap_err().to_string();
    assert!(e.contains("adaptive-sed"), "{e}");
    s.policies = vec!["sed".into(), "adaptive-sed".into(), "oracle".into()];
    s.candidate = Some("models/es.onnx".into());
    let e = s.check_policies().unwrap_err().to_string();
    assert!(e.contains("candidate"), "{e}");
    s.candidate = Some("oracle".into());
    s.check_policies().unwrap();
}
