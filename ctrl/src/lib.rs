//! # marllb-ctrl
//!
//! The MARLLB controller: every cycle (200 ms by default) it reads the data
//! plane's per-worker statistics from the shared-memory region, builds the
//! policy's observation ([`marllb_policy::FeatureBuilder`], the same code the
//! simulator trains with), runs the ONNX policy with tract (or a heuristic),
//! maps the action to Q16.16 weights, lays health and admin state over them,
//! publishes them, heartbeats, and exports Prometheus metrics.
//!
//! * [`config`]: command line and `ctrl.toml`.
//! * [`model`]: loading, checking and running an ONNX policy.
//! * [`heuristic`]: the heuristic agents' weights.
//! * [`stats`]: reading and merging the workers' stats.
//! * [`health`]: active checks and the passive signal.
//! * [`cycle`]: one control cycle ([`cycle::ControlState`]: what it carries
//!   between cycles).
//! * [`runner`]: the cycle loop and hot reload.
//! * [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! * [`api`]: the runtime API's protocol; [`ctl`]: `marllb-ctl`'s command
//!   line (its grammar, requests, and arguments).
//! * [`operator`]: operator state and its state file.
//! * [`server`]: the runtime API's socket thread and its cycle-side handler.
//!
//! Feature `inference` (default) builds the ONNX runtime and the modules that
//! use it (`model`, `cycle`, `runner`) and the binary; without it the crate
//! is the configuration, agents, health and metrics code alone (the fuzz
//! targets of the configuration parser build it that way).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod bgp;
pub mod config;
pub mod ctl;
#[cfg(feature = "inference")]
pub mod cycle;
pub mod health;
pub mod heuristic;
pub mod metrics;
/// The ONNX runner, shared with the simulator (`marllb_policy::model`).
#[cfg(feature = "inference")]
pub use marllb_policy::model;
pub mod operator;
#[cfg(feature = "inference")]
pub mod runner;
#[cfg(feature = "inference")]
pub mod server;
pub mod stats;
