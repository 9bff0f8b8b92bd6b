//! `marllb-loadgen`: the testbed's client. Runs inside the client namespace
//! (`ip netns exec <client> marllb-loadgen ...`), replays a trace or a constant
//! rate against the VIP, writes every request's record and a summary as JSON.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use marllb_testbed::load::{constant_rate, load_trace, replay, summarize, LoadArgs};

fn main() -> Result<()> {
    let a = LoadArgs::parse();
    let reqs = if let Some(t) = &a.trace {
        load_trace(t, a.time_scale, a.work_scale, a.duration, 1e6)?
    } else {
        constant_rate(a.rate, a.loops, a.duration)
    };
    let records = replay(
        &reqs,
        a.vip,
        a.max_inflight,
        Duration::from_secs(a.timeout),
        Duration::from_secs_f64(a.hold),
        a.linger,
        a.progress,
    );
    let summary = summarize(&records, &a.capacities.0);
    if let Some(out) = &a.records {
        std::fs::write(out, serde_json::to_string(&records)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
