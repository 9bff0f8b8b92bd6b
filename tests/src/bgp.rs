//! BGP in the testbed: the router learns the VIP route from a BIRD 2 speaker
//! on each LB node instead of a static multipath route.
//!
//! ```text
//!  router ns: bird (AS 65000, router id 198.18.2.1)
//!    ├── BGP ── lb<i> ns: bird (AS 65001+i, router id 198.18.2.10+i, over mgmt0)
//!    │            protocol static marllb_vip: 198.18.255.1/32 via 198.18.2.200+i
//!    └── protocol kernel, merge paths on: one multipath route to the VIP
//! ```
//!
//! # Contract
//!
//! * Each LB node's speaker exports only the routes of its static protocol
//!   [`VIP_PROTOCOL`], which starts **disabled**: nothing is announced until
//!   someone enables it on the node's control socket (a controller with
//!   `--bgp-socket`, or a test through [`BgpSpeaker::enable`]).
//! * The announced next hop is the node's data-plane next hop 198.18.2.200+i
//!   (`next hop keep`), not its management address: traffic to the VIP goes to
//!   `data0`, BGP runs over `mgmt0`. The router accepts it because it is on
//!   the session's own segment (`gateway direct`, the default for a directly
//!   connected eBGP peer).
//! * The router installs the best paths of all nodes as ONE kernel route
//!   (`merge paths on`): a single next hop when one node announces, a
//!   multipath route when several do, none when none does.
//! * Timers are short (hold 3 s, keepalive 1 s, connect retry 1 s, no
//!   graceful restart) so a failed speaker's routes go within seconds.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::topology::{lb_mgmt_addr, lb_next_hop, ROUTER_ADDR};
use crate::VIP;

/// The router's AS number.
pub const ROUTER_ASN: u32 = 65000;

/// Name of the static protocol that carries the VIP route on every LB node's
/// speaker (the controller's `--bgp-protocol`).
pub const VIP_PROTOCOL: &str = "marllb_vip";

/// The longest control-socket path a Unix socket address holds (`sun_path`
/// is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// AS number of LB node `i` (private range, one AS per node).
pub fn lb_asn(i: usize) -> u32 {
    65001 + i as u32
}

/// Timers shared by every session (see the module contract).
const TIMERS: &str =
    "hold time 3; keepalive time 1; connect retry time 1; connect delay time 1; error wait time 1, 5; graceful restart off;";

/// The router's BIRD configuration: one eBGP session per LB node (learn only),
/// the learned paths merged into one kernel route.
pub fn router_config(lbs: usize) -> String {
    let mut s = format!(
        "log stderr all;\n\
         router id {ROUTER_ADDR};\n\
         \n\
         protocol device {{}}\n\
         \n\
         protocol kernel {{\n\
         \x20 ipv4 {{ export all; }};\n\
         \x20 merge paths on;\n\
         }}\n"
    );
    for i in 0..lbs {
        s += &format!(
            "\nprotocol bgp lb{i} {{\n\
             \x20 local {ROUTER_ADDR} as {ROUTER_ASN};\n\
             \x20 neighbor {mgmt} as {asn};\n\
             \x20 {TIMERS}\n\
             \x20 ipv4 {{ import all; export none; }};\n\
             }}\n",
            mgmt = lb_mgmt_addr(i),
            asn = lb_asn(i),
        );
    }
    s
}

/// LB node `i`'s BIRD configuration: the VIP route as a disabled static
/// protocol, exported to the router with the data-plane next hop kept.
pub fn lb_config(i: usize) -> String {
    let mgmt = lb_mgmt_addr(i);
    format!(
        "log stderr all;\n\
         router id {mgmt};\n\
         \n\
         protocol device {{}}\n\
         \n\
         protocol static {VIP_PROTOCOL} {{\n\
         \x20 disabled yes;\n\
         \x20 ipv4;\n\
         \x20 route {VIP}/32 via {nh};\n\
         }}\n\
         \n\
         protocol bgp uplink {{\n\
         \x20 local {mgmt} as {asn};\n\
         \x20 neighbor {ROUTER_ADDR} as {ROUTER_ASN};\n\
         \x20 {TIMERS}\n\
         \x20 ipv4 {{ import none; export where proto = \"{VIP_PROTOCOL}\"; next hop keep; }};\n\
         }}\n",
        nh = lb_next_hop(i),
        asn = lb_asn(i),
    )
}

