//! Tests of the whole parser: positions, messages and the file's words.

use super::*;
use crate::experiment::faults::disk_fill::FillAmount;
use crate::experiment::{FaultKind, ProbeKind};

const GOOD: &str = r#"name: kill-demo
description: the demo survives a kill
hypothesis:
  description: it keeps answering
  probes:
    - name: web
      interval: 100ms
      http:
        url: http://127.0.0.1:${port}/health
        expect_status: [200]
      tolerances:
        - success_rate: "90%"
        - latency: { percentile: p99, max: 250ms }
        - latency: { percentile: p50, factor: 1.5, plus: 20ms }
baseline: 2s
duration: 5s
recovery: 10s
faults:
  - name: kill-web
    targets: { labels: { role: web }, mode: count, count: 1 }
    kill: { cmdline: "demo --port ${port}", signal: TERM }
"#;

fn vars() -> HashMap<String, String> {
    HashMap::from([("port".to_string(), "8080".to_string())])
}

#[test]
fn parses_a_complete_experiment() {
    let e = parse("e.yaml", GOOD, &vars()).unwrap();
    assert_eq!(e.name, "kill-demo");
    assert_eq!(e.baseline, Duration::from_secs(2));
    let p = &e.hypothesis.probes[0];
    assert_eq!(p.interval, Duration::from_millis(100));
    assert_eq!(p.tolerances[0], Tolerance::SuccessRate { min: 0.9 });
    assert!(matches!(&p.kind, ProbeKind::Http(h) if h.url == "http://127.0.0.1:8080/health"));
    let FaultKind::Kill(k) = &e.faults[0].kind else {
        panic!("expected a kill fault")
    };
    assert_eq!(k.cmdline.as_deref(), Some("demo --port 8080"));
    assert_eq!((k.signal, k.signal_name.as_str()), (15, "SIGTERM"));
    assert_eq!(e.faults[0].targets.mode, Mode::Count(1));
    assert!(!k.allow_mass_kill, "off unless written");
    let src = GOOD.replace("signal: TERM }", "signal: TERM, allow_mass_kill: true }");
    let e = parse("e.yaml", &src, &vars()).unwrap();
    let FaultKind::Kill(k) = &e.faults[0].kind else {
        panic!("expected a kill fault")
    };
    assert!(k.allow_mass_kill);
    assert!(
        e.faults[0].kind.summary().ends_with("allow_mass_kill"),
        "{}",
        e.faults[0].kind.summary()
    );
}

#[test]
fn unknown_field_names_line_column_and_allowed_fields() {
    let src = GOOD.replace("      interval: 100ms", "      intervall: 100ms");
    let err = parse("e.yaml", &src, &vars()).unwrap_err();
    assert_eq!((err.line, err.column), (7, 7), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("e.yaml:7:7: "), "{msg}");
    assert!(
        msg.contains("unknown field `intervall`") && msg.contains("`interval`"),
        "{msg}"
    );
}

#[test]
fn malformed_yaml_is_located() {
    let err = parse("bad.yaml", "name: [oops\nduration: 1s\n", &vars()).unwrap_err();
    assert!(err.line >= 1 && err.column >= 1, "{err}");
    assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
}

#[test]
fn missing_variable_is_named_without_cli_flags() {
    // The CLI adds how to set it where the user is (--var, or a game
    // day's vars:); the parser also serves Control, which has no flags.
    let err = parse("e.yaml", GOOD, &HashMap::new()).unwrap_err();
    assert_eq!(err.line, 9);
    assert!(err.message.starts_with("variable ${port} is not set"), "{err}");
    assert!(!err.message.contains("--"), "{err}");
}

