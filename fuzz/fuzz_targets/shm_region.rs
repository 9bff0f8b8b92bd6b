//! Arbitrary bytes as a region header and as a weights frame: validation either
//! fails or yields only in-range values (the Kani harness bodies).
#![no_main]
use libfuzzer_sys::fuzz_target;
use marllb_kani::{header_image, weights_image, HEADER_BYTES, WEIGHTS_BYTES};
use marllb_shm::validate::Expect;

fuzz_target!(|data: &[u8]| {
    let mut h = [0u8; HEADER_BYTES];
    let n = data.len().min(HEADER_BYTES);
    h[..n].copy_from_slice(&data[..n]);
    let file_len = data
        .get(HEADER_BYTES..HEADER_BYTES + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let expect = Expect {
        backend_count: data.get(1).map(|b| u32::from(*b)),
        worker_count: data.get(2).map(|b| u32::from(*b) % 8),
    };
    header_image(&h, file_len, expect);

    let mut w = [0u8; WEIGHTS_BYTES];
    let n = data.len().min(WEIGHTS_BYTES);
    w[..n].copy_from_slice(&data[..n]);
    let backends = 1 + usize::from(data.first().copied().unwrap_or(0));
    let reseal = data.get(3).is_some_and(|b| b & 1 == 1);
    weights_image(&w, backends, reseal);
});
