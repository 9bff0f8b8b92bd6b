//! Scenario 7: a backend's CPU quota cut mid-replay and restored, under
//! several policies on the same replay, compared phase by phase.

use std::path::Path;

use anyhow::Result;

use crate::demo::{
    phases, print_phase_table, print_table, run_policy, CapacityEvent, PhaseStats, Policy,
    PolicyRun,
};
use crate::load::{quantile_ratio, Record};

/// What the capacity-drop scenario measured.
#[derive(Debug, Clone)]
pub struct CapacityDropReport {
    /// The backend whose CPU quota was cut.
    pub slowed: String,
    /// The cut (factor on its configured quota).
    pub factor: f64,
    /// When it was cut and restored (scheduled, seconds into the replay).
    pub schedule: (f64, f64),
    /// Per policy, in order: the run and its phases (before, during, after).
    pub runs: Vec<(PolicyRun, Vec<PhaseStats>)>,
}

impl CapacityDropReport {
    /// Failed requests of `run` that the drop does not explain: anything but a
    /// client timeout (a request that waited `timeout_s` on the slowed
    /// backend) of a request started while the quota was cut.
    pub fn unexpected_failures(run: &PolicyRun, timeout_s: f64) -> Vec<&Record> {
        let (cut, restored) = match run.events.as_slice() {
            [a, b] => (a.at, b.at),
            _ => (f64::INFINITY, f64::INFINITY),
        };
        run.records
            .iter()
            .filter(|r| r.failed())
            .filter(|r| {
                let explained = r.outcome == crate::load::Outcome::Timeout
                    && r.at >= cut
                    && r.at < restored
                    && r.latency_ms >= timeout_s * 1e3 * 0.9;
                !explained
            })
            .collect()
    }
}

/// The latencies (ms) of `run`'s answered requests in phase `p`.
fn phase_latencies(run: &PolicyRun, p: &PhaseStats) -> Vec<f64> {
    run.records
        .iter()
        .filter(|r| r.outcome == crate::load::Outcome::Ok && r.at >= p.from && r.at < p.to)
        .map(|r| r.latency_ms)
        .collect()
}

/// Before the cut, per policy and backend: the share of the requests it
/// answered and their p50 / p95 latency, to see where a policy's tail comes
/// from (which backends it used while every one had its configured quota).
fn print_backends_before(runs: &[PolicyRun], cut: f64) {
    println!("before the cut, per backend: share of requests, p50 / p95 ms");
    for run in runs {
        let mut by: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
        let mut ok = 0usize;
        for r in run.records.iter().filter(|r| r.at < cut && !r.failed()) {
            if let Some(b) = &r.backend {
                by.entry(b.as_str()).or_default().push(r.latency_ms);
                ok += 1;
            }
        }
        let mut line = format!("  {:<12}", run.policy);
        for (b, lat) in &mut by {
            lat.sort_by(f64::total_cmp);
            let q = |p: f64| {
                let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
                lat.get(i).copied().unwrap_or(0.0)
            };
            line += &format!(
                " {b} {:.2} {:.1}/{:.1}",
                lat.len() as f64 / ok.max(1) as f64,
                q(0.5),
                q(0.95)
            );
        }
        println!("{line}");
    }
}

/// The policies the capacity-drop scenario compares, as [`crate::demo`] names
/// them: SED over the configured weights (controller agent `wcmp`, the data
/// plane's SED), adaptive SED, and the learned policies `es`, `es-q`
/// (trained with quota servers in the mix) and `es-quota` (on quota servers
/// only), all through the data plane's SED.
pub const CAPACITY_DROP_POLICIES: [Policy; 5] = [
    Policy::Sed,
    Policy::AdaptiveSed,
    Policy::Es,
    Policy::EsQ,
    Policy::EsQuota,
];

/// Scenario 7 (issue 13, part 6): the same 36 s replay of `rate_150` over the
/// seven moderate backends (4 × 0.1 CPU, 3 × 0.2) under each of
/// [`CAPACITY_DROP_POLICIES`]; 12 s in, the CPU quota of be4 (a large backend)
/// is cut to 0.25× (its configured weight stays what it was), at 24 s it is
/// restored. Per phase: latency, and the requests and controller weight the
/// slowed backend got. `prefix` is at most 7 characters (one testbed per
/// policy, `prefix` + its index).
pub fn capacity_drop(prefix: &str, dir: &Path, root: &Path) -> Result<CapacityDropReport> {
    capacity_drop_with(
        prefix,
        dir,
        root,
        &CAPACITY_DROP_POLICIES,
        crate::load::Linger::NONE,
    )
}

