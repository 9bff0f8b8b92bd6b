//! TCP headers (RFC 9293).
//!
//! The view covers one segment: the buffer should end where the IP payload ends,
//! because [`TcpPacket::payload`] and the checksum run to the end of the buffer.

use super::checksum;
use super::{be16, be32, put16, put32, Error, Layer, Result};

/// TCP flag bits as they appear in byte 13 (and in
/// [`PacketMeta::tcp_flags`](crate::wire::PacketMeta::tcp_flags)).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

pub(crate) mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = 20;

/// A read/write view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; getters may panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the fixed header, that the data offset is at
    /// least 5 and that the options fit in the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated(Layer::Tcp));
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            Err(Error::Malformed(Layer::Tcp))
        } else if len < hl {
            Err(Error::Truncated(Layer::Tcp))
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Raw data offset (header length in 32-bit words).
    #[inline]
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFF] >> 4
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// The eight flag bits (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// PSH flag.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// ACK flag.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// URG flag.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// ECE flag.
    #[inline]
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }

    /// CWR flag.
    #[inline]
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (bytes 20..header_len).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Payload: from the end of the header to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum over the whole buffer verifies, given the pseudo
    /// header sum (`checksum::pseudo_header_v4/v6` with the buffer length).
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::fold(checksum::sum(pseudo_header, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ_NUM, v);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK_NUM, v);
    }

    /// Sets the header length in bytes (multiple of 4, at most 60); keeps the
    /// reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Sets all eight flag bits.
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    fn set_flag(&mut self, bit: u8, on: bool) {
        let f = self.flags();
        self.set_flags(if on { f | bit } else { f & !bit });
    }

    /// Sets the FIN flag.
    #[inline]
    pub fn set_fin(&mut self, v: bool) {
        self.set_flag(flags::FIN, v);
    }

    /// Sets the SYN flag.
    #[inline]
    pub fn set_syn(&mut self, v: bool) {
        self.set_flag(flags::SYN, v);
    }

    /// Sets the RST flag.
    #[inline]
    pub fn set_rst(&mut self, v: bool) {
        self.set_flag(flags::RST, v);
    }

    /// Sets the PSH flag.
    #[inline]
    pub fn set_psh(&mut self, v: bool) {
        self.set_flag(flags::PSH, v);
    }

    /// Sets the ACK flag.
    #[inline]
    pub fn set_ack(&mut self, v: bool) {
        self.set_flag(flags::ACK, v);
    }

    /// Sets the URG flag.
    #[inline]
    pub fn set_urg(&mut self, v: bool) {
        self.set_flag(flags::URG, v);
    }

    /// Sets the ECE flag.
    #[inline]
    pub fn set_ece(&mut self, v: bool) {
        self.set_flag(flags::ECE, v);
    }

    /// Sets the CWR flag.
    #[inline]
    pub fn set_cwr(&mut self, v: bool) {
        self.set_flag(flags::CWR, v);
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WIN_SIZE, v);
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
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

/// The basic fields of a TCP header (options are neither parsed nor emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flag bits (see [`flags`]).
    pub flags: u8,
    /// Window size.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
}

impl TcpRepr {
    /// Reads a checked segment. The checksum is not verified (it needs the IP
    /// addresses; use [`TcpPacket::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> Result<Self> {
        p.check_len()?;
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
        })
    }

    /// Header length this repr emits (20: no options).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 20 bytes of `p` (at least that long) with
    /// a zero checksum; write the payload, then call [`TcpPacket::fill_checksum`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut TcpPacket<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.buffer.as_mut()[field::DATA_OFF] = ((HEADER_LEN / 4) as u8) << 4;
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_checksum(0);
        p.set_urgent_at(self.urgent_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Linux SYN from 10.0.0.1:40000 to 192.0.2.10:80 with MSS, SACK-permitted,
    /// timestamps, NOP and window scale options (data offset 10).
    const SYN: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x00, 0x00, 0x00, 0x00, //
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn pseudo() -> u64 {
        checksum::pseudo_header_v4(&[10, 0, 0, 1], &[192, 0, 2, 10], 6, 40)
    }

    #[test]
    fn reads_syn() {
        let mut b = SYN;
        TcpPacket::new_unchecked(&mut b[..]).fill_checksum(pseudo());
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!(p.seq_number(), 0x1234_5678);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.options().len(), 20);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(pseudo()));
        assert!(!p.verify_checksum(pseudo() + 1));

        // etherparse agrees on the checksum.
        let (h, _) = etherparse::TcpHeader::from_slice(&b).unwrap();
        assert_eq!(
            h.calc_checksum_ipv4_raw([10, 0, 0, 1], [192, 0, 2, 10], &[])
                .unwrap(),
            p.checksum()
        );
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            TcpPacket::new_checked(&SYN[..19]).err(),
            Some(Error::Truncated(Layer::Tcp))
        );
        assert_eq!(
            TcpPacket::new_checked(&SYN[..39]).err(),
            Some(Error::Truncated(Layer::Tcp))
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(Error::Malformed(Layer::Tcp))
        );
    }

    #[test]
    fn flag_setters() {
        let mut b = [0u8; 20];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_header_len(20);
        p.set_syn(true);
        p.set_ack(true);
        p.set_ece(true);
        p.set_cwr(true);
        p.set_urg(true);
        p.set_psh(true);
        p.set_rst(true);
        p.set_fin(true);
        assert_eq!(p.flags(), 0xff);
        p.set_rst(false);
        assert!(!p.rst() && p.syn() && p.ece() && p.cwr() && p.urg() && p.psh() && p.fin());
        assert_eq!(p.data_offset(), 5);
    }

    prop_compose! {
        fn arb_repr()(src_port in any::<u16>(), dst_port in any::<u16>(),
                      seq_number in any::<u32>(), ack_number in any::<u32>(),
                      flags in any::<u8>(), window_len in any::<u16>(),
                      urgent_at in any::<u16>()) -> TcpRepr {
            TcpRepr { src_port, dst_port, seq_number, ack_number, flags, window_len, urgent_at }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(r in arb_repr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = [0u8; 84];
            let len = r.buffer_len() + payload.len();
            let mut p = TcpPacket::new_unchecked(&mut buf[..len]);
            r.emit(&mut p);
            p.payload_mut().copy_from_slice(&payload);
            let ph = checksum::pseudo_header_v6(&[1; 16], &[2; 16], 6, len as u32);
            p.fill_checksum(ph);
            let p = TcpPacket::new_checked(&buf[..len]).unwrap();
            prop_assert!(p.verify_checksum(ph));
            prop_assert_eq!(TcpRepr::parse(&p).unwrap(), r);
            prop_assert_eq!(p.payload(), &payload[..]);
            let (h, _) = etherparse::TcpHeader::from_slice(&buf[..len]).unwrap();
            prop_assert_eq!(h.calc_checksum_ipv6_raw([1; 16], [2; 16], &payload).unwrap(), p.checksum());
        }
    }
}
