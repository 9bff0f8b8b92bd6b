//! Typed zero-copy views over packet bytes, one protocol per file, in the style of
//! smoltcp: `Packet<T: AsRef<[u8]>>` with `new_unchecked` / `check_len` /
//! `new_checked`, field offsets as `const` ranges in a `mod field` (crate-visible: the hot-path
//! parser, the fast path and the rewriter import them, so each offset is written
//! once), getters on
//! `AsRef<[u8]>` and setters on `AsMut<[u8]>`. No function here panics after
//! `check_len` succeeded, and `new_checked` never panics at all.
//!
//! [`parse::parse_frame`] is the hot-path entry point: it walks one frame once and
//! fills a [`PacketMeta`]. The views are for everything else (rewrite, tests, tools).

pub mod checksum;
pub mod meta;

pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ipv6_ext;
pub mod parse;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use ethernet::EthernetFrame;
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use ipv6_ext::{Ipv6ExtHeader, Ipv6FragmentHeader};
pub use meta::{FragInfo, Frame, IpFamily, PacketMeta};
pub use parse::{parse_frame, verify_checksums, verify_l3_checksum, verify_l4_checksum};
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::VlanTag;

/// The protocol layer an [`Error`] was found at.
///
/// `#[repr(u8)]` with dense discriminants so a data plane can index a counter array
/// with [`Error::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Layer {
    /// Ethernet II header.
    Ethernet = 0,
    /// 802.1Q / 802.1ad tag (also: more than two tags).
    Vlan = 1,
    /// IPv4 header.
    Ipv4 = 2,
    /// IPv6 fixed header.
    Ipv6 = 3,
    /// IPv6 extension header chain (also: too long, misplaced hop-by-hop).
    Ipv6Ext = 4,
    /// TCP header.
    Tcp = 5,
    /// UDP header.
    Udp = 6,
    /// ICMPv4 header.
    Icmpv4 = 7,
    /// ICMPv6 header.
    Icmpv6 = 8,
    /// The IP/L4 header embedded in an ICMP error.
    IcmpEmbedded = 9,
}

impl Layer {
    /// Number of layers (for sizing counter arrays).
    pub const COUNT: usize = 10;
}

/// Why a packet could not be parsed. Two bytes, `Copy`, cheap to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The buffer ends before the header (or the length it declares) does.
    Truncated(Layer),
    /// A field holds a value the parser does not accept (bad version, length below
    /// the minimum, too many tags or extension headers, nested ICMP error, ...).
    Malformed(Layer),
    /// A checksum does not verify (only from the explicit `verify_*` functions and
    /// `Repr::parse`; [`parse::parse_frame`] never checks checksums).
    Checksum(Layer),
}

impl Error {
    /// Number of distinct errors (for sizing counter arrays).
    pub const COUNT: usize = 3 * Layer::COUNT;

    /// The layer the error was found at.
    #[inline]
    pub const fn layer(self) -> Layer {
        match self {
            Error::Truncated(l) | Error::Malformed(l) | Error::Checksum(l) => l,
        }
    }

    /// A dense index in `0..Error::COUNT`, for counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        let kind = match self {
            Error::Truncated(_) => 0,
            Error::Malformed(_) => 1,
            Error::Checksum(_) => 2,
        };
        kind * Layer::COUNT + self.layer() as usize
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated(l) => write!(f, "truncated {l:?}"),
            Error::Malformed(l) => write!(f, "malformed {l:?}"),
            Error::Checksum(l) => write!(f, "bad {l:?} checksum"),
        }
    }
}

/// Result type of the wire module.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian `u16` at `at`. Callers have checked the length.
#[inline(always)]
pub(crate) fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

/// Reads a big-endian `u32` at `at`. Callers have checked the length.
#[inline(always)]
pub(crate) fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Writes a big-endian `u16` at `at`. Callers have checked the length.
#[inline(always)]
pub(crate) fn put16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian `u32` at `at`. Callers have checked the length.
#[inline(always)]
pub(crate) fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Copies `N` bytes starting at `at` into an array. Callers have checked the length.
#[inline(always)]
pub(crate) fn array<const N: usize>(d: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&d[at..at + N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_index_is_dense_and_small() {
        assert_eq!(core::mem::size_of::<Error>(), 2);
        assert_eq!(Error::Truncated(Layer::Ethernet).index(), 0);
        assert_eq!(
            Error::Checksum(Layer::IcmpEmbedded).index(),
            Error::COUNT - 1
        );
        assert_eq!(Error::Malformed(Layer::Tcp).layer(), Layer::Tcp);
    }
}
