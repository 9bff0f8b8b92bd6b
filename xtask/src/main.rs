//! `cargo xtask`: the project's entry points.
//!
//! * `cargo xtask demo` — the main job: runs the data-plane core over a generated
//!   traffic trace and prints what it did.
//! * `cargo xtask test` — installs what the tests need, then runs every check
//!   (formatting, clippy with `-D warnings`, all tests, loom, Miri, fuzzing),
//!   each even when an earlier one failed, and ends with a table of the results.
//! * `cargo xtask bench shm` — the shared-memory protocol against memcpy.
//! * `cargo xtask bench core [--callgrind]` — the core pipeline against a peer pipeline built
//!   from well-known crates, in the same run.
//! * `cargo xtask bench dpdk` — `marllb-dpdk` against `dpdk-testpmd` io-forward,
//!   same generated trace (net_pcap, infinite_rx) to net_null, interleaved runs.
//! * `cargo xtask bench ctrl` — one controller cycle against the bare tract
//!   inference of the same policy, in the same run.
//! * `cargo xtask bench sim` — simulator flow events per second on one core.
//!
//! System packages are installed with apt-get only when missing, and every step
//! says what it is doing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod bench_dpdk;

/// Debian packages each job needs: DPDK (headers, libraries and PMDs; testpmd
/// is in `dpdk-dev`), bindgen's libclang, and what the host's tests and the
/// testbed drive (web servers, tools, Prometheus).
const TEST_PACKAGES: &[&str] = &[
    "libdpdk-dev",
    "dpdk-dev",
    "pkg-config",
    "libclang-dev",
    "clang",
    "libpcap-dev",
    "iproute2",
    "procps",
    "ethtool",
    "curl",
    "nginx-light",
    "php-fpm",
    "php-cli",
    "prometheus",
    // The testbed's SYN flood (a bounded count of spoofed SYNs inside its namespaces).
    "hping3",
    // The LB-failover scenario records which LB node carried each SYN (nft sets).
    "nftables",
    // The testbed's BGP routing: BIRD 2 on the router and each LB node.
    "bird2",
];
const BENCH_DPDK_PACKAGES: &[&str] = &[
    "libdpdk-dev",
    "dpdk-dev",
    "pkg-config",
    "libclang-dev",
    "clang",
    "libpcap-dev",
];

/// `cargo xtask bench core --callgrind` runs the benchmark under Debian's valgrind.
const BENCH_CALLGRIND_PACKAGES: &[&str] = &["valgrind"];

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
    "usage: cargo xtask <demo [core] | test | fuzz [--seconds N] | bench core [--callgrind [--packets N]] | bench sync | bench shm | bench dpdk [--secs N] [--runs N] | bench ctrl | bench sim>"
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("demo") => demo(&root, &args[1..]),
        Some("test") => test(&root),
        Some("fuzz") => {
            let secs = args
                .iter()
                .position(|a| a == "--seconds")
                .and_then(|i| args.get(i + 1))
                .map(|v| v.parse::<u64>())
                .transpose()
                .context("--seconds takes a whole number")?
                .unwrap_or(60);
            fuzz(&root, secs).map(|_| ())
        }
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("core") => bench_core(&root, &args[2..]),
            Some("sync") => bench_sync(&root, &args[2..]),
            Some("shm") => bench_shm(&root, &args[2..]),
            Some("dpdk") => bench_dpdk::run(&root, &args[2..]),
            Some("ctrl") => bench_ctrl(&root, &args[2..]),
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
    if extra.first().map(String::as_str) == Some("core") {
        step("building and running the data-plane core demo (release build)");
        let mut args = vec![
            "run",
            "--release",
            "-p",
            "marllb-core",
            "--example",
            "demo",
            "--",
        ];
        args.extend(extra[1..].iter().map(String::as_str));
        return cargo(root, &args);
    }
    ensure_packages(TEST_PACKAGES)?;
    step("building the data planes (DPDK host, VPP plugin), the controller and the testbed (optimized, profile ci)");
    cargo(
        root,
        &[
            "build",
            "--profile",
            "ci",
            "-p",
            "marllb-dpdk",
            "-p",
            "marllb-ctrl",
            "-p",
            "marllb-testbed",
            // `--host vpp` loads it into an installed VPP.
            "-p",
            "marllb-vpp-plugin",
        ],
    )?;
    step("running the testbed: namespaces, backends, data plane (DPDK host, or --host vpp), controller, trace replay");
    let bin = target_dir(root).join("ci/marllb-testbed");
    let mut cmd = Command::new(&bin);
    cmd.arg("demo").arg("--root").arg(root).args(extra);
    println!(
        "    $ {} demo --root {} {}",
        bin.display(),
        root.display(),
        extra.join(" ")
    );
    let st = cmd.status().context("running marllb-testbed")?;
    if !st.success() {
        bail!("the testbed demo failed ({st})");
    }
    Ok(())
}

