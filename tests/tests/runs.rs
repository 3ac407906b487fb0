//! End-to-end runs: a real coordinator and agents in this process over
//! loopback gRPC, real probes, real signals to processes these tests start.

use std::time::Duration;

use faultline_coordinator::Outcome;
use faultline_proto::v1;
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

const TEST_HTTP: &str = env!("CARGO_BIN_EXE_faultline-test-http");

/// An experiment probing `port` over HTTP and killing processes matching
/// `cmdline` on agents with `selector`.
fn experiment(port: u16, cmdline: &str, selector: &str, success: &str, duration: &str) -> String {
    format!(
        r#"name: e2e
hypothesis:
  description: the probed service answers
  probes:
    - name: web
      interval: 50ms
      timeout: 300ms
      http: {{ url: "http://127.0.0.1:{port}/health" }}
      tolerances:
        - success_rate: "{success}"
        - latency: {{ percentile: p99, max: 250ms }}
baseline: 500ms
duration: {duration}
recovery: 1500ms
faults:
  - name: kill-it
    targets: {{ labels: {selector} }}
    kill: {{ cmdline: '{cmdline}' }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_run_passes_when_the_probed_service_is_unaffected() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;

    let r = h
        .run(
            &experiment(port, &victim.cmdline_regex, "{ zone: a }", "99%", "1s"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.report.outcome, Outcome::Passed, "{}", r.report.reason);
    assert_eq!(r.exit_code, 0);
    let t = &r.report.faults[0].targets[0];
    assert_eq!(t.agent_id, "node-a");
    assert_eq!(t.state, "restored");
    assert_eq!(t.killed.len(), 1);
    assert_eq!(t.killed[0].pid, victim.pid());
    assert!(victim.wait_exit(Duration::from_secs(2)), "the sleeper was killed");
    let p = &r.report.probes[0];
    assert!(
        p.baseline.samples >= 5 && p.during.samples >= 10,
        "{:?} {:?}",
        p.baseline,
        p.during
    );
    assert!(!p.degraded);
    // Every phase ran, in order.
    let phases: Vec<String> = r.report.phases.iter().map(|p| p.phase.as_str().to_string()).collect();
    assert_eq!(
        phases,
        ["validate", "plan", "baseline", "steady", "inject", "observe", "restore", "recover", "verdict", "report"]
    );
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_probed_service_fails_the_hypothesis() {
    let (mut server, port) = http_server(TEST_HTTP);
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("role", "web")]).await;

    let r = h
        .run(
            &experiment(port, &server.cmdline_regex, "{ role: web }", "90%", "1s"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.report.outcome, Outcome::Failed, "{}", r.report.reason);
    assert_eq!(r.exit_code, 1);
    assert!(server.wait_exit(Duration::from_secs(2)));
    let p = &r.report.probes[0];
    assert_eq!(p.baseline.success_rate, 1.0);
    assert_eq!(p.during.successes, 0, "{:?}", p.during);
    assert!(p.degraded && !p.recovered && p.time_to_recovery_ms.is_none());
    assert!(p.errors.contains_key("connection refused"), "{:?}", p.errors);
    let during = p.tolerances[0].during.as_ref().unwrap();
    assert!(!during.passed && during.measured.starts_with("0.0%"), "{during:?}");
    assert!(r.report.reason.contains("success rate"), "{}", r.report.reason);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsteady_baseline_stops_before_injecting_anything() {
    let mut victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;

    let r = h
        .run(
            &experiment(closed_port(), &victim.cmdline_regex, "{ zone: a }", "90%", "1s"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.report.outcome, Outcome::NotSteady, "{}", r.report.reason);
    assert_eq!(r.exit_code, 4);
    assert!(r.report.reason.contains("nothing was injected"), "{}", r.report.reason);
    assert!(r.report.faults.iter().all(|f| f.targets.is_empty()));
    assert!(!r
        .events
        .iter()
        .any(|e| matches!(e.event, Some(v1::run_event::Event::Fault(_)))));
    assert!(!victim.exited(), "the victim must still be running");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_matching_no_agent_is_an_error_that_lists_known_labels() {
    let victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    h.add_agent("node-b", &[("zone", "b"), ("role", "db")]).await;

    let r = h
        .run(
            &experiment(closed_port(), &victim.cmdline_regex, "{ zone: z }", "90%", "1s"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.report.outcome, Outcome::Error);
    assert_eq!(r.exit_code, 5);
    let reason = &r.report.reason;
    assert!(reason.contains("{zone=z}"), "{reason}");
    assert!(
        reason.contains("node-a {zone=a}") && reason.contains("node-b {role=db, zone=b}"),
        "{reason}"
    );
    drop(victim);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_file_and_unknown_field_are_rejected_with_line_and_column() {
    let h = Harness::start().await;
    let mut c = h.control().await;
    let bad = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source("name: [unclosed\nduration: 1s\n", &[])),
        })
        .await
        .map(|_| ())
        .expect_err("malformed file refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("test.yaml:"), "{}", bad.message());

    let yaml = experiment(1, "x", "{}", "90%", "1s").replace("      interval: 50ms", "      intervals: 50ms");
    let unknown = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source(&yaml, &[])),
        })
        .await
        .map(|_| ())
        .expect_err("unknown field refused");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().starts_with("test.yaml:6:7:"), "{}", unknown.message());
    assert!(
        unknown.message().contains("unknown field `intervals`"),
        "{}",
        unknown.message()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_never_touches_protected_pids() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    // pid 1 and this very process (which hosts the agent) are protected.
    for (pid, why) in [(1u32, "pid 1"), (std::process::id(), "agent itself")] {
        let yaml = experiment(port, "x", "{}", "90%", "1s")
            .replace("kill: { cmdline: 'x' }", &format!("kill: {{ pid: {pid} }}"));
        let r = h.run(&yaml, &[]).await.unwrap();
        assert_eq!(r.report.outcome, Outcome::Error, "{}", r.report.reason);
        assert_eq!(r.exit_code, 5);
        let t = &r.report.faults[0].targets[0];
        assert_eq!(t.state, "refused");
        assert!(t.detail.contains(why), "{}", t.detail);
        assert!(r.report.reason.contains("node-a refused"), "{}", r.report.reason);
    }
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_the_run_aborted_and_restores() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let yaml = experiment(port, &victim.cmdline_regex, "{}", "90%", "30s");
    let mut c = h.control().await;
    let mut stream = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source(&yaml, &[])),
        })
        .await
        .unwrap()
        .into_inner();
    let mut run_id;
    let mut aborted_at = None;
    let report = loop {
        let ev = stream.message().await.unwrap().expect("events until finished");
        run_id = ev.run_id.clone();
        match &ev.event {
            Some(v1::run_event::Event::Phase(p)) if p.phase == "observe" => {
                let found = c
                    .abort(v1::AbortRequest {
                        run_id: run_id.clone(),
                        reason: "test abort".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .found;
                assert!(found);
                aborted_at = Some(std::time::Instant::now());
            }
            Some(v1::run_event::Event::Finished(f)) => break f.clone(),
            _ => {}
        }
    };
    assert!(aborted_at.unwrap().elapsed() < Duration::from_secs(10));
    assert_eq!(report.outcome, "aborted");
    assert_eq!(report.exit_code, 3);
    let r: faultline_coordinator::report::Report = serde_json::from_str(&report.report_json).unwrap();
    assert_eq!(r.aborted_by.as_deref(), Some("test abort"));
    assert_eq!(r.faults[0].targets[0].state, "restored");
    // The run is over: aborting again finds nothing.
    let again = c
        .abort(v1::AbortRequest {
            run_id,
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.found);
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reconnects_after_the_coordinator_restarts() {
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let addr = h.addr.to_string();
    h.stop_coordinator().await;
    let agents = h.take_agents();
    drop(h);

    let mut h2 = Harness::start_on(&addr).await;
    assert!(
        h2.coordinator.registry.wait_for(1, Duration::from_secs(15)).await,
        "agent did not reconnect to the restarted coordinator"
    );
    let a = &h2.coordinator.registry.agents()[0];
    assert_eq!(a.agent_id, "node-a");
    assert_eq!(a.labels, labels(&[("zone", "a")]));
    for (stop, task) in agents {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    h2.stop_coordinator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_the_run_observes() {
    // Observe lasts 2.5 leases: without renewals the agent would restore the
    // fault on its own ("expired"); with them the coordinator restores it.
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let yaml = format!(
        "{}lease: 1s\n",
        experiment(port, &victim.cmdline_regex, "{}", "90%", "2500ms")
    );
    let r = h.run(&yaml, &[]).await.unwrap();
    assert_eq!(r.report.outcome, Outcome::Passed, "{}", r.report.reason);
    let t = &r.report.faults[0].targets[0];
    assert_eq!(t.state, "restored");
    assert_eq!(t.restored_by.as_deref(), Some("coordinator"));
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_stop_aborts_runs_and_refuses_new_ones_until_resume() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let yaml = experiment(port, &victim.cmdline_regex, "{}", "90%", "30s");
    let mut c = h.control().await;
    let mut stream = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(source(&yaml, &[])),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stopped = None;
    let finished = loop {
        let ev = stream.message().await.unwrap().expect("events until finished");
        match &ev.event {
            Some(v1::run_event::Event::Phase(p)) if p.phase == "observe" && stopped.is_none() => {
                let r = c
                    .stop(v1::StopRequest {
                        reason: "pager went off".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.aborted_runs, vec![ev.run_id.clone()]);
                assert_eq!(r.agents_told, 1);
                stopped = Some(std::time::Instant::now());
            }
            Some(v1::run_event::Event::Finished(f)) => break f.clone(),
            _ => {}
        }
    };
    assert_eq!((finished.outcome.as_str(), finished.exit_code), ("aborted", 3));
    let r: faultline_coordinator::report::Report = serde_json::from_str(&finished.report_json).unwrap();
    let by = r.aborted_by.unwrap_or_default();
    assert!(
        by.starts_with("emergency stop at ") && by.ends_with(": pager went off"),
        "{by}"
    );
    assert_eq!(r.faults[0].targets[0].state, "restored");

    // Stopped: a new run is refused before anything happens.
    let refused = h.run(&yaml, &[]).await.err().expect("refused while stopped");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("until it is resumed"),
        "{}",
        refused.message()
    );
    assert!(
        !refused.message().contains("faultline "),
        "CLI advice in a status: {}",
        refused.message()
    );

    assert!(c.resume(v1::ResumeRequest {}).await.unwrap().into_inner().was_stopped);
    assert!(!c.resume(v1::ResumeRequest {}).await.unwrap().into_inner().was_stopped);
    let second = sleeper();
    let short = experiment(port, &second.cmdline_regex, "{}", "90%", "200ms");
    let r = h.run(&short, &[]).await.expect("runs again after resume");
    assert_eq!(r.report.outcome, Outcome::Passed, "{}", r.report.reason);
    h.stop().await;
    stop.cancel();
}

/// An experiment with one fault and a probe that always passes.
fn one_fault(port: u16, fault: &str) -> String {
    format!(
        r#"name: refusals
hypothesis:
  probes:
    - name: web
      interval: 50ms
      http: {{ url: "http://127.0.0.1:{port}/health" }}
baseline: 200ms
duration: 300ms
recovery: 500ms
faults:
  - name: f
{fault}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_policy_refusals_are_reported_and_nothing_is_touched() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let allowed = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = sleeper();
    let mut h = Harness::start().await;
    let policy = faultline_agent::policy::AgentPolicy::parse(
        "agent-policy.yaml",
        &format!(
            "allowed_kinds: [kill, disk_fill]\nprotected_processes: [sleep]\nallowed_fill_paths: [{}]\n",
            allowed.path().display()
        ),
    )
    .unwrap();
    h.add_agent_with("node-a", &[], |c| c.policy = policy).await;

    // Fill outside the allowed paths: refused, nothing written.
    let r = h
        .run(
            &one_fault(
                port,
                &format!(
                    "    disk_fill: {{ path: {}, size: 1MiB }}\n",
                    elsewhere.path().display()
                ),
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 5, "{}", r.report.reason);
    let t = &r.report.faults[0].targets[0];
    assert_eq!(t.state, "refused");
    assert!(
        t.detail.contains("outside the agent's allowed fill paths"),
        "{}",
        t.detail
    );
    assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none());

    // Kill of a protected name: refused, the process lives.
    let r = h
        .run(
            &one_fault(port, &format!("    kill: {{ cmdline: '{}' }}\n", victim.cmdline_regex)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 5, "{}", r.report.reason);
    assert!(
        r.report.faults[0].targets[0]
            .detail
            .contains("protected by agent policy"),
        "{:?}",
        r.report.faults[0].targets[0]
    );
    let mut victim = victim;
    assert!(!victim.exited(), "the protected process must live");

    // A kind the policy does not allow is not even advertised: refused at plan time.
    let r = h
        .run(&one_fault(port, "    block: { peers: { cidrs: [192.0.2.1] } }\n"), &[])
        .await
        .unwrap();
    assert_eq!(r.exit_code, 5);
    assert!(
        r.report
            .reason
            .contains("cannot run block faults (it supports: kill, disk_fill)"),
        "{}",
        r.report.reason
    );
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_guardrail_aborts_the_run_early_and_restores() {
    let (mut server, port) = http_server(TEST_HTTP);
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("role", "web")]).await;
    let yaml = experiment(port, &server.cmdline_regex, "{ role: web }", "90%", "30s").replace(
        "        - success_rate: \"90%\"\n",
        "        - success_rate: \"90%\"\n          guardrail: true\n          window: 1s\n",
    );
    assert!(yaml.contains("guardrail: true"), "{yaml}");
    let started = std::time::Instant::now();
    let r = h.run(&yaml, &[]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.report.outcome, Outcome::Aborted, "{}", r.report.reason);
    assert_eq!(r.exit_code, 3);
    let by = r.report.aborted_by.clone().unwrap_or_default();
    assert!(
        by.starts_with("guardrail web: success rate >= 90.0% over the last 1s: measured 0.0%"),
        "{by}"
    );
    // Aborted within a few samples, not after the 30 s observe phase.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(server.wait_exit(Duration::from_secs(2)));
    assert!(r.report.faults[0].targets[0].restored_by.is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fill_run_fills_a_tmpfs_and_restore_removes_the_file() {
    if !faultline_tests::lab::root_or_skip("disk_fill_run_fills_a_tmpfs_and_restore_removes_the_file") {
        return;
    }
    let fs = faultline_tests::lab::Tmpfs::mount(32);
    let dir = fs.path().to_path_buf();
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    let allowed = dir.clone();
    h.add_agent_with("node-a", &[], move |c| c.fill.allowed = vec![allowed])
        .await;
    let yaml = one_fault(
        port,
        &format!("    disk_fill: {{ path: {}, used: \"50%\" }}\n", dir.display()),
    )
    .replace("duration: 300ms", "duration: 1s");
    let h2 = std::sync::Arc::new(h);
    let run = {
        let h = h2.clone();
        tokio::spawn(async move { h.run(&yaml, &[]).await })
    };
    // While the run observes, the fill file is there and the tmpfs is half
    // full. The file exists a moment before its blocks are allocated, so
    // keep the fullest reading while it is there (bounded: 100 polls).
    let mut seen: Option<(Vec<String>, f64)> = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if files.is_empty() {
            if seen.is_some() {
                break; // restored
            }
            continue;
        }
        let st = nix::sys::statvfs::statvfs(&dir).unwrap();
        let used = 100.0 * (1.0 - st.blocks_free() as f64 / st.blocks() as f64);
        let fuller = seen.as_ref().is_none_or(|(_, u)| used > *u);
        if fuller {
            seen = Some((files, used));
        }
        if used >= 45.0 {
            break;
        }
    }
    let r = run.await.unwrap().unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);
    let (files, used) = seen.expect("the fill file appeared during the run");
    assert!(files[0].starts_with(".faultline-fill-"), "{files:?}");
    assert!((45.0..=55.0).contains(&used), "used {used:.1}%");
    let t = &r.report.faults[0].targets[0];
    assert_eq!(
        (t.state.as_str(), t.restored_by.as_deref()),
        ("restored", Some("coordinator"))
    );
    assert!(t.objects[0].contains("fallocate"), "{:?}", t.objects);
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "the fill file is removed"
    );
    stop.cancel();
}

/// GET /metrics over loopback.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_agent_metrics_are_scraped_over_http() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let mut h = Harness::start().await;
    let agent_metrics = faultline_agent::agent_metrics();
    let m = agent_metrics.clone();
    h.add_agent_with("node-a", &[], move |c| c.metrics = m).await;
    let serve = |metrics: faultline_proto::metrics::Metrics,
                 refresh: Box<dyn Fn(&faultline_proto::metrics::Metrics) + Send + Sync>| {
        let stop = stop.clone();
        async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let p = l.local_addr().unwrap().port();
            tokio::spawn(faultline_proto::metrics::serve(l, metrics, refresh, async move {
                stop.cancelled().await
            }));
            p
        }
    };
    let c = h.coordinator.clone();
    let coord_port = serve(h.coordinator.metrics.clone(), Box::new(move |_| c.refresh_metrics())).await;
    let agent_port = serve(agent_metrics, Box::new(|_| {})).await;
    let r = h
        .run(&experiment(port, &victim.cmdline_regex, "{}", "90%", "300ms"), &[])
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.report.reason);

    let coord = scrape(coord_port).await;
    for want in [
        "# TYPE faultline_connected_agents gauge\nfaultline_connected_agents 1\n",
        "faultline_runs_total{outcome=\"passed\"} 1\n",
        "faultline_inject_ack_seconds_count{kind=\"kill\"} 1\n",
        "faultline_restore_ack_seconds_count{kind=\"kill\"} 1\n",
        "faultline_active_faults{kind=\"kill\"} 0\n",
        "# TYPE faultline_lease_expiries_total counter\n",
        "# TYPE faultline_refusals_total counter\n",
    ] {
        assert!(coord.contains(want), "coordinator metrics lack {want:?}:\n{coord}");
    }
    let agent = scrape(agent_port).await;
    for want in [
        "faultline_agent_connected 1\n",
        "faultline_agent_injections_total{kind=\"kill\",result=\"injected\"} 1\n",
        "faultline_agent_active_faults{kind=\"kill\"} 0\n",
        "faultline_agent_restore_seconds_count{kind=\"kill\"} 1\n",
    ] {
        assert!(agent.contains(want), "agent metrics lack {want:?}:\n{agent}");
    }
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_starts_runs_on_its_ticks_and_can_be_removed() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let mut c = h.control().await;
    // Every second; the fault matches no process, so each run ends quickly.
    let yaml = one_fault(port, "    kill: { cmdline: '^no-such-process-faultline-test$' }\n");
    let added = c
        .add_schedule(v1::AddScheduleRequest {
            source: Some(source(&yaml, &[])),
            gameday: None,
            cron: "* * * * * *".into(),
            tz: "Europe/Paris".into(),
            window: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(added.next_unix_ms > 0);
    let bad = c
        .add_schedule(v1::AddScheduleRequest {
            source: Some(source(&yaml, &[])),
            gameday: None,
            cron: "every day".into(),
            tz: String::new(),
            window: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // The status names the value, not a CLI flag (other clients call Control too).
    assert!(
        bad.message().contains("cron expression \"every day\""),
        "{}",
        bad.message()
    );
    assert!(!bad.message().contains("--"), "{}", bad.message());

    let mut started = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let list = c
            .list_schedules(v1::ListSchedulesRequest {})
            .await
            .unwrap()
            .into_inner()
            .schedules;
        if let Some(t) = list[0].recent_ticks.iter().find(|t| t.contains(" started ")) {
            started = Some(t.rsplit(' ').next().unwrap().to_string());
            break;
        }
    }
    let run_id = started.expect("a tick started a run within 10 s");
    let runs = c
        .list_runs(v1::ListRunsRequest {
            limit: 50,
            outcome: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.iter().any(|r| r.run_id == run_id), "{runs:?}");
    let removed = c
        .remove_schedule(v1::RemoveScheduleRequest {
            schedule_id: added.schedule_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.found);
    assert!(c
        .list_schedules(v1::ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules
        .is_empty());
    let audit = c
        .list_audit(v1::ListAuditRequest { limit: 50 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(
        actions.contains(&"schedule-add") && actions.contains(&"schedule-rm"),
        "{actions:?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "submit" && a.caller == format!("schedule:{}", added.schedule_id)),
        "{audit:?}"
    );
    h.stop().await;
    stop.cancel();
}
