//! Operator state: what an operator changed at run time (drains, downs, weight
//! caps, the agent and its model), kept apart from the configuration file and
//! persisted so a restarted controller re-applies it.
//!
//! The configuration file stays the starting point: at start the controller
//! takes the file's settings, then lays the state file over them. Backends are
//! keyed by address, not by index, so a state file written for one backend
//! list never applies an override to a different backend; entries for
//! addresses the data plane no longer serves are reported and ignored.
//!
//! The file is JSON, written atomically: a temporary file in the same
//! directory, `fsync`, `rename` over the old one, `fsync` of the directory. A
//! crash leaves either the old state or the new one, never a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// An operator's admin override of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpAdmin {
    /// No override: the backend takes new flows while healthy.
    #[default]
    None,
    /// Draining: no new flows; established flows continue to completion.
    Drain,
    /// Down: no new flows; established flows are re-placed on other backends.
    Down,
}

impl OpAdmin {
    /// `true` when the backend takes no new flows.
    pub fn blocks_new_flows(self) -> bool {
        !matches!(self, Self::None)
    }
}

/// One backend's overrides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendOverride {
    /// Admin override.
    #[serde(default)]
    pub admin: OpAdmin,
    /// Weight cap (real units; 1.0 = a configured weight of one): the policy's
    /// weight is clamped to it. `None`: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_cap: Option<f32>,
}

/// One backend of the set an operator changed with `backend add` / `backend
/// remove`, by index (indices are stable: a removed one keeps its place).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberState {
    /// Address.
    pub address: IpAddr,
    /// Health-check port (`None`: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// MAC the data plane sends to (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
    /// Configured (base) weight, real units.
    pub weight: f32,
    /// Removed: the index is kept, no longer served.
    #[serde(default)]
    pub removed: bool,
}

/// Everything an operator changed, as persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Overrides by backend address: an entry replaces the configuration for
    /// that backend (`admin: none` undoes the file's `drain`).
    #[serde(default)]
    pub backends: BTreeMap<IpAddr, BackendOverride>,
    /// Agent chosen with `policy set` (its command-line name); `None`: the
    /// configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Model chosen with `policy set --model`; `None`: the configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The backend set by index once an operator added or removed a backend
    /// (empty: the configuration's backends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a valid state file.
    #[error("{path}: not a valid operator state file: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// Written by a newer controller.
    #[error("{path}: state version {found}, this controller reads {STATE_VERSION}")]
    Version {
        /// File.
        path: PathBuf,
        /// Found.
        found: u32,
    },
}

impl OperatorState {
    /// An empty state.
    pub fn new() -> Self {
        Self {
            version: STATE_VERSION,
            ..Self::default()
        }
    }

    /// Reads `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let s: Self = serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.into(),
            source,
        })?;
        if s.version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.into(),
                found: s.version,
            });
        }
        Ok(s)
    }

    /// Writes `path` atomically (temporary file, fsync, rename, fsync of the
    /// directory).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.into(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| io(e.into()))?;
        text.push('\n');
        let r = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = std::env::temp_dir().join(format!("marllb-opstate-{}", std::process::id()));
        let path = dir.join("state.json");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(OperatorState::load(&path).unwrap(), OperatorState::new());
        let mut s = OperatorState::new();
        let a: IpAddr = "198.18.1.2".parse().unwrap();
        s.backends.insert(
            a,
            BackendOverride {
                admin: OpAdmin::Drain,
                weight_cap: Some(1.5),
            },
        );
        s.agent = Some("sed".into());
        s.members.push(MemberState {
            address: "198.18.2.103".parse().unwrap(),
            port: Some(8080),
            mac: "02:00:00:00:02:03".into(),
            weight: 2.0,
            removed: false,
        });
        s.save(&path).unwrap();
        assert_eq!(OperatorState::load(&path).unwrap(), s);
        s.backends.insert(a, BackendOverride::default());
        s.save(&path).unwrap();
        assert_eq!(OperatorState::load(&path).unwrap(), s);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("marllb-opstate-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        std::fs::write(&path, "{\"version\":1,\"backends\":{\"x\":{}}}").unwrap();
        let e = OperatorState::load(&path).unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
        std::fs::write(&path, "{\"version\":9}").unwrap();
        let e = OperatorState::load(&path).unwrap_err().to_string();
        assert!(e.contains("state version 9"), "{e}");
        std::fs::write(
            &path,
            "{\"version\":1,\"backends\":{\"198.18.1.2\":{\"admin\":\"gone\"}}}",
        )
        .unwrap();
        assert!(OperatorState::load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
