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
use marllb_policy::{AdaptiveSed, BackendObs, FeatureBuilder, PolicyKind};
use zerocopy::FromZeros;

use crate::server::{Job, Server, ServerSpec};
use crate::workload::{Arrivals, Workload};

/// The heuristics every comparison runs, in report order (the policies are
/// [`PolicyKind`]'s, one list for the simulator, the controller and the
/// testbed). A learned kind given to [`Sim::new`] means SED over the weights
/// the caller sets each step; `static` is `wcmp` here (nothing recomputes).
pub const BASELINES: [PolicyKind; 8] = [
    PolicyKind::Ecmp,
    PolicyKind::Wcmp,
    PolicyKind::Lsq,
    PolicyKind::Sed,
    PolicyKind::Maglev,
    PolicyKind::AdaptiveSed,
    PolicyKind::P2cEwma,
    PolicyKind::Oracle,
];

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
    /// Where the deployment differs from the configuration (none by default).
    pub conditions: Conditions,
}

/// From `time` on, server `server`'s speed is multiplied by `factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityEvent {
    /// Simulated time, s.
    pub time: f64,
    /// Server index.
    pub server: usize,
    /// Multiplier of the server's nominal speed (1 restores it).
    pub factor: f64,
    /// A noisy-neighbour burst (multiplies with the drift factor) rather than drift.
    pub noisy: bool,
}

/// Conditions of a real deployment the configuration does not know about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Capacity changes, sorted by time.
    pub capacity: Vec<CapacityEvent>,
    /// Share of the flows each LB node receives (empty: equal), and later
    /// changes of it `(time, shares)`, sorted by time.
    pub lb_split: Vec<f64>,
    /// See `lb_split`.
    pub lb_split_changes: Vec<(f64, Vec<f64>)>,
    /// Connections that stay open, idle, after their response (none by default).
    pub linger: Option<Linger>,
    /// When a flow's packets pass the LB node (its flow-age samples).
    pub packets: Packets,
}

/// When the LB node sees a flow's packets, hence which flow ages its
/// flow-duration reservoir samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Packets {
    /// Every running flow sends a packet each step, and one at its close: the
    /// node sees the ages of flows while their servers work on them (a client
    /// that streams its request, or a node on both directions of a streaming
    /// response). The first models were trained and evaluated with it.
    #[default]
    Stream,
    /// Packets only at the edges of a request: the SYN and the request at the
    /// arrival, the client's ACKs of the response when the server answers, and
    /// the FIN at the close (the same moment unless the flow lingers). Nothing
    /// while the server works: a request/response client behind an L2 DSR or
    /// tunnelling balancer, which sees only the client's direction.
    Edges,
}

impl std::str::FromStr for Packets {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stream" => Ok(Self::Stream),
            "edges" => Ok(Self::Edges),
            _ => Err(format!("bad packets {s:?}: expected stream or edges")),
        }
    }
}

/// Idle connections after the response, as an L4 balancer sees them: with
/// probability `share` the client keeps the connection open (HTTP keep-alive
/// with no further request, a client that never sends its FIN and leaves the
/// flow to the idle timeout) for an exponentially distributed time of mean
/// `mean_s`, and the LB node sees the flow end only then: its active-flow
/// gauge, its completion-time sample and its last packet come at the close,
/// not at the response. The server is free at the response; the job's
/// completion time (what the client waits for) is unchanged.
///
/// The draw of a flow depends only on the run's seed and the flow's arrival
/// time, so every policy sees the same lingering flows (common random numbers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linger {
    /// Fraction of flows that linger, in [0, 1].
    pub share: f64,
    /// Mean idle time of a lingering flow, s.
    pub mean_s: f64,
}

impl std::str::FromStr for Linger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "bad linger {s:?}: expected SHARE:MEAN_S (SHARE in [0, 1], MEAN_S in (0, 3600])"
            )
        };
        let (p, m) = s.split_once(':').ok_or_else(bad)?;
        let l = Linger {
            share: p.trim().parse().map_err(|_| bad())?,
            mean_s: m.trim().parse().map_err(|_| bad())?,
        };
        let ok = (0.0..=1.0).contains(&l.share) && l.mean_s > 0.0 && l.mean_s <= 3600.0;
        ok.then_some(l).ok_or_else(bad)
    }
}

