//! The observation of one agent, computed identically in the simulator and the
//! controller.
//!
//! Every step the caller hands [`FeatureBuilder::observe`] one [`BackendObs`] per
//! backend: the flow-duration and completion-time samples of the window (the
//! reservoirs marllb-core fills, merged over workers) and the current active-flow
//! gauge. The builder keeps what the features need across steps: the last
//! [`HISTORY`] active-flow readings (mean and p90 are taken over them), the
//! exponentially decayed averages (factor [`DECAY`] per step), the previous
//! action, the configured weights, and a filtered completion-time estimate per
//! backend.
//!
//! # The completion-time estimate
//!
//! Each completion of the window moves the estimate toward the window's mean by
//! [`FCT_GAIN`] (k completions: `1 − (1 − FCT_GAIN)^k`). A backend whose flows
//! are older than its estimate while none completes (a stalled server) is pulled
//! up toward their mean age by the same gain. A backend with no flow at all
//! relaxes toward the pool's geometric mean by [`IDLE_RELAX`] per step, so one
//! that was avoided is tried again. The pool reference is the geometric mean of
//! the estimates of every backend that has one.

use std::collections::VecDeque;

use crate::meta::{Feature, PolicyMeta};

/// Steps of active-flow history the mean and p90 are taken over.
pub const HISTORY: usize = 8;

/// Weight of the old value in the decayed averages, per step.
pub const DECAY: f32 = 0.9;

/// Gain of one completion in the filtered completion-time estimate.
pub const FCT_GAIN: f32 = 0.1;

/// Per-step relaxation of an idle backend's estimate toward the pool's.
pub const IDLE_RELAX: f32 = 0.05;

/// What one backend looked like in one step.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendObs<'a> {
    /// Flow ages at packets, microseconds (a reservoir sample of the window).
    pub duration_us: &'a [u32],
    /// Flow completion times, microseconds (a reservoir sample of the window).
    pub fct_us: &'a [u32],
    /// Active flows now (summed over workers).
    pub active_flows: u32,
}

#[derive(Debug, Clone, Default)]
struct State {
    active: VecDeque<f32>,
    active_decayed: f32,
    duration_mean: f32,
    duration_p90: f32,
    duration_decayed: f32,
    fct_mean: f32,
    fct_p90: f32,
    previous_action: f32,
    seen: bool,
    /// Configured weight (real, e.g. CPUs).
    base: f32,
    /// Filtered completion time, s (meaningful once `estimated`).
    fct_est: f32,
    estimated: bool,
    /// This window's completions and their mean (s); flow-age mean (s).
    window_fct: Option<f32>,
    window_age: Option<f32>,
    active_now: f32,
}

impl State {
    /// ln((active + 1) / configured weight); call only with a positive weight.
    fn load_per_weight(&self) -> f32 {
        ((self.active_now + 1.0) / self.base).ln()
    }
}

/// Mean and 90th percentile (nearest rank) of `v`, in the unit of `scale`.
fn mean_p90(v: &[u32], scale: f32) -> Option<(f32, f32)> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<u32> = v.to_vec();
    s.sort_unstable();
    let mean = s.iter().map(|x| f64::from(*x)).sum::<f64>() / s.len() as f64;
    let rank = (s.len() * 9).div_ceil(10).saturating_sub(1);
    Some((mean as f32 * scale, s[rank] as f32 * scale))
}

fn p90_f32(v: &VecDeque<f32>) -> f32 {
    let mut s: Vec<f32> = v.iter().copied().collect();
    s.sort_by(f32::total_cmp);
    let rank = (s.len() * 9).div_ceil(10).saturating_sub(1);
    s.get(rank).copied().unwrap_or(0.0)
}

/// Per-agent feature state.
#[derive(Debug, Clone)]
pub struct FeatureBuilder {
    backends: Vec<State>,
    pool: f32,
    /// See [`Self::update_load_mean`].
    load_mean: f32,
}

/// ln(x / reference), 0 when either is not positive.
fn log_ratio(x: f32, reference: f32) -> f32 {
    if x > 0.0 && reference > 0.0 {
        (x / reference).ln()
    } else {
        0.0
    }
}

impl FeatureBuilder {
    /// A builder for `backends` backends; every previous action starts at 1.0.
    pub fn new(backends: usize) -> Self {
        Self {
            backends: (0..backends)
                .map(|_| State {
                    previous_action: 1.0,
                    base: 1.0,
                    ..State::default()
                })
                .collect(),
            pool: 0.0,
            load_mean: 0.0,
        }
    }

    /// Sets the configured weights (real values; missing ones stay 1).
    pub fn set_base(&mut self, base: &[f32]) {
        for (st, b) in self.backends.iter_mut().zip(base) {
            st.base = if b.is_finite() && *b > 0.0 { *b } else { 0.0 };
        }
        self.update_load_mean();
    }

