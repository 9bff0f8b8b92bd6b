//! The node's packet entry point: one VPP frame of buffer indices in, next-node
//! indices and rewritten buffers out. Every per-packet decision is
//! [`Worker::process`]'s; this module only maps `vlib_buffer_t`s onto
//! [`Packet`] views and turns verdicts into next nodes.
//!
//! # Buffer contract (the `ip4-unicast` / `ip6-unicast` feature arcs)
//!
//! At these arcs `current_data` points at the IP header and, when
//! `VNET_BUFFER_F_L2_HDR_OFFSET_VALID` is set, `vnet_buffer(b)->l2_hdr_offset`
//! at the Ethernet header `ethernet-input` stepped over (14, 18 or 22 bytes
//! before). The core parses Ethernet frames, so the packet view starts there.
//! Without a valid L2 header (a packet from a tunnel or a non-Ethernet
//! interface) a 14-byte Ethernet header with zero MACs is written into the
//! headroom in front of the IP header. The view covers `pre_data` (128 bytes
//! of headroom) and the data area, so encapsulation prepends in place.
//!
//! # What goes where
//!
//! | verdict | buffer | next |
//! |---|---|---|
//! | `Forward`, tunnel (GRE, IP-in-IP) | `current_data` at the outer IP header, TX index ~0 | `ip4-lookup` / `ip6-lookup` by outer family (FIB does the L2 rewrite) |
//! | `Forward`, L2 DSR (frame rewritten in place) | `current_data` at the Ethernet header, TX = RX interface | `interface-output` |
//! | `Reply` (ICMP too-big to the client) | `current_data` at the reply's IP header, TX ~0 | `ip4-lookup` / `ip6-lookup` |
//! | `Host` | unchanged | next feature on the arc ([`NEXT_FEATURE`]) |
//! | `Drop(reason)` | unchanged | `error-drop`, error = the reason's counter |
//!
//! Chained buffers: the core sees the first segment only; a packet whose IP
//! length runs past it fails to parse and is dropped `malformed`.

use core::mem::{offset_of, size_of, MaybeUninit};

use marllb_core::classify::{DropReason, Verdict};
use marllb_core::pipeline::{Packet, Worker, MAX_BATCH};
use marllb_core::prefetch;
use marllb_core::rewrite::ETH_HLEN;
use marllb_core::service::Service;
use marllb_core::wire::meta::{Frame, IpFamily};
use vpp_plugin::bindings::{
    vlib_buffer_t, vlib_buffer_t__bindgen_ty_1, vlib_buffer_t__bindgen_ty_1__bindgen_ty_1,
    vlib_buffer_t__bindgen_ty_1__bindgen_ty_1__bindgen_ty_1, vlib_rx_or_tx_t_VLIB_RX,
    vlib_rx_or_tx_t_VLIB_TX, vnet_buffer_opaque_t, VLIB_BUFFER_IS_TRACED,
    VLIB_BUFFER_PRE_DATA_SIZE, VNET_BUFFER_F_L2_HDR_OFFSET_VALID,
};

/// Headroom in front of `data`: `vlib_buffer_t::pre_data`.
pub const PRE_DATA: usize = VLIB_BUFFER_PRE_DATA_SIZE as usize;

/// Offset of `pre_data` in `vlib_buffer_t` (two cache lines of metadata).
pub const PRE_DATA_OFFSET: usize = 128;

/// Size of `vlib_buffer_t` up to `data`.
pub const HEADER_SIZE: usize = size_of::<vlib_buffer_t>();

/// VPP's buffer indices are cache-line offsets from `buffer_mem_start`.
pub const LOG2_CACHE_LINE: u32 = 6;

// The layout this module relies on (VPP's `vlib_buffer_t`).
const _: () = {
    assert!(HEADER_SIZE == 256);
    assert!(PRE_DATA_OFFSET + PRE_DATA == HEADER_SIZE);
    assert!(offset_of!(vlib_buffer_t__bindgen_ty_1, data) == HEADER_SIZE);
    assert!(offset_of!(vlib_buffer_t__bindgen_ty_1, pre_data) == PRE_DATA_OFFSET);
    assert!(size_of::<vnet_buffer_opaque_t>() <= 40);
    // The metadata (`current_data` ... `opaque`) is the first member of
    // every union level above it: `meta` casts instead of going through
    // bindgen's `__BindgenUnionField::as_ref`/`as_mut`, whose zero-sized
    // references Miri (Stacked Borrows) rejects for reading the fields.
    assert!(offset_of!(vlib_buffer_t, __bindgen_anon_1) == 0);
    assert!(offset_of!(vlib_buffer_t__bindgen_ty_1, __bindgen_anon_1) == 0);
    assert!(offset_of!(vlib_buffer_t__bindgen_ty_1__bindgen_ty_1, __bindgen_anon_1) == 0);
};

