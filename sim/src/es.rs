//! The `es` policy: a small network shared by every backend and every LB node
//! that steps each backend's log weight correction, trained by evolution
//! strategies on randomly drawn training scenarios.
//!
//! # Why this design (measured alternatives in models/README.md)
//!
//! * **Action relative to the configured weight.** The output is a step of the
//!   log correction of the operator's weight (`log_step`: `w = base · exp(c)`),
//!   not an absolute level, so the policy only has to learn where the
//!   configuration is wrong.
//! * **Scale-free, per-backend observation.** Completion times relative to the
//!   pool's, load per configured weight, the current correction
//!   ([`FEATURES`]); the same weights apply to every backend (parameter sharing
//!   across backends and LB nodes: decentralized execution, one team objective).
//! * **Starts from adaptive SED.** The linear skip path is initialized to
//!   adaptive SED's rule; the hidden layer starts with zero output weight. Training
//!   can only move away from it where the training scenarios pay for it.
//! * **Evolution strategies.** Antithetic Gaussian perturbations evaluated on the
//!   same batch of scenarios (common random numbers), the objective is the mean
//!   log p90 job completion time ratio to SED on the same seed plus a rejection
//!   penalty; Adam on the estimated gradient. The objective is exactly what the
//!   suite measures, and a run fits a session on one core.
//!
//! Training scenarios are drawn from seeds at or above
//! [`crate::scenario::TRAIN_SEED_BASE`], never from the suite's.

use std::path::Path;

use anyhow::{Context, Result};
use marllb_core::hash::SplitMix64;
use marllb_policy::meta::{Normalization, FORMAT};
use marllb_policy::{log_step, ActionSpec, AdaptiveSed, Feature, PolicyMeta, TensorSpec};
use prost::Message;
use tract_onnx::pb;

use crate::engine::Sim;
use crate::eval::percentile;
use crate::onnx::{gemm, model, node, tensor_proto, value_info};
use crate::scenario::{Scenario, SplitChange, TRAIN_SEED_BASE};
use crate::workload::open01;
use marllb_policy::PolicyKind;

/// Per-backend observation of the `es` policy.
pub const FEATURES: [Feature; 5] = [
    Feature::FctEstimateRatio,
    Feature::FctWindowRatio,
    Feature::AgeRatio,
    Feature::LoadPerWeight,
    Feature::PreviousAction,
];
const F: usize = FEATURES.len();
/// Hidden units.
pub const HIDDEN: usize = 8;
/// Largest step per cycle (the output is `MAX_STEP · tanh(z / MAX_STEP)`).
pub const MAX_STEP: f32 = 0.5;
/// Largest correction.
pub const CLAMP: f32 = 3.0;
/// Parameters: linear path (F + 1), hidden layer (H·F + H), output (H).
pub const PARAMS: usize = F + 1 + HIDDEN * F + HIDDEN + HIDDEN;

/// The network's parameters, flat: `v[F], b0, w1[H][F], b1[H], w2[H]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EsNet {
    /// See the type.
    pub p: Vec<f32>,
}

impl EsNet {
    /// Adaptive SED's rule on the linear path, a random hidden layer with zero
    /// output weight.
    pub fn initial(seed: u64) -> Self {
        let a = AdaptiveSed::default();
        let mut p = vec![0f32; PARAMS];
        // step = rate · (−gain · fct_ratio − correction)
        p[0] = -a.rate * a.gain;
        p[F - 1] = -a.rate;
        let mut rng = SplitMix64::new(seed);
        for x in &mut p[F + 1..F + 1 + HIDDEN * F] {
            *x = ((open01(&mut rng) * 2.0 - 1.0) * 0.5) as f32;
        }
        Self { p }
    }

