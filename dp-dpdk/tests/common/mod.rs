//! Shared helpers of the integration tests: run the built binary under a
//! guard that kills it on failure, follow its stdout with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_marllb-dpdk");

/// Fails `test` with a clear message unless it runs as root (these tests are
/// `#[ignore]`d with the reason; `cargo xtask test` runs them with `--ignored`
/// as root).
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "{test} needs root (DPDK EAL, network namespaces): run it as root, as `cargo xtask test` does"
    );
}

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("marllb-dpdk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// EAL arguments without hugepages or PCI, with a unique file prefix.
pub fn eal_base(prefix: &str) -> Vec<String> {
    [
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "512",
        "--file-prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("{prefix}{}", std::process::id()),
        "-l".into(),
        "0,1".into(),
        "--log-level".into(),
        "lib.eal:warning".into(),
    ])
    .collect()
}

/// A running marllb-dpdk; killed on drop unless it already exited.
pub struct Lb {
    pub child: Child,
    lines: Receiver<String>,
    pub log: Vec<String>,
}

impl Lb {
    /// Spawns `cmd` (stdout captured line by line, stderr inherited).
    pub fn spawn(mut cmd: Command) -> Lb {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn marllb-dpdk");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lb {
            child,
            lines: rx,
            log: Vec::new(),
        }
    }

    /// Waits (at most `limit`) for a stdout line satisfying `pred`; returns it.
    pub fn wait_line(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    println!("  | {l}");
                    self.log.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with our own child's pid and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGINT, then waits (bounded) for exit; drains stdout. Returns success.
    pub fn stop(&mut self, limit: Duration) -> bool {
        self.signal(libc::SIGINT);
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    println!("  | {l}");
                    self.log.push(l);
                }
                return st.success();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rx=N` of a stats line.
pub fn stats_rx(line: &str) -> Option<u64> {
    line.strip_prefix("stats ")?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("rx="))
        .and_then(|v| v.parse().ok())
}

/// Kills a helper process (server) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Lb {
    /// Wraps a helper process so that it is killed on drop.
    pub fn spawn_guard(child: Child) -> ChildGuard {
        ChildGuard(child)
    }
}
