//! `marllb-ctrl`: the binary edge (flags, logging, signals, threads).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Parser;
use marllb_ctrl::config::{Cli, Command, LogFormat, Settings};
use marllb_ctrl::cycle::{ControlState, CycleConfig};
use marllb_ctrl::health::{Checkers, HealthBoard};
use marllb_ctrl::metrics::{serve as serve_metrics, Metrics};
use marllb_ctrl::model::{describe, Loaded, Policy};
use marllb_ctrl::operator::OperatorState;
use marllb_ctrl::runner::{run_loop, Bgp, Flags, Reloader};
use marllb_ctrl::server::{serve, set_of_members, ApiContext, Members, Operator};
use marllb_policy::{action_to_weights, FeatureBuilder, PolicyMeta};
use marllb_shm::{ConfigImage, Controller, Expect, ShmRegion};
use tracing_subscriber::EnvFilter;
use zerocopy::FromZeros;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Some(Command::CheckModel { file, backends }) => check_model(&file, backends),
        None => run(&cli.run),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marllb-ctrl: {e:#}");
            tracing::error!(error = %format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

fn check_model(file: &Path, backends: Option<usize>) -> Result<()> {
    print!("{}", describe(file)?);
    let sidecar = PolicyMeta::sidecar_of(file);
    let meta = PolicyMeta::load(&sidecar)?;
    println!("sidecar: {}", sidecar.display());
    println!("{}", serde_json::to_string_pretty(&meta)?);
    let loaded = Loaded::load(file, backends)?;
    let mut p = Policy::new(loaded);
    let fb = FeatureBuilder::new(meta.backends);
    let (mut obs, mut action, mut real, mut q16) = (vec![], vec![], vec![], vec![]);
    fb.observation(&meta, &mut obs);
    p.infer(&obs, &mut action)?;
    action_to_weights(&meta, &action, &fb, &mut real, &mut q16)?;
    println!("probe: idle observation -> action {real:?}, weights (Q16.16) {q16:?}");
    println!(
        "OK: {} backends, {} features, agent {}",
        meta.backends,
        meta.features.len(),
        meta.agent
    );
    Ok(())
}

/// Makes the data plane serve `want` (the operator state's backend set) if
/// it serves something else: in two steps when an index it serves must take
/// another address (removed first, then given), each waited for (bounded).
fn settle_set(
    ctrl: &mut Controller<'_>,
    configured: &[marllb_shm::layout::BackendEntry],
    want: &[marllb_shm::layout::BackendEntry],
) -> Result<()> {
    use marllb_shm::backend_set::{served, SetRefusal};
    let serving = ctrl
        .served_set()
        .map_or_else(|| configured.to_vec(), |s| s.entries().to_vec());
    if serving == want {
        ctrl.set_backends(want.len());
        return Ok(());
    }
    let mut steps = Vec::new();
    let readdressed: Vec<usize> = serving
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (s, w))| served(s) && served(w) && (s.addr, s.family) != (w.addr, w.family))
        .map(|(i, _)| i)
        .collect();
    if !readdressed.is_empty() {
        let mut first = serving.clone();
        for &i in &readdressed {
            first[i].admin = marllb_shm::layout::admin::REMOVED;
        }
        steps.push(first);
    }
    steps.push(want.to_vec());
    for step in steps {
        let v = ctrl
            .publish_set(&step)
            .map_err(|e| anyhow::anyhow!("writing the operator state's backend set: {e}"))?;
        let deadline = std::time::Instant::now() + marllb_ctrl::server::SET_TIMEOUT;
        loop {
            let a = ctrl.set_answer();
            if a.applied >= v {
                break;
            }
            if a.refused == v {
                bail!(
                    "the data plane refused the operator state's backend set: {}",
                    SetRefusal::describe(a.reason)
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the data plane did not apply the operator state's backend set within {} s",
                    marllb_ctrl::server::SET_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    tracing::info!(
        backends = want.len(),
        served = want.iter().filter(|e| served(e)).count(),
        "operator state: backend set applied by the data plane"
    );
    ctrl.set_backends(want.len());
    Ok(())
}

fn init_logging(s: &Settings) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&s.log_level))
        .context("log level")?;
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    let r = match (&s.log_file, s.log_format) {
        (Some(p), fmt) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening the log file {}", p.display()))?;
            let b = b.with_writer(Mutex::new(f)).with_ansi(false);
            match fmt {
                LogFormat::Json => b.json().try_init(),
                LogFormat::Compact => b.compact().try_init(),
            }
        }
        (None, LogFormat::Json) => b.json().with_writer(std::io::stderr).try_init(),
        (None, LogFormat::Compact) => b.compact().with_writer(std::io::stderr).try_init(),
    };
    r.map_err(|e| anyhow::anyhow!("initialising logging: {e}"))
}

