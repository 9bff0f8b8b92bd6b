//! Network namespaces and links, with cleanup that always runs.
//!
//! Every namespace is named `<prefix>-<role>`; the prefix is unique per testbed
//! (`mtb<pid>` by default), so parallel tests never collide. A [`Testbed`]
//! records what it created and removes it on drop; a Ctrl-C handler removes
//! everything any live testbed of this process created.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
/// The signals [`Testbed::signal`] sends (rustix's, by their `SIG` names).
pub use rustix::process::Signal;

/// Namespaces and processes to clean up on Ctrl-C.
static REGISTRY: Mutex<Vec<Owned>> = Mutex::new(Vec::new());

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Netns(String),
    Pid(u32),
    Cgroup(String),
    /// A file or directory a process of the testbed leaves behind (a VPP's
    /// run directory, its `/dev/shm` segments).
    Path(std::path::PathBuf),
}

fn register(o: Owned) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push(o);
    }
}

fn unregister(o: &Owned) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|x| x != o);
    }
}

/// Installs the Ctrl-C / SIGTERM handler once: it tears down everything
/// registered and exits with status 130.
pub fn install_signal_cleanup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            eprintln!("\ninterrupted: tearing the testbed down");
            cleanup_all();
            std::process::exit(130);
        });
    });
}

fn cleanup_all() {
    let owned: Vec<Owned> = REGISTRY
        .lock()
        .map(|mut r| r.drain(..).collect())
        .unwrap_or_default();
    // Processes first (they live in the namespaces), then namespaces.
    for o in owned.iter().rev() {
        if let Owned::Pid(p) = o {
            kill_tree(*p);
        }
    }
    for o in owned.iter().rev() {
        match o {
            Owned::Netns(n) => delete_netns(n),
            Owned::Cgroup(c) => {
                let _ = std::fs::remove_dir(c);
            }
            Owned::Path(p) => remove_path(p),
            Owned::Pid(_) => {}
        }
    }
}

/// Sends `sig` to process `pid` and, with `group`, to its process group, by
/// the system call itself. Never through the `kill` program: procps-ng 4.0.2
/// (Debian 12) reads `kill -KILL -13252` as `kill(-1, SIGKILL)` — every process
/// on the machine. Pids 0 and 1 are refused (0 or -1 would mean "everyone").
fn send(pid: u32, sig: rustix::process::Signal, group: bool) -> bool {
    use rustix::process::{kill_process, kill_process_group, Pid};
    let Some(p) = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .and_then(Pid::from_raw)
    else {
        return false;
    };
    let g = group && kill_process_group(p, sig).is_ok();
    // The leader itself may have left the group (e.g. a daemon's setsid).
    kill_process(p, sig).is_ok() || g
}

/// Kills a process and its process group (children were started in their own
/// group).
pub fn kill_tree(pid: u32) {
    send(pid, Signal::KILL, true);
}

/// Removes a file, or a directory with everything in it; a missing one is
/// no error (the process may have removed it on a clean exit).
fn remove_path(p: &std::path::Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

fn delete_netns(name: &str) {
    // Kill anything still running inside, then delete.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(p) = pid.parse::<u32>() {
                send(p, rustix::process::Signal::KILL, false);
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// CFS period of the testbed's CPU cgroups, microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

/// CFS quota for `cpus` CPUs per [`CFS_PERIOD_US`] (at least the kernel's
/// minimum, 1 ms).
fn cfs_quota_us(cpus: f64) -> u64 {
    ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000)
}

/// Fails the calling test with a clear message unless it runs as root (the
/// root-only tests are `#[ignore]`d with the reason; `cargo xtask test` runs
/// them with `--ignored` as root).
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (network namespaces, veth pairs): run it as root, as `cargo xtask test` does"
    );
}

/// True when running as root (namespaces, veth pairs and cgroups need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A root test's working directory, `$TMP/marllb-<tag>-<pid>`, and its
/// testbed prefix, `letters` and the process id's last `digits` digits: both
/// unique to the process (namespace names are short, so the prefix is too:
/// a scenario that builds one testbed per run appends a digit).
pub fn test_place(tag: &str, letters: &str, digits: u32) -> (std::path::PathBuf, String) {
    let pid = std::process::id();
    (
        std::env::temp_dir().join(format!("marllb-{tag}-{pid}")),
        format!("{letters}{}", pid % 10u32.saturating_pow(digits)),
    )
}

/// Runs a command to completion; fails with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>` in the root namespace (only for creating and moving links).
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A command that runs inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// A set of namespaces and processes that are removed when it is dropped.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    cgroups: Vec<String>,
    paths: Vec<std::path::PathBuf>,
}

