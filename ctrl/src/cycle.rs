//! One control cycle, and the state carried between cycles.
//!
//! ```text
//! read every worker's stats ─► merge per backend ─► FeatureBuilder
//!   ─► policy (tract) or heuristic ─► action_to_weights      (the policy step)
//!   ─► health / admin overlay, slow start ─► publish (epoch+1) ─► heartbeat ─► metrics
//! ```
//!
//! The policy step may fail (inference error, NaN action, all-zero action) or
//! overrun its budget: then its result is dropped, the last good policy weights
//! are kept, the recurrent state does not advance, and the failure is counted.
//! The health overlay and the publication run every cycle regardless, so a
//! failed backend is taken out even while the policy is failing, and the
//! heartbeat never stops while the controller runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use marllb_core::select::Method;
use marllb_core::service::AdminState;
use marllb_core::{Weight, WEIGHT_ONE};
use marllb_policy::{action_to_weights, AdaptiveSed, BackendObs, FeatureBuilder};
use marllb_shm::layout::ConfigImage;
use marllb_shm::Controller;
use zerocopy::FromZeros;

use crate::config::{PassiveSettings, PolicyKind};
use crate::health::{HealthBoard, PassivePool};
use crate::heuristic;
use crate::metrics::{BackendLabels, Metrics};
use crate::model::Policy;
use crate::operator::OpAdmin;
use crate::stats::{jain, mean_p95_s, ReadSummary, StatsReader};

/// What the control state needs besides the region.
#[derive(Clone, Debug)]
pub struct CycleConfig {
    /// Agent asked for.
    pub agent: PolicyKind,
    /// Heuristic while a learned agent has no model.
    pub fallback_agent: PolicyKind,
    /// Policy-step budget: longer is an overrun.
    pub budget: Duration,
    /// Slow-start length in cycles (0: none).
    pub slow_start_cycles: u32,
    /// Passive signal.
    pub passive: PassiveSettings,
    /// WCMP weights (real), one per backend; `None`: the region's base weights.
    pub wcmp_weights: Option<Vec<f32>>,
    /// Adaptive SED's constants.
    pub adaptive_sed: AdaptiveSed,
    /// Backends held draining by the configuration, by index (the starting
    /// point of the operator's overrides).
    pub drain: Vec<bool>,
    /// Backend names for metrics and logs, by index.
    pub names: Vec<String>,
}

/// Why the control state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// Out of memory for the stats frames.
    #[error("cannot allocate the stats frames")]
    Alloc,
    /// The WCMP weights do not match the backends.
    #[error("wcmp_weights: {got} weights for {backends} backends")]
    WcmpLength {
        /// Given.
        got: usize,
        /// Backends.
        backends: usize,
    },
}

/// What one cycle did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Epoch published (0: nothing published).
    pub epoch: u64,
    /// The policy step produced new weights.
    pub policy_ok: bool,
    /// The policy step exceeded its budget.
    pub overrun: bool,
    /// Every backend is down.
    pub all_down: bool,
    /// Stats read summary.
    pub stats: ReadSummary,
}

/// The controller's state between cycles.
#[derive(Debug)]
pub struct ControlState<'r> {
    ctrl: Controller<'r>,
    cfg: CycleConfig,
    n: usize,
    stats: StatsReader,
    fb: FeatureBuilder,
    policy: Option<Policy>,
    obs: Vec<f32>,
    action: Vec<f32>,
    real: Vec<f32>,
    q16: Vec<Weight>,
    base: Vec<Weight>,
    wcmp: Vec<Weight>,
    /// Last good weights of the agent.
    policy_w: Vec<Weight>,
    out_w: Vec<Weight>,
    out_admin: Vec<AdminState>,
    active_scratch: Vec<u32>,
    health: Arc<HealthBoard>,
    passive: PassivePool,
    down: Vec<bool>,
    ramp: Vec<u32>,
    all_down: bool,
    metrics: Arc<Metrics>,
    labels: Vec<BackendLabels>,
    start: Instant,
    last_cycle: Option<Instant>,
    dp_hb: u64,
    dp_hb_changed: Instant,
    cycles: u64,
    /// The agent of the last policy step (`None` before the first): adaptive
    /// SED's corrections restart at 0 when it becomes the active agent.
    last_agent: Option<PolicyKind>,
    /// Operator's admin overrides, by index.
    op: Vec<OpAdmin>,
    /// Operator's weight caps (Q16.16), by index.
    cap: Vec<Option<Weight>>,
    /// Indices removed from the backend set (served as down, in no VIP).
    removed: Vec<bool>,
    /// VIPs (bit `v` for VIP `v` of the configuration) whose data plane
    /// places new flows by SED, adding each backend's active flows itself.
    sed_vips: u32,
    /// VIPs in the configuration (a backend added at run time joins them all).
    all_vips: u32,
    /// By index: every VIP the backend serves places by SED, so the `sed` and
    /// `lsq` agents leave the active-flow term to the data plane
    /// ([`dp_counts_active`]).
    dp_counts: Vec<bool>,
    epoch: u64,
}

