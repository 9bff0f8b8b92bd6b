//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI'16, §3.4, with weights).
//!
//! Every backend has a preference list over the table's slots, a permutation
//! `slot_j = (offset + j * skip) mod M` with `M` prime and `skip` in `1..M`. The
//! offset and skip come from the backend's *stable id* through two different integer
//! hash functions, never from its position in the list, so that:
//!
//! * two LB nodes given the same `(id, weight)` set, in any order, build the same
//!   table and send the same hash to the same backend, and
//! * removing one of `N` backends moves little more than its own `1/N` of the slots.
//!
//! Filling goes in rounds over the backends in id order. In each round every backend
//! adds its weight to a credit and, when the credit reaches the largest weight, pays
//! that much to claim its next preferred empty slot. With equal weights this is the
//! paper's algorithm; otherwise slot shares follow the weights (to within a slot or so
//! per backend). Weight-0 backends get no slot. Each claim walks at most `M`
//! preferences (a few on average). Near-equal weights are filled round by round;
//! skewed ones (where most backends would idle through most rounds) replay the same
//! claims in the same order through a min-heap keyed by (round, id order), so a
//! build is O(M log n) whatever the weights.
//!
//! The table size `M` is picked from [`MAGLEV_SIZES`] as the smallest prime at least
//! `100 * n` ([`maglev_size_for`]), following the paper's `M >= 100 N` for a balance
//! within about 1 %. Crossing a size step (e.g. from 20 to 21 backends) changes `M`
//! and reshuffles the whole table; a caller that needs minimal disruption over a
//! changing backend count builds with a fixed size ([`MaglevTable::build_with_size`]
//! with [`MAGLEV_SIZE`]).
//!
//! The id hash functions and the filling order are part of the cross-node contract:
//! changing them changes every table.

use super::SelectError;
use crate::MAX_BACKENDS;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Largest table size: a prime above `100 * MAX_BACKENDS`, as the paper recommends.
pub const MAGLEV_SIZE: usize = 65537;

/// Table sizes [`MaglevTable`] supports: primes, ascending, the last is
/// [`MAGLEV_SIZE`].
pub const MAGLEV_SIZES: [u32; 8] = [503, 1009, 2003, 4001, 8009, 16001, 32003, 65537];

/// Marks a slot no backend owns (only in an empty or partially read table).
const EMPTY: u16 = u16::MAX;

/// The table size used by [`MaglevTable::build`] for `n` backends: the smallest
/// entry of [`MAGLEV_SIZES`] that is at least `100 * n`, capped at [`MAGLEV_SIZE`].
pub const fn maglev_size_for(n: usize) -> u32 {
    let mut k = 0;
    while k < MAGLEV_SIZES.len() {
        if MAGLEV_SIZES[k] as usize >= n.saturating_mul(100) {
            return MAGLEV_SIZES[k];
        }
        k += 1;
    }
    MAGLEV_SIZE as u32
}

