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

pub mod action;
pub mod adaptive;
pub mod features;
pub mod meta;

pub use action::{action_to_weights, log_step, ActionError};
pub use adaptive::AdaptiveSed;
pub use features::{BackendObs, FeatureBuilder};
pub use meta::{ActionSpec, Feature, MetaError, PolicyMeta, TensorSpec};
