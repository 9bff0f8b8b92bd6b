//! `cargo xtask bench core`: ns per packet of the marllb-core pipeline against a
//! peer pipeline doing the same work with well-known crates (etherparse for
//! parsing and header writing, std `HashMap` keyed by 5-tuple for the flow table,
//! rand_distr's `WeightedAliasIndex` for the choice), in the same run, on the same
//! generated traffic, interleaved round by round; medians are reported.
//!
//! Traffic: 64-byte TCP packets to one VIP with 16 backends (weights 1..4), 10 % of
//! packets open a new flow (SYN), 90 % belong to live flows (ACK); each new flow
//! replaces a random live one, which sends a FIN, so the number of concurrent
//! flows stays at N (64 K or 1 M). Both sides encapsulate in IP-in-IP (outer IPv4,
//! checksum), decrement the inner TTL, track TCP state with idle timeouts, and keep
//! per-backend counters and reservoir samples. Simulated time advances 100 ns per
//! packet (10 Mpps); frames are written into their buffers before each timed batch
//! of 256, like a NIC would.

// A benchmark/demo binary: `expect` is how it reports setup failures.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::*;
use marllb_core::classify::Verdict;
use marllb_core::flow::Timeouts;
use marllb_core::pipeline::{Packet, Worker, MAX_BATCH};
use marllb_core::rewrite::Encap;
use marllb_core::select::Method;
use marllb_core::service::Service;
use marllb_core::WEIGHT_ONE;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::weighted_alias::WeightedAliasIndex;
use rand_distr::Distribution;
use zerocopy::FromZeros;

#[global_allocator]
static ALLOC: HugePageAlloc = HugePageAlloc;

const NS_PER_PKT: u64 = 100;
const BACKENDS: usize = 16;

/// The traffic: (flow id, TCP flags) per packet, generated lazily and identically
/// for both sides from a seed.
struct Trace {
    rng: SmallRng,
    live: Vec<u32>,
    next_id: u32,
    pending_fin: Option<u32>,
}

impl Trace {
    fn new(n: usize, seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            live: (0..n as u32).collect(),
            next_id: n as u32,
            pending_fin: None,
        }
    }

    fn next(&mut self) -> (u32, u8) {
        if let Some(id) = self.pending_fin.take() {
            return (id, FIN | ACK);
        }
        if self.rng.gen_range(0..10) == 0 {
            let k = self.rng.gen_range(0..self.live.len());
            let old = std::mem::replace(&mut self.live[k], self.next_id);
            self.next_id += 1;
            self.pending_fin = Some(old);
            (self.live[k], SYN)
        } else {
            let k = self.rng.gen_range(0..self.live.len());
            (self.live[k], ACK)
        }
    }
}

trait Lb {
    fn batch(&mut self, now: u64, bufs: &mut [[u8; BUF]], lens: &[usize]) -> usize;
}

// ---------------------------------------------------------------- marllb-core

struct Core<const B: usize> {
    svc: Box<Service>,
    w: Box<Worker<B>>,
}

impl<const B: usize> Core<B> {
    fn new(weights: &[u32], established_ns: u64) -> Self {
        // Diagnostic switch: MARLLB_BENCH_ENCAP=dsr measures without tunnelling.
        let encap = match std::env::var("MARLLB_BENCH_ENCAP").as_deref() {
            Ok("dsr") => Encap::L2Dsr,
            _ => Encap::IpIp,
        };
        let mut svc = service(Method::Alias, encap, weights);
        svc.set_timeouts(&Timeouts {
            tcp_established_ns: established_ns,
            tcp_closing_ns: 1_000_000,
            ..Timeouts::default()
        })
        .expect("timeouts");
        let mut w = Worker::<B>::new_box_zeroed().expect("allocate the flow table");
        w.init(1);
        Self { svc, w }
    }
}

impl<const B: usize> Lb for Core<B> {
    fn batch(&mut self, now: u64, bufs: &mut [[u8; BUF]], lens: &[usize]) -> usize {
        let n = lens.len();
        let mut it = bufs.iter_mut().zip(lens);
        // A host hands the pipeline its mbufs as an array of packet views.
        let mut arr: [Packet<'_>; MAX_BATCH] = std::array::from_fn(|_| match it.next() {
            Some((b, &l)) => Packet::new(b, HEADROOM, l),
            None => Packet::new(&mut [], 0, 0),
        });
        let mut v = [Verdict::Host; MAX_BATCH];
        self.w.process(&self.svc, now, &mut arr[..n], &mut v);
        v[..n]
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { .. }))
            .count()
    }
}

