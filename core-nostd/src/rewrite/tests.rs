//! Rewrite tests: frames built with etherparse, outputs parsed with etherparse and
//! checked field by field; property tests for "never panics, never writes outside".

use super::*;
use crate::wire::checksum;
use crate::wire::meta::ip_proto;
use etherparse::{
    Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpHeaders, IpNumber, Ipv4Dscp, Ipv4Ecn,
    Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, PacketBuilderStep, VlanId,
};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const EGRESS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
const CLIENT4: [u8; 4] = [198, 51, 100, 7];
const VIP4: [u8; 4] = [203, 0, 113, 10];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const BACKEND4: [u8; 4] = [10, 1, 2, 3];
const BACKEND6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
const HASH: u64 = 0x0123_4567_89ab_cdef;
const HEADROOM: usize = 64;

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp,
    Udp,
    /// ICMP(v6) message with this type and code.
    Icmp(u8, u8),
}

#[derive(Clone, Copy, Debug)]
struct Spec {
    v6: bool,
    vlan: bool,
    l4: L4,
    payload: usize,
    df: bool,
    pad: usize,
    ttl: u8,
}

impl Spec {
    fn new(v6: bool, vlan: bool, l4: L4, payload: usize) -> Spec {
        Spec {
            v6,
            vlan,
            l4,
            payload,
            df: true,
            pad: 0,
            ttl: 57,
        }
    }
}

fn finish(step: PacketBuilderStep<IpHeaders>, l4: L4, v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match l4 {
        L4::Tcp => step
            .tcp(40000, 80, 7, 65535)
            .syn()
            .write(&mut out, payload)
            .unwrap(),
        L4::Udp => step.udp(5353, 53).write(&mut out, payload).unwrap(),
        L4::Icmp(t, c) if v6 => step
            .icmpv6_raw(t, c, [0; 4])
            .write(&mut out, payload)
            .unwrap(),
        L4::Icmp(t, c) => step
            .icmpv4_raw(t, c, [0; 4])
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

/// A client-to-VIP frame, with Ethernet padding appended.
fn frame(s: Spec) -> Vec<u8> {
    let iph = if s.v6 {
        IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: 0xb9,
                flow_label: Ipv6FlowLabel::try_new(0x54321).unwrap(),
                hop_limit: s.ttl,
                source: CLIENT6,
                destination: VIP6,
                ..Default::default()
            },
            Default::default(),
        )
    } else {
        let mut h = Ipv4Header::new(0, s.ttl, IpNumber::TCP, CLIENT4, VIP4).unwrap();
        h.dont_fragment = s.df;
        h.identification = 0x1234;
        h.dscp = Ipv4Dscp::try_new(46).unwrap();
        h.ecn = Ipv4Ecn::try_new(1).unwrap();
        IpHeaders::Ipv4(h, Default::default())
    };
    let payload: Vec<u8> = (0..s.payload).map(|i| (i * 7 + 3) as u8).collect();
    let step = if s.vlan {
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .single_vlan(VlanId::try_new(42).unwrap())
            .ip(iph)
    } else {
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC).ip(iph)
    };
    let mut f = finish(step, s.l4, s.v6, &payload);
    f.extend(core::iter::repeat_n(0u8, s.pad));
    f
}

/// The parser's summary of `f`, derived by hand (the real parser is elsewhere).
fn meta_of(f: &[u8]) -> PacketMeta {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([f[off], f[off + 1]]);
    let mut tags = 0;
    while (ethertype == 0x8100 || ethertype == 0x88a8) && tags < 2 {
        off += 4;
        tags += 1;
        ethertype = u16::from_be_bytes([f[off], f[off + 1]]);
    }
    let l3 = off + 2;
    let mut m = PacketMeta {
        vlan_tags: tags,
        l3_offset: l3 as u16,
        ..Default::default()
    };
    if ethertype == 0x0800 {
        let (h, _) = Ipv4Header::from_slice(&f[l3..]).unwrap();
        m.family = IpFamily::V4;
        m.l3_len = h.total_len;
        m.l4_offset = (l3 + h.header_len()) as u16;
        m.proto = h.protocol.0;
        m.ttl = h.time_to_live;
        m.dont_fragment = h.dont_fragment;
        m.src[..4].copy_from_slice(&h.source);
        m.dst[..4].copy_from_slice(&h.destination);
    } else {
        let (h, _) = Ipv6Header::from_slice(&f[l3..]).unwrap();
        m.family = IpFamily::V6;
        m.l3_len = h.payload_length + 40;
        m.l4_offset = (l3 + 40) as u16;
        m.proto = h.next_header.0;
        m.ttl = h.hop_limit;
        m.dont_fragment = true;
        m.src = h.source;
        m.dst = h.destination;
    }
    m.outer_src = m.src;
    m
}

