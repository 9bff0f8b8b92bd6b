//! The core demo (`cargo xtask demo`): runs marllb-core over a generated traffic
//! trace and prints what it did: new flows per backend against the weights, that a
//! weight change moves no existing flow, and drops by reason.
//!
//! Until the DPDK host exists this is the main job; it exercises exactly the code
//! the data plane runs (parse, classify, flow table, alias selection, IP-in-IP
//! rewrite, telemetry).

// A benchmark/demo binary: `expect` is how it reports setup failures.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;
use marllb_core::classify::{DropReason, Verdict};
use marllb_core::pipeline::{Packet, Worker, MAX_BATCH};
use marllb_core::rewrite::Encap;
use marllb_core::select::Method;
use marllb_core::service::AdminState;
use marllb_core::telemetry::mean_p90;
use marllb_core::WEIGHT_ONE;
use zerocopy::FromZeros;

const MS: u64 = 1_000_000;

struct Run {
    worker: Box<Worker<{ 1 << 18 }>>,
    bufs: Vec<[u8; BUF]>,
    now: u64,
}

impl Run {
    /// Sends `frames` (flow id, dport, flags, ttl) through the pipeline in batches;
    /// returns the verdict of each.
    fn send(
        &mut self,
        svc: &marllb_core::service::Service,
        frames: &[(u32, u16, u8, u8)],
    ) -> Vec<Verdict> {
        let mut out = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(MAX_BATCH) {
            let mut lens = [0usize; MAX_BATCH];
            for (k, &(id, dport, flags, ttl)) in chunk.iter().enumerate() {
                lens[k] = tcp_frame(&mut self.bufs[k], id, dport, flags, ttl);
            }
            let mut pkts: Vec<Packet<'_>> = self
                .bufs
                .iter_mut()
                .zip(lens.iter())
                .take(chunk.len())
                .map(|(b, &l)| Packet::new(b, HEADROOM, l))
                .collect();
            let mut v = [Verdict::Host; MAX_BATCH];
            self.worker.process(svc, self.now, &mut pkts, &mut v);
            out.extend_from_slice(&v[..chunk.len()]);
            self.now += MS;
        }
        out
    }
}

fn backend_of(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Forward { backend } => Some(*backend),
        _ => None,
    }
}

