//! corrupt, duplicate, reorder and dns in the namespace lab: each fault on
//! host a (the NFQUEUE backend, IPv4, and IPv6 over ip6tables with the lab
//! hosts given fd00:77::/64 addresses), its effect measured at host b over
//! N ≥ 1000 UDP datagrams (or DNS lookups), then restored with no rule
//! (iptables or ip6tables) or queue left. The dns test also kills the agent with -9 mid-fault: the
//! rules stay but fail open (`--queue-bypass`), and the restarted agent
//! removes them from its journal. Needs root and the lab's tools: without
//! them each test prints why and returns, except under CI=true.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use faultline_tests::dns::{self, Lookup};
use faultline_tests::lab::{enter_netns, in_netns, lab_or_skip, Lab, LabHost, RunWatch};
use faultline_tests::packets::{
    add_ipv6, filter_chains as chains, udp6_counter, udp_counter, udp_exchange, udp_exchange_to,
};

/// One lab at a time: they share the machine's CPU, and the measured
/// fractions need the queue thread to keep up.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Datagrams per measurement.
const N: u32 = 2000;

fn experiment(b: &LabHost, fault: &str, duration: &str) -> String {
    format!(
        r#"name: packet-fault
hypothesis:
  probes:
    - name: b-http
      interval: 500ms
      http: {{ url: "http://{}:8080/" }}
baseline: 500ms
duration: {duration}
recovery: 1s
faults:
  - name: f
    targets: {{ labels: {{ host: a }} }}
    {fault}
"#,
        b.ip
    )
}

/// A lab of hosts a (zone a) and b (zone b), one lab at a time; `None`
/// when `test` skips. Bind the guard first so it is released last.
fn lab(test: &str) -> Option<(MutexGuard<'static, ()>, Lab, LabHost, LabHost)> {
    if !lab_or_skip(test) {
        return None;
    }
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    let (a, b) = (lab.host("a").clone(), lab.host("b").clone());
    Some((one, lab, a, b))
}

/// Submits `fault` on host a and waits until it is in place (observe).
fn inject(lab: &Lab, b: &LabHost, fault: &str, duration: &str) -> RunWatch {
    let mut run = lab.submit(&experiment(b, fault, duration));
    assert!(
        run.wait_phase("observe", Duration::from_secs(30)),
        "never reached observe"
    );
    run
}

/// The fault's only target in the report, once the run is over.
fn restored(run: faultline_tests::lab::RunWatch) -> String {
    let result = run.finish();
    let t = &result.report.faults[0].targets[0];
    assert_eq!(t.state, "restored", "{t:?}");
    t.detail.clone()
}

#[test]
fn corrupt_30_percent_drops_that_share_as_bad_checksums_at_the_receiver() {
    let Some((_one, lab, a, b)) = lab("corrupt_30_percent_drops_that_share_as_bad_checksums_at_the_receiver") else {
        return;
    };
    let run = inject(
        &lab,
        &b,
        "corrupt: { percent: 30%, protocol: udp, ports: [9101], to: { zones: [b] } }",
        "8s",
    );
    assert!(chains(&a.netns).contains("faultline-c-"), "{}", chains(&a.netns));
    let csum0 = udp_counter(&b.netns, "InCsumErrors");
    let r = udp_exchange(&a, &b, 9101, N, Duration::from_micros(500));
    let csum = udp_counter(&b.netns, "InCsumErrors") - csum0;
    let lost = r.lost(N);
    let share = lost as f64 * 100.0 / f64::from(N);
    eprintln!(
        "corrupt 30%: {lost} of {N} datagrams lost ({share:.1}%), {csum} bad checksums at b, {} damaged delivered",
        r.damaged
    );
    assert_eq!(r.damaged, 0, "a corrupted datagram was delivered");
    assert!((share - 30.0).abs() <= 5.0, "asked 30%, lost {share:.1}%");
    assert!(
        csum.abs_diff(lost) <= u64::from(N) / 100,
        "{lost} lost but {csum} checksum errors"
    );
    let detail = restored(run);
    assert!(detail.contains("affected"), "{detail}");
    assert_eq!(chains(&a.netns), "");
    lab.assert_clean();
}

