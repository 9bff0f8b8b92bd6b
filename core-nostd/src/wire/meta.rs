//! What the parser learns about one frame: a compact, `Copy` summary that the later
//! stages (classify, flow lookup, rewrite, telemetry) read instead of re-parsing.

/// IP version of the packet (of the inner, client-to-VIP packet for ICMP errors).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    zerocopy::FromZeros,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum IpFamily {
    /// IPv4 (0, so that zeroed memory is a valid value).
    #[default]
    V4 = 0,
    /// IPv6.
    V6 = 1,
}

/// Fragmentation state of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, zerocopy::FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FragInfo {
    /// The packet is a fragment (IPv4 MF set or offset non-zero; IPv6 fragment header).
    pub is_fragment: bool,
    /// The fragment has offset 0 and so carries the L4 header.
    pub is_first: bool,
    /// The IPv4 identification (zero-extended) or the IPv6 fragment identification.
    pub id: u32,
}

/// L2/L3/L4 summary of one frame, produced by [`crate::wire::parse::parse_frame`].
///
/// Addresses are stored in 16-byte arrays for both families; for IPv4 only the first
/// four bytes are used and the rest are zero.
///
/// For an ICMP error (destination unreachable, packet too big, time exceeded, ...)
/// sent to a VIP, `src`, `dst`, `sport`, `dport` and `proto` describe the flow that
/// the error belongs to, in the client-to-VIP direction: they are taken from the
/// embedded header with source and destination swapped. `icmp_error` is then set
/// and `outer_src` holds the address of the host that sent the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, zerocopy::FromZeros)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PacketMeta {
    /// Number of 802.1Q/802.1ad tags (0..=2).
    pub vlan_tags: u8,
    /// Offset of the IP header from the start of the frame.
    pub l3_offset: u16,
    /// Offset of the L4 header from the start of the frame (0 for a non-first fragment).
    pub l4_offset: u16,
    /// Length of the IP packet (header and payload) as the IP header declares it.
    pub l3_len: u16,
    /// IP version.
    pub family: IpFamily,
    /// L4 protocol (IPv6: after the extension headers), of the flow (see above).
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit of the outer packet.
    pub ttl: u8,
    /// IPv4 DF bit (always true for IPv6, which routers never fragment).
    pub dont_fragment: bool,
    /// Flow source address (the client).
    pub src: [u8; 16],
    /// Flow destination address (the VIP).
    pub dst: [u8; 16],
    /// Flow source port (0 for protocols without ports).
    pub sport: u16,
    /// Flow destination port (0 for protocols without ports).
    pub dport: u16,
    /// TCP flags (FIN=0x01, SYN=0x02, RST=0x04, PSH=0x08, ACK=0x10, ...); 0 otherwise.
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type when `proto` is ICMP and this is not an error; else 0.
    pub icmp_type: u8,
    /// Fragment state of the outer packet.
    pub frag: FragInfo,
    /// The frame is an ICMP error about a flow (see the type docs).
    pub icmp_error: bool,
    /// Source address of the outer packet (differs from `src` for ICMP errors).
    pub outer_src: [u8; 16],
}

/// TCP flag bits as they appear in [`PacketMeta::tcp_flags`] (the TCP view's
/// own constants).
pub use super::tcp::flags as tcp_flags;

/// What [`crate::wire::parse::parse_into`] found (the metadata itself is written
/// in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameKind {
    /// An IPv4 or IPv6 packet; the metadata was filled.
    Ip,
    /// ARP: for the host stack.
    Arp,
    /// Any other EtherType: for the host stack.
    Other(u16),
}

/// What a frame is, at the level the classifier needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Frame {
    /// An IPv4 or IPv6 packet, summarised.
    Ip(PacketMeta),
    /// ARP: for the host stack.
    Arp,
    /// Any other EtherType (LLDP, ...): for the host stack.
    Other(u16),
}

/// IP protocol numbers used by the core.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IPv4 in IP (IP-in-IP).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 in IP.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 no next header.
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 destination options.
    pub const IPV6_OPTS: u8 = 60;
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
}
