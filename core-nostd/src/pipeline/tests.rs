use super::*;
use crate::classify::{Vip, VipProto};
use crate::rewrite::{Egress, Encap};
use crate::service::Backend;
use crate::wire::parse::parse_frame;
use crate::wire::Frame;
use crate::WEIGHT_ONE;
use etherparse::PacketBuilder;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

const HEADROOM: usize = 128;
const VIP: [u8; 4] = [198, 18, 255, 1];
const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const SEC: u64 = 1_000_000_000;

type W = Worker<16384>;

fn worker() -> Box<W> {
    let mut w = W::new_box_zeroed().expect("alloc");
    w.init(1);
    w
}

fn backend(i: u8, weight: u32) -> Backend {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[198, 19, 0, 10 + i]);
    Backend {
        family: IpFamily::V4,
        admin: AdminState::Active,
        mac: [2, 0, 0, 0, 1, i],
        addr,
        weight,
        base_weight: WEIGHT_ONE,
    }
}

fn service(method: Method, encap: Encap, weights: &[u32]) -> Box<Service> {
    let mut s = Service::new_box_zeroed().expect("alloc");
    s.hash_seed = 0x1234;
    s.set_egress(Egress {
        src_mac: LB_MAC,
        src_v4: [198, 19, 0, 1],
        src_v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu: 1500,
    });
    let bs: Vec<Backend> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| backend(i as u8, *w))
        .collect();
    s.set_backends(&bs).expect("backends");
    let members: Vec<u16> = (0..weights.len() as u16).collect();
    s.add_vip(Vip::v4(VIP, VipProto::Tcp, 80), method, encap, &members)
        .expect("vip");
    s.add_vip(Vip::v4(VIP, VipProto::Udp, 53), method, encap, &members)
        .expect("vip");
    s
}

/// A TCP frame from client `c` (198.18.x.y) port `sport` to the VIP, in a
/// buffer with headroom.
fn tcp(c: u32, sport: u16, flags: u8) -> Vec<u8> {
    tcp_to(c, sport, VIP, 80, flags, 64)
}

fn tcp_to(c: u32, sport: u16, dst: [u8; 4], dport: u16, flags: u8, ttl: u8) -> Vec<u8> {
    let src = (0xc612_0000u32 | (c & 0xffff)).to_be_bytes();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], LB_MAC)
        .ipv4(src, dst, ttl)
        .tcp(sport, dport, 1000, 65535);
    let b = if flags & 0x02 != 0 { b.syn() } else { b };
    let b = if flags & 0x10 != 0 { b.ack(1) } else { b };
    let b = if flags & 0x01 != 0 { b.fin() } else { b };
    let b = if flags & 0x04 != 0 { b.rst() } else { b };
    let payload = [0u8; 6];
    let mut out = vec![0u8; HEADROOM];
    b.write(&mut out, &payload).expect("build");
    out
}

fn udp(c: u32, sport: u16) -> Vec<u8> {
    let src = (0xc612_0000u32 | (c & 0xffff)).to_be_bytes();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], LB_MAC)
        .ipv4(src, VIP, 64)
        .udp(sport, 53);
    let mut out = vec![0u8; HEADROOM];
    b.write(&mut out, &[1, 2, 3, 4]).expect("build");
    out
}

fn run(w: &mut W, s: &Service, now: u64, mut frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    let len = frame.len() - HEADROOM;
    frame.extend_from_slice(&[0u8; 64]);
    let mut p = Packet::new(&mut frame, HEADROOM, len);
    let v = w.process_one(s, now, &mut p);
    let out = p.frame().to_vec();
    (v, out)
}

fn fwd(v: Verdict) -> u16 {
    match v {
        Verdict::Forward { backend } => backend,
        other => panic!("expected forward, got {other:?}"),
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

#[test]
fn tcp_lifecycle_follows_the_flow_and_counts() {
    let s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 4]);
    let mut w = worker();
    let (v, out) = run(&mut w, &s, SEC, tcp(1, 40000, SYN));
    let b = fwd(v);
    // IPIP: outer IPv4 to the backend, protocol 4.
    assert_eq!(&out[0..6], &[2, 0, 0, 0, 1, b as u8]);
    assert_eq!(out[14 + 9], 4);
    assert_eq!(&out[14 + 16..14 + 20], &[198, 19, 0, 10 + b as u8]);
    let c = w.telemetry.backends[usize::from(b)];
    assert_eq!((c.new_flows, c.active_flows, c.half_open), (1, 1, 1));
    for f in [ACK, ACK, ACK | FIN, ACK] {
        assert_eq!(fwd(run(&mut w, &s, 2 * SEC, tcp(1, 40000, f)).0), b);
    }
    let c = w.telemetry.backends[usize::from(b)];
    assert_eq!(
        (c.active_flows, c.half_open, c.closed_flows, c.packets),
        (0, 0, 1, 5)
    );
    assert_eq!(w.telemetry.samples[usize::from(b)].fct.len, 1);
    assert_eq!(w.telemetry.samples[usize::from(b)].handshake.len, 1);
    assert_eq!(w.telemetry.global.flows_inserted, 1);
}

