//! Release-gate groups of pods on the real Docker Engine: "pods" made as
//! cri-dockerd makes them (a sandbox container carrying the pod's labels,
//! and an application container in the sandbox's network namespace, both
//! with the CRI's `io.kubernetes.*` labels), each serving HTTP with this
//! host's `faultline-test-http`. Two control pods (track=stable) and one
//! canary pod (track=canary): `plan` must list each group's pods with the
//! IPs the agent read from their network namespaces and their node; the
//! run probes every pod at its IP from the host, slows both groups' pods
//! with one latency fault at the same time, and the judge pools the pods of
//! each group. A pod selector matching nothing refuses the run (exit 5)
//! naming the group and the pods that exist. Runs the shipped
//! `experiments/canary-pods.yaml`. With `CI=true` a missing engine fails.

use std::time::Duration;

use faultline_agent::runtime::Choice;
use faultline_tests::containerd::{wait_for, LOOP};
use faultline_tests::docker::{docker, docker_or_skip, DockerLab};
use faultline_tests::*;

const TEST_HTTP: &str = env!("CARGO_BIN_EXE_faultline-test-http");

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/canary-pods.yaml"))
        .expect("experiments/canary-pods.yaml")
}

/// Whether a TCP connection to `addr` opens within 300 ms.
fn reachable(addr: &str) -> bool {
    let a: std::net::SocketAddr = addr.parse().unwrap();
    std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
}

/// iptables rules and nft tables of faultline in the network namespace of `pid`.
fn faultline_rules(pid: u32) -> String {
    let mut out = String::new();
    for cmd in [
        &["iptables-legacy-save"][..],
        &["iptables-save"],
        &["nft", "list", "tables"],
    ] {
        let o = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n"])
            .args(cmd)
            .output()
            .expect("nsenter");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if l.contains("faultline") || l.contains("NFQUEUE") {
                out += l;
                out += "\n";
            }
        }
    }
    out
}

