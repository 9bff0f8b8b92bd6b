//! The per-worker flow table: which backend each connection was given.
//!
//! # Contract
//!
//! * Fixed capacity: `B` buckets (a power of two, checked at compile time) of four
//!   entries each. A bucket is one 64-byte cache line, as in VPP's lb plugin, and
//!   for IPv4 it holds each flow's *whole* 5-tuple: source address and both ports
//!   in a 64-bit key word, the VIP index (which fixes destination address and
//!   family) and the protocol. An IPv4 lookup touches exactly one cache line, and
//!   a hash collision can never send a packet to the wrong backend.
//! * IPv6 5-tuples do not fit: an IPv6 entry keeps its 64-bit flow hash in the key
//!   word and its full [`FlowKey`] in a parallel key array, compared on every
//!   match (a second cache line, IPv6 only). The creation times of all entries
//!   live in another parallel array, read only when a flow changes state or a
//!   telemetry sample needs its age.
//! * All-zero bytes are an empty table ([`zerocopy::FromZeros`]), so hosts allocate
//!   it zeroed (hugepage memory, `Box::new_zeroed`) without touching the stack.
//! * Entries expire after a per-state idle timeout (half-open TCP, established TCP,
//!   closing TCP, UDP, other). Expired entries are reclaimed lazily (on lookup or
//!   insert in their bucket) and by [`FlowTable::sweep`], which hosts call with a
//!   small budget from their idle loop; every reclaimed entry is reported to the
//!   caller so the active-flow gauges stay exact.
//! * Two choices: a flow may live in its primary bucket or, when that one is full,
//!   in an alternate bucket chosen by other bits of its hash; the primary bucket
//!   then carries a sticky overflow bit, so lookups of its flows visit the
//!   alternate only when the bit is set and the primary had no match. This keeps
//!   the share of refused flows small at the load factors operators run at.
//! * When both buckets are full (eight live entries) the table does **not** evict:
//!   the new flow is refused ([`InsertError::BucketFull`]) and the pipeline sends
//!   it, and all its later packets, through the VIP's consistent Maglev table,
//!   counted as `untracked`.
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

/// The state in a bucket's state byte `st`, and its timeout.
#[inline(never)]
#[cold]
fn state_timeout(st: u8, timeouts: &[u32; FLOW_STATES]) -> (FlowState, u32) {
    let state = FlowState::from_u8(st & STATE_MASK);
    (state, timeouts[state as usize])
}

/// Marks an entry whose key word is an IPv6 flow hash (full key in the side array).
const V6_FLAG: u8 = 0x80;
/// The state bits of the `state` byte.
const STATE_MASK: u8 = 0x0f;
/// In `vip[0]`: some flow whose primary bucket is this one lives in its
/// alternate bucket. VIP indices are below [`crate::service::MAX_VIPS`], so the
/// high bit of every `vip` byte is free; it is masked off when read.
const OVERFLOW: u8 = 0x80;
/// The VIP bits of a `vip` byte.
const VIP_MASK: u8 = 0x7f;

/// One cache line: four entries, structure-of-arrays.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(64))]
pub struct Bucket {
    /// IPv4: source address << 32 | source port << 16 | destination port.
    /// IPv6: the 64-bit flow hash.
    pub key: [u64; WAYS],
    /// Tick of the last packet.
    pub last_seen: [u32; WAYS],
    /// Backend index.
    pub backend: [u8; WAYS],
    /// VIP index (fixes the destination address and family); the high bit of
    /// `vip[0]` is the bucket's overflow bit.
    pub vip: [u8; WAYS],
    /// L4 protocol.
    pub proto: [u8; WAYS],
    /// [`FlowState`] in the low bits, `0x80` for IPv6; 0 = free.
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

/// What [`FlowTable::insert`] and [`FlowTable::insert_v4`] store with a new
/// flow's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewEntry<'t> {
    /// The flow's hash (it picks the buckets).
    pub hash: u64,
    /// VIP index.
    pub vip: u8,
    /// Tick of the flow's first packet.
    pub now: u32,
    /// [`Timeouts::to_ticks`], for reclaiming an expired way.
    pub timeouts: &'t [u32; FLOW_STATES],
    /// Backend index (below 256).
    pub backend: u16,
    /// Initial state.
    pub state: FlowState,
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

/// Result of [`FlowTable::lookup_v4`]: a [`Lookup`], with the hit of a live
/// established flow (the common case) apart, so that its caller knows the
/// state without testing it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupV4 {
    /// A live established entry; its `last_seen` has been refreshed. (The
    /// [`Entry`] in parts: its VIP is the lookup's, its state established;
    /// see [`LookupV4::entry`].)
    Established {
        /// Where it is.
        slot: Slot,
        /// [`Entry::backend`].
        backend: u16,
        /// [`Entry::last_seen`].
        last_seen: u32,
    },
    /// Any other live entry, refreshed.
    Hit(Slot, Entry),
    /// As [`Lookup::Miss`].
    Miss(Option<Expired>),
}

