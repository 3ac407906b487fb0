//! `faultline-test-udp`: numbered UDP datagrams between two processes, for
//! measuring packet faults where the test cannot run threads in both
//! network namespaces itself (inside the qemu guest).
//!
//! - `faultline-test-udp recv ADDR:PORT SENT` binds, collects datagrams
//!   until it has been quiet for a second after the first one (at most a
//!   minute), and prints one line: `received=.. lost=.. duplicates=..
//!   late=.. damaged=.. most_copies=..` (see `faultline_tests::packets`).
//! - `faultline-test-udp send ADDR:PORT N PACE_US` sends N datagrams of
//!   `PAYLOAD` bytes, a big-endian sequence number then 0xa5s, one every
//!   PACE_US microseconds.

use std::net::UdpSocket;
use std::time::Duration;

use faultline_tests::packets::{receive, send, Received};

fn usage() -> ! {
    eprintln!("usage: faultline-test-udp recv ADDR:PORT SENT | send ADDR:PORT N PACE_US");
    std::process::exit(2)
}

fn num(s: Option<&String>) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(2).unwrap_or_else(|| usage()).clone();
    match args.get(1).map(String::as_str) {
        Some("recv") => {
            let sent = num(args.get(3)) as u32;
            let s = UdpSocket::bind(&addr).unwrap_or_else(|e| {
                eprintln!("faultline-test-udp: cannot bind {addr}: {e}");
                std::process::exit(1)
            });
            // Wait up to 30 s for the first datagram, then a quiet second ends it.
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let mut first = [0u8; 2048];
            let r = match s.peek(&mut first) {
                Ok(_) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    receive(&s)
                }
                Err(_) => Received::default(),
            };
            println!(
                "received={} lost={} duplicates={} late={} damaged={} most_copies={}",
                r.seqs.len(),
                r.lost(sent),
                r.duplicates(),
                r.late(),
                r.damaged,
                r.most_copies()
            );
        }
        Some("send") => {
            let n = num(args.get(3)) as u32;
            let pace = Duration::from_micros(num(args.get(4)));
            let s = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| {
                eprintln!("faultline-test-udp: cannot bind a sender: {e}");
                std::process::exit(1)
            });
            let to = addr.parse().unwrap_or_else(|_| usage());
            send(&s, to, n, pace);
        }
        _ => usage(),
    }
}
