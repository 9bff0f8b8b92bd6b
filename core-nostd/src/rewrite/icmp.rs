//! ICMP errors for packets too big for the backend link: ICMPv4 "fragmentation
//! needed" (RFC 792, RFC 1191) and ICMPv6 "packet too big" (RFC 4443, RFC 8201),
//! built in place from the VIP back to the client (policy in the module docs of
//! [`super`]).
//!
//! Layout: the original L2 header (Ethernet + VLAN tags) is copied 28 / 48 bytes
//! towards the buffer start, the new IP and ICMP headers fill the gap up to the
//! original IP header, and the original IP packet, cut to the size limit, is the
//! quoted payload. Only the L2 header is moved; the payload is read once, for the
//! ICMP checksum.

use super::{Checked, Egress, RewriteError, Rewritten, IPV4_HLEN, IPV6_HLEN};
use crate::wire::checksum;
use crate::wire::ethernet::field as ethf;
use crate::wire::icmpv4::{self, field as icmp4f};
use crate::wire::icmpv6::{self, field as icmp6f};
use crate::wire::ipv4::{self, field as v4f};
use crate::wire::ipv6::field as v6f;
use crate::wire::meta::ip_proto;
use crate::wire::{IpFamily, PacketMeta};

/// New IPv4 + ICMPv4 header bytes in front of the quoted packet.
const V4_EXTRA: usize = IPV4_HLEN + icmpv4::HEADER_LEN;
/// New IPv6 + ICMPv6 header bytes in front of the quoted packet.
const V6_EXTRA: usize = IPV6_HLEN + icmpv6::HEADER_LEN;
/// Largest ICMPv4 error (RFC 1812 4.3.2.3).
const V4_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443 2.4(c)): the IPv6 minimum MTU.
const V6_MAX: usize = 1280;
/// TTL / hop limit of the error.
const REPLY_TTL: u8 = 64;
/// IPv4 TOS of the error: precedence 6, "internetwork control" (RFC 1812 4.3.2.5).
const V4_TOS: u8 = 0xc0;

/// Handles a packet that is too big for the backend link once `ovh` bytes of
/// encapsulation are added: an ICMP error back to the client, or a counted drop.
/// Checks everything before the first write.
#[cold]
#[inline(never)]
pub(super) fn too_big(
    buf: &mut [u8],
    c: &Checked,
    meta: &PacketMeta,
    egress: &Egress,
    ovh: usize,
    flow_hash: u64,
) -> Result<Rewritten, RewriteError> {
    if !c.df {
        return Err(RewriteError::TooBigNoDf);
    }
    if is_icmp_error(buf, c, meta) {
        return Err(RewriteError::TooBigIcmpError);
    }
    if !may_reply(buf, c, meta) {
        return Err(RewriteError::TooBigNoReply);
    }
    let path_mtu = usize::from(egress.mtu).saturating_sub(ovh);
    match c.family {
        IpFamily::V4 => {
            // `path_mtu` <= `egress.mtu`, a u16.
            let mut rest = [0u8; 4];
            const MTU: usize = icmp4f::NEXT_HOP_MTU - icmp4f::REST.start;
            rest[MTU..].copy_from_slice(&(path_mtu as u16).to_be_bytes());
            let new_start = c
                .start
                .checked_sub(V4_EXTRA)
                .ok_or(RewriteError::NoHeadroom)?;
            let quoted = c.l3_len.min(V4_MAX - V4_EXTRA);
            let (l2, frame) = open_reply(buf, c, new_start, V4_EXTRA + quoted, egress);
            let (ip, icmp) = frame[l2..].split_at_mut(IPV4_HLEN);
            ip[v4f::VER_IHL] = 0x40 | (IPV4_HLEN / 4) as u8;
            ip[v4f::DSCP_ECN] = V4_TOS;
            // At most 576.
            ip[v4f::LENGTH..v4f::LENGTH + 2]
                .copy_from_slice(&((V4_EXTRA + quoted) as u16).to_be_bytes());
            ip[v4f::IDENT..v4f::IDENT + 2].copy_from_slice(&(flow_hash as u16).to_be_bytes());
            ip[v4f::FLG_OFF] = 0;
            ip[v4f::FLG_OFF + 1] = 0;
            ip[v4f::TTL] = REPLY_TTL;
            ip[v4f::PROTOCOL] = ip_proto::ICMP;
            ip[v4f::CHECKSUM] = 0;
            ip[v4f::CHECKSUM + 1] = 0;
            ip[v4f::SRC].copy_from_slice(&meta.dst[..4]);
            ip[v4f::DST].copy_from_slice(&meta.src[..4]);
            let csum = checksum::checksum(ip);
            ip[v4f::CHECKSUM..v4f::CHECKSUM + 2].copy_from_slice(&csum.to_be_bytes());
            // Destination unreachable, fragmentation needed and DF set.
            icmp[icmp4f::TYPE] = icmpv4::msg_type::DEST_UNREACHABLE;
            icmp[icmp4f::CODE] = icmpv4::CODE_FRAG_NEEDED;
            icmp[icmp4f::CHECKSUM] = 0;
            icmp[icmp4f::CHECKSUM + 1] = 0;
            icmp[icmp4f::REST].copy_from_slice(&rest);
            let csum = checksum::checksum(icmp);
            icmp[icmp4f::CHECKSUM..icmp4f::CHECKSUM + 2].copy_from_slice(&csum.to_be_bytes());
            Ok(Rewritten::Reply {
                start: new_start,
                len: frame.len(),
            })
        }
        IpFamily::V6 => {
            // IPv6 links carry at least 1280 bytes; a smaller value is never announced.
            let mtu = path_mtu.max(V6_MAX) as u32;
            let new_start = c
                .start
                .checked_sub(V6_EXTRA)
                .ok_or(RewriteError::NoHeadroom)?;
            let quoted = c.l3_len.min(V6_MAX - V6_EXTRA);
            let icmp_len = icmpv6::HEADER_LEN + quoted;
            let (l2, frame) = open_reply(buf, c, new_start, V6_EXTRA + quoted, egress);
            let (ip, icmp) = frame[l2..].split_at_mut(IPV6_HLEN);
            ip[v6f::VER_TC_FLOW..v6f::LENGTH].copy_from_slice(&(6u32 << 28).to_be_bytes());
            // At most 1240.
            ip[v6f::LENGTH..v6f::LENGTH + 2].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            ip[v6f::NXT_HDR] = ip_proto::ICMPV6;
            ip[v6f::HOP_LIMIT] = REPLY_TTL;
            ip[v6f::SRC].copy_from_slice(&meta.dst);
            ip[v6f::DST].copy_from_slice(&meta.src);
            icmp[icmp6f::TYPE] = icmpv6::msg_type::PACKET_TOO_BIG;
            icmp[icmp6f::CODE] = 0;
            icmp[icmp6f::CHECKSUM] = 0;
            icmp[icmp6f::CHECKSUM + 1] = 0;
            icmp[icmp6f::MTU..icmp6f::MTU + 4].copy_from_slice(&mtu.to_be_bytes());
            let pseudo =
                checksum::pseudo_header_v6(&meta.dst, &meta.src, ip_proto::ICMPV6, icmp_len as u32);
            let csum = !checksum::fold(checksum::sum(pseudo, icmp));
            icmp[icmp6f::CHECKSUM..icmp6f::CHECKSUM + 2].copy_from_slice(&csum.to_be_bytes());
            Ok(Rewritten::Reply {
                start: new_start,
                len: frame.len(),
            })
        }
    }
}