fn target(encap: Encap, family: IpFamily) -> Target {
    let mut addr = [0u8; 16];
    match family {
        IpFamily::V4 => addr[..4].copy_from_slice(&BACKEND4),
        IpFamily::V6 => addr = BACKEND6,
    }
    Target {
        encap,
        dst_mac: BACKEND_MAC,
        family,
        addr,
    }
}

fn egress(mtu: u16) -> Egress {
    Egress {
        src_mac: EGRESS_MAC,
        src_v4: [10, 1, 0, 1],
        src_v6: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu,
    }
}

/// Puts `f` into a buffer with `HEADROOM` bytes of headroom and some tailroom.
fn in_buffer(f: &[u8]) -> Vec<u8> {
    let mut buf = vec![0xa5u8; HEADROOM + f.len() + 16];
    buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
    buf
}

fn run(f: &[u8], t: &Target, e: &Egress) -> (Vec<u8>, Result<Rewritten, RewriteError>) {
    let mut buf = in_buffer(f);
    let m = meta_of(f);
    let r = rewrite(&mut buf, HEADROOM, f.len(), &m, t, e, HASH);
    (buf, r)
}

/// The inner L4 checksum (TCP/UDP/ICMPv6 with pseudo header, ICMPv4 without) is valid.
fn l4_checksum_ok(ip: &[u8]) -> bool {
    if ip[0] >> 4 == 4 {
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let l4 = &ip[ihl..];
        if ip[9] == ip_proto::ICMP {
            return checksum::checksum(l4) == 0;
        }
        let src: [u8; 4] = ip[12..16].try_into().unwrap();
        let dst: [u8; 4] = ip[16..20].try_into().unwrap();
        let ph = checksum::pseudo_header_v4(&src, &dst, ip[9], l4.len() as u32);
        checksum::fold(checksum::sum(ph, l4)) == 0xffff
    } else {
        let l4 = &ip[40..];
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        let dst: [u8; 16] = ip[24..40].try_into().unwrap();
        let ph = checksum::pseudo_header_v6(&src, &dst, ip[6], l4.len() as u32);
        checksum::fold(checksum::sum(ph, l4)) == 0xffff
    }
}

/// `inner` is `orig` with the TTL / hop limit decremented and a valid IPv4 checksum.
fn assert_inner(orig: &[u8], inner: &[u8]) {
    assert_eq!(orig.len(), inner.len());
    let (ttl_at, skip): (usize, &[usize]) = if orig[0] >> 4 == 4 {
        (8, &[8, 10, 11])
    } else {
        (7, &[7])
    };
    assert_eq!(inner[ttl_at], orig[ttl_at] - 1);
    for i in 0..orig.len() {
        if !skip.contains(&i) {
            assert_eq!(inner[i], orig[i], "inner byte {i} changed");
        }
    }
    if orig[0] >> 4 == 4 {
        let (h, _) = Ipv4Header::from_slice(inner).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(checksum::checksum(&inner[..20]), 0);
    }
    assert!(l4_checksum_ok(inner));
}

fn inner_tos(ip: &[u8]) -> u8 {
    if ip[0] >> 4 == 4 {
        ip[1]
    } else {
        (ip[0] << 4) | (ip[1] >> 4)
    }
}

