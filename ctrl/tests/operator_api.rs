//! The runtime API end to end: `marllb-ctl` against the controller binary, a
//! real region and a test data plane. Every command, every refusal, the
//! one-cycle bound, the counters and the state kept across a restart.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{onnxgen, Ctrl, Dp, TempDir};
use marllb_core::service::AdminState;
use marllb_core::WEIGHT_ONE;
use marllb_shm::Source;

const LONG: Duration = Duration::from_secs(60);

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn ctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_marllb-ctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(socket: &Path, args: &[&str]) -> String {
    let (ok, out, err) = ctl(socket, args);
    assert!(ok, "marllb-ctl {args:?} failed: {out}{err}");
    out
}

/// A refusal: exit status 1 and a message containing `needle`.
fn refused(socket: &Path, args: &[&str], needle: &str) {
    let (ok, out, err) = ctl(socket, args);
    assert!(!ok, "marllb-ctl {args:?} was accepted: {out}");
    assert!(
        err.contains("refused:") && err.contains(needle),
        "marllb-ctl {args:?}: expected {needle:?} in {err:?}"
    );
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(socket, &a)).unwrap()
}

/// `marllb_operator_changes_total{command,result}`.
fn changes(m: &common::Metrics, command: &str, result: &str) -> f64 {
    m.get(
        "marllb_operator_changes_total",
        &[("command", command), ("result", result)],
    )
    .unwrap_or(0.0)
}

