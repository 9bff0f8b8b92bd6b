//! The hosts' per-burst clock: a time stamp counter converted to
//! nanoseconds on the host's reference clock (an `Instant` since start),
//! so that a burst or frame does not pay a `clock_gettime`.

/// A packet thread's clock on its host's reference scale without a
/// `clock_gettime` per burst. Given the time stamp counter (VPP hands every
/// node the one of its dispatch, `vm->cpu_time_last_node_dispatch`; a DPDK
/// lcore reads it) and the ticks-to-nanoseconds rate (VPP's calibrated
/// `vm->clib_time`, DPDK's `rte_get_tsc_hz`), it extrapolates from an
/// anchor on the reference clock and takes a new anchor once a
/// [`Self::REANCHOR_NS`], so it cannot drift from the reference by more than
/// the rate's error over that time. It never goes back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameClock {
    /// Counter value of the anchor.
    tsc0: u64,
    /// Reference time of the anchor (0: none yet).
    ns0: u64,
    /// The last time given.
    last: u64,
}

impl FrameClock {
    /// How long an anchor is extrapolated from.
    pub const REANCHOR_NS: u64 = 1_000_000_000;

    /// The time at counter value `tsc`, `ns_per_tick` nanoseconds per tick;
    /// `reference` (the reference clock) is read only to take an anchor: on
    /// the first call, once a [`Self::REANCHOR_NS`], when the counter went
    /// back, and on every call while the rate is not a positive number.
    #[inline]
    pub fn now(&mut self, tsc: u64, ns_per_tick: f64, reference: impl FnOnce() -> u64) -> u64 {
        let ahead = if self.ns0 != 0 && tsc >= self.tsc0 && ns_per_tick > 0.0 {
            // `as` saturates (and maps NaN to 0, which the test above
            // excludes); an infinite rate gives u64::MAX, which re-anchors.
            Some((tsc - self.tsc0) as f64 * ns_per_tick)
                .map(|d| d as u64)
                .filter(|&d| d < Self::REANCHOR_NS)
        } else {
            None
        };
        let now = match ahead {
            Some(d) => self.ns0 + d,
            None => {
                let r = reference().max(1);
                self.tsc0 = tsc;
                self.ns0 = r;
                r
            }
        };
        self.last = self.last.max(now);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_clock_extrapolates_from_an_anchor_and_never_goes_back() {
        let mut c = FrameClock::default();
        let at = |ns: u64| move || ns;
        // The first frame takes an anchor on the reference clock.
        assert_eq!(c.now(1_000, 0.5, at(5_000)), 5_000);
        // Then ticks times the rate, without reading the reference.
        let never = || -> u64 { panic!("the reference was read") };
        assert_eq!(c.now(3_000, 0.5, never), 6_000);
        assert_eq!(c.now(1_999_993_000, 0.5, never), 1_000_001_000);
        // A second after the anchor: a new one, from the reference.
        assert_eq!(c.now(2_000_001_000, 0.5, at(1_000_004_000)), 1_000_004_000);
        assert_eq!(c.now(2_000_001_010, 0.5, never), 1_000_004_005);
        assert_eq!(c.now(3_999_001_000, 0.5, never), 1_999_504_000);
        // A reference behind the extrapolation: the clock stays where it
        // was until the new anchor catches up.
        assert_eq!(c.now(4_000_001_000, 0.5, at(1_900_000_000)), 1_999_504_000);
        assert_eq!(c.now(4_000_001_100, 0.5, never), 1_999_504_000);
        assert_eq!(c.now(4_200_001_000, 0.5, never), 2_000_000_000);
        // The counter went back (another core's, a reset): a new anchor,
        // and the time does not go back with it.
        assert_eq!(c.now(10, 0.5, at(1_000)), 2_000_000_000);
        assert_eq!(c.now(4_000_000_010, 0.5, at(2_100_000_000)), 2_100_000_000);
    }

    #[test]
    fn without_a_usable_rate_the_frame_clock_reads_the_reference() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut c = FrameClock::default();
            assert_eq!(c.now(100, rate, || 7), 7);
            assert_eq!(c.now(200, rate, || 9), 9);
            assert_eq!(c.now(300, rate, || 8), 9, "rate {rate}");
        }
        // Zero from the reference is taken as 1 (0 marks "no anchor").
        let mut c = FrameClock::default();
        assert_eq!(c.now(100, 1.0, || 0), 1);
        assert_eq!(c.now(110, 1.0, || panic!("re-anchored")), 11);
    }
}