/// Checks an encapsulated frame against the original frame.
fn assert_tunnel(f: &[u8], out: &[u8], t: &Target) {
    let m = meta_of(f);
    let orig_ip = &f[usize::from(m.l3_offset)..][..usize::from(m.l3_len)];
    assert_eq!(out[..6], BACKEND_MAC);
    assert_eq!(out[6..12], EGRESS_MAC);
    let ovh = overhead(t.encap, t.family);
    assert_eq!(out.len(), 14 + ovh + orig_ip.len(), "padding must be gone");
    let inner_v6 = m.family == IpFamily::V6;
    let expect_proto = match (t.encap, inner_v6) {
        (Encap::Gre, _) => 47,
        (_, false) => 4,
        (_, true) => 41,
    };
    let ip_hlen = match t.family {
        IpFamily::V4 => {
            assert_eq!(out[12..14], [0x08, 0x00]);
            let (h, _) = Ipv4Header::from_slice(&out[14..]).unwrap();
            assert_eq!(h.header_len(), 20);
            assert_eq!(checksum::checksum(&out[14..34]), 0);
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_eq!(usize::from(h.total_len), out.len() - 14);
            assert_eq!(h.identification, HASH as u16);
            assert_eq!(h.dont_fragment, m.dont_fragment || inner_v6);
            assert!(!h.more_fragments);
            assert_eq!(h.fragment_offset.value(), 0);
            assert_eq!(h.time_to_live, 64);
            assert_eq!(h.protocol.0, expect_proto);
            assert_eq!(h.source, [10, 1, 0, 1]);
            assert_eq!(h.destination, BACKEND4);
            assert_eq!((h.dscp.value() << 2) | h.ecn.value(), inner_tos(orig_ip));
            20
        }
        IpFamily::V6 => {
            assert_eq!(out[12..14], [0x86, 0xdd]);
            let (h, _) = Ipv6Header::from_slice(&out[14..]).unwrap();
            assert_eq!(usize::from(h.payload_length), out.len() - 14 - 40);
            assert_eq!(h.next_header.0, expect_proto);
            assert_eq!(h.hop_limit, 64);
            assert_eq!(h.flow_label.value(), (HASH & 0xfffff) as u32);
            assert_eq!(h.traffic_class, inner_tos(orig_ip));
            assert_eq!(h.source[15], 1);
            assert_eq!(h.destination, BACKEND6);
            40
        }
    };
    if t.encap == Encap::Gre {
        let gre = &out[14 + ip_hlen..14 + ip_hlen + 4];
        let ty: [u8; 2] = if inner_v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
        assert_eq!(gre, [0, 0, ty[0], ty[1]]);
    }
    assert_inner(orig_ip, &out[14 + ovh..]);
}

fn shapes() -> Vec<Spec> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        for vlan in [false, true] {
            for l4 in [L4::Tcp, L4::Udp] {
                for (payload, pad) in [(0, 0), (1, 0), (300, 0), (2, 0)] {
                    let mut s = Spec::new(v6, vlan, l4, payload);
                    // Short frames get Ethernet padding to 60 bytes, and some garbage.
                    s.pad = if payload < 20 {
                        60usize.saturating_sub(14 + 40 + payload) + 3
                    } else {
                        pad
                    };
                    v.push(s);
                }
            }
        }
    }
    v
}

#[test]
fn overhead_values() {
    assert_eq!(overhead(Encap::L2Dsr, IpFamily::V4), 0);
    assert_eq!(overhead(Encap::L2Dsr, IpFamily::V6), 0);
    assert_eq!(overhead(Encap::IpIp, IpFamily::V4), 20);
    assert_eq!(overhead(Encap::IpIp, IpFamily::V6), 40);
    assert_eq!(overhead(Encap::Gre, IpFamily::V4), 24);
    assert_eq!(overhead(Encap::Gre, IpFamily::V6), 44);
    for (i, e) in RewriteError::ALL.iter().enumerate() {
        assert_eq!(*e as usize, i);
    }
}

