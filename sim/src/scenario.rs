//! A scenario: servers, LB nodes, load and the conditions where a deployment
//! differs from its configuration, turned into a [`SimConfig`] and a
//! [`Workload`] for one seed.
//!
//! The same description serves the command line (`eval`, `compare`, `train`)
//! and the scenario suite file (`marllb-sim suite FILE`). Everything random in
//! a scenario (speed noise, noisy-neighbour schedules, arrivals) is drawn from
//! the run's seed, so a seed fixes a schedule. Evaluation seeds are below
//! [`TRAIN_SEED_BASE`], training seeds at or above it: the two never meet.

use serde::Deserialize;

use crate::engine::{
    apply_speed_noise, noisy_schedule, parse_capacity_events, parse_servers, CapacityEvent,
    Conditions, Linger, Packets, SimConfig,
};
use crate::server::ServerModel;
use crate::workload::{Workload, DEFAULT_LOOPS_PER_CPU_SECOND};

/// Training and tuning use seeds from here on; evaluation seeds stay below.
pub const TRAIN_SEED_BASE: u64 = 1_000_000;

/// Mean job size of Poisson workloads, CPU seconds: the shared traces' mean
/// (3.67 M loops at the default calibration).
pub const DEFAULT_MEAN_JOB: f64 = 3.67e6 / DEFAULT_LOOPS_PER_CPU_SECOND;

/// A noisy-neighbour schedule `K:BURST_S:PERIOD_S:FACTOR`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noisy {
    /// Servers disturbed per period.
    pub k: usize,
    /// Burst length, s.
    pub burst: f64,
    /// Period, s.
    pub period: f64,
    /// Speed multiplier during a burst.
    pub factor: f64,
}

impl std::str::FromStr for Noisy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad noisy schedule {s:?}: expected K:BURST_S:PERIOD_S:FACTOR");
        let f: Vec<&str> = s.split(':').collect();
        let [k, b, p, x] = f[..] else {
            return Err(bad());
        };
        let n = Noisy {
            k: k.parse().map_err(|_| bad())?,
            burst: b.parse().map_err(|_| bad())?,
            period: p.parse().map_err(|_| bad())?,
            factor: x.parse().map_err(|_| bad())?,
        };
        let ok = n.k >= 1
            && n.burst > 0.0
            && n.period >= n.burst
            && n.period.is_finite()
            && n.factor > 0.0
            && n.factor <= 100.0;
        ok.then_some(n).ok_or_else(bad)
    }
}

/// A change of the LB nodes' traffic shares at `time`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitChange {
    /// Simulated time, s.
    pub time: f64,
    /// New shares, one per LB node.
    pub shares: Vec<f64>,
}

fn default_lbs() -> usize {
    1
}
fn default_sizes() -> String {
    "exp".into()
}
fn default_duration() -> f64 {
    120.0
}
fn default_warmup() -> f64 {
    10.0
}

/// One scenario (a `[[scenario]]` table of a suite file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (suite reports).
    #[serde(default)]
    pub name: String,
    /// Family (suite reports aggregate by family).
    #[serde(default)]
    pub family: String,
    /// `COUNTxCPUS[@SPEED],..`.
    pub servers: String,
    /// How a job uses a server's CPUs: `cores` (default) or `quota`.
    #[serde(default)]
    pub server_model: ServerModel,
    /// LB nodes.
    #[serde(default = "default_lbs")]
    pub lbs: usize,
    /// Poisson load as a fraction of the true capacity at start (with `sizes`);
    /// exclusive with `workload`.
    #[serde(default)]
    pub load: Option<f64>,
    /// Job sizes of a `load` scenario: `exp`, `pareto[:ALPHA]`,
    /// `lognormal[:SIGMA]`, `bimodal[:P:RATIO]`.
    #[serde(default = "default_sizes")]
    pub sizes: String,
    /// An explicit workload spec (`poisson:..` or `trace:FILE`).
    #[serde(default)]
    pub workload: Option<String>,
    /// Lognormal σ of a per-server speed factor drawn from the seed.
    #[serde(default)]
    pub speed_noise: f64,
    /// Capacity events `[time_s, server_index, factor]`.
    #[serde(default)]
    pub drift: Vec<(f64, usize, f64)>,
    /// A noisy-neighbour schedule `K:BURST_S:PERIOD_S:FACTOR` drawn from the seed.
    #[serde(default)]
    pub noisy: Option<String>,
    /// LB nodes' traffic shares (empty: equal).
    #[serde(default)]
    pub lb_split: Vec<f64>,
    /// Later changes of the shares.
    #[serde(default)]
    pub split_change: Vec<SplitChange>,
    /// Connections left open, idle, after the response: `SHARE:MEAN_S`
    /// (`engine::Linger`).
    #[serde(default)]
    pub linger: Option<String>,
    /// When flows' packets pass the LB node: `stream` (default) or `edges`
    /// (`engine::Packets`).
    #[serde(default)]
    pub packets: Option<String>,
    /// Simulated seconds of arrivals.
    #[serde(default = "default_duration")]
    pub duration: f64,
    /// Seconds at the start not counted.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
}

