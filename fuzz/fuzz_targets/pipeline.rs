//! Arbitrary frames through the whole pipeline (parse, classify, flow table,
//! choice, rewrite, telemetry) in batches: no panic; every forwarded frame parses
//! again, its outer IPv4 header checksum is valid, and the inner IPv4 header
//! checksum is valid whenever it was valid on input; every ICMP reply carries a
//! valid checksum. Differential: a second worker with the fast path off gets
//! copies of the same frames and must give the same verdicts, output bytes and
//! telemetry (the fast path's contract, `core-nostd/src/pipeline/fast.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use marllb_core::classify::{Verdict, Vip, VipProto};
use marllb_core::pipeline::{Packet, Worker};
use marllb_core::rewrite::{Egress, Encap};
use marllb_core::select::Method;
use marllb_core::service::{AdminState, Backend, Service};
use marllb_core::wire::checksum;
use marllb_core::wire::parse::{parse_frame, verify_l3_checksum};
use marllb_core::wire::{Frame, IpFamily};
use marllb_core::WEIGHT_ONE;
use zerocopy::{FromZeros, IntoBytes};

const HEADROOM: usize = 128;

/// Services are expensive to build (three Maglev tables); build each variant
/// once per process.
fn cached(method: Method, encap: Encap, v6: bool) -> &'static Service {
    use std::sync::OnceLock;
    static CACHE: [OnceLock<Box<Service>>; 18] = [const { OnceLock::new() }; 18];
    let i = (method as usize) * 6 + (encap as usize) * 2 + usize::from(v6);
    CACHE[i].get_or_init(|| service(method, encap, v6))
}