/// Moves the L2 header to `new_start`, turns its MAC addresses around and returns
/// the L2 header length and the reply frame of `l2 + body_len` bytes, whose body
/// ends with the quoted packet. Requires `new_start + body_len - quoted == c.l3 - l2`,
/// which the callers' `EXTRA` constants guarantee.
fn open_reply<'b>(
    buf: &'b mut [u8],
    c: &Checked,
    new_start: usize,
    body_len: usize,
    egress: &Egress,
) -> (usize, &'b mut [u8]) {
    let l2 = c.l3 - c.start;
    let mut client_side_mac = [0u8; 6];
    client_side_mac.copy_from_slice(&buf[c.start + ethf::SRC.start..c.start + ethf::SRC.end]);
    buf.copy_within(c.start..c.l3, new_start);
    let frame = &mut buf[new_start..new_start + l2 + body_len];
    frame[ethf::DST].copy_from_slice(&client_side_mac);
    frame[ethf::SRC].copy_from_slice(&egress.src_mac);
    (l2, frame)
}

/// The packet is an ICMP error (or might be one: when in doubt, no reply).
fn is_icmp_error(buf: &[u8], c: &Checked, meta: &PacketMeta) -> bool {
    if meta.icmp_error {
        return true;
    }
    let ip = &buf[c.l3..c.l3 + c.l3_len];
    match c.family {
        IpFamily::V4 => {
            if ip[v4f::PROTOCOL] != ip_proto::ICMP {
                return false;
            }
            let ihl = usize::from(ip[v4f::VER_IHL] & 0x0f) * 4;
            match ip.get(ihl + icmp4f::TYPE) {
                Some(&t) => !icmpv4::is_query_type(t),
                None => true,
            }
        }
        IpFamily::V6 => {
            let ty = if ip[v6f::NXT_HDR] == ip_proto::ICMPV6 {
                ip.get(IPV6_HLEN + icmp6f::TYPE)
            } else if meta.proto == ip_proto::ICMPV6 {
                usize::from(meta.l4_offset)
                    .checked_sub(c.l3 - c.start)
                    .filter(|&o| o >= IPV6_HLEN)
                    .and_then(|o| ip.get(o))
            } else {
                return false;
            };
            // ICMPv6 types below 128 are errors (RFC 4443 2.1).
            ty.is_none_or(|&t| t < 128)
        }
    }
}

/// An ICMP error may be sent about this packet: it is not a non-initial IPv4
/// fragment (RFC 1122 3.2.2) and its source is a unicast host (RFC 1812 4.3.2.7,
/// RFC 4443 2.4(e)).
fn may_reply(buf: &[u8], c: &Checked, meta: &PacketMeta) -> bool {
    let s = &meta.src;
    match c.family {
        IpFamily::V4 => {
            let frag_off =
                u16::from_be_bytes([buf[c.l3 + v4f::FLG_OFF], buf[c.l3 + v4f::FLG_OFF + 1]])
                    & ipv4::OFFSET_MASK;
            frag_off == 0 && s[0] != 0 && s[0] != 127 && s[0] < 224
        }
        IpFamily::V6 => {
            let unspecified = s.iter().all(|&b| b == 0);
            let loopback = s[..15].iter().all(|&b| b == 0) && s[15] == 1;
            !unspecified && !loopback && s[0] != 0xff
        }
    }
}
