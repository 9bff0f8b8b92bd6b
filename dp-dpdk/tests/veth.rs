//! Real TCP through marllb-dpdk: af_packet ports on veth pairs in network
//! namespaces the test creates.
//!
//! ```text
//!  ns cli                ns lb (marllb-dpdk)          ns srv
//!  c0 198.18.1.2 ─────── l0 (net_af_packet0)
//!                        l1 (net_af_packet1) ──────── b0 198.18.2.2
//!  r1 198.18.3.1 ────────────────────────────────── r0 198.18.3.2  (direct return)
//! ```
//!
//! The client reaches the VIP 198.18.255.1 through l0 (static neighbour entry
//! for the LB's MAC: the LB answers no ARP, Host frames are dropped). The LB
//! sends to the backend through l1 in IP-in-IP (srv decapsulates with an ipip
//! device) or L2 DSR (srv has the VIP on lo); the server answers the client
//! directly over r0/r1. Addresses are from 198.18.0.0/15 only.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LB_MAC_L0: &str = "02:00:00:00:0a:01";
const LB_MAC_L1: &str = "02:00:00:00:0a:02";
const SRV_MAC: &str = "02:00:00:00:0b:01";

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn topology(tag: &str, ipip: bool) -> Result<(Netns, [String; 3]), String> {
    let cli = format!("mlb{tag}c");
    let lb = format!("mlb{tag}l");
    let srv = format!("mlb{tag}s");
    for n in [&cli, &lb, &srv] {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
    }
    let ns = Netns {
        names: vec![cli.clone(), lb.clone(), srv.clone()],
    };
    for n in [&cli, &lb, &srv] {
        sh(&format!("ip netns add {n}"))?;
        sh(&format!("ip -n {n} link set lo up"))?;
        sh(&format!("ip netns exec {n} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"))?;
    }
    let cmds = [
        format!("ip link add c0 netns {cli} type veth peer name l0 netns {lb}"),
        format!("ip link add b0 netns {srv} type veth peer name l1 netns {lb}"),
        format!("ip link add r1 netns {cli} type veth peer name r0 netns {srv}"),
        format!("ip -n {lb} link set l0 address {LB_MAC_L0}"),
        format!("ip -n {lb} link set l1 address {LB_MAC_L1}"),
        format!("ip -n {srv} link set b0 address {SRV_MAC}"),
        format!("ip -n {lb} link set l0 up"),
        format!("ip -n {lb} link set l1 up"),
        format!("ip -n {cli} addr add 198.18.1.2/24 dev c0"),
        format!("ip -n {cli} link set c0 up"),
        // veth hands partially-checksummed frames (TX offload) to its peer; the
        // LB's af_packet socket would forward them as they are and the server
        // would drop them. Real NICs fill the checksum in; here the client must.
        format!("ip netns exec {cli} ethtool -K c0 tx off"),
        format!("ip -n {cli} addr add 198.18.3.1/24 dev r1"),
        format!("ip -n {cli} link set r1 up"),
        format!("ip -n {cli} route add 198.18.255.1/32 via 198.18.1.1 dev c0"),
        format!("ip -n {cli} neigh replace 198.18.1.1 lladdr {LB_MAC_L0} dev c0 nud permanent"),
        format!("ip netns exec {cli} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.c0.rp_filter=0 net.ipv4.conf.r1.rp_filter=0"),
        format!("ip -n {srv} addr add 198.18.2.2/24 dev b0"),
        format!("ip -n {srv} link set b0 up"),
        format!("ip -n {srv} addr add 198.18.3.2/24 dev r0"),
        format!("ip -n {srv} link set r0 up"),
        format!("ip -n {srv} addr add 198.18.255.1/32 dev lo"),
        format!("ip -n {srv} route add 198.18.1.0/24 via 198.18.3.1 dev r0"),
        format!("ip netns exec {srv} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.b0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0"),
    ];
    for c in &cmds {
        sh(c)?;
    }
    if ipip {
        // Decapsulation of what the LB sends: an ipip device accepting any remote.
        sh(&format!(
            "ip -n {srv} tunnel add tun0 mode ipip local 198.18.2.2 remote any"
        ))?;
        sh(&format!("ip -n {srv} link set tun0 up"))?;
        sh(&format!(
            "ip netns exec {srv} sysctl -qw net.ipv4.conf.tun0.rp_filter=0"
        ))?;
    }
    Ok((ns, [cli, lb, srv]))
}

