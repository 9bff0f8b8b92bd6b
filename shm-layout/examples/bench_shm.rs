//! Cost of the shared-memory protocol next to a plain memcpy of the same bytes,
//! in one run, interleaved rounds, medians.
//!
//! `cargo run --release -p marllb-shm --example bench_shm [-- BACKENDS]`
//!
//! * publish: one worker publishes one stats frame (head + BACKENDS backends'
//!   counters and reservoirs) under its sequence lock;
//! * read: the controller reads that frame back (validated);
//! * weights_update: the controller publishes a weight vector and the data plane
//!   polls, reads, validates and takes it;
//! * memcpy: `copy_from_slice` of as many bytes as the stats frame publishes.

#[cfg(not(loom))]
fn main() {
    bench::run();
}

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
mod bench {
    use std::hint::black_box;
    use std::time::Instant;

    use marllb_core::service::AdminState;
    use marllb_core::telemetry::Telemetry;
    use marllb_core::WEIGHT_ONE;
    use marllb_shm::dataplane::backend_offset;
    use marllb_shm::layout::StatsFrame;
    use marllb_shm::*;
    use zerocopy::FromZeros;

    const ROUNDS: usize = 41;
    const ITERS: usize = 2000;

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn time(mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..ITERS {
            f();
        }
        t.elapsed().as_nanos() as f64 / ITERS as f64
    }

    pub fn run() {
        let n: usize = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(16)
            .clamp(1, 256);
        let mut cfg = ConfigImage::new_zeroed();
        cfg.n_backends = n as u32;
        let mut o = CreateOptions::new(&format!("marllb-bench-{}", std::process::id()));
        o.replace = true;
        let region = match ShmRegion::create(&o, &cfg) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bench_shm: {e}");
                std::process::exit(1);
            }
        };
        let view = region.view();
        let mut ctl = Controller::new(view, std::process::id());
        let mut dp = DataPlane::new(&view, DataPlaneConfig::default());
        let (Some(mut publisher), Ok(mut t), Ok(mut out)) = (
            StatsPublisher::new(&view, 0, 0),
            Telemetry::new_box_zeroed(),
            StatsFrame::new_box_zeroed(),
        ) else {
            eprintln!("bench_shm: setup failed");
            std::process::exit(1);
        };
        for b in 0..n as u16 {
            for k in 0..200u32 {
                t.packet(b, 100 + k, k * 7 + 1, || 0);
            }
        }
        let status = dp.status();
        let bytes = backend_offset(n);
        let src = vec![0x5au8; bytes];
        let mut dst = vec![0u8; bytes];
        let admin = vec![AdminState::Active; n];
        let mut weights = vec![WEIGHT_ONE; n];
        let mut now = 1u64;

        let (mut p, mut r, mut w, mut m) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            // Rotate the order so no measurement always runs first.
            for k in 0..4 {
                match (round + k) % 4 {
                    0 => p.push(time(|| {
                        now += 1;
                        black_box(publisher.publish(now, &t, &status));
                    })),
                    1 => r.push(time(|| {
                        black_box(ctl.read_stats(0, &mut out, 4).ok());
                    })),
                    2 => w.push(time(|| {
                        now += 1;
                        weights[0] = WEIGHT_ONE + (now as u32 & 0xff);
                        ctl.heartbeat(now);
                        black_box(ctl.publish(&weights, &admin).ok());
                        black_box(dp.poll(now).vector.epoch);
                    })),
                    _ => m.push(time(|| {
                        dst.copy_from_slice(black_box(&src));
                        black_box(&mut dst);
                    })),
                }
            }
        }
        if out.head.n_backends as usize != n {
            eprintln!(
                "bench_shm: read back {} backends, expected {n}",
                out.head.n_backends
            );
            std::process::exit(1);
        }
        let (p, r, w, m) = (
            median(&mut p),
            median(&mut r),
            median(&mut w),
            median(&mut m),
        );
        println!(
            "backends {n}: stats frame {bytes} bytes, weights frame {} bytes",
            std::mem::size_of::<WeightsFrame>()
        );
        println!("publish/memcpy {:.2}x, read/memcpy {:.2}x", p / m, r / m);
        println!(
            "RESULT publish_ns={p:.0} read_ns={r:.0} weights_update_ns={w:.0} memcpy_ns={m:.0}"
        );
    }
}
