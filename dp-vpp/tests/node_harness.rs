//! Drives the node's packet entry point ([`process_frame`]) the way VPP does —
//! frames of 0, 1, 3, 255 and 256 buffer indices into a buffer arena of
//! `vlib_buffer_t`s (128 bytes of metadata, 128 of `pre_data`, then data), with
//! the metadata `ethernet-input` leaves on the `ip4-unicast` / `ip6-unicast`
//! arcs — and checks every verdict, next node, buffer metadata and rewritten
//! byte against a plain marllb-core `Worker` (what the DPDK host runs) fed the
//! same trace with the same `Service`.
#![allow(clippy::indexing_slicing)]

use std::alloc::{alloc_zeroed, dealloc, Layout};

use etherparse::PacketBuilder;
use marllb_core::classify::{DropReason, Verdict};
use marllb_core::pipeline::{Packet, Worker};
use marllb_core::service::Service;
use marllb_vpp::cli::{parse_lb, Command};
use marllb_vpp::config::Config;
use marllb_vpp::frame::{
    meta, process_frame, vnet, FrameBuffers, FrameCounts, InterfaceMacs, Next, NodeFamily,
    TraceNote, HEADER_SIZE, NEXT_FEATURE, NO_MACS, PRE_DATA,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vpp_plugin::bindings::{
    vlib_buffer_t, VLIB_BUFFER_IS_TRACED, VNET_BUFFER_F_L2_HDR_OFFSET_VALID,
    VNET_BUFFER_F_L3_HDR_OFFSET_VALID,
};
use zerocopy::FromZeros;

const B: usize = 1 << 12;
const DATA_SIZE: usize = 2048;
const STRIDE: usize = HEADER_SIZE + DATA_SIZE; // a multiple of 64
const RX_IF: u32 = 7;
const FRAME_SIZES: [usize; 5] = [0, 1, 3, 255, 256];

/// One input packet: the Ethernet frame, whether ethernet-input marked its L2
/// header valid, and which arc it is on.
#[derive(Clone)]
struct Input {
    frame: Vec<u8>,
    l2_valid: bool,
    family: NodeFamily,
}

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn service(lines: &[&str]) -> Box<Service> {
    let mut c = Config::default();
    for l in lines {
        match parse_lb(l).unwrap() {
            Command::SetVip(v) => c.set_vip(v).unwrap(),
            Command::SetServers { servers } => c.servers = servers,
            Command::Conf(x) => c.apply_conf(&x),
            other => panic!("{other:?}"),
        }
    }
    c.build(None).unwrap()
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp { flags: u8, len: usize },
    Udp { len: usize },
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const RST: u8 = 0x04;

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn build(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    sport: u16,
    dport: u16,
    l4: L4,
    ttl: u8,
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(mac(0xaa), mac(0xbb));
    let ip = match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    match l4 {
        L4::Tcp { flags, len } => {
            let mut b = ip.tcp(sport, dport, 1000, 64000);
            if flags & SYN != 0 {
                b = b.syn();
            }
            if flags & ACK != 0 {
                b = b.ack(1);
            }
            if flags & FIN != 0 {
                b = b.fin();
            }
            if flags & PSH != 0 {
                b = b.psh();
            }
            if flags & RST != 0 {
                b = b.rst();
            }
            b.write(&mut out, &vec![0x5a; len]).unwrap();
        }
        L4::Udp { len } => ip
            .udp(sport, dport)
            .write(&mut out, &vec![0x33; len])
            .unwrap(),
    }
    out
}

fn with_df(mut f: Vec<u8>) -> Vec<u8> {
    // etherparse sets DF on IPv4; make sure, and fix the checksum.
    f[14 + 6] |= 0x40;
    f[14 + 10] = 0;
    f[14 + 11] = 0;
    let mut sum = 0u32;
    for c in f[14..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    f[24..26].copy_from_slice(&ck.to_be_bytes());
    f
}

/// A TCP SYN from `src`:`sport` to `dst`:`dport` (DF set), as a valid IPv4 input.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn syn_input(src: &str, dst: &str, sport: u16, dport: u16) -> Input {
    Input {
        frame: with_df(build(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            sport,
            dport,
            L4::Tcp { flags: SYN, len: 0 },
            64,
        )),
        l2_valid: true,
        family: NodeFamily::Ip4,
    }
}

fn vlan(f: &[u8], tag: u16) -> Vec<u8> {
    let mut v = f[..12].to_vec();
    v.extend_from_slice(&0x8100u16.to_be_bytes());
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&f[12..]);
    v
}

/// A trace: many TCP flows (SYN, ACK, data, FIN, last ACK, some RST, some
/// mid-flow without SYN), UDP flows, traffic to non-VIPs, TTL 1, too-big
/// packets, VLAN-tagged frames, frames without a valid L2 header, and junk.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn trace(
    rng: &mut SmallRng,
    v4_vips: &[(&str, u16, bool)],
    v6_vips: &[(&str, u16, bool)],
) -> Vec<Input> {
    let mut flows: Vec<Vec<Input>> = Vec::new();
    let mut all: Vec<(std::net::IpAddr, u16, bool, NodeFamily)> = Vec::new();
    for &(a, p, tcp) in v4_vips {
        all.push((a.parse().unwrap(), p, tcp, NodeFamily::Ip4));
    }
    for &(a, p, tcp) in v6_vips {
        all.push((a.parse().unwrap(), p, tcp, NodeFamily::Ip6));
    }
    for i in 0..700u32 {
        let (vip, port, tcp, family) = all[i as usize % all.len()];
        let src: std::net::IpAddr = match family {
            NodeFamily::Ip4 => {
                std::net::Ipv4Addr::new(192, 0, 2 + (i % 50) as u8, 1 + (i % 200) as u8).into()
            }
            NodeFamily::Ip6 => format!("2001:db8:c::{:x}", i + 1).parse().unwrap(),
        };
        let sport = 10_000 + i as u16;
        let l2_valid = i % 11 != 3;
        let tag = (i % 7 == 5).then_some(100 + (i % 4) as u16);
        let mk = |l4: L4, ttl: u8| {
            let f = build(src, vip, sport, port, l4, ttl);
            let f = if family == NodeFamily::Ip4 {
                with_df(f)
            } else {
                f
            };
            Input {
                frame: match tag {
                    Some(t) if l2_valid => vlan(&f, t),
                    _ => f,
                },
                l2_valid,
                family,
            }
        };
        let mut pk = Vec::new();
        if tcp {
            let mid_flow = i % 13 == 0;
            if !mid_flow {
                pk.push(mk(L4::Tcp { flags: SYN, len: 0 }, 64));
                if i % 17 == 0 {
                    pk.push(mk(L4::Tcp { flags: SYN, len: 0 }, 64)); // retransmission
                }
            }
            pk.push(mk(L4::Tcp { flags: ACK, len: 0 }, 64));
            for k in 0..rng.gen_range(1..4) {
                let len = if i % 19 == 0 && k == 0 {
                    1460
                } else {
                    rng.gen_range(1..600)
                };
                pk.push(mk(
                    L4::Tcp {
                        flags: ACK | PSH,
                        len,
                    },
                    64,
                ));
            }
            if i % 23 == 0 {
                pk.push(mk(L4::Tcp { flags: RST, len: 0 }, 64));
            } else {
                pk.push(mk(
                    L4::Tcp {
                        flags: FIN | ACK,
                        len: 0,
                    },
                    64,
                ));
                pk.push(mk(L4::Tcp { flags: ACK, len: 0 }, 64));
            }
            if i % 29 == 0 {
                pk.push(mk(
                    L4::Tcp {
                        flags: ACK,
                        len: 10,
                    },
                    1,
                )); // TTL expires here
            }
        } else {
            for _ in 0..rng.gen_range(1..4) {
                let len = rng.gen_range(1..300);
                pk.push(mk(L4::Udp { len }, 64));
            }
        }
        flows.push(pk);
    }
    // Not for a VIP: to the host.
    for i in 0..40u8 {
        flows.push(vec![syn_input(
            "192.0.2.9",
            &format!("198.51.100.{}", i + 1),
            5000,
            80,
        )]);
    }
    // Junk behind a valid Ethernet header, and truncated packets.
    for i in 0..60usize {
        let mut f = vec![0u8; 14 + rng.gen_range(0..120)];
        f[..6].copy_from_slice(&mac(0xbb));
        f[6..12].copy_from_slice(&mac(0xaa));
        let family = if i % 2 == 0 {
            NodeFamily::Ip4
        } else {
            NodeFamily::Ip6
        };
        f[12..14].copy_from_slice(&(if i % 2 == 0 { 0x0800u16 } else { 0x86dd }).to_be_bytes());
        for b in &mut f[14..] {
            *b = rng.gen();
        }
        if i % 3 == 0 && f.len() > 15 {
            f[14] = if i % 2 == 0 { 0x45 } else { 0x60 };
        }
        flows.push(vec![Input {
            frame: f,
            l2_valid: i % 5 != 0,
            family,
        }]);
    }
    // Interleave the flows, keeping each flow's order.
    let mut out = Vec::new();
    let mut cursors: Vec<usize> = vec![0; flows.len()];
    let mut live: Vec<usize> = (0..flows.len()).collect();
    while !live.is_empty() {
        let k = rng.gen_range(0..live.len().min(64));
        let f = live[k];
        out.push(flows[f][cursors[f]].clone());
        cursors[f] += 1;
        if cursors[f] == flows[f].len() {
            live.remove(k);
        }
    }
    out
}

