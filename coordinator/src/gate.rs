//! The release-gate endpoint (`faultline serve --gate-listen ADDR
//! --gate-dir DIR`): progressive-delivery controllers call it to run a
//! named experiment and gate a rollout step on its verdict.
//!
//! It answers Flagger's webhook contract: `POST` a JSON body
//! `{"name": ..., "namespace": ..., "phase": ..., "metadata": {...}}`
//! (Flagger also sends `checksum`; unknown fields are ignored); `200` lets
//! the rollout go on, anything else halts it, with the reason as the body.
//!
//! - Which experiment: the path `/gate/NAME` runs `DIR/NAME.yaml`; on a
//!   bare `/gate`, `metadata.experiment` names it.
//! - Variables: every other `metadata` entry is a `${var}`, and so are
//!   `name`, `namespace` and `phase` from the body (metadata wins).
//! - Who: with `serve --tokens`, a request needs `Authorization: Bearer
//!   TOKEN` or `metadata.token` (Flagger's webhooks send no headers of
//!   their own); the audit log records the token's name.
//! - Answers: 200 passed; 412 failed (the canary or a tolerance did not
//!   pass); 409 aborted or not steady; 400 a bad request or experiment
//!   file; 401 no or a wrong token; 403 the approval webhook (`serve
//!   --notify`, asked as for any submitted run) refused the run or could
//!   not be asked, with its reason; 404 no such experiment; 405 not POST;
//!   503 emergency stop or the coordinator not serving yet; 500 error.
//!   The body is the gate's summary (score and one line per metric).
//!
//! HTTP/1.1 with one request per connection, like `/metrics`: head and body
//! are bounded and read within a time limit before anything runs. With
//! `serve --tls-dir` the gate speaks HTTPS with the coordinator's
//! certificate (no client certificate: callers authenticate with a token).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use faultline_proto::v1;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::experiment::Experiment;
use crate::outcome::Outcome;
use crate::report::Report;
use crate::security::Tokens;

/// Largest request head and body accepted. By default, 16 KiB and 64 KiB:
/// a webhook call is a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client has to send its request. By default, 10 s.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a run: what `Coordinator::serve` hands the gate once it serves
/// (the same path SubmitRun and schedules take).
/// Asynchronous because the approval webhook (`serve --notify`) is asked
/// before the run starts, like for SubmitRun.
pub type StartRun = Arc<dyn Fn(Experiment, String, String) -> StartFuture + Send + Sync>;

/// What [`StartRun`] returns: the run's id and its events, or why it did
/// not start.
pub type StartFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(String, mpsc::Receiver<v1::RunEvent>), crate::control::Error>> + Send>,
>;

/// The gate's settings.
#[derive(Clone)]
pub struct Gate {
    /// Where `NAME.yaml` files are read from.
    pub dir: PathBuf,
    /// Bearer tokens; `None`: no token needed (a loopback listener, or
    /// `--gate-public` on a trusted network).
    pub tokens: Option<Arc<Tokens>>,
    /// Set by `Coordinator::serve` once runs can start.
    pub start: Arc<OnceLock<StartRun>>,
    /// HTTPS with this configuration (see [`tls_config`]); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The gate's HTTPS configuration from the files `faultline certs init DIR`
/// made: `coordinator.pem` and `coordinator.key`.
pub fn tls_config(dir: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = dir.join("coordinator.pem");
    let key_path = dir.join("coordinator.key");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("cannot read the key {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for the gate: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS for the gate: {} and its key: {e}", cert_path.display()))?;
    Ok(Arc::new(config))
}

/// Flagger's webhook payload.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// An HTTP answer: status line and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

fn answer(status: u16, body: impl Into<String>) -> Answer {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Answer { status, body }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The status a finished run answers with.
pub fn status_of(outcome: Outcome) -> u16 {
    match outcome {
        Outcome::Passed => 200,
        Outcome::Failed => 412,
        Outcome::Aborted | Outcome::NotSteady => 409,
        Outcome::Invalid => 400,
        Outcome::Error => 500,
    }
}

/// Serves the gate on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, gate: Gate, shutdown: CancellationToken) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let gate = gate.clone();
        tokio::spawn(async move {
            let peer = peer.to_string();
            match gate.tls.clone() {
                None => respond(sock, &gate, &peer).await,
                Some(config) => {
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(sock);
                    // The handshake is bounded like the request.
                    if let Ok(Ok(tls)) = tokio::time::timeout(READ_TIMEOUT, accept).await {
                        respond(tls, &gate, &peer).await;
                    }
                }
            }
        });
    }
}

