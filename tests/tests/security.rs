//! mTLS between agents and the coordinator, and bearer tokens on Control:
//! certificates from `faultline certs init` (the same code), a coordinator
//! and agents in process on loopback.

use std::path::Path;
use std::time::Duration;

use faultline_coordinator::certs;
use faultline_coordinator::security::{Security, Tokens};
use faultline_coordinator::Coordinator;
use faultline_proto::v1;
use faultline_tests::Harness;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "ci-0123456789abcdef0123456789";

fn agent_tls(dir: &Path, cert_of: &str) -> tonic::transport::ClientTlsConfig {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
        .identity(tonic::transport::Identity::from_pem(
            read(&format!("agent-{cert_of}.pem")),
            read(&format!("agent-{cert_of}.key")),
        ))
        .domain_name("localhost")
}

/// Starts an agent claiming `id` with TLS material from `dir` (cert of
/// `cert_of`), without waiting for it to register.
fn spawn_agent(
    h: &Harness,
    id: &str,
    tls: tonic::transport::ClientTlsConfig,
) -> (CancellationToken, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = faultline_agent::AgentConfig::new(h.url.clone());
    cfg.agent_id = id.into();
    cfg.state_dir = state.path().to_path_buf();
    cfg.sweep_orphans = false;
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.tls = Some(tls);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = faultline_agent::run(cfg, s).await;
    });
    (stop, state)
}

