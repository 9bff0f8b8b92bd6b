//! Training of QMIX and SAC-GRU on the simulator.
//!
//! * Environment: the moderate setting or any server list, `lbs` LB nodes using
//!   SED over the agents' weights (MARLLB's data plane); Poisson arrivals with
//!   exponential sizes at an offered load drawn per episode from
//!   `load_min..=load_max` of the total capacity; one episode is `episode_s`
//!   simulated seconds of 250 ms steps.
//! * Observation: [`FeatureBuilder::observation`](marllb_policy::FeatureBuilder::observation)
//!   with the sidecar's normalization, estimated once from an episode of
//!   random weights before training (and stored in the sidecar and checkpoint).
//! * Reward (team reward, every agent): Jain's fairness index over backends of
//!   the decayed average flow duration (summed over nodes), trained as
//!   `10 · (jain − 1)`.
//! * QMIX: one shared [`RecNet`] for every node (decentralized execution, the
//!   shipped model), per-agent Q = mean over backends of the chosen level's
//!   Q-value, a monotonic [`Mixer`] over the global state (every node's
//!   observation), double-Q TD targets from soft-updated target networks,
//!   ε-greedy exploration per backend.
//! * SAC-GRU: discrete soft actor-critic with a factorized (per-backend) policy,
//!   a recurrent critic with a soft-updated target, automatic temperature.
//! * Replay: episodes, sampled as sequences of `seq` steps starting from the
//!   stored actor state. Checkpoints: safetensors of all networks plus a JSON
//!   state every `checkpoint_every` episodes; `--resume` restarts from them
//!   (the replay buffer and optimizer moments start empty again).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use marllb_core::hash::SplitMix64;
use marllb_policy::meta::Normalization;
use marllb_policy::{PolicyKind, PolicyMeta};
use serde::{Deserialize, Serialize};

use crate::engine::{Sim, SimConfig};
use crate::learner::{init_deterministic, make_meta, Episode, Replay, FEATURES, LEVELS};
use crate::nets::{argmax_levels, soft_update, Mixer, RecNet, HIDDEN};
use crate::server::ServerSpec;
use crate::workload::{open01, SizeDist, Workload};

/// Which learning algorithm trains the agents (`train --agent`); `es` has
/// its own command, `train-es`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// QMIX.
    Qmix,
    /// SAC-GRU.
    SacGru,
}

impl Algorithm {
    /// The policy it trains (one list: [`PolicyKind`]).
    pub fn kind(self) -> PolicyKind {
        match self {
            Algorithm::Qmix => PolicyKind::Qmix,
            Algorithm::SacGru => PolicyKind::SacGru,
        }
    }

    /// Sidecar name (the policy's).
    pub fn name(self) -> &'static str {
        self.kind().name()
    }
}

/// Training parameters.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Algorithm.
    pub agent: Algorithm,
    /// Servers.
    pub servers: Vec<ServerSpec>,
    /// LB nodes (agents).
    pub lbs: usize,
    /// Episodes to run (in total, counting resumed ones).
    pub episodes: usize,
    /// Simulated seconds per episode.
    pub episode_s: f64,
    /// Offered load range (fraction of total CPUs).
    pub load_min: f64,
    /// Offered load range (fraction of total CPUs).
    pub load_max: f64,
    /// Mean job size, CPU seconds.
    pub mean_job: f64,
    /// Seed.
    pub seed: u64,
    /// Where the ONNX model goes (checkpoints beside it).
    pub save_path: PathBuf,
    /// Continue from the checkpoint.
    pub resume: bool,
    /// Episodes between checkpoints.
    pub checkpoint_every: usize,
    /// Sequences per update.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Environment steps between updates.
    pub update_every: usize,
    /// Learning rate.
    pub lr: f64,
    /// Discount.
    pub gamma: f64,
    /// Show a progress bar.
    pub progress: bool,
    /// QMIX: an agent's Q is the sum (not the mean) of its backends' chosen
    /// Q-values.
    pub q_sum: bool,
}

impl TrainConfig {
    /// Defaults for `agent` on `servers` with `lbs` nodes.
    pub fn new(agent: Algorithm, servers: Vec<ServerSpec>, lbs: usize) -> Self {
        Self {
            agent,
            servers,
            lbs,
            episodes: 100,
            episode_s: 30.0,
            load_min: 0.6,
            load_max: 0.95,
            mean_job: 3.67e6 / crate::workload::DEFAULT_LOOPS_PER_CPU_SECOND,
            seed: 1,
            save_path: PathBuf::from("models/policy.onnx"),
            resume: false,
            checkpoint_every: 10,
            batch: 32,
            seq: 8,
            update_every: 4,
            lr: 3e-4,
            gamma: 0.6,
            progress: true,
            q_sum: false,
        }
    }
}

