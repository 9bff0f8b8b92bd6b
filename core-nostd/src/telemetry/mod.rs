//! Telemetry: per-backend counters and the samples the MARLLB agents learn from.
//!
//! # Contract
//!
//! * Allocation-free, integer-only, fixed-size `#[repr(C)]` values with zerocopy
//!   derives, so the shared-memory layer can publish them as plain bytes.
//! * Per backend: packets, bytes, new / closed / expired flows, handshakes that
//!   never completed, drops, and the active and half-open flow gauges.
//! * Per backend, four reservoirs of [`RESERVOIR_LEN`] samples (Vitter's
//!   algorithm R, so every observation of the window is kept with equal
//!   probability), all in microseconds:
//!   - `flow_duration`: age of the flow at its packets (how long
//!     connections stay open on this backend right now);
//!   - `fct`: flow completion time, SYN to the first FIN or RST;
//!   - `handshake`: SYN to the first ACK from the client (client RTT through the
//!     backend: grows when the backend's accept queue backs up);
//!   - `interarrival`: time between consecutive packets sent to the backend.
//! * The two per-packet reservoirs (`flow_duration`, `interarrival`) are fed by
//!   one forwarded packet in [`PACKET_SAMPLE_EVERY`] of each worker (a
//!   countdown over the worker's whole stream, so every backend's packets are
//!   sampled at the same rate); the others, and every counter, see every event.
//!   At 4, a backend fills its 128 slots once it receives 2 560 packets per
//!   second in a 200 ms window; below that, the window keeps every sampled
//!   packet. [`Telemetry::observe_packet`] offers every call (the simulator's
//!   one observation per job and period).
//! * A window is what happened since the last [`Telemetry::reset_window`]; hosts
//!   publish then reset every reporting period (200 ms by default). Counters are
//!   monotonic and never reset; gauges are current values.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::classify::DropReason;
use crate::flow::{ticks_to_us, Expired, FlowState};
use crate::MAX_BACKENDS;

/// Samples per reservoir.
pub const RESERVOIR_LEN: usize = 128;

/// One forwarded packet in this many is offered to the per-packet reservoirs
/// (see the module docs): the reservoir update is most of telemetry's
/// per-packet cost, and the features are statistics of the window, which a
/// systematic 1-in-4 sample keeps.
pub const PACKET_SAMPLE_EVERY: u32 = 4;

/// Monotonic counters and gauges of one backend (one cache line).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C, align(64))]
pub struct BackendCounters {
    /// Packets forwarded to the backend.
    pub packets: u64,
    /// Bytes forwarded (IP length of the inner packet).
    pub bytes: u64,
    /// Flows placed on the backend.
    pub new_flows: u64,
    /// Flows ended by FIN or RST.
    pub closed_flows: u64,
    /// Flows ended by idle timeout.
    pub expired_flows: u64,
    /// Flows that expired half-open (SYN seen, handshake never completed): the
    /// passive health signal.
    pub handshake_timeouts: u64,
    /// Packets for this backend dropped after the choice (MTU, headroom).
    pub drops: u64,
    /// Gauge: flows currently active (not closing).
    pub active_flows: u32,
    /// Gauge: flows currently half-open.
    pub half_open: u32,
}

static_assertions::const_assert_eq!(core::mem::size_of::<BackendCounters>(), 64);

/// A fixed-size reservoir sample (algorithm R).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Reservoir {
    /// Observations offered in this window (saturating).
    pub seen: u32,
    /// Valid samples (`min(seen, RESERVOIR_LEN)`).
    pub len: u32,
    /// The samples; only `..len` are valid.
    pub samples: [u32; RESERVOIR_LEN],
}

impl Default for Reservoir {
    fn default() -> Self {
        Self {
            seen: 0,
            len: 0,
            samples: [0; RESERVOIR_LEN],
        }
    }
}

