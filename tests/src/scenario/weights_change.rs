//! Scenario 4: the data plane's stand-alone weights (a weights file, no
//! controller) change twice mid-run; no established connection moves.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::{equal_backends, Bed, Clock};
use crate::lb::{LbOptions, Method};
use crate::load::{LoadArgs, Record, Summary};
use crate::netns::Signal;
use crate::topology::Process;

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
    pub after: BTreeMap<String, usize>,
}

/// The weights file's text for `weights` (one per backend, in order).
fn weights_toml(weights: &[f64]) -> String {
    // Debug keeps the decimal point (`1.0`): the file's weights are floats.
    format!("weights = {weights:?}\n")
}

/// Scenario 4: weights change twice mid-run; no established connection moves.
pub fn weight_change(prefix: &str, dir: &Path) -> Result<WeightChangeReport> {
    // The data plane reads the file when it starts.
    std::fs::create_dir_all(dir)?;
    let wfile = dir.join("weights.toml");
    std::fs::write(&wfile, weights_toml(&[1.0, 1.0, 1.0]))?;
    let mut bed = Bed::builder(prefix, dir)
        .backends(equal_backends(3, 0.2, 8, 128))
        .dataplane(LbOptions {
            method: Method::Alias,
            weights_file: Some(wfile.clone()),
            ..LbOptions::default()
        })
        .build()?;
    let run = bed.start_load(&LoadArgs {
        rate: 5.0,
        loops: 25000000,
        duration: 9.0,
        ..bed.load_args()
    })?;
    let clock = Clock::start();
    let mut changes = Vec::new();
    for (at, w) in [(3.0, [3.0, 1.0, 0.0]), (6.0, [0.0, 1.0, 4.0])] {
        clock.sleep_until(at);
        let text = weights_toml(&w);
        std::fs::write(&wfile, &text)?;
        bed.signal(Process::DataPlane(0), Signal::HUP);
        changes.push(clock.now());
        println!("t={:.1}s weights changed: {}", clock.now(), text.trim());
    }
    let (summary, records) = run.finish(&mut bed.topo, Duration::from_secs(60))?;
    // A connection spans a change if it started before and ended after it.
    let spans = |r: &Record| changes.iter().any(|c| r.spans(*c));
    let spanning: Vec<&Record> = records.iter().filter(|r| spans(r)).collect();
    let spanning_failed = spanning.iter().filter(|r| r.failed()).count();
    let last = changes.last().copied().unwrap_or(0.0) + 0.3;
    let mut after = BTreeMap::new();
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

#[cfg(test)]
mod tests {
    #[test]
    fn weights_file_keeps_the_decimal_point() {
        assert_eq!(
            super::weights_toml(&[3.0, 1.0, 0.0]),
            "weights = [3.0, 1.0, 0.0]\n"
        );
    }
}