/// What training reports per episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeLog {
    /// Episode number.
    pub episode: usize,
    /// Mean Jain reward of the episode.
    pub reward: f64,
    /// Mean loss of the updates in the episode.
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CkptState {
    agent: String,
    episode: usize,
    updates: u64,
    norm: Normalization,
    log: Vec<EpisodeLog>,
}

/// The learner of either kind.
struct Learner {
    kind: Algorithm,
    /// Actor (SAC) or agent Q-network (QMIX), prefix "net".
    net_vm: VarMap,
    net: RecNet,
    /// Target of `net` (QMIX) or of the critic (SAC), prefix "net"/"critic".
    target_vm: VarMap,
    target: RecNet,
    target_mixer: Option<Mixer>,
    /// QMIX: the mixer lives in `net_vm`. SAC: the critic and temperature.
    mixer: Option<Mixer>,
    critic_vm: VarMap,
    critic: Option<RecNet>,
    log_alpha: Option<candle_core::Var>,
    opt: AdamW,
    critic_opt: Option<AdamW>,
    alpha_opt: Option<AdamW>,
    backends: usize,
    agents: usize,
    obs: usize,
}

fn adam(vars: Vec<candle_core::Var>, lr: f64) -> Result<AdamW> {
    Ok(AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?)
}

/// Backprop `loss`, clip the global gradient norm of `vars` to `max_norm`, step.
fn clipped_step(
    opt: &mut AdamW,
    vars: &[candle_core::Var],
    loss: &Tensor,
    max_norm: f64,
) -> Result<()> {
    let mut grads = loss.backward()?;
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = sq.sqrt();
    if norm.is_finite() && norm > max_norm {
        let k = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * k)?);
            }
        }
    }
    opt.step(&grads)?;
    Ok(())
}

/// Huber loss (delta 1) of `d`, averaged.
fn huber(d: &Tensor) -> Result<Tensor> {
    let a = d.abs()?;
    let quad = a.clamp(0f32, 1f32)?;
    let lin = (a - &quad)?;
    Ok(((quad.sqr()? * 0.5)? + lin)?.mean_all()?)
}

