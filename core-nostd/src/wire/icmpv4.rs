//! ICMPv4 messages (RFC 792, RFC 1191): the common 8-byte header (type, code,
//! checksum, rest of header) and the payload, which for error messages starts with
//! the IP header of the packet that caused the error.

use super::checksum;
use super::{array, be16, put16, Error, Layer, Result};

/// ICMPv4 message types.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (error).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (error, deprecated).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect (error).
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (error).
    pub const PARAM_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 9;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 10;
    /// Information request (deprecated).
    pub const INFO_REQUEST: u8 = 15;
    /// Address mask reply (deprecated).
    pub const ADDR_MASK_REPLY: u8 = 18;
    /// Extended echo request (RFC 8335).
    pub const EXT_ECHO_REQUEST: u8 = 42;
    /// Extended echo reply (RFC 8335).
    pub const EXT_ECHO_REPLY: u8 = 43;
}

/// True for the query types (echo, router advertisement and solicitation,
/// timestamp, information, address mask, extended echo): every type that is
/// surely not an error. Unknown types are neither.
#[inline]
pub const fn is_query_type(t: u8) -> bool {
    use msg_type::*;
    matches!(
        t,
        ECHO_REPLY | ECHO_REQUEST | ROUTER_ADVERT | ROUTER_SOLICIT | TIMESTAMP
            ..=ADDR_MASK_REPLY | EXT_ECHO_REQUEST | EXT_ECHO_REPLY
    )
}

/// Destination-unreachable code: fragmentation needed and DF set (PMTUD).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// True for the types that carry the header of an offending packet
/// (3, 4, 5, 11, 12).
#[inline(always)]
pub const fn is_error_type(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

pub(crate) mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const NEXT_HOP_MTU: usize = 6;
}

/// Length of the ICMPv4 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::REST.end;

/// A read/write view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
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
            Err(Error::Truncated(Layer::Icmpv4))
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

    /// Next-hop MTU (meaningful for type 3 code 4).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// True for an error message (see [`is_error_type`]).
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error_type(self.msg_type())
    }

    /// Data after the header (the embedded IP header for errors).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum over the whole buffer verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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

    /// Sets the next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::NEXT_HOP_MTU, v);
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request() {
        // ping: id 0x1c2b, seq 1, 4 bytes of data, valid checksum.
        let mut b = [8, 0, 0, 0, 0x1c, 0x2b, 0x00, 0x01, b'a', b'b', b'c', b'd'];
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.msg_code()), (msg_type::ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1c2b, 1));
        assert!(!p.is_error());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), b"abcd");
        let h = etherparse::Icmpv4Header::from_slice(&b).unwrap().0;
        assert_eq!(h.checksum, p.checksum());
        assert_eq!(h.icmp_type.calc_checksum(&b[8..]), p.checksum());
    }

    #[test]
    fn frag_needed_fields() {
        let mut b = [0u8; 8];
        let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(msg_type::DEST_UNREACHABLE);
        p.set_msg_code(CODE_FRAG_NEEDED);
        p.set_next_hop_mtu(1400);
        p.fill_checksum();
        assert!(p.is_error());
        assert_eq!(p.rest_of_header(), [0, 0, 0x05, 0x78]);
        assert!(p.verify_checksum());
        assert_eq!(
            Icmpv4Packet::new_checked(&b[..7]).err(),
            Some(Error::Truncated(Layer::Icmpv4))
        );
        for t in [3, 4, 5, 11, 12] {
            assert!(is_error_type(t));
        }
        for t in [0, 8, 13, 14, 9, 10] {
            assert!(!is_error_type(t));
        }
    }
}
