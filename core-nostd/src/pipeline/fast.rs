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
use crate::wire::ethernet::{self, ether_type};
use crate::wire::ipv4::{self, field as v4f};
use crate::wire::meta::ip_proto;
use crate::wire::tcp::{self, field as tcpf};
use crate::wire::vlan;

const ETH_HLEN: usize = ethernet::HEADER_LEN;
const VLAN_HLEN: usize = ETH_HLEN + vlan::HEADER_LEN;
/// IPv4 header without options plus a TCP header without options.
const IP_TCP_MIN: usize = ipv4::HEADER_LEN + tcp::HEADER_LEN;
/// Where the TCP header starts in an IPv4 packet without options.
const TCP: usize = ipv4::HEADER_LEN;
/// The first byte of an IPv4 header without options: version 4, IHL 5.
const VER_IHL_NO_OPTIONS: u8 = 0x40 | (ipv4::HEADER_LEN / 4) as u8;

/// What pass 3 needs of a fast-path packet, its 5-tuple included (the key is
/// built from it only when the packet leaves the fast path), packed the way
/// pass 3 compares it.
///
/// 32 bytes (25 used): a slot's address is its index shifted.
#[derive(Clone, Copy, Debug, Default, zerocopy::FromZeros)]
#[repr(align(32))]
pub(super) struct FastMeta {
    /// Source address << 32 | source port << 16 | destination port: what a
    /// flow-table bucket holds of the key (see
    /// [`FlowTable::lookup_v4`](crate::flow::FlowTable::lookup_v4)).
    pub word: u64,
    /// `destination address << 32 | destination port`: the destination as
    /// the VIP memo compares it (the header's destination address and ports
    /// with the source port masked off; bits 16 to 31 are always 0).
    pub dest: u64,
    /// Offset of the IP header in the frame (14 or 18).
    pub l3_offset: u16,
    /// IP total length.
    pub l3_len: u16,
    /// TCP flags.
    pub flags: u8,
    /// IPv4 DF bit, where the header has it in its flags word
    /// ([`ipv4::FLAG_DF`] or 0), as the 32-bit value the tunnel ORs into
    /// its second word.
    pub df: u32,
}

impl FastMeta {
    /// The IPv4 destination, as a big-endian integer.
    #[inline(always)]
    pub fn dst(&self) -> u32 {
        (self.dest >> 32) as u32
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

/// What [`FastMeta::dest`] keeps of the destination address and the ports.
const DEST_MASK: u64 = 0xffff_ffff_0000_ffff;

/// [`is_martian_v4`] of every first octet: one load of the octet and one of
/// the table, where the compares took five instructions.
static MARTIAN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < t.len() {
        t[i] = is_martian_v4(i as u8);
        i += 1;
    }
    t
};

/// A big-endian `u16` at a constant offset of the fixed-size header window
/// (after inlining the offset is a constant and the bounds check folds away).
#[inline(always)]
fn be16_at<const N: usize>(w: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([w[at], w[at + 1]])
}

/// A big-endian `u64` at a constant offset of the fixed-size header window.
#[inline(always)]
fn be64_at<const N: usize>(w: &[u8; N], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&w[at..at + 8]);
    u64::from_be_bytes(b)
}

/// A big-endian `u32` at a constant offset of the fixed-size header window.
#[inline(always)]
fn be32_at<const N: usize>(w: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([w[at], w[at + 1], w[at + 2], w[at + 3]])
}

