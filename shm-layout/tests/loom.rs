//! loom model checks of both publication protocols, on the crate's own seqlock
//! code (built on loom's atomics under `cfg(loom)`), plus two deliberately broken
//! variants that loom must catch.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p marllb-shm --release --test loom`
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use marllb_shm::seqlock::{self, ReadError, Reader, Writer};

/// Payload words of the models: small, so loom can explore every interleaving.
const WORDS: usize = 3;

struct Lock {
    seq: AtomicU64,
    words: Vec<AtomicU64>,
}

impl Lock {
    fn new() -> Arc<Self> {
        Arc::new(Lock {
            seq: AtomicU64::new(0),
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

fn gen_bytes(g: u64) -> Vec<u8> {
    (0..WORDS).flat_map(|_| g.to_ne_bytes()).collect()
}

fn words_of(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

fn assert_one_generation(w: &[u64]) {
    assert!(w.iter().all(|&x| x == w[0]), "torn read: {w:?}");
    assert!((1..=2).contains(&w[0]), "unpublished generation: {w:?}");
}

/// Controller -> data plane: two publications while the data plane polls twice
/// with bounded retries, keeping the last good vector and counting contention
/// (what `DataPlane::poll` does).
#[test]
fn weights_protocol_never_applies_a_torn_vector() {
    loom::model(|| {
        let lock = Lock::new();
        let w = lock.clone();
        let writer = thread::spawn(move || {
            for g in 1..=2u64 {
                seqlock::write(&w.seq, &w.words, &gen_bytes(g));
            }
        });
        let mut good: Option<Vec<u64>> = None;
        let mut contention = 0;
        for _ in 0..2 {
            let mut scratch = vec![0u8; WORDS * 8];
            match seqlock::read_bounded(&lock.seq, &lock.words, &mut scratch, 2) {
                Ok(s) => {
                    assert_eq!(s % 2, 0);
                    let v = words_of(&scratch);
                    assert_one_generation(&v);
                    if let Some(prev) = &good {
                        assert!(v[0] >= prev[0], "went back in time");
                    }
                    good = Some(v);
                }
                Err(ReadError::Empty) => assert!(good.is_none()),
                Err(_) => contention += 1,
            }
        }
        writer.join().unwrap();
        if let Some(v) = good {
            assert_one_generation(&v);
        }
        assert!(contention <= 2);
        // After the writer is done, a read sees the final generation.
        let mut scratch = vec![0u8; WORDS * 8];
        seqlock::try_read(&lock.seq, &lock.words, &mut scratch).unwrap();
        assert_eq!(words_of(&scratch), vec![2; WORDS]);
    });
}

/// Data plane -> controller: a worker publishes head and per-backend parts with
/// separate `put`s (what `StatsPublisher::publish` does); the controller reads
/// them with separate `get`s and one validation (what `read_stats` does).
#[test]
fn stats_protocol_reads_whole_windows() {
    loom::model(|| {
        let lock = Lock::new();
        let w = lock.clone();
        let writer = thread::spawn(move || {
            for g in 1..=2u64 {
                let mut pw = Writer::begin(&w.seq, &w.words);
                pw.put(0, &g.to_ne_bytes()); // head: window_seq
                pw.put(8, &[g.to_ne_bytes(), g.to_ne_bytes()].concat()); // backends
                assert_eq!(pw.finish(), 2 * g);
            }
        });
        if let Ok(r) = Reader::begin(&lock.seq, &lock.words) {
            let mut head = [0u8; 8];
            let mut rest = [0u8; 16];
            r.get(0, &mut head);
            r.get(8, &mut rest);
            if r.validate().is_ok() {
                let mut v = words_of(&head);
                v.extend(words_of(&rest));
                assert_one_generation(&v);
            }
        }
        writer.join().unwrap();
    });
}

/// A reader that skips the second sequence check: loom finds the torn read.
#[test]
#[should_panic(expected = "torn read")]
fn broken_reader_without_second_check_is_caught() {
    loom::model(|| {
        let lock = Lock::new();
        let w = lock.clone();
        let writer = thread::spawn(move || {
            seqlock::write(&w.seq, &w.words, &gen_bytes(1));
        });
        let s1 = lock.seq.load(Ordering::Acquire);
        if s1 != 0 && s1 % 2 == 0 {
            let v: Vec<u64> = lock
                .words
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            // BROKEN: no fence, no second load of `seq`.
            assert_one_generation(&v);
        } else if s1 == 0 {
            // Nothing published yet by the sequence, but the words may already be
            // partly written: the broken reader trusts them as generation 0.
            let v: Vec<u64> = lock
                .words
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            assert!(v.iter().all(|&x| x == v[0]), "torn read: {v:?}");
        }
        writer.join().unwrap();
    });
}

/// A writer that makes the payload visible without ordering it after the odd
/// sequence (no Release fence, Relaxed even store): loom finds a reader that
/// passes both sequence checks yet sees a mix.
#[test]
#[should_panic(expected = "torn read")]
fn broken_writer_ordering_is_caught() {
    loom::model(|| {
        let lock = Lock::new();
        // Generation 1 published correctly first, so the reader starts at seq 2.
        seqlock::write(&lock.seq, &lock.words, &gen_bytes(1));
        let w = lock.clone();
        let writer = thread::spawn(move || {
            // BROKEN: Relaxed everywhere, no fence.
            w.seq.store(3, Ordering::Relaxed);
            for c in &w.words {
                c.store(2, Ordering::Relaxed);
            }
            w.seq.store(4, Ordering::Relaxed);
        });
        let s1 = lock.seq.load(Ordering::Acquire);
        if s1 % 2 == 0 {
            let v: Vec<u64> = lock
                .words
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            fence(Ordering::Acquire);
            if lock.seq.load(Ordering::Relaxed) == s1 {
                assert!(v.iter().all(|&x| x == v[0]), "torn read: {v:?}");
            }
        }
        writer.join().unwrap();
    });
}