#[test]
fn new_flows_follow_weights_and_weight_changes_move_no_flow() {
    let weights = [WEIGHT_ONE, 2 * WEIGHT_ONE, 3 * WEIGHT_ONE, 4 * WEIGHT_ONE];
    let mut s = service(Method::Alias, Encap::L2Dsr, &weights);
    let mut w = worker();
    let n = 20_000u32;
    let mut placed = vec![0u16; n as usize];
    let mut counts = [0u32; 4];
    for i in 0..n {
        let b = fwd(run(&mut w, &s, SEC, tcp(i, 1000 + (i >> 16) as u16, SYN)).0);
        placed[i as usize] = b;
        counts[usize::from(b)] += 1;
    }
    // Flows untracked because the 4096-entry table filled still follow Maglev;
    // check only proportions of the tracked ones loosely, the strict chi-square
    // tests are in select/.
    for (k, c) in counts.iter().enumerate() {
        let expect = f64::from(n) * (k as f64 + 1.0) / 10.0;
        assert!((f64::from(*c) - expect).abs() < expect * 0.25, "{counts:?}");
    }
    // Reverse the weights: every existing tracked flow stays where it was.
    s.set_weights(&[4 * WEIGHT_ONE, 3 * WEIGHT_ONE, 2 * WEIGHT_ONE, 0]);
    for i in 0..n {
        let b = fwd(run(&mut w, &s, 2 * SEC, tcp(i, 1000 + (i >> 16) as u16, ACK)).0);
        assert_eq!(b, placed[i as usize], "flow {i} moved");
    }
}

#[test]
fn drained_backend_gets_no_new_flows_but_keeps_old_ones() {
    let mut s = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 3]);
    let mut w = worker();
    let mut on_zero = vec![];
    for i in 0..300 {
        if fwd(run(&mut w, &s, SEC, tcp(i, 2000, SYN)).0) == 0 {
            on_zero.push(i);
        }
    }
    assert!(!on_zero.is_empty());
    s.set_weights(&[0, WEIGHT_ONE, WEIGHT_ONE]);
    for i in 300..1300 {
        assert_ne!(fwd(run(&mut w, &s, SEC, tcp(i, 2000, SYN)).0), 0);
    }
    for &i in &on_zero {
        assert_eq!(fwd(run(&mut w, &s, SEC, tcp(i, 2000, ACK)).0), 0);
    }
    // Same through the admin state.
    s.set_weights(&[WEIGHT_ONE; 3]);
    s.set_admin(0, AdminState::Draining).expect("admin");
    for i in 2000..2500 {
        assert_ne!(fwd(run(&mut w, &s, SEC, tcp(i, 2000, SYN)).0), 0);
    }
    for &i in &on_zero {
        assert_eq!(fwd(run(&mut w, &s, SEC, tcp(i, 2000, ACK)).0), 0);
    }
}

#[test]
fn down_backend_flows_are_replaced() {
    let mut s = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 2]);
    let mut w = worker();
    let mut on_one = None;
    for i in 0..100 {
        if fwd(run(&mut w, &s, SEC, tcp(i, 2000, SYN)).0) == 1 {
            on_one = Some(i);
            break;
        }
    }
    let i = on_one.expect("some flow on backend 1");
    s.set_admin(1, AdminState::Down).expect("admin");
    assert_eq!(fwd(run(&mut w, &s, SEC, tcp(i, 2000, ACK)).0), 0);
    assert_eq!(w.telemetry.global.flows_rescheduled, 1);
    assert_eq!(fwd(run(&mut w, &s, SEC, tcp(i, 2000, ACK)).0), 0);
}

#[test]
fn retransmitted_syn_lands_on_the_same_backend_without_state() {
    let s = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 8]);
    for i in 0..200 {
        let mut a = worker();
        let mut b = worker();
        let x = fwd(run(&mut a, &s, SEC, tcp(i, 3000, SYN)).0);
        assert_eq!(fwd(run(&mut a, &s, SEC + 1000, tcp(i, 3000, SYN)).0), x);
        assert_eq!(fwd(run(&mut b, &s, 5 * SEC, tcp(i, 3000, SYN)).0), x);
    }
}

#[test]
fn mid_flow_packets_without_state_use_the_consistent_table() {
    // Two LB nodes with different dynamic weights agree on unknown connections.
    let s1 = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 5]);
    let mut s2 = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 5]);
    s2.set_weights(&[WEIGHT_ONE, 0, 5 * WEIGHT_ONE, 1, 2]);
    let mut a = worker();
    let mut b = worker();
    for i in 0..500 {
        let x = fwd(run(&mut a, &s1, SEC, tcp(i, 4000, ACK)).0);
        let y = fwd(run(&mut b, &s2, SEC, tcp(i, 4000, ACK)).0);
        assert_eq!(x, y);
        assert_eq!(
            Some(x),
            s1.vip(0).and_then(|v| v.consistent(flow_hash(
                &FlowKey::from_meta(&meta_of(&tcp(i, 4000, ACK))),
                s1.hash_seed
            )))
        );
    }
    assert_eq!(a.telemetry.global.maglev_fallback, 500);
    // Now tracked: a later weight change cannot move them.
    assert_eq!(a.telemetry.global.flows_inserted, 500);
}