/// First hash of a backend id (slot offset): the SplitMix64 finaliser.
const fn id_hash_offset(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Second hash of a backend id (skip): MurmurHash3's `fmix64` of a keyed id, so it
/// is independent of [`id_hash_offset`].
const fn id_hash_skip(id: u64) -> u64 {
    let mut k = id ^ 0xC2B2_AE3D_27D4_EB4F;
    k ^= k >> 33;
    k = k.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    k ^= k >> 33;
    k = k.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    k ^ (k >> 33)
}

/// Which filling procedure a build uses (both give the same table).
#[derive(Clone, Copy)]
enum FillPath {
    /// Rounds for near-equal weights, heap for skewed ones.
    Auto,
    /// Always rounds.
    #[cfg_attr(not(test), allow(dead_code))]
    Rounds,
    /// Always the heap.
    #[cfg_attr(not(test), allow(dead_code))]
    Heap,
}

/// Build scratch: per live backend (weight > 0), in id order, its index in the
/// caller's list, weight, next preferred slot and skip. Lives on the stack (~5 KiB).
struct Fill {
    idx: [u16; MAX_BACKENDS],
    weight: [u64; MAX_BACKENDS],
    pos: [u32; MAX_BACKENDS],
    skip: [u32; MAX_BACKENDS],
    live: usize,
    max_w: u64,
    size: u32,
}

impl Fill {
    /// Gives backend `b` its next preferred empty slot; `false` only if the table is
    /// full. The preference list is a permutation of all slots, so `size` steps reach
    /// every slot.
    fn claim(&mut self, b: usize, table: &mut [u16]) -> bool {
        let (mut p, s) = (self.pos[b], self.skip[b]);
        let mut found = false;
        for _ in 0..self.size {
            let Some(e) = table.get_mut(p as usize) else {
                break;
            };
            p += s;
            if p >= self.size {
                p -= self.size;
            }
            if *e == EMPTY {
                *e = self.idx[b];
                found = true;
                break;
            }
        }
        self.pos[b] = p;
        found
    }

    /// The filling rule as literal rounds: each backend adds its weight to a credit
    /// and claims a slot when the credit reaches `max_w`. Cheap when weights are
    /// close (equal weights: plain Maglev). Returns the number of slots filled.
    fn fill_rounds(&mut self, table: &mut [u16]) -> usize {
        let mut credit = [0u64; MAX_BACKENDS];
        let mut filled = 0usize;
        // The heaviest backend claims once per round: `size` rounds suffice.
        for _ in 0..self.size {
            for (b, c) in credit[..self.live].iter_mut().enumerate() {
                // c < max_w before, so < 2 * max_w after: at most one claim.
                *c += self.weight[b];
                if *c < self.max_w {
                    continue;
                }
                *c -= self.max_w;
                if !self.claim(b, table) {
                    return filled;
                }
                filled += 1;
                if filled == table.len() {
                    return filled;
                }
            }
        }
        filled
    }

    /// The same claims in the same order, event by event: backend `b` makes its
    /// `k`-th claim in round `ceil(k * max_w / w_b)`, and within a round backends go
    /// in id order, so a min-heap keyed by `(round, b)` replays them. O(M log n)
    /// whatever the weights. Returns the number of slots filled.
    fn fill_heap(&mut self, table: &mut [u16]) -> usize {
        let mut claims = [0u64; MAX_BACKENDS];
        let mut next = [0u64; MAX_BACKENDS];
        let mut heap = [0u16; MAX_BACKENDS];
        for b in 0..self.live {
            next[b] = claim_round(1, self.max_w, self.weight[b]);
            heap[b] = b as u16;
        }
        let heap = &mut heap[..self.live];
        for root in (0..heap.len() / 2).rev() {
            sift_down(heap, &next, root);
        }
        let mut filled = 0usize;
        // Every pass fills one slot.
        for _ in 0..table.len() {
            let Some(&top) = heap.first() else { break };
            let b = top as usize;
            if !self.claim(b, table) {
                break;
            }
            filled += 1;
            claims[b] += 1;
            next[b] = claim_round(claims[b] + 1, self.max_w, self.weight[b]);
            sift_down(heap, &next, 0);
        }
        filled
    }
}

/// The round (from 1) in which a backend of weight `w` makes its `k`-th claim:
/// `ceil(k * max_w / w)`. `k <= MAGLEV_SIZE + 1` and `max_w < 2^32`, so no overflow.
const fn claim_round(k: u64, max_w: u64, w: u64) -> u64 {
    (k * max_w).div_ceil(w)
}

/// Restores the min-heap order of `heap` (backend positions keyed by
/// `(next[b], b)`) below `root`.
fn sift_down(heap: &mut [u16], next: &[u64; MAX_BACKENDS], mut root: usize) {
    let key = |b: u16| (next[b as usize], b);
    loop {
        let l = 2 * root + 1;
        if l >= heap.len() {
            return;
        }
        let r = l + 1;
        let c = if r < heap.len() && key(heap[r]) < key(heap[l]) {
            r
        } else {
            l
        };
        if key(heap[c]) >= key(heap[root]) {
            return;
        }
        heap.swap(c, root);
        root = c;
    }
}

/// A weighted Maglev lookup table: slot -> backend index.
///
/// Flat and pointer-free (131 080 bytes, no padding); any bit pattern is a value that
/// [`lookup`](Self::lookup) handles without panicking.
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct MaglevTable {
    /// Slots in use, one of [`MAGLEV_SIZES`]; 0 for an empty table.
    size: u32,
    /// Backend index owning each slot; `u16::MAX` beyond `size`.
    entries: [u16; MAGLEV_SIZE],
    /// Number of backends the table was built for.
    n: u16,
}

impl MaglevTable {
    /// An empty table: [`lookup`](Self::lookup) returns `None` until a successful
    /// build.
    pub const fn new() -> Self {
        MaglevTable {
            size: 0,
            entries: [EMPTY; MAGLEV_SIZE],
            n: 0,
        }
    }

    /// Number of slots in use (0 for an empty table).
    pub const fn size(&self) -> u32 {
        if self.size as usize > MAGLEV_SIZE {
            0
        } else {
            self.size
        }
    }

    /// Number of backends the table was built for (including weight-0 ones).
    pub const fn len(&self) -> usize {
        self.n as usize
    }

    /// `true` if the table has never been built successfully.
    pub const fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// The slots in use, each holding the index of the backend that owns it.
    pub fn entries(&self) -> &[u16] {
        &self.entries[..self.size() as usize]
    }

    /// Builds the table for `backends`, given as `(stable id, weight)` pairs, with the
    /// size [`maglev_size_for`]`(backends.len())`. Lookups return indices into
    /// `backends`.
    ///
    /// The id must identify the backend across LB nodes and restarts (e.g. a hash of
    /// its address and port), not its position in the list.
    ///
    /// # Errors
    ///
    /// [`SelectError::TooManyBackends`], [`SelectError::DuplicateId`],
    /// [`SelectError::NoLiveBackend`] (empty or all weights zero). On error the table
    /// is left exactly as it was.
    pub fn build(&mut self, backends: &[(u64, u32)]) -> Result<(), SelectError> {
        self.build_with_size(backends, maglev_size_for(backends.len()))
    }

    /// Like [`build`](Self::build) with an explicit table `size`, which must be one
    /// of [`MAGLEV_SIZES`] (otherwise [`SelectError::BadTableSize`]).
    pub fn build_with_size(
        &mut self,
        backends: &[(u64, u32)],
        size: u32,
    ) -> Result<(), SelectError> {
        self.build_inner(backends, size, FillPath::Auto)
    }

    fn build_inner(
        &mut self,
        backends: &[(u64, u32)],
        size: u32,
        path: FillPath,
    ) -> Result<(), SelectError> {
        let n = backends.len();
        if n > MAX_BACKENDS {
            return Err(SelectError::TooManyBackends);
        }
        if !MAGLEV_SIZES.contains(&size) {
            return Err(SelectError::BadTableSize);
        }
        // Canonical order: by id, so the input order does not matter.
        let mut order = [0u16; MAX_BACKENDS];
        for (k, o) in order[..n].iter_mut().enumerate() {
            *o = k as u16;
        }
        let order = &mut order[..n];
        order.sort_unstable_by_key(|&k| backends[k as usize].0);
        if order
            .windows(2)
            .any(|p| backends[p[0] as usize].0 == backends[p[1] as usize].0)
        {
            return Err(SelectError::DuplicateId);
        }
        let max_w = backends.iter().map(|b| b.1).max().unwrap_or(0);
        if max_w == 0 {
            return Err(SelectError::NoLiveBackend);
        }
        let max_w = u64::from(max_w);

        let mut st = Fill {
            idx: [0; MAX_BACKENDS],
            weight: [0; MAX_BACKENDS],
            pos: [0; MAX_BACKENDS],
            skip: [0; MAX_BACKENDS],
            live: 0,
            max_w,
            size,
        };
        let m = u64::from(size);
        let mut total_w = 0u64;
        for &k in order.iter() {
            let (id, w) = backends[k as usize];
            if w == 0 {
                continue;
            }
            let b = st.live;
            st.idx[b] = k;
            st.weight[b] = u64::from(w);
            st.pos[b] = (id_hash_offset(id) % m) as u32;
            st.skip[b] = (id_hash_skip(id) % (m - 1) + 1) as u32;
            st.live += 1;
            total_w += u64::from(w);
        }

        self.entries.fill(EMPTY);
        let table = &mut self.entries[..size as usize];
        // About M * max_w / Σw rounds of `live` steps each; when that is more than a
        // few steps per slot (skewed weights), replay the claims through the heap.
        let rounds = (m * max_w).div_ceil(total_w) + 1;
        let use_rounds = match path {
            FillPath::Auto => rounds * st.live as u64 <= 4 * m,
            FillPath::Rounds => true,
            FillPath::Heap => false,
        };
        let filled = if use_rounds {
            st.fill_rounds(table)
        } else {
            st.fill_heap(table)
        };
        debug_assert_eq!(filled, size as usize);
        self.size = size;
        self.n = n as u16;
        Ok(())
    }

    /// The backend for a flow `hash` (slot `hash mod size`), or `None` for an empty
    /// table. A built table always returns an index `< len()` with weight above zero.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        let size = u64::from(self.size());
        if size == 0 {
            return None;
        }
        let e = *self.entries.get((hash % size) as usize)?;
        if (e as usize) < self.len() {
            Some(e)
        } else {
            None
        }
    }

    /// Number of slots owned by backend `i` (its share is `share(i) / size()`).
    pub fn share(&self, i: usize) -> u32 {
        self.entries().iter().filter(|&&e| e as usize == i).count() as u32
    }
}

