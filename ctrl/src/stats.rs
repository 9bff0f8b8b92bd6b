//! Reading every worker's stats frame and merging them per backend.
//!
//! Counters are monotonic per worker: rates are deltas between two cycles (a
//! counter that went backwards, a restarted data plane, counts as 0). Gauges
//! (active flows, half-open) are summed over workers. The reservoirs of the
//! workers' latest windows are concatenated per backend, which is the merge
//! [`marllb_policy::BackendObs`] expects.

use marllb_policy::BackendObs;
use marllb_shm::layout::StatsFrame;
use marllb_shm::Controller;
use zerocopy::FromZeros;

/// Read attempts per worker per cycle before the worker is skipped.
pub const READ_TRIES: u32 = 16;

/// One backend, merged over workers.
#[derive(Clone, Debug, Default)]
pub struct BackendAgg {
    /// Active flows now.
    pub active_flows: u32,
    /// Half-open flows now.
    pub half_open: u32,
    /// Monotonic sums.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// Handshake timeouts.
    pub handshake_timeouts: u64,
    /// Per-cycle deltas.
    pub d_packets: u64,
    /// Bytes this cycle.
    pub d_bytes: u64,
    /// New flows this cycle.
    pub d_new_flows: u64,
    /// Handshake timeouts this cycle.
    pub d_handshake_timeouts: u64,
    /// Flow-duration samples (us).
    pub duration_us: Vec<u32>,
    /// Completion-time samples (us).
    pub fct_us: Vec<u32>,
}

/// Summary of the read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Workers whose frame was read.
    pub workers_read: u32,
    /// Workers that failed (busy, torn, nothing published).
    pub workers_failed: u32,
    /// Some worker reports the data plane in fallback (controller weights not applied).
    pub dp_fallback: bool,
    /// Highest weights epoch applied by a worker.
    pub applied_epoch: u64,
    /// Drops summed over workers, all reasons.
    pub drops: u64,
    /// `no_live_backend` drops summed.
    pub no_live_backend_drops: u64,
}

/// Per-worker frames and per-backend merged values.
#[derive(Debug)]
pub struct StatsReader {
    frames: Vec<Box<StatsFrame>>,
    /// Per-worker previous counters: (packets, bytes, new_flows, handshake_timeouts) per backend.
    prev: Vec<Vec<[u64; 4]>>,
    /// Merged per backend.
    pub backends: Vec<BackendAgg>,
}

impl StatsReader {
    /// For `workers` workers and `backends` backends (a stats frame is about
    /// 560 KiB: each is allocated zeroed on the heap, once).
    pub fn new(workers: u32, backends: usize) -> Result<Self, zerocopy::AllocError> {
        let frames = (0..workers)
            .map(|_| StatsFrame::new_box_zeroed())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StatsReader {
            frames,
            prev: (0..workers).map(|_| vec![[0; 4]; backends]).collect(),
            backends: vec![BackendAgg::default(); backends],
        })
    }

    /// Covers `n` backends from now on (after a backend set changed the
    /// count); new ones start with no history. The data plane's counters of a
    /// reused index continue, so its previous counters are kept.
    pub fn resize(&mut self, n: usize) {
        for p in &mut self.prev {
            p.resize(n, [0; 4]);
        }
        self.backends.resize(n, BackendAgg::default());
    }

    /// Reads every worker and merges. A worker whose read fails contributes
    /// nothing this cycle (its counters are picked up next time).
    pub fn read(&mut self, ctrl: &Controller<'_>) -> ReadSummary {
        let mut sum = ReadSummary::default();
        for b in &mut self.backends {
            b.active_flows = 0;
            b.half_open = 0;
            b.d_packets = 0;
            b.d_bytes = 0;
            b.d_new_flows = 0;
            b.d_handshake_timeouts = 0;
            b.duration_us.clear();
            b.fct_us.clear();
            b.packets = 0;
            b.bytes = 0;
            b.new_flows = 0;
            b.handshake_timeouts = 0;
        }
        let no_live = marllb_core::classify::DropReason::NoLiveBackend as usize;
        for (w, (frame, prev)) in self.frames.iter_mut().zip(&mut self.prev).enumerate() {
            if ctrl.read_stats(w as u32, frame, READ_TRIES).is_err() {
                sum.workers_failed += 1;
                continue;
            }
            sum.workers_read += 1;
            sum.dp_fallback |= frame.head.watchdog.fallback_active != 0;
            sum.applied_epoch = sum.applied_epoch.max(frame.head.watchdog.applied_epoch);
            sum.drops = sum.drops.saturating_add(frame.head.global.dropped);
            sum.no_live_backend_drops = sum
                .no_live_backend_drops
                .saturating_add(frame.head.drops.get(no_live).copied().unwrap_or(0));
            let n = (frame.head.n_backends as usize).min(self.backends.len());
            for ((agg, st), p) in self
                .backends
                .iter_mut()
                .zip(&frame.backends[..n])
                .zip(prev.iter_mut())
            {
                let c = &st.counters;
                agg.active_flows = agg.active_flows.saturating_add(c.active_flows);
                agg.half_open = agg.half_open.saturating_add(c.half_open);
                let cur = [c.packets, c.bytes, c.new_flows, c.handshake_timeouts];
                let d: [u64; 4] = core::array::from_fn(|k| cur[k].saturating_sub(p[k]));
                *p = cur;
                agg.packets = agg.packets.saturating_add(cur[0]);
                agg.bytes = agg.bytes.saturating_add(cur[1]);
                agg.new_flows = agg.new_flows.saturating_add(cur[2]);
                agg.handshake_timeouts = agg.handshake_timeouts.saturating_add(cur[3]);
                agg.d_packets += d[0];
                agg.d_bytes += d[1];
                agg.d_new_flows += d[2];
                agg.d_handshake_timeouts += d[3];
                agg.duration_us
                    .extend_from_slice(st.samples.flow_duration.values());
                agg.fct_us.extend_from_slice(st.samples.fct.values());
            }
        }
        sum
    }

    /// The policy's view of each backend.
    pub fn observations(&self) -> impl Iterator<Item = BackendObs<'_>> {
        self.backends.iter().map(|b| BackendObs {
            duration_us: &b.duration_us,
            fct_us: &b.fct_us,
            active_flows: b.active_flows,
        })
    }
}

/// Mean and 95th percentile (nearest rank) of samples in microseconds, in
/// seconds; sorts `v` in place. `None` when empty.
pub fn mean_p95_s(v: &mut [u32]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mean = v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64;
    let rank = (v.len() * 95).div_ceil(100).saturating_sub(1);
    let p95 = v.get(rank).copied().unwrap_or(0);
    Some((mean * 1e-6, f64::from(p95) * 1e-6))
}

pub use marllb_policy::jain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_and_percentiles() {
        let mut v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        let (m, p) = mean_p95_s(&mut v).expect("samples");
        assert!((m - 0.0505).abs() < 1e-9);
        assert!((p - 0.095).abs() < 1e-9);
        assert!(mean_p95_s(&mut []).is_none());
    }
}
