//! Classification: which VIP a packet is for, and the verdict vocabulary.
//!
//! A VIP is an address with a protocol (TCP, UDP, or any) and a port (or any
//! port). A packet matches the most specific VIP: an exact port beats "any port",
//! an exact protocol beats "any protocol". What is not for a VIP is either passed to
//! the host stack (ARP, IPv6 neighbour discovery and router messages, ICMP echo and
//! any traffic to an address that is not a VIP) or dropped with a counted reason.

use crate::wire::meta::ip_proto;
use crate::wire::{IpFamily, PacketMeta};

/// Why a packet was dropped. Every reason has its own counter
/// (`Telemetry::drops[reason as usize]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum DropReason {
    /// The frame failed to parse (truncated, bad header length, ...).
    Malformed = 0,
    /// The IPv4 header checksum is wrong (only when verification is enabled).
    BadChecksum = 1,
    /// For a VIP address but no VIP matches its protocol/port.
    NoVip = 2,
    /// The VIP has no backend with a non-zero weight and no existing flow entry.
    NoLiveBackend = 3,
    /// TTL or hop limit would reach zero at this hop.
    TtlExpired = 4,
    /// A non-first fragment whose first fragment was not seen (or was forgotten).
    FragmentNoState = 5,
    /// After encapsulation the packet exceeds the MTU and it is IPv4 without DF
    /// (we do not fragment the outer packet).
    TooBigNoDf = 6,
    /// After encapsulation an ICMP error exceeds the MTU (no ICMP about ICMP).
    TooBigIcmpError = 7,
    /// Not enough headroom in the buffer to prepend the encapsulation.
    NoHeadroom = 8,
    /// The rewrite found the frame inconsistent with its parse.
    RewriteFailed = 9,
    /// An ICMP error about a flow this node does not know and cannot place.
    IcmpErrorNoFlow = 10,
    /// Source address is a VIP, multicast or otherwise impossible for a client.
    Martian = 11,
    /// After encapsulation the packet exceeds the MTU and no ICMP error may be
    /// sent for it (a non-first fragment, or a source that must not get one).
    TooBigNoReply = 12,
}

impl DropReason {
    /// Number of reasons (size of the counter array).
    pub const COUNT: usize = 13;

    /// All reasons, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Malformed,
        Self::BadChecksum,
        Self::NoVip,
        Self::NoLiveBackend,
        Self::TtlExpired,
        Self::FragmentNoState,
        Self::TooBigNoDf,
        Self::TooBigIcmpError,
        Self::NoHeadroom,
        Self::RewriteFailed,
        Self::IcmpErrorNoFlow,
        Self::Martian,
        Self::TooBigNoReply,
    ];

    /// Stable snake_case name (for logs and metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadChecksum => "bad_checksum",
            Self::NoVip => "no_vip",
            Self::NoLiveBackend => "no_live_backend",
            Self::TtlExpired => "ttl_expired",
            Self::FragmentNoState => "fragment_no_state",
            Self::TooBigNoDf => "too_big_no_df",
            Self::TooBigIcmpError => "too_big_icmp_error",
            Self::NoHeadroom => "no_headroom",
            Self::RewriteFailed => "rewrite_failed",
            Self::IcmpErrorNoFlow => "icmp_error_no_flow",
            Self::Martian => "martian",
            Self::TooBigNoReply => "too_big_no_reply",
        }
    }
}

impl From<crate::rewrite::RewriteError> for DropReason {
    /// The drop counter of a rewrite that failed.
    fn from(e: crate::rewrite::RewriteError) -> Self {
        use crate::rewrite::RewriteError as E;
        match e {
            E::NoHeadroom => Self::NoHeadroom,
            E::TooBigNoDf => Self::TooBigNoDf,
            E::TooBigIcmpError => Self::TooBigIcmpError,
            E::TooBigNoReply => Self::TooBigNoReply,
            E::TtlExpired => Self::TtlExpired,
            E::Malformed => Self::RewriteFailed,
        }
    }
}

/// What the host does with a packet after the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Transmit the rewritten frame toward backend `backend` (global index).
    Forward {
        /// Backend index.
        backend: u16,
    },
    /// Transmit the frame (now an ICMP error) back toward the client.
    Reply,
    /// Hand the frame, unchanged, to the host stack.
    Host,
    /// Free the frame; the reason has been counted.
    Drop(DropReason),
}

/// Protocol selector of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, zerocopy::FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum VipProto {
    /// Any IP protocol (ports ignored unless TCP/UDP).
    #[default]
    Any = 0,
    /// TCP only.
    Tcp = ip_proto::TCP,
    /// UDP only.
    Udp = ip_proto::UDP,
}

/// One virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, zerocopy::FromZeros)]
#[repr(C)]
pub struct Vip {
    /// Address family.
    pub family: IpFamily,
    /// Protocol.
    pub proto: VipProto,
    /// Port; 0 = any port.
    pub port: u16,
    /// Address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
}

impl Vip {
    /// An IPv4 VIP.
    pub const fn v4(addr: [u8; 4], proto: VipProto, port: u16) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self {
            family: IpFamily::V4,
            proto,
            port,
            addr: a,
        }
    }

    /// An IPv6 VIP.
    pub const fn v6(addr: [u8; 16], proto: VipProto, port: u16) -> Self {
        Self {
            family: IpFamily::V6,
            proto,
            port,
            addr,
        }
    }
}