impl Default for MaglevTable {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

// 65 537-entry builds: too slow under Miri.
#[cfg(test)]
#[cfg(not(miri))]
mod tests {
    use super::super::test_util::{chi2, chi2_crit_999, splitmix64};
    use super::*;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn is_prime(x: u32) -> bool {
        x >= 2 && (2..).take_while(|d| d * d <= x).all(|d| x % d != 0)
    }

    /// Backend ids as a real deployment would make them: hashes of addresses.
    fn ids(n: usize) -> Vec<u64> {
        (0..n as u64)
            .map(|i| splitmix64(0x0A00_0000 + i) ^ 0x5555)
            .collect()
    }

    fn table() -> Box<MaglevTable> {
        Box::new(MaglevTable::new())
    }

    fn assert_full(t: &MaglevTable, backends: &[(u64, u32)]) {
        assert!(!t.is_empty());
        for &e in t.entries() {
            assert!((e as usize) < backends.len(), "unfilled or bad slot {e}");
            assert!(backends[e as usize].1 > 0, "weight-0 backend owns a slot");
        }
    }

    /// Each backend's slot count is within 1 % of the table of its weight share.
    fn assert_shares(t: &MaglevTable, backends: &[(u64, u32)]) {
        let total: f64 = backends.iter().map(|b| b.1 as f64).sum();
        let size = t.size() as f64;
        for (i, b) in backends.iter().enumerate() {
            let want = size * b.1 as f64 / total;
            let got = t.share(i) as f64;
            assert!(
                (got - want).abs() <= 0.01 * size,
                "backend {i}: {got} slots, want {want:.1} of {size}"
            );
        }
    }

