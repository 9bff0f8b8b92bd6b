//! Settings: the command line (clap) merged over the optional `ctrl.toml`.
//!
//! Precedence: a flag given on the command line wins over the file, the file
//! over the defaults. The file is parsed with `deny_unknown_fields` everywhere,
//! so a misspelt key is an error naming it; value checks name the field too
//! (`health.rise: must be at least 1`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

pub use marllb_policy::PolicyKind;

/// The controller's `agent`: a [`PolicyKind`] it runs (a weight source; see
/// [`marllb_policy::kind`] for what each one publishes). Used for `--agent`,
/// `agent` and `fallback_agent` in the file, the runtime API's `policy set`
/// and the state file.
pub fn parse_agent(name: &str) -> Result<PolicyKind, String> {
    let names = || {
        PolicyKind::ALL
            .into_iter()
            .filter(|k| k.runs_in_controller())
            .map(PolicyKind::name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match PolicyKind::from_name(name) {
        Some(k) if k.runs_in_controller() => Ok(k),
        Some(k) => Err(format!(
            "{k} is not a controller agent ({}; one of {})",
            if k == PolicyKind::Maglev {
                "Maglev is the data plane's `method`, built from the configured weights: use agent wcmp"
            } else {
                "it exists in the simulator only"
            },
            names()
        )),
        None => Err(format!("unknown agent {name:?} (one of {})", names())),
    }
}

/// Serde's side of [`parse_agent`].
fn de_agent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PolicyKind>, D::Error> {
    let s = String::deserialize(d)?;
    parse_agent(&s).map(Some).map_err(serde::de::Error::custom)
}

/// Active health check kind: `tcp`, `http:/PATH`, or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthMode {
    /// No active checks (passive signals only).
    None,
    /// TCP connect.
    Tcp,
    /// HTTP/1.1 GET of the path; healthy when the status is the expected one.
    Http {
        /// Request path, starting with `/`.
        path: String,
    },
}

impl FromStr for HealthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "off" => Ok(Self::None),
            "tcp" => Ok(Self::Tcp),
            _ => match s.strip_prefix("http:") {
                Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => {
                    Ok(Self::Http { path: p.into() })
                }
                Some(_) => Err(format!(
                    "{s:?}: the HTTP path must start with '/' and have no spaces"
                )),
                None => Err(format!("{s:?}: expected tcp, http:/PATH or none")),
            },
        }
    }
}

impl<'de> Deserialize<'de> for HealthMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Compact human-readable lines.
    Compact,
}

/// `marllb-ctrl`: the MARLLB controller.
#[derive(Debug, Parser)]
#[command(name = "marllb-ctrl", version, about)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    /// Subcommand (none: run the controller).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Controller flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validates a model and its sidecar, prints inputs, outputs and metadata.
    CheckModel {
        /// The ONNX file (its sidecar is FILE.onnx.json).
        file: PathBuf,
        /// Also require this many backends.
        #[arg(long)]
        backends: Option<usize>,
    },
}

/// Flags of the controller (the original MARLLB start script's names).
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Shared-memory region name (under /dev/shm), as given to the data plane.
    #[arg(long)]
    pub shm: Option<String>,
    /// Agent: ecmp, wcmp, static, lsq, sed, adaptive-sed, es, qmix, sac-gru.
    #[arg(long, value_parser = parse_agent)]
    pub agent: Option<PolicyKind>,
    /// ONNX policy (sidecar: FILE.onnx.json); for qmix and sac-gru.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Backends in the data plane's order: "ADDR[:PORT] ..." (the port is the
    /// health-check port). Default: the region's backends.
    #[arg(long)]
    pub servers: Option<String>,
    /// Cycle period (humantime: 200ms, 1s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Port of the Prometheus endpoint (/metrics); 0 disables it.
    #[arg(long)]
    pub prometheus_port: Option<u16>,
    /// Address the Prometheus endpoint binds to.
    #[arg(long)]
    pub prometheus_addr: Option<IpAddr>,
    /// Active health check: tcp, http:/PATH or none.
    #[arg(long)]
    pub health: Option<HealthMode>,
    /// Write logs to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Configuration file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Unix socket of the runtime API (`marllb-ctl`); `none` disables it.
    /// Default: /run/marllb/REGION.sock.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// File keeping the operator's changes across restarts (written
    /// atomically). Default: not persisted.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// BIRD's control socket: announce the VIPs over BGP while this node can
    /// serve (see `[bgp]`). Default: no BGP.
    #[arg(long)]
    pub bgp_socket: Option<PathBuf>,
    /// The BIRD protocol holding the VIP routes (disabled in BIRD's config).
    #[arg(long)]
    pub bgp_protocol: Option<String>,
}

