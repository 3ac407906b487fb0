//! Helpers shared by subcommands: reading experiment files, KEY=VALUE flags,
//! dialing the coordinator, and mapping errors to exit codes.

use std::collections::{BTreeMap, HashMap};

use faultline_proto::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::experiment::{self, Experiment};
use crate::outcome::Outcome;

/// Default coordinator address for subcommands that need one.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

pub use crate::timestamp::rfc3339_ms;

/// Prints `msg` on stderr prefixed with `faultline: `.
pub fn eprint_err(msg: impl std::fmt::Display) {
    eprintln!("faultline: {msg}");
}

/// Why a CLI helper failed. Every message is worded for the user at the
/// command line: it names the file, flag or URL involved and, where there
/// is one, the fix (a flag or variable of this CLI).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A repeated `KEY=VALUE` flag without `=` or with an empty key.
    #[error("{flag} {value:?}: expected KEY=VALUE, e.g. {flag} port=8080")]
    KeyValue { flag: String, value: String },
    /// The experiment file could not be read.
    #[error("cannot read experiment file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The experiment file was refused by the parser; `advice` says how to
    /// set an unset variable where the user is.
    #[error("{error}{}", advice.as_deref().map(|a| format!("; {a}")).unwrap_or_default())]
    Parse {
        error: experiment::ParseError,
        advice: Option<String>,
    },
    /// A coordinator URL without `http://` or `https://`.
    #[error("coordinator URL {url:?} has no scheme: write http://{url} (or https://{url} for a coordinator started with --tls-dir)")]
    NoScheme { url: String },
    /// A coordinator URL that is not a valid URI.
    #[error("invalid coordinator URL {url:?}: {detail} (expected e.g. {DEFAULT_COORDINATOR})")]
    BadUrl { url: String, detail: String },
    /// An `https://` URL without the CA to verify the coordinator.
    #[error("{url} uses TLS: set FAULTLINE_TLS_DIR to the directory `faultline certs init` made (its ca.pem verifies the coordinator)")]
    NoTlsDir { url: String },
    /// A file of `FAULTLINE_TLS_DIR` could not be read.
    #[error("cannot read {}: {source}", path.display())]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The TLS configuration was refused by the transport.
    #[error("TLS setup for {url}: {detail}")]
    Tls { url: String, detail: String },
    /// `FAULTLINE_TOKEN` cannot go in an HTTP header.
    #[error("FAULTLINE_TOKEN has characters a header cannot carry")]
    Token,
    /// Nothing usable answered at the URL; `why` says what was seen and
    /// the likely fix ([`explain_connect`], [`explain_transport`]).
    #[error("{why}")]
    Unreachable { url: String, why: String },
}

/// Parses repeated `KEY=VALUE` flags.
pub fn key_values(flag: &str, raw: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for kv in raw {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(Error::KeyValue {
                    flag: flag.to_string(),
                    value: kv.clone(),
                })
            }
        }
    }
    Ok(out)
}

/// An experiment file read from disk, with its variables.
pub struct Source {
    pub name: String,
    pub yaml: String,
    pub vars: HashMap<String, String>,
}

impl Source {
    /// Reads `path`; errors are already worded for the user.
    pub fn read(path: &str, vars: &[String]) -> Result<Source, Error> {
        let yaml = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_string(),
            source,
        })?;
        let vars = key_values("--var", vars)?.into_iter().collect();
        Ok(Source {
            name: path.to_string(),
            yaml,
            vars,
        })
    }

    /// Parses the file; an unset variable's error says to pass `--var`.
    pub fn parse(&self) -> Result<Experiment, Error> {
        self.parse_advising(|name| format!("pass --var {name}=VALUE"))
    }

    /// Parses the file; `how_to_set(name)` tells the user how to set an
    /// unset `${name}` where they are (the parser names no flags).
    pub fn parse_advising(&self, how_to_set: impl Fn(&str) -> String) -> Result<Experiment, Error> {
        experiment::parse(&self.name, &self.yaml, &self.vars).map_err(|error| {
            let advice = error
                .message
                .strip_prefix("variable ${")
                .and_then(|rest| rest.split_once("} is not set"))
                .map(|(name, _)| how_to_set(name));
            Error::Parse { error, advice }
        })
    }

    pub fn to_wire(&self) -> v1::ExperimentSource {
        v1::ExperimentSource {
            name: self.name.clone(),
            yaml: self.yaml.clone(),
            vars: self.vars.clone().into_iter().collect(),
        }
    }
}

