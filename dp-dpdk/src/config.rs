//! The TOML configuration: VIPs, backends, method, encapsulation, flow-table
//! size, timeouts, MTU, ports and our egress addresses.
//!
//! # Contract
//!
//! [`Config::load`] / [`Config::parse`] refuse anything unknown or inconsistent
//! with an error that names the field (`backend[2].mac: ...`); a config that
//! loads builds a [`Service`] without further errors
//! ([`Validated::build_service`]). The TOML is a front end: it fills the
//! [`ServiceSpec`] both hosts build their service from (`marllb-host`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use marllb_core::classify::VipProto;
use marllb_core::flow::Timeouts;
use marllb_core::rewrite::{Egress, Encap};
use marllb_core::select::Method;
use marllb_core::service::{AdminState, Backend, Service, MAX_VIPS};
use marllb_core::wire::IpFamily;
use marllb_core::{Weight, MAX_BACKENDS, WEIGHT_ONE};
use marllb_host::{addr, parse_mac, BuildError, Flow, ServiceSpec, ServiceVip};
use serde::Deserialize;

/// Flow-table sizes (buckets of 4 entries) compiled into the binary.
pub const FLOW_TABLE_SIZES: [usize; 5] = [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type / an unknown field.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A field has an invalid value.
    #[error("{field}: {msg}")]
    Field {
        /// Path of the field, e.g. `backend[2].mac`.
        field: String,
        /// What is wrong.
        msg: String,
    },
}

fn field_err(field: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        msg: msg.into(),
    }
}

/// Selection method names.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    /// Alias method over the weights.
    Alias,
    /// Shortest expected delay.
    Sed,
    /// Weighted Maglev (stateless).
    Maglev,
}

/// Encapsulation names.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncapName {
    /// L2 direct server return.
    L2dsr,
    /// IP-in-IP.
    Ipip,
    /// GRE.
    Gre,
}

/// Protocol names.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProtoName {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// Any protocol.
    Any,
}

/// Port layout.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// One port: clients in, backends out, on the same port.
    #[default]
    OneArmed,
    /// Clients on `client`, backends on `backend`.
    TwoArmed,
}

/// `[service]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Default method of the VIPs.
    #[serde(default = "default_method")]
    pub method: MethodName,
    /// Default encapsulation of the VIPs.
    #[serde(default = "default_encap")]
    pub encap: EncapName,
    /// Flow-table buckets per worker (one of [`FLOW_TABLE_SIZES`]).
    #[serde(default = "default_buckets")]
    pub flow_table_buckets: usize,
    /// Flow-hash seed (equal on every LB node).
    #[serde(default = "default_seed")]
    pub hash_seed: u64,
    /// Verify IPv4 header checksums.
    #[serde(default = "default_true")]
    pub verify_checksums: bool,
    /// Largest IP packet on the backend link.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

/// `[timeouts]`, in seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    /// Half-open TCP.
    #[serde(default = "t_syn")]
    pub tcp_syn: f64,
    /// Established TCP.
    #[serde(default = "t_est")]
    pub tcp_established: f64,
    /// TCP after FIN/RST.
    #[serde(default = "t_closing")]
    pub tcp_closing: f64,
    /// UDP.
    #[serde(default = "t_udp")]
    pub udp: f64,
    /// Other protocols.
    #[serde(default = "t_udp")]
    pub other: f64,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        Self {
            tcp_syn: t_syn(),
            tcp_established: t_est(),
            tcp_closing: t_closing(),
            udp: t_udp(),
            other: t_udp(),
        }
    }
}

/// `[ports]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// One- or two-armed.
    #[serde(default)]
    pub mode: PortMode,
    /// Port id of the client side.
    #[serde(default)]
    pub client: u16,
    /// Port id of the backend side (two-armed only).
    pub backend: Option<u16>,
    /// Promiscuous mode.
    #[serde(default = "default_true")]
    pub promiscuous: bool,
    /// RX descriptors per queue.
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    /// TX descriptors per queue.
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
}