/// Result of matching a packet against the VIP list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipMatch {
    /// VIP index.
    Vip(u8),
    /// The destination is a VIP address, but no VIP has this protocol and port.
    AddrOnly,
    /// The destination is not a VIP address.
    None,
}

/// Finds the most specific VIP for `m` among `vips` (at most 255 are looked at).
#[inline]
pub fn match_vip(vips: &[Vip], m: &PacketMeta) -> VipMatch {
    match_vip_parts(vips, m.family, u128::from_ne_bytes(m.dst), m.proto, m.dport)
}

/// [`match_vip`] on the fields it reads: `dst` is the destination address as
/// `u128::from_ne_bytes` of its 16-byte form (IPv4: zero beyond four bytes). The
/// fast path calls this without building a [`PacketMeta`].
#[inline(always)]
pub fn match_vip_parts(
    vips: &[Vip],
    family: IpFamily,
    dst: u128,
    proto: u8,
    dport: u16,
) -> VipMatch {
    let ported = proto == ip_proto::TCP || proto == ip_proto::UDP;
    let mut best: Option<(u8, u8)> = None; // (specificity, index)
    let mut addr_hit = false;
    for (i, v) in vips.iter().enumerate().take(255) {
        // IPv4 addresses are zero beyond their four bytes on both sides, so one
        // 128-bit compare covers both families.
        if u128::from_ne_bytes(v.addr) != dst || v.family != family {
            continue;
        }
        addr_hit = true;
        let proto_ok = v.proto == VipProto::Any || v.proto as u8 == proto;
        let port_ok = v.port == 0 || (ported && v.port == dport);
        if !(proto_ok && port_ok) {
            continue;
        }
        let spec = u8::from(v.proto != VipProto::Any) * 2 + u8::from(v.port != 0);
        if spec == 3 {
            return VipMatch::Vip(i as u8);
        }
        if best.is_none_or(|(s, _)| spec > s) {
            best = Some((spec, i as u8));
        }
    }
    match best {
        Some((_, i)) => VipMatch::Vip(i),
        None if addr_hit => VipMatch::AddrOnly,
        None => VipMatch::None,
    }
}

/// ICMP (v4) and ICMPv6 messages that belong to the host stack even when sent to
/// a VIP address: echo, neighbour discovery, router messages, MLD.
#[inline]
pub fn is_host_icmp(m: &PacketMeta) -> bool {
    if m.icmp_error {
        return false;
    }
    matches!(m.proto, ip_proto::ICMP | ip_proto::ICMPV6)
}

/// A source address that no client can have: multicast, broadcast, unspecified
/// or loopback (IPv4 0/8, 127/8, 224/4 and above; IPv6 ::, ::1, ff00::/8).
#[inline]
pub fn is_martian_source(family: IpFamily, src: &[u8; 16]) -> bool {
    match family {
        IpFamily::V4 => is_martian_v4(src[0]),
        IpFamily::V6 => src[0] == 0xff || (src[..15].iter().all(|b| *b == 0) && src[15] <= 1),
    }
}

/// An IPv4 source whose first octet is `first` is impossible for a client:
/// "this network" (0/8), loopback (127/8), multicast and reserved (224/3).
#[inline(always)]
pub const fn is_martian_v4(first: u8) -> bool {
    first == 0 || first == 127 || first >= 224
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dst: [u8; 4], proto: u8, dport: u16) -> PacketMeta {
        let mut m = PacketMeta {
            proto,
            dport,
            ..PacketMeta::default()
        };
        m.dst[..4].copy_from_slice(&dst);
        m
    }

    #[test]
    fn most_specific_vip_wins() {
        let vips = [
            Vip::v4([198, 18, 255, 1], VipProto::Any, 0),
            Vip::v4([198, 18, 255, 1], VipProto::Tcp, 0),
            Vip::v4([198, 18, 255, 1], VipProto::Tcp, 443),
            Vip::v4([198, 18, 255, 2], VipProto::Udp, 53),
        ];
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 1], 6, 443)),
            VipMatch::Vip(2)
        );
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 1], 6, 80)),
            VipMatch::Vip(1)
        );
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 1], 17, 80)),
            VipMatch::Vip(0)
        );
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 2], 17, 53)),
            VipMatch::Vip(3)
        );
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 2], 6, 53)),
            VipMatch::AddrOnly
        );
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 3], 6, 80)),
            VipMatch::None
        );
    }

    #[test]
    fn v6_vip_does_not_match_v4_prefix() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 18, 255, 1]);
        let vips = [Vip::v6(a, VipProto::Tcp, 80)];
        assert_eq!(
            match_vip(&vips, &meta([198, 18, 255, 1], 6, 80)),
            VipMatch::None
        );
        let mut m = meta([198, 18, 255, 1], 6, 80);
        m.family = IpFamily::V6;
        assert_eq!(match_vip(&vips, &m), VipMatch::Vip(0));
    }

    #[test]
    fn martians() {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&[224, 0, 0, 1]);
        assert!(is_martian_source(IpFamily::V4, &s));
        s[..4].copy_from_slice(&[198, 18, 0, 1]);
        assert!(!is_martian_source(IpFamily::V4, &s));
        assert!(is_martian_source(IpFamily::V6, &[0; 16]));
        let mut l = [0u8; 16];
        l[15] = 1;
        assert!(is_martian_source(IpFamily::V6, &l));
        l[0] = 0x20;
        assert!(!is_martian_source(IpFamily::V6, &l));
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