fn run(args: &marllb_ctrl::config::RunArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    init_logging(&settings)?;
    let flags = Flags::default();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&flags.stop))?;
        signal_hook::flag::register(sig, Arc::clone(&flags.stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&flags.hup))?;

    let metrics = Arc::new(Metrics::new());
    let http = match settings.prometheus {
        Some(a) => {
            let s = serve_metrics(a, Arc::clone(&metrics), Arc::clone(&flags.stop))
                .with_context(|| format!("binding the metrics endpoint {a}"))?;
            tracing::info!(addr = %s.addr, "metrics at http://{}/metrics", s.addr);
            Some(s)
        }
        None => None,
    };
    // One region at a time: when the data plane starts again (a new region
    // under the same name), everything tied to the old one is stopped and the
    // new one attached, waiting (bounded only by a stop signal) while it is
    // not there yet.
    let mut attached_once = false;
    let r = loop {
        match serve_region(settings.clone(), &flags, &metrics) {
            Ok(Exit::Stopped) => break Ok(()),
            Ok(Exit::Replaced) => {
                attached_once = true;
                tracing::warn!(shm = %settings.shm, "the data plane's region was closed or replaced (the data plane stopped or started again): attaching the new one as soon as it is there");
            }
            Err(e) if attached_once && e.downcast_ref::<marllb_shm::ShmError>().is_some() => {
                tracing::debug!(error = %format!("{e:#}"), "waiting for the new region");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => break Err(e),
        }
        if flags.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
    };
    flags.stop.store(true, Ordering::Relaxed);
    if let Some(s) = http {
        let _ = s.handle.join();
    }
    tracing::info!("stopped");
    r
}

/// Why [`serve_region`] returned.
enum Exit {
    /// A stop signal.
    Stopped,
    /// The region was replaced: attach again.
    Replaced,
}