/// 64-byte aligned memory for `n` buffers, like VPP's buffer pool.
struct Arena {
    ptr: *mut u8,
    layout: Layout,
    n: usize,
}

impl Arena {
    #[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
    fn new(n: usize) -> Self {
        let layout = Layout::from_size_align(n * STRIDE, 64).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Arena { ptr, layout, n }
    }

    fn index(slot: usize) -> u32 {
        ((slot * STRIDE) >> 6) as u32
    }

    fn buf(&self, slot: usize) -> *mut vlib_buffer_t {
        assert!(slot < self.n);
        // SAFETY: inside the allocation.
        unsafe { self.ptr.add(slot * STRIDE).cast() }
    }

    /// `pre_data` + data of a buffer.
    fn view(&self, slot: usize) -> &[u8] {
        assert!(slot < self.n);
        // SAFETY: inside the allocation; no mutable view is live while it is read.
        unsafe {
            std::slice::from_raw_parts(self.ptr.add(slot * STRIDE + 128), PRE_DATA + DATA_SIZE)
        }
    }

    /// `pre_data` + data of a buffer, to write.
    fn view_mut(&mut self, slot: usize) -> &mut [u8] {
        assert!(slot < self.n);
        // SAFETY: inside the allocation; `&mut self` makes it the only view.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(slot * STRIDE + 128), PRE_DATA + DATA_SIZE)
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Metadata as `ethernet-input` leaves it on the IP arcs.
fn fill(arena: &mut Arena, slot: usize, inp: &Input) {
    let b = arena.buf(slot);
    // SAFETY: header of a buffer in the arena, not otherwise referenced.
    unsafe { std::ptr::write_bytes(b.cast::<u8>(), 0, HEADER_SIZE) };
    let view = arena.view_mut(slot);
    view.fill(0xee);
    let l2len = if inp.frame.get(12..14) == Some(&[0x81, 0x00]) {
        18
    } else {
        14
    };
    let (cd, len) = if inp.l2_valid {
        view[PRE_DATA..PRE_DATA + inp.frame.len()].copy_from_slice(&inp.frame);
        (l2len as i16, inp.frame.len() - l2len)
    } else {
        // A packet that arrived without an Ethernet header (a tunnel): the IP
        // packet at data[0], garbage in the headroom.
        view[PRE_DATA..PRE_DATA + inp.frame.len() - 14].copy_from_slice(&inp.frame[14..]);
        (0, inp.frame.len() - 14)
    };
    // SAFETY: as above.
    unsafe {
        let md = &mut *meta(b);
        md.current_data = cd;
        md.current_length = len as u16;
        md.flags = if inp.l2_valid {
            (VNET_BUFFER_F_L2_HDR_OFFSET_VALID | VNET_BUFFER_F_L3_HDR_OFFSET_VALID) as u32
        } else {
            VNET_BUFFER_F_L3_HDR_OFFSET_VALID as u32
        };
        let vn = &mut *vnet(md);
        vn.sw_if_index = [RX_IF, u32::MAX];
        vn.l2_hdr_offset = 0;
        vn.l3_hdr_offset = cd;
    }
}

fn meta_of(arena: &Arena, slot: usize) -> (i16, u16, u32) {
    let m = meta(arena.buf(slot));
    // SAFETY: header of a buffer in the arena, read through raw pointers.
    unsafe {
        (
            (*m).current_data,
            (*m).current_length,
            (*vnet(m)).sw_if_index[1],
        )
    }
}

/// The reference input: what the DPDK host would hand the core for the same
/// packet (a packet without L2 header gets the same zero-MAC header the node writes).
fn reference_frame(inp: &Input) -> Vec<u8> {
    if inp.l2_valid {
        inp.frame.clone()
    } else {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&inp.frame[12..]);
        f
    }
}

#[derive(Default, Debug)]
struct Tally {
    forwarded: usize,
    interface_output: usize,
    ip4_lookup: usize,
    ip6_lookup: usize,
    replies: usize,
    host: usize,
    drops: [usize; DropReason::COUNT],
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn run(svc: &Service, inputs: &[Input], seed: u64) -> Tally {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut vw = Worker::<B>::new_box_zeroed().unwrap();
    vw.init(1);
    let mut rw = Worker::<B>::new_box_zeroed().unwrap();
    rw.init(1);
    let mut arena = Arena::new(256);
    let mut tally = Tally::default();
    let mut pos = 0;
    let mut now = 1_000_000_000u64;
    let mut frame_no = 0;
    let mut seen_sizes = [false; 5];
    let mut taken = vec![false; inputs.len()];
    while taken.iter().any(|t| !t) || frame_no < FRAME_SIZES.len() {
        let want = FRAME_SIZES[frame_no % FRAME_SIZES.len()];
        frame_no += 1;
        now += 1_000_000;
        // Split by arc (a VPP frame holds one node's packets).
        // A frame holds one node's packets: take the next `want` of the family
        // of the oldest pending packet (each flow is of one family, so every
        // flow keeps its order).
        while pos < inputs.len() && taken[pos] {
            pos += 1;
        }
        let family = inputs.get(pos).map_or(NodeFamily::Ip4, |i| i.family);
        let mut batch = Vec::new();
        let mut k = pos;
        while batch.len() < want && k < inputs.len() {
            if !taken[k] && inputs[k].family == family {
                batch.push(inputs[k].clone());
                taken[k] = true;
            }
            k += 1;
        }
        if let Some(k) = FRAME_SIZES.iter().position(|&s| s == batch.len()) {
            seen_sizes[k] = true;
        }
        // Buffers in a scattered order, as a pool hands them out.
        let mut slots: Vec<usize> = (0..256).collect();
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.gen_range(0..=i));
        }
        slots.truncate(batch.len());
        for (inp, &s) in batch.iter().zip(&slots) {
            fill(&mut arena, s, inp);
        }
        let before: Vec<Vec<u8>> = slots.iter().map(|&s| arena.view(s).to_vec()).collect();
        let indices: Vec<u32> = slots.iter().map(|&s| Arena::index(s)).collect();
        let mut nexts = vec![0xabcdu16; batch.len()];
        let mut verdicts = vec![Verdict::Host; batch.len()];
        let mut counts = FrameCounts::default();
        // SAFETY: every index is a distinct buffer of the arena followed by
        // DATA_SIZE bytes of data; no other reference to them is live.
        let n = unsafe {
            process_frame(
                &mut vw,
                svc,
                now,
                family,
                FrameBuffers {
                    buffer_mem_start: arena.ptr,
                    indices: &indices,
                    data_size: DATA_SIZE,
                    macs: &NO_MACS,
                },
                &mut nexts,
                &mut verdicts,
                &mut counts,
                None,
            )
        };
        assert_eq!(n, batch.len());