/// How a step of `cargo xtask test` that did not fail ended.
enum Ran {
    Passed,
    /// Could not run here, with the reason.
    Skipped(String),
}

/// Runs the steps of `cargo xtask test` one after another, recording each one's
/// name, outcome and wall time so that a failure does not stop the later steps.
struct Steps {
    done: Vec<(&'static str, Result<Ran>, Duration)>,
}

impl Steps {
    fn new() -> Self {
        Steps { done: Vec::new() }
    }

    /// Announces `what`, runs `f` and records its outcome under `name`.
    fn run(&mut self, name: &'static str, what: &str, f: impl FnOnce() -> Result<()>) {
        self.run_or_skip(name, what, || f().map(|()| Ran::Passed));
    }

    /// As [`Steps::run`], for a step that may find it cannot run here.
    fn run_or_skip(&mut self, name: &'static str, what: &str, f: impl FnOnce() -> Result<Ran>) {
        step(what);
        let start = Instant::now();
        let outcome = f();
        let took = start.elapsed();
        match &outcome {
            Ok(Ran::Passed) => println!("    {name}: passed ({})", secs(took)),
            Ok(Ran::Skipped(why)) => println!("    {name}: SKIPPED: {why}"),
            Err(e) => eprintln!("    {name}: FAILED ({}): {e:#}", secs(took)),
        }
        self.done.push((name, outcome, took));
    }

    /// Prints a table of every step and its result; fails if any step failed.
    fn finish(self) -> Result<()> {
        println!("\n| step | result | time |\n|---|---|---|");
        for (name, outcome, took) in &self.done {
            let result = match outcome {
                Ok(Ran::Passed) => "passed".to_string(),
                Ok(Ran::Skipped(why)) => format!("**SKIPPED**: {why}"),
                Err(e) => format!("**FAILED**: {e:#}"),
            };
            println!(
                "| {name} | {} | {} |",
                result.replace('\n', " "),
                secs(*took)
            );
        }
        let failed: Vec<&str> = self
            .done
            .iter()
            .filter(|(_, o, _)| o.is_err())
            .map(|(n, _, _)| *n)
            .collect();
        let skipped: Vec<&str> = self
            .done
            .iter()
            .filter(|(_, o, _)| matches!(o, Ok(Ran::Skipped(_))))
            .map(|(n, _, _)| *n)
            .collect();
        if !skipped.is_empty() {
            println!("\nwarning: skipped: {}", skipped.join(", "));
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} steps failed: {}",
                failed.len(),
                self.done.len(),
                failed.join(", ")
            );
        }
        println!("\nall checks passed");
        Ok(())
    }
}

/// A wall time as seconds with one decimal.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Runs `cmd`, shown as `shown`, and fails unless it exits successfully.
fn run_shown(cmd: &mut Command, shown: &str) -> Result<()> {
    println!("    $ {shown}");
    let st = cmd.status().with_context(|| format!("running `{shown}`"))?;
    if !st.success() {
        bail!("`{shown}` failed ({st})");
    }
    Ok(())
}

