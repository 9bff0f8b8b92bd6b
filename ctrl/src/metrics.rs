//! Prometheus metrics (prometheus-client) and a minimal HTTP endpoint serving
//! them at `/metrics` (OpenMetrics text) on a std `TcpListener`.
//!
//! All names carry the `marllb_` prefix; counters end in `_total`. The cycle
//! thread updates the metric handles (atomics); the endpoint thread encodes the
//! registry on each scrape. The full list is in the README.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Float gauge.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Labels of a per-backend series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Index in the data plane's backend table.
    pub index: String,
    /// Address.
    pub backend: String,
}

/// Labels of a per-VIP series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    /// Address.
    pub vip: String,
}

/// Labels of the active-policy series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Agent that computes the weights now (`sac-gru`, `sed`, ...).
    pub agent: String,
    /// Model file (empty for heuristics).
    pub model: String,
}

/// Labels with a result or reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Result (`accepted`, `refused`) or reason.
    pub result: String,
}

/// Labels of an operator change.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// Command (`drain`, `undrain`, `down`, `up`, `weight`, `policy`, `model-reload`).
    pub command: String,
    /// `accepted` or `refused`.
    pub result: String,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    /// Registry (encoded on scrape).
    pub registry: Registry,
    /// Weight published per backend (1.0 = Q16.16 one).
    pub weight: Family<BackendLabels, FGauge>,
    /// 1 if the backend is healthy (active and passive), else 0.
    pub health: Family<BackendLabels, Gauge>,
    /// Admin state published (0 active, 1 draining, 2 down).
    pub admin: Family<BackendLabels, Gauge>,
    /// Active flows (summed over workers).
    pub active_flows: Family<BackendLabels, Gauge>,
    /// New flows per second.
    pub new_flows_rate: Family<BackendLabels, FGauge>,
    /// Flow duration average, s.
    pub flow_duration_avg: Family<BackendLabels, FGauge>,
    /// Flow duration p95, s.
    pub flow_duration_p95: Family<BackendLabels, FGauge>,
    /// FCT average, s.
    pub fct_avg: Family<BackendLabels, FGauge>,
    /// FCT p95, s.
    pub fct_p95: Family<BackendLabels, FGauge>,
    /// Packets per second to the backend.
    pub backend_pps: Family<BackendLabels, FGauge>,
    /// Handshake timeouts (monotonic, summed over workers).
    pub handshake_timeouts: Family<BackendLabels, Gauge>,
    /// Jain fairness of per-backend load (active flows over backends not down).
    pub jain: FGauge,
    /// Packets per second over all backends.
    pub throughput_pps: FGauge,
    /// Bits per second over all backends.
    pub throughput_bps: FGauge,
    /// Inference latency.
    pub inference_latency: Histogram,
    /// Whole-cycle latency (stats read to publish).
    pub cycle_latency: Histogram,
    /// Cycles run.
    pub cycles: Counter,
    /// Cycles whose policy step exceeded the budget (last weights kept).
    pub overruns: Counter,
    /// Ticks missed because a cycle ran past the next one.
    pub missed_ticks: Counter,
    /// Cycles whose policy step failed, by reason (last weights kept).
    pub failures: Family<ResultLabels, Counter>,
    /// Workers whose stats could not be read.
    pub stats_read_errors: Counter,
    /// Seconds since the data-plane heartbeat last changed (controller's clock).
    pub dp_heartbeat_age: FGauge,
    /// 1 while some worker reports the data-plane watchdog fallback.
    pub dp_fallback: Gauge,
    /// Epoch of the last published weights.
    pub epoch: Gauge,
    /// 1 for the policy in use.
    pub policy: Family<PolicyLabels, Gauge>,
    /// Model reloads by result.
    pub reloads: Family<ResultLabels, Counter>,
    /// 1 while every backend is down.
    pub all_down: Gauge,
    /// 1 while the VIP is announced over BGP (with BGP configured).
    pub bgp_announced: Family<VipLabels, Gauge>,
    /// Drops for lack of a live backend, summed over workers (monotonic).
    pub no_live_backend_drops: Gauge,
    /// Operator changes through the runtime API, by command and result.
    pub operator_changes: Family<ChangeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers everything.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("marllb");
        let m = Metrics {
            registry: Registry::default(),
            weight: Family::default(),
            health: Family::default(),
            admin: Family::default(),
            active_flows: Family::default(),
            new_flows_rate: Family::default(),
            flow_duration_avg: Family::default(),
            flow_duration_p95: Family::default(),
            fct_avg: Family::default(),
            fct_p95: Family::default(),
            backend_pps: Family::default(),
            handshake_timeouts: Family::default(),
            jain: FGauge::default(),
            throughput_pps: FGauge::default(),
            throughput_bps: FGauge::default(),
            inference_latency: Histogram::new(exponential_buckets(5e-6, 2.0, 16)),
            cycle_latency: Histogram::new(exponential_buckets(5e-6, 2.0, 18)),
            cycles: Counter::default(),
            overruns: Counter::default(),
            missed_ticks: Counter::default(),
            failures: Family::default(),
            stats_read_errors: Counter::default(),
            dp_heartbeat_age: FGauge::default(),
            dp_fallback: Gauge::default(),
            epoch: Gauge::default(),
            policy: Family::default(),
            reloads: Family::default(),
            all_down: Gauge::default(),
            bgp_announced: Family::default(),
            no_live_backend_drops: Gauge::default(),
            operator_changes: Family::default(),
        };
        r.register(
            "backend_weight",
            "Weight published for the backend (1.0 = weight one)",
            m.weight.clone(),
        );
        r.register(
            "backend_up",
            "1 if the backend is healthy (active checks and passive signal)",
            m.health.clone(),
        );
        r.register(
            "backend_admin_state",
            "Admin state published: 0 active, 1 draining, 2 down",
            m.admin.clone(),
        );
        r.register(
            "backend_active_flows",
            "Active flows on the backend, summed over workers",
            m.active_flows.clone(),
        );
        r.register(
            "backend_new_flows_per_second",
            "New flows per second placed on the backend",
            m.new_flows_rate.clone(),
        );
        r.register(
            "backend_flow_duration_avg_seconds",
            "Average flow age at packets in the last window",
            m.flow_duration_avg.clone(),
        );
        r.register(
            "backend_flow_duration_p95_seconds",
            "95th percentile of flow age at packets in the last window",
            m.flow_duration_p95.clone(),
        );
        r.register(
            "backend_fct_avg_seconds",
            "Average flow completion time in the last window",
            m.fct_avg.clone(),
        );
        r.register(
            "backend_fct_p95_seconds",
            "95th percentile of flow completion time in the last window",
            m.fct_p95.clone(),
        );
        r.register(
            "backend_packets_per_second",
            "Packets per second forwarded to the backend",
            m.backend_pps.clone(),
        );
        r.register(
            "backend_handshake_timeouts",
            "Handshakes that never completed (monotonic, summed over workers)",
            m.handshake_timeouts.clone(),
        );
        r.register(
            "jain_fairness",
            "Jain fairness index of active flows over backends not down",
            m.jain.clone(),
        );
        r.register(
            "throughput_packets_per_second",
            "Packets per second forwarded to all backends",
            m.throughput_pps.clone(),
        );
        r.register(
            "throughput_bytes_per_second",
            "Bytes per second forwarded to all backends (IP length)",
            m.throughput_bps.clone(),
        );
        r.register(
            "inference_latency_seconds",
            "Policy inference latency",
            m.inference_latency.clone(),
        );
        r.register(
            "cycle_latency_seconds",
            "Cycle latency from stats read to weights published",
            m.cycle_latency.clone(),
        );
        r.register("cycles", "Control cycles run", m.cycles.clone());
        r.register(
            "cycle_overruns",
            "Cycles whose policy step exceeded the budget (last weights kept)",
            m.overruns.clone(),
        );
        r.register(
            "cycle_missed_ticks",
            "Ticks skipped because a cycle ran past the next tick",
            m.missed_ticks.clone(),
        );
        r.register(
            "cycle_failures",
            "Cycles whose policy step failed, by reason (last weights kept)",
            m.failures.clone(),
        );
        r.register(
            "stats_read_errors",
            "Worker stats blocks that could not be read",
            m.stats_read_errors.clone(),
        );
        r.register(
            "dataplane_heartbeat_age_seconds",
            "Seconds since the data-plane heartbeat last changed",
            m.dp_heartbeat_age.clone(),
        );
        r.register(
            "dataplane_fallback_active",
            "1 while a worker reports the data-plane watchdog fallback",
            m.dp_fallback.clone(),
        );
        r.register(
            "weights_epoch",
            "Epoch of the last weights published",
            m.epoch.clone(),
        );
        r.register(
            "policy_active",
            "1 for the policy computing the weights",
            m.policy.clone(),
        );
        r.register(
            "model_reloads",
            "Model reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "all_backends_down",
            "1 while every backend is down",
            m.all_down.clone(),
        );
        r.register(
            "bgp_announced",
            "1 while the VIP is announced over BGP (BIRD confirmed it)",
            m.bgp_announced.clone(),
        );
        r.register(
            "dataplane_no_live_backend_drops",
            "Packets dropped for lack of a live backend (monotonic, summed over workers)",
            m.no_live_backend_drops.clone(),
        );
        r.register(
            "operator_changes",
            "Operator changes through the runtime API, by command and result",
            m.operator_changes.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The text exposition, in Prometheus' text format 0.0.4 (what `promtool
    /// check metrics` and every Prometheus version read): the OpenMetrics text
    /// of prometheus-client with counter families named after their `_total`
    /// samples and without the OpenMetrics-only `# UNIT` and `# EOF` lines.
    pub fn encode(&self) -> String {
        let mut om = String::new();
        if prometheus_client::encoding::text::encode(&mut om, &self.registry).is_err() {
            return String::new();
        }
        let counters: std::collections::HashSet<String> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .map(str::to_string)
            .collect();
        let mut out = String::with_capacity(om.len() + 256);
        for line in om.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    /// Removes every per-backend series of `l` (a backend removed, or its
    /// index given to another backend).
    pub fn forget_backend(&self, l: &BackendLabels) {
        for f in [
            &self.weight,
            &self.new_flows_rate,
            &self.flow_duration_avg,
            &self.flow_duration_p95,
            &self.fct_avg,
            &self.fct_p95,
            &self.backend_pps,
        ] {
            f.remove(l);
        }
        for f in [
            &self.health,
            &self.admin,
            &self.active_flows,
            &self.handshake_timeouts,
        ] {
            f.remove(l);
        }
    }

    /// Sets the active policy (one series at 1).
    pub fn set_policy(&self, agent: &str, model: &str) {
        self.policy.clear();
        self.policy
            .get_or_create(&PolicyLabels {
                agent: agent.into(),
                model: model.into(),
            })
            .set(1);
    }

    /// Counts a reload result.
    pub fn reload(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Counts an operator change.
    pub fn operator_change(&self, command: &str, accepted: bool) {
        self.operator_changes
            .get_or_create(&ChangeLabels {
                command: command.into(),
                result: if accepted { "accepted" } else { "refused" }.into(),
            })
            .inc();
    }

    /// Counts a failed cycle.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ResultLabels {
                result: reason.into(),
            })
            .inc();
    }
}

/// The `/metrics` endpoint.
#[derive(Debug)]
pub struct Server {
    /// Bound address (port 0 resolved).
    pub addr: SocketAddr,
    /// Accept thread.
    pub handle: JoinHandle<()>,
}

/// Binds `addr` and serves `/metrics` until `stop` is set. One connection at a
/// time (scrapes are rare and the answer is small); each with a 2 s timeout.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = handle(s, &metrics) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(Server { addr, handle })
}

fn handle(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < buf.len() {
        let k = s.read(&mut buf[got..])?;
        if k == 0 {
            break;
        }
        got += k;
        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..got]);
    let mut parts = req.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}