/// The policies of the capacity drop with lingering connections: SED, adaptive
/// SED, `es` and `es-linger` (trained with lingering connections).
pub const CAPACITY_DROP_LINGER_POLICIES: [Policy; 4] = [
    Policy::Sed,
    Policy::AdaptiveSed,
    Policy::Es,
    Policy::EsLinger,
];

/// The connections of the capacity drop with lingering connections: half of
/// them stay open, idle, 5 s on average after their response (the simulator's
/// `sim/suites/linger.toml` lighter level).
pub const CAPACITY_DROP_LINGER: crate::load::Linger = crate::load::Linger {
    share: 0.5,
    mean_s: 5.0,
};

/// [`capacity_drop`] over `policies`, with the client connections lingering
/// as `linger` says (the balancer's gauges then count idle connections).
pub fn capacity_drop_with(
    prefix: &str,
    dir: &Path,
    root: &Path,
    policies: &[Policy],
    linger: crate::load::Linger,
) -> Result<CapacityDropReport> {
    let (slowed, factor, cut, restore) = (4usize, 0.25, 12.0, 24.0);
    let mut o = crate::demo::DemoOptions::new(root);
    o.linger = linger;
    o.duration = 36.0;
    o.live = false;
    // About two thirds of the pool's capacity (the demo's 0.4 is about 85 %),
    // so that the pool without three quarters of be4 (0.15 of 1.0 CPU) is
    // loaded but not saturated whatever the policy.
    o.work_scale = 0.3;
    o.capacity_events = vec![
        CapacityEvent {
            at: cut,
            backend: slowed,
            factor,
        },
        CapacityEvent {
            at: restore,
            backend: slowed,
            factor: 1.0,
        },
    ];
    let mut runs = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let run = run_policy(&format!("{prefix}{i}"), &dir.join(p.name()), &o, *p)?;
        runs.push(run);
    }
    let id = format!("be{slowed}");
    print_table(&runs);
    print_phase_table(&runs);
    print_backends_before(&runs, cut);
    // SED's answered latencies per phase: every policy's p95 is compared
    // with them, with a bootstrap interval over the requests.
    let sed: Vec<(String, Vec<f64>)> = runs
        .iter()
        .find(|r| r.policy == Policy::Sed)
        .map(|r| {
            phases(r)
                .iter()
                .map(|p| (p.name.clone(), phase_latencies(r, p)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for run in runs {
        let ph = phases(&run);
        let get = |name: &str| ph.iter().find(|p| p.name == name);
        let mut line = format!(
            "RESULT agent={} ctrl_agent={}",
            run.policy,
            run.agent.name()
        );
        for name in ["before", "during", "after"] {
            if let Some(p) = get(name) {
                line += &format!(
                    " {name}_p95_ms={:.1} {name}_p99_ms={:.1}",
                    p.summary.latency_p95_ms, p.summary.latency_p99_ms
                );
            }
        }
        for (name, base) in &sed {
            let Some(p) = get(name) else { continue };
            if let Some(r) = quantile_ratio(&phase_latencies(&run, p), base, 0.95) {
                line += &format!(
                    " {name}_p95_vs_sed={:.2} {name}_ci_low={:.2} {name}_ci_high={:.2}",
                    r.value, r.low, r.high
                );
            }
        }
        for name in ["before", "during", "after"] {
            if let Some(p) = get(name) {
                line += &format!(
                    " slowed_share_{name}={:.3} slowed_weight_share_{name}={:.3}",
                    p.share(&id),
                    p.weight_share.get(&id).copied().unwrap_or(f64::NAN)
                );
            }
        }
        line += &format!(
            " requests={} failed={} overload={}",
            run.summary.requests, run.summary.failed, run.summary.overload
        );
        println!("{line}");
        out.push((run, ph));
    }
    Ok(CapacityDropReport {
        slowed: id,
        factor,
        schedule: (cut, restore),
        runs: out,
    })
}