// ------------------------------------------------------------------- the peer

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct PeerKey {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerState {
    SynSent,
    Established,
    Closing,
}

struct PeerEntry {
    backend: u16,
    state: PeerState,
    created: u64,
    last_seen: u64,
}

#[derive(Default, Clone)]
struct PeerBackend {
    packets: u64,
    bytes: u64,
    new_flows: u64,
    closed: u64,
    active: u32,
    last_packet: u64,
    duration: Vec<u32>,
    duration_seen: u32,
    interarrival: Vec<u32>,
    interarrival_seen: u32,
}

fn reservoir(v: &mut Vec<u32>, seen: &mut u32, x: u32, rng: &mut SmallRng) {
    *seen += 1;
    if v.len() < 128 {
        v.push(x);
    } else {
        let j = rng.gen_range(0..*seen) as usize;
        if j < 128 {
            v[j] = x;
        }
    }
}

struct Peer {
    flows: HashMap<PeerKey, PeerEntry>,
    alias: WeightedAliasIndex<u32>,
    rng: SmallRng,
    backends: Vec<PeerBackend>,
    addrs: Vec<[u8; 4]>,
    established_ns: u64,
}

impl Peer {
    fn new(weights: &[u32], flows: usize, established_ns: u64) -> Self {
        Self {
            flows: HashMap::with_capacity(flows * 2),
            alias: WeightedAliasIndex::new(weights.to_vec()).expect("weights"),
            rng: SmallRng::seed_from_u64(7),
            backends: vec![PeerBackend::default(); weights.len()],
            addrs: (0..weights.len())
                .map(|i| [198, 19, 0, 10 + i as u8])
                .collect(),
            established_ns,
        }
    }

    fn one(&mut self, now: u64, buf: &mut [u8; BUF], len: usize) -> bool {
        use etherparse::{
            EtherType, Ethernet2Header, IpNumber, Ipv4Header, NetSlice, SlicedPacket,
            TransportSlice,
        };
        let frame = &buf[HEADROOM..HEADROOM + len];
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            return false;
        };
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            return false;
        };
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            return false;
        };
        let h = ip.header();
        if h.destination() != VIP || tcp.destination_port() != 80 || h.ttl() <= 1 {
            return false;
        }
        let mut key = PeerKey {
            src: [0; 16],
            dst: [0; 16],
            sport: tcp.source_port(),
            dport: tcp.destination_port(),
            proto: 6,
        };
        key.src[..4].copy_from_slice(&h.source());
        key.dst[..4].copy_from_slice(&h.destination());
        let (syn, ack, fin, rst) = (tcp.syn(), tcp.ack(), tcp.fin(), tcp.rst());
        let ip_len = h.total_len();
        let timeout = |s: PeerState, est: u64| match s {
            PeerState::SynSent => 5_000_000_000,
            PeerState::Established => est,
            PeerState::Closing => 1_000_000,
        };
        let est = self.established_ns;
        let mut backend = None;
        if let Some(e) = self.flows.get_mut(&key) {
            if now - e.last_seen > timeout(e.state, est) {
                self.flows.remove(&key);
            } else {
                e.last_seen = now;
                if fin || rst {
                    e.state = PeerState::Closing;
                    let b = &mut self.backends[usize::from(e.backend)];
                    b.closed += 1;
                    b.active = b.active.saturating_sub(1);
                    let be = e.backend;
                    self.flows.remove(&key);
                    backend = Some((be, now));
                } else {
                    if e.state == PeerState::SynSent && ack && !syn {
                        e.state = PeerState::Established;
                    }
                    backend = Some((e.backend, e.created));
                }
            }
        }
        let (b, created) = match backend {
            Some(x) => x,
            None => {
                if !syn || ack {
                    return false;
                }
                let b = self.alias.sample(&mut self.rng) as u16;
                self.flows.insert(
                    key,
                    PeerEntry {
                        backend: b,
                        state: PeerState::SynSent,
                        created: now,
                        last_seen: now,
                    },
                );
                let pb = &mut self.backends[usize::from(b)];
                pb.new_flows += 1;
                pb.active += 1;
                (b, now)
            }
        };
        // Telemetry.
        let pb = &mut self.backends[usize::from(b)];
        pb.packets += 1;
        pb.bytes += u64::from(ip_len);
        reservoir(
            &mut pb.duration,
            &mut pb.duration_seen,
            ((now - created) / 1000) as u32,
            &mut self.rng,
        );
        if pb.last_packet != 0 {
            let ia = ((now - pb.last_packet) / 1000) as u32;
            reservoir(
                &mut pb.interarrival,
                &mut pb.interarrival_seen,
                ia,
                &mut self.rng,
            );
        }
        pb.last_packet = now;
        // Rewrite: decrement the inner TTL (header rebuilt by etherparse), then
        // prepend Ethernet + outer IPv4 (IP-in-IP) in the headroom.
        let mut inner = h.to_header();
        inner.time_to_live -= 1;
        inner.header_checksum = inner.calc_header_checksum();
        let l3 = HEADROOM + 14;
        let ihl = inner.header_len();
        inner
            .write(&mut &mut buf[l3..l3 + ihl])
            .expect("inner header fits");
        let outer = Ipv4Header::new(
            ip_len,
            64,
            IpNumber::IPV4,
            [198, 19, 0, 1],
            self.addrs[usize::from(b)],
        )
        .expect("outer header");
        let mut outer = outer;
        outer.dont_fragment = true;
        outer.header_checksum = outer.calc_header_checksum();
        let start = l3 - 20 - 14;
        let eth = Ethernet2Header {
            source: LB_MAC,
            destination: [2, 0, 0, 0, 1, b as u8],
            ether_type: EtherType::IPV4,
        };
        buf[start..start + 14].copy_from_slice(&eth.to_bytes());
        buf[start + 14..start + 34].copy_from_slice(&outer.to_bytes());
        true
    }
}

