//! Scenario 5: two LB nodes behind the router's multipath route, one removed
//! mid-run; every connection held across the removal is classified, its
//! survival predicted and checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use super::recording::{syns_seen, Recording, SynSeen};
use super::{equal_backends, Bed, Clock};
use crate::lb::{method_name, CtrlOptions, LbOptions, Method};
use crate::load::{unix_now, LoadArgs, Record, Summary};
use crate::topology::{Process, Topology, CLIENT_ADDR};

/// One connection of the LB-failover scenario, as classified.
#[derive(Debug, Clone)]
pub struct HeldConnection {
    /// Client source port.
    pub sport: u16,
    /// Backend that held it (from the backends' socket tables) before the removal.
    pub backend: String,
    /// LB node that carried it: 0 when node 0 sent a SYN of it to the backend
    /// that holds it (node 0 has a flow entry to that backend), else 1 (the
    /// source MAC of its SYN at the backend).
    pub lb: usize,
    /// Its SYNs (one, unless a retransmission took another path), as the
    /// backends recorded them.
    pub syns: Vec<SynSeen>,
    /// The backend of node 0's flow entry for its 5-tuple left by an earlier
    /// connection on the same client port (node 0 carried that one's SYN), if
    /// that entry still lingers (closing, for 10 s after its end) when this
    /// connection's segments reach node 0.
    pub stale_on_0: Option<String>,
    /// Backend the consistent (Maglev) table gives it (`marllb-dpdk --explain-flows`).
    pub consistent: String,
    /// Predicted to survive: node 0's flow entry from its own SYN sends it
    /// where it is; without one, with flow sync on, always (node 1's record
    /// reached node 0); else a lingering entry of an earlier connection on
    /// the port, or without one node 0's consistent table, does.
    pub predicted_survives: bool,
    /// It completed with a 200 from the backend.
    pub survived: bool,
    /// Seconds from `connect` returning to the start of the route change
    /// (negative: before it), and from the end of the change to the rest of
    /// the request being written (positive: after it).
    pub margins: (f64, f64),
}

/// What scenario 5 measured.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    /// Data-plane method of both nodes.
    pub method: Method,
    /// Flow-state sync between them.
    pub sync: bool,
    /// The whole run.
    pub summary: Summary,
    /// Connections established and idle (mid-request) when the node was
    /// removed: `connect` returned before the route change began and the rest
    /// of the request was written after it ended (the load generator's clock
    /// readings against the scenario's, both wall clock).
    pub held: Vec<HeldConnection>,
    /// Failed requests that started within a second before the removal and
    /// were not established at it (mid-handshake when their path changed).
    pub handshake_failures: usize,
    /// Failed requests that were established before the route change and
    /// whose request was in flight while it changed (the rest written before
    /// its end, the answer not yet read at its start): their last segments
    /// took the new path, so they may break like a held connection of node 1,
    /// or the answer may have been read first.
    pub in_flight_failures: usize,
    /// Any other failed request.
    pub other_failures: usize,
}

impl FailoverReport {
    /// The method, and `+sync` with flow-state sync.
    pub fn label(&self) -> String {
        let sync = if self.sync { "+sync" } else { "" };
        format!("{}{sync}", method_name(self.method))
    }

    /// Held connections on node `lb`: (count, survived).
    pub fn on(&self, lb: usize) -> (usize, usize) {
        let on: Vec<&HeldConnection> = self.held.iter().filter(|c| c.lb == lb).collect();
        (on.len(), on.iter().filter(|c| c.survived).count())
    }

    /// Held connections whose outcome differs from the prediction.
    pub fn mispredicted(&self) -> usize {
        self.held
            .iter()
            .filter(|c| c.predicted_survives != c.survived)
            .count()
    }
}

