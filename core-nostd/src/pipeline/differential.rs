//! The fast path against the general path: two workers, one with the fast path
//! off, get the same packets, admin changes and clock, and must give the same
//! verdicts, output bytes and frame offsets, and end with the same counters,
//! reservoirs, flow table and sync records.
//!
//! The packets come from a small pool of flows (so that SYNs, ACKs, FINs and
//! RSTs of one connection meet in the table, buckets fill and overflow, entries
//! expire) and vary in everything the fast parser looks at: VLAN tags, IP
//! options, fragment bits, TTL, martian sources, checksums, TCP header length,
//! truncation, padding, sizes past the MTU, random byte flips.

use super::*;
use crate::classify::{Vip, VipProto};
use crate::rewrite::{Egress, Encap};
use crate::service::Backend;
use crate::WEIGHT_ONE;
use proptest::prelude::*;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;
use zerocopy::IntoBytes;

const HEADROOM: usize = 64;
const VIP: [u8; 4] = [198, 18, 255, 1];
const VIP2: [u8; 4] = [198, 18, 255, 2];
const MS: u64 = 1_000_000;

type W = Worker<64>;

fn service(method: Method, encap: Encap, v6: bool, verify: bool, mtu: u16) -> Box<Service> {
    let mut s = Service::new_box_zeroed().expect("alloc");
    s.hash_seed = 0x5eed;
    s.verify_checksums = verify;
    s.set_egress(Egress {
        src_mac: [2, 0, 0, 0, 0, 0xfe],
        src_v4: [198, 19, 0, 1],
        src_v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu,
    });
    let bs: Vec<Backend> = (0..4u8)
        .map(|i| {
            let mut addr = [0u8; 16];
            let family = if v6 {
                addr = [0x20, 1, 0xd, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10 + i];
                IpFamily::V6
            } else {
                addr[..4].copy_from_slice(&[198, 19, 0, 10 + i]);
                IpFamily::V4
            };
            Backend {
                family,
                admin: AdminState::Active,
                mac: [2, 0, 0, 0, 1, i],
                addr,
                weight: WEIGHT_ONE * u32::from(i + 1),
                base_weight: WEIGHT_ONE,
            }
        })
        .collect();
    s.set_backends(&bs).expect("backends");
    let all = [0, 1, 2, 3];
    for vip in [
        Vip::v4(VIP, VipProto::Tcp, 80),
        Vip::v4(VIP, VipProto::Udp, 53),
        Vip::v4(VIP2, VipProto::Any, 0),
        Vip::v4(VIP2, VipProto::Tcp, 443),
    ] {
        s.add_vip(vip, method, encap, &all).expect("vip");
    }
    s
}

/// One frame, described by what varies.
#[derive(Clone, Debug)]
struct Spec {
    client: u8,
    sport: u8,
    /// Index into [`DESTS`].
    dest: u8,
    flags: u8,
    vlan_tags: u8,
    ip_options: bool,
    /// 0: none, 1: DF, 2: MF, 3: offset 8, 4: DF and MF.
    frag: u8,
    ttl: u8,
    martian: bool,
    bad_checksum: bool,
    /// 0: the proper 5, 1: 4 (malformed), 2: 15 (past the segment).
    tcp_doff: u8,
    payload: u16,
    padding: u8,
    proto: u8,
    /// Cut this many bytes off the end (0: none).
    truncate: u8,
    /// Flip the byte at this offset (taken modulo the frame's length).
    flip: Option<u16>,
}

const DESTS: [([u8; 4], u16); 5] = [
    (VIP, 80),
    (VIP, 81),
    (VIP2, 443),
    (VIP2, 22),
    ([198, 18, 9, 9], 80),
];