/// Reads one request from `sock`, handles it and writes the answer.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, gate: &Gate, peer: &str) {
    let a = handle_connection(&mut sock, gate, peer).await;
    let resp = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.status,
        reason_phrase(a.status),
        a.body.len(),
        a.body
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A request as read off the connection.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

async fn read_request<S: AsyncRead + Unpin>(sock: &mut S) -> Result<Request, Answer> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(answer(413, format!("request head over {MAX_HEAD} bytes")));
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(answer(400, "the connection closed before the request head ended")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    let mut authorization = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => {
                length = v
                    .parse()
                    .map_err(|_| answer(400, format!("content-length {v:?} is not a number")))?
            }
            "transfer-encoding" => return Err(answer(400, "send the body with a content-length, not chunked")),
            "authorization" => authorization = Some(v.to_string()),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err(answer(413, format!("request body over {MAX_BODY} bytes")));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(answer(400, "the connection closed before the body ended")),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Ok(Request {
        method,
        path,
        authorization,
        body,
    })
}

async fn handle_connection<S: AsyncRead + Unpin>(sock: &mut S, gate: &Gate, peer: &str) -> Answer {
    let req = match tokio::time::timeout(READ_TIMEOUT, read_request(sock)).await {
        Ok(Ok(r)) => r,
        Ok(Err(a)) => return a,
        Err(_) => return answer(400, format!("no complete request within {}s", READ_TIMEOUT.as_secs())),
    };
    handle(req, gate, peer).await
}

/// A valid experiment name: a file name in the gate directory, no paths.
fn valid_experiment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

