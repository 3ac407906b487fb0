//! `faultline run --ui ADDR`: local mode serves the console for the run —
//! the binary as users run it, the console over real HTTP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// Kills and reaps the child if the test fails before it exits.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; the status, headers and body as text.
fn http(base: &str, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> (u16, String) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = form.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: fl_session={c}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, raw)
}

#[test]
fn run_ui_serves_the_live_page_of_a_local_run_behind_a_one_time_token() {
    // A sleep for the run to kill, reaped by init once killed.
    let marker = format!("0.{}77", std::process::id());
    let out = Command::new("sh")
        .args(["-c", &format!("sleep 300 {marker} >/dev/null 2>&1 & echo $!")])
        .output()
        .unwrap();
    let victim: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("e.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: watched\nhypothesis:\n  probes:\n    - name: p\n      interval: 50ms\n      command: {{ run: \"true\" }}\nbaseline: 2s\nduration: 1s\nrecovery: 300ms\nfaults:\n  - kill: {{ cmdline: '^sleep 300 {}$' }}\n",
            marker.replace('.', "\\.")
        ),
    )
    .unwrap();
    let mut child = Command::new(FAULTLINE)
        .args([
            "run",
            exp.to_str().unwrap(),
            "--ui",
            "127.0.0.1:0",
            "--no-store",
            "--format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run faultline");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Reap(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut token, mut live) = (None, None);
    let mut seen = Vec::new();
    while token.is_none() || live.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no console lines within 20 s: {seen:?}"));
        if let Some((_, t)) = line.split_once("log in with token ") {
            token = Some(t.trim().to_string());
        }
        if let Some((_, u)) = line.split_once("watch it live at ") {
            live = Some(u.trim().to_string());
        }
        seen.push(line);
    }
    let (token, live) = (token.unwrap(), live.unwrap());
    let (base, path) = live.split_at(live.find("/runs/").expect("a run page URL"));
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    // Without a session the page sends the browser to log in; a wrong
    // token is refused.
    let (status, _) = http(base, "GET", path, None, None);
    assert_eq!(status, 303);
    let (status, _) = http(base, "POST", "/login", None, Some("token=not-the-token-0123456789"));
    assert_eq!(status, 401);
    let (status, raw) = http(base, "POST", "/login", None, Some(&format!("token={token}")));
    assert_eq!(status, 303, "{raw}");
    let cookie = raw
        .split("fl_session=")
        .nth(1)
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    // The live page of this run, while it runs, for an operator (Abort shown).
    let (status, page) = http(base, "GET", path, Some(&cookie), None);
    assert_eq!(status, 200, "{page}");
    let run_id = path.trim_start_matches("/runs/");
    assert!(page.contains(run_id) && page.contains("id=\"abort\""), "{page}");
    assert!(page.contains("logged in as <b>local</b> (operator)"), "{page}");
    let (status, runs) = http(base, "GET", "/runs", Some(&cookie), None);
    assert_eq!(status, 200);
    assert!(runs.contains(run_id) && runs.contains(">running<"), "{runs}");

    let mut report = String::new();
    BufReader::new(stdout).read_to_string(&mut report).unwrap();
    let mut child = child;
    let status = child.0.wait().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL);
    assert_eq!(status.code(), Some(0), "{seen:?}");
    let r: serde_json::Value = serde_json::from_str(&report).expect("json report");
    assert_eq!(r["run_id"], run_id);
    // The console stopped with the run.
    assert!(TcpStream::connect(base.strip_prefix("http://").unwrap()).is_err());
}
