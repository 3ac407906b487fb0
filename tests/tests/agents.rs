//! Agent registration against hostile and unlucky clients: Hello limits and
//! id validation, one stream per agent id, expiry of silent agents, quick
//! restarts, and `ListAgents` paging. Raw gRPC clients on loopback play the
//! hostile agents.

use std::time::Duration;

use faultline_coordinator::registry::AgentInfo;
use faultline_coordinator::Coordinator;
use faultline_proto::v1::{self, agent_link_client::AgentLinkClient};
use faultline_tests::Harness;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

fn hello(id: &str) -> v1::Hello {
    v1::Hello {
        agent_id: id.into(),
        hostname: "raw-client".into(),
        ..Default::default()
    }
}

fn msg(m: v1::agent_message::Msg) -> v1::AgentMessage {
    v1::AgentMessage { msg: Some(m) }
}

/// A raw AgentLink stream that has sent `h` and stays open (and silent)
/// while the returned sender lives.
async fn raw_hello(
    url: &str,
    h: v1::Hello,
) -> (
    mpsc::Sender<v1::AgentMessage>,
    Result<tonic::Streaming<v1::CoordinatorMessage>, tonic::Status>,
) {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(msg(v1::agent_message::Msg::Hello(h))).await.unwrap();
    let r = AgentLinkClient::new(ch)
        .connect(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, r)
}

/// An in-process agent with `id`; stop it with the token.
fn spawn_agent(url: &str, id: &str) -> (CancellationToken, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = faultline_agent::AgentConfig::new(url.to_string());
    cfg.agent_id = id.into();
    cfg.state_dir = state.path().to_path_buf();
    cfg.sweep_orphans = false;
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        faultline_agent::run(cfg, s).await.expect("agent starts");
    });
    (stop, task, state)
}

