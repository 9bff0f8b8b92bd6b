//! The main job: the whole system on one machine with real backends of unequal
//! capacity, the DPDK data plane, the controller with the shipped model, a
//! replay of the shared trace with a live view, then the same replay under a
//! baseline for comparison.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::backend::BackendSpec;
use crate::lb::{
    metrics, per_backend, scalar, start_controller, start_dataplane, CtrlOptions, LbOptions,
};
use crate::load::{Progress, Summary};
use crate::scenario::{capacities, start_load};
use crate::topology::Topology;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Policy: qmix | sac-gru | sed | lsq | wcmp | ecmp.
    pub policy: String,
    /// Baselines to compare with on the same replay (empty: no comparison).
    pub compare: Vec<String>,
    /// Seconds of replay per policy.
    pub duration: f64,
    /// Backends (the first 4/7 small, the rest twice as large).
    pub backends: usize,
    /// CPUs of a small backend.
    pub small_cpus: f64,
    /// PHP workers per backend.
    pub workers: u32,
    /// Trace file.
    pub trace: PathBuf,
    /// Arrival-time scale (2 = half the rate).
    pub time_scale: f64,
    /// Work scale on the trace's loop counts.
    pub work_scale: f64,
    /// Directory with the shipped models.
    pub models: PathBuf,
    /// Print a line per second.
    pub live: bool,
}

impl DemoOptions {
    /// Defaults relative to the repository root `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            policy: "qmix".into(),
            compare: vec!["ecmp".into()],
            duration: 60.0,
            backends: 7,
            small_cpus: 0.1,
            workers: 32,
            trace: root.join("data/traces/rate_150.csv"),
            time_scale: 1.0,
            work_scale: 0.4,
            models: root.join("models"),
            live: true,
        }
    }
}

/// The backends: the MARLLB moderate mix (4 of every 7 small, the rest with
/// twice the CPU).
pub fn backends(n: usize, small_cpus: f64, workers: u32) -> Vec<BackendSpec> {
    (0..n)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: format!("198.18.2.{}", 100 + j),
            cpus: if j % 7 < 4 {
                small_cpus
            } else {
                2.0 * small_cpus
            },
            workers,
            backlog: 128,
        })
        .collect()
}

/// Data-plane method, controller agent and model of a policy name.
pub fn policy_setup(policy: &str, models: &Path) -> Result<(String, String, Option<PathBuf>)> {
    Ok(match policy {
        // MARLLB's data plane applies SED to the agent's weights.
        "qmix" => ("sed".into(), "qmix".into(), Some(models.join("qmix.onnx"))),
        "sac-gru" => (
            "sed".into(),
            "sac-gru".into(),
            Some(models.join("sac-gru.onnx")),
        ),
        // Weighted SED with capacity weights.
        "sed" => ("sed".into(), "wcmp".into(), None),
        // Least active flows: SED with equal weights.
        "lsq" => ("sed".into(), "ecmp".into(), None),
        "wcmp" => ("alias".into(), "wcmp".into(), None),
        "ecmp" => ("alias".into(), "ecmp".into(), None),
        other => bail!("unknown policy {other:?} (qmix, sac-gru, sed, lsq, wcmp, ecmp)"),
    })
}

/// One policy's run.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    /// Policy name.
    pub policy: String,
    /// Load summary.
    pub summary: Summary,
    /// Mean of the controller's Jain index over the run.
    pub ctrl_jain: f64,
}