/// Adds `authorization: Bearer $FAULTLINE_TOKEN` to every Control call.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A Control client with the caller's credentials.
pub type Client = ControlClient<tonic::codegen::InterceptedService<Channel, Auth>>;

/// An error and its sources, joined: tonic's "transport error" alone says
/// little. A source whose text is already in the line is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Why dialing `url` failed, with the likely fix.
fn explain_connect(url: &str, e: &dyn std::error::Error) -> String {
    let detail = chain(e);
    let lower = detail.to_lowercase();
    let https = url.starts_with("https://");
    if lower.contains("connection refused") {
        format!(
            "cannot reach the coordinator at {url}: nothing listens there (connection refused); start `faultline serve` there, or pass the URL of a running one with --coordinator"
        )
    } else if https && (lower.contains("certificate") || lower.contains("unknownissuer")) {
        format!(
            "cannot reach the coordinator at {url}: its certificate was refused ({detail}); FAULTLINE_TLS_DIR must hold the ca.pem of the directory the coordinator's --tls-dir uses, made by `faultline certs init --host` with the name or address in the URL"
        )
    } else if https && (lower.contains("corrupt message") || lower.contains("tls") || lower.contains("handshake")) {
        format!(
            "cannot reach the coordinator at {url}: the server did not answer TLS ({detail}); a coordinator started without --tls-dir speaks plain gRPC: use http://{}",
            url.trim_start_matches("https://")
        )
    } else if lower.contains("timed out") || lower.contains("deadline") {
        format!("cannot reach the coordinator at {url}: no answer within 5 s ({detail}); check the address and any firewall between")
    } else {
        format!("cannot reach the coordinator at {url}: {detail}; is `faultline serve` running there?")
    }
}

/// A status's message and the errors under it, without debug formatting.
fn status_detail(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut cur = std::error::Error::source(s);
    while let Some(c) = cur {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = c.source();
    }
    out
}

/// Whether a failed call never reached a gRPC server: the transport broke
/// or the other side does not speak HTTP/2 gRPC.
fn is_transport(s: &tonic::Status) -> bool {
    let m = status_detail(s).to_lowercase();
    matches!(
        s.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Cancelled
    ) && (m.contains("transport error")
        || m.contains("h2 protocol error")
        || m.contains("connection")
        || m.contains("broken pipe"))
}

/// What a call that never reached a coordinator means, with the likely fix.
fn explain_transport(url: &str, s: &tonic::Status) -> String {
    let mut fix = String::from(
        "check the port: it must be the coordinator's gRPC port (serve --listen, 7700 by default), not its --metrics-listen port",
    );
    if let Some(rest) = url.strip_prefix("http://") {
        fix +=
            &format!("; a coordinator started with --tls-dir speaks TLS: use https://{rest} and set FAULTLINE_TLS_DIR");
    }
    format!(
        "{url} did not answer as a faultline coordinator ({}); {fix}",
        status_detail(s)
    )
}

/// Dials the Control service and checks that a coordinator answers there.
/// Credentials come from the environment: `FAULTLINE_TOKEN` (a bearer
/// token) and, for `https://` URLs, `FAULTLINE_TLS_DIR` (its `ca.pem`, and
/// `cli.pem`/`cli.key` if present, as `faultline certs init` writes them).
/// Errors say what was tried and the likely fix.
pub async fn control(url: &str) -> Result<Client, Error> {
    if !url.contains("://") {
        return Err(Error::NoScheme { url: url.to_string() });
    }
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::BadUrl {
            url: url.to_string(),
            detail: chain(&e),
        })?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        let Some(dir) = std::env::var_os("FAULTLINE_TLS_DIR") else {
            return Err(Error::NoTlsDir { url: url.to_string() });
        };
        let dir = std::path::PathBuf::from(dir);
        let ca = std::fs::read(dir.join("ca.pem")).map_err(|source| Error::TlsFile {
            path: dir.join("ca.pem"),
            source,
        })?;
        let mut tls =
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let (Ok(cert), Ok(key)) = (std::fs::read(dir.join("cli.pem")), std::fs::read(dir.join("cli.key"))) {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| Error::Tls {
            url: url.to_string(),
            detail: chain(&e),
        })?;
    }
    let token = match std::env::var("FAULTLINE_TOKEN") {
        Ok(t) if !t.is_empty() => Some(format!("Bearer {}", t.trim()).parse().map_err(|_| Error::Token)?),
        _ => None,
    };
    let channel = endpoint.connect().await.map_err(|e| Error::Unreachable {
        url: url.to_string(),
        why: explain_connect(url, &e),
    })?;
    let mut client = ControlClient::with_interceptor(channel, Auth(token));
    // A connection is not yet a coordinator: a metrics port or a TLS port
    // accepts it too and only the first call fails, with "transport error".
    // One small read-only call tells them apart; any gRPC answer (also a
    // refusal such as Unauthenticated) means a coordinator is there.
    match client
        .list_runs(v1::ListRunsRequest {
            limit: 1,
            outcome: String::new(),
        })
        .await
    {
        Err(s) if is_transport(&s) => Err(Error::Unreachable {
            url: url.to_string(),
            why: explain_transport(url, &s),
        }),
        _ => Ok(client),
    }
}

