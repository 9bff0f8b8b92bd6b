//! The controller binary against a test data plane and a BIRD stand-in: the
//! VIPs are announced once the data plane is alive (after the rise count),
//! withdrawn when it goes silent or closes its region, and announced again
//! when it moves again or when a data plane
//! starts again under the same region name (the controller attaches the new
//! region by itself).

mod common;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Ctrl, Dp, TempDir};
use marllb_shm::Source;

const LONG: Duration = Duration::from_secs(60);

/// Greets like BIRD, records each command with its time, answers success.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn fake_bird(path: &std::path::Path) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let l = UnixListener::bind(path).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            if s.write_all(b"0001 BIRD 2.0.12 ready.\n").is_err() {
                continue;
            }
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            let cmd = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let code = if cmd.starts_with("enable") {
                "0011"
            } else {
                "0009"
            };
            log2.lock().unwrap().push((Instant::now(), cmd));
            let _ = s.write_all(format!("{code} marllb_vip: done\n").as_bytes());
        }
    });
    log
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn wait_command(log: &Mutex<Vec<(Instant, String)>>, after: usize, cmd: &str) -> (usize, Instant) {
    let t = Instant::now();
    loop {
        if let Some((i, (at, _))) = log
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .skip(after)
            .find(|(_, (_, c))| c == cmd)
        {
            return (i, *at);
        }
        assert!(
            t.elapsed() < LONG,
            "no {cmd:?} after #{after}: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn announced_withdrawn_and_announced_again_across_a_data_plane_restart() {
    let addrs: Vec<Ipv4Addr> = (1..=2).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let dir = TempDir::new("bgp");
    let sock = dir.0.join("bird.ctl");
    let log = fake_bird(&sock);
    let dp = Dp::start_with("bgp", &addrs, 1);
    let name = dp.name.clone();
    let c = Ctrl::start(
        &name,
        &[
            "--agent",
            "sed",
            "--interval",
            "50ms",
            "--control-socket",
            "none",
            "--bgp-socket",
            sock.to_str().unwrap(),
        ],
        "",
    );
    let (i, _) = wait_command(&log, 0, "enable marllb_vip");
    c.wait_metrics(LONG, "announced", |m| {
        m.get("marllb_bgp_announced", &[("vip", "198.18.255.1")]) == Some(1.0)
    });

    // The data plane hangs (its region stays, its heartbeat stops):
    // withdrawn after dp_timeout and the fall count; announced again when it
    // moves again.
    let hung = Instant::now();
    dp.frozen.store(true, std::sync::atomic::Ordering::Relaxed);
    let (k, at) = wait_command(&log, i + 1, "disable marllb_vip");
    eprintln!(
        "withdrawn {:.0} ms after the data plane's heartbeat stopped",
        at.duration_since(hung).as_secs_f64() * 1e3
    );
    dp.frozen.store(false, std::sync::atomic::Ordering::Relaxed);
    let (k, _) = wait_command(&log, k + 1, "enable marllb_vip");

    // The data plane stops (its region closed).
    let died = Instant::now();
    drop(dp);
    let (j, at) = wait_command(&log, k + 1, "disable marllb_vip");
    eprintln!(
        "withdrawn {:.0} ms after the data plane stopped",
        at.duration_since(died).as_secs_f64() * 1e3
    );
    // A data plane starts again under the same name: the controller attaches
    // the new region, publishes to it and announces again.
    let dp = Dp::start_named(name, &addrs, 1);
    let started = Instant::now();
    dp.wait_for(LONG, "the new data plane follows the controller", |a| {
        a.source == Source::Controller
    });
    let (_, at) = wait_command(&log, j + 1, "enable marllb_vip");
    eprintln!(
        "announced again {:.0} ms after the data plane started again",
        at.duration_since(started).as_secs_f64() * 1e3
    );
    assert!(
        c.log_text().contains("region was closed or replaced"),
        "{}",
        c.log_text()
    );
    // A clean stop withdraws.
    let n = log.lock().unwrap().len();
    assert!(c.stop().success());
    wait_command(&log, n, "disable marllb_vip");
}
