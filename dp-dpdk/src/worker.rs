//! The worker lcore loop: RX burst → `Worker::process` → TX burst, with its own
//! flow table, plus idle sweeps, service swaps and telemetry snapshots.
//!
//! # Contract
//!
//! * Each worker owns one RX/TX queue pair on every port; nothing on the packet
//!   path takes a lock. The main lcore talks to workers through [`Shared`]:
//!   a stop flag, a service generation (new weights), and a stats epoch (publish
//!   a telemetry snapshot). Workers look at these once per loop iteration with
//!   relaxed loads and take the (uncontended) lock only when one changed.
//! * Verdicts: `Forward` → TX on the backend-side port; `Reply` → TX back out the
//!   port it came in on; `Host` → freed and counted (no TAP/KNI in this host);
//!   `Drop` → freed (the core counted the reason). Mbufs the driver does not
//!   accept on TX are freed and counted in `tx_dropped`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marllb_core::classify::Verdict;
use marllb_core::pipeline::{Packet, Worker};
use marllb_core::service::Service;
use marllb_core::sync::SyncRecord;
use marllb_core::telemetry::Telemetry;
use marllb_host::clock::FrameClock;
use zerocopy::{FromZeros, IntoBytes};

use crate::dpdk::{Mbuf, MbufBatch, RxQueue, TxQueue};

/// Packets per RX burst.
pub const BURST: usize = 32;

/// Sweep budget (buckets) per idle poll.
const IDLE_SWEEP: usize = 256;
/// Sweep budget every [`BUSY_SWEEP_EVERY`] bursts under load, so idle flows
/// expire even when the worker never goes idle.
const BUSY_SWEEP: usize = 64;
const BUSY_SWEEP_EVERY: u32 = 64;

/// The service the workers use, swapped by the main lcore.
#[derive(Debug)]
pub struct ServiceCell {
    generation: AtomicU64,
    current: Mutex<(u64, Arc<Service>)>,
}

impl ServiceCell {
    /// A cell holding `svc` as generation 1.
    pub fn new(svc: Box<Service>) -> Self {
        Self {
            generation: AtomicU64::new(1),
            current: Mutex::new((1, Arc::from(svc))),
        }
    }

    /// Installs a new service; returns its generation.
    pub fn store(&self, svc: Box<Service>) -> u64 {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let g = cur.0 + 1;
        *cur = (g, Arc::from(svc));
        self.generation.store(g, Ordering::Release);
        g
    }

    /// The current generation (cheap).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current service and its generation.
    pub fn load(&self) -> (u64, Arc<Service>) {
        let cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (cur.0, Arc::clone(&cur.1))
    }
}

/// Host-side counters of one worker (what the core does not see).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct HostCounters {
    /// `Host` verdicts freed (no TAP/KNI configured).
    pub host_dropped: u64,
    /// Mbufs the driver did not take on TX (ring full).
    pub tx_dropped: u64,
    /// Multi-segment mbufs dropped before the pipeline.
    pub multi_segment_dropped: u64,
    /// RX bursts that returned packets.
    pub bursts: u64,
}

/// What a worker publishes: its telemetry and host counters.
#[derive(Clone)]
pub struct Snapshot {
    /// Telemetry (copied from the worker's pipeline).
    pub telemetry: Box<Telemetry>,
    /// Host counters.
    pub host: HostCounters,
    /// Stats epoch this snapshot answers.
    pub epoch: u64,
    /// Flow-clock time of the snapshot (ns).
    pub at_ns: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("host", &self.host)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Per-worker slot in [`Shared`].
#[derive(Debug)]
pub struct Slot {
    /// The latest snapshot.
    pub snapshot: Mutex<Snapshot>,
    /// Service generation the worker runs.
    pub applied: AtomicU64,
    /// Sync records the worker made, for the main lcore to send to the peers.
    pub sync_out: Mutex<Vec<SyncRecord>>,
    /// Peers' records for the worker to apply.
    pub sync_in: Mutex<Vec<SyncRecord>>,
}

/// State shared by the main lcore and the workers.
#[derive(Debug)]
pub struct Shared {
    /// Set to stop the workers.
    pub stop: AtomicBool,
    /// The service.
    pub service: ServiceCell,
    /// Bumped by the main lcore to ask for snapshots.
    pub stats_epoch: AtomicU64,
    /// One per worker.
    pub slots: Vec<Slot>,
    /// Time origin of the flow clock.
    pub start: Instant,
    /// Flow-state sync with peers is on (workers make records).
    pub sync: AtomicBool,
    /// Bumped when a peer (re)started: every worker then sends the records
    /// of all its established connections, a bounded number of buckets at a
    /// time.
    pub sync_dump: AtomicU64,
    /// The sync link's backlog is over half a second: dumps pause.
    pub sync_backlogged: AtomicBool,
}

impl Shared {
    /// Shared state for `workers` workers.
    pub fn new(svc: Box<Service>, workers: usize) -> anyhow::Result<Self> {
        let mut slots = Vec::with_capacity(workers);
        for _ in 0..workers {
            let telemetry = Telemetry::new_box_zeroed()
                .map_err(|_| anyhow::anyhow!("cannot allocate telemetry"))?;
            slots.push(Slot {
                snapshot: Mutex::new(Snapshot {
                    telemetry,
                    host: HostCounters::default(),
                    epoch: 0,
                    at_ns: 0,
                }),
                applied: AtomicU64::new(0),
                sync_out: Mutex::new(Vec::new()),
                sync_in: Mutex::new(Vec::new()),
            });
        }
        Ok(Self {
            stop: AtomicBool::new(false),
            service: ServiceCell::new(svc),
            stats_epoch: AtomicU64::new(0),
            slots,
            start: Instant::now(),
            sync: AtomicBool::new(false),
            sync_dump: AtomicU64::new(0),
            sync_backlogged: AtomicBool::new(false),
        })
    }

