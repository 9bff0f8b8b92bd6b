//! The fast path: the packets that dominate real traffic, handled with only the
//! work they need.
//!
//! # Which packets
//!
//! [`parse`] accepts an Ethernet frame with no VLAN tag or one, carrying IPv4
//! without options (IHL 5), not a fragment (MF clear, offset 0; DF either way),
//! TCP with a complete header, a TTL above 1 and a source that is not martian.
//! Everything else (IPv6, options, two tags, fragments, ICMP, UDP, anything
//! malformed) is left to the general path, untouched.
//!
//! In pass 3 [`Lane::finish_fast`](super::Lane) then needs a VIP that is not
//! stateless Maglev and a correct header checksum when verification is on.
//! On a flow-table hit on a backend that is not down, it makes the state
//! change the packet brings, as the general path does (a FIN or RST closes
//! the flow, the client's ACK completes a handshake), unless that change
//! makes a sync record or restarts the flow (a SYN on a closing flow); on a
//! miss, it places the packet as the general path does (a SYN starts a flow,
//! another segment is placed by Maglev). It then counts the packet as the
//! general path does and rewrites it through the same rewrite code minus the
//! frame check the parser already made. When any of these fails after the
//! lookup (a change that needs the full metadata, a dead backend, a packet
//! too big for the link), the packet is parsed in full and continues on the
//! general path from where it got to, so nothing is done twice.
//!
//! # The contract
//!
//! For every input, the fast path gives the same output bytes, frame offsets,
//! verdict and counters (reservoirs included) as the general path; the
//! differential tests and the `pipeline` fuzz target check this against a worker
//! with the fast path off ([`Worker::set_fast_path`](super::Worker::set_fast_path)).

use crate::classify::is_martian_v4;
use crate::flow::FlowKey;
use crate::wire::ethernet::ether_type;
use crate::wire::meta::ip_proto;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 18;
/// IPv4 header without options plus a TCP header without options.
const IP_TCP_MIN: usize = 40;

/// What pass 3 needs of a fast-path packet, its 5-tuple included (the key is
/// built from it only when the packet leaves the fast path), packed the way
/// pass 3 compares it.
#[derive(Clone, Copy, Debug, Default, zerocopy::FromZeros)]
pub(super) struct FastMeta {
    /// Source address << 32 | source port << 16 | destination port: what a
    /// flow-table bucket holds of the key (see
    /// [`FlowTable::lookup_v4`](crate::flow::FlowTable::lookup_v4)).
    pub word: u64,
    /// `1 << 48 | destination address << 16 | destination port`: the
    /// destination as the VIP memo compares it (never 0).
    pub dest: u64,
    /// Offset of the IP header in the frame (14 or 18).
    pub l3_offset: u16,
    /// IP total length.
    pub l3_len: u16,
    /// TCP flags.
    pub flags: u8,
    /// IPv4 DF bit.
    pub df: bool,
}

impl FastMeta {
    /// The IPv4 destination, as a big-endian integer.
    #[inline(always)]
    pub fn dst(&self) -> u32 {
        (self.dest >> 16) as u32
    }

    /// The TCP destination port.
    #[inline(always)]
    pub fn dport(&self) -> u16 {
        self.dest as u16
    }

    /// The packet's flow key.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        FlowKey::v4_from_word(self.word, self.dst(), ip_proto::TCP)
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[h, l]) => u16::from_be_bytes([h, l]),
        _ => 0,
    }
}

/// The fast path's parser (see the module docs): fills `out` and gives true,
/// or gives false (`out` untouched) and the packet takes the general path.
/// (Written in place: returned as an `Option`, the metadata went through the
/// stack.)
#[inline(always)]
pub(super) fn parse(frame: &[u8], out: &mut FastMeta) -> bool {
    let l3 = match be16(frame, 12) {
        ether_type::IPV4 => ETH_HLEN,
        t if ether_type::is_vlan_tpid(t) && be16(frame, 16) == ether_type::IPV4 => VLAN_HLEN,
        _ => return false,
    };
    let Some(ip) = frame
        .get(l3..l3 + IP_TCP_MIN)
        .and_then(|ip| <&[u8; IP_TCP_MIN]>::try_from(ip).ok())
    else {
        return false;
    };
    let tl = u16::from_be_bytes([ip[2], ip[3]]);
    let flags_off = u16::from_be_bytes([ip[6], ip[7]]);
    let ttl = ip[8];
    // Whole words, each one load: the source address and the two ports.
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let ports = u32::from_be_bytes([ip[20], ip[21], ip[22], ip[23]]);
    let doff = usize::from(ip[32] >> 4) * 4;
    let tcp_flags = ip[33];
    if ip[0] != 0x45
        || usize::from(tl) < IP_TCP_MIN
        || l3 + usize::from(tl) > frame.len()
        || flags_off & 0x3fff != 0
        || ip[9] != ip_proto::TCP
        || ttl <= 1
        || is_martian_v4((src >> 24) as u8)
        || doff < 20
        || doff > usize::from(tl) - 20
    {
        return false;
    }
    let dport = ports & 0xffff;
    *out = FastMeta {
        word: u64::from(src) << 32 | u64::from(ports),
        dest: 1 << 48 | u64::from(dst) << 16 | u64::from(dport),
        // l3 <= 18.
        l3_offset: l3 as u16,
        l3_len: tl,
        flags: tcp_flags,
        df: flags_off & 0x4000 != 0,
    };
    true
}

/// The IPv4 header (20 bytes at `l3`) sums to zero.
#[inline(always)]
pub(super) fn header_checksum_ok(frame: &[u8], l3: usize) -> bool {
    frame
        .get(l3..l3 + 20)
        .is_some_and(|h| crate::wire::checksum::checksum(h) == 0)
}