impl<'r> ControlState<'r> {
    /// The control state publishing through `ctrl`.
    pub fn new(
        ctrl: Controller<'r>,
        cfg: CycleConfig,
        health: Arc<HealthBoard>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CycleError> {
        let view = ctrl.view();
        let n = ctrl.backends();
        let workers = view.geometry.worker_count;
        let mut config = ConfigImage::new_zeroed();
        ctrl.config_into(&mut config);
        // The set the data plane serves: its configuration's, or the last
        // backend set it applied.
        let set = ctrl
            .served_set()
            .unwrap_or_else(|| marllb_shm::backend_set::from_config(&config));
        let removed: Vec<bool> = (0..n)
            .map(|i| {
                set.entries()
                    .get(i)
                    .is_some_and(|e| !marllb_shm::backend_set::served(e))
            })
            .collect();
        let n_vips = (config.n_vips as usize).min(config.vips.len());
        let bit = |v: usize| {
            u32::try_from(v)
                .ok()
                .and_then(|v| 1u32.checked_shl(v))
                .unwrap_or(0)
        };
        let all_vips = (0..n_vips).fold(0u32, |m, v| m | bit(v));
        let sed_vips = (0..n_vips)
            .filter(|&v| {
                config.vips.get(v).map(|vip| Method::from_u8(vip.method)) == Some(Some(Method::Sed))
            })
            .fold(0u32, |m, v| m | bit(v));
        let mut dp_counts: Vec<bool> = set
            .entries()
            .iter()
            .map(|b| dp_counts_active(b.vip_mask, sed_vips))
            .collect();
        dp_counts.resize(n, dp_counts_active(all_vips, sed_vips));
        let mut base: Vec<Weight> = set.entries().iter().map(|b| b.base_weight).collect();
        base.resize(n, WEIGHT_ONE);
        for (b, r) in base.iter_mut().zip(&removed) {
            if *r {
                *b = 0;
            }
        }
        if base.iter().all(|&b| b == 0) {
            base.fill(WEIGHT_ONE);
        }
        let wcmp = match &cfg.wcmp_weights {
            Some(w) if w.len() != n => {
                return Err(CycleError::WcmpLength {
                    got: w.len(),
                    backends: n,
                })
            }
            Some(w) => w
                .iter()
                .map(|&x| marllb_policy::action::to_q16(x))
                .collect(),
            None => base.clone(),
        };
        let labels = (0..n)
            .map(|i| BackendLabels {
                index: i.to_string(),
                backend: cfg.names.get(i).cloned().unwrap_or_else(|| i.to_string()),
            })
            .collect();
        let mut initial = Vec::new();
        let first = if cfg.agent.is_learned() {
            cfg.fallback_agent
        } else {
            cfg.agent
        };
        heuristic::weights(
            first,
            if first == PolicyKind::Wcmp {
                &wcmp
            } else {
                &base
            },
            &[],
            &mut initial,
        );
        let now = Instant::now();
        let e = ControlState {
            stats: StatsReader::new(workers, n).map_err(|_| CycleError::Alloc)?,
            fb: {
                let mut fb = FeatureBuilder::new(n);
                let real: Vec<f32> = base
                    .iter()
                    .map(|w| *w as f32 / marllb_core::WEIGHT_ONE as f32)
                    .collect();
                fb.set_base(&real);
                fb
            },
            policy: None,
            obs: Vec::new(),
            action: Vec::new(),
            real: Vec::new(),
            q16: Vec::new(),
            base,
            wcmp,
            policy_w: initial,
            out_w: vec![0; n],
            out_admin: vec![AdminState::Active; n],
            active_scratch: vec![0; n],
            health,
            passive: PassivePool::new(n),
            down: vec![false; n],
            ramp: vec![0; n],
            all_down: false,
            metrics,
            labels,
            start: now,
            last_cycle: None,
            dp_hb: 0,
            dp_hb_changed: now,
            cycles: 0,
            last_agent: None,
            op: (0..n).map(|i| configured_admin(&cfg.drain, i)).collect(),
            cap: vec![None; n],
            removed,
            sed_vips,
            all_vips,
            dp_counts,
            epoch: 0,
            ctrl,
            cfg,
            n,
        };
        e.metrics.set_policy(e.active_agent().name(), "");
        Ok(e)
    }

    /// Backends in the region.
    pub fn backends(&self) -> usize {
        self.n
    }

    /// The agent computing the weights now.
    pub fn active_agent(&self) -> PolicyKind {
        match (&self.policy, self.cfg.agent.is_learned()) {
            (Some(_), _) => self.cfg.agent,
            (None, true) => self.cfg.fallback_agent,
            (None, false) => self.cfg.agent,
        }
    }

    /// Installs a (new) policy; its recurrent state starts at zero, and so do
    /// the corrections of a `log_step` policy (its previous action).
    pub fn install(&mut self, p: Policy) {
        self.metrics
            .set_policy(self.cfg.agent.name(), &p.path().display().to_string());
        if matches!(p.meta().action, marllb_policy::ActionSpec::LogStep { .. }) {
            self.fb.set_previous_action(&vec![0.0; self.base.len()]);
        }
        self.policy = Some(p);
    }

    /// Switches the agent. A heuristic drops the installed model; a learned
    /// agent runs its fallback heuristic until a model is installed.
    pub fn set_agent(&mut self, agent: PolicyKind) {
        if agent != self.cfg.agent || !agent.is_learned() {
            self.policy = None;
        }
        self.cfg.agent = agent;
        let model = self
            .policy
            .as_ref()
            .map(|p| p.path().display().to_string())
            .unwrap_or_default();
        self.metrics.set_policy(self.active_agent().name(), &model);
    }

    /// The agent asked for (the active one may be its fallback).
    pub fn agent(&self) -> PolicyKind {
        self.cfg.agent
    }

    /// The operator's override and weight cap (Q16.16) of backend `i`.
    pub fn operator(&self, i: usize) -> Option<(OpAdmin, Option<Weight>)> {
        Some((*self.op.get(i)?, *self.cap.get(i)?))
    }

    /// The configuration's admin state of backend `i` (its drain list).
    pub fn configured(&self, i: usize) -> OpAdmin {
        configured_admin(&self.cfg.drain, i)
    }

    /// Sets the operator's override and weight cap of backend `i`; applied
    /// from the next cycle. `false` for an unknown index.
    pub fn set_operator(&mut self, i: usize, admin: OpAdmin, cap: Option<Weight>) -> bool {
        match (self.op.get_mut(i), self.cap.get_mut(i)) {
            (Some(o), Some(c)) => {
                *o = admin;
                *c = cap;
                true
            }
            _ => false,
        }
    }

    /// Backends that would take new flows if backend `except` stopped taking
    /// them: healthy and without an admin override.
    pub fn others_taking_flows(&self, except: usize) -> usize {
        (0..self.n)
            .filter(|&i| {
                i != except && !self.down[i] && !self.removed[i] && !self.op[i].blocks_new_flows()
            })
            .count()
    }

    /// Writes a backend set for the data plane (see `marllb_shm::backend_set`);
    /// the control state's own backends change only when the caller applies the
    /// data plane's answer ([`ControlState::add_backend`], [`ControlState::remove_backend`]).
    pub fn publish_set(
        &mut self,
        entries: &[marllb_shm::layout::BackendEntry],
    ) -> Result<u64, marllb_shm::PublishError> {
        self.ctrl.publish_set(entries)
    }

    /// The data plane's answer to the backend sets written.
    pub fn set_answer(&self) -> marllb_shm::SetAnswer {
        self.ctrl.set_answer()
    }

    /// Whether this node can serve, as of the last cycle: its data plane's
    /// heartbeat moved within `dp_timeout` and some backend takes new flows
    /// (healthy, served, without an operator's drain or down).
    pub fn can_serve(&self, dp_timeout: Duration) -> bool {
        let alive = self.dp_hb != 0
            && self
                .last_cycle
                .is_some_and(|t| t.saturating_duration_since(self.dp_hb_changed) <= dp_timeout);
        alive && self.others_taking_flows(usize::MAX) > 0
    }

    /// `true` when index `i` was removed from the backend set.
    pub fn is_removed(&self, i: usize) -> bool {
        self.removed.get(i).copied().unwrap_or(false)
    }

    /// Backend `name` with base weight `base` (Q16.16) joins at index `i`: a
    /// new index (`i` = the count) or a removed one. It starts with a slow
    /// start from the next cycle, no operator override, and no history. A
    /// learned policy trained for another backend count stops: the fallback
    /// heuristic runs until a model for the new count is installed.
    pub fn add_backend(&mut self, i: usize, name: String, base: Weight) -> bool {
        if i > self.n || (i < self.n && !self.removed[i]) || i >= marllb_core::MAX_BACKENDS {
            return false;
        }
        if i == self.n {
            self.n += 1;
            self.resize();
        }
        self.removed[i] = false;
        self.dp_counts[i] = dp_counts_active(self.all_vips, self.sed_vips);
        self.base[i] = base;
        self.wcmp[i] = base;
        if let Some(w) = self.policy_w.get_mut(i) {
            *w = base;
        }
        self.op[i] = OpAdmin::None;
        self.cap[i] = None;
        self.down[i] = false;
        self.ramp[i] = u32::from(self.cfg.slow_start_cycles > 0);
        self.passive.reset(i);
        if let Some(l) = self.labels.get_mut(i) {
            self.metrics.forget_backend(l);
            l.backend = name.clone();
        }
        if let Some(nm) = self.cfg.names.get_mut(i) {
            *nm = name;
        }
        self.rebase();
        true
    }

    /// Index `i` leaves the backend set: weight 0 and down from the next
    /// cycle (its remaining flows are re-placed), its overrides cleared, its
    /// metrics series removed. The index is kept (flows and stats are by
    /// index) and may be given to a later backend.
    pub fn remove_backend(&mut self, i: usize) -> bool {
        if i >= self.n || self.removed[i] {
            return false;
        }
        self.removed[i] = true;
        self.base[i] = 0;
        self.wcmp[i] = 0;
        self.op[i] = OpAdmin::None;
        self.cap[i] = None;
        if let Some(l) = self.labels.get(i) {
            self.metrics.forget_backend(l);
        }
        self.rebase();
        true
    }

    /// Every per-backend vector at `self.n` entries, the data-plane link too.
    fn resize(&mut self) {
        let n = self.n;
        self.base.resize(n, 0);
        self.wcmp.resize(n, 0);
        self.policy_w.resize(n, 0);
        self.out_w.resize(n, 0);
        self.out_admin.resize(n, AdminState::Down);
        self.active_scratch.resize(n, 0);
        self.passive.resize(n);
        self.down.resize(n, false);
        self.ramp.resize(n, 0);
        self.op.resize(n, OpAdmin::None);
        self.cap.resize(n, None);
        self.removed.resize(n, false);
        self.dp_counts.resize(n, false);
        self.stats.resize(n);
        while self.labels.len() < n {
            let i = self.labels.len();
            self.labels.push(BackendLabels {
                index: i.to_string(),
                backend: i.to_string(),
            });
        }
        self.cfg.names.resize(n, String::new());
        self.ctrl.set_backends(n);
    }

    /// The base weights changed: the features start again from them (their
    /// per-backend history restarts), adaptive SED's corrections restart, and
    /// a model for another backend count is dropped.
    fn rebase(&mut self) {
        let mut fb = FeatureBuilder::new(self.n);
        let real: Vec<f32> = self
            .base
            .iter()
            .map(|w| *w as f32 / marllb_core::WEIGHT_ONE as f32)
            .collect();
        fb.set_base(&real);
        self.fb = fb;
        self.last_agent = None;
        if let Some(p) = &self.policy {
            if p.meta().backends != self.n {
                tracing::warn!(
                    model = %p.path().display(),
                    model_backends = p.meta().backends,
                    backends = self.n,
                    fallback = self.cfg.fallback_agent.name(),
                    "the model was trained for another backend count: running the fallback \
                     heuristic until a model for this count is loaded (policy set / model reload)"
                );
                self.metrics.failure("backend_count");
                self.policy = None;
                self.metrics.set_policy(self.active_agent().name(), "");
            }
        }
    }

    /// Backend names (addresses), by index.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| l.backend.as_str())
    }