    /// The step for one backend's features.
    pub fn forward(&self, x: &[f32; F]) -> f32 {
        let p = &self.p;
        let mut z = p[F];
        for i in 0..F {
            z += p[i] * x[i];
        }
        let w1 = F + 1;
        let b1 = w1 + HIDDEN * F;
        let w2 = b1 + HIDDEN;
        for j in 0..HIDDEN {
            let mut h = p[b1 + j];
            for i in 0..F {
                h += p[w1 + j * F + i] * x[i];
            }
            z += p[w2 + j] * h.max(0.0);
        }
        MAX_STEP * (z / MAX_STEP).tanh()
    }

    /// Steps for every backend of a node (`out` cleared first).
    pub fn steps(&self, fb: &marllb_policy::FeatureBuilder, out: &mut Vec<f32>) {
        out.clear();
        for b in 0..fb.backends() {
            let mut x = [0f32; F];
            for (v, f) in x.iter_mut().zip(FEATURES) {
                *v = fb.raw(b, f);
            }
            out.push(self.forward(&x));
        }
    }

    /// The sidecar for `backends` backends.
    pub fn meta(backends: usize) -> PolicyMeta {
        PolicyMeta {
            format: FORMAT.to_string(),
            agent: "es".into(),
            backends,
            features: FEATURES.to_vec(),
            normalization: Normalization {
                mean: vec![0.0; F],
                std: vec![1.0; F],
            },
            inputs: vec![TensorSpec {
                name: "obs".into(),
                shape: vec![1, backends * F],
            }],
            outputs: vec![TensorSpec {
                name: "action".into(),
                shape: vec![1, backends],
            }],
            hidden: None,
            action: ActionSpec::LogStep {
                max_step: MAX_STEP,
                clamp: CLAMP,
            },
            step_ms: 250,
        }
    }

