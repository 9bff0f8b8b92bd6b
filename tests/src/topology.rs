//! The testbed's network: a client, a router, load-balancer nodes and backends.
//!
//! ```text
//!  client ns                 router ns                                backend ns (each)
//!  c0 198.18.1.2/24 ──── rc 198.18.1.1/24                             eth0 198.18.2.100+j/24
//!                            br0 198.18.2.1/24 ── b<j> ─────────────── VIP 198.18.255.1 on lo
//!                              │
//!                              ├── l<i>d ──── LB ns: data0 (no address; the DPDK
//!                              │              host reads and writes it with af_packet)
//!                              └── l<i>m ──── LB ns: mgmt0 198.18.2.10+i/24 (controller:
//!                                             health checks, metrics)
//! ```
//!
//! The router reaches the VIP through each LB node's data interface (a static
//! neighbour 198.18.2.200+i → data0's MAC); with several LB nodes it uses a
//! multipath route hashed on the L4 5-tuple. That route is set by the testbed
//! ([`Routing::Static`]) or learned from BIRD speakers on the LB nodes, which
//! announce the VIP with their data-plane next hop over their management
//! interface ([`Routing::Bgp`], see [`crate::bgp`]). Backends answer the client
//! directly (L2 direct server return): the LB only rewrites MAC addresses.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::backend::{self, Backend, BackendSpec};
use crate::bgp::{self, BgpSpeaker};
use crate::netns::Testbed;
use crate::VIP;

/// An LB node's namespace and interfaces.
#[derive(Debug, Clone)]
pub struct LbNode {
    /// Namespace.
    pub ns: String,
    /// MAC of its data interface (`data0`).
    pub data_mac: String,
    /// The router's next hop for it (a static neighbour).
    pub next_hop: String,
    /// Its management address (controller side).
    pub mgmt_addr: String,
    /// Its BGP speaker with [`Routing::Bgp`] (socket and controller flags in
    /// [`BgpSpeaker`]).
    pub bgp: Option<BgpSpeaker>,
}

/// When the router's VIP route took a new value (see
/// [`Topology::bracket_vip_next_hops`]).
#[derive(Clone, Copy, Debug)]
pub struct RouteChange {
    /// From the call to the new value.
    pub waited: std::time::Duration,
    /// The route was still another (UNIX seconds).
    pub before_unix: f64,
    /// The route was the new one.
    pub after_unix: f64,
}

/// A built network.
#[derive(Debug)]
pub struct Topology {
    /// Namespaces and processes (removed on drop).
    pub tb: Testbed,
    /// Client namespace.
    pub client: String,
    /// Router namespace.
    pub router: String,
    /// LB nodes.
    pub lbs: Vec<LbNode>,
    /// Backends (running).
    pub backends: Vec<Backend>,
    /// Working directory (configs, logs).
    pub dir: PathBuf,
    /// How the router learns the VIP route.
    pub routing: Routing,
    /// The router's BGP speaker with [`Routing::Bgp`].
    pub router_bgp: Option<BgpSpeaker>,
}

/// A process the testbed runs, by what it is: its label in the [`Testbed`]
/// (written here once; the modules that start them and the scenarios that
/// stop, signal or wait for them use [`Process::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process<'a> {
    /// LB node `i`'s data plane (`lb<i>`, either host).
    DataPlane(usize),
    /// LB node `i`'s controller (`ctrl<i>`).
    Controller(usize),
    /// The nginx of the backend with this id (`<id>-nginx`).
    Nginx(&'a str),
    /// The php-fpm of the backend with this id (`<id>-fpm`).
    PhpFpm(&'a str),
    /// The load generator a scenario runs in the background (`load`).
    Load,
}

impl Process<'_> {
    /// Its label.
    pub fn label(&self) -> String {
        match self {
            Self::DataPlane(i) => format!("lb{i}"),
            Self::Controller(i) => format!("ctrl{i}"),
            Self::Nginx(id) => format!("{id}-nginx"),
            Self::PhpFpm(id) => format!("{id}-fpm"),
            Self::Load => "load".into(),
        }
    }
}

