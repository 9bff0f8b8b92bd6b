//! From the policy's output to the weights the data plane applies.

use crate::features::FeatureBuilder;
use crate::meta::{ActionSpec, PolicyMeta};

/// Why an action was refused (the previous weights stay).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    /// The output has the wrong number of values.
    #[error("action output has {got} values, the metadata says {expected}")]
    WrongLength {
        /// Expected.
        expected: usize,
        /// Got.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("action output value {index} is not finite")]
    NotFinite {
        /// Position in the output.
        index: usize,
    },
}

/// Converts a real weight to Q16.16, clamped to `0..=256`.
pub fn to_q16(w: f32) -> u32 {
    let w = w.clamp(0.0, 256.0);
    (f64::from(w) * f64::from(marllb_core::WEIGHT_ONE)).round() as u32
}

/// Applies one step of log corrections: each backend's correction (its previous
/// action in `fb`) moves by its step clamped to `±max_step`, is clamped to
/// `±clamp`, and the corrections of backends with a configured weight are
/// centred (their mean is 0, so they cannot drift together). `real` receives
/// the new corrections (the next previous action), `q16` the weights
/// `base · exp(correction)` scaled so the largest is 1.0. Backends with a zero
/// configured weight get weight 0.
pub fn log_step(
    steps: &[f32],
    fb: &FeatureBuilder,
    max_step: f32,
    clamp: f32,
    real: &mut Vec<f32>,
    q16: &mut Vec<u32>,
) {
    real.clear();
    q16.clear();
    for (prev, step) in fb.previous_actions().zip(steps) {
        let prev = if prev.is_finite() { prev } else { 0.0 };
        let step = if step.is_finite() { *step } else { 0.0 };
        real.push((prev + step.clamp(-max_step, max_step)).clamp(-clamp, clamp));
    }
    let live = (0..real.len()).filter(|&b| fb.base(b) > 0.0);
    let n = live.clone().count().max(1) as f32;
    let mean = live.map(|b| real[b]).sum::<f32>() / n;
    for (b, c) in real.iter_mut().enumerate() {
        *c = if fb.base(b) > 0.0 { *c - mean } else { 0.0 };
    }
    let w: Vec<f32> = real
        .iter()
        .enumerate()
        .map(|(b, c)| fb.base(b) * c.exp())
        .collect();
    let max = w.iter().copied().fold(0.0f32, f32::max);
    q16.extend(w.iter().map(|x| {
        if max > 0.0 && *x > 0.0 {
            to_q16(*x / max).max(1)
        } else {
            0
        }
    }));
}