impl Reservoir {
    /// Offers one observation; `rand` is a fresh 32-bit random value.
    #[inline]
    pub fn offer(&mut self, value: u32, rand: u32) {
        self.seen = self.seen.saturating_add(1);
        let len = self.len as usize;
        if len < RESERVOIR_LEN {
            if let Some(s) = self.samples.get_mut(len) {
                *s = value;
            }
            self.len += 1;
        } else {
            // j uniform in [0, seen): keep with probability RESERVOIR_LEN / seen.
            let j = ((u64::from(rand) * u64::from(self.seen)) >> 32) as usize;
            if let Some(s) = self.samples.get_mut(j) {
                *s = value;
            }
        }
    }

    /// Offers one observation whose value is computed only if it is kept (the
    /// value may cost a cache miss, and most observations of a busy window are
    /// not kept).
    #[inline]
    pub fn offer_with(&mut self, rand: u32, value: impl FnOnce() -> u32) {
        self.seen = self.seen.saturating_add(1);
        let len = self.len as usize;
        let slot = if len < RESERVOIR_LEN {
            self.len += 1;
            len
        } else {
            ((u64::from(rand) * u64::from(self.seen)) >> 32) as usize
        };
        if let Some(s) = self.samples.get_mut(slot) {
            *s = value();
        }
    }

    /// The valid samples.
    pub fn values(&self) -> &[u32] {
        let n = (self.len as usize).min(RESERVOIR_LEN);
        &self.samples[..n]
    }

    /// Empties the reservoir for a new window.
    pub fn clear(&mut self) {
        self.seen = 0;
        self.len = 0;
    }
}

/// The four reservoirs of one backend.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BackendSamples {
    /// Age of the flow at each packet, us.
    pub flow_duration: Reservoir,
    /// Flow completion time, us.
    pub fct: Reservoir,
    /// SYN to first ACK, us.
    pub handshake: Reservoir,
    /// Packet inter-arrival time, us.
    pub interarrival: Reservoir,
}

/// Node-wide counters of one worker. Hosts total their workers with `+=`
/// ([`AddAssign`](core::ops::AddAssign)), which sums every counter; with the
/// `serde` feature the counters serialize by name.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[repr(C)]
pub struct GlobalCounters {
    /// Frames received by the pipeline.
    pub rx_packets: u64,
    /// Frames forwarded to a backend.
    pub forwarded: u64,
    /// ICMP errors generated back to clients (MTU).
    pub replies: u64,
    /// Frames passed to the host stack.
    pub to_host: u64,
    /// Frames dropped (sum of the per-reason counters).
    pub dropped: u64,
    /// New flows inserted in the flow table.
    pub flows_inserted: u64,
    /// New flows not tracked because their bucket was full (sent via Maglev).
    pub flows_untracked: u64,
    /// Non-SYN packets with no flow entry, placed by the Maglev table.
    pub maglev_fallback: u64,
    /// Flow entries reclaimed after their idle timeout.
    pub flows_expired: u64,
    /// ICMP errors forwarded to the backend of the flow they belong to.
    pub icmp_errors_forwarded: u64,
    /// Non-first fragments forwarded from the fragment cache.
    pub fragments_forwarded: u64,
    /// Flows re-placed because their backend went down.
    pub flows_rescheduled: u64,
    /// Sync records made for peers (handshakes completed on this node).
    pub sync_made: u64,
    /// Sync records dropped: the host did not drain them in time.
    pub sync_dropped: u64,
    /// Flow entries inserted from peers' records.
    pub sync_applied: u64,
    /// Peers' records refused (no such VIP or backend here, backend down, no
    /// free way, not TCP) or already known.
    pub sync_refused: u64,
}

static_assertions::const_assert_eq!(core::mem::size_of::<GlobalCounters>(), 128);

