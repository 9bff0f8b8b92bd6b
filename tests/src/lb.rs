//! Starting the real data plane (`marllb-dpdk` on net_af_packet over the LB
//! namespace's `data0`) and the controller (`marllb-ctrl`) inside an LB node's
//! namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::backend::{Backend, BackendSpec};
use crate::bgp::BgpSpeaker;
use crate::topology::{LbNode, Process, Topology};
use crate::VIP;

/// Where the workspace's binaries are (next to the running test or tool).
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running binary")?;
    let mut dirs = Vec::new();
    if let Some(d) = exe.parent() {
        dirs.push(d.to_path_buf());
        if let Some(up) = d.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} is not built next to {}: run `cargo build --release --workspace` first",
        exe.display()
    )
}

/// Which host runs an LB node's data plane (`marllb-testbed demo --host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Host {
    /// `marllb-dpdk` on net_af_packet over `data0` ([`start_dataplane`]).
    #[default]
    Dpdk,
    /// The VPP plugin in an installed VPP on an af_packet host interface over
    /// `data0` ([`crate::vpp::start_dataplane`]).
    Vpp,
}

impl Host {
    /// Its name on the command line (clap's, from the variant).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// Starts LB node `i`'s data plane on `host`; returns its log.
pub fn start_host(topo: &mut Topology, i: usize, host: Host, opts: &LbOptions) -> Result<PathBuf> {
    match host {
        Host::Dpdk => start_dataplane(topo, i, opts),
        Host::Vpp => {
            crate::vpp::start_dataplane(topo, i, &crate::vpp::VppInstall::require()?, opts)
        }
    }
}

pub use marllb_core::select::Method;
pub use marllb_ctrl::config::{HealthMode, PolicyKind};

/// The name the data planes' configurations give `method` (`marllb-dpdk`'s
/// `[service] method`, VPP's `lb rl set-vip ... method`).
pub fn method_name(method: Method) -> &'static str {
    match method {
        Method::Alias => "alias",
        Method::Sed => "sed",
        Method::Maglev => "maglev",
    }
}

/// `marllb-ctrl --health`'s spelling of `health` (what its `FromStr` parses).
pub fn health_flag(health: &HealthMode) -> String {
    match health {
        HealthMode::None => "none".into(),
        HealthMode::Tcp => "tcp".into(),
        HealthMode::Http { path } => format!("http:{path}"),
    }
}

/// Data-plane settings of one LB node.
#[derive(Debug, Clone)]
pub struct LbOptions {
    /// How new flows are placed.
    pub method: Method,
    /// Flow-table buckets per worker.
    pub buckets: u32,
    /// Shared-memory region name (a controller attaches), or none.
    pub shm: Option<String>,
    /// Weights file (stand-alone control), or none.
    pub weights_file: Option<PathBuf>,
    /// Watchdog timeout (ms).
    pub heartbeat_timeout_ms: u64,
    /// Flow-state sync with the other LB nodes over their management
    /// addresses (`[sync]`, port [`SYNC_PORT`]).
    pub sync: bool,
}

/// UDP port of the data planes' flow-state sync in the testbed.
pub const SYNC_PORT: u16 = 7946;

impl Default for LbOptions {
    fn default() -> Self {
        Self {
            method: Method::Sed,
            buckets: 16384,
            shm: None,
            weights_file: None,
            heartbeat_timeout_ms: 1000,
            sync: false,
        }
    }
}

/// `marllb-dpdk`'s configuration file as the testbed writes it: the keys it
/// sets, serialized by `toml` (the schema is `marllb_dpdk::config::Config`; a
/// test parses what this writes with it).
#[derive(Debug, serde::Serialize)]
struct LbToml {
    service: ServiceToml,
    egress: EgressToml,
    vip: Vec<VipToml>,
    backend: Vec<BackendToml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<SyncToml>,
}

#[derive(Debug, serde::Serialize)]
struct ServiceToml {
    method: &'static str,
    encap: &'static str,
    flow_table_buckets: u32,
    verify_checksums: bool,
}

#[derive(Debug, serde::Serialize)]
struct EgressToml {
    src_mac: String,
}

#[derive(Debug, serde::Serialize)]
struct VipToml {
    address: String,
    protocol: &'static str,
    port: u16,
}

#[derive(Debug, serde::Serialize)]
struct BackendToml {
    name: String,
    address: String,
    mac: String,
    weight: f64,
}

