//! An ONNX policy run with tract: loaded, checked against its sidecar and the
//! region, optimized into a runnable plan once, probed, then run every cycle with
//! its recurrent state carried from one run to the next. The one runner of the
//! workspace: the controller runs a model with it every cycle, the simulator
//! every step of every LB node (feature `onnx`).
//!
//! Loading refuses a model (with an error naming what is wrong) when: the
//! sidecar is missing or invalid; the ONNX file does not parse; an input or
//! output named in the sidecar is not in the graph; the graph's output shapes
//! differ from the sidecar's; the number of backends differs from the region's;
//! or a probe run on a neutral observation yields a NaN or an infinity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{FeatureBuilder, MetaError, PolicyMeta};
use tract_onnx::prelude::*;

/// The runnable plan type.
pub type Plan = Arc<TypedSimplePlan>;

/// Why a model was refused or a run failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The sidecar is missing or invalid.
    #[error("sidecar: {0}")]
    Meta(#[from] MetaError),
    /// The sidecar's backend count is not the region's.
    #[error("the model is for {model} backends, the data plane has {region}")]
    Backends {
        /// In the sidecar.
        model: usize,
        /// In the region.
        region: usize,
    },
    /// tract could not load, type or optimize the graph.
    #[error("ONNX model {path}: {message}")]
    Onnx {
        /// File.
        path: String,
        /// tract's error chain.
        message: String,
    },
    /// A graph output's shape is not the sidecar's.
    #[error("output {name:?}: the graph gives shape {graph:?}, the sidecar says {sidecar:?}")]
    Shape {
        /// Output name.
        name: String,
        /// From the graph.
        graph: String,
        /// From the sidecar.
        sidecar: Vec<usize>,
    },
    /// A run failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// The probe run produced NaN or infinite values.
    #[error("probe run: output {output:?} value {index} is not finite")]
    NotFinite {
        /// Output name.
        output: String,
        /// Position.
        index: usize,
    },
}

fn onnx_err(path: &Path, e: &TractError) -> ModelError {
    ModelError::Onnx {
        path: path.display().to_string(),
        message: format!("{e:#}"),
    }
}

/// A checked, optimized model: what the loader thread hands to the cycle thread
/// (`Send`; the run state, which is not, is created on the cycle thread).
#[derive(Debug, Clone)]
pub struct Loaded {
    meta: PolicyMeta,
    path: PathBuf,
    plan: Plan,
    obs_shape: Vec<usize>,
    hidden_shape: Vec<usize>,
}

impl Loaded {
    /// Loads `path` and its sidecar `path.json`, optimizes the graph and probes
    /// it; `backends` is the region's count (`None`: not checked).
    pub fn load(path: &Path, backends: Option<usize>) -> Result<Loaded, ModelError> {
        let meta = PolicyMeta::load(&PolicyMeta::sidecar_of(path))?;
        if let Some(region) = backends {
            if meta.backends != region {
                return Err(ModelError::Backends {
                    model: meta.backends,
                    region,
                });
            }
        }
        let plan = build_plan(path, &meta)?;
        let hidden_shape = meta
            .hidden
            .as_ref()
            .and_then(|h| meta.inputs.iter().find(|t| t.name == h.input))
            .map_or_else(Vec::new, |t| t.shape.clone());
        let obs_shape = meta
            .inputs
            .first()
            .map_or_else(Vec::new, |t| t.shape.clone());
        let loaded = Loaded {
            meta,
            path: path.into(),
            plan,
            obs_shape,
            hidden_shape,
        };
        Policy::new(loaded.clone()).probe()?;
        Ok(loaded)
    }

