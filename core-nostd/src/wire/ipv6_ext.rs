//! IPv6 extension headers (RFC 8200 section 4): hop-by-hop options (0), routing
//! (43), destination options (60) share one layout, viewed by [`Ipv6ExtHeader`];
//! the fragment header (44) has its own, viewed by [`Ipv6FragmentHeader`].
//!
//! The authentication header (51) counts its length in 4-octet units and is not
//! covered here.

use super::{be16, be32, put16, put32, Error, Layer, Result};

/// True for the next-header values whose header has the generic
/// next-header / length-in-8-octets layout or is the fragment header.
#[inline(always)]
pub const fn is_ext_header(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 44 | 60)
}

pub(crate) mod field {
    pub const NXT_HDR: usize = 0;
    pub const LENGTH: usize = 1;
    pub const DATA: usize = 2;
    // Fragment header.
    pub const FRAG_OFF_M: usize = 2;
    pub const FRAG_IDENT: usize = 4;
}

/// Minimum length of any extension header (and exact length of a fragment header).
pub const MIN_HEADER_LEN: usize = 8;

/// A read/write view of a generic IPv6 extension header (hop-by-hop, routing,
/// destination options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6ExtHeader { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Checks that the buffer holds the whole header as its length field declares.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN || len < self.header_len() {
            Err(Error::Truncated(Layer::Ipv6Ext))
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Raw header extension length: in 8-octet units, not counting the first 8.
    #[inline]
    pub fn hdr_ext_len(&self) -> u8 {
        self.buffer.as_ref()[field::LENGTH]
    }

    /// Header length in bytes: `(hdr_ext_len + 1) * 8`.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(self.hdr_ext_len()) + 1) * 8
    }

    /// The header's data after next-header and length (options, or routing type,
    /// segments left and type-specific data).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..self.header_len()]
    }

    /// Everything after this header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6ExtHeader<T> {
    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the raw header extension length (8-octet units beyond the first 8).
    #[inline]
    pub fn set_hdr_ext_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::LENGTH] = v;
    }

    /// Mutable header data.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::DATA..end]
    }
}

/// A read/write view of an IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6FragmentHeader { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Checks that the buffer holds the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < MIN_HEADER_LEN {
            Err(Error::Truncated(Layer::Ipv6Ext))
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header (of the fragmentable part).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Fragment offset in 8-octet units (13 bits).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FRAG_OFF_M) >> 3
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FRAG_OFF_M) & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), field::FRAG_IDENT)
    }

    /// Everything after this header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the fragment offset in 8-octet units (low 13 bits used).
    #[inline]
    pub fn set_frag_offset(&mut self, v: u16) {
        let old = be16(self.buffer.as_ref(), field::FRAG_OFF_M);
        put16(
            self.buffer.as_mut(),
            field::FRAG_OFF_M,
            (old & 0x7) | (v << 3),
        );
    }

    /// Sets the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, m: bool) {
        let old = be16(self.buffer.as_ref(), field::FRAG_OFF_M);
        put16(
            self.buffer.as_mut(),
            field::FRAG_OFF_M,
            (old & !1) | u16::from(m),
        );
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::FRAG_IDENT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_header() {
        // Destination options, next header TCP, length 1 (16 bytes): PadN options.
        let b = [6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb];
        let h = Ipv6ExtHeader::new_checked(&b[..]).unwrap();
        assert_eq!(h.next_header(), 6);
        assert_eq!(h.hdr_ext_len(), 1);
        assert_eq!(h.header_len(), 16);
        assert_eq!(h.data().len(), 14);
        assert_eq!(h.payload(), &[0xaa, 0xbb]);
        assert_eq!(
            Ipv6ExtHeader::new_checked(&b[..15]).err(),
            Some(Error::Truncated(Layer::Ipv6Ext))
        );
        assert_eq!(
            Ipv6ExtHeader::new_checked(&b[..7]).err(),
            Some(Error::Truncated(Layer::Ipv6Ext))
        );
        assert!(is_ext_header(0) && is_ext_header(60) && !is_ext_header(6));
    }

    #[test]
    fn fragment_header() {
        // Next header UDP, offset 185 (1480 bytes), M set, id 0xdeadbeef.
        let b = [17, 0, 0x05, 0xc9, 0xde, 0xad, 0xbe, 0xef];
        let h = Ipv6FragmentHeader::new_checked(&b[..]).unwrap();
        assert_eq!(h.next_header(), 17);
        assert_eq!(h.frag_offset(), 185);
        assert!(h.more_frags());
        assert_eq!(h.ident(), 0xdead_beef);
        // etherparse 0.16 decodes offset and M from the wrong bits
        // (JulianSchmid/etherparse#150, fixed in 0.20), so only the identification
        // and next header are cross-checked.
        let (e, _) = etherparse::Ipv6FragmentHeader::from_slice(&b).unwrap();
        assert_eq!(e.identification, h.ident());
        assert_eq!(e.next_header.0, h.next_header());

        let mut m = [0u8; 8];
        let mut w = Ipv6FragmentHeader::new_unchecked(&mut m[..]);
        w.set_next_header(17);
        w.set_more_frags(true);
        w.set_frag_offset(185);
        w.set_ident(0xdead_beef);
        w.set_more_frags(true);
        assert_eq!(m, b);
    }
}