/// True when the kernel can create ipip devices (module built in or loadable).
fn kernel_has_ipip() -> bool {
    let ns = format!("mlbprobe{}", std::process::id());
    let ok = sh(&format!("ip netns add {ns}")).is_ok()
        && sh(&format!(
            "ip -n {ns} link add tprobe type ipip local 198.18.0.2 remote any"
        ))
        .is_ok();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    ok
}

fn config(encap: &str) -> String {
    format!(
        r#"
[service]
method = "alias"
encap = "{encap}"
flow_table_buckets = 4096

[ports]
mode = "two-armed"
client = 0
backend = 1

[egress]
src_mac = "{LB_MAC_L1}"
src_v4 = "198.18.2.1"

[[vip]]
address = "198.18.255.1"
protocol = "tcp"
port = 8080

[[backend]]
name = "srv"
address = "198.18.2.2"
mac = "{SRV_MAC}"
weight = 1.0
"#
    )
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn run_case(tag: &str, encap: &str) {
    let test = format!("veth_tcp_{encap}");
    require_root(&test);
    for tool in ["ip", "python3", "curl", "ethtool"] {
        if !have(tool) {
            eprintln!("SKIP {test}: `{tool}` not found");
            return;
        }
    }
    if encap == "ipip" && !kernel_has_ipip() {
        eprintln!("SKIP {test}: this kernel has no ipip tunnel support (`ip link add type ipip` fails), so the backend cannot decapsulate; the L2 DSR case covers the af_packet path");
        return;
    }
    let (_ns, [cli, lb, srv]) =
        topology(tag, encap == "ipip").unwrap_or_else(|e| panic!("topology: {e}"));
    let dir = scratch(&format!("veth-{encap}"));
    std::fs::write(dir.join("index.html"), "hello through marllb-dpdk\n").unwrap();
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, config(encap)).unwrap();

    // The server (killed on drop through the guard).
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv,
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let _server = Lb::spawn_guard(server);

    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lb, BIN])
        .args(eal_base(&format!("veth{tag}")))
        .args([
            "--vdev",
            "net_af_packet0,iface=l0",
            "--vdev",
            "net_af_packet1,iface=l1",
        ])
        .arg("--")
        .arg("--config")
        .arg(&cfg)
        .args(["--print-every-ms", "500", "--idle-sleep-us", "200"]);
    let mut lbp = Lb::spawn(cmd);
    assert!(
        lbp.wait_line(Duration::from_secs(60), |l| l.contains("forwarding"))
            .is_some(),
        "marllb-dpdk did not start"
    );

    // A few bounded attempts: the server may still be starting.
    let end = Instant::now() + Duration::from_secs(30);
    let mut body = String::new();
    let mut attempts = 0;
    while Instant::now() < end && attempts < 10 {
        attempts += 1;
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &cli,
                "curl",
                "-s",
                "--max-time",
                "3",
                "http://198.18.255.1:8080/index.html",
            ])
            .output()
            .expect("run curl");
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && body.contains("hello") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let stopped = lbp.stop(Duration::from_secs(20));
    assert!(
        body.contains("hello through marllb-dpdk"),
        "no response through the LB after {attempts} attempt(s): {body:?}"
    );
    assert!(stopped, "marllb-dpdk did not exit cleanly");
    let summary = lbp
        .log
        .iter()
        .find(|l| l.contains("flows: inserted"))
        .cloned()
        .unwrap_or_default();
    assert!(
        !summary.contains("inserted 0,"),
        "no flow was created: {summary}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root (DPDK EAL, network namespaces): cargo xtask test runs it as root"]
fn veth_tcp_ipip() {
    run_case("i", "ipip");
}

#[test]
#[ignore = "needs root (DPDK EAL, network namespaces): cargo xtask test runs it as root"]
fn veth_tcp_l2dsr() {
    run_case("d", "l2dsr");
}
