//! Small ONNX policies generated with tract's protobuf types and prost, with
//! their `marllb-policy/1` sidecars: an MLP (Gemm+Relu+Gemm), a recurrent
//! policy (2 FC + GRU + 2 FC, hidden state in and out), and broken variants.
#![allow(dead_code)]

use std::path::Path;

use marllb_policy::meta::{ActionSpec, HiddenSpec, Normalization, FORMAT};
use marllb_policy::{PolicyMeta, TensorSpec};
use prost::Message;
use tract_onnx::pb;

/// The MARLLB agents' features and levels (one list, in `marllb-policy`).
pub use marllb_policy::{MARLLB_FEATURES as FEATURES, MARLLB_LEVELS as LEVELS};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

#[derive(Default)]
struct G {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    k: usize,
}

fn vi(name: &str, shape: &[usize]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                                d as i64,
                            )),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl G {
    fn name(&mut self, p: &str) -> String {
        self.k += 1;
        format!("{p}{}", self.k)
    }
    fn init(&mut self, dims: &[usize], data: Vec<f32>) -> String {
        let name = self.name("w");
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 1,
            float_data: data,
            ..Default::default()
        });
        name
    }
    fn init_i64(&mut self, data: Vec<i64>) -> String {
        let name = self.name("s");
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: 7,
            int64_data: data,
            ..Default::default()
        });
        name
    }
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        out: Option<&str>,
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        let o = out.map_or_else(|| self.name("t"), str::to_owned);
        let name = self.name(op);
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![o.clone()],
            attribute: attrs,
            ..Default::default()
        });
        o
    }
    /// Gemm x[1,i] · W[i,o] + b.
    #[allow(clippy::too_many_arguments)]
    fn fc(
        &mut self,
        x: &str,
        i: usize,
        o: usize,
        rng: &mut Rng,
        scale: f32,
        bias: Option<Vec<f32>>,
        out: Option<&str>,
    ) -> String {
        let s = scale / (i as f32).sqrt();
        let w = self.init(&[i, o], (0..i * o).map(|_| rng.next() * s).collect());
        let b = self.init(
            &[o],
            bias.unwrap_or_else(|| (0..o).map(|_| rng.next() * 0.1).collect()),
        );
        self.node("Gemm", &[x, &w, &b], out, vec![])
    }
    fn model(
        self,
        inputs: Vec<pb::ValueInfoProto>,
        outputs: Vec<pb::ValueInfoProto>,
        agent: &str,
    ) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            producer_name: "marllb-ctrl-tests".into(),
            graph: Some(pb::GraphProto {
                name: "policy".into(),
                node: self.nodes,
                initializer: self.inits,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            metadata_props: vec![pb::StringStringEntryProto {
                key: "marllb.agent".into(),
                value: agent.into(),
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// Bias of the last layer that makes every backend pick level `prefer`
/// (strongly), or random when `None`.
fn level_bias(backends: usize, prefer: Option<usize>, rng: &mut Rng) -> Vec<f32> {
    (0..backends * LEVELS.len())
        .map(|k| match prefer {
            Some(p) if k % LEVELS.len() == p => 50.0,
            Some(_) => -50.0,
            None => rng.next(),
        })
        .collect()
}

/// Sidecar for `backends` backends.
pub fn meta(backends: usize, hidden: Option<usize>, agent: &str) -> PolicyMeta {
    let f = FEATURES.len();
    let mut inputs = vec![TensorSpec {
        name: "obs".into(),
        shape: vec![1, backends * f],
    }];
    let mut outputs = vec![TensorSpec {
        name: "action".into(),
        shape: vec![1, backends * LEVELS.len()],
    }];
    if let Some(h) = hidden {
        inputs.push(TensorSpec {
            name: "h_in".into(),
            shape: vec![1, 1, h],
        });
        outputs.push(TensorSpec {
            name: "h_out".into(),
            shape: vec![1, 1, h],
        });
    }
    PolicyMeta {
        format: FORMAT.into(),
        agent: agent.into(),
        backends,
        features: FEATURES.to_vec(),
        normalization: Normalization {
            mean: vec![0.0; f],
            std: vec![1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 1.0],
        },
        inputs,
        outputs,
        hidden: hidden.map(|size| HiddenSpec {
            input: "h_in".into(),
            output: "h_out".into(),
            size,
        }),
        action: ActionSpec::Discrete {
            levels: LEVELS.to_vec(),
        },
        step_ms: 200,
    }
}

/// Gemm+Relu+Gemm; `prefer` forces a level.
pub fn mlp(
    backends: usize,
    width: usize,
    prefer: Option<usize>,
    seed: u64,
) -> (Vec<u8>, PolicyMeta) {
    let mut rng = Rng(seed);
    let mut g = G::default();
    let i = backends * FEATURES.len();
    let o = backends * LEVELS.len();
    let h = g.fc("obs", i, width, &mut rng, 1.0, None, None);
    let h = g.node("Relu", &[&h], None, vec![]);
    let scale = if prefer.is_some() { 0.01 } else { 1.0 };
    let bias = level_bias(backends, prefer, &mut rng);
    g.fc(&h, width, o, &mut rng, scale, Some(bias), Some("action"));
    let bytes = g.model(
        vec![vi("obs", &[1, i])],
        vec![vi("action", &[1, o])],
        "sac-gru",
    );
    (bytes, meta(backends, None, "sac-gru"))
}

/// 2 FC + GRU (one step, hidden in and out) + 2 FC.
pub fn gru(
    backends: usize,
    hidden: usize,
    prefer: Option<usize>,
    seed: u64,
) -> (Vec<u8>, PolicyMeta) {
    let mut rng = Rng(seed);
    let mut g = G::default();
    let i = backends * FEATURES.len();
    let o = backends * LEVELS.len();
    let x = g.fc("obs", i, hidden, &mut rng, 1.0, None, None);
    let x = g.node("Relu", &[&x], None, vec![]);
    let x = g.fc(&x, hidden, hidden, &mut rng, 1.0, None, None);
    let x = g.node("Relu", &[&x], None, vec![]);
    let shape3 = g.init_i64(vec![1, 1, hidden as i64]);
    let x = g.node("Reshape", &[&x, &shape3], None, vec![]);
    let s = 1.0 / (hidden as f32).sqrt();
    let w = g.init(
        &[1, 3 * hidden, hidden],
        (0..3 * hidden * hidden).map(|_| rng.next() * s).collect(),
    );
    let r = g.init(
        &[1, 3 * hidden, hidden],
        (0..3 * hidden * hidden).map(|_| rng.next() * s).collect(),
    );
    let b = g.init(
        &[1, 6 * hidden],
        (0..6 * hidden).map(|_| rng.next() * 0.1).collect(),
    );
    let hs = pb::AttributeProto {
        name: "hidden_size".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: hidden as i64,
        ..Default::default()
    };
    g.nodes.push(pb::NodeProto {
        op_type: "GRU".into(),
        name: "gru".into(),
        input: vec![x, w, r, b, String::new(), "h_in".into()],
        output: vec!["gru_y".into(), "h_out".into()],
        attribute: vec![hs],
        ..Default::default()
    });
    let shape2 = g.init_i64(vec![1, hidden as i64]);
    let y = g.node("Reshape", &["h_out", &shape2], None, vec![]);
    let y = g.fc(&y, hidden, hidden, &mut rng, 1.0, None, None);
    let y = g.node("Relu", &[&y], None, vec![]);
    let scale = if prefer.is_some() { 0.01 } else { 1.0 };
    let bias = level_bias(backends, prefer, &mut rng);
    g.fc(&y, hidden, o, &mut rng, scale, Some(bias), Some("action"));
    let bytes = g.model(
        vec![vi("obs", &[1, i]), vi("h_in", &[1, 1, hidden])],
        vec![vi("action", &[1, o]), vi("h_out", &[1, 1, hidden])],
        "sac-gru",
    );
    (bytes, meta(backends, Some(hidden), "sac-gru"))
}

/// An MLP whose outputs are sqrt(limit - Σobs): finite for an idle service
/// (the probe), NaN once the observation sums above `limit`.
pub fn nan_when_busy(backends: usize, limit: f32) -> (Vec<u8>, PolicyMeta) {
    let mut g = G::default();
    let i = backends * FEATURES.len();
    let o = backends * LEVELS.len();
    let w = g.init(&[i, o], vec![1.0; i * o]);
    let b = g.init(&[o], vec![0.0; o]);
    let s = g.node("Gemm", &["obs", &w, &b], None, vec![]);
    let c = g.init(&[1], vec![limit]);
    let d = g.node("Sub", &[&c, &s], None, vec![]);
    g.node("Sqrt", &[&d], Some("action"), vec![]);
    let bytes = g.model(
        vec![vi("obs", &[1, i])],
        vec![vi("action", &[1, o])],
        "sac-gru",
    );
    (bytes, meta(backends, None, "sac-gru"))
}

/// An MLP whose outputs are always NaN (refused by the probe).
pub fn always_nan(backends: usize) -> (Vec<u8>, PolicyMeta) {
    nan_when_busy(backends, -1.0e6)
}

/// Writes the model and its sidecar atomically (temporary files, then rename;
/// the sidecar first).
pub fn write(path: &Path, model: &[u8], meta: &PolicyMeta) {
    let side = PolicyMeta::sidecar_of(path);
    let tmp = side.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(meta).unwrap()).unwrap();
    std::fs::rename(&tmp, &side).unwrap();
    let tmp = path.with_extension("onnx.tmp");
    std::fs::write(&tmp, model).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
