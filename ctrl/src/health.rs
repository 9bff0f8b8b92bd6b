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
//! Every cycle, a backend whose handshake timeouts (SYNs the data plane sent it
//! that never completed, summed over workers) grew by at least
//! `timeouts_per_cycle` had a failing cycle; `fall` failing cycles in a row take
//! it down for `hold`, after which it is tried again with a slow start.

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

/// Starts one checker thread per target (none with mode `none`). Threads stop
/// within about 50 ms of `stop` being set.
pub fn spawn_checkers(
    targets: &[SocketAddr],
    cfg: &HealthSettings,
    board: &Arc<HealthBoard>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    if cfg.mode == HealthMode::None {
        return Ok(Vec::new());
    }
    let mut handles = Vec::new();
    for (i, &target) in targets.iter().enumerate() {
        let (cfg, board, stop) = (cfg.clone(), Arc::clone(board), Arc::clone(stop));
        let h = std::thread::Builder::new()
            .name(format!("health-{i}"))
            .spawn(move || {
                let mut rf = RiseFall::new(cfg.rise, cfg.fall);
                let mut last_err = String::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let r = check_once(target, &cfg.mode, cfg.timeout, cfg.expect_status);
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
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now >= next {
                            break;
                        }
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    }
                }
            })?;
        handles.push(h);
    }
    Ok(handles)
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
    /// Takes one cycle's handshake-timeout delta; returns `true` while the
    /// backend is passively down.
    pub fn update(&mut self, cfg: &PassiveSettings, timeouts: u64, now: Instant) -> bool {
        if !cfg.enabled {
            return false;
        }
        if let Some(t) = self.down_until {
            if now < t {
                return true;
            }
            self.down_until = None;
            self.failing = 0;
        }
        if timeouts >= cfg.timeouts_per_cycle {
            self.failing += 1;
            if self.failing >= cfg.fall {
                self.down_until = Some(now + cfg.hold);
                return true;
            }
        } else {
            self.failing = 0;
        }
        false
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
        };
        let t0 = Instant::now();
        let mut p = Passive::default();
        assert!(!p.update(&cfg, 5, t0));
        assert!(!p.update(&cfg, 4, t0));
        assert!(!p.update(&cfg, 9, t0));
        assert!(p.update(&cfg, 9, t0));
        assert!(p.update(&cfg, 0, t0 + Duration::from_secs(5)));
        assert!(!p.update(&cfg, 0, t0 + Duration::from_secs(11)));
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