/// The fast path's parser (see the module docs): fills `out` and gives true,
/// or gives false (`out` untouched) and the packet takes the general path.
/// (Written in place: returned as an `Option`, the metadata went through the
/// stack.)
///
/// The headers are read through fixed-size windows of the frame, one length
/// test each: the Ethernet, IPv4 and TCP headers of an untagged frame (or
/// of a tagged one, four bytes longer); every field is then at a constant
/// offset with no bounds check of its own. A frame shorter than its window
/// cannot hold the headers, so the windows refuse nothing the parser takes.
#[inline(always)]
pub(super) fn parse(frame: &[u8], out: &mut FastMeta) -> bool {
    let Some(head) = frame.first_chunk::<{ ETH_HLEN + IP_TCP_MIN }>() else {
        return false;
    };
    // The untagged frame first, its ethertype compared as the bytes it is
    // (one compare; compared as an integer, LLVM makes one switch of it
    // and the tag's, and the untagged frame pays for both).
    const ET: usize = ethernet::field::ETHERTYPE;
    if [head[ET], head[ET + 1]] == ether_type::IPV4.to_be_bytes() {
        return parse_ip::<ETH_HLEN, { ETH_HLEN + IP_TCP_MIN }>(frame.len(), head, out);
    }
    if !ether_type::is_vlan_tpid(be16_at(head, ET)) {
        return false;
    }
    match frame.first_chunk::<{ VLAN_HLEN + IP_TCP_MIN }>() {
        Some(head) if be16_at(head, ETH_HLEN + vlan::field::ETHERTYPE) == ether_type::IPV4 => {
            parse_ip::<VLAN_HLEN, { VLAN_HLEN + IP_TCP_MIN }>(frame.len(), head, out)
        }
        _ => false,
    }
}

/// [`parse`] of the IPv4 and TCP headers at `L3` of a frame of `len` bytes
/// whose first `H = L3 + 40` bytes are `head` (so `len >= H`).
#[inline(always)]
fn parse_ip<const L3: usize, const H: usize>(
    len: usize,
    head: &[u8; H],
    out: &mut FastMeta,
) -> bool {
    const { assert!(H == L3 + IP_TCP_MIN) };
    let Some(ip) = head.last_chunk::<IP_TCP_MIN>() else {
        return false;
    };
    let tl = be16_at(ip, v4f::LENGTH);
    let flags_off = be16_at(ip, v4f::FLG_OFF);
    let ttl = ip[v4f::TTL];
    // Whole words, one load each: the source address, and the destination
    // address with the two ports after it.
    let src = be32_at(ip, v4f::SRC.start);
    const _: () =
        assert!(v4f::DST.end == TCP && tcpf::SRC_PORT == 0 && tcpf::DST_PORT == tcpf::SRC_PORT + 2);
    let dst_ports = be64_at(ip, v4f::DST.start);
    let doff = usize::from(ip[TCP + tcpf::DATA_OFF] >> 4) * 4;
    let tcp_flags = ip[TCP + tcpf::FLAGS];
    // The length tests as unsigned range compares (`len >= H`: `head` is
    // the frame's first `H` bytes): 40 <= tl <= len - L3, then
    // 20 <= doff <= tl - 20.
    let tl_past_min = usize::from(tl).wrapping_sub(IP_TCP_MIN);
    if ip[v4f::VER_IHL] != VER_IHL_NO_OPTIONS
        || tl_past_min > len.wrapping_sub(H)
        || flags_off & (ipv4::FLAG_MF | ipv4::OFFSET_MASK) != 0
        || ip[v4f::PROTOCOL] != ip_proto::TCP
        || ttl <= 1
        || MARTIAN[usize::from(ip[v4f::SRC.start])]
        || doff.wrapping_sub(tcp::HEADER_LEN) > tl_past_min
    {
        return false;
    }
    *out = FastMeta {
        word: u64::from(src) << 32 | (dst_ports & 0xffff_ffff),
        dest: dst_ports & DEST_MASK,
        // L3 <= 18.
        l3_offset: L3 as u16,
        l3_len: tl,
        flags: tcp_flags,
        df: u32::from(flags_off & ipv4::FLAG_DF),
    };
    true
}

/// The IPv4 header (without options, at `l3`) sums to zero.
#[inline(always)]
pub(super) fn header_checksum_ok(frame: &[u8], l3: usize) -> bool {
    frame
        .get(l3..l3 + ipv4::HEADER_LEN)
        .is_some_and(|h| crate::wire::checksum::checksum(h) == 0)
}