    /// The ONNX graph for `backends` backends: the shared network applied to
    /// each backend's row (`Reshape` to `[backends, F]`, `Gemm`s, `Relu`,
    /// `Tanh`), then back to `[1, backends]`.
    pub fn onnx(&self, backends: usize) -> pb::ModelProto {
        let p = &self.p;
        let w1 = F + 1;
        let b1 = w1 + HIDDEN * F;
        let w2 = b1 + HIDDEN;
        let shape = |name: &str, dims: &[i64]| pb::TensorProto {
            name: name.into(),
            dims: vec![dims.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: dims.to_vec(),
            ..Default::default()
        };
        let init = vec![
            shape("rows_shape", &[backends as i64, F as i64]),
            shape("out_shape", &[1, backends as i64]),
            tensor_proto("v", &[1, F], p[..F].to_vec()),
            tensor_proto("b0", &[1], vec![p[F]]),
            tensor_proto("w1", &[HIDDEN, F], p[w1..b1].to_vec()),
            tensor_proto("b1", &[HIDDEN], p[b1..w2].to_vec()),
            tensor_proto("w2", &[1, HIDDEN], p[w2..].to_vec()),
            tensor_proto("b2", &[1], vec![0.0]),
            tensor_proto("inv_step", &[1], vec![1.0 / MAX_STEP]),
            tensor_proto("step", &[1], vec![MAX_STEP]),
        ];
        let nodes = vec![
            node("Reshape", &["obs", "rows_shape"], "rows"),
            gemm("rows", "v", "b0", "lin"),
            gemm("rows", "w1", "b1", "pre_h"),
            node("Relu", &["pre_h"], "h"),
            gemm("h", "w2", "b2", "nonlin"),
            node("Add", &["lin", "nonlin"], "z"),
            node("Mul", &["z", "inv_step"], "z_scaled"),
            node("Tanh", &["z_scaled"], "t"),
            node("Mul", &["t", "step"], "steps"),
            node("Reshape", &["steps", "out_shape"], "action"),
        ];
        model(pb::GraphProto {
            name: "marllb_es_policy".into(),
            node: nodes,
            initializer: init,
            input: vec![value_info("obs", &[1, backends * F])],
            output: vec![value_info("action", &[1, backends])],
            ..Default::default()
        })
    }

    /// Writes `path` (ONNX), `path.json` (sidecar, validated) and
    /// `path.params.json` (the flat parameters, to resume or inspect).
    pub fn save(&self, path: &Path, backends: usize) -> Result<()> {
        std::fs::write(path, self.onnx(backends).encode_to_vec())
            .with_context(|| format!("writing {}", path.display()))?;
        let meta = Self::meta(backends);
        meta.validate()?;
        std::fs::write(
            PolicyMeta::sidecar_of(path),
            marllb_policy::meta::to_json(&meta),
        )?;
        std::fs::write(Self::params_path(path), serde_json::to_string(&self.p)?)?;
        Ok(())
    }

    /// Where [`Self::save`] writes the flat parameters of `model`:
    /// `model.params.json`.
    fn params_path(model: &Path) -> std::path::PathBuf {
        let mut pp = model.as_os_str().to_owned();
        pp.push(".params.json");
        pp.into()
    }

    /// Reads the flat parameters [`Self::save`] wrote beside `model`
    /// (`model.params.json`), refusing a file of the wrong length or with a
    /// non-finite value.
    pub fn load(model: &Path) -> Result<Self> {
        let pp = Self::params_path(model);
        let text =
            std::fs::read_to_string(&pp).with_context(|| format!("reading {}", pp.display()))?;
        let p: Vec<f32> =
            serde_json::from_str(&text).with_context(|| format!("{}", pp.display()))?;
        anyhow::ensure!(
            p.len() == PARAMS,
            "{}: {} parameters, the es network has {PARAMS}",
            pp.display(),
            p.len()
        );
        anyhow::ensure!(
            p.iter().all(|x| x.is_finite()),
            "{}: a parameter is not finite",
            pp.display()
        );
        Ok(Self { p })
    }

    /// The same network with `feature`'s input held at 0 (an ablation): its
    /// column of the linear path and of the hidden layer is zeroed. Every
    /// feature of [`FEATURES`] is a log ratio to the pool, a deviation from
    /// the pool's mean or a log correction, so 0 is "this backend looks like
    /// the pool" (or "no correction yet"), the value a backend without data
    /// gets. `None` for a feature the network does not read.
    pub fn without(&self, feature: Feature) -> Option<Self> {
        let k = FEATURES.iter().position(|f| *f == feature)?;
        let mut p = self.p.clone();
        p[k] = 0.0;
        let w1 = F + 1;
        for j in 0..HIDDEN {
            p[w1 + j * F + k] = 0.0;
        }
        Some(Self { p })
    }
}

/// Figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// p90 job completion time, s.
    pub p90: f64,
    /// Fraction of counted flows refused.
    pub rejected: f64,
}

/// What decides the weights in a training or tuning run.
#[derive(Debug, Clone, Copy)]
pub enum Runner<'a> {
    /// A fixed heuristic.
    Fixed(PolicyKind),
    /// Adaptive SED with these constants.
    Adaptive(AdaptiveSed),
    /// The `es` network.
    Net(&'a EsNet),
}

