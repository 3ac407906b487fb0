//! Container targets against the machine's real Docker Engine: images built
//! from this host's files, containers the tests start and remove, the
//! agent in-process on the host (as the DaemonSet runs it: host PID
//! namespace, the runtime socket). With `CI=true` a missing engine fails.

use std::time::{Duration, Instant};

use faultline_tests::docker::{docker, docker_or_skip, DockerLab};
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

/// An experiment with one fault (indented `fault` lines under `- name: f`)
/// probing an in-process HTTP server on the host.
fn experiment(port: u16, duration: &str, fault: &str) -> String {
    format!(
        r#"name: containers
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

/// A container whose PID 1 (`sh`) restarts `sleep` whenever it dies.
const LOOP: &[&str] = &["/bin/sh", "-c", "while :; do /bin/sleep 1000; done"];

/// Host pids of the processes named `name` in the pid namespace of `pid`.
fn in_ns(pid: u32, name: &str) -> Vec<u32> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let same = std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns);
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if same && comm.trim() == name {
            out.push(p);
        }
    }
    out
}

/// Polls `f` every 50 ms for at most `limit`.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_in_a_container_signals_only_its_process_and_times_the_restart() {
    if !docker_or_skip("kill_in_a_container_signals_only_its_process_and_times_the_restart") {
        return;
    }
    let mut lab = DockerLab::new("kill");
    lab.run("a", &["--label", "fltest-role=victim"], LOOP);
    lab.run("b", &[], LOOP);
    let (pa, pb) = (lab.pid("a"), lab.pid("b"));
    assert!(wait_for(Duration::from_secs(5), || in_ns(pa, "sleep").len() == 1
        && in_ns(pb, "sleep").len() == 1));
    let (sleep_a, sleep_b) = (in_ns(pa, "sleep"), in_ns(pb, "sleep"));
    let mut host_sleep = sleeper();
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-\", labels: {{ fltest-role: victim }} }} }}\n    kill: {{ name: sleep }}\n",
        lab.prefix
    );
    // `plan` names the resolved container in the agent's preview.
    let plan = h
        .control()
        .await
        .plan(faultline_proto::v1::PlanRequest {
            source: Some(source(&experiment(port, "1s", &fault), &[])),
        })
        .await
        .unwrap()
        .into_inner();
    let preview = plan.faults[0].previews.join("\n");
    assert!(
        preview.contains(&format!("in container(s) {}-a", lab.prefix)) && preview.contains("would send SIGKILL to 1"),
        "{preview}"
    );
    let r = h.run(&experiment(port, "1s", &fault), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("kill in container: {t:?}");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.killed.iter().map(|k| k.pid).collect::<Vec<_>>(), sleep_a);
    assert!(
        r.report.faults[0].summary.contains("containers"),
        "{}",
        r.report.faults[0].summary
    );
    // The container's loop started a new sleep, seen by the watcher.
    assert!(t.reappeared_after_ms.is_some(), "{t:?}");
    // The sibling container and the host's own sleep were not touched.
    assert_eq!(in_ns(pb, "sleep"), sleep_b);
    assert!(!host_sleep.exited());
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_containers_pid1_needs_allow_pid1_and_reports_time_until_it_runs_again() {
    if !docker_or_skip("killing_a_containers_pid1_needs_allow_pid1_and_reports_time_until_it_runs_again") {
        return;
    }
    let mut lab = DockerLab::new("pid1");
    lab.run("a", &["--restart", "always"], LOOP);
    let before = lab.pid("a");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let sel = format!("name: \"^{}-a$\"", lab.prefix);

    // Without the opt-in, PID 1 is not even a candidate.
    let fault = format!("    targets: {{ containers: {{ {sel} }} }}\n    kill: {{ name: sh }}\n");
    let r = h.run(&experiment(port, "500ms", &fault), &[]).await.unwrap();
    assert_eq!(r.exit_code, 5, "{}", r.report.reason);
    assert_eq!(lab.pid("a"), before, "PID 1 must live");

    let fault = format!("    targets: {{ containers: {{ {sel}, allow_pid1: true }} }}\n    kill: {{ name: sh }}\n");
    let r = h.run(&experiment(port, "3s", &fault), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("PID 1 kill: {t:?}");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.killed.iter().map(|k| k.pid).collect::<Vec<_>>(), vec![before]);
    let after = lab.pid("a");
    assert!(after != before && after != 0, "restarted under a new PID 1");
    assert_eq!(t.reappeared_pid, Some(after), "{t:?}");
    let ms = t.reappeared_after_ms.expect("time until it ran again");
    println!("container ran again {ms} ms after its PID 1 was killed");
    assert!(t.detail.contains("ran again"), "{}", t.detail);
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fill_in_a_container_stays_inside_it_even_through_a_symlink_to_root() {
    if !docker_or_skip("disk_fill_in_a_container_stays_inside_it_even_through_a_symlink_to_root") {
        return;
    }
    let mut lab = DockerLab::new("fill");
    lab.run("a", &[], LOOP);
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent_with("node-a", &[], |c| {
        c.fill.allowed = vec!["/tmp".into()];
        c.fill.max_used_percent = 100.0;
    })
    .await;
    // /tmp/escape is a symlink to "/" in the image: resolved in the
    // container's root, never the host's.
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    disk_fill: {{ path: /tmp/escape, size: 1MiB }}\n",
        lab.prefix
    );
    let h = std::sync::Arc::new(h);
    let yaml = experiment(port, "2s", &fault);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let lab2 = &lab;
    let seen = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(5), || {
            lab2.files_in("a", "/")
                .iter()
                .any(|f| f.starts_with(".faultline-fill-"))
        })
    });
    let host_root: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".faultline-fill-"))
        .collect();
    let r = run.await.unwrap().unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("fill in container: {t:?}");
    assert!(seen, "the fill file appeared in the container's root");
    assert!(host_root.is_empty(), "host / untouched: {host_root:?}");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert!(!lab.files_in("a", "/").iter().any(|f| f.starts_with(".faultline-fill-")));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_mid_fill_is_restored_clean_without_an_error_loop() {
    if !docker_or_skip("a_container_restarted_mid_fill_is_restored_clean_without_an_error_loop") {
        return;
    }
    let mut lab = DockerLab::new("restart");
    lab.run("a", &[], LOOP);
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent_with("node-a", &[], |c| {
        c.fill.allowed = vec!["/tmp".into()];
        c.fill.max_used_percent = 100.0;
    })
    .await;
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    disk_fill: {{ path: /tmp, size: 1MiB }}\n",
        lab.prefix
    );
    let h = std::sync::Arc::new(h);
    let yaml = experiment(port, "3s", &fault);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let lab2 = &lab;
    let has_fill = || {
        lab2.files_in("a", "/tmp")
            .iter()
            .any(|f| f.starts_with(".faultline-fill-"))
    };
    assert!(tokio::task::block_in_place(|| wait_for(
        Duration::from_secs(5),
        has_fill
    )));
    let old = lab.pid("a");
    let restarted = Instant::now();
    tokio::task::block_in_place(|| docker(&["restart", "-t", "0", &format!("{}-a", lab.prefix)]));
    assert_ne!(lab.pid("a"), old);
    // The writable layer survives a restart, and the file with it, until
    // the agent restores through the new PID 1's root.
    let r = run.await.unwrap().unwrap();
    let clean_after = restarted.elapsed();
    let t = &r.report.faults[0].targets[0];
    println!("restart mid-fill: {t:?}; clean {clean_after:?} after docker restart");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.state, "restored", "{t:?}");
    assert!(!has_fill(), "no fill file left in the restarted container");
    stop.cancel();
}

