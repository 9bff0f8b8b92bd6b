//! Flow-state sync between LB nodes: the placements a node's selection made,
//! so that another node the router moves a connection to sends it to the
//! same backend.
//!
//! # Why this mechanism
//!
//! Behind ECMP, a node that is removed, added or restarted moves some
//! connections to another node. That node finds no flow entry and places the
//! packet with the consistent (Maglev) table, which is the same on every node,
//! so a connection *placed* by Maglev survives; one placed by SED over the
//! controller's weights does not, because every node's agent has its own
//! weights. The alternatives: placement every node can recompute (only with
//! weights every node agrees on, which per-node agents do not have);
//! backend-assisted second chance (GLB, Beamer: needs an agent on every
//! backend); or telling the other nodes where each connection went, as IPVS's
//! sync daemon and conntrackd do. This module is the last, in the core, so
//! both hosts carry the same records and apply them the same way.
//!
//! # What is sent, and the bounds
//!
//! * A record ([`RecordKind::Opened`]) is made when a TCP connection's
//!   handshake completes on this node (the client's ACK after a SYN placed by
//!   selection): never for a SYN alone, so a flood of spoofed SYNs on one node
//!   sends nothing to the others. A second one ([`RecordKind::Closed`]) is
//!   made when such an established connection sees its first FIN or RST here:
//!   the peers' copies then close too, instead of lingering established for
//!   the whole idle timeout. Without it a copy outlives its connection, and
//!   when the client reuses the port for a new connection placed elsewhere
//!   the copy, being established, wins over the new record, and the new
//!   connection breaks when the router moves it (the port-reuse failure
//!   `tests/tests/lb_failover.rs` caught). Records leave the worker through
//!   a fixed buffer of [`SYNC_OUT`] entries; when the host does not drain it
//!   in time, records are dropped and counted (`GlobalCounters::sync_dropped`).
//! * A record names the backend by address (indices may differ between
//!   nodes while a backend set changes). The receiver inserts an established
//!   flow entry only into a free or expired way of the flow's first bucket,
//!   and never into its last one (a live local entry is never evicted or
//!   overwritten, and the node's own new flows always find a way, however
//!   many records its peers send), only for a VIP it serves and a backend it
//!   has up; anything else is refused and counted. A local closing entry on
//!   the same 5-tuple is replaced (the peer's connection is the newer one). A
//!   closed record closes only an established entry on the same backend.
//!   What a peer sends is bounded by the connections it established, not by
//!   the SYNs it saw.
//! * A node that starts again has none of its peers' connections: every
//!   datagram carries the sender's instance (chosen at its start), and a
//!   node that sees a new instance from a peer sends it the records of every
//!   established connection it holds ([`Worker::dump_sync`], a bounded number
//!   of buckets per call). Hosts send an empty datagram (a hello) every second
//!   so that a restarted peer is noticed without traffic.
//! * On the wire ([`encode`], [`decode`]): a 16-byte header (magic `MLBS`,
//!   version, count, the sender's hash-seed tag, its instance) and [`RECORD_LEN`]-byte
//!   records, at most [`MAX_RECORDS`] per datagram. A datagram with another
//!   magic, version or seed tag, a length that does not match its count, or
//!   an unknown family or kind byte, is refused whole. The kind byte was
//!   reserved (zero) before closed records existed, so an older sender's
//!   records read as opened ones and the wire version stays 1. The host
//!   accepts datagrams only from its configured peers.

use crate::classify::{match_vip, VipMatch};
use crate::flow::{FlowKey, FlowState, Lookup, NewEntry};
use crate::hash::flow_hash;
use crate::service::{AdminState, Service};
use crate::wire::meta::ip_proto;
use crate::wire::{IpFamily, PacketMeta};
use zerocopy::{FromZeros, TryFromBytes};

/// Records a worker holds until its host drains them.
pub const SYNC_OUT: usize = 128;
/// Bytes of one record on the wire.
pub const RECORD_LEN: usize = 56;
/// Bytes of a datagram's header.
pub const HEADER_LEN: usize = 16;
/// Records in one datagram (fits a 1500-byte MTU with IP and UDP headers).
pub const MAX_RECORDS: usize = 25;
/// `"MLBS"`.
pub const MAGIC: u32 = u32::from_be_bytes(*b"MLBS");
/// Wire version.
pub const VERSION: u8 = 1;

/// One connection placed by a node: its 5-tuple and its backend's address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromZeros)]
#[repr(C)]
pub struct SyncRecord {
    /// Flow source (the client).
    pub src: [u8; 16],
    /// Flow destination (the VIP).
    pub dst: [u8; 16],
    /// The backend's address.
    pub backend: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Family of `src` and `dst`.
    pub family: IpFamily,
    /// L4 protocol.
    pub proto: u8,
    /// Family of `backend`.
    pub backend_family: IpFamily,
    /// What happened to the connection on the sender.
    pub kind: RecordKind,
}

