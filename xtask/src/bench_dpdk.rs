//! `cargo xtask bench dpdk`: `marllb-dpdk` (parse, flow lookup, choice, IP-in-IP
//! encapsulation) against `dpdk-testpmd` io-forward (moves mbufs only), both
//! reading one generated trace from net_pcap with `infinite_rx=1` and sending to
//! net_null, on one forwarding lcore (lcore 1; lcore 0 is the main lcore),
//! interleaved runs of equal length. Each program's rate comes from its own
//! per-second stats output (testpmd `Rx-pps` of the pcap port, marllb-dpdk
//! `rx_mpps`); the first two seconds of each run are warm-up and skipped; a run
//! scores its median second, the result is the median run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{cargo, ensure_packages, step, target_dir, BENCH_DPDK_PACKAGES};

const EAL: &[&str] = &[
    "--no-huge",
    "--no-pci",
    "--no-shconf",
    "-m",
    "512",
    "-l",
    "0,1",
];
const MBUFS: u32 = 65535;
const TRACE_PACKETS: u32 = 32768;
const WARMUP_SAMPLES: usize = 2;

const CONFIG: &str = r#"# marllb-dpdk benchmark: one VIP, 8 backends, alias method, IP-in-IP.
[service]
method = "alias"
encap = "ipip"
flow_table_buckets = 65536
verify_checksums = true

[ports]
mode = "two-armed"
client = 0
backend = 1

[egress]
src_mac = "02:00:00:00:00:aa"
src_v4 = "198.18.0.1"

[[vip]]
address = "198.18.255.1"
protocol = "tcp"
port = 80
"#;

