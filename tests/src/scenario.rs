//! The scenarios, as library functions that build a testbed, run, print their
//! numbers and return them (the integration tests assert on them; `cargo xtask
//! demo` runs the main one with a live view).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backend::BackendSpec;
use crate::lb::{start_dataplane, LbOptions};
use crate::load::{unix_now, LoadArgs, Progress, Record, Summary};
use crate::topology::{backend_addr, Topology};

/// Backends of unequal capacity: the MARLLB moderate setting (4 small, 3 large
/// with twice the CPU), scaled to our two cores: `scale` CPUs per small backend.
pub fn moderate_backends(scale: f64, workers: u32) -> Vec<BackendSpec> {
    (0..7)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: backend_addr(j),
            cpus: if j < 4 { scale } else { 2.0 * scale },
            workers,
            backlog: 128,
        })
        .collect()
}

/// `n` backends of equal capacity (`cpus` each).
pub fn equal_backends(n: usize, cpus: f64, workers: u32, backlog: u32) -> Vec<BackendSpec> {
    (0..n)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: backend_addr(j),
            cpus,
            workers,
            backlog,
        })
        .collect()
}

/// `id=cpus,...` for the load generator's fairness computation.
pub fn capacities(specs: &[BackendSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}={}", s.id, s.cpus))
        .collect::<Vec<_>>()
        .join(",")
}

/// A load run in the background.
#[derive(Debug)]
pub struct LoadRun {
    label: String,
    out: PathBuf,
    records: PathBuf,
}

/// Starts the load generator in the client namespace in the background, with
/// `load` plus its progress line and per-request records.
pub fn start_load(topo: &mut Topology, label: &str, load: &LoadArgs) -> Result<LoadRun> {
    let exe = crate::lb::bin("marllb-loadgen")?;
    let out = topo.dir.join(format!("{label}.out"));
    let records = topo.dir.join(format!("{label}.records.json"));
    let load = LoadArgs {
        progress: true,
        records: Some(records.clone()),
        ..load.clone()
    };
    let a = load.to_args();
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let client = topo.client.clone();
    topo.tb
        .spawn(label, &client, &exe.to_string_lossy(), &a, &out)?;
    Ok(LoadRun {
        label: label.into(),
        out,
        records,
    })
}

impl LoadRun {
    /// Progress lines so far.
    pub fn progress(&self) -> Vec<Progress> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the run to end (bounded) and returns its summary and records.
    pub fn finish(self, topo: &mut Topology, limit: Duration) -> Result<(Summary, Vec<Record>)> {
        if topo.tb.wait(&self.label, limit).is_none() {
            topo.tb.kill(&self.label);
            bail!("load run {} did not finish within {limit:?}", self.label);
        }
        let text = std::fs::read_to_string(&self.out)?;
        let summary: Summary = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("no summary in {}", self.out.display()))?;
        let records: Vec<Record> = serde_json::from_str(
            &std::fs::read_to_string(&self.records).unwrap_or_else(|_| "[]".into()),
        )?;
        Ok((summary, records))
    }
}

/// Result of the weight-change scenario.
#[derive(Debug, Clone)]
pub struct WeightChangeReport {
    /// The whole run.
    pub summary: Summary,
    /// Connections in flight when a weight change happened.
    pub spanning: usize,
    /// Of those, how many failed (reset or otherwise).
    pub spanning_failed: usize,
    /// Requests per backend that started after the last change.
    pub after: std::collections::BTreeMap<String, usize>,
}

/// Scenario 4: weights change twice mid-run; no established connection moves.
pub fn weight_change(prefix: &str, dir: &Path) -> Result<WeightChangeReport> {
    let specs = equal_backends(3, 0.2, 8, 128);
    let mut topo = Topology::build(prefix, &specs, 1, dir)?;
    let wfile = dir.join("weights.toml");
    std::fs::write(&wfile, "weights = [1.0, 1.0, 1.0]\n")?;
    let opts = LbOptions {
        method: "alias".into(),
        weights_file: Some(wfile.clone()),
        ..LbOptions::default()
    };
    start_dataplane(&mut topo, 0, &opts)?;
    let caps = capacities(&specs);
    let run = start_load(
        &mut topo,
        "load",
        &LoadArgs {
            rate: 5.0,
            loops: 25000000,
            duration: 9.0,
            capacities: caps.parse().map_err(anyhow::Error::msg)?,
            ..LoadArgs::default()
        },
    )?;
    let t0 = Instant::now();
    let mut changes = Vec::new();
    for (at, w) in [
        (3.0, "weights = [3.0, 1.0, 0.0]\n"),
        (6.0, "weights = [0.0, 1.0, 4.0]\n"),
    ] {
        let due = Duration::from_secs_f64(at);
        if let Some(left) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(left);
        }
        std::fs::write(&wfile, w)?;
        topo.tb.signal("lb0", "HUP");
        changes.push(t0.elapsed().as_secs_f64());
        println!(
            "t={:.1}s weights changed: {}",
            t0.elapsed().as_secs_f64(),
            w.trim()
        );
    }
    let (summary, records) = run.finish(&mut topo, Duration::from_secs(60))?;
    // A connection spans a change if it started before and ended after it
    // (latency measured from its start).
    let spans = |r: &Record| {
        changes
            .iter()
            .any(|c| r.at < *c && r.at + r.latency_ms / 1e3 > *c)
    };
    let spanning: Vec<&Record> = records.iter().filter(|r| spans(r)).collect();
    let spanning_failed = spanning
        .iter()
        .filter(|r| r.outcome != crate::load::Outcome::Ok)
        .count();
    let last = changes.last().copied().unwrap_or(0.0) + 0.3;
    let mut after = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.at > last) {
        if let Some(b) = &r.backend {
            *after.entry(b.clone()).or_insert(0) += 1;
        }
    }
    println!(
        "weight change: {} requests, {} ok, {} failed ({} resets); {} connections spanned a change, {} of them failed; after the last change per backend: {:?}",
        summary.requests,
        summary.ok,
        summary.failed,
        summary.resets,
        spanning.len(),
        spanning_failed,
        after
    );
    Ok(WeightChangeReport {
        summary,
        spanning: spanning.len(),
        spanning_failed,
        after,
    })
}

/// What the operator scenario measured.
#[derive(Debug, Clone)]
pub struct OperatorReport {
    /// The whole run.
    pub summary: Summary,
    /// Requests that failed, with their start times.
    pub failed_at: Vec<f64>,
    /// When be1 was drained (s from the load's start).
    pub drained_at: f64,
    /// When its last flow had finished (the metrics said 0 active).
    pub drain_done_at: Option<f64>,
    /// When `backend remove` answered.
    pub removed_at: Option<f64>,
    /// When `backend add` answered for the new backend.
    pub added_at: Option<f64>,
    /// The first controller restart (between drain and remove).
    pub restarted_at: f64,
    /// The second one (after the add).
    pub restarted_again_at: f64,
    /// Seconds from the request to `marllb-ctl`'s answer, per change.
    pub answer_s: Vec<f64>,
    /// New connections the drained backend got while drained (after one cycle).
    pub new_while_drained: usize,
    /// Connections to it that were open at the drain or the restart and then
    /// completed.
    pub spanning_drain_ok: usize,
    /// ... and failed.
    pub spanning_drain_failed: usize,
    /// Its admin state (metrics) right after the first controller restart.
    pub admin_after_restart: Option<f64>,
    /// Connections the removed backend got after its removal.
    pub new_after_remove: usize,
    /// Connections the added backend served.
    pub served_by_added: usize,
    /// Of the first 30 connections started after the add's answer, how many
    /// it got (SED gives a backend with no flows the next ones).
    pub added_of_next_30: usize,
    /// Seconds from the add's answer to the first connection it served.
    pub first_on_added_s: Option<f64>,
    /// The backends `show backends` listed after the second restart.
    pub backends_after_restart: Vec<String>,
    /// Connections the added backend got after the second restart.
    pub added_after_restart: usize,
}

