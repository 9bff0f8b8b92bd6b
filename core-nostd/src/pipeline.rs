//! The per-packet pipeline: parse → classify → flow lookup → choose → rewrite →
//! count, for batches of up to [`MAX_BATCH`] packets.
//!
//! # Software pipelining
//!
//! A batch is processed in chunks of [`CHUNK`] packets, in three passes, like
//! VPP's lb node: (1) parse each packet, hash its 5-tuple and prefetch its flow
//! bucket; (2) scan each (now cached) bucket for the signature and prefetch the
//! matching key; (3) finish each packet: the authoritative lookup, the state
//! machine, the choice, the rewrite and the counters. Passes 1 and 2 are only hints:
//! pass 3 repeats the lookup, so two packets of one flow in one chunk (a SYN and its
//! retransmission) are handled exactly as if they came one by one.
//!
//! # The fast path
//!
//! Pass 1 first tries [`fast::parse`], a parser for the common case only (IPv4
//! without options, TCP, no VLAN tag or one), and pass 3 finishes such a
//! packet with only what it needs; see the `fast` module for the exact conditions and for the
//! contract: the same bytes, verdict and counters as the general path, which
//! every other packet takes. [`Worker::set_fast_path`] turns it off (for the
//! differential tests and fuzzing).
//!
//! # What happens to each packet
//!
//! * Not IP (ARP, LLDP) or IP not to a VIP address: [`Verdict::Host`]. ICMP echo,
//!   neighbour discovery and other non-error ICMP to a VIP: `Host` too.
//! * Parse error: drop `malformed`; VIP address but no VIP for the protocol/port:
//!   `no_vip`; impossible client source: `martian`; TTL/hop limit ≤ 1:
//!   `ttl_expired` (the LB is an IP hop and decrements it).
//! * TCP SYN (without ACK) with no entry: a new flow, placed by the VIP's method
//!   (alias draw from the flow hash, or SED over the worker's active flows) and
//!   inserted half-open. UDP and other protocols: the first packet starts a flow.
//! * TCP non-SYN with no entry (a connection from before a restart or from
//!   another LB node): placed by the consistent Maglev table, and then tracked.
//!   TCP RST with no entry: placed by Maglev, not tracked.
//! * A flow that does not fit in its bucket: placed by Maglev, untracked (its
//!   later packets find no entry and go through Maglev again: same backend).
//! * FIN or RST end a flow (completion time recorded); the entry stays, closing,
//!   for `tcp_closing` so the last segments follow. A SYN on a closing entry starts
//!   a new flow on the same 5-tuple.
//! * ICMP errors go to the backend of the flow they are about (entry, else Maglev).
//! * IP fragments: the first fragment is placed with its flow and remembered by
//!   (addresses, protocol, fragment id) for 2 s; later fragments follow it, or are
//!   dropped `fragment_no_state` when the first was not seen.
//! * Stateless Maglev method: every packet is placed by Maglev, no flow table.

use crate::classify::{
    is_host_icmp, is_martian_source, match_vip, match_vip_parts, DropReason, Verdict, VipMatch,
};
use crate::flow::{
    ticks, Entry, Expired, FlowKey, FlowState, FlowTable, Lookup, LookupV4, NewEntry, Slot,
};
use crate::hash::{choice_hash, flow_hash, flow_hash_v4};
use crate::prefetch;
use crate::rewrite::{rewrite, Rewritten, TunnelV4};
use crate::select::{sed_choose_by, Method};
use crate::service::{AdminState, Service, VipService};
use crate::sync::{Applied, RecordKind, SyncOut, SyncRecord};
use crate::telemetry::Telemetry;
use crate::wire::checksum;
use crate::wire::meta::FrameKind;
use crate::wire::meta::{ip_proto, tcp_flags};
use crate::wire::parse::parse_into;
use crate::wire::{IpFamily, PacketMeta};

mod fast;
use fast::FastMeta;

/// The key of a flow [`Lane::placed_miss`] inserts: in full (the general
/// path), or as an IPv4 bucket key word (the fast path, which never builds
/// the key; the protocol is the packet's).
#[derive(Clone, Copy)]
enum NewKey<'k> {
    Full(&'k FlowKey),
    V4(u64),
}

/// What one TCP segment changes in its live flow's entry, decided once for
/// the general and the fast path: a FIN or RST closes a flow that is not
/// closing yet, the client's ACK (without SYN) completes a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpChange {
    /// Nothing.
    None,
    /// The flow closes; `established` if it was (its peers hold a copy).
    Close { established: bool },
    /// The handshake completes.
    Establish,
}

impl TcpChange {
    /// The change `flags` make to a flow in `state`.
    #[inline(always)]
    fn of(state: FlowState, flags: u8) -> Self {
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            if state == FlowState::TcpClosing {
                Self::None
            } else {
                Self::Close {
                    established: state == FlowState::TcpEstablished,
                }
            }
        } else if state == FlowState::TcpSynSent
            && flags & (tcp_flags::ACK | tcp_flags::SYN) == tcp_flags::ACK
        {
            Self::Establish
        } else {
            Self::None
        }
    }

    /// The sync record the change makes when sync is on: an established
    /// connection's peers close their copy, a new one tells them where it
    /// went.
    #[inline(always)]
    fn sync_record(self) -> Option<RecordKind> {
        match self {
            Self::Close { established: true } => Some(RecordKind::Closed),
            Self::Establish => Some(RecordKind::Opened),
            Self::None | Self::Close { established: false } => None,
        }
    }
}

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Largest batch one call processes.
pub const MAX_BATCH: usize = 256;

/// Packets per software-pipelining chunk.
pub const CHUNK: usize = 32;

/// Entries of the fragment cache (direct-mapped).
pub const FRAG_CACHE: usize = 1024;

/// How long the fragment cache remembers a datagram (ns).
pub const FRAG_TIMEOUT_NS: u64 = 2_000_000_000;

/// One packet buffer: the frame is `buf[start..start + len]`, `buf[..start]` is
/// headroom. The pipeline moves `start` and `len` when it encapsulates.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The whole buffer, headroom included.
    pub buf: &'a mut [u8],
    /// Offset of the frame in `buf`.
    pub start: usize,
    /// Length of the frame.
    pub len: usize,
}