#[test]
fn tunnels_every_shape_and_outer_family() {
    for s in shapes() {
        let f = frame(s);
        for encap in [Encap::IpIp, Encap::Gre] {
            for fam in [IpFamily::V4, IpFamily::V6] {
                let t = target(encap, fam);
                let (buf, r) = run(&f, &t, &egress(1500));
                let (start, len) = match r {
                    Ok(Rewritten::Forward { start, len }) => (start, len),
                    other => panic!("{s:?} {encap:?} {fam:?}: {other:?}"),
                };
                let m = meta_of(&f);
                assert_eq!(
                    start,
                    HEADROOM + usize::from(m.l3_offset) - 14 - overhead(encap, fam)
                );
                assert_tunnel(&f, &buf[start..start + len], &t);
            }
        }
    }
}

#[test]
fn tunnel_ipv4_without_df_keeps_df_clear() {
    let mut s = Spec::new(false, true, L4::Udp, 100);
    s.df = false;
    let f = frame(s);
    let t = target(Encap::IpIp, IpFamily::V4);
    let (buf, r) = run(&f, &t, &egress(1500));
    let (start, len) = r.unwrap().frame();
    assert_tunnel(&f, &buf[start..start + len], &t);
    let (h, _) = Ipv4Header::from_slice(&buf[start + 14..]).unwrap();
    assert!(!h.dont_fragment);
}

#[test]
fn l2_dsr_every_shape() {
    for s in shapes() {
        let f = frame(s);
        let m = meta_of(&f);
        let l3 = usize::from(m.l3_offset);
        let (buf, r) = run(&f, &target(Encap::L2Dsr, IpFamily::V6), &egress(1500));
        assert_eq!(
            r,
            Ok(Rewritten::Forward {
                start: HEADROOM,
                len: l3 + usize::from(m.l3_len)
            })
        );
        let out = &buf[HEADROOM..HEADROOM + l3 + usize::from(m.l3_len)];
        assert_eq!(out[..6], BACKEND_MAC);
        assert_eq!(out[6..12], EGRESS_MAC);
        assert_eq!(out[12..l3], f[12..l3], "VLAN tags and EtherType kept");
        assert_inner(&f[l3..l3 + usize::from(m.l3_len)], &out[l3..]);
        // Headroom untouched.
        assert!(buf[..HEADROOM].iter().all(|&b| b == 0xa5));
    }
}

#[test]
fn mtu_boundary_is_inclusive() {
    let f = frame(Spec::new(false, false, L4::Tcp, 1000));
    let l3_len = usize::from(meta_of(&f).l3_len);
    let t = target(Encap::Gre, IpFamily::V4);
    let (_, r) = run(&f, &t, &egress((l3_len + 24) as u16));
    assert!(matches!(r, Ok(Rewritten::Forward { .. })));
    let (_, r) = run(&f, &t, &egress((l3_len + 23) as u16));
    assert!(matches!(r, Ok(Rewritten::Reply { .. })));
    let (_, r) = run(
        &f,
        &target(Encap::L2Dsr, IpFamily::V4),
        &egress(l3_len as u16),
    );
    assert!(matches!(r, Ok(Rewritten::Forward { .. })));
}

/// Checks an ICMPv4 "fragmentation needed" reply built from frame `f`.
fn assert_frag_needed(f: &[u8], out: &[u8], mtu: u16) {
    let m = meta_of(f);
    let l2 = usize::from(m.l3_offset);
    let orig_ip = &f[l2..l2 + usize::from(m.l3_len)];
    assert_eq!(out[..6], CLIENT_MAC);
    assert_eq!(out[6..12], EGRESS_MAC);
    assert_eq!(out[12..l2], f[12..l2], "VLAN tags kept");
    let (h, rest) = Ipv4Header::from_slice(&out[l2..]).unwrap();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(h.source, VIP4);
    assert_eq!(h.destination, CLIENT4);
    assert_eq!(h.protocol, IpNumber::ICMP);
    assert_eq!(h.time_to_live, 64);
    assert_eq!(usize::from(h.total_len), out.len() - l2);
    assert!(out.len() - l2 <= 576);
    let quoted = orig_ip.len().min(548);
    assert_eq!(rest.len(), 8 + quoted);
    let icmp = Icmpv4Slice::from_slice(rest).unwrap();
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu }
        )
    );
    assert_eq!(checksum::checksum(rest), 0);
    assert_eq!(
        icmp.checksum(),
        icmp.header().icmp_type.calc_checksum(icmp.payload())
    );
    // Quoted as received (TTL not yet decremented).
    assert_eq!(icmp.payload(), &orig_ip[..quoted]);
}