/// Issue 16's scenario: under load, an operator drains a backend with
/// `marllb-ctl` (no new flows to it, its connections complete), restarts the
/// controller (the drain is kept from the state file), removes the drained
/// backend once its flows have finished, adds a new nginx backend (it takes
/// new flows at once), and restarts the controller again (the changed
/// backend set is kept).
pub fn operator(prefix: &str, dir: &Path) -> Result<OperatorReport> {
    use crate::lb::{metrics, per_backend, start_controller, CtrlOptions};
    let specs = equal_backends(3, 0.2, 8, 128);
    let mut topo = Topology::build(prefix, &specs, 1, dir)?;
    let added_spec = topo.next_backend_spec(0.2, 8, 128);
    let shm = format!("marllb-{prefix}");
    start_dataplane(
        &mut topo,
        0,
        &LbOptions {
            method: "sed".into(),
            shm: Some(shm.clone()),
            ..LbOptions::default()
        },
    )?;
    let socket = dir.join("ctl.sock");
    let state = dir.join("ctrl-state.json");
    let copts = CtrlOptions {
        agent: "sed".into(),
        interval: "200ms".into(),
        extra: vec![
            "--control-socket".into(),
            socket.to_string_lossy().into_owned(),
            "--state-file".into(),
            state.to_string_lossy().into_owned(),
        ],
        // The configuration's backends, also after the add.
        servers: Some(specs.iter().map(|b| format!("{}:80", b.addr)).collect()),
        ..CtrlOptions::default()
    };
    start_controller(&mut topo, 0, &shm, &copts)?;
    let ns = topo.lbs[0].ns.clone();
    let ctl_bin = crate::lb::bin("marllb-ctl")?;
    let ctl = |args: &[&str]| -> Result<(f64, String)> {
        let t = Instant::now();
        let mut c = crate::netns::in_ns(&ns, &ctl_bin.to_string_lossy());
        c.arg("--socket").arg(&socket).args(args);
        let out = crate::netns::run(&mut c)?;
        let took = t.elapsed().as_secs_f64();
        println!("marllb-ctl {}: {}", args.join(" "), out.trim());
        Ok((took, out))
    };
    let mut all_specs = specs.clone();
    all_specs.push(added_spec.clone());
    let caps = capacities(&all_specs);
    let run = start_load(
        &mut topo,
        "load",
        &LoadArgs {
            rate: 30.0,
            loops: 2000000,
            hold: 1.5,
            timeout: 10,
            duration: 24.0,
            capacities: caps.parse().map_err(anyhow::Error::msg)?,
            ..LoadArgs::default()
        },
    )?;
    let t0 = Instant::now();
    let now = || t0.elapsed().as_secs_f64();
    let at = |s: f64| sleep_until(t0, s);
    let be1 = topo.backends[1].spec.addr.to_string();
    let mut answer_s = Vec::new();
    let metric_of = |name: &str, addr: &str| {
        metrics(&ns, copts.prometheus_port)
            .ok()
            .and_then(|m| per_backend(&m, name).get(addr).copied())
    };

    at(3.0);
    let drained_at = now();
    answer_s.push(ctl(&["backend", "drain", &be1])?.0);
    at(6.0);
    topo.tb.kill("ctrl0");
    start_controller(&mut topo, 0, &shm, &copts)?;
    let restarted_at = now();
    // The first cycle's admin state of be1 (bounded wait for that cycle).
    let admin_of = || metric_of("marllb_backend_admin_state", &be1);
    wait_for(|| admin_of().is_some(), Duration::from_secs(3));
    let admin_after_restart = admin_of();
    ctl(&["show", "backends"])?;

    // Remove be1 once its flows have finished (bounded).
    let drain_done_at = wait_for(
        || metric_of("marllb_backend_active_flows", &be1) == Some(0.0),
        Duration::from_secs(8),
    )
    .map(|_| now());
    let removed_at = match drain_done_at {
        Some(_) => {
            answer_s.push(ctl(&["backend", "remove", &be1])?.0);
            Some(now())
        }
        None => None,
    };

    // A new nginx backend, started now, added with its MAC.
    at(10.0);
    let j = topo.add_backend(added_spec.clone())?;
    let (added_addr, added_mac) = (
        topo.backends[j].spec.addr.to_string(),
        topo.backends[j].mac.clone(),
    );
    let (took, _) = ctl(&[
        "backend",
        "add",
        &format!("{added_addr}:80"),
        "--mac",
        &added_mac,
    ])?;
    answer_s.push(took);
    let added_at = Some(now());
    ctl(&["show", "backends"])?;

    at(15.0);
    topo.tb.kill("ctrl0");
    start_controller(&mut topo, 0, &shm, &copts)?;
    let restarted_again_at = now();
    let (_, shown) = ctl(&["--json", "show", "backends"])?;
    let backends_after_restart: Vec<String> = serde_json::from_str::<serde_json::Value>(&shown)
        .ok()
        .and_then(|v| {
            v["data"].as_array().map(|rows| {
                rows.iter()
                    .filter_map(|r| r["address"].as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default();
    ctl(&["show", "flows"])?;

    let (summary, records) = run.finish(&mut topo, Duration::from_secs(90))?;
    // One cycle (200 ms) plus the client's start-up after a change.
    let settle = 0.5;
    let on = on_backend;
    let new_while_drained = records
        .iter()
        .filter(on("be1"))
        .filter(|r| r.at > drained_at + settle)
        .count();
    let spans = |r: &&Record, t: f64| r.at < t && r.at + r.latency_ms / 1e3 > t;
    let spanning: Vec<&Record> = records
        .iter()
        .filter(on("be1"))
        .filter(|r| spans(r, drained_at) || spans(r, restarted_at))
        .collect();
    let spanning_drain_failed = spanning
        .iter()
        .filter(|r| r.outcome != crate::load::Outcome::Ok)
        .count();
    let new_after_remove = removed_at.map_or(0, |t| {
        records
            .iter()
            .filter(on("be1"))
            .filter(|r| r.at > t)
            .count()
    });
    let on_added: Vec<&Record> = records.iter().filter(on(&added_spec.id)).collect();
    // Of the first 30 connections started after the add's answer (about a
    // second, five cycles), those it got.
    let mut after_add: Vec<&Record> =
        added_at.map_or_else(Vec::new, |t| records.iter().filter(|r| r.at >= t).collect());
    after_add.sort_by(|a, b| a.at.total_cmp(&b.at));
    let added_of_next_30_ = after_add
        .iter()
        .take(30)
        .filter(|r| r.backend.as_deref() == Some(added_spec.id.as_str()))
        .count();
    let first_on_added_s = added_at.and_then(|t| {
        on_added
            .iter()
            .map(|r| r.at - t)
            .filter(|d| *d >= -0.2)
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))))
    });
    let added_after_restart = on_added
        .iter()
        .filter(|r| r.at > restarted_again_at + settle)
        .count();
    let failed_at: Vec<f64> = records
        .iter()
        .filter(|r| r.outcome != crate::load::Outcome::Ok)
        .map(|r| r.at)
        .collect();
    let report = OperatorReport {
        summary,
        failed_at,
        drained_at,
        drain_done_at,
        removed_at,
        added_at,
        restarted_at,
        restarted_again_at,
        answer_s,
        new_while_drained,
        spanning_drain_ok: spanning.len() - spanning_drain_failed,
        spanning_drain_failed,
        admin_after_restart,
        new_after_remove,
        served_by_added: on_added.len(),
        added_of_next_30: added_of_next_30_,
        first_on_added_s,
        backends_after_restart,
        added_after_restart,
    };
    println!("operator scenario: {report:?}");
    Ok(report)
}

/// What the failure scenario measured.
#[derive(Debug, Clone)]
pub struct FailureReport {
    /// The whole run.
    pub summary: Summary,
    /// Failed requests that started outside the backend's outage window.
    pub failed_outside_outage: usize,
    /// Failed requests that started while the controller was dead.
    pub failed_while_ctrl_dead: usize,
    /// Seconds from killing the backend to the controller publishing weight 0.
    pub weight_zero_after_s: Option<f64>,
    /// Seconds from restarting its nginx to it answering a request on its
    /// own address (`None`: it did not within 5 s).
    pub nginx_back_after_s: Option<f64>,
    /// Seconds from restarting it to its published weight above 0 again.
    pub back_weight_after_s: Option<f64>,
    /// Requests the backend answered after it came back.
    pub served_after_return: usize,
    /// The data plane fell back when the controller died, and followed the new one.
    pub watchdog_fell_back: bool,
    /// It followed the restarted controller.
    pub followed_new_controller: bool,
    /// `promtool check metrics` passed.
    pub promtool_ok: bool,
    /// Samples of `marllb_backend_weight` a real Prometheus server scraped.
    pub prometheus_samples: usize,
    /// Points of the fairness index's time series Prometheus returned.
    pub prometheus_fairness_points: usize,
}

/// Records of requests backend `id` answered.
fn on_backend(id: &str) -> impl Fn(&&Record) -> bool + '_ {
    move |r| r.backend.as_deref() == Some(id)
}

/// Sleeps until `s` seconds after `t0` (returns at once if that has passed).
fn sleep_until(t0: Instant, s: f64) {
    if let Some(d) = Duration::from_secs_f64(s).checked_sub(t0.elapsed()) {
        std::thread::sleep(d);
    }
}

/// Seconds until the controller in `ns` publishes weight 0 for backend `addr`
/// (polled every 100 ms, at most `limit`).
fn weight_zero_within(ns: &str, port: u16, addr: &str, limit: Duration) -> Option<f64> {
    use crate::lb::{metrics, per_backend};
    wait_for(
        || {
            metrics(ns, port)
                .map(|m| per_backend(&m, "marllb_backend_weight").get(addr).copied() == Some(0.0))
                .unwrap_or(false)
        },
        limit,
    )
}

/// Seconds until backend `addr`'s published weight is above 0, if within `limit`.
fn weight_positive_within(ns: &str, port: u16, addr: &str, limit: Duration) -> Option<f64> {
    use crate::lb::{metrics, per_backend};
    wait_for(
        || {
            metrics(ns, port)
                .map(|m| {
                    per_backend(&m, "marllb_backend_weight")
                        .get(addr)
                        .is_some_and(|w| *w > 0.0)
                })
                .unwrap_or(false)
        },
        limit,
    )
}