impl LookupV4 {
    /// The hit's slot and entry (`vip`: the lookup's), or the miss.
    #[inline(always)]
    pub fn entry(self, vip: u8) -> Result<(Slot, Entry), Option<Expired>> {
        match self {
            Self::Established {
                slot,
                backend,
                last_seen,
            } => Ok((
                slot,
                Entry {
                    backend,
                    vip,
                    state: FlowState::TcpEstablished,
                    last_seen,
                },
            )),
            Self::Hit(slot, e) => Ok((slot, e)),
            Self::Miss(expired) => Err(expired),
        }
    }
}

/// What a flow table compares, derived once per packet from its key and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    word: u64,
    vip: u8,
    proto: u8,
    v6: bool,
}

impl Probe {
    #[inline(always)]
    fn new(key: &FlowKey, hash: u64, vip: u8) -> Self {
        let v6 = key.is_v6();
        let w = &key.words;
        Self {
            word: if v6 { hash } else { w[0] | (w[4] >> 32) },
            vip,
            proto: key.proto(),
            v6,
        }
    }
}

/// A flow as listed by [`FlowTable::for_each`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// IPv6 flow.
    pub v6: bool,
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: u8,
    /// The entry.
    pub entry: Entry,
    /// Tick of the first packet.
    pub created: u32,
}