/// The client's address (on its own segment with the router).
pub const CLIENT_ADDR: &str = "198.18.1.2";

/// The router's address on the server segment, the backends' default route.
pub const ROUTER_ADDR: &str = "198.18.2.1";

/// Management address of LB node `i`: 198.18.2.10+i (its controller's
/// side, and its BGP session's with [`Routing::Bgp`]).
pub fn lb_mgmt_addr(i: usize) -> String {
    format!("198.18.2.{}", 10 + i)
}

/// The router's next hop for LB node `i`'s data plane: 198.18.2.200+i, a
/// permanent neighbour entry for `data0`'s MAC.
pub fn lb_next_hop(i: usize) -> String {
    format!("198.18.2.{}", 200 + i)
}

/// How the router learns its route to the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// A static route set by the testbed ([`Topology::route_vip`]).
    #[default]
    Static,
    /// BGP: a BIRD speaker on each LB node announces the VIP (once its
    /// `marllb_vip` protocol is enabled) and the router's BIRD merges what it
    /// learns into one kernel multipath route (see [`crate::bgp`]).
    Bgp,
}

/// Address of backend `j` on the server segment: 198.18.2.100+j (room for
/// 155 backends below the broadcast address).
pub fn backend_addr(j: usize) -> String {
    format!("198.18.2.{}", 100 + j)
}

impl Topology {
    /// Builds client, router, `lbs` LB namespaces and the backends (started),
    /// with the router's static VIP route ([`Routing::Static`]). With
    /// `lbs == 0` the router sends the VIP straight to the first backend (a
    /// plumbing check without a load balancer).
    pub fn build(prefix: &str, specs: &[BackendSpec], lbs: usize, dir: &Path) -> Result<Self> {
        Self::build_with(prefix, specs, lbs, dir, Routing::Static)
    }

