//! # marllb-vpp
//!
//! The VPP-free part of MARLLB's VPP host, linked into the plugin
//! (`plugin/`, `marllb_plugin.so`) and tested here without VPP:
//!
//! * [`cli`]: the operator commands' grammar and VPP-style error messages;
//! * [`config`]: the operator's configuration and the marllb-core `Service`
//!   built from it;
//! * [`frame`]: the graph nodes' packet entry point, over `vlib_buffer_t`s
//!   laid out exactly as VPP lays them out (pre-generated VPP 26.06 bindings);
//! * [`runtime`]: per-thread workers, service swaps, the controller link
//!   through the shm region, and the `show` output.
//!
//! Every per-packet decision is marllb-core's: [`frame`] only maps buffers onto
//! `Packet` views and verdicts onto next nodes.

pub mod cli;
pub mod config;
pub mod frame;
pub mod runtime;