fn meta_of(frame: &[u8]) -> PacketMeta {
    match parse_frame(&frame[HEADROOM..]) {
        Ok(Frame::Ip(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn full_buckets_fall_back_to_maglev_and_old_flows_keep_working() {
    let s = service(Method::Alias, Encap::L2Dsr, &[WEIGHT_ONE; 4]);
    let mut w = Worker::<4>::new_box_zeroed().expect("alloc"); // 16 entries
    w.init(3);
    let run4 = |w: &mut Worker<4>, frame: Vec<u8>| {
        let mut f = frame;
        let len = f.len() - HEADROOM;
        f.extend_from_slice(&[0; 64]);
        let mut p = Packet::new(&mut f, HEADROOM, len);
        w.process_one(&s, SEC, &mut p)
    };
    let mut first = vec![];
    for i in 0..16 {
        first.push(fwd(run4(&mut w, tcp(i, 5000, SYN))));
    }
    let tracked_before = w.telemetry.global.flows_inserted;
    // A flood of 2000 SYNs.
    for i in 1000..3000 {
        fwd(run4(&mut w, tcp(i, 5000, SYN)));
    }
    assert!(w.flows.occupied() <= 16);
    assert!(w.telemetry.global.flows_untracked > 1900);
    for i in 0..16 {
        assert_eq!(fwd(run4(&mut w, tcp(i, 5000, ACK))), first[i as usize]);
    }
    assert!(tracked_before >= 8);
    // An untracked flow's packets all go to one backend (the Maglev choice).
    let x = fwd(run4(&mut w, tcp(2500, 5000, ACK)));
    assert_eq!(fwd(run4(&mut w, tcp(2500, 5000, ACK))), x);
}

#[test]
fn sed_prefers_weighted_short_queues() {
    let s = service(Method::Sed, Encap::L2Dsr, &[WEIGHT_ONE, 3 * WEIGHT_ONE]);
    let mut w = worker();
    let mut counts = [0u32; 2];
    for i in 0..400 {
        counts[usize::from(fwd(run(&mut w, &s, SEC, tcp(i, 6000, SYN)).0))] += 1;
    }
    // SED keeps (active + 1) / weight level: 1:3 split of 400 active flows.
    assert!((95..=105).contains(&counts[0]), "{counts:?}");
    assert_eq!(
        w.telemetry.backends[0].active_flows + w.telemetry.backends[1].active_flows,
        400
    );
}

#[test]
fn stateless_maglev_uses_no_flow_table() {
    let s = service(Method::Maglev, Encap::L2Dsr, &[WEIGHT_ONE; 4]);
    let mut w = worker();
    for i in 0..100 {
        let x = fwd(run(&mut w, &s, SEC, tcp(i, 7000, SYN)).0);
        assert_eq!(fwd(run(&mut w, &s, SEC, tcp(i, 7000, ACK)).0), x);
    }
    assert_eq!(w.flows.occupied(), 0);
}

#[test]
fn drops_and_host_traffic_are_counted_by_reason() {
    let s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 2]);
    let mut w = worker();
    // Not a VIP address: host.
    assert_eq!(
        run(&mut w, &s, SEC, tcp_to(1, 1, [198, 18, 0, 9], 80, SYN, 64)).0,
        Verdict::Host
    );
    // VIP address, wrong port.
    assert_eq!(
        run(&mut w, &s, SEC, tcp_to(1, 1, VIP, 81, SYN, 64)).0,
        Verdict::Drop(DropReason::NoVip)
    );
    // TTL 1.
    assert_eq!(
        run(&mut w, &s, SEC, tcp_to(1, 1, VIP, 80, SYN, 1)).0,
        Verdict::Drop(DropReason::TtlExpired)
    );
    // Truncated IPv4.
    let mut t = tcp(1, 1, SYN);
    t.truncate(HEADROOM + 20);
    assert_eq!(
        run(&mut w, &s, SEC, t).0,
        Verdict::Drop(DropReason::Malformed)
    );
    // ARP: host.
    let mut arp = vec![0u8; HEADROOM];
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&[2, 0, 0, 0, 2, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    assert_eq!(run(&mut w, &s, SEC, arp).0, Verdict::Host);
    // Martian source (multicast).
    let mut m = tcp(1, 1, SYN);
    m[HEADROOM + 14 + 12] = 224;
    // Fix the header checksum is not needed: verification is off by default.
    assert_eq!(
        run(&mut w, &s, SEC, m).0,
        Verdict::Drop(DropReason::Martian)
    );
    let d = &w.telemetry.drops;
    assert_eq!(d[DropReason::NoVip as usize], 1);
    assert_eq!(d[DropReason::TtlExpired as usize], 1);
    assert_eq!(d[DropReason::Malformed as usize], 1);
    assert_eq!(d[DropReason::Martian as usize], 1);
    assert_eq!(w.telemetry.global.to_host, 2);
    assert_eq!(w.telemetry.global.dropped, 4);
    assert_eq!(w.telemetry.global.rx_packets, 6);
}

#[test]
fn bad_ipv4_checksum_is_dropped_when_verification_is_on() {
    let mut s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 2]);
    s.verify_checksums = true;
    let mut w = worker();
    fwd(run(&mut w, &s, SEC, tcp(1, 1, SYN)).0);
    let mut bad = tcp(2, 1, SYN);
    bad[HEADROOM + 14 + 10] ^= 0xff;
    assert_eq!(
        run(&mut w, &s, SEC, bad).0,
        Verdict::Drop(DropReason::BadChecksum)
    );
}

#[test]
fn udp_flows_are_sticky_and_expire() {
    let s = service(Method::Alias, Encap::Gre, &[WEIGHT_ONE; 4]);
    let mut w = worker();
    let x = fwd(run(&mut w, &s, SEC, udp(9, 5353)).0);
    assert_eq!(fwd(run(&mut w, &s, 20 * SEC, udp(9, 5353)).0), x);
    assert_eq!(w.telemetry.backends[usize::from(x)].active_flows, 1);
    w.sweep(&s, 100 * SEC, 1 << 14);
    assert_eq!(w.telemetry.backends[usize::from(x)].active_flows, 0);
    assert_eq!(w.telemetry.backends[usize::from(x)].expired_flows, 1);
}

#[test]
fn a_caller_a_little_behind_the_packets_clock_expires_nothing() {
    // A host's packet thread stamps flows with a counter-based clock that
    // may run a microsecond ahead of the reference clock its sweep or sync
    // calls use: the worker keeps the later time, so the fresh entries are
    // not taken for 73-minute-old ones (ages are wrapping ticks).
    let s = service(Method::Alias, Encap::Gre, &[WEIGHT_ONE; 4]);
    let mut w = worker();
    let t = 5 * SEC;
    let x = fwd(run(&mut w, &s, t, tcp(3, 4000, SYN)).0);
    assert_eq!(fwd(run(&mut w, &s, t, tcp(3, 4000, ACK)).0), x);
    let b = usize::from(x);
    assert_eq!(w.telemetry.backends[b].active_flows, 1);
    w.sweep(&s, t - 2_000, 1 << 14);
    w.sweep_paced(&s, t - 3_000, 1 << 14);
    w.sweep_paced(&s, t + SEC / 2 - 4_000, 1 << 14);
    let _ = w.apply_sync(&s, t - 5_000, &[]);
    assert_eq!(w.telemetry.backends[b].active_flows, 1);
    assert_eq!(w.telemetry.backends[b].expired_flows, 0);
    // And the flow is still where it was, a packet later on the behind clock.
    assert_eq!(fwd(run(&mut w, &s, t - 1_000, tcp(3, 4000, ACK)).0), x);
    assert_eq!(w.telemetry.global.flows_inserted, 1);
}

#[test]
fn the_paced_sweep_covers_the_table_once_a_period_whatever_the_call_rate() {
    const B: usize = 16384;
    // Every call rate gives one table per period, to within one bucket.
    for calls_per_s in [1u64, 7, 1000, 400_000] {
        let mut p = SweepPace::default();
        let step = SEC / calls_per_s;
        let mut swept = p.due(SEC, B, usize::MAX);
        assert_eq!(swept, 0, "the first call starts the clock");
        let mut t = SEC;
        while t < 4 * SEC {
            t += step;
            swept += p.due(t, B, usize::MAX);
        }
        let expect = (t - SEC) as f64 / SEC as f64 * B as f64;
        assert!(
            (swept as f64 - expect).abs() <= 1.0 + B as f64 * 1e-9 * step as f64,
            "{calls_per_s}/s: {swept} vs {expect}"
        );
    }
    // A cap per call carries the rest; never more than one table is owed.
    let mut p = SweepPace::default();
    p.due(SEC, B, 256);
    assert_eq!(p.due(SEC + SEC / 2, B, 256), 256);
    assert_eq!(p.due(SEC + SEC / 2, B, usize::MAX), B / 2 - 256);
    assert_eq!(
        p.due(100 * SEC, B, usize::MAX),
        B,
        "a long gap owes one table"
    );
    // A clock that goes back restarts it.
    assert_eq!(p.due(50 * SEC, B, usize::MAX), 0);
    assert_eq!(p.due(50 * SEC + SEC / 4, B, usize::MAX), B / 4);
}

#[test]
fn a_paced_sweep_expires_idle_flows() {
    let s = service(Method::Alias, Encap::Gre, &[WEIGHT_ONE; 4]);
    let mut w = worker();
    let x = fwd(run(&mut w, &s, SEC, udp(9, 5353)).0);
    let b = usize::from(x);
    assert_eq!(w.telemetry.backends[b].active_flows, 1);
    // The UDP timeout is 30 s; a call every 10 ms sweeps 1/100 of the table.
    let mut t = SEC;
    while t < 40 * SEC {
        w.sweep_paced(&s, t, 256);
        t += SEC / 100;
    }
    assert_eq!(w.telemetry.backends[b].active_flows, 0);
    assert_eq!(w.telemetry.backends[b].expired_flows, 1);
}

#[test]
fn batch_equals_one_by_one() {
    // 256 packets with repeated flows (SYN, retransmitted SYN, ACK, FIN in one batch).
    let s = service(
        Method::Sed,
        Encap::IpIp,
        &[WEIGHT_ONE, 2 * WEIGHT_ONE, WEIGHT_ONE],
    );
    let mut frames = vec![];
    for i in 0..256u32 {
        let flow = i / 4;
        let flags = [SYN, SYN, ACK, ACK | FIN][(i % 4) as usize];
        frames.push(tcp(flow, 8000, flags));
    }
    let mut a = worker();
    let mut seq = vec![];
    for f in &frames {
        seq.push(run(&mut a, &s, SEC, f.clone()));
    }
    let mut b = worker();
    let mut bufs: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f.extend_from_slice(&[0; 64]);
            f
        })
        .collect();
    let lens: Vec<usize> = frames.iter().map(|f| f.len() - HEADROOM).collect();
    let mut pkts: Vec<Packet<'_>> = bufs
        .iter_mut()
        .zip(&lens)
        .map(|(f, l)| Packet::new(f, HEADROOM, *l))
        .collect();
    let mut verdicts = vec![Verdict::Host; 256];
    b.process(&s, SEC, &mut pkts, &mut verdicts);
    for (i, p) in pkts.iter().enumerate() {
        assert_eq!(verdicts[i], seq[i].0, "packet {i}");
        assert_eq!(p.frame(), &seq[i].1[..], "packet {i}");
    }
    assert_eq!(a.telemetry.backends[..3], b.telemetry.backends[..3]);
}

