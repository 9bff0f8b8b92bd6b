//! Open-loop load: the shared request traces (or a constant rate) replayed
//! against the VIP over real TCP, with per-request latency and outcome.
//!
//! Open loop means every request starts at its scheduled time whether or not
//! earlier ones finished (like the MARLLB testbed's replay), so an overloaded
//! backend shows up as latency and failures, not as a slower client. Every loop
//! is bounded: by the trace length, the duration, and a cap on requests in flight
//! (requests beyond it are counted as `overload`, never queued).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// `marllb-loadgen`'s command line, and what a scenario fills in to start it
/// (one definition: the binary parses it with clap, the scenarios build it
/// typed and turn it into arguments with [`LoadArgs::to_args`]).
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = "marllb-loadgen",
    about = "Open-loop HTTP load against the VIP (runs inside the client namespace)"
)]
pub struct LoadArgs {
    /// The VIP and port.
    #[arg(long, default_value_t = SocketAddr::new(crate::VIP.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()), 80))]
    pub vip: SocketAddr,
    /// Seconds of load (0 < D <= 3600).
    #[arg(long, default_value_t = 30.0, value_parser = duration_s, allow_negative_numbers = true)]
    pub duration: f64,
    /// Replay this trace (else a constant rate).
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    /// Trace arrival times are multiplied by this (2.0 = half the rate).
    #[arg(long, default_value_t = 1.0, value_parser = positive, allow_negative_numbers = true)]
    pub time_scale: f64,
    /// Trace work (loops) is multiplied by this.
    #[arg(long, default_value_t = 1.0, value_parser = positive, allow_negative_numbers = true)]
    pub work_scale: f64,
    /// Constant rate, requests per second (without `--trace`).
    #[arg(long, default_value_t = 50.0, value_parser = positive, allow_negative_numbers = true)]
    pub rate: f64,
    /// Busy-loop iterations per request at the constant rate.
    #[arg(long, default_value_t = 100_000)]
    pub loops: u64,
    /// Requests in flight beyond this are counted `overload`, never queued.
    #[arg(long, default_value_t = 2000)]
    pub max_inflight: usize,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
    /// Seconds each connection is held open before its request (0..=60).
    #[arg(long, default_value_t = 0.0, value_parser = hold_s, allow_negative_numbers = true)]
    pub hold: f64,
    /// Connections kept open, idle, after the response, `SHARE:MEAN_S`: that
    /// fraction of the requests (drawn per request index, the same in every
    /// run) keeps its connection an exponential time of mean MEAN_S (at most
    /// [`LINGER_MAX_S`]) before closing it, as a keep-alive client with no
    /// further request does. The latency is the response's; the load
    /// balancer sees the flow end only at the close. `0:1`: none.
    #[arg(long, default_value = "0:1", value_parser = parse_linger)]
    pub linger: Linger,
    /// A line per second on stderr.
    #[arg(long)]
    pub progress: bool,
    /// Backend capacities for the summary's Jain index, `ID=CPUS,..`.
    #[arg(long, value_parser = parse_capacities, default_value = "")]
    pub capacities: Capacities,
    /// Write every request's record here (JSON).
    #[arg(long)]
    pub records: Option<std::path::PathBuf>,
}

/// The longest a connection lingers, s (the draws are exponential; the cap
/// bounds how long a run's last connections outlive its replay).
pub const LINGER_MAX_S: f64 = 30.0;

/// `--linger SHARE:MEAN_S`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linger {
    /// Fraction of the requests whose connection lingers, in [0, 1].
    pub share: f64,
    /// Mean idle time of a lingering connection, s, in (0, 60].
    pub mean_s: f64,
}

impl std::fmt::Display for Linger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.share, self.mean_s)
    }
}

