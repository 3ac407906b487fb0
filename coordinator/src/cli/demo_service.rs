//! The demo's HTTP service: answers `GET /health` with `200 ok`, and
//! `GET /metrics` with its request counter in Prometheus' text format, so a
//! local Prometheus can scrape it (`experiments/slo-kill.yaml`). Deliberately
//! tiny; what matters is that it is a real process a kill can hit.
//!
//! With `--upstream ADDR` it is also a service with a dependency, for the
//! release-gate demo (`experiments/canary-gate.yaml`): `GET /work` calls
//! `GET /` on the upstream and answers `200 upstream`. With
//! `--upstream-timeout` it gives the upstream that long and then answers
//! `200 fallback` (the "good" version); without it, it waits as long as the
//! upstream takes (the "regressed" version whose latency follows a slow
//! dependency).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Loopback port to listen on (same as --listen 127.0.0.1:PORT).
    #[arg(long, required_unless_present = "listen", conflicts_with = "listen")]
    pub port: Option<u16>,
    /// Address to listen on, e.g. 10.77.0.11:9090.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// The dependency `GET /work` calls (HOST:PORT, plain HTTP `GET /`).
    #[arg(long)]
    pub upstream: Option<std::net::SocketAddr>,
    /// Give the upstream at most this long, then answer `fallback`. By
    /// default, no limit.
    #[arg(long, value_parser = humantime::parse_duration, requires = "upstream")]
    pub upstream_timeout: Option<Duration>,
}

pub async fn main(a: Args) -> i32 {
    let addr = a
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], a.port.unwrap_or(0))));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-service: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    let requests = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        let (upstream, limit) = (a.upstream, a.upstream_timeout);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            // Read until the end of the request head (bounded by the buffer).
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let served = requests.fetch_add(1, Ordering::Relaxed) + 1;
            let (status, body) = if seen.starts_with(b"GET /metrics") {
                (
                    "200 OK",
                    format!("# TYPE demo_requests_total counter\ndemo_requests_total {served}\n"),
                )
            } else if let (true, Some(up)) = (seen.starts_with(b"GET /work"), upstream) {
                let call = call_upstream(up);
                let answer = match limit {
                    Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or(Ok("fallback")),
                    None => call.await,
                };
                match answer {
                    Ok(what) => ("200 OK", format!("{what}\n")),
                    Err(e) => ("502 Bad Gateway", format!("upstream {up}: {e}\n")),
                }
            } else {
                ("200 OK", "ok\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// One `GET /` to the upstream; `upstream` when it answered 2xx.
async fn call_upstream(up: std::net::SocketAddr) -> std::io::Result<&'static str> {
    let mut s = tokio::net::TcpStream::connect(up).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    // The status line is enough; the upstream closes after its answer.
    while n < 12 {
        match s.read(&mut head[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    if head[..n].starts_with(b"HTTP/1.1 2") || head[..n].starts_with(b"HTTP/1.0 2") {
        Ok("upstream")
    } else {
        Err(std::io::Error::other(format!(
            "answered {:?}",
            String::from_utf8_lossy(&head[..n])
        )))
    }
}
