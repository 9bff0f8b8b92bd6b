//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! All functions work on big-endian byte slices of any length (an odd trailing byte
//! is padded with zero) and never panic.

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum.
///
/// The result is not folded; pass it on to [`fold`] (or to another `sum`).
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Four 16-bit big-endian words at a time; `u64` cannot overflow for any
        // realistic packet (2^48 words).
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (v >> 48) + ((v >> 32) & 0xffff) + ((v >> 16) & 0xffff) + (v & 0xffff);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (without the final complement).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the complement of the folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Sum of the IPv4 pseudo header (RFC 793/768).
#[inline]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], proto: u8, l4_len: u32) -> u64 {
    let mut acc = sum(0, src);
    acc = sum(acc, dst);
    acc + u64::from(proto) + u64::from(l4_len)
}

/// Sum of the IPv6 pseudo header (RFC 8200 section 8.1).
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u64 {
    let mut acc = sum(0, src);
    acc = sum(acc, dst);
    acc + u64::from(next_header) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// Incrementally updates checksum `old_csum` when one 16-bit word changes from
/// `old` to `new` (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update16(old_csum: u16, old: u16, new: u16) -> u16 {
    // At most 3 * 0xffff: two end-around folds always suffice.
    let mut acc = u32::from(!old_csum) + u32::from(!old) + u32::from(new);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// [`update16`] for a TTL decrement: the high byte of the word changes from
/// `ttl` to `ttl - 1` with `ttl` at least 1, the low byte stays. `~m + m'` is
/// then 0xfeff whatever the word, so neither needs to be read, and one fold
/// suffices (at most 0xffff + 0xfeff).
#[inline(always)]
pub fn update16_ttl_decrement(old_csum: u16) -> u16 {
    let acc = u32::from(!old_csum) + 0xfeff;
    !(((acc & 0xffff) + (acc >> 16)) as u16)
}

/// [`update16_ttl_decrement`] on the checksum field's two bytes as they lie
/// in the header, with no byte swap: the ones'-complement sum does not
/// depend on byte order (RFC 1071), so the change is added in memory order
/// (`+0x0100` big-endian), and the end-around carry taken when the sum
/// reaches 0xffff also gives the +0 that `update16_ttl_decrement` gives
/// (Linux's `ip_decrease_ttl`). The same bytes for every input (tested).
#[inline(always)]
pub fn ttl_decrement_field(csum: [u8; 2]) -> [u8; 2] {
    let c = u32::from(u16::from_ne_bytes(csum)) + u32::from(u16::from_ne_bytes([1, 0]));
    ((c + u32::from(c >= 0xffff)) as u16).to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_decrement_field_is_ttl_decrement() {
        for c in 0..=u16::MAX {
            assert_eq!(
                ttl_decrement_field(c.to_be_bytes()),
                update16_ttl_decrement(c).to_be_bytes(),
                "{c:#06x}"
            );
        }
    }

    #[test]
    fn ttl_decrement_is_update16() {
        for c in 0..=u16::MAX {
            for ttl in [1u16, 2, 3, 64, 128, 255] {
                for proto in [0u16, 6, 17, 255] {
                    let old = ttl << 8 | proto;
                    let new = old - 0x100;
                    assert_eq!(update16_ttl_decrement(c), update16(c, old, new));
                }
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // The example from RFC 1071 section 3: sum of 0001 f203 f4f5 f6f7 = ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(fold(sum(0, &[0xab])), 0xab00);
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header whose checksum is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn incremental_matches_full() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        // Decrement the TTL (high byte of word 4).
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let c = update16(0xb861, old, new);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }
}