impl<'a> Packet<'a> {
    /// A packet occupying `buf[start..start + len]`.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        Self { buf, start, len }
    }

    /// The frame bytes (empty if `start`/`len` are inconsistent with the buffer).
    #[inline]
    pub fn frame(&self) -> &[u8] {
        // `start + len` never computed, so it cannot overflow.
        self.buf
            .get(self.start..)
            .and_then(|t| t.get(..self.len))
            .unwrap_or(&[])
    }
}

#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct FragEntry {
    key: FlowKey,
    tick: u32,
    backend: u16,
    valid: u8,
    vip: u8,
}

/// Per-worker state: flow table, fragment cache, telemetry. All-zero bytes are a
/// valid empty worker; allocate with `Worker::new_box_zeroed()` (a 1 M-flow table
/// is about 56 MB) and call [`Worker::init`].
#[derive(FromZeros)]
#[repr(C)]
pub struct Worker<const B: usize> {
    /// The flow table.
    pub flows: FlowTable<B>,
    /// Telemetry.
    pub telemetry: Telemetry,
    frags: [FragEntry; FRAG_CACHE],
    sweep_cursor: u64,
    sweep_pace: SweepPace,
    scratch: Scratch,
    /// Records of connections placed here, for peer LB nodes (see
    /// [`crate::sync`]; off unless the host enables it).
    pub sync: SyncOut,
    /// The latest time any call gave (see [`Worker::clock`]).
    now_floor: u64,
    /// Every packet takes the general path (zeroed memory: the fast path on).
    fast_path_off: bool,
    /// Packets the fast path forwarded (tests check that it is taken).
    #[cfg(test)]
    fast_forwarded: u64,
}

/// [`Worker::sweep_paced`] sweeps the whole flow table once per this period
/// (expiry then lags an entry's timeout by at most this much).
pub const SWEEP_PERIOD_NS: u64 = 1_000_000_000;

/// The sweep owed by elapsed time (see [`Worker::sweep_paced`]). Zeroed: no
/// call yet (the first call starts the clock).
#[derive(Clone, Copy, Debug, Default, FromZeros)]
#[repr(C)]
struct SweepPace {
    /// Time of the previous call (0: none).
    last_ns: u64,
    /// Buckets owed, in units of 1 / [`SWEEP_PERIOD_NS`] bucket.
    owed: u64,
}

impl SweepPace {
    /// Buckets to sweep now, of a table of `buckets`, at most `max`.
    fn due(&mut self, now_ns: u64, buckets: usize, max: usize) -> usize {
        if self.last_ns == 0 || now_ns < self.last_ns {
            // The first call, or a clock that went back: start again from now.
            self.last_ns = now_ns.max(1);
            return 0;
        }
        // At most one table's worth is ever owed, so the product stays far
        // below u64::MAX (buckets < 2^32, elapsed < 2^30 ns).
        let table = (buckets as u64).saturating_mul(SWEEP_PERIOD_NS);
        let elapsed = (now_ns - self.last_ns).min(SWEEP_PERIOD_NS);
        self.last_ns = now_ns;
        self.owed = self
            .owed
            .saturating_add(elapsed.saturating_mul(buckets as u64))
            .min(table);
        let due = (self.owed / SWEEP_PERIOD_NS).min(max as u64);
        self.owed -= due * SWEEP_PERIOD_NS;
        // due <= max.
        due as usize
    }
}

/// Pass-to-pass state of one chunk, kept in the worker so that it is not
/// re-initialised for every chunk; pass 3 reads the metadata in place.
#[derive(FromZeros)]
#[repr(C)]
struct Scratch {
    metas: [PacketMeta; CHUNK],
    fast: [FastMeta; CHUNK],
    keys: [FlowKey; CHUNK],
    hashes: [u64; CHUNK],
    /// The full metadata of a fast-path packet that leaves the fast path (one
    /// at a time: one slot, at a fixed address, where a general packet's is in
    /// `metas`).
    spare: PacketMeta,
}

/// How pass 3 finishes a packet of the chunk.
/// A plain tag (no payload), so pass 3 dispatches on one byte.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Route {
    /// Parsed by the fast parser: `Scratch::fast` holds its metadata.
    Fast,
    /// Parsed in full: the general path.
    General,
    /// Not IP (ARP, other ethertypes): to the host, decided in pass 1.
    Host,
    /// Unparseable: dropped as malformed, decided in pass 1.
    Malformed,
}

/// The fast path's VIP match for the last destination (address and port) it
/// looked up, kept for the rest of one [`Worker::process`] call: the service
/// cannot change during it, and a burst of packets mostly goes to one VIP.
#[derive(Clone, Copy)]
struct VipMemo<'s> {
    /// The destination, as [`FastMeta::dest`]; [`Self::EMPTY`]'s is none
    /// (bits 16 to 31 of a destination are 0).
    dest: u64,
    /// Its VIP index and service when the fast path takes the VIP (a VIP, not
    /// stateless Maglev); `None` sends its packets to the general path.
    vip: Option<(u8, &'s VipService)>,
}

impl<'s> VipMemo<'s> {
    const EMPTY: Self = Self {
        dest: u64::MAX,
        vip: None,
    };

    /// The fast path's VIP for the TCP packet `f`.
    #[inline(always)]
    fn get(&mut self, svc: &'s Service, f: &FastMeta) -> Option<(u8, &'s VipService)> {
        if self.dest != f.dest {
            self.dest = f.dest;
            self.vip = Self::lookup(svc, f.dst(), f.dport());
        }
        self.vip
    }

    /// (Cold: once per destination and `process` call.)
    #[inline(never)]
    #[cold]
    fn lookup(svc: &'s Service, dst: u32, dport: u16) -> Option<(u8, &'s VipService)> {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&dst.to_be_bytes());
        let m = match_vip_parts(
            svc.vip_list(),
            IpFamily::V4,
            u128::from_ne_bytes(a),
            ip_proto::TCP,
            dport,
        );
        match m {
            VipMatch::Vip(i) => svc
                .vip(i)
                .filter(|vs| vs.method != Method::Maglev)
                .map(|vs| (i, vs)),
            _ => None,
        }
    }
}

/// The mutable per-packet state of a worker, borrowed apart from its scratch.
struct Lane<'a, const B: usize> {
    flows: &'a mut FlowTable<B>,
    telemetry: &'a mut Telemetry,
    frags: &'a mut [FragEntry; FRAG_CACHE],
    sync: &'a mut SyncOut,
    #[cfg(test)]
    fast_forwarded: &'a mut u64,
}

