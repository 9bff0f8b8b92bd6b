//! The controller binary against a real region and a test data plane.

mod common;
mod in_process;

use std::process::Command;
use std::time::Duration;

use common::{onnxgen, Backend, Ctrl, Dp, TempDir};
use marllb_core::service::AdminState;
use marllb_core::WEIGHT_ONE;
use marllb_shm::{FallbackReason, Source};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn lsq_weights_reach_the_data_plane_metrics_and_shutdown() {
    let dp = Dp::start("lsq", 3, 2);
    for (i, a) in [0u32, 10, 30].iter().enumerate() {
        dp.active[i].store(*a, std::sync::atomic::Ordering::Relaxed);
    }
    let c = Ctrl::start(&dp.name, &["--agent", "lsq", "--interval", "50ms"], "");
    // 1/(0+1) : 1/(2*10+1) : 1/(2*30+1), summed over the two workers.
    let a = dp.wait_for(LONG, "lsq weights", |a| {
        a.source == Source::Controller && a.weights[1] < WEIGHT_ONE
    });
    assert_eq!(a.weights[0], WEIGHT_ONE);
    assert_eq!(a.weights[1], (f64::from(WEIGHT_ONE) / 21.0).round() as u32);
    assert_eq!(a.weights[2], (f64::from(WEIGHT_ONE) / 61.0).round() as u32);
    assert_eq!(a.admin, vec![AdminState::Active; 3]);

    let m = c.wait_metrics(LONG, "rates", |m| {
        m.get("marllb_backend_new_flows_per_second", &[("index", "0")])
            .is_some_and(|v| v > 0.0)
    });
    let b1 = [("index", "1"), ("backend", "127.0.0.1")];
    assert_eq!(m.val("marllb_backend_active_flows", &b1), 20.0);
    assert!((m.val("marllb_backend_weight", &b1) - 1.0 / 21.0).abs() < 1e-4);
    assert_eq!(m.val("marllb_backend_up", &b1), 1.0);
    assert_eq!(m.val("marllb_backend_admin_state", &b1), 0.0);
    // Samples: durations (j+1)*(i+1) ms for j in 0..16 on each worker.
    let avg = m.val("marllb_backend_flow_duration_avg_seconds", &b1);
    assert!((avg - 0.017).abs() < 1e-9, "{avg}");
    assert!((m.val("marllb_backend_flow_duration_p95_seconds", &b1) - 0.032).abs() < 1e-9);
    assert!((m.val("marllb_backend_fct_avg_seconds", &b1) - 0.0425).abs() < 1e-9);
    assert!(m.val("marllb_backend_fct_p95_seconds", &b1) > 0.0);
    // Jain over (0, 20, 60): 80² / (3 · 4000) = 0.5333.
    assert!((m.val("marllb_jain_fairness", &[]) - 6400.0 / 12000.0).abs() < 1e-9);
    assert!(m.val("marllb_throughput_packets_per_second", &[]) > 0.0);
    assert!(m.val("marllb_cycles_total", &[]) >= 2.0);
    assert_eq!(m.val("marllb_cycle_overruns_total", &[]), 0.0);
    assert!(m.val("marllb_dataplane_heartbeat_age_seconds", &[]) < 30.0);
    assert_eq!(m.val("marllb_dataplane_fallback_active", &[]), 0.0);
    assert_eq!(m.val("marllb_policy_active", &[("agent", "lsq")]), 1.0);
    assert_eq!(m.val("marllb_all_backends_down", &[]), 0.0);
    assert!(m.val("marllb_cycle_latency_seconds_count", &[]) >= 2.0);
    assert!(m
        .text
        .contains("# TYPE marllb_inference_latency_seconds histogram"));

    let st = c.stop();
    assert!(st.success(), "exit status {st:?}");
    // The data-plane watchdog covers the dead controller (1 s without heartbeat).
    dp.wait_for(LONG, "watchdog fallback", |a| {
        a.source == Source::Fallback(FallbackReason::Stale)
    });
    assert_eq!(dp.last().unwrap().weights, vec![WEIGHT_ONE; 3]);
}

