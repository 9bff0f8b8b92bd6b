//! The VPP host as an LB node's data plane: our plugin (`libmarllb_plugin.so`,
//! `cargo build --profile ci -p marllb-vpp-plugin`) in a VPP that is already
//! installed. The project never builds, ships or downloads VPP.
//!
//! # Contract
//!
//! * **Finding VPP** ([`find`]): the `vpp` binary named by `MARLLB_VPP`, else
//!   `vpp` on `PATH`; `vppctl` beside it; VPP's `af_packet_plugin.so` in
//!   `../lib/x86_64-linux-gnu/vpp_plugins` from the binary's directory, else in
//!   `/usr/lib/x86_64-linux-gnu/vpp_plugins`. No `vpp` at all is
//!   [`Lookup::Missing`], which says what was looked for (callers skip); a
//!   `MARLLB_VPP` that names no file, or a VPP without its `vppctl` or its
//!   af_packet plugin, is an error.
//! * **One VPP per LB node** ([`start_dataplane`]), started in the node's
//!   namespace as `marllb-dpdk` is (label `lb<i>`, so the scenarios' kill and
//!   wait work on either host), on an af_packet host interface over `data0`
//!   with `data0`'s MAC: the router's static neighbour reaches it, and L2 DSR
//!   frames leave with the source MAC they have from `marllb-dpdk`.
//! * **Everything it writes** is in the node's run directory `lb<i>/vpp`
//!   (`startup.conf`, a plugin directory of two symlinks, the CLI, API and
//!   stats sockets, VPP's log) or in `/dev/shm` (two API segments named after
//!   the testbed, the controller's region). The testbed removes all of it at
//!   teardown, after it has killed VPP (the pid it started, by kill(2)), also
//!   on failure and on Ctrl-C.
//! * **Ready** when `show lb rl stats` answers `enabled` and the host
//!   interface is up (probed through `vppctl`, no log is read).
//! * **Configured weights as `marllb-dpdk`'s**: `lb rl set-servers` gives each
//!   server its own (`<addr> mac <mac> weight <w>`), the same
//!   [`BackendSpec::configured_weight`](crate::backend::BackendSpec::configured_weight)
//!   as `lb.toml`.
//! * **What differs from `marllb-dpdk`'s configuration**: the flow-table size
//!   and the watchdog timeout are the plugin's own. A weights file and
//!   flow-state sync are refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::lb::LbOptions;
use crate::topology::Topology;
use crate::VIP;

/// The environment variable naming the `vpp` binary to use.
pub const VPP_ENV: &str = "MARLLB_VPP";

/// VPP's plugin directory relative to the directory of its binary.
const PLUGINS_BESIDE: &str = "../lib/x86_64-linux-gnu/vpp_plugins";

/// VPP's plugin directory as Debian's and FD.io's packages install it.
const PLUGINS_SYSTEM: &str = "/usr/lib/x86_64-linux-gnu/vpp_plugins";

/// VPP's own plugin the host interface needs.
const AF_PACKET: &str = "af_packet_plugin.so";

/// Our plugin as cargo builds it, next to the workspace's other binaries.
pub const PLUGIN: &str = "libmarllb_plugin.so";

/// `unix { cli-listen }` and the other sockets are `sun_path`s: 108 bytes
/// with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// An installed VPP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VppInstall {
    /// The `vpp` binary.
    pub vpp: PathBuf,
    /// `vppctl`, beside it.
    pub vppctl: PathBuf,
    /// VPP's plugin directory (with `af_packet_plugin.so`).
    pub plugins: PathBuf,
}

/// What [`find`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A VPP with `vppctl` and its af_packet plugin.
    Found(VppInstall),
    /// No `vpp` binary; the message says where it was looked for.
    Missing(String),
}

/// Looks for an installed VPP (see the module's contract).
pub fn find() -> Result<Lookup> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_in(std::env::var_os(VPP_ENV).map(PathBuf::from), &path)
}

