//! # marllb-sim
//!
//! The MARLLB simulator: clients, LB nodes that use marllb-core's selection and
//! telemetry, and Apache-like processor-sharing servers; the baselines, the
//! SAC-GRU and QMIX agents (candle), their training, ONNX export (tract-onnx's
//! protobuf types) and evaluation with tract-onnx, the controller's runtime.

pub mod engine;
pub mod es;
pub mod eval;
pub mod learner;
pub mod nets;
pub mod onnx;
pub mod scenario;
pub mod server;
pub mod suite;
pub mod train;
pub mod workload;

pub use engine::{
    jain, parse_servers, Conditions, Linger, Packets, Sim, SimConfig, Stats, BASELINES,
};
pub use server::{ServerModel, ServerSpec};
pub use workload::Workload;
