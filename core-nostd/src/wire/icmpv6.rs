//! ICMPv6 messages (RFC 4443, RFC 4861): the common 8-byte header (type, code,
//! checksum, type-specific word) and the payload, which for error messages starts
//! with the IPv6 header of the packet that caused the error.

use super::checksum;
use super::{array, be16, be32, put16, put32, Error, Layer, Result};

/// ICMPv6 message types.
pub mod msg_type {
    /// Destination unreachable (error).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (error).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (error).
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// NDP router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// NDP router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// NDP neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// NDP neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// NDP redirect.
    pub const REDIRECT: u8 = 137;
}

/// True for the error types that carry the offending packet (1..=4).
#[inline(always)]
pub const fn is_error_type(t: u8) -> bool {
    matches!(t, 1..=4)
}

/// True for the neighbour discovery types (133..=137), which belong to the host
/// stack.
#[inline(always)]
pub const fn is_ndp_type(t: u8) -> bool {
    matches!(t, 133..=137)
}

pub(crate) mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const MTU: usize = 4;
    pub const ND_TARGET: Range<usize> = 8..24;
}

/// Length of the ICMPv6 header (type, code, checksum, type-specific word).
pub const HEADER_LEN: usize = field::REST.end;

/// A read/write view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated(Layer::Icmpv6))
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type (see [`msg_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The four type-specific header bytes.
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        array(self.buffer.as_ref(), field::REST.start)
    }

    /// MTU (meaningful for packet too big).
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MTU)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Target address of a neighbour solicitation/advertisement or redirect, if the
    /// buffer is long enough.
    #[inline]
    pub fn nd_target(&self) -> Option<[u8; 16]> {
        let d = self.buffer.as_ref();
        (d.len() >= field::ND_TARGET.end).then(|| array(d, field::ND_TARGET.start))
    }

    /// True for an error message (types 1..=4).
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error_type(self.msg_type())
    }

    /// Data after the header (the embedded IPv6 packet for errors).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum over the whole buffer verifies, given the pseudo
    /// header sum (`checksum::pseudo_header_v6` with next header 58).
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::fold(checksum::sum(pseudo_header, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the four type-specific header bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v);
    }

    /// Sets the MTU (packet too big).
    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::MTU, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQ, v);
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and stores the checksum over the whole buffer, given the pseudo
    /// header sum.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::sum(pseudo_header, self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_solicitation() {
        // NS for fe80::2 from fe80::1 with a source link-layer address option.
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
        let mut b = [
            135, 0, 0, 0, 0, 0, 0, 0, //
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
            1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        ];
        let ph = checksum::pseudo_header_v6(&src, &dst, 58, b.len() as u32);
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(ph);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), msg_type::NEIGHBOR_SOLICIT);
        assert!(is_ndp_type(p.msg_type()) && !p.is_error());
        assert_eq!(p.nd_target().unwrap()[15], 2);
        assert!(p.verify_checksum(ph));
        let h = etherparse::Icmpv6Header::from_slice(&b).unwrap().0;
        assert_eq!(
            h.icmp_type.calc_checksum(src, dst, &b[8..]).unwrap(),
            p.checksum()
        );
    }

    #[test]
    fn packet_too_big() {
        let mut b = [0u8; 8];
        let mut p = Icmpv6Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(msg_type::PACKET_TOO_BIG);
        p.set_mtu(1280);
        assert!(p.is_error());
        assert_eq!(p.mtu(), 1280);
        assert_eq!(p.nd_target(), None);
        assert_eq!(
            Icmpv6Packet::new_checked(&b[..7]).err(),
            Some(Error::Truncated(Layer::Icmpv6))
        );
        assert!((1..=4).all(is_error_type) && !is_error_type(0) && !is_error_type(128));
    }
}
