//! The load generator run in the client namespace in the background while a
//! scenario changes the bed; its progress lines, then its summary and
//! per-request records.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::load::{LoadArgs, Progress, Record, Summary};
use crate::topology::Topology;

/// A load run in the background.
#[derive(Debug)]
pub struct LoadRun {
    label: String,
    out: PathBuf,
    records: PathBuf,
}

/// Starts the load generator in the client namespace in the background, with
/// `load` plus its progress line and per-request records.
pub fn start_load(topo: &mut Topology, label: &str, load: &LoadArgs) -> Result<LoadRun> {
    let exe = crate::lb::bin("marllb-loadgen")?;
    let out = topo.dir.join(format!("{label}.out"));
    let records = topo.dir.join(format!("{label}.records.json"));
    let load = LoadArgs {
        progress: true,
        records: Some(records.clone()),
        ..load.clone()
    };
    let a = load.to_args();
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

    /// The load generator is still running.
    pub fn running(&self, topo: &mut Topology) -> bool {
        topo.tb.running(&self.label)
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
