//! The demo's HTTP service: answers `GET /health` with `200 ok`, and
//! `GET /metrics` with its request counter in Prometheus' text format, so a
//! local Prometheus can scrape it (`experiments/slo-kill.yaml`). Deliberately
//! tiny; what matters is that it is a real process a kill can hit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Loopback port to listen on.
    #[arg(long)]
    pub port: u16,
}

pub async fn main(a: Args) -> i32 {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-service: cannot listen on 127.0.0.1:{}: {e}", a.port);
            return 1;
        }
    };
    let requests = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
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
            let body = if seen.starts_with(b"GET /metrics") {
                format!("# TYPE demo_requests_total counter\ndemo_requests_total {served}\n")
            } else {
                "ok\n".to_string()
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
