//! The hot-path frame parser: one pass over Ethernet, up to two VLAN tags, IPv4 or
//! IPv6 (with extension headers) and the first bytes of TCP, UDP or ICMP, filling a
//! [`PacketMeta`] as documented in [`crate::wire::meta`].
//!
//! Contract:
//! - never panics and never allocates, for any input;
//! - reads only the header bytes it needs, at fixed offsets, in place; the only
//!   copy is into the returned `PacketMeta`;
//! - verifies no checksum (use [`verify_l3_checksum`] / [`verify_l4_checksum`]);
//! - bounds everything after the IP header by the length the IP header declares,
//!   so Ethernet padding is never read as payload.
//!
//! Rules beyond `meta.rs`:
//! - more than two VLAN tags is [`Error::Malformed`]`(Vlan)`;
//! - IPv6: at most [`MAX_IPV6_EXT_HEADERS`] extension headers (hop-by-hop,
//!   routing, fragment, destination options), hop-by-hop only first, one fragment
//!   header; `dont_fragment` is always true;
//! - a non-first fragment has `l4_offset = 0` and no ports; `proto` is the IPv4
//!   protocol or the fragment header's next header;
//! - ICMP echo request/reply (v4 and v6): `icmp_type` is set and the echo
//!   identifier is put in `sport` (`dport = 0`), so pings spread over backends per
//!   session; other non-error ICMP messages have both ports 0;
//! - ICMP errors (v4 types 3, 4, 5, 11, 12; v6 types 1..=4): the embedded IP header
//!   must be of the same family as the outer one and complete, and for TCP, UDP and
//!   ICMP its first 8 L4 bytes must be present, else [`Error::Truncated`] or
//!   [`Error::Malformed`] with [`Layer::IcmpEmbedded`]. The flow is the embedded
//!   one with addresses and ports swapped; an embedded echo keeps its identifier in
//!   `sport`; an embedded ICMP error is `Malformed`. `tcp_flags` and `icmp_type`
//!   stay 0; `l4_offset` points at the outer ICMP header;
//! - other L4 protocols (GRE, ESP, SCTP, ...) and ICMP of the wrong family: `proto`
//!   set, ports 0.

use super::ethernet::{self, ether_type};
use super::meta::{ip_proto, FragInfo, Frame, FrameKind, IpFamily, PacketMeta};
use super::{be16, be32, checksum, icmpv4, icmpv6, ipv4, ipv6, ipv6_ext, tcp, udp, vlan};
use super::{Error, Layer, Result};
use super::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

// Every offset and length below is the wire view's own (`field` in each file).
use ipv4::field as v4f;
use ipv6::field as v6f;
use ipv6_ext::field as extf;
use tcp::field as tcpf;
use udp::field as udpf;

/// Most IPv6 extension headers the parser walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

const VLAN_TAG_LEN: usize = vlan::HEADER_LEN;
const IPV4_MIN: usize = ipv4::HEADER_LEN;
const IPV6_LEN: usize = ipv6::HEADER_LEN;
const TCP_MIN: usize = tcp::HEADER_LEN;
const UDP_LEN: usize = udp::HEADER_LEN;
/// ICMPv4 and ICMPv6 share the header length (type, code, checksum, one word).
const ICMP_LEN: usize = icmpv4::HEADER_LEN;
const _: () = assert!(icmpv4::HEADER_LEN == icmpv6::HEADER_LEN);
/// Bytes of the offending packet's L4 header an ICMP error must carry.
const EMBEDDED_L4: usize = 8;
// Shared layouts the parser relies on: TCP and UDP ports, ICMPv4 and ICMPv6
// type and echo identifier.
const _: () = assert!(tcpf::SRC_PORT == udpf::SRC_PORT && tcpf::DST_PORT == udpf::DST_PORT);
const _: () = assert!(
    icmpv4::field::TYPE == icmpv6::field::TYPE
        && icmpv4::field::ECHO_IDENT == icmpv6::field::ECHO_IDENT
);

/// Parses one Ethernet frame into a [`Frame`].
///
/// See the module docs for the rules; errors name the layer where parsing stopped.
#[inline(always)]
pub fn parse_frame(frame: &[u8]) -> Result<Frame> {
    let mut meta = PacketMeta::default();
    match parse_into(frame, &mut meta)? {
        FrameKind::Ip => Ok(Frame::Ip(meta)),
        FrameKind::Arp => Ok(Frame::Arp),
        FrameKind::Other(t) => Ok(Frame::Other(t)),
    }
}

/// Like [`parse_frame`], but writes the metadata of an IP packet into `meta` in
/// place (every field is overwritten; on error or a non-IP frame its contents are
/// unspecified). The batch pipeline uses this to parse straight into its
/// per-chunk scratch array.
#[inline(always)]
pub fn parse_into(frame: &[u8], meta: &mut PacketMeta) -> Result<FrameKind> {
    if frame.len() < ethernet::HEADER_LEN {
        return Err(Error::Truncated(Layer::Ethernet));
    }
    let mut ethertype = be16(frame, ethernet::field::ETHERTYPE);
    let mut l3 = ethernet::HEADER_LEN;
    let mut tags = 0u8;
    // Unrolled: at most two tags, a third is an error.
    if ether_type::is_vlan_tpid(ethertype) {
        ethertype = vlan_inner(frame, l3)?;
        l3 += VLAN_TAG_LEN;
        tags = 1;
        if ether_type::is_vlan_tpid(ethertype) {
            ethertype = vlan_inner(frame, l3)?;
            l3 += VLAN_TAG_LEN;
            tags = 2;
            if ether_type::is_vlan_tpid(ethertype) {
                return Err(Error::Malformed(Layer::Vlan));
            }
        }
    }

    let ip = &frame[l3..];
    match ethertype {
        ether_type::IPV4 | ether_type::IPV6 => {
            *meta = PacketMeta {
                vlan_tags: tags,
                // l3 <= 22.
                l3_offset: l3 as u16,
                ..PacketMeta::default()
            };
            if ethertype == ether_type::IPV4 {
                parse_ipv4(ip, l3, meta)?;
            } else {
                parse_ipv6(ip, l3, meta)?;
            }
            Ok(FrameKind::Ip)
        }
        ether_type::ARP => Ok(FrameKind::Arp),
        other => Ok(FrameKind::Other(other)),
    }
}

/// EtherType after the VLAN tag that starts at `at`.
#[inline(always)]
fn vlan_inner(frame: &[u8], at: usize) -> Result<u16> {
    if frame.len() < at + VLAN_TAG_LEN {
        return Err(Error::Truncated(Layer::Vlan));
    }
    Ok(be16(frame, at + vlan::field::ETHERTYPE))
}

