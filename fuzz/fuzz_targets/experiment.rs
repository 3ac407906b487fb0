//! The experiment parser (limits pre-scan, `${var}` substitution, YAML,
//! positioned validation of every kind) on arbitrary text: it must return
//! Ok or a located error, never panic, and stay fast.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vars = HashMap::from([("port".to_string(), "8080".to_string())]);
    if let Err(e) = faultline_coordinator::experiment::parse("fuzz.yaml", text, &vars) {
        // Every refusal is located in the file.
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
});