impl Lb for Peer {
    fn batch(&mut self, now: u64, bufs: &mut [[u8; BUF]], lens: &[usize]) -> usize {
        let mut fwd = 0;
        for (k, (b, &l)) in bufs.iter_mut().zip(lens).enumerate() {
            fwd += usize::from(self.one(now + k as u64 * NS_PER_PKT, b, l));
        }
        fwd
    }
}

// ------------------------------------------------------------------ harness

/// Runs `packets` packets of `trace` through `lb`; returns (ns per packet, forwarded).
fn round(
    lb: &mut dyn Lb,
    trace: &mut Trace,
    clock: &mut u64,
    packets: usize,
    bufs: &mut [[u8; BUF]],
) -> (f64, usize) {
    let mut lens = [0usize; MAX_BATCH];
    let mut elapsed = 0u128;
    let mut fwd = 0;
    let mut done = 0;
    while done < packets {
        let n = (packets - done).min(MAX_BATCH);
        for k in 0..n {
            let (id, flags) = trace.next();
            lens[k] = tcp_frame(&mut bufs[k], id, 80, flags, 64);
        }
        let t = Instant::now();
        fwd += lb.batch(*clock, &mut bufs[..n], &lens[..n]);
        elapsed += t.elapsed().as_nanos();
        *clock += n as u64 * NS_PER_PKT;
        done += n;
    }
    (elapsed as f64 / packets as f64, fwd)
}