    /// Configured weight of `backend` (0 if unknown).
    pub fn base(&self, backend: usize) -> f32 {
        self.backends.get(backend).map_or(0.0, |s| s.base)
    }

    /// The previous action of every backend (see [`Self::set_previous_action`]).
    pub fn previous_actions(&self) -> impl Iterator<Item = f32> + '_ {
        self.backends.iter().map(|s| s.previous_action)
    }

    /// Geometric mean of the backends' filtered completion times, s (0 before
    /// the first completion).
    pub fn pool_fct(&self) -> f32 {
        self.pool
    }

    /// Number of backends.
    pub fn backends(&self) -> usize {
        self.backends.len()
    }

    /// Takes one step's observations (extra entries are ignored; missing ones
    /// count as an idle backend).
    pub fn observe(&mut self, obs: &[BackendObs<'_>]) {
        for (i, st) in self.backends.iter_mut().enumerate() {
            let o = obs.get(i).copied().unwrap_or_default();
            let active = o.active_flows as f32;
            if st.active.len() == HISTORY {
                st.active.pop_front();
            }
            st.active.push_back(active);
            let (dm, dp) = mean_p90(o.duration_us, 1e-6).unwrap_or((0.0, 0.0));
            st.duration_mean = dm;
            st.duration_p90 = dp;
            st.window_fct = None;
            if let Some((fm, fp)) = mean_p90(o.fct_us, 1e-6) {
                st.fct_mean = fm;
                st.fct_p90 = fp;
                st.window_fct = Some(fm);
                let k = o.fct_us.len().min(1 << 16) as i32;
                let g = 1.0 - (1.0 - FCT_GAIN).powi(k);
                if st.estimated {
                    st.fct_est += g * (fm - st.fct_est);
                } else {
                    st.fct_est = fm;
                    st.estimated = true;
                }
            }
            st.window_age = (!o.duration_us.is_empty()).then_some(dm);
            st.active_now = active;
            if st.window_fct.is_none() && st.estimated && active > 0.0 && dm > st.fct_est {
                // Flows outlive the estimate and none completes: a stalled backend.
                st.fct_est += FCT_GAIN * (dm - st.fct_est);
            }
            if st.seen {
                st.active_decayed = DECAY * st.active_decayed + (1.0 - DECAY) * active;
                st.duration_decayed = DECAY * st.duration_decayed + (1.0 - DECAY) * dm;
            } else {
                st.active_decayed = active;
                st.duration_decayed = dm;
                st.seen = true;
            }
        }
        self.update_pool();
        self.update_load_mean();
    }

    /// Mean of ln((active + 1) / base) over backends with a configured weight.
    fn update_load_mean(&mut self) {
        let live = self.backends.iter().filter(|s| s.base > 0.0);
        let n = live.clone().count().max(1) as f32;
        self.load_mean = live.map(State::load_per_weight).sum::<f32>() / n;
    }

    fn update_pool(&mut self) {
        let (mut sum, mut n) = (0.0f64, 0u32);
        for st in self
            .backends
            .iter()
            .filter(|s| s.estimated && s.fct_est > 0.0)
        {
            sum += f64::from(st.fct_est).ln();
            n += 1;
        }
        if n == 0 {
            return;
        }
        self.pool = (sum / f64::from(n)).exp() as f32;
        let pool = self.pool;
        for st in self.backends.iter_mut() {
            if st.estimated && st.active_now == 0.0 && st.window_fct.is_none() {
                st.fct_est = (st.fct_est.ln() * (1.0 - IDLE_RELAX) + pool.ln() * IDLE_RELAX).exp();
            }
        }
    }

    /// Records the weights the policy chose (real values, e.g. 1.5).
    pub fn set_previous_action(&mut self, weights: &[f32]) {
        for (st, w) in self.backends.iter_mut().zip(weights) {
            st.previous_action = *w;
        }
    }

    /// The raw (unnormalized) value of one feature of one backend.
    pub fn raw(&self, backend: usize, f: Feature) -> f32 {
        let Some(st) = self.backends.get(backend) else {
            return 0.0;
        };
        match f {
            Feature::FlowDurationMean => st.duration_mean,
            Feature::FlowDurationP90 => st.duration_p90,
            Feature::FlowDurationDecayed => st.duration_decayed,
            Feature::ActiveFlowsMean => {
                if st.active.is_empty() {
                    0.0
                } else {
                    st.active.iter().sum::<f32>() / st.active.len() as f32
                }
            }
            Feature::ActiveFlowsP90 => p90_f32(&st.active),
            Feature::ActiveFlowsDecayed => st.active_decayed,
            Feature::FctMean => st.fct_mean,
            Feature::FctP90 => st.fct_p90,
            Feature::PreviousAction => st.previous_action,
            Feature::FctEstimateRatio if st.estimated => log_ratio(st.fct_est, self.pool),
            Feature::FctEstimateRatio => 0.0,
            Feature::FctWindowRatio => st.window_fct.map_or(0.0, |f| log_ratio(f, self.pool)),
            Feature::AgeRatio => st.window_age.map_or(0.0, |a| log_ratio(a, self.pool)),
            Feature::LoadPerWeight if st.base > 0.0 => st.load_per_weight() - self.load_mean,
            Feature::LoadPerWeight => 0.0,
        }
    }

    /// Writes the normalized, backend-major observation `meta` asks for into `out`
    /// (cleared first); `meta.backends` must equal [`Self::backends`].
    pub fn observation(&self, meta: &PolicyMeta, out: &mut Vec<f32>) {
        out.clear();
        for b in 0..meta.backends {
            for (i, f) in meta.features.iter().enumerate() {
                let m = meta.normalization.mean.get(i).copied().unwrap_or(0.0);
                let s = meta.normalization.std.get(i).copied().unwrap_or(1.0);
                out.push((self.raw(b, *f) - m) / s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_definitions() {
        let mut fb = FeatureBuilder::new(2);
        let d: Vec<u32> = (1..=10).map(|x| x * 100_000).collect(); // 0.1 .. 1.0 s
        fb.observe(&[
            BackendObs {
                duration_us: &d,
                fct_us: &[2_000_000],
                active_flows: 10,
            },
            BackendObs::default(),
        ]);
        assert!((fb.raw(0, Feature::FlowDurationMean) - 0.55).abs() < 1e-6);
        assert!((fb.raw(0, Feature::FlowDurationP90) - 0.9).abs() < 1e-6);
        assert!((fb.raw(0, Feature::FctMean) - 2.0).abs() < 1e-6);
        assert_eq!(fb.raw(0, Feature::ActiveFlowsDecayed), 10.0);
        assert_eq!(fb.raw(1, Feature::FlowDurationMean), 0.0);
        fb.observe(&[
            BackendObs {
                duration_us: &[],
                fct_us: &[],
                active_flows: 20,
            },
            BackendObs::default(),
        ]);
        assert_eq!(fb.raw(0, Feature::ActiveFlowsMean), 15.0);
        assert_eq!(fb.raw(0, Feature::ActiveFlowsP90), 20.0);
        assert!((fb.raw(0, Feature::ActiveFlowsDecayed) - 11.0).abs() < 1e-5);
        // The completion time keeps its last value through a window without one.
        assert!((fb.raw(0, Feature::FctMean) - 2.0).abs() < 1e-6);
        assert_eq!(fb.raw(0, Feature::PreviousAction), 1.0);
        fb.set_previous_action(&[1.5, 2.0]);
        assert_eq!(fb.raw(1, Feature::PreviousAction), 2.0);
    }

    #[test]
    fn completion_estimate_follows_the_slow_backend() {
        let mut fb = FeatureBuilder::new(2);
        fb.set_base(&[1.0, 2.0]);
        let fast = [100_000u32; 10]; // 0.1 s
        let slow = [400_000u32; 10]; // 0.4 s
        for _ in 0..50 {
            fb.observe(&[
                BackendObs {
                    duration_us: &fast,
                    fct_us: &fast,
                    active_flows: 3,
                },
                BackendObs {
                    duration_us: &slow,
                    fct_us: &slow,
                    active_flows: 1,
                },
            ]);
        }
        // Pool: geometric mean 0.2 s; ratios ±ln 2.
        assert!((fb.pool_fct() - 0.2).abs() < 1e-3, "{}", fb.pool_fct());
        assert!((fb.raw(0, Feature::FctEstimateRatio) + 2f32.ln()).abs() < 1e-3);
        assert!((fb.raw(1, Feature::FctEstimateRatio) - 2f32.ln()).abs() < 1e-3);
        assert!((fb.raw(1, Feature::FctWindowRatio) - 2f32.ln()).abs() < 1e-3);
        // (3+1)/1 against (1+1)/2: ln 4 and 0, centred: ±ln 2.
        assert!((fb.raw(0, Feature::LoadPerWeight) - 2f32.ln()).abs() < 1e-5);
        // A stall: old flows, no completion, the estimate rises.
        let before = fb.raw(1, Feature::FctEstimateRatio);
        let old = [5_000_000u32; 4];
        fb.observe(&[
            BackendObs {
                duration_us: &fast,
                fct_us: &fast,
                active_flows: 3,
            },
            BackendObs {
                duration_us: &old,
                fct_us: &[],
                active_flows: 4,
            },
        ]);
        assert!(fb.raw(1, Feature::FctEstimateRatio) > before);
        assert_eq!(fb.raw(1, Feature::FctWindowRatio), 0.0);
    }

    #[test]
    fn history_is_bounded() {
        let mut fb = FeatureBuilder::new(1);
        for k in 0..100 {
            fb.observe(&[BackendObs {
                active_flows: k,
                ..BackendObs::default()
            }]);
        }
        // Mean over the last 8 readings 92..=99.
        assert_eq!(fb.raw(0, Feature::ActiveFlowsMean), 95.5);
    }
}
