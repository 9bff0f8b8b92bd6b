//! The main job: the whole system on one machine with real backends of unequal
//! capacity, the data plane (the DPDK host, or the VPP plugin in an installed
//! VPP: [`DemoOptions::host`]), the controller with the shipped model, a
//! replay of the shared trace with a live view, then the same replay under
//! baselines (SED with the configured weights, adaptive SED) for comparison.
//! Capacity events change a backend's CPU quota mid-run (the configuration,
//! and so SED's weights, stay as they were), and the comparison is then also
//! made phase by phase.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lb::{
    method_name, per_backend, scalar, BackendMetric, CtrlOptions, Host, LbOptions, Method,
    PolicyKind,
};
use crate::load::{summarize, LoadArgs, Progress, Record, Summary};
use crate::scenario::{moderate_backends, placements, Bed, Placements, Recording};

/// One backend's CPU capacity changed during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityEvent {
    /// Seconds from the start of the replay.
    pub at: f64,
    /// Backend index.
    pub backend: usize,
    /// Factor on the backend's configured CPU quota from then on (1 restores it).
    pub factor: f64,
}

impl CapacityEvent {
    /// Parses `SECONDS:BACKEND:FACTOR` (`--capacity-event 20:be4:0.25`); BACKEND
    /// is the index (`4`) or the id (`be4`) of one of `backends` backends.
    pub fn parse(s: &str, backends: usize) -> Result<Self> {
        let form = "expected SECONDS:BACKEND:FACTOR, e.g. 20:be4:0.25 (BACKEND an index or an id)";
        let parts: Vec<&str> = s.split(':').collect();
        let [at, backend, factor] = parts[..] else {
            bail!("--capacity-event {s:?}: {form}");
        };
        let at: f64 = at
            .trim()
            .parse()
            .with_context(|| format!("--capacity-event {s:?}: SECONDS {at:?} is not a number"))?;
        if !(at.is_finite() && at >= 0.0) {
            bail!("--capacity-event {s:?}: SECONDS must be >= 0");
        }
        let b = backend.trim();
        let index = b
            .strip_prefix("be")
            .unwrap_or(b)
            .parse::<usize>()
            .ok()
            .filter(|i| *i < backends)
            .with_context(|| {
                format!(
                    "--capacity-event {s:?}: no backend {b:?} (indices 0..={}, ids be0..=be{})",
                    backends.saturating_sub(1),
                    backends.saturating_sub(1)
                )
            })?;
        let f: f64 = factor.trim().parse().with_context(|| {
            format!("--capacity-event {s:?}: FACTOR {factor:?} is not a number")
        })?;
        if !(f.is_finite() && f > 0.0 && f <= 100.0) {
            bail!("--capacity-event {s:?}: FACTOR must be in (0, 100] (1 restores the configured quota)");
        }
        Ok(Self {
            at,
            backend: index,
            factor: f,
        })
    }
}

/// A capacity event as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEvent {
    /// Seconds from the start of the replay when the quota was changed.
    pub at: f64,
    /// Backend id.
    pub backend: String,
    /// Factor on its configured quota.
    pub factor: f64,
    /// CPUs it may use now.
    pub cpus: f64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The policy under test.
    pub policy: Policy,
    /// Baselines to compare with on the same replay (empty: no comparison).
    pub compare: Vec<Policy>,
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
    /// Backend capacity changes during each run, by time.
    pub capacity_events: Vec<CapacityEvent>,
    /// The data plane's host.
    pub host: Host,
    /// Record at the backends which of them got each client port's segments
    /// ([`PolicyRun::placements`]; needs nftables).
    pub record_placements: bool,
    /// Client connections kept open, idle, after their response (the load
    /// generator's `--linger`).
    pub linger: crate::load::Linger,
}

impl DemoOptions {
    /// Defaults relative to the repository root `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            policy: Policy::Es,
            compare: vec![Policy::Sed, Policy::AdaptiveSed],
            duration: 60.0,
            backends: 7,
            small_cpus: 0.1,
            workers: 32,
            trace: root.join("data/traces/rate_150.csv"),
            time_scale: 1.0,
            work_scale: 0.4,
            models: root.join("models"),
            live: true,
            capacity_events: Vec::new(),
            host: Host::Dpdk,
            record_placements: false,
            linger: crate::load::Linger::NONE,
        }
    }
}