/// A buffer's metadata: `current_data`, `current_length`, `flags`, ...,
/// `opaque` (VPP's first cache line).
pub type BufferMeta = vlib_buffer_t__bindgen_ty_1__bindgen_ty_1__bindgen_ty_1;

/// The metadata of the buffer at `b` (the same address, see the layout
/// assertions above). Dereferencing it is as safe as dereferencing `b`.
#[inline(always)]
pub fn meta(b: *mut vlib_buffer_t) -> *mut BufferMeta {
    b.cast()
}

/// `vnet_buffer(b)`: the vnet view of the metadata's `opaque` words at `m`.
/// Dereferencing it is as safe as dereferencing `m`.
#[inline(always)]
pub fn vnet(m: *mut BufferMeta) -> *mut vnet_buffer_opaque_t {
    m.cast::<u8>()
        .wrapping_add(offset_of!(BufferMeta, opaque))
        .cast()
}

/// Next nodes of `marllb-ip4` / `marllb-ip6`, in registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Next {
    /// `error-drop`.
    Drop = 0,
    /// `ip4-lookup`.
    Ip4Lookup = 1,
    /// `ip6-lookup`.
    Ip6Lookup = 2,
    /// `interface-output`.
    InterfaceOutput = 3,
}

/// Next-node names, indexed by [`Next`].
pub const NEXT_NODE_NAMES: [&str; 4] =
    ["error-drop", "ip4-lookup", "ip6-lookup", "interface-output"];

/// Placeholder next index for `Host`: the node replaces it with the arc's next
/// feature (`vnet_feature_next`).
pub const NEXT_FEATURE: u16 = u16::MAX;

/// Which arc the node serves (for replies, which go back in the same family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeFamily {
    /// `marllb-ip4` on `ip4-unicast`.
    Ip4,
    /// `marllb-ip6` on `ip6-unicast`.
    Ip6,
}

/// Per-frame counts for the node's counters (drops are counted by
/// `error-drop` through `b->error`; these are for the others).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Forwarded to a backend.
    pub forwarded: u32,
    /// ICMP errors sent back to clients.
    pub replies: u32,
    /// Passed to the next feature.
    pub host: u32,
    /// Dropped, by reason.
    pub drops: [u32; DropReason::COUNT],
}

impl FrameCounts {
    /// Buffers the node has more to do for after [`process_frame`]: those
    /// passed on (their next node is the arc's next feature) and those
    /// dropped (their error counter). A frame where this is 0, all forwards
    /// and replies, is ready to enqueue as it is.
    #[inline]
    pub fn unfinished(&self) -> u32 {
        self.drops
            .iter()
            .fold(self.host, |a, &d| a.saturating_add(d))
    }
}

/// Buffers of one frame, as the node received them.
#[derive(Clone, Copy, Debug)]
pub struct FrameBuffers<'a> {
    /// `vlib_buffer_main_t::buffer_mem_start`.
    pub buffer_mem_start: *mut u8,
    /// The frame's buffer indices.
    pub indices: &'a [u32],
    /// Bytes of `data` per buffer (`vlib_buffer_get_default_data_size`).
    pub data_size: usize,
    /// The MACs of the interfaces the feature is enabled on: an L2 DSR
    /// frame leaves the interface it came in on with that interface's MAC as
    /// its source, unless `lb rl conf mac` set one (as the DPDK host uses
    /// its port's MAC).
    pub macs: &'a InterfaceMacs,
}

/// The MAC of each interface the feature is enabled on, by `sw_if_index`
/// (the plugin reads it from VPP at `lb rl enable <interface>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceMacs(Vec<(u32, [u8; 6])>);

/// No interface known (frames keep the configured source MAC).
pub static NO_MACS: InterfaceMacs = InterfaceMacs(Vec::new());

impl InterfaceMacs {
    /// The MAC of `sw_if_index`.
    #[inline]
    pub fn get(&self, sw_if_index: u32) -> Option<[u8; 6]> {
        self.0
            .iter()
            .find(|(i, _)| *i == sw_if_index)
            .map(|&(_, m)| m)
    }