impl Learner {
    fn new(cfg: &TrainConfig, backends: usize) -> Result<Self> {
        let dev = Device::Cpu;
        let obs = backends * FEATURES.len();
        let out = backends * LEVELS.len();
        let agents = cfg.lbs;
        let net_vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&net_vm, DType::F32, &dev);
        let net = RecNet::new(vb.pp("net"), obs, out)?;
        let target_vm = VarMap::new();
        let tvb = VarBuilder::from_varmap(&target_vm, DType::F32, &dev);
        let critic_vm = VarMap::new();
        let cvb = VarBuilder::from_varmap(&critic_vm, DType::F32, &dev);
        let (target, target_mixer, mixer, critic, log_alpha) = match cfg.agent {
            Algorithm::Qmix => {
                let mixer = Mixer::new(vb.pp("mixer"), agents, agents * obs, 32)?;
                let t = RecNet::new(tvb.pp("net"), obs, out)?;
                let tm = Mixer::new(tvb.pp("mixer"), agents, agents * obs, 32)?;
                (t, Some(tm), Some(mixer), None, None)
            }
            Algorithm::SacGru => {
                let critic = RecNet::new(cvb.pp("critic"), obs, out)?;
                let t = RecNet::new(tvb.pp("critic"), obs, out)?;
                let la = candle_core::Var::from_tensor(&Tensor::new(&[(0.05f32).ln()], &dev)?)?;
                (t, None, None, Some(critic), Some(la))
            }
        };
        init_deterministic(&net_vm, cfg.seed ^ 0x6e6574)?;
        init_deterministic(&critic_vm, cfg.seed ^ 0x637274)?;
        let opt = adam(net_vm.all_vars(), cfg.lr)?;
        let critic_opt = match cfg.agent {
            Algorithm::SacGru => Some(adam(critic_vm.all_vars(), cfg.lr)?),
            Algorithm::Qmix => None,
        };
        let alpha_opt = match &log_alpha {
            Some(la) => Some(adam(vec![la.clone()], 3e-4)?),
            None => None,
        };
        let l = Self {
            kind: cfg.agent,
            net_vm,
            net,
            target_vm,
            target,
            target_mixer,
            mixer,
            critic_vm,
            critic,
            log_alpha,
            opt,
            critic_opt,
            alpha_opt,
            backends,
            agents,
            obs,
        };
        l.sync_target(1.0)?;
        Ok(l)
    }

    fn sync_target(&self, tau: f64) -> Result<()> {
        match self.kind {
            Algorithm::Qmix => soft_update(&self.target_vm, &self.net_vm, tau)?,
            Algorithm::SacGru => soft_update(&self.target_vm, &self.critic_vm, tau)?,
        }
        Ok(())
    }

    /// Unrolls `net` over `obs` [T, N, obs] from `h0`, returns [T, N, out].
    fn unroll(net: &RecNet, obs: &Tensor, h0: &Tensor) -> Result<Tensor> {
        let t = obs.dim(0)?;
        let mut h = h0.clone();
        let mut outs = Vec::with_capacity(t);
        for k in 0..t {
            let (y, h2) = net.step(&obs.get(k)?, &h)?;
            outs.push(y);
            h = h2;
        }
        Ok(Tensor::stack(&outs, 0)?)
    }

    fn update(&mut self, replay: &mut Replay, cfg: &TrainConfig) -> Result<Option<f64>> {
        let Some(b) = replay.sample(cfg.batch, cfg.seq, self.agents, self.obs, self.backends)?
        else {
            return Ok(None);
        };
        let (seq, bsz, n, nb, nl) = (cfg.seq, cfg.batch, self.agents, self.backends, LEVELS.len());
        let rows = bsz * n;
        let gamma = cfg.gamma;
        match self.kind {
            Algorithm::Qmix => {
                let (Some(mixer), Some(tmixer)) = (&self.mixer, &self.target_mixer) else {
                    return Ok(None);
                };
                let q = Self::unroll(&self.net, &b.obs, &b.h0)?.reshape((seq + 1, rows, nb, nl))?;
                let tq =
                    Self::unroll(&self.target, &b.obs, &b.h0)?.reshape((seq + 1, rows, nb, nl))?;
                let q_now = q.narrow(0, 0, seq)?;
                let reduce = |t: Tensor| if cfg.q_sum { t.sum(2) } else { t.mean(2) };
                let chosen = reduce(
                    q_now
                        .gather(&b.act.unsqueeze(3)?.contiguous()?, 3)?
                        .squeeze(3)?,
                )?; // [seq, rows]
                let next_a = q.narrow(0, 1, seq)?.detach().argmax_keepdim(3)?;
                let tnext = reduce(
                    tq.narrow(0, 1, seq)?
                        .gather(&next_a.contiguous()?, 3)?
                        .squeeze(3)?,
                )?
                .detach();
                let state = b.obs.reshape((seq + 1, bsz, n * self.obs))?;
                let s_now = state
                    .narrow(0, 0, seq)?
                    .reshape((seq * bsz, n * self.obs))?;
                let s_next = state
                    .narrow(0, 1, seq)?
                    .reshape((seq * bsz, n * self.obs))?;
                let qtot = mixer.forward(&chosen.reshape((seq * bsz, n))?, &s_now)?;
                let ttot = tmixer
                    .forward(&tnext.reshape((seq * bsz, n))?, &s_next)?
                    .detach();
                let y = (b.rew.reshape(seq * bsz)? + (ttot * gamma)?)?;
                let loss = huber(&(qtot - y)?)?;
                clipped_step(&mut self.opt, &self.net_vm.all_vars(), &loss, 10.0)?;
                self.sync_target(0.01)?;
                Ok(Some(f64::from(loss.to_scalar::<f32>()?)))
            }
            Algorithm::SacGru => {
                let (Some(critic), Some(la), Some(copt), Some(aopt)) = (
                    &self.critic,
                    &self.log_alpha,
                    self.critic_opt.as_mut(),
                    self.alpha_opt.as_mut(),
                ) else {
                    return Ok(None);
                };
                let alpha = la.as_tensor().exp()?.detach();
                let zero = Tensor::zeros((rows, HIDDEN), DType::F32, &Device::Cpu)?;
                let logits =
                    Self::unroll(&self.net, &b.obs, &b.h0)?.reshape((seq + 1, rows, nb, nl))?;
                let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                let p = logp.exp()?;
                let q = Self::unroll(critic, &b.obs, &zero)?.reshape((seq + 1, rows, nb, nl))?;
                let tq =
                    Self::unroll(&self.target, &b.obs, &zero)?.reshape((seq + 1, rows, nb, nl))?;
                // Critic.
                let q_a = q
                    .narrow(0, 0, seq)?
                    .gather(&b.act.unsqueeze(3)?.contiguous()?, 3)?
                    .squeeze(3)?
                    .mean(2)?; // [seq, rows]
                let pn = p.narrow(0, 1, seq)?.detach();
                let lpn = logp.narrow(0, 1, seq)?.detach();
                let v_next = (pn * (tq.narrow(0, 1, seq)? - lpn.broadcast_mul(&alpha)?)?)?
                    .sum(3)?
                    .mean(2)?
                    .detach(); // [seq, rows]
                let rew = b
                    .rew
                    .unsqueeze(2)?
                    .broadcast_as((seq, bsz, n))?
                    .reshape((seq, rows))?;
                let y = (rew + (v_next * gamma)?)?;
                let closs = huber(&(q_a - y)?)?;
                clipped_step(copt, &self.critic_vm.all_vars(), &closs, 10.0)?;
                // Actor.
                let pa = p.narrow(0, 0, seq)?;
                let lpa = logp.narrow(0, 0, seq)?;
                let qd = q.narrow(0, 0, seq)?.detach();
                let aloss = (pa.clone() * (lpa.broadcast_mul(&alpha)? - qd)?)?
                    .sum(3)?
                    .mean_all()?;
                clipped_step(&mut self.opt, &self.net_vm.all_vars(), &aloss, 10.0)?;
                // Temperature: keep the per-backend entropy near 0.5 · ln 3.
                let ent = (pa * lpa)?.sum(3)?.neg()?.mean_all()?.detach();
                let target_ent = 0.5 * (LEVELS.len() as f64).ln();
                let alpha_loss = (la.as_tensor() * (ent - target_ent)?.reshape(1)?)?.mean_all()?;
                aopt.backward_step(&alpha_loss)?;
                self.sync_target(0.01)?;
                Ok(Some(f64::from(closs.to_scalar::<f32>()?)))
            }
        }
    }

    fn save(&self, base: &Path) -> Result<()> {
        self.net_vm.save(with_suffix(base, ".net.safetensors"))?;
        self.target_vm
            .save(with_suffix(base, ".target.safetensors"))?;
        if self.kind == Algorithm::SacGru {
            self.critic_vm
                .save(with_suffix(base, ".critic.safetensors"))?;
        }
        Ok(())
    }

    fn load(&mut self, base: &Path) -> Result<()> {
        self.net_vm.load(with_suffix(base, ".net.safetensors"))?;
        self.target_vm
            .load(with_suffix(base, ".target.safetensors"))?;
        if self.kind == Algorithm::SacGru {
            self.critic_vm
                .load(with_suffix(base, ".critic.safetensors"))?;
        }
        Ok(())
    }
}

