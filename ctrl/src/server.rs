//! The runtime API's two halves: the socket thread ([`serve`]) that accepts
//! `marllb-ctl`'s connections, and the cycle thread's side ([`Operator`]) that
//! applies the requests between cycles.
//!
//! ```text
//! marllb-ctl ──unix socket──► api thread: parse, load a model if asked
//!                               │ mpsc (request + reply channel)
//!                               ▼
//! cycle thread: Operator::take (check, apply, persist) ─► Engine::step (publish)
//!               ─► Operator::answer (epoch, shown data) ─► reply
//! ```
//!
//! A request is checked whole before anything changes; a refused one changes
//! nothing, and neither does one whose state file cannot be written (the
//! change is rolled back). Every change is logged and counted in
//! `marllb_operator_changes_total{command,result}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use marllb_core::service::AdminState;
use marllb_core::WEIGHT_ONE;
use marllb_shm::layout::ConfigImage;

use crate::api::{
    AdminOp, BackendRow, HealthRow, PolicyView, Request, Response, ShowWhat, VipRow, MAX_REQUEST,
};
use crate::config::AgentKind;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::model::{Loaded, Policy};
use crate::operator::{BackendOverride, OpAdmin, OperatorState};
use crate::runner::Reloader;

/// How long the socket thread waits for the cycle thread's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A request on its way to the cycle thread.
#[derive(Debug)]
pub struct Pending {
    req: Request,
    /// The model a `policy` or `model-reload` request asked for, loaded (and
    /// checked) on the socket thread so the cycle never waits for it.
    loaded: Option<Result<Loaded, String>>,
    reply: Sender<Response>,
    received: Instant,
}

/// The socket thread; the socket file is removed when it stops.
#[derive(Debug)]
pub struct ApiServer {
    /// The thread.
    pub handle: JoinHandle<()>,
    /// The socket.
    pub path: PathBuf,
}

/// Binds `path` (mode 0600) and serves requests until `stop`. A stale socket
/// (nobody listening) is replaced; a live one is an error. `model` is the
/// current model path, kept by the cycle thread; `backends` what a model must
/// serve.
pub fn serve(
    path: &Path,
    tx: Sender<Pending>,
    model: Arc<Mutex<Option<PathBuf>>>,
    backends: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<ApiServer> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{}: another controller is listening", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let listener = UnixListener::bind(path)?;
    // Only the controller's user may connect (root may anyway).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let owned = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("ctrl-api".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        // One connection at a time: requests are short and
                        // the cycle thread applies them in order anyway.
                        if let Err(e) = connection(s, &tx, &model, backends) {
                            tracing::debug!(error = %e, "api connection");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "api accept");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            let _ = std::fs::remove_file(&owned);
        })?;
    Ok(ApiServer {
        handle,
        path: path.to_path_buf(),
    })
}

fn connection(
    s: UnixStream,
    tx: &Sender<Pending>,
    model: &Mutex<Option<PathBuf>>,
    backends: usize,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&s).take(MAX_REQUEST as u64)).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::refused(format!("bad request: {e}")),
        Ok(req) => {
            let want = match &req {
                Request::Policy { agent, model: m } => match AgentKind::from_str(agent, true) {
                    Ok(k) if k.is_learned() => m.clone().or_else(|| current(model)),
                    _ => None,
                },
                Request::ModelReload => current(model),
                _ => None,
            };
            let loaded =
                want.map(|p| Loaded::load(&p, Some(backends)).map_err(|e| format!("{e:#}")));
            let (reply, rx) = mpsc::channel();
            let sent = tx.send(Pending {
                req,
                loaded,
                reply,
                received: Instant::now(),
            });
            match sent {
                Err(_) => Response::refused("the controller is stopping"),
                Ok(()) => rx.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|_| {
                    Response::refused("no answer from the control cycle within 10 s")
                }),
            }
        }
    };
    let mut out = serde_json::to_vec(&answer)?;
    out.push(b'\n');
    (&s).write_all(&out)
}

