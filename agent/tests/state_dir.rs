//! The agent's state directory: a private fallback (local mode, when
//! another agent holds the shared one) is removed when the agent stops with
//! nothing left in it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

fn config(state: &std::path::Path, fallback: &std::path::Path) -> faultline_agent::AgentConfig {
    // Nothing listens on port 1: the agent starts, fails to connect and
    // retries until it is stopped; no network beyond loopback.
    let mut cfg = faultline_agent::AgentConfig::new("http://127.0.0.1:1".to_string());
    cfg.agent_id = "state-dir-test".into();
    cfg.state_dir = state.to_path_buf();
    cfg.state_dir_fallback = Some(fallback.to_path_buf());
    cfg.sweep_orphans = false;
    cfg.backoff_initial = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(50);
    cfg
}

/// Regression: every local run that found the shared state directory locked
/// left its private fallback directory (holding only `lock`) in /tmp; 165
/// of them piled up during one test session.
#[tokio::test]
async fn a_private_fallback_directory_is_removed_when_the_agent_stops() {
    let shared = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let fallback_a = scratch.path().join("fallback-a");
    let fallback_b = scratch.path().join("fallback-b");
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = tokio::spawn(faultline_agent::run(config(shared.path(), &fallback_a), stop_a.clone()));
    // Let the first agent take the shared directory's lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !shared.path().join("lock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first agent never locked its directory"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = tokio::spawn(faultline_agent::run(config(shared.path(), &fallback_b), stop_b.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fallback_b.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the second agent never used its fallback"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_b.cancel();
    tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("the second agent stops")
        .unwrap()
        .expect("the second agent ran");
    assert!(!fallback_b.exists(), "the private directory is gone");
    stop_a.cancel();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .expect("the first agent stops")
        .unwrap()
        .expect("the first agent ran");
    assert!(shared.path().exists(), "the shared directory stays");
    assert!(!fallback_a.exists(), "the first agent never needed a fallback");
}