/// Installs the system packages (fatal on failure), then runs every check even
/// when an earlier one failed (none needs another to have passed), prints a table
/// of the results and fails if any check failed.
fn test(root: &Path) -> Result<()> {
    ensure_packages(TEST_PACKAGES)?;
    let mut steps = Steps::new();
    steps.run(
        "fmt check",
        "checking formatting (cargo fmt --check)",
        || cargo(root, &["fmt", "--all", "--", "--check"]),
    );
    steps.run("clippy", "linting (cargo clippy -D warnings)", || {
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
        )
    });
    steps.run(
        "alert rules",
        "checking and unit-testing the Prometheus alerting rules (promtool)",
        || {
            let dir = root.join("packaging/prometheus");
            run_shown(
                Command::new("promtool")
                    .args(["check", "rules", "marllb-alerts.yml"])
                    .current_dir(&dir),
                "promtool check rules packaging/prometheus/marllb-alerts.yml",
            )?;
            run_shown(
                Command::new("promtool")
                    .args(["test", "rules", "marllb-alerts.test.yml"])
                    .current_dir(&dir),
                "promtool test rules packaging/prometheus/marllb-alerts.test.yml",
            )
        },
    );
    steps.run(
        "defmt check",
        "building the core with its optional defmt feature",
        || cargo(root, &["check", "-p", "marllb-core", "--features", "defmt"]),
    );
    steps.run(
        "VPP plugin build",
        "building the VPP plugin (target/ci/libmarllb_plugin.so; dp-vpp/README.md)",
        || {
            cargo(
                root,
                &["build", "--profile", "ci", "-p", "marllb-vpp-plugin"],
            )
        },
    );
    steps.run(
        "workspace tests",
        "running every test (profile ci: optimized, no fat LTO; the statistical tests are heavy)",
        || {
            cargo(
                root,
                &["test", "--workspace", "--profile", "ci", "--no-fail-fast"],
            )
        },
    );
    steps.run_or_skip(
        "root tests",
        "running the root-only tests (#[ignore]d with the reason: the testbed scenarios, the demo through an installed VPP if there is one, and the DPDK host's pcap, veth and shm tests)",
        || {
            if !is_root() {
                return Ok(Ran::Skipped(
                    "not root: network namespaces and the DPDK EAL need it; run `cargo xtask test` as root".into(),
                ));
            }
            // The VPP-host test loads the plugin from target/ci (it skips
            // where no VPP is installed).
            cargo(
                root,
                &["build", "--profile", "ci", "-p", "marllb-vpp-plugin"],
            )?;
            cargo(
                root,
                &[
                    "test",
                    "--profile",
                    "ci",
                    "--no-fail-fast",
                    "-p",
                    "marllb-testbed",
                    "-p",
                    "marllb-dpdk",
                    "--",
                    "--ignored",
                ],
            )?;
            Ok(Ran::Passed)
        },
    );
    steps.run(
        "loom",
        "model-checking the shared-memory protocols with loom (cfg loom, own target dir)",
        || {
            let loom_target = target_dir(root).join("loom");
            run_shown(
                Command::new(env!("CARGO"))
                    .args(["test", "-p", "marllb-shm", "--profile", "ci", "--test", "loom"])
                    .env("RUSTFLAGS", "--cfg loom")
                    .env("CARGO_TARGET_DIR", &loom_target)
                    .current_dir(root),
                &format!(
                    "RUSTFLAGS=\"--cfg loom\" CARGO_TARGET_DIR={} cargo test -p marllb-shm --profile ci --test loom",
                    loom_target.display()
                ),
            )
        },
    );
    steps.run_or_skip(
        "Miri",
        "Miri over marllb-core's unit tests and the VPP node's buffer tests (undefined behaviour, out-of-bounds, uninitialised reads)",
        || miri(root),
    );
    steps.run(
        "fuzz",
        "fuzzing every target briefly (regressions only; `cargo xtask fuzz --seconds N` for a long run)",
        || fuzz(root, 20).map(|_| ()),
    );
    steps.finish()
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

