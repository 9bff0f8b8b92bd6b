//! Arbitrary bytes as a region header, a weights frame and a backend set:
//! validation either fails or yields only in-range values (the Kani harness
//! bodies).
#![no_main]
use libfuzzer_sys::fuzz_target;
use marllb_kani::{
    backend_set_image, header_image, weights_image, HEADER_BYTES, SET_BYTES, WEIGHTS_BYTES,
};
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

    // A set: the input's bytes from offset 4 (so short inputs give small
    // counts and few entries), resealed mostly.
    let mut b = [0u8; SET_BYTES];
    let tail = data.get(4..).unwrap_or_default();
    let n = tail.len().min(SET_BYTES);
    b[..n].copy_from_slice(&tail[..n]);
    let current = 1 + usize::from(data.get(1).copied().unwrap_or(0) % 8);
    let vips = 1 + usize::from(data.get(2).copied().unwrap_or(0) % 4);
    backend_set_image(&b, current, vips, data.get(3).is_none_or(|x| x & 3 != 0));
});