    /// Configured (base) weights, Q16.16.
    pub fn base(&self) -> &[Weight] {
        &self.base
    }

    /// Health as the last cycle used it: `true` when up.
    pub fn healthy(&self, i: usize) -> bool {
        !self.down.get(i).copied().unwrap_or(true)
    }

    /// The health board (active checks).
    pub fn health_board(&self) -> &HealthBoard {
        &self.health
    }

    /// Epoch of the last publication and cycles run.
    pub fn progress(&self) -> (u64, u64) {
        (self.epoch, self.cycles)
    }

    /// The current policy.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// The last weights and admin states published.
    pub fn published(&self) -> (&[Weight], &[AdminState]) {
        (&self.out_w, &self.out_admin)
    }

    /// The merged stats of the last cycle.
    pub fn stats(&self) -> &StatsReader {
        &self.stats
    }

    /// Runs one cycle at `now`.
    pub fn step(&mut self, now: Instant) -> CycleReport {
        let t0 = Instant::now();
        let mut report = CycleReport {
            stats: self.stats.read(&self.ctrl),
            ..CycleReport::default()
        };
        if report.stats.workers_failed > 0 {
            self.metrics
                .stats_read_errors
                .inc_by(u64::from(report.stats.workers_failed));
        }
        let obs: Vec<BackendObs<'_>> = self.stats.observations().collect();
        self.fb.observe(&obs);
        drop(obs);

        match self.policy_step() {
            Ok(()) if t0.elapsed() > self.cfg.budget => {
                report.overrun = true;
                self.metrics.overruns.inc();
                tracing::warn!(
                    took_us = t0.elapsed().as_micros() as u64,
                    budget_us = self.cfg.budget.as_micros() as u64,
                    "policy step overran its budget; keeping the last weights"
                );
            }
            Ok(()) => {
                report.policy_ok = true;
                std::mem::swap(&mut self.policy_w, &mut self.q16);
                if let Some(p) = &mut self.policy {
                    self.fb.set_previous_action(&self.real);
                    p.commit();
                } else if self.active_agent() == PolicyKind::AdaptiveSed {
                    // The accepted corrections are the next step's previous ones.
                    self.fb.set_previous_action(&self.real);
                }
            }
            Err(reason) => {
                self.metrics.failure(reason.label());
                tracing::warn!(error = %reason, "policy step failed; keeping the last weights");
            }
        }

        report.all_down = self.overlay(now);
        match self.ctrl.publish(&self.out_w, &self.out_admin) {
            Ok(epoch) => {
                report.epoch = epoch;
                self.epoch = epoch;
                self.metrics.epoch.set(epoch as i64);
            }
            Err(e) => {
                self.metrics.failure("publish");
                tracing::error!(error = %e, "publishing the weights failed");
            }
        }
        self.ctrl
            .heartbeat(self.start.elapsed().as_nanos() as u64 + 1);
        self.cycles += 1;
        self.metrics.cycles.inc();
        self.metrics
            .cycle_latency
            .observe(t0.elapsed().as_secs_f64());
        self.update_metrics(now, &report);
        self.last_cycle = Some(now);
        report
    }

