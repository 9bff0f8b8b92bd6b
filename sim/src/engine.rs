//! The event-driven simulator: clients, ECMP to LB nodes, LB nodes that choose
//! backends with marllb-core's selection and observe with its telemetry, and
//! processor-sharing servers.
//!
//! # Contract
//!
//! * Deterministic: everything random comes from [`SplitMix64`] seeded by
//!   `SimConfig::seed`; events are ordered by (time, server, version).
//! * Arrivals come from the workload in time order and are compared with the
//!   earliest server completion in a binary heap (lazily invalidated by a
//!   per-server version), so every event costs O(log servers).
//! * Every `step_s` (250 ms) [`Sim::run_step`] returns control: the caller reads
//!   each node's features, and may set agent weights before the next step.
//! * LB nodes place a flow with the same hash → choice path as the data plane:
//!   `choice_hash(flow_hash(key))` for alias draws and SED tie-breaks, the flow
//!   hash for Maglev. Active-flow gauges, flow-completion and flow-duration
//!   reservoirs are marllb-core's `Telemetry`. With features on, every flow in
//!   the system "sends a packet" once per step (so the flow-duration reservoir
//!   sees the ages of running flows, as the data plane does) and one at its end.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use marllb_core::flow::{ticks, FlowKey, FlowState};
use marllb_core::hash::{choice_hash, flow_hash, SplitMix64};
use marllb_core::select::{sed_choose, AliasTable, MaglevTable};
use marllb_core::telemetry::Telemetry;
use marllb_core::wire::IpFamily;
use marllb_core::WEIGHT_ONE;
use marllb_policy::{BackendObs, FeatureBuilder};
use zerocopy::FromZeros;

use crate::server::{Job, Server, ServerSpec};
use crate::workload::{Arrivals, Workload};

/// How LB nodes choose a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Equal-weight alias draw from the flow hash (ECMP over backends).
    Ecmp,
    /// Alias draw with weights proportional to CPUs.
    Wcmp,
    /// Least active flows (SED with equal weights), per node.
    Lsq,
    /// Shortest expected delay with CPU weights, per node's active flows.
    Sed,
    /// Maglev consistent hashing, equal weights.
    Maglev,
    /// SED over the true number of jobs at each server (all nodes' flows).
    Oracle,
    /// SED with weights set by an agent each step (MARLLB's data plane).
    Agent,
    /// Alias draw with weights set by an agent each step.
    AgentAlias,
}

impl Method {
    /// Parses a baseline name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "ecmp" => Method::Ecmp,
            "wcmp" => Method::Wcmp,
            "lsq" => Method::Lsq,
            "sed" => Method::Sed,
            "maglev" => Method::Maglev,
            "oracle" => Method::Oracle,
            _ => return None,
        })
    }

    /// Every baseline, in report order.
    pub const BASELINES: [Method; 6] = [
        Method::Ecmp,
        Method::Wcmp,
        Method::Lsq,
        Method::Sed,
        Method::Maglev,
        Method::Oracle,
    ];

    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ecmp => "ecmp",
            Method::Wcmp => "wcmp",
            Method::Lsq => "lsq",
            Method::Sed => "sed",
            Method::Maglev => "maglev",
            Method::Oracle => "oracle",
            Method::Agent => "agent",
            Method::AgentAlias => "agent-alias",
        }
    }
}

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Backend servers.
    pub servers: Vec<ServerSpec>,
    /// LB nodes.
    pub lbs: usize,
    /// Agent step, s.
    pub step_s: f64,
    /// Arrivals stop at this time, s.
    pub duration: f64,
    /// After `duration`, keep stepping until the system is empty (bounded).
    pub drain: bool,
    /// Flows arriving before this time are not counted in the JCT statistics.
    pub warmup: f64,
    /// Compute per-node features each step.
    pub features: bool,
    /// Seed of everything random.
    pub seed: u64,
}

/// Parses `COUNTxCPUS[,COUNTxCPUS..]` (e.g. `4x2,3x4`) into Apache-like servers.
pub fn parse_servers(spec: &str) -> Option<Vec<ServerSpec>> {
    let mut v = Vec::new();
    for g in spec.split(',') {
        let (n, c) = g.trim().split_once('x')?;
        let n: usize = n.parse().ok()?;
        let c: f64 = c.parse().ok()?;
        if n == 0 || c.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        v.extend(std::iter::repeat_n(ServerSpec::apache(c), n));
    }
    (!v.is_empty() && v.len() <= marllb_core::MAX_BACKENDS).then_some(v)
}