fn bench_ctrl(root: &Path, extra: &[String]) -> Result<()> {
    step("building the controller benchmark (release)");
    let example = ["--release", "-p", "marllb-ctrl", "--example", "bench_ctrl"];
    cargo(root, &[&["build"][..], &example[..]].concat())?;
    let bin = target_dir(root).join("release/examples/bench_ctrl");
    run_pinned(
        "benchmarking a controller cycle (16-backend GRU policy) against bare tract inference",
        &bin,
        extra,
    )
}

/// `cargo xtask bench sync`: flow-state sync's cost per new connection,
/// against the pipeline's own new-connection cost in the same run.
fn bench_sync(root: &Path, extra: &[String]) -> Result<()> {
    step("building the flow-sync benchmark (release)");
    let bin = build_core_example(root, "bench_sync")?;
    run_pinned(
        "benchmarking flow-state sync against a new connection without it",
        &bin,
        extra,
    )
}

/// Builds the core benchmark (release) and returns its path.
fn build_bench_core(root: &Path) -> Result<PathBuf> {
    step("building the core benchmark (release)");
    build_core_example(root, "bench_core")
}

/// Builds marllb-core's example `name` (release) and returns its path.
fn build_core_example(root: &Path, name: &str) -> Result<PathBuf> {
    cargo(
        root,
        &["build", "--release", "-p", "marllb-core", "--example", name],
    )?;
    Ok(target_dir(root).join("release/examples").join(name))
}

fn bench_core(root: &Path, extra: &[String]) -> Result<()> {
    if extra.iter().any(|a| a == "--callgrind") {
        return bench_core_callgrind(root, extra);
    }
    let bin = build_bench_core(root)?;
    run_pinned(
        "benchmarking the core pipeline against the etherparse/HashMap/rand_distr peer",
        &bin,
        extra,
    )
}

/// `cargo xtask bench core --callgrind [--packets P]`: instructions per packet,
/// a figure that does not move with machine noise.
///
/// How the per-packet count is isolated: `bench_core --callgrind-run W` warms
/// the flow table exactly as the timed benchmark does (through
/// `Worker::process` directly), then sends P packets (default 200 000) through
/// one `#[inline(never)]` function, `callgrind_measured`, that only calls
/// `Worker::process`. Callgrind runs with `--collect-atstart=no
/// --toggle-collect=*callgrind_measured*`, so it counts exactly the
/// instructions executed inside that function and its callees: setup, the
/// table's allocation and zeroing, warm-up and frame generation are never
/// counted, and no difference of two runs is needed. `Collected / P` is the
/// figure. Workloads: `mix64k` and `mix1m` are the timed benchmark's mix (10 %
/// SYN, their FINs, the rest ACKs on live flows, IP-in-IP, telemetry on);
/// `fast64k` is ACKs on live flows only (the fast path: IPv4 TCP, table hit,
/// forwarded with encap). Profiles are kept in `target/bench-callgrind/` for
/// `callgrind_annotate`.
fn bench_core_callgrind(root: &Path, extra: &[String]) -> Result<()> {
    ensure_packages(BENCH_CALLGRIND_PACKAGES)?;
    let mut packets = "200000".to_string();
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--callgrind" => {}
            "--packets" => packets = it.next().context("--packets needs a number")?.clone(),
            other => bail!("bench core --callgrind: unknown argument {other}"),
        }
    }
    let p: u64 = packets.parse().context("--packets")?;
    if p == 0 {
        bail!("--packets must be positive");
    }
    let bin = build_bench_core(root)?;
    let dir = target_dir(root).join("bench-callgrind");
    std::fs::create_dir_all(&dir).context("creating target/bench-callgrind")?;
    let mut figures = vec![];
    for w in ["mix64k", "mix1m", "fast64k"] {
        step(&format!("callgrind: {w}, {p} packets"));
        let out_file = dir.join(format!("callgrind.out.{w}"));
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*callgrind_measured*",
        ])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&bin)
        .args(["--callgrind-run", w, "--packets", &packets]);
        println!("    $ {cmd:?}");
        let out = cmd
            .output()
            .context("running valgrind (is it installed?)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        print!("{stdout}");
        if !out.status.success() {
            eprint!("{stderr}");
            bail!("callgrind run {w} failed ({})", out.status);
        }
        let collected = callgrind_collected(&stderr)
            .with_context(|| format!("no `Collected :` line in callgrind's output for {w}"))?;
        if collected == 0 {
            bail!("callgrind counted nothing for {w}: was callgrind_measured inlined away?");
        }
        let per = collected as f64 / p as f64;
        println!("    {w}: {collected} instructions / {p} packets = {per:.1} per packet");
        figures.push(per);
    }
    println!(
        "RESULT instr_per_pkt_64k={:.1} instr_per_pkt_1m={:.1} instr_fast_path={:.1}",
        figures[0], figures[1], figures[2]
    );
    Ok(())
}