    fn policy_step(&mut self) -> Result<(), StepError> {
        let Some(p) = &mut self.policy else {
            // The active flows the agent itself divides by: none where the
            // data plane's SED adds them per packet (else they count twice).
            for ((a, b), &dp) in self
                .active_scratch
                .iter_mut()
                .zip(&self.stats.backends)
                .zip(&self.dp_counts)
            {
                *a = if dp { 0 } else { b.active_flows };
            }
            let kind = self.active_agent();
            let became_active = self.last_agent != Some(kind);
            self.last_agent = Some(kind);
            match kind {
                // Static: the weights set at start, never recomputed.
                PolicyKind::Static => {
                    self.q16.clone_from(&self.policy_w);
                }
                PolicyKind::Wcmp => {
                    heuristic::weights(kind, &self.wcmp, &self.active_scratch, &mut self.q16)
                }
                PolicyKind::AdaptiveSed => {
                    if became_active {
                        // From the configured weights: no correction yet.
                        self.fb.set_previous_action(&vec![0.0; self.n]);
                    }
                    self.cfg
                        .adaptive_sed
                        .step(&self.fb, &mut self.real, &mut self.q16);
                    if self.q16.iter().all(|&w| w == 0) {
                        return Err(StepError::AllZero);
                    }
                    return Ok(());
                }
                _ => heuristic::weights(kind, &self.base, &self.active_scratch, &mut self.q16),
            }
            self.real.clear();
            return Ok(());
        };
        self.last_agent = Some(self.cfg.agent);
        self.fb.observation(p.meta(), &mut self.obs);
        let t = Instant::now();
        let r = p.infer(&self.obs, &mut self.action);
        self.metrics
            .inference_latency
            .observe(t.elapsed().as_secs_f64());
        r.map_err(|e| StepError::Inference(e.to_string()))?;
        action_to_weights(
            p.meta(),
            &self.action,
            &self.fb,
            &mut self.real,
            &mut self.q16,
        )
        .map_err(|e| StepError::Action(e.to_string()))?;
        if self.q16.iter().all(|&w| w == 0) {
            return Err(StepError::AllZero);
        }
        Ok(())
    }

