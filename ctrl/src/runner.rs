//! The cycle loop and model hot reload.
//!
//! # Reload
//!
//! A reload is requested by SIGHUP or when the model file or its sidecar
//! changes (size or mtime, checked once per cycle: two `stat` calls). The new
//! model is loaded, optimized and probed on a loader thread, so cycles keep
//! their period meanwhile; the cycle that follows the load installs it (its
//! recurrent state starts at zero) or, if it was refused, logs why, counts it in
//! `marllb_model_reloads_total{result="refused"}` and keeps the old policy.
//! Replace a model atomically (write a new file, then `rename`) — a half-written
//! file is refused and picked up again when its mtime next changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::bgp::Announcer;
use crate::cycle::ControlState;
use crate::metrics::Metrics;
use crate::model::{Loaded, ModelError, Policy};

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches a model and its sidecar.
#[derive(Debug)]
pub struct Watch {
    model: PathBuf,
    sidecar: PathBuf,
    last: (Stamp, Stamp),
}

impl Watch {
    /// Starts from the files' current state.
    pub fn new(model: &Path) -> Self {
        let sidecar = marllb_policy::PolicyMeta::sidecar_of(model);
        let last = (stamp(model), stamp(&sidecar));
        Watch {
            model: model.into(),
            sidecar,
            last,
        }
    }

    /// `true` once each time either file changed (and both exist).
    pub fn changed(&mut self) -> bool {
        let now = (stamp(&self.model), stamp(&self.sidecar));
        if now == self.last {
            return false;
        }
        self.last = now;
        now.0.is_some() && now.1.is_some()
    }
}

/// Loads models off the cycle thread.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    tx: Option<Sender<PathBuf>>,
    rx: Receiver<Result<Loaded, ModelError>>,
    pending: bool,
    again: bool,
    watch: Watch,
    handle: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Starts the loader thread for `path` (checked against `backends`).
    pub fn start(path: &Path, backends: usize) -> std::io::Result<Self> {
        let (tx, req) = mpsc::channel::<PathBuf>();
        let (res, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || {
                for p in req {
                    if res.send(Loaded::load(&p, Some(backends))).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Reloader {
            path: path.into(),
            tx: Some(tx),
            rx,
            pending: false,
            again: false,
            watch: Watch::new(path),
            handle: Some(handle),
        })
    }

    /// Asks for a reload (coalesced while one is in flight).
    pub fn request(&mut self) {
        if self.pending {
            self.again = true;
            return;
        }
        if let Some(tx) = &self.tx {
            self.pending = tx.send(self.path.clone()).is_ok();
        }
    }

    /// Per cycle: installs a finished load or records its refusal, then asks for
    /// a reload on SIGHUP (`hup`) or a file change.
    pub fn tick(&mut self, control: &mut ControlState<'_>, metrics: &Metrics, hup: bool) {
        match self.rx.try_recv() {
            Ok(r) => {
                self.pending = false;
                match r {
                    Ok(loaded) => {
                        tracing::info!(model = %self.path.display(), agent = %loaded.meta().agent, "model reloaded");
                        metrics.reload(true);
                        control.install(Policy::new(loaded));
                    }
                    Err(e) => {
                        tracing::error!(model = %self.path.display(), error = %e, "new model refused; keeping the current policy");
                        metrics.reload(false);
                    }
                }
                if std::mem::take(&mut self.again) {
                    self.request();
                }
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => self.pending = false,
        }
        let changed = self.watch.changed();
        if hup || changed {
            tracing::info!(model = %self.path.display(), signal = hup, "reloading the model");
            self.request();
        }
    }

    /// `true` while a load is in flight.
    pub fn pending(&self) -> bool {
        self.pending
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs cycles every `interval` until `stop` is set. SIGHUP sets `hup`.
/// Operator requests (the runtime API) are applied before a cycle and
/// answered once it has published them; `policy set` may replace `reloader`.
#[allow(clippy::too_many_arguments)]
pub fn run_loop(
    control: &mut ControlState<'_>,
    reloader: &mut Option<Reloader>,
    mut operator: Option<&mut crate::server::Operator>,
    mut bgp: Option<&mut Bgp>,
    interval: Duration,
    metrics: &Metrics,
    stop: &AtomicBool,
    hup: &AtomicBool,
) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let h = hup.swap(false, Ordering::Relaxed);
        match reloader.as_mut() {
            Some(r) => r.tick(control, metrics, h),
            None if h => tracing::info!("SIGHUP: no model configured, nothing to reload"),
            None => {}
        }
        let taken = match operator.as_deref_mut() {
            Some(op) => op.take(control, reloader),
            None => Vec::new(),
        };
        let now = Instant::now();
        control.step(now);
        if let Some(op) = operator.as_deref_mut() {
            op.answer(control, taken);
        }
        if let Some(b) = bgp.as_deref_mut() {
            b.cycle(control, metrics, now);
        }
        next += interval;
        let after = Instant::now();
        if after > next {
            let missed = (after - next).as_nanos() / interval.as_nanos().max(1) + 1;
            metrics.missed_ticks.inc_by(missed as u64);
            next = after + interval;
        }
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
        }
    }
}

/// The BGP announcement of this node's VIPs, as the cycle drives it.
#[derive(Debug)]
pub struct Bgp {
    /// The state machine and its BIRD link.
    pub announcer: Announcer,
    /// The VIPs announced (for `marllb_bgp_announced{vip}`).
    pub vips: Vec<String>,
}

impl Bgp {
    /// After a cycle: whether the node can serve decides the announcement.
    pub fn cycle(&mut self, control: &ControlState<'_>, metrics: &Metrics, now: Instant) {
        let dp_timeout = self.announcer.settings().dp_timeout;
        self.announcer.cycle(control.can_serve(dp_timeout), now);
        let v = i64::from(self.announcer.announced() && self.announcer.in_sync());
        for vip in &self.vips {
            metrics
                .bgp_announced
                .get_or_create(&crate::metrics::VipLabels { vip: vip.clone() })
                .set(v);
        }
    }
}

/// Shared flags set by the signal handlers.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// SIGINT / SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP.
    pub hup: Arc<AtomicBool>,
}
