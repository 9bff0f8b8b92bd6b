//! Backend health: active checks on their own threads, and the passive signal
//! from the data plane.
//!
//! # Active checks
//!
//! One thread per backend checks every `interval` with a `timeout`: a TCP
//! connect, or an HTTP/1.1 `GET PATH` whose status line must carry the expected
//! status. `fall` consecutive failures take the backend down, `rise` consecutive
//! successes bring it back ([`RiseFall`]). The verdict is an atomic the cycle
//! reads, so a backend is set to weight 0 by the first cycle after its fall
//! count is reached. Backends start up (a controller restart must not empty the
//! service while its first checks run).
//!
//! # Passive signal
//!
//! The data plane counts, per backend, handshake timeouts: SYNs it sent that
//! never completed. With direct server return it never sees the backend's
//! SYN-ACK, so a SYN flood from spoofed sources looks exactly like backends
//! that stopped answering. The signal is therefore an *outlier* test over the
//! pool (as Envoy's outlier detection), not a threshold per backend:
//!
//! * timeouts and new flows per backend are averaged over about 20 cycles
//!   (timeouts lag their SYNs by the half-open timeout, and the flow table
//!   finds expired entries lazily, so single cycles are bursty);
//! * a backend has a failing cycle when its average timeouts per cycle are at
//!   least `timeouts_per_cycle`, its timeout rate (timeouts per new flow) is at
//!   least [`MIN_RATE`], and that rate is at least [`OUTLIER_FACTOR`] times the
//!   rate of the other live backends together and [`OUTLIER_MARGIN`] above it;
//!   a flood spreads over every backend alike and makes no outlier;
//! * `fall` failing cycles in a row take it down for `hold`, after which it is
//!   tried again with a slow start;
//! * at most `max_ejection_percent` of the backends (at least one, never the
//!   last live one) are down by the passive signal at once; further failing
//!   backends are counted as suppressed ejections and left to the active checks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{HealthMode, HealthSettings, PassiveSettings};

/// Consecutive-result state machine of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    ok: u32,
    fail: u32,
    rise: u32,
    fall: u32,
}

impl RiseFall {
    /// Starts up.
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            up: true,
            ok: 0,
            fail: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Records one result; returns the new state if it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.fail = 0;
            self.ok = self.ok.saturating_add(1);
            if !self.up && self.ok >= self.rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.ok = 0;
            self.fail = self.fail.saturating_add(1);
            if self.up && self.fail >= self.fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }

    /// Current verdict.
    pub fn up(&self) -> bool {
        self.up
    }
}

/// Shared verdicts of the active checks, one per backend.
#[derive(Debug)]
pub struct HealthBoard {
    up: Vec<AtomicBool>,
    checks: Vec<AtomicU64>,
    failures: Vec<AtomicU64>,
}

