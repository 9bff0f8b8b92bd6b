//! The scenarios, as library functions that build a testbed, run, print their
//! numbers and return them (the integration tests assert on them; `cargo xtask
//! demo` runs the main one with a live view).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backend::BackendSpec;
use crate::lb::{start_dataplane, LbOptions};
use crate::load::{Progress, Record, Summary};
use crate::topology::Topology;

/// Backends of unequal capacity: the MARLLB moderate setting (4 small, 3 large
/// with twice the CPU), scaled to our two cores: `scale` CPUs per small backend.
pub fn moderate_backends(scale: f64, workers: u32) -> Vec<BackendSpec> {
    (0..7)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: format!("198.18.2.{}", 100 + j),
            cpus: if j < 4 { scale } else { 2.0 * scale },
            workers,
            backlog: 128,
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

/// Starts the load generator in the client namespace in the background.
pub fn start_load(topo: &mut Topology, label: &str, args: &[&str]) -> Result<LoadRun> {
    let exe = crate::lb::bin("marllb-loadgen")?;
    let out = topo.dir.join(format!("{label}.out"));
    let records = topo.dir.join(format!("{label}.records.json"));
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend([
        "--progress".into(),
        "--records".into(),
        records.to_string_lossy().into_owned(),
    ]);
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
    let specs: Vec<BackendSpec> = (0..3)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: format!("198.18.2.{}", 100 + j),
            cpus: 0.2,
            workers: 8,
            backlog: 128,
        })
        .collect();
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
        &[
            "--rate",
            "5",
            "--loops",
            "25000000",
            "--duration",
            "9",
            "--capacities",
            &caps,
        ],
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
    use crate::lb::{metrics, per_backend, start_controller, CtrlOptions};
    let specs: Vec<BackendSpec> = (0..3)
        .map(|j| BackendSpec {
            id: format!("be{j}"),
            addr: format!("198.18.2.{}", 100 + j),
            cpus: 0.2,
            workers: 8,
            backlog: 128,
        })
        .collect();
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
        &[
            "--rate",
            "30",
            "--loops",
            "2000000",
            "--duration",
            "30",
            "--capacities",
            &caps,
        ],
    )?;
    let t0 = Instant::now();
    let at = |s: f64| {
        if let Some(d) = Duration::from_secs_f64(s).checked_sub(t0.elapsed()) {
            std::thread::sleep(d);
        }
    };

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
    let be1 = "198.18.2.101".to_string();
    let weight_zero_after_s = wait_for(
        || {
            metrics(&ns, copts.prometheus_port)
                .map(|m| per_backend(&m, "marllb_backend_weight").get(&be1).copied() == Some(0.0))
                .unwrap_or(false)
        },
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
    let q = crate::netns::run(crate::netns::in_ns(&ns, "curl").args([
        "-s",
        "--max-time",
        "3",
        "http://127.0.0.1:9091/api/v1/query?query=count_over_time(marllb_backend_weight[1m])",
    ]))
    .unwrap_or_default();
    let prometheus_samples = q
        .split("\"value\":[")
        .skip(1)
        .filter_map(|v| v.split(',').nth(1))
        .filter_map(|v| {
            v.trim_matches(|c| c == '"' || c == ']' || c == '}')
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as usize)
        .sum();
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
        .filter(|r| r.at > back_at + 3.0 && r.backend.as_deref() == Some("be1"))
        .count();
    let report = FailureReport {
        summary,
        failed_outside_outage,
        failed_while_ctrl_dead,
        weight_zero_after_s,
        served_after_return,
        watchdog_fell_back,
        followed_new_controller,
        promtool_ok,
        prometheus_samples,
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
