//! `faultline-agent`: the node daemon. Parses flags, sets up tracing and
//! signal handling, and hands over to [`faultline_agent::run`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use faultline_agent::faults::latency::Allowed;
use tokio_util::sync::CancellationToken;

/// faultline node agent: dials the coordinator, injects faults under a lease,
/// and always restores them.
#[derive(Parser, Debug)]
#[command(name = "faultline-agent", version)]
struct Args {
    /// Coordinator URL to dial, e.g. http://10.0.0.5:7700.
    #[arg(long, env = "FAULTLINE_COORDINATOR")]
    coordinator: String,
    /// Unique agent id: ASCII letters, digits, '.', '_' and '-', starting
    /// with a letter or digit, at most 128 bytes. Default: the hostname.
    #[arg(long)]
    id: Option<String>,
    /// Label as key=value; repeat for several (e.g. --label zone=a --label role=api).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Process name a kill must never signal (in addition to pid 1, the agent, its parent, sshd and faultline-agent).
    #[arg(long = "protect", value_name = "NAME")]
    protect: Vec<String>,
    /// Directory disk fills may target (and everything below it); repeatable.
    /// Without it every disk_fill is refused.
    #[arg(long = "allow-fill", value_name = "DIR")]
    allow_fill: Vec<std::path::PathBuf>,
    /// Highest used percentage a disk fill may leave behind.
    #[arg(long, default_value_t = 95.0)]
    max_fill_used_percent: f64,
    /// Latency backend: auto (netem where the kernel has it, else nfqueue),
    /// netem, nfqueue, or none (refuse every latency fault). Anything but
    /// auto or netem also keeps corrupt, duplicate and reorder off netem.
    #[arg(long, default_value = "auto", value_parser = ["auto", "netem", "nfqueue", "none"])]
    latency_backend: String,
    /// Where the cgroup filesystems are mounted, for cpu_stress and
    /// memory_stress. Under `ip netns exec` (which remounts /sys) the host's
    /// are reachable as /proc/1/root/sys/fs/cgroup.
    #[arg(long, value_name = "DIR", default_value = faultline_agent::cgroup::ROOT)]
    cgroup_root: std::path::PathBuf,
    /// Refuse every cpu_stress and memory_stress fault.
    #[arg(long)]
    no_stress: bool,
    /// Directory for the undo journal (locked: one per agent). Default:
    /// /var/lib/faultline-agent/<id> as root, else ~/.local/state/faultline-agent/<id>.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Do not remove faultline objects at start that no journal record names
    /// (use when several agents share one network namespace).
    #[arg(long)]
    no_sweep: bool,
    /// Agent policy file (YAML): allowed_kinds, protected_processes,
    /// allowed_fill_paths, max_fill_used_percent, max_fault_duration.
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g.
    /// 127.0.0.1:9701. Plain HTTP without authentication: only a loopback
    /// address unless --metrics-public.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Allow --metrics-listen on a non-loopback address. Anyone who reaches
    /// it sees whether the agent is connected and the faults it injects by kind.
    #[arg(long, requires = "metrics_listen")]
    metrics_public: bool,
    /// TLS files for an https:// coordinator: DIR/ca.pem and
    /// DIR/agent-<id>.pem/.key, as `faultline certs init` writes them.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Refuse every block fault, even where nft is installed.
    #[arg(long)]
    no_block: bool,
    /// Container runtime that resolves targets.containers: auto (containerd
    /// at its Kubernetes socket paths with namespace k8s.io, else Docker),
    /// docker, containerd, crio, or none.
    #[arg(long, default_value = "auto", value_parser = ["auto", "docker", "containerd", "crio", "none"])]
    runtime: String,
    /// The runtime's socket, with --runtime docker, containerd or crio.
    /// Default: /var/run/docker.sock for docker,
    /// /run/containerd/containerd.sock for containerd, /var/run/crio/crio.sock for crio.
    #[arg(long, value_name = "PATH")]
    runtime_socket: Option<String>,
    /// containerd namespace, with --runtime containerd: k8s.io (Kubernetes,
    /// the default) or moby (Docker's own containerd).
    #[arg(long, value_name = "NS")]
    runtime_namespace: Option<String>,
    /// Longest lease accepted from the coordinator.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    max_lease: Duration,
}