#[test]
fn fragments_follow_the_first_fragment() {
    let s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 4]);
    let mut w = worker();
    // A UDP datagram split in two: first fragment (MF, offset 0) with the UDP
    // header, then the rest (offset 8 * 3).
    let mut first = udp(77, 999);
    let ip = HEADROOM + 14;
    first[ip + 4..ip + 6].copy_from_slice(&0x4242u16.to_be_bytes());
    first[ip + 6] = 0x20; // MF
    let x = fwd(run(&mut w, &s, SEC, first.clone()).0);
    let mut second = first.clone();
    second[ip + 6..ip + 8].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(fwd(run(&mut w, &s, SEC, second.clone()).0), x);
    // A non-first fragment of an unknown datagram is dropped.
    let mut orphan = second;
    orphan[ip + 4] = 0x99;
    assert_eq!(
        run(&mut w, &s, SEC, orphan).0,
        Verdict::Drop(DropReason::FragmentNoState)
    );
    assert_eq!(w.telemetry.global.fragments_forwarded, 1);
}

#[test]
fn no_live_backend_is_a_counted_drop() {
    let mut s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 2]);
    s.set_weights(&[0, 0]);
    let mut w = worker();
    assert_eq!(
        run(&mut w, &s, SEC, tcp(1, 1, SYN)).0,
        Verdict::Drop(DropReason::NoLiveBackend)
    );
    s.set_admin(0, AdminState::Down).expect("admin");
    s.set_admin(1, AdminState::Down).expect("admin");
    assert_eq!(
        run(&mut w, &s, SEC, tcp(1, 1, ACK)).0,
        Verdict::Drop(DropReason::NoLiveBackend)
    );
    assert_eq!(w.telemetry.drops[DropReason::NoLiveBackend as usize], 2);
}

