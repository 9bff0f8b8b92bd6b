//! Plugin state shared by the nodes, the CLI and the controller link.
//!
//! * **Per-thread workers.** One marllb-core [`Worker`] (flow table, fragment
//!   cache, telemetry) per VPP thread, each behind its own mutex. A thread
//!   locks only its own slot, once per frame; the lock is uncontended except
//!   for the few microseconds the controller link spends copying that
//!   thread's telemetry into the shm region every 200 ms, and while a `show`
//!   command (run by VPP under the worker barrier) reads it.
//! * **Service swaps.** Every change (CLI, controller weights) builds a whole
//!   new [`Service`] and publishes it as an `Arc` with a generation number. A
//!   thread compares one atomic per frame and takes the new `Arc` at a frame
//!   boundary, so no frame ever sees a half-applied change.
//! * **Controller link** (`lb rl shm <name>`): creates the shm region and starts
//!   one thread that, every 200 ms, runs [`DataPlane::poll`] (heartbeat,
//!   weights, watchdog), rebuilds the service when the applied weights change,
//!   and publishes each VPP thread's stats block. It never blocks a worker for
//!   longer than one stats copy, and the workers never wait for the controller.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use marllb_core::classify::{DropReason, Verdict};
use marllb_core::flow::FlowState;
use marllb_core::pipeline::{Worker, MAX_BATCH};
use marllb_core::service::Service;
use marllb_core::telemetry::GlobalCounters;
use marllb_host::clock::FrameClock;
use marllb_host::memory::HugeAligned;
use marllb_shm::{
    ConfigImage, CreateOptions, DataPlane, DataPlaneConfig, DpStatus, ShmRegion, Source,
    StatsPublisher,
};

use crate::cli::{Command, ShowCommand};
use crate::config::{Config, Dynamic};
use crate::frame::InterfaceMacs;

/// Flow-table buckets per thread (4 flows each: 262 144 flows, about 16 MB).
pub const FLOW_BUCKETS: usize = 1 << 16;

/// The per-thread worker type.
pub type FlowWorker = Worker<FLOW_BUCKETS>;

/// Controller-link period.
pub const POLL_PERIOD: Duration = Duration::from_millis(200);

/// Most VPP threads the plugin serves (slots are cheap until a worker is
/// allocated in one).
pub const MAX_THREADS: usize = 256;

/// Most buckets of the flow table swept for idle entries after one frame.
/// The sweep is paced by time ([`marllb_core::pipeline::Worker::sweep_paced`]:
/// the whole table once a second), not a fixed number per frame: that cost
/// most per packet when frames were small (16 buckets after a frame of 16
/// buffers was about a fifth of the node's time).
pub const SWEEP_MAX_PER_FRAME: usize = 256;

/// The arrays a node fills for one frame, kept with the thread's worker: a
/// frame writes only the entries of its own buffers. As arrays on the node's
/// stack they were initialised whole for every frame (256 verdicts written
/// one by one), most of the node's own per-frame cost in frames of 16.
#[derive(Clone, Debug)]
pub struct FrameScratch {
    /// Next node of each buffer of the frame.
    pub nexts: [u16; MAX_BATCH],
    /// Verdict of each buffer of the frame.
    pub verdicts: [Verdict; MAX_BATCH],
    /// The thread's frame clock.
    pub clock: FrameClock,
}

impl Default for FrameScratch {
    fn default() -> Self {
        FrameScratch {
            nexts: [0; MAX_BATCH],
            verdicts: [Verdict::Host; MAX_BATCH],
            clock: FrameClock::default(),
        }
    }
}

/// A thread's slot lock. A spin lock: the packet thread takes its own slot
/// once a frame and the other holders keep it for microseconds (a sync dump,
/// a telemetry publish, a `show`), so waiting is short, and releasing it is a
/// plain store where `std::sync::Mutex` needs a second locked instruction.
type SlotLock = spin::Mutex<Slot>;

/// One VPP thread's state.
#[derive(Default)]
pub struct Slot {
    worker: Option<Box<HugeAligned<FlowWorker>>>,
    scratch: Option<Box<FrameScratch>>,
    svc: Option<Arc<Service>>,
    macs: Arc<InterfaceMacs>,
    gen: u64,
}

