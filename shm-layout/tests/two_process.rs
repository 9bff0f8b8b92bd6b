//! Two processes: the child (this test binary re-executed, as the controller)
//! publishes weights every 5 us for about 3 s; the parent (the data
//! plane) reads the whole time. Every vector read must be one whole
//! generation: all weights equal to the value its epoch implies, checksum valid.
//! Prints the write-to-read latency (median, p99).
#![cfg(not(loom))]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use marllb_core::telemetry::Telemetry;
use marllb_shm::layout::{StatsFrame, ValidationStats, WeightsFrame};
use marllb_shm::validate::{validate_weights, WeightVector};
use marllb_shm::*;
use zerocopy::{FromZeros, IntoBytes};

const CHILD_ENV: &str = "MARLLB_SHM_TWO_PROCESS_CHILD";
const BACKENDS: usize = 8;
const RUN: Duration = Duration::from_secs(3);
const PERIOD: Duration = Duration::from_micros(5);

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn weight_for(epoch: u64) -> u32 {
    ((epoch % 4096) as u32 + 1) * 16
}

/// The child's body; a no-op when run as an ordinary test.
#[test]
fn child_publisher() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = ShmRegion::attach(&name, &Expect::default()).unwrap();
    let ctl = Controller::new(r.view(), std::process::id());
    let mut f = WeightsFrame::zeroed();
    f.count = BACKENDS as u32;
    let start = Instant::now();
    let mut epoch = 0u64;
    let mut next = Duration::ZERO;
    while start.elapsed() < RUN {
        // Paced at one frame per PERIOD (a high rate, but with idle time between
        // publications so that latency means something); the reader spins.
        while start.elapsed() < next {
            std::hint::spin_loop();
        }
        next += PERIOD;
        epoch += 1;
        f.epoch = epoch;
        f.weights[..BACKENDS].fill(weight_for(epoch));
        f._reserved0 = wall_ns(); // send time, for the latency measurement
        f.seal();
        ctl.publish_raw(&f);
        ctl.heartbeat(epoch);
        // Also exercise the other direction: read the parent's stats.
        if epoch % 1024 == 0 {
            let _ = ctl.read_stats_head(0, 4);
        }
    }
    println!("child published {epoch} frames");
}

#[test]
fn two_processes_never_see_a_torn_vector() {
    let name = format!("marllb-test-{}-twoproc", std::process::id());
    let cfg = {
        let mut c = ConfigImage::new_zeroed();
        c.n_backends = BACKENDS as u32;
        c
    };
    let mut o = CreateOptions::new(&name);
    o.replace = true;
    let region = ShmRegion::create(&o, &cfg).unwrap();
    let view = region.view();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_publisher",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &name)
        .spawn()
        .unwrap();

    let control = &view.fixed.control;
    let mut dp = DataPlane::new(&view, DataPlaneConfig::default());
    let mut stats = StatsPublisher::new(&view, 0, 1).unwrap();
    let t = Telemetry::new_box_zeroed().unwrap();
    let mut frame = WeightsFrame::zeroed();
    let mut vs = ValidationStats::default();
    let mut vec = WeightVector::new(BACKENDS);
    let (mut reads, mut failed_reads, mut last_epoch) = (0u64, 0u64, 0u64);
    let mut latencies = Vec::with_capacity(1 << 20);
    let clock = Instant::now();
    let status = loop {
        for _ in 0..256 {
            // The raw protocol, with the send time for latency.
            match seqlock::try_read(&control.seq, &control.words, frame.as_mut_bytes()) {
                Ok(_) => {
                    let seen = wall_ns();
                    reads += 1;
                    validate_weights(&frame, &mut vec, &mut vs)
                        .unwrap_or_else(|e| panic!("torn or invalid frame: {e}"));
                    let want = weight_for(frame.epoch);
                    assert!(
                        vec.weights().iter().all(|&w| w == want),
                        "torn vector at epoch {}: {:?}",
                        frame.epoch,
                        vec.weights()
                    );
                    assert!(frame.epoch >= last_epoch, "epoch went backwards");
                    if frame.epoch > last_epoch {
                        last_epoch = frame.epoch;
                        latencies.push(seen.saturating_sub(frame._reserved0));
                    }
                }
                Err(seqlock::ReadError::Empty) => {}
                Err(_) => failed_reads += 1,
            }
            // The data plane's own path: never a torn vector either.
            let p = dp.poll(clock.elapsed().as_nanos() as u64);
            if p.source == Source::Controller {
                let w = p.vector.weights();
                assert!(
                    w.iter().all(|&x| x == w[0]),
                    "poll applied a torn vector: {w:?}"
                );
                assert_eq!(w[0], weight_for(p.vector.epoch));
            }
        }
        stats.maybe_publish(clock.elapsed().as_nanos() as u64, &t, &dp.status());
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(clock.elapsed() < RUN * 10, "child did not finish");
    };
    assert!(status.success(), "child failed: {status}");
    assert!(last_epoch > 1000, "too few publications seen: {last_epoch}");
    let st = dp.status();
    assert_eq!(st.validation.frames_rejected, 0);
    assert_eq!(vs.frames_rejected, 0);

    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "two-process: {reads} whole reads, {failed_reads} busy/torn reads rejected, \
         {} distinct epochs seen of {last_epoch}, data-plane frames applied {}, \
         contention events {}; write->read latency median {} ns, p99 {} ns",
        latencies.len(),
        st.validation.frames_applied,
        st.validation.contention_events,
        q(0.5),
        q(0.99)
    );
    let _ = StatsFrame::new_box_zeroed();
}
