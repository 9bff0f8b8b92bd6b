//! Totals over the workers' snapshots: the periodic stats line, the exit summary
//! and the `--stats-json` file.

use std::collections::BTreeMap;

use marllb_core::classify::DropReason;
use marllb_core::telemetry::{GlobalCounters, Telemetry};
use serde::Serialize;

use crate::dpdk::PortStats;
use crate::worker::HostCounters;

/// Per-backend totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendTotals {
    /// Index.
    pub index: usize,
    /// Name from the config.
    pub name: String,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// Flows closed by FIN/RST.
    pub closed_flows: u64,
    /// Flows expired.
    pub expired_flows: u64,
    /// Active flows now.
    pub active_flows: u64,
}

/// Totals over every worker.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Seconds the workers ran.
    pub elapsed_s: f64,
    /// Worker count.
    pub workers: usize,
    /// The core's node-wide counters, summed over the workers (in the JSON as
    /// top-level keys: `rx_packets`, `forwarded`, ...; `to_host` frames are
    /// freed, there is no TAP/KNI).
    #[serde(flatten)]
    pub global: GlobalCounters,
    /// Drops by reason name.
    pub drops: BTreeMap<String, u64>,
    /// Host-side counters.
    pub host: HostCounters,
    /// Per backend.
    pub backends: Vec<BackendTotals>,
    /// Driver counters, per port.
    pub ports: Vec<PortStats>,
    /// Weight updates applied.
    pub weight_updates: u64,
    /// Flow-state sync's link (`None`: off).
    pub sync: Option<crate::sync::SyncCounters>,
}

impl Totals {
    /// Sums `snaps` (one telemetry + host counters per worker).
    pub fn from_snapshots<'a>(
        snaps: impl IntoIterator<Item = (&'a Telemetry, &'a HostCounters)>,
        names: &[String],
    ) -> Self {
        let mut t = Totals {
            backends: names
                .iter()
                .enumerate()
                .map(|(index, n)| BackendTotals {
                    index,
                    name: n.clone(),
                    ..BackendTotals::default()
                })
                .collect(),
            ..Totals::default()
        };
        let mut drops = [0u64; DropReason::COUNT];
        for (tel, h) in snaps {
            t.workers += 1;
            t.global += &tel.global;
            for (d, s) in drops.iter_mut().zip(tel.drops.iter()) {
                *d += s;
            }
            for (b, c) in t.backends.iter_mut().zip(tel.backends.iter()) {
                b.packets += c.packets;
                b.bytes += c.bytes;
                b.new_flows += c.new_flows;
                b.closed_flows += c.closed_flows;
                b.expired_flows += c.expired_flows;
                b.active_flows += u64::from(c.active_flows);
            }
            t.host.host_dropped += h.host_dropped;
            t.host.tx_dropped += h.tx_dropped;
            t.host.multi_segment_dropped += h.multi_segment_dropped;
            t.host.bursts += h.bursts;
        }
        t.drops = DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), drops[*r as usize]))
            .collect();
        t
    }

    /// The human-readable exit summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let g = &self.global;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "marllb-dpdk summary: {:.3} s, {} worker(s), rx {} ({:.3} Mpps), forwarded {}, replies {}, to_host {} (dropped: no TAP), dropped {}, tx_dropped {}",
            self.elapsed_s,
            self.workers,
            g.rx_packets,
            if self.elapsed_s > 0.0 { g.rx_packets as f64 / self.elapsed_s / 1e6 } else { 0.0 },
            g.forwarded,
            g.replies,
            g.to_host,
            g.dropped,
            self.host.tx_dropped,
        );
        let _ = writeln!(
            s,
            "  flows: inserted {}, untracked {}, maglev_fallback {}, expired {}, rescheduled {}; icmp_errors_forwarded {}, fragments_forwarded {}; weight updates {}",
            g.flows_inserted,
            g.flows_untracked,
            g.maglev_fallback,
            g.flows_expired,
            g.flows_rescheduled,
            g.icmp_errors_forwarded,
            g.fragments_forwarded,
            self.weight_updates
        );
        let _ = writeln!(s, "  per backend (packets / new flows / active):");
        for b in &self.backends {
            let _ = writeln!(
                s,
                "    [{}] {:<20} {:>12} {:>10} {:>8}",
                b.index, b.name, b.packets, b.new_flows, b.active_flows
            );
        }
        let nz: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            s,
            "  drops by reason: {}",
            if nz.is_empty() {
                "none".to_string()
            } else {
                nz.join(" ")
            }
        );
        for (i, p) in self.ports.iter().enumerate() {
            let _ = writeln!(
                s,
                "  port {i}: ipackets {} opackets {} imissed {} ierrors {} oerrors {} rx_nombuf {}",
                p.ipackets, p.opackets, p.imissed, p.ierrors, p.oerrors, p.rx_nombuf
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn totals_sum_every_global_counter() {
        let mut a = Telemetry::new_box_zeroed().expect("alloc");
        let mut b = Telemetry::new_box_zeroed().expect("alloc");
        a.global = GlobalCounters {
            rx_packets: 1,
            forwarded: 2,
            replies: 3,
            to_host: 4,
            dropped: 5,
            flows_inserted: 6,
            flows_untracked: 7,
            maglev_fallback: 8,
            flows_expired: 9,
            icmp_errors_forwarded: 10,
            fragments_forwarded: 11,
            flows_rescheduled: 12,
            sync_made: 13,
            sync_dropped: 14,
            sync_applied: 15,
            sync_refused: 16,
        };
        b.global = a.global;
        let h = HostCounters::default();
        let t = Totals::from_snapshots([(&*a, &h), (&*b, &h)], &[]);
        assert_eq!(t.workers, 2);
        let mut want = a.global;
        want += &b.global;
        assert_eq!(t.global, want);
        // These four were dropped by an earlier copy of the sum.
        assert_eq!(
            (
                t.global.flows_expired,
                t.global.icmp_errors_forwarded,
                t.global.fragments_forwarded,
                t.global.flows_rescheduled
            ),
            (18, 20, 22, 24)
        );
        // `--stats-json` keeps the counters as top-level keys.
        let json = serde_json::to_value(&t).expect("json");
        for (k, v) in [
            ("rx_packets", 2),
            ("flows_untracked", 14),
            ("flows_expired", 18),
            ("flows_rescheduled", 24),
        ] {
            assert_eq!(
                json.get(k).and_then(serde_json::Value::as_u64),
                Some(v),
                "{k}"
            );
        }
        assert!(json.get("_reserved").is_none() && json.get("global").is_none());
        assert!(t.summary().contains("expired 18, rescheduled 24"));
    }
}
