//! The backend set: which backends the data plane serves, changed at run time
//! by the controller (an operator's `backend add` / `backend remove`).
//!
//! # Protocol
//!
//! * The data plane starts serving its configuration (set version 0). The
//!   controller writes a [`BackendSetFrame`] under the set lock only when the
//!   operator changes the set; the data plane reads it when the lock's
//!   sequence changed and the version is new, checks it against what it
//!   serves ([`check_set`]), and either hands it to its host to rebuild the
//!   service or refuses it. Both answers are written back in the block
//!   (`applied_version`, or `refused_version` with `refused_reason`), so the
//!   controller can tell its operator within a poll period.
//! * Indices are stable: flows, stats and weights are by global index, so a
//!   removed backend keeps its index as [`admin::REMOVED`] (served as down and
//!   in no VIP: its remaining flows are re-placed on their next packet) and
//!   the count never shrinks. A later set may give a removed index to a new
//!   backend; a served index never changes address without being removed in
//!   a set first, so no flow silently moves to another server.
//! * A set is untrusted input: counted, checked entry by entry, and refused
//!   whole (nothing half-applied) with a [`SetRefusal`] that names the entry.

use core::fmt;

use marllb_core::MAX_BACKENDS;

use crate::layout::{admin, BackendEntry, BackendSetFrame, ConfigImage, MAX_VIPS, MAX_WEIGHT};

/// Why a backend set was refused (the data plane keeps serving its current set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetRefusal {
    /// The count is 0 or above the capacity.
    BadCount {
        /// In the frame.
        count: u32,
    },
    /// Fewer indices than served now (a removal keeps its index).
    Shrinks {
        /// In the frame.
        count: u32,
        /// Served now.
        serving: u32,
    },
    /// The checksum does not match the contents.
    Checksum,
    /// Entry `index` has an unknown family or admin byte, a base weight of 0
    /// or above the maximum, or VIP bits beyond the configured VIPs (or none).
    BadEntry {
        /// Global index.
        index: u16,
    },
    /// A served index was given another address without being removed first.
    Readdressed {
        /// Global index.
        index: u16,
    },
    /// Two served entries have the same address.
    Duplicate {
        /// The later index.
        index: u16,
    },
    /// VIP `vip` would have no member.
    EmptyVip {
        /// VIP index.
        vip: u16,
    },
    /// The host could not build a service from the set (its log says why).
    Host,
}

impl SetRefusal {
    /// The code stored in the block's `refused_reason`: the kind in the high
    /// 32 bits, the entry (index, VIP or count) in the low ones.
    pub fn code(&self) -> u64 {
        let (kind, arg) = match *self {
            Self::BadCount { count } => (1u64, u64::from(count)),
            Self::Shrinks { count, .. } => (2, u64::from(count)),
            Self::Checksum => (3, 0),
            Self::BadEntry { index } => (4, u64::from(index)),
            Self::Readdressed { index } => (5, u64::from(index)),
            Self::Duplicate { index } => (6, u64::from(index)),
            Self::EmptyVip { vip } => (7, u64::from(vip)),
            Self::Host => (8, 0),
        };
        kind << 32 | arg
    }

    /// Words a stored code (for the controller's answer to its operator).
    pub fn describe(code: u64) -> DescribeCode {
        DescribeCode(code)
    }
}

impl fmt::Display for SetRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadCount { count } => {
                write!(f, "backend count {count} is 0 or above the capacity")
            }
            Self::Shrinks { count, serving } => write!(
                f,
                "{count} backend indices given but {serving} are served (a removal keeps its index)"
            ),
            Self::Checksum => f.write_str("backend set checksum mismatch"),
            Self::BadEntry { index } => write!(
                f,
                "backend {index}: invalid family, state, base weight or VIP membership"
            ),
            Self::Readdressed { index } => write!(
                f,
                "backend {index}: a served index cannot change address (remove it first)"
            ),
            Self::Duplicate { index } => write!(f, "backend {index}: address served twice"),
            Self::EmptyVip { vip } => write!(f, "VIP {vip} would have no backend"),
            Self::Host => f.write_str("the data plane could not build the service (see its log)"),
        }
    }
}

