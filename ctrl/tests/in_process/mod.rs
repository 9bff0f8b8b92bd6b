//! One cycle at a time, in process, over a region in heap memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{onnxgen, TempDir};
use marllb_core::select::Method;
use marllb_core::service::AdminState;
use marllb_core::telemetry::Telemetry;
use marllb_core::WEIGHT_ONE;
use marllb_ctrl::config::{PassiveSettings, PolicyKind};
use marllb_ctrl::cycle::{ControlState, CycleConfig};
use marllb_ctrl::health::HealthBoard;
use marllb_ctrl::metrics::Metrics;
use marllb_ctrl::model::Policy;
use marllb_shm::layout::{RegionFixed, StatsBlock};
use marllb_shm::region::CreateParams;
use marllb_shm::{ConfigImage, Controller, DataPlane, DataPlaneConfig, RegionView, StatsPublisher};
use zerocopy::FromZeros;

fn cfg(agent: PolicyKind, budget: Duration) -> CycleConfig {
    CycleConfig {
        agent,
        fallback_agent: PolicyKind::Ecmp,
        budget,
        slow_start_cycles: 4,
        passive: PassiveSettings {
            enabled: false,
            timeouts_per_cycle: 1,
            fall: 1,
            hold: Duration::from_secs(1),
            max_ejection_percent: 50,
        },
        wcmp_weights: None,
        adaptive_sed: marllb_policy::AdaptiveSed::default(),
        drain: vec![false, false, true],
        names: vec![],
    }
}

