//! The per-worker flow table: which backend each connection was given.
//!
//! # Contract
//!
//! * Fixed capacity: `B` buckets (a power of two, checked at compile time) of four
//!   entries each. A bucket is one 64-byte cache line holding the four entries'
//!   signatures, timestamps, backend and state, as in VPP's lb plugin; the full
//!   5-tuple of each entry lives in a parallel key array and is compared on every
//!   signature match, so a hash collision never sends a packet to the wrong backend.
//! * All-zero bytes are an empty table ([`zerocopy::FromZeros`]), so hosts allocate
//!   it zeroed (hugepage memory, `Box::new_zeroed`) without touching the stack.
//! * Entries expire after a per-state idle timeout (half-open TCP, established TCP,
//!   closing TCP, UDP, other). Expired entries are reclaimed lazily (on lookup or
//!   insert in their bucket) and by [`FlowTable::sweep`], which hosts call with a
//!   small budget from their idle loop; every reclaimed entry is reported to the
//!   caller so the active-flow gauges stay exact.
//! * A full bucket (four live entries) does **not** evict: the new flow is refused
//!   ([`InsertError::BucketFull`]) and the pipeline sends it, and all its later
//!   packets, through the VIP's consistent Maglev table, counted as `untracked`.
//!   Evicting the least-recently-used entry would let a SYN flood push established
//!   connections out of the table; refusing keeps every existing flow where it is,
//!   and half-open entries expire quickly (default 5 s) so a flood clears itself.
//! * Times are 32-bit wrapping ticks of 1024 ns (`now_ns >> 10`), enough for
//!   timeouts up to an hour (the tick counter wraps after 73 minutes; durations
//!   longer than that are reported modulo the wrap).
//! * One table per worker core; no locks, no atomics.

mod key;

pub use key::FlowKey;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Entries per bucket.
pub const WAYS: usize = 4;

/// Converts nanoseconds to flow-table ticks (1024 ns).
#[inline(always)]
pub const fn ticks(ns: u64) -> u32 {
    (ns >> 10) as u32
}

/// Converts ticks back to microseconds (approximately: 1 tick = 1.024 us).
#[inline(always)]
pub const fn ticks_to_us(t: u32) -> u32 {
    ((t as u64 * 1024) / 1000) as u32
}

/// Lifecycle state of an entry; stored in one byte, 0 is a free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum FlowState {
    /// Slot is free.
    Free = 0,
    /// TCP: SYN seen, handshake not completed.
    TcpSynSent = 1,
    /// TCP: handshake completed (first ACK seen).
    TcpEstablished = 2,
    /// TCP: FIN or RST seen; kept for a short time so the last segments follow.
    TcpClosing = 3,
    /// UDP flow (no handshake).
    Udp = 4,
    /// Any other protocol.
    Other = 5,
}

/// Number of [`FlowState`] values.
pub const FLOW_STATES: usize = 6;

impl FlowState {
    #[inline(always)]
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::TcpSynSent,
            2 => Self::TcpEstablished,
            3 => Self::TcpClosing,
            4 => Self::Udp,
            5 => Self::Other,
            _ => Self::Free,
        }
    }

    /// True while the flow counts as active (not free, not closing).
    #[inline(always)]
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Free | Self::TcpClosing)
    }
}

/// Idle timeouts per state, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Timeouts {
    /// Half-open TCP (SYN seen, no ACK yet). Default 5 s.
    pub tcp_syn_ns: u64,
    /// Established TCP. Default 300 s.
    pub tcp_established_ns: u64,
    /// TCP after FIN or RST. Default 10 s.
    pub tcp_closing_ns: u64,
    /// UDP. Default 30 s.
    pub udp_ns: u64,
    /// Other protocols. Default 30 s.
    pub other_ns: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        Self {
            tcp_syn_ns: 5 * S,
            tcp_established_ns: 300 * S,
            tcp_closing_ns: 10 * S,
            udp_ns: 30 * S,
            other_ns: 30 * S,
        }
    }
}

/// Largest timeout the 32-bit tick clock can represent unambiguously (one hour).
pub const MAX_TIMEOUT_NS: u64 = 3600 * 1_000_000_000;

impl Timeouts {
    /// Per-state timeouts in ticks, indexed by `FlowState as usize`; values above
    /// [`MAX_TIMEOUT_NS`] are clamped to it.
    pub fn to_ticks(&self) -> [u32; FLOW_STATES] {
        let t = |ns: u64| {
            ticks(if ns > MAX_TIMEOUT_NS {
                MAX_TIMEOUT_NS
            } else {
                ns
            })
        };
        [
            0,
            t(self.tcp_syn_ns),
            t(self.tcp_established_ns),
            t(self.tcp_closing_ns),
            t(self.udp_ns),
            t(self.other_ns),
        ]
    }
}