    /// Nanoseconds since start (the flow clock).
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// One port as a worker sees it.
#[derive(Debug)]
pub struct WorkerPort {
    /// RX side (None: not polled, e.g. a backend-only port).
    pub rx: Option<RxQueue>,
    /// TX side.
    pub tx: TxQueue,
}

/// Everything one worker lcore owns.
pub struct WorkerCtx<const B: usize> {
    /// Worker index.
    pub id: usize,
    /// The pipeline state (flow table, telemetry).
    pub worker: Box<marllb_host::memory::HugeAligned<Worker<B>>>,
    /// Ports, by position in the host's port list.
    pub ports: Vec<WorkerPort>,
    /// Position (in `ports`) of the backend-side port.
    pub backend_port: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Sleep this long after a run of empty polls (0: busy poll).
    pub idle_sleep: Duration,
    /// The dump request served last, and where the dump in progress is.
    pub dump: (u64, Option<usize>),
    /// Nanoseconds per time stamp counter tick ([`crate::dpdk::Eal::ns_per_tsc_tick`]):
    /// each burst's time is the counter's, on [`Shared::now_ns`]'s scale
    /// ([`FrameClock`]), not a `clock_gettime`.
    pub ns_per_tick: f64,
}

impl<const B: usize> std::fmt::Debug for WorkerCtx<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCtx")
            .field("id", &self.id)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// Buckets a dump for a restarted peer visits per loop turn.
const DUMP_BUCKETS: usize = 1024;

/// Empty polls before an idle sleep.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 1024;

impl<const B: usize> WorkerCtx<B> {
    /// Runs until the stop flag is set; publishes a final snapshot. Returns 0.
    pub fn run(mut self) -> i32 {
        let shared = Arc::clone(&self.shared);
        let (mut gen, mut svc) = shared.service.load();
        self.mark_applied(gen);
        let mut epoch = shared.stats_epoch.load(Ordering::Acquire);
        let mut host = HostCounters::default();
        let mut rx: MbufBatch<BURST> = MbufBatch::new();
        let mut tx: Vec<MbufBatch<BURST>> = self.ports.iter().map(|_| MbufBatch::new()).collect();
        let mut verdicts = [Verdict::Host; BURST];
        let mut empty_polls = 0u32;
        let mut bursts_since_sweep = 0u32;
        let mut clock = FrameClock::default();
        self.worker.sync.enabled = shared.sync.load(Ordering::Acquire);

        while !shared.stop.load(Ordering::Relaxed) {
            if shared.service.generation() != gen {
                (gen, svc) = shared.service.load();
                self.mark_applied(gen);
            }
            let e = shared.stats_epoch.load(Ordering::Relaxed);
            if e != epoch {
                epoch = e;
                self.publish(&host, epoch);
            }
            let mut got = false;
            for pi in 0..self.ports.len() {
                let Some(q) = self.ports[pi].rx.as_mut() else {
                    continue;
                };
                if q.rx_burst(&mut rx) == 0 {
                    continue;
                }
                got = true;
                host.bursts += 1;
                let now = clock.now(crate::dpdk::tsc(), self.ns_per_tick, || shared.now_ns());
                self.handle(&svc, now, pi, &mut rx, &mut tx, &mut verdicts, &mut host);
            }
            if self.worker.sync.enabled {
                self.exchange_sync(&svc);
            }
            if got {
                empty_polls = 0;
                bursts_since_sweep += 1;
                if bursts_since_sweep >= BUSY_SWEEP_EVERY {
                    bursts_since_sweep = 0;
                    self.worker.sweep(&svc, shared.now_ns(), BUSY_SWEEP);
                }
            } else {
                self.worker.sweep(&svc, shared.now_ns(), IDLE_SWEEP);
                empty_polls = empty_polls.saturating_add(1);
                if !self.idle_sleep.is_zero() && empty_polls >= IDLE_POLLS_BEFORE_SLEEP {
                    std::thread::sleep(self.idle_sleep);
                }
            }
        }
        // Final snapshot: the main lcore reads it after joining us.
        self.publish(&host, u64::MAX);
        0
    }

