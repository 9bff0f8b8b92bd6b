//! ONNX export of the agent network (the simulator and the controller run it
//! with the one runner, `marllb_policy::model`).
//!
//! The exported graph is the one-step model the controller runs every cycle:
//! inputs `obs` [1, backends·features] and `h_in` [1, 128]; outputs `action`
//! [1, backends·levels] and `h_out` [1, 128]. Only standard operators (opset 13):
//! `Gemm` (transB = 1) for every linear layer, `Relu`, and the GRU cell
//! decomposed into per-gate `Gemm`s, `Sigmoid`, `Tanh`, `Mul`, `Add`, `Sub`:
//!
//! ```text
//! r  = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)
//! z  = σ(x W_iz^T + b_iz + h W_hz^T + b_hz)
//! n  = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn))     (linear_before_reset = 1)
//! h' = n + z ⊙ (h − n)                                    (= (1 − z) ⊙ n + z ⊙ h)
//! ```
//!
//! candle (like PyTorch) packs the gate rows r, z, n; they are split here by row
//! block, so the ONNX `GRU` operator's z, r, h order never comes into play.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_nn::VarMap;
use prost::Message;
use tract_onnx::pb;

use crate::nets::{param_names, HIDDEN};

pub(crate) fn tensor_proto(name: &str, dims: &[usize], data: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: data,
        ..Default::default()
    }
}

pub(crate) fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d as i64)),
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

pub(crate) fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}

pub(crate) fn gemm(x: &str, w: &str, b: &str, out: &str) -> pb::NodeProto {
    let mut n = node("Gemm", &[x, w, b], out);
    n.attribute.push(pb::AttributeProto {
        name: "transB".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    });
    n
}

/// Reads a variable as (dims, values).
fn var(vm: &VarMap, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let data = vm.data().lock().map_err(|_| anyhow!("poisoned var map"))?;
    let v = data
        .get(name)
        .ok_or_else(|| anyhow!("no variable {name}"))?;
    let t = v.as_tensor();
    Ok((t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
}

/// The ONNX model of the [`RecNet`](crate::nets::RecNet) stored in `vm` under `prefix`.
pub fn recnet_model(vm: &VarMap, prefix: &str, obs: usize, out: usize) -> Result<pb::ModelProto> {
    let names = param_names(prefix);
    let mut init = Vec::new();
    let mut add = |onnx_name: &str, var_name: &str| -> Result<()> {
        let (dims, data) = var(vm, var_name)?;
        init.push(tensor_proto(onnx_name, &dims, data));
        Ok(())
    };
    add("fc1_w", &names[0])?;
    add("fc1_b", &names[1])?;
    add("fc2_w", &names[2])?;
    add("fc2_b", &names[3])?;
    add("fc3_w", &names[8])?;
    add("fc3_b", &names[9])?;
    add("fc4_w", &names[10])?;
    add("fc4_b", &names[11])?;
    // GRU: split the packed r, z, n row blocks.
    let (wd, w_ih) = var(vm, &names[4])?;
    let (_, w_hh) = var(vm, &names[5])?;
    let (_, b_ih) = var(vm, &names[6])?;
    let (_, b_hh) = var(vm, &names[7])?;
    let h = HIDDEN;
    anyhow::ensure!(wd == [3 * h, h], "GRU weight shape {wd:?}");
    for (g, gate) in ["r", "z", "n"].iter().enumerate() {
        let rows = g * h..(g + 1) * h;
        init.push(tensor_proto(
            &format!("w_i{gate}"),
            &[h, h],
            w_ih[rows.start * h..rows.end * h].to_vec(),
        ));
        init.push(tensor_proto(
            &format!("w_h{gate}"),
            &[h, h],
            w_hh[rows.start * h..rows.end * h].to_vec(),
        ));
        init.push(tensor_proto(
            &format!("b_i{gate}"),
            &[h],
            b_ih[rows.clone()].to_vec(),
        ));
        init.push(tensor_proto(
            &format!("b_h{gate}"),
            &[h],
            b_hh[rows].to_vec(),
        ));
    }
    let nodes = vec![
        gemm("obs", "fc1_w", "fc1_b", "fc1"),
        node("Relu", &["fc1"], "a1"),
        gemm("a1", "fc2_w", "fc2_b", "fc2"),
        node("Relu", &["fc2"], "a2"),
        gemm("a2", "w_ir", "b_ir", "gi_r"),
        gemm("h_in", "w_hr", "b_hr", "gh_r"),
        gemm("a2", "w_iz", "b_iz", "gi_z"),
        gemm("h_in", "w_hz", "b_hz", "gh_z"),
        gemm("a2", "w_in", "b_in", "gi_n"),
        gemm("h_in", "w_hn", "b_hn", "gh_n"),
        node("Add", &["gi_r", "gh_r"], "pre_r"),
        node("Sigmoid", &["pre_r"], "r"),
        node("Add", &["gi_z", "gh_z"], "pre_z"),
        node("Sigmoid", &["pre_z"], "z"),
        node("Mul", &["r", "gh_n"], "r_gh_n"),
        node("Add", &["gi_n", "r_gh_n"], "pre_n"),
        node("Tanh", &["pre_n"], "n"),
        node("Sub", &["h_in", "n"], "h_minus_n"),
        node("Mul", &["z", "h_minus_n"], "z_h_minus_n"),
        node("Add", &["n", "z_h_minus_n"], "h_out"),
        gemm("h_out", "fc3_w", "fc3_b", "fc3"),
        node("Relu", &["fc3"], "a3"),
        gemm("a3", "fc4_w", "fc4_b", "action"),
    ];
    let graph = pb::GraphProto {
        name: "marllb_policy".into(),
        node: nodes,
        initializer: init,
        input: vec![value_info("obs", &[1, obs]), value_info("h_in", &[1, h])],
        output: vec![
            value_info("action", &[1, out]),
            value_info("h_out", &[1, h]),
        ],
        ..Default::default()
    };
    Ok(model(graph))
}

/// An opset-13 model around `graph`.
pub(crate) fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "marllb-sim".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    }
}

/// Writes the ONNX file of the network under `prefix` in `vm`.
pub fn export_recnet(vm: &VarMap, prefix: &str, obs: usize, out: usize, path: &Path) -> Result<()> {
    let model = recnet_model(vm, prefix, obs, out)?;
    std::fs::write(path, model.encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