#[test]
fn service_config_errors_name_the_problem() {
    let mut s = Service::new_box_zeroed().expect("alloc");
    s.set_backends(&[backend(0, WEIGHT_ONE)]).expect("ok");
    let v = Vip::v4(VIP, VipProto::Tcp, 80);
    assert_eq!(
        s.add_vip(v, Method::Alias, Encap::IpIp, &[]),
        Err(ConfigErrorAlias::NoMembers)
    );
    assert_eq!(
        s.add_vip(v, Method::Alias, Encap::IpIp, &[3]),
        Err(ConfigErrorAlias::BadBackendIndex(3))
    );
    assert_eq!(
        s.add_vip(v, Method::Alias, Encap::IpIp, &[0, 0]),
        Err(ConfigErrorAlias::DuplicateMember(0))
    );
    s.add_vip(v, Method::Alias, Encap::IpIp, &[0]).expect("ok");
    assert_eq!(
        s.add_vip(v, Method::Alias, Encap::IpIp, &[0]),
        Err(ConfigErrorAlias::DuplicateVip)
    );
    assert_eq!(
        s.set_backends(&[]),
        Err(ConfigErrorAlias::BadBackendIndex(0))
    );
}

use crate::service::ConfigError as ConfigErrorAlias;

#[test]
fn rst_without_state_is_forwarded_consistently_but_not_tracked() {
    let s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 3]);
    let mut w = worker();
    let x = fwd(run(&mut w, &s, SEC, tcp(5, 5, RST)).0);
    assert_eq!(fwd(run(&mut w, &s, SEC, tcp(5, 5, RST)).0), x);
    assert_eq!(w.flows.occupied(), 0);
    assert_eq!(w.telemetry.global.maglev_fallback, 2);
}

/// An ICMPv4 "fragmentation needed" sent to the VIP by a router on the client
/// path, about a segment the backend sent (VIP:80 -> client).
fn icmp_frag_needed_about(c: u32, sport: u16) -> Vec<u8> {
    let client = (0xc612_0000u32 | (c & 0xffff)).to_be_bytes();
    // The embedded packet: IPv4 VIP -> client, TCP 80 -> sport.
    let mut inner = Vec::new();
    PacketBuilder::ipv4(VIP, client, 60)
        .tcp(80, sport, 7, 1000)
        .ack(1)
        .write(&mut inner, &[0u8; 100])
        .expect("inner");
    inner.truncate(20 + 8);
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], LB_MAC)
        .ipv4([198, 18, 7, 7], VIP, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ));
    let mut out = vec![0u8; HEADROOM];
    b.write(&mut out, &inner).expect("build");
    out
}

#[test]
fn icmp_errors_follow_their_flow() {
    let s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 8]);
    let mut w = worker();
    for c in 0..50 {
        let b = fwd(run(&mut w, &s, SEC, tcp(c, 3333, SYN)).0);
        let (v, out) = run(&mut w, &s, SEC, icmp_frag_needed_about(c, 3333));
        assert_eq!(fwd(v), b, "client {c}");
        // Encapsulated to that backend, inner packet is the ICMP message.
        assert_eq!(&out[14 + 16..14 + 20], &[198, 19, 0, 10 + b as u8]);
        assert_eq!(out[14 + 20 + 9], 1);
    }
    assert_eq!(w.telemetry.global.forwarded, 100);
    // Echo to the VIP belongs to the host stack.
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], LB_MAC)
        .ipv4([198, 18, 0, 1], VIP, 64)
        .icmpv4_echo_request(1, 1);
    let mut echo = vec![0u8; HEADROOM];
    b.write(&mut echo, &[0; 8]).expect("build");
    assert_eq!(run(&mut w, &s, SEC, echo).0, Verdict::Host);
}

