//! Any bytes through the frame parser: no panic, offsets inside the frame.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = &data[..data.len().min(marllb_kani::MAX_FRAME)];
    marllb_kani::parse_any_frame(frame);
});