/// One cache line: four entries, structure-of-arrays.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(64))]
pub struct Bucket {
    /// High 32 bits of each entry's flow hash.
    pub sig: [u32; WAYS],
    /// Tick of the last packet.
    pub last_seen: [u32; WAYS],
    /// Tick of the first packet (the SYN for TCP).
    pub created: [u32; WAYS],
    /// Backend index.
    pub backend: [u16; WAYS],
    /// VIP index.
    pub vip: [u8; WAYS],
    /// [`FlowState`] as `u8`; 0 = free.
    pub state: [u8; WAYS],
}

static_assertions::const_assert_eq!(core::mem::size_of::<Bucket>(), 64);
static_assertions::const_assert_eq!(core::mem::align_of::<Bucket>(), 64);

/// Where a flow lives in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Bucket index.
    pub bucket: u32,
    /// Way within the bucket (0..4).
    pub way: u8,
}

/// A copy of a live entry, as returned by lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Backend index.
    pub backend: u16,
    /// VIP index.
    pub vip: u8,
    /// State.
    pub state: FlowState,
    /// Tick of the first packet.
    pub created: u32,
    /// Tick of the previous packet (before this lookup refreshed it).
    pub last_seen: u32,
}

/// An entry removed because it timed out; the caller updates its gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Backend index.
    pub backend: u16,
    /// VIP index.
    pub vip: u8,
    /// State it was in (TcpSynSent: the handshake never completed).
    pub state: FlowState,
    /// Tick of the first packet.
    pub created: u32,
    /// Tick of the last packet.
    pub last_seen: u32,
}

/// Why an insert failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InsertError {
    /// All four ways of the bucket hold live flows.
    BucketFull,
}

/// Result of [`FlowTable::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live entry; its `last_seen` has been refreshed.
    Hit(Slot, Entry),
    /// No live entry; if an expired entry of this very flow was found it was freed
    /// and is returned so the caller can account for it.
    Miss(Option<Expired>),
}

/// Fixed-capacity flow table with `B` buckets of [`WAYS`] entries.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FlowTable<const B: usize> {
    buckets: [Bucket; B],
    keys: [[FlowKey; WAYS]; B],
}

impl<const B: usize> core::fmt::Debug for FlowTable<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowTable").field("buckets", &B).finish()
    }
}

// The bucket is structure-of-arrays: ways are walked by index across its arrays.
#[allow(clippy::needless_range_loop)]
impl<const B: usize> FlowTable<B> {
    const CHECK: () = assert!(
        B.is_power_of_two() && B <= (1 << 30),
        "bucket count must be a power of two"
    );

    /// Number of entries the table can hold.
    pub const CAPACITY: usize = B * WAYS;

    /// Clears every entry.
    pub fn clear(&mut self) {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        self.zero();
    }

    /// Bucket index for a flow hash (its low bits).
    #[inline(always)]
    pub fn bucket_of(hash: u64) -> usize {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        (hash as usize) & (B - 1)
    }

    #[inline(always)]
    fn sig_of(hash: u64) -> u32 {
        (hash >> 32) as u32
    }

    /// Address of the bucket for `hash`, for prefetching.
    #[inline(always)]
    pub fn bucket_ptr(&self, hash: u64) -> *const u8 {
        let b = Self::bucket_of(hash);
        // `b < B` by construction; `get` keeps the path panic-free anyway.
        self.buckets
            .get(b)
            .map_or(core::ptr::null(), |x| (x as *const Bucket).cast())
    }

    /// Address of the stored key of the first occupied way of `hash`'s bucket
    /// whose signature matches, for prefetching; `None` when no way matches (a new
    /// flow: nothing to fetch).
    #[inline(always)]
    pub fn candidate_key_ptr(&self, hash: u64) -> Option<*const u8> {
        let b = Self::bucket_of(hash);
        let sig = Self::sig_of(hash);
        let bucket = self.buckets.get(b)?;
        let w = (0..WAYS).find(|&w| bucket.sig[w] == sig && bucket.state[w] != 0)?;
        let k = self.keys.get(b)?.get(w)?;
        Some((k as *const FlowKey).cast())
    }

