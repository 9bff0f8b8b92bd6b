//! The data plane's side: reading the controller's weights under a watchdog,
//! and publishing each worker's stats.
//!
//! # Watchdog
//!
//! The data plane never waits for the controller. [`DataPlane::poll`] watches the
//! controller's heartbeat *change* on the data plane's own clock (so the two
//! processes need not share a clock). While the heartbeat changed within the
//! timeout (default 1 s) and a valid frame has been received, the controller's
//! last good weights are applied. Otherwise the **fallback policy** applies:
//! **equal weights over the backends not marked down** (admin states from the
//! controller's last good frame, or from the configuration before any). Not the
//! last good weights: a learned policy's weights answer the load of the moment
//! they were computed, which passes in a few cycles, and a controller that died
//! may have died producing them; equal weights over live backends is the
//! policy-free baseline that never sends new flows to a backend known down.
//! The fallback is flagged in [`WatchdogStats`] with its reason; entries and exits
//! are counted; the controller's weights resume as soon as its heartbeat
//! advances again (with its last good frame, or a newer one).
//!
//! # Weights reads
//!
//! A poll reads the weights only when the lock's sequence changed. A read is
//! retried up to `read_tries` times; if the writer is still busy or the read
//! torn, the poll keeps the last good weights, counts a contention event and
//! tries again next poll. A torn vector is never applied.

use marllb_core::service::{AdminState, Service};
use marllb_core::telemetry::Telemetry;
use marllb_core::MAX_BACKENDS;
use zerocopy::{FromZeros, IntoBytes};

use crate::backend_set::{check_set, from_config, served, SetRefusal};
use crate::layout::{
    BackendSetBlock, BackendSetFrame, BackendStats, ConfigImage, ControlBlock, HeaderBlock,
    StatsBlock, StatsFrame, StatsHead, ValidationStats, WatchdogStats, WeightsFrame,
    DEFAULT_STATS_INTERVAL_MS,
};
use crate::region::RegionView;
use crate::seqlock;
use crate::sync::Ordering;
use crate::validate::{admin_from_u8, validate_weights, WeightVector};

/// Why the fallback policy is applied (`WatchdogStats::fallback_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FallbackReason {
    /// Not in fallback.
    None = 0,
    /// No controller heartbeat seen yet.
    NoController = 1,
    /// The heartbeat has not changed for longer than the timeout.
    Stale = 2,
    /// The controller is alive but no valid frame has arrived yet.
    NoValidWeights = 3,
}

/// Where the applied weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The controller's last good frame.
    Controller,
    /// The fallback policy.
    Fallback(FallbackReason),
}

/// Data-plane settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// Fallback after the controller heartbeat has not changed for this long.
    pub heartbeat_timeout_ns: u64,
    /// Read attempts per poll before counting contention.
    pub read_tries: u32,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        DataPlaneConfig {
            heartbeat_timeout_ns: 1_000_000_000,
            read_tries: 8,
        }
    }
}

/// Watchdog and validation state, for the stats frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpStatus {
    /// Watchdog.
    pub watchdog: WatchdogStats,
    /// Validation.
    pub validation: ValidationStats,
}

/// What a poll decided.
#[derive(Debug)]
pub struct Poll<'a> {
    /// Where the weights come from.
    pub source: Source,
    /// `true` if `weights` differ from the previous poll's (re-apply them).
    pub changed: bool,
    /// Weights and admin states to apply, by global backend index.
    pub vector: &'a WeightVector,
    /// A new backend set that passed [`check_set`]: the host rebuilds its
    /// service from it and answers with [`DataPlane::answer_set`] (until then
    /// the data plane serves the previous set and reads no newer one).
    pub backend_set: Option<&'a BackendSetFrame>,
}