async fn registered(h: &Harness, id: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if h.coordinator.registry.agents().iter().any(|a| a.agent_id == id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn control(
    h: &Harness,
    dir: &Path,
    token: Option<&str>,
) -> v1::control_client::ControlClient<tonic::transport::Channel> {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(h.url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let _ = token;
    v1::control_client::ControlClient::new(ch)
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_agents_with_their_own_certificate_and_control_needs_a_token() {
    let certs = tempfile::tempdir().unwrap();
    certs::init(certs.path(), &[], &["node-a".into(), "node-b".into()], false).unwrap();
    let other = tempfile::tempdir().unwrap();
    certs::init(other.path(), &[], &["node-a".into()], false).unwrap();
    let mut security = Security {
        tls: Some(Security::tls_from_dir(certs.path()).unwrap()),
        tokens: None,
    };
    security.tokens = Some(Tokens::parse(Path::new("tokens"), &format!("ci {TOKEN}\n")).unwrap());
    let h = Harness::start_with("127.0.0.1:0", Coordinator::new().with_security(security)).await;
    assert!(h.url.starts_with("https://"));

    // The right certificate: registers.
    let (a_stop, _a_state) = spawn_agent(&h, "node-a", agent_tls(certs.path(), "node-a"));
    assert!(
        registered(&h, "node-a", Duration::from_secs(10)).await,
        "node-a with its own certificate"
    );

    // A certificate from another CA: the TLS handshake fails.
    let (x_stop, _x_state) = spawn_agent(&h, "node-x", agent_tls(other.path(), "node-a"));
    // node-a's certificate claiming to be node-b: refused by id.
    let (b_stop, _b_state) = spawn_agent(&h, "node-b", agent_tls(certs.path(), "node-a"));
    assert!(
        !registered(&h, "node-x", Duration::from_secs(2)).await,
        "foreign CA must be rejected"
    );
    assert!(
        !registered(&h, "node-b", Duration::from_millis(500)).await,
        "another agent's certificate must be rejected"
    );
    assert_eq!(h.coordinator.registry.agents().len(), 1);
    // And why: the coordinator says so on the stream.
    let ch = tonic::transport::Endpoint::from_shared(h.url.clone())
        .unwrap()
        .tls_config(agent_tls(certs.path(), "node-a"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let hello = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            agent_id: "node-b".into(),
            ..Default::default()
        })),
    };
    let e = v1::agent_link_client::AgentLinkClient::new(ch)
        .connect(tokio_stream::iter(vec![hello]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("does not match its certificate (common name \"node-a\")"),
        "{}",
        e.message()
    );

    // Control: no token or a wrong one is Unauthenticated; the right one works
    // and is the caller in the audit log.
    let mut c = control(&h, certs.path(), None).await;
    let e = c
        .list_agents(with_token(v1::ListAgentsRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = c
        .list_agents(with_token(
            v1::ListAgentsRequest::default(),
            Some("ci-wrong-wrong-wrong-wrong"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let agents = c
        .list_agents(with_token(v1::ListAgentsRequest::default(), Some(TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    c.abort(with_token(
        v1::AbortRequest {
            run_id: "r-none".into(),
            reason: "audit me".into(),
        },
        Some(TOKEN),
    ))
    .await
    .unwrap();
    let audit = c
        .list_audit(with_token(v1::ListAuditRequest { limit: 5 }, Some(TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        (audit[0].caller.as_str(), audit[0].action.as_str()),
        ("token:ci", "abort")
    );
    for s in [a_stop, x_stop, b_stop] {
        s.cancel();
    }
}

/// A TLS channel presenting the client certificate `DIR/<stem>.pem`.
async fn channel_as(h: &Harness, dir: &Path, stem: &str) -> tonic::transport::Channel {
    let read = |f: String| std::fs::read(dir.join(f)).unwrap();
    tonic::transport::Endpoint::from_shared(h.url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem".into())))
                .identity(tonic::transport::Identity::from_pem(
                    read(format!("{stem}.pem")),
                    read(format!("{stem}.key")),
                ))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificates_cannot_call_control_and_the_cli_certificate_cannot_register() {
    let dir = tempfile::tempdir().unwrap();
    certs::init(dir.path(), &[], &["node-a".into(), "cli".into()], false).unwrap();
    let security = Security {
        tls: Some(Security::tls_from_dir(dir.path()).unwrap()),
        tokens: Some(Tokens::parse(Path::new("tokens"), &format!("ci {TOKEN}\n")).unwrap()),
    };
    let h = Harness::start_with("127.0.0.1:0", Coordinator::new().with_security(security)).await;

    // An agent's certificate, no token: every Control call is refused.
    let mut as_agent = v1::control_client::ControlClient::new(channel_as(&h, dir.path(), "agent-node-a").await);
    let e = as_agent
        .list_agents(v1::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("has the agent role"), "{}", e.message());
    let e = as_agent
        .stop(v1::StopRequest {
            reason: "one node stops the fleet".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = as_agent.resume(v1::ResumeRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        h.coordinator.runs.stopped().is_none(),
        "the agent certificate stopped nothing"
    );

    // The CLI certificate works, and is the caller in the audit log.
    let mut as_cli = v1::control_client::ControlClient::new(channel_as(&h, dir.path(), "cli").await);
    as_cli.list_agents(v1::ListAgentsRequest::default()).await.unwrap();
    as_cli
        .abort(v1::AbortRequest {
            run_id: "r-none".into(),
            reason: "audit me".into(),
        })
        .await
        .unwrap();
    let audit = as_cli
        .list_audit(v1::ListAuditRequest { limit: 1 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(audit[0].caller, "cert:cli");

    // The CLI certificate cannot register as an agent, not even under its
    // own common name (here also a valid agent id with its own agent cert).
    let hello = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            agent_id: "cli".into(),
            ..Default::default()
        })),
    };
    let e = v1::agent_link_client::AgentLinkClient::new(channel_as(&h, dir.path(), "cli").await)
        .connect(tokio_stream::iter(vec![hello]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not an agent certificate"), "{}", e.message());
    assert!(h.coordinator.registry.is_empty());

    // The Bearer scheme is case-insensitive (RFC 6750).
    let mut c = control(&h, dir.path(), None).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let mut r = tonic::Request::new(v1::ListAgentsRequest::default());
        r.metadata_mut()
            .insert("authorization", format!("{scheme} {TOKEN}").parse().unwrap());
        c.list_agents(r).await.unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
    }
}