/// One LB node.
#[derive(Debug)]
pub struct LbNode {
    /// marllb-core telemetry of this node.
    pub telemetry: Box<Telemetry>,
    /// The features its agent sees.
    pub features: FeatureBuilder,
    alias: AliasTable,
    maglev: Box<MaglevTable>,
    /// Q16.16 weights used by SED-style methods.
    weights: Vec<u32>,
    hash_seed: u64,
    /// Flows this node placed.
    pub placed: u64,
    /// Flows this node placed that were refused.
    pub rejected: u64,
}

/// Run statistics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Job completion times of counted flows, s.
    pub jct: Vec<f64>,
    /// Flows refused by a full backlog (counted flows only).
    pub rejected: u64,
    /// Flows that arrived (counted flows only).
    pub arrived: u64,
    /// Arrivals plus completions processed.
    pub events: u64,
    /// (time, Jain fairness of per-server utilization in that step).
    pub fairness: Vec<(f64, f64)>,
    /// Per-server utilization over the whole run (busy / capacity).
    pub utilization: Vec<f64>,
    /// Per-server flows completed.
    pub per_server: Vec<u64>,
}

/// Jain's fairness index of `x` (1 when all equal; 1 for all-zero).
pub fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let q: f64 = x.iter().map(|v| v * v).sum();
    if q <= 0.0 {
        1.0
    } else {
        s * s / (x.len() as f64 * q)
    }
}

/// The simulator.
#[derive(Debug)]
pub struct Sim<'w> {
    /// Parameters.
    pub cfg: SimConfig,
    /// Servers.
    pub servers: Vec<Server>,
    /// LB nodes.
    pub lbs: Vec<LbNode>,
    method: Method,
    heap: BinaryHeap<Reverse<(u64, u32, u64)>>,
    arrivals: Arrivals<'w>,
    next_arrival: Option<(f64, f64)>,
    /// Current simulated time, s.
    pub now: f64,
    next_step: f64,
    rng: SplitMix64,
    router_seed: u64,
    cap_q16: Vec<u32>,
    busy_prev: Vec<f64>,
    /// Statistics so far.
    pub stats: Stats,
    /// Reward of the last step (Jain over decayed mean flow durations).
    pub last_reward: f64,
    scratch_active: Vec<u32>,
}

impl<'w> Sim<'w> {
    /// A simulator at time 0 with `method` on every node.
    pub fn new(cfg: SimConfig, workload: &'w Workload, method: Method) -> Self {
        let n = cfg.servers.len();
        let mut seeder = SplitMix64::new(cfg.seed);
        let max_cpu = cfg.servers.iter().map(|s| s.cpus).fold(0.0f64, f64::max);
        let cap_q16: Vec<u32> = cfg
            .servers
            .iter()
            .map(|s| {
                ((s.cpus / max_cpu) * f64::from(WEIGHT_ONE))
                    .round()
                    .max(1.0) as u32
            })
            .collect();
        let lbs = (0..cfg.lbs)
            .map(|_| {
                let mut telemetry = Telemetry::new_box_zeroed().unwrap_or_else(|_| {
                    // Allocation failure of half a megabyte: nothing sensible to do.
                    std::process::abort()
                });
                telemetry.seed(seeder.next_u64());
                let mut node = LbNode {
                    telemetry,
                    features: FeatureBuilder::new(n),
                    alias: AliasTable::new(),
                    maglev: Box::new(MaglevTable::new()),
                    weights: vec![WEIGHT_ONE; n],
                    hash_seed: 0x4d41_524c_4c42, // all nodes share the VIP's hash seed
                    placed: 0,
                    rejected: 0,
                };
                let ids: Vec<(u64, u32)> = (0..n as u64)
                    .map(|i| (SplitMix64::new(i ^ 0xbac4).next_u64(), WEIGHT_ONE))
                    .collect();
                let _ = node.maglev.build(&ids);
                node
            })
            .collect();
        let arrivals = workload.stream(seeder.next_u64());
        let mut sim = Self {
            servers: cfg.servers.iter().map(|s| Server::new(*s)).collect(),
            lbs,
            method,
            heap: BinaryHeap::new(),
            arrivals,
            next_arrival: None,
            now: 0.0,
            next_step: cfg.step_s,
            rng: SplitMix64::new(seeder.next_u64()),
            router_seed: seeder.next_u64(),
            cap_q16,
            busy_prev: vec![0.0; n],
            stats: Stats {
                per_server: vec![0; n],
                ..Stats::default()
            },
            last_reward: 1.0,
            scratch_active: vec![0; n],
            cfg,
        };
        sim.next_arrival = sim.arrivals.next();
        let init: Vec<u32> = match method {
            Method::Wcmp | Method::Sed | Method::Oracle => sim.cap_q16.clone(),
            _ => vec![WEIGHT_ONE; n],
        };
        for i in 0..sim.lbs.len() {
            sim.set_weights(i, &init);
        }
        sim
    }