fn build(s: &Spec) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xfe, 2, 0, 0, 0, 2, s.client];
    for t in 0..s.vlan_tags {
        let tpid: u16 = if t == 0 && s.vlan_tags == 2 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0, 10 + t]);
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let (dst, dport) = DESTS[usize::from(s.dest) % DESTS.len()];
    let ihl: usize = if s.ip_options { 6 } else { 5 };
    let doff = [5u8, 4, 15][usize::from(s.tcp_doff % 3)];
    let l4_len = 20 + usize::from(s.payload);
    let tl = ihl * 4 + l4_len;
    let flags_off: u16 = match s.frag % 5 {
        1 => 0x4000,
        2 => 0x2000,
        3 => 0x0001,
        4 => 0x6000,
        _ => 0,
    };
    let src = if s.martian {
        [127, 0, 0, s.client]
    } else {
        [198, 18, 0, s.client]
    };
    let mut ip = vec![(4 << 4) | ihl as u8, 0x2e];
    ip.extend_from_slice(&(tl as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&flags_off.to_be_bytes());
    ip.extend_from_slice(&[s.ttl, s.proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    if s.ip_options {
        ip.extend_from_slice(&[1, 1, 1, 0]);
    }
    let c = checksum::checksum(&ip);
    let c = if s.bad_checksum { c ^ 0x0101 } else { c };
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(1000 + u16::from(s.sport)).to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, doff << 4, s.flags, 0xff, 0xff]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend((0..s.payload).map(|i| i as u8));
    f.extend((0..s.padding).map(|_| 0u8));
    let keep = f.len().saturating_sub(usize::from(s.truncate));
    f.truncate(keep);
    if let Some(at) = s.flip {
        if !f.is_empty() {
            let i = usize::from(at) % f.len();
            f[i] ^= 0x5a;
        }
    }
    f
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    let flags = prop::sample::select(vec![
        0x10u8, 0x10, 0x10, 0x18, 0x18, 0x02, 0x12, 0x11, 0x14, 0x04, 0x00, 0x01, 0x30,
    ]);
    (
        (
            0u8..4,
            0u8..3,
            prop::sample::select(vec![0u8, 0, 0, 1, 2, 3, 4]),
        ),
        flags,
        prop::sample::select(vec![0u8, 0, 0, 1, 1, 2]),
        prop::bool::weighted(0.1),
        prop::sample::select(vec![0u8, 1, 1, 1, 0, 2, 3, 4]),
        prop::sample::select(vec![64u8, 64, 64, 2, 1, 0]),
        (prop::bool::weighted(0.05), prop::bool::weighted(0.1)),
        prop::sample::select(vec![0u8, 0, 0, 0, 0, 1, 2]),
        prop::sample::select(vec![0u16, 6, 6, 100, 1400, 1480]),
        (0u8..8, prop::sample::select(vec![6u8, 6, 6, 6, 6, 17, 1])),
        (
            prop::sample::select(vec![0u8, 0, 0, 0, 0, 0, 0, 1, 10, 30]),
            prop::option::weighted(0.05, any::<u16>()),
        ),
    )
        .prop_map(
            |(
                (client, sport, dest),
                flags,
                vlan_tags,
                ip_options,
                frag,
                ttl,
                (martian, bad_checksum),
                tcp_doff,
                payload,
                (padding, proto),
                (truncate, flip),
            )| Spec {
                client,
                sport,
                dest,
                flags,
                vlan_tags,
                ip_options,
                frag,
                ttl,
                martian,
                bad_checksum,
                tcp_doff,
                payload,
                padding,
                proto,
                truncate,
                flip,
            },
        )
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<Spec>),
    /// Set backend `.0` to Active (0), Draining (1) or Down (2).
    Admin(u8, u8),
    /// Move the clock on by this many milliseconds.
    Advance(u32),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec(arb_spec(), 1..48).prop_map(Step::Batch),
        1 => (0u8..4, 0u8..3).prop_map(|(b, s)| Step::Admin(b, s)),
        1 => prop::sample::select(vec![1u32, 50, 1_000, 20_000, 200_000]).prop_map(Step::Advance),
    ]
}

fn worker(fast: bool, sync: bool) -> Box<W> {
    let mut w = W::new_box_zeroed().expect("alloc");
    w.init(3);
    w.sync.enabled = sync;
    w.set_fast_path(fast);
    w
}

/// Runs `steps` through a fast and a general worker and compares everything.
/// Every entry of a worker's flow table, in table order.
fn listing(w: &W) -> Vec<std::string::String> {
    let mut out = vec![];
    w.flows.for_each(|l| {
        out.push(std::format!("{l:?}"));
        true
    });
    out
}

