//! `marllb-sim suite FILE`: every policy on every scenario of a suite, with
//! paired seeds, and the learned policy's p90 against SED's and adaptive SED's
//! with 95 % bootstrap intervals.
//!
//! # Protocol
//!
//! * The suite file fixes the scenarios, the evaluation seeds and the
//!   policies before any run. Seeds must be below [`TRAIN_SEED_BASE`]:
//!   training and tuning draw theirs at or above it, so no evaluation seed
//!   (hence no evaluation schedule) is ever trained or tuned on.
//! * Common random numbers: for one (scenario, seed) every policy sees the same
//!   arrivals, sizes, speed draws and capacity schedule.
//! * The ratio of a policy to SED is taken per (scenario, seed) pair; a family's
//!   figure is the geometric mean of its pairs; the interval resamples seeds with
//!   replacement within each scenario (2000 resamples, fixed seed).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use marllb_core::hash::SplitMix64;
use serde::Deserialize;

use crate::eval::{evaluate, Policy, Summary};
use crate::scenario::{Scenario, TRAIN_SEED_BASE};

/// A suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Evaluation seeds (each < `TRAIN_SEED_BASE`).
    pub seeds: Vec<u64>,
    /// Policies: baseline names or ONNX files (relative to the working directory).
    pub policies: Vec<String>,
    /// The policy the RESULT lines are about (default: the last one listed).
    #[serde(default)]
    pub candidate: Option<String>,
    /// The scenarios.
    pub scenario: Vec<Scenario>,
}

impl Suite {
    /// Reads and checks a suite file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Suite = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        anyhow::ensure!(!s.seeds.is_empty(), "seeds: at least one seed");
        if let Some(x) = s.seeds.iter().find(|x| **x >= TRAIN_SEED_BASE) {
            anyhow::bail!(
                "seeds: {x} is a training seed (evaluation seeds are below {TRAIN_SEED_BASE})"
            );
        }
        s.check_policies()?;
        anyhow::ensure!(!s.scenario.is_empty(), "scenario: at least one");
        for (i, sc) in s.scenario.iter().enumerate() {
            anyhow::ensure!(!sc.name.is_empty(), "scenario[{i}].name: missing");
            anyhow::ensure!(!sc.family.is_empty(), "scenario[{i}].family: missing");
            sc.build(s.seeds[0])
                .map_err(|e| anyhow!("scenario[{i}]: {e}"))?;
        }
        Ok(s)
    }

    /// The ratios need SED and adaptive SED among the policies.
    pub fn check_policies(&self) -> Result<()> {
        for p in ["sed", "adaptive-sed"] {
            anyhow::ensure!(
                self.policies.iter().any(|x| x == p),
                "policies: must include {p} (the ratios are taken against it)"
            );
        }
        if let Some(c) = &self.candidate {
            anyhow::ensure!(
                self.policies.contains(c),
                "candidate: {c:?} is not one of the policies"
            );
        }
        Ok(())
    }

    /// The candidate policy's name as reports show it.
    pub fn candidate(&self) -> String {
        let c = self
            .candidate
            .clone()
            .or_else(|| self.policies.last().cloned())
            .unwrap_or_default();
        // An ONNX file is shown by its stem, as `Policy::name` does; a
        // baseline with parameters (`adaptive-sed:gain=0.75,...`) as written.
        if !c.ends_with(".onnx") {
            return c;
        }
        Path::new(&c)
            .file_stem()
            .map_or(c.clone(), |x| x.to_string_lossy().into_owned())
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// p50, p90, p99 JCT, ms.
    pub p50: f64,
    /// See `p50`.
    pub p90: f64,
    /// See `p50`.
    pub p99: f64,
    /// Jain of per-server utilization.
    pub jain: f64,
    /// Flows refused.
    pub rejected: u64,
}

impl From<&Summary> for Run {
    fn from(s: &Summary) -> Self {
        Self {
            p50: s.jct_p50_ms,
            p90: s.jct_p90_ms,
            p99: s.jct_p99_ms,
            jain: s.jain,
            rejected: s.rejected,
        }
    }
}

