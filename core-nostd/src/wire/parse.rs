//! The hot-path frame parser: one pass over Ethernet, up to two VLAN tags, IPv4 or
//! IPv6 (with extension headers) and the first bytes of TCP, UDP or ICMP, filling a
//! [`PacketMeta`] as documented in [`crate::wire::meta`].
//!
//! Contract:
//! - never panics and never allocates, for any input;
//! - reads every byte at most once, at fixed offsets, in place; the only copy is
//!   into the returned `PacketMeta`;
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
use super::meta::{ip_proto, FragInfo, Frame, IpFamily, PacketMeta};
use super::{be16, be32, checksum, icmpv4, icmpv6, Error, Layer, Result};
use super::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

/// Most IPv6 extension headers the parser walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

const VLAN_TAG_LEN: usize = 4;
const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_MIN: usize = 20;
const UDP_LEN: usize = 8;
const ICMP_LEN: usize = 8;
/// Bytes of the offending packet's L4 header an ICMP error must carry.
const EMBEDDED_L4: usize = 8;

/// Parses one Ethernet frame into a [`Frame`].
///
/// See the module docs for the rules; errors name the layer where parsing stopped.
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<Frame> {
    if frame.len() < ethernet::HEADER_LEN {
        return Err(Error::Truncated(Layer::Ethernet));
    }
    let mut ethertype = be16(frame, 12);
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

    let mut meta = PacketMeta {
        vlan_tags: tags,
        // l3 <= 22.
        l3_offset: l3 as u16,
        ..PacketMeta::default()
    };
    let ip = &frame[l3..];
    match ethertype {
        ether_type::IPV4 => parse_ipv4(ip, l3, &mut meta)?,
        ether_type::IPV6 => parse_ipv6(ip, l3, &mut meta)?,
        ether_type::ARP => return Ok(Frame::Arp),
        other => return Ok(Frame::Other(other)),
    }
    Ok(Frame::Ip(meta))
}

/// EtherType after the VLAN tag that starts at `at`.
#[inline(always)]
fn vlan_inner(frame: &[u8], at: usize) -> Result<u16> {
    if frame.len() < at + VLAN_TAG_LEN {
        return Err(Error::Truncated(Layer::Vlan));
    }
    Ok(be16(frame, at + 2))
}