/// One running BIRD daemon of the testbed.
#[derive(Debug, Clone)]
pub struct BgpSpeaker {
    /// Label of its `bird` process in the [`crate::netns::Testbed`] (for
    /// `kill`, `signal`, `running`).
    pub label: String,
    /// Its control socket (`birdc -s`; a controller's `--bgp-socket`).
    pub socket: PathBuf,
    /// Its AS number.
    pub asn: u32,
}

impl BgpSpeaker {
    /// The controller flags that hand it this speaker:
    /// `--bgp-socket <socket> --bgp-protocol marllb_vip` (for
    /// [`crate::lb::CtrlOptions::bgp`]).
    pub fn ctrl_flags(&self) -> Vec<String> {
        vec![
            "--bgp-socket".into(),
            self.socket.to_string_lossy().into_owned(),
            "--bgp-protocol".into(),
            VIP_PROTOCOL.into(),
        ]
    }

    /// Announces the VIP: `enable marllb_vip` (test side; a controller with
    /// `--bgp-socket` does this itself).
    pub fn enable(&self) -> Result<()> {
        birdc(&self.socket, &["enable", VIP_PROTOCOL]).map(drop)
    }

    /// Withdraws the VIP: `disable marllb_vip`.
    pub fn disable(&self) -> Result<()> {
        birdc(&self.socket, &["disable", VIP_PROTOCOL]).map(drop)
    }

    /// Names of its BGP protocols whose session is `Established`.
    pub fn established(&self) -> Result<Vec<String>> {
        let out = birdc(&self.socket, &["show", "protocols"])?;
        Ok(parse_established(&out))
    }
}

/// Runs `birdc -v -s <socket> <args>` and returns its reply lines without the
/// reply codes. `-v` prints BIRD's numeric codes, so a refused command (codes
/// 8xxx run-time errors, 9xxx parse errors) is an error here even though birdc
/// itself exits 0.
pub fn birdc(socket: &Path, args: &[&str]) -> Result<String> {
    let out = crate::netns::run(
        Command::new("birdc")
            .arg("-v")
            .arg("-s")
            .arg(socket)
            .args(args),
    )
    .context("birdc (Debian package bird2)")?;
    let mut text = String::new();
    for line in out.lines() {
        let (code, rest) = split_reply(line);
        if code.is_some_and(|c| c.starts_with('8') || c.starts_with('9')) {
            bail!("birdc {}: {}", args.join(" "), rest.trim());
        }
        text += rest;
        text.push('\n');
    }
    Ok(text)
}

/// Splits a `birdc -v` line into its 4-digit reply code (absent on a
/// continuation line, which starts with a space) and the text.
fn split_reply(line: &str) -> (Option<&str>, &str) {
    match line.get(..4) {
        Some(code) if code.bytes().all(|b| b.is_ascii_digit()) => {
            (Some(code), line.get(5..).unwrap_or(""))
        }
        _ => (None, line.strip_prefix(' ').unwrap_or(line)),
    }
}

