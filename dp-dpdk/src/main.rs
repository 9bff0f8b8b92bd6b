//! `marllb-dpdk [EAL args] -- --config lb.toml [options]`: the MARLLB data plane
//! on DPDK ports.
//!
//! The main lcore validates the configuration (before touching DPDK), brings up
//! the EAL, the mbuf pool and the ports, launches one worker per worker lcore
//! (each with its own queue pair on every port and its own flow table), then
//! runs the control period: ask the workers for telemetry snapshots, publish
//! them through the [`control::Control`] seam, apply new weights from it. SIGINT
//! or SIGTERM stops the workers, flushes the last stats, closes the control
//! connection and the ports, and prints a summary. SIGHUP re-reads
//! `--weights-file`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use marllb_core::pipeline::Worker;
use marllb_core::service::AdminState;
use marllb_core::telemetry::Telemetry;

use marllb_dpdk::config::{Config, PortMode, Validated};
use marllb_dpdk::control::{Control, LocalControl, ShmControl};
use marllb_dpdk::dpdk::{Eal, Mempool, Port, PortSetup};
use marllb_dpdk::stats::Totals;
use marllb_dpdk::worker::{Shared, WorkerCtx, WorkerPort};

/// Options after `--` (EAL options come before it).
#[derive(Debug, Parser)]
#[command(
    name = "marllb-dpdk",
    about = "MARLLB L4 load balancer on DPDK",
    override_usage = "marllb-dpdk [EAL options] -- --config FILE [OPTIONS]"
)]
struct Args {
    /// TOML configuration (VIPs, backends, method, encapsulation, ports ...).
    #[arg(long)]
    config: PathBuf,
    /// Shared-memory region shared with the controller (`/dev/shm/NAME`,
    /// created here, mode 0600); the controller attaches with the same name.
    #[arg(long)]
    shm: Option<String>,
    /// Watchdog: fall back to equal weights over the backends not down when the
    /// controller's heartbeat has not moved for this long (ms).
    #[arg(long, default_value_t = 1000)]
    heartbeat_timeout_ms: u64,
    /// Weights file (`weights = [..]`, optional `admin = [..]`), read at start
    /// and re-read on SIGHUP (stand-alone control).
    #[arg(long)]
    weights_file: Option<PathBuf>,
    /// Write the exit totals as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Create this file (containing our pid) once the workers forward and the
    /// control side (the `--shm` region, if any) is up: what a supervisor or a
    /// test waits for. Written through a rename, so it never exists half
    /// written; removed at exit.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Control period: stats publication and weight polling (ms).
    #[arg(long, default_value_t = 200)]
    period_ms: u64,
    /// Print a stats line this often (ms; 0 = never).
    #[arg(long, default_value_t = 1000)]
    print_every_ms: u64,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Mbufs in the packet pool.
    #[arg(long, default_value_t = 16383)]
    mbufs: u32,
    /// Workers sleep this long after 1024 empty polls (µs; 0 = pure busy poll).
    #[arg(long, default_value_t = 0)]
    idle_sleep_us: u64,
    /// Validate the configuration and exit (no EAL needed).
    #[arg(long)]
    check_config: bool,
    /// Print, for each flow in FILE (lines `SRC SPORT DST DPORT [tcp|udp]`,
    /// `-` = stdin), the backend the consistent table gives it: where its
    /// packets go on this node if another LB node placed it and this one takes
    /// over. Exits without starting DPDK.
    #[arg(long, value_name = "FILE")]
    explain_flows: Option<PathBuf>,
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("marllb-dpdk: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "marllb-dpdk".into());
    let (eal_args, app_args) = match argv.iter().position(|a| a == "--") {
        Some(i) => (argv[..i].to_vec(), argv[i + 1..].to_vec()),
        None => (vec![prog.clone()], argv[1..].to_vec()),
    };
    let args = Args::parse_from(std::iter::once(prog).chain(app_args));

    // Refuse a bad configuration before touching DPDK.
    let cfg = Config::load(&args.config)
        .with_context(|| format!("configuration {} refused", args.config.display()))?;
    if args.check_config {
        println!(
            "configuration OK: {} VIP(s), {} backend(s), {} flow-table buckets per worker",
            cfg.spec.vips.len(),
            cfg.spec.backends.len(),
            cfg.buckets()
        );
        return Ok(());
    }
    if let Some(f) = &args.explain_flows {
        return explain_flows(&cfg, f);
    }
    if args.shm.is_some() && args.weights_file.is_some() {
        bail!("--shm and --weights-file exclude each other: the controller sets the weights");
    }

    let term = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term)).context("installing signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing SIGHUP handler")?;

    let (eal, _) = Eal::init(&eal_args).context("EAL initialisation")?;
    println!("marllb-dpdk: {}", Eal::version());
    let result = run_with_eal(&eal, &args, &cfg, &term, &reload);
    eal.cleanup();
    result
}

