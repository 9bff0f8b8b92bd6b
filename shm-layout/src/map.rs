//! Creating and attaching the region under `/dev/shm` (feature `std`).
//!
//! The only `unsafe` of the crate lives here: mapping and unmapping, and turning
//! the mapping into references to the blocks.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fmt;
use std::format;
use std::os::fd::OwnedFd;
use std::string::String;

use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

use crate::layout::{region_size, ConfigImage, RegionFixed, StatsBlock, WORKERS_OFFSET};
use crate::region::{CreateParams, RegionView};
use crate::validate::{Expect, Geometry, LayoutError};

/// Why a region could not be created or attached.
#[derive(Debug)]
pub enum ShmError {
    /// The name is empty, too long, or contains `/` after the first byte.
    BadName(String),
    /// A system call failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// `/dev/shm/...` path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The region is not one this build can use.
    Layout {
        /// `/dev/shm/...` path.
        path: String,
        /// What mismatched.
        error: LayoutError,
    },
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName(n) => write!(
                f,
                "bad shared-memory name {n:?}: want 1 to 200 characters, no '/' except a leading one"
            ),
            Self::Io { op, path, source } => write!(f, "{op} {path}: {source}"),
            Self::Layout { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ShmError {
    /// The layout mismatch, if that is what this is.
    pub fn layout(&self) -> Option<LayoutError> {
        match self {
            Self::Layout { error, .. } => Some(*error),
            _ => None,
        }
    }
}

/// `name` as `shm_open` wants it (`/name`), or an error.
pub fn shm_name(name: &str) -> Result<String, ShmError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= 200
        && !bare.contains('/')
        && bare != "."
        && bare != ".."
        && !bare.contains('\0');
    if ok {
        Ok(format!("/{bare}"))
    } else {
        Err(ShmError::BadName(name.into()))
    }
}

fn io(op: &'static str, path: &str, e: rustix::io::Errno) -> ShmError {
    ShmError::Io {
        op,
        path: path.into(),
        source: e.into(),
    }
}

/// How the data plane creates its region.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Name under `/dev/shm` (from the command line).
    pub name: String,
    /// Workers (stats blocks).
    pub workers: u32,
    /// Mode 0660 instead of 0600 (the group of the creating process).
    pub group_access: bool,
    /// Remove a region of the same name left by a previous run.
    pub replace: bool,
    /// Stats period, ms (recorded in the header).
    pub stats_interval_ms: u32,
}

impl CreateOptions {
    /// Defaults: one worker, mode 0600, no replace, 200 ms.
    pub fn new(name: &str) -> Self {
        CreateOptions {
            name: name.into(),
            workers: 1,
            group_access: false,
            replace: false,
            stats_interval_ms: crate::layout::DEFAULT_STATS_INTERVAL_MS,
        }
    }
}

/// A mapped region. The creator's mapping marks the region closed and removes
/// the name when dropped.
#[derive(Debug)]
pub struct ShmRegion {
    ptr: *mut c_void,
    len: usize,
    name: String,
    geometry: Geometry,
    owner: bool,
    _fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access
// to it goes through `RegionView`, whose blocks consist only of atomics, so
// using it from several threads is as sound as from several processes.
unsafe impl Send for ShmRegion {}
// SAFETY: as for `Send`: `&ShmRegion` only hands out `&` to atomics.
unsafe impl Sync for ShmRegion {}

fn map(fd: &OwnedFd, len: usize, path: &str) -> Result<*mut c_void, ShmError> {
    // SAFETY: a fresh shared mapping chosen by the kernel (null hint), so it
    // overlaps no Rust object; `fd` is a valid open descriptor of at least `len`
    // bytes (the caller sized or checked it), opened read-write.
    unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| io("mmap", path, e))
}

