//! Shortest Expected Delay (SED).
//!
//! A new flow goes to the backend with the smallest expected delay
//! `(active_i + 1) / w_i`, where `active_i` is the number of flows the backend
//! currently serves and `w_i` its weight. This is what the MARLLB data plane applies to
//! the agent's weights (and the IPVS `sed` scheduler's rule).
//!
//! Two ratios are compared by cross-multiplication,
//! `(a_i + 1) * w_j < (a_j + 1) * w_i`; both products are below `2^32 * 2^32 = 2^64`,
//! so `u64` never overflows, and there is no division or float.

/// Chooses the backend with the shortest expected delay `(active_i + 1) / weights_i`.
///
/// Only backends with a weight above zero are candidates; only the first
/// `min(weights.len(), active.len(), MAX_BACKENDS)` backends are considered. Among
/// equal delays the scan starts at an offset derived from `hash`, and the first
/// minimum found from there (cyclically) wins, so ties spread over backends across
/// flows while the result stays a pure function of the inputs.
///
/// Returns `None` if there is no candidate (empty slices or all weights zero).
///
/// [`MAX_BACKENDS`]: crate::MAX_BACKENDS
pub fn sed_choose(weights: &[u32], active: &[u32], hash: u64) -> Option<u16> {
    let n = weights.len().min(active.len());
    sed_choose_by(&weights[..n], |i| active.get(i).copied().unwrap_or(0), hash)
}

/// [`sed_choose`] with backend `i`'s active count given by `active(i)`, for
/// `i` below `min(weights.len(), MAX_BACKENDS)`: the data plane reads the
/// counts where they are kept instead of copying them into an array first
/// (an array of [`MAX_BACKENDS`] zeroed for every new flow cost about 70
/// instructions of `memset`).
///
/// [`MAX_BACKENDS`]: crate::MAX_BACKENDS
#[inline]
pub fn sed_choose_by(weights: &[u32], active: impl Fn(usize) -> u32, hash: u64) -> Option<u16> {
    let n = weights.len().min(crate::MAX_BACKENDS);
    if n == 0 {
        return None;
    }
    let weights = &weights[..n];
    // Multiply-shift on the low 32 bits: start in 0..n without division.
    let start = (((hash & 0xFFFF_FFFF) * n as u64) >> 32) as usize;

    // Best so far: (index, active + 1, weight); weight 0 means "none yet".
    let mut best: Option<(usize, u64, u64)> = None;
    let mut i = start;
    for _ in 0..n {
        let w = u64::from(weights[i]);
        if w > 0 {
            let a = u64::from(active(i)) + 1;
            let better = match best {
                None => true,
                // a / w < ba / bw  <=>  a * bw < ba * w  (all factors <= 2^32, w, bw < 2^32).
                Some((_, ba, bw)) => a * bw < ba * w,
            };
            if better {
                best = Some((i, a, w));
            }
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    best.map(|(i, _, _)| i as u16)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::splitmix64;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Reference: every backend whose delay is minimal, compared exactly in u128.
    fn minima(weights: &[u32], active: &[u32]) -> Vec<usize> {
        let n = weights.len().min(active.len());
        let key = |i: usize| (u128::from(active[i]) + 1, u128::from(weights[i]));
        let mut best: Option<(u128, u128)> = None;
        for (a, w) in (0..n).filter(|&i| weights[i] > 0).map(key) {
            if best.is_none_or(|(ba, bw)| a * bw < ba * w) {
                best = Some((a, w));
            }
        }
        let Some((ba, bw)) = best else {
            return Vec::new();
        };
        (0..n)
            .filter(|&i| weights[i] > 0 && key(i).0 * bw == ba * key(i).1)
            .collect()
    }

    #[test]
    fn hand_examples() {
        // Idle servers: the heaviest has the shortest expected delay 1/w.
        assert_eq!(sed_choose(&[1, 2, 3], &[0, 0, 0], 0), Some(2));
        // IPVS-style example: weights 1, 2, 3 with 1, 3, 6 connections:
        // delays 2/1 = 2, 4/2 = 2, 7/3 = 2.33 -> one of the first two.
        for h in 0..64 {
            let b = sed_choose(&[1, 2, 3], &[1, 3, 6], splitmix64(h)).unwrap();
            assert!(b == 0 || b == 1);
        }
        // Heavier server already busy enough: delays 3/1, 9/4 -> backend 1.
        assert_eq!(sed_choose(&[1, 4], &[2, 8], 7), Some(1));
        // Delays 3/1 = 3, 13/4 = 3.25 -> backend 0.
        assert_eq!(sed_choose(&[1, 4], &[2, 12], 7), Some(0));
        // Q16.16 weights behave like the integer ones.
        let one = crate::WEIGHT_ONE;
        assert_eq!(sed_choose(&[one, 4 * one], &[2, 8], 7), Some(1));
    }

    #[test]
    fn zero_weights_and_empty_inputs() {
        assert_eq!(sed_choose(&[], &[], 1), None);
        assert_eq!(sed_choose(&[1, 2], &[], 1), None);
        assert_eq!(sed_choose(&[0, 0, 0], &[0, 0, 0], 1), None);
        // Zero-weight backend is idle but never chosen.
        for h in 0..64 {
            assert_eq!(
                sed_choose(&[0, 1, 0], &[0, 1000, 0], splitmix64(h)),
                Some(1)
            );
        }
        // Only min(len) backends count: backend 2 (weight 100) is ignored.
        assert_eq!(sed_choose(&[1, 1, 100], &[5, 3], 0), Some(1));
    }

    #[test]
    fn ties_spread_across_hashes() {
        let w = [3u32; 8];
        let a = [0u32; 8];
        let mut counts = [0u32; 8];
        for h in 0..8000 {
            let b = sed_choose(&w, &a, splitmix64(h)).unwrap() as usize;
            counts[b] += 1;
        }
        for &c in &counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        // Deterministic for the same inputs.
        assert_eq!(sed_choose(&w, &a, 42), sed_choose(&w, &a, 42));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let m = u32::MAX;
        // (2^32) / (2^32 - 1) vs (2^32 - 1) / 1.
        assert_eq!(sed_choose(&[m, 1], &[m, m - 2], 0), Some(0));
        // Equal extreme delays tie; both reachable.
        let mut seen = [false; 2];
        for h in 0..64 {
            seen[sed_choose(&[m, m], &[m, m], splitmix64(h)).unwrap() as usize] = true;
        }
        assert_eq!(seen, [true, true]);
        // Nearly equal delays told apart exactly: (m+1)/m = 1 + 1/m is below
        // m/(m-1) = 1 + 1/(m-1), so backend 0 wins.
        assert_eq!(sed_choose(&[m, m - 1], &[m, m - 1], 3), Some(0));
        assert_eq!(sed_choose(&[1], &[m], u64::MAX), Some(0));
    }

    proptest! {
        #[test]
        fn matches_exact_reference(
            wa in proptest::collection::vec(
                (prop_oneof![Just(0u32), 1u32..8, any::<u32>()],
                 prop_oneof![0u32..8, any::<u32>()]),
                0..40),
            hash in any::<u64>(),
        ) {
            let (w, a): (Vec<u32>, Vec<u32>) = wa.into_iter().unzip();
            let got = sed_choose(&w, &a, hash);
            let want = minima(&w, &a);
            match got {
                None => prop_assert!(want.is_empty()),
                Some(b) => prop_assert!(want.contains(&(b as usize))),
            }
        }
    }
}
