//! # marllb-kani: proof harnesses
//!
//! Each harness is a plain function of its inputs that asserts a property for
//! those inputs. Under `cargo kani` the `proofs` module calls it with
//! `kani::any()` inputs (all of them, symbolically); under `cargo test` the
//! property tests in `tests/props.rs` call it with many random inputs.
//!
//! 1. [`header_image`], [`weights_image`]: any byte image of the region header
//!    or of a weights frame either fails validation or yields only in-range
//!    values.
//! 2. [`seqlock_interleaving`]: a sequence-lock reader never returns a mix of
//!    two generations, for any interleaving of single writer and reader steps.
//! 3. [`alias_exact`]: the alias table built from any weight vector of length up
//!    to 8 implies exactly the normalised weights.
//! 4. [`parse_any_frame`]: parsing any frame of up to 1514 bytes never panics and
//!    every offset it reports lies inside the frame.
//! 5. [`flow_index`]: the flow table's bucket arithmetic stays in range for every
//!    hash (primary and alternate buckets, for several table sizes).
//! 6. [`rewrite_in_bounds`]: the rewrite never panics, reports a frame inside the
//!    buffer, and changes no byte outside the old and the new frame.
//! 7. [`backend_set_image`]: any byte image of a backend set is refused, or it
//!    keeps every served index's address, never shrinks, serves no address
//!    twice, and leaves every VIP a member with valid entries only.

use marllb_core::select::AliasTable;
use marllb_core::service::AdminState;
use marllb_core::MAX_BACKENDS;
use marllb_shm::layout::{
    region_size, HeaderImage, ValidationStats, WeightsFrame, LAYOUT_HASH, MAGIC, MAX_WEIGHT,
    MAX_WORKERS,
};
use marllb_shm::seqlock::{Reader, Writer};
use marllb_shm::sync::AtomicU64;
use marllb_shm::validate::{validate_header, validate_weights, Expect, WeightVector};

/// Size of a header image.
pub const HEADER_BYTES: usize = core::mem::size_of::<HeaderImage>();
/// Size of a weights frame.
pub const WEIGHTS_BYTES: usize = core::mem::size_of::<WeightsFrame>();

/// (1a) A header image validates only into a geometry within the limits and
/// consistent with this build and the file. Returns whether it validated.
pub fn header_image(bytes: &[u8; HEADER_BYTES], file_len: u64, expect: Expect) -> bool {
    let img: HeaderImage = zerocopy::transmute!(*bytes);
    let r = validate_header(&img, Some(file_len), &expect);
    if let Ok(g) = r {
        assert_eq!(img.magic, MAGIC);
        assert_eq!(img.layout_hash, LAYOUT_HASH);
        assert!(g.backend_count >= 1 && g.backend_count as usize <= MAX_BACKENDS);
        assert!(g.worker_count >= 1 && g.worker_count <= MAX_WORKERS);
        assert_eq!(g.region_size, region_size(g.worker_count));
        assert_eq!(g.region_size, file_len);
        assert!(g.backends() <= MAX_BACKENDS);
        if let Some(b) = expect.backend_count {
            assert_eq!(g.backend_count, b);
        }
        if let Some(w) = expect.worker_count {
            assert_eq!(g.worker_count, w);
        }
    }
    r.is_ok()
}

/// (1b) A weights frame (resealed first when `reseal`, so random frames get
/// past the checksum) either is rejected, leaving the previous vector intact,
/// or yields weights `<= MAX_WEIGHT` with some backend not down having a
/// non-zero weight (or every backend down). Returns whether it validated.
pub fn weights_image(bytes: &[u8; WEIGHTS_BYTES], n: usize, reseal: bool) -> bool {
    let mut frame: WeightsFrame = zerocopy::transmute!(*bytes);
    if reseal {
        frame.seal();
    }
    let mut out = WeightVector::new(n);
    let before = out.clone();
    let mut stats = ValidationStats::default();
    match validate_weights(&frame, &mut out, &mut stats) {
        Ok(()) => {
            assert_eq!(stats.frames_applied, 1);
            assert!(out.len() <= MAX_BACKENDS);
            assert!(out.weights().iter().all(|&w| w <= MAX_WEIGHT));
            let up = out.admin().iter().any(|&a| a != AdminState::Down);
            let live = out
                .weights()
                .iter()
                .zip(out.admin())
                .any(|(&w, &a)| a != AdminState::Down && w > 0);
            assert!(live || !up);
            assert_eq!(out.epoch, frame.epoch);
            true
        }
        Err(_) => {
            assert_eq!(stats.frames_rejected, 1);
            assert_eq!(out, before);
            false
        }
    }
}

