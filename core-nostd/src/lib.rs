//! # marllb-core
//!
//! The per-packet logic of MARLLB, shared by the DPDK host, the VPP plugin and the
//! simulator: parse (`wire`), classify (`classify`), track flows (`flow`), choose a
//! backend (`select`), rewrite (`rewrite`) and count (`telemetry`), strung together
//! by `pipeline`.
//!
//! The crate is `no_std` and never allocates. All state lives in flat, fixed-size
//! `#[repr(C)]` arrays without pointers; the per-packet path uses integer arithmetic
//! only (weights are Q16.16 fixed point, times are nanoseconds in `u64` or
//! microseconds in wrapping `u32`). Every stage is a function of explicit inputs, so
//! the pipeline maps onto a match-action design (SmartNIC, FPGA).
//!
//! No function in this crate panics on any input: parsers return small `Copy` error
//! enums, the pipeline turns them into counted drops.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod classify;
pub mod flow;
pub mod hash;
pub mod pipeline;
pub mod prefetch;
pub mod rewrite;
pub mod select;
pub mod service;
pub mod sync;
pub mod telemetry;
pub mod wire;

/// Largest number of backends one VIP can have (backend indices fit in a `u8`
/// index space of the alias table and a `u16` Maglev entry).
pub const MAX_BACKENDS: usize = 256;

/// Fixed-point weight: Q16.16, so `WEIGHT_ONE` is a weight of 1.0.
pub type Weight = u32;

/// A weight of 1.0 in Q16.16.
pub const WEIGHT_ONE: Weight = 1 << 16;
