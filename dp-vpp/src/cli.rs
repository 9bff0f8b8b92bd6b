//! Operator CLI grammar, parsed in Rust without VPP.
//!
//! VPP hands a command function the rest of the line after the matched path; the
//! plugin registers two paths, `lb rl` and `show lb rl`, and passes that rest here.
//! Errors read like VPP's own (`unknown input `foo'`, `expected IP address`), so
//! an operator sees the same style as from any built-in command.
//!
//! ```text
//! lb rl enable [<interface>]          lb rl disable [<interface>]
//! lb rl set-vip <addr> [protocol tcp|udp] [port <n>] [encap gre4|gre6|ipip|l2dsr]
//!               [method alias|sed|maglev] [del]
//! lb rl set-servers <addr> [mac <mac>] [weight <w>] [<addr> [mac <mac>] [weight <w>]]...
//! lb rl shm <name>
//! lb rl conf [ip4-src-address <a>] [ip6-src-address <a>] [mtu <n>] [mac <mac>]
//!            [hash-seed <n>]
//! show lb rl stats
//! show lb rl flows [count <n>]
//! ```

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use marllb_core::select::Method;
use marllb_core::{Weight, WEIGHT_ONE};
/// MAC addresses as both hosts parse them (`aa:bb:cc:dd:ee:ff`, also with `-`).
pub use marllb_host::parse_mac;

/// Largest weight an operator may give (the controller's clamp too).
pub const MAX_WEIGHT: u32 = 256;

/// Default number of flows `show lb rl flows` lists.
pub const DEFAULT_FLOW_COUNT: usize = 32;

/// A CLI error, worded as VPP words them. Its `Display` is the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CliError> {
    Err(CliError(msg.into()))
}

/// Protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
}

/// How packets of a VIP reach the servers, as the operator names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EncapSpec {
    /// GRE over IPv4 (servers must be IPv4).
    #[default]
    Gre4,
    /// GRE over IPv6 (servers must be IPv6).
    Gre6,
    /// IP-in-IP, outer family of each server.
    IpIp,
    /// Direct server return on the same L2 segment (servers need a MAC).
    L2Dsr,
}

impl EncapSpec {
    /// The CLI keyword.
    pub const fn name(self) -> &'static str {
        match self {
            EncapSpec::Gre4 => "gre4",
            EncapSpec::Gre6 => "gre6",
            EncapSpec::IpIp => "ipip",
            EncapSpec::L2Dsr => "l2dsr",
        }
    }
}

/// One `set-vip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipSpec {
    /// Address.
    pub addr: IpAddr,
    /// Protocol; `None` = any.
    pub proto: Option<Proto>,
    /// Port; 0 = any.
    pub port: u16,
    /// Encapsulation.
    pub encap: EncapSpec,
    /// New-flow placement.
    pub method: Method,
}

/// One server of `set-servers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    /// Address (outer destination for tunnels).
    pub addr: IpAddr,
    /// MAC address (L2 DSR only).
    pub mac: Option<[u8; 6]>,
    /// Configured weight, Q16.16 (SED's and WCMP's weight, the controller's
    /// base).
    pub weight: Weight,
}

/// `lb rl conf` settings; `None` leaves a setting as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConfSpec {
    /// Outer IPv4 source.
    pub src4: Option<Ipv4Addr>,
    /// Outer IPv6 source.
    pub src6: Option<Ipv6Addr>,
    /// Largest IP packet the server link carries.
    pub mtu: Option<u16>,
    /// Source MAC of L2 DSR frames.
    pub mac: Option<[u8; 6]>,
    /// Flow hash seed (equal on every LB node).
    pub hash_seed: Option<u64>,
}

/// A parsed `lb rl ...` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start load-balancing (and attach the nodes to `interface`, if given).
    Enable {
        /// Interface name, resolved by VPP.
        interface: Option<String>,
    },
    /// Stop load-balancing (on `interface` only, if given).
    Disable {
        /// Interface name, resolved by VPP.
        interface: Option<String>,
    },
    /// Add or replace a VIP.
    SetVip(VipSpec),
    /// Remove a VIP.
    DelVip(VipSpec),
    /// Replace the server set.
    SetServers {
        /// The servers, in order (backend index = position), each with its
        /// configured weight.
        servers: Vec<ServerSpec>,
    },
    /// Create the shared-memory region for the controller.
    Shm {
        /// Region name under /dev/shm.
        name: String,
    },
    /// Egress settings.
    Conf(ConfSpec),
    /// Flow-state sync with the other LB nodes: `sync listen ADDR:PORT peer
    /// ADDR:PORT [peer ADDR:PORT]... [rate RECORDS_PER_S]`.
    Sync {
        /// Kernel address this node receives peers' records on.
        listen: std::net::SocketAddr,
        /// The other nodes' listen addresses.
        peers: Vec<std::net::SocketAddr>,
        /// Records a second sent, and accepted from each peer.
        rate: u32,
    },
}

