//! A validated view of a region's blocks, independent of how they were mapped
//! (an `mmap` of `/dev/shm` in [`crate::map`], or plain heap memory in tests).

use zerocopy::{FromZeros, IntoBytes};

use crate::layout::{
    region_size, ConfigImage, HeaderBlock, HeaderImage, RegionFixed, StatsBlock,
    DEFAULT_STATS_INTERVAL_MS, HEADER_WORDS, LAYOUT_HASH, LAYOUT_VERSION, MAGIC, MAX_WORKERS,
};
use crate::sync::Ordering;
use crate::validate::{validate_header, Expect, Geometry, LayoutError};

/// The region's blocks, validated.
#[derive(Clone, Copy, Debug)]
pub struct RegionView<'r> {
    /// Header, configuration and control blocks.
    pub fixed: &'r RegionFixed,
    /// One stats block per worker.
    pub workers: &'r [StatsBlock],
    /// What the header says, validated.
    pub geometry: Geometry,
}

/// Reads the header image (magic with Acquire first: if it is set, the rest of
/// the image and the configuration are complete).
pub fn read_header(h: &HeaderBlock) -> HeaderImage {
    let mut img = HeaderImage::new_zeroed();
    let bytes = img.as_mut_bytes();
    let magic = h.image[0].load(Ordering::Acquire);
    for (i, (c, w)) in bytes.chunks_exact_mut(8).zip(&h.image).enumerate() {
        let v = if i == 0 {
            magic
        } else {
            w.load(Ordering::Relaxed)
        };
        c.copy_from_slice(&v.to_ne_bytes());
    }
    img
}

/// How the creator fills the header.
#[derive(Clone, Copy, Debug)]
pub struct CreateParams {
    /// Workers (stats blocks), `1..=MAX_WORKERS`.
    pub workers: u32,
    /// Creator pid.
    pub pid: u32,
    /// Wall-clock ns since the Unix epoch.
    pub created_unix_ns: u64,
    /// Stats period, ms.
    pub stats_interval_ms: u32,
}

impl Default for CreateParams {
    fn default() -> Self {
        CreateParams {
            workers: 1,
            pid: 0,
            created_unix_ns: 0,
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
        }
    }
}

impl<'r> RegionView<'r> {
    /// Validates the header of already-initialised blocks. `file_len` is the size
    /// of the mapping (checked against the header) when there is one.
    pub fn attach(
        fixed: &'r RegionFixed,
        workers: &'r [StatsBlock],
        file_len: Option<u64>,
        expect: &Expect,
    ) -> Result<Self, LayoutError> {
        let img = read_header(&fixed.header);
        let geometry = validate_header(&img, file_len, expect)?;
        if fixed.header.closed.load(Ordering::Acquire) != 0 {
            return Err(LayoutError::Closed);
        }
        let workers =
            workers
                .get(..geometry.worker_count as usize)
                .ok_or(LayoutError::WorkerCount {
                    found: geometry.worker_count,
                    expected: workers.len() as u32,
                })?;
        Ok(RegionView {
            fixed,
            workers,
            geometry,
        })
    }

    /// Initialises zeroed blocks as their creator: configuration first, then the
    /// header image, magic last with Release. `workers` must hold
    /// `params.workers` blocks.
    pub fn initialize(
        fixed: &'r RegionFixed,
        workers: &'r [StatsBlock],
        config: &ConfigImage,
        params: &CreateParams,
    ) -> Result<Self, LayoutError> {
        let n = config.n_backends;
        if n == 0 || n as usize > marllb_core::MAX_BACKENDS {
            return Err(LayoutError::BackendCountOutOfRange {
                found: n,
                capacity: marllb_core::MAX_BACKENDS as u32,
            });
        }
        if params.workers == 0 || params.workers > MAX_WORKERS {
            return Err(LayoutError::WorkerCountOutOfRange {
                found: params.workers,
                max: MAX_WORKERS,
            });
        }
        if workers.len() < params.workers as usize {
            return Err(LayoutError::WorkerCount {
                found: workers.len() as u32,
                expected: params.workers,
            });
        }
        for (c, w) in config.as_bytes().chunks_exact(8).zip(&fixed.config.words) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
        let img = HeaderImage {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: core::mem::size_of::<HeaderBlock>() as u32,
            layout_hash: LAYOUT_HASH,
            region_size: region_size(params.workers),
            backend_capacity: marllb_core::MAX_BACKENDS as u32,
            backend_count: n,
            worker_count: params.workers,
            creator_pid: params.pid,
            created_unix_ns: params.created_unix_ns,
            stats_interval_ms: params.stats_interval_ms,
            _reserved: 0,
        };
        let mut words = [0u64; HEADER_WORDS];
        for (w, c) in words.iter_mut().zip(img.as_bytes().chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            *w = u64::from_ne_bytes(b);
        }
        for (cell, w) in fixed.header.image.iter().zip(words).skip(1) {
            cell.store(w, Ordering::Relaxed);
        }
        fixed.header.closed.store(0, Ordering::Relaxed);
        // Publishes the configuration and the header: an attacher that loads the
        // magic with Acquire sees both complete.
        fixed.header.image[0].store(words[0], Ordering::Release);
        Self::attach(fixed, workers, None, &Expect::default())
    }

    /// The header image.
    pub fn header(&self) -> HeaderImage {
        read_header(&self.fixed.header)
    }

    /// The configuration image (written once before the magic: no lock needed).
    pub fn config_into(&self, out: &mut ConfigImage) {
        for (c, w) in out
            .as_mut_bytes()
            .chunks_exact_mut(8)
            .zip(&self.fixed.config.words)
        {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
    }

    /// Worker `i`'s stats block.
    pub fn worker(&self, i: u32) -> Option<&'r StatsBlock> {
        self.workers.get(i as usize)
    }

    /// The data plane's heartbeat (its monotonic clock, ns; 0 = never).
    pub fn dp_heartbeat(&self) -> u64 {
        self.fixed.header.dp_heartbeat.load(Ordering::Relaxed)
    }

    /// `true` once the data plane has shut down.
    pub fn closed(&self) -> bool {
        self.fixed.header.closed.load(Ordering::Acquire) != 0
    }

    /// Marks the region closed (the data plane, on shutdown).
    pub fn close(&self) {
        self.fixed.header.closed.store(1, Ordering::Release);
    }
}
