use super::*;
use crate::wire::IpFamily;
use std::boxed::Box;

type Table = FlowTable<64>;

fn table() -> Box<Table> {
    let mut t = Table::new_box_zeroed().expect("alloc");
    t.clear();
    t
}

fn key(i: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&(0xc612_0000u32 + i).to_be_bytes());
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[198, 18, 255, 1]);
    FlowKey::new(IpFamily::V4, &src, &dst, 40000, 80, 6)
}

fn key6(i: u32) -> FlowKey {
    let mut src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    src[12..].copy_from_slice(&i.to_be_bytes());
    let mut dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    dst[15] = 0x80;
    FlowKey::new(IpFamily::V6, &src, &dst, 40000, 443, 6)
}

const SEC: u32 = 976_562; // ticks per second (1e9 / 1024)

fn to() -> [u32; FLOW_STATES] {
    Timeouts::default().to_ticks()
}

/// A [`NewEntry`] with the default timeouts.
fn new_entry(hash: u64, vip: u8, now: u32, backend: u16, state: FlowState) -> NewEntry<'static> {
    static TO: std::sync::LazyLock<[u32; FLOW_STATES]> = std::sync::LazyLock::new(to);
    NewEntry {
        hash,
        vip,
        now,
        timeouts: &TO,
        backend,
        state,
    }
}

fn ins(t: &mut Table, k: &FlowKey, h: u64, now: u32, backend: u16, st: FlowState) -> Slot {
    t.insert(k, new_entry(h, 0, now, backend, st))
        .expect("insert")
        .0
}

