//! IPv6 fixed headers (RFC 8200 section 3). Extension headers are in
//! [`crate::wire::ipv6_ext`].
//!
//! [`Ipv6Packet::payload`] is bounded by the payload length field, not by the
//! buffer (Ethernet padding is excluded). Jumbograms (payload length 0 with a
//! hop-by-hop jumbo option) are not supported.

use super::checksum;
use super::{array, be16, be32, put16, put32, Error, Layer, Result};

/// An IPv6 address as bytes.
pub type Ipv6Addr = [u8; 16];

pub(crate) mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST.end;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the fixed header and the declared payload.
    /// Does not check the version.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.total_len() {
            Err(Error::Truncated(Layer::Ipv6))
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// IP version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Fixed header plus payload length, in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Next header (first extension header or the upper-layer protocol).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// Payload (extension headers and upper layer), bounded by the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// Sum of the pseudo header for an upper-layer checksum (RFC 8200 section 8.1)
    /// using the fixed-header addresses (a routing header's final destination is
    /// not looked up).
    #[inline]
    pub fn pseudo_header_sum(&self, next_header: u8, l4_len: u32) -> u64 {
        checksum::pseudo_header_v6(&self.src_addr(), &self.dst_addr(), next_header, l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_first_word(&mut self, w: u32) {
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets the version (low 4 bits used).
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let w = (self.first_word() & 0x0fff_ffff) | (u32::from(v & 0xf) << 28);
        self.set_first_word(w);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.first_word() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_first_word(w);
    }

    /// Sets the flow label (low 20 bits used).
    #[inline]
    pub fn set_flow_label(&mut self, fl: u32) {
        let w = (self.first_word() & 0xfff0_0000) | (fl & 0x000f_ffff);
        self.set_first_word(w);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Mutable payload (bounded by the payload length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The fields of an IPv6 fixed header, for building packets and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length (extension headers included).
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads a checked packet; the version must be 6.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed(Layer::Ipv6));
        }
        Ok(Ipv6Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Header length this repr emits (40).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header into the first 40 bytes of `p` (which must be at
    /// least that long).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        p.set_first_word(
            (6 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff),
        );
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IPv6 header, TC 0xb8, flow label 0x12345, UDP, 8-byte payload, 2001:db8::1 ->
    /// 2001:db8::2, plus the 8 payload bytes and 4 bytes of padding.
    const HDR: [u8; 52] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x08, 0x11, 0x40, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        1, 2, 3, 4, 5, 6, 7, 8, 0xee, 0xee, 0xee, 0xee,
    ];

    #[test]
    fn reads_fixed_header() {
        let p = Ipv6Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr()[15], 1);
        assert_eq!(p.dst_addr()[15], 2);
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let (h, _) = etherparse::Ipv6Header::from_slice(&HDR).unwrap();
        assert_eq!(h.flow_label.value(), p.flow_label());
        assert_eq!(h.traffic_class, p.traffic_class());
        assert_eq!(
            Ipv6Packet::new_checked(&HDR[..47]).err(),
            Some(Error::Truncated(Layer::Ipv6))
        );
        assert_eq!(
            Ipv6Packet::new_checked(&HDR[..39]).err(),
            Some(Error::Truncated(Layer::Ipv6))
        );
    }

    #[test]
    fn setters_keep_neighbours() {
        let mut b = HDR;
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_flow_label(0xfffff);
        p.set_traffic_class(0x01);
        p.set_version(6);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 1, 0xfffff)
        );
        p.set_flow_label(7);
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 1, 7));
    }

    prop_compose! {
        fn arb_repr()(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
                      next_header in any::<u8>(), payload_len in 0u16..1500,
                      hop_limit in any::<u8>(), traffic_class in any::<u8>(),
                      flow_label in 0u32..0x10_0000) -> Ipv6Repr {
            Ipv6Repr { src_addr: src, dst_addr: dst, next_header, payload_len, hop_limit,
                       traffic_class, flow_label }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(r in arb_repr()) {
            let mut buf = [0u8; 1540];
            let len = r.buffer_len() + usize::from(r.payload_len);
            r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..len]));
            let p = Ipv6Packet::new_checked(&buf[..len]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), r);
            let (h, _) = etherparse::Ipv6Header::from_slice(&buf[..len]).unwrap();
            prop_assert_eq!(h.source, r.src_addr);
            prop_assert_eq!(h.flow_label.value(), r.flow_label);
        }
    }
}
