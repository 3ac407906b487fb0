//! The console's history pages over real HTTP on loopback — Experiment
//! trend (figures over runs, regressions marked, inline SVG charts), Game
//! days (scores over time), Schedules (next ticks, skip reasons) and Audit —
//! and a headless-Chromium screenshot of a trend page.

use std::time::Duration;

use faultline_proto::v1;
use faultline_tests::console_http::*;
use faultline_tests::*;

/// An experiment named `trendy` killing the process matching `cmdline`,
/// judged by a command probe.
fn trendy(probe: &str, cmdline: &str) -> String {
    format!(
        "name: trendy\nhypothesis:\n  probes:\n    - name: p\n      interval: 50ms\n      command: {{ run: \"{probe}\" }}\n      tolerances:\n        - success_rate: \"90%\"\nbaseline: 300ms\nduration: 500ms\nrecovery: 300ms\nfaults:\n  - targets: {{ labels: {{ zone: a }} }}\n    kill: {{ cmdline: '{cmdline}' }}\n"
    )
}

/// Runs `yaml` to its end as the operator; its run id.
async fn run(h: &Harness, yaml: &str) -> String {
    let (id, mut stream) = submit(h, yaml).await;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event within 30 s")
        .expect("stream")
    {
        if matches!(ev.event, Some(v1::run_event::Event::Finished(_))) {
            break;
        }
    }
    id
}

/// Two passing runs of `trendy`, then one that fails; returns their ids.
async fn history(h: &Harness) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let victim = sleeper();
        ids.push(run(h, &trendy("true", &victim.cmdline_regex)).await);
    }
    let victim = sleeper();
    let probe = format!("grep -q '^State:.*(sleeping)' /proc/{}/status", victim.pid());
    ids.push(run(h, &trendy(&probe, &victim.cmdline_regex)).await);
    ids
}

