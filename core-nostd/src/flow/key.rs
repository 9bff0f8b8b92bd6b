//! The 5-tuple of a flow, stored as five `u64` words so that comparing two keys is
//! five word compares and hashing reads whole words.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::wire::{IpFamily, PacketMeta};

/// A flow's identity in the client-to-VIP direction.
///
/// Layout: words 0-1 the source address (IPv4: the address in the top 32 bits of
/// word 0), words 2-3 the destination address, word 4 = sport << 48 | dport << 32 |
/// proto << 24 | family << 16. Free slots are marked in the bucket, so any key value is
/// valid.
#[derive(Clone, Copy, Debug, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FlowKey {
    /// The packed words (see the type docs).
    pub words: [u64; 5],
}

static_assertions::const_assert_eq!(core::mem::size_of::<FlowKey>(), 40);

impl PartialEq for FlowKey {
    /// Branch-free compare of the five words (the derived version calls `memcmp`).
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.words, &other.words);
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

#[inline(always)]
fn word(b: &[u8; 16], i: usize) -> u64 {
    let o = i * 8;
    u64::from_be_bytes([
        b[o],
        b[o + 1],
        b[o + 2],
        b[o + 3],
        b[o + 4],
        b[o + 5],
        b[o + 6],
        b[o + 7],
    ])
}

impl FlowKey {
    /// Builds a key. For IPv4 only the first four bytes of each address are used.
    #[inline]
    pub fn new(
        family: IpFamily,
        src: &[u8; 16],
        dst: &[u8; 16],
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> Self {
        match family {
            IpFamily::V4 => Self::v4(
                u32::from_be_bytes([src[0], src[1], src[2], src[3]]),
                u32::from_be_bytes([dst[0], dst[1], dst[2], dst[3]]),
                sport,
                dport,
                proto,
            ),
            IpFamily::V6 => Self {
                words: [
                    word(src, 0),
                    word(src, 1),
                    word(dst, 0),
                    word(dst, 1),
                    Self::tail(family, sport, dport, proto),
                ],
            },
        }
    }

    /// The key of an IPv4 flow from its addresses as big-endian integers (the
    /// pipeline's fast path builds it straight from the header).
    #[inline(always)]
    pub fn v4(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            words: [
                u64::from(src) << 32,
                0,
                u64::from(dst) << 32,
                0,
                Self::tail(IpFamily::V4, sport, dport, proto),
            ],
        }
    }

    /// [`FlowKey::v4`] from the flow table's key word of the flow (source
    /// address << 32 | source port << 16 | destination port, see
    /// [`FlowTable::lookup_v4`](super::FlowTable::lookup_v4)): the same key,
    /// built with a few masks and shifts.
    #[inline(always)]
    pub fn v4_from_word(word: u64, dst: u32, proto: u8) -> Self {
        Self {
            words: [
                word & 0xffff_ffff_0000_0000,
                0,
                u64::from(dst) << 32,
                0,
                word << 32 | u64::from(proto) << 24 | (IpFamily::V4 as u64) << 16,
            ],
        }
    }

    #[inline(always)]
    fn tail(family: IpFamily, sport: u16, dport: u16, proto: u8) -> u64 {
        (u64::from(sport) << 48)
            | (u64::from(dport) << 32)
            | (u64::from(proto) << 24)
            | ((family as u64) << 16)
    }

    /// The key of the flow a parsed packet belongs to.
    #[inline]
    pub fn from_meta(m: &PacketMeta) -> Self {
        Self::new(m.family, &m.src, &m.dst, m.sport, m.dport, m.proto)
    }

    /// The key under which IP fragments of one datagram are tracked: ports are
    /// replaced by the fragment identification.
    #[inline]
    pub fn fragment(m: &PacketMeta) -> Self {
        let id = m.frag.id;
        Self::new(
            m.family,
            &m.src,
            &m.dst,
            (id >> 16) as u16,
            id as u16,
            m.proto,
        )
    }

    /// True for an IPv6 key.
    #[inline]
    pub fn is_v6(&self) -> bool {
        (self.words[4] >> 16) & 0xff == IpFamily::V6 as u64
    }

    /// Source port.
    pub fn sport(&self) -> u16 {
        (self.words[4] >> 48) as u16
    }

    /// Destination port.
    pub fn dport(&self) -> u16 {
        (self.words[4] >> 32) as u16
    }

    /// L4 protocol.
    pub fn proto(&self) -> u8 {
        (self.words[4] >> 24) as u8
    }
}
