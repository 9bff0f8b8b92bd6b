//! The runtime API's two halves: the socket thread ([`serve`]) that accepts
//! `marllb-ctl`'s connections, and the cycle thread's side ([`Operator`]) that
//! applies the requests between cycles.
//!
//! ```text
//! marllb-ctl ──unix socket──► api thread: parse, load a model if asked
//!                               │ mpsc (request + reply channel)
//!                               ▼
//! cycle thread: Operator::take (check, apply, persist) ─► ControlState::step (publish)
//!               ─► Operator::answer (epoch, shown data) ─► reply
//! ```
//!
//! A request is checked whole before anything changes; a refused one changes
//! nothing, and neither does one whose state file cannot be written (the
//! change is rolled back). Every change is logged and counted in
//! `marllb_operator_changes_total{command,result}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use marllb_core::service::AdminState;
use marllb_core::WEIGHT_ONE;
use marllb_shm::backend_set::{served, SetRefusal};
use marllb_shm::layout::{admin as set_admin, BackendEntry, ConfigImage, MAX_VIPS};

use crate::api::{
    AdminOp, BackendRow, FlowRow, HealthRow, PolicyView, Request, Response, ShowWhat, VipRow,
    MAX_REQUEST,
};
use crate::config::{parse_agent, HealthSettings, PolicyKind};
use crate::cycle::ControlState;
use crate::health::{check_once, Checkers};
use crate::metrics::Metrics;
use crate::model::{Loaded, Policy};
use crate::operator::{BackendOverride, MemberState, OpAdmin, OperatorState};
use crate::runner::Reloader;

/// How long the socket thread waits for the cycle thread's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an `add` or `remove` waits for the data plane to apply the set.
pub const SET_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What the socket thread needs besides the channel.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// The current model path, kept by the cycle thread.
    pub model: Arc<Mutex<Option<PathBuf>>>,
    /// Backend indices a model must serve now (kept by the cycle thread).
    pub backends: Arc<AtomicUsize>,
    /// The active checks' settings: `add` checks a new backend once first.
    pub health: HealthSettings,
    /// Health-check port of a backend added without one.
    pub default_port: u16,
}

