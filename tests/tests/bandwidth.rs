//! bandwidth in the namespace lab: a tbf limit on host a's eth0, measured
//! with a TCP stream from a to b (bytes through the qdisc per second, and
//! the goodput the receiver saw), then restored. Needs root and the lab's
//! tools: without them it prints why and returns, except under CI=true.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_tests::lab::{enter_netns, in_netns, lab_or_skip, Lab};

/// Bytes the root qdisc of eth0 in `netns` has sent.
fn qdisc_sent(netns: &str) -> Option<u64> {
    let out = in_netns(netns, &["tc", "-s", "qdisc", "show", "dev", "eth0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "Sent")
        .nth(1)
        .and_then(|n| n.parse().ok())
}

#[test]
fn bandwidth_limits_egress_to_the_requested_rate_and_restore_removes_the_qdisc() {
    if !lab_or_skip("bandwidth_limits_egress_to_the_requested_rate_and_restore_removes_the_qdisc") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    let (a, b) = (lab.host("a").clone(), lab.host("b").clone());
    let rate_bps: u64 = 8_000_000;
    let mut run = lab.submit(&format!(
        r#"name: bandwidth
hypothesis:
  probes:
    - name: b-http
      interval: 500ms
      http: {{ url: "http://{}:8080/" }}
baseline: 500ms
duration: 8s
recovery: 1s
faults:
  - name: slow-a
    targets: {{ labels: {{ host: a }} }}
    bandwidth: {{ interface: eth0, rate: 8mbit }}
"#,
        b.ip
    ));
    assert!(
        run.wait_phase("observe", Duration::from_secs(30)),
        "never reached observe"
    );
    let tc = in_netns(&a.netns, &["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(tc.contains("tbf") && tc.contains("qdisc tbf fb"), "{tc}");

    // A TCP sink in b, a sender in a (each thread in its namespace).
    let received = Arc::new(AtomicU64::new(0));
    let (rx, bip) = (received.clone(), b.ip);
    let bns = b.netns.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = std::thread::spawn(move || {
        enter_netns(&bns).expect("enter b");
        let l = TcpListener::bind((bip, 9099)).expect("bind sink");
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            rx.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("sink ready");
    let ans = a.netns.clone();
    let sender = std::thread::spawn(move || {
        enter_netns(&ans).expect("enter a");
        let mut s = TcpStream::connect((bip, 9099)).expect("connect");
        let buf = vec![0x5au8; 64 << 10];
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    // Measure over the middle of the transfer, after the bucket's burst.
    std::thread::sleep(Duration::from_millis(800));
    let (t0, s0, r0) = (
        Instant::now(),
        qdisc_sent(&a.netns).expect("tc -s"),
        received.load(Ordering::Relaxed),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (t1, s1, r1) = (
        Instant::now(),
        qdisc_sent(&a.netns).expect("tc -s"),
        received.load(Ordering::Relaxed),
    );
    sender.join().unwrap();
    sink.join().unwrap();
    let secs = (t1 - t0).as_secs_f64();
    let wire = (s1 - s0) as f64 * 8.0 / secs;
    let goodput = (r1 - r0) as f64 * 8.0 / secs;
    let err = (wire - rate_bps as f64) / rate_bps as f64 * 100.0;
    eprintln!(
        "bandwidth 8mbit: {:.3} Mbit/s through the qdisc ({err:+.2}%), goodput {:.3} Mbit/s",
        wire / 1e6,
        goodput / 1e6
    );
    assert!(
        err.abs() <= 5.0,
        "asked 8 Mbit/s, the qdisc sent {:.3} Mbit/s",
        wire / 1e6
    );

    let result = run.finish();
    let t = &result.report.faults[0].targets[0];
    assert_eq!(t.state, "restored", "{t:?}");
    let tc = in_netns(&a.netns, &["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(!tc.contains("tbf"), "qdisc left: {tc}");
    lab.assert_clean();
}