/// The CLI's advice for a failed Control call, if it has one. Statuses
/// name no flags (they also reach other clients); the CLI does.
pub fn advice(s: &tonic::Status) -> Option<&'static str> {
    let m = s.message();
    match s.code() {
        tonic::Code::Unauthenticated => Some(
            "set FAULTLINE_TOKEN to a token of the coordinator's --tokens file, or FAULTLINE_TLS_DIR to a `faultline certs init` directory with cli.pem and cli.key",
        ),
        tonic::Code::FailedPrecondition if m.contains("coordinator is stopped") => {
            Some("`faultline resume --coordinator URL` ends the emergency stop")
        }
        tonic::Code::InvalidArgument if m.contains("variable ${") && m.contains("is not set") => {
            Some("pass it with --var NAME=VALUE")
        }
        _ => None,
    }
}

/// The exit code for a failed Control call; prints the CLI's advice for
/// it first (see [`advice`]), after the caller printed the message.
pub fn status_exit(s: &tonic::Status) -> i32 {
    if let Some(a) = advice(s) {
        eprint_err(a);
    }
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            Outcome::Invalid.exit_code()
        }
        _ => Outcome::Error.exit_code(),
    }
}

/// Flags shared by subcommands that take an experiment and a coordinator.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// Experiment file (YAML).
    pub file: String,
    /// Coordinator URL; without it, use local mode (in-process coordinator and agent).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Value for a ${var} placeholder, as KEY=VALUE; repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Local mode only: label of the in-process agent, as KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Local mode only: directory the in-process agent lets disk fills
    /// target (and everything below it); repeatable. Without it every
    /// disk_fill is refused.
    #[arg(long = "allow-fill", value_name = "DIR")]
    pub allow_fill: Vec<std::path::PathBuf>,
    /// Local mode only: coordinator policy file (fleet-wide limits; see
    /// `faultline serve --policy`). A remote coordinator uses its own.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<String>,
    /// Local mode only: run history database. Default:
    /// ~/.local/state/faultline/faultline.db (/var/lib/faultline/faultline.db as root).
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
    /// Local mode only: keep no history.
    #[arg(long)]
    pub no_store: bool,
}

/// The in-process agent of local mode.
#[derive(Debug, Clone, Default)]
pub struct LocalAgent {
    /// Labels besides `host=<hostname>`. By default, none.
    pub labels: BTreeMap<String, String>,
    /// Directories disk fills may target, and everything below them
    /// (`--allow-fill`). By default, none: every disk_fill is refused.
    pub allow_fill: Vec<std::path::PathBuf>,
}

/// Where local mode keeps run history.
#[derive(Debug, Clone, Default)]
pub enum StoreChoice {
    /// The default database file.
    #[default]
    Default,
    File(String),
    /// Nothing kept after the process exits.
    Memory,
}

impl StoreChoice {
    /// Opens the store; on error prints it and returns exit code 5.
    pub fn open(&self) -> Result<crate::store::Store, i32> {
        let r = match self {
            StoreChoice::Memory => crate::store::Store::in_memory(),
            StoreChoice::File(p) => crate::store::Store::open(std::path::Path::new(p)),
            StoreChoice::Default => crate::store::Store::open(&crate::store::default_path()),
        };
        r.map_err(|e| {
            eprint_err(e);
            Outcome::Error.exit_code()
        })
    }
}