/// Size of a backend-set frame.
pub const SET_BYTES: usize = core::mem::size_of::<marllb_shm::layout::BackendSetFrame>();

/// (7) A backend set (resealed first when `reseal`) checked against a
/// served set of `current` backends (addresses 10.0.0.1.., one VIP each of
/// `n_vips`) is either refused or keeps the contract of
/// `marllb_shm::backend_set`. Returns whether it passed.
pub fn backend_set_image(
    bytes: &[u8; SET_BYTES],
    current: usize,
    n_vips: usize,
    reseal: bool,
) -> bool {
    use marllb_shm::backend_set::{check_set, served};
    use marllb_shm::layout::{admin, BackendEntry, BackendSetFrame};
    let mut frame: BackendSetFrame = zerocopy::transmute!(*bytes);
    if reseal {
        frame.seal();
    }
    let mut cur: BackendSetFrame = zerocopy::transmute!([0u8; SET_BYTES]);
    let current = current.clamp(1, MAX_BACKENDS);
    let vips = n_vips.clamp(1, marllb_shm::layout::MAX_VIPS);
    for (i, e) in cur.backends.iter_mut().take(current).enumerate() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8 + 1]);
        *e = BackendEntry {
            addr,
            base_weight: marllb_core::WEIGHT_ONE,
            vip_mask: 1 << (i % vips),
            ..BackendEntry::default()
        };
    }
    cur.count = current as u32;
    cur.seal();
    let ok = check_set(&frame, &cur, vips).is_ok();
    if ok {
        let e = frame.entries();
        assert!(!e.is_empty() && e.len() <= MAX_BACKENDS && e.len() >= current);
        for (i, x) in e.iter().enumerate() {
            if !served(x) {
                assert_eq!(x.admin, admin::REMOVED);
                continue;
            }
            assert!(x.family <= 1 && x.base_weight > 0 && x.base_weight <= MAX_WEIGHT);
            assert!(x.vip_mask != 0 && x.vip_mask >> vips == 0);
            if let Some(c) = cur.entries().get(i) {
                assert_eq!((c.family, c.addr), (x.family, x.addr));
            }
            assert!(!e[..i]
                .iter()
                .any(|o| served(o) && (o.family, o.addr) == (x.family, x.addr)));
        }
        for v in 0..vips {
            assert!(e.iter().any(|x| served(x) && x.vip_mask & (1 << v) != 0));
        }
    }
    ok
}

/// Payload words of the seqlock model.
pub const MODEL_WORDS: usize = 3;