/// Returns how many packets the fast worker forwarded, and how many of them on
/// its fast path. `sync`: both workers make sync records (a state change that
/// makes one leaves the fast path).
fn compare(
    svc: &mut Service,
    steps: &[Step],
    headroom: usize,
    sync: bool,
) -> Result<(u64, u64), TestCaseError> {
    let (mut fast, mut general) = (worker(true, sync), worker(false, sync));
    let mut now = 1_000 * MS;
    let mut forwarded = 0;
    for step in steps {
        match step {
            Step::Admin(b, st) => {
                let st =
                    [AdminState::Active, AdminState::Draining, AdminState::Down][usize::from(*st)];
                svc.set_admin(u16::from(*b), st).expect("admin");
            }
            Step::Advance(ms) => now += u64::from(*ms) * MS,
            Step::Batch(specs) => {
                let frames: Vec<Vec<u8>> = specs.iter().map(build).collect();
                let mut bufs: Vec<Vec<u8>> = frames
                    .iter()
                    .map(|f| {
                        let mut b = vec![0u8; headroom];
                        b.extend_from_slice(f);
                        b.extend_from_slice(&[0u8; 16]);
                        b
                    })
                    .collect();
                let mut bufs2 = bufs.clone();
                let mut v1 = vec![Verdict::Host; bufs.len()];
                let mut v2 = v1.clone();
                let mut p1: Vec<Packet<'_>> = bufs
                    .iter_mut()
                    .zip(&frames)
                    .map(|(b, f)| Packet::new(b, headroom, f.len()))
                    .collect();
                let mut p2: Vec<Packet<'_>> = bufs2
                    .iter_mut()
                    .zip(&frames)
                    .map(|(b, f)| Packet::new(b, headroom, f.len()))
                    .collect();
                fast.process(svc, now, &mut p1, &mut v1);
                general.process(svc, now, &mut p2, &mut v2);
                prop_assert_eq!(&v1, &v2);
                for (i, (a, b)) in p1.iter().zip(&p2).enumerate() {
                    prop_assert_eq!((a.start, a.len), (b.start, b.len), "packet {}", i);
                    prop_assert!(a.buf == b.buf, "packet {}: buffers differ", i);
                }
                forwarded += v1
                    .iter()
                    .filter(|v| matches!(v, Verdict::Forward { .. }))
                    .count() as u64;
                now += MS;
            }
        }
        prop_assert!(
            fast.telemetry.as_bytes() == general.telemetry.as_bytes(),
            "telemetry differs: {:?} vs {:?}",
            fast.telemetry.global,
            general.telemetry.global
        );
    }
    prop_assert_eq!(listing(&fast), listing(&general));
    prop_assert_eq!(fast.sync.pending(), general.sync.pending());
    prop_assert_eq!(general.fast_forwarded, 0);
    Ok((forwarded, fast.fast_forwarded))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_equals_general_path(
        method in prop::sample::select(vec![Method::Alias, Method::Alias, Method::Sed, Method::Maglev]),
        encap in prop::sample::select(vec![Encap::L2Dsr, Encap::IpIp, Encap::Gre]),
        v6 in prop::bool::weighted(0.3),
        verify in any::<bool>(),
        mtu in prop::sample::select(vec![1500u16, 1500, 120]),
        steps in prop::collection::vec(arb_step(), 1..24),
        // Room in front of the frame: enough for any tunnel, enough for
        // IP-in-IP but not GRE, none (a tunnel is refused: no headroom).
        headroom in prop::sample::select(vec![HEADROOM, HEADROOM, 20, 0]),
        sync in any::<bool>(),
    ) {
        let mut svc = service(method, encap, v6, verify, mtu);
        compare(&mut svc, &steps, headroom, sync)?;
    }
}

