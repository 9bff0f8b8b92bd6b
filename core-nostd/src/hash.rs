//! The flow hash: a fast, seeded, well-mixed 64-bit hash of a [`FlowKey`].
//!
//! Every LB node that uses the same seed computes the same hash for the same flow,
//! which is what makes the Maglev fallback consistent across nodes. The low bits
//! pick the flow-table bucket, the high 32 bits are the bucket signature, and
//! [`choice_hash`] derives an independent value for the backend draw, so a
//! retransmitted SYN lands on the same backend without any state.

use crate::flow::FlowKey;

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// 64x64 -> 128 bit multiply, folded: the mixing step of wyhash.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Hashes a flow key with `seed`. IPv4 keys hash three words, IPv6 keys five.
#[inline]
pub fn flow_hash(key: &FlowKey, seed: u64) -> u64 {
    let w = &key.words;
    let mut h = mum(w[0] ^ seed ^ P0, w[2] ^ P1);
    if key.is_v6() {
        h = mum(h ^ w[1] ^ P2, w[3] ^ P3);
    }
    finish(h, w[4], seed)
}

/// [`flow_hash`] of a key known to be IPv4 (the pipeline's fast path), without
/// the family test; equal to `flow_hash` for every IPv4 key.
#[inline(always)]
pub fn flow_hash_v4(key: &FlowKey, seed: u64) -> u64 {
    let w = &key.words;
    finish(mum(w[0] ^ seed ^ P0, w[2] ^ P1), w[4], seed)
}

#[inline(always)]
fn finish(h: u64, tail: u64, seed: u64) -> u64 {
    let h = mum(h ^ tail ^ P1, seed ^ P2);
    mum(h ^ P3, h ^ P0)
}

/// A second, independent-looking hash derived from the flow hash; used for the
/// backend draw of a new flow so that it is not correlated with the bucket index.
#[inline]
pub fn choice_hash(flow_hash: u64) -> u64 {
    mum(flow_hash ^ P2, flow_hash.rotate_left(29) ^ P3)
}

/// Stable 64-bit identity of a backend from its address, for Maglev permutations
/// (independent of the backend's index in any table).
pub fn backend_id(addr: &[u8; 16], seed: u64) -> u64 {
    let a = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let b = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let h = mum(a ^ seed ^ P0, b ^ P1);
    mum(h ^ P2, h ^ P3)
}

/// splitmix64: a tiny deterministic generator for reservoir sampling and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64-bit value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpFamily;

    fn key(i: u32) -> FlowKey {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&(0xc612_0000u32 + i).to_be_bytes());
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[198, 18, 255, 1]);
        FlowKey::new(
            IpFamily::V4,
            &src,
            &dst,
            (i as u16).wrapping_add(1024),
            80,
            6,
        )
    }

    #[test]
    fn the_ipv4_hash_is_the_general_hash() {
        for i in 0..1000 {
            for seed in [0, 7, u64::MAX] {
                assert_eq!(flow_hash_v4(&key(i), seed), flow_hash(&key(i), seed));
            }
        }
    }

    #[test]
    fn deterministic_and_seeded() {
        assert_eq!(flow_hash(&key(1), 7), flow_hash(&key(1), 7));
        assert_ne!(flow_hash(&key(1), 7), flow_hash(&key(1), 8));
        assert_ne!(flow_hash(&key(1), 7), flow_hash(&key(2), 7));
    }

    #[test]
    #[cfg_attr(miri, ignore = "millions of operations: too slow under Miri")]
    fn low_and_high_bits_are_balanced() {
        // 64 K sequential clients: every one of 256 buckets and every top byte gets
        // close to its share (loose bounds, the point is to catch a broken mixer).
        let mut lo = [0u32; 256];
        let mut hi = [0u32; 256];
        for i in 0..65536 {
            let h = flow_hash(&key(i), 0);
            lo[(h & 0xff) as usize] += 1;
            hi[(h >> 56) as usize] += 1;
            let c = choice_hash(h);
            assert_ne!(c, h);
        }
        for c in lo.iter().chain(hi.iter()) {
            assert!((180..=340).contains(c), "{c}");
        }
    }
}