struct Heap {
    fixed: Box<RegionFixed>,
    workers: Box<[StatsBlock]>,
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn heap(n: u32) -> Heap {
    let _ = n;
    Heap {
        fixed: RegionFixed::new_box_zeroed().unwrap(),
        workers: <[StatsBlock]>::new_box_zeroed_with_elems(1).unwrap(),
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn view(h: &Heap, n: u32) -> RegionView<'_> {
    let mut c = ConfigImage::new_zeroed();
    c.n_backends = n;
    for b in c.backends.iter_mut().take(n as usize) {
        b.base_weight = WEIGHT_ONE;
    }
    RegionView::initialize(&h.fixed, &h.workers, &c, &CreateParams::default()).unwrap()
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn model(dir: &TempDir, m: (Vec<u8>, marllb_policy::PolicyMeta)) -> Policy {
    let p = dir.0.join("m.onnx");
    onnxgen::write(&p, &m.0, &m.1);
    Policy::load(&p, Some(3)).unwrap()
}

/// An control over `v` with `n` backends, none drained, `agent` and `fallback`.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn control(
    v: RegionView<'_>,
    agent: PolicyKind,
    fallback: PolicyKind,
    n: usize,
) -> ControlState<'_> {
    let mut c = cfg(agent, Duration::from_secs(10));
    c.fallback_agent = fallback;
    c.drain = vec![false; n];
    ControlState::new(
        Controller::new(v, 1),
        c,
        Arc::new(HealthBoard::new(n)),
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

#[test]
fn runtime_nan_and_overrun_keep_the_last_weights() {
    let h = heap(3);
    let v = view(&h, 3);
    let dir = TempDir::new("control");
    let metrics = Arc::new(Metrics::new());
    let mut e = ControlState::new(
        Controller::new(v, 1),
        cfg(PolicyKind::SacGru, Duration::from_secs(10)),
        Arc::new(HealthBoard::new(3)),
        metrics.clone(),
    )
    .unwrap();
    // sqrt(5 - Σobs): idle Σobs = 3 (previous actions), finite.
    e.install(model(&dir, onnxgen::nan_when_busy(3, 5.0)));
    let mut publ = StatsPublisher::new(&v, 0, 10).unwrap();
    let mut tel = Telemetry::new_box_zeroed().unwrap();
    let mut dp = DataPlane::new(&v, DataPlaneConfig::default());
    publ.publish(1, &tel, &dp.status());
    let r = e.step(Instant::now());
    assert!(r.policy_ok);
    let first = e.published().0.to_vec();
    // Equal scores: the last level (2.0) wins; backend 2 is draining.
    assert_eq!(first, vec![2 * WEIGHT_ONE; 3]);
    assert_eq!(
        e.published().1,
        &[AdminState::Active, AdminState::Active, AdminState::Draining]
    );
    let p = dp.poll(2);
    assert_eq!(p.vector.weights(), &first[..]);

    // Busy: NaN actions, refused; the last weights stay and it is counted.
    tel.backends[0].active_flows = 500;
    publ.publish(3, &tel, &dp.status());
    let r = e.step(Instant::now());
    assert!(!r.policy_ok);
    assert!(r.epoch > 0);
    assert_eq!(e.published().0, &first[..]);
    assert!(metrics
        .encode()
        .contains("marllb_cycle_failures_total{result=\"action\"} 1"));

    // An overrunning step (budget 1 ns): its weights are dropped.
    let mut e = ControlState::new(
        Controller::new(v, 1),
        cfg(PolicyKind::SacGru, Duration::from_nanos(1)),
        Arc::new(HealthBoard::new(3)),
        metrics.clone(),
    )
    .unwrap();
    tel.backends[0].active_flows = 0;
    publ.publish(4, &tel, &dp.status());
    e.install(model(&dir, onnxgen::nan_when_busy(3, 5.0)));
    let r = e.step(Instant::now());
    assert!(r.overrun && !r.policy_ok);
    // The fallback heuristic's start weights (ecmp) were kept.
    assert_eq!(e.published().0, &[WEIGHT_ONE; 3]);
    assert!(metrics.encode().contains("marllb_cycle_overruns_total 1"));
}

#[test]
fn gru_hidden_state_is_carried_between_cycles() {
    let dir = TempDir::new("gru");
    let mut p = model(&dir, onnxgen::gru(3, 16, None, 3));
    assert!(p.hidden().iter().all(|&x| x == 0.0));
    let obs = vec![0.5f32; 21];
    let mut a1 = Vec::new();
    p.infer(&obs, &mut a1).unwrap();
    // Not committed: the next run starts from the same state.
    let mut a1b = Vec::new();
    p.infer(&obs, &mut a1b).unwrap();
    assert_eq!(a1, a1b);
    p.commit();
    let h1 = p.hidden().to_vec();
    assert!(h1.iter().any(|&x| x != 0.0));
    let mut a2 = Vec::new();
    p.infer(&obs, &mut a2).unwrap();
    p.commit();
    assert_ne!(p.hidden(), &h1[..], "the state moves from cycle to cycle");
    assert_ne!(
        a1, a2,
        "same observation, different state, different action"
    );
    p.reset_hidden();
    let mut a3 = Vec::new();
    p.infer(&obs, &mut a3).unwrap();
    assert_eq!(a1, a3);
}

#[test]
fn health_board_down_means_weight_zero_and_slow_start_after() {
    let h = heap(3);
    let v = view(&h, 3);
    let board = Arc::new(HealthBoard::new(3));
    let mut c = cfg(PolicyKind::Ecmp, Duration::from_secs(10));
    c.drain = vec![false; 3];
    let mut e = ControlState::new(
        Controller::new(v, 1),
        c,
        board.clone(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    e.step(Instant::now());
    assert_eq!(e.published().0, &[WEIGHT_ONE; 3]);
    // The failure injection the checkers would do, through the test hook.
    marllb_ctrl::health::testing::set(&board, 1, false);
    e.step(Instant::now());
    assert_eq!(e.published().0, &[WEIGHT_ONE, 0, WEIGHT_ONE]);
    assert_eq!(e.published().1[1], AdminState::Down);
    marllb_ctrl::health::testing::set(&board, 1, true);
    let mut ramp = vec![];
    for _ in 0..6 {
        e.step(Instant::now());
        ramp.push(e.published().0[1]);
    }
    assert_eq!(
        ramp,
        vec![
            WEIGHT_ONE / 4,
            WEIGHT_ONE / 2,
            3 * WEIGHT_ONE / 4,
            WEIGHT_ONE,
            WEIGHT_ONE,
            WEIGHT_ONE
        ]
    );
    for i in 0..3 {
        marllb_ctrl::health::testing::set(&board, i, false);
    }
    let r = e.step(Instant::now());
    assert!(r.all_down);
    assert_eq!(e.published().1, &[AdminState::Down; 3]);
    let mut dp = DataPlane::new(&v, DataPlaneConfig::default());
    let p = dp.poll(1);
    assert_eq!(p.vector.admin(), &[AdminState::Down; 3]);
}

/// Fills backend `b`'s completion-time reservoir with `fct_us` (8 samples)
/// and its active-flow gauge, as a worker's window would.
fn window(tel: &mut Telemetry, b: usize, fct_us: u32, active: u32) {
    let r = &mut tel.samples[b].fct;
    r.clear();
    for _ in 0..8 {
        r.offer(fct_us, 0);
    }
    tel.backends[b].active_flows = active;
}

#[test]
fn adaptive_sed_lowers_the_weight_of_the_backend_whose_flows_complete_later() {
    let h = heap(3);
    let v = view(&h, 3);
    let mut e = control(v, PolicyKind::AdaptiveSed, PolicyKind::Ecmp, 3);
    assert_eq!(e.active_agent(), PolicyKind::AdaptiveSed);
    let mut publ = StatsPublisher::new(&v, 0, 10).unwrap();
    let mut tel = Telemetry::new_box_zeroed().unwrap();
    let dp = DataPlane::new(&v, DataPlaneConfig::default());
    let mut seq = 1;
    let mut cycle = |tel: &Telemetry, e: &mut ControlState<'_>| {
        publ.publish(seq, tel, &dp.status());
        seq += 1;
        let r = e.step(Instant::now());
        assert!(r.policy_ok, "{r:?}");
        e.published().0.to_vec()
    };
    let w = cycle(&tel, &mut e);
    assert_eq!(w, vec![WEIGHT_ONE; 3], "no completion yet: no correction");
    // Backend 1's flows take 3x as long as the others'.
    let mut history = Vec::new();
    for _ in 0..12 {
        window(&mut tel, 0, 100_000, 2);
        window(&mut tel, 1, 300_000, 2);
        window(&mut tel, 2, 100_000, 2);
        history.push(cycle(&tel, &mut e));
    }
    let w = history.last().unwrap().clone();
    assert_eq!(w[0], WEIGHT_ONE, "{history:?}");
    assert_eq!(w[2], WEIGHT_ONE, "{history:?}");
    // Settles at (1/3)^GAIN of the others; after 12 cycles it has gone the
    // fraction 1 − (1 − RATE)^12 of the way (in log terms).
    let done = 1.0 - (1.0 - f64::from(marllb_policy::adaptive::RATE)).powi(12);
    let expect = 3f64.powf(-f64::from(marllb_policy::adaptive::GAIN) * done);
    let got = f64::from(w[1]) / f64::from(WEIGHT_ONE);
    assert!(
        (got - expect).abs() < 0.02,
        "slow backend at {got}, expected {expect}: {w:?}"
    );
    assert!(w[1] > 0, "never starved: {w:?}");
    // Monotone descent while the slowdown lasts.
    assert!(
        history.windows(2).all(|p| p[1][1] <= p[0][1]),
        "{history:?}"
    );
    // The slowdown ends: its weight comes back.
    for _ in 0..40 {
        window(&mut tel, 0, 100_000, 2);
        window(&mut tel, 1, 100_000, 2);
        window(&mut tel, 2, 100_000, 2);
        cycle(&tel, &mut e);
    }
    let back = e.published().0.to_vec();
    assert!(back[1] > 9 * WEIGHT_ONE / 10, "{back:?}");
}

#[test]
fn adaptive_sed_follows_the_constants_of_its_configuration() {
    // `[adaptive_sed] gain = 1.0, rate = 0.25`: the same settling law with
    // those constants (chosen far from the defaults' point after 12 cycles).
    let a = marllb_policy::AdaptiveSed {
        gain: 1.0,
        rate: 0.25,
        ..Default::default()
    };
    let h = heap(3);
    let v = view(&h, 3);
    let mut c = cfg(PolicyKind::AdaptiveSed, Duration::from_secs(10));
    c.drain = vec![false; 3];
    c.adaptive_sed = a;
    let mut e = ControlState::new(
        Controller::new(v, 1),
        c,
        Arc::new(HealthBoard::new(3)),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let mut publ = StatsPublisher::new(&v, 0, 10).unwrap();
    let mut tel = Telemetry::new_box_zeroed().unwrap();
    let dp = DataPlane::new(&v, DataPlaneConfig::default());
    publ.publish(1, &tel, &dp.status());
    assert!(e.step(Instant::now()).policy_ok);
    for k in 0..12 {
        window(&mut tel, 0, 100_000, 2);
        window(&mut tel, 1, 300_000, 2);
        window(&mut tel, 2, 100_000, 2);
        publ.publish(k + 2, &tel, &dp.status());
        assert!(e.step(Instant::now()).policy_ok);
    }
    let w = e.published().0.to_vec();
    let done = 1.0 - (1.0 - f64::from(a.rate)).powi(12);
    let expect = 3f64.powf(-f64::from(a.gain) * done);
    let got = f64::from(w[1]) / f64::from(WEIGHT_ONE);
    assert!(
        (got - expect).abs() < 0.02,
        "slow backend at {got}, expected {expect}: {w:?}"
    );
    // The defaults would be elsewhere: the constants are the configured ones.
    let d = marllb_policy::AdaptiveSed::default();
    let other = 3f64.powf(-f64::from(d.gain) * (1.0 - (1.0 - f64::from(d.rate)).powi(12)));
    assert!((got - other).abs() > 0.05, "{got} vs defaults' {other}");
}

#[test]
fn a_learned_agent_without_a_model_falls_back_to_adaptive_sed_from_zero_corrections() {
    let h = heap(3);
    let v = view(&h, 3);
    let mut e = control(v, PolicyKind::Qmix, PolicyKind::AdaptiveSed, 3);
    assert_eq!(e.active_agent(), PolicyKind::AdaptiveSed);
    let mut publ = StatsPublisher::new(&v, 0, 10).unwrap();
    let mut tel = Telemetry::new_box_zeroed().unwrap();
    let dp = DataPlane::new(&v, DataPlaneConfig::default());
    // The same cycles by hand, from corrections 0.
    let mut fb = marllb_policy::FeatureBuilder::new(3);
    fb.set_base(&[1.0; 3]);
    fb.set_previous_action(&[0.0; 3]);
    let (mut real, mut q16) = (vec![], vec![]);
    for (k, slow) in [400_000u32, 400_000, 400_000, 100_000].iter().enumerate() {
        window(&mut tel, 0, 100_000, 1);
        window(&mut tel, 1, 100_000, 1);
        window(&mut tel, 2, *slow, 1);
        publ.publish(k as u64 + 1, &tel, &dp.status());
        assert!(e.step(Instant::now()).policy_ok);
        let fast = [100_000u32; 8];
        let s = [*slow; 8];
        fb.observe(&[
            marllb_policy::BackendObs {
                duration_us: &[],
                fct_us: &fast,
                active_flows: 1,
            },
            marllb_policy::BackendObs {
                duration_us: &[],
                fct_us: &fast,
                active_flows: 1,
            },
            marllb_policy::BackendObs {
                duration_us: &[],
                fct_us: &s,
                active_flows: 1,
            },
        ]);
        marllb_policy::AdaptiveSed::default().step(&fb, &mut real, &mut q16);
        fb.set_previous_action(&real);
        assert_eq!(e.published().0, &q16[..], "cycle {k}");
    }
    assert!(e.published().0[2] < WEIGHT_ONE);
}

#[test]
fn the_shipped_es_model_lowers_the_weight_of_a_slow_backend() {
    // models/es.onnx: a log-step policy for 7 backends (marllb-sim train-es).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/es.onnx");
    let policy = Policy::load(&path, Some(7)).unwrap();
    let h = heap(7);
    let v = view(&h, 7);
    let mut e = control(v, PolicyKind::Es, PolicyKind::Ecmp, 7);
    e.install(policy);
    assert_eq!(e.active_agent(), PolicyKind::Es);
    let mut publ = StatsPublisher::new(&v, 0, 10).unwrap();
    let mut tel = Telemetry::new_box_zeroed().unwrap();
    let dp = DataPlane::new(&v, DataPlaneConfig::default());
    for k in 0..40u64 {
        for b in 0..7 {
            // Backend 3's flows take 3x as long as the others'.
            window(&mut tel, b, if b == 3 { 300_000 } else { 100_000 }, 2);
        }
        publ.publish(k + 1, &tel, &dp.status());
        let r = e.step(Instant::now());
        assert!(r.policy_ok, "{r:?}");
    }
    let w = e.published().0.to_vec();
    assert!(w.iter().all(|&x| x > 0), "{w:?}");
    let others = w.iter().enumerate().filter(|(b, _)| *b != 3);
    assert!(others.clone().all(|(_, &x)| x == w[0]), "{w:?}");
    assert!(w[3] < 9 * w[0] / 10, "the slow backend keeps {w:?}");
}

/// A region with one VIP per entry of `methods` and a backend per entry of
/// `backends` (its base weight, its VIP mask).
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn view_with_vips<'h>(h: &'h Heap, methods: &[Method], backends: &[(u32, u32)]) -> RegionView<'h> {
    let mut c = ConfigImage::new_zeroed();
    c.n_vips = methods.len() as u32;
    for (i, (vip, m)) in c.vips.iter_mut().zip(methods).enumerate() {
        vip.addr[..4].copy_from_slice(&[198, 18, 255, 1 + i as u8]);
        vip.port = 80;
        vip.proto = 6;
        vip.method = m.as_u8();
    }
    c.n_backends = backends.len() as u32;
    for (b, &(w, mask)) in c.backends.iter_mut().zip(backends) {
        b.addr[..4].copy_from_slice(&[198, 19, 0, 10]);
        b.base_weight = w;
        b.vip_mask = mask;
    }
    RegionView::initialize(&h.fixed, &h.workers, &c, &CreateParams::default()).unwrap()
}

#[test]
fn the_sed_and_lsq_agents_leave_the_active_flows_to_a_data_plane_that_places_by_sed() {
    // VIP 0 places by SED, VIP 1 by alias draw. Backends 0 and 1 serve VIP 0
    // only, backend 2 VIP 1 only, backend 3 both.
    let backends = [
        (WEIGHT_ONE, 0b01),
        (2 * WEIGHT_ONE, 0b01),
        (WEIGHT_ONE, 0b10),
        (WEIGHT_ONE, 0b11),
    ];
    let active = [3, 1, 1, 3];
    // The weights `agent` publishes in one cycle over VIPs placing by `methods`.
    let published = |methods: &[Method], agent: PolicyKind| {
        let h = heap(4);
        let v = view_with_vips(&h, methods, &backends);
        let mut e = control(v, agent, PolicyKind::Ecmp, 4);
        let mut publ = StatsPublisher::new(&v, 0, 10).unwrap();
        let mut tel = Telemetry::new_box_zeroed().unwrap();
        for (b, a) in active.iter().enumerate() {
            tel.backends[b].active_flows = *a;
        }
        let dp = DataPlane::new(&v, DataPlaneConfig::default());
        publ.publish(1, &tel, &dp.status());
        let r = e.step(Instant::now());
        assert!(r.policy_ok, "{r:?}");
        e.published().0.to_vec()
    };
    let q = |x: f64| (x * f64::from(WEIGHT_ONE)).round() as u32;
    let mixed = [Method::Sed, Method::Alias];
    // SED: configured / (active + 1) only where the data plane does not
    // divide by the active flows itself; largest 1.0.
    assert_eq!(
        published(&mixed, PolicyKind::Sed),
        [q(0.5), q(1.0), q(0.25), q(0.125)]
    );
    // LSQ: 1 / (active + 1) likewise.
    assert_eq!(
        published(&mixed, PolicyKind::Lsq),
        [q(1.0), q(1.0), q(0.5), q(0.25)]
    );
    // With every VIP placing by alias draw, SED divides everywhere (SED for
    // an alias data plane): configured / (active + 1).
    assert_eq!(
        published(&[Method::Alias, Method::Alias], PolicyKind::Sed),
        [q(0.25), q(1.0), q(0.5), q(0.25)]
    );
}
