//! Helpers shared by subcommands: reading experiment files, KEY=VALUE flags,
//! dialing the coordinator, and mapping errors to exit codes.

use std::collections::{BTreeMap, HashMap};

use faultline_proto::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::experiment::{self, Experiment};
use crate::outcome::Outcome;

/// Default coordinator address for subcommands that need one.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

/// Unix milliseconds as RFC 3339 UTC, for tables.
pub fn rfc3339_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Prints `msg` on stderr prefixed with `faultline: `.
pub fn eprint_err(msg: impl std::fmt::Display) {
    eprintln!("faultline: {msg}");
}

/// Parses repeated `KEY=VALUE` flags.
pub fn key_values(flag: &str, raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for kv in raw {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(format!("{flag} {kv:?}: expected KEY=VALUE, e.g. {flag} port=8080")),
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
    pub fn read(path: &str, vars: &[String]) -> Result<Source, String> {
        let yaml = std::fs::read_to_string(path).map_err(|e| format!("cannot read experiment file {path}: {e}"))?;
        let vars = key_values("--var", vars)?.into_iter().collect();
        Ok(Source {
            name: path.to_string(),
            yaml,
            vars,
        })
    }

    pub fn parse(&self) -> Result<Experiment, experiment::ParseError> {
        experiment::parse(&self.name, &self.yaml, &self.vars)
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

/// An error and its sources, joined: tonic's "transport error" alone says little.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Dials the Control service. Credentials come from the environment:
/// `FAULTLINE_TOKEN` (a bearer token) and, for `https://` URLs,
/// `FAULTLINE_TLS_DIR` (its `ca.pem`, and `cli.pem`/`cli.key` if present,
/// as `faultline certs init` writes them).
pub async fn control(url: &str) -> Result<Client, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid coordinator URL {url:?}: {e} (expected e.g. {DEFAULT_COORDINATOR})"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        let Some(dir) = std::env::var_os("FAULTLINE_TLS_DIR") else {
            return Err(format!(
                "{url} uses TLS: set FAULTLINE_TLS_DIR to the directory `faultline certs init` made (its ca.pem verifies the coordinator)"
            ));
        };
        let dir = std::path::PathBuf::from(dir);
        let ca = std::fs::read(dir.join("ca.pem"))
            .map_err(|e| format!("cannot read {}: {e}", dir.join("ca.pem").display()))?;
        let mut tls =
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let (Ok(cert), Ok(key)) = (std::fs::read(dir.join("cli.pem")), std::fs::read(dir.join("cli.key"))) {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS setup for {url}: {e}"))?;
    }
    let token = match std::env::var("FAULTLINE_TOKEN") {
        Ok(t) if !t.is_empty() => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| "FAULTLINE_TOKEN has characters a header cannot carry".to_string())?,
        ),
        _ => None,
    };
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot reach the coordinator at {url}: {}; is `faultline serve` running there?",
            chain(&e)
        )
    })?;
    Ok(ControlClient::with_interceptor(channel, Auth(token)))
}

/// The exit code for a failed Control call.
pub fn status_exit(s: &tonic::Status) -> i32 {
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
        let fail = |e: String| {
            eprint_err(e);
            Outcome::Invalid.exit_code()
        };
        let source = Source::read(&self.file, &self.vars).map_err(fail)?;
        let labels = key_values("--label", &self.labels).map_err(fail)?;
        if self.coordinator.is_some() && !labels.is_empty() {
            return Err(fail(
                "--label applies to the local agent and cannot be combined with --coordinator (label remote agents with faultline-agent --label)".into(),
            ));
        }
        if self.coordinator.is_some() && !self.allow_fill.is_empty() {
            return Err(fail(
                "--allow-fill applies to the local agent and cannot be combined with --coordinator (remote agents allow fill paths with faultline-agent --allow-fill)".into(),
            ));
        }
        source.parse().map_err(|e| fail(e.to_string()))?;
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
        let fail = |e: String| {
            eprint_err(e);
            Outcome::Invalid.exit_code()
        };
        match (&self.policy, &self.coordinator) {
            (None, _) => Ok(crate::policy::Policy::default()),
            (Some(_), Some(_)) => Err(fail(
                "--policy applies to local mode; a remote coordinator plans within its own (faultline serve --policy)"
                    .into(),
            )),
            (Some(path), None) => crate::policy::Policy::load(path).map_err(fail),
        }
    }
}

/// Where to send Control calls: a given coordinator, or a local one started
/// here (stopped by [`Target::stop`]).
pub struct Target {
    pub url: String,
    #[cfg(feature = "local")]
    local: Option<crate::local::Local>,
}

impl Target {
    /// Uses `coordinator`, or starts local mode with `agent`. On error
    /// prints it and returns the exit code (5).
    pub async fn open(
        coordinator: Option<String>,
        agent: LocalAgent,
        policy: crate::policy::Policy,
        store: StoreChoice,
        quiet: bool,
    ) -> Result<Target, i32> {
        if let Some(url) = coordinator {
            return Ok(Target {
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
                    Ok(Target {
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
