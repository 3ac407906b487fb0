//! The web console in a real browser: Debian's headless Chromium driven
//! over the DevTools pipe (`faultline_tests::browser`). An operator logs in,
//! watches a run live (phases, targets, the probe chart with its baseline
//! band and fault window, checked in the DOM and in a screenshot's pixels)
//! and aborts it; a read-only session cannot abort, and a POST without the
//! CSRF token is refused; a guardrail's row turns from ok to breached live
//! in a run started with the `faultline run --coordinator` CLI.

use std::time::{Duration, Instant};

use faultline_proto::v1;
use faultline_tests::browser::{near, png_colours, Browser};
use faultline_tests::console_http::*;
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_an_operator_logs_in_sees_the_fleet_watches_a_run_live_and_aborts_it() {
    let Some(binary) = faultline_tests::browser::chromium_or_skip() else {
        return;
    };
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let lab = lab().await;
    let (ui, c) = (lab.ui, lab.h.coordinator.clone());
    let mut b = Browser::start(&binary).await.expect("start chromium");
    b.goto(&format!("http://{ui}/fleet")).await.expect("goto");
    assert!(
        b.wait_for("location.pathname === '/login'", Duration::from_secs(10))
            .await
            .expect("eval"),
        "without a session the browser lands on the login page"
    );
    b.eval(&format!(
        "document.querySelector('input[name=token]').value = '{OPERATOR}'; document.forms[0].submit(); true"
    ))
    .await
    .expect("log in");
    assert!(
        b.wait_for(
            "location.pathname === '/fleet' && document.querySelector('#agents').textContent.includes('node-a')",
            Duration::from_secs(10)
        )
        .await
        .expect("eval"),
        "the fleet page lists the agent: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    assert_eq!(
        b.eval("document.cookie").await.expect("eval"),
        serde_json::json!(""),
        "the session cookie is HttpOnly: scripts cannot read it"
    );
    // A 3 s baseline: the page is open before the fault goes in.
    let (run_id, mut stream) = submit(&lab.h, &experiment_with_baseline(port, &victim, "3s", "30s")).await;
    let (inject_tx, inject_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut inject_tx = Some(inject_tx);
        while let Ok(Some(ev)) = stream.message().await {
            if matches!(&ev.event, Some(v1::run_event::Event::Phase(p)) if p.phase == "inject") {
                if let Some(tx) = inject_tx.take() {
                    let _ = tx.send(Instant::now());
                }
            }
        }
    });
    b.goto(&format!("http://{ui}/runs/{run_id}")).await.expect("goto");
    assert!(
        b.wait_for(
            "document.querySelector('#phases').textContent.includes('baseline') && !document.querySelector('#phases').textContent.includes('inject')",
            Duration::from_secs(10)
        )
        .await
        .expect("eval"),
        "the page is live before the fault: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    // From the submitting client receiving the inject phase to the
    // browser's page showing it, polled as fast as DevTools answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut shown = None;
    while Instant::now() < deadline {
        let q = "document.querySelector('#phases').textContent.includes('inject')";
        if b.eval(q).await.expect("eval") == serde_json::json!(true) {
            shown = Some(Instant::now());
            break;
        }
    }
    let shown = shown.expect("the inject phase reaches the page");
    let sent = inject_rx.await.expect("the client saw inject");
    println!(
        "inject phase: browser page shows it {} µs after the gRPC client received it (negative: before)",
        shown.saturating_duration_since(sent).as_micros() as i64
            - sent.saturating_duration_since(shown).as_micros() as i64
    );
    // The console's script (allowed by the CSP as a same-origin file) fills
    // the tables from the event stream, without a reload.
    let live = "document.querySelector('#phases').textContent.includes('observe') \
                && document.querySelector('#targets').textContent.includes('injected') \
                && document.querySelector('#probes').textContent.includes('web') \
                && document.querySelector('#stream').textContent === 'live'";
    assert!(
        b.wait_for(live, Duration::from_secs(20)).await.expect("eval"),
        "the live page updates: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    let shot = live_chart_is_drawn_and_screenshotted(&mut b).await;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-live-run.png");
    std::fs::write(&path, &shot).expect("save the screenshot");
    println!("screenshot of the live run: {} ({} bytes)", path.display(), shot.len());
    // The Abort button: the form POSTs with its CSRF token; the run ends
    // aborted and the page shows it.
    b.eval("document.getElementById('abort').click(); true")
        .await
        .expect("click");
    assert!(
        b.wait_for(
            "document.getElementById('outcome').textContent === 'aborted'",
            Duration::from_secs(20)
        )
        .await
        .expect("eval"),
        "the page shows aborted: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    let report = c.runs.report(&run_id).expect("the run ended");
    assert_eq!(report.outcome.as_str(), "aborted");
    assert_eq!(report.aborted_by.as_deref(), Some("aborted from the console"));
    assert_eq!(report.faults[0].targets[0].state, "restored");
    drop(b);
    let Lab { h, .. } = lab;
    h.stop().await;
    stop.cancel();
}

/// Points on the `web` probe's live chart (its polyline, counted in the DOM).
async fn chart_points(b: &mut Browser) -> u64 {
    b.eval(
        "(() => { const l = document.querySelector('svg.chart.live[data-probe=web] polyline'); \
         return l ? l.points.numberOfItems : 0 })()",
    )
    .await
    .expect("eval")
    .as_u64()
    .unwrap_or(0)
}

/// The `web` probe's live chart during observe: it grows without a reload,
/// has the baseline band and the fault window, and its pixels in a
/// screenshot show the line, the band and the window. Returns the PNG.
async fn live_chart_is_drawn_and_screenshotted(b: &mut Browser) -> Vec<u8> {
    let ready = "(() => { const s = document.querySelector('svg.chart.live[data-probe=web]'); \
                 return !!s && s.hasAttribute('data-band') && !!s.querySelector('rect.band') \
                 && !!s.querySelector('rect.fault-window') })()";
    assert!(
        b.wait_for(ready, Duration::from_secs(10)).await.expect("eval"),
        "the chart has its baseline band and fault window: {}",
        b.eval("document.getElementById('charts').innerHTML")
            .await
            .expect("eval")
    );
    let before = chart_points(b).await;
    // The probe samples every 50 ms and progress goes out once a second.
    let mut after = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = chart_points(b).await;
        if after > before + 5 {
            break;
        }
    }
    assert!(
        before >= 10 && after > before + 5,
        "the chart grows live: {before} then {after} points"
    );
    let band = b
        .eval("document.querySelector('svg.chart.live[data-probe=web]').getAttribute('data-band')")
        .await
        .expect("eval");
    println!("live chart: {after} points, baseline band (ms) {band}");
    let rect = b
        .eval(
            "(() => { const s = document.querySelector('svg.chart.live[data-probe=web]'); s.scrollIntoView(); \
             const r = s.getBoundingClientRect(); return [r.x, r.y, r.width, r.height].map(Math.round) })()",
        )
        .await
        .expect("eval");
    let r: Vec<u32> = rect
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect())
        .unwrap_or_default();
    assert_eq!(r.len(), 4, "the chart's rectangle: {rect}");
    assert!(r[2] >= 600 && r[3] >= 150, "the chart is laid out: {rect}");
    let shot = b.screenshot().await.expect("screenshot");
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 5_000,
        "a real screenshot ({} bytes)",
        shot.len()
    );
    let colours = png_colours(&shot, r[0], r[1], r[2], r[3]).expect("decode the screenshot");
    let total: usize = colours.iter().map(|(_, n)| n).sum();
    // The colours console.js draws with: the line #1f6fb2, the band
    // #cfe3f5 at 80 % over white, the fault window #f8d7d7.
    let (line, band, window) = (
        near(&colours, [0x1f, 0x6f, 0xb2]),
        near(&colours, [217, 233, 247]),
        near(&colours, [0xf8, 0xd7, 0xd7]),
    );
    println!(
        "live chart pixels: {total} in {}x{}, {} colours, line {line}, band {band}, fault window {window}",
        r[2],
        r[3],
        colours.len()
    );
    assert!(
        colours.len() > 3 && colours[0].1 < total,
        "the chart area is not one colour"
    );
    assert!(line > 100, "the probe's line is drawn ({line} pixels)");
    assert!(band > 300, "the baseline band is drawn ({band} pixels)");
    assert!(window > 300, "the fault window is shaded ({window} pixels)");
    shot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_a_read_only_session_cannot_abort_and_a_form_without_the_csrf_token_is_refused() {
    let Some(binary) = faultline_tests::browser::chromium_or_skip() else {
        return;
    };
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let lab = lab().await;
    let (ui, c) = (lab.ui, lab.h.coordinator.clone());
    let (run_id, mut stream) = submit(&lab.h, &experiment_with_a_failing_probe(port, &victim, "30s")).await;
    wait_observe(&mut stream).await;
    tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    let in_flight = || c.runs.is_known(&run_id) && c.runs.report(&run_id).is_none();
    let mut b = Browser::start(&binary).await.expect("start chromium");
    b.log_in(ui, READ_ONLY, true).await.expect("log in read-only");
    b.goto(&format!("http://{ui}/runs/{run_id}")).await.expect("goto");
    assert!(
        b.wait_for(
            "document.querySelector('#stream') && document.querySelector('#stream').textContent === 'live'",
            Duration::from_secs(10)
        )
        .await
        .expect("eval"),
        "the read-only session watches the run live"
    );
    // Opened during observe, the chart still starts in the baseline: a
    // late follower gets the points published before it came.
    let from = "(() => { const s = document.querySelector('svg.chart.live[data-probe=web]'); \
                return !!s && s.getAttribute('data-from-ms') !== '' && Number(s.getAttribute('data-from-ms')) < 500 \
                && Number(s.getAttribute('data-points')) >= 5 })()";
    assert!(
        b.wait_for(from, Duration::from_secs(10)).await.expect("eval"),
        "the chart has the baseline's points: {}",
        b.eval("document.getElementById('charts').innerHTML")
            .await
            .expect("eval")
    );
    // The failing probe's chart: no line, a red tick per failed sample.
    let failing = "(() => { const s = document.querySelector('svg.chart.live[data-probe=down]'); \
                   return !!s && s.getAttribute('data-points') === '0' && !s.querySelector('polyline') \
                   && Number(s.getAttribute('data-failures')) >= 5 \
                   && s.querySelectorAll('line.failure').length === Number(s.getAttribute('data-failures')) })()";
    assert!(
        b.wait_for(failing, Duration::from_secs(10)).await.expect("eval"),
        "failed samples are marked: {}",
        b.eval("document.getElementById('charts').innerHTML")
            .await
            .expect("eval")
    );
    assert_eq!(
        b.eval("document.getElementById('abort') === null && document.body.innerText.includes('Read-only session')")
            .await
            .expect("eval"),
        serde_json::json!(true),
        "no Abort button for a read-only session"
    );
    // The page's own script context POSTs the abort with the session's
    // cookie and its valid CSRF token: the server refuses the role.
    let abort = format!(
        "fetch('/runs/{run_id}/abort', {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, \
         body: 'csrf=' + encodeURIComponent(document.querySelector('input[name=csrf]').value)}}) \
         .then(async r => [r.status, await r.text()])"
    );
    let answer = b.eval(&abort).await.expect("fetch");
    assert_eq!(answer[0], serde_json::json!(403), "{answer}");
    assert!(answer[1].as_str().unwrap_or("").contains("read-only"), "{answer}");
    let stopped = b
        .eval(
            "fetch('/stop', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, \
             body: 'confirm=STOP&csrf=' + encodeURIComponent(document.querySelector('input[name=csrf]').value)}) \
             .then(r => r.status)",
        )
        .await
        .expect("fetch");
    assert_eq!(stopped, serde_json::json!(403));
    assert!(in_flight(), "the run keeps going");
    assert_eq!(c.runs.stopped(), None, "the fleet is not stopped");
    // Log out (the page's own form, with its token) and in as an operator.
    b.eval("document.querySelector('form[action=\"/logout\"] button').click(); true")
        .await
        .expect("log out");
    b.log_in(ui, OPERATOR, false).await.expect("log in as an operator");
    b.goto(&format!("http://{ui}/runs/{run_id}")).await.expect("goto");
    assert!(b
        .wait_for("document.getElementById('abort') !== null", Duration::from_secs(10))
        .await
        .expect("eval"));
    let status = b
        .eval(&format!(
            "fetch('/runs/{run_id}/abort', {{method: 'POST'}}).then(r => r.status)"
        ))
        .await
        .expect("fetch");
    assert_eq!(
        status,
        serde_json::json!(403),
        "a fetch from the operator's page without the token"
    );
    assert!(in_flight());
    // A form POST from the page without the token field.
    b.eval(&format!(
        "(() => {{ const f = document.createElement('form'); f.method = 'post'; f.action = '/runs/{run_id}/abort'; \
         document.body.appendChild(f); f.submit(); return true }})()"
    ))
    .await
    .expect("submit");
    assert!(
        b.wait_for(
            &format!("location.pathname === '/runs/{run_id}/abort' && document.body.innerText.includes('CSRF')"),
            Duration::from_secs(10)
        )
        .await
        .expect("eval"),
        "the tokenless POST is refused: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    assert!(in_flight(), "the tokenless POST aborted nothing");
    // The real button still works: the run ends aborted.
    b.goto(&format!("http://{ui}/runs/{run_id}")).await.expect("goto");
    assert!(b
        .wait_for("document.getElementById('abort') !== null", Duration::from_secs(10))
        .await
        .expect("eval"));
    b.eval("document.getElementById('abort').click(); true")
        .await
        .expect("click");
    assert!(
        b.wait_for(
            "document.getElementById('outcome') && document.getElementById('outcome').textContent === 'aborted'",
            Duration::from_secs(20)
        )
        .await
        .expect("eval"),
        "the page shows aborted: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    let report = c.runs.report(&run_id).expect("the run ended");
    assert_eq!(report.outcome.as_str(), "aborted");
    assert_eq!(report.faults[0].targets[0].state, "restored");
    drop(b);
    let Lab { h, .. } = lab;
    h.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_a_guardrail_row_turns_from_ok_to_breached_without_a_reload() {
    let Some(binary) = faultline_tests::browser::chromium_or_skip() else {
        return;
    };
    // The probed service; cancelling `service` closes its listener, so
    // the guardrail's probe is refused from then on.
    let service = CancellationToken::new();
    let port = serve_http_in_process(service.clone()).await;
    let victim = sleeper();
    let lab = lab().await;
    let (ui, c) = (lab.ui, lab.h.coordinator.clone());
    let yaml = experiment_with_baseline(port, &victim, "500ms", "30s").replace(
        "        - success_rate: \"90%\"\n",
        "        - success_rate: \"90%\"\n          guardrail: true\n          window: 1s\n",
    );
    assert!(yaml.contains("guardrail: true"), "{yaml}");
    let mut b = Browser::start(&binary).await.expect("start chromium");
    b.log_in(ui, READ_ONLY, true).await.expect("log in read-only");
    // The run is started from the CLI, as an operator would: the page
    // follows a run it did not start.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("guardrail.yaml");
    std::fs::write(&file, &yaml).expect("write experiment");
    let mut cli = tokio::process::Command::new(faultline_tests::lab::faultline_bin())
        .arg("run")
        .arg(&file)
        .args(["--coordinator", &lab.h.url])
        .env("FAULTLINE_TOKEN", OPERATOR)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start faultline run");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(cli.stderr.take().expect("stderr")));
    let mut printed = Vec::new();
    let run_id = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(l)) = lines.next_line().await {
            printed.push(l.clone());
            // "[   0.0s] run r-… of \"console\" started (…)"
            if let Some(id) = l.split(" run ").nth(1).and_then(|r| r.split(' ').next()) {
                if l.contains(" started ") {
                    return Some(id.to_string());
                }
            }
            if printed.len() > 200 {
                break;
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("the CLI printed no run id: {printed:?}"));
    let cli_lines = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            if rest.len() < 1000 {
                rest.push(l);
            }
        }
        rest
    });
    b.goto(&format!("http://{ui}/runs/{run_id}")).await.expect("goto");
    let row = "document.querySelector('#checks tr[data-check^=\"guardrail/\"]')";
    let ok = format!("!!{row} && {row}.getAttribute('data-state') === 'ok'");
    assert!(
        b.wait_for(&ok, Duration::from_secs(20)).await.expect("eval"),
        "the guardrail shows ok during observe: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    assert_eq!(
        b.eval(&format!("{row}.cells[1].textContent")).await.expect("eval"),
        serde_json::json!("web: success rate >= 90.0% over 1s")
    );
    // A mark on the page's window and on the row: a reload would lose both.
    b.eval(&format!("window.faultlineMark = {row}; true"))
        .await
        .expect("mark");
    service.cancel();
    let breached = format!(
        "window.faultlineMark === {row} && {row}.getAttribute('data-state') === 'breached' \
         && {row}.cells[2].textContent === 'breached' \
         && document.querySelectorAll('#checks tbody tr').length === 1"
    );
    assert!(
        b.wait_for(&breached, Duration::from_secs(20)).await.expect("eval"),
        "the same row turns breached without a reload: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    assert!(
        b.wait_for(
            "document.getElementById('outcome').textContent === 'aborted'",
            Duration::from_secs(20)
        )
        .await
        .expect("eval"),
        "the breached guardrail aborts the run: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    let report = c.runs.report(&run_id).expect("the run ended");
    assert_eq!(report.outcome.as_str(), "aborted");
    let by = report.aborted_by.clone().unwrap_or_default();
    assert!(by.starts_with("guardrail web: success rate >= 90.0%"), "{by}");
    assert_eq!(report.faults[0].targets[0].state, "restored");
    // The CLI that started the run saw the same end: exit 3 (aborted),
    // with the guardrail's state change printed.
    let status = tokio::time::timeout(Duration::from_secs(20), cli.wait())
        .await
        .expect("the CLI exits after the run")
        .expect("wait");
    let rest = cli_lines.await.expect("stderr reader");
    assert_eq!(status.code(), Some(3), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("guardrail web") && l.contains("breached")),
        "{rest:?}"
    );
    drop(b);
    let Lab { h, .. } = lab;
    h.stop().await;
}
