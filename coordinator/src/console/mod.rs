//! The web console (`faultline serve --ui-listen ADDR`): server-rendered
//! pages of the fleet, the run history and a live run, fed live by
//! Server-Sent Events from the same run events `Control.Follow` streams.
//!
//! No external assets: the pages, their one small script
//! (`/static/console.js`) and the reports all come from the coordinator,
//! so the console works on an air-gapped network. Every response carries a
//! Content-Security-Policy without inline scripts, `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//!
//! Layout:
//! - [`http`]: reading requests and writing responses with the security headers.
//! - [`auth`]: login with a bearer token, session cookies, CSRF tokens, roles.
//! - `layout`: the page shell shared by every page.
//! - `fleet`: the Fleet page (agents from the registry).
//! - `runs`: the Runs page (history from the store) and each run's HTML report.
//! - `live`: the Live run page (its probe charts are drawn by console.js)
//!   and its Abort button.
//! - `stop`: the fleet-wide emergency stop, with a confirmation step.
//! - `sse`: a run's events as a Server-Sent Events stream.
//! - `trend`: the Experiments page and one experiment's trend (figures over
//!   runs, regressions marked).
//! - `gamedays`: scheduled suites, game-day runs and their scores over time.
//! - `schedules`: next ticks and recent ticks with skip/miss reasons.
//! - `audit`: the audit log.
//! - `chart`: the inline SVG line chart the trend pages draw.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::security::Tokens;
use crate::server::Coordinator;

mod audit;
pub mod auth;
mod chart;
mod fleet;
mod gamedays;
pub mod http;
mod layout;
mod live;
mod runs;
mod schedules;
mod sse;
mod stop;
mod trend;

use auth::Session;
use http::{Request, Response};

/// The console's one script, served as `/static/console.js`.
pub const SCRIPT: &str = include_str!("console.js");

/// Errors setting the console up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the console needs bearer tokens to log in with: pass --tokens FILE (lines `NAME TOKEN [ROLE]`)")]
    NoTokens,
    #[error("cannot read the console's TLS files in {dir}: {message}")]
    Tls { dir: std::path::PathBuf, message: String },
}

