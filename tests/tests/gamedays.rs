//! Game days on the coordinator: a schedule of a game day ticks, runs its
//! experiments (real kills of processes these tests start) and stores a
//! scored game-day run with the runs it contains; `RunGameDay` streams one
//! and refuses a broken suite before anything runs.

use std::time::Duration;

use faultline_proto::v1;
use faultline_tests::*;

/// An experiment killing the process matching `cmdline`, judged by a
/// command probe.
fn experiment(name: &str, probe: &str, cmdline: &str) -> String {
    format!(
        "name: {name}\nhypothesis:\n  probes:\n    - name: p\n      interval: 50ms\n      command: {{ run: \"{probe}\" }}\n      tolerances:\n        - success_rate: \"90%\"\nbaseline: 300ms\nduration: 500ms\nrecovery: 300ms\nfaults:\n  - kill: {{ cmdline: '{cmdline}' }}\n"
    )
}

/// A suite of two experiments: `pass` (weight 3) kills `a` and probes
/// nothing it needs; `fail` (weight 1) kills `b` and probes that `b` sleeps.
fn suite(a: &ChildGuard, b: &ChildGuard) -> v1::GameDaySuite {
    let member = |file: &str, weight: f64, yaml: String| v1::GameDayMember {
        file: file.into(),
        weight,
        source: Some(v1::ExperimentSource {
            name: format!("gd/{file}"),
            yaml,
            vars: Default::default(),
        }),
    };
    v1::GameDaySuite {
        source: "gd/weekly.yaml".into(),
        name: "weekly".into(),
        description: "two experiments".into(),
        stop_on_failure: false,
        experiments: vec![
            member("pass.yaml", 3.0, experiment("pass", "true", &a.cmdline_regex)),
            member(
                "fail.yaml",
                1.0,
                experiment(
                    "fail",
                    &format!("grep -q '^State:.*(sleeping)' /proc/{}/status", b.pid()),
                    &b.cmdline_regex,
                ),
            ),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_game_day_ticks_and_stores_a_scored_run_with_its_runs() {
    let (a, b) = (sleeper(), sleeper());
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let mut c = h.control().await;
    let added = c
        .add_schedule(v1::AddScheduleRequest {
            source: None,
            gameday: Some(suite(&a, &b)),
            cron: "* * * * * *".into(),
            tz: String::new(),
            window: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Bounded: 40 s for the first game day (two ~1.5 s experiments) to end.
    let mut done = None;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let list = c
            .list_game_days(v1::ListGameDaysRequest {
                name: "weekly".into(),
                limit: 10,
            })
            .await
            .unwrap()
            .into_inner()
            .runs;
        if let Some(g) = list.into_iter().rev().find(|g| g.status == "done") {
            done = Some(g);
            break;
        }
    }
    let g = done.expect("a scheduled game day finished within 40 s");
    let schedules = c
        .list_schedules(v1::ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules;
    c.remove_schedule(v1::RemoveScheduleRequest {
        schedule_id: added.schedule_id.clone(),
    })
    .await
    .unwrap();

    // Scored: 3 of 4 judged weight passed.
    assert_eq!(g.resilience_score, Some(75.0), "{g:?}");
    assert_eq!((g.passed, g.judged), (1, 2), "{g:?}");
    assert_eq!(g.schedule_id, added.schedule_id);
    let summary: serde_json::Value = serde_json::from_str(&g.summary_json).unwrap();
    assert_eq!(summary["gameday_run_id"], g.gameday_run_id.as_str());
    let outcomes: Vec<&str> = summary["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["passed", "failed"], "{summary}");
    // The runs it contains are real runs of this coordinator.
    assert_eq!(g.run_ids.len(), 2, "{g:?}");
    let runs = c
        .list_runs(v1::ListRunsRequest {
            limit: 100,
            outcome: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    for (id, want) in g.run_ids.iter().zip(["passed", "failed"]) {
        let r = runs.iter().find(|r| &r.run_id == id).expect("member run listed");
        assert_eq!(r.status, want, "{r:?}");
    }
    // The schedule's ticks: one started this game day; ticks while it ran
    // were skipped, as for a single experiment.
    let s = &schedules[0];
    assert_eq!((s.kind.as_str(), s.experiment.as_str()), ("gameday", "weekly"));
    let ticks: Vec<String> = h
        .coordinator
        .store
        .schedule_ticks(&added.schedule_id, 1000)
        .unwrap()
        .into_iter()
        .map(|t| format!("{} {}", t.outcome, t.run_id.unwrap_or_default()))
        .collect();
    assert!(
        ticks.iter().any(|t| t == &format!("started {}", g.gameday_run_id)),
        "{ticks:?}"
    );
    assert!(
        ticks
            .iter()
            .any(|t| t.contains("skipped: the previous run is still going")),
        "{ticks:?}"
    );
    // Audited under the schedule's name: the game day and each run.
    let audit = c
        .list_audit(v1::ListAuditRequest { limit: 200 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let caller = format!("schedule:{}", added.schedule_id);
    assert!(
        audit
            .iter()
            .any(|e| e.action == "gameday" && e.caller == caller && e.target == g.gameday_run_id),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .filter(|e| e.action == "submit" && e.caller == caller)
            .count()
            >= 2,
        "{audit:?}"
    );
    h.stop().await;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_game_day_streams_the_runs_and_refuses_a_broken_suite_before_anything_runs() {
    let (a, b) = (sleeper(), sleeper());
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[]).await;
    let mut c = h.control().await;

    let mut broken = suite(&a, &b);
    broken.experiments[1].source.as_mut().unwrap().yaml = "name: x\n".into();
    let e = c
        .run_game_day(v1::RunGameDayRequest { suite: Some(broken) })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("gd/fail.yaml"), "{}", e.message());
    let mut zero = suite(&a, &b);
    zero.experiments[0].weight = 0.0;
    let e = c
        .run_game_day(v1::RunGameDayRequest { suite: Some(zero) })
        .await
        .expect_err("refused");
    assert!(
        e.message().contains("experiments[0] (pass.yaml): weight 0"),
        "{}",
        e.message()
    );
    assert!(c
        .list_game_days(v1::ListGameDaysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs
        .is_empty());

    let mut stream = c
        .run_game_day(v1::RunGameDayRequest {
            suite: Some(suite(&a, &b)),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut phased_runs, mut finished, mut id) = (std::collections::BTreeSet::new(), None, String::new());
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event within 30 s")
        .unwrap()
    {
        id = ev.gameday_run_id.clone();
        match ev.event {
            Some(v1::game_day_event::Event::Run(r)) if matches!(r.event, Some(v1::run_event::Event::Phase(_))) => {
                phased_runs.insert(r.run_id);
            }
            Some(v1::game_day_event::Event::Finished(f)) => finished = Some(f),
            _ => {}
        }
    }
    let f = finished.expect("GameDayFinished");
    assert_eq!(f.exit_code, 1);
    assert_eq!(phased_runs.len(), 2, "both runs' phases were streamed: {phased_runs:?}");
    let s: serde_json::Value = serde_json::from_str(&f.summary_json).unwrap();
    assert_eq!(s["resilience_score"], 75.0);
    let listed = c
        .list_game_days(v1::ListGameDaysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].gameday_run_id.as_str(), listed[0].schedule_id.as_str()),
        (id.as_str(), "")
    );
    assert_eq!(listed[0].resilience_score, Some(75.0));
    h.stop().await;
    drop((a, b));
}