/// The instruction count from callgrind's `==pid== Collected : N` summary line.
fn callgrind_collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.split_whitespace().next()?.parse().ok()
    })
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

/// Every cargo-fuzz target, in `fuzz/Cargo.toml` order.
const FUZZ_TARGETS: &[&str] = &[
    "parse",
    "pipeline",
    "shm_region",
    "select",
    "flow_table",
    "policy_meta",
    "vpp_cli",
    "ctrl_config",
];

/// Runs every fuzz target for `secs` seconds each (seed corpora from
/// `fuzz/seeds/<target>`, growing corpora in `fuzz/corpus/<target>`), with
/// nightly and AddressSanitizer when a nightly toolchain is installed, else on
/// stable without a sanitizer. Installs cargo-fuzz when missing. Runs every target
/// even when one crashes, prints a table of executions per target and fails at the
/// end, naming every target that crashed.
fn fuzz(root: &Path, secs: u64) -> Result<Vec<(String, u64, u64)>> {
    let have = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        step("installing cargo-fuzz (cargo install cargo-fuzz --locked)");
        cargo(root, &["install", "cargo-fuzz", "--locked"])?;
    }
    let nightly = have_nightly();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for t in FUZZ_TARGETS {
        match fuzz_target(root, t, secs, nightly) {
            Ok(runs) => {
                println!("    {t:<12} {runs:>12} executions in {secs} s, no crash");
                results.push(((*t).to_string(), runs, secs));
            }
            Err(e) => {
                eprintln!("    {t:<12} FAILED: {e:#}");
                failed.push(*t);
            }
        }
    }
    println!("\n| target | seconds | executions |\n|---|---|---|");
    for (t, runs, s) in &results {
        println!("| {t} | {s} | {runs} |");
    }
    for t in &failed {
        println!("| {t} | {secs} | FAILED |");
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (crash inputs in fuzz/artifacts/<target>/)",
            failed.join(", ")
        );
    }
    Ok(results)
}

/// Runs one fuzz target for `secs` seconds; returns its number of executions.
fn fuzz_target(root: &Path, t: &str, secs: u64, nightly: bool) -> Result<u64> {
    let corpus = root.join("fuzz/corpus").join(t);
    std::fs::create_dir_all(&corpus).context("creating the fuzz corpus directory")?;
    let seeds = root.join("fuzz/seeds").join(t);
    let mut cmd = Command::new("cargo");
    if nightly {
        cmd.arg("+nightly");
    }
    cmd.args(["fuzz", "run", "-O"]);
    if !nightly {
        cmd.args(["-s", "none"]);
    }
    cmd.arg(t).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.args([
        "--",
        &format!("-max_total_time={secs}"),
        "-print_final_stats=1",
    ]);
    cmd.current_dir(root);
    // rustup's proxies pick the toolchain from `+nightly`; make sure the
    // workspace's stable toolchain variable does not override it.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    println!(
        "    $ cargo {}fuzz run -O{} {t} -- -max_total_time={secs}",
        if nightly { "+nightly " } else { "" },
        if nightly { "" } else { " -s none" }
    );
    let out = cmd.output().context("running cargo fuzz")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("{text}");
        bail!(
            "fuzz target {t} failed ({}; a crash input is in fuzz/artifacts/{t}/)",
            out.status
        );
    }
    Ok(text
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("Done ")
                .and_then(|r| r.split_whitespace().next())
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0))
}