/// A parsed `show lb rl ...` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowCommand {
    /// Counters of every thread, summed, and per backend.
    Stats,
    /// Flow entries, at most `count`.
    Flows {
        /// Most entries to list.
        count: usize,
    },
}

/// Whitespace tokens with the input that remains from each one (for
/// `unknown input `<rest>'`, as VPP's `format_unformat_error` prints).
struct Tokens<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(input: &'a str) -> Self {
        Tokens { input, pos: 0 }
    }

    fn skip_ws(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let rest = &self.input[self.pos..];
        rest.split_whitespace().next()
    }

    fn next(&mut self) -> Option<&'a str> {
        let t = self.peek()?;
        self.pos += t.len();
        Some(t)
    }

    /// The unparsed rest of the line, trimmed.
    fn rest(&mut self) -> &'a str {
        self.skip_ws();
        self.input[self.pos..].trim_end()
    }

    fn unknown<T>(&mut self) -> Result<T, CliError> {
        err(format!("unknown input `{}'", self.rest()))
    }

    /// The value after a keyword, or `expected <what>`.
    fn value(&mut self, what: &str) -> Result<&'a str, CliError> {
        match self.next() {
            Some(v) => Ok(v),
            None => err(format!("expected {what}")),
        }
    }
}

fn parse_ip(t: Option<&str>) -> Result<IpAddr, CliError> {
    match t {
        None => err("expected IP address"),
        Some(s) => s
            .parse::<IpAddr>()
            .or_else(|_| err(format!("expected IP address, got `{s}'"))),
    }
}

/// A decimal weight with up to four fractional digits, 0..=256, as Q16.16.
pub fn parse_weight(s: &str) -> Option<Weight> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 4
    {
        return None;
    }
    let i: u32 = if int.is_empty() { 0 } else { int.parse().ok()? };
    if i > MAX_WEIGHT {
        return None;
    }
    let mut f: u64 = 0;
    let mut scale: u64 = 1;
    for b in frac.bytes() {
        f = f * 10 + u64::from(b - b'0');
        scale *= 10;
    }
    let q = u64::from(i) * u64::from(WEIGHT_ONE) + (f * u64::from(WEIGHT_ONE) + scale / 2) / scale;
    (q <= u64::from(MAX_WEIGHT) * u64::from(WEIGHT_ONE)).then_some(q as Weight)
}

fn parse_num<T: core::str::FromStr>(t: &mut Tokens<'_>, what: &str) -> Result<T, CliError> {
    let v = t.value(what)?;
    v.parse::<T>()
        .or_else(|_| err(format!("expected {what}, got `{v}'")))
}

