//! UDP headers (RFC 768; RFC 8200 section 8.1 for IPv6).
//!
//! [`UdpPacket::payload`] is bounded by the UDP length field.

use super::checksum;
use super::{be16, put16, Error, Layer, Result};

pub(crate) mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header, that the length field is at least
    /// 8 and that the datagram it declares fits in the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated(Layer::Udp));
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            Err(Error::Malformed(Layer::Udp))
        } else if len < l {
            Err(Error::Truncated(Layer::Udp))
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length of header and payload.
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Payload, bounded by the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    fn sum_ok(&self, pseudo_header: u64) -> bool {
        let d = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::fold(checksum::sum(pseudo_header, d)) == 0xffff
    }

    /// Over IPv4: true when the checksum is zero (none sent) or verifies, given the
    /// pseudo header sum (`checksum::pseudo_header_v4` with the length field).
    #[inline]
    pub fn verify_checksum_v4(&self, pseudo_header: u64) -> bool {
        self.checksum() == 0 || self.sum_ok(pseudo_header)
    }

    /// Over IPv6: true when the checksum verifies; zero is invalid (RFC 8200).
    #[inline]
    pub fn verify_checksum_v6(&self, pseudo_header: u64) -> bool {
        self.checksum() != 0 && self.sum_ok(pseudo_header)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Mutable payload, bounded by the length field.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes and stores the checksum over the datagram given the pseudo header
    /// sum; a computed zero is sent as 0xffff (zero means "none" over IPv4).
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let d = &self.buffer.as_ref()[..usize::from(self.len())];
        let c = !checksum::fold(checksum::sum(pseudo_header, d));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length (length field minus 8).
    pub payload_len: u16,
}

impl UdpRepr {
    /// Reads a checked datagram. The checksum is not verified (it needs the IP
    /// addresses; use the `verify_checksum_*` methods).
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Result<Self> {
        p.check_len()?;
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            // check_len guarantees len >= 8.
            payload_len: p.len() - HEADER_LEN as u16,
        })
    }

    /// Header length this repr emits (8).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 8 bytes of `p` (at least that long) with a
    /// zero checksum; write the payload, then call [`UdpPacket::fill_checksum`].
    /// The length field saturates at 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut UdpPacket<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(self.payload_len.saturating_add(HEADER_LEN as u16));
        p.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// DNS-looking datagram 10.0.0.1:53000 -> 10.0.0.53:53, 4 payload bytes, with a
    /// valid checksum, followed by 2 bytes outside the datagram.
    const DGRAM: [u8; 14] = [
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x99, 0x99,
    ];

    fn ph(len: u32) -> u64 {
        checksum::pseudo_header_v4(&[10, 0, 0, 1], &[10, 0, 0, 53], 17, len)
    }

    #[test]
    fn reads_datagram() {
        let mut b = DGRAM;
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        assert!(
            p.verify_checksum_v4(ph(12)),
            "zero checksum means none over IPv4"
        );
        assert!(
            !p.verify_checksum_v6(ph(12)),
            "zero checksum is invalid over IPv6"
        );
        p.fill_checksum(ph(12));
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (53000, 53, 12));
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum_v4(ph(12)) && p.verify_checksum_v6(ph(12)));
        assert!(!p.verify_checksum_v4(ph(12) + 1));
        let (h, _) = etherparse::UdpHeader::from_slice(&b).unwrap();
        assert_eq!(
            h.calc_checksum_ipv4_raw([10, 0, 0, 1], [10, 0, 0, 53], &b[8..12])
                .unwrap(),
            p.checksum()
        );
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            UdpPacket::new_checked(&DGRAM[..7]).err(),
            Some(Error::Truncated(Layer::Udp))
        );
        assert_eq!(
            UdpPacket::new_checked(&DGRAM[..11]).err(),
            Some(Error::Truncated(Layer::Udp))
        );
        let mut b = DGRAM;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).err(),
            Some(Error::Malformed(Layer::Udp))
        );
    }

    proptest! {
        #[test]
        fn repr_round_trip(src_port in any::<u16>(), dst_port in any::<u16>(),
                           payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = UdpRepr { src_port, dst_port, payload_len: payload.len() as u16 };
            let mut buf = [0u8; 72];
            let len = r.buffer_len() + payload.len();
            let mut p = UdpPacket::new_unchecked(&mut buf[..len]);
            r.emit(&mut p);
            p.payload_mut().copy_from_slice(&payload);
            let ph = checksum::pseudo_header_v6(&[3; 16], &[4; 16], 17, len as u32);
            p.fill_checksum(ph);
            let p = UdpPacket::new_checked(&buf[..len]).unwrap();
            prop_assert!(p.verify_checksum_v6(ph));
            prop_assert_eq!(UdpRepr::parse(&p).unwrap(), r);
            let (h, _) = etherparse::UdpHeader::from_slice(&buf[..len]).unwrap();
            prop_assert_eq!(h.calc_checksum_ipv6_raw([3; 16], [4; 16], &payload).unwrap(), p.checksum());
        }
    }
}
