//! The flow table against a simple model (a HashMap with the same timeout rules),
//! over arbitrary operation sequences on a tiny table with forced hash collisions.
//!
//! The model knows which bucket each flow was put in (from the insert's answer),
//! so it can check that a refusal is legitimate (both candidate buckets hold four
//! live flows) and that every reclaimed or swept entry had really expired.
#![no_main]
use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use marllb_core::flow::{FlowKey, FlowState, FlowTable, Lookup, NewEntry, FLOW_STATES, WAYS};
use marllb_core::wire::IpFamily;
use zerocopy::FromZeros;

const B: usize = 4;
const FLOWS: usize = 24;
/// Per-state timeouts in ticks: free, syn, established, closing, udp, other.
const TIMEOUTS: [u32; FLOW_STATES] = [0, 50, 500, 20, 100, 100];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    /// Lookup, and insert on a miss (what the pipeline does for a new flow).
    Open {
        flow: u8,
        backend: u8,
        state: u8,
    },
    Lookup {
        flow: u8,
    },
    SetState {
        flow: u8,
        state: u8,
    },
    Remove {
        flow: u8,
    },
    Advance {
        ticks: u16,
    },
    Sweep {
        start: u8,
        count: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Hash of each flow; only a few bits vary so buckets collide.
    hashes: [u16; FLOWS],
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Copy)]
struct M {
    backend: u16,
    state: FlowState,
    last_seen: u32,
    bucket: u32,
}

fn state_of(v: u8) -> FlowState {
    [
        FlowState::TcpSynSent,
        FlowState::TcpEstablished,
        FlowState::TcpClosing,
        FlowState::Udp,
        FlowState::Other,
    ][usize::from(v % 5)]
}

fn key(i: usize) -> FlowKey {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[198, 18, 0, i as u8]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[198, 18, 255, 1]);
    FlowKey::new(
        IpFamily::V4,
        &src,
        &dst,
        1000 + i as u16,
        80,
        if i % 2 == 0 { 6 } else { 17 },
    )
}

fn expired(m: &M, now: u32) -> bool {
    now.wrapping_sub(m.last_seen) > TIMEOUTS[m.state as usize]
}

fuzz_target!(|inp: Input| {
    let mut t = FlowTable::<B>::new_box_zeroed().expect("alloc");
    t.clear();
    let mut model: HashMap<usize, M> = HashMap::new();
    let hashes: Vec<u64> = inp
        .hashes
        .iter()
        .map(|h| (u64::from(*h & 0x0707) << 24) | u64::from(*h & 0x0303))
        .collect();
    let mut now: u32 = u32::MAX - 1000; // exercise the tick wrap-around
                                        // The VIP index identifies the flow in reclaim and sweep reports.
    let vip = |i: usize| i as u8;
    for op in inp.ops.iter().take(500) {
        match *op {
            Op::Lookup { flow }
            | Op::Open { flow, .. }
            | Op::SetState { flow, .. }
            | Op::Remove { flow } => {
                let i = usize::from(flow) % FLOWS;
                let k = key(i);
                let h = hashes[i];
                let r = t.lookup(&k, h, vip(i), now, &TIMEOUTS);
                let slot = match (r, model.get(&i).copied()) {
                    (Lookup::Hit(slot, e), Some(m)) => {
                        assert!(!expired(&m, now), "hit on an expired flow");
                        assert_eq!((e.backend, e.state, e.vip), (m.backend, m.state, vip(i)));
                        assert_eq!(slot.bucket, m.bucket);
                        model.get_mut(&i).expect("present").last_seen = now;
                        Some(slot)
                    }
                    (Lookup::Miss(Some(x)), Some(m)) => {
                        assert!(expired(&m, now), "live flow reported expired");
                        assert_eq!((x.backend, x.state), (m.backend, m.state));
                        model.remove(&i);
                        None
                    }
                    (Lookup::Miss(None), None) => None,
                    (r, m) => panic!("table {r:?} vs model {m:?}"),
                };
                match (*op, slot) {
                    (Op::Open { backend, state, .. }, None) => {
                        let st = state_of(state);
                        match t.insert(
                            &k,
                            NewEntry {
                                hash: h,
                                vip: vip(i),
                                now,
                                timeouts: &TIMEOUTS,
                                backend: u16::from(backend),
                                state: st,
                            },
                        ) {
                            Ok((s, reclaimed)) => {
                                if let Some(x) = reclaimed {
                                    let j = usize::from(x.vip);
                                    let m =
                                        model.remove(&j).expect("reclaimed flow was in the model");
                                    assert!(expired(&m, now) && m.bucket == s.bucket);
                                }
                                let p = FlowTable::<B>::bucket_of(h) as u32;
                                let a = FlowTable::<B>::alternate_of(h) as u32;
                                assert!(s.bucket == p || s.bucket == a);
                                model.insert(
                                    i,
                                    M {
                                        backend: u16::from(backend),
                                        state: st,
                                        last_seen: now,
                                        bucket: s.bucket,
                                    },
                                );
                            }
                            Err(_) => {
                                for b in [
                                    FlowTable::<B>::bucket_of(h),
                                    FlowTable::<B>::alternate_of(h),
                                ] {
                                    let live = model
                                        .values()
                                        .filter(|m| m.bucket as usize == b && !expired(m, now))
                                        .count();
                                    let all =
                                        model.values().filter(|m| m.bucket as usize == b).count();
                                    assert_eq!(
                                        (live, all),
                                        (WAYS, WAYS),
                                        "refused with room in bucket {b}"
                                    );
                                }
                            }
                        }
                    }
                    (Op::SetState { state, .. }, Some(s)) => {
                        let st = state_of(state);
                        t.set_state(s, st);
                        model.get_mut(&i).expect("present").state = st;
                    }
                    (Op::Remove { .. }, Some(s)) => {
                        t.remove(s);
                        model.remove(&i);
                    }
                    _ => {}
                }
            }
            Op::Advance { ticks } => now = now.wrapping_add(u32::from(ticks % 700)),
            Op::Sweep { start, count } => {
                let count = usize::from(count % 6);
                let mut gone = Vec::new();
                t.sweep(usize::from(start), count, now, &TIMEOUTS, |x| gone.push(x));
                for x in gone {
                    let m = model
                        .remove(&usize::from(x.vip))
                        .expect("swept flow was in the model");
                    assert!(expired(&m, now));
                }
                if count >= B {
                    assert!(
                        model.values().all(|m| !expired(m, now)),
                        "a full sweep left an expired flow"
                    );
                }
            }
        }
        assert_eq!(t.occupied(), model.len());
    }
});