impl core::ops::AddAssign<&GlobalCounters> for GlobalCounters {
    /// Adds every counter of `other` (saturating: a total never wraps or panics).
    fn add_assign(&mut self, other: &GlobalCounters) {
        // Destructured without `..`: a counter added to the struct does not
        // compile here until it is summed too.
        let GlobalCounters {
            rx_packets,
            forwarded,
            replies,
            to_host,
            dropped,
            flows_inserted,
            flows_untracked,
            maglev_fallback,
            flows_expired,
            icmp_errors_forwarded,
            fragments_forwarded,
            flows_rescheduled,
            sync_made,
            sync_dropped,
            sync_applied,
            sync_refused,
        } = other;
        let add = |a: &mut u64, b: &u64| *a = a.saturating_add(*b);
        add(&mut self.rx_packets, rx_packets);
        add(&mut self.forwarded, forwarded);
        add(&mut self.replies, replies);
        add(&mut self.to_host, to_host);
        add(&mut self.dropped, dropped);
        add(&mut self.flows_inserted, flows_inserted);
        add(&mut self.flows_untracked, flows_untracked);
        add(&mut self.maglev_fallback, maglev_fallback);
        add(&mut self.flows_expired, flows_expired);
        add(&mut self.icmp_errors_forwarded, icmp_errors_forwarded);
        add(&mut self.sync_made, sync_made);
        add(&mut self.sync_dropped, sync_dropped);
        add(&mut self.sync_applied, sync_applied);
        add(&mut self.sync_refused, sync_refused);
        add(&mut self.fragments_forwarded, fragments_forwarded);
        add(&mut self.flows_rescheduled, flows_rescheduled);
    }
}

/// All telemetry of one worker.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Telemetry {
    /// Per-backend counters, indexed by backend.
    pub backends: [BackendCounters; MAX_BACKENDS],
    /// Per-backend samples, indexed by backend.
    pub samples: [BackendSamples; MAX_BACKENDS],
    /// Drop counters, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
    /// Node-wide counters.
    pub global: GlobalCounters,
    /// Tick of the last packet sent to each backend (for inter-arrival times).
    pub last_packet: [u32; MAX_BACKENDS],
    rng: RngState,
    /// Packets until the next one offered to the per-packet reservoirs.
    sample_countdown: u32,
    _reserved0: u32,
    _reserved: [u64; 1],
}

/// The reservoir generator's state, as plain bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
struct RngState {
    state: u64,
}

