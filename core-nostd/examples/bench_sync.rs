//! `cargo xtask bench sync`: what flow-state sync costs per new connection,
//! against the peer in the same run: the pipeline's own cost of a new
//! connection without sync (its SYN and its handshake ACK through
//! `Worker::process`). Measured, interleaved round by round, medians
//! reported:
//!
//! * `new_flow_ns`: SYN + ACK of a new connection, sync off (the peer);
//! * `sender_ns`: the same with sync on, plus draining the worker's records
//!   and encoding them into datagrams (what the sending node adds);
//! * `receiver_ns`: decoding a peer's datagrams and applying their records
//!   to a worker's table (what every receiving node pays per connection);
//! * `bytes_per_flow`: wire bytes per connection per peer (records, datagram
//!   header and UDP/IPv4 headers amortised over full datagrams);
//! * `max_flows_per_s`: new connections per second one core keeps up with
//!   on the receiving side (1 s / `receiver_ns`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::*;
use marllb_core::pipeline::{Packet, Worker};
use marllb_core::rewrite::Encap;
use marllb_core::select::Method;
use marllb_core::sync::{decode, encode, SyncRecord, HEADER_LEN, MAX_RECORDS, RECORD_LEN};
use marllb_core::WEIGHT_ONE;
use zerocopy::FromZeros;

type W = Worker<{ 1 << 16 }>;
const N: u32 = 4096;
const ROUNDS: usize = 21;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// SYN + ACK of connections `base..base + N`; returns ns per connection and
/// the records made (drained after each batch of 64, as a host would).
fn connections(
    w: &mut W,
    svc: &marllb_core::service::Service,
    base: u32,
    now: u64,
) -> (f64, Vec<SyncRecord>) {
    let mut bufs = vec![[0u8; BUF]; 2];
    let mut recs = Vec::new();
    let t = Instant::now();
    for id in base..base + N {
        for (k, flags) in [SYN, ACK].into_iter().enumerate() {
            let len = tcp_frame(&mut bufs[k], id, 80, flags, 64);
            let mut p = Packet::new(&mut bufs[k], HEADROOM, len);
            std::hint::black_box(w.process_one(svc, now, &mut p));
        }
        if w.sync.enabled && id % 64 == 63 {
            recs.extend_from_slice(w.sync.pending());
            w.sync.clear();
        }
    }
    if w.sync.enabled {
        recs.extend_from_slice(w.sync.pending());
        w.sync.clear();
    }
    (t.elapsed().as_nanos() as f64 / f64::from(N), recs)
}

fn main() {
    let weights: Vec<u32> = (0..16).map(|i| WEIGHT_ONE * (1 + i % 4)).collect();
    let svc = service(Method::Sed, Encap::IpIp, &weights);
    let (mut peer, mut sender, mut receiver) = (
        W::new_box_zeroed().unwrap(),
        W::new_box_zeroed().unwrap(),
        W::new_box_zeroed().unwrap(),
    );
    peer.init(1);
    sender.init(2);
    receiver.init(3);
    sender.sync.enabled = true;
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut wire_bytes = 0usize;
    let mut records = 0usize;
    for round in 0..ROUNDS {
        let base = round as u32 * N;
        let now = (round as u64 + 1) * 1_000_000_000;
        let (ns, _) = connections(&mut peer, &svc, base, now);
        a.push(ns);
        let t = Instant::now();
        let (_, recs) = connections(&mut sender, &svc, base, now);
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        let mut rest = &recs[..];
        while !rest.is_empty() {
            let mut buf = [0u8; 1500];
            let (len, n) = encode(rest, svc.hash_seed, 1, &mut buf);
            rest = &rest[n..];
            datagrams.push(buf[..len].to_vec());
        }
        b.push(t.elapsed().as_nanos() as f64 / f64::from(N));
        // A connection whose bucket was full is placed by the consistent
        // table without state, the same on every node: it needs no record.
        assert!(
            recs.len() * 100 >= N as usize * 99,
            "{} records",
            recs.len()
        );
        wire_bytes += datagrams.iter().map(|d| d.len() + 28).sum::<usize>();
        records += recs.len();
        let t = Instant::now();
        let mut out = [SyncRecord::default(); MAX_RECORDS];
        let mut inserted = 0;
        for d in &datagrams {
            let n = decode(d, svc.hash_seed, &mut out).unwrap().records;
            inserted += receiver.apply_sync(&svc, now, &out[..n]).inserted;
        }
        c.push(t.elapsed().as_nanos() as f64 / f64::from(N));
        assert_eq!(inserted as usize, recs.len(), "every record applied");
        // The same conditions every round: fresh tables.
        peer.flows.clear();
        sender.flows.clear();
        receiver.flows.clear();
    }
    let (peer_ns, sender_ns, receiver_ns) = (median(&mut a), median(&mut b), median(&mut c));
    let bytes = wire_bytes as f64 / records as f64;
    println!(
        "new connection (SYN+ACK) without sync {peer_ns:.1} ns; with sync and encoding {sender_ns:.1} ns; \
         decode+apply on a peer {receiver_ns:.1} ns; {bytes:.1} bytes per connection per peer \
         ({RECORD_LEN}-byte records, {HEADER_LEN}-byte header, {MAX_RECORDS} per datagram)"
    );
    println!(
        "RESULT new_flow_ns={peer_ns:.1} sender_ns={sender_ns:.1} sender_ratio={:.3} receiver_ns={receiver_ns:.1} receiver_ratio={:.3} bytes_per_flow={bytes:.1} max_flows_per_s={:.0}",
        sender_ns / peer_ns,
        receiver_ns / peer_ns,
        1e9 / receiver_ns
    );
}
