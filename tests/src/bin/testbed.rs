//! `marllb-testbed`: the main job (`demo`) of `cargo xtask demo`.
//!
//! `marllb-testbed demo [--policy es] [--compare sed,adaptive-sed|P1,P2,..|none]
//! [--duration 60] [--backends 7] [--trace FILE] [--work-scale 0.4] [--time-scale 1]
//! [--capacity-event SECONDS:BACKEND:FACTOR ...] [--linger SHARE:MEAN_S] [--host dpdk|vpp]`
//!
//! `--host vpp` runs the data plane as our plugin in an installed VPP (the
//! `vpp` binary named by `MARLLB_VPP`, else `vpp` on PATH; see
//! `marllb_testbed::vpp`) instead of `marllb-dpdk`; without a VPP it says what
//! it looked for and exits 0 without running anything.
//!
//! `--capacity-event 20:be4:0.25` multiplies backend be4's configured CPU quota
//! by 0.25 from 20 s into each run on (`20:4:0.25` names it by index; FACTOR 1
//! restores it); the flag repeats, and the runs are then also compared phase
//! by phase.
//!
//! `--linger 0.5:5` keeps half of the client connections open, idle, for an
//! exponential 5 s on average after their response (keep-alive clients with
//! no further request): the balancer counts them as active until their FIN.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use marllb_testbed::demo::{
    print_phase_table, print_table, run_policy, CapacityEvent, DemoOptions, Policy,
};
use marllb_testbed::lb::Host;
use marllb_testbed::load::float_in;
use marllb_testbed::vpp::{self, Lookup};

#[derive(Parser, Debug)]
#[command(name = "marllb-testbed", about = "The MARLLB testbed's main job")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The same replay under the learned policy and the comparison policies.
    Demo(DemoArgs),
}

/// The policies of one `--compare` value. A name of its own: clap's derive
/// reads a field typed `Option<Vec<_>>` as a repeated flag of single values,
/// and `--compare sed,lsq` then failed at run time (a panic on the value's
/// type) instead of giving the list.
type PolicyList = Vec<Policy>;

fn compare(s: &str) -> std::result::Result<PolicyList, String> {
    use clap::ValueEnum;
    if s == "none" {
        return Ok(Vec::new());
    }
    s.split(',').map(|p| Policy::from_str(p, false)).collect()
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// The policy under test.
    #[arg(long, value_enum)]
    policy: Option<Policy>,
    /// Policies to compare with, `P1,P2,..` or `none` (default sed,adaptive-sed).
    #[arg(long, value_parser = compare)]
    compare: Option<PolicyList>,
    /// Seconds of replay per policy (0, 600].
    #[arg(long, value_parser = |s: &str| float_in(s, 0.0, 600.0))]
    duration: Option<f64>,
    /// Backends (1..=50).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=50))]
    backends: Option<u64>,
    /// The trace to replay.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Work (loops) multiplied by this.
    #[arg(long, value_parser = |s: &str| float_in(s, 0.0, 1000.0))]
    work_scale: Option<f64>,
    /// Arrival times multiplied by this.
    #[arg(long, value_parser = |s: &str| float_in(s, 0.0, 1000.0))]
    time_scale: Option<f64>,
    /// `SECONDS:BACKEND:FACTOR`, repeatable.
    #[arg(long)]
    capacity_event: Vec<String>,
    /// `SHARE:MEAN_S`: that fraction of the client connections stays open,
    /// idle, an exponential time of mean MEAN_S after its response.
    #[arg(long, value_parser = marllb_testbed::load::parse_linger)]
    linger: Option<marllb_testbed::load::Linger>,
    /// The repository (models, traces).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The data plane's host: `marllb-dpdk`, or our plugin in an installed VPP.
    #[arg(long, value_enum, default_value_t = Host::Dpdk)]
    host: Host,
}

fn main() -> Result<()> {
    let Cmd::Demo(a) = Cli::parse().cmd;
    if a.host == Host::Vpp {
        match vpp::find()? {
            Lookup::Found(v) => println!(
                "VPP host: {} (vppctl {}, VPP's plugins {})",
                v.vpp.display(),
                v.vppctl.display(),
                v.plugins.display()
            ),
            Lookup::Missing(why) => {
                println!("skipped: --host vpp: {why}");
                return Ok(());
            }
        }
    }
    let mut o = DemoOptions::new(&a.root);
    o.host = a.host;
    if let Some(p) = a.policy {
        o.policy = p;
    }
    if let Some(c) = a.compare {
        o.compare = c;
    }
    if let Some(d) = a.duration {
        o.duration = d;
    }
    if let Some(n) = a.backends {
        // 1..=50, checked by clap.
        o.backends = n as usize;
    }
    if let Some(t) = a.trace {
        o.trace = t;
    }
    if let Some(w) = a.work_scale {
        o.work_scale = w;
    }
    if let Some(t) = a.time_scale {
        o.time_scale = t;
    }
    if let Some(l) = a.linger {
        o.linger = l;
    }
    for e in &a.capacity_event {
        let ev = CapacityEvent::parse(e, o.backends)?;
        if ev.at >= o.duration {
            bail!(
                "--capacity-event {e:?}: at {} s, not before the end of the {} s run",
                ev.at,
                o.duration
            );
        }
        o.capacity_events.push(ev);
    }
    println!(
        "MARLLB testbed: trace {} (time x{}, work x{}), {} s per policy; Ctrl-C tears everything down",
        o.trace.display(),
        o.time_scale,
        o.work_scale,
        o.duration
    );
    let dir = std::env::temp_dir().join(format!("marllb-demo-{}", std::process::id()));
    let mut runs = Vec::new();
    let mut policies = vec![o.policy];
    policies.extend(o.compare.iter().copied());
    for (i, p) in policies.into_iter().enumerate() {
        let prefix = format!("md{i}{}", std::process::id() % 10_000);
        runs.push(run_policy(&prefix, &dir.join(p.name()), &o, p)?);
    }
    print_table(&runs);
    if !o.capacity_events.is_empty() {
        print_phase_table(&runs);
    }
    if let Some((first, rest)) = runs.split_first() {
        if !rest.is_empty() {
            println!();
        }
        let a = &first.summary;
        for r in rest {
            let b = &r.summary;
            println!(
                "{} vs {}: p95 latency {:.2}x, p99 {:.2}x, Jain {:.3} vs {:.3}",
                first.policy,
                r.policy,
                a.latency_p95_ms / b.latency_p95_ms.max(1e-9),
                a.latency_p99_ms / b.latency_p99_ms.max(1e-9),
                a.jain,
                b.jain
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