impl Testbed {
    /// A new, empty testbed whose names start with `prefix`.
    pub fn new(prefix: &str) -> Result<Self> {
        if prefix.is_empty()
            || prefix.len() > 8
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric())
        {
            bail!("testbed prefix must be 1-8 alphanumeric characters (interface names are short)");
        }
        install_signal_cleanup();
        Ok(Self {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
            children: Vec::new(),
            cgroups: Vec::new(),
            paths: Vec::new(),
        })
    }

    /// The name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Name of the namespace for `role`.
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Creates namespace `<prefix>-<role>` with loopback up; removes a stale one
    /// of the same name first.
    pub fn add_ns(&mut self, role: &str) -> Result<String> {
        let name = self.ns(role);
        delete_netns(&name);
        ip(&["netns", "add", &name])?;
        register(Owned::Netns(name.clone()));
        self.namespaces.push(name.clone());
        run(in_ns(&name, "ip").args(["link", "set", "lo", "up"]))?;
        Ok(name)
    }

    /// Creates a veth pair with one end in each namespace (short names:
    /// `a_if` in `a_ns`, `b_if` in `b_ns`).
    pub fn veth(&self, a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) -> Result<()> {
        let tmp_a = format!("{}{}", self.prefix, a_if);
        let tmp_b = format!("{}{}", self.prefix, b_if);
        ip(&[
            "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
        ])?;
        ip(&["link", "set", &tmp_a, "netns", a_ns])?;
        ip(&["link", "set", &tmp_b, "netns", b_ns])?;
        run(in_ns(a_ns, "ip").args(["link", "set", &tmp_a, "name", a_if]))?;
        run(in_ns(b_ns, "ip").args(["link", "set", &tmp_b, "name", b_if]))?;
        for (ns, i) in [(a_ns, a_if), (b_ns, b_if)] {
            // Checksum offload would leave partial checksums on veth frames that
            // an af_packet reader (the DPDK host) then forwards as they are.
            run(in_ns(ns, "ethtool").args(["-K", i, "tx", "off", "rx", "off"])).context(
                "ethtool (Debian package ethtool) is needed to turn checksum offload off",
            )?;
            run(in_ns(ns, "ip").args(["link", "set", i, "up"]))?;
        }
        Ok(())
    }

    /// Runs `ip <args>` in namespace `ns`.
    pub fn ip_in(&self, ns: &str, args: &[&str]) -> Result<String> {
        run(in_ns(ns, "ip").args(args))
    }

    /// Sets a sysctl in namespace `ns`.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        run(in_ns(ns, "sysctl").args(["-qw", &format!("{key}={value}")]))?;
        Ok(())
    }

    /// MAC address of interface `dev` in namespace `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> Result<String> {
        let out = self.ip_in(ns, &["-o", "link", "show", dev])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .context("no link/ether address")
    }

    /// Starts a long-running process inside `ns` in its own process group, with
    /// its output to `log`; it is killed when the testbed is dropped.
    pub fn spawn(
        &mut self,
        label: &str,
        ns: &str,
        program: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> Result<u32> {
        let mut a = vec!["netns", "exec", ns, program];
        a.extend_from_slice(args);
        self.spawn_root(label, "ip", &a, log)
    }

    /// Like [`Testbed::spawn`] but the program starts in the root namespace (it
    /// enters a namespace itself, e.g. after joining a cgroup, which `ip netns
    /// exec`'s private sysfs would hide).
    pub fn spawn_root(
        &mut self,
        label: &str,
        program: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> Result<u32> {
        use std::os::unix::process::CommandExt;
        let f =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let f2 = f.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let pid = child.id();
        register(Owned::Pid(pid));
        self.children.push((label.to_string(), child));
        Ok(pid)
    }

    /// Kills the process started as `label` (SIGKILL to its group); returns
    /// whether one was running.
    pub fn kill(&mut self, label: &str) -> bool {
        let mut found = false;
        self.children.retain_mut(|(l, c)| {
            if l == label {
                kill_tree(c.id());
                let _ = c.wait();
                unregister(&Owned::Pid(c.id()));
                found = true;
                false
            } else {
                true
            }
        });
        found
    }

    /// Sends `signal` to the process started as `label` and everything in
    /// its process group (nginx's workers too); returns whether one was
    /// running.
    pub fn signal(&self, label: &str, signal: Signal) -> bool {
        self.children
            .iter()
            .filter(|(l, _)| l == label)
            .any(|(_, c)| send(c.id(), signal, true))
    }

    /// Whether the process started as `label` is still running.
    pub fn running(&mut self, label: &str) -> bool {
        self.children
            .iter_mut()
            .any(|(l, c)| l == label && matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process started as `label` to exit (up to `timeout`);
    /// returns its exit status if it did.
    pub fn wait(
        &mut self,
        label: &str,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + timeout;
        loop {
            for (l, c) in self.children.iter_mut() {
                if l == label {
                    if let Ok(Some(st)) = c.try_wait() {
                        return Some(st);
                    }
                }
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Creates a cgroup (v1 cpu controller) limited to `cpus` CPUs (e.g. 0.25)
    /// and returns its `cgroup.procs` path: a process that writes its pid there
    /// before it forks keeps all its children inside.
    pub fn cpu_cgroup(&mut self, name: &str, cpus: f64) -> Result<String> {
        let dir = format!("/sys/fs/cgroup/cpu/{}-{name}", self.prefix);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {dir}"))?;
        register(Owned::Cgroup(dir.clone()));
        self.cgroups.push(dir.clone());
        std::fs::write(
            format!("{dir}/cpu.cfs_period_us"),
            CFS_PERIOD_US.to_string(),
        )?;
        std::fs::write(
            format!("{dir}/cpu.cfs_quota_us"),
            cfs_quota_us(cpus).to_string(),
        )?;
        Ok(format!("{dir}/cgroup.procs"))
    }

    /// Changes the CPU limit of the cgroup [`Self::cpu_cgroup`] made for
    /// `name`, effective at once for the processes in it (the CFS quota per
    /// period, read back to check it took). Returns the quota set, in
    /// microseconds per [`CFS_PERIOD_US`].
    pub fn set_cpu_limit(&self, name: &str, cpus: f64) -> Result<u64> {
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= 64.0) {
            bail!("CPU limit {cpus} of {name}: must be in (0, 64]");
        }
        let dir = format!("/sys/fs/cgroup/cpu/{}-{name}", self.prefix);
        if !self.cgroups.contains(&dir) {
            bail!("{name} has no CPU cgroup of this testbed ({dir})");
        }
        let file = format!("{dir}/cpu.cfs_quota_us");
        let quota = cfs_quota_us(cpus);
        std::fs::write(&file, quota.to_string()).with_context(|| format!("writing {file}"))?;
        let back: u64 = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {file}"))?
            .trim()
            .parse()
            .with_context(|| format!("{file}: not a number"))?;
        if back != quota {
            bail!("{file} reads {back} after writing {quota}");
        }
        Ok(quota)
    }

    /// Removes `path` (a file, or a directory and its contents) at teardown,
    /// after every process is gone, also on Ctrl-C: what a process leaves
    /// behind when it is killed (a VPP's sockets, shared-memory segments and
    /// run directory).
    pub fn remove_on_teardown(&mut self, path: &std::path::Path) {
        let p = path.to_path_buf();
        register(Owned::Path(p.clone()));
        self.paths.push(p);
    }

    /// Tears everything down now (also done on drop).
    pub fn teardown(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            kill_tree(c.id());
            let _ = c.wait();
            unregister(&Owned::Pid(c.id()));
        }
        self.children.clear();
        for n in self.namespaces.iter().rev() {
            delete_netns(n);
            unregister(&Owned::Netns(n.clone()));
        }
        self.namespaces.clear();
        remove_shm_regions(&self.prefix);
        for p in self.paths.drain(..).rev() {
            remove_path(&p);
            unregister(&Owned::Path(p));
        }
        for c in self.cgroups.drain(..) {
            // The processes are gone; an empty cgroup can be removed.
            for _ in 0..50 {
                if std::fs::remove_dir(&c).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            unregister(&Owned::Cgroup(c));
        }
    }
}

/// Removes the data planes' shared-memory regions of the testbed `prefix`
/// (`/dev/shm/marllb-<prefix>` and `marllb-<prefix>-<i>`, the names the
/// scenarios give them): a data plane that is killed leaves its region behind.
fn remove_shm_regions(prefix: &str) {
    let base = format!("marllb-{prefix}");
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == base.as_str() || name.starts_with(&format!("{base}-")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_removes_this_testbeds_shm_regions_and_no_others() {
        if !std::path::Path::new("/dev/shm").is_dir() {
            return;
        }
        let tag = format!("t{}", std::process::id() % 100_000);
        let other = format!("{tag}9");
        let path = |n: &str| std::path::PathBuf::from(format!("/dev/shm/marllb-{n}"));
        let ours = [
            path(&tag),
            path(&format!("{tag}-0")),
            path(&format!("{tag}-1")),
        ];
        let theirs = path(&other);
        for p in ours.iter().chain([&theirs]) {
            std::fs::write(p, b"x").expect("writing /dev/shm");
        }
        drop(Testbed::new(&tag).expect("testbed"));
        for p in &ours {
            assert!(!p.exists(), "{} left behind", p.display());
        }
        assert!(theirs.exists(), "another testbed's region was removed");
        let _ = std::fs::remove_file(&theirs);
    }
}
