//! `faultline-agent` is the node daemon of faultline. It dials out to the
//! coordinator over one `AgentLink.Connect` stream, says who it is (labels,
//! addresses, capabilities), and injects the faults it is sent, each under a
//! lease: if the coordinator stops renewing it, the agent restores the fault
//! on its own. It never needs an inbound port.
//!
//! Layout:
//! - [`backoff`]: capped exponential backoff with jitter for reconnects.
//! - [`link`]: the agent side of the stream: Hello, heartbeats, commands, statuses.
//! - [`table`]: the kind-agnostic task that owns every applied fault, its lease, undo record and restore.
//! - [`faults`]: the fault-kind trait and registry, and one module per kind (`kill`, `disk_fill`, `latency`, `block`, the stress kinds, `bandwidth`, and the packet kinds `corrupt`, `duplicate`, `reorder` (netem or NFQUEUE) and `dns` (NFQUEUE)).
//! - [`process`]: the process boundary (list, signal), real and fakeable.
//! - [`firewall`]: the packet-filter boundary (iptables-restore, nft), real and fakeable.
//! - [`qdisc`]: the traffic-control boundary (`tc`), real and fakeable.
//! - [`runtime`]: container runtimes (Docker Engine API, containerd gRPC, CRI-O inspect API), container and pod selectors resolved to a [`runtime::Place`], entering a container's network namespace, and the sweep inside containers.
//! - [`nfqueue`]: a minimal NFQUEUE netlink client (bind, packet ids or whole packets, verdicts, changed payloads).
//! - [`journal`]: the undo journal and the start-up sweep of orphaned objects (whose names the kinds declare).
//! - [`cidr`]: IP networks as `addr/prefix`.
//! - [`node`]: facts about this node (hostname, addresses).
//! - [`policy`]: the agent's policy file (allowed kinds, protected processes, fill limits, max duration).

pub mod backoff;
pub mod cgroup;
pub mod cidr;
pub mod faults;
pub mod firewall;
pub mod journal;
pub mod link;
pub mod nfqueue;
pub mod node;
pub mod policy;
pub mod process;
pub mod qdisc;
pub mod runtime;
pub mod table;

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::faults::latency::Allowed;
use crate::faults::{Backends, FillPolicy, Kinds, Protection, Setup};
use crate::firewall::{Exempt, Firewall, SystemFirewall};
use crate::link::Identity;
use crate::process::{ProcessTable, SystemProcessTable};
use crate::table::{FaultTable, TableConfig};

