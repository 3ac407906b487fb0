//! Network faults on real kernels: hosts in network namespaces running the
//! real agent binary (see `faultline_tests::lab`). These need root; they
//! skip with a reason without it, and fail under `CI=true`.
//!
//! Every test ends by proving the hosts are clean: no faultline iptables
//! chain, nftables table, qdisc or NFQUEUE queue on any of them.

use std::time::Duration;

use faultline_tests::lab::{lab_or_skip, median, percentile, success_rate, HostSpec, Lab};

const PHASE_WAIT: Duration = Duration::from_secs(30);

fn ms(d: Option<Duration>) -> f64 {
    d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
}

/// An experiment with one fault and a probe of host b's service from the
/// coordinator (whose traffic every network fault exempts).
fn experiment(name: &str, duration: &str, fault: &str) -> String {
    format!(
        r#"name: {name}
hypothesis:
  description: host b keeps answering the coordinator
  probes:
    - name: b-http
      interval: 200ms
      http: {{ url: "http://10.77.0.12:8080/" }}
      tolerances:
        - success_rate: "100%"
baseline: 1s
duration: {duration}
recovery: 3s
faults:
{fault}"#
    )
}

#[test]
fn latency_on_one_egress_path_delays_only_that_path_and_goes_away() {
    if !lab_or_skip("latency_on_one_egress_path_delays_only_that_path_and_goes_away") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let b = lab.host("b").http();
    let gap = Duration::from_millis(50);
    let timeout = Duration::from_secs(1);
    let before_ab = lab.connect_samples("a", b, 20, gap, timeout);
    let before_cb = lab.connect_samples("c", b, 20, gap, timeout);
    assert_eq!(success_rate(&before_ab), 1.0, "a -> b must work before the fault");

    let mut run = lab.submit(&experiment(
        "latency-b-to-a",
        "8s",
        "  - name: slow-b-to-a\n    targets: { labels: { host: b } }\n    latency:\n      delay: 100ms\n      to: { zones: [a] }\n",
    ));
    assert!(run.wait_phase("observe", PHASE_WAIT), "the run never reached observe");
    let during_ab = lab.connect_samples("a", b, 30, Duration::from_millis(150), timeout);
    let during_cb = lab.connect_samples("c", b, 20, gap, timeout);
    let result = run.finish();
    let after_ab = lab.connect_samples("a", b, 20, gap, timeout);

    let added = ms(median(&during_ab)) - ms(median(&before_ab));
    eprintln!(
        "latency 100ms a->b: before p50 {:.2} ms; during p50 {:.2} ms p99 {:.2} ms (added p50 {added:.2} ms, p99 {:.2} ms); after p50 {:.2} ms; c->b during p50 {:.2} ms (before {:.2} ms); lab set-up {:?}",
        ms(median(&before_ab)),
        ms(median(&during_ab)),
        ms(percentile(&during_ab, 99.0)),
        ms(percentile(&during_ab, 99.0)) - ms(percentile(&before_ab, 99.0)),
        ms(median(&after_ab)),
        ms(median(&during_cb)),
        ms(median(&before_cb)),
        lab.setup_time,
    );
    assert_eq!(
        result.exit_code, 0,
        "run outcome: {} {}",
        result.report.outcome, result.report.reason
    );
    let t = &result.report.faults[0].targets[0];
    assert_eq!(t.agent_id, "b");
    assert_eq!(t.backend, "nfqueue", "this kernel has no sch_netem: {}", t.detail);
    assert_eq!(t.state, "restored");
    assert_eq!(t.peers, vec!["10.77.0.11"]);
    assert!(t.packets_delayed.unwrap_or(0) > 0, "packets were delayed: {t:?}");
    assert_eq!(success_rate(&during_ab), 1.0, "delay must not drop: {during_ab:?}");
    assert!(
        (added - 100.0).abs() <= 10.0,
        "added median latency {added:.2} ms, wanted 100 ± 10"
    );
    assert!(
        ms(median(&during_cb)) < ms(median(&before_cb)) + 10.0,
        "c -> b must be untouched"
    );
    assert!(
        ms(median(&after_ab)) < ms(median(&before_ab)) + 10.0,
        "a -> b back to baseline"
    );
    lab.assert_clean();
    let teardown = lab.teardown();
    eprintln!("lab tear-down {teardown:?}");
}

#[test]
fn loss_half_of_the_packets_lowers_the_success_rate() {
    if !lab_or_skip("loss_half_of_the_packets_lowers_the_success_rate") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    let b = lab.host("b").http();
    // A connect that loses its SYN-ACK retries after 1 s: past this timeout.
    let timeout = Duration::from_millis(500);
    let before = lab.connect_samples("a", b, 20, Duration::from_millis(50), timeout);
    let mut run = lab.submit(&experiment(
        "loss-b-to-a",
        "10s",
        "  - name: lossy-b-to-a\n    targets: { labels: { host: b } }\n    latency:\n      loss: \"50%\"\n      to: { zones: [a] }\n      backend: nfqueue\n",
    ));
    assert!(run.wait_phase("observe", PHASE_WAIT));
    let during = lab.connect_samples("a", b, 40, Duration::from_millis(20), timeout);
    let result = run.finish();
    eprintln!(
        "loss 50%: success before {:.0}%, during {:.0}%",
        success_rate(&before) * 100.0,
        success_rate(&during) * 100.0
    );
    assert_eq!(result.exit_code, 0, "{}", result.report.reason);
    assert_eq!(success_rate(&before), 1.0);
    // 40 samples at p = 0.5: below 80% unless something is wrong (p < 1e-4).
    assert!(success_rate(&during) < 0.8, "during: {during:?}");
    assert!(result.report.faults[0].targets[0].packets_dropped.unwrap_or(0) > 0);
    lab.assert_clean();
}

