//! IPv4 headers (RFC 791), options included.
//!
//! [`Ipv4Packet::check_len`] accepts a buffer longer than the total length (Ethernet
//! pads short frames); [`Ipv4Packet::payload`] is bounded by the total length.

use super::checksum;
use super::{array, be16, put16, Error, Layer, Result};

/// An IPv4 address as bytes.
pub type Ipv4Addr = [u8; 4];

pub(crate) mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = field::DST.end;

pub(crate) const FLAG_DF: u16 = 0x4000;
pub(crate) const FLAG_MF: u16 = 0x2000;
pub(crate) const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the fixed header, that IHL ≥ 5, and that the
    /// options and the total length fit in the buffer. Does not check the version.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated(Layer::Ipv4));
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed(Layer::Ipv4));
        }
        let tl = usize::from(self.total_len());
        if tl < hl {
            return Err(Error::Malformed(Layer::Ipv4));
        }
        if len < tl {
            return Err(Error::Truncated(Layer::Ipv4));
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x3
    }

    /// Total length (header and payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units (multiply by 8 for bytes).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK
    }

    /// True when the packet is a fragment (MF set or offset non-zero).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// Options (bytes 20..header_len).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Payload, from the end of the header to the end of the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// True when the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// Sum of the pseudo header for an upper-layer checksum over `l4_len` bytes.
    #[inline]
    pub fn pseudo_header_sum(&self, l4_len: u32) -> u64 {
        checksum::pseudo_header_v4(&self.src_addr(), &self.dst_addr(), self.protocol(), l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version (low 4 bits used).
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets the header length in bytes (must be a multiple of 4, at most 60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP (low 6 bits used).
    #[inline]
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x3) | (v << 2);
    }

    /// Sets the ECN (low 2 bits used).
    #[inline]
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & !0x3) | (v & 0x3);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    fn set_flg_off_bits(&mut self, mask: u16, bits: u16) {
        let old = be16(self.buffer.as_ref(), field::FLG_OFF);
        put16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            (old & !mask) | (bits & mask),
        );
    }

    /// Sets the don't-fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, v: bool) {
        self.set_flg_off_bits(FLAG_DF, if v { FLAG_DF } else { 0 });
    }

    /// Sets the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, v: bool) {
        self.set_flg_off_bits(FLAG_MF, if v { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset in 8-byte units (low 13 bits used).
    #[inline]
    pub fn set_frag_offset(&mut self, v: u16) {
        self.set_flg_off_bits(OFFSET_MASK, v);
    }

    /// Sets the TTL.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    /// Mutable payload (bounded by the total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }

    /// Computes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }
}

/// The fields of an option-less IPv4 header, for building packets and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP (6 bits) and ECN (2 bits), as the second header byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in 8-byte units (13 bits).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Reads a checked packet: version must be 4 and the checksum must verify.
    /// Options are skipped (not represented).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.version() != 4 {
            return Err(Error::Malformed(Layer::Ipv4));
        }
        if !p.verify_checksum() {
            return Err(Error::Checksum(Layer::Ipv4));
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            // check_len guarantees total_len >= header_len.
            payload_len: p.total_len() - p.header_len() as u16,
            ttl: p.ttl(),
            tos: p.buffer.as_ref()[field::DSCP_ECN],
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    /// Header length this repr emits (20: no options).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (with checksum) into the first 20 bytes of `p`.
    ///
    /// The buffer must be at least [`buffer_len`](Self::buffer_len) long; the total
    /// length saturates at 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv4Packet<T>) {
        p.set_version(4);
        p.set_header_len(HEADER_LEN);
        p.buffer.as_mut()[field::DSCP_ECN] = self.tos;
        p.set_total_len(self.payload_len.saturating_add(HEADER_LEN as u16));
        p.set_ident(self.ident);
        put16(p.buffer.as_mut(), field::FLG_OFF, 0);
        p.set_dont_frag(self.dont_frag);
        p.set_more_frags(self.more_frags);
        p.set_frag_offset(self.frag_offset);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IPv4 header with a 4-byte option (router alert), UDP payload of 8 bytes,
    /// followed by 2 bytes of padding that are not part of the packet.
    const WITH_OPTIONS: [u8; 34] = [
        0x46, 0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x01, 0x11, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x01, 0xe0, 0x00, 0x00, 0x16, 0x94, 0x04, 0x00, 0x00, // router alert
        0x04, 0xd2, 0x16, 0x2e, 0x00, 0x08, 0x00, 0x00, // UDP
        0xaa, 0xbb, // padding
    ];

    fn with_options() -> [u8; 34] {
        let mut b = WITH_OPTIONS;
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn reads_header_with_options() {
        let b = with_options();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.total_len(), 32);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 1);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), [10, 0, 0, 1]);
        assert_eq!(p.dst_addr(), [224, 0, 0, 22]);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload().len(), 8);
        assert!(p.verify_checksum());
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 8);
    }

    #[test]
    fn checksum_matches_etherparse() {
        let b = with_options();
        let (h, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        assert_eq!(
            h.header_checksum,
            Ipv4Packet::new_unchecked(&b[..]).checksum()
        );
        assert_eq!(h.calc_header_checksum(), h.header_checksum);
    }

    #[test]
    fn check_len_errors() {
        let b = with_options();
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).err(),
            Some(Error::Truncated(Layer::Ipv4))
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..31]).err(),
            Some(Error::Truncated(Layer::Ipv4))
        );
        let mut bad = b;
        bad[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Error::Malformed(Layer::Ipv4))
        );
        let mut bad = b;
        bad[3] = 20; // total length below header length
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Error::Malformed(Layer::Ipv4))
        );
        let mut bad = b;
        bad[8] = 2;
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bad[..])).err(),
            Some(Error::Checksum(Layer::Ipv4))
        );
    }

    #[test]
    fn fragment_fields() {
        let mut b = with_options();
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_more_frags(true);
        p.set_frag_offset(185);
        p.set_dont_frag(false);
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 185);
        p.set_more_frags(false);
        assert!(p.is_fragment());
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
    }

    prop_compose! {
        fn arb_repr()(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
                      payload_len in 0u16..2000, ttl in any::<u8>(), tos in any::<u8>(),
                      ident in any::<u16>(), dont_frag in any::<bool>(),
                      more_frags in any::<bool>(), frag_offset in 0u16..0x2000) -> Ipv4Repr {
            Ipv4Repr { src_addr: src, dst_addr: dst, protocol, payload_len, ttl, tos, ident,
                       dont_frag, more_frags, frag_offset }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(r in arb_repr()) {
            let mut buf = [0u8; 2100];
            let len = r.buffer_len() + usize::from(r.payload_len);
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..len]);
            r.emit(&mut p);
            let p = Ipv4Packet::new_checked(&buf[..len]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), r);
            let (h, _) = etherparse::Ipv4Header::from_slice(&buf[..len]).unwrap();
            prop_assert_eq!(h.source, r.src_addr);
            prop_assert_eq!(h.total_len, r.payload_len + 20);
            prop_assert_eq!(h.calc_header_checksum(), h.header_checksum);
        }
    }
}
