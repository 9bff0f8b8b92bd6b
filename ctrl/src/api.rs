//! The runtime API's protocol: what `marllb-ctl` and the controller say to
//! each other over the controller's Unix socket.
//!
//! One request per connection: the client writes one JSON object and a
//! newline, the controller answers with one JSON object and a newline, then
//! closes. Requests are tagged by `cmd`:
//!
//! ```text
//! {"cmd":"show","what":"backends"}                 what: backends|vips|flows|policy|health
//! {"cmd":"backend","op":"drain","name":"198.18.1.2"} op: drain|undrain|down|up
//! {"cmd":"add","address":"198.18.2.104:80","mac":"02:00:00:00:02:04","weight":1.0}
//! {"cmd":"remove","name":"198.18.2.104"}
//! {"cmd":"weight","name":"198.18.1.2","weight":1.5}  weight: null clears the cap
//! {"cmd":"policy","agent":"sed"}                     agent: a --agent name
//! {"cmd":"policy","agent":"es","model":"/m/es.onnx"}
//! {"cmd":"model-reload"}
//! ```
//!
//! Answers: `{"ok":true,"message":"...","epoch":N,"data":...}` or
//! `{"ok":false,"error":"..."}`. A change is applied by the next control
//! cycle; the answer is sent after that cycle has published it, and `epoch` is
//! the weights epoch that carries it. An `add` or `remove` is answered once the
//! data plane has applied (or refused) the new backend set. A backend is named
//! by its address or its index in the data plane's table.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::operator::OpAdmin;

/// Largest request the controller reads, bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What `show` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ShowWhat {
    /// Every backend: address, admin, health, weight, cap, active flows.
    Backends,
    /// The VIPs the data plane serves.
    Vips,
    /// The agent, its model and the cycle.
    Policy,
    /// Health checks: state and counts per backend.
    Health,
    /// Flows per backend: active, half-open, new, timeouts, durations (the
    /// per-connection table lives in the data plane: `vppctl show lb rl
    /// flows`, or marllb-dpdk's exit stats).
    Flows,
}

/// An admin operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AdminOp {
    /// No new flows; established flows finish on it.
    Drain,
    /// Back to taking new flows after a drain.
    Undrain,
    /// No new flows; established flows are re-placed.
    Down,
    /// Back to taking new flows after a down.
    Up,
}

impl AdminOp {
    /// The override it leaves (given the current one).
    pub fn apply(self, cur: OpAdmin) -> OpAdmin {
        match self {
            Self::Drain => OpAdmin::Drain,
            Self::Down => OpAdmin::Down,
            Self::Undrain if cur == OpAdmin::Drain => OpAdmin::None,
            Self::Up if cur == OpAdmin::Down => OpAdmin::None,
            Self::Undrain | Self::Up => cur,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Undrain => "undrain",
            Self::Down => "down",
            Self::Up => "up",
        }
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Read-only views.
    Show {
        /// Which.
        what: ShowWhat,
    },
    /// Admin state of one backend.
    Backend {
        /// Operation.
        op: AdminOp,
        /// Address or index.
        name: String,
        /// Allow leaving no backend that takes new flows.
        #[serde(default)]
        force: bool,
    },
    /// Weight cap of one backend (`None` clears it).
    Weight {
        /// Address or index.
        name: String,
        /// Cap, real units (1.0 = a configured weight of one).
        weight: Option<f32>,
    },
    /// Switches the agent (and its model).
    Policy {
        /// `--agent` name.
        agent: String,
        /// Model for a learned agent; default: the current model.
        #[serde(default)]
        model: Option<PathBuf>,
    },
    /// Reloads the current model from its file.
    ModelReload,
    /// Adds a backend to the set the data plane serves.
    Add {
        /// `ADDR` or `ADDR:PORT` (`[V6]:PORT`); the port is the health check's.
        address: String,
        /// MAC the data plane sends to; default: the MAC every served backend
        /// shares (a next hop), refused when they differ.
        #[serde(default)]
        mac: Option<String>,
        /// Configured weight, real units; default 1.
        #[serde(default)]
        weight: Option<f32>,
        /// Add it even if one health check of it fails now.
        #[serde(default)]
        force: bool,
    },
    /// Removes a backend from the set (drain it first, or take it down).
    Remove {
        /// Address or index.
        name: String,
        /// Remove it even if it still has active flows (they are re-placed).
        #[serde(default)]
        force: bool,
    },
}

/// An answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Accepted (or shown).
    pub ok: bool,
    /// What was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Weights epoch that carries the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Shown data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    /// A refusal.
    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// An acceptance.
    pub fn done(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// One backend in `show backends`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendRow {
    /// Index in the data plane's table.
    pub index: usize,
    /// Address.
    pub address: String,
    /// Admin state published: active, draining, down.
    pub admin: String,
    /// Operator override.
    pub operator: OpAdmin,
    /// Health (active and passive checks).
    pub healthy: bool,
    /// Weight published (real units).
    pub weight: f64,
    /// Operator's weight cap.
    pub weight_cap: Option<f32>,
    /// Configured (base) weight.
    pub base_weight: f64,
    /// Active flows, summed over workers.
    pub active_flows: u32,
    /// New flows in the last cycle.
    pub new_flows: u64,
}

/// One VIP in `show vips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRow {
    /// Address.
    pub address: String,
    /// Port (0: any).
    pub port: u16,
    /// Protocol (tcp, udp, any).
    pub proto: String,
    /// Selection method number (`marllb_core::select::Method`).
    pub method: u8,
    /// Encapsulation number (`marllb_core::rewrite::Encap`).
    pub encap: u8,
}