/// `ctrl.toml`. Every key is optional; see the README for the reference.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Region name.
    pub shm: Option<String>,
    /// Agent.
    #[serde(default, deserialize_with = "de_agent")]
    pub agent: Option<PolicyKind>,
    /// Model path.
    pub model: Option<PathBuf>,
    /// Heuristic used while a learned agent has no usable model.
    #[serde(default, deserialize_with = "de_agent")]
    pub fallback_agent: Option<PolicyKind>,
    /// Backends, "ADDR[:PORT]".
    pub servers: Option<Vec<String>>,
    /// Cycle period.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// A cycle whose stats-to-weights step takes longer is an overrun.
    #[serde(default, with = "humantime_serde")]
    pub cycle_budget: Option<Duration>,
    /// Cycles over which a recovered backend ramps back to its full weight.
    pub slow_start_cycles: Option<u32>,
    /// WCMP weights (real values, one per backend); default: the region's base weights.
    pub wcmp_weights: Option<Vec<f32>>,
    /// Adaptive SED's constants (`agent` or `fallback_agent = "adaptive-sed"`).
    pub adaptive_sed: Option<AdaptiveSedFile>,
    /// Backends (addresses) held in admin state draining.
    pub drain: Option<Vec<IpAddr>>,
    /// Prometheus endpoint.
    pub prometheus: Option<PromFile>,
    /// Logging.
    pub log: Option<LogFile>,
    /// Active health checks.
    pub health: Option<HealthFile>,
    /// Passive health signal.
    pub passive: Option<PassiveFile>,
    /// Unix socket of the runtime API; `"none"` disables it.
    pub control_socket: Option<PathBuf>,
    /// Operator state file.
    pub state_file: Option<PathBuf>,
    /// BGP announcement through BIRD.
    pub bgp: Option<BgpFile>,
}

/// `[adaptive_sed]`: every key optional, defaults `marllb_policy::AdaptiveSed`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSedFile {
    /// Target log correction per unit of ln(completion-time ratio).
    pub gain: Option<f32>,
    /// Fraction of the way to the target per cycle (0, 1].
    pub rate: Option<f32>,
    /// Largest change of a correction per cycle.
    pub max_step: Option<f32>,
    /// Largest correction.
    pub clamp: Option<f32>,
}

impl AdaptiveSedFile {
    /// The constants, each checked by `AdaptiveSed::set` (the error names
    /// the field).
    fn resolve(&self) -> Result<marllb_policy::AdaptiveSed, ConfigError> {
        let mut a = marllb_policy::AdaptiveSed::default();
        let fields = [
            ("adaptive_sed.gain", "gain", self.gain),
            ("adaptive_sed.rate", "rate", self.rate),
            ("adaptive_sed.max_step", "max_step", self.max_step),
            ("adaptive_sed.clamp", "clamp", self.clamp),
        ];
        for (field, key, v) in fields {
            if let Some(v) = v {
                a.set(key, v).map_err(|e| bad(field, e))?;
            }
        }
        Ok(a)
    }
}