#[inline(always)]
fn parse_ipv4(ip: &[u8], l3: usize, meta: &mut PacketMeta) -> Result<()> {
    if ip.len() < IPV4_MIN {
        return Err(Error::Truncated(Layer::Ipv4));
    }
    let ver_ihl = ip[0];
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    let tl = usize::from(be16(ip, 2));
    if ver_ihl >> 4 != 4 || hl < IPV4_MIN || tl < hl {
        return Err(Error::Malformed(Layer::Ipv4));
    }
    if tl > ip.len() {
        return Err(Error::Truncated(Layer::Ipv4));
    }
    let ip = &ip[..tl];
    let flags_off = be16(ip, 6);
    let frag_off = flags_off & 0x1fff;

    meta.family = IpFamily::V4;
    meta.l3_len = tl as u16;
    meta.ttl = ip[8];
    meta.proto = ip[9];
    meta.dont_fragment = flags_off & 0x4000 != 0;
    meta.src[..4].copy_from_slice(&ip[12..16]);
    meta.dst[..4].copy_from_slice(&ip[16..20]);
    meta.outer_src = meta.src;
    if flags_off & 0x3fff != 0 {
        meta.frag = FragInfo {
            is_fragment: true,
            is_first: frag_off == 0,
            id: u32::from(be16(ip, 4)),
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
    if ip[0] >> 4 != 6 {
        return Err(Error::Malformed(Layer::Ipv6));
    }
    let tl = IPV6_LEN + usize::from(be16(ip, 4));
    if tl > ip.len() {
        return Err(Error::Truncated(Layer::Ipv6));
    }
    let ip = &ip[..tl];

    meta.family = IpFamily::V6;
    meta.l3_len = u16::try_from(tl).map_err(|_| Error::Malformed(Layer::Ipv6))?;
    meta.ttl = ip[7];
    meta.dont_fragment = true;
    meta.src.copy_from_slice(&ip[8..24]);
    meta.dst.copy_from_slice(&ip[24..40]);
    meta.outer_src = meta.src;

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
    let mut nh = ip[6];
    let mut off = IPV6_LEN;
    let mut frag = FragInfo::default();
    for i in 0..=MAX_IPV6_EXT_HEADERS {
        match nh {
            ip_proto::HOPOPTS | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS => {
                if i == MAX_IPV6_EXT_HEADERS || (nh == ip_proto::HOPOPTS && i != 0) {
                    return Err(Error::Malformed(layer));
                }
                if ip.len() < off + 8 {
                    return Err(Error::Truncated(layer));
                }
                let hl = (usize::from(ip[off + 1]) + 1) * 8;
                if ip.len() < off + hl {
                    return Err(Error::Truncated(layer));
                }
                nh = ip[off];
                off += hl;
            }
            ip_proto::IPV6_FRAG => {
                if i == MAX_IPV6_EXT_HEADERS || frag.is_fragment {
                    return Err(Error::Malformed(layer));
                }
                if ip.len() < off + 8 {
                    return Err(Error::Truncated(layer));
                }
                let frag_off = be16(ip, off + 2) >> 3;
                frag = FragInfo {
                    is_fragment: true,
                    is_first: frag_off == 0,
                    id: be32(ip, off + 4),
                };
                nh = ip[off];
                off += 8;
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
            let hl = usize::from(l4[12] >> 4) * 4;
            if hl < TCP_MIN {
                return Err(Error::Malformed(Layer::Tcp));
            }
            if hl > l4.len() {
                return Err(Error::Truncated(Layer::Tcp));
            }
            meta.sport = be16(l4, 0);
            meta.dport = be16(l4, 2);
            meta.tcp_flags = l4[13];
        }
        (ip_proto::UDP, _) => {
            if l4.len() < UDP_LEN {
                return Err(Error::Truncated(Layer::Udp));
            }
            meta.sport = be16(l4, 0);
            meta.dport = be16(l4, 2);
        }
        (ip_proto::ICMP, IpFamily::V4) => {
            if l4.len() < ICMP_LEN {
                return Err(Error::Truncated(Layer::Icmpv4));
            }
            let t = l4[0];
            if icmpv4::is_error_type(t) {
                return parse_embedded_v4(&l4[ICMP_LEN..], meta);
            }
            meta.icmp_type = t;
            if t == icmpv4::msg_type::ECHO_REQUEST || t == icmpv4::msg_type::ECHO_REPLY {
                meta.sport = be16(l4, 4);
            }
        }
        (ip_proto::ICMPV6, IpFamily::V6) => {
            if l4.len() < ICMP_LEN {
                return Err(Error::Truncated(Layer::Icmpv6));
            }
            let t = l4[0];
            if icmpv6::is_error_type(t) {
                return parse_embedded_v6(&l4[ICMP_LEN..], meta);
            }
            meta.icmp_type = t;
            if t == icmpv6::msg_type::ECHO_REQUEST || t == icmpv6::msg_type::ECHO_REPLY {
                meta.sport = be16(l4, 4);
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
    let ver_ihl = ip[0];
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || hl < IPV4_MIN {
        return Err(Error::Malformed(L));
    }
    if ip.len() < hl {
        return Err(Error::Truncated(L));
    }
    meta.icmp_error = true;
    meta.proto = ip[9];
    meta.src[..4].copy_from_slice(&ip[16..20]);
    meta.dst[..4].copy_from_slice(&ip[12..16]);
    if be16(ip, 6) & 0x1fff != 0 {
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
    if ip[0] >> 4 != 6 {
        return Err(Error::Malformed(L));
    }
    // The embedded packet is usually cut short: walk what is there.
    let walk = walk_ipv6_ext(ip, L)?;
    meta.icmp_error = true;
    meta.proto = walk.proto;
    meta.src.copy_from_slice(&ip[24..40]);
    meta.dst.copy_from_slice(&ip[8..24]);
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
        meta.sport = be16(l4, 2);
        meta.dport = be16(l4, 0);
        return Ok(());
    }
    let t = l4[0];
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
        meta.sport = be16(l4, 4);
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