/// The agent's version, sent in Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the agent needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    /// Coordinator URL, e.g. `http://127.0.0.1:7700`.
    pub coordinator: String,
    /// Unique id in the fleet. By default, the hostname.
    pub agent_id: String,
    /// Labels experiments select on, e.g. `zone=a`.
    pub labels: BTreeMap<String, String>,
    /// Lease used when the coordinator sends none. By default, 15 s.
    pub default_lease: Duration,
    /// Longest lease accepted. By default, 60 s.
    pub max_lease: Duration,
    /// First reconnect delay. By default, 200 ms.
    pub backoff_initial: Duration,
    /// Longest reconnect delay. By default, 10 s.
    pub backoff_max: Duration,
    /// Process names a kill must never signal, in addition to pid 1, the
    /// agent and its parent. By default, `sshd` and `faultline-agent`: other
    /// agents on the node (or in other network namespaces of it, which share
    /// its process table) hold faults that only they can restore.
    pub protected_names: Vec<String>,
    /// The process boundary. By default, the real process table.
    pub processes: Arc<dyn ProcessTable>,
    /// Where disk fills may go (none by default) and how full they may
    /// leave a filesystem (95 % by default).
    pub fill: FillPolicy,
    /// Which latency backends may be used. By default, whichever works
    /// (netem where the kernel has it, else nfqueue). The packet kinds
    /// (corrupt, duplicate, reorder) may use netem only where latency may.
    pub latency_backend: Allowed,
    /// Whether block faults may use nftables. By default, yes if `nft` is installed.
    pub block: bool,
    /// Caps of cpu_stress and memory_stress; `None` switches them off. By
    /// default on, with [`faults::StressPolicy::default`] (the policy
    /// file's `max_cpu_percent` / `max_memory_percent` lower them).
    pub stress: Option<faults::StressPolicy>,
    /// Where the cgroup filesystems are mounted (stress faults, and the
    /// sweep of their cgroups). By default, `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Where the undo journal lives; one directory per agent (it is
    /// locked). By default, `/var/lib/faultline-agent/<agent id>` as root,
    /// else `$HOME/.local/state/faultline-agent/<agent id>`.
    pub state_dir: PathBuf,
    /// Whether start-up also removes faultline objects that no journal
    /// record names (left by an agent whose state directory was lost).
    /// Right for the one agent of a node; off for an in-process agent that
    /// may share the node with a real one. By default, on.
    pub sweep_orphans: bool,
    /// Used instead of `state_dir` when another agent holds its lock (two
    /// local-mode runs at once). By default, none: a locked state dir is an
    /// error.
    pub state_dir_fallback: Option<PathBuf>,
    /// TLS for an `https://` coordinator: the CA that signed its certificate
    /// and this agent's certificate and key. By default, none.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Prometheus metrics of this agent (served by `--metrics-listen`).
    pub metrics: faultline_proto::metrics::Metrics,
    /// The operator's policy file (`--policy`); it adds protected processes
    /// and fill paths to the flags and can only narrow the rest. By
    /// default, empty.
    pub policy: policy::AgentPolicy,
    /// The container runtime containers are resolved through (`--runtime`).
    /// By default, the first that answers ([`runtime::detect`]).
    pub runtime: runtime::Choice,
}

/// The default state directory for `agent_id`.
pub fn default_state_dir(agent_id: &str) -> PathBuf {
    let base = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/faultline-agent")
    } else {
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".local/state/faultline-agent"),
            None => std::env::temp_dir().join(format!("faultline-agent-{}", nix::unistd::geteuid())),
        }
    };
    let safe: String = agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join(safe)
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error(transparent)]
    Id(#[from] faultline_proto::ids::IdError),
    /// The coordinator would refuse this Hello (see `faultline_proto::hello`).
    #[error("this agent cannot register: {0}")]
    Hello(#[from] faultline_proto::hello::HelloError),
}

impl AgentConfig {
    /// Defaults for an agent connecting to `coordinator`.
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            agent_id: node::hostname(),
            labels: BTreeMap::new(),
            default_lease: Duration::from_secs(15),
            max_lease: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            protected_names: vec!["sshd".into(), "faultline-agent".into()],
            processes: Arc::new(SystemProcessTable::new()),
            fill: FillPolicy::default(),
            latency_backend: Allowed::Auto,
            block: true,
            stress: Some(faults::StressPolicy::default()),
            cgroup_root: PathBuf::from(cgroup::ROOT),
            state_dir: default_state_dir(&node::hostname()),
            sweep_orphans: true,
            state_dir_fallback: None,
            metrics: agent_metrics(),
            tls: None,
            policy: policy::AgentPolicy::default(),
            runtime: runtime::Choice::Auto,
        }
    }
}

/// The agent's metrics, declared so they show before their first value.
pub fn agent_metrics() -> faultline_proto::metrics::Metrics {
    let m = faultline_proto::metrics::Metrics::new();
    for (name, kind, help) in [
        (
            "faultline_agent_connected",
            "gauge",
            "1 while the stream to the coordinator is up.",
        ),
        (
            "faultline_agent_active_faults",
            "gauge",
            "Faults this agent holds, by kind.",
        ),
        (
            "faultline_agent_injections_total",
            "counter",
            "Inject commands, by kind and result (injected, refused, failed).",
        ),
        (
            "faultline_agent_inject_seconds",
            "histogram",
            "Time to apply a fault, by kind.",
        ),
        (
            "faultline_agent_restore_seconds",
            "histogram",
            "Time to restore a fault, by kind.",
        ),
        (
            "faultline_agent_restore_failures_total",
            "counter",
            "Restores that failed, by kind.",
        ),
        (
            "faultline_agent_lease_expiries_total",
            "counter",
            "Faults restored because their lease ran out, by kind.",
        ),
    ] {
        m.describe(name, kind, help);
    }
    m
}