/// `base` + `suffix` (e.g. `models/qmix.onnx` + `.ckpt.json`).
pub fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Picks actions for every agent from the network's scores.
fn act(
    kind: Algorithm,
    scores: &[f32],
    backends: usize,
    eps: f64,
    greedy: bool,
    rng: &mut SplitMix64,
    out: &mut Vec<u32>,
) {
    let nl = LEVELS.len();
    out.clear();
    for b in 0..scores.len() / nl {
        let s = &scores[b * nl..(b + 1) * nl];
        let best = s
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map_or(0, |(i, _)| i) as u32;
        let a = if greedy {
            best
        } else {
            match kind {
                Algorithm::Qmix => {
                    if open01(rng) < eps {
                        (rng.next_u64() % nl as u64) as u32
                    } else {
                        best
                    }
                }
                Algorithm::SacGru => {
                    let m = s.iter().copied().fold(f32::MIN, f32::max);
                    let e: Vec<f64> = s.iter().map(|v| f64::from(v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    let mut u = open01(rng) * z;
                    let mut k = nl - 1;
                    for (i, w) in e.iter().enumerate() {
                        if u < *w {
                            k = i;
                            break;
                        }
                        u -= w;
                    }
                    k as u32
                }
            }
        };
        out.push(a);
    }
    debug_assert_eq!(out.len() % backends.max(1), 0);
}

fn episode_workload(cfg: &TrainConfig, rng: &mut SplitMix64) -> (Workload, f64) {
    let cap: f64 = cfg.servers.iter().map(|s| s.cpus).sum();
    let load = cfg.load_min + (cfg.load_max - cfg.load_min) * open01(rng);
    (
        Workload::Poisson {
            rate: load * cap / cfg.mean_job,
            size: SizeDist::Exp { mean: cfg.mean_job },
        },
        load,
    )
}

fn sim_config(cfg: &TrainConfig, seed: u64) -> SimConfig {
    SimConfig {
        servers: cfg.servers.clone(),
        lbs: cfg.lbs,
        step_s: 0.25,
        duration: cfg.episode_s,
        drain: false,
        warmup: 0.0,
        features: true,
        seed,
        conditions: Default::default(),
    }
}

/// Estimates the feature normalization from an episode of random weights.
pub fn estimate_normalization(cfg: &TrainConfig) -> Normalization {
    let mut rng = SplitMix64::new(cfg.seed ^ 0x6e6f726d);
    let (w, _) = episode_workload(cfg, &mut rng);
    let mut sim = Sim::new(sim_config(cfg, cfg.seed ^ 0x6e6f726d), &w, cfg.agent.kind());
    let nf = FEATURES.len();
    let (mut s, mut q, mut c) = (vec![0f64; nf], vec![0f64; nf], 0f64);
    let n = cfg.servers.len();
    while sim.run_step() {
        for lb in 0..cfg.lbs {
            if let Some(node) = sim.lbs.get(lb) {
                for b in 0..n {
                    for (i, f) in FEATURES.iter().enumerate() {
                        let v = f64::from(node.features.raw(b, *f));
                        s[i] += v;
                        q[i] += v * v;
                    }
                    c += 1.0;
                }
            }
            let real: Vec<f32> = (0..n)
                .map(|_| LEVELS[(rng.next_u64() % LEVELS.len() as u64) as usize])
                .collect();
            sim.set_agent_weights(lb, &real);
        }
    }
    let c = c.max(1.0);
    let mean: Vec<f32> = s.iter().map(|x| (x / c) as f32).collect();
    let std: Vec<f32> = s
        .iter()
        .zip(&q)
        .map(|(x, y)| {
            let m = x / c;
            ((y / c - m * m).max(0.0).sqrt() as f32).max(1e-3)
        })
        .collect();
    Normalization { mean, std }
}

/// Trains, checkpoints, and exports the policy to `cfg.save_path` (+ sidecar).
/// Returns the per-episode log.
pub fn train(cfg: &TrainConfig) -> Result<Vec<EpisodeLog>> {
    let backends = cfg.servers.len();
    let mut learner = Learner::new(cfg, backends)?;
    let ckpt_json = with_suffix(&cfg.save_path, ".ckpt.json");
    let ckpt_base = with_suffix(&cfg.save_path, ".ckpt");
    let (mut start, mut updates, norm, mut log) = if cfg.resume && ckpt_json.exists() {
        let st: CkptState = serde_json::from_str(
            &std::fs::read_to_string(&ckpt_json)
                .with_context(|| format!("reading {}", ckpt_json.display()))?,
        )?;
        anyhow::ensure!(
            st.agent == cfg.agent.name(),
            "checkpoint is for {}",
            st.agent
        );
        learner.load(&ckpt_base)?;
        (st.episode, st.updates, st.norm, st.log)
    } else {
        (0, 0, estimate_normalization(cfg), Vec::new())
    };
    let meta = make_meta(cfg.agent.name(), backends, norm.clone());
    if let Some(dir) = cfg.save_path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut replay = Replay::new(200, cfg.seed ^ 0x7265706c ^ start as u64);
    let pb = if cfg.progress {
        indicatif::ProgressBar::new(cfg.episodes as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] ep {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(start as u64);
    let dev = Device::Cpu;
    let n = cfg.lbs;
    let nobs = backends * FEATURES.len();
    let mut rng = SplitMix64::new(cfg.seed ^ 0x61637420 ^ (start as u64).wrapping_mul(0x9e37));
    let mut buf = Vec::new();
    let mut acts = Vec::new();
    let mut steps: u64 = 0;
    while start < cfg.episodes {
        let ep = start;
        let eps = (1.0 - ep as f64 / (0.5 * cfg.episodes as f64)).max(0.05);
        let (w, _load) = episode_workload(cfg, &mut rng);
        let mut sim = Sim::new(
            sim_config(cfg, cfg.seed.wrapping_mul(1000).wrapping_add(ep as u64)),
            &w,
            cfg.agent.kind(),
        );
        let mut h = Tensor::zeros((n, HIDDEN), DType::F32, &dev)?;
        let mut e = Episode::default();
        sim.run_step();
        let (mut rsum, mut lsum, mut lcount) = (0.0, 0.0, 0usize);
        loop {
            let mut obs_all = Vec::with_capacity(n * nobs);
            for node in &sim.lbs {
                node.features.observation(&meta, &mut buf);
                obs_all.extend_from_slice(&buf);
            }
            let x = Tensor::from_slice(&obs_all, (n, nobs), &dev)?;
            let (scores, h2) = learner.net.step(&x, &h)?;
            let scores: Vec<f32> = scores.flatten_all()?.to_vec1()?;
            e.obs.extend_from_slice(&obs_all);
            e.h.extend(h.flatten_all()?.to_vec1::<f32>()?);
            act(
                cfg.agent, &scores, backends, eps, false, &mut rng, &mut acts,
            );
            for lb in 0..n {
                let real: Vec<f32> = acts[lb * backends..(lb + 1) * backends]
                    .iter()
                    .map(|a| LEVELS[*a as usize])
                    .collect();
                sim.set_agent_weights(lb, &real);
            }
            e.act.extend_from_slice(&acts);
            h = h2;
            let more = sim.run_step();
            let r = sim.last_reward;
            rsum += r;
            e.rew.push((10.0 * (r - 1.0)) as f32);
            steps += 1;
            if steps % cfg.update_every as u64 == 0 && !replay.is_empty() {
                if let Some(l) = learner.update(&mut replay, cfg)? {
                    lsum += l;
                    lcount += 1;
                    updates += 1;
                }
            }
            if !more {
                // Final observation for bootstrapping.
                let mut obs_all = Vec::with_capacity(n * nobs);
                for node in &sim.lbs {
                    node.features.observation(&meta, &mut buf);
                    obs_all.extend_from_slice(&buf);
                }
                e.obs.extend_from_slice(&obs_all);
                e.h.extend(h.flatten_all()?.to_vec1::<f32>()?);
                break;
            }
        }
        let steps_ep = e.steps().max(1);
        replay.push(e);
        let entry = EpisodeLog {
            episode: ep + 1,
            reward: rsum / steps_ep as f64,
            loss: if lcount > 0 {
                lsum / lcount as f64
            } else {
                0.0
            },
        };
        pb.set_message(format!(
            "reward {:.4} loss {:.4} eps {:.2}",
            entry.reward, entry.loss, eps
        ));
        pb.inc(1);
        log.push(entry);
        start += 1;
        if start % cfg.checkpoint_every == 0 || start == cfg.episodes {
            learner.save(&ckpt_base)?;
            let st = CkptState {
                agent: cfg.agent.name().into(),
                episode: start,
                updates,
                norm: norm.clone(),
                log: log.clone(),
            };
            std::fs::write(&ckpt_json, serde_json::to_string_pretty(&st)?)?;
        }
    }
    pb.finish();
    export_policy(&learner.net_vm, &meta, &cfg.save_path)?;
    Ok(log)
}

/// Writes the ONNX model of the `net` network in `vm` and its sidecar.
pub fn export_policy(vm: &VarMap, meta: &PolicyMeta, path: &Path) -> Result<()> {
    crate::onnx::export_recnet(vm, "net", meta.obs_len(), meta.action_len(), path)?;
    vm.save(with_suffix(path, ".safetensors"))?;
    std::fs::write(
        PolicyMeta::sidecar_of(path),
        serde_json::to_string_pretty(meta)? + "\n",
    )?;
    // The sidecar must be accepted by the controller's loader.
    PolicyMeta::load(&PolicyMeta::sidecar_of(path))?;
    Ok(())
}

/// Loads the actor / agent network of an exported policy (`path` + `.safetensors`).
pub fn load_recnet(path: &Path, meta: &PolicyMeta) -> Result<(VarMap, RecNet)> {
    let mut vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = RecNet::new(vb.pp("net"), meta.obs_len(), meta.action_len())?;
    vm.load(with_suffix(path, ".safetensors"))?;
    Ok((vm, net))
}

/// Greedy per-backend levels from scores (for evaluation with candle).
pub fn greedy_levels(scores: &Tensor, backends: usize) -> Result<Vec<f32>> {
    let a: Vec<u32> = argmax_levels(scores, backends, LEVELS.len())?
        .flatten_all()?
        .to_vec1()?;
    Ok(a.iter().map(|i| LEVELS[*i as usize]).collect())
}
