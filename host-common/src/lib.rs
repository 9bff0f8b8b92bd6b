//! # marllb-host
//!
//! What both MARLLB hosts (dp-dpdk's TOML, dp-vpp's CLI) share off the packet
//! path, so that it is written once:
//!
//! * [`clock`]: the packet threads' clock from the time stamp counter;
//! * [`addr`]: MAC parsing, and `std::net` addresses as the core stores them;
//! * [`service`]: [`ServiceSpec`], the host-neutral description of a service
//!   (backends, VIPs with their members, egress, timeouts, seed), and the one
//!   way to build the core's [`Service`](marllb_core::service::Service) from it;
//! * [`sync`]: the UDP side of flow-state sync with the other LB nodes;
//! * [`memory`]: the worker allocated on transparent huge pages;
//! * [`explain`]: which backend the consistent table gives a flow, through the
//!   core's own VIP match, exactly as the data plane places a packet it has no
//!   state for.
//!
//! Each host is a front end that produces a [`ServiceSpec`] and words the
//! errors its own way (dp-dpdk names the TOML field, dp-vpp writes like VPP).
//! The counters' total is the core's (`GlobalCounters += ...`).
// One `unsafe` call, the huge-page advice in `memory`, allowed there alone.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod clock;
pub mod explain;
pub mod memory;
pub mod service;
pub mod sync;

pub use addr::{family_addr, format_mac, parse_mac};
pub use explain::{consistent_backend, Flow};
pub use service::{backend, BuildError, ServiceSpec, ServiceVip, SetError};