/// Every run of a suite: `runs[scenario][policy][seed]`.
#[derive(Debug, Clone)]
pub struct Results {
    /// Policy display names, in suite order.
    pub policies: Vec<String>,
    /// See the type.
    pub runs: Vec<Vec<Vec<Run>>>,
}

/// One (scenario, seed) job's runs, one per policy.
type Row = ((usize, usize), Vec<Run>);

/// Runs the suite on `threads` threads.
pub fn run(suite: &Suite, threads: usize) -> Result<Results> {
    let jobs: Vec<(usize, usize)> = (0..suite.scenario.len())
        .flat_map(|s| (0..suite.seeds.len()).map(move |k| (s, k)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: std::sync::Mutex<Vec<Row>> = Default::default();
    let names: Vec<String> = suite
        .policies
        .iter()
        .map(|p| Policy::parse(p).map(|x| x.name()))
        .collect::<Result<_>>()?;
    std::thread::scope(|sc| -> Result<()> {
        let mut handles = Vec::new();
        for _ in 0..threads.max(1) {
            handles.push(sc.spawn(|| -> Result<()> {
                let policies: Vec<Policy> = suite
                    .policies
                    .iter()
                    .map(|p| Policy::parse(p))
                    .collect::<Result<_>>()?;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(s, k)) = jobs.get(i) else {
                        return Ok(());
                    };
                    let sc = &suite.scenario[s];
                    let (cfg, w) = sc.build(suite.seeds[k]).map_err(|e| anyhow!("{e}"))?;
                    let mut row = Vec::new();
                    for p in &policies {
                        let r = evaluate(cfg.clone(), &w, p)
                            .with_context(|| format!("{} on {}", p.name(), sc.name))?;
                        row.push(Run::from(&r));
                    }
                    if let Ok(mut o) = out.lock() {
                        o.push(((s, k), row));
                    }
                }
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow!("a suite worker panicked"))??;
        }
        Ok(())
    })?;
    let mut runs =
        vec![vec![vec![Run::default(); suite.seeds.len()]; names.len()]; suite.scenario.len()];
    for ((s, k), row) in out.into_inner().map_err(|_| anyhow!("poisoned"))? {
        for (p, r) in row.into_iter().enumerate() {
            runs[s][p][k] = r;
        }
    }
    Ok(Results {
        policies: names,
        runs,
    })
}

fn geo_mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.max(1e-12).ln()).sum::<f64>() / v.len() as f64).exp()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A paired ratio with its 95 % bootstrap interval.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    /// Geometric mean of the per-pair ratios.
    pub value: f64,
    /// 2.5 % quantile of the bootstrap distribution.
    pub low: f64,
    /// 97.5 % quantile.
    pub high: f64,
}