#[test]
fn ipv4_df_too_big_gives_frag_needed() {
    for vlan in [false, true] {
        for (encap, fam, ovh) in [
            (Encap::IpIp, IpFamily::V4, 20u16),
            (Encap::Gre, IpFamily::V6, 44),
            (Encap::L2Dsr, IpFamily::V4, 0),
        ] {
            for payload in [1400, 400] {
                let f = frame(Spec::new(false, vlan, L4::Tcp, payload));
                let mtu = meta_of(&f).l3_len - 1;
                let (buf, r) = run(&f, &target(encap, fam), &egress(mtu));
                let extra = 28;
                let Ok(Rewritten::Reply { start, len }) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(start, HEADROOM - extra);
                assert_frag_needed(&f, &buf[start..start + len], mtu - ovh);
                // Nothing after the reply frame changed except what was there.
                assert!(buf[start + len..HEADROOM + f.len()] == f[start + len - HEADROOM..]);
            }
        }
    }
}

#[test]
fn ipv6_too_big_gives_packet_too_big() {
    for vlan in [false, true] {
        for (encap, fam, mtu, expect) in [
            (Encap::IpIp, IpFamily::V4, 1400u16, 1380u32),
            (Encap::Gre, IpFamily::V6, 1500, 1456),
            (Encap::IpIp, IpFamily::V6, 1300, 1280), // 1260 is clamped to 1280
            (Encap::L2Dsr, IpFamily::V6, 1400, 1400),
        ] {
            for payload in [1460, 1300] {
                let f = frame(Spec::new(true, vlan, L4::Udp, payload));
                let m = meta_of(&f);
                if usize::from(m.l3_len) + overhead(encap, fam) <= usize::from(mtu) {
                    continue;
                }
                let (buf, r) = run(&f, &target(encap, fam), &egress(mtu));
                let Ok(Rewritten::Reply { start, len }) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(start, HEADROOM - 48);
                let out = &buf[start..start + len];
                let l2 = usize::from(m.l3_offset);
                let orig_ip = &f[l2..l2 + usize::from(m.l3_len)];
                assert_eq!(out[..6], CLIENT_MAC);
                assert_eq!(out[6..12], EGRESS_MAC);
                assert_eq!(out[12..l2], f[12..l2]);
                let (h, rest) = Ipv6Header::from_slice(&out[l2..]).unwrap();
                assert_eq!(h.source, VIP6);
                assert_eq!(h.destination, CLIENT6);
                assert_eq!(h.hop_limit, 64);
                assert_eq!(h.next_header, IpNumber::IPV6_ICMP);
                assert_eq!(out.len() - l2, 1280);
                assert_eq!(usize::from(h.payload_length), rest.len());
                let icmp = Icmpv6Slice::from_slice(rest).unwrap();
                assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: expect });
                assert!(icmp.is_checksum_valid(VIP6, CLIENT6));
                assert_eq!(icmp.payload(), &orig_ip[..1232]);
            }
        }
    }
}

#[test]
fn ipv6_small_packet_quoted_whole() {
    // A 1000-byte packet over a misconfigured 1000-byte link: quoted in full.
    let f = frame(Spec::new(true, false, L4::Tcp, 940));
    let (buf, r) = run(&f, &target(Encap::IpIp, IpFamily::V6), &egress(1000));
    let (start, len) = r.unwrap().frame();
    let out = &buf[start..start + len];
    let icmp = Icmpv6Slice::from_slice(&out[14 + 40..]).unwrap();
    assert!(icmp.is_checksum_valid(VIP6, CLIENT6));
    assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1280 });
    assert_eq!(icmp.payload(), &f[14..]);
}

