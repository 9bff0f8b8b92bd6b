//! A backend server: an Apache-like worker pool and backlog in front of
//! processor-sharing CPUs.
//!
//! Up to `workers` jobs run at once and share `cpus` CPUs equally, where
//! `cpus` is what the operator configured, `speed` how fast the machine really
//! is relative to that, and `factor` a time-varying multiplier such as a noisy
//! neighbour. How one job uses the CPUs is the [`ServerModel`]: on
//! [`ServerModel::Cores`] a job runs on at most one CPU (rate `speed · factor ·
//! min(1, cpus / running)` nominal CPU seconds per second: a lone job is as
//! fast on a small server as on a large one), on [`ServerModel::Quota`] the
//! running jobs share the whole capacity (rate `speed · factor · cpus /
//! running`: a CPU quota such as a cgroup's, where a lone request on a
//! 0.1-CPU backend takes twice as long as on a 0.2-CPU one). Up to `backlog` more
//! wait in FIFO order for a worker; a job that finds both full is rejected (the
//! client sees a refused connection).
//!
//! Processor sharing is simulated with a virtual clock: `vclock` is the service
//! every running job has received since the server started, so a job admitted at
//! virtual time `v` with size `s` finishes when `vclock` reaches `v + s`, and only
//! the smallest finishing virtual time matters for the next event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// How a job uses a server's CPUs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerModel {
    /// Parallel CPUs; a job runs on at most one (a VM or host with `cpus`
    /// cores and single-threaded requests). The simulator's original model.
    #[default]
    Cores,
    /// One pool of `cpus` CPUs shared by the running jobs, a lone job using
    /// all of it (a cgroup CPU quota, the testbed's backends).
    Quota,
}

impl ServerModel {
    /// The share of a CPU each of `jobs` running jobs holds on a server of
    /// `cpus` CPUs: the one rule the servers run and the oracle predicts with.
    pub fn share(self, cpus: f64, jobs: f64) -> f64 {
        match self {
            ServerModel::Cores if jobs <= cpus => 1.0,
            ServerModel::Cores => cpus / jobs,
            ServerModel::Quota => cpus / jobs.max(1.0),
        }
    }
}

impl std::str::FromStr for ServerModel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cores" => Ok(Self::Cores),
            "quota" => Ok(Self::Quota),
            _ => Err(format!("bad server model {s:?}: expected cores or quota")),
        }
    }
}

/// Static description of a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSpec {
    /// CPUs as configured by the operator (SED's and WCMP's weight).
    pub cpus: f64,
    /// True speed of each CPU relative to nominal: the real capacity is
    /// `cpus · speed` nominal CPU seconds per second.
    pub speed: f64,
    /// Worker pool size (Apache `MaxRequestWorkers`).
    pub workers: usize,
    /// Backlog (listen queue) size.
    pub backlog: usize,
    /// How a job uses the CPUs.
    pub model: ServerModel,
}

impl ServerSpec {
    /// Apache-like defaults: 32 workers, backlog 128.
    pub fn apache(cpus: f64) -> Self {
        Self {
            cpus,
            speed: 1.0,
            workers: 32,
            backlog: 128,
            model: ServerModel::Cores,
        }
    }
}

/// A job at a server.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Which LB node placed it.
    pub lb: u16,
    /// Arrival time, s.
    pub arrival: f64,
    /// Arrival time in core ticks (for telemetry).
    pub created_tick: u32,
    /// Work, CPU seconds.
    pub size: f64,
}

/// Dynamic state of a server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Its description.
    pub spec: ServerSpec,
    /// Current capacity multiplier (capacity events, noisy neighbours), 1 at start.
    pub factor: f64,
    vclock: f64,
    last_t: f64,
    /// Running jobs by finishing virtual time (bits of a non-negative f64) and slot.
    running: BinaryHeap<Reverse<(u64, u32)>>,
    slots: Vec<Option<Job>>,
    free: Vec<u32>,
    waiting: VecDeque<Job>,
    /// CPU seconds delivered so far.
    pub busy: f64,
    /// Bumped whenever the next completion time may have changed.
    pub version: u64,
}

