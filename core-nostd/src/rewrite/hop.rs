//! The load balancer as an IP hop: TTL / hop-limit decrement.

use super::Checked;
use crate::wire::checksum;
use crate::wire::IpFamily;
use crate::wire::{ipv4, ipv6};

const V4_TTL: usize = ipv4::field::TTL;
const V4_CSUM: usize = ipv4::field::CHECKSUM;
const V6_HOP_LIMIT: usize = ipv6::field::HOP_LIMIT;

#[inline]
const fn ttl_offset(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => V4_TTL,
        IpFamily::V6 => V6_HOP_LIMIT,
    }
}

/// The packet's TTL / hop limit is at least 2, so forwarding leaves it above zero.
/// Reads the buffer, not `meta.ttl`: the byte we decrement is the one that counts.
#[inline]
pub(super) fn ttl_ok(buf: &[u8], c: &Checked) -> bool {
    buf[c.l3 + ttl_offset(c.family)] > 1
}

/// Decrements the TTL / hop limit; for IPv4 updates the header checksum
/// incrementally (RFC 1624). Requires [`ttl_ok`].
#[inline(always)]
pub(super) fn decrement_ttl(buf: &mut [u8], c: &Checked) {
    let ip = &mut buf[c.l3..c.l3 + c.l3_len];
    match c.family {
        IpFamily::V4 => {
            ip[V4_TTL] = ip[V4_TTL].wrapping_sub(1);
            let csum = checksum::ttl_decrement_field([ip[V4_CSUM], ip[V4_CSUM + 1]]);
            ip[V4_CSUM..V4_CSUM + 2].copy_from_slice(&csum);
        }
        IpFamily::V6 => ip[V6_HOP_LIMIT] = ip[V6_HOP_LIMIT].wrapping_sub(1),
    }
}