    /// The method every node uses.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Sets node `lb`'s Q16.16 weights (rebuilds its alias table).
    pub fn set_weights(&mut self, lb: usize, q16: &[u32]) {
        if let Some(node) = self.lbs.get_mut(lb) {
            node.weights.clear();
            node.weights.extend_from_slice(q16);
            node.weights.resize(self.servers.len(), WEIGHT_ONE);
            let _ = node.alias.build(&node.weights);
        }
    }

    /// Sets an agent's real-valued weights: Q16.16 for selection and the
    /// previous-action feature.
    pub fn set_agent_weights(&mut self, lb: usize, real: &[f32]) {
        let q: Vec<u32> = real
            .iter()
            .map(|w| marllb_policy::action::to_q16(*w))
            .collect();
        self.set_weights(lb, &q);
        if let Some(node) = self.lbs.get_mut(lb) {
            node.features.set_previous_action(real);
        }
    }

    fn schedule(&mut self, s: usize) {
        if let Some(server) = self.servers.get(s) {
            if let Some(t) = server.next_completion() {
                self.heap
                    .push(Reverse((t.to_bits(), s as u32, server.version)));
            }
        }
    }

    fn choose(&mut self, lb: usize, key: &FlowKey) -> Option<usize> {
        let method = self.method;
        let node = self.lbs.get(lb)?;
        let h = flow_hash(key, node.hash_seed);
        let pick = match method {
            Method::Ecmp | Method::Wcmp | Method::AgentAlias => node.alias.sample(choice_hash(h)),
            Method::Maglev => node.maglev.lookup(h),
            Method::Lsq | Method::Sed | Method::Agent => {
                for (b, a) in self.scratch_active.iter_mut().enumerate() {
                    *a = node.telemetry.active(b as u16);
                }
                sed_choose(&node.weights, &self.scratch_active, choice_hash(h))
            }
            Method::Oracle => {
                for (a, s) in self.scratch_active.iter_mut().zip(&self.servers) {
                    *a = s.in_system() as u32;
                }
                sed_choose(&node.weights, &self.scratch_active, choice_hash(h))
            }
        };
        pick.map(usize::from)
    }

