//! `config::FilterConfig::from_json`: the configuration the control plane
//! sends every filter.
//!
//! Input: the JSON. A config that is accepted survives a round trip through its
//! own serialisation (what the control plane does to send it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::config::FilterConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = FilterConfig::from_json(data) else {
        return;
    };
    let json = serde_json::to_vec(&cfg).expect("an accepted config serialises");
    let again = FilterConfig::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "an accepted config does not parse back ({e}): {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(again, cfg, "the config changed in a round trip");
});