/// (2) Runs one writer publishing `generations` generations (generation `g`
/// writes `g` into every word, one word per step) and one reader reading
/// repeatedly (one word per step), interleaved by `schedule` (`true` = the
/// writer steps). Every read that validates holds one generation that had
/// been published. Returns the number of successful reads.
pub fn seqlock_interleaving(schedule: &[bool], generations: u64) -> usize {
    let seq = AtomicU64::new(0);
    let words: [AtomicU64; MODEL_WORDS] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

    // Writer state: generation being written and next word (None = between).
    let mut gen = 0u64;
    let mut writer: Option<(Writer<'_>, usize)> = None;
    let mut published = 0u64;
    // Reader state.
    let mut reader: Option<(Reader<'_>, usize, [u64; MODEL_WORDS])> = None;
    let mut ok_reads = 0;

    for &writer_steps in schedule {
        if writer_steps {
            match writer.take() {
                None if gen < generations => {
                    gen += 1;
                    writer = Some((Writer::begin(&seq, &words), 0));
                }
                None => {}
                Some((mut w, i)) if i < MODEL_WORDS => {
                    assert!(w.put_word(i, gen));
                    writer = Some((w, i + 1));
                }
                Some((w, _)) => {
                    w.finish();
                    published = gen;
                }
            }
        } else {
            match reader.take() {
                None => {
                    if let Ok(r) = Reader::begin(&seq, &words) {
                        reader = Some((r, 0, [0; MODEL_WORDS]));
                    }
                }
                Some((r, i, mut got)) if i < MODEL_WORDS => {
                    got[i] = r.get_word(i).unwrap_or(u64::MAX);
                    reader = Some((r, i + 1, got));
                }
                Some((r, _, got)) => {
                    if r.validate().is_ok() {
                        ok_reads += 1;
                        assert!(got.iter().all(|&x| x == got[0]), "torn: {got:?}");
                        assert!(got[0] >= 1 && got[0] <= published, "unpublished: {got:?}");
                    }
                }
            }
        }
    }
    ok_reads
}

/// (3) For a weight vector of length 1..=8, the alias table builds iff some
/// weight is non-zero, and then backend `i`'s implied probability is exactly
/// `w_i / W`.
pub fn alias_exact(weights: &[u32]) {
    assert!(weights.len() <= 8);
    let mut t = AliasTable::new();
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    match t.build(weights) {
        Err(_) => assert_eq!(total, 0),
        Ok(()) => {
            assert!(total > 0);
            assert_eq!(t.len(), weights.len());
            let mut sum = 0u128;
            for (i, &w) in weights.iter().enumerate() {
                let (num, den) = t.probability(i);
                assert_eq!(num * total, u128::from(w) * den);
                sum += num;
            }
            assert_eq!(sum, t.probability(0).1);
        }
    }
}

/// Largest Ethernet frame (without FCS) the parse proof covers.
pub const MAX_FRAME: usize = 1514;

/// (4) `parse_frame` on any bytes: no panic; for an IP packet the L3 header, its
/// declared length and the L4 offset all lie inside the frame.
pub fn parse_any_frame(frame: &[u8]) {
    use marllb_core::wire::parse::parse_frame;
    use marllb_core::wire::Frame;
    assert!(frame.len() <= MAX_FRAME);
    if let Ok(Frame::Ip(m)) = parse_frame(frame) {
        let l3 = usize::from(m.l3_offset);
        assert!((14..=22).contains(&l3));
        assert!(l3 + usize::from(m.l3_len) <= frame.len());
        assert!(usize::from(m.l4_offset) <= l3 + usize::from(m.l3_len));
        assert!(m.l4_offset == 0 || usize::from(m.l4_offset) > l3);
        assert!(m.vlan_tags <= 2);
    }
}

/// (5) Bucket indices of any hash are in range, and the alternate differs from
/// the primary (for tables of more than one bucket).
pub fn flow_index(hash: u64) {
    use marllb_core::flow::FlowTable;
    fn check<const B: usize>(hash: u64) {
        let p = FlowTable::<B>::bucket_of(hash);
        let a = FlowTable::<B>::alternate_of(hash);
        assert!(p < B && a < B);
        assert!(B == 1 || a != p);
    }
    check::<1>(hash);
    check::<2>(hash);
    check::<64>(hash);
    check::<{ 1 << 20 }>(hash);
    check::<{ 1 << 30 }>(hash);
}

/// Inputs of the rewrite harness that are not bytes.
#[derive(Clone, Copy, Debug)]
pub struct RewriteCase {
    /// Frame offset in the buffer.
    pub start: usize,
    /// Frame length.
    pub len: usize,
    /// The parsed metadata (possibly inconsistent with the bytes).
    pub meta: marllb_core::wire::PacketMeta,
    /// Where to.
    pub target: marllb_core::rewrite::Target,
    /// MTU of the backend link.
    pub mtu: u16,
    /// Flow hash.
    pub hash: u64,
}

/// (6) The rewrite never panics; on success the new frame lies inside the
/// buffer and no byte outside the old frame and the new frame changed; on error
/// nothing changed.
pub fn rewrite_in_bounds(buf: &mut [u8], c: &RewriteCase) {
    use marllb_core::rewrite::{rewrite, Egress};
    let before_len = buf.len();
    let mut copy = [0u8; 2048];
    let n = before_len.min(copy.len());
    copy[..n].copy_from_slice(&buf[..n]);
    let egress = Egress {
        src_mac: [2, 0, 0, 0, 0, 1],
        src_v4: [198, 19, 0, 1],
        src_v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu: c.mtu,
    };
    match rewrite(buf, c.start, c.len, &c.meta, &c.target, &egress, c.hash) {
        Ok(r) => {
            let (s, l) = r.frame();
            assert!(s.checked_add(l).is_some_and(|e| e <= before_len));
            let old = c.start..c.start.saturating_add(c.len);
            for i in 0..n {
                if !(old.contains(&i) || (s..s + l).contains(&i)) {
                    assert_eq!(buf[i], copy[i], "byte {i} outside both frames changed");
                }
            }
        }
        Err(_) => assert_eq!(&buf[..n], &copy[..n], "an error left the buffer changed"),
    }
}

#[cfg(kani)]
mod proofs {
    use super::*;

    #[cfg_attr(kani, kani::proof)]
    fn header_image_proof() {
        let bytes: [u8; HEADER_BYTES] = kani::any();
        let expect = Expect {
            backend_count: kani::any(),
            worker_count: kani::any(),
        };
        header_image(&bytes, kani::any(), expect);
    }

    #[cfg_attr(kani, kani::proof)]
    #[cfg_attr(kani, kani::unwind(260))]
    fn weights_image_proof() {
        let bytes: [u8; WEIGHTS_BYTES] = kani::any();
        let n: usize = kani::any();
        kani::assume(n >= 1 && n <= MAX_BACKENDS);
        weights_image(&bytes, n, kani::any());
    }

    #[cfg_attr(kani, kani::proof)]
    #[cfg_attr(kani, kani::unwind(20))]
    fn seqlock_proof() {
        let schedule: [bool; 16] = kani::any();
        seqlock_interleaving(&schedule, 2);
    }

    #[cfg_attr(kani, kani::proof)]
    #[cfg_attr(kani, kani::unwind(260))]
    fn alias_proof() {
        let w: [u32; 8] = kani::any();
        let n: usize = kani::any();
        kani::assume(n >= 1 && n <= 8);
        alias_exact(&w[..n]);
    }

    #[cfg_attr(kani, kani::proof)]
    #[cfg_attr(kani, kani::unwind(12))]
    fn parse_proof() {
        let bytes: [u8; MAX_FRAME] = kani::any();
        let len: usize = kani::any();
        kani::assume(len <= MAX_FRAME);
        parse_any_frame(&bytes[..len]);
    }

    #[cfg_attr(kani, kani::proof)]
    fn flow_index_proof() {
        flow_index(kani::any());
    }

    #[cfg_attr(kani, kani::proof)]
    #[cfg_attr(kani, kani::unwind(260))]
    fn rewrite_proof() {
        let mut buf: [u8; 256] = kani::any();
        let meta = marllb_core::wire::PacketMeta {
            l3_offset: kani::any(),
            l3_len: kani::any(),
            dont_fragment: kani::any(),
            icmp_error: kani::any(),
            ..Default::default()
        };
        let case = RewriteCase {
            start: kani::any(),
            len: kani::any(),
            meta,
            target: marllb_core::rewrite::Target {
                encap: marllb_core::rewrite::Encap::IpIp,
                dst_mac: kani::any(),
                family: marllb_core::wire::IpFamily::V4,
                addr: kani::any(),
            },
            mtu: kani::any(),
            hash: kani::any(),
        };
        rewrite_in_bounds(&mut buf, &case);
    }
}
