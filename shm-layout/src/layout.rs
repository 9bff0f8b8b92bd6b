//! The region's layout: every shared type, its size, alignment and field offsets
//! pinned at compile time, and the layout hash both sides compare.
//!
//! # Two kinds of types
//!
//! * **Images** (`HeaderImage`, `ConfigImage`, `WeightsFrame`, `StatsFrame` and
//!   their parts) are plain integers: `FromBytes + IntoBytes + KnownLayout +
//!   Immutable`, so "any bytes are a value" and "no uninitialised padding" are
//!   checked by the compiler. They are what a side writes and what it gets back
//!   from a read.
//! * **Blocks** (`HeaderBlock`, `ConfigBlock`, `ControlBlock`, `StatsBlock`) are the
//!   live memory: the images stored as `AtomicU64` words plus the sequence counters
//!   and heartbeats. zerocopy 0.8 implements `FromBytes`, `IntoBytes` and
//!   `KnownLayout` for `AtomicU64` but not `Immutable` (a `&AtomicU64` permits
//!   writes), so blocks derive those three only. Another process writes this
//!   memory at any time; every access goes through an atomic, so there is no data
//!   race, and the only thing a racing reader can see is a mix of generations,
//!   which [`crate::seqlock`] rejects.
//!
//! Every type is `#[repr(C)]` with explicit `_reserved` padding; [`TYPES`] lists
//! each field with its offset (from `offset_of!`), a const check proves the fields
//! tile the type with no implicit gap, `const_assert_eq!` pins every number, and
//! [`LAYOUT_HASH`] is an FNV-1a hash over that table. The C header
//! (`include/marllb_shm.h`) is generated from the same table.
//!
//! The region is fixed-stride: every block has room for [`MAX_BACKENDS`] backends,
//! so every offset is a compile-time constant; only `backend_count` entries are
//! meaningful and copied. The region's size depends on the worker count only.

use core::mem::{align_of, offset_of, size_of};

use marllb_core::classify::DropReason;
use marllb_core::telemetry::{
    BackendCounters, BackendSamples, GlobalCounters, Reservoir, RESERVOIR_LEN,
};
use marllb_core::{Weight, MAX_BACKENDS, WEIGHT_ONE};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::sync::AtomicU64;

/// `"MARLLBSH"` little-endian: the first word of a finished region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MARLLBSH");
/// Bumped by hand on any semantic change the layout hash cannot see.
pub const LAYOUT_VERSION: u32 = 2;
/// Largest number of workers (stats blocks) of one region.
pub const MAX_WORKERS: u32 = 64;
/// Largest weight the data plane applies (256.0 in Q16.16); larger ones are
/// clamped to it and counted.
pub const MAX_WEIGHT: Weight = 256 * WEIGHT_ONE;
/// Slots for drop counters in a stats frame (`DropReason::COUNT` of them used).
pub const DROP_SLOTS: usize = 16;
/// Default stats publication period.
pub const DEFAULT_STATS_INTERVAL_MS: u32 = 200;
/// Largest number of VIPs in the configuration image.
pub const MAX_VIPS: usize = marllb_core::service::MAX_VIPS;

const _: () = assert!(DropReason::COUNT <= DROP_SLOTS);
// A backend's VIP membership is a 32-bit mask.
const _: () = assert!(MAX_VIPS <= 32);
const _: () = assert!(MAX_BACKENDS == 256 && RESERVOIR_LEN == 128);

// ---------------------------------------------------------------------------
// Header

/// Identity of a region, written once by the creator (magic last).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct HeaderImage {
    /// [`MAGIC`] once the creator has finished initialising the region.
    pub magic: u64,
    /// [`LAYOUT_VERSION`] of the creator.
    pub layout_version: u32,
    /// Size of [`HeaderBlock`].
    pub header_size: u32,
    /// [`LAYOUT_HASH`] of the creator.
    pub layout_hash: u64,
    /// Total size of the region in bytes.
    pub region_size: u64,
    /// Backends every block has room for ([`MAX_BACKENDS`]).
    pub backend_capacity: u32,
    /// Backends configured (meaningful entries).
    pub backend_count: u32,
    /// Stats blocks (one per worker).
    pub worker_count: u32,
    /// Process id of the creator (the data plane).
    pub creator_pid: u32,
    /// Wall-clock creation time, ns since the Unix epoch.
    pub created_unix_ns: u64,
    /// Stats publication period the data plane uses, ms.
    pub stats_interval_ms: u32,
    /// Zero.
    pub _reserved: u32,
}

/// Words of a [`HeaderImage`].
pub const HEADER_WORDS: usize = size_of::<HeaderImage>() / 8;

/// The live header: identity words plus the data plane's liveness.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C, align(64))]
pub struct HeaderBlock {
    /// A [`HeaderImage`] as words; word 0 (magic) is stored last, with Release.
    pub image: [AtomicU64; HEADER_WORDS],
    /// Data-plane heartbeat: its monotonic clock in ns, stored on every poll.
    pub dp_heartbeat: AtomicU64,
    /// Non-zero once the data plane has shut down.
    pub closed: AtomicU64,
    /// Zero.
    pub _reserved: [AtomicU64; 6],
}