impl Poll<'_> {
    /// Applies the decision to a worker's service: admin states that changed,
    /// then the weights. Returns the number of VIPs left with no live backend.
    pub fn apply_to(&self, svc: &mut Service) -> usize {
        for (i, &a) in self.vector.admin().iter().enumerate() {
            let cur = svc.backend(i as u16).map(|b| b.admin);
            if cur.is_some_and(|c| c != a) {
                // Index is in range: `backend(i)` just returned it.
                let _ = svc.set_admin(i as u16, a);
            }
        }
        svc.set_weights(self.vector.weights())
    }
}

/// The data plane's end of the control block (held by the main lcore).
#[derive(Debug)]
pub struct DataPlane<'r> {
    header: &'r HeaderBlock,
    control: &'r ControlBlock,
    cfg: DataPlaneConfig,
    scratch: WeightsFrame,
    good: WeightVector,
    have_good: bool,
    fallback: WeightVector,
    last_seq: u64,
    last_hb: u64,
    hb_changed_at: Option<u64>,
    source: Source,
    dirty: bool,
    status: DpStatus,
    set_block: &'r BackendSetBlock,
    /// The set served now (from the configuration until a set is applied).
    served: BackendSetFrame,
    /// A set read and checked, waiting for the host's answer.
    incoming: BackendSetFrame,
    pending: bool,
    set_seq: u64,
    n_vips: usize,
}

impl<'r> DataPlane<'r> {
    /// Starts in fallback (no controller yet), with the configuration's admin
    /// states.
    pub fn new(view: &RegionView<'r>, cfg: DataPlaneConfig) -> Self {
        let n = view.geometry.backends();
        let mut config = ConfigImage::new_zeroed();
        view.config_into(&mut config);
        let mut good = WeightVector::new(n);
        let mut adm = [AdminState::Active; MAX_BACKENDS];
        for (a, e) in adm.iter_mut().zip(config.backends.iter()).take(n) {
            if let Some(s) = admin_from_u8(e.admin) {
                *a = s;
            }
        }
        good.set_admin(&adm);
        let mut fallback = good.clone();
        fallback.make_equal_over_up();
        let served = from_config(&config);
        let mut status = DpStatus::default();
        status.watchdog.fallback_active = 1;
        status.watchdog.fallback_reason = FallbackReason::NoController as u32;
        DataPlane {
            header: &view.fixed.header,
            control: &view.fixed.control,
            cfg,
            scratch: WeightsFrame::zeroed(),
            good,
            have_good: false,
            fallback,
            last_seq: 0,
            last_hb: 0,
            hb_changed_at: None,
            source: Source::Fallback(FallbackReason::NoController),
            dirty: true,
            status,
            set_block: &view.fixed.backend_set,
            incoming: served.clone(),
            served,
            pending: false,
            set_seq: 0,
            n_vips: config.vips().len(),
        }
    }

    /// Backend indices served now (removed ones included).
    pub fn backends(&self) -> usize {
        self.served.entries().len()
    }

    /// The backend set served now (version 0: the configuration's).
    pub fn served_set(&self) -> &BackendSetFrame {
        &self.served
    }

    /// The host's answer to the set [`Poll::backend_set`] handed it: `Ok`
    /// when its service now serves the set, `Err` when it could not build one
    /// (it keeps the previous service). Written back for the controller.
    pub fn answer_set(&mut self, built: Result<(), ()>) {
        if !core::mem::take(&mut self.pending) {
            return;
        }
        match built {
            Ok(()) => self.apply_set(),
            Err(()) => self.refuse_set(self.incoming.version, SetRefusal::Host),
        }
    }

    fn apply_set(&mut self) {
        self.served.clone_from(&self.incoming);
        let n = self.backends();
        self.good.resize(n);
        self.fallback.resize(n);
        self.force_removed_down();
        self.fallback.make_equal_over_up();
        self.status.validation.sets_applied += 1;
        self.set_block
            .applied_version
            .store(self.served.version, Ordering::Release);
        self.dirty = true;
    }