impl core::fmt::Debug for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slot")
            .field("allocated", &self.worker.is_some())
            .field("gen", &self.gen)
            .finish()
    }
}

struct ShmLink {
    name: String,
    path: String,
    stop: Arc<AtomicBool>,
}

/// The plugin's state.
pub struct Runtime {
    config: Mutex<Config>,
    dynamic: Mutex<Option<Dynamic>>,
    current: Mutex<(u64, Option<Arc<Service>>)>,
    /// The enabled interfaces' MACs (published with the service's generation).
    macs: Mutex<Arc<InterfaceMacs>>,
    /// The interfaces the nodes are attached to (`lb rl enable <interface>`).
    attached: Mutex<Vec<u32>>,
    gen: AtomicU64,
    enabled: AtomicBool,
    threads: AtomicUsize,
    /// One per VPP thread, each on cache lines of its own. The packet
    /// thread holds its slot for a frame; the controller link and the sync
    /// thread only `try_lock` (a busy slot waits for their next round).
    slots: Box<[CachePadded<SlotLock>]>,
    shm: Mutex<Option<ShmLink>>,
    status: Mutex<Option<(DpStatus, Source)>>,
    start: Instant,
    /// Flow-state sync's counters, while `lb rl sync` runs.
    sync: Mutex<Option<marllb_host::sync::SyncCounters>>,
    sync_stop: AtomicBool,
}

impl core::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Runtime")
            .field("threads", &self.slots.len())
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic aborts the process (panic = "abort"), so poisoning cannot
    // happen; take the data regardless.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static GLOBAL: OnceLock<Runtime> = OnceLock::new();

impl Runtime {
    /// State for `threads` VPP threads (main thread included).
    pub fn new(threads: usize) -> Self {
        Runtime {
            config: Mutex::new(Config::default()),
            dynamic: Mutex::new(None),
            current: Mutex::new((0, None)),
            macs: Mutex::new(Arc::new(InterfaceMacs::default())),
            attached: Mutex::new(Vec::new()),
            gen: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
            threads: AtomicUsize::new(threads.clamp(1, MAX_THREADS)),
            slots: (0..MAX_THREADS)
                .map(|_| CachePadded::new(SlotLock::default()))
                .collect(),
            shm: Mutex::new(None),
            status: Mutex::new(None),
            start: Instant::now(),
            sync: Mutex::new(None),
            sync_stop: AtomicBool::new(false),
        }
    }

