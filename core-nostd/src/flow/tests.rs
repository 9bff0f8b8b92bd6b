use super::*;
use crate::wire::IpFamily;
use std::boxed::Box;

type Table = FlowTable<64>;

fn table() -> Box<Table> {
    Table::new_box_zeroed().expect("alloc")
}

fn key(i: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&(0xc612_0000u32 + i).to_be_bytes());
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[198, 18, 255, 1]);
    FlowKey::new(IpFamily::V4, &src, &dst, 40000, 80, 6)
}

const SEC: u32 = 976_562; // ticks per second (1e9 / 1024)

fn to() -> [u32; FLOW_STATES] {
    Timeouts::default().to_ticks()
}

#[test]
fn insert_then_hit_refreshes() {
    let mut t = table();
    let k = key(1);
    let (slot, reclaimed) = t
        .insert(
            &k,
            0x1234_5678_0000_0003,
            100,
            &to(),
            7,
            2,
            FlowState::TcpSynSent,
        )
        .expect("insert");
    assert!(reclaimed.is_none());
    assert_eq!(slot.bucket, 3);
    match t.lookup(&k, 0x1234_5678_0000_0003, 200, &to()) {
        Lookup::Hit(s, e) => {
            assert_eq!(s, slot);
            assert_eq!((e.backend, e.vip, e.state), (7, 2, FlowState::TcpSynSent));
            assert_eq!((e.created, e.last_seen), (100, 100));
        }
        other => panic!("{other:?}"),
    }
    // last_seen was refreshed to 200.
    match t.lookup(&k, 0x1234_5678_0000_0003, 300, &to()) {
        Lookup::Hit(_, e) => assert_eq!(e.last_seen, 200),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hash_collision_never_matches_other_key() {
    // Two different flows with the very same 64-bit hash (bucket and signature):
    // each must find its own entry and backend.
    let mut t = table();
    let h = 0xdead_beef_0000_0005;
    t.insert(&key(1), h, 0, &to(), 1, 0, FlowState::Udp)
        .expect("a");
    assert_eq!(t.lookup(&key(2), h, 1, &to()), Lookup::Miss(None));
    t.insert(&key(2), h, 0, &to(), 2, 0, FlowState::Udp)
        .expect("b");
    for (k, want) in [(key(1), 1), (key(2), 2)] {
        match t.lookup(&k, h, 1, &to()) {
            Lookup::Hit(_, e) => assert_eq!(e.backend, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn per_state_timeouts() {
    let mut t = table();
    let h = 9;
    let tos = to();
    t.insert(&key(1), h, 0, &tos, 1, 0, FlowState::TcpSynSent)
        .expect("ins");
    // Half-open: 5 s. At 4 s still alive, at 4 + 5.1 s gone.
    assert!(matches!(
        t.lookup(&key(1), h, 4 * SEC, &tos),
        Lookup::Hit(..)
    ));
    match t.lookup(&key(1), h, 4 * SEC + 5 * SEC + SEC / 10, &tos) {
        Lookup::Miss(Some(e)) => assert_eq!(e.state, FlowState::TcpSynSent),
        other => panic!("{other:?}"),
    }
    // Freed: a second lookup finds nothing at all.
    assert_eq!(t.lookup(&key(1), h, 20 * SEC, &tos), Lookup::Miss(None));
    // Established lives 300 s.
    let (s, _) = t
        .insert(&key(2), h, 0, &tos, 1, 0, FlowState::TcpSynSent)
        .expect("ins");
    t.set_state(s, FlowState::TcpEstablished);
    assert!(matches!(
        t.lookup(&key(2), h, 299 * SEC, &tos),
        Lookup::Hit(..)
    ));
    assert!(matches!(
        t.lookup(&key(2), h, 598 * SEC, &tos),
        Lookup::Hit(..)
    ));
    assert!(matches!(
        t.lookup(&key(2), h, 899 * SEC, &tos),
        Lookup::Miss(Some(_))
    ));
}

#[test]
fn timeouts_survive_tick_wraparound() {
    let mut t = table();
    let tos = to();
    let start = u32::MAX - SEC;
    t.insert(&key(1), 1, start, &tos, 3, 0, FlowState::Udp)
        .expect("ins");
    // 10 s later the tick counter has wrapped; 10 s < 30 s UDP timeout.
    assert!(matches!(
        t.lookup(&key(1), 1, start.wrapping_add(10 * SEC), &tos),
        Lookup::Hit(..)
    ));
    assert!(matches!(
        t.lookup(&key(1), 1, start.wrapping_add(50 * SEC), &tos),
        Lookup::Miss(Some(_))
    ));
}

#[test]
fn full_bucket_refuses_and_keeps_old_flows() {
    let mut t = table();
    let tos = to();
    let h = 42;
    for i in 0..4 {
        t.insert(&key(i), h, 0, &tos, i as u16, 0, FlowState::TcpEstablished)
            .expect("ins");
    }
    assert_eq!(
        t.insert(&key(99), h, 10, &tos, 9, 0, FlowState::TcpSynSent),
        Err(InsertError::BucketFull)
    );
    for i in 0..4 {
        match t.lookup(&key(i), h, 11, &tos) {
            Lookup::Hit(_, e) => assert_eq!(e.backend, i as u16),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn full_bucket_reclaims_expired_way() {
    let mut t = table();
    let tos = to();
    let h = 42;
    for i in 0..4 {
        let st = if i == 2 {
            FlowState::TcpSynSent
        } else {
            FlowState::TcpEstablished
        };
        t.insert(&key(i), h, 0, &tos, i as u16, 0, st).expect("ins");
    }
    // 6 s later the half-open entry (way 2) has expired and is reclaimed.
    let (slot, reclaimed) = t
        .insert(&key(99), h, 6 * SEC, &tos, 9, 0, FlowState::TcpSynSent)
        .expect("reclaim");
    assert_eq!(slot.way, 2);
    let r = reclaimed.expect("reported");
    assert_eq!((r.backend, r.state), (2, FlowState::TcpSynSent));
}

#[test]
fn sweep_reports_every_expired_entry_once() {
    let mut t = table();
    let tos = to();
    for i in 0..100u32 {
        let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let _ = t.insert(&key(i), h, 0, &tos, (i % 5) as u16, 0, FlowState::Udp);
    }
    let n = t.occupied();
    assert!(n > 50);
    let mut seen = 0;
    let mut next = 0;
    for _ in 0..4 {
        next = t.sweep(next, 16, 31 * SEC, &tos, |_| seen += 1);
    }
    assert_eq!(next, 0);
    assert_eq!(seen, n);
    assert_eq!(t.occupied(), 0);
    let mut again = 0;
    t.sweep(0, 64, 32 * SEC, &tos, |_| again += 1);
    assert_eq!(again, 0);
}

#[test]
fn remove_and_restart() {
    let mut t = table();
    let tos = to();
    let (s, _) = t
        .insert(&key(1), 5, 0, &tos, 1, 0, FlowState::TcpClosing)
        .expect("ins");
    t.restart(s, 10, 4, FlowState::TcpSynSent);
    match t.lookup(&key(1), 5, 11, &tos) {
        Lookup::Hit(_, e) => assert_eq!(
            (e.backend, e.created, e.state),
            (4, 10, FlowState::TcpSynSent)
        ),
        other => panic!("{other:?}"),
    }
    t.remove(s);
    assert_eq!(t.lookup(&key(1), 5, 12, &tos), Lookup::Miss(None));
}

#[test]
fn ipv6_keys_differ_from_ipv4_keys() {
    let a = [1u8; 16];
    let b = [2u8; 16];
    let k4 = FlowKey::new(IpFamily::V4, &a, &b, 1, 2, 6);
    let k6 = FlowKey::new(IpFamily::V6, &a, &b, 1, 2, 6);
    assert_ne!(k4, k6);
    assert!(k6.is_v6() && !k4.is_v6());
    assert_eq!((k6.sport(), k6.dport(), k6.proto()), (1, 2, 6));
}