/// `--explain-flows`: one output line per input flow, `SRC SPORT DST DPORT
/// PROTO BACKEND` (`-` when no VIP matches or no backend is live).
fn explain_flows(cfg: &marllb_dpdk::config::Validated, file: &std::path::Path) -> Result<()> {
    use std::io::{BufRead, Write};
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let svc = cfg
        .build_service(None, None)
        .context("building the service")?;
    let mut out = std::io::stdout().lock();
    for (n, line) in input.lines().enumerate() {
        let line = line.context("reading the flow list")?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "line {}: expected `SRC SPORT DST DPORT [tcp|udp]`, got {line:?}",
                n + 1
            )
        };
        if f.len() < 4 || f.len() > 5 {
            bail!(bad());
        }
        let src: std::net::Ipv4Addr = f[0].parse().with_context(bad)?;
        let sport: u16 = f[1].parse().with_context(bad)?;
        let dst: std::net::Ipv4Addr = f[2].parse().with_context(bad)?;
        let dport: u16 = f[3].parse().with_context(bad)?;
        let (proto, pname) = match f.get(4).copied().unwrap_or("tcp") {
            "tcp" => (6u8, "tcp"),
            "udp" => (17u8, "udp"),
            _ => bail!(bad()),
        };
        let flow = marllb_host::Flow {
            src: src.into(),
            sport,
            dst: dst.into(),
            dport,
            proto,
        };
        let b = cfg.consistent_backend(&svc, &flow);
        writeln!(
            out,
            "{src} {sport} {dst} {dport} {pname} {}",
            b.unwrap_or("-")
        )?;
    }
    Ok(())
}