// ---------------------------------------------------------------------------
// Configuration

/// One VIP the data plane serves.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VipEntry {
    /// Address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// Port; 0 = any.
    pub port: u16,
    /// IP protocol (0 any, 6 TCP, 17 UDP).
    pub proto: u8,
    /// 0 IPv4, 1 IPv6.
    pub family: u8,
    /// Selection method (`marllb_core::select::Method` as `u8`).
    pub method: u8,
    /// Encapsulation (`marllb_core::rewrite::Encap` as `u8`).
    pub encap: u8,
    /// Zero.
    pub _reserved: [u8; 10],
}

/// One backend the data plane serves.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BackendEntry {
    /// Address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// MAC of the backend or of the next hop.
    pub mac: [u8; 6],
    /// 0 IPv4, 1 IPv6.
    pub family: u8,
    /// Admin state at creation (0 active, 1 draining, 2 down); in a
    /// [`BackendSetFrame`], [`admin::ACTIVE`] for a backend served and
    /// [`admin::REMOVED`] for a removed index.
    pub admin: u8,
    /// Base weight, Q16.16.
    pub base_weight: u32,
    /// VIPs the backend is a member of: bit `v` for VIP `v` of the
    /// configuration image.
    pub vip_mask: u32,
}

/// The VIP/backend configuration, written once at creation.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ConfigImage {
    /// VIPs used in `vips`.
    pub n_vips: u32,
    /// Backends used in `backends` (equals the header's `backend_count`).
    pub n_backends: u32,
    /// Zero.
    pub _reserved: [u32; 14],
    /// VIPs.
    pub vips: [VipEntry; MAX_VIPS],
    /// Backends, by global index.
    pub backends: [BackendEntry; MAX_BACKENDS],
}

/// Words of a [`ConfigImage`].
pub const CONFIG_WORDS: usize = size_of::<ConfigImage>() / 8;

/// The live configuration block.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C, align(64))]
pub struct ConfigBlock {
    /// A [`ConfigImage`] as words, written before the header's magic.
    pub words: [AtomicU64; CONFIG_WORDS],
}

// ---------------------------------------------------------------------------
// Controller -> data plane

/// Admin state values in [`WeightsFrame::admin`].
pub mod admin {
    /// Takes new flows by weight.
    pub const ACTIVE: u8 = 0;
    /// No new flows; existing flows continue.
    pub const DRAINING: u8 = 1;
    /// No new flows; existing flows re-placed.
    pub const DOWN: u8 = 2;
    /// Only in a [`super::BackendSetFrame`]: the index was removed (served as
    /// down, in no VIP) and may be given to a new backend by a later set.
    pub const REMOVED: u8 = 3;
}

