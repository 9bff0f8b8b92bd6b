//! The scenarios, as library functions that build a testbed, run, print their
//! numbers and return them (the integration tests assert on them; `cargo xtask
//! demo` runs the main one with a live view).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backend::BackendSpec;
use crate::lb::{start_dataplane, LbOptions};
use crate::load::{Progress, Record, Summary};
use crate::topology::Topology;

/// Backends of unequal capacity: the MARLLB moderate setting (4 small, 3 large
/// with twice the CPU), scaled to our two cores: `scale` CPUs per small backend.
pub fn moderate_backends(scale: f64, workers: u32) -> Vec<BackendSpec> {
    (0..7)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: format!("198.18.2.{}", 100 + j),
            cpus: if j < 4 { scale } else { 2.0 * scale },
            workers,
            backlog: 128,
        })
        .collect()
}

/// `id=cpus,...` for the load generator's fairness computation.
pub fn capacities(specs: &[BackendSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}={}", s.id, s.cpus))
        .collect::<Vec<_>>()
        .join(",")
}

/// A load run in the background.
#[derive(Debug)]
pub struct LoadRun {
    label: String,
    out: PathBuf,
    records: PathBuf,
}

/// Starts the load generator in the client namespace in the background.
pub fn start_load(topo: &mut Topology, label: &str, args: &[&str]) -> Result<LoadRun> {
    let exe = crate::lb::bin("marllb-loadgen")?;
    let out = topo.dir.join(format!("{label}.out"));
    let records = topo.dir.join(format!("{label}.records.json"));
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend([
        "--progress".into(),
        "--records".into(),
        records.to_string_lossy().into_owned(),
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let client = topo.client.clone();
    topo.tb
        .spawn(label, &client, &exe.to_string_lossy(), &a, &out)?;
    Ok(LoadRun {
        label: label.into(),
        out,
        records,
    })
}

impl LoadRun {
    /// Progress lines so far.
    pub fn progress(&self) -> Vec<Progress> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the run to end (bounded) and returns its summary and records.
    pub fn finish(self, topo: &mut Topology, limit: Duration) -> Result<(Summary, Vec<Record>)> {
        if topo.tb.wait(&self.label, limit).is_none() {
            topo.tb.kill(&self.label);
            bail!("load run {} did not finish within {limit:?}", self.label);
        }
        let text = std::fs::read_to_string(&self.out)?;
        let summary: Summary = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("no summary in {}", self.out.display()))?;
        let records: Vec<Record> = serde_json::from_str(
            &std::fs::read_to_string(&self.records).unwrap_or_else(|_| "[]".into()),
        )?;
        Ok((summary, records))
    }
}

/// Result of the weight-change scenario.
#[derive(Debug, Clone)]
pub struct WeightChangeReport {
    /// The whole run.
    pub summary: Summary,
    /// Connections in flight when a weight change happened.
    pub spanning: usize,
    /// Of those, how many failed (reset or otherwise).
    pub spanning_failed: usize,
    /// Requests per backend that started after the last change.
    pub after: std::collections::BTreeMap<String, usize>,
}

/// Scenario 4: weights change twice mid-run; no established connection moves.
pub fn weight_change(prefix: &str, dir: &Path) -> Result<WeightChangeReport> {
    let specs: Vec<BackendSpec> = (0..3)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: format!("198.18.2.{}", 100 + j),
            cpus: 0.2,
            workers: 8,
            backlog: 128,
        })
        .collect();
    let mut topo = Topology::build(prefix, &specs, 1, dir)?;
    let wfile = dir.join("weights.toml");
    std::fs::write(&wfile, "weights = [1.0, 1.0, 1.0]\n")?;
    let opts = LbOptions {
        method: "alias".into(),
        weights_file: Some(wfile.clone()),
        ..LbOptions::default()
    };
    start_dataplane(&mut topo, 0, &opts)?;
    let caps = capacities(&specs);
    let run = start_load(
        &mut topo,
        "load",
        &[
            "--rate",
            "5",
            "--loops",
            "25000000",
            "--duration",
            "9",
            "--capacities",
            &caps,
        ],
    )?;
    let t0 = Instant::now();
    let mut changes = Vec::new();
    for (at, w) in [
        (3.0, "weights = [3.0, 1.0, 0.0]\n"),
        (6.0, "weights = [0.0, 1.0, 4.0]\n"),
    ] {
        let due = Duration::from_secs_f64(at);
        if let Some(left) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(left);
        }
        std::fs::write(&wfile, w)?;
        topo.tb.signal("lb0", "HUP");
        changes.push(t0.elapsed().as_secs_f64());
        println!(
            "t={:.1}s weights changed: {}",
            t0.elapsed().as_secs_f64(),
            w.trim()
        );
    }
    let (summary, records) = run.finish(&mut topo, Duration::from_secs(60))?;
    // A connection spans a change if it started before and ended after it
    // (latency measured from its start).
    let spans = |r: &Record| {
        changes
            .iter()
            .any(|c| r.at < *c && r.at + r.latency_ms / 1e3 > *c)
    };
    let spanning: Vec<&Record> = records.iter().filter(|r| spans(r)).collect();
    let spanning_failed = spanning
        .iter()
        .filter(|r| r.outcome != crate::load::Outcome::Ok)
        .count();
    let last = changes.last().copied().unwrap_or(0.0) + 0.3;
    let mut after = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.at > last) {
        if let Some(b) = &r.backend {
            *after.entry(b.clone()).or_insert(0) += 1;
        }
    }
    println!(
        "weight change: {} requests, {} ok, {} failed ({} resets); {} connections spanned a change, {} of them failed; after the last change per backend: {:?}",
        summary.requests,
        summary.ok,
        summary.failed,
        summary.resets,
        spanning.len(),
        spanning_failed,
        after
    );
    Ok(WeightChangeReport {
        summary,
        spanning: spanning.len(),
        spanning_failed,
        after,
    })
}