    /// Hands the records made to the main lcore and applies the peers' (each
    /// only if its lock is free: the packet path never waits; records made
    /// meanwhile stay in the core's outbox, whose overflow is counted).
    fn exchange_sync(&mut self, svc: &Service) {
        let Some(slot) = self.shared.slots.get(self.id) else {
            return;
        };
        if !self.worker.sync.pending().is_empty() {
            if let Ok(mut out) = slot.sync_out.try_lock() {
                out.extend_from_slice(self.worker.sync.pending());
                self.worker.sync.clear();
            }
        }
        // A peer (re)started: our established connections, in steps.
        let asked = self.shared.sync_dump.load(Ordering::Acquire);
        if asked != self.dump.0 {
            self.dump = (asked, Some(0));
        }
        let paused = self.shared.sync_backlogged.load(Ordering::Acquire);
        if let (Some(cursor), false) = (self.dump.1, paused) {
            let mut recs = Vec::new();
            let next =
                self.worker
                    .dump_sync(svc, self.shared.now_ns(), cursor, DUMP_BUCKETS, |r| {
                        recs.push(r)
                    });
            if let Ok(mut out) = slot.sync_out.lock() {
                out.extend_from_slice(&recs);
            }
            self.dump.1 = (next != 0).then_some(next);
        }
        let incoming = match slot.sync_in.try_lock() {
            Ok(mut inbox) if !inbox.is_empty() => std::mem::take(&mut *inbox),
            _ => return,
        };
        self.worker.apply_sync(svc, self.shared.now_ns(), &incoming);
    }

    fn mark_applied(&self, gen: u64) {
        if let Some(s) = self.shared.slots.get(self.id) {
            s.applied.store(gen, Ordering::Release);
        }
    }

    fn publish(&mut self, host: &HostCounters, epoch: u64) {
        if let Some(s) = self.shared.slots.get(self.id) {
            let mut snap = s.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
            // Byte copy: no 0.5 MB temporary on the lcore stack.
            snap.telemetry
                .as_mut_bytes()
                .copy_from_slice(self.worker.telemetry.as_bytes());
            snap.host = *host;
            snap.epoch = epoch;
            snap.at_ns = self.shared.now_ns();
        }
        self.worker.telemetry.reset_window();
    }

    /// One RX burst through the pipeline and out.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn handle(
        &mut self,
        svc: &Service,
        now: u64,
        rx_port: usize,
        rx: &mut MbufBatch<BURST>,
        tx: &mut [MbufBatch<BURST>],
        verdicts: &mut [Verdict; BURST],
        host: &mut HostCounters,
    ) {
        let n = rx.len();
        let mut frames = [(0usize, 0usize); BURST];
        {
            let mbufs = rx.as_mut_slice();
            let mut pkts: [Packet<'_>; BURST] = std::array::from_fn(|_| Packet::new(&mut [], 0, 0));
            for (p, m) in pkts.iter_mut().zip(mbufs.iter_mut()) {
                *p = m.packet();
            }
            self.worker
                .process(svc, now, &mut pkts[..n], &mut verdicts[..n]);
            for (f, p) in frames.iter_mut().zip(pkts.iter()).take(n) {
                *f = (p.start, p.len);
            }
        }
        let backend_port = self.backend_port;
        rx.drain(|i, mut m: Mbuf| {
            if !m.is_contiguous() {
                // The pipeline only saw the first segment; never forward half a
                // frame (ports are set up without scatter, so this is rare).
                host.multi_segment_dropped += 1;
                return;
            }
            let out = match verdicts[i] {
                Verdict::Forward { .. } => backend_port,
                Verdict::Reply => rx_port,
                Verdict::Host => {
                    host.host_dropped += 1;
                    return;
                }
                Verdict::Drop(_) => return,
            };
            let (start, len) = frames[i];
            if !m.set_frame(start, len) {
                host.tx_dropped += 1;
                return;
            }
            if let Some(b) = tx.get_mut(out) {
                if let Err(m) = b.push(m) {
                    drop(m);
                    host.tx_dropped += 1;
                }
            }
        });
        for (b, p) in tx.iter_mut().zip(self.ports.iter_mut()) {
            if b.is_empty() {
                continue;
            }
            p.tx.tx_burst(b);
            if !b.is_empty() {
                host.tx_dropped += b.len() as u64;
                b.clear();
            }
        }
    }
}