        // The reference: the same packets through a plain Worker.
        let mut rbufs: Vec<Vec<u8>> = batch
            .iter()
            .map(|inp| {
                let f = reference_frame(inp);
                let mut b = vec![0u8; PRE_DATA + DATA_SIZE];
                b[PRE_DATA..PRE_DATA + f.len()].copy_from_slice(&f);
                b
            })
            .collect();
        let lens: Vec<usize> = batch.iter().map(|i| reference_frame(i).len()).collect();
        let mut rp: Vec<Packet<'_>> = rbufs
            .iter_mut()
            .zip(&lens)
            .map(|(b, &l)| Packet::new(b, PRE_DATA, l))
            .collect();
        let mut rv = vec![Verdict::Host; batch.len()];
        rw.process(svc, now, &mut rp, &mut rv);

        let mut fc = FrameCounts::default();
        for i in 0..batch.len() {
            assert_eq!(
                verdicts[i], rv[i],
                "verdict of packet {i} of frame {frame_no}"
            );
            let (cd, len, tx) = meta_of(&arena, slots[i]);
            let view = arena.view(slots[i]);
            let at = (PRE_DATA as isize + isize::from(cd)) as usize;
            let rframe = rp[i].frame().to_vec();
            let l2in = if batch[i].frame.get(12..14) == Some(&[0x81, 0x00]) && batch[i].l2_valid {
                18
            } else {
                14
            };
            match rv[i] {
                Verdict::Forward { .. } if rp[i].start == PRE_DATA => {
                    tally.forwarded += 1;
                    tally.interface_output += 1;
                    fc.forwarded += 1;
                    assert_eq!(nexts[i], Next::InterfaceOutput as u16);
                    assert_eq!(tx, RX_IF, "L2 DSR leaves on the RX interface");
                    assert_eq!(&view[at..at + usize::from(len)], &rframe[..], "DSR frame");
                }
                Verdict::Forward { .. } => {
                    tally.forwarded += 1;
                    fc.forwarded += 1;
                    let v6 = rframe[12..14] == [0x86, 0xdd];
                    let want = if v6 { Next::Ip6Lookup } else { Next::Ip4Lookup };
                    if v6 {
                        tally.ip6_lookup += 1;
                    } else {
                        tally.ip4_lookup += 1;
                    }
                    assert_eq!(nexts[i], want as u16);
                    assert_eq!(tx, u32::MAX);
                    assert_eq!(usize::from(len), rframe.len() - 14);
                    assert_eq!(
                        &view[at - 14..at + usize::from(len)],
                        &rframe[..],
                        "encapsulated frame"
                    );
                }
                Verdict::Reply => {
                    tally.replies += 1;
                    fc.replies += 1;
                    let want = match family {
                        NodeFamily::Ip4 => Next::Ip4Lookup,
                        NodeFamily::Ip6 => Next::Ip6Lookup,
                    };
                    assert_eq!(nexts[i], want as u16);
                    assert_eq!(tx, u32::MAX);
                    assert_eq!(
                        &view[at - l2in..at + usize::from(len)],
                        &rframe[..],
                        "ICMP reply"
                    );
                }
                Verdict::Host => {
                    tally.host += 1;
                    fc.host += 1;
                    assert_eq!(nexts[i], NEXT_FEATURE);
                    assert_eq!(tx, u32::MAX);
                    // Untouched, except the Ethernet header written in front of an
                    // L2-less packet.
                    let skip = if batch[i].l2_valid {
                        0..0
                    } else {
                        PRE_DATA - 14..PRE_DATA
                    };
                    for (k, (a, b)) in view.iter().zip(&before[i]).enumerate() {
                        if !skip.contains(&k) {
                            assert_eq!(a, b, "host packet modified at {k}");
                        }
                    }
                    assert_eq!(cd, if batch[i].l2_valid { l2in as i16 } else { 0 });
                }
                Verdict::Drop(r) => {
                    tally.drops[r as usize] += 1;
                    fc.drops[r as usize] += 1;
                    assert_eq!(nexts[i], Next::Drop as u16);
                    assert_eq!(tx, u32::MAX);
                }
            }
        }
        assert_eq!(counts, fc, "frame counts of frame {frame_no}");
    }
    assert!(
        seen_sizes.iter().all(|&s| s),
        "frame sizes {FRAME_SIZES:?} all exercised: {seen_sizes:?}"
    );
    assert_eq!(vw.telemetry.global, rw.telemetry.global);
    assert_eq!(vw.telemetry.drops, rw.telemetry.drops);
    assert_eq!(vw.flows.occupied(), rw.flows.occupied());
    tally
}