/// What the console serves from.
pub struct Console {
    coordinator: Coordinator,
    sessions: auth::Sessions,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Console {
    /// A console over `coordinator`, logging in with the coordinator's
    /// bearer tokens (required: a console without them would hand the
    /// fleet to anyone who reaches the port).
    pub fn new(coordinator: Coordinator) -> Result<Console, Error> {
        let tokens: Tokens = coordinator.security.tokens.clone().ok_or(Error::NoTokens)?;
        Ok(Console {
            coordinator,
            sessions: auth::Sessions::new(tokens),
            tls: None,
        })
    }

    /// A console over `coordinator` that logs in with `tokens` of its own
    /// (local mode's one-time token), not the coordinator's.
    pub fn with_tokens(coordinator: Coordinator, tokens: Tokens) -> Console {
        Console {
            coordinator,
            sessions: auth::Sessions::new(tokens),
            tls: None,
        }
    }

    /// Serves HTTPS with the coordinator's certificate and key from `dir`
    /// (`coordinator.pem`, `coordinator.key`, made by `faultline certs init`).
    pub fn with_tls_dir(mut self, dir: &std::path::Path) -> Result<Console, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let err = |message: String| Error::Tls {
            dir: dir.to_path_buf(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(dir.join("coordinator.pem"))
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| err(format!("coordinator.pem: {e}")))?;
        let key = PrivateKeyDer::from_pem_file(dir.join("coordinator.key"))
            .map_err(|e| err(format!("coordinator.key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| err(e.to_string()))?;
        self.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        Ok(self)
    }

    /// Serves the console on `listener` until `shutdown` fires.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let me = Arc::new(self);
        loop {
            let sock = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(err = %e, "console: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (me, stop) = (me.clone(), shutdown.clone());
            tokio::spawn(async move {
                match &me.tls {
                    None => me.connection(sock, stop).await,
                    Some(acceptor) => {
                        let accept = tokio::time::timeout(http::READ_TIMEOUT, acceptor.accept(sock));
                        if let Ok(Ok(tls)) = accept.await {
                            me.connection(tls, stop).await
                        }
                    }
                }
            });
        }
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, mut sock: S, stop: CancellationToken) {
        let req = match http::read_request(&mut sock).await {
            Ok(r) => r,
            Err(e) => {
                let status = if matches!(e, http::Error::BodyTooLarge | http::Error::HeadTooLarge) {
                    413
                } else {
                    400
                };
                let _ = Response::text(status, format!("{e}\n")).send(&mut sock, false).await;
                return;
            }
        };
        let head_only = req.method == "HEAD";
        // The live stream holds its connection open until the run ends.
        if req.method == "GET" {
            if let Some(run_id) = req.path.strip_prefix("/runs/").and_then(|p| p.strip_suffix("/events")) {
                match self.sessions.of(&req) {
                    Some(_) => sse::stream(&self.coordinator, run_id, &mut sock, stop).await,
                    None => {
                        let _ = Response::text(401, "log in first: POST /login\n")
                            .send(&mut sock, false)
                            .await;
                    }
                }
                return;
            }
        }
        let resp = self.route(&req);
        let _ = resp.send(&mut sock, head_only).await;
    }

    fn route(&self, req: &Request) -> Response {
        let get = req.method == "GET" || req.method == "HEAD";
        let post = req.method == "POST";
        if !get && !post {
            return Response::text(405, "only GET and POST\n").with_header("allow", "GET, HEAD, POST".into());
        }
        match (post, req.path.as_str()) {
            (false, "/static/console.js") => {
                let mut r = Response::text(200, SCRIPT);
                r.content_type = "text/javascript; charset=utf-8";
                return r;
            }
            (false, "/login") => return layout::login(200, None),
            (true, "/login") => return self.login(req),
            _ => {}
        }
        let Some(session) = self.sessions.of(req) else {
            return if get {
                Response::redirect("/login")
            } else {
                Response::text(401, "log in first\n")
            };
        };
        if post && !session.csrf_ok(req) {
            return Response::text(
                403,
                "refused: missing or wrong CSRF token (reload the page and try again)\n",
            );
        }
        let c = &self.coordinator;
        match (post, req.path.as_str()) {
            (false, "/") => Response::redirect("/fleet"),
            (false, "/fleet") => fleet::page(c, &session),
            (false, "/runs") => runs::page(c, &session, req),
            (false, "/experiments") => trend::index(c, &session),
            (false, "/experiments/trend") => trend::page(c, &session, req),
            (false, "/gamedays") => gamedays::page(c, &session),
            (false, "/schedules") => schedules::page(c, &session),
            (false, "/audit") => audit::page(c, &session),
            (false, "/stop") => stop::confirm(c, &session),
            (true, "/stop") => stop::post(c, &session, req),
            (true, "/resume") => stop::resume(c, &session),
            (true, "/logout") => {
                self.sessions.logout(req);
                Response::redirect("/login").with_header("set-cookie", auth::clear_cookie())
            }
            (false, p) if p.starts_with("/runs/") => {
                let rest = &p["/runs/".len()..];
                match rest.strip_suffix("/report") {
                    Some(id) => runs::report(c, id),
                    None => live::page(c, &session, rest),
                }
            }
            (true, p) if p.starts_with("/runs/") && p.ends_with("/abort") => {
                let id = &p["/runs/".len()..p.len() - "/abort".len()];
                live::abort(c, &session, id)
            }
            _ => Response::text(404, format!("no page {}\n", req.path)),
        }
    }

    fn login(&self, req: &Request) -> Response {
        let form = req.form();
        let token = form.get("token").map(String::as_str).unwrap_or("");
        match self.sessions.login(token) {
            Some(id) => {
                Response::redirect("/fleet").with_header("set-cookie", auth::set_cookie(&id, self.tls.is_some()))
            }
            None => layout::login(401, Some("wrong token")),
        }
    }
}

/// A refusal for a read-only session, decided here on the server (the
/// pages also hide the buttons, but that is only a convenience).
fn read_only_refusal(session: &Session, what: &str) -> Response {
    Response::text(
        403,
        format!(
            "refused: {} is logged in with a read-only token; {what} needs an operator token\n",
            session.name
        ),
    )
}

/// Whether the console may listen on `addr`: loopback always; any other
/// address only with TLS or `--insecure`, the rule of the gRPC listener.
pub fn exposure_allowed(addr: &std::net::SocketAddr, tls: bool, insecure: bool) -> bool {
    addr.ip().is_loopback() || tls || insecure
}