/// [`fmt::Display`] of a stored refusal code.
#[derive(Clone, Copy, Debug)]
pub struct DescribeCode(u64);

impl fmt::Display for DescribeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arg = (self.0 & 0xffff_ffff) as u32;
        let index = arg.min(u32::from(u16::MAX)) as u16;
        let r = match self.0 >> 32 {
            1 => SetRefusal::BadCount { count: arg },
            2 => SetRefusal::Shrinks {
                count: arg,
                serving: 0,
            },
            3 => SetRefusal::Checksum,
            4 => SetRefusal::BadEntry { index },
            5 => SetRefusal::Readdressed { index },
            6 => SetRefusal::Duplicate { index },
            7 => SetRefusal::EmptyVip { vip: index },
            8 => SetRefusal::Host,
            k => return write!(f, "unknown refusal {k}"),
        };
        match r {
            SetRefusal::Shrinks { count, .. } => write!(
                f,
                "{count} backend indices given, fewer than served (a removal keeps its index)"
            ),
            r => r.fmt(f),
        }
    }
}

/// `true` for an entry of a set that is served (not removed).
pub fn served(e: &BackendEntry) -> bool {
    e.admin != admin::REMOVED
}

fn same_address(a: &BackendEntry, b: &BackendEntry) -> bool {
    a.family == b.family && a.addr == b.addr
}

/// The set a data plane serves from its configuration image (version 0).
pub fn from_config(config: &ConfigImage) -> BackendSetFrame {
    let mut f = BackendSetFrame {
        version: 0,
        count: 0,
        flags: 0,
        checksum: 0,
        _reserved0: 0,
        backends: [BackendEntry::default(); MAX_BACKENDS],
    };
    for (d, s) in f.backends.iter_mut().zip(config.backends()) {
        *d = BackendEntry {
            admin: admin::ACTIVE,
            ..*s
        };
    }
    f.count = config.backends().len() as u32;
    f.seal();
    f
}