/// The real agent binary, dialling the harness's coordinator.
fn spawn_agent(url: &str, state: &std::path::Path) -> std::process::Child {
    std::process::Command::new(faultline_tests::lab::agent_bin())
        .args([
            "--coordinator",
            url,
            "--id",
            "node-k",
            "--no-sweep",
            "--max-fill-used-percent",
            "100",
        ])
        .args(["--allow-fill", "/tmp", "--state-dir"])
        .arg(state)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn faultline-agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_fill_is_cleaned_inside_the_container_by_its_next_start() {
    if !docker_or_skip("an_agent_killed_mid_fill_is_cleaned_inside_the_container_by_its_next_start") {
        return;
    }
    let mut lab = DockerLab::new("crash");
    lab.run("a", &[], LOOP);
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let h = std::sync::Arc::new(Harness::start().await);
    let state = tempfile::tempdir().unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut agent = Reap(spawn_agent(&h.url, state.path()));
    assert!(h.coordinator.registry.wait_for(1, Duration::from_secs(10)).await);
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    disk_fill: {{ path: /tmp, size: 1MiB }}\n",
        lab.prefix
    );
    let yaml = experiment(port, "30s", &fault);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let lab2 = &lab;
    let has_fill = || {
        lab2.files_in("a", "/tmp")
            .iter()
            .any(|f| f.starts_with(".faultline-fill-"))
    };
    assert!(tokio::task::block_in_place(|| wait_for(
        Duration::from_secs(10),
        has_fill
    )));
    // kill -9: no restore runs; the undo record names the container.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    assert!(has_fill(), "nothing restored the fill yet");
    let _next = Reap(spawn_agent(&h.url, state.path()));
    let cleaned = tokio::task::block_in_place(|| wait_for(Duration::from_secs(10), || !has_fill()));
    assert!(
        cleaned,
        "the restarted agent removed the fill file inside the container"
    );
    run.abort();
    stop.cancel();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_in_a_containers_network_namespace_spares_its_sibling_and_survives_a_restart() {
    if !docker_or_skip("block_in_a_containers_network_namespace_spares_its_sibling_and_survives_a_restart") {
        return;
    }
    let mut lab = DockerLab::with_bins("block", &[std::path::Path::new(TEST_HTTP)]);
    let serve = &["/bin/faultline-test-http", "--listen", "0.0.0.0:8080"];
    lab.run("a", &[], serve);
    lab.run("b", &[], serve);
    let ((ip_a, gw), (ip_b, _)) = (lab.addr("a"), lab.addr("b"));
    let (addr_a, addr_b) = (format!("{ip_a}:8080"), format!("{ip_b}:8080"));
    assert!(wait_for(Duration::from_secs(5), || reachable(&addr_a) && reachable(&addr_b)));
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let h = std::sync::Arc::new(h);
    // The probe watches the sibling, which must stay healthy throughout.
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    block: {{ peers: {{ cidrs: [{gw}/32] }} }}\n",
        lab.prefix
    );
    let yaml = experiment(0, "2s", &fault).replace("127.0.0.1:0", &addr_b);

    for restart_mid_fault in [false, true] {
        let run = {
            let (h, yaml) = (h.clone(), yaml.clone());
            tokio::spawn(async move { h.run(&yaml, &[]).await })
        };
        let blocked = tokio::task::block_in_place(|| wait_for(Duration::from_secs(5), || !reachable(&addr_a)));
        assert!(blocked, "the container stops answering the host");
        assert!(reachable(&addr_b), "the sibling container is untouched");
        assert!(
            !faultline_tables(lab.pid("a")).is_empty(),
            "the table is in a's namespace"
        );
        assert!(faultline_tables(std::process::id()).is_empty(), "and not in the host's");
        if restart_mid_fault {
            tokio::task::block_in_place(|| docker(&["restart", "-t", "0", &format!("{}-a", lab.prefix)]));
        }
        let r = run.await.unwrap().unwrap();
        let t = &r.report.faults[0].targets[0];
        println!("block (restart mid-fault: {restart_mid_fault}): {t:?}");
        assert_eq!(r.exit_code, 0, "{}", r.report.reason);
        assert_eq!(t.state, "restored", "{t:?}");
        assert!(t.detail.contains("deleted nftables table"), "{}", t.detail);
        assert!(tokio::task::block_in_place(|| wait_for(Duration::from_secs(5), || {
            reachable(&addr_a)
        })));
        assert!(faultline_tables(lab.pid("a")).is_empty());
    }
}

