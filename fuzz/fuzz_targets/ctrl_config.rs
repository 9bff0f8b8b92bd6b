//! Arbitrary text as the controller's `ctrl.toml` (and, split off the front,
//! as its `--servers` flag): a clear error naming the field, or settings that
//! keep every documented bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use marllb_ctrl::config::{parse_file, PolicyKind, RunArgs, Settings};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "FLAGS\u{0}FILE": the part before a NUL is the --servers flag.
    let (flag, file) = match text.split_once('\0') {
        Some((f, rest)) => (Some(f.to_string()), rest),
        None => (None, text),
    };
    let parsed = match parse_file(file) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let args = RunArgs {
        shm: Some("fuzz".into()),
        agent: Some(PolicyKind::Sed),
        servers: flag,
        ..RunArgs::default()
    };
    match Settings::merge(&args, parsed) {
        Err(e) => {
            // Every refusal names its field first: "field: problem".
            let msg = e.to_string();
            let field = msg.split(": ").next().unwrap_or("");
            assert!(
                !field.is_empty() && !field.contains(char::is_whitespace),
                "{msg}"
            );
        }
        Ok(s) => {
            assert!(
                s.interval >= Duration::from_millis(1) && s.interval <= Duration::from_secs(60)
            );
            assert!(!s.cycle_budget.is_zero());
            assert!(s.health.rise >= 1 && s.health.fall >= 1);
            assert!(s.health.interval >= Duration::from_millis(10));
            assert!(!s.health.timeout.is_zero());
            assert!((100..=599).contains(&s.health.expect_status));
            assert!(s.passive.timeouts_per_cycle >= 1 && s.passive.fall >= 1);
            assert!(!s.fallback_agent.is_learned());
            for (i, a) in s.servers.iter().enumerate() {
                assert!(!s.servers[..i].contains(a));
            }
            if !s.servers.is_empty() {
                assert!(s
                    .drain
                    .iter()
                    .all(|d| s.servers.iter().any(|x| x.addr == *d)));
            }
            if let Some(w) = &s.wcmp_weights {
                assert!(w.iter().all(|x| x.is_finite() && (0.0..=256.0).contains(x)));
                assert!(w.iter().any(|x| *x > 0.0));
            }
        }
    }
});