#[inline(always)]
fn parse_ipv4(ip: &[u8], l3: usize, meta: &mut PacketMeta) -> Result<()> {
    if ip.len() < IPV4_MIN {
        return Err(Error::Truncated(Layer::Ipv4));
    }
    let ver_ihl = ip[v4f::VER_IHL];
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    let tl = usize::from(be16(ip, v4f::LENGTH));
    if ver_ihl >> 4 != 4 || hl < IPV4_MIN || tl < hl {
        return Err(Error::Malformed(Layer::Ipv4));
    }
    if tl > ip.len() {
        return Err(Error::Truncated(Layer::Ipv4));
    }
    let ip = &ip[..tl];
    let flags_off = be16(ip, v4f::FLG_OFF);
    let frag_off = flags_off & ipv4::OFFSET_MASK;

    meta.family = IpFamily::V4;
    meta.l3_len = tl as u16;
    meta.ttl = ip[v4f::TTL];
    meta.proto = ip[v4f::PROTOCOL];
    meta.dont_fragment = flags_off & ipv4::FLAG_DF != 0;
    meta.src[..4].copy_from_slice(&ip[v4f::SRC]);
    meta.dst[..4].copy_from_slice(&ip[v4f::DST]);
    // From the packet, not from `meta.src`: reading back bytes just stored in
    // narrower pieces stalls on store forwarding.
    meta.outer_src[..4].copy_from_slice(&ip[v4f::SRC]);
    if flags_off & (ipv4::FLAG_MF | ipv4::OFFSET_MASK) != 0 {
        meta.frag = FragInfo {
            is_fragment: true,
            is_first: frag_off == 0,
            id: u32::from(be16(ip, v4f::IDENT)),
        };
        if frag_off != 0 {
            return Ok(());
        }
    }
    // l3 <= 22 and hl <= 60.
    meta.l4_offset = (l3 + hl) as u16;
    parse_l4(&ip[hl..], IpFamily::V4, meta)
}

#[inline(always)]
fn parse_ipv6(ip: &[u8], l3: usize, meta: &mut PacketMeta) -> Result<()> {
    if ip.len() < IPV6_LEN {
        return Err(Error::Truncated(Layer::Ipv6));
    }
    if ip[v6f::VER_TC_FLOW] >> 4 != 6 {
        return Err(Error::Malformed(Layer::Ipv6));
    }
    let tl = IPV6_LEN + usize::from(be16(ip, v6f::LENGTH));
    if tl > ip.len() {
        return Err(Error::Truncated(Layer::Ipv6));
    }
    let ip = &ip[..tl];

    meta.family = IpFamily::V6;
    meta.l3_len = u16::try_from(tl).map_err(|_| Error::Malformed(Layer::Ipv6))?;
    meta.ttl = ip[v6f::HOP_LIMIT];
    meta.dont_fragment = true;
    meta.src.copy_from_slice(&ip[v6f::SRC]);
    meta.dst.copy_from_slice(&ip[v6f::DST]);
    meta.outer_src.copy_from_slice(&ip[v6f::SRC]);

    let walk = walk_ipv6_ext(ip, Layer::Ipv6Ext)?;
    meta.proto = walk.proto;
    meta.frag = walk.frag;
    let Some(l4) = walk.l4 else {
        return Ok(());
    };
    meta.l4_offset = u16::try_from(l3 + l4).map_err(|_| Error::Malformed(Layer::Ipv6Ext))?;
    parse_l4(&ip[l4..], IpFamily::V6, meta)
}

/// Where the IPv6 extension header chain ends.
struct ExtWalk {
    /// Upper-layer protocol (or, for a non-first fragment, the fragment header's
    /// next header).
    proto: u8,
    /// Offset of the upper-layer header in the IPv6 packet; `None` for a non-first
    /// fragment.
    l4: Option<usize>,
    /// Fragment header contents, if any.
    frag: FragInfo,
}

/// Walks the extension headers of the IPv6 packet `ip` (fixed header included,
/// bounded by its payload length or by the bytes available).
#[inline(always)]
fn walk_ipv6_ext(ip: &[u8], layer: Layer) -> Result<ExtWalk> {
    let mut nh = ip[v6f::NXT_HDR];
    let mut off = IPV6_LEN;
    let mut frag = FragInfo::default();
    for i in 0..=MAX_IPV6_EXT_HEADERS {
        match nh {
            ip_proto::HOPOPTS | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS => {
                if i == MAX_IPV6_EXT_HEADERS || (nh == ip_proto::HOPOPTS && i != 0) {
                    return Err(Error::Malformed(layer));
                }
                if ip.len() < off + ipv6_ext::MIN_HEADER_LEN {
                    return Err(Error::Truncated(layer));
                }
                let hl = (usize::from(ip[off + extf::LENGTH]) + 1) * 8;
                if ip.len() < off + hl {
                    return Err(Error::Truncated(layer));
                }
                nh = ip[off + extf::NXT_HDR];
                off += hl;
            }
            ip_proto::IPV6_FRAG => {
                if i == MAX_IPV6_EXT_HEADERS || frag.is_fragment {
                    return Err(Error::Malformed(layer));
                }
                if ip.len() < off + ipv6_ext::MIN_HEADER_LEN {
                    return Err(Error::Truncated(layer));
                }
                let frag_off = be16(ip, off + extf::FRAG_OFF_M) >> 3;
                frag = FragInfo {
                    is_fragment: true,
                    is_first: frag_off == 0,
                    id: be32(ip, off + extf::FRAG_IDENT),
                };
                nh = ip[off + extf::NXT_HDR];
                off += ipv6_ext::MIN_HEADER_LEN;
                if frag_off != 0 {
                    return Ok(ExtWalk {
                        proto: nh,
                        l4: None,
                        frag,
                    });
                }
            }
            _ => {
                return Ok(ExtWalk {
                    proto: nh,
                    l4: Some(off),
                    frag,
                })
            }
        }
    }
    // Unreachable: the last iteration either returns or errors above.
    Err(Error::Malformed(layer))
}