/// Parses the rest of an `lb rl` line.
pub fn parse_lb(input: &str) -> Result<Command, CliError> {
    let mut t = Tokens::new(input);
    let Some(sub) = t.next() else {
        return err("expected one of: enable, disable, set-vip, set-servers, shm, conf, sync");
    };
    let cmd = match sub {
        "enable" | "disable" => {
            let interface = t.next().map(str::to_owned);
            if sub == "enable" {
                Command::Enable { interface }
            } else {
                Command::Disable { interface }
            }
        }
        "set-vip" => parse_set_vip(&mut t)?,
        "set-servers" => parse_set_servers(&mut t)?,
        "shm" => {
            let name = t.value("shared-memory region name")?;
            if name.contains('/') || name.len() > 200 {
                return err(format!("invalid region name `{name}'"));
            }
            Command::Shm { name: name.into() }
        }
        "conf" => parse_conf(&mut t)?,
        "sync" => {
            let sock = |t: &mut Tokens<'_>, what: &str| -> Result<std::net::SocketAddr, CliError> {
                let v = t.value(what)?;
                v.parse()
                    .or_else(|_| err(format!("expected {what} (ADDR:PORT), got `{v}'")))
            };
            if t.next() != Some("listen") {
                return err("expected `listen ADDR:PORT'");
            }
            let listen = sock(&mut t, "listen address")?;
            let mut peers = Vec::new();
            while t.peek() == Some("peer") {
                t.next();
                peers.push(sock(&mut t, "peer address")?);
            }
            marllb_host::sync::check_peers(listen, &peers).or_else(|e| err(e.to_string()))?;
            let mut rate = marllb_host::sync::DEFAULT_MAX_RECORDS_PER_S;
            if t.peek() == Some("rate") {
                t.next();
                let v = t.value("records per second")?;
                rate = match v.parse::<u32>() {
                    Ok(r) if r > 0 => r,
                    _ => {
                        return err(format!(
                            "expected records per second (1 or more), got `{v}'"
                        ))
                    }
                };
            }
            Command::Sync {
                listen,
                peers,
                rate,
            }
        }
        _ => {
            t.pos = 0;
            return t.unknown();
        }
    };
    if t.peek().is_some() {
        return t.unknown();
    }
    Ok(cmd)
}

fn parse_set_vip(t: &mut Tokens<'_>) -> Result<Command, CliError> {
    let addr = parse_ip(t.next())?;
    let mut spec = VipSpec {
        addr,
        proto: None,
        port: 0,
        encap: if addr.is_ipv4() {
            EncapSpec::Gre4
        } else {
            EncapSpec::Gre6
        },
        method: Method::Sed,
    };
    let mut del = false;
    while let Some(k) = t.peek() {
        match k {
            "protocol" => {
                t.next();
                spec.proto = Some(match t.value("protocol")? {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    other => return err(format!("unknown protocol `{other}' (tcp|udp)")),
                });
            }
            "port" => {
                t.next();
                spec.port = parse_num(t, "port number")?;
            }
            "encap" => {
                t.next();
                spec.encap = match t.value("encap")? {
                    "gre4" => EncapSpec::Gre4,
                    "gre6" => EncapSpec::Gre6,
                    "ipip" => EncapSpec::IpIp,
                    "l2dsr" => EncapSpec::L2Dsr,
                    other => return err(format!("unknown encap `{other}' (gre4|gre6|ipip|l2dsr)")),
                };
            }
            "method" => {
                t.next();
                spec.method = match t.value("method")? {
                    "alias" => Method::Alias,
                    "sed" => Method::Sed,
                    "maglev" => Method::Maglev,
                    other => return err(format!("unknown method `{other}' (alias|sed|maglev)")),
                };
            }
            "del" => {
                t.next();
                del = true;
            }
            _ => return t.unknown(),
        }
    }
    if spec.port != 0 && spec.proto.is_none() {
        return err("port requires protocol tcp or udp");
    }
    Ok(if del {
        Command::DelVip(spec)
    } else {
        Command::SetVip(spec)
    })
}

/// `set-servers`: a `weight` between a server and the next one is that
/// server's own; a `weight` after the last server is the weight of every
/// server that has none of its own (so the seed's `set-servers A B weight 2`
/// still gives both 2); a server with neither gets 1.
fn parse_set_servers(t: &mut Tokens<'_>) -> Result<Command, CliError> {
    let mut servers: Vec<ServerSpec> = Vec::new();
    // Per server: its own weight, once known.
    let mut own: Vec<Option<Weight>> = Vec::new();
    // The last `weight` read, not yet followed by another server.
    let mut pending: Option<Weight> = None;
    while let Some(k) = t.peek() {
        match k {
            "weight" => {
                t.next();
                let v = t.value("weight")?;
                let Some(w) = parse_weight(v) else {
                    return err(format!("expected weight 0..{MAX_WEIGHT}, got `{v}'"));
                };
                if servers.is_empty() || pending.is_some() {
                    return err("weight must follow a server address");
                }
                pending = Some(w);
            }
            "mac" => {
                t.next();
                let v = t.value("MAC address")?;
                let Some(mac) = parse_mac(v) else {
                    return err(format!("expected MAC address, got `{v}'"));
                };
                match servers.last_mut() {
                    Some(s) if s.mac.is_none() && pending.is_none() => s.mac = Some(mac),
                    _ => return err("mac must follow a server address"),
                }
            }
            _ => {
                let Ok(addr) = k.parse::<IpAddr>() else {
                    return if servers.is_empty() {
                        err(format!("expected IP address, got `{k}'"))
                    } else {
                        t.unknown()
                    };
                };
                t.next();
                if servers.iter().any(|s| s.addr == addr) {
                    return err(format!("duplicate server {addr}"));
                }
                if servers.len() == marllb_core::MAX_BACKENDS {
                    return err(format!(
                        "too many servers (at most {})",
                        marllb_core::MAX_BACKENDS
                    ));
                }
                if let Some(w) = own.last_mut() {
                    *w = pending.take();
                }
                servers.push(ServerSpec {
                    addr,
                    mac: None,
                    weight: WEIGHT_ONE,
                });
                own.push(None);
            }
        }
    }
    if servers.is_empty() {
        return err("expected IP address");
    }
    let default = pending.unwrap_or(WEIGHT_ONE);
    for (s, w) in servers.iter_mut().zip(own) {
        s.weight = w.unwrap_or(default);
    }
    Ok(Command::SetServers { servers })
}