/// A command for the nightly toolchain's `program` (`rustup` or `cargo`), without
/// the workspace's RUSTUP_TOOLCHAIN, which would override `+nightly`.
fn nightly_cmd(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// Whether a nightly toolchain is installed.
fn have_nightly() -> bool {
    nightly_cmd("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the core's unit tests under Miri on the nightly toolchain, installing the
/// component first when it is missing (`rustup component add --toolchain nightly
/// miri rust-src`) and building its sysroot (`cargo +nightly miri setup`). Skips,
/// with the reason, when there is no nightly toolchain or the component cannot be
/// installed (rustup's dist server may be out of reach). Tests that run millions
/// of operations are ignored under Miri.
fn miri(root: &Path) -> Result<Ran> {
    if !have_nightly() {
        return Ok(Ran::Skipped(
            "no nightly toolchain (rustup toolchain install nightly)".to_string(),
        ));
    }
    let have = nightly_cmd("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        step("installing Miri for the nightly toolchain (rustup component add --toolchain nightly miri rust-src)");
        let args = [
            "component",
            "add",
            "--toolchain",
            "nightly",
            "miri",
            "rust-src",
        ];
        println!("    $ rustup {}", args.join(" "));
        let out = nightly_cmd("rustup").args(args).output();
        let why = match out {
            Ok(o) if o.status.success() => {
                eprint!("{}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                eprint!("{err}");
                Some(
                    err.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map_or_else(|| o.status.to_string(), |l| l.trim().to_string()),
                )
            }
            Err(e) => Some(format!("running rustup: {e}")),
        };
        if let Some(why) = why {
            return Ok(Ran::Skipped(format!("could not install miri ({why})")));
        }
    }
    let target = target_dir(root).join("miri");
    step("building Miri's sysroot (cargo +nightly miri setup)");
    run_shown(
        nightly_cmd("cargo")
            .args(["+nightly", "miri", "setup"])
            .current_dir(root),
        "cargo +nightly miri setup",
    )?;
    step("running marllb-core's unit tests under Miri");
    run_shown(
        nightly_cmd("cargo")
            .args(["+nightly", "miri", "test", "-p", "marllb-core", "--lib"])
            .env("PROPTEST_CASES", "4")
            .env("MIRIFLAGS", "-Zmiri-disable-isolation")
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root),
        "PROPTEST_CASES=4 MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p marllb-core --lib",
    )?;
    // The VPP node's buffer handling (raw `vlib_buffer_t` metadata, packet
    // views over `pre_data` + data, prefetches) on frames that drop,
    // forward L2 DSR and trace: three of node_harness's tests (the
    // byte-for-byte ones take too long under Miri).
    step("running the VPP node's buffer tests under Miri");
    let vpp_tests = [
        "inconsistent_metadata_is_dropped_not_read",
        "an_l2_dsr_frame_leaves_with_its_interface_mac_unless_one_is_configured",
        "a_traced_buffer_gets_a_record_of_its_flow_verdict_and_backend",
    ];
    let mut args = vec![
        "+nightly",
        "miri",
        "test",
        "-p",
        "marllb-vpp",
        "--test",
        "node_harness",
        "--",
        "--exact",
    ];
    args.extend(vpp_tests);
    run_shown(
        nightly_cmd("cargo")
            .args(&args)
            .env("MIRIFLAGS", "-Zmiri-disable-isolation")
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root),
        &format!(
            "MIRIFLAGS=-Zmiri-disable-isolation cargo {}",
            args.join(" ")
        ),
    )?;
    Ok(Ran::Passed)
}

/// True when xtask runs as root (`id -u` is 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
