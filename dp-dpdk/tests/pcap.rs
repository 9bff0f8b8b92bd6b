//! pcap in → marllb-dpdk (net_pcap, one-armed, IP-in-IP) → pcap out.
//!
//! The input is a FIFO the test writes in two phases, so that the weight change
//! lands between them deterministically: phase 1 (flows A: SYN, data, some FIN;
//! plus junk), then a new weights file and SIGHUP, wait until every worker runs
//! the new service, then phase 2 (more data of flows A, and new flows B).
//! Checks: encapsulation and checksums of every output frame, per-flow
//! stickiness across the weight change, new flows of each phase follow that
//! phase's weights (chi-square, loose), drop counters by reason.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use marllb_dpdk::trace::{flags, ipv4_header_check, l4_check_v4, read_pcap, PcapWriter, Tcp4};

const VIP: [u8; 4] = [198, 18, 255, 1];
const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const OUTER_SRC: [u8; 4] = [198, 18, 0, 1];
const N_BACKENDS: usize = 4;
const W1: [f64; N_BACKENDS] = [1.0, 2.0, 3.0, 4.0];
const W2: [f64; N_BACKENDS] = [4.0, 0.0, 2.0, 2.0];
const FLOWS_A: u32 = 2000;
const FLOWS_B: u32 = 2000;
const JUNK_EACH: usize = 40;

fn backend_addr(i: usize) -> [u8; 4] {
    [198, 19, 0, 10 + i as u8]
}

fn backend_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 1, i as u8]
}

fn config() -> String {
    let mut s = String::from(
        r#"
[service]
method = "alias"
encap = "ipip"
flow_table_buckets = 16384
verify_checksums = true

[egress]
src_mac = "02:00:00:00:00:aa"
src_v4 = "198.18.0.1"

[[vip]]
address = "198.18.255.1"
protocol = "tcp"
port = 80
"#,
    );
    for (i, w) in W1.iter().enumerate() {
        let a = backend_addr(i);
        let m = backend_mac(i);
        s += &format!(
            "\n[[backend]]\nname = \"b{i}\"\naddress = \"{}.{}.{}.{}\"\nmac = \"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"\nweight = {w:.1}\n",
            a[0], a[1], a[2], a[3], m[0], m[1], m[2], m[3], m[4], m[5]
        );
    }
    s
}

/// Client of flow `id`: 198.18.(id/250).(id%250+1), port 10000 + id.
fn tcp(id: u32, fl: u8, seq: u32) -> Tcp4 {
    Tcp4 {
        dst_mac: LB_MAC,
        src_mac: CLIENT_MAC,
        src: [198, 18, (id / 250) as u8 + 1, (id % 250) as u8 + 1],
        dst: VIP,
        sport: 10000 + id as u16,
        dport: 80,
        flags: fl,
        ttl: 64,
        seq,
        payload: if fl & flags::SYN != 0 { 0 } else { 32 },
    }
}