#[test]
fn duplicate_20_percent_delivers_that_share_twice() {
    let Some((_one, lab, a, b)) = lab("duplicate_20_percent_delivers_that_share_twice") else {
        return;
    };
    let run = inject(
        &lab,
        &b,
        "duplicate: { percent: 20%, protocol: udp, ports: [9102], to: { zones: [b] } }",
        "8s",
    );
    let r = udp_exchange(&a, &b, 9102, N, Duration::from_micros(500));
    let dups = r.duplicates();
    let share = dups as f64 * 100.0 / f64::from(N);
    eprintln!(
        "duplicate 20%: {} of {N} lost, {dups} delivered twice ({share:.1}%), at most {} copies of one",
        r.lost(N),
        r.most_copies()
    );
    assert_eq!(r.lost(N), 0, "datagrams lost");
    assert!(r.most_copies() <= 2, "a datagram arrived more than twice");
    assert!((share - 20.0).abs() <= 4.0, "asked 20%, duplicated {share:.1}%");
    assert_eq!(r.damaged, 0);
    restored(run);
    assert_eq!(chains(&a.netns), "");
    lab.assert_clean();
}

#[test]
fn reorder_25_percent_with_a_20ms_gap_makes_that_share_arrive_late() {
    let Some((_one, lab, a, b)) = lab("reorder_25_percent_with_a_20ms_gap_makes_that_share_arrive_late") else {
        return;
    };
    let run = inject(
        &lab,
        &b,
        "reorder: { percent: 25%, gap: 20ms, protocol: udp, ports: [9103], to: { zones: [b] } }",
        "8s",
    );
    let r = udp_exchange(&a, &b, 9103, N, Duration::from_micros(500));
    // Late: arrived after a datagram sent after it.
    let late = r.late();
    let share = late as f64 * 100.0 / f64::from(N);
    eprintln!(
        "reorder 25% gap 20ms: {} of {N} delivered, {late} late ({share:.1}%)",
        r.seqs.len()
    );
    assert_eq!(r.seqs.len() as u32, N, "datagrams lost");
    assert!((share - 25.0).abs() <= 5.0, "asked 25%, {share:.1}% arrived late");
    restored(run);
    assert_eq!(chains(&a.netns), "");
    lab.assert_clean();
}

/// Starts the tiny DNS server in b on port 53 of its IPv4 address.
fn dns_server(b: &LabHost) -> dns::Server {
    dns_server_on(b, SocketAddrV4::new(b.ip, 53).into())
}

/// Starts the tiny DNS server in b on `addr`.
fn dns_server_on(b: &LabHost, addr: SocketAddr) -> dns::Server {
    let bns = b.netns.clone();
    let socket = std::thread::spawn(move || {
        enter_netns(&bns).expect("enter b");
        UdpSocket::bind(addr).expect("bind 53 in b")
    })
    .join()
    .unwrap();
    dns::Server::spawn(socket)
}

/// `n` lookups of each name from a, alternating; what each name got.
fn lookups(
    a: &LabHost,
    server: impl Into<SocketAddr>,
    names: &[&'static str],
    n: u16,
    timeout: Duration,
) -> HashMap<&'static str, Vec<Lookup>> {
    let ans = a.netns.clone();
    let server: SocketAddr = server.into();
    let names = names.to_vec();
    std::thread::spawn(move || {
        enter_netns(&ans).expect("enter a");
        let mut out: HashMap<&str, Vec<Lookup>> = HashMap::new();
        for i in 0..n {
            for name in &names {
                out.entry(name).or_default().push(dns::lookup(server, name, i, timeout));
            }
        }
        out
    })
    .join()
    .unwrap()
}