fn warm(lb: &mut dyn Lb, n: usize, clock: &mut u64, bufs: &mut [[u8; BUF]]) {
    let mut lens = [0usize; MAX_BATCH];
    for flags in [SYN, ACK] {
        let mut id = 0;
        while id < n {
            let m = (n - id).min(MAX_BATCH);
            for k in 0..m {
                lens[k] = tcp_frame(&mut bufs[k], (id + k) as u32, 80, flags, 64);
            }
            lb.batch(*clock, &mut bufs[..m], &lens[..m]);
            *clock += m as u64 * NS_PER_PKT;
            id += m;
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn workload<const B: usize>(n: usize, rounds: usize, per_round: usize) -> (f64, f64) {
    let weights: Vec<u32> = (0..BACKENDS)
        .map(|i| (1 + (i as u32 % 4)) * WEIGHT_ONE)
        .collect();
    // Idle flows (replaced ones) must expire at about the rate new ones arrive so
    // that the table holds ~N live flows plus at most ~N idle ones.
    let established_ns = n as u64 * 10 * NS_PER_PKT;
    let mut core = Core::<B>::new(&weights, established_ns);
    let mut peer = Peer::new(&weights, n, established_ns);
    let mut bufs = vec![[0u8; BUF]; MAX_BATCH];
    let (mut tc, mut tp) = (Trace::new(n, 42), Trace::new(n, 42));
    let (mut cc, mut cp) = (1_000_000_000u64, 1_000_000_000u64);
    warm(&mut core, n, &mut cc, &mut bufs);
    warm(&mut peer, n, &mut cp, &mut bufs);
    let (mut rc, mut rp) = (vec![], vec![]);
    for r in 0..rounds {
        let (c, fc) = round(&mut core, &mut tc, &mut cc, per_round, &mut bufs);
        let (p, fp) = round(&mut peer, &mut tp, &mut cp, per_round, &mut bufs);
        println!(
            "  flows={n:>8} round {r}: marllb-core {c:>7.2} ns/pkt ({fc} fwd)   peer {p:>7.2} ns/pkt ({fp} fwd)"
        );
        rc.push(c);
        rp.push(p);
    }
    let g = &core.w.telemetry.global;
    println!(
        "  flows={n:>8} core: occupied {} of {}, inserted {} untracked {} maglev_fallback {} expired {} dropped {}; peer table {} entries",
        core.w.flows.occupied(),
        B * 4,
        g.flows_inserted,
        g.flows_untracked,
        g.maglev_fallback,
        g.flows_expired,
        g.dropped,
        peer.flows.len()
    );
    (median(&mut rc), median(&mut rp))
}

/// The process call that `cargo xtask bench core --callgrind` counts: callgrind
/// runs with `--collect-atstart=no --toggle-collect=*callgrind_measured*`, so
/// only instructions executed inside this function (and what it calls) are
/// counted. Setup, table zeroing, warm-up (which calls `Worker::process`
/// directly, not through here) and frame generation run outside it.
#[inline(never)]
fn callgrind_measured<const B: usize>(
    core: &mut Core<B>,
    now: u64,
    pkts: &mut [Packet<'_>],
    v: &mut [Verdict],
) {
    core.w.process(&core.svc, now, pkts, v);
}

/// `--callgrind-run <mix64k|mix1m|fast64k> [--packets P]`: warms the table like
/// the timed benchmark, then runs `P` packets (default 200 000) of the mix (or,
/// for `fast64k`, ACKs on live flows only: the fast path) through
/// [`callgrind_measured`]; prints `packets=P forwarded=F`. Meant to run under
/// callgrind; it is also a plain run without it.
fn callgrind_run(which: &str, packets: usize) {
    match which {
        "mix64k" => callgrind_workload::<{ 1 << 15 }>(1 << 16, packets, false),
        "mix1m" => callgrind_workload::<{ 1 << 19 }>(1 << 20, packets, false),
        "fast64k" => callgrind_workload::<{ 1 << 15 }>(1 << 16, packets, true),
        other => panic!("--callgrind-run: unknown workload {other}"),
    }
}

fn callgrind_workload<const B: usize>(n: usize, packets: usize, acks_only: bool) {
    let weights: Vec<u32> = (0..BACKENDS)
        .map(|i| (1 + (i as u32 % 4)) * WEIGHT_ONE)
        .collect();
    let established_ns = n as u64 * 10 * NS_PER_PKT;
    let mut core = Core::<B>::new(&weights, established_ns);
    let mut bufs = vec![[0u8; BUF]; MAX_BATCH];
    let mut trace = Trace::new(n, 42);
    let mut clock = 1_000_000_000u64;
    warm(&mut core, n, &mut clock, &mut bufs);
    let mut lens = [0usize; MAX_BATCH];
    let (mut done, mut fwd) = (0, 0);
    while done < packets {
        let m = (packets - done).min(MAX_BATCH);
        for (k, len) in lens.iter_mut().enumerate().take(m) {
            let (id, flags) = if acks_only {
                // A live flow, sent an ACK: a flow-table hit forwarded with encap.
                let k = trace.rng.gen_range(0..trace.live.len());
                (trace.live[k], ACK)
            } else {
                trace.next()
            };
            *len = tcp_frame(&mut bufs[k], id, 80, flags, 64);
        }
        let mut it = bufs.iter_mut().zip(&lens[..m]);
        let mut arr: [Packet<'_>; MAX_BATCH] = std::array::from_fn(|_| match it.next() {
            Some((b, &l)) => Packet::new(b, HEADROOM, l),
            None => Packet::new(&mut [], 0, 0),
        });
        let mut v = [Verdict::Host; MAX_BATCH];
        callgrind_measured(&mut core, clock, &mut arr[..m], &mut v[..m]);
        fwd += v[..m]
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { .. }))
            .count();
        clock += m as u64 * NS_PER_PKT;
        done += m;
    }
    println!("packets={packets} forwarded={fwd}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind-run") {
        let which = args.get(i + 1).expect("--callgrind-run needs a workload");
        let packets = args
            .iter()
            .position(|a| a == "--packets")
            .and_then(|j| args.get(j + 1))
            .map_or(200_000, |p| p.parse().expect("--packets N"));
        callgrind_run(which, packets);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (3, 200_000) } else { (7, 2_000_000) };
    println!(
        "bench core: 64-byte TCP, 10% new flows, {BACKENDS} backends, IP-in-IP + telemetry; {rounds} interleaved rounds of {per_round} packets, medians"
    );
    if std::env::args().any(|a| a == "--stages") {
        stages();
        return;
    }
    if std::env::args().any(|a| a == "--only-64k") {
        let (c, p) = workload::<{ 1 << 16 }>(1 << 16, rounds, per_round);
        println!("RESULT core_ns_64k={c:.2} peer_ns_64k={p:.2}");
        return;
    }
    if std::env::args().any(|a| a == "--small") {
        // Diagnostic: a table that fits in L2, to separate compute from memory.
        let (c, p) = workload::<{ 1 << 12 }>(1 << 12, rounds, per_round);
        println!("RESULT core_ns_4k={c:.2} peer_ns_4k={p:.2}");
        return;
    }
    let (c64, p64) = workload::<{ 1 << 15 }>(1 << 16, rounds, per_round);
    let (c1m, p1m) = workload::<{ 1 << 19 }>(1 << 20, rounds, per_round);
    println!(
        "RESULT core_ns_64k={c64:.2} core_ns_1m={c1m:.2} peer_ns_64k={p64:.2} peer_ns_1m={p1m:.2} speedup_64k={:.2} speedup_1m={:.2}",
        p64 / c64,
        p1m / c1m
    );
}

/// Diagnostic: ns per packet of the pipeline's stages in isolation, on 4096
/// cached frames (the cost of each stage without memory effects).
fn stages() {
    use marllb_core::classify::match_vip;
    use marllb_core::flow::FlowKey;
    use marllb_core::hash::flow_hash;
    use marllb_core::wire::parse::parse_frame;
    use marllb_core::wire::Frame;
    let n = 4096;
    let mut bufs = vec![[0u8; BUF]; n];
    let mut lens = vec![0usize; n];
    for (i, b) in bufs.iter_mut().enumerate() {
        lens[i] = tcp_frame(b, i as u32, 80, ACK, 64);
    }
    let svc = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 16]);
    let reps = 500;
    let time = |name: &str, f: &mut dyn FnMut() -> u64| {
        let t = Instant::now();
        let mut acc = 0u64;
        for _ in 0..reps {
            acc = acc.wrapping_add(f());
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        println!("  {name:<28} {ns:6.2} ns/pkt  ({acc})");
    };
    time("parse_frame", &mut || {
        let mut a = 0u64;
        for (b, &l) in bufs.iter().zip(&lens) {
            if let Ok(Frame::Ip(m)) = parse_frame(&b[HEADROOM..HEADROOM + l]) {
                a += u64::from(m.sport);
            }
        }
        a
    });
    time("parse+key+hash", &mut || {
        let mut a = 0u64;
        for (b, &l) in bufs.iter().zip(&lens) {
            if let Ok(Frame::Ip(m)) = parse_frame(&b[HEADROOM..HEADROOM + l]) {
                a ^= flow_hash(&FlowKey::from_meta(&m), 1);
            }
        }
        a
    });
    time("parse+match_vip", &mut || {
        let mut a = 0u64;
        for (b, &l) in bufs.iter().zip(&lens) {
            if let Ok(Frame::Ip(m)) = parse_frame(&b[HEADROOM..HEADROOM + l]) {
                a += matches!(
                    match_vip(svc.vip_list(), &m),
                    marllb_core::classify::VipMatch::Vip(_)
                ) as u64;
            }
        }
        a
    });
    let mut w = Worker::<{ 1 << 12 }>::new_box_zeroed().expect("alloc");
    w.init(1);
    let mut now = 1_000_000_000u64;
    let dsr = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 16]);
    time("full pipeline (ACK, DSR)", &mut || {
        let mut f = 0u64;
        for chunk in 0..n / MAX_BATCH {
            let base = chunk * MAX_BATCH;
            let (bb, ll) = (
                &mut bufs[base..base + MAX_BATCH],
                &lens[base..base + MAX_BATCH],
            );
            let mut it = bb.iter_mut().zip(ll);
            let mut arr: [Packet<'_>; MAX_BATCH] = std::array::from_fn(|_| {
                let (b, &l) = it.next().expect("len");
                Packet::new(b, HEADROOM, l)
            });
            let mut v = [Verdict::Host; MAX_BATCH];
            w.process(&dsr, now, &mut arr, &mut v);
            now += 25_600;
            f += v
                .iter()
                .filter(|v| matches!(v, Verdict::Forward { .. }))
                .count() as u64;
        }
        // Undo the TTL decrement so frames stay valid across repetitions.
        for (b, &l) in bufs.iter_mut().zip(&lens) {
            let _ = l;
            b[HEADROOM + 22] = 64;
        }
        f
    });
}
