//! The game-day file loader on arbitrary text, written to a file in a
//! private directory (the loader resolves the experiments it lists relative
//! to it; reading whatever a hostile entry names is harmless).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory")).path()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = dir().join("gameday.yaml");
    if std::fs::write(&file, text).is_err() {
        return;
    }
    let _ = faultline_coordinator::cli::gameday::load(&file.display().to_string());
});
