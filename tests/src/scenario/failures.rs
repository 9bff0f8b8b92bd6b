//! Scenarios 2, 3 and 6 on one bed: a backend killed and brought back, the
//! controller killed with SIGKILL and restarted, and the controller's metrics
//! checked by promtool and scraped by a real Prometheus server.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{equal_backends, wait_for, weight_within, Bed, Clock};
use crate::lb::{CtrlOptions, LbOptions, Method, PolicyKind};
use crate::load::{LoadArgs, Summary};
use crate::topology::{backend_addr, Process};
use crate::watchdog;

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

/// Scenarios 2, 3 and 6 on one testbed: a backend killed mid-run and brought
/// back; the controller killed with SIGKILL and restarted; the controller's
/// metrics checked by promtool and scraped by a real Prometheus server.
pub fn failures(prefix: &str, dir: &Path) -> Result<FailureReport> {
    let mut bed = Bed::builder(prefix, dir)
        .backends(equal_backends(3, 0.2, 8, 128))
        .dataplane(LbOptions {
            method: Method::Sed,
            ..LbOptions::default()
        })
        .controller(CtrlOptions {
            agent: PolicyKind::Sed,
            interval: Duration::from_millis(200),
            ..CtrlOptions::default()
        })
        .build()?;
    let ns = bed.ns(0);
    let port = bed
        .controller_options()
        .context("the bed has a controller")?
        .prometheus_port;
    let run = bed.start_load(&LoadArgs {
        rate: 30.0,
        loops: 2000000,
        duration: 30.0,
        ..bed.load_args()
    })?;
    let clock = Clock::start();

    // Scenario 6: promtool, then a real Prometheus scraping every second.
    clock.sleep_until(2.0);
    let text = bed.metrics(0)?;
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
            port
        ),
    )?;
    let (pc, pd) = (
        pconf.to_string_lossy().into_owned(),
        pdir.join("data").to_string_lossy().into_owned(),
    );
    bed.topo.tb.spawn(
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
    clock.sleep_until(5.0);
    let killed_at = clock.now();
    bed.kill(Process::Nginx("be1"));
    let weight_zero_after_s =
        weight_within(&bed, &backend_addr(1), |w| w == 0.0, Duration::from_secs(8));
    clock.sleep_until(13.0);
    let back_at = clock.now();
    let b = bed.topo.backends[1].clone();
    b.restart_nginx(&mut bed.topo.tb, &b.dir.join("nginx2.out"))?;
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
    let back_weight_after_s =
        weight_within(&bed, &backend_addr(1), |w| w > 0.0, Duration::from_secs(5))
            .map(|s| s + nginx_back_after_s.unwrap_or(0.0));
    let weight_back_at = back_at + back_weight_after_s.unwrap_or(f64::INFINITY);

    // Scenario 3: the controller dies at 19 s, a new one starts at 23 s.
    clock.sleep_until(19.0);
    let ctrl_dead = clock.now();
    bed.kill(Process::Controller(0));
    // The data plane's watchdog as its region shows it: a new entry into
    // the fallback for a stale heartbeat, then a new exit back to the
    // controller's weights (a probe that cannot read the region counts as
    // neither; the first reading of each must succeed).
    let shm = bed.shm(0).context("the bed has a controller")?;
    let state = || watchdog::read(&shm).ok();
    let entries = watchdog::read(&shm)?.fallback_entries;
    let watchdog_fell_back = wait_for(
        || state().is_some_and(|w| w.fallback_entries > entries && w.stale()),
        Duration::from_secs(4),
    )
    .is_some();
    clock.sleep_until(23.0);
    let ctrl_back = clock.now();
    let exits = watchdog::read(&shm)?.fallback_exits;
    bed.start_controller(0)?;
    let followed_new_controller = wait_for(
        || state().is_some_and(|w| w.fallback_exits > exits && w.following()),
        Duration::from_secs(5),
    )
    .is_some();

    let (summary, records) = run.finish(&mut bed.topo, Duration::from_secs(90))?;
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
            format!("start={:.0}", now_s - clock.now()),
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
            .map(|(t, v)| format!("{:.0}s={v:.3}", t - (now_s - clock.now())))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let prometheus_fairness_points = fairness_series.len();
    let outage = |t: f64| t >= killed_at - 1.0 && t <= back_at + 2.0;
    let failed = || records.iter().filter(|r| r.failed());
    let failed_outside_outage = failed().filter(|r| !outage(r.at)).count();
    let failed_while_ctrl_dead = failed()
        .filter(|r| r.at >= ctrl_dead && r.at <= ctrl_back + 2.0)
        .count();
    let served_after_return = records
        .iter()
        .filter(|r| r.at > weight_back_at && r.served_by("be1"))
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