fn service(method: Method, encap: Encap, v6_backends: bool) -> Box<Service> {
    let mut s = Service::new_box_zeroed().expect("alloc");
    s.hash_seed = 7;
    s.set_egress(Egress {
        src_mac: [2, 0, 0, 0, 0, 0xfe],
        src_v4: [198, 19, 0, 1],
        src_v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu: 1500,
    });
    let bs: Vec<Backend> = (0..4u8)
        .map(|i| {
            let (family, addr) = if v6_backends {
                let mut a = [0x20, 1, 0xd, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                a[15] = 10 + i;
                (IpFamily::V6, a)
            } else {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[198, 19, 0, 10 + i]);
                (IpFamily::V4, a)
            };
            Backend {
                family,
                admin: if i == 3 {
                    AdminState::Draining
                } else {
                    AdminState::Active
                },
                mac: [2, 0, 0, 0, 1, i],
                addr,
                weight: WEIGHT_ONE * u32::from(i + 1),
                base_weight: WEIGHT_ONE,
            }
        })
        .collect();
    s.set_backends(&bs).expect("backends");
    let all = [0, 1, 2, 3];
    s.add_vip(
        Vip::v4([198, 18, 255, 1], VipProto::Tcp, 80),
        method,
        encap,
        &all,
    )
    .expect("vip");
    s.add_vip(
        Vip::v4([198, 18, 255, 1], VipProto::Any, 0),
        method,
        encap,
        &all,
    )
    .expect("vip");
    let v6 = [0x20, 1, 0xd, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    s.add_vip(Vip::v6(v6, VipProto::Udp, 53), method, encap, &all)
        .expect("vip");
    s
}

fn icmp_ok(frame: &[u8]) -> bool {
    let Ok(Frame::Ip(m)) = parse_frame(frame) else {
        return false;
    };
    let l4 = usize::from(m.l4_offset);
    let end = usize::from(m.l3_offset) + usize::from(m.l3_len);
    let Some(msg) = frame.get(l4..end) else {
        return false;
    };
    match m.family {
        IpFamily::V4 => checksum::checksum(msg) == 0,
        IpFamily::V6 => {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            let l3 = usize::from(m.l3_offset);
            src.copy_from_slice(&frame[l3 + 8..l3 + 24]);
            dst.copy_from_slice(&frame[l3 + 24..l3 + 40]);
            let s = checksum::pseudo_header_v6(&src, &dst, 58, msg.len() as u32);
            checksum::fold(checksum::sum(s, msg)) == 0xffff
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let method = [Method::Alias, Method::Sed, Method::Maglev][usize::from(sel % 3)];
    let encap = [Encap::L2Dsr, Encap::IpIp, Encap::Gre][usize::from((sel / 3) % 3)];
    let svc = cached(method, encap, sel & 0x80 != 0);
    let mut w = Worker::<16>::new_box_zeroed().expect("alloc");
    w.init(1);
    // Frames: a 2-byte length, then the bytes; at most 64 per input.
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut lens = Vec::new();
    let mut inner_ok = Vec::new();
    let mut r = rest;
    while r.len() >= 2 && bufs.len() < 64 {
        let n = usize::from(u16::from_le_bytes([r[0], r[1]])) % 1600;
        let n = n.min(r.len() - 2);
        let frame = &r[2..2 + n];
        let mut b = vec![0u8; HEADROOM];
        b.extend_from_slice(frame);
        b.extend_from_slice(&[0u8; 32]);
        inner_ok.push(match parse_frame(frame) {
            Ok(Frame::Ip(m)) if m.family == IpFamily::V4 => verify_l3_checksum(frame, &m).is_ok(),
            _ => false,
        });
        bufs.push(b);
        lens.push(n);
        r = &r[2 + n..];
    }
    let mut general = Worker::<16>::new_box_zeroed().expect("alloc");
    general.init(1);
    general.set_fast_path(false);
    let mut bufs2 = bufs.clone();
    let mut pkts: Vec<Packet<'_>> = bufs
        .iter_mut()
        .zip(&lens)
        .map(|(b, l)| Packet::new(b, HEADROOM, *l))
        .collect();
    let mut pkts2: Vec<Packet<'_>> = bufs2
        .iter_mut()
        .zip(&lens)
        .map(|(b, l)| Packet::new(b, HEADROOM, *l))
        .collect();
    let mut verdicts = vec![Verdict::Host; pkts.len()];
    let mut verdicts2 = verdicts.clone();
    let now = 1_000_000_000 + u64::from(sel) * 1_000_000;
    w.process(svc, now, &mut pkts, &mut verdicts);
    general.process(svc, now, &mut pkts2, &mut verdicts2);
    assert_eq!(verdicts, verdicts2, "fast and general paths differ");
    for (a, b) in pkts.iter().zip(&pkts2) {
        assert_eq!((a.start, a.len), (b.start, b.len), "frame offsets differ");
        assert!(
            a.buf == b.buf,
            "fast and general paths wrote different bytes"
        );
    }
    assert!(
        w.telemetry.as_bytes() == general.telemetry.as_bytes(),
        "fast and general paths counted differently"
    );
    for ((p, v), was_ok) in pkts.iter().zip(&verdicts).zip(&inner_ok) {
        let out = p.frame();
        match v {
            Verdict::Forward { backend } => {
                assert!(usize::from(*backend) < 4);
                let Ok(Frame::Ip(m)) = parse_frame(out) else {
                    panic!("a forwarded frame does not parse: {out:02x?}");
                };
                if encap != Encap::L2Dsr && m.family == IpFamily::V4 {
                    assert!(verify_l3_checksum(out, &m).is_ok(), "outer checksum");
                }
                if *was_ok && encap != Encap::L2Dsr {
                    // The inner IPv4 header follows the outer one (and GRE).
                    let l3 = usize::from(m.l3_offset);
                    let inner = l3
                        + if m.family == IpFamily::V4 { 20 } else { 40 }
                        + if encap == Encap::Gre { 4 } else { 0 };
                    let ihl = usize::from(out[inner] & 0x0f) * 4;
                    assert_eq!(
                        checksum::checksum(&out[inner..inner + ihl]),
                        0,
                        "inner checksum"
                    );
                }
                if *was_ok && encap == Encap::L2Dsr {
                    assert!(verify_l3_checksum(out, &m).is_ok(), "DSR checksum");
                }
            }
            Verdict::Reply => assert!(icmp_ok(out), "ICMP reply checksum"),
            Verdict::Host | Verdict::Drop(_) => {}
        }
    }
    let g = &w.telemetry.global;
    assert_eq!(g.rx_packets as usize, pkts.len());
    assert_eq!(
        g.forwarded + g.replies + g.to_host + g.dropped,
        g.rx_packets
    );
    let by_reason: u64 = w.telemetry.drops.iter().sum();
    assert_eq!(by_reason, g.dropped);
});