fn hit(t: &mut Table, k: &FlowKey, h: u64, now: u32) -> Entry {
    match t.lookup(k, h, 0, now, &to()) {
        Lookup::Hit(_, e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn insert_then_hit_refreshes() {
    let mut t = table();
    let k = key(1);
    let h = 0x1234_5678_0000_0003;
    let (slot, reclaimed) = t
        .insert(&k, new_entry(h, 2, 100, 7, FlowState::TcpSynSent))
        .expect("insert");
    assert!(reclaimed.is_none());
    assert_eq!(slot.bucket, 3);
    match t.lookup(&k, h, 2, 200, &to()) {
        Lookup::Hit(s, e) => {
            assert_eq!(s, slot);
            assert_eq!((e.backend, e.vip, e.state), (7, 2, FlowState::TcpSynSent));
            assert_eq!(e.last_seen, 100);
            assert_eq!(t.created(s), 100);
        }
        other => panic!("{other:?}"),
    }
    // last_seen was refreshed to 200; another VIP index is another flow.
    match t.lookup(&k, h, 2, 300, &to()) {
        Lookup::Hit(_, e) => assert_eq!(e.last_seen, 200),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.lookup(&k, h, 3, 300, &to()), Lookup::Miss(None));
}

#[test]
fn hash_collision_never_matches_other_key() {
    // Two different flows with the very same 64-bit hash (so the same bucket):
    // each must find its own entry and backend, for IPv4 and for IPv6.
    for (a, b) in [(key(1), key(2)), (key6(1), key6(2))] {
        let mut t = table();
        let h = 0xdead_beef_0000_0005;
        ins(&mut t, &a, h, 0, 1, FlowState::Udp);
        assert_eq!(t.lookup(&b, h, 0, 1, &to()), Lookup::Miss(None));
        ins(&mut t, &b, h, 0, 2, FlowState::Udp);
        assert_eq!(hit(&mut t, &a, h, 1).backend, 1);
        assert_eq!(hit(&mut t, &b, h, 1).backend, 2);
    }
}

#[test]
fn v4_key_word_never_matches_v6_entry() {
    // An IPv6 entry stores its hash in the key word; an IPv4 flow whose packed
    // key happens to equal that hash must not match it.
    let mut t = table();
    let k4 = key(7);
    let word = k4.words[0] | (k4.words[4] >> 32);
    let h = word; // the IPv6 flow's hash equals the IPv4 key word
    ins(&mut t, &key6(9), h, 0, 5, FlowState::Udp);
    assert_eq!(t.lookup(&k4, h, 0, 1, &to()), Lookup::Miss(None));
}

#[test]
fn per_state_timeouts() {
    let mut t = table();
    let h = 9;
    let tos = to();
    ins(&mut t, &key(1), h, 0, 1, FlowState::TcpSynSent);
    // Half-open: 5 s. At 4 s still alive, at 4 + 5.1 s gone.
    hit(&mut t, &key(1), h, 4 * SEC);
    match t.lookup(&key(1), h, 0, 4 * SEC + 5 * SEC + SEC / 10, &tos) {
        Lookup::Miss(Some(e)) => assert_eq!((e.state, e.created), (FlowState::TcpSynSent, 0)),
        other => panic!("{other:?}"),
    }
    // Freed: a second lookup finds nothing at all.
    assert_eq!(t.lookup(&key(1), h, 0, 20 * SEC, &tos), Lookup::Miss(None));
    // Established lives 300 s.
    let s = ins(&mut t, &key(2), h, 0, 1, FlowState::TcpSynSent);
    t.set_state(s, FlowState::TcpEstablished);
    hit(&mut t, &key(2), h, 299 * SEC);
    hit(&mut t, &key(2), h, 598 * SEC);
    assert!(matches!(
        t.lookup(&key(2), h, 0, 899 * SEC, &tos),
        Lookup::Miss(Some(_))
    ));
}

#[test]
fn timeouts_survive_tick_wraparound() {
    let mut t = table();
    let start = u32::MAX - SEC;
    ins(&mut t, &key(1), 1, start, 3, FlowState::Udp);
    // 10 s later the tick counter has wrapped; 10 s < 30 s UDP timeout.
    hit(&mut t, &key(1), 1, start.wrapping_add(10 * SEC));
    assert!(matches!(
        t.lookup(&key(1), 1, 0, start.wrapping_add(50 * SEC), &to()),
        Lookup::Miss(Some(_))
    ));
}

#[test]
fn full_bucket_spills_to_its_alternate_then_refuses() {
    let mut t = table();
    let h = 0x0000_0007_0000_002a; // primary 42, alternate 7
    for i in 0..8 {
        let s = ins(&mut t, &key(i), h, 0, i as u16, FlowState::TcpEstablished);
        assert_eq!(s.bucket, if i < 4 { 42 } else { 7 });
    }
    assert_eq!(
        t.insert(&key(99), new_entry(h, 0, 10, 9, FlowState::TcpSynSent)),
        Err(InsertError::BucketFull)
    );
    for i in 0..8 {
        assert_eq!(hit(&mut t, &key(i), h, 11).backend, i as u16);
    }
    // A flow whose primary is bucket 7 is unaffected by the spilled entries.
    assert_eq!(t.lookup(&key(50), 7, 0, 12, &to()), Lookup::Miss(None));
    // Listing masks the overflow bit out of the VIP index.
    t.for_each(|l| {
        assert_eq!(l.entry.vip, 0);
        true
    });
}

#[test]
fn alternate_is_never_the_primary() {
    for h in [0u64, 1, 0x0000_0005_0000_0005, u64::MAX] {
        assert_ne!(Table::alternate_of(h), Table::bucket_of(h));
    }
}

#[test]
fn full_bucket_reclaims_expired_way() {
    let mut t = table();
    let h = 42;
    for i in 0..4 {
        let st = if i == 2 {
            FlowState::TcpSynSent
        } else {
            FlowState::TcpEstablished
        };
        ins(&mut t, &key(i), h, 0, i as u16, st);
    }
    // 6 s later the half-open entry (way 2) has expired and is reclaimed.
    let (slot, reclaimed) = t
        .insert(&key(99), new_entry(h, 0, 6 * SEC, 9, FlowState::TcpSynSent))
        .expect("reclaim");
    assert_eq!(slot.way, 2);
    let r = reclaimed.expect("reported");
    assert_eq!((r.backend, r.state), (2, FlowState::TcpSynSent));
}

#[test]
fn sweep_reports_every_expired_entry_once() {
    let mut t = table();
    for i in 0..100u32 {
        let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let _ = t.insert(&key(i), new_entry(h, 0, 0, (i % 5) as u16, FlowState::Udp));
    }
    let n = t.occupied();
    assert!(n > 50);
    let mut seen = 0;
    let mut next = 0;
    for _ in 0..4 {
        next = t.sweep(next, 16, 31 * SEC, &to(), |_| seen += 1);
    }
    assert_eq!(next, 0);
    assert_eq!(seen, n);
    assert_eq!(t.occupied(), 0);
    let mut again = 0;
    t.sweep(0, 64, 32 * SEC, &to(), |_| again += 1);
    assert_eq!(again, 0);
}

#[test]
fn remove_and_restart() {
    let mut t = table();
    let s = ins(&mut t, &key6(1), 5, 0, 1, FlowState::TcpClosing);
    t.restart(s, 10, 4, FlowState::TcpSynSent);
    let e = hit(&mut t, &key6(1), 5, 11);
    assert_eq!((e.backend, e.state), (4, FlowState::TcpSynSent));
    assert_eq!(t.created(s), 10);
    t.remove(s);
    assert_eq!(t.lookup(&key6(1), 5, 0, 12, &to()), Lookup::Miss(None));
}

#[test]
fn listing_recovers_the_tuple() {
    let mut t = table();
    ins(&mut t, &key(3), 7, 0, 1, FlowState::Udp);
    ins(&mut t, &key6(4), 8, 0, 2, FlowState::Udp);
    let mut seen = std::vec::Vec::new();
    t.for_each(|l| {
        seen.push(*l);
        true
    });
    assert_eq!(seen.len(), 2);
    let v4 = seen.iter().find(|l| !l.v6).expect("v4");
    assert_eq!(&v4.src[..4], &(0xc612_0000u32 + 3).to_be_bytes());
    assert_eq!((v4.sport, v4.dport, v4.proto), (40000, 80, 6));
    let v6 = seen.iter().find(|l| l.v6).expect("v6");
    assert_eq!(&v6.src[12..], &4u32.to_be_bytes());
    assert_eq!((v6.sport, v6.dport), (40000, 443));
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

#[test]
#[cfg_attr(miri, ignore = "millions of operations: too slow under Miri")]
fn refusals_stay_rare_at_operating_load() {
    // Sized as documented (4 entries per expected flow) at most 0.1 % of new
    // flows are refused (and go through Maglev); at half load under 1 %.
    let mut t = FlowTable::<{ 1 << 14 }>::new_box_zeroed().expect("alloc");
    t.clear();
    let cap = (1usize << 14) * 4;
    let mut fails = 0;
    for i in 0..(cap / 2) as u32 {
        let k = key(i);
        let h = crate::hash::flow_hash(&k, 1);
        if t.insert(&k, new_entry(h, 0, 0, 1, FlowState::Udp)).is_err() {
            fails += 1;
        }
        if i as usize == cap / 4 {
            assert!(fails * 1000 <= cap / 4, "{fails}");
        }
    }
    assert!(fails * 100 < cap / 2, "{fails}");
}

#[test]
fn an_ipv4_key_from_its_word_is_the_key() {
    let mut g = crate::hash::SplitMix64::new(11);
    for _ in 0..10_000 {
        let (a, b) = (g.next_u64(), g.next_u64());
        let (src, dst, sport, dport, proto) = (
            a as u32,
            (a >> 32) as u32,
            b as u16,
            (b >> 16) as u16,
            (b >> 32) as u8,
        );
        let word = u64::from(src) << 32 | u64::from(sport) << 16 | u64::from(dport);
        assert_eq!(
            FlowKey::v4_from_word(word, dst, proto).words,
            FlowKey::v4(src, dst, sport, dport, proto).words
        );
    }
}

#[test]
fn insert_v4_makes_the_entry_insert_makes() {
    let mut g = crate::hash::SplitMix64::new(12);
    let (mut a, mut b) = (table(), table());
    for i in 0..200u32 {
        let r = g.next_u64();
        let (src, dst, sport, dport) = (r as u32, 0xc612_ff01, (r >> 32) as u16, 80);
        let proto = if i % 2 == 0 { 6 } else { 17 };
        let word = u64::from(src) << 32 | u64::from(sport) << 16 | u64::from(dport);
        let k = FlowKey::v4(src, dst, sport, dport, proto);
        let h = g.next_u64();
        let now = i * 1000;
        let vip = (i % 3) as u8;
        let st = if proto == 6 {
            FlowState::TcpSynSent
        } else {
            FlowState::Udp
        };
        let x = a.insert(&k, new_entry(h, vip, now, 3, st));
        let y = b.insert_v4(word, proto, new_entry(h, vip, now, 3, st));
        assert_eq!(x, y);
    }
    assert_eq!(a.buckets.as_bytes(), b.buckets.as_bytes());
    assert_eq!(a.created.as_bytes(), b.created.as_bytes());
}

#[test]
fn lookup_v4_gives_what_lookup_gives() {
    let mut g = crate::hash::SplitMix64::new(13);
    let (mut a, mut b) = (table(), table());
    let states = [
        FlowState::TcpSynSent,
        FlowState::TcpEstablished,
        FlowState::TcpClosing,
        FlowState::Udp,
    ];
    let mut flows = std::vec::Vec::new();
    // Established hits, other hits, expiries, misses.
    let mut seen = [0u32; 4];
    for i in 0..120u32 {
        let r = g.next_u64();
        let (src, dst, sport, dport) = (r as u32, 0xc612_ff01, (r >> 32) as u16, 80);
        let proto = if i % 4 == 3 { 17 } else { 6 };
        let word = u64::from(src) << 32 | u64::from(sport) << 16 | u64::from(dport);
        let k = FlowKey::v4(src, dst, sport, dport, proto);
        // Few buckets' worth of hashes: collisions and overflow.
        let h = g.next_u64();
        let vip = (i % 2) as u8;
        let st = states[(i % 4) as usize];
        let e = new_entry(h, vip, i, (i % 7) as u16, st);
        assert_eq!(a.insert(&k, e), b.insert(&k, e));
        flows.push((k, word, proto, h, vip));
    }
    // Lookups at times that leave some of each state live, some expired,
    // some with the other VIP (a miss).
    for (n, now) in [4 * SEC, 20 * SEC, 200 * SEC, 400 * SEC]
        .into_iter()
        .enumerate()
    {
        for (i, &(k, word, proto, h, vip)) in flows.iter().enumerate() {
            let vip = if (i + n) % 5 == 0 { vip ^ 1 } else { vip };
            let x = a.lookup(&k, h, vip, now, &to());
            let y = b.lookup_v4(word, proto, h, vip, now, &to());
            seen[match (x, y) {
                (_, LookupV4::Established { .. }) => 0,
                (_, LookupV4::Hit(..)) => 1,
                (_, LookupV4::Miss(Some(_))) => 2,
                (_, LookupV4::Miss(None)) => 3,
            }] += 1;
            if let LookupV4::Established { .. } = y {
                assert!(matches!(x, Lookup::Hit(_, e) if e.state == FlowState::TcpEstablished));
            }
            let y = match y.entry(vip) {
                Ok((slot, e)) => Lookup::Hit(slot, e),
                Err(expired) => Lookup::Miss(expired),
            };
            assert_eq!(x, y, "flow {i} at {now}");
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    assert_eq!(a.buckets.as_bytes(), b.buckets.as_bytes());
}