/// Runs `runner` on a scenario and seed.
pub fn run(runner: Runner<'_>, sc: &Scenario, seed: u64) -> Result<Outcome> {
    let (mut cfg, w) = sc.build(seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stats = match runner {
        Runner::Fixed(k) => Sim::new(cfg, &w, k).run(),
        Runner::Adaptive(a) => {
            let mut sim = Sim::new(cfg, &w, PolicyKind::AdaptiveSed);
            sim.set_adaptive(a);
            sim.run()
        }
        Runner::Net(net) => {
            cfg.features = true;
            let lbs = cfg.lbs;
            let mut sim = Sim::new(cfg, &w, PolicyKind::Es);
            sim.set_initial_action(0.0);
            let (mut steps, mut real, mut q16) = (Vec::new(), Vec::new(), Vec::new());
            while sim.run_step() {
                for lb in 0..lbs {
                    if let Some(node) = sim.lbs.get(lb) {
                        net.steps(&node.features, &mut steps);
                        log_step(&steps, &node.features, MAX_STEP, CLAMP, &mut real, &mut q16);
                    }
                    sim.apply_action(lb, &real, &q16);
                }
            }
            sim.into_stats()
        }
    };
    let mut v = stats.jct;
    v.sort_by(f64::total_cmp);
    Ok(Outcome {
        p90: percentile(&v, 0.9),
        rejected: stats.rejected as f64 / stats.arrived.max(1) as f64,
    })
}

/// The most LB nodes a training scenario had before `--max-lbs` existed
/// (the shipped models' setting; the draws are the same at this value).
pub const DEFAULT_MAX_LBS: usize = 3;

/// The lowest offered load of a training scenario before `--min-load` existed.
pub const DEFAULT_MIN_LOAD: f64 = 0.55;

/// The highest offered load of a training scenario.
pub const MAX_LOAD: f64 = 0.92;

/// What the training scenarios range over (the defaults are the shipped
/// `es.onnx`'s, and give the same draws).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingRange {
    /// 1 to this many LB nodes (clamped to 1..=6).
    pub max_lbs: usize,
    /// Offered load drawn uniformly in [min_load, `MAX_LOAD`] (clamped to
    /// 0.05..=`MAX_LOAD`).
    pub min_load: f64,
    /// Probability that a scenario's servers are CPU quotas
    /// ([`crate::ServerModel::Quota`]); at 0 nothing is drawn for it, so the
    /// other draws are the earlier models'.
    pub quota_share: f64,
    /// Probability that a scenario's connections linger after their response
    /// ([`crate::Linger`]: a share of flows in [0.2, 0.95], a mean idle time
    /// log-uniform in [2, 40] s); at 0 nothing is drawn for it.
    pub linger_share: f64,
    /// Probability that a scenario's flows send packets only at the edges of
    /// a request ([`crate::Packets::Edges`]); at 0 nothing is drawn for it.
    pub edges_share: f64,
}

impl Default for TrainingRange {
    fn default() -> Self {
        Self {
            max_lbs: DEFAULT_MAX_LBS,
            min_load: DEFAULT_MIN_LOAD,
            quota_share: 0.0,
            linger_share: 0.0,
            edges_share: 0.0,
        }
    }
}

