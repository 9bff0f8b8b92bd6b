//! From the policy's output to the weights the data plane applies.

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

/// Maps the action output to per-backend weights: real values in `real` and
/// Q16.16 in `q16` (both cleared first). Refuses NaN, infinities and wrong
/// lengths; nothing is written then.
pub fn action_to_weights(
    meta: &PolicyMeta,
    output: &[f32],
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
    }
    q16.extend(real.iter().map(|w| to_q16(*w)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::PolicyMeta;

    fn meta(action: ActionSpec) -> PolicyMeta {
        let mut m: PolicyMeta =
            serde_json::from_str(include_str!("../testdata/sample.json")).expect("sample metadata");
        m.action = action;
        m
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
        action_to_weights(&m, &[0.0, 1.25, 9.0], &mut r, &mut q).expect("ok");
        assert_eq!(r, vec![0.5, 1.25, 2.0]);
        assert_eq!(q[1], 81920);
    }

    #[test]
    fn nan_infinity_and_length_are_refused_without_output() {
        let m = meta(ActionSpec::Continuous { min: 0.5, max: 2.0 });
        let (mut r, mut q) = (vec![7.0], vec![7]);
        assert_eq!(
            action_to_weights(&m, &[1.0, f32::NAN, 1.0], &mut r, &mut q),
            Err(ActionError::NotFinite { index: 1 })
        );
        assert_eq!(
            action_to_weights(&m, &[1.0, f32::INFINITY, 1.0], &mut r, &mut q),
            Err(ActionError::NotFinite { index: 1 })
        );
        assert_eq!(
            action_to_weights(&m, &[1.0], &mut r, &mut q),
            Err(ActionError::WrongLength {
                expected: 3,
                got: 1
            })
        );
        assert_eq!((r, q), (vec![7.0], vec![7]));
    }
}
