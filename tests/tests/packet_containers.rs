//! A packet fault inside a container, against the machine's real Docker
//! Engine (images built from this host's files, as in `containers.rs`):
//! `duplicate` 20 % on container a's UDP towards container c, applied in
//! a's network namespace by an in-process agent on the host (nfqueue; the
//! chain, the queue socket and the raw socket that sends the copies all in
//! a's namespace). Measured at c over 2000 datagrams sent from a's
//! namespace; the same datagrams sent from the host are not duplicated;
//! after the run nothing of the fault is left in a's namespace. And `dns`
//! (nxdomain for `*.example.com`) in container a: its lookups of a chosen
//! name fail from the resolver's address, other names and the host's
//! lookups resolve. With `CI=true` a missing engine fails.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use faultline_tests::dns::{self, Lookup};
use faultline_tests::docker::{docker_or_skip, DockerLab};
use faultline_tests::packets::{receive, send, Received};
use faultline_tests::Harness;

const TEST_HTTP: &str = env!("CARGO_BIN_EXE_faultline-test-http");
const PORT: u16 = 9102;
const N: u32 = 2000;

/// Runs `f` in the network namespace of process `pid`, or on the host's
/// when `None`.
fn in_netns_of<T: Send>(pid: Option<u32>, f: impl FnOnce() -> T + Send) -> T {
    match pid {
        Some(pid) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
            faultline_agent::runtime::netns::enter(&ns, f).unwrap()
        }
        None => f(),
    }
}