/// Parses `SHARE:MEAN_S` (the `--linger` flag's value).
pub fn parse_linger(s: &str) -> std::result::Result<Linger, String> {
    let bad = || format!("{s}: expected SHARE:MEAN_S, SHARE in [0, 1], MEAN_S in (0, 60]");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let l = Linger {
        share: a.trim().parse().map_err(|_| bad())?,
        mean_s: b.trim().parse().map_err(|_| bad())?,
    };
    ((0.0..=1.0).contains(&l.share) && l.mean_s > 0.0 && l.mean_s <= 60.0)
        .then_some(l)
        .ok_or_else(bad)
}

impl Linger {
    /// No connection lingers.
    pub const NONE: Self = Self {
        share: 0.0,
        mean_s: 1.0,
    };

    /// How long request `index`'s connection stays open after its response
    /// (zero for most when `share` is small), the same for a given index in
    /// every run.
    pub fn idle(&self, index: usize) -> Duration {
        // Two uniforms in (0, 1) from the core's generator seeded by the index.
        let mut rng = marllb_core::hash::SplitMix64::new(index as u64 ^ 0x6c69_6e67);
        let mut unit = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        if unit() >= self.share {
            return Duration::ZERO;
        }
        let t = -self.mean_s * unit().ln();
        Duration::from_secs_f64(t.clamp(0.0, LINGER_MAX_S))
    }
}

/// `ID=CPUS,..` as given to `--capacities`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Capacities(pub Vec<(String, f64)>);

impl std::fmt::Display for Capacities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<String> = self.0.iter().map(|(k, c)| format!("{k}={c}")).collect();
        f.write_str(&v.join(","))
    }
}

impl Capacities {
    /// The configured CPUs of `specs`, by backend id.
    pub fn of(specs: &[crate::backend::BackendSpec]) -> Self {
        Self(specs.iter().map(|s| (s.id.clone(), s.cpus)).collect())
    }
}

impl std::str::FromStr for Capacities {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        parse_capacities(s)
    }
}

fn parse_capacities(s: &str) -> std::result::Result<Capacities, String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{kv:?} is not ID=CPUS"))?;
            let c: f64 = v.parse().map_err(|e| format!("{kv:?}: {e}"))?;
            if k.is_empty() || !(c.is_finite() && c > 0.0) {
                return Err(format!("{kv:?}: an id and a positive capacity"));
            }
            Ok((k.to_string(), c))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Capacities)
}

fn number(s: &str) -> std::result::Result<f64, String> {
    s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"))
}

/// A finite number in `(lo, hi]`: the value parser of the testbed's float
/// flags (loadgen's and `marllb-testbed demo`'s), one wording for all.
pub fn float_in(s: &str, lo: f64, hi: f64) -> std::result::Result<f64, String> {
    let x = number(s)?;
    if x.is_finite() && x > lo && x <= hi {
        Ok(x)
    } else if lo == 0.0 && hi.is_infinite() {
        Err(format!("{s}: must be a positive number"))
    } else {
        Err(format!("{s}: must be in ({lo}, {hi}]"))
    }
}

fn positive(s: &str) -> std::result::Result<f64, String> {
    float_in(s, 0.0, f64::INFINITY)
}

fn duration_s(s: &str) -> std::result::Result<f64, String> {
    float_in(s, 0.0, 3600.0)
}

fn hold_s(s: &str) -> std::result::Result<f64, String> {
    let x = number(s)?;
    if (0.0..=60.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{s}: must be in [0, 60]"))
    }
}

impl Default for LoadArgs {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["marllb-loadgen"])
    }
}

impl LoadArgs {
    /// A constant rate of `rate` requests per second of `loops` each, for
    /// `duration` seconds, with `capacities` for the summary.
    pub fn constant(rate: f64, loops: u64, duration: f64, capacities: &str) -> Result<Self> {
        Ok(Self {
            rate,
            loops,
            duration,
            capacities: parse_capacities(capacities).map_err(anyhow::Error::msg)?,
            ..Self::default()
        })
    }

