//! Training smoke tests, ONNX export parity with tract-onnx, sidecar, eval CLI.
//! Run in release (`cargo test --release -p marllb-sim`): debug candle is ~30x slower.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use marllb_policy::model::Policy as Runner;
use marllb_policy::PolicyMeta;
use marllb_sim::learner::{identity_norm, init_deterministic, make_meta};
use marllb_sim::nets::{RecNet, HIDDEN};
use marllb_sim::onnx::export_recnet;
use marllb_sim::parse_servers;
use marllb_sim::train::{train, Algorithm, TrainConfig};

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("marllb-sim-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn small_cfg(kind: Algorithm, dir: &std::path::Path) -> TrainConfig {
    let mut c = TrainConfig::new(kind, parse_servers("2x2,1x4").expect("servers"), 2);
    c.episodes = 3;
    c.episode_s = 6.0;
    c.batch = 4;
    c.seq = 4;
    c.update_every = 2;
    c.checkpoint_every = 2;
    c.progress = false;
    c.save_path = dir.join(format!("{}.onnx", kind.name()));
    c
}

#[test]
fn training_smoke_qmix_and_sac_losses_are_finite_and_resume_works() {
    let dir = tmpdir("train");
    for kind in [Algorithm::Qmix, Algorithm::SacGru] {
        let cfg = small_cfg(kind, &dir);
        let log = train(&cfg).expect("train");
        assert_eq!(log.len(), 3);
        assert!(
            log.iter()
                .all(|e| e.loss.is_finite() && e.reward.is_finite()),
            "{log:?}"
        );
        assert!(
            log.iter().skip(1).any(|e| e.loss > 0.0),
            "no update ran: {log:?}"
        );
        let meta =
            PolicyMeta::load(&PolicyMeta::sidecar_of(&cfg.save_path)).expect("sidecar accepted");
        assert_eq!(meta.backends, 3);
        assert_eq!(meta.agent, kind.name());
        // Resume: two more episodes on top of the checkpoint.
        let mut more = cfg.clone();
        more.episodes = 5;
        more.resume = true;
        let log2 = train(&more).expect("resume");
        assert_eq!(log2.len(), 5);
        assert_eq!(
            log2[..3].iter().map(|e| e.episode).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}

#[test]
fn training_is_deterministic() {
    let d1 = tmpdir("det1");
    let d2 = tmpdir("det2");
    let mut a = small_cfg(Algorithm::Qmix, &d1);
    a.episodes = 2;
    let mut b = small_cfg(Algorithm::Qmix, &d2);
    b.episodes = 2;
    let la = train(&a).expect("a");
    let lb = train(&b).expect("b");
    assert_eq!(
        la.iter().map(|e| (e.reward, e.loss)).collect::<Vec<_>>(),
        lb.iter().map(|e| (e.reward, e.loss)).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read(&a.save_path).expect("onnx a"),
        std::fs::read(&b.save_path).expect("onnx b")
    );
}

#[test]
fn onnx_export_matches_candle_within_1e5() {
    let dir = tmpdir("parity");
    let backends = 7;
    let meta = make_meta("qmix", backends, identity_norm());
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let net = RecNet::new(vb.pp("net"), meta.obs_len(), meta.action_len()).expect("net");
    // Random weights and biases everywhere (candle zero-inits the GRU biases).
    init_deterministic(&vm, 42).expect("init");
    let path = dir.join("p.onnx");
    export_recnet(&vm, "net", meta.obs_len(), meta.action_len(), &path).expect("export");
    std::fs::write(
        PolicyMeta::sidecar_of(&path),
        marllb_policy::meta::to_json(&meta),
    )
    .expect("sidecar");
    // The runner the controller and the simulator share, from a zero hidden
    // state as both start; every later step runs on the state it produced.
    let mut model = Runner::load(&path, Some(backends)).expect("tract loads the export");
    let mut rng = marllb_core::hash::SplitMix64::new(5);
    let mut rnd = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| (marllb_sim::workload::open01(&mut rng) as f32 * 2.0 - 1.0) * scale)
            .collect()
    };
    let mut h_c = Tensor::zeros((1, HIDDEN), DType::F32, &Device::Cpu).expect("h");
    let mut worst = 0f32;
    let mut a_t = Vec::new();
    for _ in 0..20 {
        let obs = rnd(meta.obs_len(), 3.0);
        model.infer(&obs, &mut a_t).expect("tract step");
        model.commit();
        let x = Tensor::from_slice(&obs, (1, meta.obs_len()), &Device::Cpu).expect("x");
        let (a_c, h2_c) = net.step(&x, &h_c).expect("candle step");
        let a_c: Vec<f32> = a_c.flatten_all().and_then(|t| t.to_vec1()).expect("a");
        let h2v: Vec<f32> = h2_c.flatten_all().and_then(|t| t.to_vec1()).expect("h");
        for (p, q) in a_t.iter().zip(&a_c).chain(model.hidden().iter().zip(&h2v)) {
            worst = worst.max((p - q).abs());
        }
        assert_eq!(a_t.len(), meta.action_len());
        assert_eq!(model.hidden().len(), HIDDEN);
        h_c = h2_c;
    }
    assert!(worst < 1e-5, "max abs difference {worst}");
}

#[test]
fn eval_cli_prints_result_line() {
    let exe = env!("CARGO_BIN_EXE_marllb-sim");
    let out = std::process::Command::new(exe)
        .args([
            "eval",
            "--policy",
            "sed",
            "--workload",
            "poisson:150",
            "--servers",
            "4x2,3x4",
            "--lbs",
            "2",
            "--duration",
            "10",
            "--seed",
            "3",
        ])
        .output()
        .expect("run marllb-sim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("RESULT jct_mean_ms="), "{text}");
    for k in ["jct_p90_ms=", "jct_p99_ms=", "jain=", "rejected="] {
        assert!(last.contains(k), "{last}");
    }
    // And an exported model through the same path (tract-onnx).
    let dir = tmpdir("evalcli");
    let mut cfg = small_cfg(Algorithm::Qmix, &dir);
    cfg.servers = parse_servers("4x2,3x4").expect("servers");
    cfg.episodes = 1;
    train(&cfg).expect("train");
    let out = std::process::Command::new(exe)
        .args(["eval", "--policy"])
        .arg(&cfg.save_path)
        .args(["--workload", "poisson:150", "--duration", "10"])
        .output()
        .expect("run marllb-sim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .last()
            .unwrap_or_default()
            .starts_with("RESULT "),
        "{text}"
    );
}
