//! Traffic traces for tests and the benchmark: IPv4 TCP frame builders with
//! correct checksums, and a minimal pcap (libpcap savefile) writer and reader.

use std::io::{self, Read, Write};

/// TCP flags.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// One's-complement sum of `data` added to `acc` (not folded).
pub fn csum_add(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [b] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*b) << 8);
    }
    acc
}

/// Folds and complements a one's-complement sum.
pub fn csum_fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 header checksum of `hdr` (with its checksum field as is): 0 when
/// the header is valid.
pub fn ipv4_header_check(hdr: &[u8]) -> u16 {
    csum_fold(csum_add(0, hdr))
}

/// Checksum of a TCP/UDP segment over the IPv4 pseudo-header: 0 when valid.
pub fn l4_check_v4(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
    let mut acc = csum_add(0, &src);
    acc = csum_add(acc, &dst);
    acc = acc.wrapping_add(u32::from(proto));
    acc = acc.wrapping_add(seg.len() as u32);
    csum_fold(csum_add(acc, seg))
}

/// An IPv4/TCP frame description.
#[derive(Clone, Copy, Debug)]
pub struct Tcp4 {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags.
    pub flags: u8,
    /// TTL.
    pub ttl: u8,
    /// Sequence number.
    pub seq: u32,
    /// Payload bytes (filled with a pattern).
    pub payload: usize,
}

impl Tcp4 {
    /// Builds the frame (at least 60 bytes: short frames are zero-padded as on
    /// the wire).
    pub fn frame(&self) -> Vec<u8> {
        let ip_len = 20 + 20 + self.payload;
        let mut f = Vec::with_capacity(14 + ip_len.max(46));
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(self.seq as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = self.ttl;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&self.src);
        ip[16..20].copy_from_slice(&self.dst);
        let c = ipv4_header_check(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20 + self.payload];
        tcp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        if self.flags & flags::ACK != 0 {
            tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
        }
        tcp[12] = 5 << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        for (i, b) in tcp[20..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let c = l4_check_v4(self.src, self.dst, 6, &tcp);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&tcp);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }
}

/// Writes a pcap savefile (microsecond timestamps, Ethernet link type).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    n: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(Self { out, n: 0 })
    }

    /// Appends one frame (timestamps count microseconds from zero).
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((self.n / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((self.n % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)?;
        self.n += 1;
        Ok(())
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads every frame of a pcap savefile (either byte order, µs or ns stamps).
pub fn read_pcap(mut r: impl Read) -> io::Result<Vec<Vec<u8>>> {
    let mut data = Vec::new();
    r.read_to_end(&mut data)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let magic = data.get(0..4).ok_or_else(|| bad("short pcap header"))?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(bad("not a pcap file")),
    };
    let u32_at = |b: &[u8]| -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= data.len() {
        let caplen = u32_at(&data[off + 8..off + 12]) as usize;
        let start = off + 16;
        let end = start + caplen;
        let frame = data
            .get(start..end)
            .ok_or_else(|| bad("truncated record"))?;
        out.push(frame.to_vec());
        off = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_checksums_and_pcap_round_trip() {
        let t = Tcp4 {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: [198, 18, 0, 2],
            dst: [198, 18, 255, 1],
            sport: 1234,
            dport: 80,
            flags: flags::SYN,
            ttl: 64,
            seq: 7,
            payload: 3,
        };
        let f = t.frame();
        assert_eq!(ipv4_header_check(&f[14..34]), 0);
        assert_eq!(l4_check_v4(t.src, t.dst, 6, &f[34..34 + 23]), 0);
        let mut w = PcapWriter::new(Vec::new()).map_err(|e| e.to_string());
        if let Ok(w) = w.as_mut() {
            assert!(w.write(&f).is_ok());
            assert!(w.write(&f[..20]).is_ok());
        }
        let bytes = w.and_then(|w| w.finish().map_err(|e| e.to_string()));
        let frames = bytes.and_then(|b| read_pcap(&b[..]).map_err(|e| e.to_string()));
        assert_eq!(frames.ok(), Some(vec![f.clone(), f[..20].to_vec()]));
    }
}
