//! The networks of both agents (candle, CPU).
//!
//! [`RecNet`] is MARLLB's agent network: FC → ReLU → FC → ReLU → GRU → FC → ReLU
//! → FC, hidden size [`HIDDEN`]. Its output is `backends × levels` scores
//! (backend-major): Q-values for QMIX, logits for the SAC actor and Q-values for
//! the SAC critic. The GRU is candle-nn's (PyTorch layout: gates packed r, z, n;
//! `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, i.e. ONNX's
//! `linear_before_reset = 1`).
//!
//! [`Mixer`] is QMIX's monotonic mixing network: hypernetworks map the global
//! state (every agent's observation) to non-negative weights that combine the
//! agents' Q-values into `Q_tot`.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::rnn::{GRUConfig, GRUState, RNN};
use candle_nn::{linear, Linear, VarBuilder, VarMap};

/// Hidden size of every layer and of the recurrent state.
pub const HIDDEN: usize = 128;

/// The agent network.
#[derive(Debug, Clone)]
pub struct RecNet {
    fc1: Linear,
    fc2: Linear,
    gru: candle_nn::GRU,
    fc3: Linear,
    fc4: Linear,
    /// Observation length.
    pub obs: usize,
    /// Output length.
    pub out: usize,
}

impl RecNet {
    /// Creates (or loads, through `vb`) the network.
    pub fn new(vb: VarBuilder<'_>, obs: usize, out: usize) -> Result<Self> {
        Ok(Self {
            fc1: linear(obs, HIDDEN, vb.pp("fc1"))?,
            fc2: linear(HIDDEN, HIDDEN, vb.pp("fc2"))?,
            gru: candle_nn::rnn::gru(HIDDEN, HIDDEN, GRUConfig::default(), vb.pp("gru"))?,
            fc3: linear(HIDDEN, HIDDEN, vb.pp("fc3"))?,
            fc4: linear(HIDDEN, out, vb.pp("fc4"))?,
            obs,
            out,
        })
    }

    /// One step: `x` [B, obs], `h` [B, HIDDEN] → (scores [B, out], h' [B, HIDDEN]).
    pub fn step(&self, x: &Tensor, h: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = self.fc1.forward(x)?.relu()?;
        let a = self.fc2.forward(&a)?.relu()?;
        let h2 = self.gru.step(&a, &GRUState { h: h.clone() })?.h;
        let y = self.fc3.forward(&h2)?.relu()?;
        Ok((self.fc4.forward(&y)?, h2))
    }
}

/// Names of the network's parameters in a [`VarMap`] under `prefix`, as
/// (fc1.w, fc1.b, fc2.w, fc2.b, gru w_ih, w_hh, b_ih, b_hh, fc3.w, fc3.b, fc4.w, fc4.b).
pub fn param_names(prefix: &str) -> [String; 12] {
    let p = |s: &str| format!("{prefix}.{s}");
    [
        p("fc1.weight"),
        p("fc1.bias"),
        p("fc2.weight"),
        p("fc2.bias"),
        p("gru.weight_ih_l0"),
        p("gru.weight_hh_l0"),
        p("gru.bias_ih_l0"),
        p("gru.bias_hh_l0"),
        p("fc3.weight"),
        p("fc3.bias"),
        p("fc4.weight"),
        p("fc4.bias"),
    ]
}

/// QMIX's mixing network.
#[derive(Debug, Clone)]
pub struct Mixer {
    w1: Linear,
    b1: Linear,
    w2: Linear,
    b2a: Linear,
    b2b: Linear,
    agents: usize,
    embed: usize,
}

impl Mixer {
    /// A mixer of `agents` Q-values conditioned on a state of `state` values.
    pub fn new(vb: VarBuilder<'_>, agents: usize, state: usize, embed: usize) -> Result<Self> {
        Ok(Self {
            w1: linear(state, agents * embed, vb.pp("w1"))?,
            b1: linear(state, embed, vb.pp("b1"))?,
            w2: linear(state, embed, vb.pp("w2"))?,
            b2a: linear(state, embed, vb.pp("b2a"))?,
            b2b: linear(embed, 1, vb.pp("b2b"))?,
            agents,
            embed,
        })
    }

    /// `q` [B, agents], `s` [B, state] → Q_tot [B].
    pub fn forward(&self, q: &Tensor, s: &Tensor) -> Result<Tensor> {
        let b = q.dim(0)?;
        let w1 = self
            .w1
            .forward(s)?
            .abs()?
            .reshape((b, self.agents, self.embed))?;
        let b1 = self.b1.forward(s)?.reshape((b, 1, self.embed))?;
        let hidden = q
            .reshape((b, 1, self.agents))?
            .matmul(&w1)?
            .broadcast_add(&b1)?
            .elu(1.0)?;
        let w2 = self.w2.forward(s)?.abs()?.reshape((b, self.embed, 1))?;
        let b2 = self
            .b2b
            .forward(&self.b2a.forward(s)?.relu()?)?
            .reshape((b, 1, 1))?;
        hidden.matmul(&w2)?.broadcast_add(&b2)?.reshape(b)
    }
}

/// `target ← tau · online + (1 − tau) · target` for every variable both maps hold.
pub fn soft_update(target: &VarMap, online: &VarMap, tau: f64) -> Result<()> {
    let on = online
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned var map".into()))?;
    let tg = target
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned var map".into()))?;
    for (name, v) in on.iter() {
        if let Some(t) = tg.get(name) {
            let nv = ((v.as_tensor() * tau)? + (t.as_tensor() * (1.0 - tau))?)?;
            t.set(&nv)?;
        }
    }
    Ok(())
}

/// Per-backend argmax of `scores` [B, backends·levels] → [B, backends] (u32).
pub fn argmax_levels(scores: &Tensor, backends: usize, levels: usize) -> Result<Tensor> {
    let b = scores.dim(0)?;
    scores.reshape((b, backends, levels))?.argmax(D::Minus1)
}

/// A zero hidden state for `batch` rows.
pub fn zero_hidden(batch: usize, dev: &Device) -> Result<Tensor> {
    Tensor::zeros((batch, HIDDEN), DType::F32, dev)
}
