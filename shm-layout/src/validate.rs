//! Checking what the other side wrote. Nothing here trusts the region and
//! nothing panics: a header either validates into a [`Geometry`] or names what
//! mismatched; a weights frame either validates into in-range values or is
//! rejected, with clamps and rejections counted in [`ValidationStats`].

use core::fmt;

use marllb_core::service::AdminState;
use marllb_core::{Weight, MAX_BACKENDS};

use crate::layout::{
    admin, region_size, HeaderBlock, HeaderImage, ValidationStats, WeightsFrame, LAYOUT_HASH,
    LAYOUT_VERSION, MAGIC, MAX_WEIGHT, MAX_WORKERS,
};

/// What an attaching side expects (`None` = accept what the region says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Configured backends.
    pub backend_count: Option<u32>,
    /// Workers (stats blocks).
    pub worker_count: Option<u32>,
}

/// The validated shape of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Configured backends, `1..=MAX_BACKENDS`.
    pub backend_count: u32,
    /// Workers, `1..=MAX_WORKERS`.
    pub worker_count: u32,
    /// Bytes.
    pub region_size: u64,
}

impl Geometry {
    /// Backends as an index bound.
    pub fn backends(&self) -> usize {
        (self.backend_count as usize).min(MAX_BACKENDS)
    }
}

/// Why a region was refused. Every variant names the field and both values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The file is smaller than the header.
    TooSmall {
        /// File size.
        file: u64,
        /// Bytes needed.
        need: u64,
    },
    /// The magic is zero: the creator has not finished initialising.
    NotReady,
    /// The magic is not `MARLLBSH`.
    BadMagic {
        /// Found.
        found: u64,
    },
    /// Layout version differs.
    Version {
        /// In the region.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Layout hash differs: the two builds disagree on sizes or offsets.
    LayoutHash {
        /// In the region.
        found: u64,
        /// Ours.
        expected: u64,
    },
    /// Header block size differs.
    HeaderSize {
        /// In the region.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Backend capacity differs.
    BackendCapacity {
        /// In the region.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Backend count is 0 or above the capacity.
    BackendCountOutOfRange {
        /// In the region.
        found: u32,
        /// Capacity.
        capacity: u32,
    },
    /// Backend count differs from the expected one.
    BackendCount {
        /// In the region.
        found: u32,
        /// Expected.
        expected: u32,
    },
    /// Worker count is 0 or above [`MAX_WORKERS`].
    WorkerCountOutOfRange {
        /// In the region.
        found: u32,
        /// Largest allowed.
        max: u32,
    },
    /// Worker count differs from the expected one.
    WorkerCount {
        /// In the region.
        found: u32,
        /// Expected.
        expected: u32,
    },
    /// The header's region size does not follow from its worker count.
    RegionSize {
        /// In the header.
        found: u64,
        /// Computed.
        expected: u64,
    },
    /// The file's size differs from the header's region size.
    FileSize {
        /// File size.
        file: u64,
        /// Region size.
        expected: u64,
    },
    /// The data plane has shut the region down.
    Closed,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooSmall { file, need } => {
                write!(f, "region file is {file} bytes, smaller than its {need}-byte header")
            }
            Self::NotReady => f.write_str("region magic is zero: the data plane has not finished creating it"),
            Self::BadMagic { found } => {
                write!(f, "bad magic {found:#018x} (expected {MAGIC:#018x}): not a MARLLB region")
            }
            Self::Version { found, expected } => {
                write!(f, "layout version mismatch: region has {found}, this build expects {expected}")
            }
            Self::LayoutHash { found, expected } => write!(
                f,
                "layout hash mismatch: region has {found:#018x}, this build has {expected:#018x} \
                 (data plane and controller were built from different layouts)"
            ),
            Self::HeaderSize { found, expected } => {
                write!(f, "header size mismatch: region has {found}, this build expects {expected}")
            }
            Self::BackendCapacity { found, expected } => write!(
                f,
                "backend capacity mismatch: region has {found}, this build expects {expected}"
            ),
            Self::BackendCountOutOfRange { found, capacity } => {
                write!(f, "backend count {found} is out of range 1..={capacity}")
            }
            Self::BackendCount { found, expected } => write!(
                f,
                "backend count mismatch: region serves {found} backends, expected {expected}"
            ),
            Self::WorkerCountOutOfRange { found, max } => {
                write!(f, "worker count {found} is out of range 1..={max}")
            }
            Self::WorkerCount { found, expected } => write!(
                f,
                "worker count mismatch: region has {found} workers, expected {expected}"
            ),
            Self::RegionSize { found, expected } => write!(
                f,
                "region size mismatch: header says {found} bytes, its worker count implies {expected}"
            ),
            Self::FileSize { file, expected } => {
                write!(f, "region size mismatch: file is {file} bytes, header says {expected}")
            }
            Self::Closed => f.write_str("the data plane has closed the region"),
        }
    }
}