/// Attaches the region and runs the controller on it until a stop signal or
/// until the region is replaced.
fn serve_region(mut settings: Settings, flags: &Flags, metrics: &Arc<Metrics>) -> Result<Exit> {
    // The operator's changes of an earlier run, laid over the configuration.
    let state = match &settings.state_file {
        Some(p) => OperatorState::load(p).context("reading the operator state")?,
        None => OperatorState::new(),
    };
    let restored = Operator::restored(&state).map_err(anyhow::Error::msg)?;
    if let Some(a) = restored.agent {
        tracing::info!(agent = a.name(), "operator state: agent");
        settings.agent = a;
    }
    if let Some(m) = restored.model {
        tracing::info!(model = %m.display(), "operator state: model");
        settings.model = Some(m);
    }
    if settings.agent.is_learned() && settings.model.is_none() {
        bail!(
            "the operator state asks for agent {} but names no model",
            settings.agent.name()
        );
    }
    let region = match ShmRegion::attach(&settings.shm, &Expect::default()) {
        Ok(r) => r,
        Err(e) => {
            let what = format!("attaching the region {:?}", settings.shm);
            return Err(anyhow::Error::new(e).context(what));
        }
    };
    // Stops this region's threads on a stop signal or when the region is
    // replaced (checked every 100 ms).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replaced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let view = region.view();
    let mut config = ConfigImage::new_zeroed();
    view.config_into(&mut config);

    // The controller's backend list must be the data plane's, index by index.
    let addrs: Vec<IpAddr> = if settings.servers.is_empty() {
        config
            .backends()
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.ip()
                    .with_context(|| format!("region backend {i} has an invalid address"))
            })
            .collect::<Result<_>>()?
    } else {
        settings.servers.iter().map(|s| s.addr).collect()
    };
    let mismatches: Vec<String> = config
        .diff_backends(&addrs)
        .map(|m| m.to_string())
        .collect();
    if !mismatches.is_empty() {
        bail!(
            "--servers does not match the data plane's backends: {}",
            mismatches.join("; ")
        );
    }
    let vip_port = config.vips().iter().map(|v| v.port).find(|&p| p != 0);
    let default_port = settings.health.port.or(vip_port).unwrap_or(80);
    let config_targets: Vec<SocketAddr> = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let port = settings
                .servers
                .get(i)
                .and_then(|s| s.port)
                .unwrap_or(default_port);
            SocketAddr::new(a, port)
        })
        .collect();

    // The backend set: the configuration's, or the one the operator left
    // (added and removed backends), written for the data plane if it does not
    // serve it already (a data plane restarted under a running deployment).
    let configured = marllb_shm::backend_set::from_config(&config)
        .entries()
        .to_vec();
    let (set, targets) = if state.members.is_empty() {
        (configured.clone(), config_targets)
    } else {
        set_of_members(
            &state.members,
            &configured,
            config.vips().len(),
            default_port,
        )
        .map_err(anyhow::Error::msg)?
    };
    let mut ctrl = Controller::new(view, std::process::id());
    settle_set(&mut ctrl, &configured, &set)?;
    let n = set.len();
    let addrs: Vec<IpAddr> = set
        .iter()
        .zip(&targets)
        .map(|(e, t)| e.ip().unwrap_or(t.ip()))
        .collect();
    let drain: Vec<bool> = addrs.iter().map(|a| settings.drain.contains(a)).collect();

    // Room for backends added at run time.
    let board = Arc::new(HealthBoard::new(marllb_core::MAX_BACKENDS));
    let mut checkers = Checkers::spawn(&[], &settings.health, &board, &stop)?;
    for (i, (e, t)) in set.iter().zip(&targets).enumerate() {
        if marllb_shm::backend_set::served(e) {
            checkers.start(i, *t)?;
        }
    }

    let cfg = CycleConfig {
        agent: settings.agent,
        fallback_agent: settings.fallback_agent,
        budget: settings.cycle_budget,
        slow_start_cycles: settings.slow_start_cycles,
        passive: settings.passive,
        wcmp_weights: settings.wcmp_weights.clone(),
        adaptive_sed: settings.adaptive_sed,
        drain,
        names: addrs.iter().map(ToString::to_string).collect(),
    };
    let mut control = ControlState::new(ctrl, cfg, board, Arc::clone(metrics))?;
    let (api_tx, api_rx) = std::sync::mpsc::channel();
    let current_model = Arc::new(Mutex::new(
        settings
            .model
            .clone()
            .filter(|_| settings.agent.is_learned()),
    ));
    let ctx = ApiContext {
        model: current_model,
        backends: Arc::new(std::sync::atomic::AtomicUsize::new(n)),
        health: settings.health.clone(),
        default_port,
    };
    let mut operator = Operator::new(
        api_rx,
        settings.state_file.clone(),
        state,
        Members {
            set,
            configured,
            targets,
        },
        &config,
        settings.interval,
        ctx.clone(),
        Arc::clone(metrics),
        checkers,
    );
    operator.restore(&mut control);
    let api = match &settings.control_socket {
        Some(p) => match serve(p, api_tx, ctx, Arc::clone(&stop)) {
            Ok(s) => {
                tracing::info!(socket = %s.path.display(), "runtime API (marllb-ctl --socket {})", s.path.display());
                Some(s)
            }
            Err(e) if settings.control_socket_explicit => {
                return Err(e)
                    .with_context(|| format!("binding the control socket {}", p.display()))
            }
            Err(e) => {
                tracing::warn!(socket = %p.display(), error = %e, "no runtime API: cannot bind the default control socket");
                None
            }
        },
        None => None,
    };
    let mut reloader = None;
    if let (true, Some(model)) = (settings.agent.is_learned(), &settings.model) {
        match Loaded::load(model, Some(n)) {
            Ok(l) => {
                tracing::info!(model = %model.display(), agent = %l.meta().agent, backends = n, "model loaded");
                if l.meta().agent != settings.agent.name() {
                    tracing::warn!(sidecar = %l.meta().agent, flag = settings.agent.name(), "the sidecar's agent differs from --agent");
                }
                control.install(Policy::new(l));
            }
            Err(e) => {
                metrics.reload(false);
                tracing::error!(model = %model.display(), error = %e, fallback = settings.fallback_agent.name(),
                    "model refused; running the fallback heuristic until a valid model appears");
            }
        }
        reloader = Some(Reloader::start(model, n)?);
    }
    let mut bgp = settings.bgp.clone().map(|b| {
        tracing::info!(socket = %b.socket.display(), protocol = %b.protocol, rise = b.rise, fall = b.fall,
            "BGP: the VIPs are announced through BIRD while this node can serve");
        Bgp {
            announcer: marllb_ctrl::bgp::Announcer::new(b),
            vips: config
                .vips()
                .iter()
                .filter_map(|v| v.ip())
                .map(|a| a.to_string())
                .collect(),
        }
    });
    tracing::info!(
        shm = %settings.shm, backends = n, workers = view.geometry.worker_count,
        agent = control.active_agent().name(), interval_ms = settings.interval.as_millis() as u64,
        health = ?settings.health.mode, "controller started"
    );

    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if flags.stop.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::Relaxed);
                } else if region.is_replaced() {
                    replaced.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        });
        let cycle = std::thread::Builder::new()
            .name("ctrl-cycle".into())
            .spawn_scoped(s, || {
                run_loop(
                    &mut control,
                    &mut reloader,
                    Some(&mut operator),
                    bgp.as_mut(),
                    settings.interval,
                    metrics,
                    &stop,
                    &flags.hup,
                );
            });
        let r = match cycle.map(|c| c.join()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(anyhow::anyhow!("the cycle thread panicked")),
            Err(e) => Err(e.into()),
        };
        stop.store(true, Ordering::Relaxed);
        r
    })?;

    // Withdrawn in both cases: a data plane that closed or replaced its
    // region must prove itself again (the rise count) on the next one.
    if let Some(b) = bgp.as_mut() {
        b.announcer.withdraw_now();
    }
    let exit = if replaced.load(Ordering::Relaxed) {
        Exit::Replaced
    } else {
        tracing::info!(
            "stopping: the data plane's watchdog takes over after its heartbeat timeout"
        );
        Exit::Stopped
    };
    drop(reloader);
    operator.join_checkers();
    if let Some(s) = api {
        let _ = s.handle.join();
    }
    Ok(exit)
}