/// A random training scenario (its seed is drawn at or above `TRAIN_SEED_BASE`)
/// within `range`.
pub fn training_scenario(
    rng: &mut SplitMix64,
    duration: f64,
    range: &TrainingRange,
) -> (Scenario, u64) {
    let u = |rng: &mut SplitMix64| open01(rng);
    let pick = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n as u64) as usize;
    let layouts = ["4x2,3x4", "6x2,2x4", "4x1,4x2,2x4", "3x4,3x2", "8x2"];
    let mut servers = layouts[pick(rng, layouts.len())].to_string();
    if u(rng) < 0.5 {
        // Speed mismatch on one group.
        let groups: Vec<&str> = servers.split(',').collect();
        let g = pick(rng, groups.len());
        let speed = 0.35 + 0.9 * u(rng);
        servers = groups
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == g {
                    format!("{s}@{speed:.3}")
                } else {
                    (*s).to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    let mut sc = Scenario::new(&servers);
    let n = crate::engine::parse_servers(&servers).map_or(1, |v| v.len());
    sc.name = "train".into();
    sc.family = "train".into();
    sc.lbs = 1 + pick(rng, range.max_lbs.clamp(1, 6));
    let lo = if range.min_load.is_finite() {
        range.min_load.clamp(0.05, MAX_LOAD)
    } else {
        DEFAULT_MIN_LOAD
    };
    // At the default 0.92 - 0.55 is exactly 0.37 (f64): the shipped models'
    // draws are unchanged.
    sc.load = Some(lo + (MAX_LOAD - lo) * u(rng));
    sc.speed_noise = [0.0, 0.0, 0.15, 0.3][pick(rng, 4)];
    sc.sizes = match pick(rng, 4) {
        0 => "exp".into(),
        1 => format!("lognormal:{:.2}", 0.5 + 1.3 * u(rng)),
        2 => format!("pareto:{:.2}", 1.6 + 1.2 * u(rng)),
        _ => "bimodal".into(),
    };
    if u(rng) < 0.4 {
        let t = 10.0 + 0.4 * duration * u(rng);
        let s = pick(rng, n);
        sc.drift = vec![
            (t, s, 0.2 + 0.5 * u(rng)),
            (t + 10.0 + 0.4 * duration * u(rng), s, 1.0),
        ];
    }
    if u(rng) < 0.25 {
        let period = 20.0 + 40.0 * u(rng);
        sc.noisy = Some(format!(
            "1:{:.1}:{period:.1}:{:.2}",
            period * (0.2 + 0.4 * u(rng)),
            0.3 + 0.4 * u(rng)
        ));
    }
    if sc.lbs > 1 && u(rng) < 0.5 {
        let shares: Vec<f64> = (0..sc.lbs).map(|_| 0.05 + u(rng)).collect();
        sc.lb_split = shares;
        if u(rng) < 0.4 {
            sc.split_change = vec![SplitChange {
                time: duration * (0.3 + 0.4 * u(rng)),
                shares: (0..sc.lbs).map(|_| 0.05 + u(rng)).collect(),
            }];
        }
    }
    if range.quota_share > 0.0 && u(rng) < range.quota_share {
        sc.server_model = crate::ServerModel::Quota;
    }
    if range.linger_share > 0.0 && u(rng) < range.linger_share {
        let share = 0.2 + 0.75 * u(rng);
        let mean = 2.0 * 20f64.powf(u(rng));
        sc.linger = Some(format!("{share:.3}:{mean:.2}"));
    }
    if range.edges_share > 0.0 && u(rng) < range.edges_share {
        sc.packets = Some("edges".into());
    }
    sc.duration = duration;
    sc.warmup = 5.0;
    let seed = TRAIN_SEED_BASE + (rng.next_u64() % (u64::MAX / 2));
    (sc, seed)
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct EsConfig {
    /// Generations.
    pub generations: usize,
    /// Antithetic pairs per generation.
    pub pairs: usize,
    /// Scenarios per generation.
    pub batch: usize,
    /// Perturbation scale.
    pub sigma: f32,
    /// Adam step.
    pub lr: f32,
    /// Simulated seconds per scenario.
    pub duration: f64,
    /// Penalty per unit of rejected fraction above SED's.
    pub reject_penalty: f64,
    /// Seed.
    pub seed: u64,
    /// Validation scenarios (a fixed set of training-range seeds) and how often.
    pub validate_every: usize,
    /// See `validate_every`.
    pub validation: usize,
    /// What the training scenarios range over.
    pub range: TrainingRange,
}

/// One generation's log line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenLog {
    /// Generation.
    pub generation: usize,
    /// Mean loss of the perturbed pairs (log p90 ratio to SED + penalty).
    pub loss: f64,
    /// Validation loss of the current parameters (when measured).
    pub validation: Option<f64>,
}

fn loss(o: Outcome, sed: Outcome, penalty: f64) -> f64 {
    (o.p90.max(1e-6) / sed.p90.max(1e-6)).ln() + penalty * (o.rejected - sed.rejected).max(0.0)
}

/// A set of training scenarios with SED's outcome on each.
pub type TrainingSet = Vec<(Scenario, u64, Outcome)>;

/// `n` training scenarios drawn from `rng` within `range`, with SED run on
/// each.
pub fn training_set(
    rng: &mut SplitMix64,
    n: usize,
    duration: f64,
    range: &TrainingRange,
) -> Result<TrainingSet> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let (sc, seed) = training_scenario(rng, duration, range);
        let sed = run(Runner::Fixed(PolicyKind::Sed), &sc, seed)?;
        v.push((sc, seed, sed));
    }
    Ok(v)
}