    /// The command line that parses back into `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--vip".to_string(),
            self.vip.to_string(),
            "--duration".into(),
            self.duration.to_string(),
            "--time-scale".into(),
            self.time_scale.to_string(),
            "--work-scale".into(),
            self.work_scale.to_string(),
            "--rate".into(),
            self.rate.to_string(),
            "--loops".into(),
            self.loops.to_string(),
            "--max-inflight".into(),
            self.max_inflight.to_string(),
            "--timeout".into(),
            self.timeout.to_string(),
            "--hold".into(),
            self.hold.to_string(),
            "--linger".into(),
            self.linger.to_string(),
            "--capacities".into(),
            self.capacities.to_string(),
        ];
        if let Some(t) = &self.trace {
            a.extend(["--trace".into(), t.to_string_lossy().into_owned()]);
        }
        if let Some(r) = &self.records {
            a.extend(["--records".into(), r.to_string_lossy().into_owned()]);
        }
        if self.progress {
            a.push("--progress".into());
        }
        a
    }
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Seconds from the start.
    pub at: f64,
    /// Busy-loop iterations to ask for.
    pub loops: u64,
}

/// Reads a shared trace (`time<TAB>/dummy.php/?n=LOOPS`, header `time query`) or
/// a plain CSV (`time,cpu_seconds`, converted with `loops_per_cpu_second`),
/// applying `time_scale` (arrival times are multiplied by it: 2.0 = half the rate)
/// and `work_scale` (loops are multiplied by it), keeping arrivals before
/// `duration` seconds.
pub fn load_trace(
    path: &Path,
    time_scale: f64,
    work_scale: f64,
    duration: f64,
    loops_per_cpu_second: f64,
) -> Result<Vec<Request>> {
    if !(time_scale > 0.0 && work_scale > 0.0) {
        bail!("time and work scales must be positive");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("time") || line.starts_with('#') {
            continue;
        }
        let (t, rest) = line
            .split_once(['\t', ','])
            .with_context(|| format!("{}:{}: expected two columns", path.display(), i + 1))?;
        let t: f64 = t
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: bad time", path.display(), i + 1))?;
        let loops = if let Some(n) = rest.split("n=").nth(1) {
            n.trim()
                .parse::<f64>()
                .with_context(|| format!("{}:{}: bad loop count", path.display(), i + 1))?
        } else {
            rest.trim()
                .parse::<f64>()
                .with_context(|| format!("{}:{}: bad job size", path.display(), i + 1))?
                * loops_per_cpu_second
        };
        let at = t * time_scale;
        if at >= duration {
            break;
        }
        out.push(Request {
            at,
            loops: (loops * work_scale).round().max(0.0) as u64,
        });
    }
    Ok(out)
}

/// Requests at a constant rate.
pub fn constant_rate(rate: f64, loops: u64, duration: f64) -> Vec<Request> {
    let n = (rate * duration).floor().max(0.0) as usize;
    (0..n)
        .map(|i| Request {
            at: i as f64 / rate,
            loops,
        })
        .collect()
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// HTTP 200 with a backend id.
    Ok,
    /// Connection refused.
    Refused,
    /// No route: an ICMP destination unreachable (host or network) answered
    /// the SYN, or the client itself had no route.
    Unreachable,
    /// Connection reset.
    Reset,
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// No complete answer within the request timeout.
    Timeout,
    /// An answer that is not a 200 from a backend.
    BadResponse,
    /// Not sent: too many requests in flight.
    Overload,
}

/// One request's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Scheduled start (s from the beginning).
    pub at: f64,
    /// Latency (ms), connect to end of response.
    pub latency_ms: f64,
    /// Outcome.
    pub outcome: Outcome,
    /// Backend that answered (`be3`), if any.
    pub backend: Option<String>,
    /// Client source port of the connection (identifies it in captures).
    pub sport: u16,
    /// For a failure, the step and the error the client saw (`connect:
    /// Network is unreachable (os error 101)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When `connect` returned (UNIX seconds, see [`unix_now`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_unix: Option<f64>,
    /// With a hold, when the rest of the request was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_sent_unix: Option<f64>,
    /// When the outcome was known (the answer read, or the error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_unix: Option<f64>,
}