/// What a [`SyncRecord`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum RecordKind {
    /// The handshake completed (or, in a dump, the connection is established).
    #[default]
    Opened = 0,
    /// The established connection saw its first FIN or RST.
    Closed = 1,
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SyncError {
    /// Shorter than its header, or its length does not match its count.
    Length,
    /// Not a sync datagram.
    Magic,
    /// Another wire version.
    Version,
    /// Sent by a node with another hash seed (its flows hash differently).
    Seed,
    /// More records than [`MAX_RECORDS`].
    Count,
    /// A family byte is unknown.
    Family,
    /// A kind byte is unknown.
    Kind,
}

/// What [`apply`] did with records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries inserted (or closing local entries on the same 5-tuple
    /// replaced: the peer's connection is the newer one).
    pub inserted: u32,
    /// Already known here (a live local entry wins), or a closed record
    /// for a connection this node holds no established copy of.
    pub known: u32,
    /// Established entries closed by a peer's closed record.
    pub closed: u32,
    /// Refused: no VIP here, backend unknown or down, or no free way.
    pub refused: u32,
}

/// The tag of a hash seed carried in every datagram.
pub fn seed_tag(seed: u64) -> u32 {
    let x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 32) as u32 ^ x as u32
}

fn family_byte(f: IpFamily) -> u8 {
    f as u8
}

/// The value of a one-byte enum (`IpFamily`, `RecordKind`) read off the
/// wire, checked against its variants by zerocopy.
fn byte_enum<T: TryFromBytes>(b: u8) -> Option<T> {
    T::try_read_from_bytes(&[b]).ok()
}

/// Writes one datagram of up to [`MAX_RECORDS`] of `records` into `out`
/// (none: a hello, which tells the peers this sender's `instance`); returns
/// `(bytes written, records taken)`. `out` too short for the header writes
/// nothing.
pub fn encode(records: &[SyncRecord], seed: u64, instance: u32, out: &mut [u8]) -> (usize, usize) {
    if out.len() < HEADER_LEN {
        return (0, 0);
    }
    let fit = (out.len() - HEADER_LEN) / RECORD_LEN;
    let n = records.len().min(MAX_RECORDS).min(fit);
    out[..4].copy_from_slice(&MAGIC.to_be_bytes());
    out[4] = VERSION;
    out[5] = n as u8;
    out[6..8].copy_from_slice(&[0, 0]);
    out[8..12].copy_from_slice(&seed_tag(seed).to_be_bytes());
    out[12..16].copy_from_slice(&instance.to_be_bytes());
    for (r, chunk) in records[..n]
        .iter()
        .zip(out[HEADER_LEN..].chunks_exact_mut(RECORD_LEN))
    {
        chunk[0] = family_byte(r.family);
        chunk[1] = r.proto;
        chunk[2] = family_byte(r.backend_family);
        chunk[3] = r.kind as u8;
        chunk[4..6].copy_from_slice(&r.sport.to_be_bytes());
        chunk[6..8].copy_from_slice(&r.dport.to_be_bytes());
        chunk[8..24].copy_from_slice(&r.src);
        chunk[24..40].copy_from_slice(&r.dst);
        chunk[40..56].copy_from_slice(&r.backend);
    }
    (HEADER_LEN + n * RECORD_LEN, n)
}

/// A datagram read by [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Records written to the output.
    pub records: usize,
    /// The sender's instance (a new value: the peer started again, and has
    /// none of this node's connections).
    pub instance: u32,
}

/// Reads a datagram into `out`. Refused whole on any mismatch.
pub fn decode(buf: &[u8], seed: u64, out: &mut [SyncRecord]) -> Result<Datagram, SyncError> {
    let head = buf.get(..HEADER_LEN).ok_or(SyncError::Length)?;
    if head[..4] != MAGIC.to_be_bytes() {
        return Err(SyncError::Magic);
    }
    if head[4] != VERSION {
        return Err(SyncError::Version);
    }
    if head[8..12] != seed_tag(seed).to_be_bytes() {
        return Err(SyncError::Seed);
    }
    let n = usize::from(head[5]);
    if n > MAX_RECORDS {
        return Err(SyncError::Count);
    }
    if buf.len() != HEADER_LEN + n * RECORD_LEN {
        return Err(SyncError::Length);
    }
    let instance = u32::from_be_bytes([head[12], head[13], head[14], head[15]]);
    let n = n.min(out.len());
    let body = buf.get(HEADER_LEN..).unwrap_or_default();
    for (r, c) in out[..n].iter_mut().zip(body.chunks_exact(RECORD_LEN)) {
        let mut a = [0u8; 16];
        let mut take = |from: usize| {
            a.copy_from_slice(&c[from..from + 16]);
            a
        };
        *r = SyncRecord {
            family: byte_enum(c[0]).ok_or(SyncError::Family)?,
            proto: c[1],
            backend_family: byte_enum(c[2]).ok_or(SyncError::Family)?,
            kind: byte_enum(c[3]).ok_or(SyncError::Kind)?,
            sport: u16::from_be_bytes([c[4], c[5]]),
            dport: u16::from_be_bytes([c[6], c[7]]),
            src: take(8),
            dst: take(24),
            backend: take(40),
        };
    }
    Ok(Datagram {
        records: n,
        instance,
    })
}

