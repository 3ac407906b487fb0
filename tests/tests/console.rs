//! The web console (`faultline serve --ui-listen`) over real HTTP on
//! loopback: login and session cookies, roles decided on the server, CSRF
//! tokens, no state change over GET, security headers, the live run's
//! Server-Sent Events (with chart points) and its Abort button on a real
//! run. The browser tests are in `console_browser.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faultline_proto::v1;
use faultline_tests::console_http::*;
use faultline_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_an_httponly_samesite_strict_cookie_and_pages_need_a_session() {
    let lab = lab().await;
    let ui = lab.ui;
    // Without a session: pages send the browser to the login page, the
    // event stream and POSTs are refused.
    for p in ["/fleet", "/runs", "/stop", "/", "/runs/r-1"] {
        let r = http(ui, "GET", p, None, None).await;
        assert_eq!(r.status, 303, "{p}: {r:?}");
        assert_eq!(r.headers.get("location").map(String::as_str), Some("/login"), "{p}");
        assert_security_headers(&r, p);
    }
    assert_eq!(http(ui, "GET", "/runs/r-1/events", None, None).await.status, 401);
    assert_eq!(http(ui, "POST", "/stop", None, Some("confirm=STOP")).await.status, 401);
    assert_eq!(
        http(ui, "GET", "/fleet", Some("forged-session-id"), None).await.status,
        303
    );
    // A wrong token logs nobody in.
    let r = http(ui, "POST", "/login", None, Some("token=wrong-0123456789abcdef")).await;
    assert_eq!(r.status, 401);
    assert!(!r.headers.contains_key("set-cookie"));
    // A right one sets the cookie with HttpOnly and SameSite=Strict.
    let r = http(ui, "POST", "/login", None, Some(&format!("token={OPERATOR}"))).await;
    assert_eq!(r.status, 303, "{r:?}");
    let cookie = r.headers.get("set-cookie").expect("cookie");
    assert!(cookie.starts_with("fl_session="), "{cookie}");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(OPERATOR),
        "the token itself never goes into the cookie: {cookie}"
    );
    let session = login(ui, OPERATOR).await;
    let fleet = http(ui, "GET", "/fleet", Some(&session), None).await;
    assert_eq!(fleet.status, 200);
    assert_security_headers(&fleet, "/fleet");
    assert!(fleet.body.contains("<td>node-a</td>"), "{}", fleet.body);
    assert!(fleet.body.contains("zone=a"), "{}", fleet.body);
    assert!(fleet.body.contains("alice</b> (operator)"), "{}", fleet.body);
    assert!(!fleet.body.contains("<script>"), "no inline script");
    let runs = http(ui, "GET", "/runs", Some(&session), None).await;
    assert_eq!(runs.status, 200);
    assert_security_headers(&runs, "/runs");
    let js = http(ui, "GET", "/static/console.js", None, None).await;
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"].starts_with("text/javascript"));
    assert_security_headers(&js, "/static/console.js");
    assert_security_headers(&http(ui, "GET", "/login", None, None).await, "/login");
    assert_security_headers(&http(ui, "GET", "/nope", Some(&session), None).await, "404");
    // Logging out needs the CSRF token, then ends the session.
    let token = csrf(ui, &session).await;
    assert_eq!(http(ui, "POST", "/logout", Some(&session), None).await.status, 403);
    let out = http(ui, "POST", "/logout", Some(&session), Some(&format!("csrf={token}"))).await;
    assert_eq!(out.status, 303);
    assert_eq!(http(ui, "GET", "/fleet", Some(&session), None).await.status, 303);
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_sessions_missing_csrf_tokens_and_gets_change_nothing() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let lab = lab().await;
    let (ui, c) = (lab.ui, lab.h.coordinator.clone());
    let (run_id, mut stream) = submit(&lab.h, &experiment(port, &victim, "30s")).await;
    wait_observe(&mut stream).await;
    let in_flight = || c.runs.is_known(&run_id) && c.runs.report(&run_id).is_none();
    let op = login(ui, OPERATOR).await;
    let ro = login(ui, READ_ONLY).await;
    let (op_csrf, ro_csrf) = (csrf(ui, &op).await, csrf(ui, &ro).await);
    assert_ne!(op_csrf, ro_csrf, "one CSRF token per session");
    let abort = format!("/runs/{run_id}/abort");
    // The read-only page has no button, and the server refuses the POST anyway.
    let page = http(ui, "GET", &format!("/runs/{run_id}"), Some(&ro), None).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"abort\""), "{}", page.body);
    let r = http(ui, "POST", &abort, Some(&ro), Some(&format!("csrf={ro_csrf}"))).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("read-only"), "{}", r.body);
    let r = http(
        ui,
        "POST",
        "/stop",
        Some(&ro),
        Some(&format!("csrf={ro_csrf}&confirm=STOP")),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // An operator without the CSRF token, with a wrong one, or with the
    // other session's one, is refused.
    for form in [
        String::new(),
        "csrf=".to_string(),
        "csrf=0000000000000000".to_string(),
        format!("csrf={ro_csrf}"),
    ] {
        let r = http(ui, "POST", &abort, Some(&op), Some(&form)).await;
        assert_eq!(r.status, 403, "{form}: {r:?}");
        assert!(r.body.contains("CSRF"), "{}", r.body);
        let r = http(ui, "POST", "/stop", Some(&op), Some(&format!("{form}&confirm=STOP"))).await;
        assert_eq!(r.status, 403, "{form}: {r:?}");
    }
    // GET never changes state, whatever it asks for.
    for p in [
        abort.clone(),
        format!("{abort}?csrf={op_csrf}"),
        format!("/stop?csrf={op_csrf}&confirm=STOP"),
        format!("/logout?csrf={op_csrf}"),
    ] {
        let r = http(ui, "GET", &p, Some(&op), None).await;
        assert_ne!(r.status, 303, "{p}: {r:?}");
    }
    // The emergency stop also needs its typed confirmation.
    let r = http(
        ui,
        "POST",
        "/stop",
        Some(&op),
        Some(&format!("csrf={op_csrf}&confirm=stop please")),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(in_flight(), "nothing above aborted the run");
    assert_eq!(c.runs.stopped(), None, "nothing above stopped the fleet");
    assert_eq!(
        http(ui, "GET", "/fleet", Some(&op), None).await.status,
        200,
        "the session survived"
    );
    // The read-only token is refused by Control too.
    let mut client = lab.h.control().await;
    let mut req = tonic::Request::new(v1::AbortRequest {
        run_id: run_id.clone(),
        reason: String::new(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {READ_ONLY}").parse().expect("header"));
    let e = client.abort(req).await.expect_err("read-only abort");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(in_flight());
    // Now the operator stops the fleet for real: the run ends aborted.
    let r = http(
        ui,
        "POST",
        "/stop",
        Some(&op),
        Some(&format!("csrf={op_csrf}&confirm=STOP&reason=drill")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(&run_id), "{}", r.body);
    assert!(c.runs.stopped().is_some_and(|w| w.contains("drill")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = c.runs.report(&run_id).expect("the run ended");
    assert_eq!(report.outcome.as_str(), "aborted");
    let audit = c.store.audit_list(20).expect("audit");
    assert!(
        audit.iter().any(|a| a.action == "stop" && a.caller == "console:alice"),
        "{audit:?}"
    );
    // While stopped, the stop page offers operators a Resume button; a
    // read-only session, a missing CSRF token and a GET do not resume.
    let page = http(ui, "GET", "/stop", Some(&op), None).await;
    assert!(page.body.contains("id=\"resume\""), "{}", page.body);
    let page = http(ui, "GET", "/stop", Some(&ro), None).await;
    assert!(!page.body.contains("id=\"resume\""), "{}", page.body);
    let r = http(ui, "POST", "/resume", Some(&ro), Some(&format!("csrf={ro_csrf}"))).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(http(ui, "POST", "/resume", Some(&op), None).await.status, 403);
    let _ = http(ui, "GET", &format!("/resume?csrf={op_csrf}"), Some(&op), None).await;
    assert!(c.runs.stopped().is_some(), "nothing above resumed");
    let r = http(ui, "POST", "/resume", Some(&op), Some(&format!("csrf={op_csrf}"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Resumed"), "{}", r.body);
    assert_eq!(c.runs.stopped(), None, "the operator resumed");
    let audit = c.store.audit_list(20).expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "resume" && a.caller == "console:alice"),
        "{audit:?}"
    );
    // The Runs page filters by outcome and by experiment name.
    let runs = |q: String| {
        let ro = ro.clone();
        async move { http(ui, "GET", &format!("/runs{q}"), Some(&ro), None).await }
    };
    let row = format!("<a href=\"/runs/{run_id}\">");
    assert!(runs(String::new()).await.body.contains(&row));
    assert!(runs("?outcome=aborted".into()).await.body.contains(&row));
    assert!(runs("?outcome=aborted&experiment=conso".into())
        .await
        .body
        .contains(&row));
    let passed = runs("?outcome=passed".into()).await;
    assert_eq!(passed.status, 200);
    assert!(!passed.body.contains(&row), "{}", passed.body);
    assert!(!runs("?experiment=no-such-experiment".into()).await.body.contains(&row));
    let bad = runs("?outcome=bogus".into()).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("use one of"), "{}", bad.body);
    let Lab { h, .. } = lab;
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_streams_a_runs_events_and_its_abort_button_restores_the_faults() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let lab = lab().await;
    let (ui, c) = (lab.ui, lab.h.coordinator.clone());
    let (run_id, mut stream) = submit(&lab.h, &experiment(port, &victim, "30s")).await;
    let op = login(ui, OPERATOR).await;
    // The submitting client's view: when each phase arrived there.
    let (grpc_tx, mut grpc_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
            if let Some(v1::run_event::Event::Phase(p)) = &ev.event {
                let _ = grpc_tx.send((p.phase.clone(), Instant::now()));
            }
        }
    });
    let page = http(ui, "GET", &format!("/runs/{run_id}"), Some(&op), None).await;
    assert_eq!(page.status, 200);
    assert_security_headers(&page, "live run");
    assert!(page.body.contains("<script src=\"/static/console.js\" defer></script>"));
    assert!(page.body.contains("id=\"abort\""), "an operator sees the Abort button");
    let js = http(ui, "GET", "/static/console.js", None, None).await;
    // The console serves no stylesheet (the CSP forbids inline style and
    // pages use the browser's defaults): HTML and the one script are all.
    println!(
        "live-run page weight: {} bytes HTML + {} bytes JS + 0 bytes CSS = {} bytes (uncompressed)",
        page.body.len(),
        js.body.len(),
        page.body.len() + js.body.len()
    );
    let page_csrf = csrf_of(&page.body);
    // The event stream, read like a browser's EventSource.
    let mut s = tokio::net::TcpStream::connect(ui).await.expect("connect");
    s.write_all(format!("GET /runs/{run_id}/events HTTP/1.1\r\nHost: x\r\nCookie: fl_session={op}\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).await.expect("head");
        if l == "\r\n" || l.is_empty() {
            break;
        }
        head.push_str(&l);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    assert!(head.contains("X-Frame-Options: DENY"), "{head}");
    let mut kinds = Vec::new();
    let mut phases = Vec::new();
    let mut sse_phase_at: HashMap<String, Instant> = HashMap::new();
    let mut fault_lag_ms = Vec::new();
    let mut states = Vec::new();
    let mut aborted = false;
    let mut finished = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut event = String::new();
    while finished.is_none() && Instant::now() < deadline {
        let mut l = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), r.read_line(&mut l))
            .await
            .expect("an SSE line within 20 s")
            .expect("read");
        if n == 0 {
            break;
        }
        let l = l.trim_end();
        if let Some(k) = l.strip_prefix("event: ") {
            event = k.to_string();
            continue;
        }
        let Some(data) = l.strip_prefix("data: ") else { continue };
        let d: serde_json::Value = serde_json::from_str(data).expect("one JSON line per message");
        kinds.push(event.clone());
        match event.as_str() {
            "phase" => {
                let p = d["phase"].as_str().expect("phase").to_string();
                sse_phase_at.insert(p.clone(), Instant::now());
                phases.push(p.clone());
                if p == "observe" && !aborted {
                    // The Abort button: a form POST with the page's CSRF token.
                    let r = http(
                        ui,
                        "POST",
                        &format!("/runs/{run_id}/abort"),
                        Some(&op),
                        Some(&format!("csrf={page_csrf}")),
                    )
                    .await;
                    assert_eq!(r.status, 303, "{r:?}");
                    aborted = true;
                }
            }
            "fault" => {
                states.push(d["state"].as_str().expect("state").to_string());
                let at = d["at_unix_ms"].as_u64().expect("at");
                fault_lag_ms.push(faultline_proto::now_unix_ms().saturating_sub(at));
            }
            "finished" => finished = Some(d),
            _ => {}
        }
    }
    let f = finished.expect("the stream ends with the run's finished event");
    assert_eq!(f["outcome"], "aborted", "{f}");
    assert!(aborted);
    assert!(kinds.contains(&"started".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"probe".to_string()),
        "probe samples stream live: {kinds:?}"
    );
    for p in ["baseline", "inject", "observe", "restore"] {
        assert!(phases.iter().any(|x| x == p), "phase {p} in {phases:?}");
    }
    assert!(states.iter().any(|s| s == "injected"), "{states:?}");
    assert!(states.iter().any(|s| s == "restored"), "{states:?}");
    // The run's report: aborted from the console, its fault restored.
    let report = c.runs.report(&run_id).expect("report");
    assert_eq!(report.outcome.as_str(), "aborted");
    assert_eq!(report.aborted_by.as_deref(), Some("aborted from the console"));
    assert_eq!(report.faults[0].targets[0].state, "restored");
    let html = http(ui, "GET", &format!("/runs/{run_id}/report"), Some(&op), None).await;
    assert_eq!(html.status, 200);
    assert!(html.body.contains("aborted"), "the HTML report");
    assert!(html.headers["content-security-policy"].starts_with("default-src 'none'"));
    let runs = http(ui, "GET", "/runs", Some(&op), None).await;
    assert!(
        runs.body.contains(&format!("<a href=\"/runs/{run_id}\">")),
        "{}",
        runs.body
    );
    assert!(runs.body.contains(">aborted<"), "{}", runs.body);
    // How much later the event stream delivered each phase than the
    // submitting gRPC client, and each fault status after the agent's clock.
    let mut lag_us = Vec::new();
    while let Ok((p, at)) = grpc_rx.try_recv() {
        if let Some(s) = sse_phase_at.get(&p) {
            lag_us.push(
                s.saturating_duration_since(at).as_micros() as i64
                    - at.saturating_duration_since(*s).as_micros() as i64,
            );
        }
    }
    println!("SSE minus gRPC client arrival per phase (µs): {lag_us:?}");
    println!("agent state change to SSE delivery per fault status (ms): {fault_lag_ms:?}");
    let Lab { h, .. } = lab;
    h.stop().await;
    stop.cancel();
}

/// The probe progress events a client (and the live chart) gets carry each
/// sample once, including those of the restore and recover phases, which
/// often end before the once-a-second progress tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_progress_carries_each_sample_once_up_to_the_end_of_recovery() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let r = h
        .run(&experiment_with_baseline(port, &victim, "500ms", "800ms"), &[])
        .await
        .expect("run");
    assert_eq!(r.exit_code, 0, "{:?}", r.report.reason);
    let recover_at = r
        .events
        .iter()
        .find_map(|e| match &e.event {
            Some(v1::run_event::Event::Phase(p)) if p.phase == "recover" => Some(e.elapsed_ms),
            _ => None,
        })
        .expect("a recover phase");
    let points: Vec<u64> = r
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Some(v1::run_event::Event::Probe(p)) => Some(p.points.iter().map(|x| x.at_ms)),
            _ => None,
        })
        .flatten()
        .collect();
    let p = &r.report.probes[0];
    let taken = p.baseline.samples + p.during.samples + p.recovery.samples;
    assert!(
        points.windows(2).all(|w| w[0] < w[1]),
        "points come in order, none twice: {points:?}"
    );
    assert!(
        points.iter().any(|&at| at >= recover_at),
        "recovery's samples reach the client (recover began at {recover_at} ms): {points:?}"
    );
    // The report counts baseline, observe and restore/recover samples; a
    // point may also come from the short steady and inject phases, and a
    // sample in flight when the probes stopped may miss the last event.
    let n = points.len() as u32;
    assert!(
        n + 2 >= taken && n <= taken + 4,
        "{n} points for {taken} samples in the report"
    );
    h.stop().await;
    stop.cancel();
}