/// Mean loss (log p90 ratio to SED + rejection penalty) of `runner` over `set`.
pub fn mean_loss(
    runner: Runner<'_>,
    set: &[(Scenario, u64, Outcome)],
    penalty: f64,
) -> Result<f64> {
    let mut s = 0.0;
    for (sc, seed, sed) in set {
        s += loss(run(runner, sc, *seed)?, *sed, penalty);
    }
    Ok(s / set.len().max(1) as f64)
}

/// Trains from adaptive SED's rule; returns the best parameters on the
/// validation set and the log. `progress` gets each generation's line.
pub fn train(cfg: &EsConfig, mut progress: impl FnMut(&GenLog)) -> Result<(EsNet, Vec<GenLog>)> {
    let mut rng = SplitMix64::new(cfg.seed);
    let mut net = EsNet::initial(rng.next_u64());
    let mut vrng = SplitMix64::new(cfg.seed ^ 0x7a11_da7e);
    let validation = training_set(&mut vrng, cfg.validation, cfg.duration, &cfg.range)?;
    let mut best = (
        mean_loss(Runner::Net(&net), &validation, cfg.reject_penalty)?,
        net.clone(),
    );
    let (mut m, mut v) = (vec![0f32; PARAMS], vec![0f32; PARAMS]);
    let (b1, b2) = (0.9f32, 0.999f32);
    let mut log = Vec::new();
    for g in 0..cfg.generations {
        let batch = training_set(&mut rng, cfg.batch, cfg.duration, &cfg.range)?;
        let mut grad = vec![0f32; PARAMS];
        let mut diffs = Vec::new();
        let mut noises = Vec::new();
        let mut total = 0.0;
        for _ in 0..cfg.pairs {
            let eps: Vec<f32> = (0..PARAMS)
                .map(|_| {
                    let u = open01(&mut rng);
                    crate::workload::normal(u, open01(&mut rng)) as f32
                })
                .collect();
            let plus = EsNet {
                p: net
                    .p
                    .iter()
                    .zip(&eps)
                    .map(|(p, e)| p + cfg.sigma * e)
                    .collect(),
            };
            let minus = EsNet {
                p: net
                    .p
                    .iter()
                    .zip(&eps)
                    .map(|(p, e)| p - cfg.sigma * e)
                    .collect(),
            };
            let lp = mean_loss(Runner::Net(&plus), &batch, cfg.reject_penalty)?;
            let lm = mean_loss(Runner::Net(&minus), &batch, cfg.reject_penalty)?;
            total += lp + lm;
            diffs.push(lp - lm);
            noises.push(eps);
        }
        // Normalize the differences (scale-free steps), then the gradient of the loss.
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len().max(1) as f64)
            .sqrt()
            .max(1e-9);
        for (d, eps) in diffs.iter().zip(&noises) {
            let k = (*d / sd) as f32 / (2.0 * cfg.pairs as f32 * cfg.sigma);
            for (gi, e) in grad.iter_mut().zip(eps) {
                *gi += k * e;
            }
        }
        let t = (g + 1) as i32;
        for i in 0..PARAMS {
            m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            net.p[i] -= cfg.lr * mh / (vh.sqrt() + 1e-8);
        }
        let mut entry = GenLog {
            generation: g + 1,
            loss: total / (2 * cfg.pairs).max(1) as f64,
            validation: None,
        };
        if (g + 1) % cfg.validate_every.max(1) == 0 || g + 1 == cfg.generations {
            let l = mean_loss(Runner::Net(&net), &validation, cfg.reject_penalty)?;
            entry.validation = Some(l);
            if l < best.0 {
                best = (l, net.clone());
            }
        }
        progress(&entry);
        log.push(entry);
    }
    Ok((best.1, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_network_is_adaptive_sed() {
        let net = EsNet::initial(1);
        let a = AdaptiveSed::default();
        for x in [[0.2f32, 0.1, -0.3, 0.4, 0.05], [-0.2, 0.0, 0.0, -0.2, -0.1]] {
            let expect = a.rate * (-a.gain * x[0] - x[4]);
            let got = net.forward(&x);
            // tanh saturation is the only difference, small for small steps.
            assert!((got - expect).abs() < 0.01, "{got} vs {expect}");
        }
    }

    #[test]
    fn an_ablated_network_reads_the_feature_as_zero_and_the_rest_as_before() {
        let mut net = EsNet::initial(11);
        let mut rng = SplitMix64::new(5);
        for x in &mut net.p {
            *x += ((open01(&mut rng) - 0.5) * 0.8) as f32;
        }
        for (k, f) in FEATURES.iter().enumerate() {
            let cut = net.without(*f).expect("an es feature");
            let mut moved = false;
            for _ in 0..50 {
                let mut x = [0f32; F];
                for v in &mut x {
                    *v = ((open01(&mut rng) - 0.5) * 3.0) as f32;
                }
                let mut zeroed = x;
                zeroed[k] = 0.0;
                // Held at 0 whatever the input is ...
                assert_eq!(cut.forward(&x), net.forward(&zeroed));
                // ... and the same network where the feature is 0 anyway.
                assert_eq!(cut.forward(&zeroed), net.forward(&zeroed));
                moved |= (cut.forward(&x) - net.forward(&x)).abs() > 1e-4;
            }
            assert!(moved, "{f:?}: the ablation changed nothing");
        }
        assert!(net.without(Feature::FctP90).is_none());
        // Round trip through the saved parameters.
        let dir = std::env::temp_dir().join(format!("marllb-es-ablate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("es.onnx");
        net.save(&path, 3).expect("save");
        assert_eq!(EsNet::load(&path).expect("load"), net);
        std::fs::write(dir.join("es.onnx.params.json"), "[1.0, 2.0]").expect("write");
        let err = EsNet::load(&path).expect_err("too short").to_string();
        assert!(err.contains("parameters"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_onnx_graph_computes_what_the_network_does() {
        let mut net = EsNet::initial(7);
        let mut rng = SplitMix64::new(3);
        for x in &mut net.p {
            *x += ((open01(&mut rng) - 0.5) * 0.8) as f32;
        }
        let backends = 5;
        let dir = std::env::temp_dir().join(format!("marllb-es-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("es.onnx");
        net.save(&path, backends).expect("save");
        let mut onnx = marllb_policy::model::Policy::load(&path, Some(backends)).expect("load");
        assert!(onnx.hidden().is_empty());
        let mut out = Vec::new();
        for _ in 0..20 {
            let obs: Vec<f32> = (0..backends * F)
                .map(|_| ((open01(&mut rng) - 0.5) * 3.0) as f32)
                .collect();
            onnx.infer(&obs, &mut out).expect("run");
            for (b, o) in out.iter().enumerate() {
                let mut x = [0f32; F];
                x.copy_from_slice(&obs[b * F..(b + 1) * F]);
                assert!(
                    (net.forward(&x) - o).abs() < 1e-5,
                    "{} vs {o}",
                    net.forward(&x)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn max_lbs_bounds_the_lb_nodes_and_keeps_the_other_draws() {
        let mut seen = [false; 7];
        for i in 0..200 {
            let (mut a, mut b) = (SplitMix64::new(i), SplitMix64::new(i));
            let (s3, _) = training_scenario(&mut a, 60.0, &TrainingRange::default());
            let six = TrainingRange {
                max_lbs: 6,
                ..TrainingRange::default()
            };
            let (s6, _) = training_scenario(&mut b, 60.0, &six);
            assert!((1..=3).contains(&s3.lbs), "{}", s3.lbs);
            assert!((1..=6).contains(&s6.lbs), "{}", s6.lbs);
            seen[s6.lbs] = true;
            // The draws before the node count are the same (the split and
            // the seed after it depend on the count).
            assert_eq!(s3.servers, s6.servers);
            assert_eq!(s3.load, s6.load);
        }
        assert!(seen[1..].iter().all(|&x| x), "every count 1..=6 is drawn");
        // Out-of-range values are clamped, never a panic or a zero.
        let zero = TrainingRange {
            max_lbs: 0,
            ..TrainingRange::default()
        };
        let (s, _) = training_scenario(&mut SplitMix64::new(1), 60.0, &zero);
        assert_eq!(s.lbs, 1);
    }

    #[test]
    fn min_load_widens_the_load_range_and_is_clamped() {
        let light = TrainingRange {
            min_load: 0.2,
            ..TrainingRange::default()
        };
        let (mut lo, mut hi) = (1.0f64, 0.0f64);
        for i in 0..300 {
            let (sd, _) =
                training_scenario(&mut SplitMix64::new(i), 60.0, &TrainingRange::default());
            let (sl, _) = training_scenario(&mut SplitMix64::new(i), 60.0, &light);
            let (d, l) = (sd.load.unwrap_or(0.0), sl.load.unwrap_or(0.0));
            assert!((DEFAULT_MIN_LOAD..=MAX_LOAD).contains(&d), "{d}");
            assert!((0.2..=MAX_LOAD).contains(&l), "{l}");
            // The same uniform draw, mapped onto the wider range.
            let x = (d - DEFAULT_MIN_LOAD) / (MAX_LOAD - DEFAULT_MIN_LOAD);
            assert!((l - (0.2 + (MAX_LOAD - 0.2) * x)).abs() < 1e-9);
            lo = lo.min(l);
            hi = hi.max(l);
        }
        assert!(lo < 0.3 && hi > 0.85, "{lo} {hi}");
        for bad in [f64::NAN, -1.0, 5.0] {
            let r = TrainingRange {
                min_load: bad,
                ..TrainingRange::default()
            };
            let (s, _) = training_scenario(&mut SplitMix64::new(3), 60.0, &r);
            let l = s.load.unwrap_or(-1.0);
            assert!((0.05..=MAX_LOAD).contains(&l), "{bad}: {l}");
        }
    }

    #[test]
    fn quota_share_draws_quota_servers_and_zero_keeps_the_old_draws() {
        let half = TrainingRange {
            quota_share: 0.5,
            ..TrainingRange::default()
        };
        let mut quota = 0;
        for i in 0..200 {
            let (d, seed) =
                training_scenario(&mut SplitMix64::new(i), 60.0, &TrainingRange::default());
            assert_eq!(d.server_model, crate::ServerModel::Cores);
            let (h, _) = training_scenario(&mut SplitMix64::new(i), 60.0, &half);
            // Everything drawn before the model is the same.
            assert_eq!(
                (&d.servers, d.load, &d.sizes),
                (&h.servers, h.load, &h.sizes)
            );
            if h.server_model == crate::ServerModel::Quota {
                quota += 1;
                let (cfg, _) = h.build(seed).expect("builds");
                assert!(cfg
                    .servers
                    .iter()
                    .all(|s| s.model == crate::ServerModel::Quota));
            }
        }
        assert!((60..140).contains(&quota), "{quota} of 200");
    }

    #[test]
    fn linger_share_draws_lingering_connections_and_zero_keeps_the_old_draws() {
        let half = TrainingRange {
            linger_share: 0.5,
            ..TrainingRange::default()
        };
        let mut lingering = 0;
        for i in 0..200 {
            let (d, seed) =
                training_scenario(&mut SplitMix64::new(i), 60.0, &TrainingRange::default());
            assert_eq!(d.linger, None);
            let (h, _) = training_scenario(&mut SplitMix64::new(i), 60.0, &half);
            assert_eq!(
                (&d.servers, d.load, &d.sizes, d.server_model),
                (&h.servers, h.load, &h.sizes, h.server_model)
            );
            if h.linger.is_some() {
                lingering += 1;
                let (cfg, _) = h.build(seed).expect("builds");
                let l = cfg.conditions.linger.expect("drawn");
                assert!((0.2..=0.95).contains(&l.share), "{l:?}");
                assert!((2.0..=40.0).contains(&l.mean_s), "{l:?}");
            }
        }
        assert!((60..140).contains(&lingering), "{lingering} of 200");
    }
}