fn run_with_eal(
    eal: &Eal,
    args: &Args,
    cfg: &Validated,
    term: &Arc<AtomicBool>,
    reload: &Arc<AtomicBool>,
) -> Result<()> {
    let lcores = eal.worker_lcores();
    if lcores.is_empty() {
        bail!("no worker lcore: give the EAL at least two lcores (e.g. -l 0,1); the main lcore runs control, workers forward");
    }
    let nports = Port::count(eal);
    let p = &cfg.raw.ports;
    let mut ids = vec![p.client];
    if p.mode == PortMode::TwoArmed {
        ids.extend(p.backend);
    }
    for &id in &ids {
        if id >= nports {
            bail!("ports: port {id} does not exist (DPDK found {nports} port(s); add --vdev or a NIC)");
        }
    }
    let pool = Mempool::pktmbuf(
        eal,
        "marllb_pool",
        args.mbufs,
        256,
        sys_default_buf_size(),
        eal.socket_id(),
    )
    .context("creating the mbuf pool (lower --mbufs or raise -m)")?;
    let setup = PortSetup {
        queues: lcores.len() as u16,
        rx_desc: p.rx_desc,
        tx_desc: p.tx_desc,
        mtu: Some(cfg.raw.service.mtu),
        promiscuous: p.promiscuous,
    };
    let mut ports = Vec::new();
    for &id in &ids {
        let port =
            Port::start(eal, id, &setup, &pool).with_context(|| format!("starting port {id}"))?;
        println!(
            "port {id}: driver {}, MAC {}, {} queue(s){}",
            port.driver(),
            marllb_host::format_mac(port.mac()),
            setup.queues,
            if port.rss() {
                ", RSS"
            } else if setup.queues > 1 {
                ", no RSS (flows may split across workers)"
            } else {
                ""
            }
        );
        ports.push(port);
    }
    let backend_pos = ports.len() - 1;
    let mut cfg = cfg.clone();
    if !cfg.src_mac_set {
        cfg.spec.egress.src_mac = ports[backend_pos].mac();
    }
    let svc = cfg.build_service(None, None)?;
    // What the controller checks it manages (built before the service moves).
    let image = match &args.shm {
        Some(name) => Some(
            marllb_shm::ConfigImage::from_service(&svc)
                .map_err(|e| anyhow::anyhow!("--shm {name}: {e:?}"))?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared::new(svc, lcores.len())?);
    // Flow-state sync: bound before the workers start (they make records
    // only when it is on).
    let mut sync = match &cfg.sync {
        Some(s) => {
            let link = marllb_dpdk::sync::HostSync::bind(s, cfg.spec.hash_seed)
                .with_context(|| format!("sync.listen {}: binding", s.listen))?;
            shared.sync.store(true, Ordering::Release);
            println!("sync: listening on {}, peers {:?}", s.listen, s.peers);
            Some(link)
        }
        None => None,
    };

    // Queue pair q of every port goes to worker q.
    let mut per_port: Vec<_> = ports
        .iter_mut()
        .map(|p| p.take_queues().into_iter())
        .collect();
    let mut worker_ports = Vec::new();
    for _ in 0..lcores.len() {
        let mut wp = Vec::new();
        for (pos, it) in per_port.iter_mut().enumerate() {
            let (rx, tx) = it.next().context("queue pair missing")?;
            // In two-armed mode the backend side is TX only (DSR/tunnels send
            // nothing back through us).
            let rx = (pos == 0).then_some(rx);
            wp.push(WorkerPort { rx, tx });
        }
        worker_ports.push(wp);
    }

    let idle = Duration::from_micros(args.idle_sleep_us);
    let launched = match cfg.buckets() {
        4096 => launch::<4096>(eal, &lcores, worker_ports, backend_pos, &shared, idle),
        16384 => launch::<16384>(eal, &lcores, worker_ports, backend_pos, &shared, idle),
        65536 => launch::<65536>(eal, &lcores, worker_ports, backend_pos, &shared, idle),
        262144 => launch::<262144>(eal, &lcores, worker_ports, backend_pos, &shared, idle),
        1048576 => launch::<1048576>(eal, &lcores, worker_ports, backend_pos, &shared, idle),
        n => Err(anyhow::anyhow!(
            "service.flow_table_buckets: {n} is not compiled in"
        )),
    };
    println!(
        "marllb-dpdk: {} worker(s) on lcores {:?}, {} VIP(s), {} backend(s), {} buckets per worker; forwarding",
        lcores.len(),
        lcores,
        cfg.spec.vips.len(),
        cfg.spec.backends.len(),
        cfg.buckets()
    );
    let mut local;
    let region;
    let mut shm;
    let control: &mut dyn Control = match &args.shm {
        None => {
            local = LocalControl::new(
                args.weights_file.clone(),
                cfg.spec.backends.len(),
                Arc::clone(reload),
            );
            &mut local
        }
        Some(name) => {
            let image = image.as_ref().context("configuration image")?;
            let opts = marllb_shm::CreateOptions {
                workers: lcores.len() as u32,
                replace: true,
                stats_interval_ms: args.period_ms as u32,
                ..marllb_shm::CreateOptions::new(name)
            };
            region = marllb_shm::ShmRegion::create(&opts, image)
                .with_context(|| format!("--shm {name}: creating the region"))?;
            println!(
                "control: shared-memory region {} ({} bytes, {} worker block(s)); watchdog after {} ms",
                region.path(),
                region.len(),
                lcores.len(),
                args.heartbeat_timeout_ms
            );
            shm = ShmControl::new(
                &region,
                lcores.len() as u32,
                args.heartbeat_timeout_ms * 1_000_000,
            );
            &mut shm
        }
    };
    let mut totals = Totals::default();
    let ready_file = args.ready_file.clone();
    let launched = launched.and_then(|()| match &ready_file {
        Some(p) => write_ready_file(p),
        None => Ok(()),
    });
    let run_res = match launched {
        Ok(()) => main_loop(
            args,
            &mut cfg,
            &shared,
            control,
            sync.as_mut(),
            term,
            &mut totals,
        ),
        Err(e) => Err(e),
    };
    shared.stop.store(true, Ordering::Release);
    if let Some(p) = &ready_file {
        // Not ready any more; a file that was never written is not an error.
        let _ = std::fs::remove_file(p);
    }
    let mut worker_fail = 0;
    for &l in &lcores {
        if eal.wait_lcore(l) != 0 {
            worker_fail += 1;
        }
    }
    let elapsed = shared.start.elapsed().as_secs_f64();
    // Flush: the workers' final snapshots.
    let final_totals = {
        let guards: Vec<_> = shared
            .slots
            .iter()
            .map(|s| s.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let tels: Vec<&Telemetry> = guards.iter().map(|g| &*g.telemetry).collect();
        control.publish_stats(shared.now_ns(), &tels);
        Totals::from_snapshots(guards.iter().map(|g| (&*g.telemetry, &g.host)), &cfg.names)
    };
    control.close();
    let port_stats: Vec<_> = ports.iter().map(Port::stats).collect();
    for p in ports {
        p.close();
    }
    drop(pool);
    let mut t = final_totals;
    t.elapsed_s = elapsed;
    t.ports = port_stats;
    t.weight_updates = totals.weight_updates;
    t.sync = sync.as_ref().map(|l| l.counters());
    print!("{}", t.summary());
    if let Some(path) = &args.stats_json {
        let json = serde_json::to_string_pretty(&t).context("serialising stats")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if worker_fail > 0 {
        bail!("{worker_fail} worker lcore(s) failed");
    }
    run_res
}

/// Writes `path` (our pid and a newline) through a temporary file and a rename.
fn write_ready_file(path: &std::path::Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .with_context(|| format!("--ready-file: writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("--ready-file: renaming to {}", path.display()))
}

fn sys_default_buf_size() -> u16 {
    marllb_dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16
}

fn launch<const B: usize>(
    eal: &Eal,
    lcores: &[u32],
    ports: Vec<Vec<WorkerPort>>,
    backend_port: usize,
    shared: &Arc<Shared>,
    idle_sleep: Duration,
) -> Result<()> {
    for (id, (&lcore, wp)) in lcores.iter().zip(ports).enumerate() {
        // On transparent huge pages where the kernel has them
        // (`marllb_host::memory`): before `init` writes every page.
        let (mut worker, huge) = marllb_host::memory::new_box_zeroed_huge::<Worker<B>>()
            .ok_or_else(|| anyhow::anyhow!("cannot allocate the flow table ({B} buckets)"))?;
        if id == 0 {
            eprintln!(
                "flow table: {B} buckets per worker, {}",
                if huge {
                    "transparent huge pages advised"
                } else {
                    "4 KiB pages (no transparent huge pages)"
                }
            );
        }
        worker.init(id as u64);
        let ctx = WorkerCtx {
            id,
            worker,
            ports: wp,
            backend_port,
            shared: Arc::clone(shared),
            idle_sleep,
            dump: (0, None),
            ns_per_tick: eal.ns_per_tsc_tick(),
        };
        eal.launch(lcore, move || ctx.run())
            .with_context(|| format!("launching worker {id} on lcore {lcore}"))?;
    }
    Ok(())
}

/// The control period until a signal (or `--duration-s`).
fn main_loop(
    args: &Args,
    cfg: &mut Validated,
    shared: &Shared,
    control: &mut dyn Control,
    mut sync: Option<&mut marllb_dpdk::sync::HostSync>,
    term: &AtomicBool,
    totals: &mut Totals,
) -> Result<()> {
    let period = Duration::from_millis(args.period_ms.max(1));
    let print_every = Duration::from_millis(args.print_every_ms);
    let deadline = args
        .duration_s
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let n = cfg.spec.backends.len();
    let mut weights: Vec<u32> = cfg.spec.backends.iter().map(|b| b.weight).collect();
    let mut admin: Vec<AdminState> = vec![AdminState::Active; n];
    let mut rebuild = false;
    let tick = Duration::from_millis(if sync.is_some() { 1 } else { 5 });
    let mut pending_gen: Option<u64> = None;
    let mut next_period = Instant::now() + period;
    let mut next_print = Instant::now() + print_every;
    let mut last_print: Option<(u64, u64)> = None; // (rx, at_ns)
    loop {
        if term.load(Ordering::Acquire) {
            println!("marllb-dpdk: signal received, stopping");
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            println!("marllb-dpdk: duration reached, stopping");
            return Ok(());
        }
        if let Some(g) = pending_gen {
            if shared
                .slots
                .iter()
                .all(|s| s.applied.load(Ordering::Acquire) >= g)
            {
                println!("control: weights generation {g} applied by all workers");
                pending_gen = None;
            }
        }
        // Sync every turn of the loop (about every 1 ms): a record reaches
        // the peers well before a route change can move its connection.
        if let Some(link) = sync.as_deref_mut() {
            link.step(shared);
        }
        let now = Instant::now();
        if now < next_period {
            std::thread::sleep((next_period - now).min(tick));
            continue;
        }
        next_period += period;
        if next_period < now {
            next_period = now + period;
        }
        // Snapshots published since the last bump; then ask for the next ones.
        {
            let guards: Vec<_> = shared
                .slots
                .iter()
                .map(|s| s.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
                .collect();
            let tels: Vec<&Telemetry> = guards.iter().map(|g| &*g.telemetry).collect();
            control.publish_stats(shared.now_ns(), &tels);
            if !print_every.is_zero() && now >= next_print {
                next_print = now + print_every;
                let t = Totals::from_snapshots(
                    guards.iter().map(|g| (&*g.telemetry, &g.host)),
                    &cfg.names,
                );
                let at = guards.iter().map(|g| g.at_ns).max().unwrap_or(0);
                let mpps = match last_print {
                    Some((rx0, t0)) if at > t0 => {
                        (t.global.rx_packets.saturating_sub(rx0)) as f64 * 1e3 / (at - t0) as f64
                    }
                    _ => 0.0,
                };
                last_print = Some((t.global.rx_packets, at));
                println!(
                    "stats t={:.3} rx={} rx_mpps={:.3} fwd={} drop={} host={} tx_drop={} gen={}",
                    at as f64 / 1e9,
                    t.global.rx_packets,
                    mpps,
                    t.global.forwarded,
                    t.global.dropped,
                    t.global.to_host,
                    t.host.tx_dropped,
                    shared.service.generation()
                );
            }
        }
        shared.stats_epoch.fetch_add(1, Ordering::AcqRel);

        if let Some(u) = control.poll_weights(shared.now_ns()) {
            for (w, nw) in weights.iter_mut().zip(&u.weights) {
                *w = *nw;
            }
            if let Some(a) = &u.admin {
                for (s, ns) in admin.iter_mut().zip(a) {
                    *s = *ns;
                }
            }
            rebuild = true;
        }
        // Backends added or removed by the controller: the spec is replaced
        // only if the service builds from it (else the set is refused and the
        // previous one served). Flows keep their indices.
        if let Some(set) = control.take_backend_set() {
            match cfg.spec.with_backend_set(&set) {
                Ok(spec) => {
                    let n = spec.backends.len();
                    for (i, e) in set.iter().enumerate().skip(cfg.names.len()) {
                        cfg.names
                            .push(e.ip().map_or_else(|| i.to_string(), |a| a.to_string()));
                    }
                    weights.resize(n, 0);
                    admin.resize(n, AdminState::Active);
                    println!(
                        "control: backend set applied: {n} indices, {} served",
                        set.iter()
                            .filter(|e| marllb_shm::backend_set::served(e))
                            .count()
                    );
                    cfg.spec = spec;
                    control.answer_backend_set(true);
                    rebuild = true;
                }
                Err(e) => {
                    eprintln!("control: backend set refused, previous set kept: {e}");
                    control.answer_backend_set(false);
                }
            }
        }
        if std::mem::take(&mut rebuild) {
            match cfg.build_service(Some(&weights), Some(&admin)) {
                Ok(svc) => {
                    let g = shared.service.store(svc);
                    totals.weight_updates += 1;
                    let wf: Vec<f64> = weights.iter().map(|&w| f64::from(w) / 65536.0).collect();
                    println!("control: weights generation {g}: {wf:?} admin {admin:?}");
                    pending_gen = Some(g);
                }
                Err(e) => eprintln!("control: update refused, weights unchanged: {e}"),
            }
        }
    }
}