#[test]
fn frames_match_the_core_byte_for_byte_v4_servers() {
    let svc = service(&[
        "set-vip 10.0.0.1 protocol tcp port 80",
        "set-vip 10.0.0.2 protocol udp port 53 encap ipip method alias",
        "set-vip 2001:db8::1 protocol tcp port 443 encap ipip method maglev",
        "set-vip 10.0.0.3 encap l2dsr",
        "set-servers 10.1.0.1 mac 02:00:00:00:01:01 10.1.0.2 mac 02:00:00:00:01:02 10.1.0.3 mac 02:00:00:00:01:03 10.1.0.4 mac 02:00:00:00:01:04",
        "conf ip4-src-address 10.9.0.1 mac 02:00:00:00:09:01 mtu 1500",
    ]);
    let mut rng = SmallRng::seed_from_u64(7);
    let t = trace(
        &mut rng,
        &[
            ("10.0.0.1", 80, true),
            ("10.0.0.2", 53, false),
            ("10.0.0.3", 8080, true),
        ],
        &[("2001:db8::1", 443, true)],
    );
    let tally = run(&svc, &t, 11);
    println!("{tally:?}");
    assert!(tally.interface_output > 100, "L2 DSR exercised");
    assert!(tally.ip4_lookup > 1000, "tunnels exercised");
    assert!(tally.replies > 0, "too-big replies exercised");
    assert!(tally.host >= 40);
    assert!(tally.drops[DropReason::Malformed as usize] > 0);
    assert!(tally.drops[DropReason::TtlExpired as usize] > 0);
}

