//! The metadata sidecar of a policy: `<model>.onnx.json` next to the ONNX file.
//!
//! ```json
//! {
//!   "format": "marllb-policy/1",
//!   "agent": "sac-gru",
//!   "backends": 7,
//!   "features": ["flow_duration_mean", "flow_duration_p90", "flow_duration_decayed",
//!                "active_flows_mean", "active_flows_p90", "active_flows_decayed",
//!                "previous_action"],
//!   "normalization": { "mean": [..], "std": [..] },
//!   "inputs":  [{ "name": "obs", "shape": [1, 49] }, { "name": "h_in", "shape": [1, 128] }],
//!   "outputs": [{ "name": "action", "shape": [1, 21] }, { "name": "h_out", "shape": [1, 128] }],
//!   "hidden": { "input": "h_in", "output": "h_out", "size": 128 },
//!   "action": { "kind": "discrete", "levels": [1.0, 1.5, 2.0] },
//!   "step_ms": 250
//! }
//! ```
//!
//! The observation is backend-major: backend 0's features in the listed order,
//! then backend 1's, and so on (`backends × features.len()` values), each
//! normalized as `(x - mean[i]) / std[i]`. A discrete action output holds
//! `backends × levels.len()` scores (backend-major; the highest score picks the
//! level); a continuous one holds `backends` values clamped to `[min, max]`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The format tag this code reads and writes.
pub const FORMAT: &str = "marllb-policy/1";

/// One per-backend feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Mean age of the backend's flows at their packets in the last window (s).
    FlowDurationMean,
    /// 90th percentile of the same (s).
    FlowDurationP90,
    /// Exponentially decayed average of the window means (s).
    FlowDurationDecayed,
    /// Mean active-flow count over the recent windows.
    ActiveFlowsMean,
    /// 90th percentile of the active-flow count over the recent windows.
    ActiveFlowsP90,
    /// Exponentially decayed average of the active-flow count.
    ActiveFlowsDecayed,
    /// Flow completion time mean in the last window (s).
    FctMean,
    /// Flow completion time 90th percentile in the last window (s).
    FctP90,
    /// The weight the policy gave this backend in the previous step (for a
    /// `log_step` action: the log correction of the configured weight).
    PreviousAction,
    /// ln(filtered completion time / the pool's geometric mean of the same);
    /// 0 until the backend has completed a flow. See `features` for the filter.
    FctEstimateRatio,
    /// ln(this window's mean completion time / the pool's filtered mean); 0 in a
    /// window without completions.
    FctWindowRatio,
    /// ln(this window's mean flow age / the pool's filtered mean completion
    /// time); 0 in a window without packets.
    AgeRatio,
    /// ln((active flows + 1) / configured weight), minus its mean over backends.
    LoadPerWeight,
}

/// The seven per-backend features of the MARLLB prototype's agents (QMIX,
/// SAC-GRU): averages, 90th percentiles and decayed averages of flow duration
/// and active flows, plus the previous action. The simulator trains on them and
/// the controller's tests generate models with them.
pub const MARLLB_FEATURES: [Feature; 7] = [
    Feature::FlowDurationMean,
    Feature::FlowDurationP90,
    Feature::FlowDurationDecayed,
    Feature::ActiveFlowsMean,
    Feature::ActiveFlowsP90,
    Feature::ActiveFlowsDecayed,
    Feature::PreviousAction,
];

/// The MARLLB prototype's discrete weight levels (its action per backend).
pub const MARLLB_LEVELS: [f32; 3] = [1.0, 1.5, 2.0];

/// Name and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Shape (batch first; all dimensions fixed).
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Recurrent state carried from step to step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiddenSpec {
    /// Input that receives the previous state.
    pub input: String,
    /// Output that yields the next state.
    pub output: String,
    /// State size.
    pub size: usize,
}

/// How the policy's output becomes weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionSpec {
    /// One of `levels` per backend (MARLLB: 1.0, 1.5, 2.0).
    Discrete {
        /// The weight of each level.
        levels: Vec<f32>,
    },
    /// One value per backend, clamped to `[min, max]`.
    Continuous {
        /// Smallest weight.
        min: f32,
        /// Largest weight.
        max: f32,
    },
    /// One value per backend: a step of the log correction of the configured
    /// weight. The step is clamped to `±max_step`, the correction to `±clamp`
    /// and centred over the backends; the weight is `base · exp(correction)`.
    LogStep {
        /// Largest step per cycle.
        max_step: f32,
        /// Largest correction.
        clamp: f32,
    },
}

/// Feature normalization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-feature mean (length: features per backend).
    pub mean: Vec<f32>,
    /// Per-feature standard deviation (length: features per backend, > 0).
    pub std: Vec<f32>,
}