    /// The filling rule written as literal rounds (credit per backend), for checking
    /// the event-driven build against it. Returns the owners' ids.
    fn reference_fill(backends: &[(u64, u32)], size: u32) -> Vec<u64> {
        let mut live: Vec<(u64, u64)> = backends
            .iter()
            .filter(|b| b.1 > 0)
            .map(|b| (b.0, u64::from(b.1)))
            .collect();
        live.sort();
        let max_w = live.iter().map(|b| b.1).max().unwrap();
        let m = u64::from(size);
        let mut pos: Vec<u64> = live.iter().map(|b| id_hash_offset(b.0) % m).collect();
        let skip: Vec<u64> = live
            .iter()
            .map(|b| id_hash_skip(b.0) % (m - 1) + 1)
            .collect();
        let mut credit = std::vec![0u64; live.len()];
        let mut table = std::vec![u64::MAX; size as usize];
        let mut filled = 0;
        while filled < table.len() {
            for b in 0..live.len() {
                credit[b] += live[b].1;
                if credit[b] < max_w || filled == table.len() {
                    continue;
                }
                credit[b] -= max_w;
                while table[pos[b] as usize] != u64::MAX {
                    pos[b] = (pos[b] + skip[b]) % m;
                }
                table[pos[b] as usize] = live[b].0;
                pos[b] = (pos[b] + skip[b]) % m;
                filled += 1;
            }
        }
        table
    }