/// `show policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Agent asked for.
    pub agent: String,
    /// Agent computing the weights now (the fallback while a learned agent has
    /// no usable model).
    pub active: String,
    /// Model file.
    pub model: Option<String>,
    /// Backends the model serves (its sidecar).
    pub model_backends: Option<usize>,
    /// Last weights epoch.
    pub epoch: u64,
    /// Cycles run.
    pub cycles: u64,
    /// Cycle period, ms.
    pub interval_ms: u64,
    /// The state file (`None`: not persisted).
    pub state_file: Option<String>,
}

/// One backend in `show flows`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    /// Index.
    pub index: usize,
    /// Address.
    pub address: String,
    /// Established flows now, summed over workers.
    pub active: u32,
    /// Half-open flows (SYN sent, handshake not completed) now.
    pub half_open: u32,
    /// New flows in the last cycle.
    pub new_last_cycle: u64,
    /// New flows since the data plane started.
    pub new_total: u64,
    /// Handshakes that timed out since the data plane started.
    pub handshake_timeouts: u64,
    /// Mean and 95th percentile flow duration in the last window, ms.
    pub duration_ms: Option<(f64, f64)>,
    /// Mean and 95th percentile flow completion time in the last window, ms.
    pub fct_ms: Option<(f64, f64)>,
}

/// One backend in `show health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRow {
    /// Index.
    pub index: usize,
    /// Address.
    pub address: String,
    /// Active checks say up.
    pub active_up: bool,
    /// Up after the active and passive checks.
    pub healthy: bool,
    /// Active checks run.
    pub checks_run: u64,
    /// Active checks failed.
    pub checks_failed: u64,
}

/// Why a call failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Socket I/O.
    #[error("{path}: {source}")]
    Io {
        /// Socket.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a JSON answer.
    #[error("{path}: bad answer: {source}")]
    Parse {
        /// Socket.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
}

/// Sends `req` to the controller at `socket` and returns its answer.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, CallError> {
    let io = |source| CallError::Io {
        path: socket.into(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| CallError::Parse {
        path: socket.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"backend","op":"drain","name":"198.18.1.2"}"#).unwrap();
        assert_eq!(
            r,
            Request::Backend {
                op: AdminOp::Drain,
                name: "198.18.1.2".into(),
                force: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"model-reload"}"#).unwrap();
        assert_eq!(r, Request::ModelReload);
        let r: Request =
            serde_json::from_str(r#"{"cmd":"weight","name":"1","weight":null}"#).unwrap();
        assert_eq!(
            r,
            Request::Weight {
                name: "1".into(),
                weight: None
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"cmd":"add","address":"198.18.2.104:80"}"#).unwrap();
        assert_eq!(
            r,
            Request::Add {
                address: "198.18.2.104:80".into(),
                mac: None,
                weight: None,
                force: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"remove","name":"3"}"#).unwrap();
        assert_eq!(
            r,
            Request::Remove {
                name: "3".into(),
                force: false
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"show","what":"conns"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"show","what":"vips","x":1}"#).is_err());
    }

    #[test]
    fn undrain_only_clears_a_drain() {
        assert_eq!(AdminOp::Undrain.apply(OpAdmin::Drain), OpAdmin::None);
        assert_eq!(AdminOp::Undrain.apply(OpAdmin::Down), OpAdmin::Down);
        assert_eq!(AdminOp::Up.apply(OpAdmin::Down), OpAdmin::None);
        assert_eq!(AdminOp::Up.apply(OpAdmin::Drain), OpAdmin::Drain);
    }
}