#[test]
fn ipv6_vip_over_ipv6_gre() {
    let vip6 = [0x20, 1, 0xd, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut s = Service::new_box_zeroed().expect("alloc");
    s.hash_seed = 9;
    s.set_egress(Egress {
        src_mac: LB_MAC,
        src_v4: [198, 19, 0, 1],
        src_v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu: 1500,
    });
    let bs: Vec<Backend> = (0..3u8)
        .map(|i| {
            let mut addr = [0x20, 1, 0xd, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            addr[15] = 10 + i;
            Backend {
                family: IpFamily::V6,
                admin: AdminState::Active,
                mac: [2, 0, 0, 0, 1, i],
                addr,
                weight: WEIGHT_ONE,
                base_weight: WEIGHT_ONE,
            }
        })
        .collect();
    s.set_backends(&bs).expect("backends");
    s.add_vip(
        Vip::v6(vip6, VipProto::Tcp, 443),
        Method::Alias,
        Encap::Gre,
        &[0, 1, 2],
    )
    .expect("vip");
    let mut w = worker();
    let frame = |c: u16, flags: u8| {
        let mut src = [0x20, 1, 0xd, 0xb8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        src[14..].copy_from_slice(&c.to_be_bytes());
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], LB_MAC)
            .ipv6(src, vip6, 64)
            .tcp(5000 + c, 443, 1, 1000);
        let b = if flags & SYN != 0 { b.syn() } else { b.ack(1) };
        let mut out = vec![0u8; HEADROOM];
        b.write(&mut out, &[]).expect("build");
        out
    };
    let mut counts = [0u32; 3];
    for c in 0..300 {
        let (v, out) = run(&mut w, &s, SEC, frame(c, SYN));
        let b = fwd(v);
        counts[usize::from(b)] += 1;
        // Outer IPv6 (next header GRE) to the backend, GRE carries IPv6.
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        assert_eq!(out[14 + 6], 47);
        assert_eq!(out[14 + 24 + 15], 10 + b as u8);
        assert_eq!(&out[14 + 40 + 2..14 + 40 + 4], &[0x86, 0xdd]);
        assert_eq!(fwd(run(&mut w, &s, SEC, frame(c, ACK)).0), b);
    }
    assert!(counts.iter().all(|c| *c > 60), "{counts:?}");
}

/// A connection placed by one node's SED and moved by the router to another
/// node mid-flow goes to the same backend there once the first node's sync
/// record is applied; without it, the other node's consistent table decides.
#[test]
fn sync_records_keep_a_moved_connection_on_its_backend() {
    use crate::sync::{decode, encode, SyncRecord, MAX_RECORDS};
    // Node A's weights send everything to backend 2; node B's table is the
    // consistent one (base weights equal).
    let sa = service(Method::Sed, Encap::L2Dsr, &[0, 0, WEIGHT_ONE]);
    let (sb, mut a, mut b) = sync_pair();
    // 40 connections: SYN then the client's ACK on node A.
    let mut on_a = Vec::new();
    for c in 0..40u32 {
        let (v, _) = run(&mut a, &sa, SEC, tcp(c, 1000 + c as u16, 0x02));
        assert_eq!(fwd(v), 2);
        run(&mut a, &sa, SEC, tcp(c, 1000 + c as u16, 0x10));
        on_a.push(2u16);
    }
    // A SYN alone makes no record (a spoofed flood sends nothing).
    run(&mut a, &sa, SEC, tcp(999, 999, 0x02));
    assert_eq!(a.sync.pending().len(), 40);
    assert_eq!(a.telemetry.global.sync_made, 40);
    // Without the records B places the mid-flow packets consistently: most go
    // elsewhere than backend 2.
    let mut fresh_b = worker();
    let moved = (0..40u32)
        .filter(|&c| fwd(run(&mut fresh_b, &sb, SEC, tcp(c, 1000 + c as u16, 0x10)).0) != 2)
        .count();
    assert!(moved > 10, "{moved}");
    // Over the wire (two datagrams) and applied on B.
    let recs: Vec<SyncRecord> = a.sync.pending().to_vec();
    a.sync.clear();
    let mut got = Vec::new();
    let mut rest = &recs[..];
    while !rest.is_empty() {
        let mut buf = [0u8; 1500];
        let (len, n) = encode(rest, sa.hash_seed, 1, &mut buf);
        assert!(n > 0 && n <= MAX_RECORDS);
        rest = &rest[n..];
        let mut out = [SyncRecord::default(); MAX_RECORDS];
        let d = decode(&buf[..len], sb.hash_seed, &mut out).expect("decodes");
        assert_eq!(d.instance, 1);
        got.extend_from_slice(&out[..d.records]);
    }
    assert_eq!(got, recs);
    let applied = b.apply_sync(&sb, 2 * SEC, &got);
    assert_eq!(applied.inserted, 40);
    assert_eq!(b.telemetry.global.sync_applied, 40);
    for c in 0..40u32 {
        let (v, _) = run(&mut b, &sb, 3 * SEC, tcp(c, 1000 + c as u16, 0x10));
        assert_eq!(fwd(v), on_a[c as usize], "connection {c}");
    }
    // A node that starts again gets every established connection from a
    // dump, in bounded steps.
    let mut dumped = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = a.dump_sync(&sa, 2 * SEC, cursor, 1000, |r| dumped.push(r));
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(dumped.len(), 40, "the SYN-only flow is not established");
    let mut fresh = worker();
    assert_eq!(fresh.apply_sync(&sb, 2 * SEC, &dumped).inserted, 40);
    for c in 0..40u32 {
        let (v, _) = run(&mut fresh, &sb, 3 * SEC, tcp(c, 1000 + c as u16, 0x10));
        assert_eq!(fwd(v), 2, "connection {c} after the dump");
    }
    // Applying again changes nothing (the entries are known).
    let again = b.apply_sync(&sb, 4 * SEC, &got);
    assert_eq!((again.inserted, again.known), (0, 40));
    // Port reuse: connection 0 ends on B (FIN: its entry is closing), the
    // client opens a new one on the same 5-tuple through A, placed on another
    // backend; A's record supersedes B's closing entry, so B sends the new
    // connection's packets where A placed them.
    run(&mut b, &sb, 4 * SEC, tcp(0, 1000, 0x11));
    let mut reused = got[0];
    let other = sb.backends()[0];
    reused.backend = other.addr;
    reused.backend_family = other.family;
    let r = b.apply_sync(&sb, 5 * SEC, &[reused]);
    assert_eq!((r.inserted, r.known), (1, 0));
    let (v, _) = run(&mut b, &sb, 5 * SEC, tcp(0, 1000, 0x10));
    assert_eq!(fwd(v), 0, "the reused port follows the peer's new record");
    // A live local entry still wins over a peer's record.
    let mut live = got[1];
    live.backend = other.addr;
    assert_eq!(b.apply_sync(&sb, 5 * SEC, &[live]).known, 1);
    let (v, _) = run(&mut b, &sb, 5 * SEC, tcp(1, 1001, 0x10));
    assert_eq!(fwd(v), on_a[1]);
    // Records never take a bucket's last free way: a flood of them fills at
    // most three ways of every bucket.
    let mut flood = Vec::new();
    for c in 0..4u32 {
        let mut r = got[0];
        r.sport = 40_000 + c as u16;
        flood.push(r);
    }
    let mut small = Worker::<1>::new_box_zeroed().expect("alloc");
    small.init(9);
    let f = small.apply_sync(&sb, SEC, &flood);
    assert_eq!((f.inserted, f.refused), (3, 1));
    // A record for a backend B does not have up is refused.
    let mut down = sb.backends().to_vec();
    down[2].admin = AdminState::Down;
    let mut sd = service(Method::Sed, Encap::L2Dsr, &[WEIGHT_ONE; 3]);
    sd.set_backends(&down).expect("backends");
    let mut w = worker();
    assert_eq!(w.apply_sync(&sd, SEC, &got).refused, 40);
}

/// Node B's service (equal weights: its table is the consistent one), node A
/// with sync on, node B.
fn sync_pair() -> (Box<Service>, Box<W>, Box<W>) {
    let sb = service(
        Method::Sed,
        Encap::L2Dsr,
        &[WEIGHT_ONE, WEIGHT_ONE, WEIGHT_ONE],
    );
    let (mut a, b) = (worker(), worker());
    a.sync.enabled = true;
    (sb, a, b)
}

#[test]
fn sync_copies_close_with_their_connection() {
    use crate::sync::RecordKind;
    // Node A's weights send everything to backend 2, then (the controller
    // moved them) to backend 0; node B holds A's copies.
    let to2 = service(Method::Sed, Encap::L2Dsr, &[0, 0, WEIGHT_ONE]);
    let to0 = service(Method::Sed, Encap::L2Dsr, &[WEIGHT_ONE, 0, 0]);
    let (sb, mut a, mut b) = sync_pair();
    let take = |a: &mut W| {
        let v = a.sync.pending().to_vec();
        a.sync.clear();
        v
    };
    // Connection 0 on port 1000: opened on A, copied to B.
    assert_eq!(fwd(run(&mut a, &to2, SEC, tcp(0, 1000, SYN)).0), 2);
    run(&mut a, &to2, SEC, tcp(0, 1000, ACK));
    let opened = take(&mut a);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].kind, RecordKind::Opened);
    assert_eq!(b.apply_sync(&sb, SEC, &opened).inserted, 1);
    // It ends on A: the first FIN makes one closed record (its retransmission
    // none), and B's copy closes.
    run(&mut a, &to2, 2 * SEC, tcp(0, 1000, ACK | FIN));
    run(&mut a, &to2, 2 * SEC, tcp(0, 1000, ACK | FIN));
    let closed = take(&mut a);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].kind, RecordKind::Closed);
    assert_eq!(a.telemetry.global.sync_made, 2);
    let c = b.apply_sync(&sb, 2 * SEC, &closed);
    assert_eq!((c.closed, c.known), (1, 0));
    assert_eq!(b.telemetry.global.sync_applied, 2);
    // Applied again: nothing is established to close any more.
    assert_eq!(b.apply_sync(&sb, 2 * SEC, &closed).known, 1);
    // The client reuses the port; A places the new connection on backend 0.
    // Its record replaces B's closed copy, so B sends the connection to
    // backend 0 when the router moves it there. Without the closed record
    // B's copy would still be established, win over the new record, and take
    // the connection to backend 2.
    assert_eq!(fwd(run(&mut a, &to0, 3 * SEC, tcp(0, 1000, SYN)).0), 0);
    run(&mut a, &to0, 3 * SEC, tcp(0, 1000, ACK));
    let reopened = take(&mut a);
    assert_eq!(reopened.len(), 1);
    assert_eq!(b.apply_sync(&sb, 3 * SEC, &reopened).inserted, 1);
    assert_eq!(fwd(run(&mut b, &sb, 4 * SEC, tcp(0, 1000, ACK)).0), 0);
    // A closed record closes only an established entry on its backend: not
    // one on another backend, not a missing one.
    let mut elsewhere = closed[0];
    let other = sb.backends()[1];
    elsewhere.backend = other.addr;
    let mut unknown = closed[0];
    unknown.sport = 4242;
    let k = b.apply_sync(&sb, 4 * SEC, &[elsewhere, unknown]);
    assert_eq!((k.closed, k.known), (0, 2));
    assert_eq!(fwd(run(&mut b, &sb, 4 * SEC, tcp(0, 1000, ACK)).0), 0);
    // An RST ends an established connection too; a SYN-only flow that is
    // reset was never sent, so nothing is.
    run(&mut a, &to0, 5 * SEC, tcp(1, 1001, SYN));
    run(&mut a, &to0, 5 * SEC, tcp(1, 1001, ACK));
    run(&mut a, &to0, 5 * SEC, tcp(1, 1001, RST));
    run(&mut a, &to0, 5 * SEC, tcp(2, 1002, SYN));
    run(&mut a, &to0, 5 * SEC, tcp(2, 1002, RST));
    let kinds: Vec<RecordKind> = take(&mut a).iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RecordKind::Opened, RecordKind::Closed]);
}