/// Validates a header image against this build and `expect`. `file_len` is the
/// mapped size when known.
pub fn validate_header(
    img: &HeaderImage,
    file_len: Option<u64>,
    expect: &Expect,
) -> Result<Geometry, LayoutError> {
    if img.magic == 0 {
        return Err(LayoutError::NotReady);
    }
    if img.magic != MAGIC {
        return Err(LayoutError::BadMagic { found: img.magic });
    }
    if img.layout_version != LAYOUT_VERSION {
        return Err(LayoutError::Version {
            found: img.layout_version,
            expected: LAYOUT_VERSION,
        });
    }
    if img.layout_hash != LAYOUT_HASH {
        return Err(LayoutError::LayoutHash {
            found: img.layout_hash,
            expected: LAYOUT_HASH,
        });
    }
    let header_size = core::mem::size_of::<HeaderBlock>() as u32;
    if img.header_size != header_size {
        return Err(LayoutError::HeaderSize {
            found: img.header_size,
            expected: header_size,
        });
    }
    let cap = MAX_BACKENDS as u32;
    if img.backend_capacity != cap {
        return Err(LayoutError::BackendCapacity {
            found: img.backend_capacity,
            expected: cap,
        });
    }
    if img.backend_count == 0 || img.backend_count > cap {
        return Err(LayoutError::BackendCountOutOfRange {
            found: img.backend_count,
            capacity: cap,
        });
    }
    if let Some(e) = expect.backend_count {
        if img.backend_count != e {
            return Err(LayoutError::BackendCount {
                found: img.backend_count,
                expected: e,
            });
        }
    }
    if img.worker_count == 0 || img.worker_count > MAX_WORKERS {
        return Err(LayoutError::WorkerCountOutOfRange {
            found: img.worker_count,
            max: MAX_WORKERS,
        });
    }
    if let Some(e) = expect.worker_count {
        if img.worker_count != e {
            return Err(LayoutError::WorkerCount {
                found: img.worker_count,
                expected: e,
            });
        }
    }
    let size = region_size(img.worker_count);
    if img.region_size != size {
        return Err(LayoutError::RegionSize {
            found: img.region_size,
            expected: size,
        });
    }
    if let Some(file) = file_len {
        if file != size {
            return Err(LayoutError::FileSize {
                file,
                expected: size,
            });
        }
    }
    Ok(Geometry {
        backend_count: img.backend_count,
        worker_count: img.worker_count,
        region_size: size,
    })
}

/// Decodes an admin value; `None` if out of range.
pub const fn admin_from_u8(v: u8) -> Option<AdminState> {
    match v {
        admin::ACTIVE => Some(AdminState::Active),
        admin::DRAINING => Some(AdminState::Draining),
        admin::DOWN => Some(AdminState::Down),
        _ => None,
    }
}

/// Weights and admin states for the configured backends, as the data plane
/// applies them. Every weight is at most [`MAX_WEIGHT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightVector {
    /// Policy epoch it came from (0 for the fallback).
    pub epoch: u64,
    n: u16,
    weights: [Weight; MAX_BACKENDS],
    admin: [AdminState; MAX_BACKENDS],
}

impl WeightVector {
    /// `n` backends (clamped to [`MAX_BACKENDS`]), weight 0, all active.
    pub const fn new(n: usize) -> Self {
        WeightVector {
            epoch: 0,
            n: if n > MAX_BACKENDS {
                MAX_BACKENDS as u16
            } else {
                n as u16
            },
            weights: [0; MAX_BACKENDS],
            admin: [AdminState::Active; MAX_BACKENDS],
        }
    }

    /// Backends.
    pub fn len(&self) -> usize {
        usize::from(self.n).min(MAX_BACKENDS)
    }

    /// `true` with no backends.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Weights by backend.
    pub fn weights(&self) -> &[Weight] {
        &self.weights[..self.len()]
    }

    /// Admin states by backend.
    pub fn admin(&self) -> &[AdminState] {
        &self.admin[..self.len()]
    }

    /// Grows or shrinks to `n` backends (clamped); new ones start active at
    /// weight 0.
    pub fn resize(&mut self, n: usize) {
        let n = n.min(MAX_BACKENDS);
        for i in self.len()..n {
            self.weights[i] = 0;
            self.admin[i] = AdminState::Active;
        }
        self.n = n as u16;
    }

