//! Backend selection: turn per-backend weights into a choice for a new flow.
//!
//! Three methods, selectable per VIP ([`Method`]):
//!
//! * [`AliasTable`] (Walker/Vose alias method): O(n) build, O(1) division-free
//!   sample. Built in exact integer arithmetic, so the probability the table implies
//!   for backend `i` is exactly `w_i / Σw` ([`AliasTable::probability`]).
//! * [`sed_choose`] (Shortest Expected Delay): argmin of `(active_i + 1) / w_i`,
//!   compared by cross-multiplication; no table, O(n) per choice.
//! * [`MaglevTable`] (weighted Maglev consistent hashing): the fallback for packets
//!   of flows this node does not know. The table depends only on the set of
//!   `(backend id, weight)` pairs, so every LB node with the same set picks the same
//!   backend for the same hash.
//!
//! # Contract
//!
//! * Inputs are slices indexed by backend index `0..n`, `n <= MAX_BACKENDS`; every
//!   choice is a backend index `< n` returned as `u16`, or `None` when nothing can be
//!   chosen (empty table, all weights zero).
//! * A weight of zero means "never choose"; a weight is a Q16.16 [`Weight`] but only
//!   ratios matter, so any `u32` scale works.
//! * Nothing here allocates, divides on the per-flow path, uses floating point, or
//!   panics on any input. State is flat `#[repr(C)]` without pointers or padding
//!   (checked by the `zerocopy` derives), so a table can be built in one process and
//!   read from shared memory by another. A table read from untrusted bytes still never
//!   makes a lookup panic or return an index `>= len()`.
//! * A failed `build` leaves the previous table untouched and valid, so a bad weight
//!   vector from the controller never takes a VIP down.
//! * `hash` arguments are expected to be well mixed 64-bit values (e.g. a flow hash);
//!   the alias table uses the low 32 bits for the column and the high 32 bits for the
//!   threshold.
//!
//! [`Weight`]: crate::Weight

mod alias;
mod maglev;
mod sed;

pub use alias::AliasTable;
pub use maglev::{maglev_size_for, MaglevTable, MAGLEV_SIZE, MAGLEV_SIZES};
pub use sed::{sed_choose, sed_choose_by};

use core::fmt;

/// Why a selection structure could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SelectError {
    /// More than [`MAX_BACKENDS`](crate::MAX_BACKENDS) backends were given.
    TooManyBackends,
    /// No backend has a weight above zero (this includes an empty backend list).
    NoLiveBackend,
    /// Two Maglev backends share the same stable id, so the table would depend on
    /// their order.
    DuplicateId,
    /// A Maglev table size not in [`MAGLEV_SIZES`] was requested.
    BadTableSize,
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            SelectError::TooManyBackends => "too many backends",
            SelectError::NoLiveBackend => "no backend with a weight above zero",
            SelectError::DuplicateId => "duplicate backend id",
            SelectError::BadTableSize => "unsupported Maglev table size",
        };
        f.write_str(s)
    }
}

/// Which selection method a VIP uses for new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, zerocopy::FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Method {
    /// Weighted random choice through an [`AliasTable`].
    #[default]
    Alias = 0,
    /// Shortest Expected Delay over active-flow counts ([`sed_choose`]).
    Sed = 1,
    /// Weighted consistent hashing through a [`MaglevTable`].
    Maglev = 2,
}

impl Method {
    /// Decodes a method from its `u8` wire/shared-memory value; `None` if unknown.
    pub const fn from_u8(v: u8) -> Option<Method> {
        match v {
            0 => Some(Method::Alias),
            1 => Some(Method::Sed),
            2 => Some(Method::Maglev),
            _ => None,
        }
    }

    /// The `u8` value of this method, as stored in shared memory.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the selection tests.

    /// SplitMix64: a well-mixed 64-bit hash of a counter.
    pub fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Upper 0.999 quantile of the chi-square distribution with `df` degrees of
    /// freedom (Wilson–Hilferty approximation).
    pub fn chi2_crit_999(df: usize) -> f64 {
        let k = df as f64;
        let z = 3.090_232_306_167_813; // standard normal 0.999 quantile
        let a = 2.0 / (9.0 * k);
        k * (1.0 - a + z * a.sqrt()).powi(3)
    }

    /// Pearson chi-square statistic of `observed` against `expected` counts
    /// (cells with zero expectation must have zero observations and are skipped).
    pub fn chi2(observed: &[u64], expected: &[f64]) -> f64 {
        observed
            .iter()
            .zip(expected)
            .filter(|(_, &e)| e > 0.0)
            .map(|(&o, &e)| {
                let d = o as f64 - e;
                d * d / e
            })
            .sum()
    }

    #[test]
    fn wilson_hilferty_is_close() {
        // Tabulated: df 15 -> 37.697, df 3 -> 16.266, df 255 -> 330.52.
        assert!((chi2_crit_999(15) - 37.697).abs() < 0.3);
        assert!((chi2_crit_999(3) - 16.266).abs() < 0.4);
        assert!((chi2_crit_999(255) - 330.52).abs() < 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_round_trips() {
        for m in [Method::Alias, Method::Sed, Method::Maglev] {
            assert_eq!(Method::from_u8(m.as_u8()), Some(m));
        }
        assert_eq!(Method::from_u8(3), None);
        assert_eq!(core::mem::size_of::<Method>(), 1);
    }
}
