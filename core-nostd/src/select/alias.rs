//! Walker/Vose alias table in exact integer arithmetic.
//!
//! With `n` backends and total weight `W`, every column has capacity `W`. Column `c`
//! keeps itself with threshold `prob[c]` (in `0..=W`) and hands the rest, `W - prob[c]`,
//! to `alias[c]`. Building with scaled weights `w_i * n` (whose sum is exactly `n * W`)
//! makes the implied probability of backend `i`,
//! `(prob[i] + Σ_{c: alias[c] = i} (W - prob[c])) / (n * W)`, equal to `w_i / W`
//! exactly; [`AliasTable::probability`] computes it from the table.
//!
//! Sampling is two multiply-shifts and one compare: the low 32 bits of the hash pick
//! the column, the high 32 bits the threshold draw. The only inexactness left is the
//! `< 2^-32` relative bias of mapping 32 random bits onto `n` columns and onto `W`.

use super::SelectError;
use crate::MAX_BACKENDS;
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// An alias table over up to [`MAX_BACKENDS`] weighted backends.
///
/// Flat and pointer-free (2576 bytes, no padding); any bit pattern is a value
/// that [`sample`](Self::sample) handles without panicking.
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AliasTable {
    /// Total weight `W` of the built weight vector (column capacity).
    total: u64,
    /// Threshold of each column, in `0..=total`.
    prob: [u64; MAX_BACKENDS],
    /// Backend that takes a column's draws at or above its threshold.
    alias: [u16; MAX_BACKENDS],
    /// Number of backends (columns); 0 for an empty table.
    n: u16,
    /// Explicit padding to a multiple of 8 bytes; always zero.
    _reserved: [u16; 3],
}

impl AliasTable {
    /// An empty table: [`sample`](Self::sample) returns `None` until a successful
    /// [`build`](Self::build).
    pub const fn new() -> Self {
        AliasTable {
            total: 0,
            prob: [0; MAX_BACKENDS],
            alias: [0; MAX_BACKENDS],
            n: 0,
            _reserved: [0; 3],
        }
    }

    /// Number of backends (columns) of the built table.
    pub const fn len(&self) -> usize {
        let n = self.n as usize;
        if n > MAX_BACKENDS {
            MAX_BACKENDS
        } else {
            n
        }
    }

    /// `true` if the table has never been built successfully.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total weight `W` the table was built from.
    pub const fn total(&self) -> u64 {
        self.total
    }

    /// Rebuilds the table for `weights` (backend `i` gets weight `weights[i]`), in
    /// O(n) time and without allocating.
    ///
    /// # Errors
    ///
    /// [`SelectError::TooManyBackends`] if `weights.len() > MAX_BACKENDS`;
    /// [`SelectError::NoLiveBackend`] if `weights` is empty or all zero. On error the
    /// table is left exactly as it was, so the previous table stays in service.
    pub fn build(&mut self, weights: &[u32]) -> Result<(), SelectError> {
        let n = weights.len();
        if n > MAX_BACKENDS {
            return Err(SelectError::TooManyBackends);
        }
        // At most 256 * (2^32 - 1) < 2^40: no overflow.
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Err(SelectError::NoLiveBackend);
        }
        let n64 = n as u64;

        // Scaled weights s_i = w_i * n (< 2^48), summing to exactly n * W.
        let mut scaled = [0u64; MAX_BACKENDS];
        // Worklists as stacks; every index is on exactly one of them.
        let mut small = [0u16; MAX_BACKENDS];
        let mut large = [0u16; MAX_BACKENDS];
        let (mut ns, mut nl) = (0usize, 0usize);
        for (i, &w) in weights.iter().enumerate() {
            let s = u64::from(w) * n64;
            scaled[i] = s;
            if s < total {
                small[ns] = i as u16;
                ns += 1;
            } else {
                large[nl] = i as u16;
                nl += 1;
            }
        }