/// The BGP protocols of a `show protocols` reply whose session is
/// `Established` (the `Info` column).
fn parse_established(show_protocols: &str) -> Vec<String> {
    show_protocols
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [name, "BGP", .., "Established"] => Some((*name).to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Starts `bird` in namespace `ns` with `config` written to
/// `dir/bird-<name>.conf` and its control socket at `dir/bird-<name>.ctl`
/// (label `bird-<name>`), and waits until the socket answers.
pub fn start(
    tb: &mut crate::netns::Testbed,
    ns: &str,
    name: &str,
    asn: u32,
    config: &str,
    dir: &Path,
) -> Result<BgpSpeaker> {
    let conf = dir.join(format!("bird-{name}.conf"));
    let socket = dir.join(format!("bird-{name}.ctl"));
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "BIRD control socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter testbed directory",
            socket.display()
        );
    }
    std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
    let _ = std::fs::remove_file(&socket);
    let label = format!("bird-{name}");
    let log = dir.join(format!("bird-{name}.log"));
    let (c, s) = (conf.to_string_lossy(), socket.to_string_lossy());
    tb.spawn(&label, ns, "bird", &["-f", "-c", &c, "-s", &s], &log)
        .context("bird (Debian package bird2)")?;
    let speaker = BgpSpeaker {
        label: label.clone(),
        socket,
        asn,
    };
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if birdc(&speaker.socket, &["show", "status"]).is_ok() {
            return Ok(speaker);
        }
        if !tb.running(&label) || Instant::now() >= end {
            bail!(
                "bird {name} did not come up:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateways of the router's route to the VIP, sorted; empty when it has
/// none. Reads `ip -j route show <VIP>` in namespace `router`.
pub fn vip_next_hops(router: &str) -> Result<Vec<Ipv4Addr>> {
    let out =
        crate::netns::run(crate::netns::in_ns(router, "ip").args(["-j", "route", "show", VIP]))?;
    parse_next_hops(&out)
}

/// The gateways of `ip -j route show` output: `gateway` of a single-path
/// route, `nexthops[].gateway` of a multipath one; sorted.
pub fn parse_next_hops(json: &str) -> Result<Vec<Ipv4Addr>> {
    #[derive(serde::Deserialize)]
    struct Hop {
        gateway: Option<Ipv4Addr>,
    }
    #[derive(serde::Deserialize)]
    struct Route {
        gateway: Option<Ipv4Addr>,
        #[serde(default)]
        nexthops: Vec<Hop>,
    }
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<Route> =
        serde_json::from_str(json).with_context(|| format!("ip -j route: {json:?}"))?;
    let mut hops: Vec<Ipv4Addr> = routes
        .iter()
        .flat_map(|r| {
            r.gateway
                .into_iter()
                .chain(r.nexthops.iter().filter_map(|h| h.gateway))
        })
        .collect();
    hops.sort();
    Ok(hops)
}

/// `true` when BIRD 2 is installed (`cargo xtask test` installs `bird2`); the
/// BGP tests skip with a message otherwise.
pub fn bird_installed() -> bool {
    let ok = Command::new("bird").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: no bird (apt-get install bird2; cargo xtask test installs it)");
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_of_single_multi_and_no_route() {
        let single = r#"[{"dst":"198.18.255.1","gateway":"198.18.2.201","dev":"br0","protocol":"bird","metric":32,"flags":[]}]"#;
        assert_eq!(
            parse_next_hops(single).unwrap(),
            vec![Ipv4Addr::new(198, 18, 2, 201)]
        );
        let multi = r#"[{"dst":"198.18.255.1","protocol":"bird","metric":32,"flags":[],"nexthops":[{"gateway":"198.18.2.201","dev":"br0","weight":1,"flags":[]},{"gateway":"198.18.2.200","dev":"br0","weight":1,"flags":[]}]}]"#;
        assert_eq!(
            parse_next_hops(multi).unwrap(),
            vec![
                Ipv4Addr::new(198, 18, 2, 200),
                Ipv4Addr::new(198, 18, 2, 201)
            ]
        );
        assert!(parse_next_hops("[]").unwrap().is_empty());
        assert!(parse_next_hops("\n").unwrap().is_empty());
        assert!(parse_next_hops("[{").is_err());
    }

    #[test]
    fn birdc_reply_codes_and_established_sessions() {
        assert_eq!(
            split_reply("0001 BIRD 2.0.12 ready."),
            (Some("0001"), "BIRD 2.0.12 ready.")
        );
        assert_eq!(split_reply(" continued"), (None, "continued"));
        let show = "Name       Proto      Table      State  Since         Info\n\
                    device1    Device     ---        up     12:00:00.000  \n\
                    kernel1    Kernel     master4    up     12:00:00.000  \n\
                    lb0        BGP        ---        up     12:00:01.000  Established   \n\
                    lb1        BGP        ---        start  12:00:00.000  Connect       \n";
        assert_eq!(parse_established(show), vec!["lb0".to_string()]);
    }

    #[test]
    fn configs_carry_the_contract() {
        let lb = lb_config(1);
        for want in [
            "router id 198.18.2.11;",
            "protocol static marllb_vip {",
            "disabled yes;",
            "route 198.18.255.1/32 via 198.18.2.201;",
            "local 198.18.2.11 as 65002;",
            "neighbor 198.18.2.1 as 65000;",
            "export where proto = \"marllb_vip\"; next hop keep;",
            "hold time 3;",
        ] {
            assert!(lb.contains(want), "{want:?} not in\n{lb}");
        }
        let r = router_config(2);
        for want in [
            "router id 198.18.2.1;",
            "merge paths on;",
            "neighbor 198.18.2.10 as 65001;",
            "neighbor 198.18.2.11 as 65002;",
            "import all; export none;",
        ] {
            assert!(r.contains(want), "{want:?} not in\n{r}");
        }
    }
}