#[test]
fn health_failover_slow_start_and_all_down() {
    let dp = Dp::start("health", 3, 1);
    let mut backends: Vec<Option<Backend>> = (0..3).map(|_| Some(Backend::start(0))).collect();
    let ports: Vec<u16> = backends.iter().map(|b| b.as_ref().unwrap().port).collect();
    let servers = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(" ");
    let toml = r#"
        slow_start_cycles = 5
        [health]
        interval = "50ms"
        timeout = "200ms"
        rise = 2
        fall = 2
        [passive]
        enabled = false
    "#;
    let c = Ctrl::start(
        &dp.name,
        &[
            "--agent",
            "ecmp",
            "--interval",
            "50ms",
            "--health",
            "http:/health",
            "--servers",
            &servers,
        ],
        toml,
    );
    let up = dp.wait_for(LONG, "controller weights", |a| {
        a.source == Source::Controller && a.epoch > 0
    });
    assert_eq!(up.weights, vec![WEIGHT_ONE; 3]);

    // Kill backend 1: down (weight 0, admin down) within the bound: fall (2)
    // checks at 50 ms plus one 200 ms timeout each, then one cycle — well under
    // 60 cycles of 50 ms.
    let e0 = dp.last().unwrap().epoch;
    backends[1].take().unwrap().kill();
    let down = dp.wait_for(LONG, "backend 1 down", |a| a.admin[1] == AdminState::Down);
    assert_eq!(down.weights[1], 0);
    assert!(down.epoch - e0 <= 60, "took {} cycles", down.epoch - e0);
    // The healthy backends are untouched throughout.
    for a in dp.log.lock().unwrap().iter().filter(|a| a.epoch > 0) {
        assert_eq!((a.weights[0], a.admin[0]), (WEIGHT_ONE, AdminState::Active));
        assert_eq!((a.weights[2], a.admin[2]), (WEIGHT_ONE, AdminState::Active));
    }
    let m = c.wait_metrics(LONG, "backend_up 0", |m| {
        m.get("marllb_backend_up", &[("index", "1")]) == Some(0.0)
    });
    assert_eq!(m.val("marllb_backend_weight", &[("index", "1")]), 0.0);
    assert_eq!(m.val("marllb_backend_admin_state", &[("index", "1")]), 2.0);

    // Restart it: back with a slow start (increasing weights below full first).
    let mark = dp.log.lock().unwrap().len();
    backends[1] = Some(Backend::start(ports[1]));
    dp.wait_for(LONG, "backend 1 at full weight", |a| {
        a.admin[1] == AdminState::Active && a.weights[1] == WEIGHT_ONE
    });
    let ramp: Vec<u32> = dp.log.lock().unwrap()[mark..]
        .iter()
        .filter(|a| a.admin[1] == AdminState::Active)
        .map(|a| a.weights[1])
        .collect();
    assert!(ramp.windows(2).all(|w| w[0] <= w[1]), "ramp {ramp:?}");
    let partial: std::collections::BTreeSet<u32> = ramp
        .iter()
        .copied()
        .filter(|&w| w > 0 && w < WEIGHT_ONE)
        .collect();
    // Steps of WEIGHT_ONE/5; the data plane polls every 10 ms against 50 ms
    // cycles, so it sees nearly all of them (two is the bound under load).
    assert!(partial.len() >= 2, "slow start steps {ramp:?}");
    assert!(
        partial.iter().all(|w| w % (WEIGHT_ONE / 5) == 0),
        "{ramp:?}"
    );
    assert!(ramp[0] < WEIGHT_ONE, "{ramp:?}");

    // Every backend down: all marked down, said clearly.
    for b in backends.iter_mut() {
        b.take().unwrap().kill();
    }
    let a = dp.wait_for(LONG, "all down", |a| {
        a.admin.iter().all(|&s| s == AdminState::Down)
    });
    assert_eq!(a.weights, vec![0; 3]);
    assert_eq!(a.source, Source::Controller);
    c.wait_metrics(LONG, "all_backends_down", |m| {
        m.get("marllb_all_backends_down", &[]) == Some(1.0)
    });
    assert!(
        c.log_text().contains("ALL BACKENDS DOWN"),
        "{}",
        c.log_text()
    );
    assert!(c.stop().success());
}

