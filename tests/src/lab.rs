//! The namespace lab: several hosts on one machine, each a network namespace
//! running the real `faultline-agent` binary and a small HTTP service, joined
//! by a bridge in a hub namespace where the coordinator listens.
//!
//! ```text
//!   hub netns <id>-hub: bridge br0 10.77.0.1/24, coordinator (this process)
//!      ├── veth ── netns <id>-a: eth0 10.77.0.11, agent (zone=a), http :8080
//!      ├── veth ── netns <id>-b: eth0 10.77.0.12, agent (zone=b), http :8080
//!      └── ...
//! ```
//!
//! Nothing is added to the machine's own network namespace: every link,
//! address, rule and route lives in namespaces the lab created, so the
//! subnet can be the same in every lab and labs run in parallel. The
//! coordinator runs in this test process on a tokio runtime whose threads
//! have entered the hub namespace (`setns` is per thread), so its listener
//! and its probes live there too. [`Lab`]'s `Drop` stops the processes and
//! deletes the namespaces, also on panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::v1;
use tokio::sync::mpsc;

use crate::{ChildGuard, Harness, RunResult};

/// The lab's subnet; the hub (coordinator) is `.1`, hosts start at `.11`.
pub const SUBNET_PREFIX: &str = "10.77.0";
/// Port of every host's HTTP service.
pub const HTTP_PORT: u16 = 8080;

/// True when this process may build a lab. Without root it prints why and
/// returns false, unless `CI=true`, where skipping is a failure.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root for network namespaces, and CI=true forbids skipping"
    );
    eprintln!("skipping {test}: needs root for network namespaces");
    false
}

/// True when this process may build a lab: root (see [`root_or_skip`]) and
/// every command of [`crate::tools::LAB_TOOLS`] installed. Otherwise it
/// prints what is missing and how to install it and returns false, unless
/// `CI=true`, where that is a failure.
pub fn lab_or_skip(test: &str) -> bool {
    root_or_skip(test) && crate::tools::present_or_skip(test, crate::tools::LAB_TOOLS)
}

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// Short name, also the agent id and its `host` label.
    pub name: String,
    /// Value of the agent's `zone` label.
    pub zone: String,
    /// The host's network namespace.
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl LabHost {
    /// The host's HTTP service.
    pub fn http(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, HTTP_PORT)
    }
}

/// How to start one host.
pub struct HostSpec {
    pub name: String,
    pub zone: String,
    /// Extra flags for its agent, e.g. `--latency-backend none`.
    pub agent_args: Vec<String>,
}

impl HostSpec {
    pub fn new(name: &str, zone: &str) -> Self {
        Self {
            name: name.into(),
            zone: zone.into(),
            agent_args: Vec::new(),
        }
    }

    pub fn agent_arg(mut self, arg: &str) -> Self {
        self.agent_args.push(arg.into());
        self
    }
}

/// Where the lab's coordinator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorMode {
    /// In this test process (on hub-namespace threads): fast, and tests can
    /// read its registry directly.
    InProcess,
    /// A real `faultline serve` process in the hub namespace, on port
    /// [`PROCESS_COORDINATOR_PORT`], so a test can `kill -9` it.
    Process,
}

/// Port of the coordinator in [`CoordinatorMode::Process`].
pub const PROCESS_COORDINATOR_PORT: u16 = 7700;

/// A running lab. See the module docs.
pub struct Lab {
    /// Unique per lab: prefix of every namespace name.
    pub id: String,
    pub hub: String,
    pub hosts: Vec<LabHost>,
    pub coordinator: Option<Arc<Harness>>,
    /// The `faultline serve` process in [`CoordinatorMode::Process`].
    pub coordinator_process: Option<ChildGuard>,
    coordinator_url: String,
    /// How long building the lab took (namespaces, links, processes, agents registered).
    pub setup_time: Duration,
    runtime: Option<tokio::runtime::Runtime>,
    agents: BTreeMap<String, ChildGuard>,
    agent_args: BTreeMap<String, Vec<String>>,
    services: Vec<ChildGuard>,
    namespaces: Vec<String>,
    logs: tempfile::TempDir,
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ip: {e} (install iproute2)"))?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Output of `cmd` run inside `netns` (stdout and stderr).
pub fn in_netns(netns: &str, cmd: &[&str]) -> String {
    let mut args = vec!["netns", "exec", netns];
    args.extend_from_slice(cmd);
    match Command::new("ip").args(&args).stdin(Stdio::null()).output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("cannot run ip netns exec: {e}"),
    }
}

