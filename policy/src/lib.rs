//! # marllb-policy
//!
//! The contract between the simulator that trains policies and the controller
//! that runs them, so that both compute exactly the same thing:
//!
//! * [`meta`]: the metadata sidecar of an ONNX policy (`model.onnx.json`): input
//!   and output names and shapes, the feature list and order, normalization, the
//!   action mapping, the number of backends; validated with errors that name the
//!   field.
//! * [`features`]: the observation of one agent, built from per-backend telemetry
//!   (flow-duration samples and active-flow gauges, the same values marllb-core
//!   collects in the data plane and in the simulator).
//! * [`action`]: the policy's output turned into Q16.16 backend weights, rejecting
//!   NaN and infinities before anything reaches shared memory.
//! * [`adaptive`]: adaptive SED, the strongest heuristic a learned policy is
//!   compared with; it acts through the same `log_step` action.
//! * [`kind`]: the one list of policies (heuristics and learned models), their
//!   names and what each means; the simulator, the controller and the testbed
//!   parse the same names.
//! * `model` (feature `onnx`): the ONNX runner (tract) both run a policy with:
//!   loaded, checked against its sidecar, probed, run with its recurrent state.

pub mod action;
pub mod adaptive;
pub mod features;
pub mod kind;
pub mod meta;
#[cfg(feature = "onnx")]
pub mod model;

pub use action::{action_to_weights, log_step, ActionError};
pub use adaptive::AdaptiveSed;
pub use features::{BackendObs, FeatureBuilder};
pub use kind::{PolicyKind, UnknownPolicy};
pub use meta::{
    ActionSpec, Feature, MetaError, PolicyMeta, TensorSpec, MARLLB_FEATURES, MARLLB_LEVELS,
};

/// Jain's fairness index of `x`: (Σx)² / (n·Σx²); 1 when all are equal, and 1
/// for an empty or all-zero input (nothing is unfair). The one definition the
/// simulator (reward, fairness), the controller (`marllb_jain_fairness`) and
/// the testbed (summaries) use.
pub fn jain<I>(x: I) -> f64
where
    I: IntoIterator,
    I::Item: core::borrow::Borrow<f64>,
{
    let (mut n, mut s, mut q) = (0usize, 0.0f64, 0.0f64);
    for v in x {
        let v = *core::borrow::Borrow::<f64>::borrow(&v);
        n += 1;
        s += v;
        q += v * v;
    }
    if n == 0 || q <= 0.0 {
        1.0
    } else {
        s * s / (n as f64 * q)
    }
}

#[cfg(test)]
mod jain_tests {
    use super::jain;

    #[test]
    fn jain_values() {
        assert_eq!(jain([1.0, 1.0, 1.0]), 1.0);
        let v = vec![1.0, 0.0, 0.0, 0.0];
        assert!((jain(&v) - 0.25).abs() < 1e-12);
        assert!((jain(vec![1.0, 0.0]) - 0.5).abs() < 1e-12);
        assert_eq!(jain(core::iter::empty::<f64>()), 1.0);
        assert_eq!(jain([0.0, 0.0]), 1.0);
    }
}