/// A policy the demo and the scenarios run: the data plane's method, the
/// controller's agent and model together ([`Policy::setup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// The shipped `es` model (MARLLB's data plane applies SED to its weights).
    Es,
    /// The `es` model trained with CPU-quota servers in the mix
    /// (`models/es-q.onnx`; the testbed's backends are quotas).
    EsQ,
    /// The `es` model trained on CPU-quota servers only
    /// (`models/es-quota.onnx`).
    EsQuota,
    /// The `es` model trained with lingering connections in half of its
    /// scenarios (`models/es-linger.onnx`).
    EsLinger,
    /// The shipped QMIX model, through SED.
    Qmix,
    /// The shipped SAC-GRU model, through SED.
    SacGru,
    /// Weighted SED with capacity weights.
    Sed,
    /// SED over weights re-estimated from completion times every cycle.
    AdaptiveSed,
    /// Least active flows: SED with equal weights.
    Lsq,
    /// Weighted random choice with capacity weights.
    Wcmp,
    /// Equal random choice.
    Ecmp,
    /// The consistent table over the capacity weights (no learning: every
    /// node computes the same placement).
    Maglev,
}

/// How a [`Policy`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySetup {
    /// The data plane's method.
    pub method: Method,
    /// The controller's agent.
    pub agent: PolicyKind,
    /// Its model, for the learned agents.
    pub model: Option<PathBuf>,
}

impl Policy {
    /// Its name on the command line (clap's, from the variant).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    /// The policy it runs ([`PolicyKind`]: its placement and its agent are
    /// defined there, once for the simulator, the controller and the testbed).
    pub fn kind(self) -> PolicyKind {
        match self {
            Self::Es | Self::EsQ | Self::EsQuota | Self::EsLinger => PolicyKind::Es,
            Self::Qmix => PolicyKind::Qmix,
            Self::SacGru => PolicyKind::SacGru,
            Self::Sed => PolicyKind::Sed,
            Self::AdaptiveSed => PolicyKind::AdaptiveSed,
            Self::Lsq => PolicyKind::Lsq,
            Self::Wcmp => PolicyKind::Wcmp,
            Self::Ecmp => PolicyKind::Ecmp,
            Self::Maglev => PolicyKind::Maglev,
        }
    }