impl Record {
    /// It did not end with a 200 from a backend.
    pub fn failed(&self) -> bool {
        self.outcome != Outcome::Ok
    }

    /// Backend `id` answered it.
    pub fn served_by(&self, id: &str) -> bool {
        self.backend.as_deref() == Some(id)
    }

    /// It was in flight at `t` (seconds from the beginning): started before,
    /// ended after (its latency counts from its start).
    pub fn spans(&self, t: f64) -> bool {
        self.at < t && self.at + self.latency_ms / 1e3 > t
    }
}

fn classify(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Outcome::Refused,
        HostUnreachable | NetworkUnreachable => Outcome::Unreachable,
        ConnectionReset | ConnectionAborted | BrokenPipe => Outcome::Reset,
        TimedOut | WouldBlock => Outcome::Timeout,
        _ => Outcome::BadResponse,
    }
}

/// Wall-clock time, UNIX seconds: comparable with what another process (the
/// scenario that changes the network) reads from the same clock.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long a request waits for its connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A record of a request that has not ended yet (the caller sets the times).
fn pending() -> Record {
    Record {
        at: 0.0,
        latency_ms: 0.0,
        outcome: Outcome::BadResponse,
        backend: None,
        sport: 0,
        error: None,
        connected_unix: None,
        rest_sent_unix: None,
        done_unix: None,
    }
}

/// One request on its own connection. With a non-zero `hold`, the request is
/// sent in two parts `hold` apart (the connection is established and idle in
/// between), so that its later packets cross whatever happens meanwhile.
///
/// The connection is returned open after an answered request, for the caller
/// to close (at once, or after it lingered).
fn one(
    vip: SocketAddr,
    loops: u64,
    timeout: Duration,
    hold: Duration,
) -> (Record, Option<TcpStream>) {
    let mut r = pending();
    let fail = |mut r: Record, step: &str, e: &std::io::Error| {
        r.outcome = classify(e);
        r.error = Some(format!("{step}: {e}"));
        r
    };
    let mut s = match TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let mut r = fail(r, "connect", &e);
            if r.outcome == Outcome::Timeout {
                r.outcome = Outcome::ConnectTimeout;
            }
            return (r, None);
        }
    };
    r.connected_unix = Some(unix_now());
    r.sport = s.local_addr().map_or(0, |a| a.port());
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!(
        "GET /dummy.php/?n={loops} HTTP/1.0\r\nHost: {}\r\n\r\n",
        vip.ip()
    );
    let (first, rest) = req.split_at(if hold.is_zero() { req.len() } else { 4 });
    if let Err(e) = s.write_all(first.as_bytes()) {
        return (fail(r, "write", &e), None);
    }
    if !hold.is_zero() {
        std::thread::sleep(hold);
        r.rest_sent_unix = Some(unix_now());
        if let Err(e) = s.write_all(rest.as_bytes()) {
            return (fail(r, "write after hold", &e), None);
        }
    }
    let mut buf = Vec::with_capacity(512);
    if let Err(e) = s.read_to_end(&mut buf) {
        return (fail(r, "read", &e), None);
    }
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    match body.split_whitespace().next() {
        Some(id) if ok && id.starts_with("be") => {
            r.outcome = Outcome::Ok;
            r.backend = Some(id.to_string());
        }
        _ => {
            let head: String = text.chars().take(60).collect();
            r.error = Some(format!("not a 200 from a backend: {head:?}"));
        }
    }
    (r, Some(s))
}

/// One second of progress, as `--progress` prints it (a JSON line on stderr).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// Seconds since the start.
    pub t: f64,
    /// Requests completed ok in the last second.
    pub ok: usize,
    /// Requests failed in the last second.
    pub failed: usize,
    /// Latency p95 of the last second's ok requests (ms).
    pub p95_ms: f64,
    /// Requests in flight now.
    pub inflight: usize,
    /// Ok requests per backend in the last second.
    pub per_backend: std::collections::BTreeMap<String, usize>,
}