async fn handle(req: Request, gate: &Gate, peer: &str) -> Answer {
    let route = req.path.split('?').next().unwrap_or("");
    let from_path = match route.strip_prefix("/gate") {
        Some("") | Some("/") => None,
        Some(rest) if rest.starts_with('/') => Some(rest[1..].to_string()),
        _ => {
            return answer(
                404,
                "only POST /gate/NAME (or POST /gate with metadata.experiment) is served here",
            )
        }
    };
    if req.method != "POST" {
        return answer(
            405,
            "the gate is called with POST and a JSON body (Flagger's webhook contract)",
        );
    }
    let payload: Payload = match serde_json::from_slice(&req.body) {
        Ok(p) => p,
        Err(e) => {
            return answer(
                400,
                format!(
                    "the body is not a webhook payload: {e}; expected JSON {{\"name\", \"namespace\", \"phase\", \"metadata\": {{string: string}}}}"
                ),
            )
        }
    };
    let who = match &gate.tokens {
        None => format!("gate:{peer}"),
        Some(tokens) => {
            let token = req
                .authorization
                .as_deref()
                .and_then(|h| h.strip_prefix("Bearer "))
                .or(payload.metadata.get("token").map(String::as_str));
            match token.and_then(|t| tokens.name_of(t)) {
                Some(name) => format!("gate-token:{name}"),
                None if token.is_none() => {
                    return answer(
                        401,
                        "this coordinator needs a token: send Authorization: Bearer TOKEN or metadata.token",
                    )
                }
                None => return answer(401, "wrong token"),
            }
        }
    };
    let Some(name) = from_path.or_else(|| payload.metadata.get("experiment").cloned()) else {
        return answer(400, "name the experiment: POST /gate/NAME, or metadata.experiment");
    };
    if !valid_experiment(&name) {
        return answer(
            400,
            format!("experiment name {name:?}: use letters, digits, '-', '_' and '.' (a file NAME.yaml in the gate directory)"),
        );
    }
    let path = gate.dir.join(format!("{name}.yaml"));
    let yaml = match tokio::fs::read_to_string(&path).await {
        Ok(y) => y,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return answer(
                404,
                format!("no experiment {name:?}: {} does not exist", path.display()),
            )
        }
        Err(e) => return answer(500, format!("cannot read {}: {e}", path.display())),
    };
    let mut vars: HashMap<String, String> = HashMap::from([
        ("name".to_string(), payload.name.clone()),
        ("namespace".to_string(), payload.namespace.clone()),
        ("phase".to_string(), payload.phase.clone()),
    ]);
    for (k, v) in &payload.metadata {
        if k != "experiment" && k != "token" {
            vars.insert(k.clone(), v.clone());
        }
    }
    let source = path.display().to_string();
    let exp = match crate::control::parse_off_runtime(source.clone(), yaml, vars).await {
        Ok(e) => e,
        Err(e) => {
            let mut msg = e.to_string();
            if msg.contains("variable ${") && msg.contains("is not set") {
                msg.push_str("; set it in the webhook's metadata");
            }
            return answer(400, msg);
        }
    };
    let Some(start) = gate.start.get() else {
        return answer(503, "the coordinator is not serving runs yet");
    };
    let (run_id, mut rx) = match start(exp, source, who.clone()).await {
        Ok(x) => x,
        Err(e @ crate::control::Error::Stopped(_)) => return answer(503, e.to_string()),
        // The rollout halts with the approver's reason; nothing ran.
        Err(e @ crate::control::Error::NotApproved(_)) => return answer(403, e.to_string()),
        Err(e) => return answer(500, e.to_string()),
    };
    info!(run_id = %run_id, experiment = %name, caller = %who, target = %payload.name, namespace = %payload.namespace, phase = %payload.phase, "gate run started");
    while let Some(ev) = rx.recv().await {
        if let Some(v1::run_event::Event::Finished(f)) = ev.event {
            return match serde_json::from_str::<Report>(&f.report_json) {
                Ok(r) => answer(
                    status_of(r.outcome),
                    format!("run {run_id}\n{}", crate::report::judge::summary(&r)),
                ),
                Err(e) => {
                    warn!(run_id = %run_id, err = %e, "gate: unreadable report");
                    answer(500, format!("run {run_id} finished with an unreadable report: {e}"))
                }
            };
        }
    }
    answer(
        500,
        format!("run {run_id} ended without a report (the coordinator is shutting down)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_statuses_a_controller_reads_as_pass_or_halt() {
        assert_eq!(status_of(Outcome::Passed), 200);
        for o in [
            Outcome::Failed,
            Outcome::Aborted,
            Outcome::NotSteady,
            Outcome::Invalid,
            Outcome::Error,
        ] {
            assert!(status_of(o) >= 400, "{o:?}");
        }
    }

    #[test]
    fn experiment_names_cannot_leave_the_gate_directory() {
        for bad in ["../etc/passwd", "a/b", "", ".hidden", "a b"] {
            assert!(!valid_experiment(bad), "{bad:?}");
        }
        assert!(valid_experiment("canary-gate"));
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    /// With `serve --tls-dir`, the gate answers over HTTPS with the
    /// coordinator's certificate (made by `faultline certs init`), and a
    /// plain-HTTP request gets no HTTP answer.
    #[tokio::test]
    async fn the_gate_speaks_https_with_the_coordinators_certificate() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init(dir.path(), &[], &[], false).unwrap();
        let gates = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            Gate {
                dir: gates.path().to_path_buf(),
                tokens: None,
                start: Arc::default(),
                tls: Some(tls_config(dir.path()).unwrap()),
            },
            stop.clone(),
        ));
        let body = r#"{"name":"podinfo","namespace":"test","phase":"Progressing","metadata":{}}"#;
        let request = format!(
            "POST /gate/missing HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the coordinator's certificate");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = tls.read_to_string(&mut out).await;
        assert!(out.starts_with("HTTP/1.1 404 Not Found"), "{out}");
        assert!(out.contains("no experiment \"missing\""), "{out}");

        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
        assert!(
            !raw.starts_with(b"HTTP/1.1"),
            "plain HTTP was answered over a TLS listener"
        );
        stop.cancel();
    }
}