/// The checksum of an image's bytes over every 8-byte word but word
/// `skip` (where the checksum itself is stored): a multiply-xor mix, not
/// cryptographic, that catches a writer that skipped part of a frame.
pub fn words_checksum(bytes: &[u8], skip: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (i, c) in bytes.chunks_exact(8).enumerate() {
        if i == skip {
            continue;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

/// One weights publication of the controller.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct WeightsFrame {
    /// Policy epoch (the controller's decision counter).
    pub epoch: u64,
    /// Entries the controller filled (must equal the configured backend count;
    /// more are clamped, fewer rejected).
    pub count: u32,
    /// Zero.
    pub flags: u32,
    /// [`WeightsFrame::compute_checksum`] of the frame.
    pub checksum: u64,
    /// Zero.
    pub _reserved0: u64,
    /// Q16.16 weight per backend, at most [`MAX_WEIGHT`].
    pub weights: [Weight; MAX_BACKENDS],
    /// Admin state per backend ([`admin`]).
    pub admin: [u8; MAX_BACKENDS],
    /// Zero.
    pub _reserved1: [u8; 32],
}

/// Words of a [`WeightsFrame`].
pub const WEIGHTS_WORDS: usize = size_of::<WeightsFrame>() / 8;

impl WeightsFrame {
    /// An all-zero frame.
    pub const fn zeroed() -> Self {
        WeightsFrame {
            epoch: 0,
            count: 0,
            flags: 0,
            checksum: 0,
            _reserved0: 0,
            weights: [0; MAX_BACKENDS],
            admin: [0; MAX_BACKENDS],
            _reserved1: [0; 32],
        }
    }

    /// [`words_checksum`] of the frame.
    pub fn compute_checksum(&self) -> u64 {
        words_checksum(self.as_bytes(), offset_of!(WeightsFrame, checksum) / 8)
    }

    /// Sets `checksum`.
    pub fn seal(&mut self) {
        self.checksum = self.compute_checksum();
    }
}

impl Default for WeightsFrame {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// The live controller block.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C, align(64))]
pub struct ControlBlock {
    /// Controller heartbeat: any value that changes every controller cycle (its
    /// monotonic clock in ns). The data plane watches it change on its own clock.
    pub controller_heartbeat: AtomicU64,
    /// Process id of the attached controller (0 = none).
    pub controller_pid: AtomicU64,
    /// Zero.
    pub _reserved0: [AtomicU64; 6],
    /// Sequence of the weights lock (own cache line).
    pub seq: AtomicU64,
    /// Zero.
    pub _reserved1: [AtomicU64; 7],
    /// A [`WeightsFrame`] as words.
    pub words: [AtomicU64; WEIGHTS_WORDS],
}

/// The backends the controller wants served, by global index: written when
/// the operator adds or removes one, never every cycle.
///
/// Indices are stable: a removed backend keeps its index as
/// [`admin::REMOVED`] (so flows and stats of the others never move), and the
/// count never shrinks; a later set may give a removed index to a new backend.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BackendSetFrame {
    /// Set version, from 1; the data plane applies a version once.
    pub version: u64,
    /// Indices in `backends` (removed ones included).
    pub count: u32,
    /// Zero.
    pub flags: u32,
    /// [`BackendSetFrame::compute_checksum`] of the frame.
    pub checksum: u64,
    /// Zero.
    pub _reserved0: u64,
    /// Backends by global index: address, MAC, family, base weight and VIP
    /// membership; `admin` is [`admin::ACTIVE`] or [`admin::REMOVED`].
    pub backends: [BackendEntry; MAX_BACKENDS],
}

/// Words of a [`BackendSetFrame`].
pub const SET_WORDS: usize = size_of::<BackendSetFrame>() / 8;

impl BackendSetFrame {
    /// [`words_checksum`] of the frame.
    pub fn compute_checksum(&self) -> u64 {
        words_checksum(self.as_bytes(), offset_of!(BackendSetFrame, checksum) / 8)
    }

    /// Sets `checksum`.
    pub fn seal(&mut self) {
        self.checksum = self.compute_checksum();
    }

    /// The used entries (count clamped: it is untrusted).
    pub fn entries(&self) -> &[BackendEntry] {
        &self.backends[..(self.count as usize).min(MAX_BACKENDS)]
    }
}

/// The live backend-set block: the controller's seqlock'd frame, and the data
/// plane's answer.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C, align(64))]
pub struct BackendSetBlock {
    /// Sequence of the set lock (controller).
    pub seq: AtomicU64,
    /// Zero.
    pub _reserved0: [AtomicU64; 7],
    /// Data plane: version of the last set it serves (0: its configuration).
    pub applied_version: AtomicU64,
    /// Data plane: version of the last set it refused (0: none).
    pub refused_version: AtomicU64,
    /// Data plane: why (`crate::backend_set::SetRefusal::code`).
    pub refused_reason: AtomicU64,
    /// Zero.
    pub _reserved1: [AtomicU64; 5],
    /// A [`BackendSetFrame`] as words.
    pub words: [AtomicU64; SET_WORDS],
    /// Zero.
    pub _reserved2: [AtomicU64; 4],
}

// ---------------------------------------------------------------------------
// Data plane -> controller

/// Watchdog state of the data plane.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct WatchdogStats {
    /// 1 while the fallback policy is applied.
    pub fallback_active: u32,
    /// Why (`crate::dataplane::FallbackReason` as `u32`; 0 = none).
    pub fallback_reason: u32,
    /// Transitions into the fallback.
    pub fallback_entries: u64,
    /// Transitions back to the controller's weights.
    pub fallback_exits: u64,
    /// Epoch of the controller frame last applied.
    pub applied_epoch: u64,
}

/// What the data plane did with the controller's frames.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ValidationStats {
    /// Frames applied.
    pub frames_applied: u64,
    /// Frames rejected (any reason below but clamps).
    pub frames_rejected: u64,
    /// Polls that gave up after the bounded retries (writer busy or torn) and
    /// kept the last good weights.
    pub contention_events: u64,
    /// Frames whose checksum did not match.
    pub checksum_mismatch: u64,
    /// Frames with fewer entries than configured backends (rejected).
    pub bad_count: u64,
    /// Frames with more entries than configured backends (clamped).
    pub count_clamped: u64,
    /// Admin values out of range (that backend keeps its previous state).
    pub bad_admin: u64,
    /// Weights above [`MAX_WEIGHT`] (clamped).
    pub weights_clamped: u64,
    /// Frames whose backends that are not down all have weight 0 (rejected).
    pub all_zero: u64,
    /// Backend sets applied.
    pub sets_applied: u64,
    /// Backend sets refused.
    pub sets_refused: u64,
    /// Zero.
    pub _reserved: u64,
}

/// Fixed part of a worker's stats frame.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C, align(64))]
pub struct StatsHead {
    /// Publication counter of this worker (1, 2, ...).
    pub window_seq: u64,
    /// Start of the window, data-plane monotonic ns.
    pub window_start_ns: u64,
    /// Publication time, data-plane monotonic ns.
    pub published_ns: u64,
    /// Worker index.
    pub worker: u32,
    /// Backends in `StatsFrame::backends` that are meaningful.
    pub n_backends: u32,
    /// Watchdog state.
    pub watchdog: WatchdogStats,
    /// Validation counters.
    pub validation: ValidationStats,
    /// The worker's node-wide counters.
    pub global: GlobalCounters,
    /// Drop counters by `DropReason as usize` (`DropReason::COUNT` used).
    pub drops: [u64; DROP_SLOTS],
    /// Zero.
    pub _reserved: [u64; 4],
}