/// [`find`] with the environment given.
fn find_in(env: Option<PathBuf>, path: &std::ffi::OsStr) -> Result<Lookup> {
    let vpp = match env {
        Some(p) if p.is_file() => p,
        Some(p) => bail!("{VPP_ENV}={} is not a file (the vpp binary)", p.display()),
        None => match std::env::split_paths(path)
            .map(|d| d.join("vpp"))
            .find(|p| p.is_file())
        {
            Some(p) => p,
            None => {
                return Ok(Lookup::Missing(format!(
                    "no VPP found: {VPP_ENV} is not set and there is no `vpp` on PATH ({}); \
                     set {VPP_ENV}=/path/to/bin/vpp for an installed VPP (vppctl beside it, \
                     its plugins in {PLUGINS_BESIDE} from there or in {PLUGINS_SYSTEM})",
                    path.to_string_lossy()
                )))
            }
        },
    };
    let dir = vpp.parent().unwrap_or(Path::new("."));
    let vppctl = dir.join("vppctl");
    if !vppctl.is_file() {
        bail!(
            "VPP at {} has no vppctl beside it ({})",
            vpp.display(),
            vppctl.display()
        );
    }
    let candidates = [dir.join(PLUGINS_BESIDE), PathBuf::from(PLUGINS_SYSTEM)];
    let Some(plugins) = candidates.iter().find(|d| d.join(AF_PACKET).is_file()) else {
        bail!(
            "VPP at {}: no {AF_PACKET} in {} or {PLUGINS_SYSTEM}",
            vpp.display(),
            candidates[0].display()
        );
    };
    Ok(Lookup::Found(VppInstall {
        vpp,
        vppctl,
        plugins: plugins.clone(),
    }))
}

impl VppInstall {
    /// The installed VPP, or an error saying what was looked for.
    pub fn require() -> Result<Self> {
        match find()? {
            Lookup::Found(v) => Ok(v),
            Lookup::Missing(why) => bail!("{why}"),
        }
    }

    /// Runs one CLI command through `vppctl` on the socket `sock`; fails
    /// when `vppctl` does or VPP answers with an error (VPP's CLI errors
    /// read `<command path>: <message>`, and `vppctl` exits 0 on them).
    pub fn ctl(&self, sock: &Path, cmd: &str) -> Result<String> {
        let out = crate::netns::run(
            Command::new(&self.vppctl)
                .arg("-s")
                .arg(sock)
                .args(cmd.split_whitespace()),
        )
        .with_context(|| format!("vppctl {cmd}"))?;
        if let Some(e) = cli_error(cmd, &out) {
            bail!("vppctl {cmd}: {e}");
        }
        Ok(out)
    }
}

/// The error line of VPP's answer to `cmd`, if it is one: `<path>: <message>`
/// with `<path>` a leading part of the command (`lb rl: unknown input ...`).
fn cli_error<'a>(cmd: &str, out: &'a str) -> Option<&'a str> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (path, _) = line.split_once(": ")?;
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let path_words: Vec<&str> = path.split_whitespace().collect();
    (!path_words.is_empty() && words.starts_with(&path_words)).then_some(line)
}

/// The run directory of LB node `i`'s VPP.
pub fn run_dir(topo: &Topology, i: usize) -> PathBuf {
    topo.dir.join(format!("lb{i}")).join("vpp")
}

/// The CLI socket of LB node `i`'s VPP.
pub fn cli_socket(topo: &Topology, i: usize) -> PathBuf {
    run_dir(topo, i).join("cli.sock")
}

/// `startup.conf` of a VPP whose files are all in `run`: no hugepages (4 KiB
/// pages), plugins only from `plugins`, API segments named `prefix`.
fn startup_conf(run: &Path, plugins: &Path, prefix: &str, main_core: usize) -> String {
    let r = run.display();
    format!(
        "unix {{ nodaemon cli-listen {r}/cli.sock log {r}/vpp.log runtime-dir {r} }}\n\
         api-segment {{ prefix {prefix} }}\n\
         socksvr {{ socket-name {r}/api.sock }}\n\
         memory {{ main-heap-size 512M main-heap-page-size 4k }}\n\
         buffers {{ buffers-per-numa 16384 page-size 4k }}\n\
         statseg {{ size 32M page-size 4k socket-name {r}/stats.sock }}\n\
         plugins {{ path {} }}\n\
         cpu {{ main-core {main_core} }}\n",
        plugins.display()
    )
}

