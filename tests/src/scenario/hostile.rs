//! Bad input from outside on a running bed: a SYN flood that fills the flow
//! table, then a backend that accepts connections and never answers.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{equal_backends, weight_within, Bed, Clock};
use crate::lb::{CtrlOptions, LbOptions, Method};
use crate::load::{LoadArgs, Record, Summary};
use crate::netns::Signal;
use crate::topology::{backend_addr, Process};

/// What the hostile-input scenario measured.
#[derive(Debug, Clone)]
pub struct HostileReport {
    /// The whole run.
    pub summary: Summary,
    /// SYNs the flood sent (hping3's count).
    pub flood_sent: u64,
    /// Connections established before the flood that sent the rest of their
    /// request during it.
    pub held_through_flood: usize,
    /// Of those, how many failed.
    pub held_failed: usize,
    /// Failed requests that started during the flood.
    pub failed_during_flood: usize,
    /// The data plane's totals at exit: flows tracked, flows placed by the
    /// consistent table because their bucket was full, flow-table capacity.
    pub flows_inserted: u64,
    /// See `flows_inserted`.
    pub flows_untracked: u64,
    /// Flow entries per worker (buckets x ways).
    pub table_capacity: u64,
    /// Seconds from stopping the backend to its weight 0.
    pub silent_weight_zero_after_s: Option<f64>,
    /// Requests that started after it was taken out and before it resumed,
    /// and how many of them it was given.
    pub while_out: (usize, usize),
    /// Failed requests that started while it was out of service.
    pub failed_while_out: usize,
    /// Failed requests outside the window in which they could have been on
    /// the silent backend (the whole run, the flood included).
    pub failed_elsewhere: usize,
    /// Seconds from resuming the backend to a weight above 0 again (its
    /// active checks' rise count, then the first slow-start cycle).
    pub back_after_s: Option<f64>,
    /// Requests it answered that started after its weight was above 0 again.
    pub served_after_resume: usize,
}