/// Waits until `check` holds for the registry entry of `id`.
async fn wait_agent(h: &Harness, id: &str, within: Duration, check: impl Fn(&AgentInfo) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if h.coordinator
            .registry
            .agents()
            .iter()
            .any(|a| a.agent_id == id && check(a))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn wait_empty(h: &Harness, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if h.coordinator.registry.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hellos_are_refused_naming_the_field_and_the_limit() {
    let h = Harness::start().await;
    let mut big_labels = hello("labels");
    big_labels.labels = (0..100_000).map(|i| (format!("k{i}"), "v".into())).collect();
    let mut big_host = hello("host");
    big_host.hostname = "h".repeat(3_000_000);
    let mut big_cleaned = hello("cleaned");
    big_cleaned.cleaned = vec!["removed chain faultline-x".into(); 100_000];
    for (h_msg, want) in [
        (big_labels, "Hello.labels has 100000 entries; at most 64 are allowed"),
        (big_host, "is 3000000 bytes long; at most 253 are allowed"),
        (big_cleaned, "Hello.cleaned has 100000 entries; at most 100 are allowed"),
        (hello("a/b"), "Hello.agent_id: agent id \"a/b\" contains '/'"),
        (
            hello("../../etc/passwd"),
            "Hello.agent_id: agent id \"../../etc/passwd\"",
        ),
        (hello("x\u{202e}y"), "Hello.agent_id: agent id \"x\\u{202e}y\" contains"),
    ] {
        let (_tx, r) = raw_hello(&h.url, h_msg).await;
        let e = r.expect_err(want);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{} should contain {want}", e.message());
        assert!(!e.message().contains('\u{202e}'), "no raw override character echoed");
    }
    assert!(h.coordinator.registry.is_empty(), "nothing was registered");

    // Many short-lived agents: once they leave, the registry holds nothing.
    let mut held = Vec::new();
    for i in 0..200 {
        let (tx, r) = raw_hello(&h.url, hello(&format!("garbage-{i}"))).await;
        held.push((tx, r.expect("a valid Hello is accepted")));
    }
    assert_eq!(h.coordinator.registry.len(), 200);
    drop(held);
    assert!(
        wait_empty(&h, Duration::from_secs(10)).await,
        "departed agents are removed: {} left",
        h.coordinator.registry.len()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_with_a_connected_id_is_refused_and_the_first_keeps_its_commands() {
    let h = Harness::start().await;
    let (first_tx, first) = raw_hello(&h.url, hello("node-a")).await;
    let mut first = first.expect("first stream accepted");
    let (_second_tx, second) = raw_hello(&h.url, hello("node-a")).await;
    let e = second.expect_err("a duplicate id is refused");
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(
        e.message().contains("\"node-a\" is already connected"),
        "{}",
        e.message()
    );
    // Commands for node-a still go to the first stream.
    assert!(matches!(
        first.message().await.unwrap().and_then(|m| m.msg),
        Some(v1::coordinator_message::Msg::Welcome(_))
    ));
    let restore_all = v1::CoordinatorMessage {
        msg: Some(v1::coordinator_message::Msg::RestoreAll(v1::RestoreAll {
            reason: "test".into(),
        })),
    };
    h.coordinator.registry.send("node-a", restore_all).unwrap();
    assert!(matches!(
        first.message().await.unwrap().and_then(|m| m.msg),
        Some(v1::coordinator_message::Msg::RestoreAll(_))
    ));
    drop(first_tx);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_restarts_quickly_registers_again() {
    let h = Harness::start().await;
    let (stop, task, _state) = spawn_agent(&h.url, "node-a");
    assert!(wait_agent(&h, "node-a", Duration::from_secs(10), |_| true).await);
    let first = h.coordinator.registry.agents()[0].connected_at_unix_ms;
    // Stop and start again right away, as a service manager restart does.
    stop.cancel();
    task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let (stop2, task2, _state2) = spawn_agent(&h.url, "node-a");
    assert!(
        wait_agent(&h, "node-a", Duration::from_secs(10), |a| a.connected_at_unix_ms
            > first)
        .await,
        "the restarted agent registers"
    );
    stop2.cancel();
    task2.await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_expires_its_stream_closes_and_its_id_is_free_again() {
    // Heartbeats every 100 ms: a silent agent is dropped after 300 ms.
    let h = Harness::start_with(
        "127.0.0.1:0",
        Coordinator::new().with_heartbeat_interval(Duration::from_millis(100)),
    )
    .await;
    // A client that says Hello, then nothing, keeping the stream open.
    let (silent_tx, silent) = raw_hello(&h.url, hello("node-a")).await;
    let mut silent = silent.unwrap();
    assert!(wait_agent(&h, "node-a", Duration::from_secs(2), |_| true).await);
    let t = tokio::time::Instant::now();
    assert!(
        wait_empty(&h, Duration::from_secs(3)).await,
        "the silent agent is dropped"
    );
    eprintln!("silent agent dropped after {:?}", t.elapsed());
    // Its stream ends too, so a live but wedged client learns it.
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match silent.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the silent agent's stream was closed");
    drop(silent_tx);

    // A restart while the old connection hangs: the new agent is refused
    // while the old stream counts as connected, retries, and gets the id
    // once the old one expired.
    let (_hung_tx, hung) = raw_hello(&h.url, hello("node-a")).await;
    hung.unwrap();
    let (stop, task, _state) = spawn_agent(&h.url, "node-a");
    // The real agent, heartbeating, gets the id and keeps it.
    assert!(
        wait_agent(&h, "node-a", Duration::from_secs(5), |a| a.hostname != "raw-client").await,
        "the retrying agent registers once the silent one expired"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        wait_agent(&h, "node-a", Duration::from_millis(50), |a| a.hostname != "raw-client").await,
        "a heartbeating agent does not expire"
    );
    stop.cancel();
    task.await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_agents_pages_and_the_cli_follows_every_page() {
    let h = Harness::start().await;
    let mut keep = Vec::new();
    for i in 0..250 {
        let mut hl = hello(&format!("node-{i:03}"));
        // Large but within the limits: 100 lines of 500 bytes (~50 KB each,
        // 12 MB in all, three times the gRPC message limit).
        hl.cleaned = vec!["c".repeat(500); 100];
        let (tx, _rx) = mpsc::channel(1);
        keep.push(_rx);
        h.coordinator
            .registry
            .add(AgentInfo::from_hello(hl).unwrap(), tx)
            .unwrap();
    }
    let mut c = h.control().await;
    let first = c
        .list_agents(v1::ListAgentsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !first.agents.is_empty() && first.agents.len() < 250,
        "{}",
        first.agents.len()
    );
    assert_eq!(first.next_page_token, first.agents.last().unwrap().agent_id);
    let all = faultline_coordinator::cli::agents::fetch_all(&mut c).await.unwrap();
    let ids: Vec<String> = all.iter().map(|a| a.agent_id.clone()).collect();
    let want: Vec<String> = (0..250).map(|i| format!("node-{i:03}")).collect();
    assert_eq!(ids, want, "every agent once, in order");
    // A page token is an agent id, checked like one.
    let e = c
        .list_agents(v1::ListAgentsRequest {
            page_size: 0,
            page_token: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_agents_default_page_is_100() {
    let h = Harness::start().await;
    let mut keep = Vec::new();
    for i in 0..150 {
        let (tx, rx) = mpsc::channel(1);
        keep.push(rx);
        h.coordinator
            .registry
            .add(AgentInfo::from_hello(hello(&format!("n{i:03}"))).unwrap(), tx)
            .unwrap();
    }
    let mut c = h.control().await;
    let p1 = c
        .list_agents(v1::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p1.agents.len(), p1.next_page_token.as_str()), (100, "n099"));
    let p2 = c
        .list_agents(v1::ListAgentsRequest {
            page_size: 0,
            page_token: p1.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p2.agents.len(), p2.next_page_token.as_str()), (50, ""));
    assert_eq!(p2.agents[0].agent_id, "n100");
    h.stop().await;
}
