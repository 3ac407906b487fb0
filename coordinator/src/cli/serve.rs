//! `faultline serve`: run the coordinator until SIGINT/SIGTERM, then abort
//! and restore every run in flight before exiting.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::common::eprint_err;
use crate::policy::Policy;
use crate::server::Coordinator;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on for agents and clients.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Allow a non-loopback address without TLS: anyone who can reach the
    /// port can then drive the agents. Only on a network you trust.
    #[arg(long)]
    pub insecure: bool,
    /// Serve TLS with the files `faultline certs init DIR` made: agents must
    /// present a certificate from its CA whose common name is their id.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Bearer tokens for Control calls, one `NAME TOKEN [ROLE]` per line;
    /// the audit log records NAME. ROLE is `operator` (the default) or
    /// `read-only` (may look, never change state). With TLS, the CLI
    /// certificate also works (agent certificates never do).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<std::path::PathBuf>,
    /// Policy file: fleet-wide limits every run is planned within
    /// (max_fleet_percent, protected_labels, allowed_windows, timezone,
    /// max_concurrent_runs, max_duration).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<String>,
    /// Run history database (SQLite). Default:
    /// /var/lib/faultline/faultline.db as root, else ~/.local/state/faultline/faultline.db.
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g.
    /// 127.0.0.1:9700. Plain HTTP without authentication: only a loopback
    /// address unless --metrics-public.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow --metrics-listen on a non-loopback address. Anyone who reaches
    /// it sees fleet size, fault kinds in use and run outcomes (no ids, no
    /// hosts, no experiment contents).
    #[arg(long, requires = "metrics_listen")]
    pub metrics_public: bool,
    /// Serve the release-gate endpoint on this address (`POST /gate/NAME`
    /// runs DIR/NAME.yaml of --gate-dir and answers 200 when it passes,
    /// Flagger's webhook contract), e.g. 127.0.0.1:7702. HTTPS with the
    /// coordinator's certificate under --tls-dir, else plain HTTP; only a
    /// loopback address unless --gate-public.
    #[arg(long, value_name = "ADDR", requires = "gate_dir")]
    pub gate_listen: Option<SocketAddr>,
    /// Directory of the experiments the gate endpoint may run (NAME.yaml).
    #[arg(long, value_name = "DIR", requires = "gate_listen")]
    pub gate_dir: Option<std::path::PathBuf>,
    /// Allow --gate-listen on a non-loopback address. Anyone who reaches it
    /// can run the experiments of --gate-dir, so it also needs --tokens
    /// (callers send a token), or --insecure on a network you trust.
    #[arg(long, requires = "gate_listen")]
    pub gate_public: bool,
    /// Serve the web console on this address, e.g. 127.0.0.1:7780. Needs
    /// --tokens (the console logs in with them). A non-loopback address
    /// needs --tls-dir (the console then serves HTTPS with the
    /// coordinator's certificate) or --insecure, like --listen.
    #[arg(long, value_name = "ADDR")]
    pub ui_listen: Option<SocketAddr>,
    /// Delete finished runs that started longer ago than this (checked at
    /// start and then hourly), e.g. `30d`. By default, history is kept
    /// forever; `faultline runs prune` does it once by hand.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub retention: Option<std::time::Duration>,
    /// Notification config (YAML): webhooks on run start / finish / abort
    /// and game-day finish (url, events, secret_file), and an optional
    /// pre-flight approval webhook (url, secret_file, timeout).
    #[arg(long, value_name = "FILE")]
    pub notify: Option<std::path::PathBuf>,
    /// Keep run history in memory only (lost when the coordinator stops).
    #[arg(long, conflicts_with = "db")]
    pub no_store: bool,
}