fn parse_conf(t: &mut Tokens<'_>) -> Result<Command, CliError> {
    let mut c = ConfSpec::default();
    let mut any = false;
    while let Some(k) = t.peek() {
        t.next();
        any = true;
        match k {
            "ip4-src-address" => match parse_ip(t.next())? {
                IpAddr::V4(a) => c.src4 = Some(a),
                IpAddr::V6(a) => return err(format!("expected IPv4 address, got `{a}'")),
            },
            "ip6-src-address" => match parse_ip(t.next())? {
                IpAddr::V6(a) => c.src6 = Some(a),
                IpAddr::V4(a) => return err(format!("expected IPv6 address, got `{a}'")),
            },
            "mtu" => {
                let m: u16 = parse_num(t, "MTU")?;
                if m < 576 {
                    return err(format!("mtu {m} too small (at least 576)"));
                }
                c.mtu = Some(m);
            }
            "mac" => {
                let v = t.value("MAC address")?;
                c.mac = Some(
                    parse_mac(v)
                        .ok_or_else(|| CliError(format!("expected MAC address, got `{v}'")))?,
                );
            }
            "hash-seed" => c.hash_seed = Some(parse_num(t, "hash seed")?),
            _ => {
                t.pos -= k.len();
                return t.unknown();
            }
        }
    }
    if !any {
        return err("expected ip4-src-address, ip6-src-address, mtu, mac or hash-seed");
    }
    Ok(Command::Conf(c))
}

