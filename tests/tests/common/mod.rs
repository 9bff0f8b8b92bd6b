//! Checks shared by the testbed's scenario tests.

use marllb_testbed::scenario::CapacityDropReport;

/// Correctness only, never that one agent beats another.
pub fn check_capacity_drop(report: &CapacityDropReport) {
    let (cut, restore) = report.schedule;
    for (run, phases) in &report.runs {
        let p = &run.policy;
        let s = &run.summary;
        // The whole replay was sent and every request is accounted for.
        assert!(s.requests > 1000, "{p}: {s:?}");
        assert_eq!(s.requests, run.records.len(), "{p}");
        assert_eq!(s.overload, 0, "{p}: requests not sent: {s:?}");
        // The controller ran the agent it was meant to (not a fallback).
        assert_eq!(run.active_agents, vec![run.agent.name().to_string()], "{p}");
        // The quota was cut and restored, on time.
        assert_eq!(run.events.len(), 2, "{p}: {:?}", run.events);
        assert_eq!(run.events[0].backend, report.slowed);
        assert!(
            (run.events[0].at - cut).abs() < 1.0,
            "{p}: {:?}",
            run.events
        );
        assert!(
            (run.events[1].at - restore).abs() < 1.0,
            "{p}: {:?}",
            run.events
        );
        assert!(
            run.events[0].cpus < run.events[1].cpus,
            "{p}: {:?}",
            run.events
        );
        // No failure the drop does not explain.
        let bad = CapacityDropReport::unexpected_failures(run, 20.0);
        assert!(
            bad.is_empty(),
            "{p}: {} unexpected failures: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        // Three phases, each with answered requests; the slowed backend's
        // share during the drop is measured (whatever it is).
        let names: Vec<&str> = phases.iter().map(|ph| ph.name.as_str()).collect();
        assert_eq!(names, ["before", "during", "after"], "{p}");
        for ph in phases {
            assert!(ph.summary.ok > 100, "{p} {}: {:?}", ph.name, ph.summary);
            assert!((0.0..=1.0).contains(&ph.share(&report.slowed)), "{p}");
        }
        assert!(
            phases[1].weight_share.contains_key(&report.slowed),
            "{p}: no controller weights sampled during the drop"
        );
    }
}
