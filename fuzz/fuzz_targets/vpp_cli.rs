//! Arbitrary text as the VPP plugin's CLI arguments (`lb rl ...`, `show lb rl
//! ...`): a command or a VPP-style error message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match marllb_vpp::cli::parse_lb(text) {
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let _ = marllb_vpp::cli::parse_show(text);
    let _ = marllb_vpp::cli::parse_mac(text);
    let _ = marllb_vpp::cli::parse_weight(text);
});