    /// The sidecar.
    pub fn meta(&self) -> &PolicyMeta {
        &self.meta
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A policy with its run state (on the cycle thread).
#[derive(Debug)]
pub struct Policy {
    m: Loaded,
    state: Option<TypedSimpleState>,
    /// Hidden state fed at the next run (zeros at start).
    hidden: Vec<f32>,
    /// Hidden state produced by the last run, committed by [`Policy::commit`].
    hidden_next: Vec<f32>,
}

impl Policy {
    /// A policy at its initial (zero) recurrent state.
    pub fn new(m: Loaded) -> Policy {
        let h = m.meta.hidden.as_ref().map_or(0, |h| h.size);
        Policy {
            m,
            state: None,
            hidden: vec![0.0; h],
            hidden_next: vec![0.0; h],
        }
    }

    /// Loads and checks a model (see [`Loaded::load`]).
    pub fn load(path: &Path, backends: Option<usize>) -> Result<Policy, ModelError> {
        Loaded::load(path, backends).map(Policy::new)
    }

    /// Runs the policy once on the observation of an idle service and checks
    /// every output is finite; the hidden state is left at zero.
    fn probe(&mut self) -> Result<(), ModelError> {
        let fb = FeatureBuilder::new(self.m.meta.backends);
        let mut obs = Vec::new();
        fb.observation(&self.m.meta, &mut obs);
        let mut out = Vec::new();
        let outputs = self.run_raw(&obs)?;
        for (spec, t) in self.m.meta.outputs.iter().zip(&outputs) {
            let view = t
                .to_plain_array_view::<f32>()
                .map_err(|e| ModelError::Run(format!("{e:#}")))?;
            if let Some(index) = view.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::NotFinite {
                    output: spec.name.clone(),
                    index,
                });
            }
        }
        drop(outputs);
        self.infer(&obs, &mut out)?;
        self.reset_hidden();
        Ok(())
    }

    fn run_raw(&mut self, obs: &[f32]) -> Result<TVec<TValue>, ModelError> {
        let run = |e: TractError| ModelError::Run(format!("{e:#}"));
        let state = match &mut self.state {
            Some(s) => s,
            none => none.insert(self.m.plan.spawn().map_err(run)?),
        };
        let mut inputs: TVec<TValue> = tvec![Tensor::from_shape(&self.m.obs_shape, obs)
            .map_err(run)?
            .into_tvalue()];
        if self.m.meta.hidden.is_some() {
            inputs.push(
                Tensor::from_shape(&self.m.hidden_shape, &self.hidden)
                    .map_err(run)?
                    .into_tvalue(),
            );
        }
        state.run(inputs).map_err(run)
    }

    /// Runs the policy on a normalized observation; the action goes to `action`
    /// (cleared first). The new hidden state is kept aside until
    /// [`Policy::commit`], so a run whose action is refused does not advance it.
    pub fn infer(&mut self, obs: &[f32], action: &mut Vec<f32>) -> Result<(), ModelError> {
        let outputs = self.run_raw(obs)?;
        action.clear();
        let run = |e: TractError| ModelError::Run(format!("{e:#}"));
        let a = outputs
            .first()
            .ok_or_else(|| ModelError::Run("the model produced no output".into()))?;
        action.extend(a.to_plain_array_view::<f32>().map_err(run)?.iter().copied());
        if self.m.meta.hidden.is_some() {
            let h = outputs
                .get(1)
                .ok_or_else(|| ModelError::Run("the model produced no hidden state".into()))?;
            let view = h.to_plain_array_view::<f32>().map_err(run)?;
            if view.len() != self.hidden_next.len() {
                return Err(ModelError::Run(format!(
                    "hidden state has {} values, expected {}",
                    view.len(),
                    self.hidden_next.len()
                )));
            }
            for (d, s) in self.hidden_next.iter_mut().zip(view.iter()) {
                *d = *s;
            }
        }
        Ok(())
    }

    /// Carries the hidden state of the last run into the next one (call after
    /// its action was accepted). A non-finite state is dropped (reset to zero).
    pub fn commit(&mut self) {
        if self.hidden_next.iter().all(|v| v.is_finite()) {
            std::mem::swap(&mut self.hidden, &mut self.hidden_next);
        } else {
            self.reset_hidden();
        }
    }

