//! Rewrite a parsed client-to-VIP frame, in place, into the frame that goes to the
//! chosen backend: L2 direct server return (`L2Dsr`), IP-in-IP (`IpIp`) or GRE (`Gre`).
//!
//! # Buffer contract
//!
//! [`rewrite`] works on a packet buffer with headroom, like a DPDK mbuf or a VPP
//! buffer: `buf` is the whole buffer, the frame is `buf[start..start + len]` and the
//! `start` bytes before it are headroom. `meta` is the parser's summary of that frame.
//! On success the function returns where the new frame lies in `buf`; it is always
//! inside `buf[start - MAX_HEADROOM ..start + len]`, never past the end of the original
//! frame, so no tailroom is needed. The packet payload is never copied: encapsulation
//! writes the new headers into the headroom in front of the inner IP header, L2 DSR
//! rewrites the MAC addresses in place.
//!
//! Every check happens before the first write: when [`rewrite`] returns an error the
//! buffer is unchanged. No input (inconsistent `start`/`len`/`meta`, random bytes)
//! makes it panic or write outside the old and the new frame.
//!
//! # The load balancer is an IP hop
//!
//! The inner TTL / hop limit is decremented (IPv4 header checksum updated
//! incrementally, RFC 1624). Packets that arrive with TTL <= 1 are dropped by the
//! classifier; should one get here, [`RewriteError::TtlExpired`] is returned instead
//! of wrapping the TTL.
//!
//! # MTU policy
//!
//! `Egress::mtu` is the largest IP packet the backend link carries. When the packet
//! after encapsulation (for L2 DSR: the packet itself) would be larger:
//!
//! * IPv4 with DF set, and IPv6: the buffer is turned, in place, into an ICMP error
//!   back to the client — ICMPv4 "fragmentation needed" (type 3 code 4) carrying
//!   `mtu - overhead`, or ICMPv6 "packet too big" (type 2) carrying
//!   `max(mtu - overhead, 1280)` — from the VIP to the client, so that the client's path
//!   MTU discovery lowers its segment size. The reply quotes as much of the original
//!   packet as fits in 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280 bytes (IPv6,
//!   RFC 4443 2.4(c)) and is returned as [`Rewritten::Reply`].
//! * IPv4 without DF: [`RewriteError::TooBigNoDf`]. The sender allows fragmentation,
//!   but we do not fragment: fragmenting the outer packet would make the backend
//!   reassemble at line rate, and fragmenting the inner one costs a payload copy per
//!   fragment on the fast path. Such flows are rare (PMTUD-less senders of big
//!   datagrams) and show up as a drop counter.
//! * No ICMP error is ever sent about an ICMP error ([`RewriteError::TooBigIcmpError`],
//!   RFC 1122 3.2.2, RFC 4443 2.4(e)), nor (IPv4) about a non-initial fragment or to a
//!   source that is not a unicast host ([`RewriteError::TooBigNoReply`]).
//!
//! The reply goes out on the link the packet came from: destination MAC = the frame's
//! source MAC (the upstream router), source MAC = `Egress::src_mac`, VLAN tags kept.
//! It needs 28 (IPv4) or 48 (IPv6) bytes of headroom; without it,
//! [`RewriteError::NoHeadroom`].

mod dsr;
mod hop;
mod icmp;
mod tunnel;

pub use tunnel::TunnelV4;

#[cfg(test)]
mod tests;

use crate::wire::ipv4::{self, field as v4f};
use crate::wire::ipv6::{self, field as v6f};
use crate::wire::{ethernet, IpFamily, PacketMeta};

/// Length of an Ethernet II header without VLAN tags.
pub const ETH_HLEN: usize = ethernet::HEADER_LEN;
const IPV4_HLEN: usize = ipv4::HEADER_LEN;
const IPV6_HLEN: usize = ipv6::HEADER_LEN;
/// A GRE header without checksum, key or sequence number (RFC 2784): flags and
/// version, then the protocol type. Only the rewrite writes one.
const GRE_HLEN: usize = 4;