/// Counters and samples of one backend.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C, align(64))]
pub struct BackendStats {
    /// Counters and gauges.
    pub counters: BackendCounters,
    /// The window's reservoirs.
    pub samples: BackendSamples,
    /// Zero.
    pub _reserved: [u8; 32],
}

/// One worker's publication.
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StatsFrame {
    /// Fixed part.
    pub head: StatsHead,
    /// Per backend, by global index (`head.n_backends` meaningful).
    pub backends: [BackendStats; MAX_BACKENDS],
}

/// Words of a [`StatsFrame`].
pub const STATS_WORDS: usize = size_of::<StatsFrame>() / 8;

/// A worker's live stats block.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C, align(64))]
pub struct StatsBlock {
    /// Sequence of this worker's lock.
    pub seq: AtomicU64,
    /// Zero.
    pub _reserved: [AtomicU64; 7],
    /// A [`StatsFrame`] as words.
    pub words: [AtomicU64; STATS_WORDS],
}

// ---------------------------------------------------------------------------
// The region

/// The fixed part of the region; `worker_count` [`StatsBlock`]s follow it.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
#[repr(C, align(64))]
pub struct RegionFixed {
    /// Identity and data-plane liveness.
    pub header: HeaderBlock,
    /// What the data plane serves.
    pub config: ConfigBlock,
    /// Controller to data plane.
    pub control: ControlBlock,
    /// Controller to data plane: the backend set, and its acknowledgement.
    pub backend_set: BackendSetBlock,
}

/// Byte offset of the first stats block.
pub const WORKERS_OFFSET: usize = size_of::<RegionFixed>();
/// Byte size of one stats block.
pub const STATS_BLOCK_SIZE: usize = size_of::<StatsBlock>();

/// Size of a region with `workers` stats blocks.
pub const fn region_size(workers: u32) -> u64 {
    WORKERS_OFFSET as u64 + workers as u64 * STATS_BLOCK_SIZE as u64
}

/// Byte offset of worker `i`'s stats block.
pub const fn worker_offset(i: u32) -> u64 {
    WORKERS_OFFSET as u64 + i as u64 * STATS_BLOCK_SIZE as u64
}

// ---------------------------------------------------------------------------
// The layout table

/// One field of a shared type.
#[derive(Clone, Copy, Debug)]
pub struct FieldDesc {
    /// Field name (as in Rust and C).
    pub name: &'static str,
    /// C element type.
    pub c_type: &'static str,
    /// Byte offset (`offset_of!`).
    pub offset: usize,
    /// Byte size of one element.
    pub elem_size: usize,
    /// Elements (1 = not an array).
    pub count: usize,
}

/// A shared type.
#[derive(Clone, Copy, Debug)]
pub struct TypeDesc {
    /// C struct name (without `struct`).
    pub c_name: &'static str,
    /// `size_of`.
    pub size: usize,
    /// `align_of`.
    pub align: usize,
    /// Fields in order.
    pub fields: &'static [FieldDesc],
}

macro_rules! fields {
    ($t:ty { $($f:ident : $e:ty = $c:literal $(* $n:expr)?),* $(,)? }) => {
        TypeDesc {
            c_name: "",
            size: size_of::<$t>(),
            align: align_of::<$t>(),
            fields: &[$(FieldDesc {
                name: stringify!($f),
                c_type: $c,
                offset: offset_of!($t, $f),
                elem_size: size_of::<$e>(),
                count: 1 $(* 0 + $n)?,
            }),*],
        }
    };
}

const fn named(c_name: &'static str, t: TypeDesc) -> TypeDesc {
    TypeDesc { c_name, ..t }
}