    /// Sets backend `i` down (out of range: nothing).
    pub fn set_down(&mut self, i: usize) {
        let n = self.len();
        if let Some(a) = self.admin[..n].get_mut(i) {
            *a = AdminState::Down;
        }
        if let Some(w) = self.weights[..n].get_mut(i) {
            *w = 0;
        }
    }

    /// Sets admin states (extra entries ignored).
    pub fn set_admin(&mut self, admin: &[AdminState]) {
        let n = self.len();
        for (d, s) in self.admin[..n].iter_mut().zip(admin) {
            *d = *s;
        }
    }

    /// Equal weights ([`marllb_core::WEIGHT_ONE`]) over backends that are not
    /// down; 0 for down ones.
    pub fn make_equal_over_up(&mut self) {
        let n = self.len();
        for (w, a) in self.weights[..n].iter_mut().zip(&self.admin[..n]) {
            *w = if *a == AdminState::Down {
                0
            } else {
                marllb_core::WEIGHT_ONE
            };
        }
        self.epoch = 0;
    }
}

/// Why a weights frame was rejected (the previous weights stay in force).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The checksum does not match the contents.
    Checksum,
    /// Fewer entries than configured backends.
    ShortCount {
        /// Entries in the frame.
        count: u32,
        /// Configured backends.
        need: u32,
    },
    /// Every backend that is not down has weight 0.
    AllZero,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Checksum => f.write_str("weights frame checksum mismatch"),
            Self::ShortCount { count, need } => {
                write!(
                    f,
                    "weights frame has {count} entries, {need} backends configured"
                )
            }
            Self::AllZero => f.write_str("every backend that is not down has weight 0"),
        }
    }
}

/// Validates `frame` for `out.len()` configured backends into `out`.
///
/// * checksum mismatch, fewer entries than backends, all-zero weights over
///   backends not down: rejected, `out` unchanged;
/// * more entries than backends: the extra ones are ignored (clamped);
/// * a weight above [`MAX_WEIGHT`]: clamped to it;
/// * an admin value out of range: that backend keeps its state in `out`.
///
/// Every case is counted in `stats`; on success the output satisfies: every
/// weight `<= MAX_WEIGHT`, and some backend not down has a non-zero weight (or
/// every backend is down).
pub fn validate_weights(
    frame: &WeightsFrame,
    out: &mut WeightVector,
    stats: &mut ValidationStats,
) -> Result<(), Reject> {
    let r = check(frame, out, stats);
    match r {
        Ok(()) => stats.frames_applied += 1,
        Err(_) => stats.frames_rejected += 1,
    }
    r
}