/// Replays `requests` against `vip` open-loop; returns one record per request.
/// Each request is held open `hold` before its second part is sent (see
/// [`one`]), and its connection kept open after the response as `linger`
/// draws for its index. With `progress`, prints a [`Progress`] JSON line to
/// stderr every second.
pub fn replay(
    requests: &[Request],
    vip: SocketAddr,
    max_inflight: usize,
    timeout: Duration,
    hold: Duration,
    linger: Linger,
    progress: bool,
) -> Vec<Record> {
    let records = Arc::new(Mutex::new(Vec::with_capacity(requests.len())));
    let inflight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = progress.then(|| {
        let (records, inflight, done) = (
            Arc::clone(&records),
            Arc::clone(&inflight),
            Arc::clone(&done),
        );
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let fresh: Vec<Record> = match records.lock() {
                    Ok(v) => v[seen.min(v.len())..].to_vec(),
                    Err(_) => break,
                };
                seen += fresh.len();
                let mut lat: Vec<f64> = fresh
                    .iter()
                    .filter(|r| r.outcome == Outcome::Ok)
                    .map(|r| r.latency_ms)
                    .collect();
                lat.sort_by(f64::total_cmp);
                let mut per_backend = std::collections::BTreeMap::new();
                for r in &fresh {
                    if let Some(b) = &r.backend {
                        *per_backend.entry(b.clone()).or_insert(0) += 1;
                    }
                }
                let p = Progress {
                    t: start.elapsed().as_secs_f64(),
                    ok: lat.len(),
                    failed: fresh.iter().filter(|r| r.outcome != Outcome::Ok).count(),
                    p95_ms: pct(&lat, 0.95),
                    inflight: inflight.load(Ordering::Relaxed),
                    per_backend,
                };
                if let Ok(line) = serde_json::to_string(&p) {
                    eprintln!("{line}");
                }
            }
        })
    });
    let mut handles = Vec::new();
    for (index, r) in requests.iter().enumerate() {
        let due = start + Duration::from_secs_f64(r.at);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if inflight.load(Ordering::Relaxed) >= max_inflight {
            if let Ok(mut v) = records.lock() {
                v.push(Record {
                    at: r.at,
                    outcome: Outcome::Overload,
                    ..pending()
                });
            }
            continue;
        }
        inflight.fetch_add(1, Ordering::Relaxed);
        let (records2, inflight2, r) = (Arc::clone(&records), Arc::clone(&inflight), *r);
        let idle = linger.idle(index);
        let h = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let t = Instant::now();
                let (mut rec, conn) = one(vip, r.loops, timeout, hold);
                rec.done_unix = Some(unix_now());
                rec.at = r.at;
                rec.latency_ms = t.elapsed().as_secs_f64() * 1e3;
                if let Ok(mut v) = records2.lock() {
                    v.push(rec);
                }
                inflight2.fetch_sub(1, Ordering::Relaxed);
                if let Some(c) = conn {
                    // Idle, open: the balancer sees the client's FIN only now.
                    if !idle.is_zero() {
                        std::thread::sleep(idle);
                    }
                    let _ = c.shutdown(Shutdown::Both);
                }
            });
        match h {
            Ok(h) => handles.push(h),
            Err(_) => {
                inflight.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // Reap finished threads now and then so handles stay bounded.
        if handles.len() > 4096 {
            handles.retain(|h| !h.is_finished());
        }
    }
    for h in handles {
        let _ = h.join();
    }
    done.store(true, Ordering::Relaxed);
    if let Some(m) = monitor {
        let _ = m.join();
    }
    let mut v = records.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort_by(|a, b| a.at.total_cmp(&b.at));
    v
}

/// What a run produced, as printed and compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Requests scheduled.
    pub requests: usize,
    /// Answered with 200.
    pub ok: usize,
    /// Not answered with 200 (all reasons but overload).
    pub failed: usize,
    /// Connection resets among the failures.
    pub resets: usize,
    /// Not sent (too many in flight).
    pub overload: usize,
    /// Latency of the ok requests, ms.
    pub latency_mean_ms: f64,
    /// 95th percentile, ms.
    pub latency_p95_ms: f64,
    /// 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Requests answered per backend id.
    pub per_backend: std::collections::BTreeMap<String, usize>,
    /// Jain's fairness index of per-backend load relative to capacity.
    pub jain: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[rank]
}