/// Headroom in front of the frame that is enough for every rewrite (an IPv6 ICMP
/// error needs 48 bytes; encapsulation needs at most 14 + 44 - 14 = 44).
pub const MAX_HEADROOM: usize = 48;

/// How a packet reaches its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, zerocopy::FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Encap {
    /// Direct server return on the same L2 segment: only the MAC addresses change; the
    /// backend has the VIP on a loopback interface.
    #[default]
    L2Dsr = 0,
    /// IP-in-IP (RFC 2003 / RFC 2473): outer protocol 4 (inner IPv4) or 41 (inner IPv6).
    IpIp = 1,
    /// GRE (RFC 2784) without checksum, key or sequence number.
    Gre = 2,
}

/// The backend a packet goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(C)]
pub struct Target {
    /// Encapsulation towards this backend.
    pub encap: Encap,
    /// MAC address of the backend (L2 DSR) or of the next hop towards it (tunnels).
    pub dst_mac: [u8; 6],
    /// Family of the outer IP header (tunnels only; ignored for L2 DSR).
    pub family: IpFamily,
    /// Backend address, the outer destination; IPv4 uses `addr[..4]`.
    pub addr: [u8; 16],
}

/// Our side of the backend link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, zerocopy::FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(C)]
pub struct Egress {
    /// Source MAC address of frames we send.
    pub src_mac: [u8; 6],
    /// Outer IPv4 source address.
    pub src_v4: [u8; 4],
    /// Outer IPv6 source address.
    pub src_v6: [u8; 16],
    /// Largest IP packet (header included) the backend link carries.
    pub mtu: u16,
}

/// Where the rewritten frame lies in the buffer, and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Rewritten {
    /// Send `buf[start..start + len]` to the backend.
    Forward {
        /// Offset of the new frame in the buffer.
        start: usize,
        /// Length of the new frame.
        len: usize,
    },
    /// Send `buf[start..start + len]`, an ICMP error, back out towards the client.
    Reply {
        /// Offset of the new frame in the buffer.
        start: usize,
        /// Length of the new frame.
        len: usize,
    },
}

impl Rewritten {
    /// The new frame's offset and length, whichever way it goes.
    #[inline]
    pub const fn frame(self) -> (usize, usize) {
        match self {
            Rewritten::Forward { start, len } | Rewritten::Reply { start, len } => (start, len),
        }
    }
}

/// Why a packet could not be rewritten. Each variant is a drop counter; the
/// discriminant is the counter's index (see [`RewriteError::ALL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum RewriteError {
    /// `start`/`len`/`meta` do not describe an IP packet inside `buf`.
    Malformed = 0,
    /// TTL / hop limit <= 1: forwarding would take it to zero.
    TtlExpired = 1,
    /// Not enough headroom in front of the frame for the new headers.
    NoHeadroom = 2,
    /// Too big for the backend link, IPv4 without DF: we do not fragment.
    TooBigNoDf = 3,
    /// Too big, and the packet is itself an ICMP error: no error about an error.
    TooBigIcmpError = 4,
    /// Too big, and no ICMP error may be sent (non-initial IPv4 fragment, or the
    /// source is not a unicast host).
    TooBigNoReply = 5,
}

impl RewriteError {
    /// Number of variants (size of a drop-counter array).
    pub const COUNT: usize = 6;
    /// Every variant, in discriminant order.
    pub const ALL: [RewriteError; Self::COUNT] = [
        RewriteError::Malformed,
        RewriteError::TtlExpired,
        RewriteError::NoHeadroom,
        RewriteError::TooBigNoDf,
        RewriteError::TooBigIcmpError,
        RewriteError::TooBigNoReply,
    ];
}

/// Bytes that `encap` with an `outer` IP header adds in front of the IP packet.
#[inline]
pub const fn overhead(encap: Encap, outer: IpFamily) -> usize {
    let ip = match outer {
        IpFamily::V4 => IPV4_HLEN,
        IpFamily::V6 => IPV6_HLEN,
    };
    match encap {
        Encap::L2Dsr => 0,
        Encap::IpIp => ip,
        Encap::Gre => ip + GRE_HLEN,
    }
}