pub async fn main(a: Args) -> i32 {
    if !a.listen.ip().is_loopback() && !a.insecure && a.tls_dir.is_none() {
        eprint_err(format!(
            "refusing to listen on {} without TLS: anyone reaching it could inject faults. Use --tls-dir DIR (see `faultline certs init`), listen on 127.0.0.1, or pass --insecure on a trusted network",
            a.listen
        ));
        return 2;
    }
    if let Some(m) = a.metrics_listen {
        if !faultline_proto::metrics::exposure_allowed(&m, a.metrics_public) {
            eprint_err(format!(
                "refusing to serve metrics on {m}: /metrics has no TLS and no authentication. Use a loopback address (e.g. 127.0.0.1:{}) behind your scraper's own tunnel, or pass --metrics-public to expose it",
                m.port()
            ));
            return 2;
        }
    }
    if let Some(g) = a.gate_listen {
        if !g.ip().is_loopback() && !a.gate_public {
            eprint_err(format!(
                "refusing to serve the gate on {g}: it runs experiments for whoever calls it. Use a loopback address (e.g. 127.0.0.1:{}) behind your cluster's own proxy, or pass --gate-public (with --tokens)",
                g.port()
            ));
            return 2;
        }
        if !g.ip().is_loopback() && a.tokens.is_none() && !a.insecure {
            eprint_err(format!(
                "refusing to serve the gate on {g} without --tokens: anyone reaching it could run the experiments of --gate-dir. Pass --tokens FILE (callers send Authorization: Bearer TOKEN or metadata.token), or --insecure on a trusted network"
            ));
            return 2;
        }
    }
    if let Some(u) = a.ui_listen {
        if !crate::console::exposure_allowed(&u, a.tls_dir.is_some(), a.insecure) {
            eprint_err(format!(
                "refusing to serve the console on {u} without TLS: the login token and session cookie would cross the network in the clear. Use --tls-dir DIR, a loopback address (e.g. 127.0.0.1:{}), or pass --insecure on a trusted network",
                u.port()
            ));
            return 2;
        }
        if a.tokens.is_none() {
            eprint_err("--ui-listen needs --tokens FILE: the console logs in with those bearer tokens (lines `NAME TOKEN [ROLE]`)");
            return 2;
        }
    }
    let mut security = crate::security::Security::default();
    if let Some(dir) = &a.tls_dir {
        match crate::security::Security::tls_from_dir(dir) {
            Ok(t) => security.tls = Some(t),
            Err(e) => {
                eprint_err(format!(
                    "{e} (make the files with `faultline certs init {}`)",
                    dir.display()
                ));
                return 2;
            }
        }
    }
    if let Some(path) = &a.tokens {
        match crate::security::Tokens::load(path) {
            Ok(t) => security.tokens = Some(t),
            Err(e) => {
                eprint_err(e);
                return 2;
            }
        }
    }
    let policy = match &a.policy {
        None => Policy::default(),
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprint_err(e);
                return 2;
            }
        },
    };
    let choice = match (&a.db, a.no_store) {
        (_, true) => super::common::StoreChoice::Memory,
        (Some(p), false) => super::common::StoreChoice::File(p.clone()),
        (None, false) => super::common::StoreChoice::Default,
    };
    let store = match choice.open() {
        Ok(s) => s,
        Err(code) => return code,
    };
    eprintln!("faultline: run history in {}", store.path());
    eprintln!(
        "faultline: {}{}",
        if security.tls.is_some() {
            "TLS on: agents need a certificate from the CA"
        } else {
            "no TLS"
        },
        if security.tokens.is_some() {
            "; Control calls need a bearer token or the CLI certificate"
        } else {
            ""
        }
    );
    let listener = match tokio::net::TcpListener::bind(a.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprint_err(format!("cannot listen on {}: {e}", a.listen));
            return 5;
        }
    };
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        s.cancel();
    });
    eprintln!("faultline: coordinator listening on {}", a.listen);
    let mut coordinator = Coordinator::with_policy(policy)
        .with_store(store)
        .with_security(security);
    if let Some(path) = &a.notify {
        match crate::notify::Config::load(path) {
            Ok(config) => {
                eprintln!(
                    "faultline: {} webhook(s){}",
                    config.webhooks.len(),
                    if config.approval.is_some() {
                        ", and an approval webhook every submitted run must pass"
                    } else {
                        ""
                    }
                );
                let notifier = crate::notify::Notifier::start(config, coordinator.metrics.clone(), Default::default());
                coordinator = coordinator.with_notifier(notifier);
            }
            Err(e) => {
                eprint_err(e);
                return 2;
            }
        }
    }
    if let Some(addr) = a.metrics_listen {
        let l = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprint_err(format!("cannot listen for metrics on {addr}: {e}"));
                return 5;
            }
        };
        eprintln!("faultline: metrics on http://{addr}/metrics");
        let c = coordinator.clone();
        let stop = shutdown.clone();
        tokio::spawn(faultline_proto::metrics::serve(
            l,
            coordinator.metrics.clone(),
            move |_| c.refresh_metrics(),
            async move { stop.cancelled().await },
        ));
    }
    if let (Some(addr), Some(dir)) = (a.gate_listen, &a.gate_dir) {
        let l = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprint_err(format!("cannot listen for the gate on {addr}: {e}"));
                return 5;
            }
        };
        let tls = match &a.tls_dir {
            None => None,
            Some(tls_dir) => match crate::gate::tls_config(tls_dir) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprint_err(format!(
                        "{e} (make the files with `faultline certs init {}`)",
                        tls_dir.display()
                    ));
                    return 2;
                }
            },
        };
        eprintln!(
            "faultline: release gate on {}://{addr}/gate/NAME running {}/NAME.yaml",
            if tls.is_some() { "https" } else { "http" },
            dir.display()
        );
        tokio::spawn(crate::gate::serve(
            l,
            crate::gate::Gate {
                dir: dir.clone(),
                tokens: coordinator.security.tokens.clone().map(std::sync::Arc::new),
                start: coordinator.run_starter.clone(),
                tls,
            },
            shutdown.clone(),
        ));
    }
    if let Some(addr) = a.ui_listen {
        let mut console = match crate::console::Console::new(coordinator.clone()) {
            Ok(c) => c,
            Err(e) => {
                eprint_err(e);
                return 2;
            }
        };
        if let Some(dir) = &a.tls_dir {
            console = match console.with_tls_dir(dir) {
                Ok(c) => c,
                Err(e) => {
                    eprint_err(e);
                    return 2;
                }
            };
        }
        let l = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprint_err(format!("cannot listen for the console on {addr}: {e}"));
                return 5;
            }
        };
        let scheme = if a.tls_dir.is_some() { "https" } else { "http" };
        eprintln!("faultline: console on {scheme}://{addr}/");
        tokio::spawn(console.serve(l, shutdown.clone()));
    }
    if let Some(keep) = a.retention {
        eprintln!(
            "faultline: keeping finished runs for {}",
            humantime::format_duration(keep)
        );
        tokio::spawn(crate::store::retain(
            coordinator.store.clone(),
            keep,
            std::time::Duration::from_secs(3600),
            shutdown.clone(),
        ));
    }
    match coordinator.serve(listener, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprint_err(format!("coordinator failed: {e}"));
            5
        }
    }
}