fn check(
    frame: &WeightsFrame,
    out: &mut WeightVector,
    stats: &mut ValidationStats,
) -> Result<(), Reject> {
    if frame.checksum != frame.compute_checksum() {
        stats.checksum_mismatch += 1;
        return Err(Reject::Checksum);
    }
    let n = out.len();
    let need = n as u32;
    if frame.count < need {
        stats.bad_count += 1;
        return Err(Reject::ShortCount {
            count: frame.count,
            need,
        });
    }
    if frame.count > need {
        stats.count_clamped += 1;
    }
    // Decide first, write `out` only on success.
    let mut adm = [AdminState::Active; MAX_BACKENDS];
    let mut bad_admin = 0u64;
    let mut clamped = 0u64;
    let mut any_up = false;
    let mut any_live = false;
    let entries = adm
        .iter_mut()
        .zip(&frame.admin)
        .zip(&frame.weights)
        .zip(&out.admin)
        .take(n);
    for (((a, &raw), &w), &prev) in entries {
        *a = match admin_from_u8(raw) {
            Some(v) => v,
            None => {
                bad_admin += 1;
                prev
            }
        };
        if w > MAX_WEIGHT {
            clamped += 1;
        }
        if *a != AdminState::Down {
            any_up = true;
            any_live |= w > 0;
        }
    }
    stats.bad_admin += bad_admin;
    stats.weights_clamped += clamped;
    if any_up && !any_live {
        stats.all_zero += 1;
        return Err(Reject::AllZero);
    }
    for (d, &w) in out.weights.iter_mut().zip(&frame.weights).take(n) {
        *d = w.min(MAX_WEIGHT);
    }
    for (d, &a) in out.admin.iter_mut().zip(&adm).take(n) {
        *d = a;
    }
    out.epoch = frame.epoch;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{HeaderBlock, LAYOUT_HASH};
    use std::string::ToString;

    fn good_header() -> HeaderImage {
        HeaderImage {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: core::mem::size_of::<HeaderBlock>() as u32,
            layout_hash: LAYOUT_HASH,
            region_size: region_size(2),
            backend_capacity: MAX_BACKENDS as u32,
            backend_count: 4,
            worker_count: 2,
            creator_pid: 1,
            created_unix_ns: 0,
            stats_interval_ms: 200,
            _reserved: 0,
        }
    }

    #[test]
    fn header_errors_name_the_field() {
        let e = Expect::default();
        let g = validate_header(&good_header(), Some(region_size(2)), &e).unwrap();
        assert_eq!((g.backend_count, g.worker_count), (4, 2));
        type Case = (fn(&mut HeaderImage), &'static str);
        let cases: [Case; 8] = [
            (|h| h.magic = 1, "bad magic"),
            (|h| h.magic = 0, "not finished"),
            (|h| h.layout_version = 9, "layout version mismatch"),
            (|h| h.layout_hash ^= 1, "layout hash mismatch"),
            (|h| h.backend_count = 300, "backend count 300"),
            (|h| h.worker_count = 0, "worker count 0"),
            (|h| h.region_size += 8, "region size mismatch"),
            (|h| h.backend_capacity = 8, "backend capacity mismatch"),
        ];
        for (mutate, msg) in cases {
            let mut h = good_header();
            mutate(&mut h);
            let err = validate_header(&h, None, &e).unwrap_err();
            assert!(err.to_string().contains(msg), "{err} vs {msg}");
        }
        let err = validate_header(&good_header(), Some(4096), &e).unwrap_err();
        assert!(err.to_string().contains("file is 4096 bytes"), "{err}");
        let strict = Expect {
            backend_count: Some(5),
            worker_count: None,
        };
        let err = validate_header(&good_header(), None, &strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend count mismatch: region serves 4 backends, expected 5"
        );
        let strict = Expect {
            backend_count: None,
            worker_count: Some(3),
        };
        assert_eq!(
            validate_header(&good_header(), None, &strict),
            Err(LayoutError::WorkerCount {
                found: 2,
                expected: 3
            })
        );
    }

    fn frame(weights: &[u32], admin: &[u8]) -> WeightsFrame {
        let mut f = WeightsFrame::zeroed();
        f.epoch = 7;
        f.count = weights.len() as u32;
        f.weights[..weights.len()].copy_from_slice(weights);
        f.admin[..admin.len()].copy_from_slice(admin);
        f.seal();
        f
    }

    #[test]
    fn frames_are_clamped_or_rejected_and_counted() {
        let mut s = ValidationStats::default();
        let mut out = WeightVector::new(3);
        let w = marllb_core::WEIGHT_ONE;
        validate_weights(&frame(&[w, 2 * w, u32::MAX], &[0, 1, 0]), &mut out, &mut s).unwrap();
        assert_eq!(out.weights(), &[w, 2 * w, MAX_WEIGHT]);
        assert_eq!(out.admin()[1], AdminState::Draining);
        assert_eq!((s.weights_clamped, s.frames_applied, out.epoch), (1, 1, 7));

        // Bad admin keeps the previous state; extra entries are ignored.
        validate_weights(&frame(&[w, w, w, w], &[9, 2, 0, 7]), &mut out, &mut s).unwrap();
        assert_eq!(
            out.admin(),
            &[AdminState::Active, AdminState::Down, AdminState::Active]
        );
        assert_eq!((s.bad_admin, s.count_clamped), (1, 1));

        let before = out.clone();
        assert_eq!(
            validate_weights(&frame(&[w, w], &[0, 0]), &mut out, &mut s),
            Err(Reject::ShortCount { count: 2, need: 3 })
        );
        assert_eq!(
            validate_weights(&frame(&[0, w, 0], &[0, 2, 1]), &mut out, &mut s),
            Err(Reject::AllZero)
        );
        let mut torn = frame(&[w, w, w], &[0, 0, 0]);
        torn.weights[1] = 5;
        assert_eq!(
            validate_weights(&torn, &mut out, &mut s),
            Err(Reject::Checksum)
        );
        assert_eq!(out, before);
        assert_eq!(
            (
                s.bad_count,
                s.all_zero,
                s.checksum_mismatch,
                s.frames_rejected
            ),
            (1, 1, 1, 3)
        );
        // All down is a legitimate statement (nothing to serve).
        validate_weights(&frame(&[0, 0, 0], &[2, 2, 2]), &mut out, &mut s).unwrap();
    }
}
