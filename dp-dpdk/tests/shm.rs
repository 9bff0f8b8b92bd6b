//! The controller link: marllb-dpdk creates the shared-memory region, a
//! controller (this test, through marllb-shm's controller API) attaches, checks
//! the configuration, reads the stats frames, publishes weights; the watchdog
//! falls back when the controller's heartbeat stops and follows it again when it
//! resumes; shutdown marks the region closed. Every wait probes the region
//! (the watchdog state each worker publishes in its stats head), not the log.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use marllb_core::service::AdminState;
use marllb_core::WEIGHT_ONE;
use marllb_shm::dataplane::FallbackReason;
use marllb_shm::layout::WatchdogStats;
use marllb_shm::validate::Expect;
use marllb_shm::{ConfigImage, Controller, ShmRegion};

/// Polls `probe` every 20 ms until it gives a value or `limit` passes.
fn probe_until<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Worker 0's watchdog state as its stats head shows it.
fn watchdog(ctrl: &Controller<'_>) -> Option<WatchdogStats> {
    ctrl.read_stats_head(0, 100).ok().map(|h| h.watchdog)
}

const CONFIG: &str = r#"
[service]
method = "alias"
encap = "l2dsr"
flow_table_buckets = 4096

[egress]
src_mac = "02:00:00:00:00:aa"
src_v4 = "198.18.0.1"

[[vip]]
address = "198.18.255.1"
protocol = "tcp"
port = 80

[[backend]]
name = "b0"
address = "198.18.2.100"
mac = "02:00:00:00:01:00"
weight = 1.0

[[backend]]
name = "b1"
address = "198.18.2.101"
mac = "02:00:00:00:01:01"
weight = 1.0

[[backend]]
name = "b2"
address = "198.18.2.102"
mac = "02:00:00:00:01:02"
weight = 1.0
"#;

#[test]
#[ignore = "needs root (DPDK EAL, network namespaces): cargo xtask test runs it as root"]
fn controller_attaches_publishes_and_the_watchdog_follows_its_heartbeat() {
    require_root("shm");
    let dir = scratch("shm");
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let name = format!("marllb-test-{}", std::process::id());
    let mut cmd = Command::new(BIN);
    cmd.args(eal_base("shm"))
        .args(["--vdev", "net_null0"])
        .arg("--")
        .arg("--config")
        .arg(&cfg)
        .args([
            "--shm",
            &name,
            "--period-ms",
            "100",
            "--heartbeat-timeout-ms",
            "500",
        ])
        .args(["--idle-sleep-us", "200", "--print-every-ms", "0"]);
    let mut lb = Lb::spawn(cmd);
    // Ready when the region can be attached with the configuration's shape.
    let region = probe_until(Duration::from_secs(20), || {
        ShmRegion::attach(
            &name,
            &Expect {
                backend_count: Some(3),
                worker_count: Some(1),
            },
        )
        .ok()
    })
    .expect("the region was not created");
    // Starts in fallback: no controller yet.
    let probe_ctrl = Controller::new(region.view(), std::process::id());
    assert!(
        probe_until(Duration::from_secs(5), || watchdog(&probe_ctrl)
            .filter(|w| w.fallback_active != 0)
            .map(|_| ()))
        .is_some(),
        "no fallback before a controller attached"
    );
    // A controller with the wrong expectations is refused with a clear message.
    let wrong = ShmRegion::attach(
        &name,
        &Expect {
            backend_count: Some(4),
            worker_count: None,
        },
    )
    .expect_err("backend count mismatch");
    assert!(wrong.to_string().contains("backend"), "{wrong}");

    let view = region.view();
    let mut image = <ConfigImage as zerocopy::FromZeros>::new_zeroed();
    view.config_into(&mut image);
    let ours: Vec<IpAddr> = ["198.18.2.100", "198.18.2.101", "198.18.2.102"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(image.diff_backends(&ours).count(), 0);
    let other: Vec<IpAddr> = ["198.18.2.100", "198.18.2.109", "198.18.2.102"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(image.diff_backends(&other).count(), 1);

    let mut ctrl = Controller::new(region.view(), std::process::id());
    // Stats frames arrive and advance (net_null delivers packets continuously).
    let h1 = ctrl.read_stats_head(0, 100).expect("stats");
    std::thread::sleep(Duration::from_millis(400));
    let h2 = ctrl.read_stats_head(0, 100).expect("stats");
    assert!(
        h2.window_seq > h1.window_seq,
        "{} -> {}",
        h1.window_seq,
        h2.window_seq
    );
    assert!(h2.global.rx_packets > h1.global.rx_packets);
    assert_eq!(h2.n_backends, 3);
    assert!(h2.watchdog.fallback_active != 0);

    // Publish weights and beat: the data plane follows the controller.
    let epoch = ctrl
        .publish(
            &[WEIGHT_ONE, 2 * WEIGHT_ONE, 3 * WEIGHT_ONE],
            &[AdminState::Active; 3],
        )
        .expect("publish");
    let beating = AtomicBool::new(true);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let c = Controller::new(region.view(), std::process::id());
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) {
                if beating.load(Ordering::Relaxed) {
                    n += 1;
                    c.heartbeat(n);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let following = || {
            probe_until(Duration::from_secs(5), || {
                watchdog(&probe_ctrl).filter(|w| w.fallback_active == 0 && w.applied_epoch >= epoch)
            })
        };
        let checks = || {
            let w = following().expect("the data plane did not take the controller's weights");
            let exits = w.fallback_exits;

            // The controller stalls: fallback within the timeout (plus a period or two).
            beating.store(false, Ordering::Relaxed);
            let t = std::time::Instant::now();
            assert!(
                probe_until(Duration::from_secs(5), || watchdog(&probe_ctrl).filter(
                    |w| {
                        w.fallback_active != 0 && w.fallback_reason == FallbackReason::Stale as u32
                    }
                ))
                .is_some(),
                "no fallback (stale heartbeat) after the heartbeat stopped"
            );
            eprintln!(
                "fallback {} ms after the last heartbeat",
                t.elapsed().as_millis()
            );
            std::thread::sleep(Duration::from_millis(300));
            let h3 = ctrl.read_stats_head(0, 100).expect("stats");
            assert!(h3.watchdog.fallback_active != 0);

            // It comes back: the controller's weights again.
            beating.store(true, Ordering::Relaxed);
            let back = following().expect("the data plane did not follow the controller again");
            assert!(back.fallback_exits > exits, "{back:?}");
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks));
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    });
    assert!(lb.stop(Duration::from_secs(20)), "clean shutdown");
    assert!(
        region.view().closed(),
        "the region is marked closed at shutdown"
    );
    drop(region);
    assert!(
        !std::path::Path::new(&format!("/dev/shm/{name}")).exists(),
        "the data plane removes its region"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
