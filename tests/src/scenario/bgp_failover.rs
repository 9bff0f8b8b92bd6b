//! Issue 15: the VIP announced over BGP by each LB node's controller, the
//! router's multipath route following the nodes through a data plane's
//! death and return, a BIRD that stops answering and a node that joins;
//! every connection held across each change is followed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::recording::{segments_seen, syns_seen, Recording, SegmentTimes, SynSeen};
use super::{moderate_backends, Bed, Clock};
use crate::demo::{Policy, PolicySetup};
use crate::lb::{CtrlOptions, LbOptions, Method};
use crate::load::{unix_now, LoadArgs, Record, Summary};
use crate::netns::Signal;
use crate::topology::{Process, Routing, Topology};
use anyhow::{Context, Result};

/// One connection held across a change of the BGP scenario.
#[derive(Debug, Clone)]
pub struct CarriedConnection {
    /// Client source port.
    pub sport: u16,
    /// The LB node its SYN went through: the node that placed it.
    pub placed_by: usize,
    /// The backend it was placed on (its SYN's destination).
    pub backend: String,
    /// The LB nodes that forwarded its segments after the change (the rest of
    /// its request, its ACKs, its FIN), as the backends recorded them.
    pub after: Vec<usize>,
    /// It completed with a 200 from the backend.
    pub survived: bool,
}

impl CarriedConnection {
    /// A node other than the one that placed it carried it after the change.
    pub fn moved(&self) -> bool {
        self.after.iter().any(|&n| n != self.placed_by)
    }
}

/// The connections held across one change: established before it began,
/// the rest of the request written after it ended.
#[derive(Debug, Clone, Default)]
pub struct HeldAcross {
    /// What changed.
    pub change: String,
    /// Each held connection.
    pub connections: Vec<CarriedConnection>,
    /// Held connections whose SYN no backend recorded (not classified).
    pub unplaced: usize,
}

impl HeldAcross {
    fn tally<'a>(it: impl Iterator<Item = &'a CarriedConnection>) -> (usize, usize) {
        it.fold((0, 0), |(n, ok), c| (n + 1, ok + usize::from(c.survived)))
    }

    /// (held, survived) of those placed by `node`.
    pub fn placed_by(&self, node: usize) -> (usize, usize) {
        Self::tally(self.connections.iter().filter(|c| c.placed_by == node))
    }

    /// (held, survived) of those another node carried after the change.
    pub fn moved(&self) -> (usize, usize) {
        Self::tally(self.connections.iter().filter(|c| c.moved()))
    }

    /// (held, survived) of those the node that placed them still carried.
    pub fn stayed(&self) -> (usize, usize) {
        Self::tally(self.connections.iter().filter(|c| !c.moved()))
    }

    /// (held, survived) of all.
    pub fn all(&self) -> (usize, usize) {
        Self::tally(self.connections.iter())
    }

    fn print(&self) {
        let (n, ok) = self.all();
        let (m, mok) = self.moved();
        let (st, sok) = self.stayed();
        println!(
            "held across {}: {n} ({ok} survived); moved to another node {m} ({mok} survived), \
             stayed {st} ({sok} survived); {} without a recorded SYN",
            self.change, self.unplaced
        );
        for c in &self.connections {
            println!(
                "  sport {:>5}: placed by lb{} on {}, then through {:?}: {}",
                c.sport,
                c.placed_by,
                c.backend,
                c.after.iter().map(|n| format!("lb{n}")).collect::<Vec<_>>(),
                if c.survived { "survived" } else { "BROKE" }
            );
        }
    }
}