    /// Like [`Topology::build`], the router's VIP route learned as `routing`
    /// says. With [`Routing::Bgp`] it starts a BIRD speaker in the router and
    /// in each LB node and returns once every session is established; the
    /// router has no VIP route until a node enables its `marllb_vip`
    /// protocol ([`BgpSpeaker::enable`], or its controller).
    pub fn build_with(
        prefix: &str,
        specs: &[BackendSpec],
        lbs: usize,
        dir: &Path,
        routing: Routing,
    ) -> Result<Self> {
        if routing == Routing::Bgp && lbs == 0 {
            bail!("BGP routing needs at least one LB node to announce the VIP");
        }
        std::fs::create_dir_all(dir)?;
        let mut tb = Testbed::new(prefix)?;
        let client = tb.add_ns("client")?;
        let router = tb.add_ns("router")?;
        tb.veth(&client, "c0", &router, "rc")?;
        tb.ip_in(
            &client,
            &["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "c0"],
        )?;
        tb.ip_in(&client, &["route", "add", "default", "via", "198.18.1.1"])?;
        tb.ip_in(&router, &["addr", "add", "198.18.1.1/24", "dev", "rc"])?;
        // A fixed bridge address: otherwise it follows the lowest port MAC, and
        // every change of it flushes the router's neighbour table, static
        // entries included (the LB next hops).
        tb.ip_in(
            &router,
            &[
                "link",
                "add",
                "br0",
                "address",
                "02:00:c6:12:02:01",
                "type",
                "bridge",
            ],
        )?;
        tb.ip_in(&router, &["link", "set", "br0", "up"])?;
        tb.ip_in(&router, &["addr", "add", "198.18.2.1/24", "dev", "br0"])?;
        tb.sysctl(&router, "net.ipv4.ip_forward", "1")?;
        tb.sysctl(&router, "net.ipv4.fib_multipath_hash_policy", "1")?;
        for k in ["all", "default"] {
            tb.sysctl(&router, &format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
        }

        let mut nodes = Vec::new();
        for i in 0..lbs {
            let ns = tb.add_ns(&format!("lb{i}"))?;
            tb.veth(&ns, "data0", &router, &format!("l{i}d"))?;
            tb.veth(&ns, "mgmt0", &router, &format!("l{i}m"))?;
            for p in [format!("l{i}d"), format!("l{i}m")] {
                tb.ip_in(&router, &["link", "set", &p, "master", "br0"])?;
            }
            let mgmt = lb_mgmt_addr(i);
            tb.ip_in(&ns, &["addr", "add", &format!("{mgmt}/24"), "dev", "mgmt0"])?;
            tb.sysctl(&ns, "net.ipv4.ip_forward", "0")?;
            let data_mac = tb.mac(&ns, "data0")?;
            let next_hop = lb_next_hop(i);
            tb.ip_in(
                &router,
                &[
                    "neigh",
                    "replace",
                    &next_hop,
                    "lladdr",
                    &data_mac,
                    "dev",
                    "br0",
                    "nud",
                    "permanent",
                ],
            )?;
            nodes.push(LbNode {
                ns,
                data_mac,
                next_hop,
                mgmt_addr: mgmt,
                bgp: None,
            });
        }

        let mut topo = Self {
            tb,
            client,
            router,
            lbs: nodes,
            backends: Vec::new(),
            dir: dir.to_path_buf(),
            routing,
            router_bgp: None,
        };
        for spec in specs {
            topo.start_backend(spec.clone())?;
        }
        match routing {
            Routing::Static => topo.route_vip()?,
            Routing::Bgp => topo.start_bgp()?,
        }
        Ok(topo)
    }

    /// Starts the router's and every LB node's BIRD and waits (bounded) until
    /// each of the router's sessions is established.
    fn start_bgp(&mut self) -> Result<()> {
        let router = bgp::start(
            &mut self.tb,
            &self.router,
            "router",
            bgp::ROUTER_ASN,
            &bgp::router_config(self.lbs.len()),
            &self.dir,
        )?;
        for (i, node) in self.lbs.iter_mut().enumerate() {
            node.bgp = Some(bgp::start(
                &mut self.tb,
                &node.ns,
                &format!("lb{i}"),
                bgp::lb_asn(i),
                &bgp::lb_config(i),
                &self.dir,
            )?);
        }
        let want: Vec<String> = (0..self.lbs.len()).map(|i| format!("lb{i}")).collect();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let up = router.established()?;
            if want.iter().all(|w| up.contains(w)) {
                break;
            }
            if std::time::Instant::now() >= end {
                bail!(
                    "BGP sessions not established after 15 s (up: {up:?}); see {}",
                    self.dir.join("bird-router.log").display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.router_bgp = Some(router);
        Ok(())
    }

    /// The gateways of the router's current route to the VIP, sorted (one for
    /// a single path, several for a multipath route, none without a route).
    pub fn vip_next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        bgp::vip_next_hops(&self.router)
    }

    /// Polls [`Topology::vip_next_hops`] every 10 ms until it equals `want`
    /// (in any order) and returns how long that took; fails with the last
    /// state seen after `timeout`.
    pub fn wait_vip_next_hops(
        &self,
        want: &[Ipv4Addr],
        timeout: std::time::Duration,
    ) -> Result<std::time::Duration> {
        self.bracket_vip_next_hops(want, timeout).map(|b| b.waited)
    }

    /// [`Topology::wait_vip_next_hops`], and when the route changed, to the
    /// width of one poll (about 15 ms): the UNIX times (`load::unix_now`)
    /// at which the last poll that saw another route began and the first
    /// that saw `want` ended.
    pub fn bracket_vip_next_hops(
        &self,
        want: &[Ipv4Addr],
        timeout: std::time::Duration,
    ) -> Result<RouteChange> {
        let mut want = want.to_vec();
        want.sort();
        let start = std::time::Instant::now();
        let mut before = crate::load::unix_now();
        loop {
            let polled = crate::load::unix_now();
            let now = self.vip_next_hops()?;
            if now == want {
                return Ok(RouteChange {
                    waited: start.elapsed(),
                    before_unix: before,
                    after_unix: crate::load::unix_now(),
                });
            }
            before = polled;
            if start.elapsed() >= timeout {
                bail!("the router's VIP next hops are {now:?} after {timeout:?}, not {want:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Adds one more backend to a running topology, wired and started exactly
    /// as [`Topology::build`] wires and starts each of its backends (router
    /// port `b<j>`, the VIP on its loopback, its own nginx, php-fpm and CPU
    /// cgroup), and returns its index in [`Topology::backends`]. It is torn
    /// down with the rest of the testbed. The balancer does not learn of it
    /// here: an operator adds `backends[j].spec.addr` with MAC
    /// `backends[j].mac`, the values [`crate::lb::write_config`] gives the
    /// data plane. A backend that fails to come up leaves its namespace to the
    /// testbed's teardown and is not listed.
    pub fn add_backend(&mut self, spec: BackendSpec) -> Result<usize> {
        self.start_backend(spec)
    }

    /// The next backend's spec in the numbering [`Topology::build`]'s callers
    /// use: id `be<j>` and address [`backend_addr`]`(j)`, `j` the number of
    /// backends so far.
    pub fn next_backend_spec(&self, cpus: f64, workers: u32, backlog: u32) -> BackendSpec {
        let j = self.backends.len();
        BackendSpec {
            id: format!("be{j}"),
            addr: backend_addr(j),
            cpus,
            workers,
            backlog,
        }
    }

    /// Creates, wires and starts backend number `backends.len()`: the one
    /// place both [`Topology::build`] and [`Topology::add_backend`] make a
    /// backend.
    fn start_backend(&mut self, spec: BackendSpec) -> Result<usize> {
        self.check_new_backend(&spec)?;
        let j = self.backends.len();
        let (tb, router) = (&mut self.tb, self.router.as_str());
        let port = format!("b{j}");
        let ns = tb.add_ns(&spec.id)?;
        tb.veth(&ns, "eth0", router, &port)?;
        tb.ip_in(router, &["link", "set", &port, "master", "br0"])?;
        tb.ip_in(
            &ns,
            &["addr", "add", &format!("{}/24", spec.addr), "dev", "eth0"],
        )?;
        tb.ip_in(&ns, &["route", "add", "default", "via", ROUTER_ADDR])?;
        tb.ip_in(&ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        for (k, v) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
            ("net.core.somaxconn", "4096"),
        ] {
            tb.sysctl(&ns, k, v)?;
        }
        // The data plane rewrites a packet's destination to this MAC (L2 DSR).
        let mac = tb.mac(&ns, "eth0")?;
        let bdir = self.dir.join(&spec.id);
        backend::start(tb, &ns, &spec, VIP, &bdir)?;
        self.backends.push(Backend {
            spec,
            ns,
            mac,
            dir: bdir,
        });
        Ok(j)
    }

    /// Refuses a backend whose id or address another node already has: a
    /// repeated id would replace that backend's namespace and cgroup (they
    /// are named after it), a repeated address would split its traffic.
    fn check_new_backend(&self, spec: &BackendSpec) -> Result<()> {
        let addr: Ipv4Addr = spec
            .addr
            .parse()
            .with_context(|| format!("backend {}: address {:?}", spec.id, spec.addr))?;
        let [a, b, c, _] = addr.octets();
        if [a, b, c] != [198, 18, 2] {
            bail!(
                "backend {}: address {addr} is outside the server segment 198.18.2.0/24",
                spec.id
            );
        }
        if let Some(other) = self.backends.iter().find(|o| o.spec.id == spec.id) {
            bail!("backend id {} is taken ({})", spec.id, other.spec.addr);
        }
        let taken = std::iter::once(ROUTER_ADDR)
            .chain(self.lbs.iter().map(|l| l.mgmt_addr.as_str()))
            .chain(self.lbs.iter().map(|l| l.next_hop.as_str()))
            .chain(self.backends.iter().map(|o| o.spec.addr.as_str()));
        for t in taken {
            if t.parse::<Ipv4Addr>().ok() == Some(addr) {
                bail!("backend {}: address {addr} is taken", spec.id);
            }
        }
        Ok(())
    }

    /// Points the router's VIP route at the LB nodes (multipath when several),
    /// or at the first backend when there is none. One `ip route replace`: the
    /// route changes atomically, as a routing daemon's update does (a delete
    /// then an add left the router without a route to the VIP for a few
    /// milliseconds, and a SYN in that gap got an ICMP network unreachable,
    /// which aborts a connect()). Refused with [`Routing::Bgp`]: there the
    /// router's BIRD owns the route.
    pub fn route_vip(&self) -> Result<()> {
        if self.routing == Routing::Bgp {
            bail!("the router learns the VIP route by BGP: enable or disable an LB node's marllb_vip instead");
        }
        let dst = format!("{VIP}/32");
        let mut args: Vec<String> = vec!["route".into(), "replace".into(), dst];
        if self.lbs.is_empty() {
            let first = self
                .backends
                .first()
                .map_or_else(|| backend_addr(0), |b| b.spec.addr.clone());
            args.extend(["via".into(), first]);
        } else if self.lbs.len() == 1 {
            args.extend(["via".into(), self.lbs[0].next_hop.clone()]);
        } else {
            for lb in &self.lbs {
                args.extend([
                    "nexthop".into(),
                    "via".into(),
                    lb.next_hop.clone(),
                    "weight".into(),
                    "1".into(),
                ]);
            }
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.tb.ip_in(&self.router, &a)?;
        Ok(())
    }

    /// Captures packets matching `filter` (pcap syntax) on every port of the
    /// router (`rc`, `l<i>d`, `b<j>`) into `dir/<port>.pcap` with tcpdump
    /// until the testbed is torn down: what a scenario saw, for reading back
    /// with `tcpdump -r` or tshark. A port's capture shows a frame the LB
    /// forwards twice, into and out of the LB node.
    pub fn capture(&mut self, dir: &Path, filter: &str) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let ports: Vec<String> = std::iter::once("rc".to_string())
            .chain((0..self.lbs.len()).map(|i| format!("l{i}d")))
            .chain((0..self.backends.len()).map(|j| format!("b{j}")))
            .collect();
        let router = self.router.clone();
        for p in ports {
            let pcap = dir.join(format!("{p}.pcap")).to_string_lossy().into_owned();
            self.tb
                .spawn(
                    &format!("capture-{p}"),
                    &router,
                    "tcpdump",
                    &["-i", &p, "-n", "-U", "-s", "160", "-w", &pcap, filter],
                    &dir.join(format!("{p}.log")),
                )
                .context("tcpdump (Debian package tcpdump)")?;
        }
        // tcpdump needs a moment to attach.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(())
    }

    /// Removes LB node `i` from the router's multipath route (it "fails").
    /// Refused with [`Routing::Bgp`], like [`Topology::route_vip`]: there a
    /// node leaves by withdrawing ([`BgpSpeaker::disable`]) or by its
    /// speaker's session going down.
    pub fn remove_lb(&mut self, i: usize) -> Result<()> {
        if self.routing == Routing::Bgp {
            bail!("the router learns the VIP route by BGP: disable lb{i}'s marllb_vip instead");
        }
        if i < self.lbs.len() {
            self.lbs.remove(i);
        }
        self.route_vip()
    }

    /// Runs the load generator in the client namespace with `load` and returns
    /// its summary JSON line.
    pub fn load(&self, loadgen: &Path, load: &crate::load::LoadArgs) -> Result<String> {
        let out = crate::netns::run(
            crate::netns::in_ns(&self.client, &loadgen.to_string_lossy()).args(load.to_args()),
        )?;
        Ok(out.lines().last().unwrap_or("").to_string())
    }
}