fn wait_for(mut f: impl FnMut() -> bool, limit: Duration) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Scenarios 2, 3 and 6 on one testbed: a backend killed mid-run and brought
/// back; the controller killed with SIGKILL and restarted; the controller's
/// metrics checked by promtool and scraped by a real Prometheus server.
pub fn failures(prefix: &str, dir: &Path) -> Result<FailureReport> {
    use crate::lb::{metrics, start_controller, CtrlOptions};
    let specs = equal_backends(3, 0.2, 8, 128);
    let mut topo = Topology::build(prefix, &specs, 1, dir)?;
    let shm = format!("marllb-{prefix}");
    let log = start_dataplane(
        &mut topo,
        0,
        &LbOptions {
            method: "sed".into(),
            shm: Some(shm.clone()),
            ..LbOptions::default()
        },
    )?;
    let copts = CtrlOptions {
        agent: "sed".into(),
        interval: "200ms".into(),
        ..CtrlOptions::default()
    };
    start_controller(&mut topo, 0, &shm, &copts)?;
    let ns = topo.lbs[0].ns.clone();
    let caps = capacities(&specs);
    let run = start_load(
        &mut topo,
        "load",
        &LoadArgs {
            rate: 30.0,
            loops: 2000000,
            duration: 30.0,
            capacities: caps.parse().map_err(anyhow::Error::msg)?,
            ..LoadArgs::default()
        },
    )?;
    let t0 = Instant::now();
    let at = |s: f64| sleep_until(t0, s);

    // Scenario 6: promtool, then a real Prometheus scraping every second.
    at(2.0);
    let text = metrics(&ns, copts.prometheus_port)?;
    let mfile = dir.join("metrics.txt");
    std::fs::write(&mfile, &text)?;
    let promtool_ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", mfile.display()))
        .status()
        .is_ok_and(|s| s.success());
    let pdir = dir.join("prometheus");
    std::fs::create_dir_all(&pdir)?;
    let pconf = pdir.join("prometheus.yml");
    std::fs::write(
        &pconf,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: marllb\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            copts.prometheus_port
        ),
    )?;
    let (pc, pd) = (
        pconf.to_string_lossy().into_owned(),
        pdir.join("data").to_string_lossy().into_owned(),
    );
    topo.tb.spawn(
        "prometheus",
        &ns,
        "prometheus",
        &[
            &format!("--config.file={pc}"),
            &format!("--storage.tsdb.path={pd}"),
            "--web.listen-address=127.0.0.1:9091",
        ],
        &pdir.join("prometheus.log"),
    )?;

    // Scenario 2: be1 dies at 5 s, comes back at 13 s.
    at(5.0);
    let killed_at = t0.elapsed().as_secs_f64();
    topo.tb.kill("be1-nginx");
    let weight_zero_after_s = weight_zero_within(
        &ns,
        copts.prometheus_port,
        "198.18.2.101",
        Duration::from_secs(8),
    );
    at(13.0);
    let back_at = t0.elapsed().as_secs_f64();
    let b = topo.backends[1].clone();
    let nconf = b.dir.join("nginx.conf");
    topo.tb.spawn(
        "be1-nginx",
        &b.ns,
        "nginx",
        &[
            "-c",
            &nconf.to_string_lossy(),
            "-p",
            &b.dir.to_string_lossy(),
        ],
        &b.dir.join("nginx2.out"),
    )?;
    // Bounded so that the controller's death below stays at 19 s.
    let probe = format!("http://{}/static.html", b.spec.addr);
    let nginx_back_after_s = wait_for(
        || {
            crate::netns::run(
                crate::netns::in_ns(&ns, "curl")
                    .args(["-s", "-o", "/dev/null", "--max-time", "1"])
                    .arg(&probe),
            )
            .is_ok()
        },
        Duration::from_secs(5),
    );
    let back_weight_after_s = weight_positive_within(
        &ns,
        copts.prometheus_port,
        "198.18.2.101",
        Duration::from_secs(5),
    )
    .map(|s| s + nginx_back_after_s.unwrap_or(0.0));
    let weight_back_at = back_at + back_weight_after_s.unwrap_or(f64::INFINITY);

    // Scenario 3: the controller dies at 19 s, a new one starts at 23 s.
    at(19.0);
    let ctrl_dead = t0.elapsed().as_secs_f64();
    topo.tb.kill("ctrl0");
    let dp_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let before = dp_log().matches("watchdog fallback (Stale)").count();
    let watchdog_fell_back = wait_for(
        || dp_log().matches("watchdog fallback (Stale)").count() > before,
        Duration::from_secs(4),
    )
    .is_some();
    at(23.0);
    let ctrl_back = t0.elapsed().as_secs_f64();
    let following = dp_log().matches("following the controller").count();
    start_controller(&mut topo, 0, &shm, &copts)?;
    let followed_new_controller = wait_for(
        || dp_log().matches("following the controller").count() > following,
        Duration::from_secs(5),
    )
    .is_some();

    let (summary, records) = run.finish(&mut topo, Duration::from_secs(90))?;
    // Ask Prometheus's HTTP API: samples of every backend's weight over the
    // run, and the fairness index as a time series (one point per second).
    let prom = |path: &str, params: &[String]| -> serde_json::Value {
        let mut c = crate::netns::in_ns(&ns, "curl");
        c.args(["-s", "-G", "--max-time", "3"]);
        for p in params {
            c.args(["--data-urlencode", p]);
        }
        c.arg(format!("http://127.0.0.1:9091/api/v1/{path}"));
        crate::netns::run(&mut c)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    let num = |v: &serde_json::Value| v.as_str().and_then(|x| x.parse::<f64>().ok());
    let q = prom(
        "query",
        &["query=count_over_time(marllb_backend_weight[2m])".to_string()],
    );
    let weight_samples: Vec<(String, usize)> = q["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["metric"]["backend"].as_str().unwrap_or("?").to_string(),
                num(&r["value"][1]).unwrap_or(0.0) as usize,
            )
        })
        .collect();
    let prometheus_samples = weight_samples.iter().map(|x| x.1).sum();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let q = prom(
        "query_range",
        &[
            "query=marllb_jain_fairness".to_string(),
            format!("start={:.0}", now_s - t0.elapsed().as_secs_f64()),
            format!("end={now_s:.0}"),
            "step=1".to_string(),
        ],
    );
    let fairness_series: Vec<(f64, f64)> = q["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| Some((v[0].as_f64()?, num(&v[1])?)))
        .collect();
    println!(
        "Prometheus: weight samples per backend {weight_samples:?}; fairness index over time ({} points): {}",
        fairness_series.len(),
        fairness_series
            .iter()
            .step_by(5)
            .map(|(t, v)| format!("{:.0}s={v:.3}", t - (now_s - t0.elapsed().as_secs_f64())))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let prometheus_fairness_points = fairness_series.len();
    let outage = |t: f64| t >= killed_at - 1.0 && t <= back_at + 2.0;
    let failed = |r: &&Record| r.outcome != crate::load::Outcome::Ok;
    let failed_outside_outage = records
        .iter()
        .filter(failed)
        .filter(|r| !outage(r.at))
        .count();
    let failed_while_ctrl_dead = records
        .iter()
        .filter(failed)
        .filter(|r| r.at >= ctrl_dead && r.at <= ctrl_back + 2.0)
        .count();
    let served_after_return = records
        .iter()
        .filter(|r| r.at > weight_back_at && r.backend.as_deref() == Some("be1"))
        .count();
    let report = FailureReport {
        summary,
        failed_outside_outage,
        failed_while_ctrl_dead,
        weight_zero_after_s,
        nginx_back_after_s,
        back_weight_after_s,
        served_after_return,
        watchdog_fell_back,
        followed_new_controller,
        promtool_ok,
        prometheus_samples,
        prometheus_fairness_points,
    };
    println!(
        "failures: {} requests, {} ok, {} failed ({} resets); backend be1 killed at {killed_at:.1}s: weight 0 after {:?} s, {} failures outside its outage; back at {back_at:.1}s: served {} requests after; controller SIGKILL at {ctrl_dead:.1}s: watchdog fell back {}, {} failures while it was dead, new controller followed {}; promtool {}; Prometheus samples of the weights {}",
        report.summary.requests,
        report.summary.ok,
        report.summary.failed,
        report.summary.resets,
        report.weight_zero_after_s,
        report.failed_outside_outage,
        report.served_after_return,
        report.watchdog_fell_back,
        report.failed_while_ctrl_dead,
        report.followed_new_controller,
        report.promtool_ok,
        report.prometheus_samples
    );
    Ok(report)
}

/// One connection of the LB-failover scenario, as classified.
#[derive(Debug, Clone)]
pub struct HeldConnection {
    /// Client source port.
    pub sport: u16,
    /// Backend that held it (from the backends' socket tables) before the removal.
    pub backend: String,
    /// LB node that carried it: 0 when node 0 sent a SYN of it to the backend
    /// that holds it (node 0 has a flow entry to that backend), else 1 (the
    /// source MAC of its SYN at the backend).
    pub lb: usize,
    /// Its SYNs (one, unless a retransmission took another path), as the
    /// backends recorded them.
    pub syns: Vec<SynSeen>,
    /// The backend of node 0's flow entry for its 5-tuple left by an earlier
    /// connection on the same client port (node 0 carried that one's SYN), if
    /// that entry still lingers (closing, for 10 s after its end) when this
    /// connection's segments reach node 0.
    pub stale_on_0: Option<String>,
    /// Backend the consistent (Maglev) table gives it (`marllb-dpdk --explain-flows`).
    pub consistent: String,
    /// Predicted to survive: node 0's flow entry from its own SYN sends it
    /// where it is; without one, with flow sync on, always (node 1's record
    /// reached node 0); else a lingering entry of an earlier connection on
    /// the port, or without one node 0's consistent table, does.
    pub predicted_survives: bool,
    /// It completed with a 200 from the backend.
    pub survived: bool,
    /// Seconds from `connect` returning to the start of the route change
    /// (negative: before it), and from the end of the change to the rest of
    /// the request being written (positive: after it).
    pub margins: (f64, f64),
}

/// What scenario 5 measured.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    /// Data-plane method of both nodes.
    pub method: String,
    /// The whole run.
    pub summary: Summary,
    /// Connections established and idle (mid-request) when the node was
    /// removed: `connect` returned before the route change began and the rest
    /// of the request was written after it ended (the load generator's clock
    /// readings against the scenario's, both wall clock).
    pub held: Vec<HeldConnection>,
    /// Failed requests that started within a second before the removal and
    /// were not established at it (mid-handshake when their path changed).
    pub handshake_failures: usize,
    /// Failed requests that were established before the route change and
    /// whose request was in flight while it changed (the rest written before
    /// its end, the answer not yet read at its start): their last segments
    /// took the new path, so they may break like a held connection of node 1,
    /// or the answer may have been read first.
    pub in_flight_failures: usize,
    /// Any other failed request.
    pub other_failures: usize,
}

impl FailoverReport {
    /// Held connections on node `lb`: (count, survived).
    pub fn on(&self, lb: usize) -> (usize, usize) {
        let on: Vec<&HeldConnection> = self.held.iter().filter(|c| c.lb == lb).collect();
        (on.len(), on.iter().filter(|c| c.survived).count())
    }

    /// Held connections whose outcome differs from the prediction.
    pub fn mispredicted(&self) -> usize {
        self.held
            .iter()
            .filter(|c| c.predicted_survives != c.survived)
            .count()
    }
}