fn with_token<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {OPERATOR}").parse().expect("header"));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trend_game_day_schedule_and_audit_pages_show_the_history_with_regressions() {
    // Webhooks to a closed loopback port: every delivery fails, and the
    // Audit page lists the failures.
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.yaml");
    std::fs::write(
        &notify,
        "webhooks:\n  - url: http://127.0.0.1:1/hook\n    events: [run_finish]\n",
    )
    .unwrap();
    let c = faultline_coordinator::Coordinator::new();
    let n = faultline_coordinator::notify::Notifier::start(
        faultline_coordinator::notify::Config::load(&notify).unwrap(),
        c.metrics.clone(),
        faultline_coordinator::notify::deliver::Retry {
            attempts: 2,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
        },
    );
    let lab = lab_with(c.with_notifier(n.clone())).await;
    let (h, ui) = (&lab.h, lab.ui);
    let c = h.coordinator.clone();
    let ids = history(h).await;
    let statuses: Vec<String> = ids
        .iter()
        .map(|id| c.runs.report(id).expect("finished").outcome.as_str().to_string())
        .collect();
    assert_eq!(statuses, ["passed", "passed", "failed"]);
    // A passing run whose p99 is far above the earlier ones, stored between
    // the second and the third run (a real report with one figure changed).
    let mut slow = (*c.runs.report(&ids[1]).unwrap()).clone();
    slow.run_id = "r20260101-000000-5105e5".into();
    slow.probes[0].during.p99_ms = Some(10_000.0);
    let started = c.store.list(1, None).unwrap()[0].started_unix_ms;
    c.store
        .run_started(&slow.run_id, "trendy", "t.yaml", started - 1)
        .unwrap();
    c.store.run_finished(&slow, started).unwrap();

    let session = login(ui, READ_ONLY).await;
    // Every page links the new ones and carries the security headers.
    for path in [
        "/fleet",
        "/experiments",
        "/experiments/trend?name=trendy",
        "/gamedays",
        "/schedules",
        "/audit",
    ] {
        let r = http(ui, "GET", path, Some(&session), None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_security_headers(&r, path);
        for link in ["/experiments\"", "/gamedays\"", "/schedules\"", "/audit\""] {
            assert!(r.body.contains(&format!("href=\"{link}")), "{path} lacks {link}");
        }
    }
    let r = http(ui, "GET", "/experiments", Some(&session), None).await;
    assert!(
        r.body
            .contains("href=\"/experiments/trend?name=trendy\">trendy</a></td><td>4</td>"),
        "{}",
        r.body
    );
    let runs = http(ui, "GET", "/runs", Some(&session), None).await;
    assert!(
        runs.body.contains("href=\"/experiments/trend?name=trendy\""),
        "{}",
        runs.body
    );

    let trend = http(ui, "GET", "/experiments/trend?name=trendy", Some(&session), None)
        .await
        .body;
    // Three charts of four runs; the failed run's probe never succeeded
    // during the fault, so it has a success rate but no latency.
    assert_eq!(trend.matches("<svg class=\"chart\"").count(), 3, "{trend}");
    assert!(
        trend.contains("aria-label=\"p99 during (ms)\" data-points=\"3\""),
        "{trend}"
    );
    assert!(
        trend.contains("aria-label=\"success rate during (%)\" data-points=\"4\""),
        "{trend}"
    );
    println!("trend page of 4 runs: {} bytes of HTML, no script", trend.len());
    let rows: Vec<&str> = trend.split("<tr").filter(|r| r.contains("/runs/r")).collect();
    assert_eq!(rows.len(), 4, "{trend}");
    assert!(
        rows[0].contains(&ids[0]) && rows[3].contains(&ids[2]),
        "oldest first: {trend}"
    );
    assert!(
        rows[2].starts_with(" class=\"regression\"") && rows[2].contains("p99 during 10000ms vs median"),
        "{}",
        rows[2]
    );
    assert!(
        rows[3].starts_with(" class=\"regression\"") && rows[3].contains("failed after a passing run"),
        "{}",
        rows[3]
    );
    assert!(
        trend.contains("more than 25% and 5 above the median of the previous 5"),
        "{trend}"
    );
    let r = http(ui, "GET", "/experiments/trend?name=nope", Some(&session), None).await;
    assert_eq!(r.status, 404);
    let r = http(ui, "GET", "/experiments/trend", Some(&session), None).await;
    assert_eq!(r.status, 400);

    // A game day run on the coordinator, and one scheduled.
    let victim = sleeper();
    let suite = v1::GameDaySuite {
        source: "weekly.yaml".into(),
        name: "weekly".into(),
        description: String::new(),
        stop_on_failure: false,
        experiments: vec![v1::GameDayMember {
            file: "trendy.yaml".into(),
            weight: 1.0,
            source: Some(source(&trendy("true", &victim.cmdline_regex), &[])),
        }],
    };
    let mut control = h.control().await;
    let mut s = control
        .run_game_day(with_token(v1::RunGameDayRequest {
            suite: Some(suite.clone()),
        }))
        .await
        .expect("game day")
        .into_inner();
    while tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("an event within 30 s")
        .expect("stream")
        .is_some()
    {}
    control
        .add_schedule(with_token(v1::AddScheduleRequest {
            source: None,
            gameday: Some(suite),
            cron: "0 0 1 1 *".into(),
            tz: String::new(),
            window: String::new(),
        }))
        .await
        .expect("schedule the game day");
    // Every second, in a window two days away: each tick is skipped.
    let other_day = ["Wed", "Thu", "Fri", "Sat", "Sun", "Mon", "Tue"]
        // 1970-01-01 was a Thursday (3 days after a Monday).
        [((faultline_proto::now_unix_ms() / 86_400_000 + 3) % 7) as usize];
    let victim2 = sleeper();
    let every = control
        .add_schedule(with_token(v1::AddScheduleRequest {
            source: Some(source(&trendy("true", &victim2.cmdline_regex), &[])),
            gameday: None,
            cron: "* * * * * *".into(),
            tz: String::new(),
            window: format!("{other_day} 00:00-23:59"),
        }))
        .await
        .expect("schedule")
        .into_inner();
    let mut skipped = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !c.store.schedule_ticks(&every.schedule_id, 5).unwrap().is_empty() {
            skipped = true;
            break;
        }
    }
    assert!(skipped, "a tick was handled within 10 s");

    let g = http(ui, "GET", "/gamedays", Some(&session), None).await.body;
    println!("game days page (1 suite, 1 run): {} bytes of HTML", g.len());
    assert!(
        g.contains("aria-label=\"weekly: resilience score\" data-points=\"1\""),
        "{g}"
    );
    assert!(g.contains("<td class=\"score\">100</td>"), "{g}");
    assert!(g.contains("trendy.yaml</a> passed"), "{g}");
    assert!(
        g.contains("<table id=\"suites\">") && g.contains("trendy.yaml ×1"),
        "{g}"
    );

    let s = http(ui, "GET", "/schedules", Some(&session), None).await.body;
    assert!(s.contains("game day weekly"), "{s}");
    assert!(
        s.contains("<td class=\"tick\">skipped: outside the allowed window</td>"),
        "{s}"
    );
    assert!(s.contains("(outside the window: will be skipped)"), "{s}");

    let a = http(ui, "GET", "/audit", Some(&session), None).await.body;
    for want in [
        "<td>token:alice</td><td>gameday</td>",
        "<td>token:alice</td><td>schedule-add</td>",
        "<td>token:alice</td><td>submit</td>",
    ] {
        assert!(a.contains(want), "audit lacks {want}: {a}");
    }
    for _ in 0..100 {
        if n.failures().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = http(ui, "GET", "/audit", Some(&session), None).await.body;
    assert!(a.contains("<h2>Notification failures</h2>"), "{a}");
    let listed = a.matches("run.finished: http://127.0.0.1:1/hook: ").count();
    assert!(listed >= 4 && listed == n.failures().len(), "{listed}: {a}");
    drop((victim, victim2));
    let Lab { h, .. } = lab;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_a_trend_page_draws_its_charts_and_is_screenshotted() {
    let Some(binary) = faultline_tests::browser::chromium_or_skip() else {
        return;
    };
    let lab = lab().await;
    let ui = lab.ui;
    history(&lab.h).await;
    let mut b = faultline_tests::browser::Browser::start(&binary)
        .await
        .expect("start chromium");
    b.log_in(ui, READ_ONLY, true).await.expect("log in read-only");
    b.goto(&format!("http://{ui}/experiments/trend?name=trendy"))
        .await
        .expect("goto");
    // The charts are laid out with their points and the regression mark.
    let drawn = "(() => { const s = [...document.querySelectorAll('svg.chart')]; \
                 return s.length === 3 && s.every(c => c.getBoundingClientRect().width > 600) \
                 && s[0].querySelectorAll('circle').length === 2 \
                 && s[1].querySelectorAll('circle').length === 3 \
                 && s[1].querySelectorAll('polyline').length === 1 \
                 && document.querySelectorAll('circle.regression').length >= 1 })()";
    assert!(
        b.wait_for(drawn, Duration::from_secs(10)).await.expect("eval"),
        "the trend charts are drawn: {}",
        b.eval("document.body.innerText").await.expect("eval")
    );
    let shot = b.screenshot().await.expect("screenshot");
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 5_000,
        "a real screenshot ({} bytes)",
        shot.len()
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-trend.png");
    std::fs::write(&path, &shot).expect("save the screenshot");
    println!(
        "screenshot of the trend page: {} ({} bytes)",
        path.display(),
        shot.len()
    );
    drop(b);
    let Lab { h, .. } = lab;
    h.stop().await;
}
