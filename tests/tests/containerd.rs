//! The containerd resolver and pod selectors against real engines: the
//! containerd the machine's Docker Engine runs (its `moby` namespace holds
//! Docker's containers; a namespace of the test's own holds containers
//! `ctr` makes with the CRI's labels), and pods labelled as cri-dockerd
//! labels them, through the Docker Engine API. The agent runs in-process
//! on the host. With `CI=true` a missing engine or `ctr` fails.

use std::time::Duration;

use faultline_agent::runtime::containerd::{Containerd, DOCKER_NAMESPACE};
use faultline_agent::runtime::{Choice, ContainerRuntime};
use faultline_tests::containerd::{
    cgroups_left, containerd_or_skip, in_ns, namespace_exists, wait_for, CtrLab, LOOP, SOCKET,
};
use faultline_tests::docker::{docker, DockerLab};
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

/// An experiment with one fault probing an in-process HTTP server.
fn experiment(port: u16, duration: &str, fault: &str) -> String {
    format!(
        r#"name: containerd
hypothesis:
  probes:
    - name: web
      interval: 100ms
      http: {{ url: "http://127.0.0.1:{port}/health" }}
baseline: 200ms
duration: {duration}
recovery: 500ms
faults:
  - name: f
{fault}"#
    )
}

const TEST_HTTP: &str = env!("CARGO_BIN_EXE_faultline-test-http");

/// Whether a TCP connection to `addr` opens within 300 ms.
fn reachable(addr: &str) -> bool {
    let a: std::net::SocketAddr = addr.parse().unwrap();
    std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
}