        // Each step finalises one small column and moves its deficit onto one large
        // backend. Invariant: the scaled weights still on the lists sum to
        // (number on the lists) * W, so a large backend never goes negative.
        while ns > 0 && nl > 0 {
            ns -= 1;
            let l = small[ns] as usize;
            let g = large[nl - 1] as usize;
            self.prob[l] = scaled[l];
            self.alias[l] = g as u16;
            // scaled[g] >= W >= W - scaled[l].
            scaled[g] -= total - scaled[l];
            if scaled[g] < total {
                nl -= 1;
                small[ns] = g as u16;
                ns += 1;
            }
        }
        // By the invariant, whatever is left is on `large` with exactly W each (an
        // empty `large` with a non-empty `small` would make the sum too small). The
        // `small` loop is for robustness only and never runs.
        for &g in large[..nl].iter().chain(small[..ns].iter()) {
            let g = g as usize;
            self.prob[g] = total;
            self.alias[g] = g as u16;
        }
        // Unused columns: deterministic contents so equal inputs give equal tables.
        for c in n..MAX_BACKENDS {
            self.prob[c] = 0;
            self.alias[c] = 0;
        }
        self.total = total;
        self.n = n as u16;
        self._reserved = [0; 3];
        Ok(())
    }

    /// Chooses a backend for a well-mixed 64-bit `hash`, in O(1) without division.
    ///
    /// Returns `None` only for an empty table; otherwise an index `< len()`. A weight
    /// of zero is never returned.
    #[inline]
    pub fn sample(&self, hash: u64) -> Option<u16> {
        let n = self.len() as u64;
        if n == 0 {
            return None;
        }
        // Low 32 bits -> column in 0..n.
        let col = (((hash & 0xFFFF_FFFF) * n) >> 32) as usize;
        // High 32 bits -> threshold draw in 0..W.
        let u = ((u128::from(hash >> 32) * u128::from(self.total)) >> 32) as u64;
        let prob = *self.prob.get(col)?;
        if u < prob {
            Some(col as u16)
        } else {
            let a = *self.alias.get(col)?;
            // Only an untrusted (not built) table can hold an out-of-range alias.
            Some(if u64::from(a) < n { a } else { col as u16 })
        }
    }

    /// The probability the table implies for backend `i`, as an exact fraction
    /// `(numerator, denominator)`: `(prob[i] + Σ_{c: alias[c] = i} (W - prob[c]),
    /// n * W)`. For a built table it equals `(w_i, W)` up to the factor `n`.
    ///
    /// `i >= len()` gives a numerator of 0; an empty table gives `(0, 1)`.
    pub fn probability(&self, i: usize) -> (u128, u128) {
        let n = self.len();
        let w = u128::from(self.total);
        let den = n as u128 * w;
        if den == 0 {
            return (0, 1);
        }
        if i >= n {
            return (0, den);
        }
        let own = u128::from(self.prob[i].min(self.total));
        let given: u128 = (0..n)
            .filter(|&c| self.alias[c] as usize == i)
            .map(|c| w - u128::from(self.prob[c].min(self.total)))
            .sum();
        (own + given, den)
    }
}

impl Default for AliasTable {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AliasTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        f.debug_struct("AliasTable")
            .field("n", &n)
            .field("total", &self.total)
            .field("prob", &&self.prob[..n])
            .field("alias", &&self.alias[..n])
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{chi2, chi2_crit_999, splitmix64};
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Asserts that the table's implied probabilities equal `w_i / W` exactly.
    fn assert_exact(t: &AliasTable, weights: &[u32]) {
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        assert_eq!(t.len(), weights.len());
        let mut sum_num = 0u128;
        for (i, &w) in weights.iter().enumerate() {
            let (num, den) = t.probability(i);
            assert_eq!(num * total, u128::from(w) * den, "backend {i}, weight {w}");
            sum_num += num;
            if w == 0 {
                assert_eq!(num, 0);
            }
        }
        assert_eq!(sum_num, t.probability(0).1);
    }