/// Median time to open a TCP connection to `addr`, over `n` tries (a
/// refused or timed-out try counts as 1 s).
fn connect_median(addr: &str, n: usize) -> Duration {
    let a: std::net::SocketAddr = addr.parse().unwrap();
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
                Ok(_) => t.elapsed(),
                Err(_) => Duration::from_secs(1),
            }
        })
        .collect();
    v.sort();
    v[n / 2]
}

/// [`connect_median`] from inside the network namespace of process `pid`
/// (another container: the connections cross the bridge between them).
fn connect_median_from(pid: u32, addr: &str, n: usize) -> Duration {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    faultline_agent::runtime::netns::enter(&ns, || connect_median(addr, n)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_in_a_containers_network_namespace_delays_it_by_100ms_and_not_its_sibling() {
    if !docker_or_skip("latency_in_a_containers_network_namespace_delays_it_by_100ms_and_not_its_sibling") {
        return;
    }
    let mut lab = DockerLab::with_bins("latency", &[std::path::Path::new(TEST_HTTP)]);
    let serve = &["/bin/faultline-test-http", "--listen", "0.0.0.0:8080"];
    lab.run("a", &[], serve);
    lab.run("b", &[], serve);
    // The client: a third container, so every measured connection goes
    // from one container's network namespace to another's.
    lab.run("c", &[], serve);
    let ((ip_a, _), (ip_b, _), (ip_c, _)) = (lab.addr("a"), lab.addr("b"), lab.addr("c"));
    let pid_c = lab.pid("c");
    let (addr_a, addr_b) = (format!("{ip_a}:8080"), format!("{ip_b}:8080"));
    assert!(wait_for(Duration::from_secs(5), || reachable(&addr_a) && reachable(&addr_b)));
    let before = connect_median_from(pid_c, &addr_a, 9);
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let h = std::sync::Arc::new(h);
    // Egress of container a towards container c: the SYN-ACK of every
    // connection c opens to it waits 100 ms.
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    latency: {{ delay: 100ms, to: {{ cidrs: [{ip_c}/32] }} }}\n",
        lab.prefix
    );
    let yaml = experiment(0, "6s", &fault).replace("127.0.0.1:0", &addr_b);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    let delayed = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(5), || {
            connect_median_from(pid_c, &addr_a, 1) > Duration::from_millis(50)
        })
    });
    assert!(delayed, "the delay never showed");
    let (during_a, during_b) = tokio::task::block_in_place(|| {
        (
            connect_median_from(pid_c, &addr_a, 21),
            connect_median_from(pid_c, &addr_b, 21),
        )
    });
    let r = run.await.unwrap().unwrap();
    let t = &r.report.faults[0].targets[0];
    println!(
        "latency into a container, measured from another container: connect median before {before:?}, during {during_a:?}; sibling during {during_b:?}; {t:?}"
    );
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    let added = during_a.saturating_sub(before);
    assert!(
        added >= Duration::from_millis(90) && added <= Duration::from_millis(110),
        "added {added:?}"
    );
    assert!(during_b < Duration::from_millis(20), "sibling {during_b:?}");
    assert_eq!(t.state, "restored", "{t:?}");
    assert!(
        connect_median_from(pid_c, &addr_a, 5) < Duration::from_millis(20),
        "restored"
    );
    // Nothing left in a's namespace (iptables chains of the fault).
    let out = std::process::Command::new("nsenter")
        .args(["-t", &lab.pid("a").to_string(), "-n", "iptables-legacy-save"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(!rules.contains("faultline-") && !rules.contains("NFQUEUE"), "{rules}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_running_from_an_image_with_the_daemonsets_settings_kills_in_a_container() {
    if !docker_or_skip("the_agent_running_from_an_image_with_the_daemonsets_settings_kills_in_a_container") {
        return;
    }
    let agent = faultline_tests::lab::agent_bin();
    let mut lab = DockerLab::with_bins("image", &[agent.as_path()]);
    lab.run("target", &[], LOOP);
    let pt = lab.pid("target");
    assert!(wait_for(Duration::from_secs(5), || in_ns(pt, "sleep").len() == 1));
    let victim = in_ns(pt, "sleep");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let h = Harness::start().await;
    let state = tempfile::tempdir().unwrap();
    let vol = format!("{}:/var/lib/faultline-agent", state.path().display());
    // As deploy/kubernetes/agent.yaml runs it on a cri-dockerd node (the
    // manifest mounts containerd's socket directory, and says to mount
    // docker.sock instead there; tests/tests/containerd.rs runs the
    // containerd variant): host PID namespace, host network, the runtime
    // socket, a read-only root, every capability dropped but the listed
    // ones, as root, not privileged.
    let mut args: Vec<&str> = vec![
        "--pid=host",
        "--network=host",
        "--read-only",
        "--user=0",
        "--cap-drop=ALL",
        "--entrypoint=/bin/faultline-agent",
        "-v=/var/run/docker.sock:/var/run/docker.sock",
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
        "node-image",
        "--state-dir",
        "/var/lib/faultline-agent",
        "--no-sweep",
    ];
    lab.run("agent", &args, &cmd);
    println!(
        "image with the agent (debug build, imported): {} bytes",
        docker(&["image", "inspect", "--format", "{{.Size}}", &lab.image])
    );
    let registered = h.coordinator.registry.wait_for(1, Duration::from_secs(15)).await;
    assert!(
        registered,
        "the agent in the image did not register: {}",
        docker(&["logs", &format!("{}-agent", lab.prefix)])
    );
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-target$\" }} }}\n    kill: {{ name: sleep }}\n",
        lab.prefix
    );
    let r = h.run(&experiment(port, "1s", &fault), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    println!("agent from the image: {t:?}");
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    assert_eq!(t.killed.iter().map(|k| k.pid).collect::<Vec<_>>(), victim);
    assert_eq!(t.state, "restored");
    // Its own container is never a target.
    let own = format!(
        "    targets: {{ containers: {{ name: \"^{}-agent$\" }} }}\n    kill: {{ name: sleep }}\n",
        lab.prefix
    );
    let r = h.run(&experiment(port, "500ms", &own), &[]).await.unwrap();
    let t = &r.report.faults[0].targets[0];
    assert_eq!(r.exit_code, 5, "{}", r.report.reason);
    assert!(t.detail.contains("agent"), "{}", t.detail);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_block_removes_the_table_in_the_containers_namespace_on_restart() {
    if !docker_or_skip("an_agent_killed_mid_block_removes_the_table_in_the_containers_namespace_on_restart") {
        return;
    }
    let mut lab = DockerLab::new("crashblock");
    lab.run("a", &[], LOOP);
    let pid = lab.pid("a");
    let (_, gw) = lab.addr("a");
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let h = std::sync::Arc::new(Harness::start().await);
    let state = tempfile::tempdir().unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut agent = Reap(spawn_agent(&h.url, state.path()));
    assert!(h.coordinator.registry.wait_for(1, Duration::from_secs(10)).await);
    let fault = format!(
        "    targets: {{ containers: {{ name: \"^{}-a$\" }} }}\n    block: {{ peers: {{ cidrs: [{gw}/32] }} }}\n",
        lab.prefix
    );
    let yaml = experiment(port, "30s", &fault);
    let run = {
        let h = h.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    assert!(tokio::task::block_in_place(|| wait_for(
        Duration::from_secs(10),
        || { !faultline_tables(pid).is_empty() }
    )));
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    assert!(!faultline_tables(pid).is_empty(), "nothing restored the block yet");
    let _next = Reap(spawn_agent(&h.url, state.path()));
    let cleaned =
        tokio::task::block_in_place(|| wait_for(Duration::from_secs(10), || faultline_tables(pid).is_empty()));
    assert!(
        cleaned,
        "the restarted agent deleted the table inside the container's namespace"
    );
    run.abort();
    stop.cancel();
}