#[derive(Debug, serde::Serialize)]
struct SyncToml {
    listen: String,
    peers: Vec<String>,
}

/// The data plane's configuration for `node` (one of `lbs`) serving
/// `backends` in L2 direct-server-return mode, as TOML text.
pub fn config_text(
    backends: &[Backend],
    lbs: &[LbNode],
    node: &LbNode,
    opts: &LbOptions,
) -> Result<String> {
    let file = LbToml {
        service: ServiceToml {
            method: method_name(opts.method),
            encap: "l2dsr",
            flow_table_buckets: opts.buckets,
            verify_checksums: true,
        },
        egress: EgressToml {
            src_mac: node.data_mac.clone(),
        },
        vip: vec![VipToml {
            address: VIP.to_string(),
            protocol: "tcp",
            port: 80,
        }],
        backend: backends
            .iter()
            .map(|b| BackendToml {
                name: b.spec.id.clone(),
                address: b.spec.addr.to_string(),
                mac: b.mac.clone(),
                weight: b.spec.configured_weight(),
            })
            .collect(),
        sync: opts.sync.then(|| SyncToml {
            listen: format!("{}:{SYNC_PORT}", node.mgmt_addr),
            peers: lbs
                .iter()
                .filter(|l| l.ns != node.ns)
                .map(|l| format!("{}:{SYNC_PORT}", l.mgmt_addr))
                .collect(),
        }),
    };
    toml::to_string(&file).context("writing the data plane's configuration as TOML")
}