/// Client port → backend id for every established connection to port 80 the
/// backends hold now (read from their kernels' socket tables).
fn backend_sockets(topo: &Topology) -> std::collections::BTreeMap<u16, String> {
    let mut out = std::collections::BTreeMap::new();
    for b in &topo.backends {
        let text = crate::netns::run(crate::netns::in_ns(&b.ns, "ss").args([
            "-Htn",
            "state",
            "established",
            "( sport = :80 )",
        ]))
        .unwrap_or_default();
        for line in text.lines() {
            // Recv-Q Send-Q Local:Port Peer:Port
            if let Some(port) = line
                .split_whitespace()
                .nth(3)
                .and_then(|peer| peer.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
            {
                out.insert(port, b.spec.id.clone());
            }
        }
    }
    out
}

/// Makes every backend remember, per LB node, the SYNs that node forwarded:
/// client port and initial sequence number (one element per connection, its
/// retransmitted SYNs included), added with a one-hour timeout so that the
/// time left tells when (an nftables set per node, matched on the frame's
/// source MAC: the node's data interface). With `segments`, also the last
/// time each node forwarded a segment other than a SYN of each client port
/// (the timeout refreshed on every one: [`segments_seen`]). The router's
/// multipath hash cannot be recomputed from outside: for locally originated
/// TCP the kernel hashes the socket's random `txhash`, which survives the
/// veth hop (as a NIC's RSS hash would), not the 5-tuple `ip route get`
/// hashes.
fn record_lb_of_syns(topo: &Topology, segments: bool) -> Result<()> {
    for b in &topo.backends {
        let mut rules = String::from("table inet marllb {\n");
        for i in 0..topo.lbs.len() {
            rules += &format!(
                "  set via{i} {{ typeof tcp sport . tcp sequence; size 65535; flags timeout; timeout {SYN_RECORD_S}s; }}\n"
            );
            if segments {
                rules += &format!(
                    "  set seg{i} {{ typeof tcp sport; size 65535; flags timeout; timeout {SYN_RECORD_S}s; }}\n"
                );
            }
        }
        rules += "  chain pre {\n    type filter hook prerouting priority -300; policy accept;\n";
        for (i, lb) in topo.lbs.iter().enumerate() {
            rules += &format!(
                "    tcp dport 80 tcp flags & (syn | ack) == syn ether saddr {} add @via{i} {{ tcp sport . tcp sequence }}\n",
                lb.data_mac
            );
            if segments {
                rules += &format!(
                    "    tcp dport 80 tcp flags & syn == 0 ether saddr {} update @seg{i} {{ tcp sport timeout {SYN_RECORD_S}s }}\n",
                    lb.data_mac
                );
            }
        }
        rules += "  }\n}\n";
        let f = topo.dir.join(format!("{}-nft.conf", b.spec.id));
        std::fs::write(&f, rules)?;
        crate::netns::run(crate::netns::in_ns(&b.ns, "nft").arg("-f").arg(&f))
            .context("nft (Debian package nftables) records which LB node carried each SYN")?;
    }
    Ok(())
}

/// Client port → the backends that received a segment of it.
pub type Placements = std::collections::BTreeMap<u16, std::collections::BTreeSet<String>>;

/// Makes every backend record the client ports of the TCP segments the LB
/// nodes forward to it, SYNs and the rest ([`record_lb_of_syns`] with
/// segments), for [`placements`].
pub fn record_placements(topo: &Topology) -> Result<()> {
    record_lb_of_syns(topo, true)
}

/// What the backends recorded since [`record_placements`]: for every client
/// port, the backends that got a segment of it through any LB node.
pub fn placements(topo: &Topology) -> Result<Placements> {
    let mut out = Placements::new();
    for b in &topo.backends {
        for i in 0..topo.lbs.len() {
            for set in [format!("via{i}"), format!("seg{i}")] {
                for (port, _) in nft_set_times(&b.ns, &set)? {
                    let port: u16 = port.parse().with_context(|| format!("nft port {port:?}"))?;
                    out.entry(port).or_default().insert(b.spec.id.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Whether each connection's segments all went to one backend, the one that
/// answered it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stickiness {
    /// Answered connections that were the only one of the run on their
    /// client port: every segment of the port reached exactly the backend
    /// that answered.
    pub checked: usize,
    /// Answered connections on a client port that served several (the
    /// client reuses ports; their segments cannot be told apart): every
    /// backend that got a segment of the port answered one of them.
    pub reused_port: usize,
    /// Ports whose segments reached a backend that answered none of their
    /// connections, or several backends for one connection: (client port,
    /// backends that answered, backends that got segments).
    pub split: Vec<(u16, Vec<String>, Vec<String>)>,
    /// Ports of answered connections that no backend recorded.
    pub unplaced: Vec<u16>,
}

impl Stickiness {
    /// Every connection stayed on the backend that answered it.
    pub fn holds(&self) -> bool {
        self.split.is_empty() && self.unplaced.is_empty()
    }
}

/// Checks `records` (one run) against what the backends recorded.
pub fn stickiness(records: &[Record], placed: &Placements) -> Stickiness {
    use std::collections::{BTreeMap, BTreeSet};
    // Client port -> (connections, answered ones, the backends that answered).
    let mut ports: BTreeMap<u16, (usize, usize, BTreeSet<String>)> = BTreeMap::new();
    for r in records {
        let e = ports.entry(r.sport).or_default();
        e.0 += 1;
        if let Some(b) = r
            .backend
            .as_ref()
            .filter(|_| r.outcome == crate::load::Outcome::Ok)
        {
            e.1 += 1;
            e.2.insert(b.clone());
        }
    }
    let mut out = Stickiness::default();
    for (port, (uses, ok, answered)) in ports {
        if answered.is_empty() {
            continue;
        }
        if uses == 1 {
            out.checked += ok;
        } else {
            out.reused_port += ok;
        }
        match placed.get(&port) {
            None => out.unplaced.push(port),
            Some(got) if !got.is_subset(&answered) || (uses == 1 && got.len() > 1) => {
                out.split.push((
                    port,
                    answered.iter().cloned().collect(),
                    got.iter().cloned().collect(),
                ));
            }
            Some(_) => {}
        }
    }
    out
}

/// The elements of a backend's nftables set `name` with the UNIX time each
/// was added or last refreshed: (element's first field, time).
fn nft_set_times(ns: &str, name: &str) -> Result<Vec<(String, f64)>> {
    let listed_at = unix_now();
    // The text listing: JSON rounds the time left to seconds.
    let text = crate::netns::run(
        crate::netns::in_ns(ns, "nft").args(["list", "set", "inet", "marllb", name]),
    )?;
    let Some(elems) = text
        .split_once("elements = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(e, _)| e)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in elems.split(',') {
        // `36170 . 3565843007 expires 59m50s123ms`, or with a timeout of its
        // own `36170 timeout 1h expires 59m50s123ms`
        let w: Vec<&str> = e.split_whitespace().collect();
        let (Some(first), Some(left)) = (
            w.first(),
            w.iter()
                .position(|x| *x == "expires")
                .and_then(|k| w.get(k + 1))
                .and_then(|d| nft_duration(d)),
        ) else {
            bail!("unexpected nft set element {e:?}");
        };
        out.push((first.to_string(), listed_at - (SYN_RECORD_S as f64 - left)));
    }
    Ok(out)
}

/// Client port → (LB node, the last time it forwarded a non-SYN segment of
/// the port to any backend), from [`record_lb_of_syns`]'s `seg` sets.
fn segments_seen(
    topo: &Topology,
    nodes: usize,
) -> Result<std::collections::BTreeMap<u16, Vec<(usize, f64)>>> {
    let mut out: std::collections::BTreeMap<u16, Vec<(usize, f64)>> = Default::default();
    for b in &topo.backends {
        for i in 0..nodes {
            for (port, at) in nft_set_times(&b.ns, &format!("seg{i}"))? {
                let port: u16 = port.parse().with_context(|| format!("nft port {port:?}"))?;
                let v = out.entry(port).or_default();
                match v.iter_mut().find(|(n, _)| *n == i) {
                    Some(e) => e.1 = e.1.max(at),
                    None => v.push((i, at)),
                }
            }
        }
    }
    Ok(out)
}

/// Lifetime of a recorded SYN (longer than any scenario).
const SYN_RECORD_S: u64 = 3600;

/// How long a data plane keeps a flow entry after its FIN or RST (core-nostd's
/// `Timeouts::default().tcp_closing_ns`; the testbed's configs keep it).
const TCP_CLOSING_S: f64 = 10.0;

/// One connection's SYN as a backend saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SynSeen {
    /// LB node that forwarded it.
    pub node: usize,
    /// Backend it went to.
    pub backend: String,
    /// When (UNIX seconds, to about 10 ms: the listing's own duration).
    pub at_unix: f64,
}

/// `59m58s752ms` → seconds.
fn nft_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += match c {
            'd' => n * 86_400.0,
            'h' => n * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                n / 1000.0
            }
            'm' => n * 60.0,
            's' => n,
            _ => return None,
        };
    }
    num.is_empty().then_some(total)
}

/// Client port → every SYN the backends recorded on it (of every connection
/// that used the port in the run: the client reuses ports), oldest first.
fn syns_seen(
    topo: &Topology,
    nodes: usize,
) -> Result<std::collections::BTreeMap<u16, Vec<SynSeen>>> {
    let mut out: std::collections::BTreeMap<u16, Vec<SynSeen>> = Default::default();
    for b in &topo.backends {
        for i in 0..nodes {
            for (port, at_unix) in nft_set_times(&b.ns, &format!("via{i}"))? {
                let port: u16 = port.parse().with_context(|| format!("nft port {port:?}"))?;
                out.entry(port).or_default().push(SynSeen {
                    node: i,
                    backend: b.spec.id.clone(),
                    at_unix,
                });
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by(|x, y| x.at_unix.total_cmp(&y.at_unix));
    }
    Ok(out)
}

/// The backend each client port gets from LB node `i`'s consistent table.
fn consistent_choice(topo: &Topology, i: usize, ports: &[u16]) -> Result<Vec<String>> {
    let flows = topo.dir.join("flows.txt");
    let mut s = String::new();
    for p in ports {
        s += &format!("{CLIENT_ADDR} {p} {} 80 tcp\n", crate::VIP);
    }
    std::fs::write(&flows, s)?;
    let cfg = topo.dir.join(format!("lb{i}")).join("lb.toml");
    let out = crate::netns::run(
        std::process::Command::new(crate::lb::bin("marllb-dpdk")?)
            .arg("--config")
            .arg(&cfg)
            .arg("--explain-flows")
            .arg(&flows),
    )?;
    let v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
        .collect();
    if v.len() != ports.len() {
        bail!(
            "--explain-flows answered {} of {} flows",
            v.len(),
            ports.len()
        );
    }
    Ok(v)
}

/// The client's address (see the topology).
const CLIENT_ADDR: &str = "198.18.1.2";

/// Scenario 5: two LB nodes behind the router's multipath route (L4 hash),
/// each with its own data plane (`method`), controller and agent; mid-run LB
/// node 1 is removed from the route and stopped. Every connection that is
/// established and mid-request at that moment is classified by the node that
/// carried it and the backend the surviving node's consistent table gives it,
/// and its outcome is compared with the prediction.
pub fn lb_failover(prefix: &str, dir: &Path, method: &str, sync: bool) -> Result<FailoverReport> {
    use crate::lb::{start_controller, CtrlOptions};
    let specs = equal_backends(3, 0.3, 16, 512);
    let mut topo = Topology::build(prefix, &specs, 2, dir)?;
    // The client's ports from a narrow range (a connection is open for about
    // 4.3 s, so about 170 are in use at once): ports are reused within the
    // run, so held connections cross the removal on ports earlier
    // connections used. That is the case that needs the prediction's
    // lingering entries and flow sync's closed records.
    topo.tb
        .sysctl(&topo.client, "net.ipv4.ip_local_port_range", "40000 40599")?;
    for i in 0..2 {
        let shm = format!("marllb-{prefix}-{i}");
        start_dataplane(
            &mut topo,
            i,
            &LbOptions {
                method: method.into(),
                shm: Some(shm.clone()),
                sync,
                ..LbOptions::default()
            },
        )?;
        start_controller(&mut topo, i, &shm, &CtrlOptions::default())?;
    }
    record_lb_of_syns(&topo, false)?;
    // MARLLB_CAPTURE=DIR: packet captures of the run on the router's ports.
    let capture = std::env::var_os("MARLLB_CAPTURE").map(|d| PathBuf::from(d).join(method));
    if let Some(d) = &capture {
        topo.capture(d, "tcp port 80 or icmp")?;
    }
    let caps = capacities(&specs);
    // Every connection sends half its request, waits 4 s, sends the rest: the
    // ones opened in the 4 s before the removal cross it established and idle.
    let run = start_load(
        &mut topo,
        "load",
        &LoadArgs {
            rate: 40.0,
            loops: 20000,
            hold: 4.0,
            duration: 12.0,
            timeout: 10,
            capacities: caps.parse().map_err(anyhow::Error::msg)?,
            ..LoadArgs::default()
        },
    )?;
    let t0 = Instant::now();
    sleep_until(t0, 7.0);
    let nodes = topo.lbs.len();
    let mut placed = backend_sockets(&topo);
    // The route change, bracketed by the clock the load generator stamps its
    // records with: a connection is held across it when it was established
    // before `changing` and sent the rest of its request after `changed`.
    let changing = unix_now();
    topo.remove_lb(1)?;
    let changed = unix_now();
    let removed_at = t0.elapsed().as_secs_f64();
    topo.tb.kill("ctrl1");
    topo.tb.kill("lb1");
    // The backend of every held connection, read from the backends' socket
    // tables just before the removal and again after it, for the connections
    // established between the first reading and the change (the held
    // connections send nothing for 4 s).
    std::thread::sleep(Duration::from_millis(300));
    for (p, b) in backend_sockets(&topo) {
        placed.entry(p).or_insert(b);
    }
    println!(
        "t={removed_at:.1}s LB node 1 removed from the route ({:.1} ms) and stopped",
        (changed - changing) * 1e3
    );
    let (summary, records) = run.finish(&mut topo, Duration::from_secs(60))?;
    if let Some(d) = &capture {
        std::fs::write(d.join("records.json"), serde_json::to_string(&records)?)?;
    }

    let established_before = |r: &Record| r.connected_unix.is_some_and(|t| t < changing);
    let is_held =
        |r: &Record| established_before(r) && r.rest_sent_unix.is_some_and(|t| t > changed);
    let in_flight = |r: &Record| {
        established_before(r)
            && r.rest_sent_unix.is_some_and(|t| t <= changed)
            && r.done_unix.is_some_and(|t| t > changing)
    };
    let syns = syns_seen(&topo, nodes)?;
    // Its own SYNs: those sent while it connected (at most the connect
    // timeout before `connect` returned). An earlier connection on the same
    // port ended before this one began; a later one began after it ended.
    let connect_s = crate::load::CONNECT_TIMEOUT.as_secs_f64();
    let own = |r: &Record, v: &[SynSeen]| -> Vec<SynSeen> {
        let c = r.connected_unix.unwrap_or(0.0);
        v.iter()
            .filter(|x| x.at_unix > c - connect_s - 0.5 && x.at_unix < c + 0.5)
            .cloned()
            .collect()
    };
    // The flow entry node 0 may still hold for the port from the latest
    // earlier connection on it whose SYN went through node 0.
    let stale_on_0 = |r: &Record, v: &[SynSeen]| -> Option<String> {
        let c = r.connected_unix?;
        let mut earlier: Vec<&Record> = records
            .iter()
            .filter(|e| e.sport == r.sport && e.done_unix.is_some_and(|d| d < c))
            .collect();
        earlier.sort_by(|a, b| {
            b.done_unix
                .unwrap_or(0.0)
                .total_cmp(&a.done_unix.unwrap_or(0.0))
        });
        earlier.iter().find_map(|e| {
            let ec = e.connected_unix?;
            let x = v.iter().find(|x| {
                x.node == 0 && x.at_unix > ec - connect_s - 0.5 && x.at_unix < ec + 0.5
            })?;
            (r.rest_sent_unix? - e.done_unix? < TCP_CLOSING_S).then(|| x.backend.clone())
        })
    };
    let candidates: Vec<(&Record, String, Vec<SynSeen>, Option<String>)> = records
        .iter()
        .filter(|r| is_held(r))
        .filter_map(|r| {
            let backend = placed.get(&r.sport)?.clone();
            let v = syns.get(&r.sport)?;
            let mine = own(r, v);
            mine.iter()
                .any(|x| x.backend == backend)
                .then(|| (r, backend, mine, stale_on_0(r, v)))
        })
        .collect();
    let ports: Vec<u16> = candidates.iter().map(|(r, ..)| r.sport).collect();
    let consistent = consistent_choice(&topo, 0, &ports)?;
    let held_records: Vec<&Record> = candidates.iter().map(|(r, ..)| *r).collect();
    let mut held = Vec::new();
    for ((r, backend, mine, stale), c) in candidates.into_iter().zip(consistent) {
        // Node 0's own entry for the connection: its own SYN's (all of them
        // hit the first's entry).
        let own0 = mine.iter().find(|x| x.node == 0).map(|x| x.backend.clone());
        // Without one: with sync on, node 1's record (it replaces a lingering
        // closing entry of an earlier connection on the port; a copy of an
        // earlier connection of node 1's was closed by that one's closed
        // record); else the lingering entry, or else node 0's consistent table.
        let predicted_survives = match own0 {
            Some(b) => b == backend,
            None if sync => true,
            None => stale.as_ref().map_or(c == backend, |b| *b == backend),
        };
        held.push(HeldConnection {
            sport: r.sport,
            lb: if mine.iter().any(|x| x.node == 0 && x.backend == backend) {
                0
            } else {
                1
            },
            predicted_survives,
            backend,
            syns: mine,
            stale_on_0: stale,
            consistent: c,
            survived: r.outcome == crate::load::Outcome::Ok,
            margins: (
                r.connected_unix.unwrap_or(0.0) - changing,
                r.rest_sent_unix.unwrap_or(0.0) - changed,
            ),
        });
    }
    // A held connection is one record: its port may have served others.
    let key = |r: &Record| (r.sport, r.connected_unix.map(f64::to_bits));
    let held_keys: std::collections::HashSet<(u16, Option<u64>)> =
        held_records.iter().map(|r| key(r)).collect();
    // Connections that were mid-handshake at the removal (SYN through node 1,
    // handshake ACK to node 0), or mid-request, are neither held nor "other".
    let in_handshake = |r: &Record| r.at > removed_at - 1.0 && r.at < removed_at + 0.5;
    let failed: Vec<&Record> = records
        .iter()
        .filter(|r| r.outcome != crate::load::Outcome::Ok && !held_keys.contains(&key(r)))
        .collect();
    let handshake_failures = failed.iter().filter(|r| in_handshake(r)).count();
    let in_flight_failures = failed
        .iter()
        .filter(|r| !in_handshake(r) && in_flight(r))
        .count();
    let other: Vec<&&Record> = failed
        .iter()
        .filter(|r| !in_handshake(r) && !in_flight(r))
        .collect();
    let report = FailoverReport {
        method: if sync {
            format!("{method}+sync")
        } else {
            method.into()
        },
        summary,
        held,
        handshake_failures,
        in_flight_failures,
        other_failures: other.len(),
    };
    let (n0, s0) = report.on(0);
    let (n1, s1) = report.on(1);
    let agree = report
        .held
        .iter()
        .filter(|c| c.lb == 1 && c.consistent == c.backend)
        .count();
    println!(
        "LB failover ({}): {} requests, {} ok, {} failed ({} resets); held across the removal: \
         {n0} on node 0 ({s0} survived), {n1} on node 1 ({s1} survived; for {agree} of them node 0's \
         consistent table names the backend they were on); outcome differs from the prediction for {}; \
         {} failed mid-handshake at the removal; {} failed mid-request at it; {} other failures; \
         {} held connections on a client port an earlier one had used through node 0 (its flow entry lingering)",
        report.method,
        report.summary.requests,
        report.summary.ok,
        report.summary.failed,
        report.summary.resets,
        report.mispredicted(),
        report.handshake_failures,
        report.in_flight_failures,
        report.other_failures,
        report.held.iter().filter(|c| c.stale_on_0.is_some()).count()
    );
    for c in report.held.iter().filter(|c| c.lb == 1) {
        println!(
            "  sport {:>5}: node 1 → {} ; node 0's consistent table → {} ; predicted {} ; {}",
            c.sport,
            c.backend,
            c.consistent,
            if c.predicted_survives {
                "survives"
            } else {
                "breaks"
            },
            if c.survived { "survived" } else { "broke" }
        );
    }
    for c in report
        .held
        .iter()
        .filter(|c| c.predicted_survives != c.survived)
    {
        let others: Vec<&SynSeen> = syns
            .get(&c.sport)
            .into_iter()
            .flatten()
            .filter(|x| !c.syns.contains(x))
            .collect();
        println!(
            "  MISPREDICTED {c:?}; other connections' SYNs on the port: {others:?}; established \
             {:+.3} s from the route change, rest sent {:+.3} s after it",
            c.margins.0, c.margins.1
        );
    }
    for r in &other {
        println!("  OTHER FAILURE {r:?}");
    }
    Ok(report)
}

/// What the hostile-input scenario measured.
#[derive(Debug, Clone)]
pub struct HostileReport {
    /// The whole run.
    pub summary: Summary,
    /// SYNs the flood sent (hping3's count).
    pub flood_sent: u64,
    /// Connections established before the flood that sent the rest of their
    /// request during it.
    pub held_through_flood: usize,
    /// Of those, how many failed.
    pub held_failed: usize,
    /// Failed requests that started during the flood.
    pub failed_during_flood: usize,
    /// The data plane's totals at exit: flows tracked, flows placed by the
    /// consistent table because their bucket was full, flow-table capacity.
    pub flows_inserted: u64,
    /// See `flows_inserted`.
    pub flows_untracked: u64,
    /// Flow entries per worker (buckets x ways).
    pub table_capacity: u64,
    /// Seconds from stopping the backend to its weight 0.
    pub silent_weight_zero_after_s: Option<f64>,
    /// Requests that started after it was taken out and before it resumed,
    /// and how many of them it was given.
    pub while_out: (usize, usize),
    /// Failed requests that started while it was out of service.
    pub failed_while_out: usize,
    /// Failed requests outside the window in which they could have been on
    /// the silent backend (the whole run, the flood included).
    pub failed_elsewhere: usize,
    /// Seconds from resuming the backend to a weight above 0 again (its
    /// active checks' rise count, then the first slow-start cycle).
    pub back_after_s: Option<f64>,
    /// Requests it answered that started after its weight was above 0 again.
    pub served_after_resume: usize,
}

/// Bad input from outside on a running testbed: a SYN flood from spoofed
/// sources big enough to fill the flow table, then a backend that accepts
/// connections and never answers (its nginx stopped with SIGSTOP: the kernel
/// still completes handshakes into its listen queue).
pub fn hostile(prefix: &str, dir: &Path) -> Result<HostileReport> {
    use crate::lb::{start_controller, CtrlOptions};
    let specs = equal_backends(3, 0.3, 16, 512);
    let mut topo = Topology::build(prefix, &specs, 1, dir)?;
    let shm = format!("marllb-{prefix}");
    let buckets = 4096u32;
    let log = start_dataplane(
        &mut topo,
        0,
        &LbOptions {
            method: "sed".into(),
            shm: Some(shm.clone()),
            buckets,
            ..LbOptions::default()
        },
    )?;
    let copts = CtrlOptions::default();
    start_controller(&mut topo, 0, &shm, &copts)?;
    let ns = topo.lbs[0].ns.clone();
    let caps = capacities(&specs);
    // Every request holds its connection open 3 s before finishing it.
    let run = start_load(
        &mut topo,
        "load",
        &LoadArgs {
            rate: 20.0,
            loops: 20000,
            hold: 3.0,
            duration: 50.0,
            timeout: 20,
            capacities: caps.parse().map_err(anyhow::Error::msg)?,
            ..LoadArgs::default()
        },
    )?;
    let t0 = Instant::now();
    let at = |s: f64| sleep_until(t0, s);

    // The flood: 60 000 SYNs to the VIP from a spoofed neighbour address (its
    // SYN-ACKs die unanswered at the router), one per 40 µs at most (hping3
    // manages about 6 000 to 9 000 per second here).
    at(3.0);
    let flood_start = t0.elapsed().as_secs_f64();
    let client = topo.client.clone();
    let flood = crate::netns::in_ns(&client, "hping3")
        .args([
            "-q",
            "-S",
            "-p",
            "80",
            "-a",
            "198.18.1.77",
            "-c",
            "60000",
            "-i",
            "u40",
            crate::VIP,
        ])
        .output()
        .context("running hping3 (apt-get install hping3)")?;
    let flood_end = t0.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&flood.stdout),
        String::from_utf8_lossy(&flood.stderr)
    );
    let flood_sent = text
        .lines()
        .find_map(|l| {
            l.split(" packets transmitted")
                .next()
                .filter(|_| l.contains("packets transmitted"))
        })
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "t={flood_end:.1}s SYN flood done: {flood_sent} SYNs in {:.1} s",
        flood_end - flood_start
    );

    // The silent backend: be2's nginx stopped (after the flood's connections
    // have finished, so that the two phases do not mix).
    at(20.0);
    let stopped_at = t0.elapsed().as_secs_f64();
    topo.tb.signal("be2-nginx", "STOP");
    let silent_weight_zero_after_s = weight_zero_within(
        &ns,
        copts.prometheus_port,
        "198.18.2.102",
        Duration::from_secs(8),
    );
    let out_at = t0.elapsed().as_secs_f64();
    at(28.0);
    let resumed_at = t0.elapsed().as_secs_f64();
    topo.tb.signal("be2-nginx", "CONT");
    // Back in service once the rise count of active checks passed and the
    // first slow-start cycle published a weight above 0 -- or, when the
    // passive signal also ejected it (handshake timeouts of the connections
    // it held while silent), once its hold (10 s) ended. The load runs to
    // t=50 s, so that it has several seconds of new flows to take after.
    let back_after_s = weight_positive_within(
        &ns,
        copts.prometheus_port,
        "198.18.2.102",
        Duration::from_secs(15),
    );
    let back_at = resumed_at + back_after_s.unwrap_or(f64::INFINITY);
    let (summary, records) = run.finish(&mut topo, Duration::from_secs(90))?;
    // A clean stop writes the data plane's totals.
    topo.tb.signal("lb0", "TERM");
    let _ = topo.tb.wait("lb0", Duration::from_secs(10));
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("lb0").join("stats.json")).with_context(|| {
            format!(
                "no stats.json; data plane log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?,
    )?;
    let get = |k: &str| {
        stats
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };

    let failed = |r: &&Record| r.outcome != crate::load::Outcome::Ok;
    let held: Vec<&Record> = records
        .iter()
        .filter(|r| r.at < flood_start && r.at + 3.0 > flood_start + 0.5)
        .collect();
    let held_failed = held.iter().filter(|r| failed(r)).count();
    let failed_during_flood = records
        .iter()
        .filter(failed)
        .filter(|r| r.at >= flood_start && r.at <= flood_end)
        .count();
    let out: Vec<&Record> = records
        .iter()
        .filter(|r| r.at > out_at + 0.5 && r.at < resumed_at)
        .collect();
    let while_out = (
        out.len(),
        out.iter()
            .filter(|r| r.backend.as_deref() == Some("be2"))
            .count(),
    );
    let failed_while_out = out.iter().filter(|r| failed(r)).count();
    // Requests that may fail: those on the silent backend before it was
    // taken out (in flight when it stopped, or sent to it until the health
    // check caught it; held 3 s, so started up to 3.5 s before the stop).
    let silent_window = |t: f64| t > stopped_at - 3.5 && t <= out_at + 0.5;
    let failed_elsewhere = records
        .iter()
        .filter(|r| failed(r) && !silent_window(r.at))
        .count();
    let served_after_resume = records
        .iter()
        .filter(|r| r.at > back_at && r.backend.as_deref() == Some("be2"))
        .count();
    let report = HostileReport {
        summary,
        flood_sent,
        held_through_flood: held.len(),
        held_failed,
        failed_during_flood,
        flows_inserted: get("flows_inserted"),
        flows_untracked: get("flows_untracked"),
        table_capacity: u64::from(buckets) * 4,
        silent_weight_zero_after_s,
        while_out,
        failed_while_out,
        failed_elsewhere,
        back_after_s,
        served_after_resume,
    };
    println!(
        "hostile: {} requests, {} ok, {} failed; SYN flood of {} at t={flood_start:.1}s: {} connections held through it, {} failed; {} failures among requests started during it; flows tracked {} (table {} per worker), placed untracked {}; be2 silent at t={stopped_at:.1}s: weight 0 after {:?} s; {} requests while it was out, {} sent to it, {} failed; resumed at t={resumed_at:.1}s, weight above 0 after {:?} s, served {} after; {} failures outside the silent backend's window",
        report.summary.requests,
        report.summary.ok,
        report.summary.failed,
        report.flood_sent,
        report.held_through_flood,
        report.held_failed,
        report.failed_during_flood,
        report.flows_inserted,
        report.table_capacity,
        report.flows_untracked,
        report.silent_weight_zero_after_s,
        report.while_out.0,
        report.while_out.1,
        report.failed_while_out,
        report.back_after_s,
        report.served_after_resume,
        report.failed_elsewhere
    );
    Ok(report)
}

/// What the capacity-drop scenario measured.
#[derive(Debug, Clone)]
pub struct CapacityDropReport {
    /// The backend whose CPU quota was cut.
    pub slowed: String,
    /// The cut (factor on its configured quota).
    pub factor: f64,
    /// When it was cut and restored (scheduled, seconds into the replay).
    pub schedule: (f64, f64),
    /// Per policy, in order: the run and its phases (before, during, after).
    pub runs: Vec<(crate::demo::PolicyRun, Vec<crate::demo::PhaseStats>)>,
}

impl CapacityDropReport {
    /// Failed requests of `run` that the drop does not explain: anything but a
    /// client timeout (a request that waited `timeout_s` on the slowed
    /// backend) of a request started while the quota was cut.
    pub fn unexpected_failures(run: &crate::demo::PolicyRun, timeout_s: f64) -> Vec<&Record> {
        let (cut, restored) = match run.events.as_slice() {
            [a, b] => (a.at, b.at),
            _ => (f64::INFINITY, f64::INFINITY),
        };
        run.records
            .iter()
            .filter(|r| r.outcome != crate::load::Outcome::Ok)
            .filter(|r| {
                let explained = r.outcome == crate::load::Outcome::Timeout
                    && r.at >= cut
                    && r.at < restored
                    && r.latency_ms >= timeout_s * 1e3 * 0.9;
                !explained
            })
            .collect()
    }
}

/// The policies the capacity-drop scenario compares, as [`crate::demo`] names
/// them: SED over the configured weights (controller agent `wcmp`, the data
/// plane's SED), adaptive SED, and the shipped learned policy `es` (through
/// the data plane's SED).
pub const CAPACITY_DROP_POLICIES: [&str; 3] = ["sed", "adaptive-sed", "es"];

/// Scenario 7 (issue 13, part 6): the same 36 s replay of `rate_150` over the
/// seven moderate backends (4 × 0.1 CPU, 3 × 0.2) under each of
/// [`CAPACITY_DROP_POLICIES`]; 12 s in, the CPU quota of be4 (a large backend)
/// is cut to 0.25× (its configured weight stays what it was), at 24 s it is
/// restored. Per phase: latency, and the requests and controller weight the
/// slowed backend got. `prefix` is at most 7 characters (one testbed per
/// policy, `prefix` + its index).
pub fn capacity_drop(prefix: &str, dir: &Path, root: &Path) -> Result<CapacityDropReport> {
    use crate::demo::{phases, print_phase_table, print_table, run_policy, CapacityEvent};
    let (slowed, factor, cut, restore) = (4usize, 0.25, 12.0, 24.0);
    let mut o = crate::demo::DemoOptions::new(root);
    o.duration = 36.0;
    o.live = false;
    // About two thirds of the pool's capacity (the demo's 0.4 is about 85 %),
    // so that the pool without three quarters of be4 (0.15 of 1.0 CPU) is
    // loaded but not saturated whatever the policy.
    o.work_scale = 0.3;
    o.capacity_events = vec![
        CapacityEvent {
            at: cut,
            backend: slowed,
            factor,
        },
        CapacityEvent {
            at: restore,
            backend: slowed,
            factor: 1.0,
        },
    ];
    let mut runs = Vec::new();
    for (i, p) in CAPACITY_DROP_POLICIES.iter().enumerate() {
        let run = run_policy(&format!("{prefix}{i}"), &dir.join(p), &o, p)?;
        runs.push(run);
    }
    let id = format!("be{slowed}");
    print_table(&runs);
    print_phase_table(&runs);
    let mut out = Vec::new();
    for run in runs {
        let ph = phases(&run);
        let get = |name: &str| ph.iter().find(|p| p.name == name);
        let mut line = format!("RESULT agent={} ctrl_agent={}", run.policy, run.agent);
        for name in ["before", "during", "after"] {
            if let Some(p) = get(name) {
                line += &format!(
                    " {name}_p95_ms={:.1} {name}_p99_ms={:.1}",
                    p.summary.latency_p95_ms, p.summary.latency_p99_ms
                );
            }
        }
        for name in ["before", "during", "after"] {
            if let Some(p) = get(name) {
                line += &format!(
                    " slowed_share_{name}={:.3} slowed_weight_share_{name}={:.3}",
                    p.share(&id),
                    p.weight_share.get(&id).copied().unwrap_or(f64::NAN)
                );
            }
        }
        line += &format!(
            " requests={} failed={} overload={}",
            run.summary.requests, run.summary.failed, run.summary.overload
        );
        println!("{line}");
        out.push((run, ph));
    }
    Ok(CapacityDropReport {
        slowed: id,
        factor,
        schedule: (cut, restore),
        runs: out,
    })
}

#[cfg(test)]
mod tests {
    use super::nft_duration;

    #[test]
    fn nft_times_left_parse() {
        assert_eq!(nft_duration("59m58s752ms"), Some(3598.752));
        assert_eq!(nft_duration("1h"), Some(3600.0));
        assert_eq!(nft_duration("2s"), Some(2.0));
        assert_eq!(nft_duration("59m"), Some(3540.0));
        assert_eq!(nft_duration("12"), None);
        assert_eq!(nft_duration("3x"), None);
    }

    #[test]
    fn stickiness_flags_split_and_unplaced_connections() {
        use super::{stickiness, Placements};
        use crate::load::Record;
        let rec = |sport: u16, b: &str, outcome: &str| -> Record {
            serde_json::from_str(&format!(
                r#"{{"at":1,"latency_ms":5,"outcome":"{outcome}","backend":"{b}","sport":{sport}}}"#
            ))
            .expect("record")
        };
        let placed: Placements = [
            (1000, vec!["be0"]),
            (1001, vec!["be0", "be1"]),
            (1002, vec!["be1"]),
            (1004, vec!["be0", "be1"]),
            (1005, vec!["be0", "be2"]),
        ]
        .into_iter()
        .map(|(p, v)| (p, v.into_iter().map(String::from).collect()))
        .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let records = [
            rec(1000, "be0", "ok"),
            // Segments at two backends.
            rec(1001, "be0", "ok"),
            // Answered by be0, recorded only at be1.
            rec(1002, "be0", "ok"),
            // Not recorded at all.
            rec(1003, "be2", "ok"),
            // Two connections on one port, one on each backend it reached.
            rec(1004, "be1", "ok"),
            rec(1004, "be0", "ok"),
            // Two on one port, both answered by be0, and be2 got segments.
            rec(1005, "be0", "ok"),
            rec(1005, "be0", "ok"),
        ];
        let st = stickiness(&records, &placed);
        assert_eq!(st.checked, 4);
        assert_eq!(st.reused_port, 4);
        assert_eq!(
            st.split,
            [
                (1001, s(&["be0"]), s(&["be0", "be1"])),
                (1002, s(&["be0"]), s(&["be1"])),
                (1005, s(&["be0"]), s(&["be0", "be2"])),
            ]
        );
        assert_eq!(st.unplaced, [1003]);
        assert!(!st.holds());
        let st = stickiness(&records[..1], &placed);
        assert!(st.holds() && st.checked == 1, "{st:?}");
        let st = stickiness(&records[4..6], &placed);
        assert!(st.holds() && st.reused_port == 2, "{st:?}");
    }
}

/// One connection held across a change of the BGP scenario.
#[derive(Debug, Clone)]
pub struct CarriedConnection {
    /// Client source port.
    pub sport: u16,
    /// The LB node its SYN went through: the node that placed it.
    pub placed_by: usize,
    /// The backend it was placed on (its SYN's destination).
    pub backend: String,
    /// The LB nodes that forwarded its segments after the change (the rest of
    /// its request, its ACKs, its FIN), as the backends recorded them.
    pub after: Vec<usize>,
    /// It completed with a 200 from the backend.
    pub survived: bool,
}

impl CarriedConnection {
    /// A node other than the one that placed it carried it after the change.
    pub fn moved(&self) -> bool {
        self.after.iter().any(|&n| n != self.placed_by)
    }
}

/// The connections held across one change: established before it began,
/// the rest of the request written after it ended.
#[derive(Debug, Clone, Default)]
pub struct HeldAcross {
    /// What changed.
    pub change: String,
    /// Each held connection.
    pub connections: Vec<CarriedConnection>,
    /// Held connections whose SYN no backend recorded (not classified).
    pub unplaced: usize,
}

impl HeldAcross {
    fn tally<'a>(it: impl Iterator<Item = &'a CarriedConnection>) -> (usize, usize) {
        it.fold((0, 0), |(n, ok), c| (n + 1, ok + usize::from(c.survived)))
    }

    /// (held, survived) of those placed by `node`.
    pub fn placed_by(&self, node: usize) -> (usize, usize) {
        Self::tally(self.connections.iter().filter(|c| c.placed_by == node))
    }

    /// (held, survived) of those another node carried after the change.
    pub fn moved(&self) -> (usize, usize) {
        Self::tally(self.connections.iter().filter(|c| c.moved()))
    }

    /// (held, survived) of those the node that placed them still carried.
    pub fn stayed(&self) -> (usize, usize) {
        Self::tally(self.connections.iter().filter(|c| !c.moved()))
    }

    /// (held, survived) of all.
    pub fn all(&self) -> (usize, usize) {
        Self::tally(self.connections.iter())
    }

    fn print(&self) {
        let (n, ok) = self.all();
        let (m, mok) = self.moved();
        let (st, sok) = self.stayed();
        println!(
            "held across {}: {n} ({ok} survived); moved to another node {m} ({mok} survived), \
             stayed {st} ({sok} survived); {} without a recorded SYN",
            self.change, self.unplaced
        );
        for c in &self.connections {
            println!(
                "  sport {:>5}: placed by lb{} on {}, then through {:?}: {}",
                c.sport,
                c.placed_by,
                c.backend,
                c.after.iter().map(|n| format!("lb{n}")).collect::<Vec<_>>(),
                if c.survived { "survived" } else { "BROKE" }
            );
        }
    }
}

/// What the BGP scenario measured.
#[derive(Debug, Clone)]
pub struct BgpReport {
    /// The policy (`demo::policy_setup`'s names: `sed`, `es`, `maglev`, ...).
    pub policy: String,
    /// The agent lb0's controller ran (`marllb_policy_active`).
    pub active_agent: Option<String>,
    /// Seconds from starting lb2 to the router's three next hops.
    pub joined_after_s: Option<f64>,
    /// The whole run.
    pub summary: Summary,
    /// Seconds from the controllers' start to both nodes' next hops.
    pub announced_after_s: f64,
    /// Seconds from SIGKILL of lb0's data plane to its next hop's withdrawal.
    pub withdrawn_after_kill_s: Option<f64>,
    /// Seconds from starting lb0's data plane again to its next hop's return
    /// (the controller attaches the new region, then the rise count).
    pub reannounced_after_s: Option<f64>,
    /// Seconds from stopping lb1's BIRD (SIGSTOP: the session stays open,
    /// keepalives stop) to the router dropping it (the hold time).
    pub dropped_after_bird_stop_s: Option<f64>,
    /// The router's next hops after each step.
    pub next_hops: Vec<Vec<String>>,
    /// Failed requests that started at least 1 s after a route change (its
    /// start and its end) and ended before the next one began (new
    /// connections on a settled route).
    pub failed_on_settled_routes: usize,
    /// Held across lb0's data plane's SIGKILL: established before it, the
    /// rest of the request written after it (lb0's own connections then go
    /// through lb1, from its sync records).
    pub held_across_kill: HeldAcross,
    /// Held across lb0's return (the router moves some of lb1's connections
    /// to the restarted node, which gets their records from lb1's dump when
    /// it sees lb0's new instance).
    pub held_across_return: HeldAcross,
    /// Held across the router dropping lb1 when its BIRD stopped (lb1's
    /// connections go to lb0; lb1's data plane is alive).
    pub held_across_bird_stop: HeldAcross,
    /// Held across lb2 joining (the rehash moves about a third to lb2).
    pub held_across_join: HeldAcross,
    /// SYNs lb0 forwarded after it was announced again (new connections
    /// reach it).
    pub syns_via_returned: usize,
    /// SYNs lb2 forwarded after it joined.
    pub syns_via_joined: usize,
}

/// Issue 15: the VIP announced over BGP by each LB node's controller through
/// its BIRD, the router's one multipath route following the nodes: a data
/// plane SIGKILLed (withdrawn), started again (announced again by the same
/// controller), a BIRD that stops answering (dropped after the hold time), a
/// third node joining. Flow-state sync between the nodes (not with Maglev,
/// the reference: every node computes the same placement); every connection
/// held across each change is followed (the node that placed it, the
/// backend, the nodes that carried it after, its outcome).
pub fn bgp(prefix: &str, dir: &Path, policy: &str) -> Result<BgpReport> {
    use crate::lb::{start_controller, CtrlOptions};
    use crate::topology::Routing;
    use std::net::Ipv4Addr;
    // The shipped learned policy serves 7 backends (the MARLLB moderate mix
    // of the demo); the same backends for every policy.
    let specs = crate::demo::backends(7, 0.2, 8);
    // Three nodes: lb2 joins (data plane, controller) while connections are held.
    let mut topo = Topology::build_with(prefix, &specs, 3, dir, Routing::Bgp)?;
    record_lb_of_syns(&topo, true)?;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let (method, agent, model) = crate::demo::policy_setup(policy, &models)?;
    // Maglev, the reference, without sync: every node computes the same
    // placement.
    let sync = method != "maglev";
    let dp_opts = |i: usize| LbOptions {
        method: method.clone(),
        shm: Some(format!("marllb-{prefix}-{i}")),
        sync,
        ..LbOptions::default()
    };
    let start_node = |topo: &mut Topology, i: usize| -> Result<()> {
        start_dataplane(topo, i, &dp_opts(i))?;
        let speaker = topo.lbs[i]
            .bgp
            .clone()
            .context("a BGP topology has a speaker per LB node")?;
        let copts = CtrlOptions {
            agent: agent.clone(),
            model: model.clone(),
            interval: "100ms".into(),
            extra: speaker.ctrl_flags(),
            prometheus_port: 9090,
            ..CtrlOptions::default()
        };
        start_controller(topo, i, &format!("marllb-{prefix}-{i}"), &copts)?;
        Ok(())
    };
    let started = Instant::now();
    for i in 0..2 {
        start_node(&mut topo, i)?;
    }
    let hop = |i: u8| Ipv4Addr::new(198, 18, 2, 200 + i);
    let mut next_hops = Vec::new();
    let mut record_hops = |topo: &Topology| {
        let h = topo.vip_next_hops().unwrap_or_default();
        println!("router: VIP next hops {h:?}");
        next_hops.push(h.iter().map(ToString::to_string).collect::<Vec<_>>());
    };
    topo.wait_vip_next_hops(&[hop(0), hop(1)], Duration::from_secs(20))?;
    let announced_after_s = started.elapsed().as_secs_f64();
    record_hops(&topo);
    // The agent computing lb0's weights (a refused model would show its
    // fallback here).
    let active_agent = crate::lb::metrics(&topo.lbs[0].ns, 9090)
        .ok()
        .and_then(|m| {
            m.lines()
                .filter(|l| l.starts_with("marllb_policy_active{") && l.ends_with(" 1"))
                .find_map(|l| {
                    l.split("agent=\"")
                        .nth(1)?
                        .split('"')
                        .next()
                        .map(String::from)
                })
        });

    let caps = capacities(&specs);
    // Every connection sends half its request, waits 2 s, sends the rest.
    let run = start_load(
        &mut topo,
        "load",
        &LoadArgs {
            rate: 20.0,
            loops: 20000,
            hold: 2.0,
            duration: 27.0,
            timeout: 10,
            capacities: caps.parse().map_err(anyhow::Error::msg)?,
            ..LoadArgs::default()
        },
    )?;
    let t0 = Instant::now();
    let now = || t0.elapsed().as_secs_f64();
    // Scenario times of the route changes (for "settled"), and each change's
    // UNIX bracket with the last-segment records read after it.
    let mut changes = Vec::new();
    let mut brackets: Vec<(String, f64, f64, SegmentTimes)> = Vec::new();
    let wait = |topo: &Topology, want: &[Ipv4Addr], s: u64| {
        topo.bracket_vip_next_hops(want, Duration::from_secs(s))
            .ok()
    };

    sleep_until(t0, 4.0);
    changes.push(now());
    let killed_unix = unix_now();
    topo.tb.kill("lb0");
    let withdrawn = wait(&topo, &[hop(1)], 10);
    let withdrawn_after_kill_s = withdrawn.map(|c| c.waited.as_secs_f64());
    changes.push(now());
    record_hops(&topo);
    sleep_until(t0, 7.7);
    brackets.push((
        "lb0's SIGKILL".into(),
        killed_unix,
        killed_unix,
        segments_seen(&topo, 3)?,
    ));

    sleep_until(t0, 8.0);
    changes.push(now());
    let restart = Instant::now();
    start_dataplane(&mut topo, 0, &dp_opts(0))?;
    let back = wait(&topo, &[hop(0), hop(1)], 15);
    let reannounced_after_s = back.map(|_| restart.elapsed().as_secs_f64());
    changes.push(now());
    record_hops(&topo);
    sleep_until(t0, 11.7);
    if let Some(c) = back {
        brackets.push((
            "lb0's return".into(),
            c.before_unix,
            c.after_unix,
            segments_seen(&topo, 3)?,
        ));
    }

    sleep_until(t0, 12.0);
    changes.push(now());
    topo.tb.signal("bird-lb1", "STOP");
    let dropped = wait(&topo, &[hop(0)], 10);
    let dropped_after_bird_stop_s = dropped.map(|c| c.waited.as_secs_f64());
    changes.push(now());
    record_hops(&topo);
    if let Some(c) = dropped {
        // The held connections' rest (2 s after connecting) goes by.
        std::thread::sleep(Duration::from_millis(2_700));
        brackets.push((
            "lb1's BIRD stopping".into(),
            c.before_unix,
            c.after_unix,
            segments_seen(&topo, 3)?,
        ));
    }
    topo.tb.signal("bird-lb1", "CONT");
    // lb1's session comes back; then lb2 joins.
    changes.push(now());
    topo.wait_vip_next_hops(&[hop(0), hop(1)], Duration::from_secs(15))?;
    changes.push(now());
    sleep_until(t0, 21.0);
    changes.push(now());
    let join = Instant::now();
    start_node(&mut topo, 2)?;
    let joined = wait(&topo, &[hop(0), hop(1), hop(2)], 15);
    let joined_after_s = joined.map(|_| join.elapsed().as_secs_f64());
    changes.push(now());
    record_hops(&topo);
    if let Some(c) = joined {
        std::thread::sleep(Duration::from_millis(2_700));
        brackets.push((
            "lb2 joining".into(),
            c.before_unix,
            c.after_unix,
            segments_seen(&topo, 3)?,
        ));
    }

    let (summary, records) = run.finish(&mut topo, Duration::from_secs(60))?;
    let failed = |r: &&Record| r.outcome != crate::load::Outcome::Ok;
    let settled = |t: f64| {
        // After the last change plus 1 s, and before the next change minus
        // the longest request (so that it did not cross that change).
        let last = changes
            .iter()
            .copied()
            .filter(|&c| c <= t)
            .fold(None, |_, c| Some(c));
        let next = changes.iter().copied().find(|&c| c > t);
        last.is_none_or(|c| t > c + 1.0) && next.is_none_or(|c| t + 2.5 < c)
    };
    let on_settled: Vec<&Record> = records
        .iter()
        .filter(failed)
        .filter(|r| settled(r.at))
        .collect();
    for r in &on_settled {
        println!(
            "failed on a settled route: started t={:.2}s, {:?} after {:.0} ms",
            r.at, r.outcome, r.latency_ms
        );
    }
    println!("route changes at {changes:.2?}");
    let syns = syns_seen(&topo, 3)?;
    let mut held = brackets
        .iter()
        .map(|(what, start, end, segs)| held_across(what, *start, *end, &records, &syns, segs));
    let mut next_held = || held.next().unwrap_or_default();
    let held_across_kill = next_held();
    let held_across_return = if back.is_some() {
        next_held()
    } else {
        HeldAcross::default()
    };
    let held_across_bird_stop = if dropped.is_some() {
        next_held()
    } else {
        HeldAcross::default()
    };
    let held_across_join = if joined.is_some() {
        next_held()
    } else {
        HeldAcross::default()
    };
    let syns_after = |node: usize, t: Option<f64>| {
        t.map_or(0, |t| {
            syns.values()
                .flatten()
                .filter(|x| x.node == node && x.at_unix > t)
                .count()
        })
    };
    let report = BgpReport {
        policy: policy.into(),
        active_agent,
        joined_after_s,
        summary,
        announced_after_s,
        withdrawn_after_kill_s,
        reannounced_after_s,
        dropped_after_bird_stop_s,
        next_hops,
        failed_on_settled_routes: on_settled.len(),
        syns_via_returned: syns_after(0, back.map(|c| c.after_unix)),
        syns_via_joined: syns_after(2, joined.map(|c| c.after_unix)),
        held_across_kill,
        held_across_return,
        held_across_bird_stop,
        held_across_join,
    };
    for h in [
        &report.held_across_kill,
        &report.held_across_return,
        &report.held_across_bird_stop,
        &report.held_across_join,
    ] {
        h.print();
    }
    println!(
        "bgp scenario ({}): {} requests, {} failed, {} on settled routes; announced after {:.2} s; \
         withdrawn {:?} s after the kill; announced again {:?} s after the restart; dropped {:?} s \
         after BIRD stopped; joined {:?} s after start; new SYNs through lb0 after its return {}, \
         through lb2 after it joined {}",
        report.policy,
        report.summary.requests,
        report.summary.failed,
        report.failed_on_settled_routes,
        report.announced_after_s,
        report.withdrawn_after_kill_s,
        report.reannounced_after_s,
        report.dropped_after_bird_stop_s,
        report.joined_after_s,
        report.syns_via_returned,
        report.syns_via_joined
    );
    Ok(report)
}

/// Client port → (LB node, last non-SYN segment's UNIX time).
type SegmentTimes = std::collections::BTreeMap<u16, Vec<(usize, f64)>>;

/// The connections held across a change from `start` to `end` (UNIX
/// seconds): `connect` returned before `start`, the rest of the request was
/// written after `end`. Each is placed by its own SYN (the last recorded
/// while it connected) and followed by the nodes whose last segment of its
/// port came after the rest was written and before it was done.
fn held_across(
    what: &str,
    start: f64,
    end: f64,
    records: &[Record],
    syns: &std::collections::BTreeMap<u16, Vec<SynSeen>>,
    segs: &SegmentTimes,
) -> HeldAcross {
    let connect_s = crate::load::CONNECT_TIMEOUT.as_secs_f64();
    let mut out = HeldAcross {
        change: what.into(),
        ..HeldAcross::default()
    };
    for r in records {
        let (Some(c), Some(rest)) = (r.connected_unix, r.rest_sent_unix) else {
            continue;
        };
        if !(c < start && rest > end) {
            continue;
        }
        let own = syns.get(&r.sport).and_then(|v| {
            v.iter()
                .rfind(|x| x.at_unix > c - connect_s - 0.5 && x.at_unix < c + 0.5)
        });
        let Some(syn) = own else {
            out.unplaced += 1;
            continue;
        };
        let done = r.done_unix.unwrap_or(f64::MAX);
        let after = segs
            .get(&r.sport)
            .map(|v| {
                v.iter()
                    .filter(|(_, at)| *at > rest - 0.05 && *at < done + 0.5)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        out.connections.push(CarriedConnection {
            sport: r.sport,
            placed_by: syn.node,
            backend: syn.backend.clone(),
            after,
            survived: r.outcome == crate::load::Outcome::Ok,
        });
    }
    out
}
