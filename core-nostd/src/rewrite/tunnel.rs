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
    IPV4_HLEN, IPV6_HLEN,
};
use crate::wire::ethernet::{ether_type, field as ethf};
use crate::wire::ipv4::{field as v4f, FLAG_DF};
use crate::wire::ipv6::field as v6f;
use crate::wire::meta::ip_proto;
use crate::wire::IpFamily;

/// Hop limit of the outer header.
const OUTER_TTL: u8 = 64;
/// Where the outer IP header starts in the new frame.
const OUTER: usize = ETH_HLEN;

#[inline]
const fn ethertype(family: IpFamily) -> u16 {
    match family {
        IpFamily::V4 => ether_type::IPV4,
        IpFamily::V6 => ether_type::IPV6,
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
        IpFamily::V4 => ip[v4f::DSCP_ECN],
        // The traffic class straddles the first two bytes.
        IpFamily::V6 => (ip[v6f::VER_TC_FLOW] << 4) | (ip[v6f::VER_TC_FLOW + 1] >> 4),
    }
}

/// Length of [`TunnelV4::hdr`]: the new Ethernet header and the outer IPv4
/// header.
const TUNNEL_V4_HDR: usize = ETH_HLEN + IPV4_HLEN;

/// What an IPv4 tunnel's headers toward one backend share across packets,
/// built when the backend or the egress changes
/// ([`Service`](crate::service::Service) keeps one per backend in step with
/// both): the Ethernet header and the outer IPv4 header with the per-packet
/// fields (TOS, length, identification, DF, protocol, checksum) zero, and the
/// ones'-complement sum of the header's constant 16-bit words (version and
/// IHL, TTL, source, destination) and of IP-in-IP's protocol, folded to 16
/// bits. The fast path copies its constant bytes (the Ethernet header, the
/// version byte, the addresses), writes the per-packet fields around them and
/// adds their words to the sum (a GRE tunnel the difference of its
/// protocol); the result is what [`encap`] writes.
///
/// One cache line each (42 bytes used): a backend's template never straddles
/// two, and its address is the index shifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, zerocopy::FromZeros)]
#[repr(C, align(64))]
pub struct TunnelV4 {
    hdr: [u8; TUNNEL_V4_HDR],
    /// The folded sum (below 2^16), as a `u32`: the fast path adds it from
    /// memory.
    sum: u32,
    /// The slot holds a backend that is not down (the fast path may finish
    /// a flow-table hit on it); set by the `Service`, false in a new template.
    pub(crate) up: bool,
    /// The backend is reached over IPv4 (the template applies to it); set
    /// by the `Service`, false in a new template.
    pub(crate) v4: bool,
}

impl TunnelV4 {
    /// The headers from `egress` toward the backend at `dst` behind `dst_mac`.
    pub fn new(egress: &Egress, dst_mac: &[u8; 6], dst: [u8; 4]) -> Self {
        let mut hdr = [0u8; TUNNEL_V4_HDR];
        hdr[ethf::DST].copy_from_slice(dst_mac);
        hdr[ethf::SRC].copy_from_slice(&egress.src_mac);
        hdr[ethf::ETHERTYPE..ethf::ETHERTYPE + 2].copy_from_slice(&ether_type::IPV4.to_be_bytes());
        let ip = &mut hdr[OUTER..];
        ip[v4f::VER_IHL] = 0x45;
        ip[v4f::TTL] = OUTER_TTL;
        ip[v4f::SRC].copy_from_slice(&egress.src_v4);
        ip[v4f::DST].copy_from_slice(&dst);
        // IP-in-IP's protocol is the low byte of its word (TTL first).
        let sum = crate::wire::checksum::sum(0, ip) + u64::from(ip_proto::IPIP);
        Self {
            hdr,
            sum: u32::from(crate::wire::checksum::fold(sum)),
            up: false,
            v4: false,
        }
    }
}