impl Linger {
    /// How long the flow that arrived at `arrival` stays open after its
    /// response (0: closed with it), drawn from `seed` and the arrival time.
    pub fn idle_s(&self, seed: u64, arrival: f64) -> f64 {
        let mut r = SplitMix64::new(seed ^ arrival.to_bits().wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if crate::workload::open01(&mut r) >= self.share {
            return 0.0;
        }
        -self.mean_s * crate::workload::open01(&mut r).ln()
    }
}

/// Parses `COUNTxCPUS[@SPEED][,..]` (e.g. `4x2@0.6,3x4`) into Apache-like
/// servers: CPUS is the configured weight, CPUS × SPEED the real capacity.
pub fn parse_servers(spec: &str) -> Option<Vec<ServerSpec>> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let mut v = Vec::new();
    for g in spec.split(',') {
        let (n, rest) = g.trim().split_once('x')?;
        let (c, speed) = match rest.split_once('@') {
            Some((c, sp)) => (c, sp.parse::<f64>().ok()?),
            None => (rest, 1.0),
        };
        let n: usize = n.parse().ok()?;
        let c: f64 = c.parse().ok()?;
        if n == 0 || !positive(c) || !positive(speed) || speed > 100.0 {
            return None;
        }
        let s = ServerSpec {
            speed,
            ..ServerSpec::apache(c)
        };
        v.extend(std::iter::repeat_n(s, n));
    }
    (!v.is_empty() && v.len() <= marllb_core::MAX_BACKENDS).then_some(v)
}

/// Multiplies each server's speed by a lognormal factor exp(σ·Z) drawn from `seed`.
pub fn apply_speed_noise(servers: &mut [ServerSpec], sigma: f64, seed: u64) {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_5bee);
    for s in servers {
        let u = crate::workload::open01(&mut rng);
        let z = crate::workload::normal(u, crate::workload::open01(&mut rng));
        s.speed *= (sigma * z).exp();
    }
}

/// Parses capacity events, one `TIME_S SERVER_INDEX FACTOR` per line (`#`
/// comments, blank lines skipped); errors name the line.
pub fn parse_capacity_events(text: &str, servers: usize) -> Result<Vec<CapacityEvent>, String> {
    let mut v = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| {
            format!(
                "line {}: {what} (expected TIME_S SERVER_INDEX FACTOR)",
                n + 1
            )
        };
        let [t, s, x] = f[..] else {
            return Err(bad("three fields needed"));
        };
        let time: f64 = t.parse().map_err(|_| bad("TIME_S is not a number"))?;
        let server: usize = s.parse().map_err(|_| bad("SERVER_INDEX is not an index"))?;
        let factor: f64 = x.parse().map_err(|_| bad("FACTOR is not a number"))?;
        if !(time.is_finite() && time >= 0.0) {
            return Err(bad("TIME_S must be finite and >= 0"));
        }
        if server >= servers {
            return Err(bad(&format!("SERVER_INDEX {server} >= {servers} servers")));
        }
        if !(factor.is_finite() && factor > 0.0 && factor <= 100.0) {
            return Err(bad("FACTOR must be in (0, 100]"));
        }
        v.push(CapacityEvent {
            time,
            server,
            factor,
            noisy: false,
        });
    }
    v.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(v)
}

/// A noisy-neighbour schedule: in every window of `period` seconds up to
/// `horizon`, `k` distinct servers drawn from `seed` each run at `factor` for
/// `burst` seconds starting at a random offset in the window.
pub fn noisy_schedule(
    k: usize,
    burst: f64,
    period: f64,
    factor: f64,
    servers: usize,
    horizon: f64,
    seed: u64,
) -> Vec<CapacityEvent> {
    let mut rng = SplitMix64::new(seed ^ 0x0015e_u64.wrapping_mul(0x9e37));
    let mut v = Vec::new();
    let k = k.min(servers);
    let mut start = 0.0;
    while start < horizon && period > 0.0 {
        let mut pool: Vec<usize> = (0..servers).collect();
        for _ in 0..k {
            let i = (rng.next_u64() % pool.len() as u64) as usize;
            let server = pool.swap_remove(i);
            let off = crate::workload::open01(&mut rng) * (period - burst).max(0.0);
            let t = start + off;
            for (time, f) in [(t, factor), (t + burst, 1.0)] {
                v.push(CapacityEvent {
                    time,
                    server,
                    factor: f,
                    noisy: true,
                });
            }
        }
        start += period;
    }
    v.sort_by(|a, b| a.time.total_cmp(&b.time));
    v
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
    /// p2c-ewma: peak-EWMA completion time per backend (s) and when it was updated.
    ewma: Vec<(f64, f64)>,
}

/// Decay time of the peak-EWMA completion time of `p2c-ewma`, s (Finagle's
/// default `decayTime`).
pub const P2C_DECAY_S: f64 = 10.0;

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