#[test]
fn ipv4_without_df_is_dropped_unchanged() {
    let mut s = Spec::new(false, true, L4::Udp, 1400);
    s.df = false;
    let f = frame(s);
    let (buf, r) = run(&f, &target(Encap::Gre, IpFamily::V4), &egress(1400));
    assert_eq!(r, Err(RewriteError::TooBigNoDf));
    assert_eq!(buf, in_buffer(&f));
}

#[test]
fn no_icmp_error_about_icmp_error() {
    for v6 in [false, true] {
        let ty = if v6 { 1 } else { 3 };
        let f = frame(Spec::new(v6, false, L4::Icmp(ty, 1), 1400));
        let t = target(Encap::IpIp, IpFamily::V4);
        // Detected from the bytes alone...
        let (buf, r) = run(&f, &t, &egress(1400));
        assert_eq!(r, Err(RewriteError::TooBigIcmpError));
        assert_eq!(buf, in_buffer(&f));
        // ...and from the parser's flag.
        let mut buf = in_buffer(&f);
        let mut m = meta_of(&f);
        m.icmp_error = true;
        let r = rewrite(&mut buf, HEADROOM, f.len(), &m, &t, &egress(1400), HASH);
        assert_eq!(r, Err(RewriteError::TooBigIcmpError));
    }
    // Echo requests do get an error.
    for (v6, ty) in [(false, 8), (true, 128)] {
        let f = frame(Spec::new(v6, false, L4::Icmp(ty, 0), 1400));
        let (_, r) = run(&f, &target(Encap::IpIp, IpFamily::V4), &egress(1400));
        assert!(matches!(r, Ok(Rewritten::Reply { .. })), "{r:?}");
    }
    // Small ICMP errors are forwarded like anything else.
    let f = frame(Spec::new(false, false, L4::Icmp(3, 4), 100));
    let t = target(Encap::IpIp, IpFamily::V4);
    let (buf, r) = run(&f, &t, &egress(1500));
    let (start, len) = r.unwrap().frame();
    assert_tunnel(&f, &buf[start..start + len], &t);
}