#[test]
fn semantic_errors_name_the_field_and_the_fix() {
    let cases = [
        (
            "        - success_rate: \"90%\"",
            "        - success_rate: 1.5",
            "within 0..1",
        ),
        ("percentile: p99, max", "percentile: p95, max", "p50, p90, p99, max"),
        ("signal: TERM", "signal: BOOM", "kill.signal"),
        ("duration: 5s", "duration: 5 parsecs", "invalid duration"),
        ("mode: count, count: 1", "mode: some", "targets.mode"),
        ("url: http://", "url: ftp://", "must start with http:// or https://"),
        (
            "baseline: 2s",
            "baseline: 10ms",
            "shorter than the slowest probe interval",
        ),
    ];
    for (from, to, want) in cases {
        let src = GOOD.replace(from, to);
        assert_ne!(src, GOOD, "{from}");
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        assert!(err.line > 0, "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

fn with_fault(fault: &str) -> String {
    format!(
            "name: t\nhypothesis:\n  probes:\n    - name: p\n      tcp: {{ address: \"127.0.0.1:1\" }}\nduration: 1s\nfaults:\n  - name: f\n{fault}"
        )
}

#[test]
fn parses_latency_and_block_faults() {
    let src = with_fault(
            "    latency:\n      delay: 100ms\n      jitter: 5ms\n      loss: \"2.5%\"\n      to: { zones: [a], cidrs: [10.0.0.0/8] }\n      ports: [80]\n      protocol: TCP\n      backend: nfqueue\n",
        );
    let e = parse("t.yaml", &src, &vars()).unwrap();
    let FaultKind::Latency(l) = &e.faults[0].kind else {
        panic!("expected latency")
    };
    assert_eq!(
        (l.delay, l.jitter, l.loss_percent),
        (Duration::from_millis(100), Duration::from_millis(5), 2.5)
    );
    assert_eq!(l.to.zones, vec!["a"]);
    assert_eq!(l.protocol.as_deref(), Some("tcp"));
    assert_eq!(
        e.faults[0].kind.summary(),
        "delay 100ms jitter 5ms loss 2.5% to zones a + 10.0.0.0/8 tcp ports 80 backend nfqueue"
    );
    let src = GOOD.replace(
        "        - success_rate: \"90%\"\n",
        "        - success_rate: \"90%\"\n          guardrail: true\n          window: 2s\n",
    );
    let e = parse("t.yaml", &src, &vars()).unwrap();
    let p = &e.hypothesis.probes[0];
    assert_eq!(p.tolerances.len(), 3, "a guardrail is still a tolerance");
    assert_eq!(
        p.guardrails,
        vec![Guardrail {
            tolerance: Tolerance::SuccessRate { min: 0.9 },
            window: Duration::from_secs(2)
        }]
    );
    let bad = GOOD.replace(
        "        - success_rate: \"90%\"\n",
        "        - success_rate: \"90%\"\n          window: 2s\n",
    );
    let err = parse("t.yaml", &bad, &vars()).unwrap_err();
    assert!(err.to_string().contains("only applies to a guardrail"), "{err}");
    let src = with_fault("    disk_fill: { path: /var/lib/app, size: 1.5GiB }\n");
    let e = parse("t.yaml", &src, &vars()).unwrap();
    assert_eq!(e.faults[0].kind.summary(), "fill /var/lib/app with 1.5 GiB");
    let src = with_fault("    disk_fill: { path: /var/lib/app, used: \"90%\" }\n");
    let e = parse("t.yaml", &src, &vars()).unwrap();
    assert!(matches!(&e.faults[0].kind, FaultKind::DiskFill(d) if d.amount == FillAmount::UsedPercent(90.0)));
    let src = with_fault("    block:\n      peers: { zones: [a, c] }\n      direction: in\n");
    let e = parse("t.yaml", &src, &vars()).unwrap();
    assert_eq!(e.faults[0].kind.summary(), "drop in traffic with zones a,c");
}

#[test]
fn network_fault_mistakes_name_the_field_and_the_fix() {
    for (fault, want) in [
        ("    latency: { jitter: 0ms }\n", "set delay"),
        (
            "    latency: { delay: 10ms, jitter: 20ms }\n",
            "jitter 20ms is larger than the delay",
        ),
        ("    latency: { delay: 10ms, loss: \"150%\" }\n", "within 0..100"),
        (
            "    latency: { delay: 10ms, to: { cidrs: [10.0.0.0/40] } }\n",
            "prefix outside",
        ),
        (
            "    latency: { delay: 10ms, to: { cidrs: [zone-a] } }\n",
            "not an IP address",
        ),
        ("    latency: { delay: 10ms, protocol: sctp }\n", "use tcp, udp or icmp"),
        (
            "    latency: { delay: 10ms, backend: ebpf }\n",
            "use netem, nfqueue or auto",
        ),
        (
            "    latency: { delay: 10ms, protocol: icmp, ports: [80] }\n",
            "icmp has no ports",
        ),
        (
            "    latency: { delay: 10ms, to: { hosts: [a] } }\n",
            "unknown field `hosts`",
        ),
        ("    block: { ports: [80] }\n", "block.peers: set zones"),
        (
            "    block: { peers: { zones: [a] }, direction: sideways }\n",
            "use in, out or both",
        ),
        (
            "    block: { peers: { zones: [a] } }\n    kill: { name: x }\n",
            "exactly one fault kind",
        ),
    ] {
        let err = parse("t.yaml", &with_fault(fault), &vars()).unwrap_err();
        assert!(err.line > 0, "{err} should have a position");
        assert!(err.to_string().contains(want), "{err} should contain {want}");
    }
}

#[test]
fn overflowing_durations_are_refused_with_field_position_and_limit() {
    const HUGE: &str = "18446744073709551615s";
    for (from, to, line, want) in [
        (
            "duration: 5s",
            format!("duration: {HUGE}"),
            16,
            "duration: 213503982334601d 7h 15s is longer than the limit of 7d",
        ),
        (
            "baseline: 2s",
            format!("baseline: {HUGE}"),
            15,
            "baseline: 213503982334601d 7h 15s is longer than the limit of 7d",
        ),
        (
            "recovery: 10s",
            format!("recovery: {HUGE}"),
            17,
            "recovery: 213503982334601d 7h 15s is longer than the limit of 7d",
        ),
        (
            "      interval: 100ms",
            format!("      interval: {HUGE}"),
            6,
            "probe \"web\": interval: 213503982334601d 7h 15s is longer than the limit of 7d",
        ),
        (
            "recovery: 10s",
            format!("recovery: 10s\nlease: {HUGE}"),
            18,
            "lease: 213503982334601d 7h 15s is longer than the limit of 1h",
        ),
        (
            "recovery: 10s",
            format!("recovery: 10s\nblast_radius: {{ max_duration: {HUGE} }}"),
            18,
            "blast_radius.max_duration: 213503982334601d 7h 15s is longer than the limit of 7d",
        ),
    ] {
        let src = GOOD.replace(from, &to);
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("e.yaml:{line}:")), "{to}: {msg}");
        assert!(msg.contains(want), "{to}: {msg}");
    }
    // Under the limits, but still too long for the field.
    for (from, to, want) in [
        (
            "duration: 5s",
            "duration: 8d",
            "duration: 8d is longer than the limit of 7d",
        ),
        (
            "baseline: 2s",
            "baseline: 200h",
            "baseline: 8d 8h is longer than the limit of 7d",
        ),
        (
            "recovery: 10s",
            "recovery: 30d",
            "recovery: 30d is longer than the limit of 7d",
        ),
        (
            "recovery: 10s",
            "recovery: 10s\nlease: 2h",
            "lease: 2h is longer than the limit of 1h",
        ),
        (
            "duration: 5s",
            "duration: 50ms",
            "duration: 50ms is shorter than the interval of probe \"web\" (100ms)",
        ),
        (
            "      interval: 100ms",
            "      interval: 100ms\n      timeout: 1h",
            "timeout: 1h is longer than the limit of 10m",
        ),
        ("max: 250ms", "max: 2h", "latency.max 2h: longer than the limit of 1h"),
    ] {
        let src = GOOD.replace(from, to);
        assert_ne!(src, GOOD, "{from}");
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        assert!(err.line > 0, "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

#[test]
fn experiment_local_limits_are_checked_without_a_fleet() {
    let src = GOOD.replace("duration: 5s", "duration: 99999h\nblast_radius: { max_duration: 5m }");
    assert!(parse("e.yaml", &src, &vars()).is_err());
    let src = GOOD.replace("duration: 5s", "duration: 10m\nblast_radius: { max_duration: 5m }");
    let err = parse("e.yaml", &src, &vars()).unwrap_err();
    assert_eq!(err.line, 16, "{err}");
    assert!(
        err.message
            .contains("duration: 10m is longer than blast_radius.max_duration 5m"),
        "{err}"
    );
    let src = GOOD.replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_targets: 2 }");
    assert!(parse("e.yaml", &src, &vars()).is_ok());
    let src = src.replace("count: 1 }", "count: 3 }");
    let err = parse("e.yaml", &src, &vars()).unwrap_err();
    assert!(
        err.message
            .contains("fault \"kill-web\": targets.count 3 exceeds blast_radius.max_targets 2"),
        "{err}"
    );
    let src = GOOD
        .replace("mode: count, count: 1", "mode: all")
        .replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_percent: 50 }");
    let err = parse("e.yaml", &src, &vars()).unwrap_err();
    assert!(err.message.contains("over blast_radius.max_percent 50%"), "{err}");
}

#[test]
fn wrong_types_are_explained_without_rust_or_serde_names() {
    let kill = |count: &str| GOOD.replace("signal: TERM }", &format!("signal: TERM, count: {count} }}"));
    let cases: Vec<(String, &str)> = vec![
        (kill("[1]"), "expected a number of processes (at least 1) or \"all\""),
        (kill("-1"), "write a whole number of processes"),
        (kill("1.5"), "write a whole number of processes"),
        (kill("99999999999999999999999"), "number too large"),
        ("- a\n".into(), "expected a mapping with the experiment's fields"),
        ("42\n".into(), "expected a mapping with the experiment's fields"),
        (
            GOOD.replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_targets: -1 }"),
            "expected a whole number from 0 to 4294967295",
        ),
        (
            GOOD.replace("recovery: 10s", "recovery: 10s\nblast_radius: { max_percent: abc }"),
            "expected a number",
        ),
        (
            GOOD.replace("success_rate: \"90%\"", "success_rate: [1]"),
            "expected a fraction (0.95) or a percentage",
        ),
        (
            GOOD.replace("    - name: web\n", "    - 3\n    - name: web\n"),
            "expected a mapping with the probe's fields",
        ),
        (
            with_fault("    disk_fill: { path: /x, size: [1] }\n"),
            "expected a size",
        ),
        (
            with_fault("    latency: { delay: 1ms, ports: [70000] }\n"),
            "expected a whole number from 0 to 65535",
        ),
        (with_fault("    kill: { pid: 1.5 }\n"), "expected a whole number"),
    ];
    for (src, want) in cases {
        let err = parse("e.yaml", &src, &vars()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(want), "{want}: {msg}");
        for leak in [
            "Raw", "untagged", "enum", "struct", "u128", "u32", "u16", "u64", "i32", "f64",
        ] {
            assert!(!msg.contains(leak), "{leak} leaked: {msg}");
        }
    }
}

#[test]
fn container_targets_count_containers_and_go_on_the_wire() {
    let src = GOOD.replace(
        "targets: { labels: { role: web }, mode: count, count: 1 }",
        "targets: { labels: { role: web }, mode: one, containers: { name: \"^web-\", labels: { app: web }, allow_pid1: true } }",
    );
    let e = parse("e.yaml", &src, &vars()).unwrap();
    let t = &e.faults[0].targets;
    // Every matching agent; one container on each.
    assert_eq!(t.mode, Mode::All);
    let w = t.containers.as_ref().unwrap().to_wire();
    assert_eq!((w.name_regex.as_str(), w.count, w.allow_pid1), ("^web-", 1, true));
    assert_eq!(w.labels.get("app").map(String::as_str), Some("web"));

    let bad = GOOD.replace(
        "targets: { labels: { role: web }, mode: count, count: 1 }",
        "targets: { containers: { name: \"(\" } }",
    );
    let err = parse("e.yaml", &bad, &vars()).unwrap_err().to_string();
    assert!(err.contains("targets.containers.name"), "{err}");
}

#[test]
fn pod_targets_and_percent_of_pods_go_on_the_wire() {
    let pct = GOOD.replace(
        "targets: { labels: { role: web }, mode: count, count: 1 }",
        "targets: { percent: 50, containers: { pod: { namespace: shop, labels: { app: web }, name: web-0 }, container: nginx, allow_kube_system: true } }",
    );
    let e = parse("e.yaml", &pct, &vars()).unwrap();
    let t = &e.faults[0].targets;
    // Every matching agent; half of the pods on each.
    assert_eq!(t.mode, Mode::All);
    let c = t.containers.as_ref().unwrap();
    let w = c.to_wire();
    assert_eq!(
        (w.percent, w.count, w.container_name.as_str(), w.allow_kube_system),
        (50.0, 0, "nginx", true)
    );
    let p = w.pod.unwrap();
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("shop", "web-0"));
    assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    assert!(c.describe().contains("50% of matching pods"), "{}", c.describe());
    let empty = GOOD.replace(
        "targets: { labels: { role: web }, mode: count, count: 1 }",
        "targets: { containers: { pod: { namespace: \"\" } } }",
    );
    let err = parse("e.yaml", &empty, &vars()).unwrap_err().to_string();
    assert!(err.contains("targets.containers.pod.namespace"), "{err}");
    let missing = GOOD.replace(
        "targets: { labels: { role: web }, mode: count, count: 1 }",
        "targets: { containers: { pod: { labels: { app: web } } } }",
    );
    let err = parse("e.yaml", &missing, &vars()).unwrap_err().to_string();
    assert!(err.contains("namespace"), "{err}");
}