/// Every shared type, dependencies first (the C header's order).
pub const TYPES: &[TypeDesc] = &[
    named(
        "marllb_backend_counters",
        fields!(BackendCounters {
            packets: u64 = "uint64_t",
            bytes: u64 = "uint64_t",
            new_flows: u64 = "uint64_t",
            closed_flows: u64 = "uint64_t",
            expired_flows: u64 = "uint64_t",
            handshake_timeouts: u64 = "uint64_t",
            drops: u64 = "uint64_t",
            active_flows: u32 = "uint32_t",
            half_open: u32 = "uint32_t",
        }),
    ),
    named(
        "marllb_reservoir",
        fields!(Reservoir {
            seen: u32 = "uint32_t",
            len: u32 = "uint32_t",
            samples: u32 = "uint32_t" * RESERVOIR_LEN,
        }),
    ),
    named(
        "marllb_backend_samples",
        fields!(BackendSamples {
            flow_duration: Reservoir = "struct marllb_reservoir",
            fct: Reservoir = "struct marllb_reservoir",
            handshake: Reservoir = "struct marllb_reservoir",
            interarrival: Reservoir = "struct marllb_reservoir",
        }),
    ),
    named(
        "marllb_global_counters",
        fields!(GlobalCounters {
            rx_packets: u64 = "uint64_t",
            forwarded: u64 = "uint64_t",
            replies: u64 = "uint64_t",
            to_host: u64 = "uint64_t",
            dropped: u64 = "uint64_t",
            flows_inserted: u64 = "uint64_t",
            flows_untracked: u64 = "uint64_t",
            maglev_fallback: u64 = "uint64_t",
            flows_expired: u64 = "uint64_t",
            icmp_errors_forwarded: u64 = "uint64_t",
            fragments_forwarded: u64 = "uint64_t",
            flows_rescheduled: u64 = "uint64_t",
            sync_made: u64 = "uint64_t",
            sync_dropped: u64 = "uint64_t",
            sync_applied: u64 = "uint64_t",
            sync_refused: u64 = "uint64_t",
        }),
    ),
    named(
        "marllb_header_image",
        fields!(HeaderImage {
            magic: u64 = "uint64_t",
            layout_version: u32 = "uint32_t",
            header_size: u32 = "uint32_t",
            layout_hash: u64 = "uint64_t",
            region_size: u64 = "uint64_t",
            backend_capacity: u32 = "uint32_t",
            backend_count: u32 = "uint32_t",
            worker_count: u32 = "uint32_t",
            creator_pid: u32 = "uint32_t",
            created_unix_ns: u64 = "uint64_t",
            stats_interval_ms: u32 = "uint32_t",
            _reserved: u32 = "uint32_t",
        }),
    ),
    named(
        "marllb_header_block",
        fields!(HeaderBlock {
            image: u64 = "uint64_t" * HEADER_WORDS,
            dp_heartbeat: u64 = "uint64_t",
            closed: u64 = "uint64_t",
            _reserved: u64 = "uint64_t" * 6,
        }),
    ),
    named(
        "marllb_vip_entry",
        fields!(VipEntry {
            addr: u8 = "uint8_t" * 16,
            port: u16 = "uint16_t",
            proto: u8 = "uint8_t",
            family: u8 = "uint8_t",
            method: u8 = "uint8_t",
            encap: u8 = "uint8_t",
            _reserved: u8 = "uint8_t" * 10,
        }),
    ),
    named(
        "marllb_backend_entry",
        fields!(BackendEntry {
            addr: u8 = "uint8_t" * 16,
            mac: u8 = "uint8_t" * 6,
            family: u8 = "uint8_t",
            admin: u8 = "uint8_t",
            base_weight: u32 = "uint32_t",
            vip_mask: u32 = "uint32_t",
        }),
    ),
    named(
        "marllb_config_image",
        fields!(ConfigImage {
            n_vips: u32 = "uint32_t",
            n_backends: u32 = "uint32_t",
            _reserved: u32 = "uint32_t" * 14,
            vips: VipEntry = "struct marllb_vip_entry" * MAX_VIPS,
            backends: BackendEntry = "struct marllb_backend_entry" * MAX_BACKENDS,
        }),
    ),
    named(
        "marllb_config_block",
        fields!(ConfigBlock {
            words: u64 = "uint64_t" * CONFIG_WORDS,
        }),
    ),
    named(
        "marllb_weights_frame",
        fields!(WeightsFrame {
            epoch: u64 = "uint64_t",
            count: u32 = "uint32_t",
            flags: u32 = "uint32_t",
            checksum: u64 = "uint64_t",
            _reserved0: u64 = "uint64_t",
            weights: u32 = "uint32_t" * MAX_BACKENDS,
            admin: u8 = "uint8_t" * MAX_BACKENDS,
            _reserved1: u8 = "uint8_t" * 32,
        }),
    ),
    named(
        "marllb_control_block",
        fields!(ControlBlock {
            controller_heartbeat: u64 = "uint64_t",
            controller_pid: u64 = "uint64_t",
            _reserved0: u64 = "uint64_t" * 6,
            seq: u64 = "uint64_t",
            _reserved1: u64 = "uint64_t" * 7,
            words: u64 = "uint64_t" * WEIGHTS_WORDS,
        }),
    ),
    named(
        "marllb_backend_set_frame",
        fields!(BackendSetFrame {
            version: u64 = "uint64_t",
            count: u32 = "uint32_t",
            flags: u32 = "uint32_t",
            checksum: u64 = "uint64_t",
            _reserved0: u64 = "uint64_t",
            backends: BackendEntry = "struct marllb_backend_entry" * MAX_BACKENDS,
        }),
    ),
    named(
        "marllb_backend_set_block",
        fields!(BackendSetBlock {
            seq: u64 = "uint64_t",
            _reserved0: u64 = "uint64_t" * 7,
            applied_version: u64 = "uint64_t",
            refused_version: u64 = "uint64_t",
            refused_reason: u64 = "uint64_t",
            _reserved1: u64 = "uint64_t" * 5,
            words: u64 = "uint64_t" * SET_WORDS,
            _reserved2: u64 = "uint64_t" * 4,
        }),
    ),
    named(
        "marllb_watchdog_stats",
        fields!(WatchdogStats {
            fallback_active: u32 = "uint32_t",
            fallback_reason: u32 = "uint32_t",
            fallback_entries: u64 = "uint64_t",
            fallback_exits: u64 = "uint64_t",
            applied_epoch: u64 = "uint64_t",
        }),
    ),
    named(
        "marllb_validation_stats",
        fields!(ValidationStats {
            frames_applied: u64 = "uint64_t",
            frames_rejected: u64 = "uint64_t",
            contention_events: u64 = "uint64_t",
            checksum_mismatch: u64 = "uint64_t",
            bad_count: u64 = "uint64_t",
            count_clamped: u64 = "uint64_t",
            bad_admin: u64 = "uint64_t",
            weights_clamped: u64 = "uint64_t",
            all_zero: u64 = "uint64_t",
            sets_applied: u64 = "uint64_t",
            sets_refused: u64 = "uint64_t",
            _reserved: u64 = "uint64_t",
        }),
    ),
    named(
        "marllb_stats_head",
        fields!(StatsHead {
            window_seq: u64 = "uint64_t",
            window_start_ns: u64 = "uint64_t",
            published_ns: u64 = "uint64_t",
            worker: u32 = "uint32_t",
            n_backends: u32 = "uint32_t",
            watchdog: WatchdogStats = "struct marllb_watchdog_stats",
            validation: ValidationStats = "struct marllb_validation_stats",
            global: GlobalCounters = "struct marllb_global_counters",
            drops: u64 = "uint64_t" * DROP_SLOTS,
            _reserved: u64 = "uint64_t" * 4,
        }),
    ),
    named(
        "marllb_backend_stats",
        fields!(BackendStats {
            counters: BackendCounters = "struct marllb_backend_counters",
            samples: BackendSamples = "struct marllb_backend_samples",
            _reserved: u8 = "uint8_t" * 32,
        }),
    ),
    named(
        "marllb_stats_frame",
        fields!(StatsFrame {
            head: StatsHead = "struct marllb_stats_head",
            backends: BackendStats = "struct marllb_backend_stats" * MAX_BACKENDS,
        }),
    ),
    named(
        "marllb_stats_block",
        fields!(StatsBlock {
            seq: u64 = "uint64_t",
            _reserved: u64 = "uint64_t" * 7,
            words: u64 = "uint64_t" * STATS_WORDS,
        }),
    ),
    named(
        "marllb_region_fixed",
        fields!(RegionFixed {
            header: HeaderBlock = "struct marllb_header_block",
            config: ConfigBlock = "struct marllb_config_block",
            control: ControlBlock = "struct marllb_control_block",
            backend_set: BackendSetBlock = "struct marllb_backend_set_block",
        }),
    ),
];