#[test]
fn sync_datagrams_are_checked_whole() {
    use crate::sync::{decode, encode, SyncError, SyncRecord, HEADER_LEN, RECORD_LEN};
    let r = SyncRecord {
        proto: 6,
        sport: 7,
        dport: 80,
        ..SyncRecord::default()
    };
    let mut buf = [0u8; 1500];
    let (len, n) = encode(&[r; 3], 9, 77, &mut buf);
    assert_eq!((len, n), (HEADER_LEN + 3 * RECORD_LEN, 3));
    let mut out = [SyncRecord::default(); 4];
    assert_eq!(
        decode(&buf[..len], 9, &mut out).map(|d| (d.records, d.instance)),
        Ok((3, 77))
    );
    assert_eq!(decode(&buf[..len], 8, &mut out), Err(SyncError::Seed));
    assert_eq!(decode(&buf[..len - 1], 9, &mut out), Err(SyncError::Length));
    assert_eq!(decode(&buf[..4], 9, &mut out), Err(SyncError::Length));
    let mut bad = buf;
    bad[0] = b'X';
    assert_eq!(decode(&bad[..len], 9, &mut out), Err(SyncError::Magic));
    let mut bad = buf;
    bad[4] = 2;
    assert_eq!(decode(&bad[..len], 9, &mut out), Err(SyncError::Version));
    let mut bad = buf;
    bad[HEADER_LEN] = 7;
    assert_eq!(decode(&bad[..len], 9, &mut out), Err(SyncError::Family));
    let mut bad = buf;
    bad[HEADER_LEN + 3] = 2;
    assert_eq!(decode(&bad[..len], 9, &mut out), Err(SyncError::Kind));
    // The kind byte travels.
    let closed = SyncRecord {
        kind: crate::sync::RecordKind::Closed,
        ..r
    };
    let (cl, _) = encode(&[r, closed], 9, 77, &mut buf);
    let mut two = [SyncRecord::default(); 2];
    assert_eq!(decode(&buf[..cl], 9, &mut two).map(|d| d.records), Ok(2));
    assert_eq!(two, [r, closed]);
    let (len, _) = encode(&[r; 3], 9, 77, &mut buf);
    let mut bad = buf;
    bad[5] = 200;
    assert_eq!(decode(&bad[..len], 9, &mut out), Err(SyncError::Count));
    // A short output buffer takes what fits.
    let mut one = [SyncRecord::default(); 1];
    assert_eq!(decode(&buf[..len], 9, &mut one).map(|d| d.records), Ok(1));
    // A hello: no records, the instance.
    let (hl, hn) = encode(&[], 9, 78, &mut buf);
    assert_eq!((hl, hn), (HEADER_LEN, 0));
    assert_eq!(
        decode(&buf[..hl], 9, &mut out).map(|d| (d.records, d.instance)),
        Ok((0, 78))
    );
    // An output too small for the header writes nothing.
    assert_eq!(encode(&[r], 9, 1, &mut [0u8; 8]), (0, 0));
}

