//! The controller's side: publishing weights, heartbeating, reading stats.

use marllb_core::service::AdminState;
use marllb_core::{Weight, MAX_BACKENDS};
use zerocopy::{FromZeros, IntoBytes};

use crate::dataplane::backend_offset;
use crate::layout::{
    BackendEntry, BackendSetFrame, ConfigImage, ControlBlock, StatsFrame, StatsHead, WeightsFrame,
    MAX_WEIGHT,
};
use crate::region::RegionView;
use crate::seqlock::{self, ReadError};
use crate::sync::Ordering;

/// Why the controller refused to publish (nothing was written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// `weights` or `admin` does not have one entry per configured backend.
    Length {
        /// Entries given.
        got: usize,
        /// Configured backends.
        expected: usize,
    },
    /// A weight is above [`MAX_WEIGHT`].
    WeightTooLarge {
        /// Backend.
        index: usize,
        /// Weight.
        value: Weight,
    },
    /// Every backend that is not down has weight 0.
    AllZero,
}

impl core::fmt::Display for PublishError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Length { got, expected } => {
                write!(f, "{got} weights given, {expected} backends configured")
            }
            Self::WeightTooLarge { index, value } => {
                write!(
                    f,
                    "weight {value:#x} of backend {index} is above the maximum {MAX_WEIGHT:#x}"
                )
            }
            Self::AllZero => f.write_str("every backend that is not down has weight 0"),
        }
    }
}

/// Why a stats read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsError {
    /// No such worker.
    NoWorker(u32),
    /// The lock: busy or torn after every try, or nothing published yet.
    Read(ReadError),
}

impl core::fmt::Display for StatsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoWorker(w) => write!(f, "no worker {w} in the region"),
            Self::Read(e) => write!(f, "stats read failed: {e}"),
        }
    }
}

/// The controller's end of the region.
#[derive(Debug)]
pub struct Controller<'r> {
    view: RegionView<'r>,
    frame: WeightsFrame,
    epoch: u64,
    /// Backend indices the weights frames and stats reads cover.
    n: usize,
    set: BackendSetFrame,
}

/// The data plane's answer to the backend sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAnswer {
    /// Version of the last set it serves (0: its configuration).
    pub applied: u64,
    /// Version of the last set it refused (0: none), and why
    /// ([`crate::backend_set::SetRefusal::describe`]).
    pub refused: u64,
    /// Refusal code.
    pub reason: u64,
}

impl<'r> Controller<'r> {
    /// The controller of `view`; records `pid` in the control block.
    pub fn new(view: RegionView<'r>, pid: u32) -> Self {
        view.fixed
            .control
            .controller_pid
            .store(u64::from(pid), Ordering::Relaxed);
        let mut c = Controller {
            view,
            frame: WeightsFrame::zeroed(),
            epoch: 0,
            n: view.geometry.backends(),
            set: BackendSetFrame::new_zeroed(),
        };
        // A data plane that applied a set (from a previous controller) serves
        // its count of indices.
        if let Some(f) = c.served_set() {
            c.n = f.entries().len().max(c.n);
            c.set = f;
        }
        c
    }

    /// Backend indices the weights cover (the configuration's, or those of
    /// the last backend set the data plane applied).
    pub fn backends(&self) -> usize {
        self.n
    }

    /// Weights, admin states and stats reads cover `n` backends from now on
    /// (clamped to the capacity): after a set that adds one was written.
    pub fn set_backends(&mut self, n: usize) {
        self.n = n.min(MAX_BACKENDS);
    }

    /// The backend set the data plane serves, if it applied one: the frame in
    /// the block when its version is the applied one.
    pub fn served_set(&self) -> Option<BackendSetFrame> {
        let b = &self.view.fixed.backend_set;
        let applied = b.applied_version.load(Ordering::Acquire);
        if applied == 0 {
            return None;
        }
        let mut f = BackendSetFrame::new_zeroed();
        seqlock::read_bounded(&b.seq, &b.words, f.as_mut_bytes(), 64).ok()?;
        (f.version == applied && f.checksum == f.compute_checksum()).then_some(f)
    }

    /// Writes a backend set (`entries` by global index; see
    /// [`crate::backend_set`]) with a version above any the data plane saw;
    /// returns it. The data plane answers in [`Controller::set_answer`].
    pub fn publish_set(&mut self, entries: &[BackendEntry]) -> Result<u64, PublishError> {
        if entries.is_empty() || entries.len() > MAX_BACKENDS {
            return Err(PublishError::Length {
                got: entries.len(),
                expected: MAX_BACKENDS,
            });
        }
        let a = self.set_answer();
        let version = self.set.version.max(a.applied).max(a.refused) + 1;
        let f = &mut self.set;
        f.version = version;
        f.count = entries.len() as u32;
        f.backends[..entries.len()].copy_from_slice(entries);
        f.backends[entries.len()..].fill(BackendEntry::default());
        f.seal();
        let b = &self.view.fixed.backend_set;
        seqlock::write(&b.seq, &b.words, self.set.as_bytes());
        Ok(version)
    }