fn main() {
    let flows: u32 = std::env::args()
        .skip_while(|a| a != "--flows")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let weights: Vec<u32> = [1, 1, 2, 2, 3, 3, 4, 4]
        .iter()
        .map(|w| w * WEIGHT_ONE)
        .collect();
    let mut svc = service(Method::Alias, Encap::IpIp, &weights);
    let mut run = Run {
        worker: Worker::new_box_zeroed().expect("allocate the worker"),
        bufs: vec![[0u8; BUF]; MAX_BATCH],
        now: 1_000 * MS,
    };
    run.worker.init(1);

    println!("MARLLB core demo");
    println!("  VIP 198.18.255.1:80/tcp, 8 backends 198.19.0.10-17, alias method, IP-in-IP");
    println!(
        "  flow table: {} entries in 4-way buckets",
        (1usize << 18) * 4
    );

    // Phase 1: `flows` new connections (SYN, then ACK), weights 1:1:2:2:3:3:4:4.
    let mut frames: Vec<(u32, u16, u8, u8)> = Vec::new();
    for id in 0..flows {
        frames.push((id, 80, SYN, 64));
    }
    let syn_v = run.send(&svc, &frames);
    let placed: Vec<Option<u16>> = syn_v.iter().map(backend_of).collect();
    let acks: Vec<_> = (0..flows).map(|id| (id, 80, ACK, 64)).collect();
    let ack_v = run.send(&svc, &acks);
    let moved_ack = ack_v
        .iter()
        .zip(&placed)
        .filter(|(v, p)| backend_of(v) != **p)
        .count();

    print_shares("phase 1: weights 1:1:2:2:3:3:4:4", &weights, &placed);
    println!("  ACKs that went to a different backend than their SYN: {moved_ack}");

    // Phase 2: the controller reverses the weights and drains backend 7.
    let w2: Vec<u32> = [4, 4, 3, 3, 2, 2, 1, 0]
        .iter()
        .map(|w| w * WEIGHT_ONE)
        .collect();
    svc.set_weights(&w2);
    let again = run.send(&svc, &acks);
    let moved = again
        .iter()
        .zip(&placed)
        .filter(|(v, p)| backend_of(v) != **p)
        .count();
    let new: Vec<_> = (flows..2 * flows).map(|id| (id, 80, SYN, 64)).collect();
    let new_v: Vec<Option<u16>> = run.send(&svc, &new).iter().map(backend_of).collect();
    print_shares(
        "phase 2: weights 4:4:3:3:2:2:1:0 (backend 7 drained)",
        &w2,
        &new_v,
    );
    println!("  existing flows moved by the weight change: {moved} of {flows} (expected 0)");
    let on7 = placed.iter().filter(|p| **p == Some(7)).count();
    let on7_after = again
        .iter()
        .zip(&placed)
        .filter(|(v, p)| **p == Some(7) && backend_of(v) == Some(7))
        .count();
    println!("  backend 7 (drained): {on7} existing flows still served there: {on7_after}");

    // Phase 3: backend 3 fails (admin down): its flows are re-placed.
    svc.set_admin(3, AdminState::Down)
        .expect("backend 3 exists");
    let after_down = run.send(&svc, &acks);
    let on3 = after_down
        .iter()
        .filter(|v| backend_of(v) == Some(3))
        .count();
    println!(
        "\nphase 3: backend 3 down: packets still sent to it: {on3}; flows re-placed: {}",
        run.worker.telemetry.global.flows_rescheduled
    );

    // Phase 4: bad traffic.
    let mut bad = Vec::new();
    for id in 0..1000 {
        bad.push((id, 81, SYN, 64)); // VIP address, no VIP on port 81
        bad.push((id, 80, SYN, 1)); // TTL expires here
    }
    run.send(&svc, &bad);
    // Truncated frames.
    for k in 0..500u32 {
        let mut b = [0u8; BUF];
        let len = tcp_frame(&mut b, k, 80, SYN, 64);
        let mut p = Packet::new(&mut b, HEADROOM, 14 + (k as usize % (len - 40)));
        run.worker.process_one(&svc, run.now, &mut p);
    }
    run.worker.sweep(&svc, run.now, 1 << 18);

    let t = &run.worker.telemetry;
    println!("\ndrops by reason:");
    for r in DropReason::ALL {
        let n = t.drops[r as usize];
        if n > 0 {
            println!("  {:<20} {n}", r.name());
        }
    }
    let g = &t.global;
    println!(
        "\ntotals: rx {} forwarded {} to_host {} dropped {} inserted {} untracked {} maglev_fallback {}",
        g.rx_packets, g.forwarded, g.to_host, g.dropped, g.flows_inserted, g.flows_untracked, g.maglev_fallback
    );
    println!("\nper-backend telemetry (this window):");
    println!(
        "  backend  packets  new_flows  active  flow_duration_mean/p90_us  handshake_mean/p90_us"
    );
    for b in 0..8 {
        let c = t.backends[b];
        let s = &t.samples[b];
        let fd = mean_p90(&s.flow_duration).unwrap_or((0, 0));
        let hs = mean_p90(&s.handshake).unwrap_or((0, 0));
        println!(
            "  {b:>7}  {:>7}  {:>9}  {:>6}  {:>12}/{:<12}  {:>10}/{:<10}",
            c.packets, c.new_flows, c.active_flows, fd.0, fd.1, hs.0, hs.1
        );
    }
    let ok = moved == 0 && moved_ack == 0 && on3 == 0 && on7_after == on7;
    println!("\n{}", if ok { "demo: OK" } else { "demo: FAILED" });
    if !ok {
        std::process::exit(1);
    }
}

fn print_shares(title: &str, weights: &[u32], placed: &[Option<u16>]) {
    let total_w: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let mut counts = vec![0u64; weights.len()];
    for b in placed.iter().flatten() {
        counts[usize::from(*b)] += 1;
    }
    let n: u64 = counts.iter().sum();
    let mut chi2 = 0.0;
    println!("\n{title}");
    println!("  backend  weight  expected%  actual%   flows");
    for (i, (w, c)) in weights.iter().zip(&counts).enumerate() {
        let e = *w as f64 / total_w as f64;
        let a = *c as f64 / n.max(1) as f64;
        if e > 0.0 {
            let exp = e * n as f64;
            chi2 += (*c as f64 - exp).powi(2) / exp;
        }
        println!(
            "  {i:>7}  {:>6.2}  {:>8.2}%  {:>6.2}%  {c:>6}",
            *w as f64 / WEIGHT_ONE as f64,
            e * 100.0,
            a * 100.0
        );
    }
    println!(
        "  chi-square = {chi2:.2} over {} backends with weight > 0",
        weights.iter().filter(|w| **w > 0).count()
    );
}
