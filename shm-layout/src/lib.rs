//! # marllb-shm
//!
//! The shared-memory contract between the MARLLB data plane and its controller:
//! one region per load-balancer instance under `/dev/shm`, versioned, with a
//! compile-time layout hash, every offset pinned, sequence-locked publication in
//! both directions, and a data-plane watchdog.
//!
//! ```text
//! offset 0       HeaderBlock   magic, version, layout hash, sizes, counts, pid,
//!                              data-plane heartbeat, closed flag
//!        128     ConfigBlock   VIPs and backends the data plane was configured with
//!        8896    ControlBlock  controller heartbeat; seqlock'd WeightsFrame
//!        10368   BackendSetBlock seqlock'd BackendSetFrame (backends added or
//!                              removed at run time) and the data plane's answer
//!        18752   StatsBlock[w] per worker: seqlock'd StatsFrame (cache-aligned)
//! ```
//!
//! * [`layout`]: the types, pinned sizes/offsets, [`layout::LAYOUT_HASH`].
//! * [`seqlock`]: the publication protocol (payload as atomics; loom-checked).
//! * [`validate`]: what the other side wrote is untrusted.
//! * [`region`]: a validated view over the blocks, however they were mapped.
//! * [`dataplane`]: weights under a watchdog, per-worker stats publication.
//! * [`backend_set`]: the backends the controller wants served, checked.
//! * [`controller`]: publishing weights, heartbeat, reading stats.
//! * `map` (feature `std`): create/attach under `/dev/shm` with `rustix`.
//! * `cheader` (feature `std`): the C header generator.
//!
//! Under `cfg(loom)` only [`sync`] and [`seqlock`] are built, on loom's atomics.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "std", test))]
extern crate std;

pub mod seqlock;
pub mod sync;

#[cfg(not(loom))]
pub mod backend_set;
#[cfg(all(feature = "std", not(loom)))]
pub mod cheader;
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod controller;
#[cfg(not(loom))]
pub mod dataplane;
#[cfg(not(loom))]
pub mod layout;
#[cfg(all(feature = "std", not(loom)))]
pub mod map;
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
pub mod validate;

#[cfg(not(loom))]
pub use controller::{Controller, PublishError, SetAnswer, StatsError};
#[cfg(not(loom))]
pub use dataplane::{
    DataPlane, DataPlaneConfig, DpStatus, FallbackReason, Poll, Source, StatsPublisher,
};
#[cfg(not(loom))]
pub use layout::{ConfigImage, StatsFrame, WeightsFrame, LAYOUT_HASH};
#[cfg(all(feature = "std", not(loom)))]
pub use map::{CreateOptions, ShmError, ShmRegion};
#[cfg(not(loom))]
pub use region::RegionView;
#[cfg(not(loom))]
pub use validate::{Expect, LayoutError, WeightVector};