/// Parses the rest of a `show lb rl` line.
pub fn parse_show(input: &str) -> Result<ShowCommand, CliError> {
    let mut t = Tokens::new(input);
    let cmd = match t.next() {
        None => return err("expected stats or flows"),
        Some("stats") => ShowCommand::Stats,
        Some("flows") => {
            let mut count = DEFAULT_FLOW_COUNT;
            if t.peek() == Some("count") {
                t.next();
                count = parse_num(&mut t, "count")?;
            }
            ShowCommand::Flows { count }
        }
        Some(_) => {
            t.pos = 0;
            return t.unknown();
        }
    };
    if t.peek().is_some() {
        return t.unknown();
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(r: Result<Command, CliError>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn enable_disable() {
        assert_eq!(
            parse_lb("enable").unwrap(),
            Command::Enable { interface: None }
        );
        assert_eq!(
            parse_lb("  disable  GigabitEthernet0/8/0 ").unwrap(),
            Command::Disable {
                interface: Some("GigabitEthernet0/8/0".into())
            }
        );
        assert_eq!(e(parse_lb("enable eth0 now")), "unknown input `now'");
    }

    #[test]
    fn set_vip_full_and_defaults() {
        let c = parse_lb("set-vip 10.0.0.1 protocol tcp port 80 encap ipip method maglev").unwrap();
        assert_eq!(
            c,
            Command::SetVip(VipSpec {
                addr: "10.0.0.1".parse().unwrap(),
                proto: Some(Proto::Tcp),
                port: 80,
                encap: EncapSpec::IpIp,
                method: Method::Maglev,
            })
        );
        let Command::SetVip(v) = parse_lb("set-vip 2001:db8::1").unwrap() else {
            panic!()
        };
        assert_eq!((v.proto, v.port, v.encap), (None, 0, EncapSpec::Gre6));
        assert_eq!(v.method, Method::Sed);
        let Command::SetVip(v) = parse_lb("set-vip 10.0.0.1 encap l2dsr protocol udp").unwrap()
        else {
            panic!()
        };
        assert_eq!((v.proto, v.encap), (Some(Proto::Udp), EncapSpec::L2Dsr));
        assert!(matches!(
            parse_lb("set-vip 10.0.0.1 protocol tcp port 80 del").unwrap(),
            Command::DelVip(_)
        ));
    }

    #[test]
    fn set_vip_errors() {
        assert_eq!(e(parse_lb("set-vip")), "expected IP address");
        assert_eq!(e(parse_lb("set-vip foo")), "expected IP address, got `foo'");
        assert_eq!(
            e(parse_lb("set-vip 10.0.0.1 foo bar")),
            "unknown input `foo bar'"
        );
        assert_eq!(
            e(parse_lb("set-vip 10.0.0.1 protocol sctp")),
            "unknown protocol `sctp' (tcp|udp)"
        );
        assert_eq!(
            e(parse_lb("set-vip 10.0.0.1 protocol tcp port 70000")),
            "expected port number, got `70000'"
        );
        assert_eq!(
            e(parse_lb("set-vip 10.0.0.1 protocol tcp port")),
            "expected port number"
        );
        assert_eq!(
            e(parse_lb("set-vip 10.0.0.1 encap vxlan")),
            "unknown encap `vxlan' (gre4|gre6|ipip|l2dsr)"
        );
        assert_eq!(
            e(parse_lb("set-vip 10.0.0.1 port 80")),
            "port requires protocol tcp or udp"
        );
    }

    #[test]
    fn set_servers() {
        let weights = |line: &str| match parse_lb(line).unwrap() {
            Command::SetServers { servers } => servers.iter().map(|s| s.weight).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let c = parse_lb("set-servers 10.1.0.1 10.1.0.2 mac 02:00:00:00:00:02 weight 2.5").unwrap();
        let Command::SetServers { servers } = c else {
            panic!()
        };
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].mac, None);
        assert_eq!(servers[1].mac, Some([2, 0, 0, 0, 0, 2]));
        // The seed's form: a final weight is every server's.
        assert_eq!(
            weights("set-servers 10.1.0.1 10.1.0.2 weight 2.5"),
            [5 * WEIGHT_ONE / 2; 2]
        );
        assert_eq!(weights("set-servers ::1"), [WEIGHT_ONE]);
        // A weight between servers is the one before it's own; a final one is
        // the default of the rest.
        assert_eq!(
            weights("set-servers 10.1.0.1 mac 02:00:00:00:00:01 weight 0.4 10.1.0.2 10.1.0.3 weight 0.8"),
            [parse_weight("0.4").unwrap(), parse_weight("0.8").unwrap(), parse_weight("0.8").unwrap()]
        );
        assert_eq!(
            weights("set-servers 10.1.0.1 weight 3 10.1.0.2 weight 2 10.1.0.3"),
            [3 * WEIGHT_ONE, 2 * WEIGHT_ONE, WEIGHT_ONE]
        );
    }

    #[test]
    fn set_servers_errors() {
        assert_eq!(e(parse_lb("set-servers")), "expected IP address");
        assert_eq!(
            e(parse_lb("set-servers foo")),
            "expected IP address, got `foo'"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 foo")),
            "unknown input `foo'"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 weight 1 weight 2")),
            "weight must follow a server address"
        );
        assert_eq!(
            e(parse_lb(
                "set-servers 10.0.0.1 weight 1 mac 02:00:00:00:00:01"
            )),
            "mac must follow a server address"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 weight x")),
            "expected weight 0..256, got `x'"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 weight 257")),
            "expected weight 0..256, got `257'"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 weight")),
            "expected weight"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 10.0.0.1")),
            "duplicate server 10.0.0.1"
        );
        assert_eq!(
            e(parse_lb("set-servers mac 02:00:00:00:00:01")),
            "mac must follow a server address"
        );
        assert_eq!(
            e(parse_lb("set-servers 10.0.0.1 mac 02:00:00:00:00")),
            "expected MAC address, got `02:00:00:00:00'"
        );
    }

    #[test]
    fn shm_conf_and_unknown() {
        assert_eq!(
            parse_lb("shm marllb0").unwrap(),
            Command::Shm {
                name: "marllb0".into()
            }
        );
        assert_eq!(e(parse_lb("shm")), "expected shared-memory region name");
        assert_eq!(
            parse_lb("sync listen 10.0.0.1:7946 peer 10.0.0.2:7946 peer 10.0.0.3:7946").ok(),
            Some(Command::Sync {
                listen: "10.0.0.1:7946".parse().unwrap(),
                peers: vec![
                    "10.0.0.2:7946".parse().unwrap(),
                    "10.0.0.3:7946".parse().unwrap()
                ],
                rate: marllb_host::sync::DEFAULT_MAX_RECORDS_PER_S,
            })
        );
        assert!(matches!(
            parse_lb("sync listen 10.0.0.1:7946 peer 10.0.0.2:7946 rate 5000"),
            Ok(Command::Sync { rate: 5000, .. })
        ));
        assert_eq!(
            e(parse_lb(
                "sync listen 10.0.0.1:7946 peer 10.0.0.2:7946 rate 0"
            )),
            "expected records per second (1 or more), got `0'"
        );
        assert_eq!(
            e(parse_lb("sync peer 10.0.0.2:1")),
            "expected `listen ADDR:PORT'"
        );
        assert!(e(parse_lb("sync listen 10.0.0.1:1")).contains("1 to 16 peers"));
        assert!(e(parse_lb("sync listen 10.0.0.1 peer 10.0.0.2:1")).contains("ADDR:PORT"));
        assert_eq!(e(parse_lb("shm a/b")), "invalid region name `a/b'");
        assert_eq!(e(parse_lb("foo")), "unknown input `foo'");
        assert_eq!(e(parse_lb("foo bar")), "unknown input `foo bar'");
        assert!(e(parse_lb("")).starts_with("expected one of"));
        let Command::Conf(c) = parse_lb(
            "conf ip4-src-address 10.9.0.1 ip6-src-address 2001:db8::9 mtu 9000 hash-seed 7",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.src4, Some(Ipv4Addr::new(10, 9, 0, 1)));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.hash_seed, Some(7));
        assert_eq!(
            e(parse_lb("conf ip4-src-address 2001:db8::9")),
            "expected IPv4 address, got `2001:db8::9'"
        );
        assert_eq!(
            e(parse_lb("conf mtu 100")),
            "mtu 100 too small (at least 576)"
        );
        assert_eq!(e(parse_lb("conf bogus 1")), "unknown input `bogus 1'");
    }

    #[test]
    fn show() {
        assert_eq!(parse_show("stats").unwrap(), ShowCommand::Stats);
        assert_eq!(
            parse_show("flows").unwrap(),
            ShowCommand::Flows {
                count: DEFAULT_FLOW_COUNT
            }
        );
        assert_eq!(
            parse_show("flows count 5").unwrap(),
            ShowCommand::Flows { count: 5 }
        );
        assert_eq!(
            parse_show("flows count x").unwrap_err().0,
            "expected count, got `x'"
        );
        assert_eq!(parse_show("flows count").unwrap_err().0, "expected count");
        assert_eq!(
            parse_show("stats now").unwrap_err().0,
            "unknown input `now'"
        );
        assert_eq!(
            parse_show("weights").unwrap_err().0,
            "unknown input `weights'"
        );
        assert_eq!(parse_show("").unwrap_err().0, "expected stats or flows");
    }

    #[test]
    fn weights_and_macs() {
        assert_eq!(parse_weight("1"), Some(WEIGHT_ONE));
        assert_eq!(parse_weight("0"), Some(0));
        assert_eq!(parse_weight("0.5"), Some(WEIGHT_ONE / 2));
        assert_eq!(parse_weight(".25"), Some(WEIGHT_ONE / 4));
        assert_eq!(parse_weight("256"), Some(256 * WEIGHT_ONE));
        assert_eq!(parse_weight("256.1"), None);
        assert_eq!(parse_weight("-1"), None);
        assert_eq!(parse_weight("1.23456"), None);
        assert_eq!(parse_weight("."), None);
        assert_eq!(
            parse_mac("aa-bb-cc-dd-ee-ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:ff:00"), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:fg"), None);
    }
}
