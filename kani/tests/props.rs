//! The proof harnesses as property tests (many random inputs each).

use marllb_kani::*;
use marllb_shm::layout::{region_size, LAYOUT_HASH, MAGIC};
use marllb_shm::validate::Expect;
use proptest::prelude::*;

fn expect() -> impl Strategy<Value = Expect> {
    (
        proptest::option::of(prop_oneof![0u32..=300, any::<u32>()]),
        proptest::option::of(prop_oneof![0u32..=70, any::<u32>()]),
    )
        .prop_map(|(backend_count, worker_count)| Expect {
            backend_count,
            worker_count,
        })
}

/// Header bytes: fully random, or a valid header with a few bytes mutated.
fn header_bytes() -> impl Strategy<Value = [u8; HEADER_BYTES]> {
    prop_oneof![
        proptest::array::uniform32(any::<u8>()).prop_map(|h| {
            let mut b = [0u8; HEADER_BYTES];
            b[..32].copy_from_slice(&h);
            b[32..].copy_from_slice(&h);
            b
        }),
        (
            1u32..=256,
            1u32..=64,
            proptest::collection::vec((0usize..HEADER_BYTES, any::<u8>()), 0..3)
        )
            .prop_map(|(backends, workers, muts)| {
                let mut b = [0u8; HEADER_BYTES];
                b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
                b[8..12].copy_from_slice(&marllb_shm::layout::LAYOUT_VERSION.to_le_bytes());
                b[12..16].copy_from_slice(&128u32.to_le_bytes());
                b[16..24].copy_from_slice(&LAYOUT_HASH.to_le_bytes());
                b[24..32].copy_from_slice(&region_size(workers).to_le_bytes());
                b[32..36].copy_from_slice(&256u32.to_le_bytes());
                b[36..40].copy_from_slice(&backends.to_le_bytes());
                b[40..44].copy_from_slice(&workers.to_le_bytes());
                for (i, v) in muts {
                    b[i] = v;
                }
                b
            }),
    ]
}

fn weights_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), WEIGHTS_BYTES),
        // Mostly-zero frames with a few random bytes: small weights and admin
        // values, so the all-zero and bad-admin paths are reached.
        proptest::collection::vec((0usize..WEIGHTS_BYTES, any::<u8>()), 0..40).prop_map(|m| {
            let mut b = vec![0u8; WEIGHTS_BYTES];
            for (i, v) in m {
                b[i] = v;
            }
            b
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn header_image_holds(bytes in header_bytes(), file in prop_oneof![Just(None), Just(Some(0u64)), any::<u64>().prop_map(Some)], e in expect()) {
        // Either the random size, or the size the header itself implies.
        let img_workers = u32::from_le_bytes(bytes[40..44].try_into().unwrap());
        let file_len = file.unwrap_or_else(|| region_size(img_workers));
        header_image(&bytes, file_len, e);
    }

    #[test]
    fn weights_image_holds(bytes in weights_bytes(), n in 1usize..=256, reseal in any::<bool>()) {
        let arr: [u8; WEIGHTS_BYTES] = bytes.try_into().unwrap();
        weights_image(&arr, n, reseal);
    }

    #[test]
    fn backend_set_image_holds(
        entries in proptest::collection::vec(
            (0u8..4, 0u8..3, prop_oneof![Just(0u32), Just(65536u32), any::<u32>()], 0u32..8, 0u8..3),
            0..10,
        ),
        count_extra in 0u32..3,
        current in 1usize..=6,
        n_vips in 1usize..=3,
        reseal in prop_oneof![9 => Just(true), 1 => Just(false)],
    ) {
        // Small structured sets: addresses mostly those served (10.0.0.1..),
        // admin 0/3 mostly, weights 0/1/any, masks over 3 VIPs.
        use marllb_shm::layout::{BackendEntry, BackendSetFrame};
        let mut f: BackendSetFrame = zerocopy::transmute!([0u8; SET_BYTES]);
        for (i, (a, fam, w, mask, adm)) in entries.iter().enumerate() {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[10, 0, 0, if *a == 3 { 99 } else { i as u8 + 1 + a }]);
            f.backends[i] = BackendEntry {
                addr,
                family: if *fam == 2 { 7 } else { 0 },
                admin: [0u8, 3, 1][usize::from(*adm)],
                base_weight: *w,
                vip_mask: *mask,
                ..BackendEntry::default()
            };
        }
        f.count = entries.len() as u32 + count_extra;
        let bytes: [u8; SET_BYTES] = zerocopy::transmute!(f);
        backend_set_image(&bytes, current, n_vips, reseal);
    }

    #[test]
    fn seqlock_interleaving_holds(schedule in proptest::collection::vec(any::<bool>(), 0..64), gens in 1u64..=4) {
        seqlock_interleaving(&schedule, gens);
    }

    #[test]
    fn alias_exact_holds(weights in proptest::collection::vec(prop_oneof![Just(0u32), 1u32..=16, any::<u32>()], 1..=8)) {
        alias_exact(&weights);
    }
}

/// The seqlock harness reaches its interesting states: a schedule with reads
/// that succeed, and one where a torn read is detected and rejected.
#[test]
fn seqlock_harness_is_not_vacuous() {
    // Writer publishes gen 1 fully (begin, 3 puts, finish), then the reader reads.
    let mut s = vec![true; 5];
    s.extend([false; 5]);
    assert_eq!(seqlock_interleaving(&s, 1), 1);
    // Reader begins after gen 1, writer writes gen 2 half-way, reader finishes:
    // the read must not validate.
    let mut s = vec![true; 5];
    s.extend([false, false]); // begin, word 0 (gen 1)
    s.extend([true, true, true]); // begin gen 2, word 0, word 1
    s.extend([false, false, false]); // words 1, 2 and validate
    assert_eq!(seqlock_interleaving(&s, 2), 0);
}

