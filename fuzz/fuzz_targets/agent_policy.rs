//! The agent's policy file parser on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = faultline_agent::policy::AgentPolicy::parse("agent.yaml", text);
});