    /// The shipped model a learned policy runs (a file in `models/`).
    pub fn model_file(self) -> Option<&'static str> {
        match self {
            Self::Es => Some("es.onnx"),
            Self::EsQ => Some("es-q.onnx"),
            Self::EsQuota => Some("es-quota.onnx"),
            Self::EsLinger => Some("es-linger.onnx"),
            Self::Qmix => Some("qmix.onnx"),
            Self::SacGru => Some("sac-gru.onnx"),
            _ => None,
        }
    }

    /// Data-plane method, controller agent and model (from `models`).
    pub fn setup(self, models: &Path) -> PolicySetup {
        let kind = self.kind();
        PolicySetup {
            // Every policy of the testbed's is one the data plane places and
            // the controller drives (none of the simulator-only ones).
            method: kind.placement().unwrap_or(Method::Sed),
            agent: kind.agent().unwrap_or(PolicyKind::Wcmp),
            model: self.model_file().map(|m| models.join(m)),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// One policy's run.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    /// The policy.
    pub policy: Policy,
    /// Controller agent it ran as.
    pub agent: PolicyKind,
    /// Load summary.
    pub summary: Summary,
    /// Every request, by start time.
    pub records: Vec<Record>,
    /// Mean of the controller's Jain index over the run.
    pub ctrl_jain: f64,
    /// The agents `marllb_policy_active` said were computing the weights
    /// (normally one: the fallback shows up here if the model was refused).
    pub active_agents: Vec<String>,
    /// The capacity events, when they were applied.
    pub events: Vec<AppliedEvent>,
    /// The controller's weights about once a second: (seconds from the start
    /// of the replay, weight by backend id).
    pub weights: Vec<(f64, BTreeMap<String, f64>)>,
    /// Seconds of replay.
    pub duration: f64,
    /// Configured CPUs by backend id.
    pub capacities: Vec<(String, f64)>,
    /// The data plane's host.
    pub host: Host,
    /// With [`DemoOptions::record_placements`]: the backends that got a
    /// segment of each client port.
    pub placements: Option<Placements>,
    /// With the VPP host: its `show lb rl stats` after the replay.
    pub host_stats: Option<String>,
}

/// Runs one policy on a fresh testbed, applying `o.capacity_events` on time;
/// prints a line per second when `o.live`.
pub fn run_policy(prefix: &str, dir: &Path, o: &DemoOptions, policy: Policy) -> Result<PolicyRun> {
    let PolicySetup {
        method,
        agent,
        model,
    } = policy.setup(&o.models);
    let specs = moderate_backends(o.backends, o.small_cpus, o.workers);
    if let Some(e) = o.capacity_events.iter().find(|e| e.backend >= specs.len()) {
        bail!(
            "capacity event for backend {}: only {} backends",
            e.backend,
            specs.len()
        );
    }
    println!(
        "\n== {policy}: {} backends ({}), data plane {} host, method {}, controller agent {}{}",
        specs.len(),
        specs
            .iter()
            .map(|s| format!("{}:{}cpu", s.id, s.cpus))
            .collect::<Vec<_>>()
            .join(" "),
        o.host.name(),
        method_name(method),
        agent.name(),
        model
            .as_ref()
            .map(|m| format!(", model {}", m.display()))
            .unwrap_or_default()
    );
    let mut builder = Bed::builder(prefix, dir)
        .backends(specs.clone())
        .host(o.host)
        .dataplane(LbOptions {
            method,
            ..LbOptions::default()
        })
        .controller(CtrlOptions {
            agent,
            model,
            ..CtrlOptions::default()
        });
    if o.record_placements {
        builder = builder.recording(Recording::SynsAndSegments);
    }
    let mut bed = builder.build()?;
    let run = bed.start_load(&LoadArgs {
        trace: Some(o.trace.clone()),
        time_scale: o.time_scale,
        work_scale: o.work_scale,
        duration: o.duration,
        linger: o.linger,
        ..bed.load_args()
    })?;
    let start = Instant::now();
    let id_of: BTreeMap<String, String> = bed
        .topo
        .backends
        .iter()
        .map(|b| (b.spec.addr.clone(), b.spec.id.clone()))
        .collect();
    let mut pending = o.capacity_events.clone();
    pending.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut pending = std::collections::VecDeque::from(pending);
    let mut events = Vec::new();
    let mut jains = Vec::new();
    let mut weights = Vec::new();
    let mut active_agents: Vec<String> = Vec::new();
    let mut shown = 0;
    let mut tick = 1.0;
    let limit = o.duration + 60.0;
    // Bounded: the load generator's own duration, and `limit` seconds.
    while run.running(&mut bed.topo) && start.elapsed().as_secs_f64() < limit {
        let wake = pending.front().map_or(tick, |e| e.at.min(tick));
        if let Some(left) = Duration::from_secs_f64(wake).checked_sub(start.elapsed()) {
            std::thread::sleep(left);
        }
        while let Some(e) = pending.front().copied() {
            if start.elapsed().as_secs_f64() < e.at {
                break;
            }
            pending.pop_front();
            let b = &bed.topo.backends[e.backend];
            let cpus = b.set_cpu_factor(&bed.topo.tb, e.factor)?;
            let at = start.elapsed().as_secs_f64();
            println!(
                "t={at:>5.1}s capacity: {} CPU quota x{} of its configured {} = {cpus:.3} CPUs",
                b.spec.id, e.factor, b.spec.cpus
            );
            events.push(AppliedEvent {
                at,
                backend: b.spec.id.clone(),
                factor: e.factor,
                cpus,
            });
        }
        if start.elapsed().as_secs_f64() < tick {
            continue;
        }
        tick += 1.0;
        let m = bed.metrics(0).unwrap_or_default();
        if let Some(j) = scalar(&m, "marllb_jain_fairness") {
            jains.push(j);
        }
        for a in active_policy(&m) {
            if !active_agents.contains(&a) {
                active_agents.push(a);
            }
        }
        let w = per_backend(&m, BackendMetric::Weight);
        if !w.is_empty() {
            weights.push((
                start.elapsed().as_secs_f64(),
                w.iter()
                    .filter_map(|(a, v)| Some((id_of.get(a)?.clone(), *v)))
                    .collect(),
            ));
        }
        let prog: Vec<Progress> = run.progress();
        if o.live && prog.len() > shown {
            shown = prog.len();
            let p = &prog[prog.len() - 1];
            let up = per_backend(&m, BackendMetric::Up);
            let act = per_backend(&m, BackendMetric::ActiveFlows);
            let cols: Vec<String> = bed
                .topo
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
    for e in &pending {
        println!(
            "capacity event at {} s for be{} not applied: the replay ended first",
            e.at, e.backend
        );
    }
    let (summary, records) = run.finish(&mut bed.topo, Duration::from_secs(60))?;
    let placements = if o.record_placements {
        Some(placements(&bed.topo)?)
    } else {
        None
    };
    let host_stats = match o.host {
        Host::Dpdk => None,
        Host::Vpp => Some(crate::vpp::stats(
            &bed.topo,
            0,
            &crate::vpp::VppInstall::require()?,
        )?),
    };
    if let Some(s) = &host_stats {
        println!(
            "VPP's `show lb rl stats` after the replay:\n{}",
            s.trim_end()
        );
    }
    let ctrl_jain = if jains.is_empty() {
        f64::NAN
    } else {
        jains.iter().sum::<f64>() / jains.len() as f64
    };
    drop(bed);
    Ok(PolicyRun {
        policy,
        agent,
        summary,
        records,
        ctrl_jain,
        active_agents,
        events,
        weights,
        duration: o.duration,
        capacities: specs.iter().map(|s| (s.id.clone(), s.cpus)).collect(),
        host: o.host,
        placements,
        host_stats,
    })
}

/// The `agent` labels of `marllb_policy_active` samples at 1.
fn active_policy(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("marllb_policy_active{"))
        .filter_map(|l| l.split_once('}'))
        .filter(|(_, v)| v.trim().parse::<f64>().is_ok_and(|v| v > 0.5))
        .filter_map(|(labels, _)| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("agent=\""))
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .collect()
}

/// What one phase of a run (between two capacity events) measured, over the
/// requests that started in it.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// Name (`before`, `during`, `after` for one drop and its restoration;
    /// otherwise by time).
    pub name: String,
    /// Start, seconds from the start of the replay.
    pub from: f64,
    /// End (the next event, or the end of the replay).
    pub to: f64,
    /// The phase's requests, summarized as a whole run is.
    pub summary: Summary,
    /// Mean share of each backend in the controller's weights (w / Σw).
    pub weight_share: BTreeMap<String, f64>,
}

impl PhaseStats {
    /// Share of the answered requests backend `id` answered.
    pub fn share(&self, id: &str) -> f64 {
        let n = self.summary.per_backend.get(id).copied().unwrap_or(0);
        if self.summary.ok == 0 {
            0.0
        } else {
            n as f64 / self.summary.ok as f64
        }
    }
}

/// Splits a run at its capacity events into phases.
pub fn phases(run: &PolicyRun) -> Vec<PhaseStats> {
    let duration = run.duration;
    let mut cuts: Vec<f64> = vec![0.0];
    cuts.extend(run.events.iter().map(|e| e.at));
    cuts.push(duration.max(cuts.last().copied().unwrap_or(0.0)));
    let names: Vec<String> = match run.events.as_slice() {
        [a, b] if a.backend == b.backend && a.factor != 1.0 && b.factor == 1.0 => {
            vec!["before".into(), "during".into(), "after".into()]
        }
        _ => cuts
            .windows(2)
            .map(|w| format!("{:.0}-{:.0}s", w[0], w[1]))
            .collect(),
    };
    cuts.windows(2)
        .zip(names)
        .map(|(w, name)| {
            let (from, to) = (w[0], w[1]);
            let rs: Vec<Record> = run
                .records
                .iter()
                .filter(|r| r.at >= from && r.at < to)
                .cloned()
                .collect();
            let samples: Vec<&BTreeMap<String, f64>> = run
                .weights
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, w)| w)
                .collect();
            let mut weight_share: BTreeMap<String, f64> = BTreeMap::new();
            for w in &samples {
                let sum: f64 = w.values().sum();
                for (b, v) in w.iter() {
                    let share = if sum > 0.0 { v / sum } else { 0.0 };
                    *weight_share.entry(b.clone()).or_insert(0.0) += share / samples.len() as f64;
                }
            }
            PhaseStats {
                name,
                from,
                to,
                summary: summarize(&rs, &run.capacities),
                weight_share,
            }
        })
        .collect()
}

