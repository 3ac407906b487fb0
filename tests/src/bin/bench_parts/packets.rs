//! `faultline-bench packets`: requested vs achieved for the packet faults
//! and bandwidth, in the namespace lab (real agent binaries, NFQUEUE and
//! tbf on this kernel): corrupt (share of UDP datagrams lost as bad
//! checksums at the receiver), duplicate (share delivered twice), reorder
//! (share arriving late), the same three over IPv6 (ip6tables chains; the
//! lab hosts get fd00:77::/64 addresses), and bandwidth (bits per second
//! through the tbf qdisc under one saturating TCP stream).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use faultline_tests::lab::{enter_netns, in_netns, Lab, LabHost};
use faultline_tests::packets::{add_ipv6, udp6_counter, udp_counter, udp_exchange, udp_exchange_to};

fn experiment(b: &LabHost, fault: &str) -> String {
    format!(
        r#"name: bench-packets
hypothesis:
  probes:
    - name: b-http
      interval: 500ms
      http: {{ url: "http://{}:8080/" }}
baseline: 500ms
duration: 60s
recovery: 500ms
faults:
  - name: f
    targets: {{ labels: {{ host: a }} }}
    {fault}
"#,
        b.ip
    )
}

/// Runs `fault` on a, calls `measure` while it holds, then aborts the run
/// (which restores the fault) and returns what `measure` said.
fn with_fault<T>(lab: &Lab, fault: &str, measure: impl FnOnce() -> T) -> T {
    let b = lab.host("b").clone();
    let mut run = lab.submit(&experiment(&b, fault));
    assert!(
        run.wait_phase("observe", Duration::from_secs(30)),
        "never reached observe"
    );
    let out = measure();
    let run_id = run.run_id().expect("run id");
    let h = lab.harness().clone();
    let _ = lab.block_on(async move {
        let mut c = h.control().await;
        c.abort(faultline_proto::v1::AbortRequest {
            run_id,
            reason: "bench row done".into(),
        })
        .await
    });
    let result = run.finish();
    let state = &result.report.faults[0].targets[0].state;
    assert_eq!(state, "restored", "{fault}");
    out
}