/// What the BGP scenario measured.
#[derive(Debug, Clone)]
pub struct BgpReport {
    /// The policy.
    pub policy: Policy,
    /// The agent lb0's controller ran (`marllb_policy_active`).
    pub active_agent: Option<String>,
    /// Seconds from starting lb2 to the router's three next hops.
    pub joined_after_s: Option<f64>,
    /// The whole run.
    pub summary: Summary,
    /// Seconds from the controllers' start to both nodes' next hops.
    pub announced_after_s: f64,
    /// Seconds from SIGKILL of lb0's data plane to its next hop's withdrawal.
    pub withdrawn_after_kill_s: Option<f64>,
    /// Seconds from starting lb0's data plane again to its next hop's return
    /// (the controller attaches the new region, then the rise count).
    pub reannounced_after_s: Option<f64>,
    /// Seconds from stopping lb1's BIRD (SIGSTOP: the session stays open,
    /// keepalives stop) to the router dropping it (the hold time).
    pub dropped_after_bird_stop_s: Option<f64>,
    /// The router's next hops after each step.
    pub next_hops: Vec<Vec<String>>,
    /// Failed requests that started at least 1 s after a route change (its
    /// start and its end) and ended before the next one began (new
    /// connections on a settled route).
    pub failed_on_settled_routes: usize,
    /// Held across lb0's data plane's SIGKILL: established before it, the
    /// rest of the request written after it (lb0's own connections then go
    /// through lb1, from its sync records).
    pub held_across_kill: HeldAcross,
    /// Held across lb0's return (the router moves some of lb1's connections
    /// to the restarted node, which gets their records from lb1's dump when
    /// it sees lb0's new instance).
    pub held_across_return: HeldAcross,
    /// Held across the router dropping lb1 when its BIRD stopped (lb1's
    /// connections go to lb0; lb1's data plane is alive).
    pub held_across_bird_stop: HeldAcross,
    /// Held across lb2 joining (the rehash moves about a third to lb2).
    pub held_across_join: HeldAcross,
    /// SYNs lb0 forwarded after it was announced again (new connections
    /// reach it).
    pub syns_via_returned: usize,
    /// SYNs lb2 forwarded after it joined.
    pub syns_via_joined: usize,
}