impl<const B: usize> core::fmt::Debug for Worker<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Worker")
            .field("flows", &self.flows)
            .field("telemetry", &self.telemetry)
            .finish_non_exhaustive()
    }
}

impl<const B: usize> Worker<B> {
    /// Prepares a zeroed worker; `id` seeds its reservoir sampler. Writes every
    /// page of the flow table once, so the packet path never takes a page fault on
    /// freshly allocated (lazily zeroed) memory.
    pub fn init(&mut self, id: u64) {
        self.flows.clear();
        self.telemetry
            .seed(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    }

    /// The time a call works at: `now_ns`, or the latest time an earlier
    /// call gave if that is later. Entries' ages are `now - last_seen` in
    /// wrapping ticks, so one stamped a tick "in the future" would look
    /// 73 minutes old and expire: a host whose threads' clocks differ by a
    /// little (a packet thread's counter-based clock, a sync or sweep caller
    /// on the reference clock) must never make a worker go back.
    #[inline(always)]
    fn clock(&mut self, now_ns: u64) -> u64 {
        self.now_floor = self.now_floor.max(now_ns);
        self.now_floor
    }

    /// Applies peers' sync records (see [`crate::sync::apply`]) and counts
    /// them; a local flow that expired in the way is accounted as expired.
    pub fn apply_sync(&mut self, svc: &Service, now_ns: u64, records: &[SyncRecord]) -> Applied {
        let now_ns = self.clock(now_ns);
        let a = crate::sync::apply(&mut self.flows, svc, ticks(now_ns), records);
        let g = &mut self.telemetry.global;
        g.sync_applied += u64::from(a.inserted + a.closed);
        g.sync_refused += u64::from(a.refused + a.known);
        g.flows_inserted += u64::from(a.inserted);
        a
    }

    /// Records of the established TCP connections in up to `budget` buckets
    /// from bucket `cursor` (for a peer that started again), handed to `out`;
    /// returns the next cursor (0: the table is done).
    pub fn dump_sync(
        &self,
        svc: &Service,
        now_ns: u64,
        cursor: usize,
        budget: usize,
        mut out: impl FnMut(SyncRecord),
    ) -> usize {
        let now = ticks(now_ns.max(self.now_floor));
        let timeouts = svc.timeouts();
        self.flows.for_each_from(cursor, budget, |l| {
            let st = l.entry.state;
            let live = now.wrapping_sub(l.entry.last_seen) <= timeouts[st as usize];
            if l.proto == ip_proto::TCP && st == FlowState::TcpEstablished && live {
                let vip = svc.vip_list().get(usize::from(l.entry.vip));
                let b = svc.backend(l.entry.backend);
                if let (Some(v), Some(b)) = (vip, b) {
                    out(SyncRecord {
                        src: l.src,
                        dst: v.addr,
                        backend: b.addr,
                        sport: l.sport,
                        dport: l.dport,
                        family: if l.v6 { IpFamily::V6 } else { IpFamily::V4 },
                        proto: l.proto,
                        backend_family: b.family,
                        kind: RecordKind::Opened,
                    });
                }
            }
            true
        })
    }

    /// Expires idle flows in up to `budget` buckets (call from the idle loop).
    pub fn sweep(&mut self, svc: &Service, now_ns: u64, budget: usize) {
        let now_ns = self.clock(now_ns);
        let tel = &mut self.telemetry;
        let next = self.flows.sweep(
            self.sweep_cursor as usize,
            budget,
            ticks(now_ns),
            svc.timeouts(),
            |e| tel.flow_expired(&e),
        );
        self.sweep_cursor = next as u64;
    }

    /// Expires idle flows at a pace set by the clock, not by the traffic: over
    /// time, the whole table once every [`SWEEP_PERIOD_NS`], at most `max`
    /// buckets per call (what is left is carried to the next call, up to one
    /// table's worth). For a host that has no idle loop and calls this after
    /// every batch (a VPP node): the cost is then the same per second
    /// whatever the batch size, where a fixed budget per batch costs most per
    /// packet when batches are small.
    pub fn sweep_paced(&mut self, svc: &Service, now_ns: u64, max: usize) {
        let now_ns = self.clock(now_ns);
        let due = self.sweep_pace.due(now_ns, B, max);
        if due > 0 {
            self.sweep(svc, now_ns, due);
        }
    }

    /// Turns the fast path on (the default) or off. Off, every packet takes the
    /// general path; the results are the same either way (that is what the
    /// differential tests check), only the cost differs.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path_off = !on;
    }

    /// Processes one packet (a batch of one).
    pub fn process_one(&mut self, svc: &Service, now_ns: u64, pkt: &mut Packet<'_>) -> Verdict {
        let mut v = [Verdict::Host];
        self.process(svc, now_ns, core::slice::from_mut(pkt), &mut v);
        v[0]
    }