impl Server {
    /// An idle server.
    pub fn new(spec: ServerSpec) -> Self {
        Self {
            spec,
            factor: 1.0,
            vclock: 0.0,
            last_t: 0.0,
            running: BinaryHeap::with_capacity(spec.workers),
            slots: Vec::with_capacity(spec.workers),
            free: Vec::new(),
            waiting: VecDeque::with_capacity(spec.backlog),
            busy: 0.0,
            version: 0,
        }
    }

    /// Jobs running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Jobs in the system (running and waiting).
    pub fn in_system(&self) -> usize {
        self.running.len() + self.waiting.len()
    }

    /// Share of a CPU each running job holds.
    fn share(&self) -> f64 {
        self.spec
            .model
            .share(self.spec.cpus, self.running.len() as f64)
    }

    /// Nominal CPU seconds per second each running job receives.
    fn rate(&self) -> f64 {
        self.share() * self.spec.speed * self.factor
    }

    /// True capacity now, nominal CPU seconds per second.
    pub fn capacity(&self) -> f64 {
        self.spec.cpus * self.spec.speed * self.factor
    }

    /// Advances the virtual clock to time `t`.
    pub fn advance(&mut self, t: f64) {
        let dt = t - self.last_t;
        if dt > 0.0 && !self.running.is_empty() {
            let share = self.share();
            self.vclock += dt * share * self.spec.speed * self.factor;
            self.busy += dt * share * self.running.len() as f64;
        }
        self.last_t = self.last_t.max(t);
    }

    /// Changes the capacity multiplier at time `t` (jobs keep the service they
    /// received; the next completion moves).
    pub fn set_factor(&mut self, t: f64, factor: f64) {
        self.advance(t);
        self.factor = factor.max(1e-6);
        self.version += 1;
    }