#[test]
fn frames_match_the_core_byte_for_byte_v6_servers() {
    let svc = service(&[
        "set-vip 2001:db8::1 protocol tcp port 443",
        "set-vip 10.0.0.1 protocol tcp port 80 encap gre6",
        "set-vip 2001:db8::2 protocol udp port 53 encap ipip",
        "set-servers 2001:db8:1::1 2001:db8:1::2 2001:db8:1::3 weight 2",
        "conf ip6-src-address 2001:db8:9::1 mtu 1500",
    ]);
    let mut rng = SmallRng::seed_from_u64(9);
    let t = trace(
        &mut rng,
        &[("10.0.0.1", 80, true)],
        &[("2001:db8::1", 443, true), ("2001:db8::2", 53, false)],
    );
    let tally = run(&svc, &t, 13);
    println!("{tally:?}");
    assert!(tally.ip6_lookup > 1000, "IPv6 outer headers exercised");
    assert!(tally.replies > 0);
}

#[test]
fn empty_and_oversized_frames() {
    let svc = service(&["set-vip 10.0.0.1", "set-servers 10.1.0.1"]);
    let mut w = Worker::<B>::new_box_zeroed().unwrap();
    let mut arena = Arena::new(300);
    let inp = syn_input("192.0.2.1", "10.0.0.1", 1, 2);
    for s in 0..300 {
        fill(&mut arena, s, &inp);
    }
    let indices: Vec<u32> = (0..300).map(Arena::index).collect();
    let mut nexts = vec![0u16; 300];
    let mut verdicts = vec![Verdict::Host; 300];
    let mut counts = FrameCounts::default();
    let fb = |n| FrameBuffers {
        buffer_mem_start: arena.ptr,
        indices: &indices[..n],
        data_size: DATA_SIZE,
        macs: &NO_MACS,
    };
    // SAFETY: distinct buffers of the arena.
    let n = unsafe {
        process_frame(
            &mut w,
            &svc,
            1,
            NodeFamily::Ip4,
            fb(0),
            &mut nexts,
            &mut verdicts,
            &mut counts,
            None,
        )
    };
    assert_eq!(n, 0);
    // More than a VPP frame can hold: only the first 256 are touched.
    // SAFETY: as above.
    let n = unsafe {
        process_frame(
            &mut w,
            &svc,
            2,
            NodeFamily::Ip4,
            fb(300),
            &mut nexts,
            &mut verdicts,
            &mut counts,
            None,
        )
    };
    assert_eq!(n, 256);
    assert_eq!(counts.forwarded, 256);
    assert_eq!(meta_of(&arena, 299).0, 14);
}