#[test]
fn no_reply_to_non_unicast_source_or_later_fragment() {
    let f = frame(Spec::new(false, false, L4::Tcp, 1400));
    let t = target(Encap::IpIp, IpFamily::V4);
    let mut m = meta_of(&f);
    m.src[0] = 224;
    let mut buf = in_buffer(&f);
    let r = rewrite(&mut buf, HEADROOM, f.len(), &m, &t, &egress(1400), HASH);
    assert_eq!(r, Err(RewriteError::TooBigNoReply));
    // Fragment offset 8 (and a fixed-up header checksum).
    let mut g = f.clone();
    g[14 + 7] = 1;
    g[14 + 10] = 0;
    g[14 + 11] = 0;
    let c = checksum::checksum(&g[14..34]);
    g[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let (_, r) = run(&g, &t, &egress(1400));
    assert_eq!(r, Err(RewriteError::TooBigNoReply));
}

#[test]
fn headroom_and_ttl_errors_leave_buffer_unchanged() {
    let f = frame(Spec::new(false, false, L4::Tcp, 100));
    let m = meta_of(&f);
    for (encap, fam, need) in [
        (Encap::IpIp, IpFamily::V4, 20),
        (Encap::Gre, IpFamily::V6, 44),
    ] {
        let t = target(encap, fam);
        let mut buf = in_buffer(&f);
        let s = HEADROOM - need + 1;
        let r = rewrite(
            &mut buf[s..],
            need - 1,
            f.len(),
            &m,
            &t,
            &egress(1500),
            HASH,
        );
        assert_eq!(r, Err(RewriteError::NoHeadroom));
        assert_eq!(buf, in_buffer(&f));
        let r = rewrite(
            &mut buf[s - 1..],
            need,
            f.len(),
            &m,
            &t,
            &egress(1500),
            HASH,
        );
        assert_eq!(
            r,
            Ok(Rewritten::Forward {
                start: 0,
                len: 14 + need + f.len() - 14
            })
        );
    }
    // ICMP error needs 28 bytes.
    let big = frame(Spec::new(false, false, L4::Tcp, 1400));
    let mut buf = in_buffer(&big);
    let r = rewrite(
        &mut buf[HEADROOM - 27..],
        27,
        big.len(),
        &meta_of(&big),
        &target(Encap::L2Dsr, IpFamily::V4),
        &egress(1400),
        HASH,
    );
    assert_eq!(r, Err(RewriteError::NoHeadroom));
    assert_eq!(buf, in_buffer(&big));
    for v6 in [false, true] {
        for ttl in [0, 1] {
            let mut s = Spec::new(v6, true, L4::Udp, 10);
            s.ttl = ttl;
            let f = frame(s);
            let (buf, r) = run(&f, &target(Encap::IpIp, IpFamily::V4), &egress(1500));
            assert_eq!(r, Err(RewriteError::TtlExpired));
            assert_eq!(buf, in_buffer(&f));
        }
    }
}

#[test]
fn inconsistent_inputs_are_malformed() {
    let f = frame(Spec::new(false, true, L4::Tcp, 10));
    let m = meta_of(&f);
    let t = target(Encap::IpIp, IpFamily::V4);
    let e = egress(1500);
    let mut buf = in_buffer(&f);
    let n = buf.len();
    let bad = |mut g: PacketMeta, f: fn(&mut PacketMeta)| {
        f(&mut g);
        g
    };
    let cases: [(usize, usize, PacketMeta); 9] = [
        (HEADROOM, n, m),
        (usize::MAX, 2, m),
        (n, 1, m),
        (HEADROOM, f.len(), bad(m, |m| m.l3_offset = 10)),
        (HEADROOM, f.len(), bad(m, |m| m.l3_len += 100)),
        (HEADROOM, f.len(), bad(m, |m| m.l3_len -= 1)),
        (HEADROOM, f.len(), bad(m, |m| m.family = IpFamily::V6)),
        (HEADROOM, f.len(), bad(m, |m| m.l3_offset = 14)),
        (HEADROOM, 20, m),
    ];
    for (start, len, meta) in cases {
        let r = rewrite(&mut buf, start, len, &meta, &t, &e, HASH);
        assert_eq!(r, Err(RewriteError::Malformed), "{start} {len} {meta:?}");
    }
    assert_eq!(buf, in_buffer(&f));
}

/// Every byte of `after` outside the new frame and the old frame equals `before`.
fn only_frames_touched(
    before: &[u8],
    after: &[u8],
    start: usize,
    len: usize,
    r: Result<Rewritten, RewriteError>,
) {
    assert_eq!(before.len(), after.len());
    match r {
        Err(_) => assert_eq!(before, after, "error but buffer changed"),
        Ok(ok) => {
            let (s, l) = ok.frame();
            assert!(s + l <= after.len());
            // Within the documented window: at most MAX_HEADROOM earlier, never longer.
            assert!(s + MAX_HEADROOM >= start && s + l <= start + len);
            for i in 0..after.len() {
                let in_new = i >= s && i < s + l;
                let in_old = i >= start && i < start + len;
                if !in_new && !in_old {
                    assert_eq!(before[i], after[i], "byte {i} outside both frames changed");
                }
            }
        }
    }
}

fn any_family() -> impl Strategy<Value = IpFamily> {
    prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)]
}

