//! The MARLLB DPDK host (`marllb-dpdk`): safe DPDK wrappers, configuration,
//! the control seam, the worker loop and stats. The binary (`main.rs`) strings
//! them together.

pub mod config;
pub mod control;
pub mod dpdk;
pub mod stats;
pub mod sync;
pub mod trace;
pub mod worker;