    /// Records (or replaces) the MAC of `sw_if_index`.
    pub fn set(&mut self, sw_if_index: u32, mac: [u8; 6]) {
        match self.0.iter_mut().find(|(i, _)| *i == sw_if_index) {
            Some(e) => e.1 = mac,
            None => self.0.push((sw_if_index, mac)),
        }
    }

    /// Forgets `sw_if_index`.
    pub fn remove(&mut self, sw_if_index: u32) {
        self.0.retain(|(i, _)| *i != sw_if_index);
    }
}

/// What a traced buffer's record says (`show trace`): the flow as it arrived,
/// the verdict, the backend and the next node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceNote {
    /// The frame parsed as IP (the fields below are the flow's).
    pub parsed: bool,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// L4 protocol.
    pub proto: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// Client address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// VIP address.
    pub dst: [u8; 16],
    /// Client port.
    pub sport: u16,
    /// VIP port.
    pub dport: u16,
    /// The core's verdict.
    pub verdict: TraceVerdict,
    /// The backend's address, for a forward (its family: `backend_v6`).
    pub backend_addr: [u8; 16],
    /// The backend's address is IPv6.
    pub backend_v6: bool,
    /// Next node ([`Next`] as `u16`, or [`NEXT_FEATURE`]).
    pub next: u16,
}

/// A verdict, as a trace record holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceVerdict {
    /// Not for a VIP: the next feature.
    #[default]
    Host,
    /// To backend `n`.
    Forward(u16),
    /// An ICMP error back to the client.
    Reply,
    /// Dropped.
    Drop(DropReason),
    /// Nothing configured, or the plugin disabled: passed on untouched.
    Unconfigured,
}

fn fmt_addr(a: &[u8; 16], v6: bool) -> std::net::IpAddr {
    if v6 {
        std::net::IpAddr::from(*a)
    } else {
        std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
    }
}

impl core::fmt::Display for TraceNote {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.parsed {
            let proto = match self.proto {
                6 => "TCP".to_string(),
                17 => "UDP".to_string(),
                1 | 58 => "ICMP".to_string(),
                p => format!("proto {p}"),
            };
            let (s, d) = (fmt_addr(&self.src, self.v6), fmt_addr(&self.dst, self.v6));
            write!(
                f,
                "{proto} {s} port {} -> {d} port {}",
                self.sport, self.dport
            )?;
            if self.proto == 6 {
                write!(f, " flags 0x{:02x}", self.tcp_flags)?;
            }
        } else {
            f.write_str("not an IP frame")?;
        }
        let next = match self.next {
            NEXT_FEATURE => "next feature",
            n => NEXT_NODE_NAMES.get(usize::from(n)).copied().unwrap_or("?"),
        };
        match self.verdict {
            TraceVerdict::Forward(b) => write!(
                f,
                ": forward to backend {b} ({}), next {next}",
                fmt_addr(&self.backend_addr, self.backend_v6)
            ),
            TraceVerdict::Reply => write!(f, ": ICMP error to the client, next {next}"),
            TraceVerdict::Host => write!(f, ": not for a VIP, {next}"),
            TraceVerdict::Drop(r) => write!(f, ": drop ({}), next {next}", r.name()),
            TraceVerdict::Unconfigured => write!(f, ": not configured, {next}"),
        }
    }
}

/// How far ahead buffer headers and data are prefetched while the views are
/// built (the core then pipelines its own work over the batch).
const PREFETCH_AHEAD: usize = 4;

#[inline(always)]
fn buffer_ptr(start: *mut u8, index: u32) -> *mut vlib_buffer_t {
    start
        .wrapping_add((index as usize) << LOG2_CACHE_LINE)
        .cast::<vlib_buffer_t>()
}

/// Where the original Ethernet header starts relative to `data`, and its length.
#[inline(always)]
fn l2_of(flags: u32, cd: i16, l2: i16) -> Option<(isize, usize)> {
    if flags & (VNET_BUFFER_F_L2_HDR_OFFSET_VALID as u32) == 0 {
        return None;
    }
    let len = i32::from(cd) - i32::from(l2);
    (matches!(len, 14 | 18 | 22) && i32::from(l2) >= -(PRE_DATA as i32))
        .then_some((isize::from(l2), len as usize))
}

