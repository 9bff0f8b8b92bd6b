//! The bed every scenario and the demo stand on: the backends, the LB nodes
//! (data plane on a [`Host`], optionally a controller attached to its
//! shared-memory region) and the router's routing, described once with a
//! [`BedBuilder`] and built in one order: topology, client settings, the
//! backends' recording rules, then each started node's data plane and
//! controller.
//!
//! # Contract
//!
//! * A data plane gets a shared-memory region exactly when a controller is
//!   configured: `marllb-<prefix>` on a one-node bed, `marllb-<prefix>-<i>`
//!   on a bed of several nodes.
//! * Every node runs the same data-plane and controller options; a node's
//!   controller also gets the node's BGP speaker on a [`Routing::Bgp`] bed.
//! * Nodes the builder was told not to start ([`BedBuilder::start_nodes`])
//!   are started with [`Bed::start_node`].

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::load_run::LoadRun;
use super::recording::{record, Recording};
use crate::backend::BackendSpec;
use crate::lb::{
    metrics, per_backend, start_controller, start_host, BackendMetric, CtrlOptions, Host, LbOptions,
};
use crate::load::{Capacities, LoadArgs};
use crate::netns::Signal;
use crate::topology::{backend_addr, Process, Routing, Topology};

/// `n` backends of equal capacity (`cpus` each).
pub fn equal_backends(n: usize, cpus: f64, workers: u32, backlog: u32) -> Vec<BackendSpec> {
    (0..n)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: backend_addr(j),
            cpus,
            workers,
            backlog,
        })
        .collect()
}

/// Backends of unequal capacity: the MARLLB moderate mix (4 of every 7
/// small, `small_cpus` each, the rest with twice the CPU).
pub fn moderate_backends(n: usize, small_cpus: f64, workers: u32) -> Vec<BackendSpec> {
    (0..n)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: backend_addr(j),
            cpus: if j % 7 < 4 {
                small_cpus
            } else {
                2.0 * small_cpus
            },
            workers,
            backlog: 128,
        })
        .collect()
}

/// What a bed is built from ([`Bed::builder`]).
#[derive(Debug, Clone)]
pub struct BedBuilder {
    prefix: String,
    dir: PathBuf,
    backends: Vec<BackendSpec>,
    lb_nodes: usize,
    start_nodes: Option<usize>,
    routing: Routing,
    host: Host,
    dataplane: LbOptions,
    controller: Option<CtrlOptions>,
    client_ports: Option<RangeInclusive<u16>>,
    recording: Option<Recording>,
}

impl BedBuilder {
    /// The backends (started with the topology).
    pub fn backends(mut self, specs: Vec<BackendSpec>) -> Self {
        self.backends = specs;
        self
    }

    /// `n` LB nodes (default 1).
    pub fn lb_nodes(mut self, n: usize) -> Self {
        self.lb_nodes = n;
        self
    }

    /// Starts only the first `n` nodes at build (default: all).
    pub fn start_nodes(mut self, n: usize) -> Self {
        self.start_nodes = Some(n);
        self
    }

    /// How the router learns the VIP route (default [`Routing::Static`]).
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// The data planes' host (default [`Host::Dpdk`]).
    pub fn host(mut self, host: Host) -> Self {
        self.host = host;
        self
    }

    /// Every node's data-plane options (`shm` is the bed's: see the module's
    /// contract).
    pub fn dataplane(mut self, opts: LbOptions) -> Self {
        self.dataplane = opts;
        self
    }

    /// A controller on every node, with these options (default: none).
    pub fn controller(mut self, opts: CtrlOptions) -> Self {
        self.controller = Some(opts);
        self
    }

    /// The client's local port range (`net.ipv4.ip_local_port_range`).
    pub fn client_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.client_ports = Some(ports);
        self
    }

    /// What the backends record of the segments the LB nodes forward.
    pub fn recording(mut self, recording: Recording) -> Self {
        self.recording = Some(recording);
        self
    }

    /// Builds the topology and starts the nodes (in the order of the module's
    /// docs).
    pub fn build(self) -> Result<Bed> {
        let topo = Topology::build_with(
            &self.prefix,
            &self.backends,
            self.lb_nodes,
            &self.dir,
            self.routing,
        )?;
        let mut bed = Bed {
            topo,
            specs: self.backends,
            prefix: self.prefix,
            host: self.host,
            dataplane: self.dataplane,
            controller: self.controller,
            logs: vec![None; self.lb_nodes],
        };
        if let Some(ports) = self.client_ports {
            bed.topo.tb.sysctl(
                &bed.topo.client,
                "net.ipv4.ip_local_port_range",
                &format!("{} {}", ports.start(), ports.end()),
            )?;
        }
        if let Some(r) = self.recording {
            record(&bed.topo, r)?;
        }
        for i in 0..self.start_nodes.unwrap_or(self.lb_nodes) {
            bed.start_node(i)?;
        }
        Ok(bed)
    }
}