pub use marllb_policy::jain;

/// The simulator.
#[derive(Debug)]
pub struct Sim<'w> {
    /// Parameters.
    pub cfg: SimConfig,
    /// Servers.
    pub servers: Vec<Server>,
    /// LB nodes.
    pub lbs: Vec<LbNode>,
    policy: PolicyKind,
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
    next_capacity: usize,
    /// Per server: drift factor and noisy-neighbour factor.
    factors: Vec<(f64, f64)>,
    /// Cumulative LB shares (empty: equal) and the next change to apply.
    split_cum: Vec<f64>,
    next_split: usize,
    adaptive: AdaptiveSed,
    /// Flows whose response went out but whose LB node has not seen them end
    /// yet (`Conditions::linger`), by close time.
    closes: BinaryHeap<Reverse<PendingClose>>,
    linger_seed: u64,
}

/// A lingering flow's end as its LB node will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PendingClose {
    /// Close time (f64 bits; non-negative, so they order as the times).
    at: u64,
    lb: u16,
    backend: u16,
    created_tick: u32,
    /// Arrival time (f64 bits).
    arrival: u64,
}

/// What an LB node does when it sees a flow end at `t`: the last packet, the
/// gauge, the completion-time sample, p2c-ewma's latency.
fn lb_close(node: &mut LbNode, s: usize, created_tick: u32, arrival: f64, t: f64) {
    let tick = ticks((t * 1e9) as u64);
    let b = s as u16;
    node.telemetry
        .observe_packet(b, 1500, tick, || created_tick);
    node.telemetry
        .flow_closed(b, FlowState::TcpEstablished, created_tick, tick);
    if let Some((e, at)) = node.ewma.get_mut(s) {
        // Peak EWMA: jumps up to a slower completion, decays down.
        let l = t - arrival;
        if l > *e {
            *e = l;
        } else {
            let w = (-(t - *at) / P2C_DECAY_S).exp();
            *e = *e * w + l * (1.0 - w);
        }
        *at = t;
    }
}

/// Cumulative shares, normalized; empty when `shares` is empty or unusable.
fn cumulative(shares: &[f64], lbs: usize) -> Vec<f64> {
    let total: f64 = shares.iter().take(lbs).filter(|x| **x > 0.0).sum();
    if shares.len() != lbs || total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Vec::new();
    }
    let mut acc = 0.0;
    shares
        .iter()
        .map(|x| {
            acc += x.max(0.0) / total;
            acc
        })
        .collect()
}