pub fn run(root: &Path, extra: &[String]) -> Result<()> {
    let mut secs = 10u64;
    let mut runs = 3usize;
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).context("--secs N")?,
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).context("--runs N")?,
            other => bail!("bench dpdk: unknown argument {other}"),
        }
    }
    if secs < 4 {
        bail!("--secs must be at least 4 (two warm-up seconds are skipped)");
    }
    ensure_packages(BENCH_DPDK_PACKAGES)?;
    step("building marllb-dpdk and the trace generator (release)");
    cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "marllb-dpdk",
            "--bin",
            "marllb-dpdk",
            "--example",
            "gen_trace",
        ],
    )?;
    let tgt = target_dir(root);
    let bin = tgt.join("release/marllb-dpdk");
    let gen = tgt.join("release/examples/gen_trace");
    let dir = tgt.join("bench-dpdk");
    std::fs::create_dir_all(&dir)?;
    let trace = dir.join("trace.pcap");
    let cfg = dir.join("bench.toml");
    let mut text = String::from(CONFIG);
    for i in 0..8 {
        text += &format!(
            "\n[[backend]]\naddress = \"198.19.0.{}\"\nmac = \"02:00:00:00:01:{i:02x}\"\nweight = {}.0\n",
            10 + i,
            1 + i % 4
        );
    }
    std::fs::write(&cfg, text)?;
    step(&format!(
        "generating the trace ({TRACE_PACKETS} 64-byte TCP frames, 10% SYN)"
    ));
    let st = Command::new(&gen)
        .arg(&trace)
        .arg(TRACE_PACKETS.to_string())
        .status()
        .context("running gen_trace")?;
    if !st.success() {
        bail!("gen_trace failed");
    }
    let testpmd =
        which("dpdk-testpmd").context("dpdk-testpmd not found (Debian package dpdk-dev)")?;

    let rx_vdev = format!("net_pcap0,rx_pcap={},infinite_rx=1", trace.display());
    let mut tp = Vec::new();
    let mut lb = Vec::new();
    for r in 0..runs {
        step(&format!(
            "run {}/{runs}: dpdk-testpmd io-forward, {secs} s",
            r + 1
        ));
        let mut c = Command::new(&testpmd);
        c.args(EAL)
            .args([
                "--file-prefix",
                &format!("xtb-tp{r}"),
                "--vdev",
                &rx_vdev,
                "--vdev",
                "net_null0,no-rx=1",
            ])
            .args([
                "--",
                "--total-num-mbufs",
                &MBUFS.to_string(),
                "--forward-mode=io",
                "--nb-cores=1",
                "--stats-period",
                "1",
            ]);
        let out = run_for(c, secs)?;
        let samples = testpmd_rx_pps(&out);
        let m = median_after_warmup(&samples).context("no testpmd Rx-pps samples")?;
        println!(
            "    testpmd: {:.3} Mpps (median of {} s)",
            m,
            samples.len().saturating_sub(WARMUP_SAMPLES)
        );
        tp.push(m);

        step(&format!("run {}/{runs}: marllb-dpdk, {secs} s", r + 1));
        let mut c = Command::new(&bin);
        c.args(EAL)
            .args([
                "--file-prefix",
                &format!("xtb-lb{r}"),
                "--vdev",
                &rx_vdev,
                "--vdev",
                "net_null0,no-rx=1",
            ])
            .arg("--")
            .arg("--config")
            .arg(&cfg)
            .args([
                "--mbufs",
                &MBUFS.to_string(),
                "--print-every-ms",
                "1000",
                "--duration-s",
                &secs.to_string(),
            ]);
        let out = run_for(c, secs + 10)?;
        let samples: Vec<f64> = out
            .lines()
            .filter(|l| l.starts_with("stats "))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("rx_mpps="))
            })
            .filter_map(|v| v.parse().ok())
            .collect();
        let m = median_after_warmup(&samples).context("no marllb-dpdk rx_mpps samples")?;
        let drops = out
            .lines()
            .find(|l| l.contains("drops by reason"))
            .unwrap_or("")
            .trim();
        println!(
            "    marllb-dpdk: {:.3} Mpps (median of {} s); {drops}",
            m,
            samples.len().saturating_sub(WARMUP_SAMPLES)
        );
        lb.push(m);
    }
    let (t, l) = (median(&tp), median(&lb));
    println!("\ntestpmd runs {tp:.3?} Mpps, marllb-dpdk runs {lb:.3?} Mpps");
    println!(
        "RESULT testpmd_mpps={t:.3} marllb_mpps={l:.3} ratio={:.3}",
        l / t
    );
    Ok(())
}

fn which(tool: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cmd` for `secs` seconds (then SIGINT, then SIGKILL after 10 s more);
/// returns its stdout.
fn run_for(mut cmd: Command, secs: u64) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped()) // testpmd waits on stdin; keep it open, unused
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the benchmark process")?;
    let stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let mut r = stdout;
        let _ = std::io::Read::read_to_string(&mut r, &mut s);
        s
    });
    let start = std::time::Instant::now();
    let mut signalled = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let el = start.elapsed();
        if !signalled && el >= Duration::from_secs(secs + 2) {
            // SIGINT by the system call, to this child's own pid.
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::INT,
            );
            signalled = true;
        }
        if el >= Duration::from_secs(secs + 15) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child.stdin.take());
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))
}

/// Rx-pps of port 0 from testpmd's periodic "NIC statistics" blocks, in Mpps.
fn testpmd_rx_pps(out: &str) -> Vec<f64> {
    let mut port0 = false;
    let mut v = Vec::new();
    for l in out.lines() {
        if l.contains("NIC statistics for port") {
            port0 = l.contains("port 0 ");
        } else if port0 && l.trim_start().starts_with("Rx-pps:") {
            if let Some(x) = l
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<f64>().ok())
            {
                v.push(x / 1e6);
            }
        }
    }
    v
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn median_after_warmup(v: &[f64]) -> Option<f64> {
    let rest = v.get(WARMUP_SAMPLES..).filter(|r| !r.is_empty())?;
    Some(median(rest))
}