/// A frame checked against `buf` and `meta`: every offset below is in bounds.
#[derive(Clone, Copy, Debug)]
struct Checked {
    /// Frame start in `buf`.
    start: usize,
    /// Absolute offset of the IP header in `buf`.
    l3: usize,
    /// Length of the IP packet (without Ethernet padding).
    l3_len: usize,
    /// Family of the (inner) IP packet.
    family: IpFamily,
    /// The sender forbids fragmentation (always true for IPv6).
    df: bool,
}

/// Checks that `start`, `len` and `meta` describe an IP packet of `meta.family` that
/// lies inside `buf`, with a header length and total length that agree with the
/// bytes, so that every later fixed-offset access is in bounds.
#[inline(always)]
fn check(buf: &[u8], start: usize, len: usize, meta: &PacketMeta) -> Result<Checked, RewriteError> {
    let end = start.checked_add(len).ok_or(RewriteError::Malformed)?;
    if end > buf.len() {
        return Err(RewriteError::Malformed);
    }
    let l3_off = usize::from(meta.l3_offset);
    let l3_len = usize::from(meta.l3_len);
    // Both are u16, so the sum cannot overflow.
    if l3_off < ETH_HLEN || l3_off + l3_len > len {
        return Err(RewriteError::Malformed);
    }
    let l3 = start + l3_off;
    let ip = &buf[l3..l3 + l3_len];
    match meta.family {
        IpFamily::V4 => {
            if l3_len < IPV4_HLEN
                || ip[v4f::VER_IHL] >> 4 != 4
                || usize::from(ip[v4f::VER_IHL] & 0x0f) * 4 < IPV4_HLEN
                || usize::from(ip[v4f::VER_IHL] & 0x0f) * 4 > l3_len
                || usize::from(u16::from_be_bytes([ip[v4f::LENGTH], ip[v4f::LENGTH + 1]])) != l3_len
            {
                return Err(RewriteError::Malformed);
            }
        }
        IpFamily::V6 => {
            if l3_len < IPV6_HLEN
                || ip[v6f::VER_TC_FLOW] >> 4 != 6
                || usize::from(u16::from_be_bytes([ip[v6f::LENGTH], ip[v6f::LENGTH + 1]]))
                    + IPV6_HLEN
                    != l3_len
            {
                return Err(RewriteError::Malformed);
            }
        }
    }
    Ok(Checked {
        start,
        l3,
        l3_len,
        family: meta.family,
        df: meta.dont_fragment || meta.family == IpFamily::V6,
    })
}

/// Rewrites the frame `buf[start..start + len]`, described by `meta`, for `target`.
///
/// `flow_hash` is the flow's hash; its low bits become the outer IPv4 identification
/// and IPv6 flow label (RFC 6438), so that the network spreads tunnels like flows.
///
/// Returns where the new frame lies (see the module docs for the buffer contract and
/// the MTU policy). On error the buffer is unchanged.
#[inline(always)]
pub fn rewrite(
    buf: &mut [u8],
    start: usize,
    len: usize,
    meta: &PacketMeta,
    target: &Target,
    egress: &Egress,
    flow_hash: u64,
) -> Result<Rewritten, RewriteError> {
    let c = check(buf, start, len, meta)?;
    if !hop::ttl_ok(buf, &c) {
        return Err(RewriteError::TtlExpired);
    }
    match forward(buf, &c, target, egress, flow_hash) {
        Some(r) => r,
        None => {
            let ovh = overhead(target.encap, target.family);
            icmp::too_big(buf, &c, meta, egress, ovh, flow_hash)
        }
    }
}