/// Client port → backend id for every established connection to port 80 the
/// backends hold now (read from their kernels' socket tables).
fn backend_sockets(topo: &Topology) -> BTreeMap<u16, String> {
    let mut out = BTreeMap::new();
    for b in &topo.backends {
        let text = crate::netns::run(crate::netns::in_ns(&b.ns, "ss").args([
            "-Htn",
            "state",
            "established",
            "( sport = :80 )",
        ]))
        .unwrap_or_default();
        for line in text.lines() {
            // Recv-Q Send-Q Local:Port Peer:Port
            if let Some(port) = line
                .split_whitespace()
                .nth(3)
                .and_then(|peer| peer.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
            {
                out.insert(port, b.spec.id.clone());
            }
        }
    }
    out
}

/// How long a data plane keeps a flow entry after its FIN or RST (core-nostd's
/// `Timeouts::default().tcp_closing_ns`; the testbed's configs keep it).
const TCP_CLOSING_S: f64 = 10.0;

/// The backend each client port gets from LB node `i`'s consistent table.
fn consistent_choice(topo: &Topology, i: usize, ports: &[u16]) -> Result<Vec<String>> {
    let flows = topo.dir.join("flows.txt");
    let mut s = String::new();
    for p in ports {
        s += &format!("{CLIENT_ADDR} {p} {} 80 tcp\n", crate::VIP);
    }
    std::fs::write(&flows, s)?;
    let cfg = topo.dir.join(format!("lb{i}")).join("lb.toml");
    let out = crate::netns::run(
        std::process::Command::new(crate::lb::bin("marllb-dpdk")?)
            .arg("--config")
            .arg(&cfg)
            .arg("--explain-flows")
            .arg(&flows),
    )?;
    let v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
        .collect();
    if v.len() != ports.len() {
        bail!(
            "--explain-flows answered {} of {} flows",
            v.len(),
            ports.len()
        );
    }
    Ok(v)
}

/// Scenario 5: two LB nodes behind the router's multipath route (L4 hash),
/// each with its own data plane (`method`), controller and agent; mid-run LB
/// node 1 is removed from the route and stopped. Every connection that is
/// established and mid-request at that moment is classified by the node that
/// carried it and the backend the surviving node's consistent table gives it,
/// and its outcome is compared with the prediction.
pub fn lb_failover(prefix: &str, dir: &Path, method: Method, sync: bool) -> Result<FailoverReport> {
    let mut bed = Bed::builder(prefix, dir)
        .backends(equal_backends(3, 0.3, 16, 512))
        .lb_nodes(2)
        // The client's ports from a narrow range (a connection is open for
        // about 4.3 s, so about 170 are in use at once): ports are reused
        // within the run, so held connections cross the removal on ports
        // earlier connections used. That is the case that needs the
        // prediction's lingering entries and flow sync's closed records.
        .client_ports(40000..=40599)
        .recording(Recording::Syns)
        .dataplane(LbOptions {
            method,
            sync,
            ..LbOptions::default()
        })
        .controller(CtrlOptions::default())
        .build()?;
    // MARLLB_CAPTURE=DIR: packet captures of the run on the router's ports.
    let capture =
        std::env::var_os("MARLLB_CAPTURE").map(|d| PathBuf::from(d).join(method_name(method)));
    if let Some(d) = &capture {
        bed.topo.capture(d, "tcp port 80 or icmp")?;
    }
    // Every connection sends half its request, waits 4 s, sends the rest: the
    // ones opened in the 4 s before the removal cross it established and idle.
    let run = bed.start_load(&LoadArgs {
        rate: 40.0,
        loops: 20000,
        hold: 4.0,
        duration: 12.0,
        timeout: 10,
        ..bed.load_args()
    })?;
    let clock = Clock::start();
    clock.sleep_until(7.0);
    let topo = &mut bed.topo;
    let nodes = topo.lbs.len();
    let mut placed = backend_sockets(topo);
    // The route change, bracketed by the clock the load generator stamps its
    // records with: a connection is held across it when it was established
    // before `changing` and sent the rest of its request after `changed`.
    let changing = unix_now();
    topo.remove_lb(1)?;
    let changed = unix_now();
    let removed_at = clock.now();
    topo.tb.kill(&Process::Controller(1).label());
    topo.tb.kill(&Process::DataPlane(1).label());
    // The backend of every held connection, read from the backends' socket
    // tables just before the removal and again after it, for the connections
    // established between the first reading and the change (the held
    // connections send nothing for 4 s).
    std::thread::sleep(Duration::from_millis(300));
    for (p, b) in backend_sockets(topo) {
        placed.entry(p).or_insert(b);
    }
    println!(
        "t={removed_at:.1}s LB node 1 removed from the route ({:.1} ms) and stopped",
        (changed - changing) * 1e3
    );
    let (summary, records) = run.finish(topo, Duration::from_secs(60))?;
    if let Some(d) = &capture {
        std::fs::write(d.join("records.json"), serde_json::to_string(&records)?)?;
    }

    let established_before = |r: &Record| r.connected_unix.is_some_and(|t| t < changing);
    let is_held =
        |r: &Record| established_before(r) && r.rest_sent_unix.is_some_and(|t| t > changed);
    let in_flight = |r: &Record| {
        established_before(r)
            && r.rest_sent_unix.is_some_and(|t| t <= changed)
            && r.done_unix.is_some_and(|t| t > changing)
    };
    let syns = syns_seen(topo, nodes)?;
    // Its own SYNs: those sent while it connected (at most the connect
    // timeout before `connect` returned). An earlier connection on the same
    // port ended before this one began; a later one began after it ended.
    let connect_s = crate::load::CONNECT_TIMEOUT.as_secs_f64();
    let own = |r: &Record, v: &[SynSeen]| -> Vec<SynSeen> {
        let c = r.connected_unix.unwrap_or(0.0);
        v.iter()
            .filter(|x| x.at_unix > c - connect_s - 0.5 && x.at_unix < c + 0.5)
            .cloned()
            .collect()
    };
    // The flow entry node 0 may still hold for the port from the latest
    // earlier connection on it whose SYN went through node 0.
    let stale_on_0 = |r: &Record, v: &[SynSeen]| -> Option<String> {
        let c = r.connected_unix?;
        let mut earlier: Vec<&Record> = records
            .iter()
            .filter(|e| e.sport == r.sport && e.done_unix.is_some_and(|d| d < c))
            .collect();
        earlier.sort_by(|a, b| {
            b.done_unix
                .unwrap_or(0.0)
                .total_cmp(&a.done_unix.unwrap_or(0.0))
        });
        earlier.iter().find_map(|e| {
            let ec = e.connected_unix?;
            let x = v.iter().find(|x| {
                x.node == 0 && x.at_unix > ec - connect_s - 0.5 && x.at_unix < ec + 0.5
            })?;
            (r.rest_sent_unix? - e.done_unix? < TCP_CLOSING_S).then(|| x.backend.clone())
        })
    };
    let candidates: Vec<(&Record, String, Vec<SynSeen>, Option<String>)> = records
        .iter()
        .filter(|r| is_held(r))
        .filter_map(|r| {
            let backend = placed.get(&r.sport)?.clone();
            let v = syns.get(&r.sport)?;
            let mine = own(r, v);
            mine.iter()
                .any(|x| x.backend == backend)
                .then(|| (r, backend, mine, stale_on_0(r, v)))
        })
        .collect();
    let ports: Vec<u16> = candidates.iter().map(|(r, ..)| r.sport).collect();
    let consistent = consistent_choice(topo, 0, &ports)?;
    let held_records: Vec<&Record> = candidates.iter().map(|(r, ..)| *r).collect();
    let mut held = Vec::new();
    for ((r, backend, mine, stale), c) in candidates.into_iter().zip(consistent) {
        // Node 0's own entry for the connection: its own SYN's (all of them
        // hit the first's entry).
        let own0 = mine.iter().find(|x| x.node == 0).map(|x| x.backend.clone());
        // Without one: with sync on, node 1's record (it replaces a lingering
        // closing entry of an earlier connection on the port; a copy of an
        // earlier connection of node 1's was closed by that one's closed
        // record); else the lingering entry, or else node 0's consistent table.
        let predicted_survives = match own0 {
            Some(b) => b == backend,
            None if sync => true,
            None => stale.as_ref().map_or(c == backend, |b| *b == backend),
        };
        held.push(HeldConnection {
            sport: r.sport,
            lb: if mine.iter().any(|x| x.node == 0 && x.backend == backend) {
                0
            } else {
                1
            },
            predicted_survives,
            backend,
            syns: mine,
            stale_on_0: stale,
            consistent: c,
            survived: !r.failed(),
            margins: (
                r.connected_unix.unwrap_or(0.0) - changing,
                r.rest_sent_unix.unwrap_or(0.0) - changed,
            ),
        });
    }
    // A held connection is one record: its port may have served others.
    let key = |r: &Record| (r.sport, r.connected_unix.map(f64::to_bits));
    let held_keys: std::collections::HashSet<(u16, Option<u64>)> =
        held_records.iter().map(|r| key(r)).collect();
    // Connections that were mid-handshake at the removal (SYN through node 1,
    // handshake ACK to node 0), or mid-request, are neither held nor "other".
    let in_handshake = |r: &Record| r.at > removed_at - 1.0 && r.at < removed_at + 0.5;
    let failed: Vec<&Record> = records
        .iter()
        .filter(|r| r.failed() && !held_keys.contains(&key(r)))
        .collect();
    let handshake_failures = failed.iter().filter(|r| in_handshake(r)).count();
    let in_flight_failures = failed
        .iter()
        .filter(|r| !in_handshake(r) && in_flight(r))
        .count();
    let other: Vec<&&Record> = failed
        .iter()
        .filter(|r| !in_handshake(r) && !in_flight(r))
        .collect();
    let report = FailoverReport {
        method,
        sync,
        summary,
        held,
        handshake_failures,
        in_flight_failures,
        other_failures: other.len(),
    };
    let (n0, s0) = report.on(0);
    let (n1, s1) = report.on(1);
    let agree = report
        .held
        .iter()
        .filter(|c| c.lb == 1 && c.consistent == c.backend)
        .count();
    println!(
        "LB failover ({}): {} requests, {} ok, {} failed ({} resets); held across the removal: \
         {n0} on node 0 ({s0} survived), {n1} on node 1 ({s1} survived; for {agree} of them node 0's \
         consistent table names the backend they were on); outcome differs from the prediction for {}; \
         {} failed mid-handshake at the removal; {} failed mid-request at it; {} other failures; \
         {} held connections on a client port an earlier one had used through node 0 (its flow entry lingering)",
        report.label(),
        report.summary.requests,
        report.summary.ok,
        report.summary.failed,
        report.summary.resets,
        report.mispredicted(),
        report.handshake_failures,
        report.in_flight_failures,
        report.other_failures,
        report.held.iter().filter(|c| c.stale_on_0.is_some()).count()
    );
    for c in report.held.iter().filter(|c| c.lb == 1) {
        println!(
            "  sport {:>5}: node 1 → {} ; node 0's consistent table → {} ; predicted {} ; {}",
            c.sport,
            c.backend,
            c.consistent,
            if c.predicted_survives {
                "survives"
            } else {
                "breaks"
            },
            if c.survived { "survived" } else { "broke" }
        );
    }
    for c in report
        .held
        .iter()
        .filter(|c| c.predicted_survives != c.survived)
    {
        let others: Vec<&SynSeen> = syns
            .get(&c.sport)
            .into_iter()
            .flatten()
            .filter(|x| !c.syns.contains(x))
            .collect();
        println!(
            "  MISPREDICTED {c:?}; other connections' SYNs on the port: {others:?}; established \
             {:+.3} s from the route change, rest sent {:+.3} s after it",
            c.margins.0, c.margins.1
        );
    }
    for r in &other {
        println!("  OTHER FAILURE {r:?}");
    }
    Ok(report)
}