impl ExperimentArgs {
    /// Reads and validates the file and the local agent's flags; on error
    /// prints it and returns the exit code (2).
    pub fn load(&self) -> Result<(Source, LocalAgent), i32> {
        fn fail(e: impl std::fmt::Display) -> i32 {
            eprint_err(e);
            Outcome::Invalid.exit_code()
        }
        let source = Source::read(&self.file, &self.vars).map_err(fail)?;
        let labels = key_values("--label", &self.labels).map_err(fail)?;
        if self.coordinator.is_some() && !labels.is_empty() {
            return Err(fail(
                "--label applies to the local agent and cannot be combined with --coordinator (label remote agents with faultline-agent --label)",
            ));
        }
        if self.coordinator.is_some() && !self.allow_fill.is_empty() {
            return Err(fail(
                "--allow-fill applies to the local agent and cannot be combined with --coordinator (remote agents allow fill paths with faultline-agent --allow-fill)",
            ));
        }
        source.parse().map_err(fail)?;
        Ok((
            source,
            LocalAgent {
                labels,
                allow_fill: self.allow_fill.clone(),
            },
        ))
    }

    /// The local-mode store (`--db`, `--no-store`).
    pub fn store_choice(&self) -> StoreChoice {
        match (&self.db, self.no_store) {
            (_, true) => StoreChoice::Memory,
            (Some(p), false) => StoreChoice::File(p.clone()),
            (None, false) => StoreChoice::Default,
        }
    }

    /// The local-mode policy (`--policy`); on error prints it and returns 2.
    pub fn policy(&self) -> Result<crate::policy::Policy, i32> {
        fn fail(e: impl std::fmt::Display) -> i32 {
            eprint_err(e);
            Outcome::Invalid.exit_code()
        }
        match (&self.policy, &self.coordinator) {
            (None, _) => Ok(crate::policy::Policy::default()),
            (Some(_), Some(_)) => Err(fail(
                "--policy applies to local mode; a remote coordinator plans within its own (faultline serve --policy)",
            )),
            (Some(path), None) => crate::policy::Policy::load(path).map_err(|e| fail(e.to_string())),
        }
    }
}

/// Where to send Control calls: a given coordinator, or a local one started
/// here (stopped by [`CoordinatorAddr::stop`]).
pub struct CoordinatorAddr {
    pub url: String,
    #[cfg(feature = "local")]
    local: Option<crate::local::Local>,
}

impl CoordinatorAddr {
    /// Uses `coordinator`, or starts local mode with `agent`. On error
    /// prints it and returns the exit code (5).
    pub async fn open(
        coordinator: Option<String>,
        agent: LocalAgent,
        policy: crate::policy::Policy,
        store: StoreChoice,
        quiet: bool,
    ) -> Result<CoordinatorAddr, i32> {
        if let Some(url) = coordinator {
            return Ok(CoordinatorAddr {
                url,
                #[cfg(feature = "local")]
                local: None,
            });
        }
        #[cfg(feature = "local")]
        {
            let store = store.open()?;
            match crate::local::Local::start(agent.labels, agent.allow_fill, policy, store).await {
                Ok(l) => {
                    if !quiet {
                        eprintln!(
                            "faultline: local mode: coordinator on {}, agent for this host connected",
                            l.url
                        );
                    }
                    Ok(CoordinatorAddr {
                        url: l.url.clone(),
                        local: Some(l),
                    })
                }
                Err(e) => {
                    eprint_err(e);
                    Err(Outcome::Error.exit_code())
                }
            }
        }
        #[cfg(not(feature = "local"))]
        {
            let _ = (agent, quiet, policy, store);
            eprint_err("this build has no local mode: pass --coordinator URL");
            Err(Outcome::Error.exit_code())
        }
    }

    /// The in-process coordinator of local mode; `None` with `--coordinator`.
    pub fn local_coordinator(&self) -> Option<crate::server::Coordinator> {
        #[cfg(feature = "local")]
        return self.local.as_ref().map(|l| l.coordinator.clone());
        #[cfg(not(feature = "local"))]
        None
    }

    /// Stops local mode, if it was started.
    pub async fn stop(self) {
        #[cfg(feature = "local")]
        if let Some(l) = self.local {
            l.stop().await;
        }
    }
}

/// Dials the Control service; on error prints it and returns exit code 5.
pub async fn control_or_exit(url: &str) -> Result<Client, i32> {
    control(url).await.map_err(|e| {
        eprint_err(e);
        Outcome::Error.exit_code()
    })
}