#[test]
fn inconsistent_metadata_is_dropped_not_read() {
    let svc = service(&["set-vip 10.0.0.1", "set-servers 10.1.0.1"]);
    let mut w = Worker::<B>::new_box_zeroed().unwrap();
    let mut arena = Arena::new(3);
    let inp = syn_input("192.0.2.1", "10.0.0.1", 1, 2);
    for s in 0..3 {
        fill(&mut arena, s, &inp);
    }
    // SAFETY: headers of arena buffers.
    unsafe {
        let md = |s: usize| &mut *meta(arena.buf(s));
        md(0).current_length = u16::MAX; // runs past the data area
        md(1).current_data = -128; // no room for an Ethernet header
        md(1).flags = 0;
        md(2).current_data = i16::MAX;
    }
    let indices: Vec<u32> = (0..3).map(Arena::index).collect();
    let mut nexts = vec![0u16; 3];
    let mut verdicts = vec![Verdict::Host; 3];
    let mut counts = FrameCounts::default();
    // SAFETY: distinct buffers of the arena.
    unsafe {
        process_frame(
            &mut w,
            &svc,
            1,
            NodeFamily::Ip4,
            FrameBuffers {
                buffer_mem_start: arena.ptr,
                indices: &indices,
                data_size: DATA_SIZE,
                macs: &NO_MACS,
            },
            &mut nexts,
            &mut verdicts,
            &mut counts,
            None,
        )
    };
    assert_eq!(verdicts, vec![Verdict::Drop(DropReason::Malformed); 3]);
    assert_eq!(nexts, vec![Next::Drop as u16; 3]);
}

