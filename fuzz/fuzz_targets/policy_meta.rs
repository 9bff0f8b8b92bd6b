//! Arbitrary text as a policy metadata sidecar: a clear error or a valid value
//! that survives a JSON round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use marllb_policy::PolicyMeta;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = PolicyMeta::parse(text) {
        m.validate().expect("parse validates");
        let again = PolicyMeta::parse(&marllb_policy::meta::to_json(&m))
            .expect("a valid sidecar re-parses");
        assert_eq!(again.obs_len(), m.obs_len());
        assert_eq!(again.action_len(), m.action_len());
    }
});
