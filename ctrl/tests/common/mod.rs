//! Test harness: a real region under /dev/shm with a data-plane writer thread,
//! the controller binary as a child process, a /metrics scraper, HTTP backends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod onnxgen;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use marllb_core::service::AdminState;
use marllb_core::telemetry::Telemetry;
use marllb_core::MAX_BACKENDS;
use marllb_core::WEIGHT_ONE;
use marllb_shm::layout::BackendEntry;
use marllb_shm::{
    ConfigImage, CreateOptions, DataPlane, DataPlaneConfig, ShmRegion, Source, StatsPublisher,
};
use zerocopy::FromZeros;

/// What the data plane applied at one poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub epoch: u64,
    pub source: Source,
    pub weights: Vec<u32>,
    pub admin: Vec<AdminState>,
}

/// A data plane: creates the region, polls weights and publishes stats every
/// 10 ms on its own thread.
pub struct Dp {
    pub name: String,
    pub backends: usize,
    pub workers: u32,
    /// Active flows each backend reports (per worker).
    pub active: Arc<Vec<AtomicU32>>,
    /// Handshake timeouts added per publication, per backend (passive signal).
    pub timeouts: Arc<Vec<AtomicU32>>,
    /// Every distinct decision, in order.
    pub log: Arc<Mutex<Vec<Applied>>>,
    stop: Arc<AtomicBool>,
    /// While set, the data plane does nothing: no heartbeat, no stats (a hung
    /// or SIGKILLed data plane whose region stays).
    pub frozen: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "marllb-ctrl-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Dp {
    pub fn start(tag: &str, backends: usize, workers: u32) -> Dp {
        Self::start_with(tag, &vec![Ipv4Addr::LOCALHOST; backends], workers)
    }

    /// A data plane whose backends have these addresses.
    pub fn start_with(tag: &str, addrs: &[Ipv4Addr], workers: u32) -> Dp {
        Self::start_named(unique(tag), addrs, workers)
    }

    /// A data plane creating region `name` (replacing one that exists: a
    /// data plane started again).
    pub fn start_named(name: String, addrs: &[Ipv4Addr], workers: u32) -> Dp {
        let backends = addrs.len();
        let mut cfg = ConfigImage::new_zeroed();
        cfg.n_backends = backends as u32;
        // One VIP every backend is a member of.
        cfg.n_vips = 1;
        cfg.vips[0].addr[..4].copy_from_slice(&[198, 18, 255, 1]);
        cfg.vips[0].port = 80;
        for (b, a) in cfg.backends.iter_mut().zip(addrs) {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&a.octets());
            *b = BackendEntry {
                addr,
                mac: [0; 6],
                family: 0,
                admin: 0,
                base_weight: WEIGHT_ONE,
                vip_mask: 1,
            };
        }
        let mut o = CreateOptions::new(&name);
        o.workers = workers;
        o.replace = true;
        o.stats_interval_ms = 10;
        let region = ShmRegion::create(&o, &cfg).expect("create region");
        // Room for backends added at run time.
        let active: Arc<Vec<AtomicU32>> =
            Arc::new((0..MAX_BACKENDS).map(|_| AtomicU32::new(0)).collect());
        let timeouts: Arc<Vec<AtomicU32>> =
            Arc::new((0..MAX_BACKENDS).map(|_| AtomicU32::new(0)).collect());
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let handle = {
            let (active, timeouts, log, stop, frozen) = (
                active.clone(),
                timeouts.clone(),
                log.clone(),
                stop.clone(),
                frozen.clone(),
            );
            std::thread::spawn(move || {
                let view = region.view();
                let mut dp = DataPlane::new(&view, DataPlaneConfig::default());
                let mut pubs: Vec<StatsPublisher> = (0..workers)
                    .map(|w| StatsPublisher::new(&view, w, 10).unwrap())
                    .collect();
                let mut tel: Vec<Box<Telemetry>> = (0..workers)
                    .map(|_| Telemetry::new_box_zeroed().unwrap())
                    .collect();
                let t0 = Instant::now();
                let mut k: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    if frozen.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let now = t0.elapsed().as_nanos() as u64 + 1;
                    let p = dp.poll(now);
                    let new_set = p.backend_set.is_some();
                    let a = Applied {
                        epoch: p.vector.epoch,
                        source: p.source,
                        weights: p.vector.weights().to_vec(),
                        admin: p.vector.admin().to_vec(),
                    };
                    {
                        let mut l = log.lock().unwrap();
                        if l.last() != Some(&a) {
                            l.push(a);
                        }
                    }
                    // A host that always builds the set it is given.
                    if new_set {
                        dp.answer_set(Ok(()));
                        for pb in pubs.iter_mut() {
                            pb.set_backends(dp.backends());
                        }
                    }
                    let backends = dp.backends();
                    let status = dp.status();
                    k = k.wrapping_add(1);
                    for (t, pb) in tel.iter_mut().zip(pubs.iter_mut()) {
                        for i in 0..backends {
                            let c = &mut t.backends[i];
                            c.active_flows = active[i].load(Ordering::Relaxed);
                            c.packets += 100;
                            c.bytes += 100 * 1000;
                            c.new_flows += 2;
                            c.handshake_timeouts += u64::from(timeouts[i].load(Ordering::Relaxed));
                            let s = &mut t.samples[i];
                            s.flow_duration.clear();
                            s.fct.clear();
                            for j in 0..16u32 {
                                s.flow_duration
                                    .offer(1000 * (j + 1) * (i as u32 + 1), k ^ j);
                                s.fct.offer(5000 * (j + 1), k ^ j);
                            }
                        }
                        pb.publish(now, t, &status);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(region);
            })
        };
        Dp {
            name,
            backends,
            workers,
            active,
            timeouts,
            log,
            stop,
            frozen,
            handle: Some(handle),
        }
    }