/// One SYN through `svc` in a one-buffer frame, with `macs` and the buffer
/// traced or not: the frame as it leaves, its next node and its trace record.
fn one_frame(
    svc: &Service,
    macs: &InterfaceMacs,
    traced: bool,
    inp: &Input,
) -> (Vec<u8>, u16, Option<TraceNote>) {
    let mut out = frame_of(svc, macs, traced.then_some(0), std::slice::from_ref(inp));
    out.swap_remove(0)
}

/// The inputs through `svc` in one frame, buffer `traced` (if any) traced:
/// per buffer, the frame as it leaves, its next node and its trace record.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn frame_of(
    svc: &Service,
    macs: &InterfaceMacs,
    traced: Option<usize>,
    inputs: &[Input],
) -> Vec<(Vec<u8>, u16, Option<TraceNote>)> {
    let n = inputs.len();
    let mut w = Worker::<B>::new_box_zeroed().unwrap();
    let mut arena = Arena::new(n);
    for (slot, inp) in inputs.iter().enumerate() {
        fill(&mut arena, slot, inp);
    }
    if let Some(t) = traced {
        // SAFETY: header of an arena buffer, not otherwise referenced.
        unsafe {
            (*meta(arena.buf(t))).flags |= VLIB_BUFFER_IS_TRACED;
        }
    }
    let indices: Vec<u32> = (0..n).map(Arena::index).collect();
    let mut nexts = vec![0u16; n];
    let mut verdicts = vec![Verdict::Host; n];
    let mut counts = FrameCounts::default();
    let mut notes = vec![
        TraceNote {
            sport: 0xdead,
            ..TraceNote::default()
        };
        n
    ];
    // SAFETY: the arena's buffers, each once.
    unsafe {
        process_frame(
            &mut w,
            svc,
            1,
            NodeFamily::Ip4,
            FrameBuffers {
                buffer_mem_start: arena.ptr,
                indices: &indices,
                data_size: DATA_SIZE,
                macs,
            },
            &mut nexts,
            &mut verdicts,
            &mut counts,
            Some(&mut notes),
        )
    };
    (0..n)
        .map(|slot| {
            let (cd, len, _) = meta_of(&arena, slot);
            let at = (PRE_DATA as isize + isize::from(cd)) as usize;
            let out = arena.view(slot)[at..at + usize::from(len)].to_vec();
            let note = (notes[slot].sport != 0xdead).then_some(notes[slot]);
            (out, nexts[slot], note)
        })
        .collect()
}

