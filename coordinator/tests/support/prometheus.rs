//! A real Prometheus server for tests (Debian's `prometheus` package),
//! started on a loopback port with a scrape config the test writes, and an
//! exporter in the test process whose metrics the test sets. Shared by the
//! test files that need them (`#[path]`-included), so not every helper is
//! used by each.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The `prometheus` binary, or `None` after printing why the test skips;
/// with `CI=true` a missing binary is a failure.
pub fn prometheus_binary(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    if found.is_none() {
        let msg = format!(
            "{test} needs `prometheus` which this machine does not have; install with: apt-get install -y prometheus"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
    }
    found
}

/// The metrics the exporter serves, set by the test.
#[derive(Clone, Default)]
pub struct Exporter(Arc<Mutex<String>>);

impl Exporter {
    pub fn set(&self, text: &str) {
        *self.0.lock().expect("exporter lock") = text.to_string();
    }

    /// Serves `/metrics` (any path) on a loopback port until the test ends.
    pub async fn start(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind exporter");
        let port = listener.local_addr().expect("addr").port();
        let text = self.0.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let text = text.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = text.lock().map(|t| t.clone()).unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(body.as_bytes()).await;
                });
            }
        });
        port
    }
}

/// A Prometheus server this test started; killed and reaped on drop.
pub struct Server {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts Prometheus scraping `exporter_port` every second, with its own
/// storage in a temp dir; `web_config` is the text of `--web.config.file`.
pub fn start_prometheus(bin: &Path, exporter_port: u16, web_config: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: exporter\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
        ),
    )
    .expect("write config");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let scheme = match web_config {
        Some(text) => {
            let path = dir.path().join("web.yml");
            std::fs::write(&path, text).expect("write web config");
            cmd.arg(format!("--web.config.file={}", path.display()));
            "https"
        }
        None => "http",
    };
    let child = cmd.spawn().expect("start prometheus");
    Server {
        child,
        base: format!("{scheme}://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Prometheus's own answer to `query`, straight from its API.
pub async fn api_value(base: &str, query: &str) -> Option<f64> {
    let resp = reqwest_client()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?;
    let json: serde_json::Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
    let value = &json["data"]["result"][0]["value"][1];
    value.as_str()?.parse().ok()
}

pub fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().expect("client")
}

/// Waits (at most 60 s) until Prometheus answers `query` with `want`.
pub async fn wait_for(base: &str, query: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if api_value(base, query).await == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus at {base} never answered {query} = {want}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (at most 60 s) until Prometheus answers `query` with a value
/// that `ok` accepts; returns it.
pub async fn wait_until(base: &str, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = api_value(base, query).await.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus at {base} never answered {query} with an expected value (last: {:?})",
            api_value(base, query).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