/// The forwarding half of [`rewrite`] on a checked frame whose TTL is above 1;
/// `None` when the packet is too big for the backend link (nothing written).
#[inline(always)]
fn forward(
    buf: &mut [u8],
    c: &Checked,
    target: &Target,
    egress: &Egress,
    flow_hash: u64,
) -> Option<Result<Rewritten, RewriteError>> {
    let ovh = overhead(target.encap, target.family);
    if c.l3_len + ovh > usize::from(egress.mtu) {
        return None;
    }
    Some(match target.encap {
        Encap::L2Dsr => {
            hop::decrement_ttl(buf, c);
            Ok(dsr::rewrite(buf, c, target, egress))
        }
        Encap::IpIp | Encap::Gre => {
            // Check the headroom before the first write.
            tunnel::new_start(c, ovh).and_then(|new_start| {
                hop::decrement_ttl(buf, c);
                tunnel::encap(buf, c, new_start, target, egress, flow_hash)
            })
        }
    })
}

/// The fast IPv4 tunnels' windows ([`encap_v4_fast`]'s `W`): from the new
/// frame start to the end of the inner IPv4 header, for IP-in-IP and for GRE.
pub(crate) const IPIP_V4_WINDOW: usize = ETH_HLEN + 2 * IPV4_HLEN;
/// See [`IPIP_V4_WINDOW`].
pub(crate) const GRE_V4_WINDOW: usize = ETH_HLEN + 2 * IPV4_HLEN + GRE_HLEN;

/// [`forward_fast_v4`] of IP-in-IP (`W` = [`IPIP_V4_WINDOW`]) or GRE
/// ([`GRE_V4_WINDOW`]) over IPv4, for a caller that has tested which: the
/// backend's template tunnel through its one window.
pub(crate) use tunnel::encap_v4_fast;

/// [`rewrite`] for the pipeline's fast path: an IPv4 packet without options
/// whose IP header starts at `l3` in `buf`, frame at `start`, IP length
/// `l3_len`, TTL above 1, all proved by the fast parser, DF `df` (the header's
/// [`FLAG_DF`](crate::wire::ipv4::FLAG_DF) bit, in place), so [`check`] is not
/// repeated (the few comparisons below only keep a wrong caller from indexing
/// out of bounds), toward the backend `family`/`addr` behind `dst_mac` (read
/// in place: no [`Target`] is built), whose IPv4 tunnel headers from `egress`
/// are `tunnel`. Gives exactly what [`rewrite`] gives for
/// such a packet, or `None`, with the buffer unchanged, when the packet is
/// too big for the link (the ICMP reply needs the full metadata: the caller
/// takes the general path).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_fast_v4(
    buf: &mut [u8],
    start: usize,
    l3: usize,
    l3_len: usize,
    df: u32,
    encap: Encap,
    family: IpFamily,
    dst_mac: &[u8; 6],
    addr: &[u8; 16],
    tunnel: &TunnelV4,
    egress: &Egress,
    flow_hash: u64,
) -> Option<Result<Rewritten, RewriteError>> {
    let mtu = egress.mtu;
    // The IPv4 tunnels touch only their window, which they check; the other
    // rewrites index the whole packet. IP-in-IP over IPv4 is tested first:
    // the common case in two compares.
    if family == IpFamily::V4 && encap == Encap::IpIp {
        return tunnel::encap_v4_fast::<IPIP_V4_WINDOW>(
            buf, l3, l3_len, df, tunnel, mtu, flow_hash,
        );
    }
    match (encap, family) {
        (Encap::Gre, IpFamily::V4) => {
            tunnel::encap_v4_fast::<GRE_V4_WINDOW>(buf, l3, l3_len, df, tunnel, mtu, flow_hash)
        }
        _ => {
            let end = l3.checked_add(l3_len)?;
            if end > buf.len() || l3_len < IPV4_HLEN || l3 < start.checked_add(ETH_HLEN)? {
                return None;
            }
            let c = Checked {
                start,
                l3,
                l3_len,
                family: IpFamily::V4,
                df: df != 0,
            };
            let target = Target {
                encap,
                dst_mac: *dst_mac,
                family,
                addr: *addr,
            };
            forward(buf, &c, &target, egress, flow_hash)
        }
    }
}