/// Bad input from outside on a running testbed: a SYN flood from spoofed
/// sources big enough to fill the flow table, then a backend that accepts
/// connections and never answers (its nginx stopped with SIGSTOP: the kernel
/// still completes handshakes into its listen queue).
pub fn hostile(prefix: &str, dir: &Path) -> Result<HostileReport> {
    let buckets = 4096u32;
    let mut bed = Bed::builder(prefix, dir)
        .backends(equal_backends(3, 0.3, 16, 512))
        .dataplane(LbOptions {
            method: Method::Sed,
            buckets,
            ..LbOptions::default()
        })
        .controller(CtrlOptions::default())
        .build()?;
    let log = bed
        .dataplane_log(0)
        .context("node 0's data plane was started")?
        .to_path_buf();
    // Every request holds its connection open 3 s before finishing it.
    let run = bed.start_load(&LoadArgs {
        rate: 20.0,
        loops: 20000,
        hold: 3.0,
        duration: 50.0,
        timeout: 20,
        ..bed.load_args()
    })?;
    let clock = Clock::start();

    // The flood: 60 000 SYNs to the VIP from a spoofed neighbour address (its
    // SYN-ACKs die unanswered at the router), one per 40 µs at most (hping3
    // manages about 6 000 to 9 000 per second here).
    clock.sleep_until(3.0);
    let flood_start = clock.now();
    let client = bed.topo.client.clone();
    let flood = crate::netns::in_ns(&client, "hping3")
        .args([
            "-q",
            "-S",
            "-p",
            "80",
            "-a",
            "198.18.1.77",
            "-c",
            "60000",
            "-i",
            "u40",
            crate::VIP,
        ])
        .output()
        .context("running hping3 (apt-get install hping3)")?;
    let flood_end = clock.now();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&flood.stdout),
        String::from_utf8_lossy(&flood.stderr)
    );
    let flood_sent = text
        .lines()
        .find_map(|l| {
            l.split(" packets transmitted")
                .next()
                .filter(|_| l.contains("packets transmitted"))
        })
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "t={flood_end:.1}s SYN flood done: {flood_sent} SYNs in {:.1} s",
        flood_end - flood_start
    );

    // The silent backend: be2's nginx stopped (after the flood's connections
    // have finished, so that the two phases do not mix).
    clock.sleep_until(20.0);
    let stopped_at = clock.now();
    bed.signal(Process::Nginx("be2"), Signal::STOP);
    let silent_weight_zero_after_s =
        weight_within(&bed, &backend_addr(2), |w| w == 0.0, Duration::from_secs(8));
    let out_at = clock.now();
    clock.sleep_until(28.0);
    let resumed_at = clock.now();
    bed.signal(Process::Nginx("be2"), Signal::CONT);
    // Back in service once the rise count of active checks passed and the
    // first slow-start cycle published a weight above 0 -- or, when the
    // passive signal also ejected it (handshake timeouts of the connections
    // it held while silent), once its hold (10 s) ended. The load runs to
    // t=50 s, so that it has several seconds of new flows to take after.
    let back_after_s = weight_within(&bed, &backend_addr(2), |w| w > 0.0, Duration::from_secs(15));
    let back_at = resumed_at + back_after_s.unwrap_or(f64::INFINITY);
    let (summary, records) = run.finish(&mut bed.topo, Duration::from_secs(90))?;
    // A clean stop writes the data plane's totals.
    bed.signal(Process::DataPlane(0), Signal::TERM);
    let _ = bed.wait(Process::DataPlane(0), Duration::from_secs(10));
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("lb0").join("stats.json")).with_context(|| {
            format!(
                "no stats.json; data plane log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?,
    )?;
    let get = |k: &str| {
        stats
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };

    let held: Vec<&Record> = records
        .iter()
        .filter(|r| r.at < flood_start && r.at + 3.0 > flood_start + 0.5)
        .collect();
    let held_failed = held.iter().filter(|r| r.failed()).count();
    let failed_during_flood = records
        .iter()
        .filter(|r| r.failed() && r.at >= flood_start && r.at <= flood_end)
        .count();
    let out: Vec<&Record> = records
        .iter()
        .filter(|r| r.at > out_at + 0.5 && r.at < resumed_at)
        .collect();
    let while_out = (out.len(), out.iter().filter(|r| r.served_by("be2")).count());
    let failed_while_out = out.iter().filter(|r| r.failed()).count();
    // Requests that may fail: those on the silent backend before it was
    // taken out (in flight when it stopped, or sent to it until the health
    // check caught it; held 3 s, so started up to 3.5 s before the stop).
    let silent_window = |t: f64| t > stopped_at - 3.5 && t <= out_at + 0.5;
    let failed_elsewhere = records
        .iter()
        .filter(|r| r.failed() && !silent_window(r.at))
        .count();
    let served_after_resume = records
        .iter()
        .filter(|r| r.at > back_at && r.served_by("be2"))
        .count();
    let report = HostileReport {
        summary,
        flood_sent,
        held_through_flood: held.len(),
        held_failed,
        failed_during_flood,
        flows_inserted: get("flows_inserted"),
        flows_untracked: get("flows_untracked"),
        table_capacity: u64::from(buckets) * 4,
        silent_weight_zero_after_s,
        while_out,
        failed_while_out,
        failed_elsewhere,
        back_after_s,
        served_after_resume,
    };
    println!(
        "hostile: {} requests, {} ok, {} failed; SYN flood of {} at t={flood_start:.1}s: {} connections held through it, {} failed; {} failures among requests started during it; flows tracked {} (table {} per worker), placed untracked {}; be2 silent at t={stopped_at:.1}s: weight 0 after {:?} s; {} requests while it was out, {} sent to it, {} failed; resumed at t={resumed_at:.1}s, weight above 0 after {:?} s, served {} after; {} failures outside the silent backend's window",
        report.summary.requests,
        report.summary.ok,
        report.summary.failed,
        report.flood_sent,
        report.held_through_flood,
        report.held_failed,
        report.failed_during_flood,
        report.flows_inserted,
        report.table_capacity,
        report.flows_untracked,
        report.silent_weight_zero_after_s,
        report.while_out.0,
        report.while_out.1,
        report.failed_while_out,
        report.back_after_s,
        report.served_after_resume,
        report.failed_elsewhere
    );
    Ok(report)
}