/// Starts VPP with our plugin as LB node `i`'s data plane (label `lb<i>`),
/// configured like [`crate::lb::write_config`]'s `marllb-dpdk` (the VIP on
/// TCP port 80, every backend of `topo` in L2 DSR, `opts.method`, the shared
/// memory region `opts.shm` for a controller); returns once it forwards.
/// Returns the file its output goes to.
pub fn start_dataplane(
    topo: &mut Topology,
    i: usize,
    vpp: &VppInstall,
    opts: &LbOptions,
) -> Result<PathBuf> {
    if opts.weights_file.is_some() {
        bail!("the VPP host takes no weights file (its weights come from a controller)");
    }
    if opts.sync {
        bail!("flow-state sync is not set up for the VPP host in the testbed");
    }
    let node = topo.lbs.get(i).context("no such LB node")?.clone();
    let plugin = crate::lb::bin(PLUGIN)
        .context("the VPP host needs our plugin: cargo build --profile ci -p marllb-vpp-plugin")?;
    let dir = topo.dir.join(format!("lb{i}"));
    let run = run_dir(topo, i);
    // A directory left by an earlier run in this place must not count.
    if run.exists() {
        std::fs::remove_dir_all(&run).with_context(|| format!("removing {}", run.display()))?;
    }
    topo.tb.remove_on_teardown(&run);
    let plugins = run.join("plugins");
    std::fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let sock = cli_socket(topo, i);
    if sock.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "VPP's socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter testbed directory",
            sock.display()
        );
    }
    for (name, target) in [
        (AF_PACKET, vpp.plugins.join(AF_PACKET)),
        ("marllb_plugin.so", plugin),
    ] {
        std::os::unix::fs::symlink(&target, plugins.join(name))
            .with_context(|| format!("linking {} into {}", target.display(), plugins.display()))?;
    }
    let prefix = format!("{}vpp{i}", topo.tb.prefix());
    for seg in ["global_vm", "vpe-api"] {
        let p = PathBuf::from(format!("/dev/shm/{prefix}-{seg}"));
        let _ = std::fs::remove_file(&p);
        topo.tb.remove_on_teardown(&p);
    }
    if let Some(shm) = &opts.shm {
        topo.tb
            .remove_on_teardown(&PathBuf::from(format!("/dev/shm/{shm}")));
    }
    // The main loop on the second core when there is one (the first is the
    // kernel's, the backends' and the load generator's as much as VPP's).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let main_core = usize::from(cores > 1);
    let conf = run.join("startup.conf");
    std::fs::write(&conf, startup_conf(&run, &plugins, &prefix, main_core))
        .with_context(|| format!("writing {}", conf.display()))?;

    let log = dir.join("dataplane.log");
    let label = crate::topology::Process::DataPlane(i).label();
    let conf_s = conf.to_string_lossy().into_owned();
    topo.tb.spawn(
        &label,
        &node.ns,
        &vpp.vpp.to_string_lossy(),
        &["-c", &conf_s],
        &log,
    )?;
    let exited = |topo: &mut Topology| -> Option<String> {
        (!topo.tb.running(&label)).then(|| {
            format!(
                "VPP for lb{i} exited:\n{}{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(run.join("vpp.log")).unwrap_or_default()
            )
        })
    };
    // Up when its CLI answers and our plugin is loaded (bounded).
    let mut up = false;
    for _ in 0..300 {
        if let Some(e) = exited(topo) {
            bail!("{e}");
        }
        if vpp
            .ctl(&sock, "show lb rl stats")
            .is_ok_and(|s| s.starts_with("marllb:"))
        {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !up {
        bail!(
            "VPP for lb{i} did not answer `show lb rl stats` on {} within 15 s; see {}",
            sock.display(),
            log.display()
        );
    }

    let iface = "data0";
    let host_if = format!("host-{iface}");
    let servers: Vec<String> = topo
        .backends
        .iter()
        .map(|b| {
            format!(
                "{} mac {} weight {:.3}",
                b.spec.addr,
                b.mac,
                b.spec.configured_weight()
            )
        })
        .collect();
    let mut cmds = vec![
        format!(
            "create host-interface name {iface} hw-addr {}",
            node.data_mac
        ),
        format!("set interface ip address {host_if} {}/24", node.next_hop),
        format!("set interface state {host_if} up"),
        format!(
            "lb rl set-vip {VIP} protocol tcp port 80 encap l2dsr method {}",
            crate::lb::method_name(opts.method)
        ),
        format!("lb rl set-servers {}", servers.join(" ")),
    ];
    if let Some(shm) = &opts.shm {
        cmds.push(format!("lb rl shm {shm}"));
    }
    cmds.push(format!("lb rl enable {host_if}"));
    let mut transcript = String::new();
    for c in &cmds {
        let out = vpp
            .ctl(&sock, c)
            .with_context(|| format!("configuring lb{i}'s VPP; see {}", log.display()))?;
        transcript += &format!("vpp# {c}\n{out}");
    }
    std::fs::write(dir.join("vpp-config.txt"), &transcript)?;

    // Forwarding when the plugin says enabled and the interface is up.
    for _ in 0..100 {
        if let Some(e) = exited(topo) {
            bail!("{e}");
        }
        let enabled = vpp
            .ctl(&sock, "show lb rl stats")
            .is_ok_and(|s| s.starts_with("marllb: enabled"));
        let link_up = vpp
            .ctl(&sock, &format!("show interface {host_if}"))
            .is_ok_and(|s| interface_up(&s, &host_if));
        if enabled && link_up {
            return Ok(log);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!(
        "VPP for lb{i}: {host_if} not up with the plugin enabled after 5 s; see {}",
        log.display()
    )
}

/// Whether `show interface` lists `name` with state `up`.
fn interface_up(show: &str, name: &str) -> bool {
    show.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&name) && w.get(2) == Some(&"up")
    })
}