/// The coordinator's IP addresses, from its URL, so network faults never
/// cut the agent's control channel.
pub fn coordinator_addresses(url: &str) -> Vec<IpAddr> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut ips: Vec<IpAddr> = hostport
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

/// Runs the agent until `shutdown` fires; then restores every fault it holds
/// and returns. Before it dials the coordinator it restores whatever its
/// undo journal lists and sweeps orphaned faultline objects; it fails only
/// if its state directory cannot be used (it will not inject without one)
/// or the coordinator would refuse its id or Hello.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    faultline_proto::ids::validate_agent_id(&config.agent_id)?;
    let journal = match (journal::Journal::open(&config.state_dir), &config.state_dir_fallback) {
        (Err(journal::Error::Locked(dir)), Some(fallback)) => {
            info!(locked = %dir.display(), using = %fallback.display(), "state directory in use by another agent; using a private one");
            journal::Journal::open(fallback)?
        }
        (r, _) => r?,
    };
    let journal = Arc::new(journal);
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let latency = Backends::detect(config.latency_backend, std::path::Path::new("/"));
    for (name, why) in &latency.missing {
        info!(backend = name, reason = %why, "latency backend unavailable");
    }
    let fw = SystemFirewall::detect();
    let block: Option<Arc<dyn Firewall>> = (config.block && fw.has_nft()).then(|| Arc::new(fw) as Arc<dyn Firewall>);
    let exempt = Exempt::new(coordinator_addresses(&config.coordinator));
    let mut protected_names = config.protected_names.clone();
    protected_names.extend(config.policy.protected_processes.iter().cloned());
    let mut fill = config.fill.clone();
    fill.allowed.extend(config.policy.allowed_fill_paths.iter().cloned());
    if let Some(p) = config.policy.max_fill_used_percent {
        fill.max_used_percent = fill.max_used_percent.min(p);
    }
    let runtime = config.runtime.open();
    if runtime.is_none() && !matches!(config.runtime, runtime::Choice::Auto | runtime::Choice::None) {
        warn!(runtime = ?config.runtime, "the container runtime asked for does not answer; containers cannot be targeted on this node");
    }
    let stress = config.stress.clone().map(|mut p| {
        if let Some(c) = config.policy.max_cpu_percent {
            p.max_cpu_percent = p.max_cpu_percent.min(c);
        }
        if let Some(m) = config.policy.max_memory_percent {
            p.max_memory_percent = p.max_memory_percent.min(m);
        }
        faults::Stress {
            layout: cgroup::Layout::under(&config.cgroup_root),
            policy: p,
        }
    });
    let kinds = Kinds::new(&Setup {
        runtime: runtime.clone(),
        processes: config.processes.clone(),
        protection: Protection::for_this_process(protected_names),
        fill: fill.clone(),
        latency,
        block,
        exempt: exempt.clone(),
        stress,
        tc: {
            let tc = qdisc::SystemTc::detect();
            tc.installed().then(|| Arc::new(tc) as Arc<dyn qdisc::Tc>)
        },
        nfqueue: faults::packet::Nfqueue::detect(),
    });
    // Advertise only what works here and the policy allows, so the
    // coordinator refuses at plan time instead of the agent at injection.
    let mut capabilities = kinds.capabilities();
    capabilities.retain(|c| config.policy.allows(c.split(':').next().unwrap_or(c)).is_ok());
    // Not a kind: this agent answers dry-run Injects (for `plan`).
    capabilities.push(faultline_proto::CAPABILITY_DRY_RUN.into());
    if let Some(rt) = &runtime {
        // Not a kind either: faults may target this node's containers.
        capabilities.push(format!("runtime:{}", rt.name()));
        // And it answers pod queries (groups of pods, for release gates).
        capabilities.push(faultline_proto::CAPABILITY_POD_ADDRESSES.into());
    }
    info!(capabilities = %capabilities.join(","), exempt = ?exempt.coordinator, "node probed");
    // Put the node back before registering: faults a previous run of this
    // agent left (it died without restoring), then orphans.
    let cleaner = journal::Cleaner {
        firewall: Some(Arc::new(SystemFirewall::detect())),
        tc: Some(Arc::new(qdisc::SystemTc::detect())),
        runtime: runtime.clone(),
        cgroups: Some(cgroup::Layout::under(&config.cgroup_root)),
    };
    let (cleaned, restored) = journal::recover(&journal, &cleaner, &fill.allowed, config.sweep_orphans);
    for line in &cleaned {
        warn!(state_dir = %config.state_dir.display(), "{line}");
    }
    for rec in restored {
        // Tell the run that owned it, if the coordinator still tracks it.
        let _ = status_tx.send(v1::FaultStatus {
            fault_id: rec.fault_id.clone(),
            run_id: rec.run_id.clone(),
            state: v1::FaultState::Restored as i32,
            detail: format!(
                "restored from the undo journal when the agent restarted (it had stopped without restoring {} fault {})",
                rec.kind, rec.fault_id
            ),
            backend: String::new(),
            at_unix_ms: faultline_proto::now_unix_ms(),
            observation: None,
            containers: Vec::new(),
            matching_units: 0,
            selected_units: 0,
            pods: Vec::new(),
        });
    }
    let (table, table_task) = FaultTable::spawn(
        TableConfig {
            default_lease: config.default_lease,
            max_lease: config.max_lease,
            kinds,
            journal: Some(journal.clone()),
            policy: config.policy.clone(),
            metrics: config.metrics.clone(),
            runtime,
            protected_containers: runtime::Protected::for_this_process(),
        },
        status_tx,
    );
    let identity = Identity {
        tls: config.tls.clone(),
        hello: v1::Hello {
            agent_id: config.agent_id.clone(),
            hostname: node::hostname(),
            labels: config.labels.clone().into_iter().collect(),
            addresses: node::addresses(),
            capabilities,
            version: VERSION.to_string(),
            pid: std::process::id(),
            cleaned: faultline_proto::hello::fit_cleaned(&cleaned),
        },
    };
    faultline_proto::hello::check(&identity.hello)?;
    let statuses = Arc::new(Mutex::new(status_rx));
    let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    info!(agent_id = %config.agent_id, coordinator = %config.coordinator, "agent starting");
    link::reconnect_loop(backoff, &shutdown, || {
        link::session(&config.coordinator, &identity, &table, statuses.clone(), &shutdown)
    })
    .await;
    // If shutdown came while disconnected, nothing restored yet: do it now.
    table.restore_all("agent shutting down").await;
    drop(table);
    let _ = table_task.await;
    // A private fallback directory (local mode, when another agent held the
    // shared one) goes once nothing but its lock is left in it: each local
    // run used to leave one behind in the temporary directory.
    if let Some(fallback) = &config.state_dir_fallback {
        if journal.dir() == fallback.as_path() {
            remove_if_only_lock(fallback);
        }
    }
    info!(agent_id = %config.agent_id, "agent stopped; every fault restored");
    Ok(())
}

/// Removes `dir` if it holds nothing but the journal's lock file (an undo
/// record left in it keeps it, for the next agent to restore).
fn remove_if_only_lock(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.iter().all(|n| n == "lock") {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            warn!(dir = %dir.display(), err = %e, "could not remove the private state directory");
        }
    }
}