    /// Health and admin on top of the agent's weights; returns `true` when every
    /// backend is down.
    fn overlay(&mut self, now: Instant) -> bool {
        let n_ramp = self.cfg.slow_start_cycles;
        let delta = |f: fn(&crate::stats::BackendAgg) -> u64| -> Vec<u64> {
            (0..self.n)
                .map(|i| self.stats.backends.get(i).map_or(0, f))
                .collect()
        };
        let timeouts = delta(|b| b.d_handshake_timeouts);
        let new_flows = delta(|b| b.d_new_flows);
        let active_up: Vec<bool> = (0..self.n).map(|i| self.health.up(i)).collect();
        let passive = self
            .passive
            .update(&self.cfg.passive, &timeouts, &new_flows, &active_up, now)
            .to_vec();
        for i in 0..self.n {
            if self.removed[i] {
                self.out_w[i] = 0;
                self.out_admin[i] = AdminState::Down;
                continue;
            }
            let passive_down = passive.get(i).copied().unwrap_or(false);
            // The same reading the passive signal was given.
            let healthy = active_up.get(i).copied().unwrap_or(false) && !passive_down;
            let name = self.labels.get(i).map_or("?", |l| l.backend.as_str());
            let was_down = self.down[i];
            if !healthy {
                if !was_down {
                    tracing::warn!(
                        backend = name,
                        index = i,
                        passive = passive_down,
                        "backend down: weight 0"
                    );
                }
                self.down[i] = true;
                self.ramp[i] = 0;
                self.out_w[i] = 0;
                self.out_admin[i] = AdminState::Down;
                continue;
            }
            if was_down {
                self.down[i] = false;
                self.ramp[i] = if n_ramp > 0 { 1 } else { 0 };
                tracing::info!(
                    backend = name,
                    index = i,
                    cycles = n_ramp,
                    "backend recovered: slow start"
                );
            }
            let full = self.policy_w.get(i).copied().unwrap_or(WEIGHT_ONE);
            let w = if self.ramp[i] > 0 {
                let k = self.ramp[i];
                self.ramp[i] = if k >= n_ramp { 0 } else { k + 1 };
                let scaled = (u64::from(full) * u64::from(k) / u64::from(n_ramp.max(1))) as Weight;
                if full > 0 {
                    scaled.max(1)
                } else {
                    0
                }
            } else {
                full
            };
            // The operator's overrides: down and drain take the backend out of
            // new-flow placement; a cap bounds what the agent may give it.
            let (w, admin) = match self.op[i] {
                OpAdmin::Down => (0, AdminState::Down),
                OpAdmin::Drain => (w, AdminState::Draining),
                OpAdmin::None => (w, AdminState::Active),
            };
            self.out_w[i] = self.cap[i].map_or(w, |c| w.min(c));
            self.out_admin[i] = admin;
        }
        let all_down = self.out_admin.iter().all(|&a| a == AdminState::Down);
        // Every live backend at weight 0 (the agent zeroed exactly the healthy
        // ones): equal weights over them rather than a frame the data plane
        // would reject.
        let live = |(w, a): (&Weight, &AdminState)| *a != AdminState::Down && *w > 0;
        if !all_down && !self.out_w.iter().zip(&self.out_admin).any(live) {
            for (w, a) in self.out_w.iter_mut().zip(&self.out_admin) {
                if *a != AdminState::Down {
                    *w = WEIGHT_ONE;
                }
            }
        }
        if all_down != self.all_down {
            if all_down {
                tracing::error!(
                    backends = self.n,
                    "ALL BACKENDS DOWN: every backend is marked down; the data plane drops new and \
                     existing flows of the service (no_live_backend) until one recovers"
                );
            } else {
                tracing::info!("a backend is up again: service restored");
            }
            self.all_down = all_down;
        }
        all_down
    }