    /// Zeroes the recurrent state.
    pub fn reset_hidden(&mut self) {
        self.hidden.fill(0.0);
        self.hidden_next.fill(0.0);
    }

    /// The sidecar.
    pub fn meta(&self) -> &PolicyMeta {
        &self.m.meta
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.m.path
    }

    /// The runnable plan (for benchmarks).
    pub fn plan(&self) -> &Plan {
        &self.m.plan
    }

    /// The observation tensor shape.
    pub fn obs_shape(&self) -> &[usize] {
        &self.m.obs_shape
    }

    /// The hidden-state tensor shape (empty for a feed-forward model).
    pub fn hidden_shape(&self) -> &[usize] {
        &self.m.hidden_shape
    }

    /// The current hidden state.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }
}

fn build_plan(path: &Path, meta: &PolicyMeta) -> Result<Plan, ModelError> {
    let mut model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(|e| onnx_err(path, &e))?;
    model
        .set_input_names(meta.inputs.iter().map(|t| t.name.as_str()))
        .map_err(|e| onnx_err(path, &e))?;
    model
        .select_outputs_by_name(meta.outputs.iter().map(|t| t.name.as_str()))
        .map_err(|e| onnx_err(path, &e))?;
    for (i, t) in meta.inputs.iter().enumerate() {
        model = model
            .with_input_fact(i, f32::fact(&t.shape).into())
            .map_err(|e| onnx_err(path, &e))?;
    }
    let typed = model.into_optimized().map_err(|e| onnx_err(path, &e))?;
    for (i, spec) in meta.outputs.iter().enumerate() {
        let fact = typed.output_fact(i).map_err(|e| onnx_err(path, &e))?;
        let ok = fact
            .shape
            .as_concrete()
            .is_some_and(|s| s.iter().product::<usize>() == spec.len());
        if !ok || fact.datum_type != f32::datum_type() {
            return Err(ModelError::Shape {
                name: spec.name.clone(),
                graph: format!("{fact:?}"),
                sidecar: spec.shape.clone(),
            });
        }
    }
    typed.into_runnable().map_err(|e| onnx_err(path, &e))
}

/// What `check-model` prints: the graph's inputs and outputs, its metadata
/// properties, and the sidecar.
pub fn describe(path: &Path) -> Result<String, ModelError> {
    use std::fmt::Write;
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(|e| onnx_err(path, &e))?;
    let mut s = String::new();
    let _ = writeln!(s, "model: {}", path.display());
    let _ = writeln!(s, "inputs:");
    for (i, o) in model
        .input_outlets()
        .map_err(|e| onnx_err(path, &e))?
        .iter()
        .enumerate()
    {
        let name = model.node(o.node).name.clone();
        let fact = model.input_fact(i).map_err(|e| onnx_err(path, &e))?;
        let _ = writeln!(s, "  {i}: {name} {fact:?}");
    }
    let _ = writeln!(s, "outputs:");
    for (i, o) in model
        .output_outlets()
        .map_err(|e| onnx_err(path, &e))?
        .iter()
        .enumerate()
    {
        let name = model
            .outlet_label(*o)
            .map_or_else(|| model.node(o.node).name.clone(), str::to_owned);
        let fact = model.output_fact(i).map_err(|e| onnx_err(path, &e))?;
        let _ = writeln!(s, "  {i}: {name} {fact:?}");
    }
    let mut props: Vec<_> = model.properties.iter().collect();
    props.sort_by(|a, b| a.0.cmp(b.0));
    let _ = writeln!(s, "metadata:");
    for (k, v) in props {
        let val = v
            .try_as_plain_ram()
            .and_then(|p| p.to_scalar::<String>().cloned())
            .unwrap_or_else(|_| format!("{v:?}"));
        let _ = writeln!(s, "  {k} = {val}");
    }
    Ok(s)
}

const _: () = {
    const fn send<T: Send>() {}
    send::<Loaded>();
};
