//! Checks of rendered reports shared by the report tests
//! (`#[path]`-included): the JUnit schema and a Chromium screenshot.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Checks the JUnit report in `dir` against Jenkins' junit-10.xsd with
/// xmllint (Debian's libxml2-utils; a failure when missing under CI=true).
pub fn junit_valid(dir: &std::path::Path) {
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/junit-10.xsd");
    if Command::new("xmllint").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "xmllint is not installed and CI=true forbids skipping (install Debian's libxml2-utils)"
        );
        eprintln!("skipping the schema check: xmllint is not installed (Debian package libxml2-utils)");
        return;
    }
    let out = Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(dir.join("junit.xml"))
        .output()
        .expect("run xmllint");
    assert!(
        out.status.success(),
        "junit.xml is not valid against junit-10.xsd:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pixels of `colour` in a headless-Chromium screenshot of the HTML report
/// in `dir`; `None` (after saying why) without Chromium outside CI.
pub fn rendered_pixels(dir: &std::path::Path, colour: (i32, i32, i32)) -> Option<usize> {
    let browser = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|b| {
        ["/usr/bin", "/usr/local/bin", "/snap/bin"]
            .iter()
            .map(|d| format!("{d}/{b}"))
            .find(|p| std::path::Path::new(p).exists())
    });
    let Some(browser) = browser else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed and CI=true forbids skipping (install Debian's chromium)"
        );
        eprintln!("skipping the screenshot: chromium is not installed");
        return None;
    };
    let shot = dir.join("shot.png");
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,1100",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", dir.join("report.html").display()))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).expect("png")));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let px = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let (r, g, b) = colour;
    Some(
        buf[..info.buffer_size()]
            .chunks(px)
            .filter(|c| (c[0] as i32 - r).abs() < 24 && (c[1] as i32 - g).abs() < 24 && (c[2] as i32 - b).abs() < 24)
            .count(),
    )
}