    fn update_metrics(&mut self, now: Instant, report: &CycleReport) {
        let m = &self.metrics;
        let dt = self
            .last_cycle
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let (mut pps, mut bps) = (0.0, 0.0);
        for (i, b) in self.stats.backends.iter_mut().enumerate() {
            let Some(l) = self.labels.get(i) else {
                continue;
            };
            if self.removed.get(i).copied().unwrap_or(false) {
                continue;
            }
            m.weight
                .get_or_create(l)
                .set(f64::from(self.out_w[i]) / f64::from(WEIGHT_ONE));
            m.health.get_or_create(l).set(i64::from(!self.down[i]));
            m.admin.get_or_create(l).set(self.out_admin[i] as i64);
            m.active_flows
                .get_or_create(l)
                .set(i64::from(b.active_flows));
            m.handshake_timeouts
                .get_or_create(l)
                .set(b.handshake_timeouts as i64);
            if dt > 0.0 {
                m.new_flows_rate
                    .get_or_create(l)
                    .set(b.d_new_flows as f64 / dt);
                m.backend_pps.get_or_create(l).set(b.d_packets as f64 / dt);
                pps += b.d_packets as f64 / dt;
                bps += b.d_bytes as f64 * 8.0 / dt;
            }
            if let Some((avg, p95)) = mean_p95_s(&mut b.duration_us) {
                m.flow_duration_avg.get_or_create(l).set(avg);
                m.flow_duration_p95.get_or_create(l).set(p95);
            }
            if let Some((avg, p95)) = mean_p95_s(&mut b.fct_us) {
                m.fct_avg.get_or_create(l).set(avg);
                m.fct_p95.get_or_create(l).set(p95);
            }
        }
        if dt > 0.0 {
            m.throughput_pps.set(pps);
            m.throughput_bps.set(bps / 8.0);
        }
        let loads = self
            .stats
            .backends
            .iter()
            .zip(&self.out_admin)
            .filter(|(_, a)| **a != AdminState::Down)
            .map(|(b, _)| f64::from(b.active_flows));
        m.jain.set(jain(loads));
        m.all_down.set(i64::from(report.all_down));
        m.dp_fallback.set(i64::from(report.stats.dp_fallback));
        m.no_live_backend_drops
            .set(report.stats.no_live_backend_drops as i64);
        let hb = self.ctrl.dp_heartbeat();
        if hb != self.dp_hb {
            self.dp_hb = hb;
            self.dp_hb_changed = now;
        }
        m.dp_heartbeat_age.set(
            now.saturating_duration_since(self.dp_hb_changed)
                .as_secs_f64(),
        );
    }
}