/// Reads the L4 header `l4` (bounded by the IP packet) of protocol `meta.proto`.
#[inline(always)]
fn parse_l4(l4: &[u8], family: IpFamily, meta: &mut PacketMeta) -> Result<()> {
    match (meta.proto, family) {
        (ip_proto::TCP, _) => {
            if l4.len() < TCP_MIN {
                return Err(Error::Truncated(Layer::Tcp));
            }
            let hl = usize::from(l4[tcpf::DATA_OFF] >> 4) * 4;
            if hl < TCP_MIN {
                return Err(Error::Malformed(Layer::Tcp));
            }
            if hl > l4.len() {
                return Err(Error::Truncated(Layer::Tcp));
            }
            meta.sport = be16(l4, tcpf::SRC_PORT);
            meta.dport = be16(l4, tcpf::DST_PORT);
            meta.tcp_flags = l4[tcpf::FLAGS];
        }
        (ip_proto::UDP, _) => {
            if l4.len() < UDP_LEN {
                return Err(Error::Truncated(Layer::Udp));
            }
            meta.sport = be16(l4, udpf::SRC_PORT);
            meta.dport = be16(l4, udpf::DST_PORT);
        }
        (ip_proto::ICMP, IpFamily::V4) => {
            if l4.len() < ICMP_LEN {
                return Err(Error::Truncated(Layer::Icmpv4));
            }
            let t = l4[icmpv4::field::TYPE];
            if icmpv4::is_error_type(t) {
                return parse_embedded_v4(&l4[ICMP_LEN..], meta);
            }
            meta.icmp_type = t;
            if t == icmpv4::msg_type::ECHO_REQUEST || t == icmpv4::msg_type::ECHO_REPLY {
                meta.sport = be16(l4, icmpv4::field::ECHO_IDENT);
            }
        }
        (ip_proto::ICMPV6, IpFamily::V6) => {
            if l4.len() < ICMP_LEN {
                return Err(Error::Truncated(Layer::Icmpv6));
            }
            let t = l4[icmpv6::field::TYPE];
            if icmpv6::is_error_type(t) {
                return parse_embedded_v6(&l4[ICMP_LEN..], meta);
            }
            meta.icmp_type = t;
            if t == icmpv6::msg_type::ECHO_REQUEST || t == icmpv6::msg_type::ECHO_REPLY {
                meta.sport = be16(l4, icmpv6::field::ECHO_IDENT);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The IPv4 packet embedded in an ICMPv4 error (possibly cut short).
#[inline(always)]
fn parse_embedded_v4(ip: &[u8], meta: &mut PacketMeta) -> Result<()> {
    const L: Layer = Layer::IcmpEmbedded;
    if ip.len() < IPV4_MIN {
        return Err(Error::Truncated(L));
    }
    let ver_ihl = ip[v4f::VER_IHL];
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || hl < IPV4_MIN {
        return Err(Error::Malformed(L));
    }
    if ip.len() < hl {
        return Err(Error::Truncated(L));
    }
    meta.icmp_error = true;
    meta.proto = ip[v4f::PROTOCOL];
    meta.src[..4].copy_from_slice(&ip[v4f::DST]);
    meta.dst[..4].copy_from_slice(&ip[v4f::SRC]);
    if be16(ip, v4f::FLG_OFF) & ipv4::OFFSET_MASK != 0 {
        // A non-first fragment carries no L4 header.
        return Ok(());
    }
    embedded_ports(&ip[hl..], IpFamily::V4, meta)
}

/// The IPv6 packet embedded in an ICMPv6 error (possibly cut short).
#[inline(always)]
fn parse_embedded_v6(ip: &[u8], meta: &mut PacketMeta) -> Result<()> {
    const L: Layer = Layer::IcmpEmbedded;
    if ip.len() < IPV6_LEN {
        return Err(Error::Truncated(L));
    }
    if ip[v6f::VER_TC_FLOW] >> 4 != 6 {
        return Err(Error::Malformed(L));
    }
    // The embedded packet is usually cut short: walk what is there.
    let walk = walk_ipv6_ext(ip, L)?;
    meta.icmp_error = true;
    meta.proto = walk.proto;
    meta.src.copy_from_slice(&ip[v6f::DST]);
    meta.dst.copy_from_slice(&ip[v6f::SRC]);
    match walk.l4 {
        Some(off) => embedded_ports(&ip[off..], IpFamily::V6, meta),
        None => Ok(()),
    }
}

/// Ports of the embedded L4 header, swapped into the client-to-VIP direction.
#[inline(always)]
fn embedded_ports(l4: &[u8], family: IpFamily, meta: &mut PacketMeta) -> Result<()> {
    let icmp = matches!(
        (meta.proto, family),
        (ip_proto::ICMP, IpFamily::V4) | (ip_proto::ICMPV6, IpFamily::V6)
    );
    if !(icmp || meta.proto == ip_proto::TCP || meta.proto == ip_proto::UDP) {
        return Ok(());
    }
    if l4.len() < EMBEDDED_L4 {
        return Err(Error::Truncated(Layer::IcmpEmbedded));
    }
    if !icmp {
        meta.sport = be16(l4, tcpf::DST_PORT);
        meta.dport = be16(l4, tcpf::SRC_PORT);
        return Ok(());
    }
    let t = l4[icmpv4::field::TYPE];
    let (is_error, is_echo) = match family {
        IpFamily::V4 => (
            icmpv4::is_error_type(t),
            t == icmpv4::msg_type::ECHO_REQUEST || t == icmpv4::msg_type::ECHO_REPLY,
        ),
        IpFamily::V6 => (
            icmpv6::is_error_type(t),
            t == icmpv6::msg_type::ECHO_REQUEST || t == icmpv6::msg_type::ECHO_REPLY,
        ),
    };
    if is_error {
        return Err(Error::Malformed(Layer::IcmpEmbedded));
    }
    if is_echo {
        meta.sport = be16(l4, icmpv4::field::ECHO_IDENT);
    }
    Ok(())
}

/// The IP packet `meta` describes, bounded by its declared length.
fn l3_slice<'a>(frame: &'a [u8], meta: &PacketMeta) -> Result<&'a [u8]> {
    let start = usize::from(meta.l3_offset);
    let layer = match meta.family {
        IpFamily::V4 => Layer::Ipv4,
        IpFamily::V6 => Layer::Ipv6,
    };
    frame
        .get(start..start + usize::from(meta.l3_len))
        .ok_or(Error::Truncated(layer))
}

/// Verifies the IPv4 header checksum of a frame `parse_frame` accepted (IPv6 has
/// none: always `Ok`).
pub fn verify_l3_checksum(frame: &[u8], meta: &PacketMeta) -> Result<()> {
    if meta.family == IpFamily::V6 {
        return Ok(());
    }
    let ip = Ipv4Packet::new_checked(l3_slice(frame, meta)?)?;
    if ip.verify_checksum() {
        Ok(())
    } else {
        Err(Error::Checksum(Layer::Ipv4))
    }
}

/// Verifies the L4 checksum (TCP, UDP, ICMPv4, ICMPv6; for an ICMP error the outer
/// ICMP message) of a frame `parse_frame` accepted.
///
/// Fragments and protocols without a known checksum are `Ok` (nothing to verify
/// here). The IPv6 pseudo header uses the fixed header's destination, so a packet
/// with a routing header may fail.
pub fn verify_l4_checksum(frame: &[u8], meta: &PacketMeta) -> Result<()> {
    if meta.l4_offset == 0 || meta.frag.is_fragment {
        return Ok(());
    }
    let ip = l3_slice(frame, meta)?;
    let l4 = meta
        .l4_offset
        .checked_sub(meta.l3_offset)
        .and_then(|o| ip.get(usize::from(o)..))
        .ok_or(Error::Malformed(Layer::Ipv4))?;
    let ok = match meta.family {
        IpFamily::V4 => {
            let ip = Ipv4Packet::new_checked(ip)?;
            let proto = if meta.icmp_error {
                ip_proto::ICMP
            } else {
                meta.proto
            };
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let ph = |len: usize| checksum::pseudo_header_v4(&src, &dst, proto, len as u32);
            match proto {
                ip_proto::TCP => TcpPacket::new_checked(l4)?.verify_checksum(ph(l4.len())),
                ip_proto::UDP => {
                    let u = UdpPacket::new_checked(l4)?;
                    u.verify_checksum_v4(ph(usize::from(u.len())))
                }
                ip_proto::ICMP => Icmpv4Packet::new_checked(l4)?.verify_checksum(),
                _ => return Ok(()),
            }
        }
        IpFamily::V6 => {
            let ip = Ipv6Packet::new_checked(ip)?;
            let proto = if meta.icmp_error {
                ip_proto::ICMPV6
            } else {
                meta.proto
            };
            let ph = |len: usize| ip.pseudo_header_sum(proto, len as u32);
            match proto {
                ip_proto::TCP => TcpPacket::new_checked(l4)?.verify_checksum(ph(l4.len())),
                ip_proto::UDP => {
                    let u = UdpPacket::new_checked(l4)?;
                    u.verify_checksum_v6(ph(usize::from(u.len())))
                }
                ip_proto::ICMPV6 => Icmpv6Packet::new_checked(l4)?.verify_checksum(ph(l4.len())),
                _ => return Ok(()),
            }
        }
    };
    if ok {
        Ok(())
    } else {
        let layer = match (meta.family, meta.icmp_error, meta.proto) {
            (IpFamily::V4, true, _) | (IpFamily::V4, _, ip_proto::ICMP) => Layer::Icmpv4,
            (IpFamily::V6, true, _) | (IpFamily::V6, _, ip_proto::ICMPV6) => Layer::Icmpv6,
            (_, _, ip_proto::TCP) => Layer::Tcp,
            _ => Layer::Udp,
        };
        Err(Error::Checksum(layer))
    }
}

/// [`verify_l3_checksum`] then [`verify_l4_checksum`].
pub fn verify_checksums(frame: &[u8], meta: &PacketMeta) -> Result<()> {
    verify_l3_checksum(frame, meta)?;
    verify_l4_checksum(frame, meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::meta::tcp_flags;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Ethernet + IPv4 (DF, TTL 64) + TCP SYN with options, 10.0.0.1:40000 -> VIP 192.0.2.10:80.
    const V4_TCP_SYN: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x52, 0x6b, 0x0a, 0x00, 0x00, 0x01,
        0xc0, 0x00, 0x02, 0x0a, 0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00,
        0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x79, 0xc3, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    /// 802.1Q VID 100 PCP 3 + IPv4 + UDP 10.0.0.1:53000 -> 192.0.2.10:53, padded to 60 bytes.
    const VLAN_V4_UDP: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x81, 0x00, 0x60,
        0x64, 0x08, 0x00, 0x45, 0x00, 0x00, 0x20, 0x01, 0x02, 0x40, 0x00, 0x3f, 0x11, 0x6e, 0xc0,
        0x0a, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x0a, 0xcf, 0x08, 0x00, 0x35, 0x00, 0x0c, 0xc6,
        0xef, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// 802.1ad S-tag VID 10 + 802.1Q C-tag VID 20 + IPv4 + TCP PSH|ACK with 9 bytes of data.
    const QINQ_V4_TCP: [u8; 71] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x88, 0xa8, 0x00,
        0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00, 0x45, 0x00, 0x00, 0x31, 0x1c, 0x47, 0x40, 0x00,
        0x40, 0x06, 0x52, 0x75, 0x0a, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x0a, 0x9c, 0x40, 0x00,
        0x50, 0x12, 0x34, 0x56, 0x79, 0xab, 0xcd, 0xef, 0x01, 0x50, 0x18, 0x01, 0xf6, 0x63, 0x35,
        0x00, 0x00, 0x47, 0x45, 0x54, 0x20, 0x2f, 0x0d, 0x0a, 0x0d, 0x0a,
    ];

    /// IPv4 with a router-alert option (IHL 6) + UDP 10.0.0.7:5004 -> 192.0.2.11:5004, padded.
    const V4_OPTIONS_UDP: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x08, 0x00, 0x46,
        0x00, 0x00, 0x24, 0x42, 0x42, 0x40, 0x00, 0x01, 0x11, 0xd6, 0x70, 0x0a, 0x00, 0x00, 0x07,
        0xc0, 0x00, 0x02, 0x0b, 0x94, 0x04, 0x00, 0x00, 0x13, 0x8c, 0x13, 0x8c, 0x00, 0x0c, 0x8c,
        0x89, 0x80, 0x21, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// First IPv4 fragment (MF, id 0xbeef) of a UDP datagram 10.0.0.1:33000 -> 192.0.2.10:4789.
    const V4_FRAG_FIRST: [u8; 66] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x34, 0xbe, 0xef, 0x20, 0x00, 0x40, 0x11, 0xcf, 0xbe, 0x0a, 0x00, 0x00, 0x01,
        0xc0, 0x00, 0x02, 0x0a, 0x80, 0xe8, 0x12, 0xb5, 0x0b, 0xb8, 0x00, 0x00, 0x00, 0x01, 0x02,
        0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11,
        0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    /// Last IPv4 fragment (offset 185 = 1480 bytes, id 0xbeef) of the same datagram.
    const V4_FRAG_LAST: [u8; 66] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x34, 0xbe, 0xef, 0x00, 0xb9, 0x40, 0x11, 0xef, 0x05, 0x0a, 0x00, 0x00, 0x01,
        0xc0, 0x00, 0x02, 0x0a, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e,
        0x6f, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d,
        0x7e, 0x7f, 0x80, 0x81, 0x82, 0x83,
    ];

    /// IPv6 with hop-by-hop (router alert), destination options (PadN) and an atomic fragment header (id 0x12345678), then UDP [2001:db8::1]:5353 -> [2001:db8::100]:53.
    const V6_EXT_UDP: [u8; 94] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x86, 0xdd, 0x60,
        0x05, 0xf0, 0x0d, 0x00, 0x28, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x3c, 0x00, 0x05, 0x02, 0x00, 0x00,
        0x01, 0x00, 0x2c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x12,
        0x34, 0x56, 0x78, 0x14, 0xe9, 0x00, 0x35, 0x00, 0x10, 0x7b, 0x08, 0x12, 0x34, 0x01, 0x00,
        0x00, 0x01, 0x00, 0x00,
    ];

    /// IPv6 + UDP [2001:db8::1]:5353 -> [2001:db8::100]:53 (a DNS query header).
    const V6_UDP: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x11, 0x39, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x14, 0xe9, 0x00, 0x35, 0x00, 0x14,
        0x7b, 0x00, 0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// ICMPv4 fragmentation-needed (MTU 1400) from router 198.51.100.1 to VIP 192.0.2.10, embedding the VIP's 1500-byte TCP segment 192.0.2.10:80 -> 10.0.0.1:40000.
    const V4_ICMP_FRAG_NEEDED: [u8; 70] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x08, 0x00, 0x45,
        0xc0, 0x00, 0x38, 0x77, 0x77, 0x00, 0x00, 0xfe, 0x01, 0x58, 0x4e, 0xc6, 0x33, 0x64, 0x01,
        0xc0, 0x00, 0x02, 0x0a, 0x03, 0x04, 0xe1, 0x45, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x05,
        0xdc, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x69, 0x10, 0xc0, 0x00, 0x02, 0x0a, 0x0a, 0x00,
        0x00, 0x01, 0x00, 0x50, 0x9c, 0x40, 0x9a, 0xbc, 0xde, 0xf0,
    ];

    /// ICMPv6 packet-too-big (MTU 1280) from router 2001:db8:ff::1 to VIP 2001:db8::100, embedding the VIP's UDP datagram [2001:db8::100]:53 -> [2001:db8::1]:5353.
    const V6_ICMP_PTB: [u8; 114] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x3c, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x6e, 0x7e, 0x00, 0x00,
        0x05, 0x00, 0x60, 0x00, 0x00, 0x00, 0x05, 0xb4, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x20, 0x01, 0x0d, 0xb8,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x35, 0x14,
        0xe9, 0x05, 0xb4, 0x11, 0x11, 0xab, 0xcd, 0x81, 0x80,
    ];

    /// ICMPv6 neighbour solicitation for fe80::1 from fe80::5054:ff:fe12:3456, hop limit 255.
    const V6_ND_NS: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x01, 0x87, 0x00, 0x72, 0x22, 0x00, 0x00,
        0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x01, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
    ];

    /// ICMPv4 echo request (id 0x1c2b, seq 7) 10.0.0.1 -> 192.0.2.10.
    const V4_ICMP_ECHO: [u8; 58] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x3c, 0xfd, 0xfe, 0x9e, 0x7a, 0x40, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x5c, 0x92, 0x0a, 0x00, 0x00, 0x01,
        0xc0, 0x00, 0x02, 0x0a, 0x08, 0x00, 0x98, 0x82, 0x1c, 0x2b, 0x00, 0x07, 0x61, 0x62, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70,
    ];

    /// A broadcast ARP request, padded to 60 bytes.
    const ARP: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// Every literal frame, for the truncation and mutation tests.
    const ALL: [&[u8]; 13] = [
        &V4_TCP_SYN,
        &VLAN_V4_UDP,
        &QINQ_V4_TCP,
        &V4_OPTIONS_UDP,
        &V4_FRAG_FIRST,
        &V4_FRAG_LAST,
        &V6_EXT_UDP,
        &V6_UDP,
        &V4_ICMP_FRAG_NEEDED,
        &V6_ICMP_PTB,
        &V6_ND_NS,
        &V4_ICMP_ECHO,
        &ARP,
    ];

    const CLIENT4: [u8; 4] = [10, 0, 0, 1];
    const VIP4: [u8; 4] = [192, 0, 2, 10];
    const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&a);
        o
    }

    fn ip(frame: &[u8]) -> PacketMeta {
        match parse_frame(frame) {
            Ok(Frame::Ip(m)) => m,
            other => panic!("not IP: {other:?}"),
        }
    }

    #[test]
    fn v4_tcp_syn() {
        let m = ip(&V4_TCP_SYN);
        let want = PacketMeta {
            vlan_tags: 0,
            l3_offset: 14,
            l4_offset: 34,
            l3_len: 60,
            family: IpFamily::V4,
            proto: ip_proto::TCP,
            ttl: 64,
            dont_fragment: true,
            src: v4(CLIENT4),
            dst: v4(VIP4),
            sport: 40000,
            dport: 80,
            tcp_flags: tcp_flags::SYN,
            icmp_type: 0,
            frag: FragInfo::default(),
            icmp_error: false,
            outer_src: v4(CLIENT4),
        };
        assert_eq!(m, want);
        verify_checksums(&V4_TCP_SYN, &m).unwrap();
    }

    #[test]
    fn vlan_v4_udp_excludes_padding() {
        let m = ip(&VLAN_V4_UDP);
        assert_eq!((m.vlan_tags, m.l3_offset, m.l4_offset), (1, 18, 38));
        assert_eq!(m.l3_len, 32, "padding is not part of the IP packet");
        assert_eq!((m.proto, m.sport, m.dport, m.ttl), (17, 53000, 53, 63));
        verify_checksums(&VLAN_V4_UDP, &m).unwrap();
    }

    #[test]
    fn qinq_and_legacy_outer_tag() {
        let m = ip(&QINQ_V4_TCP);
        assert_eq!((m.vlan_tags, m.l3_offset, m.l4_offset), (2, 22, 42));
        assert_eq!(m.tcp_flags, tcp_flags::PSH | tcp_flags::ACK);
        assert_eq!((m.src, m.dst), (v4(CLIENT4), v4(VIP4)));
        verify_checksums(&QINQ_V4_TCP, &m).unwrap();

        let mut f = QINQ_V4_TCP;
        f[12..14].copy_from_slice(&0x9100u16.to_be_bytes());
        assert_eq!(ip(&f), m);
    }

    #[test]
    fn third_vlan_tag_is_rejected() {
        let mut f = Vec::from(&QINQ_V4_TCP[..]);
        // Turn the inner tag's EtherType into another tag in front of IPv4.
        f[20..22].copy_from_slice(&0x8100u16.to_be_bytes());
        f.splice(22..22, [0x00, 0x1e, 0x08, 0x00]);
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Vlan)));
        assert_eq!(
            parse_frame(&QINQ_V4_TCP[..20]),
            Err(Error::Truncated(Layer::Vlan))
        );
    }

    #[test]
    fn v4_options() {
        let m = ip(&V4_OPTIONS_UDP);
        assert_eq!((m.l3_offset, m.l4_offset, m.l3_len), (14, 38, 36));
        assert_eq!((m.sport, m.dport, m.ttl), (5004, 5004, 1));
        verify_checksums(&V4_OPTIONS_UDP, &m).unwrap();
        let (h, _) = etherparse::Ipv4Header::from_slice(&V4_OPTIONS_UDP[14..]).unwrap();
        assert_eq!(h.options.as_slice(), &[0x94, 0x04, 0x00, 0x00]);
    }

    #[test]
    fn v4_fragments() {
        let first = ip(&V4_FRAG_FIRST);
        let frag = FragInfo {
            is_fragment: true,
            is_first: true,
            id: 0xbeef,
        };
        assert_eq!(first.frag, frag);
        assert!(!first.dont_fragment);
        assert_eq!(
            (first.l4_offset, first.sport, first.dport),
            (34, 33000, 4789)
        );
        // L4 of a fragment cannot be verified; the IPv4 header can.
        verify_checksums(&V4_FRAG_FIRST, &first).unwrap();

        let last = ip(&V4_FRAG_LAST);
        assert_eq!(
            last.frag,
            FragInfo {
                is_first: false,
                ..frag
            }
        );
        assert_eq!((last.l4_offset, last.sport, last.dport), (0, 0, 0));
        assert_eq!(last.proto, ip_proto::UDP);
        assert_eq!(last.l3_len, 52);
        verify_checksums(&V4_FRAG_LAST, &last).unwrap();
    }

    #[test]
    fn v6_extension_headers() {
        let m = ip(&V6_EXT_UDP);
        assert_eq!(m.family, IpFamily::V6);
        assert_eq!((m.l3_offset, m.l4_offset, m.l3_len), (14, 78, 80));
        assert_eq!((m.proto, m.sport, m.dport), (17, 5353, 53));
        assert_eq!((m.src, m.dst, m.outer_src), (CLIENT6, VIP6, CLIENT6));
        assert!(m.dont_fragment);
        assert_eq!(
            m.frag,
            FragInfo {
                is_fragment: true,
                is_first: true,
                id: 0x1234_5678
            }
        );
        verify_l3_checksum(&V6_EXT_UDP, &m).unwrap();

        // The same fragment header with offset 1 (8 bytes): no L4, proto from it.
        let mut f = V6_EXT_UDP;
        f[72..74].copy_from_slice(&(1u16 << 3).to_be_bytes());
        let m = ip(&f);
        assert_eq!((m.l4_offset, m.sport, m.dport, m.proto), (0, 0, 0, 17));
        assert!(m.frag.is_fragment && !m.frag.is_first);

        // Hop-by-hop after destination options is rejected.
        let mut f = V6_EXT_UDP;
        f[20] = ip_proto::IPV6_OPTS; // fixed header -> dest opts (the HBH bytes) ...
        f[54] = ip_proto::HOPOPTS; // ... -> hop-by-hop (the dest-opts bytes)
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Ipv6Ext)));

        // An extension header that runs past the payload length.
        let mut f = V6_EXT_UDP;
        f[55] = 20;
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::Ipv6Ext)));
    }

    /// IPv6 with `n` empty destination-options headers, then UDP.
    fn v6_with_dest_opts(n: usize) -> Vec<u8> {
        let mut f = Vec::from(&V6_UDP[..]);
        let udp: Vec<u8> = f.split_off(54);
        for i in 0..n {
            let next = if i + 1 == n {
                ip_proto::UDP
            } else {
                ip_proto::IPV6_OPTS
            };
            f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend_from_slice(&udp);
        if n > 0 {
            f[20] = ip_proto::IPV6_OPTS;
        }
        let plen = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f
    }

    #[test]
    fn v6_extension_header_limit() {
        let ok = ip(&v6_with_dest_opts(MAX_IPV6_EXT_HEADERS));
        assert_eq!((ok.sport, ok.dport), (5353, 53));
        assert_eq!(usize::from(ok.l4_offset), 54 + 8 * MAX_IPV6_EXT_HEADERS);
        assert_eq!(
            parse_frame(&v6_with_dest_opts(MAX_IPV6_EXT_HEADERS + 1)),
            Err(Error::Malformed(Layer::Ipv6Ext))
        );
    }

    #[test]
    fn v6_udp() {
        let m = ip(&V6_UDP);
        assert_eq!((m.l4_offset, m.l3_len, m.ttl), (54, 60, 57));
        assert_eq!((m.proto, m.sport, m.dport), (17, 5353, 53));
        assert_eq!(m.frag, FragInfo::default());
        verify_checksums(&V6_UDP, &m).unwrap();
        let s = etherparse::SlicedPacket::from_ethernet(&V6_UDP).unwrap();
        match s.transport {
            Some(etherparse::TransportSlice::Udp(u)) => {
                assert_eq!((u.source_port(), u.destination_port()), (m.sport, m.dport))
            }
            other => panic!("{other:?}"),
        }
        // A zero UDP checksum is invalid over IPv6.
        let mut f = V6_UDP;
        f[60..62].copy_from_slice(&[0, 0]);
        assert_eq!(verify_checksums(&f, &m), Err(Error::Checksum(Layer::Udp)));
    }

    #[test]
    fn icmpv4_frag_needed_maps_to_client_flow() {
        let m = ip(&V4_ICMP_FRAG_NEEDED);
        let want = PacketMeta {
            vlan_tags: 0,
            l3_offset: 14,
            l4_offset: 34,
            l3_len: 56,
            family: IpFamily::V4,
            proto: ip_proto::TCP,
            ttl: 254,
            dont_fragment: false,
            src: v4(CLIENT4),
            dst: v4(VIP4),
            sport: 40000,
            dport: 80,
            tcp_flags: 0,
            icmp_type: 0,
            frag: FragInfo::default(),
            icmp_error: true,
            outer_src: v4([198, 51, 100, 1]),
        };
        assert_eq!(m, want);
        verify_checksums(&V4_ICMP_FRAG_NEEDED, &m).unwrap();
        let p = Icmpv4Packet::new_checked(&V4_ICMP_FRAG_NEEDED[34..]).unwrap();
        assert_eq!((p.msg_code(), p.next_hop_mtu()), (4, 1400));
        let inner = Ipv4Packet::new_unchecked(p.payload());
        assert!(inner.verify_checksum());
        assert_eq!(inner.total_len(), 1500);
    }

    #[test]
    fn icmpv4_error_corner_cases() {
        // Embedded L4 cut to 4 bytes (outer total length shrunk to match).
        let mut f = Vec::from(&V4_ICMP_FRAG_NEEDED[..V4_ICMP_FRAG_NEEDED.len() - 4]);
        f[16..18].copy_from_slice(&52u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::IcmpEmbedded)));
        // Embedded IP header cut.
        let mut f = Vec::from(&V4_ICMP_FRAG_NEEDED[..60]);
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::IcmpEmbedded)));
        // An ICMP error about an ICMP error is not followed.
        let mut f = V4_ICMP_FRAG_NEEDED;
        f[51] = ip_proto::ICMP;
        f[62] = 11;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::IcmpEmbedded)));
        // ... but an error about an echo reply is, with the echo identifier.
        f[62] = 0;
        f[66..68].copy_from_slice(&0x4321u16.to_be_bytes());
        let m = ip(&f);
        assert_eq!(
            (m.proto, m.sport, m.dport, m.icmp_error),
            (1, 0x4321, 0, true)
        );
        // Embedded packet of the wrong version.
        let mut f = V4_ICMP_FRAG_NEEDED;
        f[42] = 0x65;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::IcmpEmbedded)));
        // Embedded non-first fragment: addresses, no ports.
        let mut f = V4_ICMP_FRAG_NEEDED;
        f[48..50].copy_from_slice(&0x0010u16.to_be_bytes());
        let m = ip(&f);
        assert_eq!(
            (m.src, m.dst, m.sport, m.dport),
            (v4(CLIENT4), v4(VIP4), 0, 0)
        );
    }

    #[test]
    fn icmpv6_packet_too_big_maps_to_client_flow() {
        let m = ip(&V6_ICMP_PTB);
        assert!(m.icmp_error);
        assert_eq!((m.src, m.dst), (CLIENT6, VIP6));
        assert_eq!((m.proto, m.sport, m.dport, m.icmp_type), (17, 5353, 53, 0));
        assert_eq!(m.outer_src[..6], [0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff]);
        assert_eq!(m.l4_offset, 54);
        verify_checksums(&V6_ICMP_PTB, &m).unwrap();
        let p = Icmpv6Packet::new_checked(&V6_ICMP_PTB[54..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.mtu()),
            (icmpv6::msg_type::PACKET_TOO_BIG, 1280)
        );

        // Embedded UDP header cut to 6 bytes.
        let mut f = Vec::from(&V6_ICMP_PTB[..V6_ICMP_PTB.len() - 6]);
        let plen = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::IcmpEmbedded)));
        // Embedded ICMPv6 error.
        let mut f = V6_ICMP_PTB;
        f[68] = ip_proto::ICMPV6;
        f[102] = 1;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::IcmpEmbedded)));
    }

    #[test]
    fn host_stack_frames() {
        assert_eq!(parse_frame(&ARP), Ok(Frame::Arp));
        let mut lldp = ARP;
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(parse_frame(&lldp), Ok(Frame::Other(0x88cc)));

        let m = ip(&V6_ND_NS);
        assert_eq!((m.proto, m.icmp_type, m.ttl), (58, 135, 255));
        assert_eq!((m.sport, m.dport, m.icmp_error), (0, 0, false));
        verify_checksums(&V6_ND_NS, &m).unwrap();
    }

    #[test]
    fn icmpv4_echo_identifier_in_sport() {
        let m = ip(&V4_ICMP_ECHO);
        assert_eq!((m.proto, m.icmp_type, m.sport, m.dport), (1, 8, 0x1c2b, 0));
        verify_checksums(&V4_ICMP_ECHO, &m).unwrap();
    }

    #[test]
    fn every_truncation_is_an_error() {
        // The frames without Ethernet padding end where their IP packet ends.
        for f in ALL {
            if f.len() == 60 {
                continue;
            }
            for n in 0..f.len() {
                match parse_frame(&f[..n]) {
                    Err(Error::Truncated(_)) => {}
                    other => panic!("{n} of {}: {other:?}", f.len()),
                }
            }
        }
    }

    #[test]
    fn malformed_headers() {
        let mut f = V4_TCP_SYN;
        f[14] = 0x44;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Ipv4)));
        f[14] = 0x55;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Ipv4)));
        let mut f = V4_TCP_SYN;
        f[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Ipv4)));
        let mut f = V4_TCP_SYN;
        f[46] = 0x40;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Tcp)));
        // TCP header longer than the IP packet says (total length 20 + 30).
        let mut f = V4_TCP_SYN;
        f[16..18].copy_from_slice(&50u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::Tcp)));
        f[16..18].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::Tcp)));
        let mut f = VLAN_V4_UDP;
        f[20..22].copy_from_slice(&27u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Err(Error::Truncated(Layer::Udp)));
        let mut f = V6_UDP;
        f[14] = 0x40;
        assert_eq!(parse_frame(&f), Err(Error::Malformed(Layer::Ipv6)));
    }

    #[test]
    fn checksum_errors_are_reported() {
        let m = ip(&V4_TCP_SYN);
        let mut f = V4_TCP_SYN;
        f[22] = 63;
        assert_eq!(
            verify_l3_checksum(&f, &m),
            Err(Error::Checksum(Layer::Ipv4))
        );
        let mut f = V4_TCP_SYN;
        f[73] ^= 1;
        assert_eq!(verify_l4_checksum(&f, &m), Err(Error::Checksum(Layer::Tcp)));
        let m = ip(&V4_ICMP_FRAG_NEEDED);
        let mut f = V4_ICMP_FRAG_NEEDED;
        f[40] ^= 1;
        assert_eq!(
            verify_l4_checksum(&f, &m),
            Err(Error::Checksum(Layer::Icmpv4))
        );
        let m = ip(&V6_ND_NS);
        let mut f = V6_ND_NS;
        f[70] ^= 1;
        assert_eq!(
            verify_l4_checksum(&f, &m),
            Err(Error::Checksum(Layer::Icmpv6))
        );
        // A meta that does not fit the frame is an error, not a panic.
        let bogus = PacketMeta {
            l3_offset: 60,
            l4_offset: 10,
            l3_len: 20,
            ..m
        };
        assert!(verify_checksums(&f, &bogus).is_err());
    }

    #[test]
    fn matches_etherparse_on_literal_frames() {
        for f in [
            &V4_TCP_SYN[..],
            &VLAN_V4_UDP,
            &QINQ_V4_TCP,
            &V4_OPTIONS_UDP,
            &V6_UDP,
        ] {
            let m = ip(f);
            let s = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            check_against_etherparse(&m, &s);
        }
    }

    /// Asserts that `m` agrees with etherparse on VLANs, addresses, proto, ports,
    /// flags and ICMP type.
    fn check_against_etherparse(m: &PacketMeta, s: &etherparse::SlicedPacket<'_>) {
        use etherparse::{NetSlice, TransportSlice, VlanSlice};
        let tags = match &s.vlan {
            None => 0,
            Some(VlanSlice::SingleVlan(_)) => 1,
            Some(VlanSlice::DoubleVlan(_)) => 2,
        };
        assert_eq!(m.vlan_tags, tags);
        match s.net.as_ref().expect("net") {
            NetSlice::Ipv4(p) => {
                let h = p.header();
                assert_eq!(m.family, IpFamily::V4);
                assert_eq!((m.src, m.dst), (v4(h.source()), v4(h.destination())));
                assert_eq!((m.proto, m.ttl), (h.protocol().0, h.ttl()));
                assert_eq!(m.dont_fragment, h.dont_fragment());
                assert_eq!(usize::from(m.l3_len), usize::from(h.total_len()));
            }
            NetSlice::Ipv6(p) => {
                let h = p.header();
                assert_eq!(m.family, IpFamily::V6);
                assert_eq!((m.src, m.dst), (h.source(), h.destination()));
                assert_eq!(m.ttl, h.hop_limit());
                assert_eq!(m.proto, p.payload().ip_number.0);
            }
        }
        match s.transport.as_ref().expect("transport") {
            TransportSlice::Tcp(t) => {
                assert_eq!((m.sport, m.dport), (t.source_port(), t.destination_port()));
                let mut fl = 0;
                for (on, bit) in [
                    (t.fin(), tcp_flags::FIN),
                    (t.syn(), tcp_flags::SYN),
                    (t.rst(), tcp_flags::RST),
                    (t.psh(), tcp_flags::PSH),
                    (t.ack(), tcp_flags::ACK),
                    (t.urg(), tcp_flags::URG),
                    (t.ece(), crate::wire::tcp::flags::ECE),
                    (t.cwr(), crate::wire::tcp::flags::CWR),
                ] {
                    if on {
                        fl |= bit;
                    }
                }
                assert_eq!(m.tcp_flags, fl);
            }
            TransportSlice::Udp(u) => {
                assert_eq!((m.sport, m.dport), (u.source_port(), u.destination_port()));
            }
            TransportSlice::Icmpv4(i) => {
                assert_eq!(m.icmp_type, i.type_u8());
                assert_eq!(m.dport, 0);
            }
            TransportSlice::Icmpv6(i) => {
                assert_eq!(m.icmp_type, i.type_u8());
                assert_eq!(m.dport, 0);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum L4 {
        Tcp {
            sport: u16,
            dport: u16,
            seq: u32,
            flags: u8,
        },
        Udp {
            sport: u16,
            dport: u16,
        },
        Echo {
            id: u16,
            seq: u16,
        },
    }

    fn arb_l4() -> impl Strategy<Value = L4> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), any::<u32>(), any::<u8>()).prop_map(
                |(sport, dport, seq, flags)| L4::Tcp {
                    sport,
                    dport,
                    seq,
                    flags
                }
            ),
            (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::Udp { sport, dport }),
            (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| L4::Echo { id, seq }),
        ]
    }

    /// Builds a frame with etherparse's `PacketBuilder`.
    fn build(
        v6: bool,
        tags: u8,
        src: [u8; 16],
        dst: [u8; 16],
        ttl: u8,
        l4: &L4,
        payload: &[u8],
    ) -> Vec<u8> {
        use etherparse::{PacketBuilder, VlanId};
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let vid = |v| VlanId::try_new(v).unwrap();
        // The VLAN and IP steps have different types; box the chain per branch.
        macro_rules! ip_step {
            ($b:expr) => {
                if v6 {
                    $b.ipv6(src, dst, ttl)
                } else {
                    let s4 = [src[0], src[1], src[2], src[3]];
                    let d4 = [dst[0], dst[1], dst[2], dst[3]];
                    $b.ipv4(s4, d4, ttl)
                }
            };
        }
        macro_rules! finish {
            ($b:expr) => {{
                let mut out = Vec::new();
                match *l4 {
                    L4::Tcp {
                        sport,
                        dport,
                        seq,
                        flags,
                    } => {
                        let mut t = $b.tcp(sport, dport, seq, 4096);
                        if flags & 0x01 != 0 {
                            t = t.fin();
                        }
                        if flags & 0x02 != 0 {
                            t = t.syn();
                        }
                        if flags & 0x04 != 0 {
                            t = t.rst();
                        }
                        if flags & 0x08 != 0 {
                            t = t.psh();
                        }
                        if flags & 0x10 != 0 {
                            t = t.ack(seq ^ 0x5555);
                        }
                        if flags & 0x20 != 0 {
                            t = t.urg(1);
                        }
                        if flags & 0x40 != 0 {
                            t = t.ece();
                        }
                        if flags & 0x80 != 0 {
                            t = t.cwr();
                        }
                        t.write(&mut out, payload).unwrap();
                    }
                    L4::Udp { sport, dport } => {
                        $b.udp(sport, dport).write(&mut out, payload).unwrap();
                    }
                    L4::Echo { id, seq } => {
                        if v6 {
                            $b.icmpv6_echo_request(id, seq)
                                .write(&mut out, payload)
                                .unwrap();
                        } else {
                            $b.icmpv4_echo_request(id, seq)
                                .write(&mut out, payload)
                                .unwrap();
                        }
                    }
                }
                out
            }};
        }
        match tags {
            0 => finish!(ip_step!(eth)),
            1 => finish!(ip_step!(eth.single_vlan(vid(100)))),
            _ => finish!(ip_step!(eth.double_vlan(vid(10), vid(20)))),
        }
    }

    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1600),
            (
                0..ALL.len(),
                proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..8),
                any::<prop::sample::Index>(),
                any::<bool>()
            )
                .prop_map(|(i, flips, cut, do_cut)| {
                    let mut f = Vec::from(ALL[i]);
                    for (at, x) in flips {
                        let at = at.index(f.len());
                        f[at] ^= x;
                    }
                    if do_cut {
                        f.truncate(cut.index(f.len() + 1));
                    }
                    f
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn never_panics(f in arb_frame()) {
            if let Ok(Frame::Ip(m)) = parse_frame(&f) {
                let end = usize::from(m.l3_offset) + usize::from(m.l3_len);
                prop_assert!(end <= f.len());
                prop_assert!(m.vlan_tags <= 2);
                prop_assert!(usize::from(m.l4_offset) <= end);
                prop_assert!(m.l4_offset == 0 || m.l4_offset > m.l3_offset);
                if m.family == IpFamily::V4 {
                    prop_assert_eq!(&m.src[4..], &[0u8; 12][..]);
                    prop_assert_eq!(&m.dst[4..], &[0u8; 12][..]);
                }
                let _ = verify_checksums(&f, &m);
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_etherparse(
            v6 in any::<bool>(),
            tags in 0u8..3,
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ttl in any::<u8>(),
            l4 in arb_l4(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let f = build(v6, tags, src, dst, ttl, &l4, &payload);
            let m = ip(&f);
            let s = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            check_against_etherparse(&m, &s);
            prop_assert_eq!(verify_checksums(&f, &m), Ok(()));
            prop_assert!(!m.icmp_error);
            match l4 {
                L4::Tcp { sport, dport, flags, .. } => {
                    prop_assert_eq!((m.proto, m.sport, m.dport, m.tcp_flags), (6, sport, dport, flags));
                }
                L4::Udp { sport, dport } => {
                    prop_assert_eq!((m.proto, m.sport, m.dport), (17, sport, dport));
                }
                L4::Echo { id, .. } => {
                    let (proto, ty) = if v6 { (58, 128) } else { (1, 8) };
                    prop_assert_eq!((m.proto, m.icmp_type, m.sport, m.dport), (proto, ty, id, 0));
                }
            }
        }
    }
}