/// Issue 15: the VIP announced over BGP by each LB node's controller through
/// its BIRD, the router's one multipath route following the nodes: a data
/// plane SIGKILLed (withdrawn), started again (announced again by the same
/// controller), a BIRD that stops answering (dropped after the hold time), a
/// third node joining. Flow-state sync between the nodes (not with Maglev,
/// the reference: every node computes the same placement); every connection
/// held across each change is followed (the node that placed it, the
/// backend, the nodes that carried it after, its outcome).
pub fn bgp(prefix: &str, dir: &Path, policy: Policy) -> Result<BgpReport> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let PolicySetup {
        method,
        agent,
        model,
    } = policy.setup(&models);
    let mut bed = Bed::builder(prefix, dir)
        // The shipped learned policy serves 7 backends (the MARLLB moderate
        // mix of the demo); the same backends for every policy.
        .backends(moderate_backends(7, 0.2, 8))
        // Three nodes: lb2 joins (data plane, controller) while connections
        // are held.
        .lb_nodes(3)
        .start_nodes(0)
        .routing(Routing::Bgp)
        .recording(Recording::SynsAndSegments)
        .dataplane(LbOptions {
            method,
            // Maglev, the reference, without sync: every node computes the
            // same placement.
            sync: method != Method::Maglev,
            ..LbOptions::default()
        })
        .controller(CtrlOptions {
            agent,
            model,
            interval: Duration::from_millis(100),
            prometheus_port: 9090,
            ..CtrlOptions::default()
        })
        .build()?;
    let started = Instant::now();
    for i in 0..2 {
        bed.start_node(i)?;
    }
    let hop = |i: u8| Ipv4Addr::new(198, 18, 2, 200 + i);
    let mut next_hops = Vec::new();
    let mut record_hops = |topo: &Topology| {
        let h = topo.vip_next_hops().unwrap_or_default();
        println!("router: VIP next hops {h:?}");
        next_hops.push(h.iter().map(ToString::to_string).collect::<Vec<_>>());
    };
    bed.topo
        .wait_vip_next_hops(&[hop(0), hop(1)], Duration::from_secs(20))?;
    let announced_after_s = started.elapsed().as_secs_f64();
    record_hops(&bed.topo);
    // The agent computing lb0's weights (a refused model would show its
    // fallback here).
    let active_agent = bed.metrics(0).ok().and_then(|m| {
        m.lines()
            .filter(|l| l.starts_with("marllb_policy_active{") && l.ends_with(" 1"))
            .find_map(|l| {
                l.split("agent=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(String::from)
            })
    });

    // Every connection sends half its request, waits 2 s, sends the rest.
    let run = bed.start_load(&LoadArgs {
        rate: 20.0,
        loops: 20000,
        hold: 2.0,
        duration: 27.0,
        timeout: 10,
        ..bed.load_args()
    })?;
    let clock = Clock::start();
    let now = || clock.now();
    // Scenario times of the route changes (for "settled"), and each change's
    // UNIX bracket with the last-segment records read after it.
    let mut changes = Vec::new();
    let mut brackets: Vec<Bracket> = Vec::new();
    let wait = |topo: &Topology, want: &[Ipv4Addr], s: u64| {
        topo.bracket_vip_next_hops(want, Duration::from_secs(s))
            .ok()
    };

    clock.sleep_until(4.0);
    changes.push(now());
    let killed_unix = unix_now();
    bed.kill(Process::DataPlane(0));
    let withdrawn = wait(&bed.topo, &[hop(1)], 10);
    let withdrawn_after_kill_s = withdrawn.map(|c| c.waited.as_secs_f64());
    changes.push(now());
    record_hops(&bed.topo);
    clock.sleep_until(7.7);
    brackets.push(bracket(
        &bed.topo,
        "lb0's SIGKILL",
        killed_unix,
        killed_unix,
    )?);

    clock.sleep_until(8.0);
    changes.push(now());
    let restart = Instant::now();
    bed.start_dataplane(0)?;
    let back = wait(&bed.topo, &[hop(0), hop(1)], 15);
    let reannounced_after_s = back.map(|_| restart.elapsed().as_secs_f64());
    changes.push(now());
    record_hops(&bed.topo);
    clock.sleep_until(11.7);
    if let Some(c) = back {
        brackets.push(bracket(
            &bed.topo,
            "lb0's return",
            c.before_unix,
            c.after_unix,
        )?);
    }

    clock.sleep_until(12.0);
    changes.push(now());
    let bird1 = bed
        .topo
        .lbs
        .get(1)
        .and_then(|n| n.bgp.as_ref())
        .map(|s| s.label.clone())
        .context("a BGP topology has a speaker per LB node")?;
    bed.topo.tb.signal(&bird1, Signal::STOP);
    let dropped = wait(&bed.topo, &[hop(0)], 10);
    let dropped_after_bird_stop_s = dropped.map(|c| c.waited.as_secs_f64());
    changes.push(now());
    record_hops(&bed.topo);
    if let Some(c) = dropped {
        // The held connections' rest (2 s after connecting) goes by.
        std::thread::sleep(Duration::from_millis(2_700));
        brackets.push(bracket(
            &bed.topo,
            "lb1's BIRD stopping",
            c.before_unix,
            c.after_unix,
        )?);
    }
    bed.topo.tb.signal(&bird1, Signal::CONT);
    // lb1's session comes back; then lb2 joins.
    changes.push(now());
    bed.topo
        .wait_vip_next_hops(&[hop(0), hop(1)], Duration::from_secs(15))?;
    changes.push(now());
    clock.sleep_until(21.0);
    changes.push(now());
    let join = Instant::now();
    bed.start_node(2)?;
    let joined = wait(&bed.topo, &[hop(0), hop(1), hop(2)], 15);
    let joined_after_s = joined.map(|_| join.elapsed().as_secs_f64());
    changes.push(now());
    record_hops(&bed.topo);
    if let Some(c) = joined {
        std::thread::sleep(Duration::from_millis(2_700));
        brackets.push(bracket(
            &bed.topo,
            "lb2 joining",
            c.before_unix,
            c.after_unix,
        )?);
    }

    let (summary, records) = run.finish(&mut bed.topo, Duration::from_secs(60))?;
    let settled = |t: f64| {
        // After the last change plus 1 s, and before the next change minus
        // the longest request (so that it did not cross that change).
        let last = changes
            .iter()
            .copied()
            .filter(|&c| c <= t)
            .fold(None, |_, c| Some(c));
        let next = changes.iter().copied().find(|&c| c > t);
        last.is_none_or(|c| t > c + 1.0) && next.is_none_or(|c| t + 2.5 < c)
    };
    let on_settled: Vec<&Record> = records
        .iter()
        .filter(|r| r.failed() && settled(r.at))
        .collect();
    for r in &on_settled {
        println!(
            "failed on a settled route: started t={:.2}s, {:?} after {:.0} ms",
            r.at, r.outcome, r.latency_ms
        );
    }
    println!("route changes at {changes:.2?}");
    let syns = syns_seen(&bed.topo, 3)?;
    let mut held = brackets
        .iter()
        .map(|(what, start, end, segs)| held_across(what, *start, *end, &records, &syns, segs));
    let mut next_held = || held.next().unwrap_or_default();
    let held_across_kill = next_held();
    let held_across_return = if back.is_some() {
        next_held()
    } else {
        HeldAcross::default()
    };
    let held_across_bird_stop = if dropped.is_some() {
        next_held()
    } else {
        HeldAcross::default()
    };
    let held_across_join = if joined.is_some() {
        next_held()
    } else {
        HeldAcross::default()
    };
    let syns_after = |node: usize, t: Option<f64>| {
        t.map_or(0, |t| {
            syns.values()
                .flatten()
                .filter(|x| x.node == node && x.at_unix > t)
                .count()
        })
    };
    let report = BgpReport {
        policy,
        active_agent,
        joined_after_s,
        summary,
        announced_after_s,
        withdrawn_after_kill_s,
        reannounced_after_s,
        dropped_after_bird_stop_s,
        next_hops,
        failed_on_settled_routes: on_settled.len(),
        syns_via_returned: syns_after(0, back.map(|c| c.after_unix)),
        syns_via_joined: syns_after(2, joined.map(|c| c.after_unix)),
        held_across_kill,
        held_across_return,
        held_across_bird_stop,
        held_across_join,
    };
    for h in [
        &report.held_across_kill,
        &report.held_across_return,
        &report.held_across_bird_stop,
        &report.held_across_join,
    ] {
        h.print();
    }
    println!(
        "bgp scenario ({}): {} requests, {} failed, {} on settled routes; announced after {:.2} s; \
         withdrawn {:?} s after the kill; announced again {:?} s after the restart; dropped {:?} s \
         after BIRD stopped; joined {:?} s after start; new SYNs through lb0 after its return {}, \
         through lb2 after it joined {}",
        report.policy,
        report.summary.requests,
        report.summary.failed,
        report.failed_on_settled_routes,
        report.announced_after_s,
        report.withdrawn_after_kill_s,
        report.reannounced_after_s,
        report.dropped_after_bird_stop_s,
        report.joined_after_s,
        report.syns_via_returned,
        report.syns_via_joined
    );
    Ok(report)
}