impl Default for PortSection {
    fn default() -> Self {
        Self {
            mode: PortMode::OneArmed,
            client: 0,
            backend: None,
            promiscuous: true,
            rx_desc: default_desc(),
            tx_desc: default_desc(),
        }
    }
}

/// `[egress]`: our side of the backend link.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    /// Source MAC; default: the backend port's MAC.
    pub src_mac: Option<String>,
    /// Outer IPv4 source (tunnels to IPv4 backends).
    pub src_v4: Option<String>,
    /// Outer IPv6 source (tunnels to IPv6 backends).
    pub src_v6: Option<String>,
}

/// `[[vip]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    /// Address.
    pub address: String,
    /// Protocol.
    #[serde(default)]
    pub protocol: ProtoName,
    /// Port (0 = any).
    #[serde(default)]
    pub port: u16,
    /// Method (default: `service.method`).
    pub method: Option<MethodName>,
    /// Encapsulation (default: `service.encap`).
    pub encap: Option<EncapName>,
    /// Member backends by name or index (default: all).
    pub backends: Option<Vec<toml::Value>>,
}

/// `[[backend]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Name (for VIP membership and logs).
    pub name: Option<String>,
    /// Address (outer destination of tunnels).
    pub address: String,
    /// MAC of the backend (L2 DSR) or of the next hop toward it.
    pub mac: String,
    /// Initial (and base) weight.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[service]`.
    pub service: ServiceSection,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: TimeoutSection,
    /// `[ports]`.
    #[serde(default)]
    pub ports: PortSection,
    /// `[egress]`.
    #[serde(default)]
    pub egress: EgressSection,
    /// `[[vip]]`.
    #[serde(default)]
    pub vip: Vec<VipSection>,
    /// `[[backend]]`.
    #[serde(default)]
    pub backend: Vec<BackendSection>,
    /// `[sync]`: flow-state sync with the other LB nodes of the VIPs.
    pub sync: Option<SyncSection>,
}

/// `[sync]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// `ADDR:PORT` this node receives peers' records on (a kernel address of
    /// the host, e.g. its management interface).
    pub listen: String,
    /// The other LB nodes' `listen` addresses; records from anyone else are
    /// refused.
    pub peers: Vec<String>,
    /// Records a second sent, and accepted from each peer (default
    /// `marllb_host::sync::DEFAULT_MAX_RECORDS_PER_S`); over it, records
    /// wait up to a second and are then dropped and counted.
    #[serde(default = "default_sync_rate")]
    pub max_records_per_s: u32,
}

fn default_sync_rate() -> u32 {
    marllb_host::sync::DEFAULT_MAX_RECORDS_PER_S
}

/// Validated `[sync]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// Bound here.
    pub listen: std::net::SocketAddr,
    /// Sent to, and the only sources accepted.
    pub peers: Vec<std::net::SocketAddr>,
    /// Records a second, each way per peer (at least 1).
    pub max_records_per_s: u32,
}

fn default_method() -> MethodName {
    MethodName::Alias
}
fn default_encap() -> EncapName {
    EncapName::Ipip
}
fn default_buckets() -> usize {
    1 << 16
}
fn default_seed() -> u64 {
    0x6d61_726c_6c62
}
fn default_true() -> bool {
    true
}
fn default_mtu() -> u16 {
    1500
}
fn default_desc() -> u16 {
    1024
}
fn default_weight() -> f64 {
    1.0
}
fn t_syn() -> f64 {
    5.0
}
fn t_est() -> f64 {
    300.0
}
fn t_closing() -> f64 {
    10.0
}
fn t_udp() -> f64 {
    30.0
}

/// A weight in Q16.16 from a non-negative number below 65536.
pub fn weight_q16(w: f64) -> Option<Weight> {
    (w.is_finite() && (0.0..65536.0).contains(&w))
        .then(|| (w * f64::from(WEIGHT_ONE)).round() as Weight)
}

