//! The seam to the controller. The main lcore calls a [`Control`] once per
//! period: it publishes the workers' telemetry and asks for new weights.
//!
//! # Contract
//!
//! * `publish_stats` gets one telemetry snapshot per worker (the window since the
//!   previous publication; counters are monotonic). It must not block for long:
//!   the main lcore also runs the weight updates.
//! * `poll_weights` returns `Some` only when something changed: weights (Q16.16,
//!   by backend index; shorter vectors leave the rest unchanged) and optionally
//!   admin states. A stale controller is the implementation's business: it may
//!   return the base weights as a fallback. Values are untrusted: the host
//!   clamps the lengths to the backend count.
//! * `close` is called once at shutdown after the last `publish_stats`.
//!
//! [`LocalControl`] is the stand-alone implementation: it publishes nothing
//! and reads weights from a TOML file (`--weights-file`) at start and again on
//! every SIGHUP. The shared-memory implementation (`marllb-shm`) plugs in here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use marllb_core::service::AdminState;
use marllb_core::telemetry::Telemetry;
use marllb_core::Weight;
use marllb_shm::layout::BackendEntry;
use serde::Deserialize;

use crate::config::{parse_admin, weight_q16};

/// New weights (and admin states) for the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightUpdate {
    /// Dynamic weights by backend index, Q16.16.
    pub weights: Vec<Weight>,
    /// Admin states by backend index (`None`: unchanged).
    pub admin: Option<Vec<AdminState>>,
}

/// What the main lcore needs from a controller connection.
pub trait Control {
    /// Publishes one snapshot per worker.
    fn publish_stats(&mut self, now_ns: u64, workers: &[&Telemetry]);
    /// New weights, if the controller changed them since the last call.
    fn poll_weights(&mut self, now_ns: u64) -> Option<WeightUpdate>;
    /// A new backend set from the controller (given once), by global index
    /// (see `marllb_shm::backend_set`); the host answers with
    /// [`Control::answer_backend_set`].
    fn take_backend_set(&mut self) -> Option<Vec<BackendEntry>> {
        None
    }
    /// Whether the host now serves the set [`Control::take_backend_set`] gave.
    fn answer_backend_set(&mut self, _built: bool) {}
    /// Marks the connection closed (the data plane is stopping).
    fn close(&mut self);
}

