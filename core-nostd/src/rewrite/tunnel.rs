//! IP-in-IP and GRE encapsulation: a new Ethernet header, an outer IP header and
//! (GRE) a 4-byte GRE header are written into the headroom right in front of the inner
//! IP packet, which stays where it is. The inner Ethernet header and VLAN tags are
//! dropped, and with them any Ethernet padding after the inner packet.
//!
//! Outer IPv4: TOS copied from the inner packet (DSCP and ECN, RFC 6040 normal mode),
//! identification = low 16 bits of the flow hash, DF copied from the inner packet (set
//! for inner IPv6), TTL 64, full header checksum. Outer IPv6: traffic class copied,
//! flow label = low 20 bits of the flow hash (RFC 6438), hop limit 64.

use super::{
    overhead, Checked, Egress, Encap, RewriteError, Rewritten, Target, ETH_HLEN, GRE_HLEN,
};
use crate::wire::meta::ip_proto;
use crate::wire::IpFamily;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Hop limit of the outer header.
const OUTER_TTL: u8 = 64;

#[inline]
const fn ethertype(family: IpFamily) -> u16 {
    match family {
        IpFamily::V4 => ETHERTYPE_IPV4,
        IpFamily::V6 => ETHERTYPE_IPV6,
    }
}

/// Where the encapsulated frame starts: `start + l3_offset - 14 - overhead`.
#[inline]
pub(super) fn new_start(c: &Checked, ovh: usize) -> Result<usize, RewriteError> {
    c.l3.checked_sub(ETH_HLEN + ovh)
        .ok_or(RewriteError::NoHeadroom)
}

/// The inner packet's DSCP+ECN byte (IPv4 TOS or IPv6 traffic class).
#[inline]
fn inner_tos(ip: &[u8], family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => ip[1],
        IpFamily::V6 => (ip[0] << 4) | (ip[1] >> 4),
    }
}

/// Writes Ethernet + outer IP + [GRE] headers at `new_start`, in front of the inner
/// packet at `c.l3`. Requires `new_start + 14 + overhead == c.l3` (see [`new_start`])
/// and that the outer packet length fits the MTU (so it fits in 16 bits).
#[inline]
pub(super) fn encap(
    buf: &mut [u8],
    c: &Checked,
    new_start: usize,
    target: &Target,
    egress: &Egress,
    flow_hash: u64,
) -> Rewritten {
    let ovh = overhead(target.encap, target.family);
    let tos = inner_tos(&buf[c.l3..c.l3 + 2], c.family);
    let (hdr, _) = buf.split_at_mut(c.l3);
    let hdr = &mut hdr[new_start..];

    hdr[0..6].copy_from_slice(&target.dst_mac);
    hdr[6..12].copy_from_slice(&egress.src_mac);
    hdr[12..14].copy_from_slice(&ethertype(target.family).to_be_bytes());

    let proto = match (target.encap, c.family) {
        (Encap::Gre, _) => ip_proto::GRE,
        (_, IpFamily::V4) => ip_proto::IPIP,
        (_, IpFamily::V6) => ip_proto::IPV6,
    };
    // Outer packet length <= MTU <= u16::MAX, checked by the caller.
    let outer_len = (ovh + c.l3_len) as u16;
    let ip_hlen = match target.family {
        IpFamily::V4 => {
            // The checksum is summed from the field values, not read back from
            // the buffer: reading bytes just written as narrower stores stalls on
            // store forwarding (measured: the dominant cost of the rewrite).
            let flags: u16 = if c.df { 0x4000 } else { 0 };
            let id = flow_hash as u16;
            let src = egress.src_v4;
            let dst = [
                target.addr[0],
                target.addr[1],
                target.addr[2],
                target.addr[3],
            ];
            let w = |a: u8, b: u8| u32::from(u16::from_be_bytes([a, b]));
            let mut acc = 0x4500
                + u32::from(tos)
                + u32::from(outer_len)
                + u32::from(id)
                + u32::from(flags)
                + ((u32::from(OUTER_TTL) << 8) | u32::from(proto))
                + w(src[0], src[1])
                + w(src[2], src[3])
                + w(dst[0], dst[1])
                + w(dst[2], dst[3]);
            acc = (acc & 0xffff) + (acc >> 16);
            acc = (acc & 0xffff) + (acc >> 16);
            let csum = !(acc as u16);
            let [l0, l1] = outer_len.to_be_bytes();
            let [i0, i1] = id.to_be_bytes();
            let [f0, f1] = flags.to_be_bytes();
            let [c0, c1] = csum.to_be_bytes();
            let h: [u8; 20] = [
                0x45, tos, l0, l1, i0, i1, f0, f1, OUTER_TTL, proto, c0, c1, src[0], src[1],
                src[2], src[3], dst[0], dst[1], dst[2], dst[3],
            ];
            hdr[ETH_HLEN..ETH_HLEN + 20].copy_from_slice(&h);
            20
        }
        IpFamily::V6 => {
            let ip = &mut hdr[ETH_HLEN..ETH_HLEN + 40];
            let word0 = (6u32 << 28) | (u32::from(tos) << 20) | (flow_hash as u32 & 0x000f_ffff);
            ip[0..4].copy_from_slice(&word0.to_be_bytes());
            ip[4..6].copy_from_slice(&(outer_len - 40).to_be_bytes());
            ip[6] = proto;
            ip[7] = OUTER_TTL;
            ip[8..24].copy_from_slice(&egress.src_v6);
            ip[24..40].copy_from_slice(&target.addr);
            40
        }
    };
    if target.encap == Encap::Gre {
        let gre = &mut hdr[ETH_HLEN + ip_hlen..ETH_HLEN + ip_hlen + GRE_HLEN];
        gre[0] = 0;
        gre[1] = 0;
        gre[2..4].copy_from_slice(&ethertype(c.family).to_be_bytes());
    }
    Rewritten::Forward {
        start: new_start,
        len: ETH_HLEN + usize::from(outer_len),
    }
}