/// Fixed-capacity flow table with `B` buckets of [`WAYS`] entries.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FlowTable<const B: usize> {
    buckets: [Bucket; B],
    created: [[u32; WAYS]; B],
    keys6: [[FlowKey; WAYS]; B],
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

    /// Clears every entry. Writes the buckets and creation times (so their pages
    /// are faulted in now, not on the packet path); the IPv6 key array is only
    /// read behind a valid bucket entry and is left as it is.
    pub fn clear(&mut self) {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        self.buckets.zero();
        self.created.zero();
    }

    /// Bucket index for a flow hash (its low bits).
    #[inline(always)]
    pub fn bucket_of(hash: u64) -> usize {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        (hash as usize) & (B - 1)
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

    /// For an IPv6 flow whose bucket holds a matching hash: the address of the
    /// stored key, for prefetching. `None` for IPv4 (verified inside the bucket)
    /// and when nothing matches.
    #[inline(always)]
    pub fn candidate_key_ptr(&self, key: &FlowKey, hash: u64) -> Option<*const u8> {
        if !key.is_v6() {
            return None;
        }
        let b = Self::bucket_of(hash);
        let bucket = self.buckets.get(b)?;
        let w = (0..WAYS).find(|&w| bucket.key[w] == hash && bucket.state[w] & V6_FLAG != 0)?;
        let k = self.keys6.get(b)?.get(w)?;
        Some((k as *const FlowKey).cast())
    }

    /// The alternate bucket of a flow whose primary bucket is `bucket_of(hash)`.
    #[inline(always)]
    pub fn alternate_of(hash: u64) -> usize {
        let p = Self::bucket_of(hash);
        let a = ((hash >> 32) as usize) & (B - 1);
        if a == p {
            (p ^ 1) & (B - 1)
        } else {
            a
        }
    }

    /// The way of bucket `b` holding the flow, if any.
    #[inline(always)]
    fn find(&self, b: usize, p: &Probe, key: &FlowKey) -> Option<(usize, u8)> {
        let bucket = self.buckets.get(b)?;
        for w in 0..WAYS {
            // The key word first: it tells the ways apart, so a way that
            // is not the flow's costs one compare.
            if bucket.key[w] != p.word {
                continue;
            }
            // Live and of the family first: for an IPv4 probe the two are
            // one signed test of the state byte (1 to 0x7f).
            let st = bucket.state[w];
            if st == 0
                || (st & V6_FLAG != 0) != p.v6
                || bucket.vip[w] & VIP_MASK != p.vip
                || bucket.proto[w] != p.proto
            {
                continue;
            }
            if p.v6 && self.keys6.get(b).and_then(|k| k.get(w)) != Some(key) {
                continue;
            }
            return Some((w, st));
        }
        None
    }

    /// Finds the live entry of `key` (a flow of VIP `vip`) and refreshes its
    /// `last_seen` to `now`. `timeouts` is [`Timeouts::to_ticks`].
    #[inline(always)]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        hash: u64,
        vip: u8,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
    ) -> Lookup {
        match self.lookup_probe(&Probe::new(key, hash, vip), key, hash, now, timeouts) {
            Ok((slot, e)) => Lookup::Hit(slot, e),
            Err(expired) => Lookup::Miss(expired),
        }
    }

    /// [`FlowTable::lookup`] of an IPv4 flow, from what its bucket holds of
    /// its key: `word` is the source address << 32 | source port << 16 |
    /// destination port, `proto` the protocol. Gives what `lookup` gives for
    /// that flow's [`FlowKey`] (the pipeline's fast path, which never builds
    /// the key), with a live established flow told apart from other hits.
    #[inline(always)]
    pub fn lookup_v4(
        &mut self,
        word: u64,
        proto: u8,
        hash: u64,
        vip: u8,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
    ) -> LookupV4 {
        let p = Probe {
            word,
            vip,
            proto,
            v6: false,
        };
        // An IPv4 probe never reads the full key (only IPv6 entries keep one).
        let (b, w, st) = match self.find_probe(&p, &FlowKey::default(), hash) {
            Some(found) => found,
            None => return LookupV4::Miss(None),
        };
        // An established IPv4 flow (most lookups) is told by its whole state
        // byte, and its timeout read at a fixed index; everything else (the
        // other states, an expired flow) as `lookup` does it.
        const EST: usize = FlowState::TcpEstablished as usize;
        if usize::from(st) == EST {
            if let Some(bucket) = self.buckets.get_mut(b) {
                let last = bucket.last_seen[w];
                if now.wrapping_sub(last) <= timeouts[EST] {
                    bucket.last_seen[w] = now;
                    return LookupV4::Established {
                        slot: Slot {
                            bucket: b as u32,
                            way: w as u8,
                        },
                        backend: u16::from(bucket.backend[w]),
                        last_seen: last,
                    };
                }
            }
        }
        match self.settle(b, w, st, vip, now, timeouts) {
            Ok((slot, e)) => LookupV4::Hit(slot, e),
            Err(expired) => LookupV4::Miss(expired),
        }
    }

    #[inline(always)]
    fn lookup_probe(
        &mut self,
        p: &Probe,
        key: &FlowKey,
        hash: u64,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
    ) -> Result<(Slot, Entry), Option<Expired>> {
        let (b, w, st) = self.find_probe(p, key, hash).ok_or(None)?;
        self.settle(b, w, st, p.vip, now, timeouts)
    }

    /// The bucket, way and state byte of the flow `p`, in its primary bucket
    /// or (when that one has overflowed) its alternate.
    #[inline(always)]
    fn find_probe(&self, p: &Probe, key: &FlowKey, hash: u64) -> Option<(usize, usize, u8)> {
        let mut b = Self::bucket_of(hash);
        let mut found = self.find(b, p, key);
        if found.is_none()
            && self
                .buckets
                .get(b)
                .is_some_and(|x| x.vip[0] & OVERFLOW != 0)
        {
            b = Self::alternate_of(hash);
            found = self.find(b, p, key);
        }
        found.map(|(w, st)| (b, w, st))
    }

    /// The entry at way `w` of bucket `b`, with state byte `st`, found for
    /// VIP `vip` at `now`: refreshed and returned if it is live, freed and
    /// returned as expired if it is not.
    #[inline(always)]
    fn settle(
        &mut self,
        b: usize,
        w: usize,
        st: u8,
        vip: u8,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
    ) -> Result<(Slot, Entry), Option<Expired>> {
        let Some(bucket) = self.buckets.get_mut(b) else {
            return Err(None);
        };
        // An established IPv4 flow (most lookups) is told by its whole state
        // byte, and its timeout read at a fixed index; the other states are
        // converted out of line.
        const EST: usize = FlowState::TcpEstablished as usize;
        let (state, timeout) = if usize::from(st) == EST {
            (FlowState::TcpEstablished, timeouts[EST])
        } else {
            state_timeout(st, timeouts)
        };
        let last = bucket.last_seen[w];
        if now.wrapping_sub(last) > timeout {
            bucket.state[w] = 0;
            let created = self.created.get(b).map_or(last, |c| c[w]);
            return Err(Some(Expired {
                backend: u16::from(bucket.backend[w]),
                vip,
                state,
                created,
                last_seen: last,
            }));
        }
        bucket.last_seen[w] = now;
        Ok((
            Slot {
                bucket: b as u32,
                way: w as u8,
            },
            Entry {
                backend: u16::from(bucket.backend[w]),
                vip,
                state,
                last_seen: last,
            },
        ))
    }

    /// Tick at which the flow at `slot` started (its SYN for TCP).
    #[inline]
    pub fn created(&self, slot: Slot) -> u32 {
        self.created
            .get(slot.bucket as usize)
            .and_then(|c| c.get(usize::from(slot.way)))
            .copied()
            .unwrap_or(0)
    }

    /// A free way of bucket `b`, else an expired one (with what it held).
    #[inline(always)]
    fn vacancy(
        &self,
        b: usize,
        now: u32,
        timeouts: &[u32; FLOW_STATES],
    ) -> Option<(usize, Option<Expired>)> {
        let (bucket, created) = (self.buckets.get(b)?, self.created.get(b)?);
        if let Some(w) = (0..WAYS).find(|&w| bucket.state[w] == 0) {
            return Some((w, None));
        }
        (0..WAYS).find_map(|w| {
            let st = FlowState::from_u8(bucket.state[w] & STATE_MASK);
            (now.wrapping_sub(bucket.last_seen[w]) > timeouts[st as usize]).then_some((
                w,
                Some(Expired {
                    backend: u16::from(bucket.backend[w]),
                    vip: bucket.vip[w] & VIP_MASK,
                    state: st,
                    created: created[w],
                    last_seen: bucket.last_seen[w],
                }),
            ))
        })
    }

    /// Inserts the new flow `key` as `e` describes it (its VIP, backend and
    /// state) in its primary bucket, else its alternate bucket. Uses a free
    /// way, or reclaims an expired one (returned so the caller can account for
    /// it); refuses with [`InsertError::BucketFull`] when both buckets hold
    /// only live flows. The caller has checked that the flow is not in the
    /// table.
    ///
    /// Out of line: the pipeline's general path calls it only for a new
    /// flow, and inlined it costs the fast path registers.
    #[inline(never)]
    pub fn insert(
        &mut self,
        key: &FlowKey,
        e: NewEntry<'_>,
    ) -> Result<(Slot, Option<Expired>), InsertError> {
        let p = Probe::new(key, e.hash, e.vip);
        self.insert_probe(&p, key, &e)
    }

    /// [`FlowTable::insert`] of an IPv4 flow, from what its bucket holds of
    /// its key (`word` and `proto`, as for [`FlowTable::lookup_v4`]): the
    /// same entry as `insert` makes for that flow's [`FlowKey`], without
    /// building the key.
    #[inline]
    pub fn insert_v4(
        &mut self,
        word: u64,
        proto: u8,
        e: NewEntry<'_>,
    ) -> Result<(Slot, Option<Expired>), InsertError> {
        let p = Probe {
            word,
            vip: e.vip,
            proto,
            v6: false,
        };
        // An IPv4 entry keeps no full key.
        self.insert_probe(&p, &FlowKey::default(), &e)
    }

    #[inline(always)]
    fn insert_probe(
        &mut self,
        p: &Probe,
        key: &FlowKey,
        e: &NewEntry<'_>,
    ) -> Result<(Slot, Option<Expired>), InsertError> {
        let &NewEntry {
            hash,
            vip,
            now,
            timeouts,
            backend,
            state,
        } = e;
        let primary = Self::bucket_of(hash);
        let (b, (w, reclaimed)) = match self.vacancy(primary, now, timeouts) {
            Some(v) => (primary, v),
            None => {
                let alt = Self::alternate_of(hash);
                let v = self
                    .vacancy(alt, now, timeouts)
                    .ok_or(InsertError::BucketFull)?;
                if let Some(pb) = self.buckets.get_mut(primary) {
                    pb.vip[0] |= OVERFLOW;
                }
                (alt, v)
            }
        };
        let (Some(bucket), Some(created)) = (self.buckets.get_mut(b), self.created.get_mut(b))
        else {
            return Err(InsertError::BucketFull);
        };
        bucket.key[w] = p.word;
        bucket.last_seen[w] = now;
        bucket.backend[w] = backend as u8;
        bucket.vip[w] = (bucket.vip[w] & OVERFLOW) | (vip & VIP_MASK);
        bucket.proto[w] = p.proto;
        bucket.state[w] = state as u8 | if p.v6 { V6_FLAG } else { 0 };
        created[w] = now;
        if p.v6 {
            if let Some(k) = self.keys6.get_mut(b) {
                k[w] = *key;
            }
        }
        Ok((
            Slot {
                bucket: b as u32,
                way: w as u8,
            },
            reclaimed,
        ))
    }

    /// Free or expired ways of the bucket `hash` maps to first.
    pub fn room(&self, hash: u64, now: u32, timeouts: &[u32; FLOW_STATES]) -> usize {
        let Some(b) = self.buckets.get(Self::bucket_of(hash)) else {
            return 0;
        };
        (0..WAYS)
            .filter(|&w| {
                let st = FlowState::from_u8(b.state[w] & STATE_MASK);
                b.state[w] == 0 || now.wrapping_sub(b.last_seen[w]) > timeouts[st as usize]
            })
            .count()
    }

    /// Changes the state of the entry at `slot` (from a lookup in this batch).
    #[inline]
    pub fn set_state(&mut self, slot: Slot, state: FlowState) {
        if let Some(b) = self.buckets.get_mut(slot.bucket as usize) {
            if let Some(s) = b.state.get_mut(slot.way as usize) {
                *s = if state == FlowState::Free {
                    0
                } else {
                    (*s & V6_FLAG) | state as u8
                };
            }
        }
    }

    /// Restarts the entry at `slot` as a new flow on `backend` (a SYN reusing the
    /// 5-tuple of a closing connection, or a flow whose backend went down).
    #[inline]
    pub fn restart(&mut self, slot: Slot, now: u32, backend: u16, state: FlowState) {
        let (bi, w) = (slot.bucket as usize, usize::from(slot.way));
        if w >= WAYS {
            return;
        }
        if let (Some(b), Some(c)) = (self.buckets.get_mut(bi), self.created.get_mut(bi)) {
            b.backend[w] = backend as u8;
            b.last_seen[w] = now;
            b.state[w] = (b.state[w] & V6_FLAG) | state as u8;
            c[w] = now;
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
            if let (Some(bucket), Some(created)) = (self.buckets.get_mut(b), self.created.get(b)) {
                for w in 0..WAYS {
                    let st = FlowState::from_u8(bucket.state[w] & STATE_MASK);
                    if bucket.state[w] != 0
                        && now.wrapping_sub(bucket.last_seen[w]) > timeouts[st as usize]
                    {
                        bucket.state[w] = 0;
                        on_expired(Expired {
                            backend: u16::from(bucket.backend[w]),
                            vip: bucket.vip[w] & VIP_MASK,
                            state: st,
                            created: created[w],
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

    /// Calls `f` for every occupied entry until it returns false (for `show
    /// flows`). The destination of a flow is the address of its VIP.
    pub fn for_each(&self, mut f: impl FnMut(&Listed) -> bool) {
        self.for_each_from(0, self.buckets.len(), |l| f(l));
    }

    /// [`FlowTable::for_each`] over at most `budget` buckets from bucket
    /// `start`; returns the next bucket to visit (0 once past the last, or
    /// where `f` stopped).
    pub fn for_each_from(
        &self,
        start: usize,
        budget: usize,
        mut f: impl FnMut(&Listed) -> bool,
    ) -> usize {
        let end = start.saturating_add(budget).min(self.buckets.len());
        for bi in start..end {
            let Some(b) = self.buckets.get(bi) else {
                break;
            };
            for w in 0..WAYS {
                if b.state[w] == 0 {
                    continue;
                }
                let v6 = b.state[w] & V6_FLAG != 0;
                let mut src = [0u8; 16];
                let (sport, dport) = if v6 {
                    let k = self.keys6.get(bi).map_or(FlowKey::default(), |k| k[w]);
                    src[..8].copy_from_slice(&k.words[0].to_be_bytes());
                    src[8..].copy_from_slice(&k.words[1].to_be_bytes());
                    (k.sport(), k.dport())
                } else {
                    src[..4].copy_from_slice(&((b.key[w] >> 32) as u32).to_be_bytes());
                    ((b.key[w] >> 16) as u16, b.key[w] as u16)
                };
                let listed = Listed {
                    v6,
                    src,
                    sport,
                    dport,
                    proto: b.proto[w],
                    entry: Entry {
                        backend: u16::from(b.backend[w]),
                        vip: b.vip[w] & VIP_MASK,
                        state: FlowState::from_u8(b.state[w] & STATE_MASK),
                        last_seen: b.last_seen[w],
                    },
                    created: self.created.get(bi).map_or(0, |c| c[w]),
                };
                if !f(&listed) {
                    return bi;
                }
            }
        }
        if end >= self.buckets.len() {
            0
        } else {
            end
        }
    }
}

#[cfg(test)]
mod tests;
