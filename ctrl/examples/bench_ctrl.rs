//! `cargo xtask bench ctrl`: one full controller cycle (stats read of every
//! worker → merge → features → tract inference → action mapping → health
//! overlay → weights published → metrics) with a 16-backend GRU policy (2 FC +
//! GRU + 2 FC, hidden 128), against the bare tract inference of the same model
//! on the same input, interleaved in one process.
//!
//! Last line: `RESULT cycle_p50_us=.. cycle_p99_us=.. infer_p50_us=.. overhead_ratio=..`
//! (overhead_ratio = cycle p50 / bare inference p50).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/onnxgen.rs"]
mod onnxgen;

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use tract_onnx::prelude::*;
use zerocopy::FromZeros;

const BACKENDS: usize = 16;
const HIDDEN: usize = 128;
const WORKERS: u32 = 2;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * p).ceil() as usize).saturating_sub(1);
    v[i.min(v.len() - 1)]
}

fn main() {
    let cycles: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("marllb-bench-ctrl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gru16.onnx");
    let (bytes, meta) = onnxgen::gru(BACKENDS, HIDDEN, None, 42);
    onnxgen::write(&path, &bytes, &meta);

    let fixed = RegionFixed::new_box_zeroed().unwrap();
    let workers = <[StatsBlock]>::new_box_zeroed_with_elems(WORKERS as usize).unwrap();
    let mut c = ConfigImage::new_zeroed();
    c.n_backends = BACKENDS as u32;
    for b in c.backends.iter_mut().take(BACKENDS) {
        b.base_weight = WEIGHT_ONE;
    }
    let params = CreateParams {
        workers: WORKERS,
        ..CreateParams::default()
    };
    let view = RegionView::initialize(&fixed, &workers, &c, &params).unwrap();

    // Stats as a busy data plane would publish them: full reservoirs.
    let mut tel = Telemetry::new_box_zeroed().unwrap();
    for i in 0..BACKENDS {
        tel.backends[i].active_flows = 100 + 10 * i as u32;
        tel.backends[i].packets = 1_000_000;
        for j in 0..512u32 {
            tel.samples[i]
                .flow_duration
                .offer(1000 + j * 37 * (i as u32 + 1), j.wrapping_mul(2654435761));
            tel.samples[i]
                .fct
                .offer(20_000 + j * 91, j.wrapping_mul(40503));
        }
    }
    let dp = DataPlane::new(&view, DataPlaneConfig::default());
    let mut pubs: Vec<_> = (0..WORKERS)
        .map(|w| StatsPublisher::new(&view, w, 10).unwrap())
        .collect();
    for p in &mut pubs {
        p.publish(1, &tel, &dp.status());
    }

    let metrics = Arc::new(Metrics::new());
    let cfg = CycleConfig {
        agent: PolicyKind::SacGru,
        fallback_agent: PolicyKind::Sed,
        budget: Duration::from_secs(1),
        slow_start_cycles: 10,
        passive: PassiveSettings {
            enabled: true,
            timeouts_per_cycle: 5,
            fall: 3,
            hold: Duration::from_secs(10),
            max_ejection_percent: 50,
        },
        wcmp_weights: None,
        adaptive_sed: marllb_policy::AdaptiveSed::default(),
        drain: vec![false; BACKENDS],
        names: (0..BACKENDS).map(|i| format!("10.0.0.{}", i + 1)).collect(),
    };
    let mut control = ControlState::new(
        Controller::new(view, std::process::id()),
        cfg,
        Arc::new(HealthBoard::new(BACKENDS)),
        metrics,
    )
    .unwrap();
    let policy = Policy::load(&path, Some(BACKENDS)).unwrap();
    let plan = policy.plan().clone();
    let obs_shape = policy.obs_shape().to_vec();
    let h_shape = policy.hidden_shape().to_vec();
    control.install(policy);

    // The bare peer: the same plan, one spawned state, the same input sizes.
    let mut state = plan.spawn().unwrap();
    let obs = Tensor::from_shape(&obs_shape, &vec![0.3f32; obs_shape.iter().product()]).unwrap();
    let h = Tensor::from_shape(&h_shape, &vec![0.0f32; HIDDEN]).unwrap();

    let warm = cycles / 10;
    let mut cyc = Vec::with_capacity(cycles);
    let mut inf = Vec::with_capacity(cycles);
    let mut failed = 0u64;
    for k in 0..warm + cycles {
        let t = Instant::now();
        let r = control.step(Instant::now());
        let dc = t.elapsed();
        let t = Instant::now();
        let out = state
            .run(tvec![obs.clone().into_tvalue(), h.clone().into_tvalue()])
            .unwrap();
        let di = t.elapsed();
        std::hint::black_box(out);
        if !r.policy_ok {
            failed += 1;
        }
        if k >= warm {
            cyc.push(dc.as_secs_f64() * 1e6);
            inf.push(di.as_secs_f64() * 1e6);
        }
    }
    let (c50, c99) = (pct(&mut cyc, 0.50), pct(&mut cyc, 0.99));
    let (i50, i99) = (pct(&mut inf, 0.50), pct(&mut inf, 0.99));
    println!("model: {BACKENDS} backends, 7 features, 2 FC({HIDDEN}) + GRU({HIDDEN}) + 2 FC, {WORKERS} workers, {cycles} cycles (+{warm} warm-up)");
    println!(
        "full cycle:      p50 {c50:8.1} us   p99 {c99:8.1} us   max {:8.1} us",
        cyc.last().copied().unwrap_or(0.0)
    );
    println!("bare inference:  p50 {i50:8.1} us   p99 {i99:8.1} us");
    println!(
        "policy steps refused: {failed}; target p99 <= 1000 us: {}",
        if c99 <= 1000.0 { "met" } else { "NOT met" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RESULT cycle_p50_us={c50:.1} cycle_p99_us={c99:.1} infer_p50_us={i50:.1} overhead_ratio={:.2}",
        c50 / i50
    );
}