    fn refuse_set(&mut self, version: u64, why: SetRefusal) {
        self.status.validation.sets_refused += 1;
        self.set_block
            .refused_reason
            .store(why.code(), Ordering::Relaxed);
        self.set_block
            .refused_version
            .store(version, Ordering::Release);
    }

    /// Removed indices are down whatever a weights frame says.
    fn force_removed_down(&mut self) {
        for (i, e) in self.served.entries().iter().enumerate() {
            if !served(e) {
                self.good.set_down(i);
                self.fallback.set_down(i);
            }
        }
    }

    fn read_set(&mut self) {
        match seqlock::read_bounded(
            &self.set_block.seq,
            &self.set_block.words,
            self.incoming.as_mut_bytes(),
            self.cfg.read_tries,
        ) {
            Ok(seq) => {
                self.set_seq = seq;
                let v = self.incoming.version;
                if v <= self.served.version
                    || v == self.set_block.refused_version.load(Ordering::Relaxed)
                {
                    return;
                }
                match check_set(&self.incoming, &self.served, self.n_vips) {
                    Ok(()) => self.pending = true,
                    Err(why) => self.refuse_set(v, why),
                }
            }
            Err(seqlock::ReadError::Empty) => {}
            Err(_) => self.status.validation.contention_events += 1,
        }
    }

    /// One step at data-plane time `now_ns` (monotonic): stores the data-plane
    /// heartbeat, reads a new weights frame if there is one, runs the watchdog,
    /// and returns the weights to apply. Never blocks beyond `read_tries` reads.
    pub fn poll(&mut self, now_ns: u64) -> Poll<'_> {
        self.header.dp_heartbeat.store(now_ns, Ordering::Relaxed);

        let hb = self.control.controller_heartbeat.load(Ordering::Acquire);
        if hb != 0 && hb != self.last_hb {
            self.last_hb = hb;
            self.hb_changed_at = Some(now_ns);
        }

        let seq = self.control.seq.load(Ordering::Relaxed);
        if seq != self.last_seq && seq != 0 {
            self.read_frame();
        }
        let set_seq = self.set_block.seq.load(Ordering::Relaxed);
        if !self.pending && set_seq != self.set_seq && set_seq != 0 {
            self.read_set();
        }

        let fresh = self
            .hb_changed_at
            .is_some_and(|t| now_ns.saturating_sub(t) <= self.cfg.heartbeat_timeout_ns);
        let next = if fresh && self.have_good {
            Source::Controller
        } else if self.hb_changed_at.is_none() {
            Source::Fallback(FallbackReason::NoController)
        } else if !fresh {
            Source::Fallback(FallbackReason::Stale)
        } else {
            Source::Fallback(FallbackReason::NoValidWeights)
        };
        let wd = &mut self.status.watchdog;
        match (self.source, next) {
            (Source::Controller, Source::Fallback(_)) => {
                wd.fallback_entries += 1;
                self.dirty = true;
            }
            (Source::Fallback(_), Source::Controller) => {
                // The start-up fallback (no controller yet) is not an entry.
                if wd.fallback_exits < wd.fallback_entries {
                    wd.fallback_exits += 1;
                }
                self.dirty = true;
            }
            _ => {}
        }
        self.source = next;
        match next {
            Source::Controller => {
                wd.fallback_active = 0;
                wd.fallback_reason = FallbackReason::None as u32;
            }
            Source::Fallback(r) => {
                wd.fallback_active = 1;
                wd.fallback_reason = r as u32;
            }
        }
        let changed = core::mem::take(&mut self.dirty);
        Poll {
            source: next,
            changed,
            vector: match next {
                Source::Controller => &self.good,
                Source::Fallback(_) => &self.fallback,
            },
            backend_set: self.pending.then_some(&self.incoming),
        }
    }

    fn read_frame(&mut self) {
        let words = &self.control.words;
        match seqlock::read_bounded(
            &self.control.seq,
            words,
            self.scratch.as_mut_bytes(),
            self.cfg.read_tries,
        ) {
            Ok(seq) => {
                self.last_seq = seq;
                if validate_weights(&self.scratch, &mut self.good, &mut self.status.validation)
                    .is_ok()
                {
                    self.force_removed_down();
                    self.have_good = true;
                    self.status.watchdog.applied_epoch = self.good.epoch;
                    self.fallback.set_admin(self.good.admin());
                    self.fallback.make_equal_over_up();
                    self.dirty = true;
                }
            }
            Err(seqlock::ReadError::Empty) => {}
            Err(_) => self.status.validation.contention_events += 1,
        }
    }

    /// Current source.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Watchdog and validation counters (to hand to the stats publishers).
    pub fn status(&self) -> DpStatus {
        self.status
    }
}

