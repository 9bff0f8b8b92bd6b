//! The controller link end to end, without VPP: `lb rl shm <name>` creates the
//! region and starts the 200 ms poller; a controller attaches, publishes
//! weights and a heartbeat; the plugin's service takes the weights, and each
//! thread's stats block is published. Then the CLI's show output.

use std::time::{Duration, Instant};

use marllb_core::service::AdminState;
use marllb_core::WEIGHT_ONE;
use marllb_shm::{Controller, Expect, ShmRegion};
use marllb_vpp::cli::{parse_lb, parse_show};
use marllb_vpp::runtime::Runtime;

fn run(rt: &'static Runtime, line: &str) -> Result<String, String> {
    rt.command(parse_lb(line).map_err(|e| e.0)?)
}

/// Removes the region's file under /dev/shm when the test ends, passed or
/// failed (the leaked runtime keeps its mapping; unlinking is still fine).
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
    }
}

#[test]
fn weights_in_stats_out() {
    let rt: &'static Runtime = Box::leak(Box::new(Runtime::new(2)));
    let name = format!("marllb-vpp-test-{}", std::process::id());
    let _unlink = Unlink(name.clone());
    assert!(run(rt, &format!("shm {name}"))
        .unwrap_err()
        .starts_with("configure VIPs and servers first"));
    run(rt, "set-vip 10.0.0.1 protocol tcp port 80 method alias").unwrap();
    run(rt, "set-servers 10.1.0.1 10.1.0.2 10.1.0.3").unwrap();
    run(rt, "enable").unwrap();
    // Threads have a worker once enabled; a frame on thread 1 sees the service.
    assert_eq!(rt.with_worker(1, |_, svc| svc.backends().len()), Some(3));
    let out = run(rt, &format!("shm {name}")).unwrap();
    assert!(out.contains("for 2 threads"), "{out}");
    assert!(run(rt, "shm other").unwrap_err().contains("already linked"));
    assert!(run(rt, "set-servers 10.1.0.9")
        .unwrap_err()
        .contains("fixed while"));

    let region = ShmRegion::attach(&name, &Expect::default()).unwrap();
    let mut ctl = Controller::new(region.view(), std::process::id());
    let weights = [0, 2 * WEIGHT_ONE, 5 * WEIGHT_ONE];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut hb = 0;
    loop {
        hb += 1;
        ctl.publish(&weights, &[AdminState::Active; 3]).unwrap();
        ctl.heartbeat(hb);
        let applied = rt.with_worker(0, |_, svc| {
            svc.backends().iter().map(|b| b.weight).collect::<Vec<_>>()
        });
        let stats = ctl.read_stats_head(1, 8);
        if applied.as_deref() == Some(&weights[..]) && stats.is_ok_and(|h| h.window_seq > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weights {applied:?} not applied / stats not published"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = rt.show(parse_show("stats").unwrap());
    assert!(show.contains("weights from controller"), "{show}");
    assert!(show.contains("10.1.0.3"), "{show}");
    assert!(rt
        .show(parse_show("flows count 3").unwrap())
        .contains("(no flows)"));

    // The controller adds a fourth server and removes the first: the plugin
    // serves the set without a restart, indices kept.
    let mut set = ctl
        .served_set()
        .map_or_else(Vec::new, |s| s.entries().to_vec());
    if set.is_empty() {
        let mut cfg = <marllb_shm::ConfigImage as zerocopy::FromZeros>::new_zeroed();
        ctl.config_into(&mut cfg);
        set = marllb_shm::backend_set::from_config(&cfg)
            .entries()
            .to_vec();
    }
    let mut added = set[2];
    added.addr[3] = 4;
    set.push(added);
    set[0].admin = marllb_shm::layout::admin::REMOVED;
    let v = ctl.publish_set(&set).unwrap();
    ctl.set_backends(4);
    let weights = [WEIGHT_ONE; 4];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        hb += 1;
        ctl.publish(&weights, &[AdminState::Active; 4]).unwrap();
        ctl.heartbeat(hb);
        let served = rt.with_worker(0, |_, svc| {
            let b = svc.backends();
            (
                b.len(),
                b.first().map(|b| b.admin),
                svc.vip(0).map(|v| v.members().to_vec()),
            )
        });
        if ctl.set_answer().applied == v
            && served == Some((4, Some(AdminState::Down), Some(vec![1, 2, 3])))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "set {v} not served: {served:?}, answer {:?}",
            ctl.set_answer()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = rt.show(parse_show("stats").unwrap());
    assert!(
        show.contains("10.1.0.4") && show.contains("#0 (removed)"),
        "{show}"
    );
    // A set readdressing a served index is refused; the plugin keeps serving.
    set[1].addr[3] = 99;
    let bad = ctl.publish_set(&set).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctl.set_answer().refused != bad {
        assert!(Instant::now() < deadline, "{:?}", ctl.set_answer());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ctl.set_answer().applied, v);
    rt.stop_link();
}