pub use marllb_policy::jain;

/// A ratio of two latency quantiles with its 95 % bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileRatio {
    /// The quantile of `a` over the quantile of `b`.
    pub value: f64,
    /// 2.5 % quantile of the bootstrap distribution.
    pub low: f64,
    /// 97.5 % quantile of the bootstrap distribution.
    pub high: f64,
}

/// Quantile `q` of the latencies `a` over that of `b`, with a 95 % bootstrap
/// interval: 2 000 rounds, each side resampled with replacement on its own
/// (two runs' requests are not paired), from a fixed seed so a report is
/// reproducible. `None` when either side is empty or `b`'s quantile is 0.
pub fn quantile_ratio(a: &[f64], b: &[f64], q: f64) -> Option<QuantileRatio> {
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (sa, sb) = (sorted(a), sorted(b));
    let ratio = |x: &[f64], y: &[f64]| {
        let d = pct(y, q);
        (d > 0.0).then(|| pct(x, q) / d)
    };
    let value = ratio(&sa, &sb)?;
    let mut rng = marllb_core::hash::SplitMix64::new(0x9e95_b007);
    let mut draw = |v: &[f64]| {
        let mut r: Vec<f64> = (0..v.len())
            .map(|_| v[(rng.next_u64() % v.len() as u64) as usize])
            .collect();
        r.sort_by(f64::total_cmp);
        r
    };
    let mut boots: Vec<f64> = (0..2000)
        .filter_map(|_| {
            let (x, y) = (draw(&sa), draw(&sb));
            ratio(&x, &y)
        })
        .collect();
    boots.sort_by(f64::total_cmp);
    Some(QuantileRatio {
        value,
        low: pct(&boots, 0.025),
        high: pct(&boots, 0.975),
    })
}