/// Parses an admin-state name.
pub fn parse_admin(s: &str) -> Option<AdminState> {
    match s {
        "active" => Some(AdminState::Active),
        "draining" => Some(AdminState::Draining),
        "down" => Some(AdminState::Down),
        _ => None,
    }
}

/// A validated configuration, ready to build services from.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The source.
    pub raw: Config,
    /// What the service is built from: backends (admin Active, weight = base
    /// weight), VIPs, timeouts, seed, and the egress, whose `src_mac` may
    /// still be unset (filled from the port when `src_mac_set` is false).
    pub spec: ServiceSpec,
    /// Backend names (for logs).
    pub names: Vec<String>,
    /// `egress.src_mac` was configured.
    pub src_mac_set: bool,
    /// Flow-state sync (`None`: off).
    pub sync: Option<SyncSettings>,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Validated, ConfigError> {
        let raw: Config = toml::from_str(text)?;
        raw.validate()
    }

    fn validate(self) -> Result<Validated, ConfigError> {
        let s = &self.service;
        if !FLOW_TABLE_SIZES.contains(&s.flow_table_buckets) {
            return Err(field_err(
                "service.flow_table_buckets",
                format!(
                    "{} is not one of {:?}",
                    s.flow_table_buckets, FLOW_TABLE_SIZES
                ),
            ));
        }
        if !(576..=9216).contains(&s.mtu) {
            return Err(field_err(
                "service.mtu",
                format!("{} is outside 576..=9216", s.mtu),
            ));
        }
        let t = &self.timeouts;
        let secs = |name: &str, v: f64| -> Result<u64, ConfigError> {
            if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                return Err(field_err(
                    format!("timeouts.{name}"),
                    format!("{v} is not in (0, 3600] seconds"),
                ));
            }
            Ok((v * 1e9) as u64)
        };
        let timeouts = Timeouts {
            tcp_syn_ns: secs("tcp_syn", t.tcp_syn)?,
            tcp_established_ns: secs("tcp_established", t.tcp_established)?,
            tcp_closing_ns: secs("tcp_closing", t.tcp_closing)?,
            udp_ns: secs("udp", t.udp)?,
            other_ns: secs("other", t.other)?,
        };
        let p = &self.ports;
        match (p.mode, p.backend) {
            (PortMode::TwoArmed, None) => {
                return Err(field_err("ports.backend", "two-armed mode needs a backend port"))
            }
            (PortMode::TwoArmed, Some(b)) if b == p.client => {
                return Err(field_err("ports.backend", "must differ from ports.client"))
            }
            (PortMode::OneArmed, Some(b)) if b != p.client => {
                return Err(field_err(
                    "ports.backend",
                    "one-armed mode uses ports.client for both sides (omit ports.backend or set mode = \"two-armed\")",
                ))
            }
            _ => {}
        }
        if p.rx_desc == 0 || p.tx_desc == 0 {
            return Err(field_err("ports.rx_desc", "descriptor counts must be > 0"));
        }
        let mut egress = Egress {
            mtu: s.mtu,
            ..Egress::default()
        };
        let src_mac_set = match &self.egress.src_mac {
            Some(m) => {
                egress.src_mac = parse_mac(m)
                    .ok_or_else(|| field_err("egress.src_mac", format!("invalid MAC {m:?}")))?;
                true
            }
            None => false,
        };
        if let Some(a) = &self.egress.src_v4 {
            let ip: Ipv4Addr = a
                .parse()
                .map_err(|_| field_err("egress.src_v4", format!("invalid IPv4 address {a:?}")))?;
            egress.src_v4 = ip.octets();
        }
        if let Some(a) = &self.egress.src_v6 {
            let ip: Ipv6Addr = a
                .parse()
                .map_err(|_| field_err("egress.src_v6", format!("invalid IPv6 address {a:?}")))?;
            egress.src_v6 = ip.octets();
        }

        if self.backend.is_empty() {
            return Err(field_err("backend", "at least one [[backend]] is required"));
        }
        if self.backend.len() > MAX_BACKENDS {
            return Err(field_err(
                "backend",
                format!("at most {MAX_BACKENDS} backends"),
            ));
        }
        let mut backends = Vec::new();
        let mut names = Vec::new();
        for (i, b) in self.backend.iter().enumerate() {
            let ip: IpAddr = b.address.parse().map_err(|_| {
                field_err(
                    format!("backend[{i}].address"),
                    format!("invalid IP address {:?}", b.address),
                )
            })?;
            let mac = parse_mac(&b.mac).ok_or_else(|| {
                field_err(
                    format!("backend[{i}].mac"),
                    format!("invalid MAC {:?}", b.mac),
                )
            })?;
            let w = weight_q16(b.weight).ok_or_else(|| {
                field_err(
                    format!("backend[{i}].weight"),
                    format!("{} is not in [0, 65536)", b.weight),
                )
            })?;
            let be = marllb_host::backend(ip, mac, w);
            if backends
                .iter()
                .any(|x: &Backend| x.addr == be.addr && x.family == be.family)
            {
                return Err(field_err(
                    format!("backend[{i}].address"),
                    "duplicate backend address",
                ));
            }
            let name = b.name.clone().unwrap_or_else(|| b.address.clone());
            if names.contains(&name) {
                return Err(field_err(
                    format!("backend[{i}].name"),
                    format!("duplicate name {name:?}"),
                ));
            }
            names.push(name);
            backends.push(be);
        }

        if self.vip.is_empty() {
            return Err(field_err("vip", "at least one [[vip]] is required"));
        }
        if self.vip.len() > MAX_VIPS {
            return Err(field_err("vip", format!("at most {MAX_VIPS} VIPs")));
        }
        let mut vips: Vec<ServiceVip> = Vec::new();
        for (i, v) in self.vip.iter().enumerate() {
            let ip: IpAddr = v.address.parse().map_err(|_| {
                field_err(
                    format!("vip[{i}].address"),
                    format!("invalid IP address {:?}", v.address),
                )
            })?;
            let proto = match v.protocol {
                ProtoName::Tcp => VipProto::Tcp,
                ProtoName::Udp => VipProto::Udp,
                ProtoName::Any => VipProto::Any,
            };
            let vip = addr::vip(ip, proto, v.port);
            if vips.iter().any(|x| x.vip == vip) {
                return Err(field_err(
                    format!("vip[{i}]"),
                    "duplicate VIP (address, protocol, port)",
                ));
            }
            let method = match v.method.unwrap_or(s.method) {
                MethodName::Alias => Method::Alias,
                MethodName::Sed => Method::Sed,
                MethodName::Maglev => Method::Maglev,
            };
            let encap = match v.encap.unwrap_or(s.encap) {
                EncapName::L2dsr => Encap::L2Dsr,
                EncapName::Ipip => Encap::IpIp,
                EncapName::Gre => Encap::Gre,
            };
            let members: Vec<u16> = match &v.backends {
                None => (0..backends.len() as u16).collect(),
                Some(list) => {
                    let mut m = Vec::new();
                    for (k, item) in list.iter().enumerate() {
                        let f = format!("vip[{i}].backends[{k}]");
                        let idx = match item {
                            toml::Value::Integer(n) => usize::try_from(*n)
                                .ok()
                                .filter(|&n| n < backends.len())
                                .ok_or_else(|| {
                                    field_err(&f, format!("no backend with index {n}"))
                                })?,
                            toml::Value::String(name) => {
                                names.iter().position(|x| x == name).ok_or_else(|| {
                                    field_err(&f, format!("no backend named {name:?}"))
                                })?
                            }
                            _ => return Err(field_err(&f, "expected a backend name or index")),
                        };
                        if m.contains(&(idx as u16)) {
                            return Err(field_err(&f, "backend listed twice"));
                        }
                        m.push(idx as u16);
                    }
                    if m.is_empty() {
                        return Err(field_err(format!("vip[{i}].backends"), "empty"));
                    }
                    m
                }
            };
            if encap != Encap::L2Dsr {
                for &b in &members {
                    let fam = backends[usize::from(b)].family;
                    if fam == IpFamily::V4 && self.egress.src_v4.is_none() {
                        return Err(field_err(
                            "egress.src_v4",
                            format!("vip[{i}] tunnels to IPv4 backends and needs an outer source address"),
                        ));
                    }
                    if fam == IpFamily::V6 && self.egress.src_v6.is_none() {
                        return Err(field_err(
                            "egress.src_v6",
                            format!("vip[{i}] tunnels to IPv6 backends and needs an outer source address"),
                        ));
                    }
                }
            }
            if !members
                .iter()
                .any(|&b| backends[usize::from(b)].base_weight > 0)
            {
                return Err(field_err(
                    format!("vip[{i}].backends"),
                    "every member has weight 0",
                ));
            }
            vips.push(ServiceVip {
                vip,
                method,
                encap,
                members,
            });
        }
        let spec = ServiceSpec {
            hash_seed: s.hash_seed,
            verify_checksums: s.verify_checksums,
            egress,
            timeouts,
            backends,
            vips,
        };
        let sync = match &self.sync {
            None => None,
            Some(sy) => {
                let addr = |f: &str, v: &str| {
                    v.parse::<std::net::SocketAddr>()
                        .map_err(|_| field_err(f, format!("{v:?} is not ADDR:PORT")))
                };
                let listen = addr("sync.listen", &sy.listen)?;
                let peers = sy
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| addr(&format!("sync.peers[{i}]"), p))
                    .collect::<Result<Vec<_>, _>>()?;
                marllb_host::sync::check_peers(listen, &peers)
                    .map_err(|e| field_err("sync.peers", e.to_string()))?;
                if sy.max_records_per_s == 0 {
                    return Err(field_err(
                        "sync.max_records_per_s",
                        "must be at least 1".to_string(),
                    ));
                }
                Some(SyncSettings {
                    listen,
                    peers,
                    max_records_per_s: sy.max_records_per_s,
                })
            }
        };
        let v = Validated {
            raw: self,
            spec,
            names,
            src_mac_set,
            sync,
        };
        // Catch anything the core refuses now, with the field it belongs to.
        v.build_service(None, None)?;
        Ok(v)
    }
}

