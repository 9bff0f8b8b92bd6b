//! Alias and Maglev construction from arbitrary weight vectors: the alias table's
//! probabilities are exactly the normalized weights, no index is ever out of
//! range, Maglev fills every slot and gives nothing to zero weights.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use marllb_core::select::{AliasTable, MaglevTable};

#[derive(Arbitrary, Debug)]
struct Input {
    weights: Vec<u32>,
    ids: Vec<u64>,
    hashes: Vec<u64>,
}

fuzz_target!(|inp: Input| {
    let weights = &inp.weights[..inp.weights.len().min(300)];
    let mut t = AliasTable::new();
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    match t.build(weights) {
        Ok(()) => {
            assert!(total > 0 && weights.len() <= 256);
            let mut sum = 0u128;
            for (i, w) in weights.iter().enumerate() {
                let (num, den) = t.probability(i);
                assert_eq!(num * total, u128::from(*w) * den);
                sum += num;
            }
            assert_eq!(sum, t.probability(0).1);
            for h in &inp.hashes {
                let k = t.sample(*h).expect("non-empty table samples");
                assert!(usize::from(k) < weights.len());
                assert!(weights[usize::from(k)] > 0);
            }
        }
        Err(_) => assert!(total == 0 || weights.len() > 256 || weights.is_empty()),
    }

    // Maglev: distinct ids, weights bounded so that the build stays quick.
    let mut backends: Vec<(u64, u32)> = Vec::new();
    for (i, w) in weights.iter().take(64).enumerate() {
        let id = inp
            .ids
            .get(i)
            .copied()
            .unwrap_or(i as u64)
            .wrapping_add(i as u64);
        if backends.iter().all(|(x, _)| *x != id) {
            backends.push((id, *w % 1000));
        }
    }
    let mut m = Box::new(MaglevTable::new());
    if m.build(&backends).is_ok() {
        let n = backends.len();
        let filled: u32 = (0..n).map(|i| m.share(i)).sum();
        assert_eq!(filled, m.size());
        for (i, (_, w)) in backends.iter().enumerate() {
            if *w == 0 {
                assert_eq!(m.share(i), 0);
            }
        }
        for h in &inp.hashes {
            let k = m.lookup(*h).expect("built table answers");
            assert!(usize::from(k) < n);
        }
    } else {
        assert!(backends.iter().all(|(_, w)| *w == 0));
    }
});