/// Summarizes records; `capacities` maps backend id to its CPU share, so the
/// fairness is of load relative to capacity (all backends listed count, also
/// those that got nothing).
pub fn summarize(records: &[Record], capacities: &[(String, f64)]) -> Summary {
    let mut lat: Vec<f64> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .map(|r| r.latency_ms)
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut per_backend = std::collections::BTreeMap::new();
    for (id, _) in capacities {
        per_backend.insert(id.clone(), 0usize);
    }
    for r in records {
        if let Some(b) = &r.backend {
            *per_backend.entry(b.clone()).or_insert(0) += 1;
        }
    }
    let util: Vec<f64> = capacities
        .iter()
        .map(|(id, c)| per_backend.get(id).copied().unwrap_or(0) as f64 / c.max(1e-9))
        .collect();
    let ok = lat.len();
    let overload = records
        .iter()
        .filter(|r| r.outcome == Outcome::Overload)
        .count();
    Summary {
        requests: records.len(),
        ok,
        failed: records.len() - ok - overload,
        resets: records
            .iter()
            .filter(|r| r.outcome == Outcome::Reset)
            .count(),
        overload,
        latency_mean_ms: if ok == 0 {
            0.0
        } else {
            lat.iter().sum::<f64>() / ok as f64
        },
        latency_p95_ms: pct(&lat, 0.95),
        latency_p99_ms: pct(&lat, 0.99),
        per_backend,
        jain: jain(&util),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_in_takes_the_half_open_range_and_names_it() {
        assert_eq!(float_in("600", 0.0, 600.0), Ok(600.0));
        assert_eq!(float_in("0.5", 0.0, 1.0), Ok(0.5));
        assert_eq!(
            float_in("0", 0.0, 600.0),
            Err("0: must be in (0, 600]".into())
        );
        assert_eq!(
            float_in("601", 0.0, 600.0),
            Err("601: must be in (0, 600]".into())
        );
        assert_eq!(
            float_in("NaN", 0.0, 600.0),
            Err("NaN: must be in (0, 600]".into())
        );
        assert_eq!(
            float_in("-1", 0.0, f64::INFINITY),
            Err("-1: must be a positive number".into())
        );
        assert_eq!(
            float_in("inf", 0.0, f64::INFINITY),
            Err("inf: must be a positive number".into())
        );
        assert!(float_in("x", 0.0, 1.0).is_err_and(|e| e.starts_with("\"x\":")));
    }

    #[test]
    fn load_args_round_trip_through_the_command_line() {
        use clap::Parser;
        let a = LoadArgs {
            trace: Some("/t/rate_150.csv".into()),
            time_scale: 2.0,
            work_scale: 0.4,
            hold: 1.5,
            linger: Linger {
                share: 0.5,
                mean_s: 5.0,
            },
            timeout: 7,
            progress: true,
            records: Some("/tmp/r.json".into()),
            ..LoadArgs::constant(12.5, 3000, 9.0, "be0=1,be1=0.5").unwrap()
        };
        let argv: Vec<String> = std::iter::once("marllb-loadgen".to_string())
            .chain(a.to_args())
            .collect();
        assert_eq!(LoadArgs::try_parse_from(&argv).unwrap(), a);
        assert_eq!(
            a.capacities.0,
            vec![("be0".to_string(), 1.0), ("be1".to_string(), 0.5)]
        );
        // The defaults are the binary's own.
        let d = LoadArgs::default();
        assert_eq!(d.vip.to_string(), format!("{}:80", crate::VIP));
        assert_eq!((d.duration, d.rate, d.max_inflight), (30.0, 50.0, 2000));
    }

    #[test]
    fn bad_load_arguments_are_refused_naming_the_flag() {
        use clap::Parser;
        for (argv, flag) in [
            (vec!["--duration", "0"], "--duration"),
            (vec!["--duration", "4000"], "--duration"),
            (vec!["--hold", "-1"], "--hold"),
            (vec!["--rate", "x"], "--rate"),
            (vec!["--capacities", "be0"], "--capacities"),
            (vec!["--capacities", "be0=-2"], "--capacities"),
            (vec!["--rat", "5"], "--rat"),
            (vec!["--linger", "0.5"], "--linger"),
            (vec!["--linger", "1.5:5"], "--linger"),
            (vec!["--linger", "0.5:0"], "--linger"),
            (vec!["--linger", "0.5:61"], "--linger"),
        ] {
            let e = LoadArgs::try_parse_from(std::iter::once("marllb-loadgen").chain(argv.clone()))
                .expect_err(&format!("{argv:?}"))
                .to_string();
            assert!(e.contains(flag), "{argv:?}: {e}");
        }
        assert!(LoadArgs::constant(1.0, 1, 1.0, "be0=zero").is_err());
    }

    #[test]
    fn lingering_connections_are_drawn_per_request_and_bounded() {
        let l = Linger {
            share: 0.4,
            mean_s: 3.0,
        };
        let d: Vec<f64> = (0..20_000).map(|i| l.idle(i).as_secs_f64()).collect();
        // The same index, the same draw, in every run.
        assert_eq!(l.idle(17), l.idle(17));
        let kept: Vec<f64> = d.iter().copied().filter(|x| *x > 0.0).collect();
        let share = kept.len() as f64 / d.len() as f64;
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        assert!((share - 0.4).abs() < 0.02, "share {share}");
        assert!((mean - 3.0).abs() < 0.15, "mean {mean}");
        assert!(d.iter().all(|x| *x <= LINGER_MAX_S));
        let none = LoadArgs::default().linger;
        assert!((0..1000).all(|i| none.idle(i).is_zero()));
        let long = Linger {
            share: 1.0,
            mean_s: 60.0,
        };
        assert!((0..1000).any(|i| long.idle(i).as_secs_f64() == LINGER_MAX_S));
    }

    #[test]
    fn shared_trace_is_read_and_scaled() {
        let p = std::env::temp_dir().join(format!("marllb-trace-{}.tsv", std::process::id()));
        std::fs::write(
            &p,
            "time\tquery\n0.5\t/dummy.php/?n=1000\n1.5\t/dummy.php/?n=3000\n9\t/dummy.php/?n=1\n",
        )
        .expect("write");
        let r = load_trace(&p, 2.0, 0.5, 5.0, 1.0).expect("trace");
        assert_eq!(
            r,
            vec![
                Request {
                    at: 1.0,
                    loops: 500
                },
                Request {
                    at: 3.0,
                    loops: 1500
                }
            ]
        );
        std::fs::write(&p, "0.25,0.002\n").expect("write");
        let r = load_trace(&p, 1.0, 1.0, 5.0, 1e6).expect("csv");
        assert_eq!(
            r,
            vec![Request {
                at: 0.25,
                loops: 2000
            }]
        );
        std::fs::write(&p, "0.25\n").expect("write");
        assert!(load_trace(&p, 1.0, 1.0, 5.0, 1e6).is_err());
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn the_shipped_traces_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/traces");
        for f in ["rate_150.csv", "rate_200.csv", "rate_350.csv"] {
            let p = dir.join(f);
            if !p.exists() {
                continue; // the traces live beside the repository, not in it
            }
            let r = load_trace(&p, 1.0, 1.0, 60.0, 1.0).expect("trace");
            assert!(r.len() > 1000, "{f}: {}", r.len());
        }
    }

    #[test]
    fn a_quantile_ratio_has_an_interval_around_it() {
        let b: Vec<f64> = (1..=400).map(f64::from).collect();
        // The same latencies: 1.0, and the interval straddles it.
        let same = quantile_ratio(&b, &b, 0.95).expect("ratio");
        assert!((same.value - 1.0).abs() < 1e-12, "{same:?}");
        assert!(same.low < 1.0 && same.high > 1.0, "{same:?}");
        // Twice as slow: 2.0, the interval around 2 and clear of 1.
        let a: Vec<f64> = b.iter().map(|x| 2.0 * x).collect();
        let r = quantile_ratio(&a, &b, 0.95).expect("ratio");
        assert!((r.value - 2.0).abs() < 1e-12, "{r:?}");
        assert!(
            r.low > 1.5 && r.low <= 2.0 && r.high >= 2.0 && r.high < 2.5,
            "{r:?}"
        );
        // Fewer samples, a wider interval.
        let small: Vec<f64> = (1..=40).map(f64::from).collect();
        let w = quantile_ratio(&small, &small, 0.95).expect("ratio");
        assert!(w.high - w.low > same.high - same.low, "{w:?} {same:?}");
        assert_eq!(quantile_ratio(&[], &b, 0.95), None);
        assert_eq!(quantile_ratio(&b, &[0.0; 4], 0.95), None);
    }

    #[test]
    fn summary_and_jain() {
        assert!((jain([1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((jain([1.0, 0.0]) - 0.5).abs() < 1e-12);
        let rec = |b: &str, l: f64| Record {
            at: 0.0,
            latency_ms: l,
            outcome: Outcome::Ok,
            backend: Some(b.into()),
            sport: 1,
            ..pending()
        };
        let mut v = vec![
            rec("be0", 10.0),
            rec("be1", 20.0),
            rec("be1", 30.0),
            rec("be1", 40.0),
        ];
        v.push(Record {
            outcome: Outcome::Reset,
            backend: None,
            ..rec("x", 0.0)
        });
        let s = summarize(&v, &[("be0".into(), 1.0), ("be1".into(), 3.0)]);
        assert_eq!((s.ok, s.failed, s.resets), (4, 1, 1));
        assert_eq!(s.latency_mean_ms, 25.0);
        assert_eq!(s.latency_p99_ms, 40.0);
        assert!((s.jain - 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_rate_is_bounded() {
        let r = constant_rate(10.0, 5, 2.0);
        assert_eq!(r.len(), 20);
        assert_eq!(r[19].at, 1.9);
    }
}
