//! The demo service under a restarting supervisor, and a client of it
//! that exports what it saw, for the tests that judge the service by
//! metrics (`#[path]`-included).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prometheus::Exporter;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// The demo service on `port` under a supervisor thread that restarts it
/// `delay` after it dies (at most 50 times); stopped and reaped on drop.
pub struct Demo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Demo {
    pub fn start(port: u16, delay: Duration) -> Demo {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for _ in 0..50 {
                let mut child: Child = Command::new(FAULTLINE)
                    .args(["demo-service", "--port", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start the demo service");
                // Reaped within 20 ms of dying, so a killed service never
                // lingers as a zombie.
                loop {
                    if flag.load(Ordering::SeqCst) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let restart_at = Instant::now() + delay;
                while Instant::now() < restart_at {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Demo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `GET /health` to the demo service, bounded by 1 s (generous: a
/// slow answer on a loaded machine is not an error a kill caused).
async fn health(port: u16) -> bool {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

/// The client: asks the demo service on `backend` every 100 ms and
/// exports `client_requests_total` and `client_errors_total`; returns the
/// exporter's port. Runs until the test's runtime ends.
pub async fn start_client(backend: u16) -> u16 {
    let exporter = Exporter::default();
    let text = |requests: u64, errors: u64| {
        format!(
            "# TYPE client_requests_total counter\nclient_requests_total {requests}\n\
             # TYPE client_errors_total counter\nclient_errors_total {errors}\n"
        )
    };
    exporter.set(&text(0, 0));
    let port = exporter.start().await;
    tokio::spawn(async move {
        let (mut requests, mut errors) = (0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ok = health(backend).await;
            requests += 1;
            errors += u64::from(!ok);
            // Both counters change in one step: a scrape sees them agree.
            exporter.set(&text(requests, errors));
        }
    });
    port
}
