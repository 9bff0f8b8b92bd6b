//! `marllb-testbed`: the main job (`demo`) of `cargo xtask demo`.
//!
//! `marllb-testbed demo [--policy es] [--compare sed,adaptive-sed|P1,P2,..|none]
//! [--duration 60] [--backends 7] [--trace FILE] [--work-scale 0.4] [--time-scale 1]
//! [--capacity-event SECONDS:BACKEND:FACTOR ...]`
//!
//! `--capacity-event 20:be4:0.25` multiplies backend be4's configured CPU quota
//! by 0.25 from 20 s into each run on (`20:4:0.25` names it by index; FACTOR 1
//! restores it); the flag repeats, and the runs are then also compared phase
//! by phase.
#![allow(clippy::expect_used)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use marllb_testbed::demo::{
    print_phase_table, print_table, run_policy, CapacityEvent, DemoOptions,
};

use marllb_testbed::{flag_value as arg, flag_values};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("demo") {
        bail!("usage: marllb-testbed demo [--policy P] [--compare P1,P2,..|none] [--duration S] [--backends N] [--trace FILE] [--work-scale X] [--time-scale X] [--capacity-event SECONDS:BACKEND:FACTOR ...] [--root DIR]");
    }
    let root = arg(&args, "--root")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut o = DemoOptions::new(&root);
    if let Some(p) = arg(&args, "--policy") {
        o.policy = p;
    }
    if let Some(c) = arg(&args, "--compare") {
        o.compare = if c == "none" {
            Vec::new()
        } else {
            c.split(',').map(str::to_string).collect()
        };
    }
    if let Some(d) = arg(&args, "--duration") {
        o.duration = d.parse().context("--duration seconds")?;
        if !(o.duration > 0.0 && o.duration <= 600.0) {
            bail!("--duration must be in (0, 600]");
        }
    }
    if let Some(n) = arg(&args, "--backends") {
        o.backends = n.parse().context("--backends N")?;
        if !(1..=50).contains(&o.backends) {
            bail!("--backends must be in 1..=50");
        }
    }
    if let Some(t) = arg(&args, "--trace") {
        o.trace = PathBuf::from(t);
    }
    if let Some(w) = arg(&args, "--work-scale") {
        o.work_scale = w.parse().context("--work-scale")?;
    }
    if let Some(t) = arg(&args, "--time-scale") {
        o.time_scale = t.parse().context("--time-scale")?;
    }
    for e in flag_values(&args, "--capacity-event") {
        let ev = CapacityEvent::parse(&e, o.backends)?;
        if ev.at >= o.duration {
            bail!(
                "--capacity-event {e:?}: at {} s, not before the end of the {} s run",
                ev.at,
                o.duration
            );
        }
        o.capacity_events.push(ev);
    }
    println!(
        "MARLLB testbed: trace {} (time x{}, work x{}), {} s per policy; Ctrl-C tears everything down",
        o.trace.display(),
        o.time_scale,
        o.work_scale,
        o.duration
    );
    let dir = std::env::temp_dir().join(format!("marllb-demo-{}", std::process::id()));
    let mut runs = Vec::new();
    let mut policies = vec![o.policy.clone()];
    policies.extend(o.compare.iter().cloned());
    for (i, p) in policies.iter().enumerate() {
        let prefix = format!("md{i}{}", std::process::id() % 10_000);
        runs.push(run_policy(&prefix, &dir.join(p), &o, p)?);
    }
    print_table(&runs);
    if !o.capacity_events.is_empty() {
        print_phase_table(&runs);
    }
    if let Some((first, rest)) = runs.split_first() {
        if !rest.is_empty() {
            println!();
        }
        let a = &first.summary;
        for r in rest {
            let b = &r.summary;
            println!(
                "{} vs {}: p95 latency {:.2}x, p99 {:.2}x, Jain {:.3} vs {:.3}",
                first.policy,
                r.policy,
                a.latency_p95_ms / b.latency_p95_ms.max(1e-9),
                a.latency_p99_ms / b.latency_p99_ms.max(1e-9),
                a.jain,
                b.jain
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