impl core::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Telemetry")
            .field("global", &self.global)
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// xorshift64* (Vigna): plenty for reservoir slot choice, and cheaper than
    /// splitmix on the per-packet path.
    #[inline(always)]
    fn rand(&mut self) -> u64 {
        let mut x = self.rng.state | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Seeds the reservoir sampler (workers should use different seeds).
    pub fn seed(&mut self, seed: u64) {
        self.rng.state = crate::hash::SplitMix64::new(seed).next_u64() | 1;
    }

    /// Counts a drop.
    #[inline(always)]
    pub fn drop_packet(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason as usize) {
            *c += 1;
        }
        self.global.dropped += 1;
    }

    /// Counts a drop that happened after backend `b` was chosen.
    #[inline(always)]
    pub fn drop_for_backend(&mut self, b: u16, reason: DropReason) {
        self.drop_packet(reason);
        if let Some(c) = self.backends.get_mut(usize::from(b)) {
            c.drops += 1;
        }
    }

    /// Accounts one packet of `bytes` forwarded to backend `b` at tick `now`, on a
    /// flow that started at tick `created()`. One call in
    /// [`PACKET_SAMPLE_EVERY`] is also offered to the per-packet reservoirs
    /// (`created` is called only when the flow-duration reservoir keeps it).
    #[inline(always)]
    pub fn packet(&mut self, b: u16, bytes: u32, now: u32, created: impl FnOnce() -> u32) {
        // The packet count is added apart from the byte count, before the
        // sampling branch: side by side, LLVM adds the two as one vector,
        // six instructions where two do.
        self.count_one(b);
        // One subtraction decrements the countdown and tells that it was
        // zero (the borrow).
        let (left, was_zero) = self.sample_countdown.overflowing_sub(1);
        self.sample_countdown = left;
        if was_zero {
            self.sample_countdown = PACKET_SAMPLE_EVERY - 1;
            let r = self.rand();
            self.sample_packet(b, bytes, now, r, created);
            return;
        }
        self.count_bytes(b, bytes, now);
    }

    /// Counts a packet to `b` (its bytes apart, see [`Self::count_bytes`]).
    #[inline(always)]
    fn count_one(&mut self, b: u16) {
        if let Some(c) = self.backends.get_mut(usize::from(b)) {
            c.packets += 1;
        }
    }

    /// Counts the bytes of a packet to `b` and marks `now` as its last one;
    /// gives the tick of the previous one (0: none yet), or `None` for an
    /// unknown backend.
    #[inline(always)]
    fn count_bytes(&mut self, b: u16, bytes: u32, now: u32) -> Option<u32> {
        let i = usize::from(b);
        let (c, last) = (self.backends.get_mut(i)?, self.last_packet.get_mut(i)?);
        c.bytes += u64::from(bytes);
        Some(core::mem::replace(last, now | 1))
    }

    /// [`Self::packet`] with every call offered to the reservoirs: the
    /// simulator's one observation per job and period.
    #[inline(always)]
    pub fn observe_packet(&mut self, b: u16, bytes: u32, now: u32, created: impl FnOnce() -> u32) {
        let r = self.rand();
        self.count_one(b);
        self.sample_packet(b, bytes, now, r, created);
    }

    /// The rest of [`Self::observe_packet`] after the packet count, with the
    /// random value `r` it drew.
    #[inline(always)]
    fn sample_packet(
        &mut self,
        b: u16,
        bytes: u32,
        now: u32,
        r: u64,
        created: impl FnOnce() -> u32,
    ) {
        let Some(last) = self.count_bytes(b, bytes, now) else {
            return;
        };
        let Some(s) = self.samples.get_mut(usize::from(b)) else {
            return;
        };
        s.flow_duration
            .offer_with(r as u32, || ticks_to_us(now.wrapping_sub(created())));
        // (Like the flow's age, the gap is converted only when it is kept.)
        if last != 0 {
            s.interarrival
                .offer_with((r >> 32) as u32, || ticks_to_us(now.wrapping_sub(last)));
        }
    }

    /// A new flow in `state` was placed on backend `b`.
    #[inline(always)]
    pub fn flow_opened(&mut self, b: u16, state: FlowState) {
        if let Some(c) = self.backends.get_mut(usize::from(b)) {
            c.new_flows += 1;
            c.active_flows = c.active_flows.saturating_add(1);
            if state == FlowState::TcpSynSent {
                c.half_open = c.half_open.saturating_add(1);
            }
        }
    }

    /// The flow on `b` created at `created` completed its handshake at `now`.
    #[inline(always)]
    pub fn handshake_done(&mut self, b: u16, created: u32, now: u32) {
        let r = self.rand() as u32;
        let i = usize::from(b);
        if let (Some(c), Some(s)) = (self.backends.get_mut(i), self.samples.get_mut(i)) {
            c.half_open = c.half_open.saturating_sub(1);
            s.handshake.offer(ticks_to_us(now.wrapping_sub(created)), r);
        }
    }

    /// The flow on `b` in `state` ended with FIN or RST at `now`.
    #[inline(always)]
    pub fn flow_closed(&mut self, b: u16, state: FlowState, created: u32, now: u32) {
        let r = self.rand() as u32;
        let i = usize::from(b);
        if let (Some(c), Some(s)) = (self.backends.get_mut(i), self.samples.get_mut(i)) {
            c.closed_flows += 1;
            if state.is_active() {
                c.active_flows = c.active_flows.saturating_sub(1);
            }
            if state == FlowState::TcpSynSent {
                c.half_open = c.half_open.saturating_sub(1);
            }
            s.fct.offer(ticks_to_us(now.wrapping_sub(created)), r);
        }
    }

    /// A flow entry was reclaimed after its idle timeout.
    #[inline]
    pub fn flow_expired(&mut self, e: &Expired) {
        self.global.flows_expired += 1;
        if let Some(c) = self.backends.get_mut(usize::from(e.backend)) {
            c.expired_flows += 1;
            if e.state.is_active() {
                c.active_flows = c.active_flows.saturating_sub(1);
            }
            if e.state == FlowState::TcpSynSent {
                c.half_open = c.half_open.saturating_sub(1);
                c.handshake_timeouts += 1;
            }
        }
    }

    /// Active-flow gauges of the first `n` backends into `out` (for SED).
    #[inline]
    pub fn active(&self, b: u16) -> u32 {
        self.backends
            .get(usize::from(b))
            .map_or(0, |c| c.active_flows)
    }

    /// Starts a new sampling window: empties every reservoir.
    pub fn reset_window(&mut self) {
        for s in self.samples.iter_mut() {
            s.flow_duration.clear();
            s.fct.clear();
            s.handshake.clear();
            s.interarrival.clear();
        }
    }
}