impl ShmRegion {
    /// Creates the region (the data plane): `O_CREAT|O_EXCL`, mode 0600 (0660
    /// with `group_access`), sized for `opts.workers`, configuration written, then
    /// the header, magic last.
    pub fn create(opts: &CreateOptions, config: &ConfigImage) -> Result<ShmRegion, ShmError> {
        let name = shm_name(&opts.name)?;
        let path = format!("/dev/shm{name}");
        if opts.workers == 0 || opts.workers > crate::layout::MAX_WORKERS {
            return Err(ShmError::Layout {
                path,
                error: LayoutError::WorkerCountOutOfRange {
                    found: opts.workers,
                    max: crate::layout::MAX_WORKERS,
                },
            });
        }
        if opts.replace {
            match shm::unlink(name.as_str()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io("unlink", &path, e)),
            }
        }
        let mode = if opts.group_access {
            Mode::from_raw_mode(0o660)
        } else {
            Mode::from_raw_mode(0o600)
        };
        let fd = shm::open(
            name.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            mode,
        )
        .map_err(|e| io("create", &path, e))?;
        // The umask may have narrowed the mode; set exactly what was asked.
        let setup = || -> Result<(usize, *mut c_void), ShmError> {
            rustix::fs::fchmod(&fd, mode).map_err(|e| io("chmod", &path, e))?;
            let size = region_size(opts.workers);
            rustix::fs::ftruncate(&fd, size).map_err(|e| io("resize", &path, e))?;
            let len =
                usize::try_from(size).map_err(|_| io("size", &path, rustix::io::Errno::FBIG))?;
            Ok((len, map(&fd, len, &path)?))
        };
        let (len, ptr) = match setup() {
            Ok(x) => x,
            Err(e) => {
                let _ = shm::unlink(name.as_str());
                return Err(e);
            }
        };
        let mut r = ShmRegion {
            ptr,
            len,
            name,
            geometry: Geometry {
                backend_count: 0,
                worker_count: opts.workers,
                region_size: len as u64,
            },
            owner: true,
            _fd: fd,
        };
        let params = CreateParams {
            workers: opts.workers,
            pid: std::process::id(),
            created_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            stats_interval_ms: opts.stats_interval_ms,
        };
        let (fixed, workers) = r.blocks(opts.workers);
        let geometry = RegionView::initialize(fixed, workers, config, &params)
            .map_err(|error| ShmError::Layout {
                path: path.clone(),
                error,
            })?
            .geometry;
        r.geometry = geometry;
        Ok(r)
    }

    /// Attaches to an existing region (the controller), validating magic,
    /// layout version and hash, sizes, backend and worker counts.
    pub fn attach(name: &str, expect: &Expect) -> Result<ShmRegion, ShmError> {
        let name = shm_name(name)?;
        let path = format!("/dev/shm{name}");
        let fd = shm::open(name.as_str(), shm::OFlags::RDWR, Mode::empty())
            .map_err(|e| io("open", &path, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io("stat", &path, e))?;
        let file = u64::try_from(st.st_size).unwrap_or(0);
        let need = WORKERS_OFFSET as u64;
        if file < need {
            return Err(ShmError::Layout {
                path,
                error: LayoutError::TooSmall { file, need },
            });
        }
        let len = usize::try_from(file).map_err(|_| io("size", &path, rustix::io::Errno::FBIG))?;
        let ptr = map(&fd, len, &path)?;
        let mut r = ShmRegion {
            ptr,
            len,
            name,
            geometry: Geometry {
                backend_count: 0,
                worker_count: 0,
                region_size: file,
            },
            owner: false,
            _fd: fd,
        };
        // Workers that fit in the mapping; the header is checked against it.
        let fit = ((file - need) / crate::layout::STATS_BLOCK_SIZE as u64) as u32;
        let (fixed, workers) = r.blocks(fit);
        let view = RegionView::attach(fixed, workers, Some(file), expect)
            .map_err(|error| ShmError::Layout { path, error })?;
        r.geometry = view.geometry;
        Ok(r)
    }

    /// The fixed part and up to `workers` stats blocks that fit in the mapping.
    fn blocks(&self, workers: u32) -> (&RegionFixed, &[StatsBlock]) {
        let fit = (self.len.saturating_sub(WORKERS_OFFSET)) / crate::layout::STATS_BLOCK_SIZE;
        let n = (workers as usize).min(fit);
        // SAFETY: the mapping is `self.len >= WORKERS_OFFSET` bytes (create sized
        // it, attach checked it), page-aligned (so aligned for `RegionFixed`'s
        // 64), and lives as long as `self`. `RegionFixed: FromBytes` (derived), so
        // any bytes are a valid value; all its fields are atomics, so shared
        // references are sound while this or another process writes through
        // atomics.
        let fixed = unsafe { &*(self.ptr as *const RegionFixed) };
        // SAFETY: `n` blocks of `STATS_BLOCK_SIZE` bytes start at `WORKERS_OFFSET`
        // (a multiple of 64) and end within the mapping (`n <= fit`);
        // `StatsBlock: FromBytes` and is made of atomics, as above.
        let workers = unsafe {
            core::slice::from_raw_parts(
                self.ptr
                    .cast::<u8>()
                    .add(WORKERS_OFFSET)
                    .cast::<StatsBlock>(),
                n,
            )
        };
        (fixed, workers)
    }

    /// `true` when the name no longer refers to this mapping's file: the
    /// region was removed, or replaced by a data plane that started again
    /// (an attacher should attach anew). Also `true` once the creator marked
    /// it closed.
    pub fn is_replaced(&self) -> bool {
        if self
            .view()
            .fixed
            .header
            .closed
            .load(crate::sync::Ordering::Acquire)
            != 0
        {
            return true;
        }
        let ours = match rustix::fs::fstat(&self._fd) {
            Ok(st) => (st.st_dev, st.st_ino),
            Err(_) => return true,
        };
        match rustix::fs::stat(self.path().as_str()) {
            Ok(st) => (st.st_dev, st.st_ino) != ours,
            Err(_) => true,
        }
    }

    /// The validated view of the region.
    pub fn view(&self) -> RegionView<'_> {
        let (fixed, workers) = self.blocks(self.geometry.worker_count);
        RegionView {
            fixed,
            workers,
            geometry: self.geometry,
        }
    }

    /// `/name` as passed to `shm_open`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/dev/shm/name`.
    pub fn path(&self) -> String {
        format!("/dev/shm{}", self.name)
    }

    /// Mapped bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for a mapped region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        if self.owner {
            self.view().close();
            let _ = shm::unlink(self.name.as_str());
        }
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned; every reference
        // into the mapping borrows `self`, so none outlives this.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

// Compile-time proof obligations cited by the SAFETY comments above.
const _: () = {
    const fn from_bytes<T: zerocopy::FromBytes + zerocopy::KnownLayout + ?Sized>() {}
    from_bytes::<RegionFixed>();
    from_bytes::<StatsBlock>();
};