/// `true` if the fields of `t` follow each other with no gap and end exactly at
/// its size: there is no implicit padding anywhere.
pub const fn tiles(t: &TypeDesc) -> bool {
    let mut at = 0;
    let mut i = 0;
    while i < t.fields.len() {
        let f = &t.fields[i];
        if f.offset != at {
            return false;
        }
        at += f.elem_size * f.count;
        i += 1;
    }
    at == t.size
}

const fn all_tile() -> bool {
    let mut i = 0;
    while i < TYPES.len() {
        if !tiles(&TYPES[i]) {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(all_tile(), "a shared type has implicit padding");

const fn mix(h: u64, v: u64) -> u64 {
    let mut h = h;
    let b = v.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

const fn layout_hash() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    h = mix(h, LAYOUT_VERSION as u64);
    h = mix(h, MAX_BACKENDS as u64);
    h = mix(h, MAX_WORKERS as u64);
    h = mix(h, DropReason::COUNT as u64);
    h = mix(h, TYPES.len() as u64);
    let mut i = 0;
    while i < TYPES.len() {
        let t = &TYPES[i];
        h = mix(h, t.size as u64);
        h = mix(h, t.align as u64);
        h = mix(h, t.fields.len() as u64);
        let mut j = 0;
        while j < t.fields.len() {
            let f = &t.fields[j];
            h = mix(h, f.offset as u64);
            h = mix(h, f.elem_size as u64);
            h = mix(h, f.count as u64);
            j += 1;
        }
        i += 1;
    }
    h
}

/// FNV-1a over every size, alignment and field offset in [`TYPES`]: two builds
/// with different layouts have different hashes and refuse to talk.
pub const LAYOUT_HASH: u64 = layout_hash();

// ---------------------------------------------------------------------------
// Pinned numbers (the contract; the C header asserts the same ones).

const_assert_eq!(size_of::<HeaderImage>(), 64);
const_assert_eq!(align_of::<HeaderImage>(), 8);
const_assert_eq!(offset_of!(HeaderImage, magic), 0);
const_assert_eq!(offset_of!(HeaderImage, layout_version), 8);
const_assert_eq!(offset_of!(HeaderImage, header_size), 12);
const_assert_eq!(offset_of!(HeaderImage, layout_hash), 16);
const_assert_eq!(offset_of!(HeaderImage, region_size), 24);
const_assert_eq!(offset_of!(HeaderImage, backend_capacity), 32);
const_assert_eq!(offset_of!(HeaderImage, backend_count), 36);
const_assert_eq!(offset_of!(HeaderImage, worker_count), 40);
const_assert_eq!(offset_of!(HeaderImage, creator_pid), 44);
const_assert_eq!(offset_of!(HeaderImage, created_unix_ns), 48);
const_assert_eq!(offset_of!(HeaderImage, stats_interval_ms), 56);
const_assert_eq!(offset_of!(HeaderImage, _reserved), 60);

const_assert_eq!(size_of::<HeaderBlock>(), 128);
const_assert_eq!(align_of::<HeaderBlock>(), 64);
const_assert_eq!(offset_of!(HeaderBlock, image), 0);
const_assert_eq!(offset_of!(HeaderBlock, dp_heartbeat), 64);
const_assert_eq!(offset_of!(HeaderBlock, closed), 72);
const_assert_eq!(offset_of!(HeaderBlock, _reserved), 80);

const_assert_eq!(size_of::<VipEntry>(), 32);
const_assert_eq!(align_of::<VipEntry>(), 2);
const_assert_eq!(offset_of!(VipEntry, addr), 0);
const_assert_eq!(offset_of!(VipEntry, port), 16);
const_assert_eq!(offset_of!(VipEntry, proto), 18);
const_assert_eq!(offset_of!(VipEntry, family), 19);
const_assert_eq!(offset_of!(VipEntry, method), 20);
const_assert_eq!(offset_of!(VipEntry, encap), 21);
const_assert_eq!(offset_of!(VipEntry, _reserved), 22);

const_assert_eq!(size_of::<BackendEntry>(), 32);
const_assert_eq!(align_of::<BackendEntry>(), 4);
const_assert_eq!(offset_of!(BackendEntry, addr), 0);
const_assert_eq!(offset_of!(BackendEntry, mac), 16);
const_assert_eq!(offset_of!(BackendEntry, family), 22);
const_assert_eq!(offset_of!(BackendEntry, admin), 23);
const_assert_eq!(offset_of!(BackendEntry, base_weight), 24);
const_assert_eq!(offset_of!(BackendEntry, vip_mask), 28);

const_assert_eq!(size_of::<ConfigImage>(), 8768);
const_assert_eq!(align_of::<ConfigImage>(), 4);
const_assert_eq!(offset_of!(ConfigImage, n_vips), 0);
const_assert_eq!(offset_of!(ConfigImage, n_backends), 4);
const_assert_eq!(offset_of!(ConfigImage, _reserved), 8);
const_assert_eq!(offset_of!(ConfigImage, vips), 64);
const_assert_eq!(offset_of!(ConfigImage, backends), 576);
const_assert_eq!(size_of::<ConfigBlock>(), 8768);
const_assert_eq!(align_of::<ConfigBlock>(), 64);

const_assert_eq!(size_of::<WeightsFrame>(), 1344);
const_assert_eq!(align_of::<WeightsFrame>(), 8);
const_assert_eq!(offset_of!(WeightsFrame, epoch), 0);
const_assert_eq!(offset_of!(WeightsFrame, count), 8);
const_assert_eq!(offset_of!(WeightsFrame, flags), 12);
const_assert_eq!(offset_of!(WeightsFrame, checksum), 16);
const_assert_eq!(offset_of!(WeightsFrame, _reserved0), 24);
const_assert_eq!(offset_of!(WeightsFrame, weights), 32);
const_assert_eq!(offset_of!(WeightsFrame, admin), 1056);
const_assert_eq!(offset_of!(WeightsFrame, _reserved1), 1312);

const_assert_eq!(size_of::<ControlBlock>(), 1472);
const_assert_eq!(align_of::<ControlBlock>(), 64);
const_assert_eq!(offset_of!(ControlBlock, controller_heartbeat), 0);
const_assert_eq!(offset_of!(ControlBlock, controller_pid), 8);
const_assert_eq!(offset_of!(ControlBlock, _reserved0), 16);
const_assert_eq!(offset_of!(ControlBlock, seq), 64);
const_assert_eq!(offset_of!(ControlBlock, _reserved1), 72);
const_assert_eq!(offset_of!(ControlBlock, words), 128);

const_assert_eq!(size_of::<BackendSetFrame>(), 8224);
const_assert_eq!(align_of::<BackendSetFrame>(), 8);
const_assert_eq!(offset_of!(BackendSetFrame, version), 0);
const_assert_eq!(offset_of!(BackendSetFrame, count), 8);
const_assert_eq!(offset_of!(BackendSetFrame, flags), 12);
const_assert_eq!(offset_of!(BackendSetFrame, checksum), 16);
const_assert_eq!(offset_of!(BackendSetFrame, _reserved0), 24);
const_assert_eq!(offset_of!(BackendSetFrame, backends), 32);

const_assert_eq!(size_of::<BackendSetBlock>(), 8384);
const_assert_eq!(align_of::<BackendSetBlock>(), 64);
const_assert_eq!(offset_of!(BackendSetBlock, seq), 0);
const_assert_eq!(offset_of!(BackendSetBlock, applied_version), 64);
const_assert_eq!(offset_of!(BackendSetBlock, refused_version), 72);
const_assert_eq!(offset_of!(BackendSetBlock, refused_reason), 80);
const_assert_eq!(offset_of!(BackendSetBlock, words), 128);
const_assert_eq!(offset_of!(BackendSetBlock, _reserved2), 8352);

const_assert_eq!(size_of::<WatchdogStats>(), 32);
const_assert_eq!(offset_of!(WatchdogStats, fallback_active), 0);
const_assert_eq!(offset_of!(WatchdogStats, fallback_reason), 4);
const_assert_eq!(offset_of!(WatchdogStats, fallback_entries), 8);
const_assert_eq!(offset_of!(WatchdogStats, fallback_exits), 16);
const_assert_eq!(offset_of!(WatchdogStats, applied_epoch), 24);

const_assert_eq!(size_of::<ValidationStats>(), 96);
const_assert_eq!(offset_of!(ValidationStats, frames_applied), 0);
const_assert_eq!(offset_of!(ValidationStats, frames_rejected), 8);
const_assert_eq!(offset_of!(ValidationStats, contention_events), 16);
const_assert_eq!(offset_of!(ValidationStats, checksum_mismatch), 24);
const_assert_eq!(offset_of!(ValidationStats, bad_count), 32);
const_assert_eq!(offset_of!(ValidationStats, count_clamped), 40);
const_assert_eq!(offset_of!(ValidationStats, bad_admin), 48);
const_assert_eq!(offset_of!(ValidationStats, weights_clamped), 56);
const_assert_eq!(offset_of!(ValidationStats, all_zero), 64);
const_assert_eq!(offset_of!(ValidationStats, sets_applied), 72);
const_assert_eq!(offset_of!(ValidationStats, sets_refused), 80);
const_assert_eq!(offset_of!(ValidationStats, _reserved), 88);

const_assert_eq!(size_of::<StatsHead>(), 448);
const_assert_eq!(align_of::<StatsHead>(), 64);
const_assert_eq!(offset_of!(StatsHead, window_seq), 0);
const_assert_eq!(offset_of!(StatsHead, window_start_ns), 8);
const_assert_eq!(offset_of!(StatsHead, published_ns), 16);
const_assert_eq!(offset_of!(StatsHead, worker), 24);
const_assert_eq!(offset_of!(StatsHead, n_backends), 28);
const_assert_eq!(offset_of!(StatsHead, watchdog), 32);
const_assert_eq!(offset_of!(StatsHead, validation), 64);
const_assert_eq!(offset_of!(StatsHead, global), 160);
const_assert_eq!(offset_of!(StatsHead, drops), 288);
const_assert_eq!(offset_of!(StatsHead, _reserved), 416);

const_assert_eq!(size_of::<BackendCounters>(), 64);
const_assert_eq!(align_of::<BackendCounters>(), 64);
const_assert_eq!(size_of::<Reservoir>(), 520);
const_assert_eq!(size_of::<BackendSamples>(), 2080);
const_assert_eq!(size_of::<GlobalCounters>(), 128);
const_assert_eq!(size_of::<BackendStats>(), 2176);
const_assert_eq!(align_of::<BackendStats>(), 64);
const_assert_eq!(offset_of!(BackendStats, counters), 0);
const_assert_eq!(offset_of!(BackendStats, samples), 64);
const_assert_eq!(offset_of!(BackendStats, _reserved), 2144);

const_assert_eq!(size_of::<StatsFrame>(), 557_504);
const_assert_eq!(align_of::<StatsFrame>(), 64);
const_assert_eq!(offset_of!(StatsFrame, head), 0);
const_assert_eq!(offset_of!(StatsFrame, backends), 448);

const_assert_eq!(size_of::<StatsBlock>(), 557_568);
const_assert_eq!(align_of::<StatsBlock>(), 64);
const_assert_eq!(offset_of!(StatsBlock, seq), 0);
const_assert_eq!(offset_of!(StatsBlock, _reserved), 8);
const_assert_eq!(offset_of!(StatsBlock, words), 64);

const_assert_eq!(size_of::<RegionFixed>(), 18_752);
const_assert_eq!(align_of::<RegionFixed>(), 64);
const_assert_eq!(offset_of!(RegionFixed, header), 0);
const_assert_eq!(offset_of!(RegionFixed, config), 128);
const_assert_eq!(offset_of!(RegionFixed, control), 8896);
const_assert_eq!(offset_of!(RegionFixed, backend_set), 10_368);
const_assert_eq!(size_of::<AtomicU64>(), 8);
const_assert_eq!(align_of::<AtomicU64>(), 8);