    /// Finds the live entry of `key` and refreshes its `last_seen` to `now`.
    /// `timeouts` is [`Timeouts::to_ticks`].
    #[inline]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        hash: u64,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
    ) -> Lookup {
        let b = Self::bucket_of(hash);
        let sig = Self::sig_of(hash);
        let (Some(bucket), Some(keys)) = (self.buckets.get_mut(b), self.keys.get(b)) else {
            return Lookup::Miss(None);
        };
        for w in 0..WAYS {
            if bucket.sig[w] != sig || bucket.state[w] == 0 || keys[w] != *key {
                continue;
            }
            let state = FlowState::from_u8(bucket.state[w]);
            let last = bucket.last_seen[w];
            let idle = now.wrapping_sub(last);
            if idle > timeouts[state as usize] {
                let expired = Expired {
                    backend: bucket.backend[w],
                    vip: bucket.vip[w],
                    state,
                    created: bucket.created[w],
                    last_seen: last,
                };
                bucket.state[w] = 0;
                return Lookup::Miss(Some(expired));
            }
            bucket.last_seen[w] = now;
            return Lookup::Hit(
                Slot {
                    bucket: b as u32,
                    way: w as u8,
                },
                Entry {
                    backend: bucket.backend[w],
                    vip: bucket.vip[w],
                    state,
                    created: bucket.created[w],
                    last_seen: last,
                },
            );
        }
        Lookup::Miss(None)
    }

    /// Inserts a new flow. Uses a free way, or reclaims an expired one (returned so
    /// the caller can account for it); refuses with [`InsertError::BucketFull`]
    /// when all four ways hold live flows. The caller has checked that the flow is
    /// not in the table.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        key: &FlowKey,
        hash: u64,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
        backend: u16,
        vip: u8,
        state: FlowState,
    ) -> Result<(Slot, Option<Expired>), InsertError> {
        let b = Self::bucket_of(hash);
        let (Some(bucket), Some(keys)) = (self.buckets.get_mut(b), self.keys.get_mut(b)) else {
            return Err(InsertError::BucketFull);
        };
        let mut way = None;
        let mut reclaimed = None;
        for w in 0..WAYS {
            if bucket.state[w] == 0 {
                way = Some(w);
                reclaimed = None;
                break;
            }
            let st = FlowState::from_u8(bucket.state[w]);
            if reclaimed.is_none() && now.wrapping_sub(bucket.last_seen[w]) > timeouts[st as usize]
            {
                way = Some(w);
                reclaimed = Some(Expired {
                    backend: bucket.backend[w],
                    vip: bucket.vip[w],
                    state: st,
                    created: bucket.created[w],
                    last_seen: bucket.last_seen[w],
                });
            }
        }
        let Some(w) = way else {
            return Err(InsertError::BucketFull);
        };
        bucket.sig[w] = Self::sig_of(hash);
        bucket.last_seen[w] = now;
        bucket.created[w] = now;
        bucket.backend[w] = backend;
        bucket.vip[w] = vip;
        bucket.state[w] = state as u8;
        keys[w] = *key;
        Ok((
            Slot {
                bucket: b as u32,
                way: w as u8,
            },
            reclaimed,
        ))
    }

    /// Changes the state of the entry at `slot` (from a lookup in this batch).
    #[inline]
    pub fn set_state(&mut self, slot: Slot, state: FlowState) {
        if let Some(b) = self.buckets.get_mut(slot.bucket as usize) {
            if let Some(s) = b.state.get_mut(slot.way as usize) {
                *s = state as u8;
            }
        }
    }

    /// Restarts the entry at `slot` as a new flow on `backend` (a SYN reusing the
    /// 5-tuple of a closing connection).
    #[inline]
    pub fn restart(&mut self, slot: Slot, now: u32, backend: u16, state: FlowState) {
        if let Some(b) = self.buckets.get_mut(slot.bucket as usize) {
            let w = slot.way as usize;
            if w < WAYS {
                b.backend[w] = backend;
                b.created[w] = now;
                b.last_seen[w] = now;
                b.state[w] = state as u8;
            }
        }
    }

    /// Removes the entry at `slot`.
    #[inline]
    pub fn remove(&mut self, slot: Slot) {
        self.set_state(slot, FlowState::Free);
    }

    /// Expires idle entries in `count` buckets starting at `start` (wrapping),
    /// calling `on_expired` for each; returns the bucket to start from next time.
    /// Hosts call this from their idle loop with a small `count` (e.g. 64).
    pub fn sweep(
        &mut self,
        start: usize,
        count: usize,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
        mut on_expired: impl FnMut(Expired),
    ) -> usize {
        let mut b = start & (B - 1);
        for _ in 0..count.min(B) {
            if let Some(bucket) = self.buckets.get_mut(b) {
                for w in 0..WAYS {
                    let st = FlowState::from_u8(bucket.state[w]);
                    if st != FlowState::Free
                        && now.wrapping_sub(bucket.last_seen[w]) > timeouts[st as usize]
                    {
                        bucket.state[w] = 0;
                        on_expired(Expired {
                            backend: bucket.backend[w],
                            vip: bucket.vip[w],
                            state: st,
                            created: bucket.created[w],
                            last_seen: bucket.last_seen[w],
                        });
                    }
                }
            }
            b = (b + 1) & (B - 1);
        }
        b
    }

    /// Number of occupied entries (live or not yet reclaimed); O(capacity), for
    /// tests and diagnostics.
    pub fn occupied(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.state.iter().filter(|s| **s != 0).count())
            .sum()
    }

    /// Calls `f` for every occupied entry with its key (for `show flows`).
    pub fn for_each(&self, mut f: impl FnMut(&FlowKey, Entry) -> bool) {
        for (b, keys) in self.buckets.iter().zip(self.keys.iter()) {
            for w in 0..WAYS {
                if b.state[w] == 0 {
                    continue;
                }
                let e = Entry {
                    backend: b.backend[w],
                    vip: b.vip[w],
                    state: FlowState::from_u8(b.state[w]),
                    created: b.created[w],
                    last_seen: b.last_seen[w],
                };
                if !f(&keys[w], e) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