/// Processes one frame: `nexts[i]` and `verdicts[i]` receive buffer `i`'s next
/// node and verdict, and the buffers are rewritten for their next node. With
/// `traces`, `traces[i]` receives the record of buffer `i` when VPP traces it
/// (`VLIB_BUFFER_IS_TRACED`), and is left alone otherwise.
/// At most [`MAX_BATCH`] (`VLIB_FRAME_SIZE`) buffers are processed; the
/// result is the number processed.
///
/// # Safety
///
/// For every index in `bufs.indices`, `buffer_mem_start + (index << 6)` must be
/// a `vlib_buffer_t` that the caller owns exclusively for the duration of the
/// call, followed by `bufs.data_size` bytes of data (VPP's buffer pool
/// guarantees both for the buffers of a frame); no index may repeat.
#[allow(clippy::too_many_arguments)]
pub unsafe fn process_frame<const B: usize>(
    worker: &mut Worker<B>,
    svc: &Service,
    now_ns: u64,
    family: NodeFamily,
    bufs: FrameBuffers<'_>,
    nexts: &mut [u16],
    verdicts: &mut [Verdict],
    counts: &mut FrameCounts,
    mut traces: Option<&mut [TraceNote]>,
) -> usize {
    let n = bufs
        .indices
        .len()
        .min(nexts.len())
        .min(verdicts.len())
        .min(MAX_BATCH);
    let mut done = 0;
    while done < n {
        let m = (n - done).min(PIECE);
        // SAFETY: the buffers `done..done + m` are buffers of the frame (the
        // caller's contract covers all of them).
        unsafe {
            process_piece(
                worker,
                svc,
                now_ns,
                family,
                &bufs,
                done..done + m,
                &mut nexts[done..done + m],
                &mut verdicts[done..done + m],
                counts,
                traces.as_deref_mut().and_then(|t| t.get_mut(done..)),
            );
        }
        done += m;
    }
    n
}

/// Buffers mapped and processed together: the per-piece arrays are this
/// long, so that a small frame (VPP's vectors are often a few buffers) does
/// not pay for initialising [`MAX_BATCH`] views; the core pipelines its
/// work over chunks of this size anyway.
const PIECE: usize = marllb_core::pipeline::CHUNK;