#[test]
fn zone_outage_cuts_the_zone_off_keeps_its_agent_and_restores() {
    if !lab_or_skip("zone_outage_cuts_the_zone_off_keeps_its_agent_and_restores") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let (a, b, c) = (lab.host("a").http(), lab.host("b").http(), lab.host("c").http());
    let t = Duration::from_millis(300);
    let g = Duration::from_millis(20);
    let pairs = |lab: &Lab| {
        [
            ("a->b", success_rate(&lab.connect_samples("a", b, 5, g, t))),
            ("b->a", success_rate(&lab.connect_samples("b", a, 5, g, t))),
            ("c->b", success_rate(&lab.connect_samples("c", b, 5, g, t))),
            ("b->c", success_rate(&lab.connect_samples("b", c, 5, g, t))),
            ("a->c", success_rate(&lab.connect_samples("a", c, 5, g, t))),
            ("c->a", success_rate(&lab.connect_samples("c", a, 5, g, t))),
        ]
    };
    assert!(pairs(&lab).iter().all(|(_, r)| *r == 1.0), "all pairs work before");
    let mut run = lab.submit(&experiment(
        "zone-b-outage",
        "6s",
        "  - name: zone-b-down\n    targets: { labels: { zone: b } }\n    block:\n      peers: { zones: [a, c] }\n",
    ));
    assert!(run.wait_phase("observe", PHASE_WAIT));
    let during = pairs(&lab);
    let result = run.finish();
    let after = pairs(&lab);
    eprintln!("zone outage: during {during:?}; after {after:?}");
    for (pair, rate) in during {
        let want = if pair.contains('b') { 0.0 } else { 1.0 };
        assert_eq!(rate, want, "{pair} during the outage");
    }
    assert!(after.iter().all(|(_, r)| *r == 1.0), "all pairs work after: {after:?}");
    // b's agent stayed connected: the probe of b from the coordinator held,
    // and b acknowledged the restore itself (not a lease expiry).
    assert_eq!(result.exit_code, 0, "{}", result.report.reason);
    let t = &result.report.faults[0].targets[0];
    assert_eq!((t.agent_id.as_str(), t.state.as_str()), ("b", "restored"));
    assert_eq!(t.restored_by.as_deref(), Some("coordinator"));
    assert_eq!(t.backend, "nftables");
    assert_eq!(t.peers, vec!["10.77.0.11", "10.77.0.13"]);
    lab.assert_clean();
}

#[test]
fn latency_on_an_agent_without_a_backend_is_refused_and_nothing_is_injected() {
    if !lab_or_skip("latency_on_an_agent_without_a_backend_is_refused_and_nothing_is_injected") {
        return;
    }
    let lab = Lab::build(vec![
        HostSpec::new("a", "a"),
        HostSpec::new("b", "b").agent_arg("--latency-backend").agent_arg("none"),
    ]);
    let result = lab.submit(&experiment(
        "no-backend",
        "2s",
        "  - name: block-a\n    targets: { labels: { host: a } }\n    block: { peers: { zones: [b] } }\n  - name: slow-b\n    targets: { labels: { host: b } }\n    latency: { delay: 50ms, to: { zones: [a] } }\n",
    ))
    .finish();
    assert_eq!(result.exit_code, 5, "{}", result.report.reason);
    assert!(
        result.report.reason.contains("agent b cannot run latency faults"),
        "{}",
        result.report.reason
    );
    assert!(
        result.report.faults.iter().all(|f| f.targets.is_empty()),
        "nothing may be injected: {:?}",
        result.report.faults
    );
    lab.assert_clean();
}

#[test]
fn a_refusal_on_one_target_rolls_back_the_targets_that_injected() {
    if !lab_or_skip("a_refusal_on_one_target_rolls_back_the_targets_that_injected") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    // b's agent refuses to kill itself; a's block must then be restored.
    let result = lab
        .submit(&experiment(
            "all-or-nothing",
            "5s",
            "  - name: block-a\n    targets: { labels: { host: a } }\n    block: { peers: { zones: [b] } }\n  - name: kill-agent-b\n    targets: { labels: { host: b } }\n    kill: { name: faultline-agent }\n",
        ))
        .finish();
    assert_eq!(result.exit_code, 5, "{}", result.report.reason);
    assert!(
        result.report.reason.contains("agent b refused fault"),
        "{}",
        result.report.reason
    );
    let block = &result.report.faults[0].targets[0];
    assert_eq!((block.agent_id.as_str(), block.state.as_str()), ("a", "restored"));
    let kill = &result.report.faults[1].targets[0];
    assert_eq!(kill.state, "refused");
    assert!(kill.detail.contains("protected"), "{}", kill.detail);
    lab.assert_clean();
}

