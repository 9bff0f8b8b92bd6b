//! Raw FFI bindings to the system DPDK, generated at build time by bindgen from
//! `wrapper.h` (allowlisted to what `marllb-dpdk` uses), plus the `marllb_*`
//! shim functions (`shim.c`) that give DPDK's `static inline` fast path
//! (`rte_eth_rx_burst`, `rte_eth_tx_burst`, `rte_pktmbuf_alloc/free`,
//! `rte_errno`, `rte_lcore_id`) a linkable symbol.
//!
//! Everything here is `unsafe` to call; the safe layer is `marllb-dpdk`'s `dpdk`
//! module.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(missing_debug_implementations, missing_docs, rustdoc::all)]
#![allow(clippy::all, clippy::pedantic, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