#[test]
fn an_l2_dsr_frame_leaves_with_its_interface_mac_unless_one_is_configured() {
    let lines = [
        "set-vip 10.0.0.3 encap l2dsr",
        "set-servers 10.1.0.1 mac 02:00:00:00:01:01",
    ];
    let inp = syn_input("192.0.2.1", "10.0.0.3", 4000, 80);
    let mut macs = InterfaceMacs::default();
    let own = [0x02, 0xfe, 0, 0, 0, 0x07];
    macs.set(RX_IF, own);
    macs.set(RX_IF + 1, [0x02, 0xfe, 0, 0, 0, 0x08]);
    // No `conf mac`: the RX (= TX) interface's MAC, not 00:00:00:00:00:00
    // (which a Linux bridge drops).
    let (out, next, _) = one_frame(&service(&lines), &macs, false, &inp);
    assert_eq!(next, Next::InterfaceOutput as u16);
    assert_eq!(&out[0..6], &[2, 0, 0, 0, 1, 1], "to the backend's MAC");
    assert_eq!(&out[6..12], &own, "from the interface's own MAC");
    // An interface the table does not know: the configured (zero) MAC.
    let (out, ..) = one_frame(&service(&lines), &NO_MACS, false, &inp);
    assert_eq!(&out[6..12], &[0; 6]);
    // The operator's `conf mac` wins.
    let mut with_conf = lines.to_vec();
    with_conf.push("conf mac 02:00:00:00:09:09");
    let (out, ..) = one_frame(&service(&with_conf), &macs, false, &inp);
    assert_eq!(&out[6..12], &[2, 0, 0, 0, 9, 9]);
}

#[test]
fn a_traced_buffer_gets_a_record_of_its_flow_verdict_and_backend() {
    let svc = service(&[
        "set-vip 10.0.0.3 protocol tcp port 80 encap l2dsr",
        "set-servers 10.1.0.1 mac 02:00:00:00:01:01",
    ]);
    let inp = syn_input("192.0.2.1", "10.0.0.3", 4000, 80);
    let (_, _, note) = one_frame(&svc, &NO_MACS, false, &inp);
    assert_eq!(note, None, "an untraced buffer's record is left alone");
    let (_, _, note) = one_frame(&svc, &NO_MACS, true, &inp);
    let note = note.expect("traced");
    assert_eq!(
        note.to_string(),
        "TCP 192.0.2.1 port 4000 -> 10.0.0.3 port 80 flags 0x02: forward to backend 0 \
         (10.1.0.1), next interface-output"
    );
    // A drop names the core's reason.
    let other = syn_input("192.0.2.1", "10.0.0.3", 4000, 81);
    let (_, next, note) = one_frame(&svc, &NO_MACS, true, &other);
    assert_eq!(next, Next::Drop as u16);
    assert!(
        note.expect("traced")
            .to_string()
            .ends_with(": drop (no_vip), next error-drop"),
        "{note:?}"
    );
    // In a frame of many buffers (processed in pieces), the record of a
    // traced buffer past the first piece is its own, and no other buffer
    // gets one.
    let inputs: Vec<Input> = (0..70)
        .map(|i| {
            syn_input(
                "192.0.2.1",
                "10.0.0.3",
                5000 + i,
                if i == 45 { 81 } else { 80 },
            )
        })
        .collect();
    for traced in [0, 31, 32, 45, 69] {
        let out = frame_of(&svc, &NO_MACS, Some(traced), &inputs);
        for (slot, (_, next, note)) in out.iter().enumerate() {
            if slot != traced {
                assert_eq!(*note, None, "buffer {slot} (traced {traced})");
                continue;
            }
            let text = note.expect("traced").to_string();
            assert!(
                text.starts_with(&format!("TCP 192.0.2.1 port {} ", 5000 + slot)),
                "{text}"
            );
            let dropped = slot == 45;
            assert_eq!(*next == Next::Drop as u16, dropped, "{text}");
            assert_eq!(
                text.ends_with(": drop (no_vip), next error-drop"),
                dropped,
                "{text}"
            );
        }
    }
}
