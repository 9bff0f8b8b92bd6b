//! The data plane's watchdog as its shared-memory region shows it: every
//! worker publishes the node's watchdog state in the head of its stats frame
//! (`marllb_shm::layout::WatchdogStats`), so a scenario probes the state
//! instead of grepping the data plane's log.
//!
//! # Contract
//!
//! Read-only: [`read`] attaches to the region under `/dev/shm` (the testbed
//! shares it with the LB namespaces), reads worker 0's head under its
//! seqlock and writes nothing; the region stays the data plane's and the
//! controller's.

use anyhow::{anyhow, Context, Result};
use marllb_shm::layout::StatsHead;
use marllb_shm::{Expect, FallbackReason, ShmRegion};
use zerocopy::IntoBytes;

/// Seqlock read attempts: a worker publishes its head every few
/// milliseconds, so a few torn reads in a row are the most a probe meets.
const READ_TRIES: u32 = 64;

/// The watchdog state a worker last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// The fallback policy applies.
    pub fallback_active: bool,
    /// Why (`FallbackReason as u32`; 0 while following the controller).
    pub fallback_reason: u32,
    /// Transitions from the controller's weights into the fallback.
    pub fallback_entries: u64,
    /// Transitions back to the controller's weights.
    pub fallback_exits: u64,
}

impl Watchdog {
    /// In the fallback because the controller's heartbeat went stale.
    pub fn stale(&self) -> bool {
        self.fallback_active && self.fallback_reason == FallbackReason::Stale as u32
    }

    /// Following the controller's weights.
    pub fn following(&self) -> bool {
        !self.fallback_active
    }
}

/// Reads the watchdog state of the data plane serving region `shm`.
pub fn read(shm: &str) -> Result<Watchdog> {
    let region = ShmRegion::attach(shm, &Expect::default())
        .with_context(|| format!("attaching shared-memory region {shm}"))?;
    let view = region.view();
    let block = view
        .worker(0)
        .with_context(|| format!("region {shm} has no worker"))?;
    let mut head = StatsHead::default();
    marllb_shm::seqlock::read_bounded(&block.seq, &block.words, head.as_mut_bytes(), READ_TRIES)
        .map_err(|e| anyhow!("reading worker 0's stats head in {shm}: {e}"))?;
    let wd = head.watchdog;
    Ok(Watchdog {
        fallback_active: wd.fallback_active != 0,
        fallback_reason: wd.fallback_reason,
        fallback_entries: wd.fallback_entries,
        fallback_exits: wd.fallback_exits,
    })
}

#[cfg(test)]
mod tests {
    use marllb_core::classify::{Vip, VipProto};
    use marllb_core::rewrite::Encap;
    use marllb_core::select::Method;
    use marllb_core::service::{Backend, Service};
    use marllb_core::telemetry::Telemetry;
    use marllb_core::wire::IpFamily;
    use marllb_core::WEIGHT_ONE;
    use marllb_shm::StatsPublisher;
    use marllb_shm::{ConfigImage, CreateOptions, DpStatus, FallbackReason, ShmRegion};
    use zerocopy::FromZeros;

    /// A region as a one-backend data plane creates it (no root needed).
    fn region(name: &str) -> ShmRegion {
        let mut s = Service::new_box_zeroed().unwrap();
        let b = Backend {
            family: IpFamily::V4,
            addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            mac: [2, 0, 0, 0, 0, 1],
            weight: WEIGHT_ONE,
            base_weight: WEIGHT_ONE,
            ..Backend::default()
        };
        s.set_backends(&[b]).unwrap();
        s.add_vip(
            Vip::v4([192, 0, 2, 1], VipProto::Tcp, 80),
            Method::Sed,
            Encap::L2Dsr,
            &[0],
        )
        .unwrap();
        let mut o = CreateOptions::new(name);
        o.replace = true;
        ShmRegion::create(&o, &ConfigImage::from_service(&s).unwrap()).unwrap()
    }

    #[test]
    fn reads_what_the_data_plane_published() {
        let name = format!("marllb-testbed-wd-{}", std::process::id());
        let r = region(&name);
        // Nothing published yet: an error, not a default state.
        assert!(super::read(&name).is_err());
        let view = r.view();
        let mut p = StatsPublisher::new(&view, 0, 0).unwrap();
        let t = Telemetry::new_box_zeroed().unwrap();
        let mut status = DpStatus::default();
        status.watchdog.fallback_active = 1;
        status.watchdog.fallback_reason = FallbackReason::Stale as u32;
        status.watchdog.fallback_entries = 2;
        status.watchdog.fallback_exits = 1;
        p.publish(10, &t, &status);
        let w = super::read(&name).unwrap();
        assert!(w.stale() && !w.following(), "{w:?}");
        assert_eq!((w.fallback_entries, w.fallback_exits), (2, 1));
        status.watchdog.fallback_active = 0;
        status.watchdog.fallback_reason = FallbackReason::None as u32;
        status.watchdog.fallback_exits = 2;
        p.publish(20, &t, &status);
        let w = super::read(&name).unwrap();
        assert!(w.following() && !w.stale(), "{w:?}");
        assert_eq!(w.fallback_exits, 2);
        assert!(super::read("marllb-testbed-no-such-region").is_err());
    }
}