/// Runs one policy on a fresh testbed; prints a line per second when `live`.
pub fn run_policy(prefix: &str, dir: &Path, o: &DemoOptions, policy: &str) -> Result<PolicyRun> {
    let (method, agent, model) = policy_setup(policy, &o.models)?;
    let specs = backends(o.backends, o.small_cpus, o.workers);
    println!(
        "\n== {policy}: {} backends ({}), data plane method {method}, controller agent {agent}{}",
        specs.len(),
        specs
            .iter()
            .map(|s| format!("{}:{}cpu", s.id, s.cpus))
            .collect::<Vec<_>>()
            .join(" "),
        model
            .as_ref()
            .map(|m| format!(", model {}", m.display()))
            .unwrap_or_default()
    );
    let mut topo = Topology::build(prefix, &specs, 1, dir)?;
    let shm = format!("marllb-{prefix}");
    start_dataplane(
        &mut topo,
        0,
        &LbOptions {
            method,
            shm: Some(shm.clone()),
            ..LbOptions::default()
        },
    )?;
    let copts = CtrlOptions {
        agent,
        model,
        ..CtrlOptions::default()
    };
    start_controller(&mut topo, 0, &shm, &copts)?;
    let caps = capacities(&specs);
    let trace = o.trace.to_string_lossy().into_owned();
    let (ts, ws, d) = (
        o.time_scale.to_string(),
        o.work_scale.to_string(),
        o.duration.to_string(),
    );
    let run = start_load(
        &mut topo,
        "load",
        &[
            "--trace",
            &trace,
            "--time-scale",
            &ts,
            "--work-scale",
            &ws,
            "--duration",
            &d,
            "--capacities",
            &caps,
        ],
    )?;
    let ns = topo.lbs[0].ns.clone();
    let start = Instant::now();
    let mut jains = Vec::new();
    let mut shown = 0;
    while topo.tb.running("load") && start.elapsed() < Duration::from_secs_f64(o.duration + 60.0) {
        std::thread::sleep(Duration::from_secs(1));
        let prog: Vec<Progress> = run.progress();
        let m = metrics(&ns, copts.prometheus_port).unwrap_or_default();
        if let Some(j) = scalar(&m, "marllb_jain_fairness") {
            jains.push(j);
        }
        if o.live && prog.len() > shown {
            shown = prog.len();
            let p = &prog[prog.len() - 1];
            let w = per_backend(&m, "marllb_backend_weight");
            let up = per_backend(&m, "marllb_backend_up");
            let act = per_backend(&m, "marllb_backend_active_flows");
            let cols: Vec<String> = topo
                .backends
                .iter()
                .map(|b| {
                    let a = &b.spec.addr;
                    format!(
                        "{}{} w{:.1} a{:.0}",
                        b.spec.id,
                        if up.get(a).copied().unwrap_or(1.0) < 0.5 {
                            "!"
                        } else {
                            ""
                        },
                        w.get(a).copied().unwrap_or(f64::NAN),
                        act.get(a).copied().unwrap_or(0.0)
                    )
                })
                .collect();
            println!(
                "t={:>3.0}s ok/s {:>4} fail {:>3} p95 {:>7.1} ms inflight {:>4} jain {:.3} | {}",
                p.t,
                p.ok,
                p.failed,
                p.p95_ms,
                p.inflight,
                scalar(&m, "marllb_jain_fairness").unwrap_or(f64::NAN),
                cols.join(" | ")
            );
        }
    }
    let (summary, _) = run.finish(&mut topo, Duration::from_secs(60))?;
    let ctrl_jain = if jains.is_empty() {
        f64::NAN
    } else {
        jains.iter().sum::<f64>() / jains.len() as f64
    };
    drop(topo);
    Ok(PolicyRun {
        policy: policy.into(),
        summary,
        ctrl_jain,
    })
}

/// Prints the comparison table of several runs.
pub fn print_table(runs: &[PolicyRun]) {
    println!("\n| policy | requests | ok | failed | mean ms | p95 ms | p99 ms | Jain (load/capacity) | requests per backend |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let s = &r.summary;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.3} | {} |",
            r.policy,
            s.requests,
            s.ok,
            s.failed,
            s.latency_mean_ms,
            s.latency_p95_ms,
            s.latency_p99_ms,
            s.jain,
            s.per_backend
                .values()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("/")
        );
    }
}