/// Writes [`config_text`] to `path`.
pub fn write_config(topo: &Topology, node: &LbNode, opts: &LbOptions, path: &Path) -> Result<()> {
    let text = config_text(&topo.backends, &topo.lbs, node, opts)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Starts `marllb-dpdk` for LB node `i` (label `lb<i>`); waits until it forwards.
pub fn start_dataplane(topo: &mut Topology, i: usize, opts: &LbOptions) -> Result<PathBuf> {
    let node = topo.lbs.get(i).context("no such LB node")?.clone();
    let dir = topo.dir.join(format!("lb{i}"));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("lb.toml");
    write_config(topo, &node, opts, &cfg)?;
    let exe = bin("marllb-dpdk")?;
    let prefix = format!("{}lb{i}", topo.tb.prefix());
    let mut args: Vec<String> = [
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "256",
        "-l",
        "0,1",
        "--log-level",
        "lib.eal:warning",
        "--file-prefix",
        &prefix,
        "--vdev",
        "net_af_packet0,iface=data0",
        "--",
        "--config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(cfg.to_string_lossy().into_owned());
    args.extend([
        "--idle-sleep-us".into(),
        "50".into(),
        "--print-every-ms".into(),
        "0".into(),
    ]);
    args.extend([
        "--heartbeat-timeout-ms".into(),
        opts.heartbeat_timeout_ms.to_string(),
    ]);
    args.extend([
        "--stats-json".into(),
        dir.join("stats.json").to_string_lossy().into_owned(),
    ]);
    let ready = dir.join("dataplane.ready");
    // A file left by an earlier run in this directory must not count.
    let _ = std::fs::remove_file(&ready);
    args.extend(["--ready-file".into(), ready.to_string_lossy().into_owned()]);
    if let Some(shm) = &opts.shm {
        args.extend(["--shm".into(), shm.clone()]);
    }
    if let Some(w) = &opts.weights_file {
        args.extend(["--weights-file".into(), w.to_string_lossy().into_owned()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.join("dataplane.log");
    let label = Process::DataPlane(i).label();
    topo.tb
        .spawn(&label, &node.ns, &exe.to_string_lossy(), &a, &log)?;
    // Ready when its ready file exists: the workers forward and the shm
    // region (if any) is up (bounded).
    for _ in 0..300 {
        if ready.exists() {
            return Ok(log);
        }
        if !topo.tb.running(&label) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("marllb-dpdk for lb{i} exited:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!(
        "marllb-dpdk for lb{i} did not come up; see {}",
        log.display()
    )
}

/// How the controller of an LB node runs.
#[derive(Debug, Clone)]
pub struct CtrlOptions {
    /// The agent computing the weights.
    pub agent: PolicyKind,
    /// ONNX model for the learned agents.
    pub model: Option<PathBuf>,
    /// Cycle period.
    pub interval: Duration,
    /// Active health check.
    pub health: HealthMode,
    /// Prometheus port (inside the LB namespace, 127.0.0.1).
    pub prometheus_port: u16,
    /// The operator's runtime API socket (`--control-socket`, for `marllb-ctl`).
    pub control_socket: Option<PathBuf>,
    /// Where the operator's changes are kept across restarts (`--state-file`).
    pub state_file: Option<PathBuf>,
    /// The node's BGP speaker, which the controller enables and disables
    /// with the data plane's health (`--bgp-socket`, `--bgp-protocol`).
    pub bgp: Option<BgpSpeaker>,
    /// Backends it is configured with (`--servers`, port 80); `None`: every
    /// backend of the topology. A controller restarted after an operator
    /// added one is still given the configuration's list (the state file has
    /// the change).
    pub servers: Option<Vec<BackendSpec>>,
}

impl Default for CtrlOptions {
    fn default() -> Self {
        Self {
            agent: PolicyKind::Sed,
            model: None,
            interval: Duration::from_millis(250),
            health: HealthMode::Http {
                path: "/static.html".into(),
            },
            prometheus_port: 9090,
            control_socket: None,
            state_file: None,
            bgp: None,
            servers: None,
        }
    }
}

/// Starts `marllb-ctrl` in LB node `i`'s namespace (label `ctrl<i>`), attached
/// to the data plane's region `shm`, managing every backend of `topo`.
pub fn start_controller(
    topo: &mut Topology,
    i: usize,
    shm: &str,
    opts: &CtrlOptions,
) -> Result<PathBuf> {
    let node = topo.lbs.get(i).context("no such LB node")?.clone();
    let dir = topo.dir.join(format!("lb{i}"));
    std::fs::create_dir_all(&dir)?;
    let exe = bin("marllb-ctrl")?;
    let servers: Vec<String> = match &opts.servers {
        Some(list) => list.iter().map(|b| format!("{}:80", b.addr)).collect(),
        None => topo
            .backends
            .iter()
            .map(|b| format!("{}:80", b.spec.addr))
            .collect(),
    };
    let mut args: Vec<String> = vec![
        "--shm".into(),
        shm.into(),
        "--agent".into(),
        opts.agent.name().into(),
        "--servers".into(),
        servers.join(" "),
        "--interval".into(),
        format!("{}ms", opts.interval.as_millis()),
        "--health".into(),
        health_flag(&opts.health),
        "--prometheus-port".into(),
        opts.prometheus_port.to_string(),
    ];
    if let Some(m) = &opts.model {
        args.extend(["--model".into(), m.to_string_lossy().into_owned()]);
    }
    if let Some(p) = &opts.control_socket {
        args.extend(["--control-socket".into(), p.to_string_lossy().into_owned()]);
    }
    if let Some(p) = &opts.state_file {
        args.extend(["--state-file".into(), p.to_string_lossy().into_owned()]);
    }
    if let Some(speaker) = &opts.bgp {
        args.extend(speaker.ctrl_flags());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.join("ctrl.log");
    let label = Process::Controller(i).label();
    topo.tb
        .spawn(&label, &node.ns, &exe.to_string_lossy(), &a, &log)?;
    // Ready when /metrics answers (bounded).
    for _ in 0..200 {
        if metrics(&node.ns, opts.prometheus_port).is_ok_and(|m| !m.is_empty()) {
            return Ok(log);
        }
        if !topo.tb.running(&label) {
            bail!(
                "marllb-ctrl for lb{i} exited:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!(
        "marllb-ctrl for lb{i} did not come up; see {}",
        log.display()
    )
}

/// The controller's `/metrics` text, fetched inside `ns`.
pub fn metrics(ns: &str, port: u16) -> Result<String> {
    crate::netns::run(
        crate::netns::in_ns(ns, "curl")
            .args(["-s", "--max-time", "1"])
            .arg(format!("http://127.0.0.1:{port}/metrics")),
    )
}

/// A per-backend metric of the controller's `/metrics` (label `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendMetric {
    /// `marllb_backend_weight`: the published weight.
    Weight,
    /// `marllb_backend_up`: 1 while its health checks pass.
    Up,
    /// `marllb_backend_active_flows`: flows the data plane has on it.
    ActiveFlows,
    /// `marllb_backend_admin_state`: the operator's state (0 active, 1
    /// draining, ...).
    AdminState,
}

impl BackendMetric {
    /// Its name in the exposition.
    pub fn name(self) -> &'static str {
        match self {
            Self::Weight => "marllb_backend_weight",
            Self::Up => "marllb_backend_up",
            Self::ActiveFlows => "marllb_backend_active_flows",
            Self::AdminState => "marllb_backend_admin_state",
        }
    }
}

/// Values of `metric` by its `backend` label.
pub fn per_backend(text: &str, metric: BackendMetric) -> std::collections::BTreeMap<String, f64> {
    let name = metric.name();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = labels.split_once('}') else {
            continue;
        };
        let backend = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("backend=\""))
            .map(|v| v.trim_end_matches('"').to_string());
        if let (Some(b), Ok(v)) = (backend, value.trim().parse::<f64>()) {
            out.insert(b, v);
        }
    }
    out
}

/// Value of an unlabelled metric.
pub fn scalar(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::{health_flag, per_backend, BackendMetric, HealthMode};

    #[test]
    fn the_data_plane_reads_the_configuration_the_testbed_writes() {
        use super::{config_text, LbOptions, Method};
        use crate::backend::{Backend, BackendSpec};
        use crate::topology::LbNode;
        let backends: Vec<Backend> = [(0.5, "02:00:00:00:02:00"), (1.0, "02:00:00:00:02:01")]
            .iter()
            .enumerate()
            .map(|(j, &(cpus, mac))| Backend {
                spec: BackendSpec {
                    id: format!("be{j}"),
                    addr: format!("198.18.2.{}", 100 + j),
                    cpus,
                    workers: 8,
                    backlog: 128,
                },
                ns: format!("be{j}"),
                mac: mac.into(),
                dir: std::env::temp_dir(),
            })
            .collect();
        let lbs: Vec<LbNode> = (0..2)
            .map(|i| LbNode {
                ns: format!("lb{i}"),
                data_mac: format!("02:00:00:00:01:0{i}"),
                next_hop: format!("198.18.1.{}", 10 + i),
                mgmt_addr: format!("198.18.3.{}", 10 + i),
                bgp: None,
            })
            .collect();
        for (method, sync) in [(Method::Sed, true), (Method::Maglev, false)] {
            let opts = LbOptions {
                method,
                sync,
                ..LbOptions::default()
            };
            let text = config_text(&backends, &lbs, &lbs[0], &opts).expect("serializes");
            let v = marllb_dpdk::config::Config::parse(&text)
                .unwrap_or_else(|e| panic!("marllb-dpdk refuses it: {e}\n{text}"));
            assert_eq!(v.names, ["be0", "be1"], "{text}");
            assert_eq!(
                v.raw.backend[0].weight,
                backends[0].spec.configured_weight()
            );
            assert_eq!(v.raw.backend[1].mac, "02:00:00:00:02:01");
            assert_eq!(v.raw.egress.src_mac.as_deref(), Some("02:00:00:00:01:00"));
            assert_eq!(v.raw.vip[0].address, crate::VIP);
            assert_eq!(v.raw.service.flow_table_buckets, 16384);
            match &v.sync {
                Some(s) => {
                    assert!(sync);
                    assert_eq!(s.listen.to_string(), "198.18.3.10:7946");
                    let peers: Vec<String> = s.peers.iter().map(|p| p.to_string()).collect();
                    assert_eq!(peers, ["198.18.3.11:7946"]);
                }
                None => assert!(!sync),
            }
        }
    }

    #[test]
    fn per_backend_reads_one_metric_by_its_backend_label() {
        let text = "marllb_backend_weight{backend=\"198.18.2.100\",vip=\"v\"} 1.5\n\
                    marllb_backend_weight_total 3\n\
                    marllb_backend_up{backend=\"198.18.2.100\"} 1\n";
        let w = per_backend(text, BackendMetric::Weight);
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            [("198.18.2.100".to_string(), 1.5)]
        );
        assert_eq!(per_backend(text, BackendMetric::Up).len(), 1);
        assert!(per_backend(text, BackendMetric::AdminState).is_empty());
    }

    #[test]
    fn health_flags_parse_back_as_the_controller_reads_them() {
        for h in [
            HealthMode::None,
            HealthMode::Tcp,
            HealthMode::Http {
                path: "/static.html".into(),
            },
        ] {
            assert_eq!(health_flag(&h).parse::<HealthMode>(), Ok(h));
        }
    }
}