/// [`process_frame`] for the buffers `range` of the frame (at most
/// [`PIECE`]); `nexts`, `verdicts` and `traces` start at `range.start`.
///
/// One pass maps the buffers onto the views the core takes, one pass turns
/// the verdicts into next nodes and buffer metadata. Trace records, rare, get
/// their own passes, so an untraced frame pays nothing for them.
///
/// # Safety
///
/// As [`process_frame`], for the buffers of `range`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn process_piece<const B: usize>(
    worker: &mut Worker<B>,
    svc: &Service,
    now_ns: u64,
    family: NodeFamily,
    bufs: &FrameBuffers<'_>,
    range: core::ops::Range<usize>,
    nexts: &mut [u16],
    verdicts: &mut [Verdict],
    counts: &mut FrameCounts,
    mut traces: Option<&mut [TraceNote]>,
) {
    let ahead_of = range.start;
    let Some(indices) = bufs.indices.get(range) else {
        return;
    };
    let n = indices
        .len()
        .min(PIECE)
        .min(nexts.len())
        .min(verdicts.len());
    let (indices, nexts, verdicts) = (&indices[..n], &mut nexts[..n], &mut verdicts[..n]);
    let start = bufs.buffer_mem_start;
    let span = PRE_DATA + bufs.data_size;
    // Only the piece's buffers get a view (a small frame does not pay for
    // `PIECE` of them). Per buffer beside it: where the frame started in the
    // view (to tell an in-place rewrite from an encapsulation) and the L2
    // header length in front of `current_data`, as `start << 8 | len`.
    let mut views: [MaybeUninit<Packet<'_>>; PIECE] = [const { MaybeUninit::uninit() }; PIECE];
    let mut shapes = [0u32; PIECE];
    for (i, ((&bi, slot), shape)) in indices
        .iter()
        .zip(views.iter_mut())
        .zip(shapes.iter_mut())
        .enumerate()
    {
        if let Some(&ahead) = bufs.indices.get(ahead_of + i + PREFETCH_AHEAD) {
            // The header and the start of the data (where the core reads the
            // headers and writes an encapsulation's last bytes): hints only,
            // through the address, no reference to the buffer.
            let b = buffer_ptr(start, ahead);
            prefetch::read(b);
            prefetch::read(b.cast::<u8>().wrapping_add(HEADER_SIZE));
        }
        let bp = buffer_ptr(start, bi);
        let m = meta(bp);
        // SAFETY: `bp` is a buffer of the frame, owned exclusively by the caller
        // (contract); plain reads through raw pointers, no reference is made.
        let (cd, len, l2) = unsafe {
            let cd = (*m).current_data;
            (
                cd,
                usize::from((*m).current_length),
                l2_of((*m).flags, cd, (*vnet(m)).l2_hdr_offset),
            )
        };
        // SAFETY: `pre_data` and `data` are contiguous (const-asserted layout);
        // the buffer has `data_size` bytes of data (contract) and is not
        // otherwise referenced while `pkts` lives.
        let view: &mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(bp.cast::<u8>().add(PRE_DATA_OFFSET), span) };
        let ip = PRE_DATA as isize + isize::from(cd);
        let (at, hl) = match l2 {
            Some((off, hl)) => ((PRE_DATA as isize + off) as usize, hl),
            None => {
                let s = ip - ETH_HLEN as isize;
                if s >= 0 && ip as usize <= span {
                    synth_ethernet(&mut view[s as usize..ip as usize], family);
                }
                (s.max(0) as usize, ETH_HLEN)
            }
        };
        let flen = hl + len;
        // Inconsistent metadata becomes an empty frame: the core drops it as
        // malformed instead of reading out of bounds.
        let pkt = if ip >= ETH_HLEN as isize && at + flen <= span {
            Packet::new(view, at, flen)
        } else {
            Packet::new(view, 0, 0)
        };
        slot.write(pkt);
        *shape = (at as u32) << 8 | hl as u32;
    }
    // SAFETY: the loop above wrote `views[..n]` (`indices` has `n` entries,
    // `n <= PIECE`); `Packet` has no drop glue, so the uninitialised rest
    // needs nothing.
    let pkts: &mut [Packet<'_>] =
        unsafe { core::slice::from_raw_parts_mut(views.as_mut_ptr().cast::<Packet<'_>>(), n) };
    if let Some(t) = traces.as_deref_mut() {
        // SAFETY: the buffers of the piece (contract); only their flags are read.
        unsafe { note_flows(start, indices, pkts, t) };
    }

    worker.process(svc, now_ns, pkts, verdicts);

    let l2_src = (svc.egress().src_mac == [0; 6]).then_some(bufs.macs);
    for ((((p, &v), next_out), &bi), &shape) in pkts
        .iter_mut()
        .zip(verdicts.iter())
        .zip(nexts.iter_mut())
        .zip(indices)
        .zip(&shapes)
    {
        let hl = (shape & 0xff) as usize;
        let (next, cur) = match v {
            Verdict::Forward { .. } if p.start == (shape >> 8) as usize => {
                counts.forwarded += 1;
                (Next::InterfaceOutput as u16, Some((p.start, p.len, true)))
            }
            Verdict::Forward { .. } => {
                counts.forwarded += 1;
                let et = p
                    .frame()
                    .get(12..14)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]));
                let next = if et == Some(0x86dd) {
                    Next::Ip6Lookup
                } else {
                    Next::Ip4Lookup
                };
                (
                    next as u16,
                    Some((p.start + ETH_HLEN, p.len.saturating_sub(ETH_HLEN), false)),
                )
            }
            Verdict::Reply => {
                counts.replies += 1;
                let next = match family {
                    NodeFamily::Ip4 => Next::Ip4Lookup,
                    NodeFamily::Ip6 => Next::Ip6Lookup,
                };
                (
                    next as u16,
                    Some((p.start + hl, p.len.saturating_sub(hl), false)),
                )
            }
            Verdict::Host => {
                counts.host += 1;
                (NEXT_FEATURE, None)
            }
            Verdict::Drop(r) => {
                if let Some(c) = counts.drops.get_mut(r as usize) {
                    *c += 1;
                }
                (Next::Drop as u16, None)
            }
        };
        *next_out = next;
        let Some((at, len, l2_out)) = cur else {
            continue;
        };
        let m = meta(buffer_ptr(start, bi));
        // SAFETY: a buffer of the frame owned by the caller; `pkts` (the only
        // other reference into it) is used for this buffer only through `p`,
        // which does not overlap the metadata, and the writes go through raw
        // pointers. `at` lies inside the view, so `at - PRE_DATA` fits `i16`
        // (>= -128, < data_size <= 65535 - 128) and `len` fits `u16`.
        unsafe {
            (*m).current_data = (at as isize - PRE_DATA as isize) as i16;
            (*m).current_length = len as u16;
            let vn = vnet(m);
            let tx = if l2_out {
                let rx = (*vn).sw_if_index[vlib_rx_or_tx_t_VLIB_RX as usize];
                // An L2 DSR frame leaves its input interface: with no
                // configured source MAC, that interface's own.
                if let (Some(mac), Some(src)) = (
                    l2_src.and_then(|m| m.get(rx)),
                    p.buf.get_mut(at + 6..at + 12),
                ) {
                    src.copy_from_slice(&mac);
                }
                rx
            } else {
                u32::MAX
            };
            (*vn).sw_if_index[vlib_rx_or_tx_t_VLIB_TX as usize] = tx;
        }
    }
    if let Some(t) = traces {
        // SAFETY: as above.
        unsafe { note_verdicts(svc, start, indices, nexts, verdicts, t) };
    }
}