/// Binds `path` (mode 0600) and serves requests until `stop`. A stale socket
/// (nobody listening) is replaced; a live one is an error.
pub fn serve(
    path: &Path,
    tx: Sender<Pending>,
    ctx: ApiContext,
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
                        if let Err(e) = connection(s, &tx, &ctx) {
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

fn connection(s: UnixStream, tx: &Sender<Pending>, ctx: &ApiContext) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&s).take(MAX_REQUEST as u64)).read_line(&mut line)?;
    let model = &ctx.model;
    let backends = ctx.backends.load(Ordering::Relaxed);
    let req = serde_json::from_str::<Request>(&line);
    let pre = match &req {
        Ok(Request::Add {
            address,
            force: false,
            ..
        }) => precheck(address, ctx),
        _ => Ok(()),
    };
    let answer = match req {
        Err(e) => Response::refused(format!("bad request: {e}")),
        Ok(_) if pre.is_err() => Response::refused(pre.err().unwrap_or_default()),
        Ok(req) => {
            let want = match &req {
                Request::Policy { agent, model: m } => match parse_agent(agent) {
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

/// One health check of a backend about to be added (on the socket thread:
/// the cycle never waits for it).
fn precheck(address: &str, ctx: &ApiContext) -> Result<(), String> {
    let Ok(target) = parse_target(address, ctx.default_port) else {
        return Ok(()); // refused with its reason by the cycle thread
    };
    if ctx.health.mode == crate::config::HealthMode::None {
        return Ok(());
    }
    check_once(
        target,
        &ctx.health.mode,
        ctx.health.timeout,
        ctx.health.expect_status,
    )
    .map_err(|e| {
        format!("not added: a health check of {target} failed ({e}); add --force to add it anyway")
    })
}

/// `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
pub fn parse_target(address: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    address
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("address {address:?}: not ADDR, ADDR:PORT or [V6]:PORT"))
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
    /// An `add` or `remove`, answered when the data plane answers its set.
    Set(Box<SetChange>),
}

/// A backend set written, waiting for the data plane.
#[derive(Debug)]
struct SetChange {
    version: u64,
    kind: SetKind,
    /// The set and members before (restored if the data plane refuses).
    before: (Vec<BackendEntry>, Vec<MemberState>),
    after: Vec<BackendEntry>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
enum SetKind {
    Add {
        index: usize,
        target: SocketAddr,
        base: marllb_core::Weight,
    },
    Remove {
        index: usize,
    },
}

/// The cycle thread's side of the API.
#[derive(Debug)]
pub struct Operator {
    rx: Receiver<Pending>,
    state_path: Option<PathBuf>,
    state: OperatorState,
    /// Addresses by index (a removed index keeps its last address).
    addrs: Vec<IpAddr>,
    /// Health-check targets by index.
    targets: Vec<SocketAddr>,
    /// The backend set the data plane serves (by index).
    set: Vec<BackendEntry>,
    /// The configuration's set: `members` is persisted only when it differs.
    configured: Vec<BackendEntry>,
    vips: Vec<VipRow>,
    interval: Duration,
    ctx: ApiContext,
    metrics: Arc<Metrics>,
    checkers: Checkers,
    /// Requests waiting for the data plane's answer to their set.
    waiting: Vec<Taken>,
}

/// The backend list an operator works on, as the controller starts.
#[derive(Debug, Clone)]
pub struct Members {
    /// The set the data plane serves now.
    pub set: Vec<BackendEntry>,
    /// The configuration's set.
    pub configured: Vec<BackendEntry>,
    /// Health-check targets by index.
    pub targets: Vec<SocketAddr>,
}

/// What the operator state changes at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// Agent to start with instead of the configuration's.
    pub agent: Option<PolicyKind>,
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
        members: Members,
        config: &ConfigImage,
        interval: Duration,
        ctx: ApiContext,
        metrics: Arc<Metrics>,
        checkers: Checkers,
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
        let addrs = members
            .set
            .iter()
            .zip(&members.targets)
            .map(|(e, t)| e.ip().unwrap_or(t.ip()))
            .collect();
        ctx.backends.store(members.set.len(), Ordering::Relaxed);
        Self {
            rx,
            state_path,
            state,
            addrs,
            targets: members.targets,
            set: members.set,
            configured: members.configured,
            vips,
            interval,
            ctx,
            metrics,
            checkers,
            waiting: Vec::new(),
        }
    }

    /// Stops the health checkers (after the shared stop flag was set).
    pub fn join_checkers(self) {
        self.checkers.join();
    }

    /// The agent and model the state file asks for (applied by the caller
    /// before it loads the model), checked: an unknown agent name is an error.
    pub fn restored(state: &OperatorState) -> Result<Restored, String> {
        let agent = match &state.agent {
            Some(a) => Some(parse_agent(a).map_err(|e| format!("state file: {e}"))?),
            None => None,
        };
        Ok(Restored {
            agent,
            model: state.model.clone(),
        })
    }

    /// Lays the state file's backend overrides over the control's.
    pub fn restore(&self, control: &mut ControlState<'_>) {
        for (addr, o) in &self.state.backends {
            match self.served_index(*addr) {
                Some(i) => {
                    let cap = o.weight_cap.map(marllb_policy::action::to_q16);
                    control.set_operator(i, o.admin, cap);
                    tracing::info!(backend = %addr, index = i, admin = ?o.admin, weight_cap = ?o.weight_cap,
                        "operator state restored");
                }
                None => tracing::warn!(backend = %addr,
                    "the state file names a backend the data plane does not serve; ignored"),
            }
        }
    }

    /// Applies every waiting request to `control` (before its step).
    ///
    /// Sets the data plane has answered since are settled first, so that the
    /// step that follows already publishes weights for an added backend (and
    /// the answer goes out with that epoch).
    pub fn take(
        &mut self,
        control: &mut ControlState<'_>,
        reloader: &mut Option<Reloader>,
    ) -> Vec<Taken> {
        let mut out = Vec::new();
        for t in std::mem::take(&mut self.waiting) {
            match t.answer {
                Answer::Set(c) => match self.settle(control, c) {
                    Ok(r) => out.push(Taken {
                        answer: Answer::Change(r),
                        ..t
                    }),
                    Err(c) => self.waiting.push(Taken {
                        answer: Answer::Set(c),
                        ..t
                    }),
                },
                _ => out.push(t),
            }
        }
        while let Ok(p) = self.rx.try_recv() {
            let answer = match p.req {
                Request::Show { what } => Answer::Show(what),
                Request::Add {
                    address,
                    mac,
                    weight,
                    ..
                } => {
                    let r = self.add(control, &address, mac.as_deref(), weight);
                    self.refusal_or_wait("add", r)
                }
                Request::Remove { name, force } => {
                    let r = self.remove(control, &name, force);
                    self.refusal_or_wait("remove", r)
                }
                req => {
                    let command = command_name(&req);
                    let r = self.apply(control, reloader, req, p.loaded);
                    self.log_change(command, &r);
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

    fn log_change(&self, command: &'static str, r: &Response) {
        self.metrics.operator_change(command, r.ok);
        match (&r.ok, &r.message, &r.error) {
            (true, Some(m), _) => tracing::info!(command, "operator: {m}"),
            (false, _, Some(e)) => tracing::warn!(command, "operator change refused: {e}"),
            _ => {}
        }
    }

    fn refusal_or_wait(&self, command: &'static str, r: Result<SetChange, String>) -> Answer {
        match r {
            Ok(c) => Answer::Set(Box::new(c)),
            Err(e) => {
                let r = Response::refused(e);
                self.log_change(command, &r);
                Answer::Change(r)
            }
        }
    }

    /// Answers the requests taken before the cycle that just published; an
    /// `add` or `remove` waits (across cycles) for the data plane's answer to
    /// its set, settled by a later [`Operator::take`].
    pub fn answer(&mut self, control: &mut ControlState<'_>, taken: Vec<Taken>) {
        let (epoch, _) = control.progress();
        for t in taken {
            let mut r = match t.answer {
                Answer::Change(r) => r,
                Answer::Show(what) => self.show(control, what),
                Answer::Set(c) => {
                    self.waiting.push(Taken {
                        answer: Answer::Set(c),
                        ..t
                    });
                    continue;
                }
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

    /// The data plane's answer to a set: applied (the control takes the change),
    /// refused or late (the previous set and state are restored). `Err` while
    /// it has not answered yet.
    fn settle(
        &mut self,
        control: &mut ControlState<'_>,
        c: Box<SetChange>,
    ) -> Result<Response, Box<SetChange>> {
        let a = control.set_answer();
        let command = match c.kind {
            SetKind::Add { .. } => "add",
            SetKind::Remove { .. } => "remove",
        };
        let r = if a.applied >= c.version {
            self.set.clone_from(&c.after);
            let msg = match c.kind {
                SetKind::Add {
                    index,
                    target,
                    base,
                } => {
                    let name = target.ip().to_string();
                    if index == self.addrs.len() {
                        self.addrs.push(target.ip());
                        self.targets.push(target);
                    } else {
                        self.addrs[index] = target.ip();
                        self.targets[index] = target;
                    }
                    control.add_backend(index, name, base);
                    if let Err(e) = self.checkers.start(index, target) {
                        tracing::warn!(backend = %target, error = %e, "no health checker for the new backend");
                    }
                    format!(
                        "{} added at index {index}, weight {}",
                        target.ip(),
                        f64::from(base) / f64::from(WEIGHT_ONE)
                    )
                }
                SetKind::Remove { index } => {
                    control.remove_backend(index);
                    self.checkers.stop_one(index);
                    let addr = self.addrs.get(index).copied();
                    if let Some(a) = addr {
                        self.state.backends.remove(&a);
                    }
                    if let Err(e) = self.persist(control) {
                        tracing::warn!(error = %e, "state file not updated after a removal");
                    }
                    format!(
                        "{} removed (index {index} kept, no longer served)",
                        addr.map_or_else(|| index.to_string(), |a| a.to_string())
                    )
                }
            };
            self.ctx.backends.store(self.set.len(), Ordering::Relaxed);
            Response::done(format!("{msg}; the data plane serves set {}", c.version))
        } else if a.refused == c.version || Instant::now() >= c.deadline {
            let why = if a.refused == c.version {
                format!(
                    "the data plane refused the backend set: {}",
                    SetRefusal::describe(a.reason)
                )
            } else {
                format!(
                    "the data plane did not apply the backend set within {} s; nothing changed",
                    SET_TIMEOUT.as_secs()
                )
            };
            let (set, members) = c.before.clone();
            if a.refused != c.version {
                // Superseded by the previous set, in case it reads it later.
                let _ = control.publish_set(&set);
            }
            self.set = set;
            self.state.members = members;
            let _ = self.persist(control);
            Response::refused(why)
        } else {
            return Err(c);
        };
        self.log_change(command, &r);
        Ok(r)
    }

    /// Checks an `add` and writes its set.
    fn add(
        &mut self,
        control: &mut ControlState<'_>,
        address: &str,
        mac: Option<&str>,
        weight: Option<f32>,
    ) -> Result<SetChange, String> {
        self.no_set_waiting()?;
        let target = parse_target(address, self.ctx.default_port)?;
        let ip = target.ip();
        if let Some(i) = self.served_index(ip) {
            return Err(format!("{ip} is already served (index {i})"));
        }
        let w = weight.unwrap_or(1.0);
        if !(w.is_finite() && w > 0.0 && w <= 256.0) {
            return Err(format!("weight {w}: must be above 0 and at most 256"));
        }
        let base = marllb_policy::action::to_q16(w);
        let mac =
            match mac {
                Some(m) => marllb_host::parse_mac(m)
                    .ok_or_else(|| format!("mac {m:?}: not aa:bb:cc:dd:ee:ff"))?,
                None => {
                    let mut macs = self.set.iter().filter(|e| served(e)).map(|e| e.mac);
                    let first = macs.next();
                    match first {
                        Some(m)
                            if macs.all(|x| x == m)
                                && self.set.iter().filter(|e| served(e)).count() > 1 =>
                        {
                            m
                        }
                        _ => return Err(
                            "give --mac: the served backends do not share one MAC (a next hop), \
                             so the new backend's cannot be assumed"
                                .into(),
                        ),
                    }
                }
            };
        let index = self
            .set
            .iter()
            .position(|e| !served(e))
            .unwrap_or(self.set.len());
        if index >= marllb_core::MAX_BACKENDS {
            return Err(format!(
                "the data plane's table is full ({} indices, none removed)",
                marllb_core::MAX_BACKENDS
            ));
        }
        let (family, addr) = marllb_host::family_addr(ip);
        let family = family as u8;
        let n_vips = self.vips.len().min(MAX_VIPS);
        let entry = BackendEntry {
            addr,
            mac,
            family,
            admin: set_admin::ACTIVE,
            base_weight: base,
            vip_mask: if n_vips >= 32 {
                u32::MAX
            } else {
                (1u32 << n_vips) - 1
            },
        };
        let mut after = self.set.clone();
        if index == after.len() {
            after.push(entry);
        } else {
            after[index] = entry;
        }
        let mut targets = self.targets.clone();
        if index == targets.len() {
            targets.push(target);
        } else {
            targets[index] = target;
        }
        self.write_set(
            control,
            after,
            &targets,
            SetKind::Add {
                index,
                target,
                base,
            },
        )
    }

    /// Checks a `remove` and writes its set.
    fn remove(
        &mut self,
        control: &mut ControlState<'_>,
        name: &str,
        force: bool,
    ) -> Result<SetChange, String> {
        self.no_set_waiting()?;
        let i = self.resolve(name)?;
        let addr = self.addrs[i];
        if self
            .set
            .iter()
            .enumerate()
            .all(|(j, e)| j == i || !served(e))
        {
            return Err(format!(
                "refusing to remove {addr}: it is the last backend served"
            ));
        }
        let (op, _) = control.operator(i).unwrap_or_default();
        let active = control
            .stats()
            .backends
            .get(i)
            .map_or(0, |b| b.active_flows);
        if !force {
            if op == OpAdmin::None {
                return Err(format!(
                    "refusing to remove {addr}: it takes new flows; drain it first \
                     (backend drain {addr}) and remove it when its flows have finished, \
                     or add --force"
                ));
            }
            if op == OpAdmin::Drain && active > 0 {
                return Err(format!(
                    "refusing to remove {addr}: {active} flows are still active on it; wait for \
                     the drain to finish (show backends), take it down to re-place them \
                     (backend down {addr}), or add --force"
                ));
            }
        }
        if control.others_taking_flows(i) == 0 && !force {
            return Err(format!(
                "refusing to remove {addr}: no other backend would take new flows; add --force"
            ));
        }
        let mut after = self.set.clone();
        after[i].admin = set_admin::REMOVED;
        let targets = self.targets.clone();
        self.write_set(control, after, &targets, SetKind::Remove { index: i })
    }

    fn no_set_waiting(&self) -> Result<(), String> {
        if self.waiting.is_empty() {
            Ok(())
        } else {
            Err("another add or remove is waiting for the data plane; try again".into())
        }
    }

    /// Persists `after` as the operator's members, then writes it for the
    /// data plane; on any failure nothing changed.
    fn write_set(
        &mut self,
        control: &mut ControlState<'_>,
        after: Vec<BackendEntry>,
        targets: &[SocketAddr],
        kind: SetKind,
    ) -> Result<SetChange, String> {
        let before = (self.set.clone(), self.state.members.clone());
        self.state.members = if after == self.configured {
            Vec::new()
        } else {
            members_of(&after, targets, self.ctx.default_port)
        };
        if let Err(e) = self.persist(control) {
            self.state.members = before.1;
            return Err(e);
        }
        match control.publish_set(&after) {
            Ok(version) => Ok(SetChange {
                version,
                kind,
                before,
                after,
                deadline: Instant::now() + SET_TIMEOUT,
            }),
            Err(e) => {
                self.state.members = before.1;
                let _ = self.persist(control);
                Err(format!("not applied: {e}"))
            }
        }
    }

    /// Index of the served backend at `ip`.
    fn served_index(&self, ip: IpAddr) -> Option<usize> {
        self.addrs
            .iter()
            .enumerate()
            .position(|(i, a)| *a == ip && self.set.get(i).is_some_and(served))
    }

    fn resolve(&self, name: &str) -> Result<usize, String> {
        let is_served = |i: usize| self.set.get(i).is_some_and(served);
        if let Ok(a) = name.parse::<IpAddr>() {
            if let Some(i) = self.served_index(a) {
                return Ok(i);
            }
        } else if let Ok(i) = name.parse::<usize>() {
            if i < self.addrs.len() && is_served(i) {
                return Ok(i);
            }
        }
        let known: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .filter(|&(i, _)| is_served(i))
            .map(|(i, a)| format!("{a} ({i})"))
            .collect();
        Err(format!(
            "unknown backend {name:?}: the data plane serves {} (by address or index)",
            known.join(", ")
        ))
    }

    fn apply(
        &mut self,
        control: &mut ControlState<'_>,
        reloader: &mut Option<Reloader>,
        req: Request,
        loaded: Option<Result<Loaded, String>>,
    ) -> Response {
        match req {
            Request::Show { .. } | Request::Add { .. } | Request::Remove { .. } => {
                Response::refused("internal: not a change of this kind")
            }
            Request::Backend { op, name, force } => {
                let i = match self.resolve(&name) {
                    Ok(i) => i,
                    Err(e) => return Response::refused(e),
                };
                let addr = self.addrs[i];
                let Some((cur, cap)) = control.operator(i) else {
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
                    && control.others_taking_flows(i) == 0
                    && !force
                {
                    return Response::refused(format!(
                        "refusing to {} {addr}: no other backend would take new flows \
                         (every other one is down or drained); add --force to do it anyway",
                        op.name()
                    ));
                }
                self.change(control, i, new, cap, |_| {
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
                let Some((admin, _)) = control.operator(i) else {
                    return Response::refused(format!("unknown backend {name:?}"));
                };
                self.change(control, i, admin, cap, |_| match weight {
                    Some(w) => format!("{addr}: weight capped at {w}"),
                    None => format!("{addr}: weight cap cleared"),
                })
            }
            Request::Policy { agent, model } => {
                let kind = match parse_agent(&agent) {
                    Ok(k) => k,
                    Err(e) => return Response::refused(e),
                };
                if !kind.is_learned() {
                    if model.is_some() {
                        return Response::refused(format!(
                            "agent {} is a heuristic and takes no model",
                            kind.name()
                        ));
                    }
                    if let Err(e) = self.persist_policy(control, kind, None) {
                        return Response::refused(e);
                    }
                    control.set_agent(kind);
                    *reloader = None;
                    if let Ok(mut m) = self.ctx.model.lock() {
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
                if let Err(e) = self.persist_policy(control, kind, Some(path.clone())) {
                    return Response::refused(e);
                }
                control.set_agent(kind);
                control.install(Policy::new(loaded));
                self.metrics.reload(true);
                if let Ok(mut m) = self.ctx.model.lock() {
                    *m = Some(path.clone());
                }
                *reloader = match Reloader::start(&path, self.set.len()) {
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
                    control.agent().name()
                )),
                Some(loaded) => match self.checked(loaded, control.agent()) {
                    Err(r) => r,
                    Ok(l) => {
                        let p = l.path().display().to_string();
                        control.install(Policy::new(l));
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
        agent: PolicyKind,
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
        control: &ControlState<'_>,
        agent: PolicyKind,
        model: Option<PathBuf>,
    ) -> Result<(), String> {
        let before = (self.state.agent.clone(), self.state.model.clone());
        self.state.agent = Some(agent.name().into());
        self.state.model = model;
        let r = self.persist(control);
        if r.is_err() {
            (self.state.agent, self.state.model) = before;
        }
        r
    }

    /// Sets backend `i`'s override, persists, and rolls back if that fails.
    fn change(
        &mut self,
        control: &mut ControlState<'_>,
        i: usize,
        admin: OpAdmin,
        cap: Option<marllb_core::Weight>,
        message: impl FnOnce(()) -> String,
    ) -> Response {
        let Some(before) = control.operator(i) else {
            return Response::refused(format!("unknown backend index {i}"));
        };
        control.set_operator(i, admin, cap);
        if let Err(e) = self.persist(control) {
            control.set_operator(i, before.0, before.1);
            return Response::refused(e);
        }
        Response::done(message(()))
    }

    /// Writes the state file (if one is configured) from the control.
    fn persist(&mut self, control: &ControlState<'_>) -> Result<(), String> {
        self.state.backends.clear();
        for (i, addr) in self.addrs.iter().enumerate() {
            let Some((admin, cap)) = control.operator(i) else {
                continue;
            };
            if control.is_removed(i) {
                continue;
            }
            if admin != control.configured(i) || cap.is_some() {
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

    fn show(&self, control: &ControlState<'_>, what: ShowWhat) -> Response {
        let (weights, admin) = control.published();
        let data = match what {
            ShowWhat::Backends => {
                let rows: Vec<BackendRow> = control
                    .names()
                    .enumerate()
                    .filter(|&(i, _)| !control.is_removed(i))
                    .map(|(i, name)| {
                        let (op, cap) = control.operator(i).unwrap_or_default();
                        let agg = control.stats().backends.get(i);
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
                            healthy: control.healthy(i),
                            weight: f64::from(weights.get(i).copied().unwrap_or(0))
                                / f64::from(WEIGHT_ONE),
                            weight_cap: cap.map(|c| c as f32 / WEIGHT_ONE as f32),
                            base_weight: f64::from(control.base().get(i).copied().unwrap_or(0))
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
                let (epoch, cycles) = control.progress();
                serde_json::to_value(PolicyView {
                    agent: control.agent().name().into(),
                    active: control.active_agent().name().into(),
                    model: control.policy().map(|p| p.path().display().to_string()),
                    model_backends: control.policy().map(|p| p.meta().backends),
                    epoch,
                    cycles,
                    interval_ms: self.interval.as_millis() as u64,
                    state_file: self.state_path.as_ref().map(|p| p.display().to_string()),
                })
            }
            ShowWhat::Flows => {
                let rows: Vec<FlowRow> = control
                    .names()
                    .enumerate()
                    .filter(|&(i, _)| !control.is_removed(i))
                    .map(|(i, name)| {
                        let b = control.stats().backends.get(i).cloned().unwrap_or_default();
                        let ms = |v: &[u32]| {
                            let mut v = v.to_vec();
                            crate::stats::mean_p95_s(&mut v).map(|(m, p)| (m * 1e3, p * 1e3))
                        };
                        FlowRow {
                            index: i,
                            address: name.to_string(),
                            active: b.active_flows,
                            half_open: b.half_open,
                            new_last_cycle: b.d_new_flows,
                            new_total: b.new_flows,
                            handshake_timeouts: b.handshake_timeouts,
                            duration_ms: ms(&b.duration_us),
                            fct_ms: ms(&b.fct_us),
                        }
                    })
                    .collect();
                serde_json::to_value(rows)
            }
            ShowWhat::Health => {
                let rows: Vec<HealthRow> = control
                    .names()
                    .enumerate()
                    .filter(|&(i, _)| !control.is_removed(i))
                    .map(|(i, name)| {
                        let (run, failed) = control.health_board().counts(i);
                        HealthRow {
                            index: i,
                            address: name.to_string(),
                            active_up: control.health_board().up(i),
                            healthy: control.healthy(i),
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

/// The persisted form of a set (ports that are the default are left out).
fn members_of(set: &[BackendEntry], targets: &[SocketAddr], default_port: u16) -> Vec<MemberState> {
    set.iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let ip = e.ip()?;
            let port = targets
                .get(i)
                .map(SocketAddr::port)
                .filter(|&p| p != default_port);
            Some(MemberState {
                address: ip,
                port,
                mac: marllb_host::format_mac(e.mac),
                weight: e.base_weight as f32 / WEIGHT_ONE as f32,
                removed: !served(e),
            })
        })
        .collect()
}

/// The set and targets the operator state's members describe, over the
/// configuration's set (whose VIP membership an index keeps when its address
/// is the same); new members join every VIP.
pub fn set_of_members(
    members: &[MemberState],
    configured: &[BackendEntry],
    n_vips: usize,
    default_port: u16,
) -> Result<(Vec<BackendEntry>, Vec<SocketAddr>), String> {
    let all = if n_vips >= 32 {
        u32::MAX
    } else {
        (1u32 << n_vips) - 1
    };
    let mut set = Vec::with_capacity(members.len());
    let mut targets = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let mac = marllb_host::parse_mac(&m.mac)
            .ok_or_else(|| format!("state file: members[{i}].mac {:?} is not a MAC", m.mac))?;
        if !(m.weight.is_finite() && m.weight > 0.0 && m.weight <= 256.0) {
            return Err(format!(
                "state file: members[{i}].weight {} is out of range",
                m.weight
            ));
        }
        let (family, addr) = marllb_host::family_addr(m.address);
        let family = family as u8;
        let vip_mask = configured
            .get(i)
            .filter(|c| c.family == family && c.addr == addr)
            .map_or(all, |c| c.vip_mask);
        set.push(BackendEntry {
            addr,
            mac,
            family,
            admin: if m.removed {
                set_admin::REMOVED
            } else {
                set_admin::ACTIVE
            },
            base_weight: marllb_policy::action::to_q16(m.weight),
            vip_mask,
        });
        targets.push(SocketAddr::new(m.address, m.port.unwrap_or(default_port)));
    }
    if set.len() < configured.len() || set.len() > marllb_core::MAX_BACKENDS {
        return Err(format!(
            "state file: {} members for a data plane configured with {} backends",
            set.len(),
            configured.len()
        ));
    }
    Ok((set, targets))
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
        Request::Add { .. } => "add",
        Request::Remove { .. } => "remove",
    }
}