/// A built bed: the topology and how its nodes run.
#[derive(Debug)]
pub struct Bed {
    /// The network, its processes and the backends.
    pub topo: Topology,
    /// The backends it was built with (the load's capacities).
    pub specs: Vec<BackendSpec>,
    prefix: String,
    host: Host,
    dataplane: LbOptions,
    controller: Option<CtrlOptions>,
    logs: Vec<Option<PathBuf>>,
}

impl Bed {
    /// A one-node bed without backends or controller, named `prefix`, its
    /// configurations and logs in `dir`.
    pub fn builder(prefix: &str, dir: &Path) -> BedBuilder {
        BedBuilder {
            prefix: prefix.into(),
            dir: dir.into(),
            backends: Vec::new(),
            lb_nodes: 1,
            start_nodes: None,
            routing: Routing::Static,
            host: Host::Dpdk,
            dataplane: LbOptions::default(),
            controller: None,
            client_ports: None,
            recording: None,
        }
    }

    /// Node `i`'s shared-memory region, if it has a controller.
    pub fn shm(&self, i: usize) -> Option<String> {
        self.controller.as_ref()?;
        Some(if self.topo.lbs.len() == 1 {
            format!("marllb-{}", self.prefix)
        } else {
            format!("marllb-{}-{i}", self.prefix)
        })
    }

    /// LB node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        self.topo
            .lbs
            .get(i)
            .map(|n| n.ns.clone())
            .unwrap_or_default()
    }

    /// The controllers' options (`None`: the bed has none).
    pub fn controller_options(&self) -> Option<&CtrlOptions> {
        self.controller.as_ref()
    }

    /// Starts node `i`'s data plane; returns its log.
    pub fn start_dataplane(&mut self, i: usize) -> Result<PathBuf> {
        let opts = LbOptions {
            shm: self.shm(i),
            ..self.dataplane.clone()
        };
        let log = start_host(&mut self.topo, i, self.host, &opts)?;
        if let Some(slot) = self.logs.get_mut(i) {
            *slot = Some(log.clone());
        }
        Ok(log)
    }

    /// Starts node `i`'s controller (none on a bed without one).
    pub fn start_controller(&mut self, i: usize) -> Result<()> {
        let (Some(opts), Some(shm)) = (self.controller.clone(), self.shm(i)) else {
            return Ok(());
        };
        let bgp = match self.topo.routing {
            Routing::Bgp => Some(
                self.topo
                    .lbs
                    .get(i)
                    .and_then(|n| n.bgp.clone())
                    .context("a BGP topology has a speaker per LB node")?,
            ),
            Routing::Static => None,
        };
        start_controller(&mut self.topo, i, &shm, &CtrlOptions { bgp, ..opts })?;
        Ok(())
    }

    /// Starts node `i`: its data plane, then its controller.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        self.start_dataplane(i)?;
        self.start_controller(i)
    }

    /// Kills node `i`'s controller (SIGKILL) and starts a new one.
    pub fn restart_controller(&mut self, i: usize) -> Result<()> {
        self.kill(Process::Controller(i));
        self.start_controller(i)
    }

    /// Kills `p` (SIGKILL to its process group); whether it was running.
    pub fn kill(&mut self, p: Process<'_>) -> bool {
        self.topo.tb.kill(&p.label())
    }

    /// Sends `signal` to `p` and its process group; whether it was running.
    pub fn signal(&self, p: Process<'_>, signal: Signal) -> bool {
        self.topo.tb.signal(&p.label(), signal)
    }

    /// Waits for `p` to exit, at most `limit`: its exit status, or `None`.
    pub fn wait(
        &mut self,
        p: Process<'_>,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        self.topo.tb.wait(&p.label(), limit)
    }

    /// Node `i`'s data-plane log, once it was started.
    pub fn dataplane_log(&self, i: usize) -> Option<&Path> {
        self.logs.get(i)?.as_deref()
    }

    /// Node `i`'s controller's `/metrics` text.
    pub fn metrics(&self, i: usize) -> Result<String> {
        let port = self
            .controller
            .as_ref()
            .context("the bed has no controller")?
            .prometheus_port;
        metrics(&self.ns(i), port)
    }

    /// Node `i`'s controller's value of `metric` for backend `addr`
    /// (`None`: no answer, or no such sample).
    pub fn backend_metric(&self, i: usize, metric: BackendMetric, addr: &str) -> Option<f64> {
        let m = self.metrics(i).ok()?;
        per_backend(&m, metric).get(addr).copied()
    }

    /// The load generator's defaults with the bed's backends as capacities.
    pub fn load_args(&self) -> LoadArgs {
        LoadArgs {
            capacities: Capacities::of(&self.specs),
            ..LoadArgs::default()
        }
    }

    /// Starts `load` in the background ([`Process::Load`]).
    pub fn start_load(&mut self, load: &LoadArgs) -> Result<LoadRun> {
        super::load_run::start_load(&mut self.topo, &Process::Load.label(), load)
    }
}