/// Phase 1: flows A (SYN, 2 data, FIN for odd ids) and junk. Returns frames and
/// the expected drop counts by reason.
fn phase1() -> (Vec<Vec<u8>>, HashMap<&'static str, u64>, u64) {
    let mut out = Vec::new();
    for id in 0..FLOWS_A {
        out.push(tcp(id, flags::SYN, 1).frame());
    }
    for id in 0..FLOWS_A {
        out.push(tcp(id, flags::ACK | flags::PSH, 2).frame());
        out.push(tcp(id, flags::ACK | flags::PSH, 3).frame());
    }
    let mut drops = HashMap::new();
    for k in 0..JUNK_EACH as u32 {
        // Bad IPv4 header checksum.
        let mut f = tcp(5000 + k, flags::SYN, 1).frame();
        f[24] ^= 0x55;
        out.push(f);
        // TTL 1.
        let mut t = tcp(6000 + k, flags::SYN, 1);
        t.ttl = 1;
        out.push(t.frame());
        // VIP address, port with no VIP.
        let mut t = tcp(7000 + k, flags::SYN, 1);
        t.dport = 81;
        out.push(t.frame());
        // Truncated in the TCP header.
        let f = tcp(8000 + k, flags::SYN, 1).frame();
        out.push(f[..40].to_vec());
    }
    drops.insert("bad_checksum", JUNK_EACH as u64);
    drops.insert("ttl_expired", JUNK_EACH as u64);
    drops.insert("no_vip", JUNK_EACH as u64);
    drops.insert("malformed", JUNK_EACH as u64);
    // Not for a VIP (another address): Host verdict, freed and counted.
    let mut host = 0;
    for k in 0..JUNK_EACH as u32 {
        let mut t = tcp(9000 + k, flags::SYN, 1);
        t.dst = [198, 18, 254, 9];
        out.push(t.frame());
        host += 1;
    }
    for id in (1..FLOWS_A).step_by(2) {
        out.push(tcp(id, flags::FIN | flags::ACK, 4).frame());
    }
    (out, drops, host)
}

/// Phase 2: more data on flows A (even ids: still open), new flows B.
fn phase2() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for id in FLOWS_A..FLOWS_A + FLOWS_B {
        out.push(tcp(id, flags::SYN, 1).frame());
    }
    for id in (0..FLOWS_A).step_by(2) {
        out.push(tcp(id, flags::ACK | flags::PSH, 5).frame());
    }
    for id in FLOWS_A..FLOWS_A + FLOWS_B {
        out.push(tcp(id, flags::ACK | flags::PSH, 2).frame());
    }
    out
}

/// Writes all of `buf` to a non-blocking FIFO, waiting while it is full.
fn write_fifo(f: &mut std::fs::File, mut buf: &[u8], deadline: Instant) {
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "FIFO write timed out");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("FIFO write: {e}"),
        }
    }
}

/// A 60-byte frame with a local experimental EtherType.
fn padding_frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&LB_MAC);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

/// One pcap record (header + frame).
fn record(fr: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 16];
    r[8..12].copy_from_slice(&(fr.len() as u32).to_le_bytes());
    r[12..16].copy_from_slice(&(fr.len() as u32).to_le_bytes());
    r.extend_from_slice(fr);
    r
}