/// `[bgp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFile {
    /// BIRD's control socket.
    pub socket: Option<PathBuf>,
    /// BIRD protocol holding the VIP routes.
    pub protocol: Option<String>,
    /// Cycles able to serve before announcing.
    pub rise: Option<u32>,
    /// Cycles unable to serve before withdrawing.
    pub fall: Option<u32>,
    /// The data plane is alive while its heartbeat moved this recently.
    #[serde(default, with = "humantime_serde")]
    pub dp_timeout: Option<Duration>,
    /// The state is re-sent to BIRD this often.
    #[serde(default, with = "humantime_serde")]
    pub reassert: Option<Duration>,
}

/// `[prometheus]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromFile {
    /// Port (0 disables).
    pub port: Option<u16>,
    /// Bind address.
    pub address: Option<IpAddr>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// File.
    pub file: Option<PathBuf>,
    /// Format.
    pub format: Option<LogFormat>,
    /// Level filter (`info`, `marllb_ctrl=debug`, ...); `RUST_LOG` wins.
    pub level: Option<String>,
}

/// `[health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// `tcp`, `http:/PATH`, `none`.
    pub mode: Option<HealthMode>,
    /// Check period.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Per-check timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive successes to come back up.
    pub rise: Option<u32>,
    /// Consecutive failures to go down.
    pub fall: Option<u32>,
    /// HTTP status that counts as healthy.
    pub expect_status: Option<u16>,
    /// Port for backends listed without one.
    pub port: Option<u16>,
}

/// `[passive]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveFile {
    /// Use the data plane's handshake timeouts.
    pub enabled: Option<bool>,
    /// Handshake timeouts in one cycle that make the cycle a failing one.
    pub timeouts_per_cycle: Option<u64>,
    /// Consecutive failing cycles to take the backend down.
    pub fall: Option<u32>,
    /// How long a passively failed backend stays down before it is tried again.
    #[serde(default, with = "humantime_serde")]
    pub hold: Option<Duration>,
    /// Most backends (percent, at least one, never the last) the passive
    /// signal holds down at once.
    pub max_ejection_percent: Option<u32>,
}

/// Why the settings are unusable; each names the field or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("{path}: {source}")]
    Toml {
        /// File.
        path: PathBuf,
        /// Cause (names the key and shows the line).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("{field}: {problem}")]
    Field {
        /// Field (`health.rise`, `--servers`, ...).
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn bad(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        problem: problem.into(),
    }
}

/// One backend as the controller knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    /// Address (must match the region's backend at the same index).
    pub addr: IpAddr,
    /// Health-check port, if given.
    pub port: Option<u16>,
}

/// Parses "ADDR[:PORT]" (IPv6 with a port as `[ADDR]:PORT`).
pub fn parse_server(s: &str) -> Result<Server, String> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(Server {
            addr: a,
            port: None,
        });
    }
    s.parse::<SocketAddr>()
        .map(|sa| Server {
            addr: sa.ip(),
            port: Some(sa.port()),
        })
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT"))
}

/// Active health-check settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Kind.
    pub mode: HealthMode,
    /// Period.
    pub interval: Duration,
    /// Timeout of one check.
    pub timeout: Duration,
    /// Successes to come up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Expected HTTP status.
    pub expect_status: u16,
    /// Default port.
    pub port: Option<u16>,
}

/// Passive-signal settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveSettings {
    /// On.
    pub enabled: bool,
    /// Handshake timeouts per cycle that make a failing cycle.
    pub timeouts_per_cycle: u64,
    /// Failing cycles to go down.
    pub fall: u32,
    /// Hold time down.
    pub hold: Duration,
    /// Ejection cap, percent of the backends.
    pub max_ejection_percent: u32,
}