    fn start(&mut self, job: Job) {
        let finish = self.vclock + job.size;
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(x) = self.slots.get_mut(s as usize) {
                    *x = Some(job);
                }
                s
            }
            None => {
                self.slots.push(Some(job));
                (self.slots.len() - 1) as u32
            }
        };
        self.running
            .push(Reverse((finish.max(0.0).to_bits(), slot)));
    }

    /// Admits a job at time `t` (call [`Self::advance`] first); false if rejected.
    pub fn arrive(&mut self, job: Job) -> bool {
        if self.running.len() < self.spec.workers {
            self.start(job);
        } else if self.waiting.len() < self.spec.backlog {
            self.waiting.push_back(job);
            return true; // the running set, hence the next completion, is unchanged
        } else {
            return false;
        }
        self.version += 1;
        true
    }

    /// Time of the next completion, if any job runs.
    pub fn next_completion(&self) -> Option<f64> {
        let Reverse((v, _)) = self.running.peek()?;
        let left = (f64::from_bits(*v) - self.vclock).max(0.0);
        Some(self.last_t + left / self.rate())
    }

    /// Removes every job finished by now (call [`Self::advance`] first), starts
    /// waiting jobs on the freed workers, and hands each finished job to `done`.
    pub fn complete(&mut self, mut done: impl FnMut(Job)) {
        // Relative tolerance for the float error of the virtual clock.
        let eps = 1e-9 * self.vclock.abs().max(1.0);
        while let Some(Reverse((v, slot))) = self.running.peek().copied() {
            if f64::from_bits(v) > self.vclock + eps {
                break;
            }
            self.running.pop();
            if let Some(job) = self.slots.get_mut(slot as usize).and_then(Option::take) {
                self.free.push(slot);
                done(job);
            }
            if let Some(next) = self.waiting.pop_front() {
                self.start(next);
            }
        }
        self.version += 1;
    }

    /// Every job in the system (running first, then waiting).
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.slots.iter().flatten().chain(self.waiting.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: f64) -> Job {
        Job {
            lb: 0,
            arrival: 0.0,
            created_tick: 0,
            size,
        }
    }

    #[test]
    fn processor_sharing_two_jobs_one_cpu() {
        let mut s = Server::new(ServerSpec::apache(1.0));
        s.advance(0.0);
        assert!(s.arrive(job(1.0)));
        assert!(s.arrive(job(2.0)));
        // Both run at rate 1/2: the short one ends at t = 2, the long one at 3.
        let t1 = s.next_completion().expect("running");
        assert!((t1 - 2.0).abs() < 1e-12);
        s.advance(t1);
        let mut n = 0;
        s.complete(|_| n += 1);
        assert_eq!(n, 1);
        let t2 = s.next_completion().expect("running");
        assert!((t2 - 3.0).abs() < 1e-12);
        assert!((s.busy - 2.0).abs() < 1e-12);
    }

    #[test]
    fn speed_and_factor_scale_the_service() {
        let mut s = Server::new(ServerSpec {
            speed: 0.5,
            ..ServerSpec::apache(1.0)
        });
        s.advance(0.0);
        assert!(s.arrive(job(1.0)));
        // Half speed: one nominal CPU second takes two seconds.
        assert!((s.next_completion().expect("running") - 2.0).abs() < 1e-12);
        // At t = 1 half the work is done; the factor halves the speed again.
        s.set_factor(1.0, 0.5);
        assert!((s.next_completion().expect("running") - 3.0).abs() < 1e-12);
        assert!((s.capacity() - 0.25).abs() < 1e-12);
        s.advance(3.0);
        // The CPU was occupied for the whole 3 s.
        assert!((s.busy - 3.0).abs() < 1e-12);
    }

    #[test]
    fn backlog_then_rejection() {
        let spec = ServerSpec {
            cpus: 2.0,
            speed: 1.0,
            workers: 2,
            backlog: 1,
            model: ServerModel::Cores,
        };
        let mut s = Server::new(spec);
        assert!(s.arrive(job(1.0)));
        assert!(s.arrive(job(1.0)));
        assert!(s.arrive(job(1.0)));
        assert!(!s.arrive(job(1.0)));
        assert_eq!(s.in_system(), 3);
        // Two CPUs: the two running jobs end at t = 1; the waiting one starts then.
        let t = s.next_completion().expect("running");
        assert!((t - 1.0).abs() < 1e-12);
        s.advance(t);
        let mut n = 0;
        s.complete(|_| n += 1);
        assert_eq!((n, s.running(), s.in_system()), (2, 1, 1));
        assert!((s.next_completion().expect("running") - 2.0).abs() < 1e-12);
    }

    #[test]
    fn a_quota_gives_a_lone_job_the_whole_capacity() {
        let quota = |cpus| ServerSpec {
            model: ServerModel::Quota,
            ..ServerSpec::apache(cpus)
        };
        // A lone 1-CPU-second job: 0.5 s on two CPUs of quota, 2 s on half a
        // CPU; on cores it takes 1 s on any server with a CPU or more.
        for (spec, t) in [
            (quota(2.0), 0.5),
            (quota(0.5), 2.0),
            (ServerSpec::apache(2.0), 1.0),
            (ServerSpec::apache(0.5), 2.0),
        ] {
            let mut s = Server::new(spec);
            s.advance(0.0);
            assert!(s.arrive(job(1.0)));
            let done = s.next_completion().expect("running");
            assert!((done - t).abs() < 1e-12, "{spec:?}: {done}");
            s.advance(done);
            // Busy CPU seconds: the whole quota for the job's time, or one core.
            let cpus_used = if spec.model == ServerModel::Quota {
                spec.cpus
            } else {
                spec.cpus.min(1.0)
            };
            assert!((s.busy - cpus_used * t).abs() < 1e-12, "{spec:?}");
        }
        // Two jobs on a quota of 2 share it: each at 1 CPU, both end at 1 s.
        let mut s = Server::new(quota(2.0));
        s.advance(0.0);
        assert!(s.arrive(job(1.0)) && s.arrive(job(1.0)));
        assert!((s.next_completion().expect("running") - 1.0).abs() < 1e-12);
    }
}