/// Bytes the root qdisc of eth0 in `netns` has sent.
fn qdisc_sent(netns: &str) -> u64 {
    let out = in_netns(netns, &["tc", "-s", "qdisc", "show", "dev", "eth0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "Sent")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One saturating TCP stream a → b for 4 s; bits per second through a's
/// qdisc over the middle 2 s.
fn tcp_rate(a: &LabHost, b: &LabHost, port: u16) -> f64 {
    let (ans, bns, bip) = (a.netns.clone(), b.netns.clone(), b.ip);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = std::thread::spawn(move || {
        enter_netns(&bns).expect("enter b");
        let l = TcpListener::bind((bip, port)).expect("bind sink");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("sink ready");
    let sender = std::thread::spawn(move || {
        enter_netns(&ans).expect("enter a");
        let mut s = TcpStream::connect((bip, port)).expect("connect");
        let buf = vec![0x5au8; 64 << 10];
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end && s.write_all(&buf).is_ok() {}
    });
    std::thread::sleep(Duration::from_millis(800));
    let (t0, s0) = (Instant::now(), qdisc_sent(&a.netns));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, s1) = (Instant::now(), qdisc_sent(&a.netns));
    sender.join().expect("sender");
    sink.join().expect("sink");
    (s1 - s0) as f64 * 8.0 / (t1 - t0).as_secs_f64()
}

pub fn run(n: u32) {
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    let (a, b) = (lab.host("a").clone(), lab.host("b").clone());
    let pace = Duration::from_micros(500);
    println!("packets: {n} UDP datagrams of 100 bytes per row, one every 0.5 ms, lab host a → b");
    println!("{:<34} {:>10} {:>10} {:>8}", "fault", "requested", "achieved", "error");
    let row = |name: String, req: f64, got: f64, unit: &str| {
        println!(
            "{name:<34} {req:>9.1}{unit} {got:>9.2}{unit} {:>+7.2}{}",
            got - req,
            if unit == "%" { " pt" } else { "" }
        );
    };
    let mut port = 9200;
    for pct in [10.0, 30.0, 50.0] {
        port += 1;
        let (lost, csum) = with_fault(
            &lab,
            &format!("corrupt: {{ percent: {pct}, protocol: udp, ports: [{port}], to: {{ zones: [b] }} }}"),
            || {
                let c0 = udp_counter(&b.netns, "InCsumErrors");
                let r = udp_exchange(&a, &b, port, n, pace);
                (r.lost(n), udp_counter(&b.netns, "InCsumErrors") - c0)
            },
        );
        row(
            format!("corrupt {pct}% (lost; {csum} bad csums)"),
            pct,
            lost as f64 * 100.0 / f64::from(n),
            "%",
        );
    }
    for pct in [10.0, 20.0, 50.0] {
        port += 1;
        let dups = with_fault(
            &lab,
            &format!("duplicate: {{ percent: {pct}, protocol: udp, ports: [{port}], to: {{ zones: [b] }} }}"),
            || udp_exchange(&a, &b, port, n, pace).duplicates(),
        );
        row(
            format!("duplicate {pct}% (twice)"),
            pct,
            dups as f64 * 100.0 / f64::from(n),
            "%",
        );
    }
    for pct in [10.0, 25.0] {
        port += 1;
        let late = with_fault(
            &lab,
            &format!("reorder: {{ percent: {pct}, gap: 20ms, protocol: udp, ports: [{port}], to: {{ zones: [b] }} }}"),
            || udp_exchange(&a, &b, port, n, pace).late(),
        );
        row(
            format!("reorder {pct}% gap 20ms (late)"),
            pct,
            late as f64 * 100.0 / f64::from(n),
            "%",
        );
    }
    // IPv6, over the nfqueue backend's ip6tables chains.
    add_ipv6(&a, 0);
    let b6 = add_ipv6(&b, 1);
    let to6 = |port: u16| SocketAddr::from((b6, port));
    // Neighbour discovery before the first measured datagram.
    let _ = udp_exchange_to(&a, &b, to6(9290), 10, Duration::from_millis(1));
    port += 1;
    let (lost, csum) = with_fault(
        &lab,
        &format!("corrupt: {{ percent: 30, protocol: udp, ports: [{port}], to: {{ cidrs: ['{b6}'] }} }}"),
        || {
            let c0 = udp6_counter(&b.netns, "Udp6InCsumErrors");
            let r = udp_exchange_to(&a, &b, to6(port), n, pace);
            (r.lost(n), udp6_counter(&b.netns, "Udp6InCsumErrors") - c0)
        },
    );
    row(
        format!("IPv6 corrupt 30% (lost; {csum} csums)"),
        30.0,
        lost as f64 * 100.0 / f64::from(n),
        "%",
    );
    port += 1;
    let dups = with_fault(
        &lab,
        &format!("duplicate: {{ percent: 20, protocol: udp, ports: [{port}], to: {{ cidrs: ['{b6}'] }} }}"),
        || udp_exchange_to(&a, &b, to6(port), n, pace).duplicates(),
    );
    row(
        "IPv6 duplicate 20% (twice)".into(),
        20.0,
        dups as f64 * 100.0 / f64::from(n),
        "%",
    );
    port += 1;
    let late = with_fault(
        &lab,
        &format!("reorder: {{ percent: 25, gap: 20ms, protocol: udp, ports: [{port}], to: {{ cidrs: ['{b6}'] }} }}"),
        || udp_exchange_to(&a, &b, to6(port), n, pace).late(),
    );
    row(
        "IPv6 reorder 25% gap 20ms (late)".into(),
        25.0,
        late as f64 * 100.0 / f64::from(n),
        "%",
    );
    for mbit in [8.0, 20.0] {
        port += 1;
        let bps = with_fault(
            &lab,
            &format!("bandwidth: {{ interface: eth0, rate: {mbit}mbit }}"),
            || tcp_rate(&a, &b, port),
        );
        let got = bps / 1e6;
        println!(
            "{:<34} {mbit:>7.1}Mb {got:>7.3}Mb {:>+7.2}%",
            format!("bandwidth {mbit} Mbit/s (tbf)"),
            (got - mbit) / mbit * 100.0
        );
    }
    lab.assert_clean();
    println!("lab clean after every restore");
}