/// Starts pod `name` of namespace `ns` with `track`: its sandbox
/// `k8s_POD_<name>` and its `main` container serving HTTP on :8080 in the
/// sandbox's network namespace. Returns the sandbox's IP.
fn start_pod(lab: &mut DockerLab, ns: &str, name: &str, track: &str) -> String {
    let uid = format!("uid-{name}");
    let base = [
        format!("io.kubernetes.pod.uid={uid}"),
        format!("io.kubernetes.pod.namespace={ns}"),
        format!("io.kubernetes.pod.name={name}"),
    ];
    let args = |extra: &[String]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .flat_map(|l| ["--label".to_string(), l.clone()])
            .collect()
    };
    let sandbox = args(&[
        "io.kubernetes.docker.type=podsandbox".into(),
        format!("track={track}"),
        "app=web".into(),
    ]);
    let a: Vec<&str> = sandbox.iter().map(String::as_str).collect();
    lab.run(&format!("k8s_POD_{name}"), &a, LOOP);
    let mut main = args(&[
        "io.kubernetes.docker.type=container".into(),
        "io.kubernetes.container.name=main".into(),
    ]);
    main.push(format!("--network=container:{}-k8s_POD_{name}", lab.prefix));
    let a: Vec<&str> = main.iter().map(String::as_str).collect();
    lab.run(
        &format!("k8s_main_{name}"),
        &a,
        &["/bin/faultline-test-http", "--listen", "0.0.0.0:8080"],
    );
    lab.addr(&format!("k8s_POD_{name}")).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_pods_are_probed_at_their_ips_faulted_together_and_judged() {
    if !docker_or_skip("groups_of_pods_are_probed_at_their_ips_faulted_together_and_judged") {
        return;
    }
    let mut lab = DockerLab::with_bins("canary-pods", &[std::path::Path::new(TEST_HTTP)]);
    let prefix = lab.prefix.clone();
    let ns = format!("fltest-shop-{}", std::process::id());
    let pods = [
        ("web-stable-0", "stable"),
        ("web-stable-1", "stable"),
        ("web-canary-0", "canary"),
    ];
    let ips: Vec<String> = pods.iter().map(|(n, t)| start_pod(&mut lab, &ns, n, t)).collect();
    assert!(
        wait_for(Duration::from_secs(5), || ips
            .iter()
            .all(|ip| reachable(&format!("{ip}:8080")))),
        "the pods serve on {ips:?}"
    );
    let mut h = Harness::start().await;
    h.add_agent_with("node-a", &[], |c| {
        c.runtime = Choice::Docker {
            socket: faultline_agent::runtime::docker::DEFAULT_SOCKET.into(),
        };
    })
    .await;
    let vars = [
        ("namespace", ns.as_str()),
        ("delay", "100ms"),
        ("baseline", "2s"),
        ("duration", "4s"),
        ("recovery", "2s"),
    ];

    // plan: each group's pods, with the IP read from its namespace and its node.
    let plan = h
        .control()
        .await
        .plan(faultline_proto::v1::PlanRequest {
            source: Some(source(&example(), &vars)),
        })
        .await
        .expect("plan")
        .into_inner();
    type Planned = (String, Vec<(String, String, String)>, Vec<String>);
    let groups: Vec<Planned> = plan
        .groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.agents
                    .iter()
                    .map(|a| (a.pod.clone(), a.address.clone(), a.agent_id.clone()))
                    .collect(),
                g.probes.clone(),
            )
        })
        .collect();
    eprintln!("plan groups: {groups:#?}");
    let member = |i: usize| (format!("{ns}/{}", pods[i].0), ips[i].clone(), "node-a".to_string());
    let probe = |g: &str, i: usize| {
        format!(
            "work [{g}/{ns}/{}]: http GET http://{}:8080/work?pod={ns}/{}",
            pods[i].0, ips[i], pods[i].0
        )
    };
    assert_eq!(
        groups,
        [
            (
                "control".to_string(),
                vec![member(0), member(1)],
                vec![probe("control", 0), probe("control", 1)]
            ),
            ("canary".to_string(), vec![member(2)], vec![probe("canary", 2)]),
        ]
    );
    let faults: Vec<(String, Vec<String>)> = plan
        .faults
        .iter()
        .map(|f| (f.fault_id.clone(), f.agent_ids.clone()))
        .collect();
    eprintln!("plan faults: {:#?}", plan.faults);
    assert_eq!(
        faults,
        [("control", 0), ("control", 1), ("canary", 2)]
            .iter()
            .map(|(g, i)| (
                format!("slow-pods [{g}/{ns}/{}]", pods[*i].0),
                vec!["node-a".to_string()]
            ))
            .collect::<Vec<_>>(),
        "one fault per pod (a network fault acts on one namespace), on its node"
    );

    // The run: the same fault on both groups' pods, every pod probed at its IP.
    let r = h.run(&example(), &vars).await.expect("run");
    eprintln!("run: exit {}: {}", r.exit_code, r.report.reason);
    for p in &r.report.probes {
        eprintln!(
            "{} at {}: baseline p50 {:?} ms, during p50 {:?} ms ({} samples)",
            p.name, p.target, p.baseline.p50_ms, p.during.p50_ms, p.during.samples
        );
    }
    // The run log names each group's pods with their IPs and node.
    let log: Vec<&str> = r
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Some(faultline_proto::v1::run_event::Event::Log(l)) => Some(l.message.as_str()),
            _ => None,
        })
        .collect();
    let canary_line = format!(
        "plan: group canary (pods {{namespace={ns}, track=canary}}): {ns}/web-canary-0 {} on node-a",
        ips[2]
    );
    assert!(log.contains(&canary_line.as_str()), "{canary_line:?} not in {log:#?}");
    let names: Vec<&str> = r.report.probes.iter().map(|p| p.name.as_str()).collect();
    let want: Vec<String> = [("control", 0), ("control", 1), ("canary", 2)]
        .iter()
        .map(|(g, i)| format!("work [{g}/{ns}/{}]", pods[*i].0))
        .collect();
    assert_eq!(names, want);
    for p in &r.report.probes {
        let (b, d) = (p.baseline.p50_ms.expect("baseline"), p.during.p50_ms.expect("during"));
        assert!(
            d >= b + 80.0,
            "{}: the latency fault reached the pod ({b} ms -> {d} ms)",
            p.name
        );
    }
    assert_eq!(r.report.faults.len(), 3, "{:?}", r.report.faults);
    for f in &r.report.faults {
        eprintln!("fault {}: {} {:?}", f.name, f.summary, f.targets);
        assert!(f.targets.iter().all(|t| t.state == "restored"), "{:?}", f.targets);
    }
    let j = r
        .report
        .judge
        .as_ref()
        .unwrap_or_else(|| panic!("no judgement: {}", r.report.reason));
    for m in &j.judgement.metrics {
        eprintln!(
            "judge: {} {:?}: effect {:?}, interval {:?}, p {:?}, n {}/{}",
            m.name, m.classification, m.effect_size, m.interval, m.p_value, m.canary_count, m.control_count
        );
    }
    eprintln!(
        "judge: score {:.1} ({:?}), exit {}: {}",
        j.judgement.score, j.judgement.verdict, r.exit_code, r.report.reason
    );
    let latency = j
        .judgement
        .metrics
        .iter()
        .find(|m| m.name == "work latency")
        .expect("latency judged");
    assert!(
        latency.control_count > latency.canary_count,
        "the control pools its two pods: {} vs {}",
        latency.control_count,
        latency.canary_count
    );
    assert!(
        r.exit_code == 0 || r.exit_code == 1,
        "a verdict, not an error: {}",
        r.report.reason
    );
    for (name, _) in &pods {
        let pid = lab.pid(&format!("k8s_POD_{name}"));
        assert_eq!(faultline_rules(pid), "", "nothing left in {name}'s namespace");
    }

    // A selector matching no pod refuses the run, naming the group and the pods there are.
    let other = example().replace("track: canary", "track: nightly");
    let r = h.run(&other, &vars).await.expect("run");
    eprintln!("no pod: exit {}: {}", r.exit_code, r.report.reason);
    assert_eq!(r.exit_code, 5, "{}", r.report.reason);
    assert!(
        r.report
            .reason
            .contains("group \"canary\": no pod matches pods {namespace=")
            && r.report
                .reason
                .contains(&format!("{ns}/web-canary-0 {{app=web, track=canary}}")),
        "{}",
        r.report.reason
    );

    drop(h);
    drop(lab);
    let left = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={prefix}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "", "containers left behind");
}