/// `n` numbered datagrams from the namespace of `from` (the host's with
/// `None`) to `to` (an address in the namespace of `to_pid`), one every
/// 0.5 ms; what arrived, until a quiet second.
fn exchange(from: Option<u32>, to_pid: u32, to: &str, n: u32) -> Received {
    let to: std::net::SocketAddr = format!("{to}:{PORT}").parse().unwrap();
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = s.spawn(move || {
            in_netns_of(Some(to_pid), || {
                let sock = UdpSocket::bind(to).expect("bind the receiver");
                sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                ready_tx.send(()).unwrap();
                receive(&sock)
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("receiver ready");
        s.spawn(move || {
            in_netns_of(from, || {
                let sock = UdpSocket::bind("0.0.0.0:0").expect("bind the sender");
                send(&sock, to, n, Duration::from_micros(500));
            })
        })
        .join()
        .unwrap();
        receiver.join().unwrap()
    })
}

/// faultline's iptables lines (legacy and nft) in the namespace of `pid`.
fn chains(pid: u32) -> String {
    ["iptables-legacy-save", "iptables-nft-save"]
        .iter()
        .filter_map(|tool| {
            std::process::Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n", tool, "-t", "filter"])
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect::<String>()
        .lines()
        .filter(|l| l.contains("faultline") || l.contains("NFQUEUE"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_in_a_containers_network_namespace_duplicates_its_packets_and_not_the_hosts() {
    if !docker_or_skip("duplicate_in_a_containers_network_namespace_duplicates_its_packets_and_not_the_hosts") {
        return;
    }
    let mut lab = DockerLab::with_bins("dup", &[std::path::Path::new(TEST_HTTP)]);
    let serve = &["/bin/faultline-test-http", "--listen", "0.0.0.0:8080"];
    lab.run("a", &[], serve);
    lab.run("c", &[], serve);
    let ((ip_a, _), (ip_c, _)) = (lab.addr("a"), lab.addr("c"));
    let (pid_a, pid_c) = (lab.pid("a"), lab.pid("c"));
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let h = std::sync::Arc::new(h);
    let yaml = format!(
        r#"name: packets-in-a-container
hypothesis:
  probes:
    - name: web
      interval: 200ms
      http: {{ url: "http://{ip_a}:8080/" }}
baseline: 200ms
duration: 10s
recovery: 500ms
faults:
  - name: f
    targets: {{ containers: {{ name: "^{}-a$" }} }}
    duplicate: {{ percent: 20%, protocol: udp, ports: [{PORT}], to: {{ cidrs: [{ip_c}/32] }} }}
"#,
        lab.prefix
    );
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let (in_place, from_a, from_host) = tokio::task::block_in_place(|| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) && !chains(pid_a).contains("faultline-d-") {
            std::thread::sleep(Duration::from_millis(50));
        }
        let in_place = chains(pid_a);
        (
            in_place,
            exchange(Some(pid_a), pid_c, &ip_c, N),
            exchange(None, pid_c, &ip_c, 500),
        )
    });
    let r = run.await.unwrap().unwrap();
    let t = &r.report.faults[0].targets[0];
    let share = from_a.duplicates() as f64 * 100.0 / f64::from(N);
    println!(
        "duplicate 20% in container a: {} of {N} from a delivered twice ({share:.1}%), {} lost; from the host {} of 500 twice; {t:?}",
        from_a.duplicates(),
        from_a.lost(N),
        from_host.duplicates()
    );
    assert!(
        in_place.contains("faultline-d-"),
        "no chain in a's namespace: {in_place}"
    );
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.state, "restored", "{t:?}");
    assert!(t.detail.contains("in net:["), "{t:?}");
    assert_eq!(from_a.lost(N), 0, "datagrams lost");
    assert!(from_a.most_copies() <= 2);
    assert!((share - 20.0).abs() <= 4.0, "asked 20%, duplicated {share:.1}%");
    assert_eq!(
        (from_host.duplicates(), from_host.lost(500)),
        (0, 0),
        "the host's packets were touched"
    );
    assert_eq!(chains(pid_a), "", "left in a's namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_in_a_containers_network_namespace_fails_its_lookups_and_not_the_hosts() {
    if !docker_or_skip("dns_in_a_containers_network_namespace_fails_its_lookups_and_not_the_hosts") {
        return;
    }
    let mut lab = DockerLab::with_bins("dns", &[std::path::Path::new(TEST_HTTP)]);
    let serve = &["/bin/faultline-test-http", "--listen", "0.0.0.0:8080"];
    lab.run("a", &[], serve);
    lab.run("c", &[], serve);
    let ((ip_a, _), (ip_c, _)) = (lab.addr("a"), lab.addr("c"));
    let (pid_a, pid_c) = (lab.pid("a"), lab.pid("c"));
    // The resolver: a tiny DNS server on c's address, in c's namespace.
    let resolver: std::net::SocketAddrV4 = format!("{ip_c}:53").parse().unwrap();
    let socket = in_netns_of(Some(pid_c), || UdpSocket::bind(resolver).expect("bind 53 in c"));
    let server = dns::Server::spawn(socket);
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let h = std::sync::Arc::new(h);
    let yaml = format!(
        r#"name: dns-in-a-container
hypothesis:
  probes:
    - name: web
      interval: 200ms
      http: {{ url: "http://{ip_a}:8080/" }}
baseline: 200ms
duration: 8s
recovery: 500ms
faults:
  - name: f
    targets: {{ containers: {{ name: "^{}-a$" }} }}
    dns: {{ names: ['*.example.com'], action: nxdomain }}
"#,
        lab.prefix
    );
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let lookups = |pid: Option<u32>, name: &'static str, n: u16| -> Vec<Lookup> {
        in_netns_of(pid, move || {
            (0..n)
                .map(|i| dns::lookup(resolver, name, i, Duration::from_secs(2)))
                .collect()
        })
    };
    let (chosen, other, host) = tokio::task::block_in_place(|| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) && !chains(pid_a).contains("faultline-n-") {
            std::thread::sleep(Duration::from_millis(50));
        }
        (
            lookups(Some(pid_a), "db.example.com", 100),
            lookups(Some(pid_a), "www.example.org", 100),
            lookups(None, "db.example.com", 20),
        )
    });
    let r = run.await.unwrap().unwrap();
    let t = &r.report.faults[0].targets[0];
    let failed = chosen
        .iter()
        .filter(|l| matches!(l, Lookup::Rcode(3, from) if *from == std::net::SocketAddr::V4(resolver)))
        .count();
    let resolved = |v: &[Lookup]| v.iter().filter(|l| **l == Lookup::Address(dns::ANSWER)).count();
    println!(
        "dns nxdomain in container a: {failed}/100 lookups of db.example.com got NXDOMAIN from {resolver}, {}/100 of www.example.org resolved, {}/20 from the host resolved; {t:?}",
        resolved(&other),
        resolved(&host)
    );
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.state, "restored", "{t:?}");
    assert_eq!(failed, 100, "{chosen:?}");
    assert_eq!(resolved(&other), 100, "{other:?}");
    assert_eq!(resolved(&host), 20, "the host's lookups were touched: {host:?}");
    assert_eq!(
        server.answered.load(std::sync::atomic::Ordering::Relaxed),
        120,
        "the chosen queries of a reached the resolver"
    );
    assert_eq!(chains(pid_a), "", "left in a's namespace");
}