fn parse_labels(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in raw {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected KEY=VALUE, e.g. --label zone=a");
        };
        if k.is_empty() {
            bail!("--label {l:?}: the key is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    if let Some(m) = args.metrics_listen {
        if !faultline_proto::metrics::exposure_allowed(&m, args.metrics_public) {
            bail!(
                "refusing to serve metrics on {m}: /metrics has no TLS and no authentication. Use a loopback address (e.g. 127.0.0.1:{}), or pass --metrics-public to expose it",
                m.port()
            );
        }
    }
    let mut config = faultline_agent::AgentConfig::new(args.coordinator);
    // The id names the state directory and the TLS files: check it first.
    match &args.id {
        Some(id) => {
            faultline_proto::ids::validate_agent_id(id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
            config.agent_id = id.clone();
        }
        None => faultline_proto::ids::validate_agent_id(&config.agent_id)
            .map_err(|e| anyhow::anyhow!("this host's name is not a usable agent id ({e}); pass --id ID"))?,
    }
    config.state_dir = args
        .state_dir
        .unwrap_or_else(|| faultline_agent::default_state_dir(&config.agent_id));
    config.sweep_orphans = !args.no_sweep;
    if let Some(dir) = &args.tls_dir {
        let read =
            |f: String| std::fs::read(dir.join(&f)).with_context(|| format!("reading {}", dir.join(&f).display()));
        let ca = read("ca.pem".into())?;
        let cert = read(format!("agent-{}.pem", config.agent_id))?;
        let key = read(format!("agent-{}.key", config.agent_id))?;
        config.tls = Some(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        );
        if !config.coordinator.starts_with("https://") {
            bail!(
                "--tls-dir needs an https:// coordinator URL (got {})",
                config.coordinator
            );
        }
    }
    if let Some(p) = &args.policy {
        config.policy = faultline_agent::policy::AgentPolicy::load(p)?;
    }
    config.labels = parse_labels(&args.labels)?;
    faultline_proto::hello::check_labels(config.labels.iter()).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    config.protected_names.extend(args.protect);
    config.max_lease = args.max_lease;
    config.fill.allowed = args.allow_fill;
    config.fill.max_used_percent = args.max_fill_used_percent;
    config.latency_backend = match args.latency_backend.as_str() {
        "netem" => Allowed::Netem,
        "nfqueue" => Allowed::Nfqueue,
        "none" => Allowed::None,
        _ => Allowed::Auto,
    };
    config.block = !args.no_block;
    config.runtime = match (args.runtime.as_str(), args.runtime_socket, args.runtime_namespace) {
        ("auto" | "none", Some(_), _) | ("auto" | "none", _, Some(_)) => {
            bail!("--runtime-socket and --runtime-namespace need --runtime docker, containerd or crio")
        }
        ("docker" | "crio", _, Some(_)) => bail!("--runtime-namespace is for --runtime containerd"),
        ("crio", socket, None) => faultline_agent::runtime::Choice::Crio {
            socket: socket.unwrap_or_else(|| faultline_agent::runtime::crio::DEFAULT_SOCKET.into()),
        },
        ("none", ..) => faultline_agent::runtime::Choice::None,
        ("docker", socket, None) => faultline_agent::runtime::Choice::Docker {
            socket: socket.unwrap_or_else(|| faultline_agent::runtime::docker::DEFAULT_SOCKET.into()),
        },
        ("containerd", socket, ns) => faultline_agent::runtime::Choice::Containerd {
            socket: socket.unwrap_or_else(|| faultline_agent::runtime::containerd::KUBERNETES_SOCKETS[0].into()),
            namespace: ns.unwrap_or_else(|| faultline_agent::runtime::containerd::KUBERNETES_NAMESPACE.into()),
        },
        _ => faultline_agent::runtime::Choice::Auto,
    };
    config.cgroup_root = args.cgroup_root;
    if args.no_stress {
        config.stress = None;
    }

    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        s.cancel();
        anyhow::Ok(())
    });
    if let Some(addr) = args.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        let stop = shutdown.clone();
        tokio::spawn(faultline_proto::metrics::serve(
            l,
            config.metrics.clone(),
            |_| {},
            async move { stop.cancelled().await },
        ));
    }
    faultline_agent::run(config, shutdown).await?;
    Ok(())
}