/// The whole sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMeta {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Which agent produced it (`sac-gru`, `qmix`, ...).
    pub agent: String,
    /// Number of backends the policy was trained for.
    pub backends: usize,
    /// Per-backend features, in observation order.
    pub features: Vec<Feature>,
    /// Normalization of each feature.
    pub normalization: Normalization,
    /// Model inputs: the observation first, then the hidden state if any.
    pub inputs: Vec<TensorSpec>,
    /// Model outputs: the action first, then the hidden state if any.
    pub outputs: Vec<TensorSpec>,
    /// Recurrent state, if the model has one.
    #[serde(default)]
    pub hidden: Option<HiddenSpec>,
    /// Action mapping.
    pub action: ActionSpec,
    /// Step the policy was trained with (ms).
    pub step_ms: u32,
}

/// Why a sidecar was refused; every message names the field.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid JSON or not this schema.
    #[error("{path}: not a policy metadata file: {source}")]
    Json {
        /// Path.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A field has a bad value.
    #[error("policy metadata field `{field}`: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn bad(field: &'static str, problem: impl Into<String>) -> MetaError {
    MetaError::Field {
        field,
        problem: problem.into(),
    }
}

/// Pretty JSON text of a sidecar (what the simulator writes).
pub fn to_json(m: &PolicyMeta) -> String {
    // Serializing plain data with string keys cannot fail.
    serde_json::to_string_pretty(m).unwrap_or_default()
}

impl PolicyMeta {
    /// The sidecar path of a model: `model.onnx` → `model.onnx.json`.
    pub fn sidecar_of(model: &Path) -> std::path::PathBuf {
        let mut p = model.as_os_str().to_owned();
        p.push(".json");
        p.into()
    }