/// Checks `new` against the set served now, for `n_vips` configured VIPs.
/// `Ok` means a host may build a service from it.
pub fn check_set(
    new: &BackendSetFrame,
    current: &BackendSetFrame,
    n_vips: usize,
) -> Result<(), SetRefusal> {
    if new.checksum != new.compute_checksum() {
        return Err(SetRefusal::Checksum);
    }
    if new.count == 0 || new.count as usize > MAX_BACKENDS {
        return Err(SetRefusal::BadCount { count: new.count });
    }
    if new.count < current.count {
        return Err(SetRefusal::Shrinks {
            count: new.count,
            serving: current.count,
        });
    }
    let n_vips = n_vips.min(MAX_VIPS);
    let vip_bits: u32 = if n_vips >= 32 {
        u32::MAX
    } else {
        (1u32 << n_vips) - 1
    };
    let mut members = [0u32; MAX_VIPS];
    let entries = new.entries();
    for (i, e) in entries.iter().enumerate() {
        let index = i as u16;
        match e.admin {
            admin::REMOVED => continue,
            admin::ACTIVE => {}
            _ => return Err(SetRefusal::BadEntry { index }),
        }
        let ok = e.family <= 1
            && e.base_weight > 0
            && e.base_weight <= MAX_WEIGHT
            && e.vip_mask != 0
            && e.vip_mask & !vip_bits == 0;
        if !ok {
            return Err(SetRefusal::BadEntry { index });
        }
        if let Some(c) = current.entries().get(i) {
            if served(c) && !same_address(c, e) {
                return Err(SetRefusal::Readdressed { index });
            }
        }
        if entries[..i].iter().any(|o| served(o) && same_address(o, e)) {
            return Err(SetRefusal::Duplicate { index });
        }
        for (v, m) in members.iter_mut().enumerate().take(n_vips) {
            if e.vip_mask & (1 << v) != 0 {
                *m += 1;
            }
        }
    }
    if let Some(v) = members.iter().take(n_vips).position(|&m| m == 0) {
        return Err(SetRefusal::EmptyVip { vip: v as u16 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(last: u8) -> BackendEntry {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[198, 18, 2, last]);
        BackendEntry {
            addr,
            mac: [2, 0, 0, 0, 2, last],
            family: 0,
            admin: admin::ACTIVE,
            base_weight: marllb_core::WEIGHT_ONE,
            vip_mask: 1,
        }
    }

    fn set(entries: &[BackendEntry]) -> BackendSetFrame {
        let mut f = BackendSetFrame {
            version: 1,
            count: entries.len() as u32,
            flags: 0,
            checksum: 0,
            _reserved0: 0,
            backends: [BackendEntry::default(); MAX_BACKENDS],
        };
        f.backends[..entries.len()].copy_from_slice(entries);
        f.seal();
        f
    }

    #[test]
    fn adds_removes_and_reuses_a_removed_index() {
        let cur = set(&[entry(1), entry(2)]);
        assert_eq!(
            check_set(&set(&[entry(1), entry(2), entry(3)]), &cur, 1),
            Ok(())
        );
        let mut gone = entry(2);
        gone.admin = admin::REMOVED;
        let removed = set(&[entry(1), gone]);
        assert_eq!(check_set(&removed, &cur, 1), Ok(()));
        // The removed index may take a new address.
        assert_eq!(check_set(&set(&[entry(1), entry(9)]), &removed, 1), Ok(()));
    }

    #[test]
    fn refusals_name_the_entry() {
        let cur = set(&[entry(1), entry(2)]);
        assert_eq!(
            check_set(&set(&[entry(1), entry(9)]), &cur, 1),
            Err(SetRefusal::Readdressed { index: 1 })
        );
        assert_eq!(
            check_set(&set(&[entry(1)]), &cur, 1),
            Err(SetRefusal::Shrinks {
                count: 1,
                serving: 2
            })
        );
        assert_eq!(
            check_set(&set(&[entry(1), entry(2), entry(1)]), &cur, 1),
            Err(SetRefusal::Duplicate { index: 2 })
        );
        let mut bad = entry(3);
        bad.vip_mask = 2;
        assert_eq!(
            check_set(&set(&[entry(1), entry(2), bad]), &cur, 1),
            Err(SetRefusal::BadEntry { index: 2 })
        );
        bad = entry(3);
        bad.base_weight = 0;
        assert_eq!(
            check_set(&set(&[entry(1), entry(2), bad]), &cur, 1),
            Err(SetRefusal::BadEntry { index: 2 })
        );
        let (mut a, mut b) = (entry(1), entry(2));
        a.admin = admin::REMOVED;
        b.admin = admin::REMOVED;
        assert_eq!(
            check_set(&set(&[a, b]), &cur, 1),
            Err(SetRefusal::EmptyVip { vip: 0 })
        );
        let mut torn = set(&[entry(1), entry(2), entry(3)]);
        torn.backends[2].base_weight = 7;
        assert_eq!(check_set(&torn, &cur, 1), Err(SetRefusal::Checksum));
        let mut zero = set(&[]);
        zero.seal();
        assert_eq!(
            check_set(&zero, &cur, 1),
            Err(SetRefusal::BadCount { count: 0 })
        );
    }

    #[test]
    fn codes_round_trip_to_words() {
        let r = SetRefusal::Readdressed { index: 4 };
        assert_eq!(
            std::format!("{}", SetRefusal::describe(r.code())),
            std::format!("{r}")
        );
    }
}