/// A route change: what changed, its UNIX bracket (the route was still the
/// old one, it was the new one), and the last-segment records read after it.
type Bracket = (String, f64, f64, SegmentTimes);

/// Reads the backends' last-segment records for the change `what` that
/// happened between `before` and `after` (UNIX seconds).
fn bracket(topo: &Topology, what: &str, before: f64, after: f64) -> Result<Bracket> {
    Ok((what.into(), before, after, segments_seen(topo, 3)?))
}

/// The connections held across a change from `start` to `end` (UNIX
/// seconds): `connect` returned before `start`, the rest of the request was
/// written after `end`. Each is placed by its own SYN (the last recorded
/// while it connected) and followed by the nodes whose last segment of its
/// port came after the rest was written and before it was done.
fn held_across(
    what: &str,
    start: f64,
    end: f64,
    records: &[Record],
    syns: &BTreeMap<u16, Vec<SynSeen>>,
    segs: &SegmentTimes,
) -> HeldAcross {
    let connect_s = crate::load::CONNECT_TIMEOUT.as_secs_f64();
    let mut out = HeldAcross {
        change: what.into(),
        ..HeldAcross::default()
    };
    for r in records {
        let (Some(c), Some(rest)) = (r.connected_unix, r.rest_sent_unix) else {
            continue;
        };
        if !(c < start && rest > end) {
            continue;
        }
        let own = syns.get(&r.sport).and_then(|v| {
            v.iter()
                .rfind(|x| x.at_unix > c - connect_s - 0.5 && x.at_unix < c + 0.5)
        });
        let Some(syn) = own else {
            out.unplaced += 1;
            continue;
        };
        let done = r.done_unix.unwrap_or(f64::MAX);
        let after = segs
            .get(&r.sport)
            .map(|v| {
                v.iter()
                    .filter(|(_, at)| *at > rest - 0.05 && *at < done + 0.5)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        out.connections.push(CarriedConnection {
            sport: r.sport,
            placed_by: syn.node,
            backend: syn.backend.clone(),
            after,
            survived: !r.failed(),
        });
    }
    out
}