impl Scenario {
    /// A scenario with defaults for everything but the servers.
    pub fn new(servers: &str) -> Self {
        Self {
            name: String::new(),
            family: String::new(),
            servers: servers.into(),
            server_model: ServerModel::Cores,
            lbs: 1,
            load: None,
            sizes: default_sizes(),
            workload: None,
            speed_noise: 0.0,
            drift: Vec::new(),
            noisy: None,
            lb_split: Vec::new(),
            split_change: Vec::new(),
            linger: None,
            packets: None,
            duration: default_duration(),
            warmup: default_warmup(),
        }
    }

    /// Reads capacity events from a file (`TIME_S SERVER_INDEX FACTOR` lines).
    pub fn read_capacity_events(&mut self, path: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let n = parse_servers(&self.servers).map_or(0, |v| v.len());
        let ev = parse_capacity_events(&text, n).map_err(|e| format!("{}: {e}", path.display()))?;
        self.drift
            .extend(ev.iter().map(|e| (e.time, e.server, e.factor)));
        Ok(())
    }

    /// The simulator configuration and workload for `seed`; errors name the field.
    pub fn build(&self, seed: u64) -> Result<(SimConfig, Workload), String> {
        let field = |f: &str, p: &str| {
            if self.name.is_empty() {
                format!("{f}: {p}")
            } else {
                format!("scenario {:?}: {f}: {p}", self.name)
            }
        };
        let mut servers = parse_servers(&self.servers)
            .ok_or_else(|| field("servers", "expected COUNTxCPUS[@SPEED][,..]"))?;
        for s in &mut servers {
            s.model = self.server_model;
        }
        if !(1..=6).contains(&self.lbs) {
            return Err(field("lbs", "must be in 1..=6"));
        }
        if !(self.speed_noise >= 0.0 && self.speed_noise <= 2.0) {
            return Err(field("speed_noise", "must be in [0, 2]"));
        }
        if self.speed_noise > 0.0 {
            apply_speed_noise(&mut servers, self.speed_noise, seed);
        }
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return Err(field("duration", "must be positive"));
        }
        let workload = match (&self.workload, self.load) {
            (Some(_), Some(_)) => return Err(field("load", "give `load` or `workload`, not both")),
            (Some(w), None) => Workload::parse(w, DEFAULT_MEAN_JOB, DEFAULT_LOOPS_PER_CPU_SECOND)
                .map_err(|e| field("workload", &e.to_string()))?,
            (None, Some(load)) => {
                if !(load > 0.0 && load < 10.0) {
                    return Err(field("load", "must be in (0, 10)"));
                }
                let cap: f64 = servers.iter().map(|s| s.cpus * s.speed).sum();
                let rate = load * cap / DEFAULT_MEAN_JOB;
                let spec = format!("poisson:{rate}:{}", self.sizes);
                Workload::parse(&spec, DEFAULT_MEAN_JOB, DEFAULT_LOOPS_PER_CPU_SECOND)
                    .map_err(|e| field("sizes", &e.to_string()))?
            }
            (None, None) => return Err(field("load", "give `load` or `workload`")),
        };
        let mut duration = self.duration;
        if let Workload::Trace(v) = &workload {
            duration = duration.min(v.last().map_or(0.0, |x| x.0) + 1e-9);
        }
        let mut capacity = Vec::new();
        for (i, &(time, server, factor)) in self.drift.iter().enumerate() {
            let ok = time.is_finite()
                && time >= 0.0
                && server < servers.len()
                && factor > 0.0
                && factor <= 100.0;
            if !ok {
                return Err(field(
                    &format!("drift[{i}]"),
                    "expected [time_s >= 0, server index, factor in (0, 100]]",
                ));
            }
            capacity.push(CapacityEvent {
                time,
                server,
                factor,
                noisy: false,
            });
        }
        if let Some(n) = &self.noisy {
            let n: Noisy = n.parse().map_err(|e: String| field("noisy", &e))?;
            capacity.extend(noisy_schedule(
                n.k,
                n.burst,
                n.period,
                n.factor,
                servers.len(),
                duration,
                seed,
            ));
        }
        capacity.sort_by(|a, b| a.time.total_cmp(&b.time));
        let shares_ok = |v: &[f64]| {
            v.is_empty()
                || (v.len() == self.lbs
                    && v.iter().all(|x| x.is_finite() && *x >= 0.0)
                    && v.iter().sum::<f64>() > 0.0)
        };
        if !shares_ok(&self.lb_split) {
            return Err(field("lb_split", "one non-negative share per LB node"));
        }
        let mut changes = Vec::new();
        for (i, c) in self.split_change.iter().enumerate() {
            if !(shares_ok(&c.shares) && !c.shares.is_empty() && c.time >= 0.0) {
                return Err(field(
                    &format!("split_change[{i}]"),
                    "time >= 0 and one non-negative share per LB node",
                ));
            }
            changes.push((c.time, c.shares.clone()));
        }
        changes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let linger = match &self.linger {
            Some(l) => Some(l.parse::<Linger>().map_err(|e| field("linger", &e))?),
            None => None,
        };
        let packets = match &self.packets {
            Some(p) => p.parse::<Packets>().map_err(|e| field("packets", &e))?,
            None => Packets::default(),
        };
        Ok((
            SimConfig {
                servers,
                lbs: self.lbs,
                step_s: 0.25,
                duration,
                drain: true,
                warmup: self.warmup.min(duration * 0.5),
                features: false,
                seed,
                conditions: Conditions {
                    capacity,
                    lb_split: self.lb_split.clone(),
                    lb_split_changes: changes,
                    linger,
                    packets,
                },
            },
            workload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_builds_its_conditions() {
        let mut s = Scenario::new("2x2@0.5,1x4");
        s.lbs = 2;
        s.load = Some(0.8);
        s.drift = vec![(30.0, 1, 0.25)];
        s.noisy = Some("1:5:20:0.3".into());
        s.lb_split = vec![0.7, 0.3];
        let (cfg, w) = s.build(3).expect("builds");
        assert_eq!(cfg.servers[0].speed, 0.5);
        // True capacity 2·0.5·2 + 4 = 6 CPUs at 80 %.
        assert!((w.offered_load(100.0) - 4.8).abs() < 1e-9);
        assert!(cfg
            .conditions
            .capacity
            .iter()
            .any(|e| !e.noisy && e.server == 1));
        assert!(cfg.conditions.capacity.iter().filter(|e| e.noisy).count() >= 10);
        // Same seed, same schedule; another seed, another one.
        assert_eq!(s.build(3).expect("builds").0.conditions, cfg.conditions);
        assert_ne!(s.build(4).expect("builds").0.conditions, cfg.conditions);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut s = Scenario::new("2x2");
        s.load = Some(0.5);
        s.lb_split = vec![1.0, 2.0];
        assert!(s.build(1).unwrap_err().contains("lb_split"));
        s.lb_split.clear();
        s.drift = vec![(1.0, 7, 0.5)];
        assert!(s.build(1).unwrap_err().contains("drift[0]"));
        s.drift.clear();
        s.noisy = Some("1:30:10:0.5".into());
        assert!(s.build(1).unwrap_err().contains("noisy"));
        s.noisy = None;
        for bad in ["0.5", "1.5:5", "0.5:0", "0.5:x", "-0.1:5"] {
            s.linger = Some(bad.into());
            assert!(s.build(1).unwrap_err().contains("linger"), "{bad}");
        }
        s.linger = Some("0.5:5".into());
        let l = s.build(1).expect("builds").0.conditions.linger;
        assert_eq!(
            l,
            Some(Linger {
                share: 0.5,
                mean_s: 5.0
            })
        );
        s.linger = None;
        s.packets = Some("sometimes".into());
        assert!(s.build(1).unwrap_err().contains("packets"));
        s.packets = Some("edges".into());
        assert_eq!(
            s.build(1).expect("builds").0.conditions.packets,
            Packets::Edges
        );
        s.packets = None;
        assert_eq!(
            s.build(1).expect("builds").0.conditions.packets,
            Packets::Stream
        );
        assert!(Scenario::new("2x2@0")
            .build(1)
            .unwrap_err()
            .contains("servers"));
    }
}
