//! L2 direct server return: the frame keeps its VLAN tags and IP packet, only the
//! MAC addresses change. The backend owns the VIP on a loopback interface and answers
//! the client directly.

use super::{Checked, Egress, Rewritten, Target};
use crate::wire::ethernet::field;

/// Writes the MAC addresses and trims Ethernet padding. The TTL has been handled.
#[inline]
pub(super) fn rewrite(buf: &mut [u8], c: &Checked, target: &Target, egress: &Egress) -> Rewritten {
    let eth = &mut buf[c.start..c.start + field::SRC.end];
    eth[field::DST].copy_from_slice(&target.dst_mac);
    eth[field::SRC].copy_from_slice(&egress.src_mac);
    Rewritten::Forward {
        start: c.start,
        len: c.l3 - c.start + c.l3_len,
    }
}
