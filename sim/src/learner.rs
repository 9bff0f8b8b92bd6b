//! What the learners (QMIX, SAC-GRU) share: the observation contract, the
//! policy metadata, deterministic initialization, and the replay buffer of
//! episode sequences.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use marllb_core::hash::SplitMix64;
use marllb_policy::meta::{HiddenSpec, Normalization, FORMAT};
use marllb_policy::{ActionSpec, PolicyMeta, TensorSpec};

use crate::nets::HIDDEN;

/// The MARLLB agents' features and levels (one list, in `marllb-policy`).
pub use marllb_policy::{MARLLB_FEATURES as FEATURES, MARLLB_LEVELS as LEVELS};

/// The sidecar of a policy for `backends` backends.
pub fn make_meta(agent: &str, backends: usize, norm: Normalization) -> PolicyMeta {
    PolicyMeta {
        format: FORMAT.to_string(),
        agent: agent.to_string(),
        backends,
        features: FEATURES.to_vec(),
        normalization: norm,
        inputs: vec![
            TensorSpec {
                name: "obs".into(),
                shape: vec![1, backends * FEATURES.len()],
            },
            TensorSpec {
                name: "h_in".into(),
                shape: vec![1, HIDDEN],
            },
        ],
        outputs: vec![
            TensorSpec {
                name: "action".into(),
                shape: vec![1, backends * LEVELS.len()],
            },
            TensorSpec {
                name: "h_out".into(),
                shape: vec![1, HIDDEN],
            },
        ],
        hidden: Some(HiddenSpec {
            input: "h_in".into(),
            output: "h_out".into(),
            size: HIDDEN,
        }),
        action: ActionSpec::Discrete {
            levels: LEVELS.to_vec(),
        },
        step_ms: 250,
    }
}

/// Identity normalization.
pub fn identity_norm() -> Normalization {
    Normalization {
        mean: vec![0.0; FEATURES.len()],
        std: vec![1.0; FEATURES.len()],
    }
}

/// Overwrites every variable of `vm` (in name order) with uniform values in
/// `±1/sqrt(fan_in)` from a seeded generator: candle's CPU generator cannot be
/// seeded, and training must be reproducible.
pub fn init_deterministic(vm: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned var map".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = SplitMix64::new(seed);
    for name in names {
        let Some(var) = data.get(name) else { continue };
        let dims = var.dims().to_vec();
        let fan_in = if name.contains("weight") || dims.len() == 2 {
            dims.last().copied().unwrap_or(1)
        } else {
            // biases: use the layer's input width (GRU: hidden)
            HIDDEN
        };
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((crate::workload::open01(&mut rng) * 2.0 - 1.0) * bound) as f32)
            .collect();
        var.set(&Tensor::from_vec(v, dims.as_slice(), &Device::Cpu)?)?;
    }
    Ok(())
}

/// One episode of experience of `agents` agents.
#[derive(Debug, Clone, Default)]
pub struct Episode {
    /// Observations, `(steps + 1) × agents × obs`.
    pub obs: Vec<f32>,
    /// Actor hidden state before each step, `(steps + 1) × agents × HIDDEN`.
    pub h: Vec<f32>,
    /// Chosen level per backend, `steps × agents × backends`.
    pub act: Vec<u32>,
    /// Team reward after each step, `steps`.
    pub rew: Vec<f32>,
}

impl Episode {
    /// Steps with a reward.
    pub fn steps(&self) -> usize {
        self.rew.len()
    }
}

/// A batch of sequences as tensors.
#[derive(Debug)]
pub struct Batch {
    /// `[seq + 1, batch·agents, obs]`.
    pub obs: Tensor,
    /// `[batch·agents, HIDDEN]`: actor state at the start.
    pub h0: Tensor,
    /// `[seq, batch·agents, backends]` (u32).
    pub act: Tensor,
    /// `[seq, batch]`.
    pub rew: Tensor,
}

/// A FIFO of episodes, sampled as fixed-length sequences.
#[derive(Debug)]
pub struct Replay {
    episodes: std::collections::VecDeque<Episode>,
    capacity: usize,
    rng: SplitMix64,
}

impl Replay {
    /// Keeps at most `capacity` episodes.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            episodes: Default::default(),
            capacity,
            rng: SplitMix64::new(seed),
        }
    }

    /// Adds an episode (drops the oldest when full).
    pub fn push(&mut self, e: Episode) {
        if self.episodes.len() == self.capacity {
            self.episodes.pop_front();
        }
        self.episodes.push_back(e);
    }

    /// Episodes held.
    pub fn len(&self) -> usize {
        self.episodes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }

    /// Samples `batch` sequences of `seq` steps (`None` if no episode is long enough).
    pub fn sample(
        &mut self,
        batch: usize,
        seq: usize,
        agents: usize,
        obs: usize,
        backends: usize,
    ) -> candle_core::Result<Option<Batch>> {
        let long: Vec<usize> = (0..self.episodes.len())
            .filter(|&i| self.episodes.get(i).is_some_and(|e| e.steps() >= seq))
            .collect();
        if long.is_empty() {
            return Ok(None);
        }
        let mut o = vec![0f32; (seq + 1) * batch * agents * obs];
        let mut h = vec![0f32; batch * agents * HIDDEN];
        let mut a = vec![0u32; seq * batch * agents * backends];
        let mut r = vec![0f32; seq * batch];
        for bi in 0..batch {
            let pick = (self.rng.next_u64() % long.len() as u64) as usize;
            let Some(e) = long.get(pick).and_then(|&i| self.episodes.get(i)) else {
                continue;
            };
            let start = (self.rng.next_u64() % (e.steps() - seq + 1) as u64) as usize;
            let ao = agents * obs;
            for k in 0..=seq {
                let src = &e.obs[(start + k) * ao..(start + k + 1) * ao];
                let dst = (k * batch + bi) * ao;
                o[dst..dst + ao].copy_from_slice(src);
            }
            let ah = agents * HIDDEN;
            h[bi * ah..(bi + 1) * ah].copy_from_slice(&e.h[start * ah..(start + 1) * ah]);
            let ab = agents * backends;
            for k in 0..seq {
                let src = &e.act[(start + k) * ab..(start + k + 1) * ab];
                let dst = (k * batch + bi) * ab;
                a[dst..dst + ab].copy_from_slice(src);
                r[k * batch + bi] = e.rew[start + k];
            }
        }
        let dev = Device::Cpu;
        Ok(Some(Batch {
            obs: Tensor::from_vec(o, (seq + 1, batch * agents, obs), &dev)?,
            h0: Tensor::from_vec(h, (batch * agents, HIDDEN), &dev)?,
            act: Tensor::from_vec(a, (seq, batch * agents, backends), &dev)?,
            rew: Tensor::from_vec(r, (seq, batch), &dev)?,
        }))
    }
}