/// Everything the controller runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Region.
    pub shm: String,
    /// Agent.
    pub agent: PolicyKind,
    /// Model, for learned agents.
    pub model: Option<PathBuf>,
    /// Heuristic while a learned agent has no model.
    pub fallback_agent: PolicyKind,
    /// Backends as given (empty: take the region's).
    pub servers: Vec<Server>,
    /// Period.
    pub interval: Duration,
    /// Overrun threshold.
    pub cycle_budget: Duration,
    /// Slow-start length.
    pub slow_start_cycles: u32,
    /// WCMP weights.
    pub wcmp_weights: Option<Vec<f32>>,
    /// Adaptive SED's constants.
    pub adaptive_sed: marllb_policy::AdaptiveSed,
    /// Draining backends.
    pub drain: Vec<IpAddr>,
    /// Metrics endpoint (`None`: disabled).
    pub prometheus: Option<SocketAddr>,
    /// Log file.
    pub log_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Active checks.
    pub health: HealthSettings,
    /// Passive signal.
    pub passive: PassiveSettings,
    /// BGP announcement (`None`: no BGP).
    pub bgp: Option<crate::bgp::BgpSettings>,
    /// Runtime API socket (`None`: disabled).
    pub control_socket: Option<PathBuf>,
    /// The socket was asked for explicitly (failing to bind it is fatal;
    /// the default one is only warned about).
    pub control_socket_explicit: bool,
    /// Operator state file (`None`: not persisted).
    pub state_file: Option<PathBuf>,
}

/// The runtime API's default socket for region `shm`.
pub fn default_control_socket(shm: &str) -> PathBuf {
    let name: String = shm
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    PathBuf::from(format!("/run/marllb/{name}.sock"))
}