/// Why a weights file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Unreadable.
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// Bad TOML or unknown field.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A bad value.
    #[error("{field}: {msg}")]
    Field {
        /// The field.
        field: String,
        /// The problem.
        msg: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsFile {
    weights: Vec<f64>,
    admin: Option<Vec<String>>,
}

/// Parses a weights file: `weights = [1.0, 2.0, ...]` and optionally
/// `admin = ["active", "draining", "down", ...]`, by backend index.
pub fn parse_weights(text: &str, n_backends: usize) -> Result<WeightUpdate, WeightsError> {
    let f: WeightsFile = toml::from_str(text)?;
    if f.weights.len() > n_backends {
        return Err(WeightsError::Field {
            field: "weights".into(),
            msg: format!("{} values for {n_backends} backends", f.weights.len()),
        });
    }
    let weights = f
        .weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            weight_q16(w).ok_or_else(|| WeightsError::Field {
                field: format!("weights[{i}]"),
                msg: format!("{w} is not in [0, 65536)"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let admin = match f.admin {
        None => None,
        Some(list) => {
            if list.len() > n_backends {
                return Err(WeightsError::Field {
                    field: "admin".into(),
                    msg: format!("{} values for {n_backends} backends", list.len()),
                });
            }
            Some(
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        parse_admin(s).ok_or_else(|| WeightsError::Field {
                            field: format!("admin[{i}]"),
                            msg: format!("{s:?} is not active, draining or down"),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    Ok(WeightUpdate { weights, admin })
}

/// Stand-alone control: no stats consumer, weights from a file re-read on SIGHUP.
#[derive(Debug)]
pub struct LocalControl {
    file: Option<PathBuf>,
    n_backends: usize,
    reload: Arc<AtomicBool>,
    pending_first: bool,
    publications: u64,
}

impl LocalControl {
    /// A control that reads `file` now and on each SIGHUP (`reload` is the flag
    /// the SIGHUP handler sets).
    pub fn new(file: Option<PathBuf>, n_backends: usize, reload: Arc<AtomicBool>) -> Self {
        let pending_first = file.is_some();
        Self {
            file,
            n_backends,
            reload,
            pending_first,
            publications: 0,
        }
    }

    /// Number of `publish_stats` calls so far.
    pub fn publications(&self) -> u64 {
        self.publications
    }

    fn read(&self) -> Option<WeightUpdate> {
        let path = self.file.as_ref()?;
        let res = std::fs::read_to_string(path)
            .map_err(|e| WeightsError::Io(path.display().to_string(), e))
            .and_then(|t| parse_weights(&t, self.n_backends));
        match res {
            Ok(u) => Some(u),
            Err(e) => {
                // A bad file never stops the data plane: keep the current weights.
                eprintln!("control: weights file refused, weights unchanged: {e}");
                None
            }
        }
    }
}

impl Control for LocalControl {
    fn publish_stats(&mut self, _now_ns: u64, _workers: &[&Telemetry]) {
        self.publications += 1;
    }

    fn poll_weights(&mut self, _now_ns: u64) -> Option<WeightUpdate> {
        let hup = self.reload.swap(false, Ordering::AcqRel);
        if !(hup || self.pending_first) {
            return None;
        }
        self.pending_first = false;
        self.read()
    }

    fn close(&mut self) {}
}

/// Control through the controller's shared-memory region (`--shm NAME`): the
/// data plane created the region; every period it publishes one stats frame
/// per worker and polls the controller's weights, with marllb-shm's validation
/// and watchdog (equal weights over the backends not down when the controller's
/// heartbeat is stale; the controller's weights again when it returns).
#[derive(Debug)]
pub struct ShmControl<'r> {
    view: marllb_shm::RegionView<'r>,
    dp: marllb_shm::DataPlane<'r>,
    publishers: Vec<marllb_shm::StatsPublisher<'r>>,
    source: Option<marllb_shm::Source>,
    new_set: Option<Vec<BackendEntry>>,
}

impl<'r> ShmControl<'r> {
    /// The data plane's end of `region`, for `workers` stats blocks.
    pub fn new(region: &'r marllb_shm::ShmRegion, workers: u32, heartbeat_timeout_ns: u64) -> Self {
        let view = region.view();
        let dp = marllb_shm::DataPlane::new(
            &view,
            marllb_shm::DataPlaneConfig {
                heartbeat_timeout_ns,
                ..marllb_shm::DataPlaneConfig::default()
            },
        );
        let publishers = (0..workers)
            .filter_map(|w| marllb_shm::StatsPublisher::new(&view, w, 0))
            .collect();
        Self {
            view,
            dp,
            publishers,
            source: None,
            new_set: None,
        }
    }
}

impl Control for ShmControl<'_> {
    fn publish_stats(&mut self, now_ns: u64, workers: &[&Telemetry]) {
        let status = self.dp.status();
        for (p, t) in self.publishers.iter_mut().zip(workers) {
            p.publish(now_ns, t, &status);
        }
    }

    fn poll_weights(&mut self, now_ns: u64) -> Option<WeightUpdate> {
        let poll = self.dp.poll(now_ns);
        if self.source != Some(poll.source) {
            match poll.source {
                marllb_shm::Source::Controller => {
                    println!("control: following the controller's weights")
                }
                marllb_shm::Source::Fallback(why) => println!(
                    "control: watchdog fallback ({why:?}): equal weights over the backends not down"
                ),
            }
            self.source = Some(poll.source);
        }
        if let Some(set) = poll.backend_set {
            self.new_set = Some(set.entries().to_vec());
        }
        poll.changed.then(|| WeightUpdate {
            weights: poll.vector.weights().to_vec(),
            admin: Some(poll.vector.admin().to_vec()),
        })
    }

    fn take_backend_set(&mut self) -> Option<Vec<BackendEntry>> {
        self.new_set.take()
    }

    fn answer_backend_set(&mut self, built: bool) {
        self.dp.answer_set(if built { Ok(()) } else { Err(()) });
        let n = self.dp.backends();
        for p in &mut self.publishers {
            p.set_backends(n);
        }
    }

    fn close(&mut self) {
        self.view.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marllb_core::WEIGHT_ONE;

    #[test]
    fn weights_file() {
        let u = parse_weights("weights = [1.0, 0.5]\nadmin = [\"active\", \"down\"]", 3);
        assert_eq!(
            u.ok(),
            Some(WeightUpdate {
                weights: vec![WEIGHT_ONE, WEIGHT_ONE / 2],
                admin: Some(vec![AdminState::Active, AdminState::Down]),
            })
        );
        assert!(parse_weights("weights = [1, 2, 3, 4]", 3).is_err());
        assert!(parse_weights("weights = [-1.0]", 3).is_err());
        assert!(parse_weights("weights = [1.0]\nadmin = [\"gone\"]", 3).is_err());
        assert!(parse_weights("weight = [1.0]", 3).is_err());
    }
}