    fn arrive(&mut self, t: f64, size: f64) {
        self.stats.events += 1;
        let counted = t >= self.cfg.warmup;
        // A client: random address and port to one VIP (10.0.0.1:80, TCP).
        let r = self.rng.next_u64();
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&(r as u32).to_be_bytes());
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        let key = FlowKey::new(IpFamily::V4, &src, &dst, (r >> 32) as u16 | 1024, 80, 6);
        let lb = (((flow_hash(&key, self.router_seed) & 0xFFFF_FFFF) * self.lbs.len() as u64) >> 32)
            as usize;
        let Some(b) = self.choose(lb, &key) else {
            return;
        };
        let tick = ticks((t * 1e9) as u64);
        let job = Job {
            lb: lb as u16,
            arrival: t,
            created_tick: tick,
            size,
        };
        let Some(server) = self.servers.get_mut(b) else {
            return;
        };
        server.advance(t);
        let ok = server.arrive(job);
        if let Some(node) = self.lbs.get_mut(lb) {
            node.placed += 1;
            if ok {
                node.telemetry
                    .flow_opened(b as u16, FlowState::TcpEstablished);
            } else {
                node.rejected += 1;
            }
        }
        if counted {
            self.stats.arrived += 1;
            if !ok {
                self.stats.rejected += 1;
            }
        }
        if ok {
            self.schedule(b);
        }
    }

    fn complete(&mut self, s: usize, t: f64) {
        let Some(server) = self.servers.get_mut(s) else {
            return;
        };
        server.advance(t);
        let tick = ticks((t * 1e9) as u64);
        let warmup = self.cfg.warmup;
        let (lbs, stats) = (&mut self.lbs, &mut self.stats);
        server.complete(|job| {
            stats.events += 1;
            if let Some(c) = stats.per_server.get_mut(s) {
                *c += 1;
            }
            if job.arrival >= warmup {
                stats.jct.push(t - job.arrival);
            }
            if let Some(node) = lbs.get_mut(usize::from(job.lb)) {
                let b = s as u16;
                node.telemetry.packet(b, 1500, tick, || job.created_tick);
                node.telemetry
                    .flow_closed(b, FlowState::TcpEstablished, job.created_tick, tick);
            }
        });
        self.schedule(s);
    }

    /// True once arrivals have ended and (with `drain`) the system is empty.
    pub fn finished(&self) -> bool {
        let arrivals_done = self.now >= self.cfg.duration;
        if !arrivals_done {
            return false;
        }
        if !self.cfg.drain {
            return true;
        }
        let empty = self.servers.iter().all(|s| s.in_system() == 0);
        empty || self.now >= self.cfg.duration * 3.0 + 60.0
    }

    /// Runs to the next step boundary, then updates features, fairness and the
    /// reward. Returns false once [`Self::finished`].
    pub fn run_step(&mut self) -> bool {
        let t_end = self.next_step;
        loop {
            let ta = match self.next_arrival {
                Some((t, _)) if t < self.cfg.duration => t,
                _ => f64::INFINITY,
            };
            // Drop stale completion events.
            let tc = loop {
                match self.heap.peek() {
                    Some(Reverse((bits, s, v))) => {
                        let cur = self
                            .servers
                            .get(*s as usize)
                            .map_or(u64::MAX, |x| x.version);
                        if cur != *v {
                            self.heap.pop();
                            continue;
                        }
                        break f64::from_bits(*bits);
                    }
                    None => break f64::INFINITY,
                }
            };
            if ta.min(tc) > t_end {
                break;
            }
            if ta <= tc {
                if let Some((t, size)) = self.next_arrival.take() {
                    self.now = t;
                    self.arrive(t, size);
                    self.next_arrival = self.arrivals.next();
                }
            } else if let Some(Reverse((_, s, _))) = self.heap.pop() {
                self.now = tc;
                self.complete(s as usize, tc);
            }
        }
        self.now = t_end;
        self.next_step += self.cfg.step_s;
        self.end_of_step();
        !self.finished()
    }

    fn end_of_step(&mut self) {
        let t = self.now;
        let mut util = Vec::with_capacity(self.servers.len());
        for (s, prev) in self.servers.iter_mut().zip(self.busy_prev.iter_mut()) {
            s.advance(t);
            util.push((s.busy - *prev) / (s.spec.cpus * self.cfg.step_s));
            *prev = s.busy;
        }
        self.stats.fairness.push((t, jain(&util)));
        if self.cfg.features {
            let tick = ticks((t * 1e9) as u64);
            for (b, s) in self.servers.iter().enumerate() {
                for job in s.jobs() {
                    if let Some(node) = self.lbs.get_mut(usize::from(job.lb)) {
                        node.telemetry
                            .packet(b as u16, 1500, tick, || job.created_tick);
                    }
                }
            }
            let n = self.servers.len();
            let mut dur = vec![0.0f64; n];
            for node in self.lbs.iter_mut() {
                let obs: Vec<BackendObs<'_>> = (0..n)
                    .map(|b| {
                        let smp = node.telemetry.samples.get(b);
                        BackendObs {
                            duration_us: smp.map_or(&[][..], |x| x.flow_duration.values()),
                            fct_us: smp.map_or(&[][..], |x| x.fct.values()),
                            active_flows: node.telemetry.active(b as u16),
                        }
                    })
                    .collect();
                node.features.observe(&obs);
                for (b, d) in dur.iter_mut().enumerate() {
                    *d += f64::from(
                        node.features
                            .raw(b, marllb_policy::Feature::FlowDurationDecayed),
                    );
                }
            }
            self.last_reward = jain(&dur);
        }
        for node in self.lbs.iter_mut() {
            node.telemetry.reset_window();
        }
    }

    /// Runs to the end with the fixed method; returns the statistics.
    pub fn run(mut self) -> Stats {
        while self.run_step() {}
        self.into_stats()
    }

    /// Final statistics (utilization over the elapsed time).
    pub fn into_stats(mut self) -> Stats {
        let t = self.now.max(1e-9);
        self.stats.utilization = self
            .servers
            .iter()
            .map(|s| s.busy / (s.spec.cpus * t))
            .collect();
        self.stats
    }
}
