//! `marllb-loadgen`: the testbed's client. Runs inside the client namespace
//! (`ip netns exec <client> marllb-loadgen ...`), replays a trace or a constant
//! rate against the VIP, writes every request's record and a summary as JSON.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use marllb_testbed::load::{constant_rate, load_trace, replay, summarize};

use marllb_testbed::flag_value as arg;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let vip: SocketAddr = arg(&args, "--vip")
        .unwrap_or_else(|| format!("{}:80", marllb_testbed::VIP))
        .parse()
        .context("--vip ADDR:PORT")?;
    let duration: f64 = arg(&args, "--duration")
        .unwrap_or_else(|| "30".into())
        .parse()
        .context("--duration seconds")?;
    if !(duration > 0.0 && duration <= 3600.0) {
        bail!("--duration must be in (0, 3600]");
    }
    let reqs = if let Some(t) = arg(&args, "--trace") {
        let ts: f64 = arg(&args, "--time-scale")
            .unwrap_or_else(|| "1".into())
            .parse()
            .context("--time-scale")?;
        let ws: f64 = arg(&args, "--work-scale")
            .unwrap_or_else(|| "1".into())
            .parse()
            .context("--work-scale")?;
        load_trace(&PathBuf::from(t), ts, ws, duration, 1e6)?
    } else {
        let rate: f64 = arg(&args, "--rate")
            .unwrap_or_else(|| "50".into())
            .parse()
            .context("--rate")?;
        let loops: u64 = arg(&args, "--loops")
            .unwrap_or_else(|| "100000".into())
            .parse()
            .context("--loops")?;
        constant_rate(rate, loops, duration)
    };
    let max_inflight: usize = arg(&args, "--max-inflight")
        .unwrap_or_else(|| "2000".into())
        .parse()
        .context("--max-inflight")?;
    let timeout = Duration::from_secs(
        arg(&args, "--timeout")
            .unwrap_or_else(|| "20".into())
            .parse()
            .context("--timeout seconds")?,
    );
    let hold = Duration::from_secs_f64(
        arg(&args, "--hold")
            .unwrap_or_else(|| "0".into())
            .parse::<f64>()
            .ok()
            .filter(|h| (0.0..=60.0).contains(h))
            .context("--hold seconds in [0, 60]")?,
    );
    let records = replay(
        &reqs,
        vip,
        max_inflight,
        timeout,
        hold,
        args.iter().any(|a| a == "--progress"),
    );
    let caps: Vec<(String, f64)> = arg(&args, "--capacities")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "1"));
            (k.to_string(), v.parse().unwrap_or(1.0))
        })
        .collect();
    let summary = summarize(&records, &caps);
    if let Some(out) = arg(&args, "--records") {
        std::fs::write(&out, serde_json::to_string(&records)?)
            .with_context(|| format!("writing {out}"))?;
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