/// The generator reaches the fast path: a plain connection's ACKs are
/// forwarded by it (the general worker is the reference), so the property
/// above is not vacuous.
#[test]
fn the_common_case_takes_the_fast_path() {
    let plain = |flags| Spec {
        client: 1,
        sport: 1,
        dest: 0,
        flags,
        vlan_tags: 0,
        ip_options: false,
        frag: 1,
        ttl: 64,
        martian: false,
        bad_checksum: false,
        tcp_doff: 0,
        payload: 6,
        padding: 0,
        proto: 6,
        truncate: 0,
        flip: None,
    };
    let mut svc = service(Method::Alias, Encap::IpIp, false, true, 1500);
    let steps = vec![
        Step::Batch(vec![plain(0x02)]),
        Step::Batch(vec![plain(0x10), plain(0x18), plain(0x18)]),
        Step::Batch(vec![plain(0x18), plain(0x11)]),
    ];
    // Without sync, every segment takes the fast path.
    assert_eq!(
        compare(&mut svc, &steps, HEADROOM, false).expect("equal"),
        (6, 6)
    );
    // With sync, the handshake ACK and the FIN make sync records: general
    // path; the SYN and the three data segments: fast.
    assert_eq!(
        compare(&mut svc, &steps, HEADROOM, true).expect("equal"),
        (6, 4)
    );
    // And the fast parser accepts those segments (the ACKs with and without
    // one VLAN tag) and RSTs, and nothing it must not.
    for s in [
        plain(0x02),
        plain(0x18),
        Spec {
            vlan_tags: 1,
            ..plain(0x18)
        },
        plain(0x11),
        plain(0x14),
    ] {
        assert!(fast::parse(&build(&s), &mut FastMeta::default()), "{s:?}");
    }
    for s in [
        Spec {
            vlan_tags: 2,
            ..plain(0x18)
        },
        Spec {
            ip_options: true,
            ..plain(0x18)
        },
        Spec {
            frag: 2,
            ..plain(0x18)
        },
        Spec {
            ttl: 1,
            ..plain(0x18)
        },
        Spec {
            martian: true,
            ..plain(0x18)
        },
        Spec {
            tcp_doff: 1,
            ..plain(0x18)
        },
        Spec {
            proto: 17,
            ..plain(0x18)
        },
        Spec {
            truncate: 1,
            ..plain(0x18)
        },
    ] {
        assert!(!fast::parse(&build(&s), &mut FastMeta::default()), "{s:?}");
    }
}

/// The fast parser's source and length tests, over every first octet of the
/// source and every data offset against a range of lengths, and every IP
/// total length near the frame's: it takes a packet exactly when the source
/// is not martian, the TCP header is at least 20 bytes and fits the IP
/// packet, and the IP packet is at least 40 bytes and fits the frame.
#[test]
fn fast_parser_source_and_header_length_tests() {
    let spec = |payload| Spec {
        client: 1,
        sport: 1,
        dest: 0,
        flags: 0x10,
        vlan_tags: 0,
        ip_options: false,
        frag: 1,
        ttl: 64,
        martian: false,
        tcp_doff: 0,
        proto: 6,
        bad_checksum: false,
        truncate: 0,
        payload,
        padding: 0,
        flip: None,
    };
    // Offsets in an untagged frame: the source's first octet, the TCP data
    // offset byte.
    const SRC0: usize = 14 + 12;
    const DOFF: usize = 14 + 20 + 12;
    for payload in [0u16, 1, 19, 20, 21, 39, 40, 41, 60] {
        let base = build(&spec(payload));
        let tl = 40 + usize::from(payload);
        for doff in 0..16u8 {
            for octet in 0..=255u8 {
                let mut f = base.clone();
                f[SRC0] = octet;
                f[DOFF] = (doff << 4) | (f[DOFF] & 0x0f);
                let hlen = usize::from(doff) * 4;
                let want = !crate::classify::is_martian_v4(octet) && hlen >= 20 && hlen <= tl - 20;
                assert_eq!(
                    fast::parse(&f, &mut FastMeta::default()),
                    want,
                    "payload {payload} doff {doff} octet {octet}"
                );
            }
        }
    }
    // The IP total length against the frame (untagged and tagged), and
    // the TCP header against it.
    const TL: usize = 14 + 2;
    for vlan_tags in [0u8, 1] {
        let base = build(&Spec {
            vlan_tags,
            ..spec(24)
        });
        let l3 = 14 + 4 * usize::from(vlan_tags);
        for tl in 0..=(base.len() - l3 + 3) {
            for doff in [5u8, 10, 11] {
                let mut f = base.clone();
                f[TL + l3 - 14..][..2].copy_from_slice(&(tl as u16).to_be_bytes());
                f[l3 + 20 + 12] = doff << 4;
                let hlen = usize::from(doff) * 4;
                let want = tl >= 40 && l3 + tl <= f.len() && hlen <= tl - 20;
                assert_eq!(
                    fast::parse(&f, &mut FastMeta::default()),
                    want,
                    "tags {vlan_tags} tl {tl} doff {doff}"
                );
            }
        }
    }
}