/// Moves the calling thread into network namespace `netns`.
pub fn enter_netns(netns: &str) -> std::io::Result<()> {
    let f = File::open(format!("/run/netns/{netns}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// A binary of this build, `target/<profile>/<name>`: the directory above
/// the test executable's (`target/<profile>/deps/`), where `cargo test
/// --workspace` puts every workspace binary. The environment variable
/// `env` overrides.
fn built_bin(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps/, binaries (the benchmarks) from
    // target/<profile>/ itself.
    let here = exe.parent().expect("exe dir");
    let bin = [here.join(name), here.parent().unwrap_or(here).join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join(name));
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --workspace --bins` (cargo test --workspace does), or set {env}",
        bin.display()
    );
    bin
}

/// The real `faultline` binary (the CLI and `faultline serve`).
pub fn faultline_bin() -> PathBuf {
    built_bin("faultline", "FAULTLINE_BIN")
}

/// The real `faultline-agent` binary.
pub fn agent_bin() -> PathBuf {
    built_bin("faultline-agent", "FAULTLINE_AGENT_BIN")
}

fn unique_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "fl{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Lab {
    /// A lab with one host per `(name, zone)`, default agents.
    pub fn new(hosts: &[(&str, &str)]) -> Lab {
        Self::build(hosts.iter().map(|(n, z)| HostSpec::new(n, z)).collect())
    }

    /// A lab with the given hosts. Panics (after cleaning up) if any step
    /// fails; call [`root_or_skip`] first.
    pub fn build(specs: Vec<HostSpec>) -> Lab {
        Self::build_with(specs, CoordinatorMode::InProcess)
    }

    /// A lab with the given hosts and coordinator.
    pub fn build_with(specs: Vec<HostSpec>, mode: CoordinatorMode) -> Lab {
        let started = Instant::now();
        let id = unique_id();
        let hub = format!("{id}-hub");
        let mut lab = Lab {
            id: id.clone(),
            hub: hub.clone(),
            hosts: Vec::new(),
            coordinator: None,
            coordinator_process: None,
            coordinator_url: String::new(),
            setup_time: Duration::ZERO,
            runtime: None,
            agents: BTreeMap::new(),
            agent_args: BTreeMap::new(),
            services: Vec::new(),
            namespaces: Vec::new(),
            logs: tempfile::tempdir().expect("log dir"),
        };
        if let Err(e) = lab.wire(&specs) {
            panic!("building lab {id}: {e}");
        }
        // The coordinator, on runtime threads inside the hub namespace.
        let hub_ns = hub.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name(format!("{id}-hub"))
            .on_thread_start(move || {
                if let Err(e) = enter_netns(&hub_ns) {
                    panic!("entering the hub namespace {hub_ns}: {e}");
                }
            })
            .build()
            .expect("hub runtime");
        match mode {
            CoordinatorMode::InProcess => {
                let listen = format!("{SUBNET_PREFIX}.1:0");
                let harness = runtime
                    .block_on(runtime.spawn(async move { Harness::start_on(&listen).await }))
                    .expect("start coordinator");
                lab.coordinator_url = harness.url.clone();
                lab.coordinator = Some(Arc::new(harness));
                lab.runtime = Some(runtime);
            }
            CoordinatorMode::Process => {
                lab.runtime = Some(runtime);
                lab.start_coordinator_process();
            }
        }
        for s in &specs {
            lab.agent_args.insert(s.name.clone(), s.agent_args.clone());
            lab.start_agent(&s.name);
        }
        lab.wait_agents(specs.len());
        lab.setup_time = started.elapsed();
        lab
    }

    fn wire(&mut self, specs: &[HostSpec]) -> anyhow::Result<()> {
        ip(&["netns", "add", &self.hub])?;
        self.namespaces.push(self.hub.clone());
        ip(&["-n", &self.hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &self.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &self.hub,
            "addr",
            "add",
            &format!("{SUBNET_PREFIX}.1/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &self.hub, "link", "set", "br0", "up"])?;
        for (i, s) in specs.iter().enumerate() {
            let netns = format!("{}-{}", self.id, s.name);
            let addr = Ipv4Addr::new(10, 77, 0, 11 + i as u8);
            ip(&["netns", "add", &netns])?;
            self.namespaces.push(netns.clone());
            let veth = format!("v{i}");
            ip(&[
                "-n", &self.hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            ip(&["-n", &self.hub, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&["-n", &netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                "default",
                "via",
                &format!("{SUBNET_PREFIX}.1"),
            ])?;
            let tag = format!("{}-{}", self.id, s.name);
            let listen = format!("{addr}:{HTTP_PORT}");
            let mut child = Command::new("ip")
                .args(["netns", "exec", &netns])
                .arg(built_bin("faultline-test-http", "FAULTLINE_TEST_HTTP_BIN"))
                .args(["--listen", &listen, "--tag", &tag])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| anyhow::anyhow!("starting the http service on {}: {e}", s.name))?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                use std::io::BufRead;
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            self.services.push(ChildGuard {
                child,
                cmdline_regex: format!("faultline-test-http --listen {listen} --tag {tag}$"),
            });
            if line.trim() != HTTP_PORT.to_string() {
                anyhow::bail!("http service on {} did not start (printed {line:?})", s.name);
            }
            self.hosts.push(LabHost {
                name: s.name.clone(),
                zone: s.zone.clone(),
                netns,
                ip: addr,
            });
        }
        Ok(())
    }

    /// The coordinator's URL as agents see it.
    pub fn coordinator_url(&self) -> String {
        self.coordinator_url.clone()
    }

    /// Starts `faultline serve` in the hub namespace and waits until it
    /// accepts connections.
    pub fn start_coordinator_process(&mut self) {
        let listen = format!("{SUBNET_PREFIX}.1:{PROCESS_COORDINATOR_PORT}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("coordinator.log"))
            .expect("coordinator log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hub])
            .arg(built_bin("faultline", "FAULTLINE_BIN"))
            .args(["serve", "--listen", &listen, "--insecure", "--db"])
            .arg(self.coordinator_db())
            .env("FAULTLINE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn faultline serve");
        self.coordinator_process = Some(ChildGuard {
            child,
            cmdline_regex: format!("faultline serve --listen {listen} --insecure"),
        });
        self.coordinator_url = format!("http://{listen}");
        let addr: SocketAddr = listen.parse().expect("addr");
        let hub = self.hub.clone();
        let up = std::thread::spawn(move || {
            enter_netns(&hub).expect("enter hub");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .join()
        .expect("wait thread");
        assert!(up, "faultline serve did not listen on {listen}");
    }

    /// The history database of the process coordinator.
    pub fn coordinator_db(&self) -> PathBuf {
        self.logs.path().join("coordinator.db")
    }

    /// SIGKILLs the `faultline serve` process (no chance to restore).
    pub fn kill_coordinator_process(&mut self) {
        if let Some(mut c) = self.coordinator_process.take() {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }

    /// Connected agents as the coordinator lists them (over gRPC, so it
    /// works in both modes).
    pub fn list_agents(&self) -> Vec<v1::AgentInfo> {
        let url = self.coordinator_url();
        self.block_on(async move {
            let Ok(ch) = tonic::transport::Endpoint::from_shared(url)
                .expect("url")
                .connect()
                .await
            else {
                return Vec::new();
            };
            let mut c = v1::control_client::ControlClient::new(ch);
            c.list_agents(v1::ListAgentsRequest::default())
                .await
                .map(|r| r.into_inner().agents)
                .unwrap_or_default()
        })
    }

    /// Runs `faultline run FILE --coordinator URL` in the hub namespace as
    /// a child process (the CLI, as a CI job would), with its report
    /// written to stdout.
    pub fn run_cli(&self, file: &std::path::Path) -> ChildGuard {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hub])
            .arg(built_bin("faultline", "FAULTLINE_BIN"))
            .arg("run")
            .arg(file)
            .args(["--coordinator", &self.coordinator_url(), "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn faultline run");
        ChildGuard {
            child,
            cmdline_regex: String::new(),
        }
    }

    /// The in-process coordinator.
    pub fn harness(&self) -> &Arc<Harness> {
        self.coordinator.as_ref().expect("coordinator")
    }

    pub fn host(&self, name: &str) -> &LabHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no lab host {name}"))
    }

    /// The agent's state directory (its undo journal).
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("state-{name}"))
    }

    /// Starts `faultline demo-service --listen <host ip>:PORT ARGS...` in
    /// host `name`'s namespace (e.g. a service with `--upstream`), waits
    /// until it accepts connections, and returns its address. The lab stops
    /// it on drop, with the other services.
    pub fn start_demo_service(&mut self, name: &str, port: u16, args: &[&str]) -> SocketAddrV4 {
        let host = self.host(name).clone();
        let listen = SocketAddrV4::new(host.ip, port);
        let child = Command::new("ip")
            .args(["netns", "exec", &host.netns])
            .arg(built_bin("faultline", "FAULTLINE_BIN"))
            .args(["demo-service", "--listen", &listen.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faultline demo-service");
        self.services.push(ChildGuard {
            child,
            cmdline_regex: format!("faultline demo-service --listen {listen}( |$)"),
        });
        let hub = self.hub.clone();
        let up = std::thread::spawn(move || {
            enter_netns(&hub).expect("enter hub");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&SocketAddr::V4(listen), Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .join()
        .expect("wait thread");
        assert!(up, "demo-service on {name} did not listen on {listen}");
        listen
    }

    /// The agent's log file.
    pub fn agent_log(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("agent-{name}.log"))
    }

    /// Starts (or restarts) the agent of host `name` in its namespace.
    pub fn start_agent(&mut self, name: &str) {
        let h = self.host(name).clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log(name))
            .expect("agent log");
        let url = self.coordinator_url();
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(agent_bin())
            .args(["--coordinator", &url, "--id", &h.name])
            .arg("--state-dir")
            .arg(self.state_dir(name))
            .args([
                "--label",
                &format!("zone={}", h.zone),
                "--label",
                &format!("host={}", h.name),
            ])
            .args(self.agent_args.get(name).cloned().unwrap_or_default())
            .env("RUST_LOG", std::env::var("LAB_AGENT_LOG").unwrap_or("info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.agents.insert(
            name.to_string(),
            ChildGuard {
                child,
                cmdline_regex: format!("faultline-agent --coordinator {url} --id {}", h.name),
            },
        );
    }

    /// Pid of the agent process of `name`, if running.
    pub fn agent_pid(&self, name: &str) -> Option<u32> {
        self.agents.get(name).map(|a| a.pid())
    }

    /// Waits until the coordinator lists agent `name` with process `pid`
    /// (a restarted agent has registered); returns its entry.
    pub fn wait_registered(&self, name: &str, pid: u32, limit: Duration) -> Option<v1::AgentInfo> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(a) = self
                .list_agents()
                .into_iter()
                .find(|a| a.agent_id == name && a.pid == pid)
            {
                return Some(a);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends SIGKILL to the agent of `name` (no chance to restore).
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut a) = self.agents.remove(name) {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
    }

    /// Waits up to 20 s until the coordinator lists at least `n` agents;
    /// panics with every agent's log otherwise.
    pub fn wait_agents(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ok = false;
        while Instant::now() < deadline {
            if self.list_agents().len() >= n {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !ok {
            let logs: Vec<String> = self
                .hosts
                .iter()
                .map(|h| {
                    format!(
                        "--- agent {} ---\n{}",
                        h.name,
                        std::fs::read_to_string(self.agent_log(&h.name)).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "lab {}: {n} agents did not register within 20s\n{}",
                self.id,
                logs.join("\n")
            );
        }
    }

    /// Runs `fut` on the hub runtime (inside the hub namespace) and waits.
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.runtime.as_ref().expect("runtime");
        rt.block_on(rt.spawn(fut)).expect("lab task panicked")
    }

    /// Submits an experiment; its events arrive on the returned watch.
    pub fn submit(&self, yaml: &str) -> RunWatch {
        self.submit_with(yaml, &[])
    }

    /// Submits an experiment with `--var` values.
    pub fn submit_with(&self, yaml: &str, vars: &[(&str, &str)]) -> RunWatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = self.harness().clone();
        let yaml = yaml.to_string();
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let rt = self.runtime.as_ref().expect("runtime");
        let done = rt.spawn(async move {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            h.run_observed(&yaml, &vars, Some(tx)).await
        });
        RunWatch {
            run_id: None,
            events: rx,
            done: Some(done),
            handle: rt.handle().clone(),
        }
    }

    /// TCP connect times from host `from` to `to`: one sample every `gap`,
    /// `n` samples; `None` for a connect that failed or took over `timeout`.
    /// Runs on a thread inside `from`'s namespace.
    pub fn connect_samples(
        &self,
        from: &str,
        to: SocketAddrV4,
        n: usize,
        gap: Duration,
        timeout: Duration,
    ) -> Vec<Option<Duration>> {
        let netns = self.host(from).netns.clone();
        std::thread::spawn(move || {
            enter_netns(&netns).expect("enter host namespace");
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let r = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)
                        .ok()
                        .map(|_| t.elapsed());
                    std::thread::sleep(gap.saturating_sub(t.elapsed()));
                    r
                })
                .collect()
        })
        .join()
        .expect("sampling thread")
    }

    /// faultline objects left on any host: iptables chains, nftables
    /// tables, qdiscs, NFQUEUE queues. Empty when the lab is clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in &self.hosts {
            for tool in ["iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save"] {
                let s = in_netns(&h.netns, &[tool]);
                for l in s.lines().filter(|l| l.contains("faultline")) {
                    out.push(format!("{}: {tool}: {l}", h.name));
                }
            }
            let s = in_netns(&h.netns, &["nft", "list", "tables"]);
            for l in s.lines().filter(|l| l.contains("faultline")) {
                out.push(format!("{}: nft: {l}", h.name));
            }
            let s = ip(&["-n", &h.netns, "qdisc", "show"]).unwrap_or_default();
            for l in s.lines().filter(|l| l.contains("netem") || l.contains(" prio fa")) {
                out.push(format!("{}: qdisc: {l}", h.name));
            }
            let s = in_netns(&h.netns, &["cat", "/proc/net/netfilter/nfnetlink_queue"]);
            for l in s.lines().filter(|l| !l.trim().is_empty()) {
                out.push(format!("{}: nfqueue: {l}", h.name));
            }
        }
        out
    }

    /// Asserts that no faultline object is left on any host.
    pub fn assert_clean(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "lab {} is not clean:\n{}", self.id, left.join("\n"));
    }

    /// Stops every agent (SIGTERM: they restore what they hold) and waits.
    pub fn stop_agents(&mut self) {
        for (_, a) in self.agents.iter_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(a.pid() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (_, mut a) in std::mem::take(&mut self.agents) {
            a.wait_exit(Duration::from_secs(10));
        }
    }

    /// Tears the lab down and returns how long that took.
    pub fn teardown(mut self) -> Duration {
        let t = Instant::now();
        self.shutdown();
        t.elapsed()
    }

    fn shutdown(&mut self) {
        self.stop_agents();
        self.services.clear();
        self.coordinator_process.take();
        if let Some(h) = self.coordinator.take() {
            if let Some(rt) = self.runtime.as_ref() {
                if let Ok(mut h) = Arc::try_unwrap(h) {
                    let _ = rt.block_on(rt.spawn(async move {
                        h.stop_coordinator().await;
                    }));
                }
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for h in &self.hosts {
                let log = std::fs::read_to_string(self.agent_log(&h.name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!(
                    "--- lab {} agent {} (last lines) ---\n{}",
                    self.id,
                    h.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        self.shutdown();
    }
}

/// A run in progress.
pub struct RunWatch {
    run_id: Option<String>,
    events: mpsc::UnboundedReceiver<v1::RunEvent>,
    done: Option<tokio::task::JoinHandle<Result<RunResult, tonic::Status>>>,
    handle: tokio::runtime::Handle,
}

impl RunWatch {
    /// Waits until the run enters `phase`; false if it ended first or
    /// `limit` passed.
    pub fn wait_phase(&mut self, phase: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let events = &mut self.events;
        let run_id = &mut self.run_id;
        self.handle.block_on(async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, events.recv()).await {
                    Ok(Some(ev)) => {
                        if run_id.is_none() && !ev.run_id.is_empty() {
                            *run_id = Some(ev.run_id.clone());
                        }
                        if let Some(v1::run_event::Event::Phase(p)) = &ev.event {
                            if p.phase == phase {
                                return true;
                            }
                        }
                    }
                    _ => return false,
                }
            }
        })
    }

    /// The run's id, once an event has been seen (after [`RunWatch::wait_phase`]).
    pub fn run_id(&self) -> Option<String> {
        self.run_id.clone()
    }

    /// Waits for the run's end.
    pub fn finish(mut self) -> RunResult {
        let done = self.done.take().expect("run");
        self.handle
            .block_on(done)
            .expect("run task")
            .expect("run ended with a gRPC error")
    }
}

/// Median of the successful samples.
pub fn median(samples: &[Option<Duration>]) -> Option<Duration> {
    let mut ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    if ok.is_empty() {
        return None;
    }
    ok.sort();
    Some(ok[(ok.len() - 1) / 2])
}

/// The nearest-rank percentile `p` (0..=100) of the successful samples.
pub fn percentile(samples: &[Option<Duration>], p: f64) -> Option<Duration> {
    let mut ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    if ok.is_empty() {
        return None;
    }
    ok.sort();
    let rank = ((p / 100.0) * ok.len() as f64).ceil().max(1.0) as usize;
    Some(ok[rank.min(ok.len()) - 1])
}

/// Share of samples that succeeded.
pub fn success_rate(samples: &[Option<Duration>]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().filter(|s| s.is_some()).count() as f64 / samples.len() as f64
}

/// A small tmpfs mounted on a temporary directory, for disk fills that must
/// never touch a real filesystem; unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size_mib` MiB. Needs root.
    pub fn mount(size_mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tmpfs mount point");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size_mib}m,mode=0700").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The host's cgroup filesystems bound (recursively) on a temporary
/// directory, for lab agents: `ip netns exec` mounts a sysfs of the
/// namespace's own, without /sys/fs/cgroup, but keeps other mounts. Pass
/// [`CgroupBind::path`] as the agents' `--cgroup-root`. Unmounted on drop.
pub struct CgroupBind {
    dir: tempfile::TempDir,
}

impl CgroupBind {
    /// Binds /sys/fs/cgroup. Needs root.
    pub fn mount() -> CgroupBind {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::tempdir().expect("tempdir");
        mount(
            Some(faultline_agent::cgroup::ROOT),
            dir.path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("bind /sys/fs/cgroup");
        CgroupBind { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for CgroupBind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}