    #[test]
    fn event_driven_build_matches_rounds() {
        let cases: [&[u32]; 4] = [
            &[1; 16],
            &[1, 2, 3, 4],
            &[u32::MAX, 1, 0, 7, 7],
            &[5, 0, 65536, 3],
        ];
        let mut t = table();
        for w in cases {
            let b: Vec<(u64, u32)> = ids(w.len()).into_iter().zip(w.iter().copied()).collect();
            let size = maglev_size_for(b.len());
            let want = reference_fill(&b, size);
            for path in [FillPath::Auto, FillPath::Rounds, FillPath::Heap] {
                t.build_inner(&b, size, path).unwrap();
                let got: Vec<u64> = t.entries().iter().map(|&e| b[e as usize].0).collect();
                assert_eq!(got, want, "weights {w:?}");
            }
        }
    }

    #[test]
    fn sizes_are_primes_at_least_100n() {
        assert!(MAGLEV_SIZES.iter().all(|&s| is_prime(s)));
        assert!(MAGLEV_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*MAGLEV_SIZES.last().unwrap() as usize, MAGLEV_SIZE);
        for n in 1..=MAX_BACKENDS {
            let s = maglev_size_for(n);
            assert!(s as usize >= 100 * n && is_prime(s), "n {n} size {s}");
        }
        assert_eq!(maglev_size_for(16), 2003);
        assert_eq!(maglev_size_for(usize::MAX), MAGLEV_SIZE as u32);
    }

