//! Atomics used by the protocol: `core`'s normally, loom's under `cfg(loom)` so
//! that the loom tests model-check the very code the hosts run.

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