/// The records a worker made since its host last drained them.
#[derive(FromZeros)]
#[repr(C)]
pub struct SyncOut {
    /// Make records (off by default: a host with peers turns it on).
    pub enabled: bool,
    n: u16,
    records: [SyncRecord; SYNC_OUT],
}

impl core::fmt::Debug for SyncOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SyncOut")
            .field("enabled", &self.enabled)
            .field("pending", &self.n)
            .finish()
    }
}

impl SyncOut {
    /// Records waiting.
    pub fn pending(&self) -> &[SyncRecord] {
        &self.records[..usize::from(self.n).min(SYNC_OUT)]
    }

    /// Forgets the records waiting (the host took them).
    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// Adds one; `false` (and nothing stored) when full.
    #[inline]
    pub fn push(&mut self, r: SyncRecord) -> bool {
        match self.records.get_mut(usize::from(self.n)) {
            Some(slot) => {
                *slot = r;
                self.n += 1;
                true
            }
            None => false,
        }
    }

    /// The record of a connection placed on `backend` (`m` its packet).
    #[inline]
    pub fn record(
        m: &PacketMeta,
        svc: &Service,
        backend: u16,
        kind: RecordKind,
    ) -> Option<SyncRecord> {
        let b = svc.backend(backend)?;
        Some(SyncRecord {
            src: m.src,
            dst: m.dst,
            backend: b.addr,
            sport: m.sport,
            dport: m.dport,
            family: m.family,
            proto: m.proto,
            backend_family: b.family,
            kind,
        })
    }
}

/// Applies `records` from a peer to `flows` (a worker's table): opened ones
/// become established entries, closed ones close them, as described in the
/// module docs.
pub fn apply<const B: usize>(
    flows: &mut crate::flow::FlowTable<B>,
    svc: &Service,
    now: u32,
    records: &[SyncRecord],
) -> Applied {
    let mut a = Applied::default();
    for r in records {
        if r.proto != ip_proto::TCP {
            a.refused += 1;
            continue;
        }
        let mut m = PacketMeta::new_zeroed();
        m.family = r.family;
        m.proto = r.proto;
        m.src = r.src;
        m.dst = r.dst;
        m.sport = r.sport;
        m.dport = r.dport;
        let VipMatch::Vip(vip) = match_vip(svc.vip_list(), &m) else {
            a.refused += 1;
            continue;
        };
        let backend = svc.vip(vip).and_then(|vs| {
            vs.members().iter().copied().find(|&i| {
                svc.backend(i).is_some_and(|b| {
                    b.family == r.backend_family
                        && b.addr == r.backend
                        && b.admin != AdminState::Down
                })
            })
        });
        let Some(backend) = backend else {
            a.refused += 1;
            continue;
        };
        let key = FlowKey::from_meta(&m);
        let hash = flow_hash(&key, svc.hash_seed);
        let found = flows.lookup(&key, hash, vip, now, svc.timeouts());
        if r.kind == RecordKind::Closed {
            match found {
                // The peer saw the connection end: this copy (or the local
                // entry, if the router moved the connection meanwhile) lingers
                // only as long as a closing entry does.
                Lookup::Hit(slot, e)
                    if e.state == FlowState::TcpEstablished && e.backend == backend =>
                {
                    flows.set_state(slot, FlowState::TcpClosing);
                    a.closed += 1;
                }
                _ => a.known += 1,
            }
            continue;
        }
        match found {
            // A closing local entry is a connection that ended here; a peer's
            // established one on the same 5-tuple (the client reused the port)
            // supersedes it, as a SYN on a closing entry does in the pipeline.
            // Otherwise the old backend would take the new connection's
            // packets when the router moves it here.
            Lookup::Hit(slot, e) if e.state == FlowState::TcpClosing => {
                flows.restart(slot, now, backend, FlowState::TcpEstablished);
                a.inserted += 1;
            }
            Lookup::Hit(..) => a.known += 1,
            // A peer's record never takes the last free way of a bucket: the
            // node's own new flows always find room, however many records
            // its peers send.
            Lookup::Miss(_) if flows.room(hash, now, svc.timeouts()) < 2 => a.refused += 1,
            Lookup::Miss(_) => {
                let new = NewEntry {
                    hash,
                    vip,
                    now,
                    timeouts: svc.timeouts(),
                    backend,
                    state: FlowState::TcpEstablished,
                };
                match flows.insert(&key, new) {
                    Ok(_) => a.inserted += 1,
                    Err(_) => a.refused += 1,
                }
            }
        }
    }
    a
}