    /// Processes a batch: `verdicts[i]` receives packet `i`'s verdict and the
    /// packet's `start`/`len` describe the frame to transmit. At most
    /// `min(pkts.len(), verdicts.len(), MAX_BATCH)` packets are processed; the
    /// rest of `verdicts` is left untouched.
    pub fn process(
        &mut self,
        svc: &Service,
        now_ns: u64,
        pkts: &mut [Packet<'_>],
        verdicts: &mut [Verdict],
    ) {
        let n = pkts.len().min(verdicts.len()).min(MAX_BATCH);
        let now_ns = self.clock(now_ns);
        let now = ticks(now_ns);
        let fast_on = !self.fast_path_off;
        let mut vip_memo = VipMemo::EMPTY;
        let mut base = 0;
        while base < n {
            let m = (n - base).min(CHUNK);
            // Pass-to-pass state lives in flat arrays; pass 3 reads the metadata in
            // place (no copies of it, which also avoids store-forwarding stalls).
            // Fast unless pass 1 says otherwise (most packets are).
            let mut route = [Route::Fast; CHUNK];
            let Self {
                flows,
                telemetry,
                frags,
                scratch,
                sync,
                #[cfg(test)]
                fast_forwarded,
                ..
            } = self;
            let Scratch {
                metas,
                fast,
                keys,
                hashes,
                spare,
            } = scratch;
            let mut lane = Lane {
                flows,
                telemetry,
                frags,
                sync,
                #[cfg(test)]
                fast_forwarded,
            };
            // Pass 1: parse, hash, prefetch the bucket.
            lane.telemetry.global.rx_packets += m as u64;
            // `n` is at most both lengths: one bounds check per chunk.
            let mut any_general = false;
            // No packet for anything but the fast path: pass 3 then needs no
            // route test.
            let mut all_fast = true;
            let chunk_pkts = &mut pkts[base..base + m];
            let chunk_verdicts = &mut verdicts[base..base + m];
            // A packet the fast parser does not take (all of them with the
            // fast path off): parsed in full, its route set; its hash, if it
            // has a flow.
            let mut general = |j: usize, p: &Packet<'_>| -> Option<u64> {
                all_fast = false;
                let meta = metas.get_mut(j)?;
                match parse_into(p.frame(), meta) {
                    Ok(FrameKind::Ip) => {
                        route[j] = Route::General;
                        any_general = true;
                        let key = FlowKey::from_meta(meta);
                        keys[j] = key;
                        Some(flow_hash(&key, svc.hash_seed))
                    }
                    Ok(FrameKind::Arp | FrameKind::Other(_)) => {
                        route[j] = Route::Host;
                        None
                    }
                    Err(_) => {
                        route[j] = Route::Malformed;
                        None
                    }
                }
            };
            // Two loops, so that the fast path's switch is tested once per
            // chunk; in each, the fast packet is finished in a branch of its
            // own.
            if fast_on {
                for j in 0..m {
                    let Some(p) = chunk_pkts.get(j) else { break };
                    // The key stays in `fast[j]`: pass 3 needs it only when
                    // the packet leaves the fast path.
                    let h = if fast::parse(p.frame(), &mut fast[j]) {
                        flow_hash_v4(&fast[j].key(), svc.hash_seed)
                    } else {
                        match general(j, p) {
                            Some(h) => h,
                            None => continue,
                        }
                    };
                    hashes[j] = h;
                    prefetch::read(lane.flows.bucket_ptr(h));
                }
            } else {
                for (j, (p, hash)) in chunk_pkts.iter().zip(hashes.iter_mut()).enumerate() {
                    if let Some(h) = general(j, p) {
                        prefetch::read(lane.flows.bucket_ptr(h));
                        *hash = h;
                    }
                }
            }
            // Pass 2: the buckets are (nearly) in cache now; prefetch the key of
            // the way whose signature matches (IPv6 only: an IPv4 key is in the
            // bucket itself, and fast-path packets are IPv4). A chunk that
            // pass 1 gave no general packet skips the pass.
            for j in 0..if any_general { m } else { 0 } {
                if route[j] == Route::General {
                    if let Some(p) = lane.flows.candidate_key_ptr(&keys[j], hashes[j]) {
                        prefetch::read(p);
                        prefetch::read(p.wrapping_add(core::mem::size_of::<FlowKey>() - 1));
                    }
                }
            }
            // Pass 3: finish (`j < m <= CHUNK`: no bounds check on the
            // chunk's slices nor on the scratch arrays). A chunk of fast-path
            // packets only (the common case) in a loop of its own.
            if all_fast {
                for j in 0..m {
                    let (Some(pkt), Some(out)) = (chunk_pkts.get_mut(j), chunk_verdicts.get_mut(j))
                    else {
                        break;
                    };
                    if !lane.finish_fast(
                        svc,
                        &mut vip_memo,
                        now_ns,
                        now,
                        pkt,
                        &fast[j],
                        spare,
                        hashes[j],
                        out,
                    ) {
                        lane.tally(*out);
                    }
                }
                base += m;
                continue;
            }
            for j in 0..m {
                let (Some(pkt), Some(out)) = (chunk_pkts.get_mut(j), chunk_verdicts.get_mut(j))
                else {
                    break;
                };
                let v = match route[j] {
                    Route::Host => Verdict::Host,
                    Route::Malformed => Verdict::Drop(DropReason::Malformed),
                    Route::General => {
                        lane.finish(svc, now_ns, now, pkt, &metas[j], &keys[j], hashes[j])
                    }
                    Route::Fast => {
                        // The fast path's common outcome is counted and
                        // stored by it, without the general tally below.
                        if lane.finish_fast(
                            svc,
                            &mut vip_memo,
                            now_ns,
                            now,
                            pkt,
                            &fast[j],
                            spare,
                            hashes[j],
                            out,
                        ) {
                            continue;
                        }
                        *out
                    }
                };
                lane.tally(v);
                *out = v;
            }
            base += m;
        }
    }
}