impl<'w> Sim<'w> {
    /// A simulator at time 0 with `policy` on every node.
    pub fn new(cfg: SimConfig, workload: &'w Workload, policy: PolicyKind) -> Self {
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
                    ewma: vec![(0.0, 0.0); n],
                };
                let base: Vec<f32> = cfg.servers.iter().map(|s| s.cpus as f32).collect();
                node.features.set_base(&base);
                let ids: Vec<(u64, u32)> = (0..n as u64)
                    .map(|i| (SplitMix64::new(i ^ 0xbac4).next_u64(), WEIGHT_ONE))
                    .collect();
                let _ = node.maglev.build(&ids);
                node
            })
            .collect();
        let arrivals = workload.stream(seeder.next_u64());
        let mut cfg = cfg;
        if policy == PolicyKind::AdaptiveSed {
            cfg.features = true;
        }
        let split_cum = cumulative(&cfg.conditions.lb_split, cfg.lbs);
        let mut sim = Self {
            servers: cfg.servers.iter().map(|s| Server::new(*s)).collect(),
            lbs,
            policy,
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
            next_capacity: 0,
            factors: vec![(1.0, 1.0); n],
            split_cum,
            next_split: 0,
            adaptive: AdaptiveSed::default(),
            closes: BinaryHeap::new(),
            linger_seed: seeder.next_u64(),
            cfg,
        };
        sim.next_arrival = sim.arrivals.next();
        let init: Vec<u32> = match policy {
            PolicyKind::Wcmp
            | PolicyKind::Static
            | PolicyKind::Sed
            | PolicyKind::Oracle
            | PolicyKind::AdaptiveSed
            | PolicyKind::P2cEwma => sim.cap_q16.clone(),
            _ => vec![WEIGHT_ONE; n],
        };
        if policy == PolicyKind::AdaptiveSed {
            sim.set_initial_action(0.0);
        }
        for i in 0..sim.lbs.len() {
            sim.set_weights(i, &init);
        }
        sim
    }

    /// The policy every node runs.
    pub fn policy(&self) -> PolicyKind {
        self.policy
    }

    /// Replaces the adaptive-SED constants (tuning on training scenarios).
    pub fn set_adaptive(&mut self, a: AdaptiveSed) {
        self.adaptive = a;
    }

    /// Starts every node's previous actions at `value` (0 for `log_step`
    /// policies, whose previous action is a log correction).
    pub fn set_initial_action(&mut self, value: f32) {
        let n = self.servers.len();
        for node in &mut self.lbs {
            node.features.set_previous_action(&vec![value; n]);
        }
    }

    /// Applies an agent's action mapped by `marllb_policy::action_to_weights`:
    /// `q16` are the weights, `real` the next previous action.
    pub fn apply_action(&mut self, lb: usize, real: &[f32], q16: &[u32]) {
        self.set_weights(lb, q16);
        if let Some(node) = self.lbs.get_mut(lb) {
            node.features.set_previous_action(real);
        }
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
        let policy = self.policy;
        let node = self.lbs.get(lb)?;
        let h = flow_hash(key, node.hash_seed);
        let pick = match policy {
            PolicyKind::Ecmp | PolicyKind::Wcmp | PolicyKind::Static => {
                node.alias.sample(choice_hash(h))
            }
            PolicyKind::Maglev => node.maglev.lookup(h),
            PolicyKind::Lsq
            | PolicyKind::Sed
            | PolicyKind::AdaptiveSed
            | PolicyKind::Es
            | PolicyKind::Qmix
            | PolicyKind::SacGru => {
                for (b, a) in self.scratch_active.iter_mut().enumerate() {
                    *a = node.telemetry.active(b as u16);
                }
                sed_choose(&node.weights, &self.scratch_active, choice_hash(h))
            }
            PolicyKind::P2cEwma => {
                let first = node.alias.sample(choice_hash(h));
                let mut second = first;
                for salt in 1..8u64 {
                    second = node
                        .alias
                        .sample(choice_hash(h ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                    if second != first {
                        break;
                    }
                }
                match (first, second) {
                    (Some(a), Some(b)) => {
                        let cost = |x: u16| {
                            let active = f64::from(node.telemetry.active(x)) + 1.0;
                            let e = node.ewma.get(usize::from(x)).map_or(0.0, |e| e.0);
                            let w =
                                f64::from(node.weights.get(usize::from(x)).copied().unwrap_or(1));
                            // No completion seen yet: cost by load per weight only.
                            (e, active / w.max(1.0))
                        };
                        let (ca, cb) = (cost(a), cost(b));
                        let pick_a = if ca.0 > 0.0 && cb.0 > 0.0 {
                            ca.0 * ca.1 <= cb.0 * cb.1
                        } else {
                            (ca.0 == 0.0 && cb.0 > 0.0) || (ca.0 == cb.0 && ca.1 <= cb.1)
                        };
                        Some(if pick_a { a } else { b })
                    }
                    (a, b) => a.or(b),
                }
            }
            PolicyKind::Oracle => {
                // The job's expected slowdown at each server from every node's
                // flows and the true current speed: 1 / (its share of a CPU
                // with it there, by the server's own rule) / speed.
                let mut best: Option<(f64, u16)> = None;
                for (b, s) in self.servers.iter().enumerate() {
                    let n = s.in_system() as f64 + 1.0;
                    let share = s.spec.model.share(s.spec.cpus, n);
                    let delay = 1.0 / (share * s.spec.speed * s.factor);
                    if best.is_none_or(|(d, _)| delay < d) {
                        best = Some((delay, b as u16));
                    }
                }
                best.map(|x| x.1)
            }
        };
        pick.map(usize::from)
    }

    /// True when the LB nodes sample flow ages only at a request's edges
    /// (features on, `Packets::Edges`): the arrival and the response add a
    /// packet each.
    fn edge_packets(&self) -> bool {
        self.cfg.features && self.cfg.conditions.packets == Packets::Edges
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
        while let Some((at, shares)) = self.cfg.conditions.lb_split_changes.get(self.next_split) {
            if *at > t {
                break;
            }
            self.split_cum = cumulative(shares, self.lbs.len());
            self.next_split += 1;
        }
        let r32 = flow_hash(&key, self.router_seed) & 0xFFFF_FFFF;
        let lb = if self.split_cum.is_empty() {
            ((r32 * self.lbs.len() as u64) >> 32) as usize
        } else {
            let u = r32 as f64 / 4_294_967_296.0;
            self.split_cum
                .iter()
                .position(|c| u < *c)
                .unwrap_or(self.lbs.len() - 1)
        };
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
        let edges = self.edge_packets();
        if let Some(node) = self.lbs.get_mut(lb) {
            node.placed += 1;
            if ok {
                node.telemetry
                    .flow_opened(b as u16, FlowState::TcpEstablished);
                if edges {
                    // The SYN and the request: age 0.
                    node.telemetry.observe_packet(b as u16, 1500, tick, || tick);
                }
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
        let edges = self.edge_packets();
        let Some(server) = self.servers.get_mut(s) else {
            return;
        };
        server.advance(t);
        let warmup = self.cfg.warmup;
        let linger = self.cfg.conditions.linger;
        let linger_seed = self.linger_seed;
        let tick = ticks((t * 1e9) as u64);
        let (lbs, stats, closes) = (&mut self.lbs, &mut self.stats, &mut self.closes);
        server.complete(|job| {
            stats.events += 1;
            if let Some(c) = stats.per_server.get_mut(s) {
                *c += 1;
            }
            if job.arrival >= warmup {
                stats.jct.push(t - job.arrival);
            }
            let idle = linger.map_or(0.0, |l| l.idle_s(linger_seed, job.arrival));
            if idle > 0.0 {
                if edges {
                    // The client's ACKs of the response; the FIN comes at the close.
                    if let Some(node) = lbs.get_mut(usize::from(job.lb)) {
                        node.telemetry
                            .observe_packet(s as u16, 1500, tick, || job.created_tick);
                    }
                }
                closes.push(Reverse(PendingClose {
                    at: (t + idle).to_bits(),
                    lb: job.lb,
                    backend: s as u16,
                    created_tick: job.created_tick,
                    arrival: job.arrival.to_bits(),
                }));
            } else if let Some(node) = lbs.get_mut(usize::from(job.lb)) {
                lb_close(node, s, job.created_tick, job.arrival, t);
            }
        });
        self.schedule(s);
    }

    /// A lingering flow's LB node sees it end.
    fn close(&mut self, c: PendingClose) {
        self.stats.events += 1;
        let t = f64::from_bits(c.at);
        if let Some(node) = self.lbs.get_mut(usize::from(c.lb)) {
            lb_close(
                node,
                usize::from(c.backend),
                c.created_tick,
                f64::from_bits(c.arrival),
                t,
            );
        }
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
            let tk = self
                .cfg
                .conditions
                .capacity
                .get(self.next_capacity)
                .map_or(f64::INFINITY, |e| e.time);
            let tl = self
                .closes
                .peek()
                .map_or(f64::INFINITY, |Reverse(c)| f64::from_bits(c.at));
            if ta.min(tc).min(tk).min(tl) > t_end {
                break;
            }
            if tl < ta && tl < tc && tl < tk {
                if let Some(Reverse(c)) = self.closes.pop() {
                    self.now = tl;
                    self.close(c);
                }
            } else if tk <= ta && tk <= tc {
                self.now = tk;
                self.capacity_event();
            } else if ta <= tc {
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

    fn capacity_event(&mut self) {
        let Some(e) = self
            .cfg
            .conditions
            .capacity
            .get(self.next_capacity)
            .copied()
        else {
            return;
        };
        self.next_capacity += 1;
        let Some(f) = self.factors.get_mut(e.server) else {
            return;
        };
        if e.noisy {
            f.1 = e.factor;
        } else {
            f.0 = e.factor;
        }
        let factor = f.0 * f.1;
        if let Some(server) = self.servers.get_mut(e.server) {
            server.set_factor(e.time, factor);
        }
        self.schedule(e.server);
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
            let stream = self.cfg.conditions.packets == Packets::Stream;
            for (b, s) in self.servers.iter().enumerate().filter(|_| stream) {
                for job in s.jobs() {
                    if let Some(node) = self.lbs.get_mut(usize::from(job.lb)) {
                        node.telemetry
                            .observe_packet(b as u16, 1500, tick, || job.created_tick);
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
        if self.policy == PolicyKind::AdaptiveSed {
            let (mut real, mut q16) = (Vec::new(), Vec::new());
            for i in 0..self.lbs.len() {
                if let Some(node) = self.lbs.get(i) {
                    self.adaptive.step(&node.features, &mut real, &mut q16);
                }
                self.apply_action(i, &real, &q16);
            }
        }
        for node in self.lbs.iter_mut() {
            node.telemetry.reset_window();
        }
    }

    /// Runs to the end with the fixed policy; returns the statistics.
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