/// The five words of an outer IPv4 header without options (TOS copied, the
/// identification, DF copied, TTL 64, `proto`, the checksum over the ten
/// 16-bit words computed from the values), source `egress.src_v4`.
#[inline(always)]
fn outer_v4(
    tos: u8,
    outer_len: u16,
    id: u16,
    df: bool,
    proto: u8,
    egress: &Egress,
    dst: [u8; 4],
) -> [u32; 5] {
    let flags = if df { u32::from(FLAG_DF) } else { 0 };
    let src = u32::from_be_bytes(egress.src_v4);
    let dst = u32::from_be_bytes(dst);
    let w0 = 0x4500_0000 | (u32::from(tos) << 16) | u32::from(outer_len);
    let w1 = (u32::from(id) << 16) | flags;
    let w2 = (u32::from(OUTER_TTL) << 24) | (u32::from(proto) << 16);
    // Ones'-complement sum of the ten 16-bit words, from the values, summed
    // as five 32-bit words and folded (RFC 1071: the same sum; it is never
    // zero, w0 is not).
    let mut acc = u64::from(w0) + u64::from(w1) + u64::from(w2) + u64::from(src) + u64::from(dst);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    [w0, w1, w2 | u32::from(!(acc as u16)), src, dst]
}

/// The fast path's IPv4-in-IPv4 / GRE encapsulation of an IPv4 packet
/// without options at `l3`, `l3_len` bytes, that lies in `buf` (the caller
/// proved it), with DF `df` as its header's flags word has it ([`FLAG_DF`]
/// or 0, the caller's mask; it is copied as it is): exactly what
/// [`super::forward`] does for it (MTU check,
/// headroom check, TTL decrement, the headers of [`encap`]) through one
/// window of `W` bytes, from the new frame start to the end of the inner IP
/// header, so that every access is at a fixed offset after one bounds check.
/// `W` is 14 + 20 (+ 4 with GRE) + 20. The headers are the backend's
/// template `tunnel` (built from the same egress) with the per-packet words
/// patched in. `None`: too big for the link, nothing written.
#[inline(always)]
pub(crate) fn encap_v4_fast<const W: usize>(
    buf: &mut [u8],
    l3: usize,
    l3_len: usize,
    df: u32,
    tunnel: &TunnelV4,
    mtu: u16,
    flow_hash: u64,
) -> Option<Result<Rewritten, RewriteError>> {
    let ovh = W - ETH_HLEN - IPV4_HLEN;
    if l3_len + ovh > usize::from(mtu) {
        return None;
    }
    let (new_start, short) = l3.overflowing_sub(ETH_HLEN + ovh);
    if short {
        return Some(Err(RewriteError::NoHeadroom));
    }
    // In bounds whenever the caller's proof holds (new_start + W = l3 + 20);
    // tested as `new_start <= len - W`, which cannot overflow.
    let fits = buf
        .len()
        .checked_sub(W)
        .is_some_and(|last| new_start <= last);
    let Some(w) = buf
        .get_mut(new_start..)
        .and_then(|t| t.first_chunk_mut::<W>())
        .filter(|_| fits)
    else {
        return Some(Err(RewriteError::Malformed));
    };
    let i = ETH_HLEN + ovh;
    // The inner TTL (above 1: the caller proved it), and the inner checksum
    // updated for it (RFC 1624).
    w[i + v4f::TTL] = w[i + v4f::TTL].wrapping_sub(1);
    let csum = crate::wire::checksum::ttl_decrement_field([
        w[i + v4f::CHECKSUM],
        w[i + v4f::CHECKSUM + 1],
    ]);
    w[i + v4f::CHECKSUM..i + v4f::CHECKSUM + 2].copy_from_slice(&csum);
    let gre = ovh > IPV4_HLEN;
    let proto = if gre { ip_proto::GRE } else { ip_proto::IPIP };
    // Outer packet length <= MTU <= u16::MAX.
    let outer_len = (ovh + l3_len) as u16;
    let tos = w[i + v4f::DSCP_ECN];
    let id = flow_hash as u16;
    // (Masked by the caller.)
    let flags = df;
    // The template's sum (IP-in-IP's protocol in it) plus the per-packet
    // 16-bit words (TOS is the low byte of its word) and what GRE's protocol
    // adds to IP-in-IP's: below 2^18, never zero (the template's is not).
    let acc = tunnel.sum
        + u32::from(tos)
        + u32::from(outer_len)
        + u32::from(id)
        + flags
        + u32::from(proto - ip_proto::IPIP);
    let sum = fold_once(acc);
    let w1 = (u32::from(id) << 16) | flags;
    // The checksum is the complement of `sum` (below 2^16): an XOR with
    // ones in the low half.
    let w2 = ((u32::from(OUTER_TTL) << 24) | (u32::from(proto) << 16) | 0xffff) ^ sum;
    // The template's Ethernet header and version byte, then TOS and length
    // (no first word to assemble), the two words, and the addresses.
    // (16 bytes as one 128-bit value, which is stored whole: a copy of the
    // 15 bytes kept was two overlapping 8-byte moves.)
    let mut head = [0u8; 16];
    head.copy_from_slice(&tunnel.hdr[..16]);
    let head = u128::from_ne_bytes(head);
    if let Some(d) = w.first_chunk_mut::<16>() {
        *d = head.to_ne_bytes();
    }
    w[OUTER + v4f::DSCP_ECN] = tos;
    w[OUTER + v4f::LENGTH..OUTER + v4f::LENGTH + 2].copy_from_slice(&outer_len.to_be_bytes());
    w[OUTER + 4..OUTER + 8].copy_from_slice(&w1.to_be_bytes());
    w[OUTER + 8..OUTER + 12].copy_from_slice(&w2.to_be_bytes());
    const ADDRS: usize = OUTER + v4f::SRC.start;
    w[ADDRS..TUNNEL_V4_HDR].copy_from_slice(&tunnel.hdr[ADDRS..]);
    if gre {
        // Flags and version 0, then the protocol type.
        const G: usize = OUTER + IPV4_HLEN;
        w[G..G + GRE_HLEN].copy_from_slice(&u32::from(ether_type::IPV4).to_be_bytes());
    }
    Some(Ok(Rewritten::Forward {
        start: new_start,
        len: ETH_HLEN + usize::from(outer_len),
    }))
}