impl Settings {
    /// Merges the flags over the file (read from `args.config` if given).
    pub fn resolve(args: &RunArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Merges the flags over an already parsed file.
    pub fn merge(args: &RunArgs, file: FileConfig) -> Result<Settings, ConfigError> {
        let shm = args
            .shm
            .clone()
            .or(file.shm)
            .ok_or_else(|| bad("shm", "no region given (--shm NAME or `shm` in the file)"))?;
        let agent = args
            .agent
            .or(file.agent)
            .ok_or_else(|| bad("agent", "no agent given (--agent or `agent` in the file)"))?;
        let model = args.model.clone().or(file.model);
        if agent.is_learned() && model.is_none() {
            return Err(bad(
                "model",
                format!("agent {} needs a model (--model FILE.onnx)", agent.name()),
            ));
        }
        let fallback_agent = file.fallback_agent.unwrap_or(PolicyKind::Sed);
        if fallback_agent.is_learned() {
            return Err(bad(
                "fallback_agent",
                "must be a heuristic (sed, adaptive-sed, lsq, wcmp, ecmp, static)",
            ));
        }
        let servers = match (&args.servers, file.servers) {
            (Some(s), _) => s
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .map(parse_server)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("--servers", e))?,
            (None, Some(v)) => v
                .iter()
                .map(|s| parse_server(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("servers", e))?,
            (None, None) => Vec::new(),
        };
        let field = if args.servers.is_some() {
            "--servers"
        } else {
            "servers"
        };
        // The same address with another health-check port is allowed (test
        // set-ups on one host); the data plane refuses duplicate addresses in
        // its own configuration, and attaching checks the two agree.
        for (i, a) in servers.iter().enumerate() {
            if servers[..i].contains(a) {
                let what = match a.port {
                    Some(p) => SocketAddr::new(a.addr, p).to_string(),
                    None => a.addr.to_string(),
                };
                return Err(bad(field, format!("backend {what} is listed twice")));
            }
        }
        if let Some(d) = file
            .drain
            .iter()
            .flatten()
            .find(|d| !servers.is_empty() && !servers.iter().any(|s| s.addr == **d))
        {
            return Err(bad("drain", format!("{d} is not one of the servers")));
        }
        let interval = args
            .interval
            .or(file.interval)
            .unwrap_or(Duration::from_millis(200));
        if interval < Duration::from_millis(1) || interval > Duration::from_secs(60) {
            return Err(bad("interval", "must be between 1ms and 60s"));
        }
        let cycle_budget = file.cycle_budget.unwrap_or(interval);
        if cycle_budget.is_zero() {
            return Err(bad("cycle_budget", "must be > 0"));
        }
        let slow_start_cycles = file.slow_start_cycles.unwrap_or(10);
        let adaptive_sed = file.adaptive_sed.as_ref().map_or(
            Ok(marllb_policy::AdaptiveSed::default()),
            AdaptiveSedFile::resolve,
        )?;
        if let Some(w) = &file.wcmp_weights {
            if w.iter()
                .any(|x| !(x.is_finite() && *x >= 0.0 && *x <= 256.0))
            {
                return Err(bad("wcmp_weights", "each weight must be in 0..=256"));
            }
            if w.iter().all(|x| *x == 0.0) {
                return Err(bad("wcmp_weights", "all weights are 0"));
            }
        }
        let prom = file.prometheus.unwrap_or_default();
        let port = args.prometheus_port.or(prom.port).unwrap_or(9090);
        let addr = args
            .prometheus_addr
            .or(prom.address)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let log = file.log.unwrap_or_default();
        let h = file.health.unwrap_or_default();
        let health = HealthSettings {
            mode: args.health.clone().or(h.mode).unwrap_or(HealthMode::None),
            interval: h.interval.unwrap_or(Duration::from_secs(1)),
            timeout: h.timeout.unwrap_or(Duration::from_millis(500)),
            rise: h.rise.unwrap_or(2),
            fall: h.fall.unwrap_or(3),
            expect_status: h.expect_status.unwrap_or(200),
            port: h.port,
        };
        if health.rise == 0 {
            return Err(bad("health.rise", "must be at least 1"));
        }
        if health.fall == 0 {
            return Err(bad("health.fall", "must be at least 1"));
        }
        if health.interval < Duration::from_millis(10) {
            return Err(bad("health.interval", "must be at least 10ms"));
        }
        if health.timeout.is_zero() {
            return Err(bad("health.timeout", "must be > 0"));
        }
        if !(100..=599).contains(&health.expect_status) {
            return Err(bad(
                "health.expect_status",
                "must be an HTTP status (100..=599)",
            ));
        }
        let p = file.passive.unwrap_or_default();
        let passive = PassiveSettings {
            enabled: p.enabled.unwrap_or(true),
            timeouts_per_cycle: p.timeouts_per_cycle.unwrap_or(5),
            fall: p.fall.unwrap_or(3),
            hold: p.hold.unwrap_or(Duration::from_secs(10)),
            max_ejection_percent: p.max_ejection_percent.unwrap_or(50),
        };
        if !(1..=100).contains(&passive.max_ejection_percent) {
            return Err(bad("passive.max_ejection_percent", "must be in 1..=100"));
        }
        if passive.timeouts_per_cycle == 0 {
            return Err(bad("passive.timeouts_per_cycle", "must be at least 1"));
        }
        if passive.fall == 0 {
            return Err(bad("passive.fall", "must be at least 1"));
        }
        let explicit = args.control_socket.clone().or(file.control_socket);
        let control_socket_explicit = explicit.is_some();
        let control_socket = match explicit {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) if p.as_os_str().is_empty() => {
                return Err(bad(
                    "control_socket",
                    "empty path (use \"none\" to disable)",
                ))
            }
            Some(p) => Some(p),
            None => Some(default_control_socket(&shm)),
        };
        let state_file = args.state_file.clone().or(file.state_file);
        if state_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(bad("state_file", "empty path"));
        }
        let bf = file.bgp.unwrap_or_default();
        let bgp = match args.bgp_socket.clone().or(bf.socket) {
            None => None,
            Some(socket) => {
                let d = crate::bgp::BgpSettings::new(socket);
                let protocol = args
                    .bgp_protocol
                    .clone()
                    .or(bf.protocol)
                    .unwrap_or(d.protocol.clone());
                if protocol.is_empty()
                    || !protocol
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(bad(
                        "bgp.protocol",
                        "a BIRD protocol name: letters, digits and _",
                    ));
                }
                let rise = bf.rise.unwrap_or(d.rise);
                if rise == 0 {
                    return Err(bad("bgp.rise", "must be at least 1"));
                }
                let fall = bf.fall.unwrap_or(d.fall);
                if fall == 0 {
                    return Err(bad("bgp.fall", "must be at least 1"));
                }
                let dp_timeout = bf.dp_timeout.unwrap_or(d.dp_timeout);
                if dp_timeout.is_zero() {
                    return Err(bad("bgp.dp_timeout", "must be above 0"));
                }
                Some(crate::bgp::BgpSettings {
                    protocol,
                    rise,
                    fall,
                    dp_timeout,
                    reassert: bf
                        .reassert
                        .unwrap_or(d.reassert)
                        .max(Duration::from_secs(1)),
                    ..d
                })
            }
        };
        Ok(Settings {
            bgp,
            control_socket,
            control_socket_explicit,
            state_file,
            shm,
            agent,
            model,
            fallback_agent,
            servers,
            interval,
            cycle_budget,
            slow_start_cycles,
            wcmp_weights: file.wcmp_weights,
            adaptive_sed,
            drain: file.drain.unwrap_or_default(),
            prometheus: (port != 0).then_some(SocketAddr::new(addr, port)),
            log_file: args.log_file.clone().or(log.file),
            log_format: args.log_format.or(log.format).unwrap_or(LogFormat::Compact),
            log_level: log.level.unwrap_or_else(|| "info".into()),
            health,
            passive,
        })
    }
}