    #[test]
    fn layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<MaglevTable>(), 4 + 2 * MAGLEV_SIZE + 2);
    }

    #[test]
    fn empty_and_errors_keep_table() {
        let mut t = table();
        assert_eq!(t.lookup(5), None);
        assert!(t.is_empty());
        let b: Vec<(u64, u32)> = ids(4).into_iter().map(|id| (id, 1)).collect();
        t.build(&b).unwrap();
        let before = t.clone();
        assert_eq!(t.build(&[]), Err(SelectError::NoLiveBackend));
        assert_eq!(t.build(&[(1, 0), (2, 0)]), Err(SelectError::NoLiveBackend));
        assert_eq!(t.build(&[(1, 5), (1, 6)]), Err(SelectError::DuplicateId));
        assert_eq!(t.build_with_size(&b, 1000), Err(SelectError::BadTableSize));
        let many: Vec<(u64, u32)> = (0..257).map(|i| (i, 1)).collect();
        assert_eq!(t.build(&many), Err(SelectError::TooManyBackends));
        assert!(*t == *before);
    }

    #[test]
    fn single_backend_owns_everything() {
        let mut t = table();
        t.build(&[(42, 3)]).unwrap();
        assert_eq!(t.size(), 503);
        assert_eq!(t.share(0), 503);
        assert_eq!(t.lookup(u64::MAX), Some(0));
    }

    #[test]
    fn equal_and_weighted_shares() {
        let mut t = table();
        let eq: Vec<(u64, u32)> = ids(16).into_iter().map(|id| (id, 1 << 16)).collect();
        t.build(&eq).unwrap();
        assert_full(&t, &eq);
        assert_shares(&t, &eq);

        let w: Vec<(u64, u32)> = ids(4).into_iter().zip([1, 2, 3, 4]).collect();
        t.build(&w).unwrap();
        assert_full(&t, &w);
        assert_shares(&t, &w);
        std::println!(
            "maglev 1:2:3:4 shares of {}: {:?}",
            t.size(),
            (0..4).map(|i| t.share(i)).collect::<Vec<_>>()
        );

        // Big table, weights with a zero and a huge ratio.
        let w: Vec<(u64, u32)> = ids(5)
            .into_iter()
            .zip([u32::MAX, 0, u32::MAX / 2, 1 << 20, u32::MAX / 3])
            .collect();
        t.build_with_size(&w, MAGLEV_SIZE as u32).unwrap();
        assert_full(&t, &w);
        assert_shares(&t, &w);
        assert_eq!(t.share(1), 0);
    }

    #[test]
    fn lookups_chi_square() {
        let mut t = table();
        let w: Vec<(u64, u32)> = ids(4).into_iter().zip([1, 2, 3, 4]).collect();
        t.build(&w).unwrap();
        const N: u64 = 1_000_000;
        let mut obs = [0u64; 4];
        for i in 0..N {
            obs[t.lookup(splitmix64(i)).unwrap() as usize] += 1;
        }
        let size = t.size() as f64;
        let exp: Vec<f64> = (0..4)
            .map(|i| t.share(i) as f64 / size * N as f64)
            .collect();
        let stat = chi2(&obs, &exp);
        std::println!(
            "maglev lookup chi2 = {stat:.2} (df 3, crit {:.2})",
            chi2_crit_999(3)
        );
        assert!(stat < chi2_crit_999(3));
    }

    #[test]
    fn order_does_not_matter() {
        let b: Vec<(u64, u32)> = ids(20).into_iter().zip(1..).collect();
        let mut rev = b.clone();
        rev.reverse();
        rev.swap(3, 11);
        let (mut t1, mut t2) = (table(), table());
        t1.build(&b).unwrap();
        t2.build(&rev).unwrap();
        assert_eq!(t1.size(), t2.size());
        let owner1 = t1.entries().iter().map(|&e| b[e as usize].0);
        let owner2 = t2.entries().iter().map(|&e| rev[e as usize].0);
        assert!(owner1.eq(owner2));
        // Same input twice: bit-identical.
        t2.build(&b).unwrap();
        assert!(*t1 == *t2);
    }

    /// Removing one of `n` equal backends, for each choice of the removed one: its
    /// slots all move, the moved fraction is between 1/n and 1.6/n. Returns the mean
    /// and largest moved fraction times `n`.
    fn disruption(n: usize, size: Option<u32>) -> (f64, f64) {
        let b: Vec<(u64, u32)> = ids(n).into_iter().map(|id| (id, 100)).collect();
        let build = |t: &mut MaglevTable, b: &[(u64, u32)]| match size {
            Some(s) => t.build_with_size(b, s).unwrap(),
            None => t.build(b).unwrap(),
        };
        let (mut t1, mut t2) = (table(), table());
        build(&mut t1, &b);
        let (mut sum, mut max) = (0.0f64, 0.0f64);
        for removed in 0..n {
            let mut fewer = b.clone();
            fewer.remove(removed);
            build(&mut t2, &fewer);
            assert_eq!(t1.size(), t2.size(), "size must not change for this test");
            let mut changed = 0usize;
            for (&e1, &e2) in t1.entries().iter().zip(t2.entries()) {
                let (o1, o2) = (b[e1 as usize].0, fewer[e2 as usize].0);
                // Every slot of the removed backend changes owner.
                assert_ne!(o2, b[removed].0);
                changed += usize::from(o1 != o2);
            }
            let ratio = changed as f64 / t1.size() as f64 * n as f64;
            // At least the removed backend's own ~1/n (its share may round a bit low).
            assert!(ratio >= 0.98, "fewer slots moved than owned: {ratio}");
            assert!(ratio <= 1.6, "too disruptive: {ratio} / n");
            sum += ratio;
            max = max.max(ratio);
        }
        let mean = sum / n as f64;
        std::println!(
            "maglev n={n} size={}: removing one moves on average {mean:.3}/n of the \
             slots, at most {max:.3}/n",
            t1.size()
        );
        (mean, max)
    }

    #[test]
    fn removing_a_backend_disrupts_little() {
        disruption(10, None);
        disruption(16, None);
        disruption(16, Some(MAGLEV_SIZE as u32));
    }

    #[test]
    fn weight_zero_gets_nothing() {
        let b: Vec<(u64, u32)> = ids(6).into_iter().zip([0, 3, 0, 3, 3, 0]).collect();
        let mut t = table();
        t.build(&b).unwrap();
        assert_full(&t, &b);
        for i in [0, 2, 5] {
            assert_eq!(t.share(i), 0);
        }
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn full_256_backends() {
        let b: Vec<(u64, u32)> = ids(256)
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, (i as u32 % 7) << 16))
            .collect();
        let mut t = table();
        t.build(&b).unwrap();
        assert_eq!(t.size(), 32003);
        assert_full(&t, &b);
        assert_shares(&t, &b);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn always_fills_every_slot(
            weights in proptest::collection::vec(
                prop_oneof![Just(0u32), 1u32..4, any::<u32>()], 1..=40),
            seed in any::<u64>(),
        ) {
            let b: Vec<(u64, u32)> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (splitmix64(seed ^ i as u64), w))
                .collect();
            let mut t = table();
            match t.build(&b) {
                Ok(()) => assert_full(&t, &b),
                Err(e) => {
                    prop_assert_eq!(e, SelectError::NoLiveBackend);
                    prop_assert!(t.is_empty());
                }
            }
        }

        #[test]
        fn matches_round_reference(
            weights in proptest::collection::vec(
                prop_oneof![Just(0u32), 1u32..5, any::<u32>()], 1..=24),
            seed in any::<u64>(),
        ) {
            let b: Vec<(u64, u32)> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (splitmix64(seed ^ i as u64), w))
                .collect();
            let mut t = table();
            if t.build(&b).is_ok() {
                let want = reference_fill(&b, t.size());
                for path in [FillPath::Rounds, FillPath::Heap] {
                    t.build_inner(&b, maglev_size_for(b.len()), path).unwrap();
                    let got: Vec<u64> =
                        t.entries().iter().map(|&e| b[e as usize].0).collect();
                    prop_assert_eq!(&got, &want);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(seed in any::<u64>(), h in any::<u64>()) {
            let mut bytes = std::vec![0u8; core::mem::size_of::<MaglevTable>()];
            for (i, c) in bytes.chunks_mut(8).enumerate() {
                let r = splitmix64(seed ^ i as u64).to_le_bytes();
                c.copy_from_slice(&r[..c.len()]);
            }
            // Sometimes a plausible size, so lookups reach the entries.
            if seed & 1 == 0 {
                bytes[..4].copy_from_slice(&503u32.to_le_bytes());
            }
            let t = MaglevTable::read_from_bytes(&bytes).unwrap();
            if let Some(b) = t.lookup(h) {
                prop_assert!((b as usize) < t.len());
            }
            let _ = t.share(3);
        }
    }

    /// Build time in this profile; run with `--release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn build_time() {
        let mut t = table();
        // skew: 0 equal, 1 one heavy and the rest at 1/65536 of it, 2 weights 1..=n.
        for (n, size, skew) in [
            (16, None, 0),
            (16, None, 2),
            (16, Some(MAGLEV_SIZE as u32), 0),
            (256, None, 0),
            (256, None, 1),
            (256, None, 2),
            (256, Some(MAGLEV_SIZE as u32), 1),
        ] {
            let b: Vec<(u64, u32)> = ids(n)
                .into_iter()
                .enumerate()
                .map(|(i, id)| {
                    let w = match skew {
                        0 => 1 << 16,
                        1 if i == 0 => 1 << 16,
                        1 => 1,
                        _ => (i as u32 + 1) << 16,
                    };
                    (id, w)
                })
                .collect();
            let reps = 20;
            let start = std::time::Instant::now();
            for _ in 0..reps {
                match size {
                    Some(s) => t.build_with_size(core::hint::black_box(&b), s).unwrap(),
                    None => t.build(core::hint::black_box(&b)).unwrap(),
                }
            }
            let per = start.elapsed() / reps;
            std::println!(
                "maglev build n={n} size={} skewed={skew}: {per:?}",
                t.size()
            );
        }
    }
}