fn current(model: &Mutex<Option<PathBuf>>) -> Option<PathBuf> {
    model.lock().ok().and_then(|m| m.clone())
}

/// A request taken by the cycle thread, waiting for the cycle to publish.
#[derive(Debug)]
pub struct Taken {
    reply: Sender<Response>,
    answer: Answer,
    received: Instant,
}

/// What a taken request is answered with.
#[derive(Debug)]
enum Answer {
    /// A change, already applied or refused.
    Change(Response),
    /// A `show`, computed after the cycle (fresh data).
    Show(ShowWhat),
}

/// The cycle thread's side of the API.
#[derive(Debug)]
pub struct Operator {
    rx: Receiver<Pending>,
    state_path: Option<PathBuf>,
    state: OperatorState,
    addrs: Vec<IpAddr>,
    vips: Vec<VipRow>,
    interval: Duration,
    model: Arc<Mutex<Option<PathBuf>>>,
    metrics: Arc<Metrics>,
}

/// What the operator state changes at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// Agent to start with instead of the configuration's.
    pub agent: Option<AgentKind>,
    /// Model to start with instead of the configuration's.
    pub model: Option<PathBuf>,
}

impl Operator {
    /// The cycle side, reading requests from `rx`. `state` is what the state
    /// file held at start (see [`Operator::restore`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: Receiver<Pending>,
        state_path: Option<PathBuf>,
        state: OperatorState,
        addrs: Vec<IpAddr>,
        config: &ConfigImage,
        interval: Duration,
        model: Arc<Mutex<Option<PathBuf>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let vips = config
            .vips()
            .iter()
            .map(|v| VipRow {
                address: v.ip().map_or_else(|| "?".into(), |a| a.to_string()),
                port: v.port,
                proto: match v.proto {
                    0 => "any".into(),
                    6 => "tcp".into(),
                    17 => "udp".into(),
                    p => p.to_string(),
                },
                method: v.method,
                encap: v.encap,
            })
            .collect();
        Self {
            rx,
            state_path,
            state,
            addrs,
            vips,
            interval,
            model,
            metrics,
        }
    }

    /// The agent and model the state file asks for (applied by the caller
    /// before it loads the model), checked: an unknown agent name is an error.
    pub fn restored(state: &OperatorState) -> Result<Restored, String> {
        let agent = match &state.agent {
            Some(a) => Some(
                AgentKind::from_str(a, true)
                    .map_err(|_| format!("state file: unknown agent {a:?}"))?,
            ),
            None => None,
        };
        Ok(Restored {
            agent,
            model: state.model.clone(),
        })
    }

    /// Lays the state file's backend overrides over the engine's.
    pub fn restore(&self, engine: &mut Engine<'_>) {
        for (addr, o) in &self.state.backends {
            match self.addrs.iter().position(|a| a == addr) {
                Some(i) => {
                    let cap = o.weight_cap.map(marllb_policy::action::to_q16);
                    engine.set_operator(i, o.admin, cap);
                    tracing::info!(backend = %addr, index = i, admin = ?o.admin, weight_cap = ?o.weight_cap,
                        "operator state restored");
                }
                None => tracing::warn!(backend = %addr,
                    "the state file names a backend the data plane does not serve; ignored"),
            }
        }
    }

    /// Applies every waiting request to `engine` (before its step).
    pub fn take(&mut self, engine: &mut Engine<'_>, reloader: &mut Option<Reloader>) -> Vec<Taken> {
        let mut out = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            let answer = match p.req {
                Request::Show { what } => Answer::Show(what),
                req => {
                    let command = command_name(&req);
                    let r = self.apply(engine, reloader, req, p.loaded);
                    self.metrics.operator_change(command, r.ok);
                    match (&r.ok, &r.message, &r.error) {
                        (true, Some(m), _) => tracing::info!(command, "operator: {m}"),
                        (false, _, Some(e)) => {
                            tracing::warn!(command, "operator change refused: {e}")
                        }
                        _ => {}
                    }
                    Answer::Change(r)
                }
            };
            out.push(Taken {
                reply: p.reply,
                answer,
                received: p.received,
            });
        }
        out
    }

    /// Answers the requests taken before the cycle that just published.
    pub fn answer(&self, engine: &Engine<'_>, taken: Vec<Taken>) {
        let (epoch, _) = engine.progress();
        for t in taken {
            let mut r = match t.answer {
                Answer::Change(r) => r,
                Answer::Show(what) => self.show(engine, what),
            };
            if r.ok {
                r.epoch = Some(epoch);
            }
            if let Some(m) = &mut r.message {
                m.push_str(&format!(
                    " (published in epoch {epoch}, {:.1} ms after the request)",
                    t.received.elapsed().as_secs_f64() * 1e3
                ));
            }
            let _ = t.reply.send(r);
        }
    }

    fn resolve(&self, name: &str) -> Result<usize, String> {
        if let Ok(a) = name.parse::<IpAddr>() {
            if let Some(i) = self.addrs.iter().position(|x| *x == a) {
                return Ok(i);
            }
        } else if let Ok(i) = name.parse::<usize>() {
            if i < self.addrs.len() {
                return Ok(i);
            }
        }
        let known: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        Err(format!(
            "unknown backend {name:?}: the data plane serves {} (by address or index 0..{})",
            known.join(", "),
            self.addrs.len()
        ))
    }

    fn apply(
        &mut self,
        engine: &mut Engine<'_>,
        reloader: &mut Option<Reloader>,
        req: Request,
        loaded: Option<Result<Loaded, String>>,
    ) -> Response {
        match req {
            Request::Show { .. } => Response::refused("internal: show is not a change"),
            Request::Backend { op, name, force } => {
                let i = match self.resolve(&name) {
                    Ok(i) => i,
                    Err(e) => return Response::refused(e),
                };
                let addr = self.addrs[i];
                let Some((cur, cap)) = engine.operator(i) else {
                    return Response::refused(format!("unknown backend {name:?}"));
                };
                match (op, cur) {
                    (AdminOp::Undrain, OpAdmin::Down) => {
                        return Response::refused(format!(
                            "{addr} is down by the operator, not draining: use `backend up {addr}`"
                        ))
                    }
                    (AdminOp::Up, OpAdmin::Drain) => {
                        return Response::refused(format!(
                            "{addr} is draining, not down: use `backend undrain {addr}`"
                        ))
                    }
                    _ => {}
                }
                let new = op.apply(cur);
                if new == cur {
                    return Response::done(format!("{addr}: already {}", describe(cur)));
                }
                if new.blocks_new_flows()
                    && !cur.blocks_new_flows()
                    && engine.others_taking_flows(i) == 0
                    && !force
                {
                    return Response::refused(format!(
                        "refusing to {} {addr}: no other backend would take new flows \
                         (every other one is down or drained); add --force to do it anyway",
                        op.name()
                    ));
                }
                self.change(engine, i, new, cap, |_| {
                    format!("{addr}: {} -> {}", describe(cur), describe(new))
                })
            }
            Request::Weight { name, weight } => {
                let i = match self.resolve(&name) {
                    Ok(i) => i,
                    Err(e) => return Response::refused(e),
                };
                let addr = self.addrs[i];
                let cap = match weight {
                    None => None,
                    Some(w) if w.is_finite() && w > 0.0 && w <= 256.0 => {
                        Some(marllb_policy::action::to_q16(w))
                    }
                    Some(w) => {
                        return Response::refused(format!(
                            "weight {w}: must be above 0 and at most 256 \
                             (to stop new flows, use `backend drain {addr}`)"
                        ))
                    }
                };
                let Some((admin, _)) = engine.operator(i) else {
                    return Response::refused(format!("unknown backend {name:?}"));
                };
                self.change(engine, i, admin, cap, |_| match weight {
                    Some(w) => format!("{addr}: weight capped at {w}"),
                    None => format!("{addr}: weight cap cleared"),
                })
            }
            Request::Policy { agent, model } => {
                let Ok(kind) = AgentKind::from_str(&agent, true) else {
                    let names: Vec<&str> = AgentKind::value_variants()
                        .iter()
                        .map(|k| k.name())
                        .collect();
                    return Response::refused(format!(
                        "unknown agent {agent:?} (one of {})",
                        names.join(", ")
                    ));
                };
                if !kind.is_learned() {
                    if model.is_some() {
                        return Response::refused(format!(
                            "agent {} is a heuristic and takes no model",
                            kind.name()
                        ));
                    }
                    if let Err(e) = self.persist_policy(engine, kind, None) {
                        return Response::refused(e);
                    }
                    engine.set_agent(kind);
                    *reloader = None;
                    if let Ok(mut m) = self.model.lock() {
                        *m = None;
                    }
                    return Response::done(format!("agent {}", kind.name()));
                }
                let Some(loaded) = loaded else {
                    return Response::refused(format!(
                        "agent {} needs a model: policy set {} --model FILE.onnx",
                        kind.name(),
                        kind.name()
                    ));
                };
                let loaded = match self.checked(loaded, kind) {
                    Ok(l) => l,
                    Err(r) => return r,
                };
                let path = loaded.path().to_path_buf();
                if let Err(e) = self.persist_policy(engine, kind, Some(path.clone())) {
                    return Response::refused(e);
                }
                engine.set_agent(kind);
                engine.install(Policy::new(loaded));
                self.metrics.reload(true);
                if let Ok(mut m) = self.model.lock() {
                    *m = Some(path.clone());
                }
                *reloader = match Reloader::start(&path, self.addrs.len()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "no model watcher: SIGHUP and file changes will not reload");
                        None
                    }
                };
                Response::done(format!(
                    "agent {} with model {}",
                    kind.name(),
                    path.display()
                ))
            }
            Request::ModelReload => match loaded {
                None => Response::refused(format!(
                    "no model to reload: agent {} runs without one",
                    engine.agent().name()
                )),
                Some(loaded) => match self.checked(loaded, engine.agent()) {
                    Err(r) => r,
                    Ok(l) => {
                        let p = l.path().display().to_string();
                        engine.install(Policy::new(l));
                        self.metrics.reload(true);
                        Response::done(format!("model {p} reloaded"))
                    }
                },
            },
        }
    }

    /// A model loaded for `agent`, or the refusal (counted as a refused
    /// reload when the file itself was refused).
    fn checked(
        &self,
        loaded: Result<Loaded, String>,
        agent: AgentKind,
    ) -> Result<Loaded, Response> {
        match loaded {
            Err(e) => {
                self.metrics.reload(false);
                Err(Response::refused(format!(
                    "model refused, the current policy stays: {e}"
                )))
            }
            Ok(l) if l.meta().agent != agent.name() => Err(Response::refused(format!(
                "{}: its sidecar says agent {:?}, not {}; the current policy stays",
                l.path().display(),
                l.meta().agent,
                agent.name()
            ))),
            Ok(l) => Ok(l),
        }
    }

    /// Records the agent (and model) in the state file; on failure the state
    /// is as before.
    fn persist_policy(
        &mut self,
        engine: &Engine<'_>,
        agent: AgentKind,
        model: Option<PathBuf>,
    ) -> Result<(), String> {
        let before = (self.state.agent.clone(), self.state.model.clone());
        self.state.agent = Some(agent.name().into());
        self.state.model = model;
        let r = self.persist(engine);
        if r.is_err() {
            (self.state.agent, self.state.model) = before;
        }
        r
    }

    /// Sets backend `i`'s override, persists, and rolls back if that fails.
    fn change(
        &mut self,
        engine: &mut Engine<'_>,
        i: usize,
        admin: OpAdmin,
        cap: Option<marllb_core::Weight>,
        message: impl FnOnce(()) -> String,
    ) -> Response {
        let Some(before) = engine.operator(i) else {
            return Response::refused(format!("unknown backend index {i}"));
        };
        engine.set_operator(i, admin, cap);
        if let Err(e) = self.persist(engine) {
            engine.set_operator(i, before.0, before.1);
            return Response::refused(e);
        }
        Response::done(message(()))
    }

    /// Writes the state file (if one is configured) from the engine.
    fn persist(&mut self, engine: &Engine<'_>) -> Result<(), String> {
        self.state.backends.clear();
        for (i, addr) in self.addrs.iter().enumerate() {
            let Some((admin, cap)) = engine.operator(i) else {
                continue;
            };
            if admin != engine.configured(i) || cap.is_some() {
                self.state.backends.insert(
                    *addr,
                    BackendOverride {
                        admin,
                        weight_cap: cap.map(|c| c as f32 / WEIGHT_ONE as f32),
                    },
                );
            }
        }
        match &self.state_path {
            None => Ok(()),
            Some(p) => self
                .state
                .save(p)
                .map_err(|e| format!("not applied: cannot write the state file: {e}")),
        }
    }

    fn show(&self, engine: &Engine<'_>, what: ShowWhat) -> Response {
        let (weights, admin) = engine.published();
        let data = match what {
            ShowWhat::Backends => {
                let rows: Vec<BackendRow> = engine
                    .names()
                    .enumerate()
                    .map(|(i, name)| {
                        let (op, cap) = engine.operator(i).unwrap_or_default();
                        let agg = engine.stats().backends.get(i);
                        BackendRow {
                            index: i,
                            address: name.to_string(),
                            admin: match admin.get(i) {
                                Some(AdminState::Active) => "active",
                                Some(AdminState::Draining) => "draining",
                                Some(AdminState::Down) | None => "down",
                            }
                            .into(),
                            operator: op,
                            healthy: engine.healthy(i),
                            weight: f64::from(weights.get(i).copied().unwrap_or(0))
                                / f64::from(WEIGHT_ONE),
                            weight_cap: cap.map(|c| c as f32 / WEIGHT_ONE as f32),
                            base_weight: f64::from(engine.base().get(i).copied().unwrap_or(0))
                                / f64::from(WEIGHT_ONE),
                            active_flows: agg.map_or(0, |b| b.active_flows),
                            new_flows: agg.map_or(0, |b| b.d_new_flows),
                        }
                    })
                    .collect();
                serde_json::to_value(rows)
            }
            ShowWhat::Vips => serde_json::to_value(&self.vips),
            ShowWhat::Policy => {
                let (epoch, cycles) = engine.progress();
                serde_json::to_value(PolicyView {
                    agent: engine.agent().name().into(),
                    active: engine.active_agent().name().into(),
                    model: engine.policy().map(|p| p.path().display().to_string()),
                    model_backends: engine.policy().map(|p| p.meta().backends),
                    epoch,
                    cycles,
                    interval_ms: self.interval.as_millis() as u64,
                    state_file: self.state_path.as_ref().map(|p| p.display().to_string()),
                })
            }
            ShowWhat::Health => {
                let rows: Vec<HealthRow> = engine
                    .names()
                    .enumerate()
                    .map(|(i, name)| {
                        let (run, failed) = engine.health_board().counts(i);
                        HealthRow {
                            index: i,
                            address: name.to_string(),
                            active_up: engine.health_board().up(i),
                            healthy: engine.healthy(i),
                            checks_run: run,
                            checks_failed: failed,
                        }
                    })
                    .collect();
                serde_json::to_value(rows)
            }
        };
        match data {
            Ok(d) => Response {
                ok: true,
                data: Some(d),
                ..Response::default()
            },
            Err(e) => Response::refused(format!("internal: {e}")),
        }
    }
}

fn describe(a: OpAdmin) -> &'static str {
    match a {
        OpAdmin::None => "active",
        OpAdmin::Drain => "draining",
        OpAdmin::Down => "down",
    }
}

fn command_name(r: &Request) -> &'static str {
    match r {
        Request::Show { .. } => "show",
        Request::Backend { op, .. } => op.name(),
        Request::Weight { .. } => "weight",
        Request::Policy { .. } => "policy",
        Request::ModelReload => "model-reload",
    }
}