#[test]
fn the_example_experiments_run_against_the_lab() {
    if !lab_or_skip("the_example_experiments_run_against_the_lab") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).expect("example file");
    let url = format!("http://{}/", lab.host("a").http());

    let mut run = lab.submit_with(
        &read("latency.yaml"),
        &[("url", url.as_str()), ("slow_zone", "b"), ("client_zone", "a")],
    );
    assert!(run.wait_phase("observe", PHASE_WAIT));
    let during = lab.connect_samples(
        "a",
        lab.host("b").http(),
        20,
        Duration::from_millis(150),
        Duration::from_secs(1),
    );
    let result = run.finish();
    assert_eq!(result.exit_code, 0, "latency.yaml: {}", result.report.reason);
    let p50 = ms(median(&during));
    assert!(
        (85.0..=125.0).contains(&p50),
        "a -> b p50 {p50:.1} ms with 100 ms ± 10 ms"
    );

    let result = lab
        .submit_with(
            &read("zone-outage.yaml"),
            &[("url", url.as_str()), ("zone", "b"), ("other_zones", "a,c")],
        )
        .finish();
    assert_eq!(result.exit_code, 0, "zone-outage.yaml: {}", result.report.reason);
    assert_eq!(result.report.faults[0].targets[0].state, "restored");
    lab.assert_clean();
}

#[test]
fn a_lab_that_panics_removes_its_namespaces_and_processes() {
    if !lab_or_skip("a_lab_that_panics_removes_its_namespaces_and_processes") {
        return;
    }
    let id = std::sync::Mutex::new(String::new());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new(&[("a", "a"), ("b", "b")]);
        *id.lock().unwrap() = lab.id.clone();
        panic!("deliberate panic with a live lab");
    }));
    assert!(outcome.is_err());
    let id = id.into_inner().unwrap();
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains(&format!("{id}-")), "namespaces left: {netns}");
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines()
            .any(|l| l.contains(&format!("--tag {id}-"))
                || l.contains("--coordinator http://10.77.0.1:") && l.contains(&id)),
        "processes left: {ps}"
    );
}

#[test]
fn two_runs_stack_latency_on_one_host_and_each_restore_removes_only_its_own() {
    if !lab_or_skip("two_runs_stack_latency_on_one_host_and_each_restore_removes_only_its_own") {
        return;
    }
    let lab = Lab::new(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let b = lab.host("b").http();
    let (gap, timeout) = (Duration::from_millis(100), Duration::from_secs(1));
    let mut long = lab.submit(&experiment(
        "slow-to-a",
        "14s",
        "  - name: slow-b-to-a\n    targets: { labels: { host: b } }\n    latency: { delay: 100ms, to: { zones: [a] } }\n",
    ));
    assert!(long.wait_phase("observe", PHASE_WAIT));
    let mut short = lab.submit(&experiment(
        "slow-to-c",
        "4s",
        "  - name: slow-b-to-c\n    targets: { labels: { host: b } }\n    latency: { delay: 50ms, to: { zones: [c] } }\n",
    ));
    assert!(short.wait_phase("observe", PHASE_WAIT));
    let both_ab = median(&lab.connect_samples("a", b, 10, gap, timeout));
    let both_cb = median(&lab.connect_samples("c", b, 10, gap, timeout));
    let chains_both = lab
        .leftovers()
        .iter()
        .filter(|l| l.contains("iptables-legacy-save: :faultline-"))
        .count();
    let short_result = short.finish();
    let after_short_ab = median(&lab.connect_samples("a", b, 10, gap, timeout));
    let after_short_cb = median(&lab.connect_samples("c", b, 10, gap, timeout));
    let chains_one = lab
        .leftovers()
        .iter()
        .filter(|l| l.contains("iptables-legacy-save: :faultline-"))
        .count();
    let long_result = long.finish();
    eprintln!(
        "stacked: a->b {:.1} ms, c->b {:.1} ms ({chains_both} chains); after the short run: a->b {:.1} ms, c->b {:.1} ms ({chains_one} chain)",
        ms(both_ab),
        ms(both_cb),
        ms(after_short_ab),
        ms(after_short_cb)
    );
    assert_eq!(short_result.exit_code, 0, "{}", short_result.report.reason);
    assert_eq!(long_result.exit_code, 0, "{}", long_result.report.reason);
    assert_eq!((chains_both, chains_one), (2, 1));
    assert!((95.0..=115.0).contains(&ms(both_ab)), "a->b with both faults");
    assert!((45.0..=65.0).contains(&ms(both_cb)), "c->b with both faults");
    assert!((95.0..=115.0).contains(&ms(after_short_ab)), "a->b keeps its delay");
    assert!(ms(after_short_cb) < 10.0, "c->b back to normal");
    lab.assert_clean();
}