    /// What the data plane answered to the sets written.
    pub fn set_answer(&self) -> SetAnswer {
        let b = &self.view.fixed.backend_set;
        SetAnswer {
            applied: b.applied_version.load(Ordering::Acquire),
            refused: b.refused_version.load(Ordering::Acquire),
            reason: b.refused_reason.load(Ordering::Relaxed),
        }
    }

    /// The region.
    pub fn view(&self) -> &RegionView<'r> {
        &self.view
    }

    fn control(&self) -> &'r ControlBlock {
        &self.view.fixed.control
    }

    /// Publishes one weight vector (Q16.16, at most [`MAX_WEIGHT`]) and admin
    /// state per configured backend under a new epoch, which it returns.
    pub fn publish(
        &mut self,
        weights: &[Weight],
        admin: &[AdminState],
    ) -> Result<u64, PublishError> {
        let n = self.n;
        if weights.len() != n || admin.len() != n {
            return Err(PublishError::Length {
                got: weights.len().min(admin.len()),
                expected: n,
            });
        }
        if let Some((index, &value)) = weights.iter().enumerate().find(|(_, &w)| w > MAX_WEIGHT) {
            return Err(PublishError::WeightTooLarge { index, value });
        }
        let live = weights
            .iter()
            .zip(admin)
            .any(|(&w, &a)| a != AdminState::Down && w > 0);
        let all_down = admin.iter().all(|&a| a == AdminState::Down);
        if !live && !all_down {
            return Err(PublishError::AllZero);
        }
        self.epoch += 1;
        let f = &mut self.frame;
        f.epoch = self.epoch;
        f.count = n as u32;
        f.weights[..n].copy_from_slice(weights);
        f.weights[n..].fill(0);
        for (d, a) in f.admin.iter_mut().zip(admin) {
            *d = *a as u8;
        }
        f.admin[n..].fill(0);
        f.seal();
        let c = self.control();
        seqlock::write(&c.seq, &c.words, self.frame.as_bytes());
        Ok(self.epoch)
    }

    /// Publishes a frame exactly as given (no checks, no sealing): for tests of
    /// the data plane's validation, and for tools.
    pub fn publish_raw(&self, frame: &WeightsFrame) -> u64 {
        seqlock::write(&self.control().seq, &self.control().words, frame.as_bytes())
    }

    /// Stores the controller heartbeat: any value that differs from the last one
    /// (its monotonic clock in ns). Call every cycle, weights changed or not.
    pub fn heartbeat(&self, value: u64) {
        self.control()
            .controller_heartbeat
            .store(value, Ordering::Release);
    }

    /// Reads worker `w`'s latest frame into `out` (head and the configured
    /// backends; the rest of `out` is untouched), up to `tries` attempts.
    /// Returns the lock sequence.
    pub fn read_stats(&self, w: u32, out: &mut StatsFrame, tries: u32) -> Result<u64, StatsError> {
        let block = self.view.worker(w).ok_or(StatsError::NoWorker(w))?;
        let n = self.n;
        let end = backend_offset(n);
        let bytes = out.as_mut_bytes();
        let dst = bytes.get_mut(..end).unwrap_or_default();
        let r = seqlock::read_bounded(&block.seq, &block.words, dst, tries)
            .map_err(StatsError::Read)?;
        // Never trust the writer's count.
        out.head.n_backends = out.head.n_backends.min(n as u32);
        Ok(r)
    }

    /// Reads only worker `w`'s head (cheap: the window number and counters).
    pub fn read_stats_head(&self, w: u32, tries: u32) -> Result<StatsHead, StatsError> {
        let block = self.view.worker(w).ok_or(StatsError::NoWorker(w))?;
        let mut head = StatsHead::default();
        seqlock::read_bounded(&block.seq, &block.words, head.as_mut_bytes(), tries)
            .map_err(StatsError::Read)?;
        head.n_backends = head.n_backends.min(MAX_BACKENDS as u32);
        Ok(head)
    }

    /// The configuration the data plane serves.
    pub fn config_into(&self, out: &mut ConfigImage) {
        self.view.config_into(out);
    }

    /// Data-plane heartbeat (its monotonic clock, ns; 0 = never).
    pub fn dp_heartbeat(&self) -> u64 {
        self.view.dp_heartbeat()
    }
}
