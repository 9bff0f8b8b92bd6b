//! Adaptive SED: shortest expected delay whose weights are re-estimated every
//! cycle from the observations a learned policy gets, with no learning.
//!
//! Each cycle every backend's log correction of its configured weight moves a
//! fraction `RATE` toward a target set by its filtered completion time relative
//! to the pool's ([`crate::Feature::FctEstimateRatio`]):
//! `target = −GAIN · ln(fct / pool)`, so the weight is
//! `base · (pool / fct)^GAIN` once settled. The step is applied by
//! [`crate::action::log_step`] (clamped to `±MAX_STEP` per cycle and `±CLAMP`
//! overall, centred). A backend slower than its configured weight says
//! completes its flows later than the rest and loses weight in proportion; a
//! proportional rule, not an integrator, so a backend that is slow even when
//! idle is not starved. This is the same family as the
//! MARLLB authors' HLB heuristic (filtered, normalised per-server flow duration
//! turned into SED weights). The constants were chosen on the simulator's
//! training scenarios only (`marllb-sim tune-adaptive`; sim/README.md).

use crate::action::log_step;
use crate::features::FeatureBuilder;
use crate::meta::Feature;

/// Target correction per unit of log completion-time ratio.
pub const GAIN: f32 = 0.5;
/// Fraction of the way to the target per cycle.
pub const RATE: f32 = 0.1;
/// Largest step per cycle.
pub const MAX_STEP: f32 = 0.5;
/// Largest correction (e^±3 ≈ ×20).
pub const CLAMP: f32 = 3.0;

/// Tunable constants of adaptive SED.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSed {
    /// Target correction per unit of log completion-time ratio.
    pub gain: f32,
    /// Fraction of the way to the target per cycle.
    pub rate: f32,
    /// Largest step per cycle.
    pub max_step: f32,
    /// Largest correction.
    pub clamp: f32,
}

impl Default for AdaptiveSed {
    fn default() -> Self {
        Self {
            gain: GAIN,
            rate: RATE,
            max_step: MAX_STEP,
            clamp: CLAMP,
        }
    }
}

impl AdaptiveSed {
    /// The names [`AdaptiveSed::set`] takes.
    pub const KEYS: [&'static str; 4] = ["gain", "rate", "max_step", "clamp"];

    /// Sets the constant named `key` (`gain`, `rate`, `max_step`, `clamp`) to
    /// `value`, checked: every constant is in (0, 10], `rate` in (0, 1]. The
    /// one place those bounds live (the controller's `[adaptive_sed]` and the
    /// simulator's `adaptive-sed:KEY=VALUE` both use it).
    pub fn set(&mut self, key: &str, value: f32) -> Result<(), String> {
        let (slot, max) = match key {
            "gain" => (&mut self.gain, 10.0),
            "rate" => (&mut self.rate, 1.0),
            "max_step" => (&mut self.max_step, 10.0),
            "clamp" => (&mut self.clamp, 10.0),
            _ => return Err(format!("unknown key {key:?} ({})", Self::KEYS.join(", "))),
        };
        if !(value.is_finite() && value > 0.0 && value <= max) {
            return Err(format!("must be in (0, {max}], got {value}"));
        }
        *slot = value;
        Ok(())
    }

    /// One cycle: new corrections in `real`, Q16.16 weights in `q16` (call
    /// `fb.set_previous_action(real)` after publishing them).
    pub fn step(&self, fb: &FeatureBuilder, real: &mut Vec<f32>, q16: &mut Vec<u32>) {
        let steps: Vec<f32> = (0..fb.backends())
            .zip(fb.previous_actions())
            .map(|(b, prev)| {
                let target = -self.gain * fb.raw(b, Feature::FctEstimateRatio);
                self.rate * (target - prev)
            })
            .collect();
        log_step(&steps, fb, self.max_step, self.clamp, real, q16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::BackendObs;

    #[test]
    fn the_slow_backend_loses_weight_and_the_fast_gains() {
        let mut fb = FeatureBuilder::new(2);
        fb.set_base(&[1.0, 1.0]);
        fb.set_previous_action(&[0.0, 0.0]);
        let fast = [100_000u32; 8];
        let slow = [300_000u32; 8];
        let (mut real, mut q16) = (vec![], vec![]);
        for _ in 0..5 {
            fb.observe(&[
                BackendObs {
                    duration_us: &fast,
                    fct_us: &fast,
                    active_flows: 2,
                },
                BackendObs {
                    duration_us: &slow,
                    fct_us: &slow,
                    active_flows: 2,
                },
            ]);
            AdaptiveSed::default().step(&fb, &mut real, &mut q16);
            fb.set_previous_action(&real);
        }
        assert!(real[0] > 0.0 && real[1] < 0.0, "{real:?}");
        assert!(q16[1] < q16[0], "{q16:?}");
        assert_eq!(q16[0], marllb_core::WEIGHT_ONE);
    }
}