fn addrs() -> Vec<Ipv4Addr> {
    (1..=3).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn start(dp: &Dp, dir: &Path, extra: &[&str]) -> (Ctrl, PathBuf) {
    let socket = dir.join("ctl.sock");
    let state = dir.join("state.json");
    let mut args = vec![
        "--interval",
        "50ms",
        "--control-socket",
        socket.to_str().unwrap(),
        "--state-file",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let c = Ctrl::start(&dp.name, &args, "");
    (c, socket)
}

/// The epoch of the first decision whose admin/weights satisfy `f`.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn first_epoch(dp: &Dp, f: impl Fn(&common::Applied) -> bool) -> Option<u64> {
    dp.log
        .lock()
        .unwrap()
        .iter()
        .find(|a| a.source == Source::Controller && f(a))
        .map(|a| a.epoch)
}

#[test]
fn every_command_and_refusal_and_state_across_restart() {
    let dp = Dp::start_with("api", &addrs(), 1);
    let dir = TempDir::new("api");
    let (c, socket) = start(&dp, &dir.0, &["--agent", "sed"]);
    dp.wait_for(LONG, "controller weights", |a| {
        a.source == Source::Controller && a.epoch > 0
    });
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // show, human and JSON.
    let table = ok(&socket, &["show", "backends"]);
    assert!(
        table.contains("BACKEND") && table.contains("127.0.0.3"),
        "{table}"
    );
    let rows = json(&socket, &["show", "backends"]);
    let rows = rows["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["address"], "127.0.0.2");
    assert_eq!(rows[1]["admin"], "active");
    let p = json(&socket, &["show", "policy"]);
    assert_eq!(p["data"]["agent"], "sed");
    assert!(ok(&socket, &["show", "health"]).contains("127.0.0.1"));
    let v = json(&socket, &["show", "vips"]);
    assert!(v["data"].is_array());

    // drain: published in the answer's epoch, the next cycle after the request.
    let t = Instant::now();
    let r = json(&socket, &["backend", "drain", "127.0.0.2"]);
    let took = t.elapsed();
    assert_eq!(r["ok"], true, "{r}");
    let epoch = r["epoch"].as_u64().unwrap();
    let a = dp.wait_for(LONG, "drained", |a| a.admin[1] == AdminState::Draining);
    assert!(
        a.epoch <= epoch + 1,
        "applied in {} for answer {epoch}",
        a.epoch
    );
    assert_eq!(
        first_epoch(&dp, |a| a.admin[1] == AdminState::Draining),
        Some(epoch),
        "the answer's epoch carries the change"
    );
    // One 50 ms cycle plus process start-up of the client; generous for a
    // loaded machine, and not a timing assertion of the product: the epoch
    // check above is the one-cycle bound.
    eprintln!(
        "drain: answered in {:.1} ms, epoch {epoch}",
        took.as_secs_f64() * 1e3
    );

    // Refusals name what was wrong and change nothing.
    refused(
        &socket,
        &["backend", "drain", "198.18.9.9"],
        "unknown backend \"198.18.9.9\"",
    );
    refused(&socket, &["backend", "up", "7"], "unknown backend \"7\"");
    refused(
        &socket,
        &["backend", "up", "127.0.0.2"],
        "is draining, not down",
    );
    refused(
        &socket,
        &["backend", "weight", "127.0.0.1", "0"],
        "must be above 0",
    );
    refused(
        &socket,
        &["backend", "weight", "127.0.0.1", "300"],
        "at most 256",
    );
    refused(
        &socket,
        &["policy", "set", "bogus"],
        "unknown agent \"bogus\"",
    );
    refused(&socket, &["policy", "set", "es"], "needs a model");
    refused(
        &socket,
        &["policy", "set", "sed", "--model", "/x.onnx"],
        "takes no model",
    );
    refused(&socket, &["model", "reload"], "no model to reload");
    ok(&socket, &["backend", "down", "127.0.0.3"]);
    dp.wait_for(LONG, "down", |a| {
        a.admin[2] == AdminState::Down && a.weights[2] == 0
    });
    refused(
        &socket,
        &["backend", "undrain", "127.0.0.3"],
        "use `backend up",
    );
    refused(
        &socket,
        &["backend", "drain", "127.0.0.1"],
        "no other backend would take new flows",
    );
    refused(
        &socket,
        &["backend", "down", "0"],
        "no other backend would take new flows",
    );
    let last = dp.last().unwrap();
    assert_eq!(
        last.admin,
        vec![AdminState::Active, AdminState::Draining, AdminState::Down]
    );
    // A malformed request on the socket itself.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(b"{\"cmd\":\"explode\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(
        line.contains("\"ok\":false") && line.contains("bad request"),
        "{line}"
    );

    // A weight cap the policy cannot exceed.
    ok(&socket, &["backend", "weight", "127.0.0.1", "0.25"]);
    dp.wait_for(LONG, "capped", |a| a.weights[0] == WEIGHT_ONE / 4);
    ok(&socket, &["backend", "up", "127.0.0.3"]);
    dp.wait_for(LONG, "up again", |a| a.admin[2] == AdminState::Active);

    // The agent, switched while running.
    ok(&socket, &["policy", "set", "lsq"]);
    c.wait_metrics(LONG, "lsq active", |m| {
        m.get("marllb_policy_active", &[("agent", "lsq")]) == Some(1.0)
    });
    let m = c.scrape();
    let count = |cmd: &str, result: &str| changes(&m, cmd, result);
    assert_eq!(count("drain", "accepted"), 1.0);
    assert_eq!(count("drain", "refused"), 2.0);
    assert_eq!(count("weight", "accepted"), 1.0);
    assert_eq!(count("weight", "refused"), 2.0);
    assert_eq!(count("policy", "refused"), 3.0);
    assert_eq!(count("policy", "accepted"), 1.0);
    assert_eq!(count("model-reload", "refused"), 1.0);
    let log = c.log_text();
    assert!(
        log.contains("operator: 127.0.0.2: active -> draining"),
        "{log}"
    );
    assert!(log.contains("operator change refused"), "{log}");

    // Restart: the drain, the cap and the agent come back from the state file.
    assert!(c.stop().success());
    let state = std::fs::read_to_string(dir.0.join("state.json")).unwrap();
    assert!(
        state.contains("127.0.0.2") && state.contains("lsq"),
        "{state}"
    );
    // The watchdog takes over, so the next controller decision is the new
    // controller's.
    dp.wait_for(LONG, "watchdog fallback", |a| {
        a.source != Source::Controller
    });
    let (c, socket) = start(&dp, &dir.0, &["--agent", "sed"]);
    let a = dp.wait_for(LONG, "restarted controller", |a| {
        a.source == Source::Controller
    });
    assert_eq!(a.admin[1], AdminState::Draining, "{a:?}");
    assert!(a.weights[0] <= WEIGHT_ONE / 4, "{a:?}");
    assert_eq!(a.admin[2], AdminState::Active);
    let p = json(&socket, &["show", "policy"]);
    assert_eq!(p["data"]["agent"], "lsq");
    // Undo it all; the state file follows.
    ok(&socket, &["backend", "undrain", "127.0.0.2"]);
    ok(&socket, &["backend", "weight", "127.0.0.1", "none"]);
    dp.wait_for(LONG, "undrained", |a| {
        a.admin[1] == AdminState::Active && a.weights[0] > WEIGHT_ONE / 4
    });
    let state = std::fs::read_to_string(dir.0.join("state.json")).unwrap();
    assert!(!state.contains("127.0.0.2"), "{state}");
    assert!(c.stop().success());
    assert!(!socket.exists(), "the socket is removed at stop");
}

#[test]
fn policy_set_and_model_reload_with_a_learned_agent() {
    let dp = Dp::start_with("api-model", &addrs(), 1);
    let dir = TempDir::new("api-model");
    let lvl = |k: usize| (onnxgen::LEVELS[k] * WEIGHT_ONE as f32) as u32;
    let good = dir.0.join("policy.onnx");
    let (bytes, meta) = onnxgen::gru(3, 16, Some(2), 7);
    onnxgen::write(&good, &bytes, &meta);
    let (c, socket) = start(&dp, &dir.0, &["--agent", "sed"]);
    dp.wait_for(LONG, "controller weights", |a| {
        a.source == Source::Controller
    });

    // A model for the wrong number of backends is refused; SED stays.
    let wrong = dir.0.join("wrong.onnx");
    let (bytes, meta) = onnxgen::gru(4, 16, Some(2), 7);
    onnxgen::write(&wrong, &bytes, &meta);
    refused(
        &socket,
        &[
            "policy",
            "set",
            "sac-gru",
            "--model",
            wrong.to_str().unwrap(),
        ],
        "model refused, the current policy stays",
    );
    // The sidecar's agent must be the one asked for.
    refused(
        &socket,
        &["policy", "set", "qmix", "--model", good.to_str().unwrap()],
        "its sidecar says agent",
    );
    assert_eq!(json(&socket, &["show", "policy"])["data"]["agent"], "sed");

    ok(
        &socket,
        &[
            "policy",
            "set",
            "sac-gru",
            "--model",
            good.to_str().unwrap(),
        ],
    );
    dp.wait_for(LONG, "policy weights 2.0", |a| a.weights == vec![lvl(2); 3]);
    let p = json(&socket, &["show", "policy"]);
    assert_eq!(p["data"]["active"], "sac-gru");
    assert_eq!(p["data"]["model_backends"], 3);

    // Reload after the file changed: the new model's weights.
    let (bytes, meta) = onnxgen::gru(3, 16, Some(0), 7);
    onnxgen::write(&good, &bytes, &meta);
    ok(&socket, &["model", "reload"]);
    dp.wait_for(LONG, "policy weights level 0", |a| {
        a.weights == vec![lvl(0); 3]
    });
    // A broken file: refused, the loaded policy stays.
    std::fs::write(&good, b"not onnx").unwrap();
    refused(
        &socket,
        &["model", "reload"],
        "model refused, the current policy stays",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dp.last().unwrap().weights, vec![lvl(0); 3]);
    assert!(c.stop().success());
}

#[test]
fn backends_added_and_removed_at_run_time_and_kept_across_restarts() {
    let dp = Dp::start_with("api-set", &addrs(), 1);
    let dir = TempDir::new("api-set");
    let (c, socket) = start(&dp, &dir.0, &["--agent", "sed"]);
    dp.wait_for(LONG, "controller weights", |a| {
        a.source == Source::Controller && a.epoch > 0
    });

    // Added: served by the data plane, given weight within one cycle of the
    // answer's epoch (the answer waits for the data plane to apply the set).
    let t = Instant::now();
    let r = json(
        &socket,
        &[
            "backend",
            "add",
            "127.0.0.4:8080",
            "--mac",
            "02:00:00:00:00:04",
        ],
    );
    let took = t.elapsed();
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("added at index 3"),
        "{r}"
    );
    let epoch = r["epoch"].as_u64().unwrap();
    let a = dp.wait_for(LONG, "four backends", |a| {
        a.source == Source::Controller && a.weights.len() == 4 && a.weights[3] > 0
    });
    assert!(
        a.epoch <= epoch + 1,
        "new backend weighted in epoch {}, answer {epoch}",
        a.epoch
    );
    eprintln!(
        "add: answered in {:.1} ms, weighted in epoch {} (answer {epoch})",
        took.as_secs_f64() * 1e3,
        a.epoch
    );
    let rows = json(&socket, &["show", "backends"]);
    let rows = rows["data"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["address"], "127.0.0.4");
    assert!(ok(&socket, &["show", "flows"]).contains("127.0.0.4"));

    // Refusals change nothing.
    refused(&socket, &["backend", "add", "127.0.0.4"], "already served");
    refused(&socket, &["backend", "add", "not-an-ip"], "not ADDR");
    refused(
        &socket,
        &["backend", "add", "127.0.0.9", "--mac", "zz"],
        "not aa:bb:cc:dd:ee:ff",
    );
    refused(
        &socket,
        &["backend", "add", "127.0.0.9", "--weight", "0"],
        "must be above 0",
    );
    refused(
        &socket,
        &["backend", "remove", "127.0.0.2"],
        "drain it first",
    );
    refused(&socket, &["backend", "remove", "9"], "unknown backend");
    ok(&socket, &["backend", "drain", "127.0.0.2"]);
    dp.active[1].store(5, std::sync::atomic::Ordering::Relaxed);
    // The controller sees the flows in a cycle or two.
    let deadline = Instant::now() + LONG;
    loop {
        let rows = json(&socket, &["show", "backends"]);
        if rows["data"][1]["active_flows"] == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "{rows}");
        std::thread::sleep(Duration::from_millis(50));
    }
    refused(
        &socket,
        &["backend", "remove", "127.0.0.2"],
        "5 flows are still active",
    );
    dp.active[1].store(0, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + LONG;
    loop {
        let (done, out, err) = ctl(&socket, &["backend", "remove", "127.0.0.2"]);
        if done {
            assert!(out.contains("removed (index 1 kept"), "{out}");
            break;
        }
        assert!(err.contains("still active"), "{err}");
        assert!(Instant::now() < deadline, "{err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    dp.wait_for(LONG, "index 1 removed", |a| {
        a.admin.len() == 4 && a.admin[1] == AdminState::Down && a.weights[1] == 0
    });
    let rows = json(&socket, &["show", "backends"]);
    assert_eq!(rows["data"].as_array().unwrap().len(), 3, "{rows}");
    refused(
        &socket,
        &["backend", "drain", "127.0.0.2"],
        "unknown backend",
    );

    // A new backend takes the removed index. The MACs differ now, so one
    // must be given.
    refused(&socket, &["backend", "add", "127.0.0.6"], "give --mac");
    let r = json(
        &socket,
        &["backend", "add", "127.0.0.6", "--mac", "02:00:00:00:00:06"],
    );
    assert!(
        r["message"].as_str().unwrap().contains("added at index 1"),
        "{r}"
    );
    dp.wait_for(LONG, "index 1 reused", |a| {
        a.admin.len() == 4 && a.admin[1] == AdminState::Active && a.weights[1] > 0
    });
    let m = c.scrape();
    let count = |cmd: &str, result: &str| changes(&m, cmd, result);
    assert_eq!(count("add", "accepted"), 2.0);
    assert_eq!(count("add", "refused"), 5.0);
    assert_eq!(count("remove", "accepted"), 1.0);
    let state = std::fs::read_to_string(dir.0.join("state.json")).unwrap();
    assert!(
        state.contains("members")
            && state.contains("127.0.0.6")
            && state.contains("8080")
            && !state.contains("127.0.0.2"),
        "{state}"
    );

    // A restarted controller finds the data plane serving the set.
    assert!(c.stop().success());
    dp.wait_for(LONG, "watchdog fallback", |a| {
        a.source != Source::Controller
    });
    let (c, socket) = start(&dp, &dir.0, &["--agent", "sed"]);
    dp.wait_for(LONG, "restarted controller", |a| {
        a.source == Source::Controller && a.weights.len() == 4 && a.weights.iter().all(|&w| w > 0)
    });
    let rows = json(&socket, &["show", "backends"]);
    let names: Vec<&str> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["127.0.0.1", "127.0.0.6", "127.0.0.3", "127.0.0.4"]);
    assert!(c.stop().success());

    // A fresh data plane (its configuration only) is given the operator's
    // set at start: index 1 changes address, so it is removed first.
    let fresh = Dp::start_with("api-set2", &addrs(), 1);
    let (c, socket) = start(&fresh, &dir.0, &["--agent", "sed"]);
    fresh.wait_for(LONG, "the operator's set on a fresh data plane", |a| {
        a.source == Source::Controller && a.weights.len() == 4 && a.weights.iter().all(|&w| w > 0)
    });
    let rows = json(&socket, &["show", "backends"]);
    assert_eq!(rows["data"][1]["address"], "127.0.0.6", "{rows}");
    assert!(
        c.log_text()
            .contains("operator state: backend set applied by the data plane"),
        "{}",
        c.log_text()
    );
    assert!(c.stop().success());
}

#[test]
fn the_last_served_backend_is_never_removed() {
    let two: Vec<Ipv4Addr> = (1..=2).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let dp = Dp::start_with("api-last", &two, 1);
    let dir = TempDir::new("api-last");
    let (c, socket) = start(&dp, &dir.0, &["--agent", "sed"]);
    dp.wait_for(LONG, "controller weights", |a| {
        a.source == Source::Controller && a.epoch > 0
    });
    // A backend taken down can go at once (its flows are re-placed anyway).
    ok(&socket, &["backend", "down", "127.0.0.2"]);
    ok(&socket, &["backend", "remove", "127.0.0.2"]);
    dp.wait_for(LONG, "removed", |a| {
        a.admin.len() == 2 && a.admin[1] == AdminState::Down
    });
    // The last one: refused even with --force, and still serving.
    ok(&socket, &["backend", "down", "127.0.0.1", "--force"]);
    refused(
        &socket,
        &["backend", "remove", "127.0.0.1", "--force"],
        "it is the last backend served",
    );
    ok(&socket, &["backend", "up", "127.0.0.1"]);
    dp.wait_for(LONG, "serving again", |a| {
        a.admin[0] == AdminState::Active && a.weights[0] > 0
    });
    assert!(c.stop().success());
}
