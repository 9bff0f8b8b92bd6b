//! The scenarios, as library functions that build a testbed, run, print their
//! numbers and return them (the integration tests assert on them; `cargo xtask
//! demo` runs the main one with a live view). One module per scenario; each
//! stands on a [`Bed`] ([`bed`]), drives a background load ([`load_run`]) and
//! reads what the backends recorded ([`recording`]).

pub mod bed;
pub mod bgp_failover;
pub mod capacity_drop;
pub mod failures;
pub mod hostile;
pub mod lb_failover;
pub mod load_run;
pub mod operator;
pub mod recording;
pub mod steady;
pub mod weights_change;

use std::time::{Duration, Instant};

use crate::lb::BackendMetric;

pub use bed::{equal_backends, moderate_backends, Bed, BedBuilder};
pub use bgp_failover::{bgp, BgpReport, CarriedConnection, HeldAcross};
pub use capacity_drop::{
    capacity_drop, capacity_drop_with, CapacityDropReport, CAPACITY_DROP_LINGER,
    CAPACITY_DROP_LINGER_POLICIES, CAPACITY_DROP_POLICIES,
};
pub use failures::{failures, FailureReport};
pub use hostile::{hostile, HostileReport};
pub use lb_failover::{lb_failover, FailoverReport, HeldConnection};
pub use load_run::{start_load, LoadRun};
pub use operator::{operator, OperatorReport};
pub use recording::{placements, stickiness, Placements, Recording, Stickiness, SynSeen};
pub use steady::{steady, SteadyReport, STEADY_POLICIES};
pub use weights_change::{weight_change, WeightChangeReport};

/// Seconds since a scenario's load started: the scenario's timeline.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    /// Starts now.
    fn start() -> Self {
        Self(Instant::now())
    }

    /// Seconds since the start.
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    /// Sleeps until `s` seconds after the start (returns at once if that
    /// has passed).
    fn sleep_until(&self, s: f64) {
        if let Some(d) = Duration::from_secs_f64(s).checked_sub(self.0.elapsed()) {
            std::thread::sleep(d);
        }
    }
}

/// Polls `f` every 100 ms for at most `limit`; the seconds until it held.
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

/// Seconds until node 0's controller publishes a weight for backend `addr`
/// that `ok` accepts (polled every 100 ms, at most `limit`).
fn weight_within(bed: &Bed, addr: &str, ok: impl Fn(f64) -> bool, limit: Duration) -> Option<f64> {
    wait_for(
        || {
            bed.backend_metric(0, BackendMetric::Weight, addr)
                .is_some_and(&ok)
        },
        limit,
    )
}