/// "490 × Rcode(3, ..), 10 × Timeout", for failure messages.
fn tally(lookups: &[Lookup]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in lookups {
        let k = format!("{l:?}");
        match counts.iter_mut().find(|(c, _)| *c == k) {
            Some((_, n)) => *n += 1,
            None => counts.push((k, 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn dns_nxdomain_fails_the_chosen_names_from_the_resolver_and_others_still_resolve() {
    let Some((_one, lab, a, b)) = lab("dns_nxdomain_fails_the_chosen_names_from_the_resolver_and_others_still_resolve")
    else {
        return;
    };
    let server = dns_server(&b);
    let resolver = SocketAddrV4::new(b.ip, 53);
    let run = inject(&lab, &b, "dns: { names: ['*.example.com'], action: nxdomain }", "10s");
    let t = Instant::now();
    let got = lookups(
        &a,
        resolver,
        &["db.example.com", "www.example.org"],
        500,
        Duration::from_secs(2),
    );
    let failed = got["db.example.com"]
        .iter()
        .filter(|l| matches!(l, Lookup::Rcode(3, from) if *from == std::net::SocketAddr::V4(resolver)))
        .count();
    let resolved = got["www.example.org"]
        .iter()
        .filter(|l| **l == Lookup::Address(dns::ANSWER))
        .count();
    eprintln!(
        "dns nxdomain: {failed}/500 lookups of db.example.com got NXDOMAIN from {resolver}, {resolved}/500 of www.example.org resolved, in {:?}; the server answered {}",
        t.elapsed(),
        server.answered.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(failed, 500, "db.example.com got: {}", tally(&got["db.example.com"]));
    assert_eq!(resolved, 500, "www.example.org got: {}", tally(&got["www.example.org"]));
    assert_eq!(
        server.answered.load(std::sync::atomic::Ordering::Relaxed),
        500,
        "chosen queries reached the resolver"
    );
    restored(run);
    // Restored: the name resolves again.
    let after = lookups(&a, resolver, &["db.example.com"], 1, Duration::from_secs(2));
    assert_eq!(after["db.example.com"], vec![Lookup::Address(dns::ANSWER)]);
    assert_eq!(chains(&a.netns), "");
    lab.assert_clean();
}

#[test]
fn dns_timeout_drops_the_queries_and_after_an_agent_kill_9_the_restart_removes_the_rules() {
    let Some((_one, mut lab, a, b)) =
        lab("dns_timeout_drops_the_queries_and_after_an_agent_kill_9_the_restart_removes_the_rules")
    else {
        return;
    };
    let _server = dns_server(&b);
    let resolver = SocketAddrV4::new(b.ip, 53);
    let run = inject(&lab, &b, "dns: { names: [db.example.com], action: timeout }", "30s");
    let got = lookups(
        &a,
        resolver,
        &["db.example.com", "other.example.com"],
        5,
        Duration::from_millis(500),
    );
    assert!(
        got["db.example.com"].iter().all(|l| *l == Lookup::Timeout),
        "{:?}",
        got["db.example.com"]
    );
    assert!(
        got["other.example.com"]
            .iter()
            .all(|l| *l == Lookup::Address(dns::ANSWER)),
        "{:?}",
        got["other.example.com"]
    );
    lab.kill_agent("a");
    // The rules outlive the agent but fail open: nobody holds the queue.
    assert!(chains(&a.netns).contains("faultline-n-"), "{}", chains(&a.netns));
    let open = lookups(&a, resolver, &["db.example.com"], 1, Duration::from_secs(2));
    assert_eq!(
        open["db.example.com"],
        vec![Lookup::Address(dns::ANSWER)],
        "not failing open"
    );
    let t = Instant::now();
    lab.start_agent("a");
    let pid = lab.agent_pid("a").expect("restarted");
    let info = lab
        .wait_registered("a", pid, Duration::from_secs(20))
        .expect("the restarted agent registers");
    eprintln!(
        "dns: agent kill -9, restart removed the rules before registering ({:?})",
        t.elapsed()
    );
    assert_eq!(chains(&a.netns), "", "rules left after the restart");
    let cleaned = info.cleaned.join("\n");
    assert!(cleaned.contains("restored dns fault"), "{cleaned}");
    let result = run.finish();
    let t = &result.report.faults[0].targets[0];
    assert_ne!(t.state, "injected", "{t:?}");
    lab.assert_clean();
}

#[test]
fn backend_netem_on_a_kernel_without_sch_netem_is_refused_before_injecting_and_names_nfqueue() {
    let Some((_one, lab, a, b)) =
        lab("backend_netem_on_a_kernel_without_sch_netem_is_refused_before_injecting_and_names_nfqueue")
    else {
        return;
    };
    // This machine's kernel has no sch_netem (see the README): the agents
    // advertise `corrupt:nfqueue` only, so the planner refuses.
    let result = lab
        .submit(&experiment(
            &b,
            "corrupt: { percent: 30%, protocol: udp, ports: [9104], to: { zones: [b] }, backend: netem }",
            "2s",
        ))
        .finish();
    let reason = result.report.reason.clone();
    eprintln!("backend: netem here: exit {}, {reason}", result.exit_code);
    assert_eq!(result.exit_code, 5, "{reason}");
    assert!(
        reason.contains("backend: netem needs the kernel's sch_netem; use backend: nfqueue"),
        "{reason}"
    );
    assert!(reason.contains("corrupt:nfqueue"), "{reason}");
    assert!(
        result.report.faults.iter().all(|f| f.targets.is_empty()),
        "nothing injected"
    );
    assert_eq!(chains(&a.netns), "");
    lab.assert_clean();
}

/// A lab as [`lab`] makes it, with a and b given IPv6 addresses too
/// (fd00:77::11 and fd00:77::12); b's is returned. The addresses go with
/// the lab's namespaces.
fn lab6(test: &str) -> Option<(MutexGuard<'static, ()>, Lab, LabHost, LabHost, Ipv6Addr)> {
    let (one, lab, a, b) = lab(test)?;
    add_ipv6(&a, 0);
    let b6 = add_ipv6(&b, 1);
    Some((one, lab, a, b, b6))
}

/// faultline lines of ip6tables' filter table in `netns`.
fn ip6_chains(netns: &str) -> String {
    in_netns(netns, &["ip6tables-legacy-save", "-t", "filter"])
        .lines()
        .filter(|l| l.contains("faultline"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// faultline lines of iptables' (IPv4) filter table in `netns`.
fn ip4_chains(netns: &str) -> String {
    in_netns(netns, &["iptables-legacy-save", "-t", "filter"])
        .lines()
        .filter(|l| l.contains("faultline"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Injects `fault` on a, checks that it took an ip6tables chain with
/// `prefix` and no iptables one, and sends N datagrams to `to` (IPv6).
fn over_ipv6(
    lab: &Lab,
    a: &LabHost,
    b: &LabHost,
    fault: &str,
    prefix: &str,
    to: SocketAddr,
) -> (RunWatch, faultline_tests::packets::Received) {
    let run = inject(lab, b, fault, "8s");
    let v6 = ip6_chains(&a.netns);
    assert!(v6.contains(prefix), "no {prefix} chain in ip6tables: {v6:?}");
    assert_eq!(ip4_chains(&a.netns), "", "an IPv6 destination took an iptables chain");
    let r = udp_exchange_to(a, b, to, N, Duration::from_micros(500));
    (run, r)
}

#[test]
fn over_ipv6_corrupt_duplicate_and_reorder_hit_their_shares_through_ip6tables_and_leave_no_chain() {
    let Some((_one, lab, a, b, b6)) =
        lab6("over_ipv6_corrupt_duplicate_and_reorder_hit_their_shares_through_ip6tables_and_leave_no_chain")
    else {
        return;
    };
    let to = |port: u16| SocketAddr::from((b6, port));
    // Neighbour discovery before any fault: the first datagrams of a
    // measurement must not wait on it.
    let warm = udp_exchange_to(&a, &b, to(9110), 10, Duration::from_millis(1));
    assert_eq!(warm.lost(10), 0, "IPv6 between a and b does not work: {warm:?}");

    // corrupt 30%: the flipped payload bit fails the (mandatory) UDP checksum.
    let csum0 = udp6_counter(&b.netns, "Udp6InCsumErrors");
    let (run, r) = over_ipv6(
        &lab,
        &a,
        &b,
        &format!("corrupt: {{ percent: 30%, protocol: udp, ports: [9111], to: {{ cidrs: ['{b6}/128'] }} }}"),
        "faultline-c-",
        to(9111),
    );
    let csum = udp6_counter(&b.netns, "Udp6InCsumErrors") - csum0;
    let lost = r.lost(N);
    let share = lost as f64 * 100.0 / f64::from(N);
    eprintln!(
        "IPv6 corrupt 30%: {lost} of {N} datagrams lost ({share:.1}%), {csum} bad checksums at b, {} damaged delivered",
        r.damaged
    );
    assert_eq!(r.damaged, 0, "a corrupted datagram was delivered");
    assert!((share - 30.0).abs() <= 5.0, "asked 30%, lost {share:.1}%");
    assert!(
        csum.abs_diff(lost) <= u64::from(N) / 100,
        "{lost} lost but {csum} checksum errors"
    );
    let detail = restored(run);
    assert!(detail.contains("ip6tables filter chain faultline-c-"), "{detail}");
    assert_eq!(chains(&a.netns), "");

    // duplicate 20%: the copies go out through a raw IPv6 socket.
    let (run, r) = over_ipv6(
        &lab,
        &a,
        &b,
        &format!("duplicate: {{ percent: 20%, protocol: udp, ports: [9112], to: {{ cidrs: ['{b6}'] }} }}"),
        "faultline-d-",
        to(9112),
    );
    let dups = r.duplicates();
    let share = dups as f64 * 100.0 / f64::from(N);
    eprintln!(
        "IPv6 duplicate 20%: {} of {N} lost, {dups} delivered twice ({share:.1}%), at most {} copies of one",
        r.lost(N),
        r.most_copies()
    );
    assert_eq!(r.lost(N), 0, "datagrams lost");
    assert!(r.most_copies() <= 2, "a datagram arrived more than twice");
    assert!((share - 20.0).abs() <= 4.0, "asked 20%, duplicated {share:.1}%");
    assert_eq!(r.damaged, 0);
    restored(run);
    assert_eq!(chains(&a.netns), "");

    // reorder 25% with a 20 ms gap.
    let (run, r) = over_ipv6(
        &lab,
        &a,
        &b,
        &format!("reorder: {{ percent: 25%, gap: 20ms, protocol: udp, ports: [9113], to: {{ cidrs: ['{b6}/128'] }} }}"),
        "faultline-r-",
        to(9113),
    );
    let late = r.late();
    let share = late as f64 * 100.0 / f64::from(N);
    eprintln!(
        "IPv6 reorder 25% gap 20ms: {} of {N} delivered, {late} late ({share:.1}%)",
        r.seqs.len()
    );
    assert_eq!(r.seqs.len() as u32, N, "datagrams lost");
    assert!((share - 25.0).abs() <= 5.0, "asked 25%, {share:.1}% arrived late");
    restored(run);
    assert_eq!(chains(&a.netns), "");
    assert_eq!(ip6_chains(&a.netns), "");
    lab.assert_clean();
}

#[test]
fn dns_servfail_answers_the_chosen_queries_to_an_ipv6_resolver_over_ipv6() {
    let Some((_one, lab, a, b, b6)) = lab6("dns_servfail_answers_the_chosen_queries_to_an_ipv6_resolver_over_ipv6")
    else {
        return;
    };
    let resolver = SocketAddr::from((b6, 53));
    let server = dns_server_on(&b, resolver);
    let run = inject(
        &lab,
        &b,
        &format!("dns: {{ names: ['*.example.com'], action: servfail, resolvers: ['{b6}'] }}"),
        "10s",
    );
    assert!(
        ip6_chains(&a.netns).contains("faultline-n-"),
        "{}",
        ip6_chains(&a.netns)
    );
    assert_eq!(ip4_chains(&a.netns), "", "an IPv6 resolver took an iptables chain");
    let got = lookups(
        &a,
        resolver,
        &["db.example.com", "www.example.org"],
        300,
        Duration::from_secs(2),
    );
    let failed = got["db.example.com"]
        .iter()
        .filter(|l| matches!(l, Lookup::Rcode(2, from) if *from == resolver))
        .count();
    let resolved = got["www.example.org"]
        .iter()
        .filter(|l| **l == Lookup::Address(dns::ANSWER))
        .count();
    let answered = server.answered.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "IPv6 dns servfail: {failed}/300 lookups of db.example.com got SERVFAIL from {resolver}, {resolved}/300 of www.example.org resolved; the server answered {answered}"
    );
    assert_eq!(failed, 300, "db.example.com got: {}", tally(&got["db.example.com"]));
    assert_eq!(resolved, 300, "www.example.org got: {}", tally(&got["www.example.org"]));
    assert_eq!(answered, 300, "chosen queries reached the resolver");
    let detail = restored(run);
    assert!(detail.contains("ip6tables filter chain faultline-n-"), "{detail}");
    let after = lookups(&a, resolver, &["db.example.com"], 1, Duration::from_secs(2));
    assert_eq!(after["db.example.com"], vec![Lookup::Address(dns::ANSWER)]);
    assert_eq!(chains(&a.netns), "");
    lab.assert_clean();
}