/// The configuration's admin state of backend `i`: drained if the drain list
/// holds it (the operator's overrides start from it).
/// `true` when a backend in the VIPs `vip_mask` is placed by SED in every one
/// of them (`sed_vips`): the data plane then adds its active flows to SED's
/// quotient per packet, and the `sed` / `lsq` agents publish the configured /
/// equal weights instead of dividing by the active flows once more. A backend
/// in no VIP, or in one that places by alias draw or Maglev, gets the
/// agent's own quotient (SED for an alias data plane).
pub fn dp_counts_active(vip_mask: u32, sed_vips: u32) -> bool {
    vip_mask != 0 && vip_mask & !sed_vips == 0
}

fn configured_admin(drain: &[bool], i: usize) -> OpAdmin {
    if drain.get(i).copied().unwrap_or(false) {
        OpAdmin::Drain
    } else {
        OpAdmin::None
    }
}

/// Why the policy step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// tract failed.
    #[error("inference: {0}")]
    Inference(String),
    /// NaN, infinity or wrong length.
    #[error("action refused: {0}")]
    Action(String),
    /// Every weight is 0.
    #[error("the action gives every backend weight 0")]
    AllZero,
}

impl StepError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Inference(_) => "inference",
            Self::Action(_) => "action",
            Self::AllZero => "all_zero",
        }
    }
}
