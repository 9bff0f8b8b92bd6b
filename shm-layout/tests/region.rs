//! Creating, attaching, validating, publishing and reading through a real
//! `/dev/shm` region.
#![cfg(not(loom))]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use marllb_core::classify::{Vip, VipProto};
use marllb_core::rewrite::Encap;
use marllb_core::select::Method;
use marllb_core::service::{AdminState, Backend, Service};
use marllb_core::telemetry::Telemetry;
use marllb_core::wire::IpFamily;
use marllb_core::WEIGHT_ONE;
use marllb_shm::config::BackendMismatch;
use marllb_shm::layout::{HeaderImage, StatsFrame, WeightsFrame, MAX_WEIGHT};
use marllb_shm::*;
use zerocopy::{FromZeros, IntoBytes};

fn name(tag: &str) -> String {
    format!("marllb-test-{}-{tag}", std::process::id())
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn service(n: usize) -> Box<Service> {
    let mut s = Service::new_box_zeroed().unwrap();
    let backends: Vec<Backend> = (0..n)
        .map(|i| Backend {
            family: IpFamily::V4,
            addr: {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[10, 0, 0, i as u8 + 1]);
                a
            },
            mac: [2, 0, 0, 0, 0, i as u8],
            weight: WEIGHT_ONE,
            base_weight: WEIGHT_ONE,
            ..Backend::default()
        })
        .collect();
    s.set_backends(&backends).unwrap();
    let members: Vec<u16> = (0..n as u16).collect();
    s.add_vip(
        Vip::v4([192, 0, 2, 1], VipProto::Tcp, 80),
        Method::Alias,
        Encap::L2Dsr,
        &members,
    )
    .unwrap();
    s
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn create(tag: &str, n: usize, workers: u32) -> ShmRegion {
    let cfg = ConfigImage::from_service(&service(n)).unwrap();
    let mut o = CreateOptions::new(&name(tag));
    o.workers = workers;
    o.replace = true;
    ShmRegion::create(&o, &cfg).unwrap()
}

#[test]
fn create_then_attach_and_mode() {
    let r = create("mode", 4, 2);
    let meta = std::fs::metadata(r.path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), layout::region_size(2));
    let h: HeaderImage = r.view().header();
    assert_eq!((h.backend_count, h.worker_count), (4, 2));
    assert_eq!(h.creator_pid, std::process::id());

    let a = ShmRegion::attach(
        r.name(),
        &Expect {
            backend_count: Some(4),
            worker_count: Some(2),
        },
    )
    .unwrap();
    assert_eq!(a.view().geometry, r.view().geometry);

    // Nobody replaced it; a creator replacing it is seen by the attacher.
    assert!(!a.is_replaced());
    let mut o2 = CreateOptions::new(r.name());
    o2.replace = true;
    o2.workers = 2;
    let r2 = ShmRegion::create(&o2, &ConfigImage::from_service(&service(4)).unwrap()).unwrap();
    assert!(a.is_replaced());
    drop(a);
    let a = ShmRegion::attach(r2.name(), &Expect::default()).unwrap();
    assert!(!a.is_replaced());
    drop(a);
    drop(r2);
    let r = create("mode", 4, 2);

    // A second creator without `replace` refuses to clobber it.
    let cfg = ConfigImage::from_service(&service(4)).unwrap();
    let e = ShmRegion::create(&CreateOptions::new(r.name()), &cfg).unwrap_err();
    assert!(e.to_string().contains("create /dev/shm/"), "{e}");

    let mut o = CreateOptions::new(&name("group"));
    o.group_access = true;
    o.replace = true;
    let g = ShmRegion::create(&o, &cfg).unwrap();
    let meta = std::fs::metadata(g.path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[test]
fn attach_names_what_mismatched() {
    let r = create("mismatch", 3, 1);
    let e = ShmRegion::attach(
        r.name(),
        &Expect {
            backend_count: Some(4),
            worker_count: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: backend count mismatch: region serves 3 backends, expected 4",
            r.path()
        )
    );
    let e = ShmRegion::attach(
        r.name(),
        &Expect {
            backend_count: None,
            worker_count: Some(2),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("worker count mismatch"), "{e}");

    // Corrupt the layout hash and then the magic, as another build would differ.
    let hash_word = &r.view().fixed.header.image[2];
    let good = hash_word.load(std::sync::atomic::Ordering::Relaxed);
    hash_word.store(good ^ 1, std::sync::atomic::Ordering::Relaxed);
    let e = ShmRegion::attach(r.name(), &Expect::default()).unwrap_err();
    assert!(
        matches!(e.layout(), Some(LayoutError::LayoutHash { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("layout hash mismatch"), "{e}");
    hash_word.store(good, std::sync::atomic::Ordering::Relaxed);
    let magic = &r.view().fixed.header.image[0];
    magic.store(0x1234, std::sync::atomic::Ordering::Relaxed);
    let e = ShmRegion::attach(r.name(), &Expect::default()).unwrap_err();
    assert!(e.to_string().contains("bad magic"), "{e}");
    magic.store(layout::MAGIC, std::sync::atomic::Ordering::Relaxed);

    // A file of the wrong size.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(r.path())
        .unwrap();
    f.set_len(layout::region_size(1) + 64).unwrap();
    let e = ShmRegion::attach(r.name(), &Expect::default()).unwrap_err();
    assert!(
        e.to_string().contains("region size mismatch: file is"),
        "{e}"
    );

    assert!(matches!(
        ShmRegion::attach("a/b", &Expect::default()),
        Err(ShmError::BadName(_))
    ));
    let e = ShmRegion::attach(&name("absent"), &Expect::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("open /dev/shm/marllb-test-"),
        "{e}"
    );
}

#[test]
fn closed_region_is_refused_and_unlinked() {
    let r = create("closed", 2, 1);
    let path = r.path();
    let n = r.name().to_string();
    drop(r);
    assert!(!std::path::Path::new(&path).exists());
    assert!(ShmRegion::attach(&n, &Expect::default()).is_err());
}

#[test]
fn config_diff_names_the_backends() {
    let r = create("diff", 3, 1);
    let a = ShmRegion::attach(r.name(), &Expect::default()).unwrap();
    let ctl = Controller::new(a.view(), 1);
    let mut cfg = ConfigImage::new_zeroed();
    ctl.config_into(&mut cfg);
    assert_eq!(cfg.vips().len(), 1);
    assert_eq!(cfg.vips()[0].port, 80);
    let same: Vec<IpAddr> = (1..=3)
        .map(|i| format!("10.0.0.{i}").parse().unwrap())
        .collect();
    assert_eq!(cfg.diff_backends(&same).count(), 0);
    let other: Vec<IpAddr> = ["10.0.0.1", "10.0.0.9", "10.0.0.3", "10.0.0.4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let d: Vec<BackendMismatch> = cfg.diff_backends(&other).collect();
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0].to_string(),
        "backend 1: data plane has 10.0.0.2, controller has 10.0.0.9"
    );
    assert_eq!(
        d[1],
        BackendMismatch::MissingInRegion {
            index: 3,
            theirs: "10.0.0.4".parse().unwrap()
        }
    );
    let fewer = &same[..2];
    assert!(matches!(
        cfg.diff_backends(fewer).next(),
        Some(BackendMismatch::ExtraInRegion { index: 2, .. })
    ));
}

#[test]
fn weights_flow_to_the_data_plane_and_watchdog_falls_back() {
    let r = create("watchdog", 3, 1);
    let a = ShmRegion::attach(r.name(), &Expect::default()).unwrap();
    let view = r.view();
    let mut dp = DataPlane::new(&view, DataPlaneConfig::default());
    let mut ctl = Controller::new(a.view(), 2);
    let w = WEIGHT_ONE;
    let s = 1_000_000_000u64;

    // No controller yet: equal weights over backends not down.
    let p = dp.poll(s);
    assert_eq!(p.source, Source::Fallback(FallbackReason::NoController));
    assert!(p.changed);
    assert_eq!(p.vector.weights(), &[w, w, w]);

    // Alive but nothing published.
    ctl.heartbeat(1);
    let p = dp.poll(s + 1);
    assert_eq!(p.source, Source::Fallback(FallbackReason::NoValidWeights));

    let up = [AdminState::Active, AdminState::Active, AdminState::Down];
    assert_eq!(ctl.publish(&[3 * w, w, 0], &up), Ok(1));
    let p = dp.poll(s + 2);
    assert_eq!(p.source, Source::Controller);
    assert!(p.changed);
    assert_eq!(p.vector.weights(), &[3 * w, w, 0]);
    assert_eq!(p.vector.epoch, 1);
    let mut svc = service(3);
    assert_eq!(p.apply_to(&mut svc), 0);
    assert_eq!(svc.backend(2).unwrap().admin, AdminState::Down);
    assert_eq!(svc.backend(0).unwrap().weight, 3 * w);
    assert!(!dp.poll(s + 3).changed);

    // The controller's own checks.
    assert_eq!(
        ctl.publish(&[w], &up[..1]),
        Err(PublishError::Length {
            got: 1,
            expected: 3
        })
    );
    assert!(matches!(
        ctl.publish(&[MAX_WEIGHT + 1, w, w], &up),
        Err(PublishError::WeightTooLarge { index: 0, .. })
    ));
    assert_eq!(ctl.publish(&[0, 0, w], &up), Err(PublishError::AllZero));

    // Heartbeat stops: after the timeout, fallback over backends not down.
    let p = dp.poll(s + 2 + 1_000_000_001);
    assert_eq!(p.source, Source::Fallback(FallbackReason::Stale));
    assert!(p.changed);
    assert_eq!(p.vector.weights(), &[w, w, 0]);
    let st = dp.status();
    assert_eq!(
        (st.watchdog.fallback_active, st.watchdog.fallback_entries),
        (1, 1)
    );
    // Heartbeat advances again: controller's weights resume.
    ctl.heartbeat(2);
    let p = dp.poll(s + 3_000_000_000);
    assert_eq!(p.source, Source::Controller);
    assert_eq!(p.vector.weights(), &[3 * w, w, 0]);
    let st = dp.status();
    assert_eq!(
        (st.watchdog.fallback_active, st.watchdog.fallback_exits),
        (0, 1)
    );
    assert_eq!(st.watchdog.applied_epoch, 1);

    // Hostile frames written raw: counted, never applied, never a panic.
    let mut f = WeightsFrame::zeroed();
    f.epoch = 99;
    f.count = 3;
    f.weights[..3].copy_from_slice(&[w, u32::MAX, 0]);
    f.admin[..3].copy_from_slice(&[7, 0, 2]);
    f.seal();
    ctl.publish_raw(&f);
    let p = dp.poll(s + 3_000_000_001);
    assert_eq!(p.vector.weights(), &[w, MAX_WEIGHT, 0]);
    assert_eq!(p.vector.admin()[0], AdminState::Active);
    f.weights[..2].copy_from_slice(&[0, 0]);
    f.seal();
    ctl.publish_raw(&f);
    let p = dp.poll(s + 3_000_000_002);
    assert_eq!(p.vector.weights(), &[w, MAX_WEIGHT, 0]);
    f.count = 300;
    f.weights[1] = w;
    f.checksum ^= 1;
    ctl.publish_raw(&f);
    dp.poll(s + 3_000_000_003);
    let v = dp.status().validation;
    assert_eq!(
        (
            v.bad_admin,
            v.weights_clamped,
            v.all_zero,
            v.checksum_mismatch
        ),
        (2, 1, 1, 1)
    );
    assert_eq!((v.frames_applied, v.frames_rejected), (2, 2));
}

#[test]
fn stats_are_published_per_worker_and_read_back() {
    let r = create("stats", 4, 2);
    let a = ShmRegion::attach(r.name(), &Expect::default()).unwrap();
    let view = r.view();
    let ctl = Controller::new(a.view(), 3);
    let mut out = StatsFrame::new_box_zeroed().unwrap();
    assert!(matches!(
        ctl.read_stats(0, &mut out, 4),
        Err(StatsError::Read(seqlock::ReadError::Empty))
    ));
    assert_eq!(ctl.read_stats(5, &mut out, 4), Err(StatsError::NoWorker(5)));

    let mut t = Telemetry::new_box_zeroed().unwrap();
    t.flow_opened(2, marllb_core::flow::FlowState::TcpSynSent);
    t.packet(2, 1500, 100, || 0);
    t.packet(7, 1500, 100, || 0); // beyond the configured 4: not published
    t.drop_packet(marllb_core::classify::DropReason::NoVip);
    let mut status = DpStatus::default();
    status.watchdog.fallback_entries = 5;
    let mut p1 = StatsPublisher::new(&view, 1, 0).unwrap();
    assert!(StatsPublisher::new(&view, 2, 0).is_none());
    assert!(p1.maybe_publish(10, &t, &status));
    assert!(!p1.maybe_publish(10 + 199_999_999, &t, &status));
    t.packet(2, 100, 200, || 0);
    assert!(p1.maybe_publish(10 + 200_000_000, &t, &status));

    ctl.read_stats(1, &mut out, 4).unwrap();
    let h = out.head;
    assert_eq!((h.window_seq, h.worker, h.n_backends), (2, 1, 4));
    assert_eq!(h.window_start_ns, 10);
    assert_eq!(h.watchdog.fallback_entries, 5);
    assert_eq!(
        h.drops[marllb_core::classify::DropReason::NoVip as usize],
        1
    );
    assert_eq!(out.backends[2].counters.packets, 2);
    assert_eq!(out.backends[2].counters.active_flows, 1);
    assert_eq!(
        out.backends[2].counters.as_bytes(),
        t.backends[2].as_bytes()
    );
    assert_eq!(out.backends[2].samples, t.samples[2]);
    assert_eq!(out.backends[7].counters.packets, 0);
    assert_eq!(ctl.read_stats_head(1, 4).unwrap().window_seq, 2);
    // Worker 0 never published.
    assert!(ctl.read_stats_head(0, 4).is_err());
}

#[test]
fn backend_set_added_applied_removed_and_refused() {
    use marllb_shm::backend_set::{served, SetRefusal};
    use marllb_shm::layout::admin;
    let r = create("set", 2, 1);
    let view = r.view();
    let mut dp = DataPlane::new(&view, DataPlaneConfig::default());
    let mut ctl = Controller::new(r.view(), 1);
    assert_eq!((dp.backends(), ctl.backends()), (2, 2));
    assert!(ctl.served_set().is_none());

    // The configuration's set carries each backend's VIP membership.
    let mut entries: Vec<_> = dp.served_set().entries().to_vec();
    assert!(entries.iter().all(|e| e.vip_mask == 1 && served(e)));
    let mut added = entries[1];
    added.addr[3] = 9;
    added.mac[5] = 9;
    entries.push(added);
    let v = ctl.publish_set(&entries).unwrap();
    assert_eq!(v, 1);
    // Handed to the host; nothing changes until it answers.
    let p = dp.poll(1);
    assert_eq!(p.backend_set.map(|s| s.entries().len()), Some(3));
    assert_eq!(dp.backends(), 2);
    dp.answer_set(Ok(()));
    assert_eq!(dp.backends(), 3);
    assert_eq!(ctl.set_answer().applied, 1);
    assert!(dp.poll(2).backend_set.is_none());
    // A controller attaching later learns the set.
    let again = Controller::new(r.view(), 2);
    assert_eq!(again.backends(), 3);
    assert_eq!(again.served_set().map(|s| s.version), Some(1));

    // Weights for three backends are applied.
    ctl.set_backends(3);
    ctl.heartbeat(5);
    ctl.publish(&[WEIGHT_ONE; 3], &[AdminState::Active; 3])
        .unwrap();
    let p = dp.poll(3);
    assert_eq!(p.vector.weights(), &[WEIGHT_ONE; 3]);

    // Removing index 0: it is down whatever the weights say.
    entries[0].admin = admin::REMOVED;
    ctl.publish_set(&entries).unwrap();
    assert!(dp.poll(4).backend_set.is_some());
    dp.answer_set(Ok(()));
    ctl.heartbeat(6);
    ctl.publish(&[WEIGHT_ONE; 3], &[AdminState::Active; 3])
        .unwrap();
    let p = dp.poll(5);
    assert_eq!(p.vector.admin()[0], AdminState::Down);
    assert_eq!(p.vector.weights(), &[0, WEIGHT_ONE, WEIGHT_ONE]);

    // A served index readdressed is refused and named; the set stays.
    entries[1].addr[3] = 77;
    let v = ctl.publish_set(&entries).unwrap();
    assert!(dp.poll(6).backend_set.is_none());
    let a = ctl.set_answer();
    assert_eq!((a.applied, a.refused), (2, v));
    assert_eq!(
        SetRefusal::describe(a.reason).to_string(),
        SetRefusal::Readdressed { index: 1 }.to_string()
    );
    assert_eq!(dp.served_set().version, 2);
    assert_eq!(dp.status().validation.sets_refused, 1);
    // The host refusing to build is recorded as well.
    entries[1].addr[3] = 2;
    entries[0] = added;
    entries[0].addr[3] = 10;
    let v = ctl.publish_set(&entries).unwrap();
    assert!(dp.poll(7).backend_set.is_some());
    dp.answer_set(Err(()));
    let a = ctl.set_answer();
    assert_eq!((a.applied, a.refused), (2, v));
    assert_eq!(dp.backends(), 3);
}
