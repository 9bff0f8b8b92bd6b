//! The main lcore's side of flow-state sync (`[sync]`): the workers' records
//! go out through `marllb_host::sync::SyncLink` every turn of the main loop,
//! the peers' records are handed to every worker (which worker a moved
//! connection lands on is the NIC's RSS choice, not known here), and a peer
//! that started again makes every worker dump its established connections,
//! paused while the link's backlog is over half a second
//! ([`Shared::sync_backlogged`]). Bounds and rates: `marllb_host::sync`.

use std::sync::atomic::Ordering;

use marllb_core::sync::SyncRecord;
pub use marllb_host::sync::SyncCounters;
use marllb_host::sync::SyncLink;

use crate::config::SyncSettings;
use crate::worker::Shared;

/// The link and the host's side of it.
#[derive(Debug)]
pub struct HostSync {
    link: SyncLink,
}

impl HostSync {
    /// Binds `s.listen`.
    pub fn bind(s: &SyncSettings, seed: u64) -> std::io::Result<Self> {
        Ok(Self {
            link: SyncLink::bind(s.listen, &s.peers, seed)?.with_rate(s.max_records_per_s),
        })
    }

    /// Counters.
    pub fn counters(&self) -> SyncCounters {
        self.link.counters
    }

    /// One step: sends what the workers made, hands out what the peers sent.
    pub fn step(&mut self, shared: &Shared) {
        let mut out: Vec<SyncRecord> = Vec::new();
        for slot in &shared.slots {
            if let Ok(mut v) = slot.sync_out.lock() {
                out.append(&mut v);
            }
        }
        self.link.send(&out);
        shared
            .sync_backlogged
            .store(self.link.backlogged(), Ordering::Release);
        let mut got = Vec::new();
        if self.link.receive(&mut got) {
            shared.sync_dump.fetch_add(1, Ordering::AcqRel);
        }
        if got.is_empty() {
            return;
        }
        let mut inboxes: Vec<_> = shared
            .slots
            .iter()
            .filter_map(|slot| slot.sync_in.lock().ok())
            .collect();
        self.link
            .deliver(&got, inboxes.iter_mut().map(|g| &mut **g));
    }
}