/// Paired ratio of policy `a` to policy `b` on p90 over the given scenarios.
pub fn p90_ratio(res: &Results, scenarios: &[usize], a: usize, b: usize) -> Ratio {
    let pairs: Vec<Vec<f64>> = scenarios
        .iter()
        .map(|&s| {
            res.runs[s][a]
                .iter()
                .zip(&res.runs[s][b])
                .map(|(x, y)| x.p90 / y.p90.max(1e-9))
                .collect()
        })
        .collect();
    let all: Vec<f64> = pairs.iter().flatten().copied().collect();
    let mut rng = SplitMix64::new(0xb007_57a9);
    let mut boots = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let mut sample = Vec::with_capacity(all.len());
        for p in &pairs {
            for _ in 0..p.len() {
                sample.push(p[(rng.next_u64() % p.len() as u64) as usize]);
            }
        }
        boots.push(geo_mean(&sample));
    }
    boots.sort_by(f64::total_cmp);
    Ratio {
        value: geo_mean(&all),
        low: quantile(&boots, 0.025),
        high: quantile(&boots, 0.975),
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// The report: a table per scenario, a table per family, and the RESULT lines
/// (one per family and an aggregate one) about `candidate`.
pub fn report(suite: &Suite, res: &Results, candidate: &str) -> Result<String> {
    let idx = |name: &str| {
        res.policies
            .iter()
            .position(|p| p == name)
            .ok_or_else(|| anyhow!("policy {name} is not in the suite"))
    };
    let (sed, ada, cand) = (idx("sed")?, idx("adaptive-sed")?, idx(candidate)?);
    let mut out = String::new();
    out += "| scenario | policy | p50 ms | p90 ms | p99 ms | p90 / SED [95 % CI] | p90 / adaptive | Jain (min) | rejected |\n|---|---|---|---|---|---|---|---|---|\n";
    for (s, sc) in suite.scenario.iter().enumerate() {
        for (p, name) in res.policies.iter().enumerate() {
            let r = &res.runs[s][p];
            let vs = p90_ratio(res, &[s], p, sed);
            let va = p90_ratio(res, &[s], p, ada);
            out += &format!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.3} [{:.3}, {:.3}] | {:.3} | {:.3} ({:.3}) | {} |\n",
                sc.name,
                name,
                mean(r.iter().map(|x| x.p50)),
                mean(r.iter().map(|x| x.p90)),
                mean(r.iter().map(|x| x.p99)),
                vs.value,
                vs.low,
                vs.high,
                va.value,
                mean(r.iter().map(|x| x.jain)),
                r.iter().map(|x| x.jain).fold(1.0, f64::min),
                r.iter().map(|x| x.rejected).sum::<u64>()
            );
        }
    }
    let mut families: Vec<&str> = Vec::new();
    for sc in &suite.scenario {
        if !families.contains(&sc.family.as_str()) {
            families.push(&sc.family);
        }
    }
    out += "\n| family | policy | p90 / SED [95 % CI] | p90 / adaptive SED [95 % CI] | Jain (min) | rejected (SED's) |\n|---|---|---|---|---|---|\n";
    let mut results = String::new();
    let line = |fam: &str, sel: &[usize], p: usize| {
        let vs = p90_ratio(res, sel, p, sed);
        let va = p90_ratio(res, sel, p, ada);
        let runs = || sel.iter().flat_map(|&s| res.runs[s][p].iter());
        let jain = mean(runs().map(|x| x.jain));
        let jmin = runs().map(|x| x.jain).fold(1.0, f64::min);
        let rej: u64 = runs().map(|x| x.rejected).sum();
        let rej_sed: u64 = sel
            .iter()
            .flat_map(|&s| res.runs[s][sed].iter())
            .map(|x| x.rejected)
            .sum();
        (vs, va, jain, jmin, rej, rej_sed, fam.to_string())
    };
    let mut all = Vec::new();
    for fam in families {
        let sel: Vec<usize> = (0..suite.scenario.len())
            .filter(|&s| suite.scenario[s].family == fam)
            .collect();
        all.extend(&sel);
        for p in 0..res.policies.len() {
            let (vs, va, jain, jmin, rej, rej_sed, fam) = line(fam, &sel, p);
            out += &format!(
                "| {fam} | {} | {:.3} [{:.3}, {:.3}] | {:.3} [{:.3}, {:.3}] | {jain:.3} ({jmin:.3}) | {rej} ({rej_sed}) |\n",
                res.policies[p], vs.value, vs.low, vs.high, va.value, va.low, va.high
            );
            if p == cand {
                results += &format!(
                    "RESULT family={fam} policy={candidate} p90_vs_sed={:.3} ci_low={:.3} ci_high={:.3} p90_vs_adaptive={:.3} adaptive_ci_low={:.3} adaptive_ci_high={:.3} jain={jain:.3} jain_min={jmin:.3} rejected={rej} rejected_sed={rej_sed}\n",
                    vs.value, vs.low, vs.high, va.value, va.low, va.high
                );
            }
        }
    }
    let (vs, va, jain, jmin, rej, rej_sed, _) = line("all", &all, cand);
    results += &format!(
        "RESULT family=all policy={candidate} p90_vs_sed={:.3} ci_low={:.3} ci_high={:.3} p90_vs_adaptive={:.3} adaptive_ci_low={:.3} adaptive_ci_high={:.3} jain={jain:.3} jain_min={jmin:.3} rejected={rej} rejected_sed={rej_sed}\n",
        vs.value, vs.low, vs.high, va.value, va.low, va.high
    );
    out += "\n";
    out += &results;
    Ok(out)
}
