//! `cargo xtask`: the project's entry points.
//!
//! * `cargo xtask demo` — the main job: runs the data-plane core over a generated
//!   traffic trace and prints what it did.
//! * `cargo xtask test` — installs what the tests need, then runs every check:
//!   formatting, clippy with `-D warnings`, and all tests.
//! * `cargo xtask bench shm` — the shared-memory protocol against memcpy.
//! * `cargo xtask bench core` — the core pipeline against a peer pipeline built
//!   from well-known crates, in the same run.
//! * `cargo xtask bench sim` — simulator flow events per second on one core.
//!
//! System packages are installed with apt-get only when missing, and every step
//! says what it is doing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

/// Debian packages each job needs (none yet for the core alone).
const TEST_PACKAGES: &[&str] = &[];
const DEMO_PACKAGES: &[&str] = &[];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage: cargo xtask <demo | test | bench core | bench shm | bench sim>"
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("demo") => demo(&root, &args[1..]),
        Some("test") => test(&root),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("core") => bench_core(&root, &args[2..]),
            Some("shm") => bench_shm(&root, &args[2..]),
            Some("sim") => bench_sim(&root, &args[2..]),
            _ => bail!("{}", usage()),
        },
        _ => bail!("{}", usage()),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(Path::to_path_buf)
        .context("xtask must live one level below the workspace root")
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    println!("    $ cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Installs the Debian packages in `pkgs` that are not installed yet.
fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        if !pkgs.is_empty() {
            println!("    system packages already installed: {}", pkgs.join(" "));
        }
        return Ok(());
    }
    step(&format!(
        "installing system packages: {}",
        missing.join(" ")
    ));
    let run = |args: &[&str]| -> Result<()> {
        println!("    $ apt-get {}", args.join(" "));
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (are you root on Debian?)")?;
        if !st.success() {
            bail!("apt-get {} failed ({st})", args.join(" "));
        }
        Ok(())
    };
    run(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    run(&args)
}

fn demo(root: &Path, extra: &[String]) -> Result<()> {
    ensure_packages(DEMO_PACKAGES)?;
    step("building and running the core demo (release build)");
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "marllb-core",
        "--example",
        "demo",
        "--",
    ];
    args.extend(extra.iter().map(String::as_str));
    cargo(root, &args)
}

fn test(root: &Path) -> Result<()> {
    ensure_packages(TEST_PACKAGES)?;
    step("checking formatting (cargo fmt --check)");
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    step("linting (cargo clippy -D warnings)");
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    step("building the core with its optional defmt feature");
    cargo(root, &["check", "-p", "marllb-core", "--features", "defmt"])?;
    step("running every test (release build: the statistical tests are heavy)");
    cargo(root, &["test", "--workspace", "--release"])?;
    step("model-checking the shared-memory protocols with loom (cfg loom, own target dir)");
    let loom_target = target_dir(root).join("loom");
    println!(
        "    $ RUSTFLAGS=\"--cfg loom\" CARGO_TARGET_DIR={} cargo test -p marllb-shm --release --test loom",
        loom_target.display()
    );
    let st = Command::new(env!("CARGO"))
        .args(["test", "-p", "marllb-shm", "--release", "--test", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", &loom_target)
        .current_dir(root)
        .status()
        .context("running cargo")?;
    if !st.success() {
        bail!("loom tests failed ({st})");
    }
    println!("\nall checks passed");
    Ok(())
}

fn bench_shm(root: &Path, extra: &[String]) -> Result<()> {
    step("benchmarking the shared-memory protocol against memcpy of the same bytes");
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "marllb-shm",
        "--example",
        "bench_shm",
        "--",
    ];
    args.extend(extra.iter().map(String::as_str));
    cargo(root, &args)
}

fn bench_core(root: &Path, extra: &[String]) -> Result<()> {
    step("building the core benchmark (release)");
    cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "marllb-core",
            "--example",
            "bench_core",
        ],
    )?;
    let bin = target_dir(root).join("release/examples/bench_core");
    run_pinned(
        "benchmarking the core pipeline against the etherparse/HashMap/rand_distr peer",
        &bin,
        extra,
    )
}

fn bench_sim(root: &Path, extra: &[String]) -> Result<()> {
    step("building the simulator (release)");
    cargo(root, &["build", "--release", "-p", "marllb-sim"])?;
    let bin = target_dir(root).join("release/marllb-sim");
    let mut args = vec!["bench".to_string()];
    args.extend(extra.iter().cloned());
    run_pinned("simulator flow events per second (one core)", &bin, &args)
}

/// The cargo target directory (honours CARGO_TARGET_DIR).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Runs a benchmark binary pinned to the last CPU with `taskset` when available
/// (one forwarding core, away from core 0 where interrupts land).
fn run_pinned(what: &str, bin: &Path, extra: &[String]) -> Result<()> {
    step(what);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = (cpus - 1).to_string();
    let have_taskset = Command::new("taskset").arg("-V").output().is_ok();
    let mut cmd = if have_taskset {
        println!(
            "    $ taskset -c {core} {} {}",
            bin.display(),
            extra.join(" ")
        );
        let mut c = Command::new("taskset");
        c.args(["-c", &core]).arg(bin);
        c
    } else {
        println!("    $ {} {}", bin.display(), extra.join(" "));
        Command::new(bin)
    };
    let st = cmd.args(extra).status().context("running the benchmark")?;
    if !st.success() {
        bail!("benchmark failed ({st})");
    }
    Ok(())
}
