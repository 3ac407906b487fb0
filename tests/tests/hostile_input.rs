//! Hostile experiment documents sent to Control: refused quickly, parsed off
//! the async runtime, and never stalling agent links.

use std::time::{Duration, Instant};

use faultline_coordinator::experiment::limits::{MAX_BYTES, MAX_DEPTH};
use faultline_proto::v1;
use faultline_tests::{source, Harness};

/// 100 k nested brackets in 200 KB: 19 s in the YAML parser before limits.
fn nested_brackets() -> String {
    format!("name: x\nk: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000))
}

/// 30 k nested maps: 8.5 s in the YAML parser before limits.
fn nested_maps() -> String {
    format!("name: x\nk: {}1{}\n", "{a: ".repeat(30_000), "}".repeat(30_000))
}

/// 1,000 levels of indentation.
fn nested_blocks() -> String {
    (0..1_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect()
}

/// As large and as deep as the limits allow: the slowest document that is
/// still parsed.
fn largest_accepted() -> String {
    let one = format!("{}1{}", "[".repeat(MAX_DEPTH - 4), "]".repeat(MAX_DEPTH - 4));
    let mut items = Vec::new();
    let mut len = 0;
    while len + one.len() + 1 < MAX_BYTES - 100 {
        items.push(one.as_str());
        len += one.len() + 1;
    }
    format!("name: x\nk: [{}]\n", items.join(","))
}

async fn plan(h: &Harness, yaml: &str) -> Result<v1::PlanResponse, tonic::Status> {
    let mut c = h.control().await;
    c.plan(v1::PlanRequest {
        source: Some(source(yaml, &[])),
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_documents_are_refused_quickly_naming_the_limit() {
    let h = Harness::start().await;
    for (what, doc, limit) in [
        (
            "nested brackets",
            nested_brackets(),
            format!("over the limit of {MAX_DEPTH} levels"),
        ),
        (
            "nested maps",
            nested_maps(),
            format!("over the limit of {MAX_DEPTH} levels"),
        ),
        (
            "nested blocks",
            nested_blocks(),
            format!("over the limit of {MAX_DEPTH} levels"),
        ),
        (
            "oversized",
            format!("name: x\n#{}\n", "a".repeat(MAX_BYTES)),
            format!("over the limit of {MAX_BYTES} bytes"),
        ),
    ] {
        let started = Instant::now();
        let err = plan(&h, &doc).await.expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(&limit), "{what}: {}", err.message());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} took {:?} to refuse",
            started.elapsed()
        );
    }
    h.stop().await;
}

/// While several clients keep sending hostile documents (refused ones and
/// the largest accepted ones), the agent keeps heartbeating on the same
/// connection: parsing never occupies the runtime's threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_keep_heartbeating_during_hostile_parses() {
    let mut h = Harness::start().await;
    h.add_agent("a1", &[]).await;
    let first = h.coordinator.registry.agents()[0].clone();
    let interval = faultline_coordinator::link::HEARTBEAT_INTERVAL;
    let test_for = 2 * interval + Duration::from_secs(2);
    let stop_at = Instant::now() + test_for;
    let mut clients = Vec::new();
    for i in 0..4 {
        let doc = match i % 2 {
            0 => nested_brackets(),
            _ => largest_accepted(),
        };
        let mut c = h.control().await;
        clients.push(tokio::spawn(async move {
            let mut sent = 0;
            while Instant::now() < stop_at {
                let _ = c
                    .plan(v1::PlanRequest {
                        source: Some(source(&doc, &[])),
                    })
                    .await;
                sent += 1;
            }
            sent
        }));
    }
    let mut beats = vec![first.last_heartbeat_unix_ms];
    let mut longest_gap = Duration::ZERO;
    let mut last_change = Instant::now();
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = h.coordinator.registry.agents();
        let a = now
            .iter()
            .find(|a| a.agent_id == "a1")
            .expect("agent a1 stays registered");
        assert_eq!(
            a.connected_at_unix_ms, first.connected_at_unix_ms,
            "the agent's link broke and it reconnected"
        );
        if Some(&a.last_heartbeat_unix_ms) != beats.last() {
            beats.push(a.last_heartbeat_unix_ms);
            last_change = Instant::now();
        }
        longest_gap = longest_gap.max(last_change.elapsed());
    }
    let mut sent = 0;
    for c in clients {
        sent += c.await.expect("client task");
    }
    assert!(sent >= 4, "the hostile clients sent {sent} documents");
    assert!(
        beats.len() >= 3,
        "heartbeats seen: {beats:?} in {test_for:?} (interval {interval:?})"
    );
    assert!(
        longest_gap < interval * 2,
        "no heartbeat for {longest_gap:?} (interval {interval:?})"
    );
    h.stop().await;
}