impl Validated {
    /// Flow-table buckets per worker.
    pub fn buckets(&self) -> usize {
        self.raw.service.flow_table_buckets
    }

    /// Builds the service, with the controller's `weights` / `admin` states
    /// (by backend index) when given.
    pub fn build_service(
        &self,
        weights: Option<&[Weight]>,
        admin: Option<&[AdminState]>,
    ) -> Result<Box<Service>, ConfigError> {
        self.spec.build(weights, admin).map_err(|e| match e {
            BuildError::Alloc => field_err("service", "cannot allocate the service tables"),
            BuildError::Backends(e) => field_err("backend", format!("{e:?}")),
            BuildError::Timeouts(e) => field_err("timeouts", format!("{e:?}")),
            BuildError::Vip { index, error } => {
                field_err(format!("vip[{index}]"), format!("{error:?}"))
            }
            BuildError::Admin { backend, error } => {
                field_err(format!("admin[{backend}]"), format!("{error:?}"))
            }
        })
    }

    /// The name of the backend the consistent (Maglev) table of `svc` (built
    /// by [`Self::build_service`]) gives `flow`: where a packet of an
    /// established flow goes on an LB node that has no entry for it (another
    /// node placed it; this node took over). `None` when the data plane would
    /// not forward it (no VIP matches) or the VIP has no live backend. The VIP
    /// is matched as the data plane matches it ([`marllb_host::explain`]).
    pub fn consistent_backend(&self, svc: &Service, flow: &Flow) -> Option<&str> {
        let b = marllb_host::consistent_backend(svc, flow)?;
        self.names.get(usize::from(b)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[service]
method = "alias"
encap = "ipip"
flow_table_buckets = 4096

[egress]
src_v4 = "198.18.0.1"

[[vip]]
address = "198.18.255.1"
protocol = "tcp"
port = 80

[[backend]]
name = "a"
address = "198.19.0.10"
mac = "02:00:00:00:01:00"
weight = 1.0

[[backend]]
address = "198.19.0.11"
mac = "02:00:00:00:01:01"
weight = 2.5
"#;

    fn err_of(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => String::from("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_loads() {
        let v = Config::parse(GOOD).map_err(|e| e.to_string());
        assert!(v.is_ok(), "{v:?}");
        if let Ok(v) = v {
            assert_eq!(v.spec.backends.len(), 2);
            assert_eq!(v.spec.backends[1].weight, (2.5 * 65536.0) as u32);
            assert_eq!(v.spec.vips[0].members, vec![0, 1]);
        }
    }

    #[test]
    fn sync_section_is_checked_naming_the_field() {
        let with = |sync: &str| Config::parse(&format!("{GOOD}\n[sync]\n{sync}\n"));
        let v = with("listen = \"198.18.2.10:7946\"\npeers = [\"198.18.2.11:7946\"]");
        assert_eq!(v.ok().and_then(|v| v.sync).map(|s| s.peers.len()), Some(1));
        for (sync, field) in [
            (
                "listen = \"x\"\npeers = [\"198.18.2.11:7946\"]",
                "sync.listen",
            ),
            ("listen = \"198.18.2.10:7946\"\npeers = []", "sync.peers"),
            (
                "listen = \"198.18.2.10:7946\"\npeers = [\"nope\"]",
                "sync.peers[0]",
            ),
            (
                "listen = \"198.18.2.10:7946\"\npeers = [\"198.18.2.10:7946\"]",
                "sync.peers",
            ),
            (
                "listen = \"198.18.2.10:7946\"\npeers = [\"198.18.2.11:7946\"]\nmax_records_per_s = 0",
                "sync.max_records_per_s",
            ),
        ] {
            let e = with(sync).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with(field), "{sync}: {e}");
        }
    }

    /// A TCP flow from `client:sport` to `vip:dport`.
    fn tcp(client: Ipv4Addr, sport: u16, vip: Ipv4Addr, dport: u16) -> Flow {
        Flow {
            src: client.into(),
            sport,
            dst: vip.into(),
            dport,
            proto: 6,
        }
    }

    #[test]
    fn consistent_backend_follows_the_configured_weights() {
        let v = Config::parse(GOOD).map_err(|e| e.to_string());
        assert!(v.is_ok(), "{v:?}");
        let Ok(v) = v else { return };
        let svc = v.build_service(None, None).expect("service");
        let (client, vip) = (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 255, 1));
        let mut counts = std::collections::BTreeMap::new();
        for sport in 10_000..30_000u16 {
            let b = v.consistent_backend(&svc, &tcp(client, sport, vip, 80));
            assert!(b.is_some(), "{sport}");
            // The same flow always gets the same answer, from any build.
            assert_eq!(b, v.consistent_backend(&svc, &tcp(client, sport, vip, 80)));
            if sport % 1000 == 0 {
                let again = v.build_service(None, None).expect("service");
                assert_eq!(
                    b,
                    v.consistent_backend(&again, &tcp(client, sport, vip, 80))
                );
            }
            if let Some(name) = b {
                *counts.entry(name).or_insert(0u32) += 1;
            }
        }
        assert_eq!(counts.len(), 2, "{counts:?}");
        let a = f64::from(counts.get("a").copied().unwrap_or(0));
        // Weights 1 : 2.5 -> shares 0.286 : 0.714 (Maglev's table is within 1%).
        assert!((a / 20_000.0 - 1.0 / 3.5).abs() < 0.02, "{counts:?}");
        // No VIP on that address, port or protocol: no answer.
        for f in [
            tcp(client, 1234, Ipv4Addr::new(198, 18, 255, 2), 80),
            tcp(client, 1234, vip, 81),
            Flow {
                proto: 17,
                ..tcp(client, 1234, vip, 80)
            },
        ] {
            assert_eq!(v.consistent_backend(&svc, &f), None, "{f:?}");
        }
    }

    #[test]
    fn consistent_backend_takes_the_most_specific_vip() {
        // An any-port VIP listed before a port-80 VIP on the same address: a
        // first hit would explain port 80 by the any-port VIP, the data plane
        // places it by the port-80 one.
        let text = GOOD.replace(
            "port = 80\n",
            "backends = [\"a\"]\n\n[[vip]]\naddress = \"198.18.255.1\"\nprotocol = \"tcp\"\nport = 80\nbackends = [1]\n",
        );
        let v = Config::parse(&text).map_err(|e| e.to_string());
        assert!(v.is_ok(), "{v:?}");
        let Ok(v) = v else { return };
        assert_eq!(v.spec.vips.len(), 2);
        let svc = v.build_service(None, None).expect("service");
        let (client, vip) = (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 255, 1));
        for sport in 10_000..10_050u16 {
            let on = |port| v.consistent_backend(&svc, &tcp(client, sport, vip, port));
            assert_eq!(on(80), Some("198.19.0.11"), "port 80");
            assert_eq!(on(81), Some("a"), "port 81");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("02:00:00:00:01:01", "02:00:zz"),
                "backend[1].mac",
            ),
            (
                GOOD.replace("weight = 2.5", "weight = -1"),
                "backend[1].weight",
            ),
            (GOOD.replace("4096", "1000"), "service.flow_table_buckets"),
            (
                GOOD.replace("198.19.0.11", "198.19.0.999"),
                "backend[1].address",
            ),
            (GOOD.replace("src_v4 = \"198.18.0.1\"", ""), "egress.src_v4"),
            (
                GOOD.replace("port = 80", "port = 80\nbackends = [\"zz\"]"),
                "vip[0].backends[0]",
            ),
            (
                GOOD.replace("[egress]", "[ports]\nmode = \"two-armed\"\n[egress]"),
                "ports.backend",
            ),
            (
                GOOD.replace("method = \"alias\"", "method = \"random\""),
                "method",
            ),
            (
                GOOD.replace("encap = \"ipip\"", "encap = \"ipip\"\nbogus = 1"),
                "bogus",
            ),
            // Duplicate backend: the second one names the first's address.
            (
                GOOD.replace("198.19.0.11", "198.19.0.10"),
                "backend[1].address",
            ),
            // Zero backends.
            (
                GOOD.split("[[backend]]").next().unwrap_or("").to_string(),
                "backend",
            ),
            // A truncated file (cut inside a table header): TOML's own error,
            // with the line.
            (
                GOOD[..GOOD.find("[[vip]]").unwrap_or(0) + 4].to_string(),
                "line",
            ),
        ];
        for (text, field) in cases {
            let e = err_of(&text);
            assert!(
                e.contains(field),
                "expected an error naming {field}, got: {e}"
            );
        }
    }

    #[test]
    fn macs_and_weights() {
        // The grammar is marllb-host's, shared with dp-vpp.
        assert_eq!(parse_mac("02:00:00:00:01:0a"), Some([2, 0, 0, 0, 1, 10]));
        assert_eq!(parse_mac("02:00:00:00:01"), None);
        assert_eq!(parse_mac("02:00:00:00:01:0a:00"), None);
        assert_eq!(weight_q16(1.0), Some(WEIGHT_ONE));
        assert_eq!(weight_q16(f64::NAN), None);
    }
}