    pub fn last(&self) -> Option<Applied> {
        self.log.lock().unwrap().last().cloned()
    }

    /// Waits (up to `limit`) until the data plane's last decision satisfies `f`.
    pub fn wait_for(&self, limit: Duration, what: &str, f: impl Fn(&Applied) -> bool) -> Applied {
        let t = Instant::now();
        loop {
            if let Some(a) = self.last() {
                if f(&a) {
                    return a;
                }
            }
            assert!(
                t.elapsed() < limit,
                "timed out waiting for: {what}; last {:?}",
                self.last()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Dp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The controller process.
pub struct Ctrl {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_marllb-ctrl")
}

impl Ctrl {
    /// Starts `marllb-ctrl --shm NAME --prometheus-port P --log-file F` plus `args`;
    /// `toml` (if not empty) is written to a config file passed with --config.
    pub fn start(shm: &str, args: &[&str], toml: &str) -> Ctrl {
        let dir = TempDir::new("ctrl");
        let port = free_port();
        let log = dir.0.join("ctrl.log");
        let mut cmd = Command::new(bin());
        cmd.args(["--shm", shm, "--prometheus-port", &port.to_string()])
            .arg("--log-file")
            .arg(&log)
            .args(args)
            .env("RUST_LOG", "marllb_ctrl=debug,info")
            .stdin(Stdio::null());
        if !toml.is_empty() {
            let p = dir.0.join("ctrl.toml");
            std::fs::write(&p, toml).unwrap();
            cmd.arg("--config").arg(p);
        }
        let err = dir.0.join("stderr.txt");
        cmd.stderr(std::fs::File::create(&err).expect("stderr file"));
        let child = cmd.spawn().expect("spawn marllb-ctrl");
        let c = Ctrl {
            child,
            port,
            log,
            _dir: dir,
        };
        // Up when /metrics answers.
        let t = Instant::now();
        while c.try_scrape().is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "controller did not come up: {}\nstderr: {}",
                c.log_text(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the controller this test started, by kill(2) on its
    /// pid.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).expect("kill(2)");
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("controller did not stop on SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn try_scrape(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    }

    pub fn scrape(&self) -> Metrics {
        Metrics::parse(&self.try_scrape().expect("scrape /metrics"))
    }

    /// Waits until a scrape satisfies `f`.
    pub fn wait_metrics(
        &self,
        limit: Duration,
        what: &str,
        f: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let t = Instant::now();
        loop {
            let m = self.scrape();
            if f(&m) {
                return m;
            }
            assert!(
                t.elapsed() < limit,
                "timed out waiting for metrics: {what}\n{}\nlog:\n{}",
                m.text,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ctrl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed exposition: `name{labels}` → value.
pub struct Metrics {
    pub text: String,
    pub samples: HashMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (k, v) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let v: f64 = match v {
                "+Inf" => f64::INFINITY,
                "NaN" => f64::NAN,
                _ => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            samples.insert(k.to_string(), v);
        }
        Metrics {
            text: text.into(),
            samples,
        }
    }

    /// The value of `name` whose labels contain every `label="value"` in `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(k, _)| {
                let (n, l) = k.split_once('{').unwrap_or((k.as_str(), ""));
                n == name
                    && labels
                        .iter()
                        .all(|(a, b)| l.contains(&format!("{a}=\"{b}\"")))
            })
            .map(|(_, v)| *v)
    }

    pub fn val(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no metric {name} {labels:?} in\n{}", self.text))
    }
}

/// An HTTP backend on loopback answering `GET /health` with 200 until killed;
/// restartable on the same port.
pub struct Backend {
    pub port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(port: u16) -> Backend {
        let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind backend");
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                        let mut b = [0u8; 1024];
                        let n = c.read(&mut b).unwrap_or(0);
                        let req = String::from_utf8_lossy(&b[..n]);
                        let code = if req.starts_with("GET /health ") {
                            "200 OK"
                        } else {
                            "404 Not Found"
                        };
                        let _ = write!(
                            c,
                            "HTTP/1.1 {code}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend {
            port,
            stop,
            handle: Some(handle),
        }
    }

    /// Stops answering and closes the listener (connects are refused).
    pub fn kill(mut self) -> u16 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.port
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