/// Reads and parses a configuration file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    parse_file(&text).map_err(|e| match e {
        ConfigError::Toml { source, .. } => ConfigError::Toml {
            path: path.into(),
            source,
        },
        other => other,
    })
}

/// Parses configuration text.
pub fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: "<text>".into(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            shm: Some("r".into()),
            agent: Some(PolicyKind::Sed),
            ..RunArgs::default()
        }
    }

    #[test]
    fn cli_matches_the_start_script() {
        let cli = Cli::try_parse_from([
            "marllb-ctrl",
            "--shm",
            "lb0",
            "--agent",
            "sac-gru",
            "--model",
            "m.onnx",
            "--servers",
            "10.0.0.1:80 10.0.0.2 [::1]:8080",
            "--interval",
            "250ms",
            "--prometheus-port",
            "9100",
            "--health",
            "http:/healthz",
        ])
        .expect("parses");
        let s = Settings::resolve(&cli.run).expect("valid");
        assert_eq!(s.agent, PolicyKind::SacGru);
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.servers.len(), 3);
        assert_eq!(s.servers[0].port, Some(80));
        assert_eq!(s.servers[1].port, None);
        assert_eq!(s.servers[2].addr, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(s.prometheus, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!(
            s.health.mode,
            HealthMode::Http {
                path: "/healthz".into()
            }
        );
        let cli = Cli::try_parse_from(["marllb-ctrl", "check-model", "x.onnx"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::CheckModel { .. })));
    }

    #[test]
    fn file_keys_are_checked_and_flags_win() {
        let f = parse_file(
            r#"
            agent = "wcmp"
            interval = "1s"
            servers = ["10.0.0.1", "10.0.0.2:81"]
            [health]
            mode = "tcp"
            rise = 3
            [passive]
            hold = "2s"
        "#,
        )
        .expect("valid");
        let s = Settings::merge(&args(), f).expect("valid");
        assert_eq!(s.agent, PolicyKind::Sed);
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.health.mode, HealthMode::Tcp);
        assert_eq!(s.health.rise, 3);
        assert_eq!(s.passive.hold, Duration::from_secs(2));

        let e = parse_file("[health]\nrsie = 2\n").expect_err("unknown key");
        assert!(e.to_string().contains("rsie"), "{e}");
        let e = parse_file("bogus = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse_file("[health]\nmode = \"udp\"\n").expect_err("bad mode");
        assert!(e.to_string().contains("udp"), "{e}");
        let f = parse_file("[health]\nfall = 0\n").expect("parses");
        let e = Settings::merge(&args(), f).expect_err("range");
        assert!(e.to_string().starts_with("health.fall"), "{e}");
        let mut a = args();
        a.agent = Some(PolicyKind::Qmix);
        let e = Settings::merge(&a, FileConfig::default()).expect_err("model");
        assert!(e.to_string().starts_with("model"), "{e}");
    }

    #[test]
    fn bgp_settings_are_checked_naming_the_key() {
        let s = Settings::merge(&args(), FileConfig::default()).expect("valid");
        assert_eq!(s.bgp, None);
        let f =
            parse_file("[bgp]\nsocket = \"/run/bird/lb0.ctl\"\nrise = 5\ndp_timeout = \"300ms\"\n")
                .expect("parses");
        let b = Settings::merge(&args(), f)
            .expect("valid")
            .bgp
            .expect("bgp");
        assert_eq!((b.protocol.as_str(), b.rise, b.fall), ("marllb_vip", 5, 2));
        assert_eq!(b.dp_timeout, Duration::from_millis(300));
        for (toml, key) in [
            ("socket = \"/x\"\nrise = 0", "bgp.rise"),
            ("socket = \"/x\"\nfall = 0", "bgp.fall"),
            ("socket = \"/x\"\nprotocol = \"a b\"", "bgp.protocol"),
            ("socket = \"/x\"\ndp_timeout = \"0s\"", "bgp.dp_timeout"),
        ] {
            let f = parse_file(&format!("[bgp]\n{toml}\n")).expect("parses");
            let e = Settings::merge(&args(), f).expect_err(key);
            assert!(e.to_string().starts_with(key), "{e}");
        }
        let e = parse_file("[bgp]\nsokcet = \"/x\"\n").expect_err("unknown key");
        assert!(e.to_string().contains("sokcet"), "{e}");
        let mut a = args();
        a.bgp_socket = Some("/run/bird/x.ctl".into());
        a.bgp_protocol = Some("vip_lb0".into());
        let b = Settings::merge(&a, FileConfig::default())
            .expect("valid")
            .bgp
            .expect("bgp");
        assert_eq!(b.protocol, "vip_lb0");
    }

    #[test]
    fn adaptive_sed_is_a_heuristic_on_the_command_line_and_in_the_file() {
        let cli = Cli::try_parse_from(["marllb-ctrl", "--shm", "lb0", "--agent", "adaptive-sed"])
            .expect("parses");
        let s = Settings::resolve(&cli.run).expect("valid without a model");
        assert_eq!(s.agent, PolicyKind::AdaptiveSed);
        assert!(!s.agent.is_learned());
        let f = parse_file("agent = \"adaptive-sed\"\nfallback_agent = \"adaptive-sed\"\n")
            .expect("parses");
        assert_eq!(f.agent, Some(PolicyKind::AdaptiveSed));
        let mut a = args();
        a.agent = None;
        let s = Settings::merge(&a, f).expect("valid");
        assert_eq!(s.agent, PolicyKind::AdaptiveSed);
        assert_eq!(s.fallback_agent, PolicyKind::AdaptiveSed);
        // A learned agent may fall back to it.
        let f =
            parse_file("agent = \"qmix\"\nmodel = \"m.onnx\"\nfallback_agent = \"adaptive-sed\"\n")
                .expect("parses");
        let mut a = args();
        a.agent = None;
        assert_eq!(
            Settings::merge(&a, f).expect("valid").fallback_agent,
            PolicyKind::AdaptiveSed
        );
        let e = parse_file("agent = \"adaptive_sed\"\n").expect_err("snake case");
        assert!(e.to_string().contains("adaptive-sed"), "{e}");
        // The metrics name is the flag's and the file's, for every agent;
        // the policies the controller cannot run are refused by both, by name.
        for k in PolicyKind::ALL {
            let file = parse_file(&format!("agent = \"{}\"\n", k.name()));
            let flag = Cli::try_parse_from(["marllb-ctrl", "--shm", "lb0", "--agent", k.name()]);
            if k.runs_in_controller() {
                assert_eq!(file.expect("parses").agent, Some(k));
                assert!(flag.is_ok(), "{k}");
            } else {
                let e = file.expect_err("not an agent").to_string();
                assert!(e.contains("agent") && e.contains(k.name()), "{e}");
                assert!(flag.is_err(), "{k}");
            }
        }
        let e = parse_file("fallback_agent = \"oracle\"\n").expect_err("simulator only");
        assert!(e.to_string().contains("fallback_agent"), "{e}");
    }

    #[test]
    fn adaptive_sed_constants_are_read_and_bad_ones_refused_by_name() {
        let f = parse_file("[adaptive_sed]\ngain = 0.75\nrate = 0.05\n").expect("parses");
        let s = Settings::merge(&args(), f).expect("valid");
        assert_eq!(s.adaptive_sed.gain, 0.75);
        assert_eq!(s.adaptive_sed.rate, 0.05);
        let d = marllb_policy::AdaptiveSed::default();
        assert_eq!(s.adaptive_sed.max_step, d.max_step);
        assert_eq!(s.adaptive_sed.clamp, d.clamp);
        let s = Settings::merge(&args(), FileConfig::default()).expect("valid");
        assert_eq!(s.adaptive_sed, d);
        for (text, field) in [
            ("gain = 0.0", "adaptive_sed.gain"),
            ("rate = 1.5", "adaptive_sed.rate"),
            ("max_step = -1.0", "adaptive_sed.max_step"),
            ("clamp = nan", "adaptive_sed.clamp"),
        ] {
            let f = parse_file(&format!("[adaptive_sed]\n{text}\n")).expect("parses");
            let e = Settings::merge(&args(), f).expect_err(text).to_string();
            assert!(e.starts_with(field), "{text}: {e}");
        }
        let e = parse_file("[adaptive_sed]\nspeed = 1.0\n").expect_err("unknown key");
        assert!(e.to_string().contains("speed"), "{e}");
    }

    #[test]
    fn duplicate_and_unknown_backends_are_refused() {
        let f = parse_file("servers = [\"10.0.0.1:80\", \"10.0.0.2\", \"10.0.0.1:80\"]\n")
            .expect("parses");
        let e = Settings::merge(&args(), f).expect_err("duplicate");
        assert!(e.to_string().starts_with("servers"), "{e}");
        assert!(e.to_string().contains("10.0.0.1:80 is listed twice"), "{e}");
        // One host, two health-check ports: two backends.
        let f = parse_file("servers = [\"127.0.0.1:8001\", \"127.0.0.1:8002\"]\n").expect("parses");
        assert_eq!(Settings::merge(&args(), f).expect("valid").servers.len(), 2);
        let mut a = args();
        a.servers = Some("10.0.0.1, 10.0.0.1".into());
        let e = Settings::merge(&a, FileConfig::default()).expect_err("duplicate flag");
        assert!(e.to_string().starts_with("--servers"), "{e}");
        let f = parse_file("servers = [\"10.0.0.1\"]\ndrain = [\"10.0.0.9\"]\n").expect("parses");
        let e = Settings::merge(&args(), f).expect_err("unknown drain");
        assert!(e.to_string().starts_with("drain"), "{e}");
        assert!(e.to_string().contains("10.0.0.9"), "{e}");
        // Zero servers: the region's backends are used (checked at attach).
        let f = parse_file("servers = []\n").expect("parses");
        assert!(Settings::merge(&args(), f)
            .expect("valid")
            .servers
            .is_empty());
    }
}