/// The 16-bit ones'-complement sum of the 16-bit words summed in `acc`, in
/// one step (Linux's `csum_fold`): the high half of `acc` plus its halves
/// swapped is the sum of the halves with the carry out of the low half added
/// back. Below 2^16.
#[inline(always)]
fn fold_once(acc: u32) -> u32 {
    acc.wrapping_add(acc.rotate_right(16)) >> 16
}

/// Writes Ethernet + outer IP + [GRE] headers at `new_start`, in front of the inner
/// packet at `c.l3`. Requires `new_start + 14 + overhead == c.l3` (see [`new_start`])
/// and that the outer packet length fits the MTU (so it fits in 16 bits).
///
/// The headers are assembled in registers and stored as whole words into one
/// fixed-size window (one bounds check): byte-by-byte assembly and reading the
/// header back for its checksum were the dominant costs of this stage.
#[inline(always)]
pub(super) fn encap(
    buf: &mut [u8],
    c: &Checked,
    new_start: usize,
    target: &Target,
    egress: &Egress,
    flow_hash: u64,
) -> Result<Rewritten, RewriteError> {
    let ovh = overhead(target.encap, target.family);
    let tos = match buf.get(c.l3..c.l3 + 2) {
        Some(ip) => inner_tos(ip, c.family),
        None => 0,
    };
    let proto = match (target.encap, c.family) {
        (Encap::Gre, _) => ip_proto::GRE,
        (_, IpFamily::V4) => ip_proto::IPIP,
        (_, IpFamily::V6) => ip_proto::IPV6,
    };
    // Outer packet length <= MTU <= u16::MAX, checked by the caller.
    let outer_len = (ovh + c.l3_len) as u16;
    let gre = (u32::from(ethertype(c.family))).to_be_bytes();
    let eth_word = |w: &mut [u8]| {
        w[ethf::DST].copy_from_slice(&target.dst_mac);
        w[ethf::SRC].copy_from_slice(&egress.src_mac);
        w[ethf::ETHERTYPE..ethf::ETHERTYPE + 2]
            .copy_from_slice(&ethertype(target.family).to_be_bytes());
    };
    match target.family {
        IpFamily::V4 => {
            const LEN: usize = ETH_HLEN + IPV4_HLEN + GRE_HLEN;
            let w: &mut [u8; LEN] = buf
                .get_mut(new_start..new_start + LEN)
                .and_then(|w| w.try_into().ok())
                .ok_or(RewriteError::Malformed)?;
            let dst = [
                target.addr[0],
                target.addr[1],
                target.addr[2],
                target.addr[3],
            ];
            let [w0, w1, w2, src, dst] =
                outer_v4(tos, outer_len, flow_hash as u16, c.df, proto, egress, dst);
            eth_word(&mut w[..ETH_HLEN]);
            w[OUTER..OUTER + 4].copy_from_slice(&w0.to_be_bytes());
            w[OUTER + 4..OUTER + 8].copy_from_slice(&w1.to_be_bytes());
            w[OUTER + 8..OUTER + 12].copy_from_slice(&w2.to_be_bytes());
            w[OUTER + v4f::SRC.start..OUTER + v4f::SRC.end].copy_from_slice(&src.to_be_bytes());
            w[OUTER + v4f::DST.start..OUTER + v4f::DST.end].copy_from_slice(&dst.to_be_bytes());
            if target.encap == Encap::Gre {
                w[OUTER + IPV4_HLEN..LEN].copy_from_slice(&gre);
            }
        }
        IpFamily::V6 => {
            const LEN: usize = ETH_HLEN + IPV6_HLEN + GRE_HLEN;
            let w: &mut [u8; LEN] = buf
                .get_mut(new_start..new_start + LEN)
                .and_then(|w| w.try_into().ok())
                .ok_or(RewriteError::Malformed)?;
            let word0 = (6u32 << 28) | (u32::from(tos) << 20) | (flow_hash as u32 & 0x000f_ffff);
            // Payload length, next header, hop limit.
            let word1 = (u32::from(outer_len - IPV6_HLEN as u16) << 16)
                | (u32::from(proto) << 8)
                | u32::from(OUTER_TTL);
            eth_word(&mut w[..ETH_HLEN]);
            w[OUTER + v6f::VER_TC_FLOW..OUTER + v6f::LENGTH].copy_from_slice(&word0.to_be_bytes());
            w[OUTER + v6f::LENGTH..OUTER + v6f::SRC.start].copy_from_slice(&word1.to_be_bytes());
            w[OUTER + v6f::SRC.start..OUTER + v6f::SRC.end].copy_from_slice(&egress.src_v6);
            w[OUTER + v6f::DST.start..OUTER + v6f::DST.end].copy_from_slice(&target.addr);
            if target.encap == Encap::Gre {
                w[OUTER + IPV6_HLEN..LEN].copy_from_slice(&gre);
            }
        }
    }
    Ok(Rewritten::Forward {
        start: new_start,
        len: ETH_HLEN + usize::from(outer_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::SplitMix64;

    /// The fast path's encapsulation from a backend's template writes what
    /// the general one writes, for any egress, backend, inner header, length,
    /// DF and hash (the extremes included).
    #[test]
    fn template_encap_matches_the_general_encap() {
        const L3: usize = 64;
        // Frames up to 64 KiB, copied and compared byte by byte: few under Miri.
        let rounds = if cfg!(miri) { 30 } else { 20_000u32 };
        let mut g = SplitMix64::new(11);
        for i in 0..rounds {
            let (r, q, t) = (g.next_u64(), g.next_u64(), g.next_u64());
            let ext = i % 4 == 0;
            let egress = Egress {
                src_mac: [r as u8, (r >> 8) as u8, 3, 4, 5, (r >> 16) as u8],
                src_v4: if ext {
                    [0xff; 4]
                } else {
                    (r as u32).to_be_bytes()
                },
                src_v6: [0; 16],
                mtu: u16::MAX,
            };
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&if ext {
                [0xff; 4]
            } else {
                ((r >> 32) as u32).to_be_bytes()
            });
            let target = Target {
                encap: if q & 1 == 0 { Encap::IpIp } else { Encap::Gre },
                dst_mac: [(q >> 8) as u8, 1, 2, 3, 4, (q >> 16) as u8],
                family: IpFamily::V4,
                addr,
            };
            let l3_len = match i % 3 {
                0 => 40 + (q >> 24) as usize % 1400,
                1 => usize::from(u16::MAX) - 44,
                _ => 40,
            };
            let df = q & 2 != 0;
            let hash = if ext { u64::MAX } else { t };
            let mut buf = std::vec![0u8; L3 + l3_len];
            for (k, x) in buf[L3..L3 + 20].iter_mut().enumerate() {
                *x = (t >> (k % 8 * 8)) as u8;
            }
            buf[L3] = 0x45;
            buf[L3 + v4f::TTL] = buf[L3 + v4f::TTL].max(2);
            let mut general = buf.clone();
            let c = Checked {
                start: L3 - ETH_HLEN,
                l3: L3,
                l3_len,
                family: IpFamily::V4,
                df,
            };
            let ovh = overhead(target.encap, IpFamily::V4);
            let start = new_start(&c, ovh).expect("headroom");
            crate::rewrite::hop::decrement_ttl(&mut general, &c);
            let want = encap(&mut general, &c, start, &target, &egress, hash);
            let tunnel = TunnelV4::new(
                &egress,
                &target.dst_mac,
                [addr[0], addr[1], addr[2], addr[3]],
            );
            let df_bit = if df { u32::from(FLAG_DF) } else { 0 };
            let got = match target.encap {
                Encap::Gre => {
                    encap_v4_fast::<58>(&mut buf, L3, l3_len, df_bit, &tunnel, egress.mtu, hash)
                }
                _ => encap_v4_fast::<54>(&mut buf, L3, l3_len, df_bit, &tunnel, egress.mtu, hash),
            };
            assert_eq!(got, Some(want), "{i}");
            assert_eq!(buf, general, "{i}");
        }
    }

    #[test]
    fn one_fold_is_two_folds_below_2_18() {
        for acc in 0..1u32 << 18 {
            let mut two = (acc & 0xffff) + (acc >> 16);
            two = (two & 0xffff) + (two >> 16);
            assert_eq!(fold_once(acc), two, "{acc:#x}");
        }
    }

    #[test]
    fn outer_v4_header_checksum_verifies_and_is_the_16_bit_sum() {
        let mut g = SplitMix64::new(7);
        let mut egress = Egress::default();
        for i in 0..20_000u32 {
            let r = g.next_u64();
            let q = g.next_u64();
            egress.src_v4 = (r as u32).to_be_bytes();
            let dst = ((r >> 32) as u32).to_be_bytes();
            // The extremes as well as random values.
            let len = match i % 3 {
                0 => q as u16,
                1 => u16::MAX,
                _ => 20,
            };
            let proto = if q & 1 == 0 {
                ip_proto::IPIP
            } else {
                ip_proto::GRE
            };
            let words = outer_v4(
                (q >> 8) as u8,
                len,
                (q >> 16) as u16,
                q & 2 != 0,
                proto,
                &egress,
                dst,
            );
            let mut h = [0u8; 20];
            for (k, w) in words.iter().enumerate() {
                h[4 * k..4 * k + 4].copy_from_slice(&w.to_be_bytes());
            }
            assert_eq!(crate::wire::checksum::checksum(&h), 0, "{h:02x?}");
            // And the same value as a sum of the ten 16-bit words.
            let mut acc: u64 = 0;
            for x in [
                words[0],
                words[1],
                words[2] & 0xffff_0000,
                words[3],
                words[4],
            ] {
                acc += u64::from(x >> 16) + u64::from(x & 0xffff);
            }
            acc = (acc & 0xffff) + (acc >> 16);
            acc = (acc & 0xffff) + (acc >> 16);
            assert_eq!(words[2] & 0xffff, u32::from(!(acc as u16)));
        }
    }
}