/// Whether VPP traces buffer `bi`.
///
/// # Safety
///
/// `buffer_mem_start + (bi << 6)` is a `vlib_buffer_t`.
#[inline(always)]
unsafe fn is_traced(buffer_mem_start: *mut u8, bi: u32) -> bool {
    // SAFETY: a valid buffer (contract); only its flags are read.
    let flags = unsafe { (*meta(buffer_ptr(buffer_mem_start, bi))).flags };
    flags & VLIB_BUFFER_IS_TRACED != 0
}

/// The flow part of the trace record of each traced buffer, read before the
/// core rewrites it.
///
/// # Safety
///
/// Every index is a buffer as [`process_frame`] requires.
#[cold]
unsafe fn note_flows(
    buffer_mem_start: *mut u8,
    indices: &[u32],
    pkts: &[Packet<'_>],
    traces: &mut [TraceNote],
) {
    for ((&bi, p), t) in indices.iter().zip(pkts).zip(traces) {
        // SAFETY: a buffer of the frame (contract).
        if !unsafe { is_traced(buffer_mem_start, bi) } {
            continue;
        }
        *t = TraceNote::default();
        if let Ok(Frame::Ip(m)) = marllb_core::wire::parse::parse_frame(p.frame()) {
            t.parsed = true;
            t.v6 = m.family == IpFamily::V6;
            t.proto = m.proto;
            t.tcp_flags = m.tcp_flags;
            t.src = m.src;
            t.dst = m.dst;
            t.sport = m.sport;
            t.dport = m.dport;
        }
    }
}

/// The verdict part of the trace record of each traced buffer.
///
/// # Safety
///
/// Every index is a buffer as [`process_frame`] requires.
#[cold]
unsafe fn note_verdicts(
    svc: &Service,
    buffer_mem_start: *mut u8,
    indices: &[u32],
    nexts: &[u16],
    verdicts: &[Verdict],
    traces: &mut [TraceNote],
) {
    for (((&bi, &next), &v), t) in indices.iter().zip(nexts).zip(verdicts).zip(traces) {
        // SAFETY: a buffer of the frame (contract).
        if !unsafe { is_traced(buffer_mem_start, bi) } {
            continue;
        }
        t.next = next;
        t.verdict = match v {
            Verdict::Forward { backend } => {
                if let Some(b) = svc.backends().get(usize::from(backend)) {
                    t.backend_addr = b.addr;
                    t.backend_v6 = b.family == IpFamily::V6;
                }
                TraceVerdict::Forward(backend)
            }
            Verdict::Reply => TraceVerdict::Reply,
            Verdict::Host => TraceVerdict::Host,
            Verdict::Drop(r) => TraceVerdict::Drop(r),
        };
    }
}

/// A 14-byte Ethernet header with zero MACs and the node's EtherType.
fn synth_ethernet(h: &mut [u8], family: NodeFamily) {
    if let Some(h) = h.get_mut(..ETH_HLEN) {
        h[..12].fill(0);
        let et: u16 = match family {
            NodeFamily::Ip4 => 0x0800,
            NodeFamily::Ip6 => 0x86dd,
        };
        h[12..14].copy_from_slice(&et.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_of_forwards_and_replies_is_finished() {
        let mut c = FrameCounts {
            forwarded: 250,
            replies: 6,
            ..FrameCounts::default()
        };
        assert_eq!(c.unfinished(), 0);
        c.host = 2;
        assert_eq!(c.unfinished(), 2);
        c.drops[DropReason::NoVip as usize] = 3;
        c.drops[DropReason::TtlExpired as usize] = 1;
        assert_eq!(c.unfinished(), 6);
        c.host = 0;
        assert_eq!(c.unfinished(), 4);
    }
}