/// An egress set after the backends reaches the fast path's tunnel headers
/// (each backend's template is rebuilt), and both paths write the same bytes.
#[test]
fn egress_set_after_the_backends_reaches_the_fast_path() {
    for encap in [Encap::IpIp, Encap::Gre] {
        let mut s = service(Method::Alias, encap, &[WEIGHT_ONE; 4]);
        let e = Egress {
            src_mac: [2, 0, 0, 0, 9, 9],
            src_v4: [203, 0, 113, 7],
            ..*s.egress()
        };
        s.set_egress(e);
        let (mut fast, mut slow) = (worker(), worker());
        slow.set_fast_path(false);
        for f in [SYN, ACK, ACK, ACK | FIN] {
            let (vf, of) = run(&mut fast, &s, SEC, tcp(1, 40000, f));
            let (vs, os) = run(&mut slow, &s, SEC, tcp(1, 40000, f));
            assert_eq!((vf, &of), (vs, &os));
            assert_eq!(&of[6..12], &e.src_mac);
            assert_eq!(&of[14 + 12..14 + 16], &e.src_v4);
        }
        assert_eq!(fast.fast_forwarded, 4);
    }
}

/// `Packet::frame` is the frame when `start`/`len` lie in the buffer, else
/// empty (an overflowing `start + len` included).
#[test]
fn packet_frame_is_empty_when_inconsistent() {
    let mut buf = [1u8, 2, 3, 4, 5, 6];
    for (start, len, want) in [
        (0, 6, &[1u8, 2, 3, 4, 5, 6][..]),
        (2, 3, &[3, 4, 5][..]),
        (6, 0, &[][..]),
        (2, 5, &[][..]),
        (7, 0, &[][..]),
        (usize::MAX, 2, &[][..]),
        (2, usize::MAX, &[][..]),
    ] {
        assert_eq!(
            Packet::new(&mut buf, start, len).frame(),
            want,
            "{start} {len}"
        );
    }
}

/// The fast path's per-backend flags (up, reached over IPv4) follow every
/// change of the backends: a new list, a shorter one, an admin change.
#[test]
fn tunnel_flags_follow_the_backends() {
    let check = |s: &Service| {
        for i in 0..crate::MAX_BACKENDS as u16 {
            let want = s.backend(i).filter(|b| b.admin != AdminState::Down);
            let got = s.tunnel_up(i);
            assert_eq!(got.is_some(), want.is_some(), "backend {i}");
            if let (Some(t), Some(b)) = (got, want) {
                assert_eq!(t.v4, b.family == IpFamily::V4, "backend {i}");
            }
        }
    };
    let mut s = service(Method::Alias, Encap::IpIp, &[WEIGHT_ONE; 4]);
    check(&s);
    s.set_admin(1, AdminState::Down).expect("admin");
    s.set_admin(2, AdminState::Draining).expect("admin");
    check(&s);
    s.set_admin(1, AdminState::Active).expect("admin");
    check(&s);
    let mut bs = s.backends().to_vec();
    bs[3].family = IpFamily::V6;
    bs[0].admin = AdminState::Down;
    s.set_backends(&bs).expect("backends");
    check(&s);
    s.set_egress(Egress::default());
    check(&s);
    // A shorter list (no VIP refers to the rest) leaves no slot past its end
    // up.
    let mut sv = Service::new_box_zeroed().expect("alloc");
    check(&sv);
    let six: Vec<Backend> = (0..6).map(|i| backend(i, WEIGHT_ONE)).collect();
    sv.set_backends(&six).expect("backends");
    check(&sv);
    sv.set_backends(&six[..2]).expect("backends");
    check(&sv);
}
