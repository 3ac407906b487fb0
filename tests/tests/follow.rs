//! `Control.Follow`: following a run from a client that did not start it,
//! live or after the fact; and `ListRuns` refusing unknown statuses.

use std::time::Duration;

use faultline_proto::v1::{self, run_event::Event};
use faultline_tests::*;
use tokio_util::sync::CancellationToken;

/// A run of about 3 s with one HTTP probe, killing `victim`.
fn experiment(port: u16, victim: &ChildGuard) -> String {
    let cmdline = &victim.cmdline_regex;
    format!(
        r#"name: followed
hypothesis:
  probes:
    - name: web
      interval: 50ms
      http: {{ url: "http://127.0.0.1:{port}/" }}
      tolerances:
        - success_rate: "90%"
baseline: 1s
duration: 1s
recovery: 500ms
faults:
  - name: k
    targets: {{ labels: {{ zone: a }} }}
    kill: {{ cmdline: '{cmdline}' }}
"#
    )
}

fn phases(events: &[v1::RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Phase(p)) => Some(p.phase.clone()),
            _ => None,
        })
        .collect()
}

fn not_probe(events: &[v1::RunEvent]) -> usize {
    events
        .iter()
        .filter(|e| !matches!(e.event, Some(Event::Probe(_))))
        .count()
}

async fn follow(h: &Harness, run_id: &str, from_event: u64) -> Result<Vec<v1::RunEvent>, tonic::Status> {
    let mut c = h.control().await;
    let mut stream = c
        .follow(v1::FollowRequest {
            run_id: run_id.into(),
            from_event,
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event within 30 s")?
    {
        events.push(ev);
    }
    Ok(events)
}

fn finished(events: &[v1::RunEvent]) -> &v1::RunFinished {
    match events.last().and_then(|e| e.event.as_ref()) {
        Some(Event::Finished(f)) => f,
        other => panic!("the stream ends with RunFinished, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_follows_a_running_run_to_its_end_without_gaps_or_duplicates() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let victim = sleeper();
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let h = std::sync::Arc::new(h);
    let (watch, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let submitter = {
        let h = h.clone();
        let yaml = experiment(port, &victim);
        tokio::spawn(async move { h.run_observed(&yaml, &[], Some(watch)).await })
    };
    // Join mid-run: after the baseline started.
    let run_id = loop {
        let ev = seen.recv().await.expect("the run's events");
        if matches!(&ev.event, Some(Event::Phase(p)) if p.phase == "baseline") {
            break ev.run_id;
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let followed = follow(&h, &run_id, 0).await.expect("follow");
    let submitted = submitter.await.unwrap().expect("run");
    let f = finished(&followed);
    assert_eq!(f.outcome, "passed", "{}", f.reason);
    assert_eq!(f.exit_code, submitted.exit_code);
    let report: faultline_coordinator::report::Report = serde_json::from_str(&f.report_json).unwrap();
    assert_eq!(report.run_id, run_id);
    // Every stored event exactly once, in order: the same phases as the
    // submitter saw, and as many non-probe events.
    assert_eq!(phases(&followed), phases(&submitted.events));
    assert_eq!(not_probe(&followed), not_probe(&submitted.events));
    // Live probe progress reached the follower too.
    assert!(followed.iter().any(|e| matches!(e.event, Some(Event::Probe(_)))));
    drop(seen);
    std::sync::Arc::try_unwrap(h).ok().expect("one harness").stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_finished_run_replays_its_events_and_ends() {
    let stop = CancellationToken::new();
    let port = serve_http_in_process(stop.clone()).await;
    let mut h = Harness::start().await;
    h.add_agent("node-a", &[("zone", "a")]).await;
    let victim = sleeper();
    let r = h.run(&experiment(port, &victim), &[]).await.expect("run");
    assert_eq!(r.report.outcome.as_str(), "passed", "{}", r.report.reason);
    let all = follow(&h, &r.report.run_id, 0).await.expect("follow");
    assert_eq!(phases(&all), phases(&r.events));
    assert_eq!(all.len(), not_probe(&r.events));
    let f = finished(&all);
    assert_eq!(
        (f.outcome.as_str(), f.exit_code),
        (r.report.outcome.as_str(), r.exit_code)
    );
    // From an index on: the same tail.
    let tail = follow(&h, &r.report.run_id, 3).await.expect("follow from 3");
    assert_eq!(tail.len(), all.len() - 3);
    assert_eq!(tail[0].event, all[3].event);
    h.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn following_an_unknown_run_is_not_found_and_a_bad_id_is_invalid() {
    let h = Harness::start().await;
    let err = follow(&h, "r-does-not-exist", 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("r-does-not-exist"), "{}", err.message());
    let err = follow(&h, "../x", 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    h.stop().await;
}

#[tokio::test]
async fn list_runs_with_an_unknown_status_is_refused_naming_the_allowed_ones() {
    let h = Harness::start().await;
    let mut c = h.control().await;
    let err = c
        .list_runs(v1::ListRunsRequest {
            limit: 0,
            outcome: "bogus".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("\"bogus\"")
            && err.message().contains("not_steady")
            && err.message().contains("interrupted"),
        "{}",
        err.message()
    );
    for ok in ["passed", "running", ""] {
        c.list_runs(v1::ListRunsRequest {
            limit: 0,
            outcome: ok.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
    }
    h.stop().await;
}