    /// The plugin's instance, created on first use.
    pub fn global() -> &'static Runtime {
        GLOBAL.get_or_init(|| Runtime::new(1))
    }

    /// The plugin's instance if it exists.
    #[inline]
    pub fn try_global() -> Option<&'static Runtime> {
        GLOBAL.get()
    }

    /// Monotonic nanoseconds since the plugin started.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Whether the nodes load-balance (else they pass every packet on).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Number of VPP threads (main thread included).
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    /// Records the number of VPP threads (known once VPP has started them).
    pub fn set_threads(&self, n: usize) {
        self.threads
            .store(n.clamp(1, MAX_THREADS), Ordering::Relaxed);
    }

    /// Runs `f` with thread `thread`'s worker and the current service, after
    /// taking a newer service if one was published. `None` when the thread
    /// index is out of range, nothing is configured, or memory for the worker
    /// could not be had.
    #[inline]
    pub fn with_worker<R>(
        &self,
        thread: usize,
        f: impl FnOnce(&mut FlowWorker, &Service) -> R,
    ) -> Option<R> {
        self.with_frame(thread, |w, svc, _, _| f(w, svc))
    }

    /// [`Runtime::with_worker`], with the enabled interfaces' MACs and the
    /// thread's [`FrameScratch`] too (what a node needs for a frame; its
    /// contents are what the thread's previous frame left).
    #[inline]
    pub fn with_frame<R>(
        &self,
        thread: usize,
        f: impl FnOnce(&mut FlowWorker, &Service, &InterfaceMacs, &mut FrameScratch) -> R,
    ) -> Option<R> {
        let mut slot = self.slots.get(thread)?.lock();
        let slot = &mut *slot;
        self.refresh(slot);
        if slot.worker.is_none() {
            slot.worker = new_worker(thread);
        }
        let scratch = slot.scratch.get_or_insert_with(Box::default);
        let (Some(w), Some(svc)) = (slot.worker.as_deref_mut(), slot.svc.as_deref()) else {
            return None;
        };
        Some(f(w, svc, &slot.macs, scratch))
    }

    /// Whether the nodes are attached to interface `sw_if_index`.
    pub fn attached(&self, sw_if_index: u32) -> bool {
        lock(&self.attached).contains(&sw_if_index)
    }

    /// Records that the nodes were attached to (`on`) or detached from
    /// interface `sw_if_index`. VPP counts feature enables per interface
    /// and adds the node to the arc once per enable, so the plugin enables
    /// only an interface that is not attached and disables only one that
    /// is: a second `lb rl enable <interface>` put `marllb-ip4` on the arc
    /// twice, and one `lb rl disable` then left it there.
    pub fn set_attached(&self, sw_if_index: u32, on: bool) {
        let mut a = lock(&self.attached);
        a.retain(|&i| i != sw_if_index);
        if on {
            a.push(sw_if_index);
        }
    }

    /// Records the MAC of an interface the feature is enabled on (`None`:
    /// disabled), the source MAC of its L2 DSR frames unless `lb rl conf
    /// mac` set one. Threads take it between frames.
    pub fn set_interface_mac(&self, sw_if_index: u32, mac: Option<[u8; 6]>) {
        let mut cur = lock(&self.current);
        {
            let mut macs = lock(&self.macs);
            let mut m = InterfaceMacs::clone(&macs);
            match mac {
                Some(mac) => m.set(sw_if_index, mac),
                None => m.remove(sw_if_index),
            }
            *macs = Arc::new(m);
        }
        cur.0 += 1;
        self.gen.store(cur.0, Ordering::Release);
    }

    /// Takes a newer service into `slot` if one was published.
    fn refresh(&self, slot: &mut Slot) {
        if self.gen.load(Ordering::Acquire) != slot.gen {
            let cur = lock(&self.current);
            slot.gen = cur.0;
            slot.svc = cur.1.clone();
            slot.macs = lock(&self.macs).clone();
        }
    }

    /// Rebuilds the service from the configuration and the controller's last
    /// decision, and publishes it. An incomplete configuration publishes
    /// nothing (the nodes then pass packets on).
    fn rebuild(&self) -> Result<(), String> {
        let cfg = lock(&self.config).clone();
        if !cfg.is_complete() {
            let mut cur = lock(&self.current);
            cur.0 += 1;
            cur.1 = None;
            self.gen.store(cur.0, Ordering::Release);
            return Ok(());
        }
        let dynamic = lock(&self.dynamic).clone();
        let svc = cfg.build(dynamic.as_ref())?;
        let mut cur = lock(&self.current);
        cur.0 += 1;
        cur.1 = Some(Arc::from(svc));
        self.gen.store(cur.0, Ordering::Release);
        Ok(())
    }

    /// Applies a configuration command (the interface part of enable/disable is
    /// the plugin's). Returns the text to print.
    pub fn command(&'static self, cmd: Command) -> Result<String, String> {
        match cmd {
            Command::Enable { .. } => {
                for (i, s) in self.slots.iter().enumerate().take(self.threads()) {
                    let mut s = s.lock();
                    if s.worker.is_none() {
                        s.worker = new_worker(i);
                    }
                }
                self.enabled.store(true, Ordering::Relaxed);
                Ok(String::new())
            }
            Command::Disable { interface: None } => {
                self.enabled.store(false, Ordering::Relaxed);
                Ok(String::new())
            }
            Command::Disable { .. } => Ok(String::new()),
            Command::SetVip(v) => self.edit(|c| c.set_vip(v)),
            Command::DelVip(v) => self.edit(|c| c.del_vip(&v)),
            Command::SetServers { servers } => self.edit(|c| {
                c.servers = servers;
                Ok(())
            }),
            Command::Conf(x) => self.edit(|c| {
                c.apply_conf(&x);
                Ok(())
            }),
            Command::Shm { name } => self.link_shm(&name),
            Command::Sync {
                listen,
                peers,
                rate,
            } => self.start_sync(listen, &peers, rate),
        }
    }

    /// Changes the configuration; refuses (and keeps the old one) when the new
    /// one does not build.
    fn edit(&self, f: impl FnOnce(&mut Config) -> Result<(), String>) -> Result<String, String> {
        let old = lock(&self.config).clone();
        let mut new = old.clone();
        f(&mut new)?;
        if new.is_complete() {
            new.build(lock(&self.dynamic).as_ref())?;
        }
        // Configured weights may change; the addresses are the region's list.
        let addrs = |c: &Config| {
            c.servers
                .iter()
                .map(|s| (s.addr, s.mac))
                .collect::<Vec<_>>()
        };
        if lock(&self.shm).is_some() && addrs(&new) != addrs(&old) {
            return Err(
                "the server set is fixed while the controller link is up (the region's backend list)"
                    .into(),
            );
        }
        *lock(&self.config) = new;
        self.rebuild()?;
        Ok(String::new())
    }

    fn link_shm(&'static self, name: &str) -> Result<String, String> {
        let mut link = lock(&self.shm);
        if let Some(l) = link.as_ref() {
            return Err(format!("already linked to `{}'", l.name));
        }
        let cfg = lock(&self.config).clone();
        if !cfg.is_complete() {
            return Err(
                "configure VIPs and servers first (lb rl set-vip, lb rl set-servers)".into(),
            );
        }
        let svc = cfg
            .build(None)
            .map_err(|e| format!("configure VIPs and servers first: {e}"))?;
        let image = ConfigImage::from_service(&svc).map_err(|e| format!("{e:?}"))?;
        let mut opts = CreateOptions::new(name);
        opts.workers = self.threads() as u32;
        opts.replace = true;
        let region = ShmRegion::create(&opts, &image).map_err(|e| e.to_string())?;
        let path = region.path();
        // The region lives as long as the process: the poller holds views of
        // it and a link is never re-pointed.
        let region: &'static ShmRegion = Box::leak(Box::new(region));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("marllb-ctl".into())
            .spawn(move || self.poll_loop(region, &stop2))
            .map_err(|e| format!("cannot start the controller link: {e}"))?;
        let out = format!("created {path} for {} threads", self.threads());
        *link = Some(ShmLink {
            name: name.into(),
            path,
            stop,
        });
        Ok(out)
    }

    /// Starts flow-state sync with the other LB nodes (`lb rl sync`): a
    /// thread that, every millisecond, takes each thread's records and its
    /// dump for a peer that started again (a slot busy with a frame is
    /// visited next time), sends them, and applies the peers' records to
    /// every thread's table (a thread's pending records are bounded).
    fn start_sync(
        &'static self,
        listen: std::net::SocketAddr,
        peers: &[std::net::SocketAddr],
        rate: u32,
    ) -> Result<String, String> {
        let mut cur = lock(&self.sync);
        if cur.is_some() {
            return Err("sync is already running".into());
        }
        let seed = lock(&self.config).hash_seed;
        let mut link = marllb_host::sync::SyncLink::bind(listen, peers, seed)
            .map_err(|e| format!("sync: cannot bind {listen}: {e}"))?
            .with_rate(rate);
        *cur = Some(link.counters);
        std::thread::Builder::new()
            .name("marllb-sync".into())
            .spawn(move || {
                let n = self.threads();
                let mut inbox: Vec<Vec<marllb_core::sync::SyncRecord>> = vec![Vec::new(); n];
                let mut dump: Vec<Option<usize>> = vec![None; n];
                let mut got = Vec::new();
                while !self.sync_stop.load(Ordering::Relaxed) {
                    let mut out = Vec::new();
                    let now = self.now_ns();
                    for (i, slot) in self.slots.iter().enumerate().take(n) {
                        let Some(mut s) = slot.try_lock() else {
                            continue;
                        };
                        let s = &mut *s;
                        self.refresh(s);
                        // On as soon as the thread has a worker (before its
                        // first frame).
                        if let Some(w) = s.worker.as_deref_mut() {
                            w.sync.enabled = true;
                        }
                        let (Some(w), Some(svc)) = (s.worker.as_deref_mut(), s.svc.as_deref())
                        else {
                            continue;
                        };
                        out.extend_from_slice(w.sync.pending());
                        w.sync.clear();
                        if let (Some(c), false) = (dump[i], link.backlogged()) {
                            let next = w.dump_sync(svc, now, c, 1024, |r| out.push(r));
                            dump[i] = (next != 0).then_some(next);
                        }
                        if !inbox[i].is_empty() {
                            w.apply_sync(svc, now, &inbox[i]);
                            inbox[i].clear();
                        }
                    }
                    link.send(&out);
                    got.clear();
                    if link.receive(&mut got) {
                        dump.iter_mut().for_each(|d| *d = Some(0));
                    }
                    link.deliver(&got, &mut inbox);
                    *lock(&self.sync) = Some(link.counters);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .map_err(|e| format!("cannot start the sync thread: {e}"))?;
        Ok(format!("sync on {listen} with {} peers", peers.len()))
    }

    /// Stops the sync thread (within a millisecond).
    pub fn stop_sync(&self) {
        self.sync_stop.store(true, Ordering::Relaxed);
    }

    /// Stops the controller link's thread (the region stays until exit).
    pub fn stop_link(&self) {
        if let Some(l) = lock(&self.shm).as_ref() {
            l.stop.store(true, Ordering::Relaxed);
        }
    }

    fn poll_loop(&self, region: &'static ShmRegion, stop: &AtomicBool) {
        let view = region.view();
        let mut dp = DataPlane::new(&view, DataPlaneConfig::default());
        let mut pubs: Vec<Option<StatsPublisher<'static>>> = (0..self.threads())
            .map(|i| StatsPublisher::new(&view, i as u32, 0))
            .collect();
        while !stop.load(Ordering::Relaxed) {
            let now = self.now_ns();
            self.poll_once(&mut dp, &mut pubs, now);
            std::thread::sleep(POLL_PERIOD);
        }
    }

    /// One controller-link step (also used by the tests).
    pub fn poll_once(
        &self,
        dp: &mut DataPlane<'_>,
        pubs: &mut [Option<StatsPublisher<'_>>],
        now: u64,
    ) {
        let poll = dp.poll(now);
        let source = poll.source;
        let set = poll.backend_set.map(|s| s.entries().to_vec());
        if poll.changed {
            let d = Dynamic {
                weights: poll.vector.weights().to_vec(),
                admin: poll.vector.admin().to_vec(),
            };
            *lock(&self.dynamic) = Some(d);
            // A configuration that does not build keeps the previous service.
            let _ = self.rebuild();
        }
        // Servers added or removed by the controller: taken only if the
        // service builds with them (else refused, the previous set served).
        if let Some(set) = set {
            let mut cfg = lock(&self.config).clone();
            cfg.backend_set = Some(set);
            let built = cfg.build(lock(&self.dynamic).as_ref());
            match &built {
                Ok(_) => *lock(&self.config) = cfg,
                Err(e) => eprintln!("marllb: backend set refused, previous set kept: {e}"),
            }
            dp.answer_set(built.map(|_| ()).map_err(|_| ()));
            let _ = self.rebuild();
            for p in pubs.iter_mut().flatten() {
                p.set_backends(dp.backends());
            }
        }
        let status = dp.status();
        *lock(&self.status) = Some((status, source));
        for (slot, p) in self.slots.iter().zip(pubs.iter_mut()) {
            let Some(p) = p else { continue };
            // A thread in the middle of a frame is skipped this round.
            let Some(mut s) = slot.try_lock() else {
                continue;
            };
            if let Some(w) = s.worker.as_deref_mut() {
                if p.maybe_publish(now, &w.telemetry, &status) {
                    w.telemetry.reset_window();
                }
            }
        }
    }

    /// Output of a `show lb rl` command.
    pub fn show(&self, cmd: ShowCommand) -> String {
        match cmd {
            ShowCommand::Stats => self.show_stats(),
            ShowCommand::Flows { count } => self.show_flows(count),
        }
    }

    fn show_stats(&self) -> String {
        let cfg = lock(&self.config).clone();
        let mut g = GlobalCounters::default();
        let mut drops = [0u64; DropReason::COUNT];
        let addrs = cfg.server_addrs();
        let n = addrs.len();
        let mut per = vec![(0u64, 0u64, 0u64, 0u32); n];
        for s in self.slots.iter() {
            let s = s.lock();
            let Some(w) = s.worker.as_deref() else {
                continue;
            };
            let t = &w.telemetry;
            g += &t.global;
            for (d, x) in drops.iter_mut().zip(t.drops.iter()) {
                *d += x;
            }
            for (p, b) in per.iter_mut().zip(t.backends.iter()) {
                p.0 += b.packets;
                p.1 += b.bytes;
                p.2 += b.new_flows;
                p.3 += b.active_flows;
            }
        }
        let mut o = String::new();
        let _ = writeln!(
            o,
            "marllb: {}, {} threads, {} VIPs, {} servers{}",
            if self.enabled() {
                "enabled"
            } else {
                "disabled"
            },
            self.threads(),
            cfg.vips.len(),
            n,
            match *lock(&self.sync) {
                Some(c) => format!(
                    "; sync: {} records sent, {} received, {} datagrams refused, {} dumps",
                    c.records_sent, c.records_received, c.datagrams_refused, c.dumps
                ),
                None => String::new(),
            }
        );
        match (lock(&self.shm).as_ref(), lock(&self.status).as_ref()) {
            (Some(l), Some((st, src))) => {
                let _ = writeln!(
                    o,
                    "controller link: {} ({}), weights from {}, epoch {}, fallback entries {}",
                    l.name,
                    l.path,
                    match src {
                        Source::Controller => "controller".to_string(),
                        Source::Fallback(r) => format!("fallback ({r:?})"),
                    },
                    st.watchdog.applied_epoch,
                    st.watchdog.fallback_entries
                );
            }
            (Some(l), None) => {
                let _ = writeln!(
                    o,
                    "controller link: {} ({}), not polled yet",
                    l.name, l.path
                );
            }
            _ => {
                let _ = writeln!(o, "controller link: none (lb rl shm <name>)");
            }
        }
        let _ = writeln!(
            o,
            "  rx {}  forwarded {}  to-host {}  icmp-replies {}  dropped {}",
            g.rx_packets, g.forwarded, g.to_host, g.replies, g.dropped
        );
        let _ = writeln!(
            o,
            "  flows inserted {}  untracked {}  expired {}  maglev-fallback {}  rescheduled {}  synced-in {}  synced-out {}",
            g.flows_inserted,
            g.flows_untracked,
            g.flows_expired,
            g.maglev_fallback,
            g.flows_rescheduled,
            g.sync_applied,
            g.sync_made
        );
        for r in DropReason::ALL {
            let d = drops[r as usize];
            if d != 0 {
                let _ = writeln!(o, "  drop {:<20} {}", r.name(), d);
            }
        }
        let weights: Vec<u32> = {
            let cur = lock(&self.current);
            cur.1.as_ref().map_or_else(Vec::new, |s| {
                s.backends().iter().map(|b| b.weight).collect()
            })
        };
        let _ = writeln!(
            o,
            "  {:<40} {:>8} {:>12} {:>14} {:>10} {:>8}",
            "server", "weight", "packets", "bytes", "new-flows", "active"
        );
        for (i, a) in addrs.iter().enumerate() {
            let w = weights.get(i).copied().unwrap_or(0);
            let (pk, by, nf, act) = per[i];
            let _ = writeln!(
                o,
                "  {:<40} {:>8.3} {:>12} {:>14} {:>10} {:>8}",
                a.map_or_else(|| format!("#{i} (removed)"), |a| a.to_string()),
                f64::from(w) / f64::from(marllb_core::WEIGHT_ONE),
                pk,
                by,
                nf,
                act
            );
        }
        o
    }

    fn show_flows(&self, count: usize) -> String {
        let addrs = lock(&self.config).server_addrs();
        let mut o = String::new();
        let mut left = count;
        let _ = writeln!(
            o,
            "{:<7} {:<45} {:>5} {:<6} {:<16} {:<16}",
            "thread", "client", "dport", "proto", "state", "server"
        );
        for (ti, s) in self.slots.iter().enumerate() {
            if left == 0 {
                break;
            }
            let s = s.lock();
            let Some(w) = s.worker.as_deref() else {
                continue;
            };
            w.flows.for_each(|l| {
                if left == 0 {
                    return false;
                }
                left -= 1;
                let client = if l.v6 {
                    let a = std::net::Ipv6Addr::from(l.src);
                    format!("[{a}]:{}", l.sport)
                } else {
                    let a = std::net::Ipv4Addr::new(l.src[0], l.src[1], l.src[2], l.src[3]);
                    format!("{a}:{}", l.sport)
                };
                let server = addrs
                    .get(usize::from(l.entry.backend))
                    .copied()
                    .flatten()
                    .map_or_else(|| format!("#{}", l.entry.backend), |a| a.to_string());
                let _ = writeln!(
                    o,
                    "{:<7} {:<45} {:>5} {:<6} {:<16} {:<16}",
                    ti,
                    client,
                    l.dport,
                    proto_name(l.proto),
                    state_name(l.entry.state),
                    server
                );
                true
            });
        }
        if left == count {
            let _ = writeln!(o, "(no flows)");
        }
        o
    }
}

fn new_worker(thread: usize) -> Option<Box<HugeAligned<FlowWorker>>> {
    // On transparent huge pages where the kernel has them (see
    // `marllb_host::memory`): before `init` writes every page.
    let (mut w, _) = marllb_host::memory::new_box_zeroed_huge::<FlowWorker>()?;
    w.init(thread as u64);
    Some(w)
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmp6".into(),
        x => x.to_string(),
    }
}

fn state_name(s: FlowState) -> &'static str {
    match s {
        FlowState::Free => "free",
        FlowState::TcpSynSent => "syn-sent",
        FlowState::TcpEstablished => "established",
        FlowState::TcpClosing => "closing",
        FlowState::Udp => "udp",
        FlowState::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_lb;

    #[test]
    fn a_thread_keeps_its_frame_scratch_between_frames() {
        let rt: &'static Runtime = Box::leak(Box::new(Runtime::new(2)));
        for l in [
            "set-vip 10.0.0.1 protocol tcp port 80",
            "set-servers 10.1.0.1 10.1.0.2",
        ] {
            rt.command(parse_lb(l).unwrap_or_else(|e| panic!("{l}: {e:?}")))
                .unwrap_or_else(|e| panic!("{l}: {e}"));
        }
        let frame = |thread: usize, mark: Option<u16>| {
            rt.with_frame(thread, |_, _, _, s| {
                if let Some(m) = mark {
                    s.nexts[3] = m;
                    s.verdicts[3] = Verdict::Forward { backend: m };
                }
                (s.nexts[3], s.verdicts[3], core::ptr::from_ref(s) as usize)
            })
        };
        let a0 = frame(0, Some(7)).map_or(0, |f| f.2);
        let b0 = frame(1, Some(9)).map_or(0, |f| f.2);
        // What a thread's previous frame left, in the same memory; each
        // thread its own.
        assert_eq!(
            frame(0, None),
            Some((7, Verdict::Forward { backend: 7 }, a0))
        );
        assert_eq!(
            frame(1, None),
            Some((9, Verdict::Forward { backend: 9 }, b0))
        );
        assert_ne!(a0, b0);
    }

    #[test]
    fn an_interface_is_attached_once_and_detached_once() {
        let rt = Runtime::new(1);
        assert!(!rt.attached(3));
        rt.set_attached(3, true);
        rt.set_attached(3, true);
        rt.set_attached(5, true);
        assert!(rt.attached(3) && rt.attached(5));
        // One detach undoes any number of attaches.
        rt.set_attached(3, false);
        assert!(!rt.attached(3) && rt.attached(5));
        rt.set_attached(3, false);
        assert!(!rt.attached(3));
    }
}