/// One worker's stats publisher. Each worker owns its block: workers never
/// contend, and readers never block them.
#[derive(Debug)]
pub struct StatsPublisher<'r> {
    block: &'r StatsBlock,
    worker: u32,
    n: usize,
    interval_ns: u64,
    window_seq: u64,
    window_start_ns: u64,
    next_due_ns: u64,
}

/// Byte offset of backend `i`'s entry in a stats frame.
pub const fn backend_offset(i: usize) -> usize {
    core::mem::offset_of!(StatsFrame, backends) + i * core::mem::size_of::<BackendStats>()
}

impl<'r> StatsPublisher<'r> {
    /// Publisher for `worker` (`None` if the region has no such worker), every
    /// `interval_ms` (0 = the default 200 ms).
    pub fn new(view: &RegionView<'r>, worker: u32, interval_ms: u32) -> Option<Self> {
        let block = view.worker(worker)?;
        let ms = if interval_ms == 0 {
            DEFAULT_STATS_INTERVAL_MS
        } else {
            interval_ms
        };
        Some(StatsPublisher {
            block,
            worker,
            n: view.geometry.backends(),
            interval_ns: u64::from(ms) * 1_000_000,
            window_seq: 0,
            window_start_ns: 0,
            next_due_ns: 0,
        })
    }

    /// Publishes `n` backends from now on (the data plane's
    /// [`DataPlane::backends`] after a set was applied; clamped).
    pub fn set_backends(&mut self, n: usize) {
        self.n = n.min(MAX_BACKENDS);
    }

    /// Publishes if the period has elapsed; `true` if it did (the caller then
    /// starts a new window with `Telemetry::reset_window`).
    pub fn maybe_publish(&mut self, now_ns: u64, t: &Telemetry, status: &DpStatus) -> bool {
        if self.window_seq != 0 && now_ns < self.next_due_ns {
            return false;
        }
        self.publish(now_ns, t, status);
        true
    }

    /// Publishes one frame now: the head, then counters and samples of the
    /// configured backends. Returns the window sequence number.
    pub fn publish(&mut self, now_ns: u64, t: &Telemetry, status: &DpStatus) -> u64 {
        self.window_seq += 1;
        let mut head = StatsHead {
            window_seq: self.window_seq,
            window_start_ns: self.window_start_ns,
            published_ns: now_ns,
            worker: self.worker,
            n_backends: self.n as u32,
            watchdog: status.watchdog,
            validation: status.validation,
            global: t.global,
            ..StatsHead::default()
        };
        for (d, s) in head.drops.iter_mut().zip(&t.drops) {
            *d = *s;
        }
        let mut w = seqlock::Writer::begin(&self.block.seq, &self.block.words);
        w.put(0, head.as_bytes());
        for i in 0..self.n {
            let off = backend_offset(i);
            if let (Some(c), Some(s)) = (t.backends.get(i), t.samples.get(i)) {
                w.put(off, c.as_bytes());
                w.put(off + core::mem::size_of_val(c), s.as_bytes());
            }
        }
        w.finish();
        self.window_start_ns = now_ns;
        self.next_due_ns = now_ns.saturating_add(self.interval_ns);
        self.window_seq
    }
}