    /// Reads and validates a sidecar.
    pub fn load(path: &Path) -> Result<Self, MetaError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetaError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            MetaError::Json { source, .. } => MetaError::Json {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates sidecar text.
    pub fn parse(text: &str) -> Result<Self, MetaError> {
        let meta: Self = serde_json::from_str(text).map_err(|source| MetaError::Json {
            path: "<text>".into(),
            source,
        })?;
        meta.validate()?;
        Ok(meta)
    }

    /// Values in one observation.
    pub fn obs_len(&self) -> usize {
        self.backends * self.features.len()
    }

    /// Values the action output must hold.
    pub fn action_len(&self) -> usize {
        match &self.action {
            ActionSpec::Discrete { levels } => self.backends * levels.len(),
            ActionSpec::Continuous { .. } | ActionSpec::LogStep { .. } => self.backends,
        }
    }

    /// Checks every field and the consistency between them.
    pub fn validate(&self) -> Result<(), MetaError> {
        if self.format != FORMAT {
            return Err(bad(
                "format",
                format!("is {:?}, this build reads {FORMAT:?}", self.format),
            ));
        }
        if self.backends == 0 || self.backends > marllb_core::MAX_BACKENDS {
            return Err(bad(
                "backends",
                format!(
                    "{} is not in 1..={}",
                    self.backends,
                    marllb_core::MAX_BACKENDS
                ),
            ));
        }
        if self.features.is_empty() {
            return Err(bad("features", "is empty"));
        }
        let f = self.features.len();
        if self.normalization.mean.len() != f {
            return Err(bad(
                "normalization.mean",
                format!(
                    "has {} values for {f} features",
                    self.normalization.mean.len()
                ),
            ));
        }
        if self.normalization.std.len() != f {
            return Err(bad(
                "normalization.std",
                format!(
                    "has {} values for {f} features",
                    self.normalization.std.len()
                ),
            ));
        }
        if let Some(i) = self.normalization.mean.iter().position(|m| !m.is_finite()) {
            return Err(bad(
                "normalization.mean",
                format!("value {i} is not finite"),
            ));
        }
        if let Some(i) = self
            .normalization
            .std
            .iter()
            .position(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(bad(
                "normalization.std",
                format!("value {i} is not a positive finite number"),
            ));
        }
        match &self.action {
            ActionSpec::Discrete { levels } => {
                if levels.is_empty() {
                    return Err(bad("action.levels", "is empty"));
                }
                if levels
                    .iter()
                    .any(|l| !(l.is_finite() && *l >= 0.0 && *l <= 256.0))
                {
                    return Err(bad("action.levels", "each level must be in 0..=256"));
                }
            }
            ActionSpec::Continuous { min, max } => {
                if !(min.is_finite()
                    && max.is_finite()
                    && *min >= 0.0
                    && min <= max
                    && *max <= 256.0)
                {
                    return Err(bad(
                        "action",
                        "continuous range must satisfy 0 <= min <= max <= 256",
                    ));
                }
            }
            ActionSpec::LogStep { max_step, clamp } => {
                if !(max_step.is_finite() && *max_step > 0.0 && *max_step <= 4.0) {
                    return Err(bad("action.max_step", "must be in (0, 4]"));
                }
                if !(clamp.is_finite() && *clamp > 0.0 && *clamp <= 8.0) {
                    return Err(bad("action.clamp", "must be in (0, 8]"));
                }
            }
        }
        let obs = self
            .inputs
            .first()
            .ok_or_else(|| bad("inputs", "is empty"))?;
        if obs.len() != self.obs_len() {
            return Err(bad(
                "inputs",
                format!(
                    "observation {:?} has shape {:?} ({} values) but {} backends x {f} features = {}",
                    obs.name,
                    obs.shape,
                    obs.len(),
                    self.backends,
                    self.obs_len()
                ),
            ));
        }
        let act = self
            .outputs
            .first()
            .ok_or_else(|| bad("outputs", "is empty"))?;
        if act.len() != self.action_len() {
            return Err(bad(
                "outputs",
                format!(
                    "action {:?} has shape {:?} ({} values) but the action mapping needs {}",
                    act.name,
                    act.shape,
                    act.len(),
                    self.action_len()
                ),
            ));
        }
        match &self.hidden {
            Some(h) => {
                let hin = self.inputs.iter().find(|t| t.name == h.input);
                let hout = self.outputs.iter().find(|t| t.name == h.output);
                match (hin, hout) {
                    (Some(i), Some(o)) if i.len() == h.size && o.len() == h.size => {}
                    _ => {
                        return Err(bad(
                            "hidden",
                            format!(
                                "input {:?} and output {:?} must exist with {} values each",
                                h.input, h.output, h.size
                            ),
                        ))
                    }
                }
                if self.inputs.len() != 2 || self.outputs.len() != 2 {
                    return Err(bad(
                        "inputs",
                        "a recurrent model has exactly 2 inputs and 2 outputs",
                    ));
                }
            }
            None => {
                if self.inputs.len() != 1 {
                    return Err(bad("inputs", "a feed-forward model has exactly 1 input"));
                }
            }
        }
        if self.step_ms == 0 {
            return Err(bad("step_ms", "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> PolicyMeta {
        PolicyMeta {
            format: FORMAT.into(),
            agent: "sac-gru".into(),
            backends: 3,
            features: vec![
                Feature::FlowDurationMean,
                Feature::ActiveFlowsMean,
                Feature::PreviousAction,
            ],
            normalization: Normalization {
                mean: vec![0.0; 3],
                std: vec![1.0; 3],
            },
            inputs: vec![
                TensorSpec {
                    name: "obs".into(),
                    shape: vec![1, 9],
                },
                TensorSpec {
                    name: "h_in".into(),
                    shape: vec![1, 8],
                },
            ],
            outputs: vec![
                TensorSpec {
                    name: "action".into(),
                    shape: vec![1, 9],
                },
                TensorSpec {
                    name: "h_out".into(),
                    shape: vec![1, 8],
                },
            ],
            hidden: Some(HiddenSpec {
                input: "h_in".into(),
                output: "h_out".into(),
                size: 8,
            }),
            action: ActionSpec::Discrete {
                levels: vec![1.0, 1.5, 2.0],
            },
            step_ms: 250,
        }
    }

    #[test]
    fn round_trip_and_validate() {
        let m = sample();
        let text = serde_json::to_string_pretty(&m).expect("json");
        assert_eq!(PolicyMeta::parse(&text).expect("valid"), m);
    }

    #[test]
    fn errors_name_the_field() {
        type Case = (fn(&mut PolicyMeta), &'static str);
        let cases: Vec<Case> = vec![
            (|m| m.format = "x".into(), "format"),
            (|m| m.backends = 0, "backends"),
            (|m| m.normalization.std[1] = 0.0, "normalization.std"),
            (
                |m| m.normalization.mean.pop().map(|_| ()).unwrap_or(()),
                "normalization.mean",
            ),
            (|m| m.inputs[0].shape = vec![1, 8], "inputs"),
            (|m| m.outputs[0].shape = vec![1, 3], "outputs"),
            (
                |m| m.hidden.as_mut().map(|h| h.size = 4).unwrap_or(()),
                "hidden",
            ),
            (
                |m| m.action = ActionSpec::Discrete { levels: vec![] },
                "action.levels",
            ),
            (
                |m| m.action = ActionSpec::Continuous { min: 2.0, max: 1.0 },
                "action",
            ),
            (|m| m.step_ms = 0, "step_ms"),
        ];
        for (mutate, field) in cases {
            let mut m = sample();
            mutate(&mut m);
            match m.validate() {
                Err(MetaError::Field { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_and_bad_json_are_refused() {
        let mut v = serde_json::to_value(sample()).expect("json");
        v["surprise"] = serde_json::json!(1);
        assert!(matches!(
            PolicyMeta::parse(&v.to_string()),
            Err(MetaError::Json { .. })
        ));
        assert!(matches!(
            PolicyMeta::parse("{"),
            Err(MetaError::Json { .. })
        ));
        let mut v = serde_json::to_value(sample()).expect("json");
        v["features"] = serde_json::json!(["no_such_feature"]);
        assert!(matches!(
            PolicyMeta::parse(&v.to_string()),
            Err(MetaError::Json { .. })
        ));
    }
}