/// The header and weights harnesses reach their accepting branch.
#[test]
fn image_harnesses_are_not_vacuous() {
    let mut b = [0u8; HEADER_BYTES];
    b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&marllb_shm::layout::LAYOUT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&128u32.to_le_bytes());
    b[16..24].copy_from_slice(&LAYOUT_HASH.to_le_bytes());
    b[24..32].copy_from_slice(&region_size(2).to_le_bytes());
    b[32..36].copy_from_slice(&256u32.to_le_bytes());
    b[36..40].copy_from_slice(&4u32.to_le_bytes());
    b[40..44].copy_from_slice(&2u32.to_le_bytes());
    assert!(header_image(&b, region_size(2), Expect::default()));
    assert!(!header_image(&b, region_size(3), Expect::default()));

    let mut w = [0u8; WEIGHTS_BYTES];
    w[8] = 4; // count
    w[32] = 1; // weight of backend 0
    assert!(weights_image(&w, 4, true));
    assert!(!weights_image(&w, 4, false)); // checksum
    assert!(!weights_image(&w, 5, true)); // short count
}

mod core_harnesses {
    use marllb_core::rewrite::{Encap, Target};
    use marllb_core::wire::{FragInfo, IpFamily, PacketMeta};
    use marllb_kani::*;
    use proptest::prelude::*;

    /// A valid Ethernet/IPv4/TCP frame with a few random mutations and a random
    /// truncation, or fully random bytes.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        let valid = (
            proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
            0usize..=80,
        )
            .prop_map(|(muts, cut)| {
                let mut f = vec![
                    2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0,
                    64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 255, 1, 0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0,
                    0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
                ];
                f.resize(80, 0);
                for (i, b) in muts {
                    f[i] = b;
                }
                f.truncate(cut);
                f
            });
        prop_oneof![valid, proptest::collection::vec(any::<u8>(), 0..=MAX_FRAME)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn parse_any_frame_holds(f in frame()) {
            parse_any_frame(&f);
        }

        #[test]
        fn flow_index_holds(h in any::<u64>()) {
            flow_index(h);
        }

        #[test]
        fn rewrite_in_bounds_holds(
            mut buf in proptest::collection::vec(any::<u8>(), 0..400),
            start in 0usize..200,
            len in 0usize..400,
            l3_offset in 0u16..40,
            l3_len in 0u16..400,
            v6 in any::<bool>(),
            outer_v6 in any::<bool>(),
            encap in 0u8..3,
            df in any::<bool>(),
            mtu in 0u16..1600,
            hash in any::<u64>(),
        ) {
            // Make the frame plausible often enough to reach the write paths.
            if buf.len() > start + 14 + 20 && !v6 {
                let ip = start + usize::from(l3_offset.max(14));
                if ip + 20 <= buf.len() {
                    buf[ip] = 0x45;
                    buf[ip + 2..ip + 4].copy_from_slice(&l3_len.to_be_bytes());
                    buf[ip + 8] = 64;
                }
            }
            let case = RewriteCase {
                start,
                len,
                meta: PacketMeta {
                    l3_offset,
                    l3_len,
                    family: if v6 { IpFamily::V6 } else { IpFamily::V4 },
                    dont_fragment: df,
                    ttl: 64,
                    proto: 6,
                    frag: FragInfo::default(),
                    ..PacketMeta::default()
                },
                target: Target {
                    encap: [Encap::L2Dsr, Encap::IpIp, Encap::Gre][usize::from(encap)],
                    dst_mac: [2, 0, 0, 0, 1, 1],
                    family: if outer_v6 { IpFamily::V6 } else { IpFamily::V4 },
                    addr: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                },
                mtu,
                hash,
            };
            rewrite_in_bounds(&mut buf, &case);
        }
    }
}

/// The backend-set harness accepts valid sets (so its checks run) and
/// refuses a readdressed index.
#[test]
fn backend_set_harness_is_not_vacuous() {
    use marllb_shm::layout::{admin, BackendEntry, BackendSetFrame};
    let entry = |last: u8, mask: u32| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 0, 0, last]);
        BackendEntry {
            addr,
            base_weight: marllb_core::WEIGHT_ONE,
            vip_mask: mask,
            ..BackendEntry::default()
        }
    };
    let image = |es: &[BackendEntry]| {
        let mut f: BackendSetFrame = zerocopy::transmute!([0u8; SET_BYTES]);
        f.backends[..es.len()].copy_from_slice(es);
        f.count = es.len() as u32;
        let b: [u8; SET_BYTES] = zerocopy::transmute!(f);
        b
    };
    // Two served (one VIP each of two), one added in both.
    let ok = image(&[entry(1, 1), entry(2, 2), entry(9, 3)]);
    assert!(backend_set_image(&ok, 2, 2, true));
    assert!(!backend_set_image(&ok, 2, 2, false)); // checksum
    let mut removed = entry(2, 2);
    removed.admin = admin::REMOVED;
    assert!(backend_set_image(
        &image(&[entry(1, 3), removed]),
        2,
        2,
        true
    ));
    assert!(!backend_set_image(
        &image(&[entry(1, 1), entry(7, 2)]),
        2,
        2,
        true
    ));
}