/// `show lb rl stats` of LB node `i`'s VPP.
pub fn stats(topo: &Topology, i: usize, vpp: &VppInstall) -> Result<String> {
    vpp.ctl(&cli_socket(topo, i), "show lb rl stats")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_errors_are_told_from_answers() {
        assert_eq!(
            cli_error(
                "lb rl set-vip foo",
                "lb rl: expected IP address, got `foo'\n"
            ),
            Some("lb rl: expected IP address, got `foo'")
        );
        assert!(cli_error("show foo", "show: unknown input `foo'").is_some());
        assert_eq!(
            cli_error("create host-interface name data0", "host-data0\n"),
            None
        );
        assert_eq!(
            cli_error("lb rl shm x", "created /dev/shm/x for 1 threads\n"),
            None
        );
        // A colon in an answer is not an error unless it names the command.
        assert_eq!(
            cli_error("show lb rl stats", "marllb: enabled, 1 threads\n"),
            None
        );
        assert_eq!(cli_error("lb rl enable host-data0", ""), None);
    }

    #[test]
    fn the_interface_state_is_read_from_show_interface() {
        let show = "              Name               Idx    State  MTU (L3/IP4/IP6/MPLS)     Counter          Count\n\
                    host-data0                        1      up          9000/0/0/0     rx packets   3\n";
        assert!(interface_up(show, "host-data0"));
        assert!(!interface_up(&show.replace(" up ", " down "), "host-data0"));
        assert!(!interface_up(show, "host-data1"));
    }

    #[test]
    fn a_missing_vpp_says_what_was_looked_for() {
        let empty = std::env::temp_dir().join(format!("marllb-novpp-{}", std::process::id()));
        std::fs::create_dir_all(&empty).expect("temp dir");
        match find_in(None, empty.as_os_str()).expect("lookup") {
            Lookup::Missing(m) => {
                assert!(m.contains(VPP_ENV), "{m}");
                assert!(m.contains("PATH"), "{m}");
                assert!(m.contains(&empty.to_string_lossy().into_owned()), "{m}");
            }
            Lookup::Found(v) => panic!("found {v:?} in an empty directory"),
        }
        let e = find_in(Some(empty.join("vpp")), empty.as_os_str())
            .expect_err("a MARLLB_VPP that names nothing");
        assert!(e.to_string().contains("is not a file"), "{e}");
        // A vpp without vppctl beside it is an incomplete install.
        std::fs::write(empty.join("vpp"), "").expect("fake vpp");
        let e = find_in(None, empty.as_os_str()).expect_err("no vppctl");
        assert!(e.to_string().contains("no vppctl"), "{e}");
        let _ = std::fs::remove_dir_all(&empty);
    }

    #[test]
    fn startup_conf_keeps_every_file_in_the_run_directory() {
        let c = startup_conf(Path::new("/r"), Path::new("/r/plugins"), "tbvpp0", 1);
        for want in [
            "cli-listen /r/cli.sock",
            "log /r/vpp.log",
            "runtime-dir /r",
            "prefix tbvpp0",
            "socket-name /r/api.sock",
            "socket-name /r/stats.sock",
            "path /r/plugins",
            "main-core 1",
            "page-size 4k",
        ] {
            assert!(c.contains(want), "{want} missing from\n{c}");
        }
    }
}