fn chi_square(counts: &[u64], weights: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let wsum: f64 = weights.iter().sum();
    counts
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(&c, &w)| {
            let e = n as f64 * w / wsum;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

/// Parsed output frame: backend index and the inner flow's client (addr, port).
/// A flow's client side: (address, port).
type Client = ([u8; 4], u16);

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn check_output_frame(f: &[u8]) -> Result<(usize, Client, u8), String> {
    if f.len() < 14 + 20 + 20 + 20 {
        return Err(format!("short frame ({} bytes)", f.len()));
    }
    let dst_mac: [u8; 6] = f[0..6].try_into().unwrap();
    let b = (0..N_BACKENDS)
        .find(|&i| backend_mac(i) == dst_mac)
        .ok_or("destination MAC is no backend's")?;
    if f[6..12] != SRC_MAC {
        return Err("source MAC is not egress.src_mac".into());
    }
    if f[12..14] != [0x08, 0x00] {
        return Err("not IPv4".into());
    }
    let outer = &f[14..34];
    if outer[0] != 0x45 || outer[9] != 4 {
        return Err("outer header is not IPv4 proto 4 (IP-in-IP)".into());
    }
    if ipv4_header_check(outer) != 0 {
        return Err("bad outer IPv4 checksum".into());
    }
    if outer[12..16] != OUTER_SRC || outer[16..20] != backend_addr(b) {
        return Err("outer addresses do not match egress / backend".into());
    }
    let outer_len = usize::from(u16::from_be_bytes([outer[2], outer[3]]));
    let inner = &f[34..];
    let inner_len = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
    if outer_len != inner_len + 20 || inner.len() < inner_len {
        return Err(format!(
            "lengths: outer {outer_len} inner {inner_len} frame {}",
            f.len()
        ));
    }
    if ipv4_header_check(&inner[..20]) != 0 {
        return Err("bad inner IPv4 checksum".into());
    }
    let src: [u8; 4] = inner[12..16].try_into().unwrap();
    let dst: [u8; 4] = inner[16..20].try_into().unwrap();
    if dst != VIP {
        return Err("inner destination is not the VIP".into());
    }
    if l4_check_v4(src, dst, 6, &inner[20..inner_len]) != 0 {
        return Err("bad TCP checksum".into());
    }
    let sport = u16::from_be_bytes([inner[20], inner[21]]);
    Ok((b, (src, sport), inner[33]))
}

#[test]
#[ignore = "needs root (DPDK EAL, network namespaces): cargo xtask test runs it as root"]
fn pcap_in_pcap_out() {
    require_root("pcap_in_pcap_out");
    let dir = scratch("pcap");
    let fifo = dir.join("in.fifo");
    let out = dir.join("out.pcap");
    let cfg = dir.join("lb.toml");
    let weights = dir.join("weights.toml");
    let json = dir.join("stats.json");
    std::fs::write(&cfg, config()).unwrap();
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());

    let mut cmd = Command::new(BIN);
    cmd.args(eal_base("pcap"))
        .arg("--vdev")
        .arg(format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            fifo.display(),
            out.display()
        ))
        .arg("--")
        .arg("--config")
        .arg(&cfg)
        .arg("--weights-file")
        .arg(&weights)
        .arg("--stats-json")
        .arg(&json)
        .args([
            "--period-ms",
            "50",
            "--print-every-ms",
            "100",
            "--idle-sleep-us",
            "100",
        ]);
    let mut lb = Lb::spawn(cmd);

    // Open the FIFO once the PMD has opened its end (bounded retries).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut f = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(f) => break f,
            Err(_) if Instant::now() < deadline => {
                if let Ok(Some(st)) = lb.child.try_wait() {
                    panic!("marllb-dpdk exited early: {st}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening the FIFO: {e}"),
        }
    };
    let (p1, exp_drops, exp_host) = phase1();
    let p2 = phase2();
    let mut pcap = PcapWriter::new(Vec::new()).unwrap();
    for fr in &p1 {
        pcap.write(fr).unwrap();
    }
    // libpcap reads the FIFO through stdio and the worker blocks in that read
    // when the FIFO is empty, so a feeder thread keeps a trickle of padding
    // flowing (non-IP frames: Host verdict, no flow state) between the phases.
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let first = pcap.finish().unwrap();
    let feeder = std::thread::spawn(move || {
        let pad = record(&padding_frame()).repeat(10);
        let mut pads = 0u64;
        write_fifo(&mut f, &first, deadline);
        loop {
            match cmd_rx.try_recv() {
                Ok(data) => write_fifo(&mut f, &data, deadline),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if Instant::now() > deadline {
                        break;
                    }
                    write_fifo(&mut f, &pad, deadline);
                    pads += 10;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
        }
        pads // dropping `f` closes the FIFO: EOF for the reader
    });
    let n1 = p1.len() as u64;
    let got = lb.wait_line(Duration::from_secs(30), |l| {
        stats_rx(l).is_some_and(|rx| rx >= n1)
    });
    assert!(got.is_some(), "phase 1 was not processed ({n1} frames)");

    // Weight change between the phases.
    std::fs::write(
        &weights,
        format!("weights = [{}]\n", W2.map(|w| format!("{w:.1}")).join(", ")),
    )
    .unwrap();
    lb.signal(libc::SIGHUP);
    let applied = lb.wait_line(Duration::from_secs(20), |l| {
        l.contains("applied by all workers")
    });
    assert!(applied.is_some(), "the new weights were not applied");

    let mut pcap2 = Vec::new();
    for fr in &p2 {
        pcap2.extend_from_slice(&record(fr));
    }
    cmd_tx.send(pcap2).unwrap();
    // Let the feeder write phase 2 and a little padding behind it, then close.
    std::thread::sleep(Duration::from_millis(300));
    drop(cmd_tx);
    let pad_frames = feeder.join().unwrap();
    let total = n1 + pad_frames + p2.len() as u64;
    let got = lb.wait_line(Duration::from_secs(30), |l| {
        stats_rx(l).is_some_and(|rx| rx >= total)
    });
    assert!(got.is_some(), "phase 2 was not processed");
    assert!(
        lb.stop(Duration::from_secs(20)),
        "marllb-dpdk did not exit cleanly"
    );
    assert!(lb.log.iter().any(|l| l.starts_with("marllb-dpdk summary")));

    // Drop counters from the binary's own totals.
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for (reason, n) in &exp_drops {
        assert_eq!(stats["drops"][reason].as_u64(), Some(*n), "drops.{reason}");
    }
    let expected_drops: u64 = exp_drops.values().sum();
    assert_eq!(stats["dropped"].as_u64(), Some(expected_drops), "dropped");
    assert_eq!(
        stats["to_host"].as_u64(),
        Some(exp_host + pad_frames),
        "to_host"
    );
    assert_eq!(
        stats["host"]["host_dropped"].as_u64(),
        Some(exp_host + pad_frames)
    );
    assert_eq!(stats["rx_packets"].as_u64(), Some(total));
    assert_eq!(stats["weight_updates"].as_u64(), Some(1));

    // Every output frame: encapsulation and checksums.
    let frames = read_pcap(std::fs::File::open(&out).unwrap()).unwrap();
    let forwarded = total - expected_drops - exp_host - pad_frames;
    assert_eq!(frames.len() as u64, forwarded, "output frame count");
    assert_eq!(stats["forwarded"].as_u64(), Some(forwarded));
    let mut flow_backend: HashMap<Client, usize> = HashMap::new();
    let mut new_a = [0u64; N_BACKENDS];
    let mut new_b = [0u64; N_BACKENDS];
    for (i, fr) in frames.iter().enumerate() {
        let (b, client, tcp_flags) =
            check_output_frame(fr).unwrap_or_else(|e| panic!("output frame {i}: {e}"));
        // Per-flow stickiness, across the weight change too.
        let prev = *flow_backend.entry(client).or_insert(b);
        assert_eq!(prev, b, "flow {client:?} moved from backend {prev} to {b}");
        if tcp_flags & flags::SYN != 0 {
            let id = u32::from(client.1 - 10000);
            if id < FLOWS_A {
                new_a[b] += 1;
            } else {
                new_b[b] += 1;
            }
        }
    }
    assert_eq!(flow_backend.len() as u32, FLOWS_A + FLOWS_B);
    assert_eq!(new_a.iter().sum::<u64>(), u64::from(FLOWS_A));
    assert_eq!(new_b.iter().sum::<u64>(), u64::from(FLOWS_B));
    let (c1, c2) = (chi_square(&new_a, &W1), chi_square(&new_b, &W2));
    println!("new flows phase 1 {new_a:?} (weights {W1:?}, chi2 {c1:.2}); phase 2 {new_b:?} (weights {W2:?}, chi2 {c2:.2})");
    // 3 degrees of freedom: p = 0.001 at 16.3; loose bound.
    assert!(c1 < 25.0, "phase 1 new flows do not follow the weights");
    assert!(c2 < 25.0, "phase 2 new flows do not follow the new weights");
    assert_eq!(new_b[1], 0, "a weight-0 backend got new flows");
    // Per-backend new-flow counters in the totals agree with the capture.
    for b in 0..N_BACKENDS {
        assert_eq!(
            stats["backends"][b]["new_flows"].as_u64(),
            Some(new_a[b] + new_b[b]),
            "backend {b} new_flows"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