    fn weight() -> impl Strategy<Value = u32> {
        prop_oneof![
            3 => Just(0u32),
            3 => 1u32..=16,
            3 => any::<u32>(),
            1 => (u32::MAX - 8)..=u32::MAX,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn implied_probability_is_exact(
            weights in proptest::collection::vec(weight(), 1..=MAX_BACKENDS)
        ) {
            let mut t = AliasTable::new();
            let r = t.build(&weights);
            if weights.iter().all(|&w| w == 0) {
                prop_assert_eq!(r, Err(SelectError::NoLiveBackend));
                prop_assert!(t.is_empty());
            } else {
                prop_assert_eq!(r, Ok(()));
                assert_exact(&t, &weights);
            }
        }

        #[test]
        fn sample_never_returns_zero_weight(
            weights in proptest::collection::vec(weight(), 1..=64),
            hashes in proptest::collection::vec(any::<u64>(), 64),
        ) {
            let mut t = AliasTable::new();
            if t.build(&weights).is_ok() {
                for h in hashes {
                    let b = t.sample(h).unwrap() as usize;
                    prop_assert!(b < weights.len());
                    prop_assert!(weights[b] > 0);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), core::mem::size_of::<AliasTable>()),
            h in any::<u64>(),
        ) {
            let t = AliasTable::read_from_bytes(&bytes).unwrap();
            if let Some(b) = t.sample(h) {
                prop_assert!((b as usize) < t.len());
            }
            let _ = t.probability((h % 300) as usize);
        }
    }

    #[test]
    fn layout_has_no_padding() {
        assert_eq!(
            core::mem::size_of::<AliasTable>(),
            8 + 8 * 256 + 2 * 256 + 8
        );
    }

    #[test]
    fn empty_table_samples_none() {
        let t = AliasTable::new();
        assert!(t.is_empty());
        assert_eq!(t.sample(12345), None);
        assert_eq!(t.probability(0), (0, 1));
    }

    #[test]
    fn single_backend() {
        let mut t = AliasTable::new();
        t.build(&[7]).unwrap();
        assert_eq!(t.len(), 1);
        for i in 0..1000 {
            assert_eq!(t.sample(splitmix64(i)), Some(0));
        }
        assert_eq!(t.sample(u64::MAX), Some(0));
        assert_eq!(t.sample(0), Some(0));
    }

    #[test]
    fn all_zero_and_too_many_keep_previous_table() {
        let mut t = AliasTable::new();
        t.build(&[1, 2, 3]).unwrap();
        let before = t.clone();
        assert_eq!(t.build(&[0, 0, 0, 0]), Err(SelectError::NoLiveBackend));
        assert_eq!(t.build(&[]), Err(SelectError::NoLiveBackend));
        assert_eq!(
            t.build(&[1; MAX_BACKENDS + 1]),
            Err(SelectError::TooManyBackends)
        );
        assert_eq!(t, before);
        assert_exact(&t, &[1, 2, 3]);
    }

    #[test]
    fn full_256_backends() {
        let weights: Vec<u32> = (0..MAX_BACKENDS as u32)
            .map(|i| if i % 17 == 0 { 0 } else { i * 1000 + 1 })
            .collect();
        let mut t = AliasTable::new();
        t.build(&weights).unwrap();
        assert_exact(&t, &weights);
        let max: Vec<u32> = [u32::MAX; MAX_BACKENDS].to_vec();
        t.build(&max).unwrap();
        assert_exact(&t, &max);
    }

    #[test]
    fn rebuild_is_deterministic() {
        let mut a = AliasTable::new();
        let mut b = AliasTable::new();
        a.build(&[5, 1, 9, 0, 3, 3, 3, 3]).unwrap();
        b.build(&[1; 100]).unwrap();
        b.build(&[5, 1, 9, 0, 3, 3, 3, 3]).unwrap();
        assert_eq!(a, b);
    }

    /// 1e6 samples for weights 1..=16 (plus a zero weight) against the exact
    /// expectation; chi-square below the 0.999 critical value.
    #[test]
    #[cfg_attr(miri, ignore = "a million samples: too slow under Miri")]
    fn chi_square_weights_1_to_16() {
        let mut weights: Vec<u32> = (1..=16).map(|w| w * crate::WEIGHT_ONE).collect();
        weights.push(0);
        let mut t = AliasTable::new();
        t.build(&weights).unwrap();
        const N: u64 = 1_000_000;
        let mut obs = [0u64; 17];
        for i in 0..N {
            obs[t.sample(splitmix64(i)).unwrap() as usize] += 1;
        }
        assert_eq!(obs[16], 0, "zero weight sampled");
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let exp: Vec<f64> = weights
            .iter()
            .map(|&w| w as f64 / total * N as f64)
            .collect();
        let stat = chi2(&obs, &exp);
        let crit = chi2_crit_999(15);
        std::println!("alias chi2 = {stat:.2} (df 15, 0.999 critical {crit:.2})");
        assert!(stat < crit, "chi2 {stat} >= {crit}");
    }
}