/// Summary statistics of a reservoir for features: mean and 90th percentile (by
/// nearest rank), both in microseconds; `None` when empty. Integer only; sorts a
/// stack copy of at most 128 values.
pub fn mean_p90(r: &Reservoir) -> Option<(u32, u32)> {
    let v = r.values();
    if v.is_empty() {
        return None;
    }
    let mut buf = [0u32; RESERVOIR_LEN];
    let buf = &mut buf[..v.len()];
    buf.copy_from_slice(v);
    buf.sort_unstable();
    let sum: u64 = buf.iter().map(|x| u64::from(*x)).sum();
    let mean = (sum / buf.len() as u64) as u32;
    // nearest rank: ceil(0.9 n) - 1
    let rank = (buf.len() * 9).div_ceil(10).saturating_sub(1);
    Some((mean, buf.get(rank).copied().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn one_packet_in_n_is_sampled_and_every_one_counted() {
        let mut t = Telemetry::new_box_zeroed().expect("alloc");
        let n = PACKET_SAMPLE_EVERY;
        // Two backends interleaved: the countdown is the worker's, not theirs.
        for k in 0..(8 * n) {
            t.packet((k % 2) as u16, 100, 11 + k * 10, || 0);
        }
        let offered: u32 = (0..2).map(|b| t.samples[b].flow_duration.seen).sum();
        assert_eq!(offered, 8);
        for b in 0..2 {
            assert_eq!(t.backends[b].packets, u64::from(4 * n));
            assert_eq!(t.backends[b].bytes, u64::from(400 * n));
        }
        // Inter-arrival is measured from the backend's previous packet, sampled
        // or not: every packet of backend 0 is 20 ticks after the one before (odd
        // ticks, which the "seen" bit of `last_packet` leaves unchanged).
        let gap = ticks_to_us(20);
        assert!(t.samples[0].interarrival.values().iter().all(|&v| v == gap));
        assert!(!t.samples[0].interarrival.values().is_empty());
        // observe_packet offers every call.
        let before = t.samples[3].flow_duration.seen;
        for k in 0..5 {
            t.observe_packet(3, 100, 1000 + k, || 0);
        }
        assert_eq!(t.samples[3].flow_duration.seen, before + 5);
    }

    #[test]
    #[cfg_attr(miri, ignore = "millions of operations: too slow under Miri")]
    fn reservoir_keeps_uniform_sample() {
        // Offer 0..100_000 many times; each sample's mean should be near 50_000.
        let mut g = crate::hash::SplitMix64::new(1);
        let mut total = 0u64;
        let rounds = 200;
        for _ in 0..rounds {
            let mut r = Reservoir::default();
            for v in 0..100_000u32 {
                r.offer(v, g.next_u64() as u32);
            }
            assert_eq!(r.len as usize, RESERVOIR_LEN);
            assert_eq!(r.seen, 100_000);
            total += r.values().iter().map(|x| u64::from(*x)).sum::<u64>();
        }
        let mean = total / (rounds * RESERVOIR_LEN as u64);
        assert!((48_000..52_000).contains(&mean), "{mean}");
    }

    #[test]
    fn short_window_keeps_everything() {
        let mut r = Reservoir::default();
        for v in 0..10 {
            r.offer(v, 0);
        }
        assert_eq!(r.values(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(mean_p90(&r), Some((4, 8)));
        r.clear();
        assert_eq!(mean_p90(&r), None);
    }

    #[test]
    fn gauges_follow_the_lifecycle() {
        let mut t = Telemetry::new_box_zeroed().expect("alloc");
        t.flow_opened(3, FlowState::TcpSynSent);
        t.flow_opened(3, FlowState::TcpSynSent);
        assert_eq!(
            (t.backends[3].active_flows, t.backends[3].half_open),
            (2, 2)
        );
        t.handshake_done(3, 0, 100);
        assert_eq!(t.backends[3].half_open, 1);
        t.flow_closed(3, FlowState::TcpEstablished, 0, 1000);
        assert_eq!(t.backends[3].active_flows, 1);
        t.flow_expired(&Expired {
            backend: 3,
            vip: 0,
            state: FlowState::TcpSynSent,
            created: 0,
            last_seen: 0,
        });
        let c = t.backends[3];
        assert_eq!(
            (c.active_flows, c.half_open, c.handshake_timeouts),
            (0, 0, 1)
        );
        assert_eq!(t.samples[3].handshake.values(), &[102]);
        assert_eq!(t.samples[3].fct.values(), &[1024]);
        // Out-of-range backends are ignored, not a panic.
        t.flow_opened(9999, FlowState::Udp);
        t.packet(9999, 60, 1, || 0);
    }

    #[test]
    fn global_counters_add_every_field() {
        // Every 64-bit word of the struct gets a distinct value, so a counter
        // that is not summed, or summed into another one, shows as a wrong word.
        const WORDS: usize = core::mem::size_of::<GlobalCounters>() / 8;
        let image = |scale: u64| {
            let mut g = GlobalCounters::default();
            for (i, w) in g.as_mut_bytes().chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&((i as u64 + 1) * scale).to_ne_bytes());
            }
            g
        };
        let words = |g: &GlobalCounters| {
            let mut out = [0u64; WORDS];
            for (o, w) in out.iter_mut().zip(g.as_bytes().chunks_exact(8)) {
                *o = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
            }
            out
        };
        let mut a = image(1);
        a += &image(1000);
        for (i, w) in words(&a).iter().enumerate() {
            assert_eq!(*w, (i as u64 + 1) * 1001, "word {i} of {a:?}");
        }
        // Field by field, for the reader.
        assert_eq!((a.rx_packets, a.forwarded), (1001, 2002));
        assert_eq!(a.flows_expired, 9009);
        assert_eq!(a.icmp_errors_forwarded, 10010);
        assert_eq!(a.fragments_forwarded, 11011);
        assert_eq!(a.flows_rescheduled, 12012);
        // Totals saturate instead of wrapping.
        let mut m = GlobalCounters {
            rx_packets: u64::MAX,
            ..GlobalCounters::default()
        };
        m += &image(1);
        assert_eq!(m.rx_packets, u64::MAX);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let mut t = Telemetry::new_box_zeroed().expect("alloc");
        t.drop_packet(DropReason::NoVip);
        t.drop_for_backend(2, DropReason::TooBigNoDf);
        assert_eq!(t.drops[DropReason::NoVip as usize], 1);
        assert_eq!(t.drops[DropReason::TooBigNoDf as usize], 1);
        assert_eq!(t.global.dropped, 2);
        assert_eq!(t.backends[2].drops, 1);
    }
}