impl<const B: usize> Lane<'_, B> {
    /// Counts a verdict of pass 3 (a drop other than malformed was counted
    /// where it was decided; the fast path counts its forwards itself).
    #[inline(always)]
    fn tally(&mut self, v: Verdict) {
        match v {
            Verdict::Drop(r) if r == DropReason::Malformed => self.telemetry.drop_packet(r),
            Verdict::Host => self.telemetry.global.to_host += 1,
            Verdict::Reply => self.telemetry.global.replies += 1,
            Verdict::Forward { .. } => self.telemetry.global.forwarded += 1,
            Verdict::Drop(_) => {}
        }
    }

    /// Queues a sync record of the connection `m` belongs to (counted as made,
    /// or as dropped when the outbox is full).
    #[inline(never)]
    fn sync_record(&mut self, m: &PacketMeta, svc: &Service, backend: u16, kind: RecordKind) {
        let g = &mut self.telemetry.global;
        match SyncOut::record(m, svc, backend, kind) {
            Some(r) if self.sync.push(r) => g.sync_made += 1,
            _ => g.sync_dropped += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn finish(
        &mut self,
        svc: &Service,
        now_ns: u64,
        now: u32,
        pkt: &mut Packet<'_>,
        m: &PacketMeta,
        key: &FlowKey,
        hash: u64,
    ) -> Verdict {
        if m.frag.is_fragment && !m.frag.is_first {
            return self.later_fragment(svc, now_ns, pkt, m);
        }
        let vip_idx = match match_vip(svc.vip_list(), m) {
            VipMatch::Vip(i) if !is_host_icmp(m) => i,
            VipMatch::None => return Verdict::Host,
            _ if is_host_icmp(m) => return Verdict::Host,
            _ => return self.drop(DropReason::NoVip),
        };
        let Some(vs) = svc.vip(vip_idx) else {
            return self.drop(DropReason::NoVip);
        };
        if let Some(r) = self.sanity(svc, pkt, m) {
            return self.drop(r);
        }
        let backend = if m.icmp_error {
            let b = match self.flows.lookup(key, hash, vip_idx, now, svc.timeouts()) {
                Lookup::Hit(_, e) => e.backend,
                Lookup::Miss(exp) => {
                    if let Some(e) = exp {
                        self.telemetry.flow_expired(&e);
                    }
                    match vs.consistent(hash) {
                        Some(b) => b,
                        None => return self.drop(DropReason::IcmpErrorNoFlow),
                    }
                }
            };
            self.telemetry.global.icmp_errors_forwarded += 1;
            b
        } else if vs.method == Method::Maglev {
            match vs.consistent(hash) {
                Some(b) => b,
                None => return self.drop(DropReason::NoLiveBackend),
            }
        } else {
            let found = self.flows.lookup(key, hash, vip_idx, now, svc.timeouts());
            match self.placed(svc, vs, vip_idx, m, key, hash, now, found) {
                Ok(b) => b,
                Err(r) => return self.drop(r),
            }
        };
        if m.frag.is_fragment && m.frag.is_first {
            self.frag_insert(m, now_ns, backend, vip_idx);
        }
        self.emit(svc, pkt, m, hash, backend, vs.encap)
    }

    /// Pass 3 of a fast-path packet (see the `fast` module): the general
    /// path's steps, without the metadata they do not need. Anything else
    /// continues on the general path, from the point reached, after `meta`
    /// has been filled by the full parser. The verdict goes to `out`; true
    /// when the packet was forwarded and counted as such (the caller's tally
    /// is then skipped), false when the caller still counts `out`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn finish_fast<'s>(
        &mut self,
        svc: &'s Service,
        vip_memo: &mut VipMemo<'s>,
        now_ns: u64,
        now: u32,
        pkt: &mut Packet<'_>,
        f: &FastMeta,
        meta: &mut PacketMeta,
        hash: u64,
        out: &mut Verdict,
    ) -> bool {
        // Every way off the fast path leaves this block with the verdict.
        let v = 'slow: {
            let l3 = usize::from(f.l3_offset);
            let Some((vip_idx, vs)) = vip_memo.get(svc, f) else {
                break 'slow self.general(svc, now_ns, now, pkt, meta, &f.key(), hash);
            };
            if svc.verify_checksums && !fast::header_checksum_ok(pkt.frame(), l3) {
                break 'slow self.general(svc, now_ns, now, pkt, meta, &f.key(), hash);
            }
            let found =
                self.flows
                    .lookup_v4(f.word, ip_proto::TCP, hash, vip_idx, now, svc.timeouts());
            // The common case inline: an established flow, on a backend that
            // is up, and a packet without FIN or RST, which changes nothing.
            if let LookupV4::Established { slot, backend, .. } = found {
                if f.flags & (tcp_flags::FIN | tcp_flags::RST) == 0 {
                    if let Some(tunnel) = svc.tunnel_up(backend) {
                        return self.fast_forward(
                            svc, pkt, meta, f, vs.encap, hash, now, slot, backend, tunnel, out,
                        );
                    }
                }
            }
            return self.fast_found(svc, pkt, meta, vs, vip_idx, f, hash, now, found, out);
        };
        *out = v;
        false
    }

    /// Pass 3 of a fast-path packet after a lookup that found anything but
    /// the common case [`Self::finish_fast`] finishes: the hit of a flow
    /// whose state the packet may change or whose backend is down, or a
    /// miss.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fast_found(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        vs: &VipService,
        vip_idx: u8,
        f: &FastMeta,
        hash: u64,
        now: u32,
        found: LookupV4,
        out: &mut Verdict,
    ) -> bool {
        let (slot, e) = match found.entry(vip_idx) {
            Ok(hit) => hit,
            Err(expired) => {
                return self.fast_miss(svc, pkt, meta, vs, vip_idx, f, hash, now, expired, out);
            }
        };
        let v = 'slow: {
            let Some(tunnel) = svc.tunnel_up(e.backend) else {
                break 'slow self
                    .fast_placed_hit(svc, pkt, meta, vs, vip_idx, f, hash, now, slot, e);
            };
            // An established flow's packet without FIN or RST changes
            // nothing; anything else may change its state.
            if (f.flags & (tcp_flags::FIN | tcp_flags::RST) != 0
                || e.state != FlowState::TcpEstablished)
                && !self.fast_transition(slot, e, f.flags, now)
            {
                break 'slow self
                    .fast_placed_hit(svc, pkt, meta, vs, vip_idx, f, hash, now, slot, e);
            }
            return self.fast_forward(
                svc, pkt, meta, f, vs.encap, hash, now, slot, e.backend, tunnel, out,
            );
        };
        *out = v;
        false
    }

    /// The fast path's end for a packet of the live flow at `slot`, placed
    /// on `backend` (whose tunnel headers are `tunnel`): counted, rewritten,
    /// its verdict given.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fast_forward(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        f: &FastMeta,
        encap: crate::rewrite::Encap,
        hash: u64,
        now: u32,
        slot: Slot,
        backend: u16,
        tunnel: &TunnelV4,
        out: &mut Verdict,
    ) -> bool {
        let flows = &self.flows;
        self.telemetry
            .packet(backend, u32::from(f.l3_len), now, || flows.created(slot));
        self.fast_emit(svc, pkt, meta, f, encap, hash, backend, tunnel, out)
    }

    /// The fast path's rewrite of a packet placed on `backend` (whose
    /// tunnel headers are `tunnel`), and its verdict. IP-in-IP and GRE over
    /// IPv4 are finished here, with their own tails; the other
    /// encapsulations, and a tunnel that fails, out of line.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fast_emit(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        f: &FastMeta,
        encap: crate::rewrite::Encap,
        hash: u64,
        backend: u16,
        tunnel: &TunnelV4,
        out: &mut Verdict,
    ) -> bool {
        let l3 = pkt.start + usize::from(f.l3_offset);
        let (l3_len, mtu) = (usize::from(f.l3_len), svc.egress().mtu);
        // IP-in-IP first (one compare where the match tested for L2 DSR, then
        // GRE).
        use crate::rewrite::{encap_v4_fast, Encap, GRE_V4_WINDOW, IPIP_V4_WINDOW};
        let rewritten = if encap == Encap::IpIp && tunnel.v4 {
            encap_v4_fast::<IPIP_V4_WINDOW>(pkt.buf, l3, l3_len, f.df, tunnel, mtu, hash)
        } else if encap == Encap::Gre && tunnel.v4 {
            encap_v4_fast::<GRE_V4_WINDOW>(pkt.buf, l3, l3_len, f.df, tunnel, mtu, hash)
        } else {
            return self.fast_emit_any(svc, pkt, meta, f, encap, hash, backend, out);
        };
        match rewritten {
            Some(Ok(r)) => {
                let (start, len) = r.frame();
                pkt.start = start;
                pkt.len = len;
                #[cfg(test)]
                {
                    *self.fast_forwarded += 1;
                }
                self.telemetry.global.forwarded += 1;
                *out = Verdict::Forward { backend };
                true
            }
            Some(Err(e)) => {
                self.fast_emit_failed(svc, pkt, meta, encap, hash, backend, Some(e), out)
            }
            None => self.fast_emit_failed(svc, pkt, meta, encap, hash, backend, None, out),
        }
    }

    /// [`Self::fast_emit`] of any encapsulation.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn fast_emit_any(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        f: &FastMeta,
        encap: crate::rewrite::Encap,
        hash: u64,
        backend: u16,
        out: &mut Verdict,
    ) -> bool {
        let Some((be, tunnel)) = svc.backend_tunnel(backend) else {
            // (Never: the callers place packets on backends of the service.)
            *out = self.drop(DropReason::NoLiveBackend);
            return false;
        };
        let l3 = usize::from(f.l3_offset);
        let rewritten = crate::rewrite::forward_fast_v4(
            pkt.buf,
            pkt.start,
            pkt.start + l3,
            usize::from(f.l3_len),
            f.df,
            encap,
            be.family,
            &be.mac,
            &be.addr,
            tunnel,
            svc.egress(),
            hash,
        );
        let err = match rewritten {
            Some(Ok(r)) => {
                let (start, len) = r.frame();
                pkt.start = start;
                pkt.len = len;
                #[cfg(test)]
                {
                    *self.fast_forwarded += 1;
                }
                self.telemetry.global.forwarded += 1;
                *out = Verdict::Forward { backend };
                return true;
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        self.fast_emit_failed(svc, pkt, meta, encap, hash, backend, err, out)
    }

    /// A fast-path rewrite that did not forward: the drop for `err`, or
    /// (`None`: too big for the link) the general path's ICMP reply, which
    /// needs the full metadata.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[cold]
    fn fast_emit_failed(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        encap: crate::rewrite::Encap,
        hash: u64,
        backend: u16,
        err: Option<crate::rewrite::RewriteError>,
        out: &mut Verdict,
    ) -> bool {
        let v = match err {
            Some(e) => {
                let r = DropReason::from(e);
                self.telemetry.drop_for_backend(backend, r);
                Verdict::Drop(r)
            }
            None if Self::reparse(pkt, meta) => self.emit(svc, pkt, meta, hash, backend, encap),
            None => self.drop(DropReason::Malformed),
        };
        *out = v;
        false
    }

    /// A fast-path packet whose hit the fast path does not finish (see
    /// [`Self::fast_placed_hit`]): parsed in full, it is placed as the
    /// general path places it, from the lookup's result.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[cold]
    fn fast_placed(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        vs: &VipService,
        vip_idx: u8,
        key: &FlowKey,
        hash: u64,
        now: u32,
        found: Lookup,
    ) -> Verdict {
        if !Self::reparse(pkt, meta) {
            return self.drop(DropReason::Malformed);
        }
        match self.placed(svc, vs, vip_idx, meta, key, hash, now, found) {
            Ok(b) => self.emit(svc, pkt, meta, hash, b, vs.encap),
            Err(r) => self.drop(r),
        }
    }

    /// A fast-path packet whose lookup missed: placed as the general path
    /// places it (a SYN starts a flow, another segment is placed by Maglev).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn fast_miss(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        vs: &VipService,
        vip_idx: u8,
        f: &FastMeta,
        hash: u64,
        now: u32,
        expired: Option<Expired>,
        out: &mut Verdict,
    ) -> bool {
        let bytes = u32::from(f.l3_len);
        let placed = self.placed_miss(
            svc,
            vs,
            vip_idx,
            ip_proto::TCP,
            f.flags,
            bytes,
            NewKey::V4(f.word),
            hash,
            now,
            expired,
        );
        let r = match placed.map(|b| (b, svc.backend_tunnel(b))) {
            Ok((b, Some((_, tunnel)))) => {
                return self.fast_emit(svc, pkt, meta, f, vs.encap, hash, b, tunnel, out)
            }
            Ok((_, None)) => DropReason::NoLiveBackend,
            Err(r) => r,
        };
        *out = self.drop(r);
        false
    }

    /// What a fast-path packet on the live flow `e` at `slot` changes in it,
    /// as [`Self::placed`] does it: a FIN or RST closes it, the client's ACK
    /// completes its handshake. False, with nothing done, when the packet
    /// restarts the flow (a SYN on a closing flow) or the change makes a sync
    /// record, which need the full metadata: the packet then takes the
    /// general path.
    /// (`#[cold]`: one packet in ten at most in a busy mix, and the hint
    /// keeps its call out of the hit path's registers.)
    #[inline(never)]
    #[cold]
    fn fast_transition(&mut self, slot: Slot, e: Entry, flags: u8, now: u32) -> bool {
        let syn = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if syn && e.state == FlowState::TcpClosing {
            return false;
        }
        let change = TcpChange::of(e.state, flags);
        if self.sync.enabled && change.sync_record().is_some() {
            return false;
        }
        self.apply_tcp_change(slot, e, change, now);
        true
    }

    /// Applies a live TCP flow's [`TcpChange`] to its entry and telemetry
    /// (the sync record, where one is due, is the caller's).
    #[inline(always)]
    fn apply_tcp_change(&mut self, slot: Slot, e: Entry, change: TcpChange, now: u32) {
        match change {
            TcpChange::None => {}
            TcpChange::Close { .. } => {
                let created = self.flows.created(slot);
                self.telemetry.flow_closed(e.backend, e.state, created, now);
                self.flows.set_state(slot, FlowState::TcpClosing);
            }
            TcpChange::Establish => {
                let created = self.flows.created(slot);
                self.telemetry.handshake_done(e.backend, created, now);
                self.flows.set_state(slot, FlowState::TcpEstablished);
            }
        }
    }

    /// [`Self::fast_placed`] of a hit on a backend that is down, or on a
    /// flow whose change by this packet makes a sync record.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[cold]
    fn fast_placed_hit(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        vs: &VipService,
        vip_idx: u8,
        f: &FastMeta,
        hash: u64,
        now: u32,
        slot: Slot,
        e: Entry,
    ) -> Verdict {
        let found = Lookup::Hit(slot, e);
        self.fast_placed(svc, pkt, meta, vs, vip_idx, &f.key(), hash, now, found)
    }

    /// Fills `meta` with the full parse of a fast-path packet; false (never
    /// seen: the fast parser accepts a subset of what this one does) if it
    /// fails, and the packet is then dropped as malformed.
    #[inline(never)]
    fn reparse(pkt: &Packet<'_>, meta: &mut PacketMeta) -> bool {
        matches!(parse_into(pkt.frame(), meta), Ok(FrameKind::Ip))
    }

    /// A fast-path packet that leaves it before the lookup: the general path
    /// from the start (nothing has been changed yet).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[cold]
    fn general(
        &mut self,
        svc: &Service,
        now_ns: u64,
        now: u32,
        pkt: &mut Packet<'_>,
        meta: &mut PacketMeta,
        key: &FlowKey,
        hash: u64,
    ) -> Verdict {
        if !Self::reparse(pkt, meta) {
            return self.drop(DropReason::Malformed);
        }
        self.finish(svc, now_ns, now, pkt, meta, key, hash)
    }

    /// Checks every packet for a VIP gets: checksum (if enabled), source, TTL.
    #[inline(always)]
    fn sanity(&self, svc: &Service, pkt: &Packet<'_>, m: &PacketMeta) -> Option<DropReason> {
        if svc.verify_checksums && m.family == IpFamily::V4 && !ipv4_header_ok(pkt.frame(), m) {
            return Some(DropReason::BadChecksum);
        }
        if is_martian_source(m.family, &m.src) {
            return Some(DropReason::Martian);
        }
        if m.ttl <= 1 {
            return Some(DropReason::TtlExpired);
        }
        None
    }

    /// A non-first fragment: it has no ports, so it follows its first fragment.
    fn later_fragment(
        &mut self,
        svc: &Service,
        now_ns: u64,
        pkt: &mut Packet<'_>,
        m: &PacketMeta,
    ) -> Verdict {
        if match_vip(svc.vip_list(), m) == VipMatch::None {
            return Verdict::Host;
        }
        if let Some(r) = self.sanity(svc, pkt, m) {
            return self.drop(r);
        }
        let Some((backend, vip)) = self.frag_lookup(m, now_ns) else {
            return self.drop(DropReason::FragmentNoState);
        };
        let Some(vs) = svc.vip(vip) else {
            return self.drop(DropReason::FragmentNoState);
        };
        self.telemetry.global.fragments_forwarded += 1;
        if let Some(c) = self.telemetry.backends.get_mut(usize::from(backend)) {
            c.packets += 1;
            c.bytes += u64::from(m.l3_len);
        }
        let hash = flow_hash(&FlowKey::fragment(m), svc.hash_seed);
        self.emit(svc, pkt, m, hash, backend, vs.encap)
    }

    /// Rewrites the packet toward `backend` and turns the outcome into a verdict.
    #[inline(always)]
    fn emit(
        &mut self,
        svc: &Service,
        pkt: &mut Packet<'_>,
        m: &PacketMeta,
        hash: u64,
        backend: u16,
        encap: crate::rewrite::Encap,
    ) -> Verdict {
        let Some(target) = svc.target(backend, encap) else {
            return self.drop(DropReason::NoLiveBackend);
        };
        let out = rewrite(pkt.buf, pkt.start, pkt.len, m, &target, svc.egress(), hash);
        match out {
            Ok(r) => {
                // Field by field: copying the enum as a whole reloads it with one
                // wide load over narrower stores (a store-forwarding stall).
                let (start, len, verdict) = match r {
                    Rewritten::Forward { start, len } => (start, len, Verdict::Forward { backend }),
                    Rewritten::Reply { start, len } => (start, len, Verdict::Reply),
                };
                pkt.start = start;
                pkt.len = len;
                verdict
            }
            Err(e) => {
                let r = DropReason::from(e);
                self.telemetry.drop_for_backend(backend, r);
                Verdict::Drop(r)
            }
        }
    }

    #[inline(always)]
    fn drop(&mut self, r: DropReason) -> Verdict {
        self.telemetry.drop_packet(r);
        Verdict::Drop(r)
    }

    /// Chooses the backend of a new flow with the VIP's method.
    #[inline(never)]
    fn choose(&self, vs: &VipService, hash: u64) -> Option<u16> {
        self.choose_inline(vs, hash)
    }

    /// [`Self::choose`], inlined (the fast path's SYN).
    #[inline(always)]
    fn choose_inline(&self, vs: &VipService, hash: u64) -> Option<u16> {
        if !vs.live {
            return None;
        }
        match vs.method {
            Method::Alias => vs.alias(choice_hash(hash)),
            Method::Sed => self.choose_sed(vs, hash),
            Method::Maglev => vs.consistent(hash),
        }
    }

    /// [`Self::choose`] by SED, out of line: it gathers the members' active
    /// flows in a 1 KiB array, which the alias draw should not pay for.
    #[inline(never)]
    fn choose_sed(&self, vs: &VipService, hash: u64) -> Option<u16> {
        let members = vs.members();
        let weights = vs.weights();
        let weights = &weights[..weights.len().min(members.len())];
        let active = |i: usize| members.get(i).map_or(0, |&b| self.telemetry.active(b));
        let k = sed_choose_by(weights, active, choice_hash(hash))?;
        members.get(usize::from(k)).copied()
    }

    /// The stateful path after the flow-table lookup, which gave `found`: TCP
    /// state machine, new-flow choice.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn placed(
        &mut self,
        svc: &Service,
        vs: &VipService,
        vip_idx: u8,
        m: &PacketMeta,
        key: &FlowKey,
        hash: u64,
        now: u32,
        found: Lookup,
    ) -> Result<u16, DropReason> {
        let tcp = m.proto == ip_proto::TCP;
        let flags = m.tcp_flags;
        let syn = tcp && flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        let bytes = u32::from(m.l3_len);
        match found {
            Lookup::Hit(slot, e) => {
                let down = svc
                    .backend(e.backend)
                    .is_none_or(|b| b.admin == AdminState::Down);
                if (syn && e.state == FlowState::TcpClosing) || down {
                    // Port reuse after close, or the backend died: place anew.
                    let b = self.choose(vs, hash).ok_or(DropReason::NoLiveBackend)?;
                    if e.state.is_active() {
                        let created = self.flows.created(slot);
                        self.telemetry.flow_closed(e.backend, e.state, created, now);
                    }
                    if down {
                        self.telemetry.global.flows_rescheduled += 1;
                    }
                    let st = if syn {
                        FlowState::TcpSynSent
                    } else if tcp {
                        FlowState::TcpEstablished
                    } else {
                        e.state
                    };
                    self.flows.restart(slot, now, b, st);
                    self.telemetry.flow_opened(b, st);
                    self.telemetry.packet(b, bytes, now, || now);
                    return Ok(b);
                }
                if tcp {
                    let change = TcpChange::of(e.state, flags);
                    self.apply_tcp_change(slot, e, change, now);
                    if self.sync.enabled {
                        if let Some(kind) = change.sync_record() {
                            self.sync_record(m, svc, e.backend, kind);
                        }
                    }
                }
                let flows = &self.flows;
                self.telemetry
                    .packet(e.backend, bytes, now, || flows.created(slot));
                Ok(e.backend)
            }
            Lookup::Miss(expired) => self.placed_miss(
                svc,
                vs,
                vip_idx,
                m.proto,
                flags,
                bytes,
                NewKey::Full(key),
                hash,
                now,
                expired,
            ),
        }
    }

    /// [`Self::placed`] after a miss (`expired`: the entry of this flow that
    /// the lookup found expired), from the packet's protocol, TCP flags and
    /// IP length: a new flow, or a mid-flow packet placed by Maglev.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn placed_miss(
        &mut self,
        svc: &Service,
        vs: &VipService,
        vip_idx: u8,
        proto: u8,
        flags: u8,
        bytes: u32,
        key: NewKey<'_>,
        hash: u64,
        now: u32,
        expired: Option<Expired>,
    ) -> Result<u16, DropReason> {
        let tcp = proto == ip_proto::TCP;
        let syn = tcp && flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if let Some(e) = expired {
            self.telemetry.flow_expired(&e);
        }
        let (b, state) = if !tcp {
            let st = if proto == ip_proto::UDP {
                FlowState::Udp
            } else {
                FlowState::Other
            };
            (self.choose(vs, hash), st)
        } else if syn {
            // The fast path's SYN draws inline; the general path calls out.
            let b = match key {
                NewKey::V4(_) => self.choose_inline(vs, hash),
                NewKey::Full(_) => self.choose(vs, hash),
            };
            (b, FlowState::TcpSynSent)
        } else {
            self.telemetry.global.maglev_fallback += 1;
            let b = vs.consistent(hash).ok_or(DropReason::NoLiveBackend)?;
            if flags & tcp_flags::RST != 0 {
                self.telemetry.packet(b, bytes, now, || now);
                return Ok(b);
            }
            (Some(b), FlowState::TcpEstablished)
        };
        let b = b.ok_or(DropReason::NoLiveBackend)?;
        let new = NewEntry {
            hash,
            vip: vip_idx,
            now,
            timeouts: svc.timeouts(),
            backend: b,
            state,
        };
        let inserted = match key {
            NewKey::Full(key) => self.flows.insert(key, new),
            NewKey::V4(word) => self.flows.insert_v4(word, proto, new),
        };
        match inserted {
            Ok((_, reclaimed)) => {
                if let Some(e) = reclaimed {
                    self.telemetry.flow_expired(&e);
                }
                self.telemetry.global.flows_inserted += 1;
                self.telemetry.flow_opened(b, state);
                self.telemetry.packet(b, bytes, now, || now);
                Ok(b)
            }
            Err(_) => {
                // Bucket full: place consistently, without state.
                self.telemetry.global.flows_untracked += 1;
                let b = vs.consistent(hash).ok_or(DropReason::NoLiveBackend)?;
                self.telemetry.packet(b, bytes, now, || now);
                Ok(b)
            }
        }
    }

    #[inline]
    fn frag_slot(key: &FlowKey) -> usize {
        (flow_hash(key, 0x00f7_a95e) as usize) & (FRAG_CACHE - 1)
    }

    fn frag_insert(&mut self, m: &PacketMeta, now_ns: u64, backend: u16, vip: u8) {
        let key = FlowKey::fragment(m);
        if let Some(e) = self.frags.get_mut(Self::frag_slot(&key)) {
            *e = FragEntry {
                key,
                tick: ticks(now_ns),
                backend,
                valid: 1,
                vip,
            };
        }
    }

    fn frag_lookup(&self, m: &PacketMeta, now_ns: u64) -> Option<(u16, u8)> {
        let key = FlowKey::fragment(m);
        let e = self.frags.get(Self::frag_slot(&key))?;
        let fresh = ticks(now_ns).wrapping_sub(e.tick) <= ticks(FRAG_TIMEOUT_NS);
        (e.valid == 1 && e.key == key && fresh).then_some((e.backend, e.vip))
    }
}

/// Verifies the IPv4 header checksum of a parsed frame.
fn ipv4_header_ok(frame: &[u8], m: &PacketMeta) -> bool {
    let l3 = usize::from(m.l3_offset);
    let Some(&vihl) = frame.get(l3 + crate::wire::ipv4::field::VER_IHL) else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    frame
        .get(l3..l3 + ihl)
        .is_some_and(|h| checksum::checksum(h) == 0)
}

// Every test builds services with 65 537-entry Maglev tables: too slow under
// Miri; the Miri run covers the stages these tests string together.
#[cfg(test)]
#[cfg(not(miri))]
mod tests;

#[cfg(test)]
#[cfg(not(miri))]
mod differential;