#[test]
fn passive_signal_takes_a_backend_down() {
    let dp = Dp::start("passive", 3, 1);
    let toml = r#"
        [passive]
        timeouts_per_cycle = 3
        fall = 2
        hold = "60s"
    "#;
    let c = Ctrl::start(&dp.name, &["--agent", "ecmp", "--interval", "50ms"], toml);
    dp.wait_for(LONG, "controller weights", |a| {
        a.source == Source::Controller
    });
    // 4 handshake timeouts per 10 ms publication on backend 2.
    dp.timeouts[2].store(4, std::sync::atomic::Ordering::Relaxed);
    let a = dp.wait_for(LONG, "backend 2 down", |a| a.admin[2] == AdminState::Down);
    assert_eq!(a.weights, vec![WEIGHT_ONE, WEIGHT_ONE, 0]);
    assert!(c.stop().success());
}

fn write_model(
    dir: &TempDir,
    name: &str,
    (bytes, meta): (Vec<u8>, marllb_policy::PolicyMeta),
) -> std::path::PathBuf {
    let p = dir.0.join(name);
    onnxgen::write(&p, &bytes, &meta);
    p
}

#[test]
fn model_hot_reload_refuses_bad_models() {
    let dp = Dp::start("reload", 3, 1);
    let dir = TempDir::new("models");
    let lvl = |k: usize| (onnxgen::LEVELS[k] * WEIGHT_ONE as f32) as u32;
    // A GRU policy that picks level 2 (weight 2.0) for every backend.
    let model = write_model(&dir, "policy.onnx", onnxgen::gru(3, 16, Some(2), 7));
    let c = Ctrl::start(
        &dp.name,
        &[
            "--agent",
            "sac-gru",
            "--model",
            model.to_str().unwrap(),
            "--interval",
            "50ms",
        ],
        "",
    );
    dp.wait_for(LONG, "policy weights 2.0", |a| {
        a.source == Source::Controller && a.weights == vec![lvl(2); 3]
    });
    let m = c.scrape();
    assert_eq!(
        m.val(
            "marllb_policy_active",
            &[("agent", "sac-gru"), ("model", model.to_str().unwrap())]
        ),
        1.0
    );
    assert!(m.val("marllb_inference_latency_seconds_count", &[]) >= 1.0);

    let refused = |m: &common::Metrics| {
        m.get("marllb_model_reloads_total", &[("result", "refused")])
            .unwrap_or(0.0)
    };
    // Corrupt ONNX: refused, the old policy stays.
    std::fs::write(dir.0.join("x.tmp"), b"this is not a protobuf").unwrap();
    std::fs::rename(dir.0.join("x.tmp"), &model).unwrap();
    c.wait_metrics(LONG, "corrupt model refused", |m| refused(m) >= 1.0);
    assert!(c.log_text().contains("new model refused"));
    // A truncated model (the first half of a valid file): refused.
    let before = refused(&c.scrape());
    let (bytes, meta) = onnxgen::gru(3, 16, Some(1), 9);
    write_model(
        &dir,
        "policy.onnx",
        (bytes[..bytes.len() / 2].to_vec(), meta),
    );
    c.wait_metrics(LONG, "truncated model refused", |m| refused(m) > before);
    // NaN outputs on the probe: refused.
    let before = refused(&c.scrape());
    write_model(&dir, "policy.onnx", onnxgen::always_nan(3));
    c.wait_metrics(LONG, "NaN model refused", |m| refused(m) > before);
    // Wrong backend count: refused.
    let before = refused(&c.scrape());
    write_model(&dir, "policy.onnx", onnxgen::mlp(4, 8, Some(0), 1));
    c.wait_metrics(LONG, "4-backend model refused", |m| refused(m) > before);
    // A sidecar that does not match the graph (shape): refused.
    let before = refused(&c.scrape());
    let (bytes, mut meta) = onnxgen::mlp(3, 8, Some(0), 1);
    meta.action = marllb_policy::ActionSpec::Continuous { min: 0.5, max: 2.0 };
    meta.outputs[0].shape = vec![1, 3];
    onnxgen::write(&model, &bytes, &meta);
    c.wait_metrics(LONG, "shape mismatch refused", |m| refused(m) > before);
    // Through all that, the GRU policy kept running.
    let e = dp.last().unwrap().epoch;
    let a = dp.wait_for(LONG, "still running", |a| a.epoch > e + 2);
    assert_eq!(a.weights, vec![lvl(2); 3]);
    let m = c.scrape();
    assert_eq!(
        m.get("marllb_model_reloads_total", &[("result", "accepted")])
            .unwrap_or(0.0),
        0.0
    );

    // A valid MLP that picks level 0, loaded on SIGHUP (and/or the mtime change).
    write_model(&dir, "policy.onnx", onnxgen::mlp(3, 8, Some(0), 3));
    c.signal(rustix::process::Signal::HUP);
    dp.wait_for(LONG, "new policy weights 1.0", |a| {
        a.weights == vec![lvl(0); 3]
    });
    let m = c.wait_metrics(LONG, "accepted", |m| {
        m.get("marllb_model_reloads_total", &[("result", "accepted")])
            .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        m.get("marllb_cycle_failures_total", &[("result", "inference")]),
        None
    );
    // Each refusal was logged with its reason.
    let log = c.log_text();
    for why in [
        "ONNX model",
        "probe run",
        "the model is for 4 backends",
        "the graph gives shape",
    ] {
        assert!(log.contains(why), "no refusal for {why:?} in\n{log}");
    }
    assert!(c.stop().success());
}

#[test]
fn learned_agent_without_usable_model_runs_the_fallback() {
    let dp = Dp::start("fallback", 2, 1);
    let dir = TempDir::new("missing");
    let model = dir.0.join("none.onnx");
    let c = Ctrl::start(
        &dp.name,
        &[
            "--agent",
            "qmix",
            "--model",
            model.to_str().unwrap(),
            "--interval",
            "50ms",
        ],
        "",
    );
    dp.wait_for(LONG, "fallback sed weights", |a| {
        a.source == Source::Controller
    });
    let m = c.scrape();
    assert_eq!(m.val("marllb_policy_active", &[("agent", "sed")]), 1.0);
    // The model appears: picked up.
    write_model(&dir, "none.onnx", onnxgen::mlp(2, 8, Some(1), 5));
    let lvl1 = (1.5 * WEIGHT_ONE as f32) as u32;
    dp.wait_for(LONG, "model weights", |a| a.weights == vec![lvl1; 2]);
    c.wait_metrics(LONG, "qmix active", |m| {
        m.get("marllb_policy_active", &[("agent", "qmix")]) == Some(1.0)
    });
    assert!(c.stop().success());
}

#[test]
fn check_model_prints_inputs_outputs_and_metadata() {
    let dir = TempDir::new("check");
    let model = write_model(&dir, "p.onnx", onnxgen::gru(4, 8, None, 11));
    let out = Command::new(common::bin())
        .args(["check-model", model.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [
        "inputs:",
        "obs",
        "h_in",
        "outputs:",
        "action",
        "h_out",
        "marllb.agent = sac-gru",
        "onnx.ir_version",
        "\"backends\": 4",
        "probe:",
        "OK: 4 backends, 7 features",
    ] {
        assert!(text.contains(s), "missing {s:?} in\n{text}");
    }
    let out = Command::new(common::bin())
        .args(["check-model", model.to_str().unwrap(), "--backends", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("5"));
    std::fs::write(&model, b"garbage").unwrap();
    let out = Command::new(common::bin())
        .args(["check-model", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ONNX model"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_errors_name_the_field() {
    let dir = TempDir::new("cfg");
    let p = dir.0.join("ctrl.toml");
    std::fs::write(&p, "shm = \"x\"\nagent = \"ecmp\"\n[health]\nfal = 3\n").unwrap();
    let out = Command::new(common::bin())
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fal"), "{err}");
    std::fs::write(&p, "shm = \"x\"\nagent = \"ecmp\"\n[health]\nrise = 0\n").unwrap();
    let out = Command::new(common::bin())
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("health.rise"));
    // A --servers list that is not the data plane's is refused.
    let dp = Dp::start("mismatch", 2, 1);
    let out = Command::new(common::bin())
        .args([
            "--shm",
            &dp.name,
            "--agent",
            "ecmp",
            "--servers",
            "127.0.0.1 10.9.9.9",
            "--prometheus-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backend 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
