//! Scenario 1: steady load under each policy on the same trace replay (the
//! demo's run, one fresh bed per policy); prints the summary table.

use std::path::Path;

use anyhow::Result;

use crate::demo::Policy;
use crate::demo::{print_table, run_policy, DemoOptions, PolicyRun};

/// The policies scenario 1 compares: placement by weight or by active flows
/// alone (ECMP, WCMP, LSQ), SED with the configured weights, and the shipped
/// QMIX model through SED.
pub const STEADY_POLICIES: [Policy; 5] = [
    Policy::Ecmp,
    Policy::Wcmp,
    Policy::Lsq,
    Policy::Sed,
    Policy::Qmix,
];

/// What scenario 1 ran.
#[derive(Debug, Clone)]
pub struct SteadyReport {
    /// Backends of every run (the demo's moderate mix).
    pub backends: usize,
    /// One run per policy of [`STEADY_POLICIES`], in order.
    pub runs: Vec<PolicyRun>,
}

/// Scenario 1: a 20 s replay of the shared trace under each of
/// [`STEADY_POLICIES`] (testbed `prefix` + the policy's index, files in
/// `dir`/policy), the repository at `root` (trace, models).
pub fn steady(prefix: &str, dir: &Path, root: &Path) -> Result<SteadyReport> {
    let mut o = DemoOptions::new(root);
    o.duration = 20.0;
    o.live = false;
    let mut runs = Vec::new();
    for (i, p) in STEADY_POLICIES.into_iter().enumerate() {
        runs.push(run_policy(
            &format!("{prefix}{i}"),
            &dir.join(p.name()),
            &o,
            p,
        )?);
    }
    print_table(&runs);
    Ok(SteadyReport {
        backends: o.backends,
        runs,
    })
}
