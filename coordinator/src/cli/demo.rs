//! `faultline demo`: the README's first command. Starts a tiny HTTP service
//! under a restarting supervisor, then runs `experiments/kill.yaml` against
//! it in local mode: the kill, the errors while the service is down, and the
//! time until it answered again all show up in the report.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::common::{eprint_err, Source};
use super::run::{self, RunOpts};
use crate::outcome::Outcome;

/// The kill experiment, built in so the demo works from any directory.
const KILL_EXPERIMENT: &str = include_str!("../../../experiments/kill.yaml");
/// Restarts per demo at most, so a crashing service cannot loop forever.
const MAX_RESTARTS: u32 = 100;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment to run instead of the built-in experiments/kill.yaml; it
    /// gets the service's port as ${port}.
    #[arg(long)]
    pub file: Option<String>,
    /// How long the supervisor waits before restarting the killed service.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub restart_delay: Duration,
    /// Report format on stdout.
    #[arg(long, default_value = "md", value_parser = ["md", "json"])]
    pub format: String,
    /// Also write the report into this directory.
    #[arg(long)]
    pub report_dir: Option<String>,
}

pub async fn main(a: Args) -> i32 {
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => {
            eprint_err(format!("cannot find a free loopback port: {e}"));
            return Outcome::Error.exit_code();
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprint_err(format!(
                "cannot locate the faultline binary to start the demo service: {e}"
            ));
            return Outcome::Error.exit_code();
        }
    };
    let stop = CancellationToken::new();
    let sup = tokio::spawn(supervise(exe, port, a.restart_delay, stop.clone()));
    if !wait_ready(port, Duration::from_secs(10)).await {
        eprint_err(format!("the demo service did not start listening on 127.0.0.1:{port}"));
        stop.cancel();
        let _ = sup.await;
        return Outcome::Error.exit_code();
    }
    let (name, yaml) = match &a.file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(y) => (f.clone(), y),
            Err(e) => {
                eprint_err(format!("cannot read {f}: {e}"));
                stop.cancel();
                let _ = sup.await;
                return Outcome::Invalid.exit_code();
            }
        },
        None => ("experiments/kill.yaml".to_string(), KILL_EXPERIMENT.to_string()),
    };
    eprintln!("faultline: demo service on http://127.0.0.1:{port}/health under a supervisor that restarts it {:?} after it dies", a.restart_delay);
    let code = run::execute(RunOpts {
        policy: Default::default(),
        junit: None,
        html: None,
        store: Default::default(),
        ui: None,
        source: Source {
            name,
            yaml,
            vars: [("port".to_string(), port.to_string())].into(),
        },
        coordinator: None,
        agent: super::common::LocalAgent {
            labels: BTreeMap::from([("service".to_string(), "demo".to_string())]),
            allow_fill: Vec::new(),
        },
        report_dir: a.report_dir,
        format: a.format,
        quiet: false,
    })
    .await;
    stop.cancel();
    let _ = sup.await;
    code
}

async fn wait_ready(port: u16, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Keeps the demo service running: restarts it `delay` after it exits.
async fn supervise(exe: std::path::PathBuf, port: u16, delay: Duration, stop: CancellationToken) {
    for _ in 0..=MAX_RESTARTS {
        let child = tokio::process::Command::new(&exe)
            .args(["demo-service", "--port", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprint_err(format!("demo supervisor: cannot start the service: {e}"));
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        eprintln!("faultline: demo supervisor: service running as pid {pid}");
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = child.kill().await;
                return;
            }
            status = child.wait() => {
                let how = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                eprintln!("faultline: demo supervisor: service pid {pid} exited ({how}); restarting in {delay:?}");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    eprint_err("demo supervisor: too many restarts, giving up");
}