/// Prints, for every run and phase, latency and what the backends named in
/// the capacity events got (share of the requests, share of the weights).
pub fn print_phase_table(runs: &[PolicyRun]) {
    let mut watched: Vec<String> = Vec::new();
    for e in runs.iter().flat_map(|r| &r.events) {
        if !watched.contains(&e.backend) {
            watched.push(e.backend.clone());
        }
    }
    let cols: String = watched
        .iter()
        .map(|b| format!(" {b} requests (share) | {b} weight share |"))
        .collect();
    println!("\n| policy | phase | s | requests | ok | failed | mean ms | p95 ms | p99 ms |{cols}");
    println!(
        "|---|---|---|---|---|---|---|---|---|{}",
        "---|---|".repeat(watched.len())
    );
    for r in runs {
        for p in phases(r) {
            let cols: String = watched
                .iter()
                .map(|b| {
                    format!(
                        " {} ({:.1} %) | {:.3} |",
                        p.summary.per_backend.get(b).copied().unwrap_or(0),
                        100.0 * p.share(b),
                        p.weight_share.get(b).copied().unwrap_or(f64::NAN)
                    )
                })
                .collect();
            let s = &p.summary;
            println!(
                "| {} | {} | {:.1}-{:.1} | {} | {} | {} | {:.1} | {:.1} | {:.1} |{cols}",
                r.policy,
                p.name,
                p.from,
                p.to,
                s.requests,
                s.ok,
                s.failed,
                s.latency_mean_ms,
                s.latency_p95_ms,
                s.latency_p99_ms
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_keep_their_command_line_names() {
        use clap::ValueEnum;
        let names: Vec<String> = Policy::value_variants().iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "es",
                "es-q",
                "es-quota",
                "es-linger",
                "qmix",
                "sac-gru",
                "sed",
                "adaptive-sed",
                "lsq",
                "wcmp",
                "ecmp",
                "maglev"
            ]
        );
        let s = Policy::Lsq.setup(Path::new("m"));
        assert_eq!(
            (s.method, s.agent, s.model),
            (Method::Sed, PolicyKind::Ecmp, None)
        );
        let s = Policy::Es.setup(Path::new("m"));
        assert_eq!(s.model, Some(Path::new("m").join("es.onnx")));
        let s = Policy::EsQ.setup(Path::new("m"));
        assert_eq!(
            (s.agent, s.model),
            (PolicyKind::Es, Some(Path::new("m").join("es-q.onnx")))
        );
        let s = Policy::EsQuota.setup(Path::new("m"));
        assert_eq!(
            (s.agent, s.model, Policy::EsQuota.name().as_str()),
            (
                PolicyKind::Es,
                Some(Path::new("m").join("es-quota.onnx")),
                "es-quota"
            )
        );
        assert_eq!(
            Policy::EsLinger.setup(Path::new("m")).model,
            Some(Path::new("m").join("es-linger.onnx"))
        );
        // The testbed's SED is SED placement over the configured weights, and
        // each policy keeps the data plane and agent it ran with before the
        // one list of policies.
        for (p, method, agent) in [
            (Policy::Sed, Method::Sed, PolicyKind::Wcmp),
            (Policy::AdaptiveSed, Method::Sed, PolicyKind::AdaptiveSed),
            (Policy::Wcmp, Method::Alias, PolicyKind::Wcmp),
            (Policy::Ecmp, Method::Alias, PolicyKind::Ecmp),
            (Policy::Maglev, Method::Maglev, PolicyKind::Wcmp),
            (Policy::Qmix, Method::Sed, PolicyKind::Qmix),
            (Policy::SacGru, Method::Sed, PolicyKind::SacGru),
        ] {
            let s = p.setup(Path::new("m"));
            assert_eq!((s.method, s.agent), (method, agent), "{p}");
            assert!(p.kind().placement().is_some() && p.kind().agent().is_some());
            // The testbed's names are the shared ones (es-q is es's model).
            if p != Policy::EsQ {
                assert_eq!(p.name(), p.kind().name());
            }
        }
    }

    #[test]
    fn capacity_events_parse_with_clear_errors() {
        let e = CapacityEvent::parse("20:be4:0.25", 7).expect("valid");
        assert_eq!(
            e,
            CapacityEvent {
                at: 20.0,
                backend: 4,
                factor: 0.25
            }
        );
        assert_eq!(
            CapacityEvent::parse("7.5:6:1", 7).expect("index").backend,
            6
        );
        for (bad, says) in [
            ("20:be4", "SECONDS:BACKEND:FACTOR"),
            ("20:be4:0.5:1", "SECONDS:BACKEND:FACTOR"),
            ("x:be4:0.5", "SECONDS \"x\" is not a number"),
            ("-1:be4:0.5", "SECONDS must be >= 0"),
            (
                "20:be7:0.5",
                "no backend \"be7\" (indices 0..=6, ids be0..=be6)",
            ),
            ("20:web1:0.5", "no backend \"web1\""),
            ("20:be4:0", "FACTOR must be in (0, 100]"),
            ("20:be4:NaN", "FACTOR must be in (0, 100]"),
            ("20:be4:half", "FACTOR \"half\" is not a number"),
        ] {
            let e = CapacityEvent::parse(bad, 7).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.starts_with("--capacity-event"), "{bad}: {e}");
        }
    }

    fn run_with(events: Vec<AppliedEvent>, records: Vec<Record>) -> PolicyRun {
        let summary = summarize(&records, &[]);
        PolicyRun {
            policy: Policy::Sed,
            agent: PolicyKind::Wcmp,
            summary,
            records,
            ctrl_jain: 1.0,
            active_agents: vec!["wcmp".into()],
            events,
            weights: vec![
                (
                    1.0,
                    BTreeMap::from([("be0".into(), 1.0), ("be1".into(), 1.0)]),
                ),
                (
                    5.0,
                    BTreeMap::from([("be0".into(), 1.0), ("be1".into(), 0.25)]),
                ),
            ],
            duration: 9.0,
            capacities: vec![("be0".into(), 0.1), ("be1".into(), 0.1)],
            host: Host::Dpdk,
            placements: None,
            host_stats: None,
        }
    }

    #[test]
    fn a_drop_and_its_restoration_make_three_phases() {
        // Through serde: what the load generator writes.
        let rec = |at: f64, b: &str, ms: f64| -> Record {
            serde_json::from_str(&format!(
                r#"{{"at":{at},"latency_ms":{ms},"outcome":"ok","backend":"{b}","sport":1}}"#
            ))
            .expect("record")
        };
        let ev = |at: f64, factor: f64| AppliedEvent {
            at,
            backend: "be1".into(),
            factor,
            cpus: 0.1 * factor,
        };
        let run = run_with(
            vec![ev(3.0, 0.25), ev(6.0, 1.0)],
            vec![
                rec(1.0, "be0", 10.0),
                rec(2.0, "be1", 10.0),
                rec(4.0, "be0", 10.0),
                rec(4.5, "be0", 10.0),
                rec(5.0, "be0", 10.0),
                rec(5.5, "be1", 90.0),
                rec(7.0, "be1", 10.0),
            ],
        );
        let p = phases(&run);
        let names: Vec<&str> = p.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["before", "during", "after"]);
        assert_eq!(p[1].summary.requests, 4);
        assert!((p[1].share("be1") - 0.25).abs() < 1e-12);
        assert_eq!(p[1].summary.latency_p99_ms, 90.0);
        assert!((p[1].weight_share["be1"] - 0.2).abs() < 1e-12);
        assert!((p[0].weight_share["be1"] - 0.5).abs() < 1e-12);
        assert!(p[2].weight_share.is_empty());
        // Other events: phases by time.
        let run = run_with(vec![ev(3.0, 0.5)], vec![]);
        let names: Vec<String> = phases(&run).into_iter().map(|x| x.name).collect();
        assert_eq!(names, ["0-3s", "3-9s"]);
    }
}
