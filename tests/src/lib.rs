//! # marllb-testbed
//!
//! Runs the whole system as an operator would, on one machine: a client, a
//! router, load-balancer nodes and backends, each in its own network namespace,
//! joined by veth pairs the testbed creates and always removes. Traffic only ever
//! goes to addresses inside 198.18.0.0/15 between those namespaces; every client,
//! load generator and probe runs inside a namespace (`ip netns exec`).
//!
//! * [`netns`]: namespaces, veth pairs, the bridge, addresses, routes, and the
//!   cleanup (on drop, on error and on Ctrl-C).
//! * [`bgp`]: BIRD 2 speakers on the router and the LB nodes, so the router
//!   learns the VIP route by BGP ([`topology::Routing::Bgp`]).
//! * [`backend`]: nginx + php-fpm per backend, serving the busy-loop endpoint
//!   the shared traces call (`/dummy.php/?n=LOOPS`) and a static page, with the
//!   VIP on loopback (L2 direct server return: this kernel has no ipip/gre), and a
//!   CPU limit per backend (cgroup) so capacities differ.
//! * [`load`]: the open-loop replay of the shared traces (time and work scale
//!   factors recorded) and a constant-rate mode, with per-request latency.
//! * [`lb`] and [`vpp`]: an LB node's data plane on one of the two hosts
//!   ([`lb::Host`]: `marllb-dpdk`, or the VPP plugin in an installed VPP)
//!   and its controller.
//! * [`watchdog`]: the data plane's watchdog state, read from its
//!   shared-memory region.
//! * [`scenario`]: the scenarios, one module each, on a [`scenario::Bed`].

pub mod backend;
pub mod bgp;
pub mod demo;
pub mod lb;
pub mod load;
pub mod netns;
pub mod scenario;
pub mod topology;
pub mod vpp;
pub mod watchdog;

/// The VIP every scenario serves.
pub const VIP: &str = "198.18.255.1";