impl HealthBoard {
    /// `n` backends, all up.
    pub fn new(n: usize) -> Self {
        HealthBoard {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            checks: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failures: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Backend `i`'s active verdict (`true` if unknown).
    pub fn up(&self, i: usize) -> bool {
        self.up.get(i).is_none_or(|a| a.load(Ordering::Acquire))
    }

    /// Checks run and failed for backend `i`.
    pub fn counts(&self, i: usize) -> (u64, u64) {
        let get = |v: &Vec<AtomicU64>| v.get(i).map_or(0, |a| a.load(Ordering::Relaxed));
        (get(&self.checks), get(&self.failures))
    }

    fn record(&self, i: usize, ok: bool) {
        if let Some(a) = self.checks.get(i) {
            a.fetch_add(1, Ordering::Relaxed);
        }
        if !ok {
            if let Some(a) = self.failures.get(i) {
                a.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Backend `i` up with no checks counted (a new or removed backend).
    fn reset(&self, i: usize) {
        self.set(i, true);
        for v in [&self.checks, &self.failures] {
            if let Some(a) = v.get(i) {
                a.store(0, Ordering::Relaxed);
            }
        }
    }

    fn set(&self, i: usize, up: bool) {
        if let Some(a) = self.up.get(i) {
            a.store(up, Ordering::Release);
        }
    }
}

/// One check of `target`: `Ok` if healthy, else why not.
pub fn check_once(
    target: SocketAddr,
    mode: &HealthMode,
    timeout: Duration,
    expect: u16,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut s =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    let path = match mode {
        HealthMode::Http { path } => path,
        HealthMode::Tcp | HealthMode::None => return Ok(()),
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let host = match target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    // One write: a server may answer (and close) as soon as the request line arrives.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: marllb-ctrl\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 256];
    let mut got = 0;
    while !buf[..got].contains(&b'\n') && got < buf.len() {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        if Instant::now() >= deadline {
            return Err("timeout".into());
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| "no HTTP status line".to_string())?;
    if status == expect {
        Ok(())
    } else {
        Err(format!("status {status}, expected {expect}"))
    }
}

/// The active checkers: one thread per served backend, started and stopped
/// as backends are added and removed. A stopped thread ends within about
/// 50 ms (or its check's timeout) and is joined by [`Checkers::join`].
#[derive(Debug)]
pub struct Checkers {
    cfg: HealthSettings,
    board: Arc<HealthBoard>,
    stop: Arc<AtomicBool>,
    threads: Vec<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
    stopped: Vec<JoinHandle<()>>,
}

impl Checkers {
    /// Starts one checker thread per target (none with mode `none`); all stop
    /// when `stop` is set.
    pub fn spawn(
        targets: &[SocketAddr],
        cfg: &HealthSettings,
        board: &Arc<HealthBoard>,
        stop: &Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let mut c = Checkers {
            cfg: cfg.clone(),
            board: Arc::clone(board),
            stop: Arc::clone(stop),
            threads: Vec::new(),
            stopped: Vec::new(),
        };
        for (i, &t) in targets.iter().enumerate() {
            c.start(i, t)?;
        }
        Ok(c)
    }

    /// Checks backend `i` at `target` from now on (replacing its checker);
    /// its verdict starts up, its counts at 0.
    pub fn start(&mut self, i: usize, target: SocketAddr) -> std::io::Result<()> {
        self.stop_one(i);
        self.board.reset(i);
        if self.cfg.mode == HealthMode::None {
            return Ok(());
        }
        let own = Arc::new(AtomicBool::new(false));
        let (cfg, board, stop, mine) = (
            self.cfg.clone(),
            Arc::clone(&self.board),
            Arc::clone(&self.stop),
            Arc::clone(&own),
        );
        let h = std::thread::Builder::new()
            .name(format!("health-{i}"))
            .spawn(move || {
                let done = || stop.load(Ordering::Relaxed) || mine.load(Ordering::Relaxed);
                let mut rf = RiseFall::new(cfg.rise, cfg.fall);
                let mut last_err = String::new();
                while !done() {
                    let start = Instant::now();
                    let r = check_once(target, &cfg.mode, cfg.timeout, cfg.expect_status);
                    if done() {
                        break;
                    }
                    board.record(i, r.is_ok());
                    match &r {
                        Err(e) if *e != last_err => {
                            tracing::debug!(backend = %target, error = %e, "health check failed");
                            last_err.clone_from(e);
                        }
                        Ok(()) => last_err.clear(),
                        Err(_) => {}
                    }
                    if let Some(up) = rf.record(r.is_ok()) {
                        board.set(i, up);
                        if up {
                            tracing::info!(backend = %target, "active health check: backend up");
                        } else {
                            tracing::warn!(backend = %target, error = %last_err, "active health check: backend down");
                        }
                    }
                    let next = start + cfg.interval;
                    while !done() {
                        let now = Instant::now();
                        if now >= next {
                            break;
                        }
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    }
                }
            })?;
        if self.threads.len() <= i {
            self.threads.resize_with(i + 1, || None);
        }
        self.threads[i] = Some((own, h));
        Ok(())
    }

    /// Stops checking backend `i` (removed); its verdict is left up.
    pub fn stop_one(&mut self, i: usize) {
        if let Some((flag, h)) = self.threads.get_mut(i).and_then(Option::take) {
            flag.store(true, Ordering::Relaxed);
            self.stopped.push(h);
        }
        self.board.reset(i);
    }

    /// Waits for every checker thread (after the shared `stop` was set).
    pub fn join(self) {
        for h in self
            .threads
            .into_iter()
            .flatten()
            .map(|(_, h)| h)
            .chain(self.stopped)
        {
            let _ = h.join();
        }
    }
}

/// Test hooks.
#[doc(hidden)]
pub mod testing {
    use super::HealthBoard;

    /// Sets backend `i`'s verdict as a checker would.
    pub fn set(board: &HealthBoard, i: usize, up: bool) {
        board.set(i, up);
    }
}

/// Passive state of one backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passive {
    failing: u32,
    down_until: Option<Instant>,
}

impl Passive {
    /// Whether the backend is held down now (clears an expired hold).
    fn held(&mut self, now: Instant) -> bool {
        match self.down_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.down_until = None;
                self.failing = 0;
                false
            }
            None => false,
        }
    }

    /// Takes whether this cycle was a failing one and whether one more
    /// ejection is allowed; returns `true` while the backend is passively down.
    pub fn update(
        &mut self,
        cfg: &PassiveSettings,
        failing: bool,
        may_eject: bool,
        now: Instant,
    ) -> bool {
        if self.held(now) {
            return true;
        }
        if !failing {
            self.failing = 0;
            return false;
        }
        self.failing = self.failing.saturating_add(1);
        if self.failing >= cfg.fall && may_eject {
            self.down_until = Some(now + cfg.hold);
            return true;
        }
        false
    }
}

/// A failing backend's timeouts per new flow are at least this (a backend
/// that stopped answering has close to 1).
pub const MIN_RATE: f64 = 0.5;
/// A backend's timeout rate must be at least this many times the rest's.
pub const OUTLIER_FACTOR: f64 = 2.0;
/// ... and at least this much above it (timeouts per new flow).
pub const OUTLIER_MARGIN: f64 = 0.2;
/// Weight of the newest cycle in the averages.
const EWMA: f64 = 0.05;

/// The passive signal over the whole pool (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PassivePool {
    states: Vec<Passive>,
    flows: Vec<f64>,
    timeouts: Vec<f64>,
    down: Vec<bool>,
    /// Failing backends left up because the ejection cap was reached.
    pub suppressed: u64,
}

impl PassivePool {
    /// For `n` backends.
    pub fn new(n: usize) -> Self {
        Self {
            states: vec![Passive::default(); n],
            flows: vec![0.0; n],
            timeouts: vec![0.0; n],
            down: vec![false; n],
            suppressed: 0,
        }
    }

    /// Grows (or shrinks) to `n` backends; new ones start with no history.
    pub fn resize(&mut self, n: usize) {
        self.states.resize(n, Passive::default());
        self.flows.resize(n, 0.0);
        self.timeouts.resize(n, 0.0);
        self.down.resize(n, false);
    }

    /// Forgets backend `i`'s history (a removed index given to a new backend).
    pub fn reset(&mut self, i: usize) {
        if i < self.states.len() {
            self.states[i] = Passive::default();
            self.flows[i] = 0.0;
            self.timeouts[i] = 0.0;
            self.down[i] = false;
        }
    }

    /// Most backends the signal may hold down at once.
    pub fn cap(cfg: &PassiveSettings, n: usize) -> usize {
        let pct = (n * cfg.max_ejection_percent as usize) / 100;
        pct.max(1).min(n.saturating_sub(1))
    }

    /// One cycle: per-backend deltas of handshake timeouts and new flows, and
    /// whether the active check has the backend up. Returns, per backend,
    /// whether the passive signal holds it down.
    pub fn update(
        &mut self,
        cfg: &PassiveSettings,
        timeouts: &[u64],
        new_flows: &[u64],
        active_up: &[bool],
        now: Instant,
    ) -> &[bool] {
        let n = self.states.len();
        if !cfg.enabled {
            self.down.iter_mut().for_each(|d| *d = false);
            return &self.down;
        }
        for (f, &x) in self.flows.iter_mut().zip(new_flows) {
            *f = (1.0 - EWMA) * *f + EWMA * x as f64;
        }
        for (f, &x) in self.timeouts.iter_mut().zip(timeouts) {
            *f = (1.0 - EWMA) * *f + EWMA * x as f64;
        }
        let avg = &self.timeouts;
        let t = |i: usize| avg.get(i).copied().unwrap_or(0.0);
        let live = |i: usize| active_up.get(i).copied().unwrap_or(true);
        let rate = |tt: f64, ff: f64| tt / ff.max(1.0);
        let (t_all, f_all) = (0..n)
            .filter(|&i| live(i))
            .fold((0.0, 0.0), |(a, b), i| (a + t(i), b + self.flows[i]));
        let cap = Self::cap(cfg, n);
        for i in 0..n {
            let mine = rate(t(i), self.flows[i]);
            let (to, fo) = if live(i) {
                (t_all - t(i), f_all - self.flows[i])
            } else {
                (t_all, f_all)
            };
            let rest = rate(to, fo);
            let failing = t(i) >= cfg.timeouts_per_cycle as f64
                && mine >= MIN_RATE
                && mine >= OUTLIER_FACTOR * rest
                && mine - rest >= OUTLIER_MARGIN;
            let others_down = self
                .down
                .iter()
                .enumerate()
                .filter(|&(j, &d)| j != i && d)
                .count();
            let may_eject = others_down < cap;
            let down = self.states[i].update(cfg, failing, may_eject, now);
            if failing && !down && !may_eject && self.states[i].failing >= cfg.fall {
                self.suppressed += 1;
            }
            self.down[i] = down;
        }
        &self.down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_counts() {
        let mut r = RiseFall::new(2, 3);
        assert!(r.up());
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), Some(false));
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(true), Some(true));
    }

    #[test]
    fn passive_fall_and_hold() {
        let cfg = PassiveSettings {
            enabled: true,
            timeouts_per_cycle: 5,
            fall: 2,
            hold: Duration::from_secs(10),
            max_ejection_percent: 50,
        };
        let t0 = Instant::now();
        let mut p = Passive::default();
        assert!(!p.update(&cfg, true, true, t0));
        assert!(!p.update(&cfg, false, true, t0));
        assert!(!p.update(&cfg, true, true, t0));
        // The cap: the fall count is reached but no ejection is allowed.
        assert!(!p.update(&cfg, true, false, t0));
        assert!(p.update(&cfg, true, true, t0));
        assert!(p.update(&cfg, false, true, t0 + Duration::from_secs(5)));
        assert!(!p.update(&cfg, false, true, t0 + Duration::from_secs(11)));
    }

    fn pool_cfg() -> PassiveSettings {
        PassiveSettings {
            enabled: true,
            timeouts_per_cycle: 5,
            fall: 3,
            hold: Duration::from_secs(10),
            max_ejection_percent: 50,
        }
    }

    /// Runs `cycles` cycles with these per-cycle deltas; returns the down flags.
    fn run_pool(p: &mut PassivePool, t: &[u64], f: &[u64], cycles: usize) -> Vec<bool> {
        let cfg = pool_cfg();
        let up = vec![true; t.len()];
        let now = Instant::now();
        let mut d = Vec::new();
        for _ in 0..cycles {
            d = p.update(&cfg, t, f, &up, now).to_vec();
        }
        d
    }

    #[test]
    fn passive_pool_takes_down_an_outlier() {
        let mut p = PassivePool::new(4);
        // Warm the new-flow averages: 20 flows per cycle each, no timeouts.
        run_pool(&mut p, &[0; 4], &[20; 4], 100);
        // Backend 3 stops answering: all its handshakes time out.
        let d = run_pool(&mut p, &[0, 1, 0, 20], &[20; 4], 40);
        assert_eq!(d, vec![false, false, false, true]);
    }

    #[test]
    fn passive_pool_ignores_a_flood_on_every_backend() {
        let mut p = PassivePool::new(3);
        run_pool(&mut p, &[0; 3], &[20; 3], 100);
        // A spoofed SYN flood: thousands of new flows and timeouts everywhere.
        let d = run_pool(&mut p, &[3000, 3300, 2800], &[3000, 3100, 2900], 200);
        assert_eq!(d, vec![false; 3]);
        assert_eq!(p.suppressed, 0);
    }

    #[test]
    fn passive_pool_ejects_at_most_its_cap_and_never_the_last() {
        let cfg = pool_cfg();
        assert_eq!(PassivePool::cap(&cfg, 1), 0);
        assert_eq!(PassivePool::cap(&cfg, 2), 1);
        assert_eq!(PassivePool::cap(&cfg, 3), 1);
        assert_eq!(PassivePool::cap(&cfg, 10), 5);
        let mut p = PassivePool::new(4);
        run_pool(&mut p, &[0; 4], &[20; 4], 100);
        // Two outliers out of four with a cap of two: both go; then a third
        // outlier is suppressed.
        let d = run_pool(&mut p, &[20, 20, 0, 0], &[20; 4], 40);
        assert_eq!(d, vec![true, true, false, false]);
        let d = run_pool(&mut p, &[0, 0, 20, 0], &[20; 4], 40);
        assert_eq!(d, vec![true, true, false, false]);
        assert!(p.suppressed > 0);
        // One backend alone is never taken down by the passive signal.
        let mut p = PassivePool::new(1);
        run_pool(&mut p, &[0], &[20], 100);
        assert_eq!(run_pool(&mut p, &[20], &[20], 10), vec![false]);
    }

    #[test]
    fn http_check_reads_the_status() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            for (k, s) in l.incoming().take(2).enumerate() {
                let mut s = s.expect("conn");
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                let code = if k == 0 { "200 OK" } else { "503 Unavailable" };
                let _ = write!(s, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let m = HealthMode::Http { path: "/h".into() };
        assert_eq!(check_once(addr, &m, Duration::from_secs(5), 200), Ok(()));
        assert!(check_once(addr, &m, Duration::from_secs(5), 200)
            .expect_err("503")
            .contains("503"));
        t.join().expect("server");
    }
}