/// Maps the action output to per-backend weights: real values in `real` and
/// Q16.16 in `q16` (both cleared first). Refuses NaN, infinities and wrong
/// lengths; nothing is written then. A `log_step` action reads the previous
/// corrections and the configured weights from `fb`, and `real` holds the new
/// corrections (see [`log_step`]).
pub fn action_to_weights(
    meta: &PolicyMeta,
    output: &[f32],
    fb: &FeatureBuilder,
    real: &mut Vec<f32>,
    q16: &mut Vec<u32>,
) -> Result<(), ActionError> {
    if output.len() != meta.action_len() {
        return Err(ActionError::WrongLength {
            expected: meta.action_len(),
            got: output.len(),
        });
    }
    if let Some(index) = output.iter().position(|v| !v.is_finite()) {
        return Err(ActionError::NotFinite { index });
    }
    real.clear();
    q16.clear();
    match &meta.action {
        ActionSpec::Discrete { levels } => {
            for scores in output.chunks(levels.len()) {
                let best = scores
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                real.push(levels.get(best).copied().unwrap_or(1.0));
            }
        }
        ActionSpec::Continuous { min, max } => {
            real.extend(output.iter().map(|v| v.clamp(*min, *max)));
        }
        ActionSpec::LogStep { max_step, clamp } => {
            log_step(output, fb, *max_step, *clamp, real, q16);
            return Ok(());
        }
    }
    q16.extend(real.iter().map(|w| to_q16(*w)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::PolicyMeta;
    use marllb_core::WEIGHT_ONE;

    fn meta(action: ActionSpec) -> PolicyMeta {
        let mut m: PolicyMeta =
            serde_json::from_str(include_str!("../testdata/sample.json")).expect("sample metadata");
        m.action = action;
        m
    }

    fn fb() -> FeatureBuilder {
        FeatureBuilder::new(3)
    }

    #[test]
    fn log_step_moves_clamps_and_centres() {
        let m = meta(ActionSpec::LogStep {
            max_step: 0.5,
            clamp: 1.0,
        });
        let mut f = fb();
        f.set_base(&[2.0, 2.0, 0.0]);
        let (mut r, mut q) = (vec![], vec![]);
        f.set_previous_action(&[0.0, 0.0, 0.0]);
        action_to_weights(&m, &[0.3, 9.0, 0.4], &f, &mut r, &mut q).expect("ok");
        // Steps 0.3 and 0.5 (clamped), centred over the two live backends.
        assert!(
            (r[0] + 0.1).abs() < 1e-6 && (r[1] - 0.1).abs() < 1e-6,
            "{r:?}"
        );
        assert_eq!(r[2], 0.0);
        assert_eq!(q[1], WEIGHT_ONE);
        assert_eq!(q[2], 0);
        let expect = ((-0.2f32).exp() * WEIGHT_ONE as f32).round() as u32;
        assert!(q[0].abs_diff(expect) <= 1, "{q:?}");
        // Corrections accumulate up to the clamp.
        for _ in 0..10 {
            f.set_previous_action(&r);
            action_to_weights(&m, &[-0.5, 0.5, 0.0], &f, &mut r, &mut q).expect("ok");
        }
        assert!(
            (r[0] + 1.0).abs() < 1e-6 && (r[1] - 1.0).abs() < 1e-6,
            "{r:?}"
        );
    }

    #[test]
    fn discrete_picks_the_best_level() {
        let m = meta(ActionSpec::Discrete {
            levels: vec![1.0, 1.5, 2.0],
        });
        let (mut r, mut q) = (vec![], vec![]);
        action_to_weights(
            &m,
            &[0.1, 0.9, 0.0, 5.0, -1.0, 2.0, -3.0, -2.0, -1.0],
            &FeatureBuilder::new(3),
            &mut r,
            &mut q,
        )
        .expect("ok");
        assert_eq!(r, vec![1.5, 1.0, 2.0]);
        assert_eq!(q, vec![98304, 65536, 131072]);
    }

    #[test]
    fn continuous_is_clamped() {
        let m = meta(ActionSpec::Continuous { min: 0.5, max: 2.0 });
        let (mut r, mut q) = (vec![], vec![]);
        action_to_weights(&m, &[0.0, 1.25, 9.0], &fb(), &mut r, &mut q).expect("ok");
        assert_eq!(r, vec![0.5, 1.25, 2.0]);
        assert_eq!(q[1], 81920);
    }

    #[test]
    fn nan_infinity_and_length_are_refused_without_output() {
        let m = meta(ActionSpec::Continuous { min: 0.5, max: 2.0 });
        let (mut r, mut q) = (vec![7.0], vec![7]);
        assert_eq!(
            action_to_weights(&m, &[1.0, f32::NAN, 1.0], &fb(), &mut r, &mut q),
            Err(ActionError::NotFinite { index: 1 })
        );
        assert_eq!(
            action_to_weights(&m, &[1.0, f32::INFINITY, 1.0], &fb(), &mut r, &mut q),
            Err(ActionError::NotFinite { index: 1 })
        );
        assert_eq!(
            action_to_weights(&m, &[1.0], &fb(), &mut r, &mut q),
            Err(ActionError::WrongLength {
                expected: 3,
                got: 1
            })
        );
        assert_eq!((r, q), (vec![7.0], vec![7]));
    }
}