/// nftables tables named `faultline*` in the network namespace of `pid`.
fn faultline_tables(pid: u32) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "nft", "list", "tables"])
        .output()
        .expect("nsenter nft");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("faultline"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn killed(r: &RunResult) -> Vec<u32> {
    let mut v: Vec<u32> = r.report.faults[0]
        .targets
        .iter()
        .flat_map(|t| t.killed.iter().map(|k| k.pid))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_resolves_dockers_containers_in_moby_and_the_agent_kills_and_blocks_through_it() {
    if !containerd_or_skip("containerd_resolves_dockers_containers_in_moby_and_the_agent_kills_and_blocks_through_it") {
        return;
    }
    let mut lab = DockerLab::with_bins("ctrd-moby", &[std::path::Path::new(TEST_HTTP)]);
    let serve = &["/bin/faultline-test-http", "--listen", "0.0.0.0:8080"];
    let id_a = lab.run("a", &["--label", "fltest-role=web"], serve);
    lab.run("b", &[], serve);
    let id_k = lab.run("k", &[], LOOP);

    // The resolver, straight: Docker's ids and PIDs, as containerd has them.
    let rt = Containerd::new(SOCKET, DOCKER_NAMESPACE);
    let all = tokio::task::block_in_place(|| rt.list()).unwrap();
    let a = all.iter().find(|c| c.id == id_a).expect("container a listed in moby");
    println!("containerd (moby) lists: {a:?}");
    assert!(a.running);
    assert_eq!(a.pid, lab.pid("a"), "the task's PID is Docker's State.Pid");
    // Docker 20.10 records neither the image nor its labels in containerd;
    // only its bundle path.
    assert!(a.labels.contains_key("com.docker/engine.bundle.path"), "{a:?}");
    assert_eq!(a.name, id_a, "no name in moby: the id stands for it");
    let one = tokio::task::block_in_place(|| rt.inspect(&id_k))
        .unwrap()
        .expect("inspect k");
    assert_eq!((one.pid, one.running), (lab.pid("k"), true));
    assert_eq!(
        tokio::task::block_in_place(|| rt.inspect("fltest-no-such")).unwrap(),
        None
    );

    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent_with("node-a", &[], |c| {
        c.runtime = Choice::Containerd {
            socket: SOCKET.into(),
            namespace: DOCKER_NAMESPACE.into(),
        };
    })
    .await;
    let caps = h.coordinator.registry.agents();
    assert!(
        caps.iter()
            .any(|a| a.capabilities.iter().any(|c| c == "runtime:containerd")),
        "the agent advertises runtime:containerd"
    );

    // kill: only k's sleep.
    let pk = lab.pid("k");
    assert!(wait_for(Duration::from_secs(5), || in_ns(pk, "sleep").len() == 1));
    let sleep_k = in_ns(pk, "sleep");
    let mut host_sleep = sleeper();
    let fault =
        format!("    targets: {{ containers: {{ name: \"^{id_k}$\" }} }}\n    kill: {{ name: sleep, count: all }}\n");
    let r = h.run(&experiment(port, "1s", &fault), &[]).await.unwrap();
    println!("kill through containerd: {:?}", r.report.faults[0].targets);
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(killed(&r), sleep_k);
    assert!(!host_sleep.exited());

    // block: a's namespace only; the sibling b answers throughout.
    let ((ip_a, gw), (ip_b, _)) = (lab.addr("a"), lab.addr("b"));
    let (addr_a, addr_b) = (format!("{ip_a}:8080"), format!("{ip_b}:8080"));
    assert!(wait_for(Duration::from_secs(5), || reachable(&addr_a) && reachable(&addr_b)));
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{id_a}$\" }} }}\n    block: {{ peers: {{ cidrs: [{gw}/32] }} }}\n"
    );
    let yaml = experiment(0, "2s", &fault).replace("127.0.0.1:0", &addr_b);
    let h = std::sync::Arc::new(h);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let blocked = tokio::task::block_in_place(|| wait_for(Duration::from_secs(5), || !reachable(&addr_a)));
    assert!(blocked, "container a stops answering the host");
    assert!(reachable(&addr_b), "the sibling is untouched");
    assert!(
        !faultline_tables(lab.pid("a")).is_empty(),
        "the table is in a's namespace"
    );
    let r = run.await.unwrap().unwrap();
    println!("block through containerd: {:?}", r.report.faults[0].targets);
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert!(tokio::task::block_in_place(|| wait_for(Duration::from_secs(5), || {
        reachable(&addr_a)
    })));
    assert!(
        faultline_tables(lab.pid("a")).is_empty(),
        "nothing left in a's namespace"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_made_in_containerd_are_selected_by_their_sandboxs_labels_and_kube_system_is_refused() {
    if !containerd_or_skip("pods_made_in_containerd_are_selected_by_their_sandboxs_labels_and_kube_system_is_refused") {
        return;
    }
    let docker_lab = DockerLab::new("ctrd-pods");
    let mut lab = CtrLab::new("ctrd-pods", &docker_lab.image);
    let ns = lab.namespace.clone();
    // Two pods as containerd's CRI plugin records them: a sandbox with the
    // pod's labels, an application container with the CRI's.
    for (uid, ns_, pod, app) in [
        ("uid-web", "shop", "web-0", "web"),
        ("uid-db", "shop", "db-0", "db"),
        ("uid-dns", "kube-system", "coredns-0", "dns"),
    ] {
        let base = [
            ("io.kubernetes.pod.uid", uid),
            ("io.kubernetes.pod.namespace", ns_),
            ("io.kubernetes.pod.name", pod),
        ];
        let mut sandbox = base.to_vec();
        sandbox.extend([("io.cri-containerd.kind", "sandbox"), ("app", app)]);
        lab.run(&format!("{uid}-sandbox"), &sandbox, LOOP);
        let mut main = base.to_vec();
        main.extend([
            ("io.cri-containerd.kind", "container"),
            ("io.kubernetes.container.name", "main"),
        ]);
        lab.run(&format!("{uid}-main"), &main, LOOP);
    }
    let pids: Vec<(String, u32)> = ["uid-web-sandbox", "uid-web-main", "uid-db-main", "uid-dns-main"]
        .iter()
        .map(|id| (id.to_string(), lab.pid(id)))
        .collect();
    assert!(wait_for(Duration::from_secs(5), || pids.iter().all(|(_, p)| in_ns(
        *p, "sleep"
    )
    .len()
        == 1)));
    let sleeps = |id: &str| in_ns(pids.iter().find(|(i, _)| i == id).unwrap().1, "sleep");
    let (web_sandbox, web_main, db_main) = (sleeps("uid-web-sandbox"), sleeps("uid-web-main"), sleeps("uid-db-main"));

    // containerd records the image and the labels itself.
    let rt = Containerd::new(SOCKET, ns.clone());
    let all = tokio::task::block_in_place(|| rt.list()).unwrap();
    let web = all.iter().find(|c| c.id == "uid-web-main").expect("listed");
    println!("containerd ({ns}) lists: {web:?}");
    assert_eq!(web.name, "shop/web-0/main");
    assert_eq!(web.image, lab.image);
    assert_eq!(
        web.labels.get("io.kubernetes.pod.uid").map(String::as_str),
        Some("uid-web")
    );
    assert_eq!(web.pid, lab.pid("uid-web-main"));

    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent_with("node-a", &[], |c| {
        c.runtime = Choice::Containerd {
            socket: SOCKET.into(),
            namespace: ns.clone(),
        };
    })
    .await;
    let fault = "    targets: { containers: { pod: { namespace: shop, labels: { app: web } } } }\n    kill: { name: sleep, count: all }\n";
    let plan = h
        .control()
        .await
        .plan(faultline_proto::v1::PlanRequest {
            source: Some(source(&experiment(port, "1s", fault), &[])),
        })
        .await
        .unwrap()
        .into_inner();
    let preview = plan.faults[0].previews.join("\n");
    println!("plan: {} / {preview}", plan.faults[0].summary);
    assert!(preview.contains("in container(s) shop/web-0/main"), "{preview}");
    assert!(
        !preview.contains("shop/web-0,") && !preview.contains("db-0"),
        "{preview}"
    );
    let r = h.run(&experiment(port, "1s", fault), &[]).await.unwrap();
    println!("pod kill through containerd: {:?}", r.report.faults[0].targets);
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(killed(&r), web_main, "only the web pod's application container");
    assert_eq!(sleeps("uid-web-sandbox"), web_sandbox, "the sandbox is never a target");
    assert_eq!(sleeps("uid-db-main"), db_main, "the other pod is untouched");

    // kube-system: refused, naming the override; then allowed with it.
    let dns_before = sleeps("uid-dns-main");
    let fault =
        "    targets: { containers: { pod: { namespace: kube-system } } }\n    kill: { name: sleep, count: all }\n";
    let r = h.run(&experiment(port, "500ms", fault), &[]).await.unwrap();
    let detail = format!("{} {:?}", r.report.reason, r.report.faults[0].targets);
    println!("kube-system: exit {} {detail}", r.exit_code);
    assert_eq!(r.exit_code, 5, "{detail}");
    assert!(detail.contains("allow_kube_system: true"), "{detail}");
    assert_eq!(sleeps("uid-dns-main"), dns_before);
    let fault = "    targets: { containers: { pod: { namespace: kube-system }, allow_kube_system: true } }\n    kill: { name: sleep, count: all }\n";
    let r = h.run(&experiment(port, "1s", fault), &[]).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(killed(&r), dns_before);
    h.stop().await;
    stop.cancel();
    drop(lab);
    assert!(!namespace_exists(&ns), "the containerd namespace was removed");
    assert_eq!(
        cgroups_left(&ns),
        Vec::<std::path::PathBuf>::new(),
        "the cgroups runc made for the namespace were removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_labelled_as_cri_dockerd_does_are_selected_through_docker_and_percent_counts_pods() {
    if !containerd_or_skip("pods_labelled_as_cri_dockerd_does_are_selected_through_docker_and_percent_counts_pods") {
        return;
    }
    let mut lab = DockerLab::new("dockerd-pods");
    let pns = format!("fltest-{}", std::process::id());
    // Two pods of one app, each a sandbox (with the pod's labels) and two
    // containers (main and a sidecar), labelled as cri-dockerd does.
    for (uid, pod) in [("uid-1", "web-1"), ("uid-2", "web-2")] {
        let base = [
            format!("io.kubernetes.pod.uid={uid}"),
            format!("io.kubernetes.pod.namespace={pns}"),
            format!("io.kubernetes.pod.name={pod}"),
        ];
        let mut args: Vec<String> = Vec::new();
        for l in base.iter().cloned().chain([
            "io.kubernetes.docker.type=podsandbox".to_string(),
            "app=web".to_string(),
        ]) {
            args.extend(["--label".to_string(), l]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.run(&format!("k8s_POD_{pod}"), &a, LOOP);
        for c in ["main", "sidecar"] {
            let mut args: Vec<String> = Vec::new();
            for l in base.iter().cloned().chain([
                "io.kubernetes.docker.type=container".to_string(),
                format!("io.kubernetes.container.name={c}"),
            ]) {
                args.extend(["--label".to_string(), l]);
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.run(&format!("k8s_{c}_{pod}"), &a, LOOP);
        }
    }
    let names = [
        "k8s_POD_web-1",
        "k8s_main_web-1",
        "k8s_sidecar_web-1",
        "k8s_POD_web-2",
        "k8s_main_web-2",
        "k8s_sidecar_web-2",
    ];
    assert!(wait_for(Duration::from_secs(5), || names.iter().all(|n| in_ns(
        lab.pid(n),
        "sleep"
    )
    .len()
        == 1)));
    let before: Vec<Vec<u32>> = names.iter().map(|n| in_ns(lab.pid(n), "sleep")).collect();

    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent_with("node-a", &[], |c| {
        c.runtime = Choice::Docker {
            socket: faultline_agent::runtime::docker::DEFAULT_SOCKET.into(),
        };
    })
    .await;
    // 50 % of the two matching pods: one pod, both its containers.
    let fault = format!(
        "    targets: {{ percent: 50, containers: {{ pod: {{ namespace: {pns}, labels: {{ app: web }} }} }} }}\n    kill: {{ name: sleep, count: all }}\n"
    );
    let r = h.run(&experiment(port, "1s", &fault), &[]).await.unwrap();
    println!(
        "percent of pods through docker: {} {:?}",
        r.report.faults[0].summary, r.report.faults[0].targets
    );
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    let mut want = [before[1].clone(), before[2].clone()].concat();
    want.sort();
    assert_eq!(killed(&r), want, "web-1's main and sidecar, the pod sorting first");
    for i in [0, 3, 4, 5] {
        assert_eq!(in_ns(lab.pid(names[i]), "sleep"), before[i], "{} untouched", names[i]);
    }
    // container: narrows to one container of the pod.
    let fault = format!(
        "    targets: {{ containers: {{ pod: {{ namespace: {pns}, name: web-2 }}, container: sidecar }} }}\n    kill: {{ name: sleep, count: all }}\n"
    );
    let r = h.run(&experiment(port, "1s", &fault), &[]).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(killed(&r), before[5]);
    assert_eq!(in_ns(lab.pid(names[4]), "sleep"), before[4]);
    // blast_radius.max_targets counts containers: every web pod is 4
    // containers on this one node, over a limit of 3; refused before
    // anything is injected.
    // (After the kills above, every loop has started its sleep again.)
    assert!(wait_for(Duration::from_secs(5), || names.iter().all(|n| in_ns(
        lab.pid(n),
        "sleep"
    )
    .len()
        == 1)));
    let now: Vec<Vec<u32>> = names.iter().map(|n| in_ns(lab.pid(n), "sleep")).collect();
    let fault = format!(
        "    targets: {{ containers: {{ pod: {{ namespace: {pns}, labels: {{ app: web }} }} }} }}\n    kill: {{ name: sleep, count: all, allow_mass_kill: true }}\n"
    );
    let yaml = format!("{}blast_radius: {{ max_targets: 3 }}\n", experiment(port, "1s", &fault));
    let plan = h
        .control()
        .await
        .plan(faultline_proto::v1::PlanRequest {
            source: Some(source(&yaml, &[])),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        plan.limits
            .iter()
            .any(|l| l.contains("4 containers exceed blast_radius.max_targets 3")),
        "{:?} {:?}",
        plan.limits,
        plan.faults[0].previews
    );
    let r = h.run(&yaml, &[]).await.unwrap();
    println!("blast radius over containers: exit {} {}", r.exit_code, r.report.reason);
    assert_eq!(r.exit_code, 2, "{}", r.report.reason);
    assert!(
        r.report
            .reason
            .contains("4 containers exceed blast_radius.max_targets 3"),
        "{}",
        r.report.reason
    );
    let after: Vec<Vec<u32>> = names.iter().map(|n| in_ns(lab.pid(n), "sleep")).collect();
    assert_eq!(after, now, "nothing was killed");
    // blast_radius.max_percent counts pods too: 50 % of the 2 web pods is
    // over a limit of 40 %, refused before anything is injected.
    let half = format!(
        "    targets: {{ percent: 50, containers: {{ pod: {{ namespace: {pns}, labels: {{ app: web }} }} }} }}\n    kill: {{ name: sleep, count: all }}\n"
    );
    let yaml = format!("{}blast_radius: {{ max_percent: 40 }}\n", experiment(port, "1s", &half));
    let r = h.run(&yaml, &[]).await.unwrap();
    println!("max_percent over pods: exit {} {}", r.exit_code, r.report.reason);
    assert_eq!(r.exit_code, 2, "{}", r.report.reason);
    assert!(
        r.report
            .reason
            .contains("1 of 2 matching pods is 50.0%, over blast_radius.max_percent 40%"),
        "{}",
        r.report.reason
    );
    let after: Vec<Vec<u32>> = names.iter().map(|n| in_ns(lab.pid(n), "sleep")).collect();
    assert_eq!(after, now, "nothing was killed");
    assert!(wait_for(Duration::from_secs(5), || names.iter().all(|n| in_ns(
        lab.pid(n),
        "sleep"
    )
    .len()
        == 1)));
    let yaml = format!("{}blast_radius: {{ max_targets: 4 }}\n", experiment(port, "1s", &fault));
    let r = h.run(&yaml, &[]).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(killed(&r).len(), 4, "{:?}", r.report.faults[0].targets);
    assert!(
        r.events
            .iter()
            .any(|e| format!("{e:?}").contains("targets 4 container(s) (headroom 0)")),
        "the run log counts the containers"
    );
    // A percent that rounds to zero pods is refused, naming the numbers.
    let fault = format!(
        "    targets: {{ percent: 10, containers: {{ pod: {{ namespace: {pns} }} }} }}\n    kill: {{ name: sleep, count: all }}\n"
    );
    let r = h.run(&experiment(port, "500ms", &fault), &[]).await.unwrap();
    let detail = format!("{} {:?}", r.report.reason, r.report.faults[0].targets);
    assert_eq!(r.exit_code, 5, "{detail}");
    assert!(detail.contains("10% of the 2 pods"), "{detail}");
    h.stop().await;
    stop.cancel();
    // The engine still knows every container the lab made (none leaked).
    assert_eq!(
        docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.kubernetes.pod.namespace={pns}")
        ])
        .lines()
        .count(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_from_an_image_with_runtime_containerd_flags_kills_in_a_container() {
    if !containerd_or_skip("the_agent_binary_from_an_image_with_runtime_containerd_flags_kills_in_a_container") {
        return;
    }
    let agent = faultline_tests::lab::agent_bin();
    let mut lab = DockerLab::with_bins("ctrd-image", &[agent.as_path()]);
    let target = lab.run("target", &[], LOOP);
    let pt = lab.pid("target");
    assert!(wait_for(Duration::from_secs(5), || in_ns(pt, "sleep").len() == 1));
    let victim = in_ns(pt, "sleep");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let h = Harness::start().await;
    let state = tempfile::tempdir().unwrap();
    let vol = format!("{}:/var/lib/faultline-agent", state.path().display());
    // As deploy/kubernetes/agent.yaml runs it, with containerd's socket
    // where a Kubernetes node has it (here: Docker's containerd).
    let sock = format!("-v={SOCKET}:/run/containerd/containerd.sock");
    let mut args: Vec<&str> = vec![
        "--pid=host",
        "--network=host",
        "--read-only",
        "--user=0",
        "--cap-drop=ALL",
        "--entrypoint=/bin/faultline-agent",
        &sock,
        "-v",
        &vol,
    ];
    for cap in ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "KILL", "DAC_OVERRIDE", "FOWNER"] {
        args.push("--cap-add");
        args.push(cap);
    }
    let url = h.url.clone();
    let cmd = [
        "--coordinator",
        url.as_str(),
        "--id",
        "node-ctrd",
        "--state-dir",
        "/var/lib/faultline-agent",
        "--no-sweep",
        "--runtime",
        "containerd",
        "--runtime-namespace",
        DOCKER_NAMESPACE,
    ];
    let agent_id = lab.run("agent", &args, &cmd);
    let registered = h.coordinator.registry.wait_for(1, Duration::from_secs(15)).await;
    assert!(
        registered,
        "the agent in the image did not register: {}",
        docker(&["logs", &format!("{}-agent", lab.prefix)])
    );
    let caps = &h.coordinator.registry.agents()[0].capabilities;
    assert!(caps.iter().any(|c| c == "runtime:containerd"), "{caps:?}");
    let fault = format!("    targets: {{ containers: {{ name: \"^{target}$\" }} }}\n    kill: {{ name: sleep }}\n");
    let r = h.run(&experiment(port, "1s", &fault), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("agent from the image, --runtime containerd: {t:?}");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(killed(&r), victim);
    // Its own container, seen through containerd, is never a target.
    let own = format!("    targets: {{ containers: {{ name: \"^{agent_id}$\" }} }}\n    kill: {{ name: sleep }}\n");
    let r = h.run(&experiment(port, "500ms", &own), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    assert_eq!(r.exit_code, 5, "{}", r.report.reason);
    assert!(t.detail.contains("agent's own"), "{}", t.detail);
    stop.cancel();
}