fn any_encap() -> impl Strategy<Value = Encap> {
    prop_oneof![Just(Encap::L2Dsr), Just(Encap::IpIp), Just(Encap::Gre)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random buffers, offsets and metadata: no panic, no stray write.
    #[test]
    fn random_inputs_never_panic_or_stray(
        mut buf in proptest::collection::vec(any::<u8>(), 0..400),
        start in 0usize..420,
        len in 0usize..420,
        l3_offset in 0u16..80,
        l3_len in 0u16..420,
        family in any_family(),
        df in any::<bool>(),
        icmp_error in any::<bool>(),
        proto in any::<u8>(),
        l4_offset in any::<u16>(),
        src in any::<[u8; 16]>(),
        encap in any_encap(),
        outer in any_family(),
        mtu in any::<u16>(),
        hash in any::<u64>(),
        version_fix in any::<bool>(),
    ) {
        // Half the time make the IP version and length agree, to get past `check`.
        let l3 = start.saturating_add(usize::from(l3_offset));
        if version_fix && l3 + 6 <= buf.len() {
            let v = if family == IpFamily::V4 { 0x45 } else { 0x60 };
            buf[l3] = v;
            let n = if family == IpFamily::V4 { l3_len } else { l3_len.wrapping_sub(40) };
            let at = if family == IpFamily::V4 { 2 } else { 4 };
            buf[l3 + at..l3 + at + 2].copy_from_slice(&n.to_be_bytes());
        }
        let meta = PacketMeta {
            l3_offset, l3_len, family, dont_fragment: df, icmp_error, proto, l4_offset,
            src, dst: [9; 16], ..Default::default()
        };
        let mut addr = [7u8; 16];
        addr[0] = 10;
        let t = Target { encap, dst_mac: BACKEND_MAC, family: outer, addr };
        let before = buf.clone();
        let r = rewrite(&mut buf, start, len, &meta, &t, &egress(mtu), hash);
        only_frames_touched(&before, &buf, start, len, r);
    }

    /// Real frames at random positions, random MTUs and targets: the output parses
    /// and no byte outside the two frames changes.
    #[test]
    fn real_frames_any_mtu(
        v6 in any::<bool>(),
        vlan in any::<bool>(),
        udp in any::<bool>(),
        payload in 0usize..1600,
        df in any::<bool>(),
        pad in 0usize..8,
        headroom in 0usize..80,
        encap in any_encap(),
        outer in any_family(),
        mtu in 1200u16..1700,
        hash in any::<u64>(),
    ) {
        let mut s = Spec::new(v6, vlan, if udp { L4::Udp } else { L4::Tcp }, payload);
        s.df = df;
        s.pad = pad;
        let f = frame(s);
        let m = meta_of(&f);
        let mut buf = vec![0x5au8; headroom + f.len() + 4];
        buf[headroom..headroom + f.len()].copy_from_slice(&f);
        let before = buf.clone();
        let t = target(encap, outer);
        let r = rewrite(&mut buf, headroom, f.len(), &m, &t, &egress(mtu), hash);
        only_frames_touched(&before, &buf, headroom, f.len(), r);
        let too_big = usize::from(m.l3_len) + overhead(encap, outer) > usize::from(mtu);
        match r {
            Ok(Rewritten::Forward { start, len }) => {
                prop_assert!(!too_big);
                let out = &buf[start..start + len];
                if encap == Encap::L2Dsr {
                    let l3 = usize::from(m.l3_offset);
                    assert_inner(&f[l3..l3 + usize::from(m.l3_len)], &out[l3..]);
                } else {
                    // Same hash as the fixed tests: re-run with HASH for assert_tunnel.
                    let mut buf2 = before.clone();
                    let r2 = rewrite(&mut buf2, headroom, f.len(), &m, &t, &egress(mtu), HASH);
                    prop_assert_eq!(r2, r);
                    assert_tunnel(&f, &buf2[start..start + len], &t);
                }
            }
            Ok(Rewritten::Reply { start, len }) => {
                prop_assert!(too_big && (df || v6));
                let l2 = usize::from(m.l3_offset);
                let limit = if v6 { 1280 } else { 576 };
                prop_assert!(len - l2 <= limit);
                if !v6 {
                    let ovh = overhead(encap, outer) as u16;
                    assert_frag_needed(&f, &buf[start..start + len], mtu - ovh);
                }
            }
            Err(e) => {
                let expected = if !too_big {
                    RewriteError::NoHeadroom
                } else if !(df || v6) {
                    RewriteError::TooBigNoDf
                } else {
                    RewriteError::NoHeadroom
                };
                prop_assert_eq!(e, expected);
            }
        }
    }
}
