//! `faultline-tests`: end-to-end tests of faultline. A [`Harness`] runs a
//! real coordinator and real agents in this process, talking gRPC over
//! `127.0.0.1`; helper processes are started by the tests themselves, and
//! only those are ever killed.
//!
//! Layout:
//! - [`Harness`]: coordinator + agents on loopback, submit runs, read reports.
//! - [`ChildGuard`]: a child process killed and reaped on drop.
//! - [`sleeper`], [`http_server`], [`serve_http_in_process`]: things to kill and to probe.
//! - [`lab`]: hosts in network namespaces running the real agent binary, for
//!   network faults and crash tests.
//! - [`dns`]: a tiny DNS server and client for the `dns` fault's lab tests.
//! - [`packets`]: numbered UDP datagrams between lab hosts, for the packet faults.
//! - [`tools`]: the commands root tests need, checked before they start.
//! - [`qemu`]: a Debian kernel with `sch_netem` under qemu, with an initramfs of this host's binaries.
//! - [`soak`]: many consecutive runs, sampling memory, descriptors and the database.
//! - [`browser`]: headless Chromium over the DevTools protocol (console tests).
//! - [`console_http`]: the console over raw HTTP: a lab with tokens, login, CSRF, headers.
//! - [`containerd`]: containers made in the Docker Engine's containerd with `ctr`, in a namespace of the test's own.
//! - [`crashpoints`]: random SIGKILLs of agents and the coordinator around inject and restore.

pub mod browser;
pub mod console_http;
pub mod containerd;
pub mod crashpoints;
pub mod dns;
pub mod docker;
pub mod lab;
pub mod packets;
pub mod qemu;
pub mod soak;
pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faultline_coordinator::report::Report;
use faultline_coordinator::Coordinator;
use faultline_proto::v1;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A coordinator and agents running in this process on loopback.
pub struct Harness {
    pub coordinator: Coordinator,
    pub url: String,
    pub addr: std::net::SocketAddr,
    server_stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    agents: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// The end of a run as a client sees it.
pub struct RunResult {
    pub exit_code: i32,
    pub report: Report,
    /// Every event received, in order.
    pub events: Vec<v1::RunEvent>,
}

impl Harness {
    /// Starts a coordinator on `127.0.0.1:0`.
    pub async fn start() -> Harness {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts a coordinator on a given address (used to restart on the same port).
    pub async fn start_on(addr: &str) -> Harness {
        Self::start_with(addr, Coordinator::new()).await
    }

    /// Starts `coordinator` on `addr` (https:// in the URL when it has TLS).
    pub async fn start_with(addr: &str, coordinator: Coordinator) -> Harness {
        let listener = TcpListener::bind(addr).await.expect("bind coordinator");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if coordinator.security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server_stop = CancellationToken::new();
        let (c, s) = (coordinator.clone(), server_stop.clone());
        let server = tokio::spawn(async move {
            c.serve(listener, s).await.expect("coordinator serve");
        });
        Harness {
            coordinator,
            url: format!("{scheme}://{addr}"),
            addr,
            server_stop,
            server: Some(server),
            agents: Vec::new(),
        }
    }

    /// Starts an in-process agent with `id` and `labels` and waits until it
    /// is registered.
    pub async fn add_agent(&mut self, id: &str, labels: &[(&str, &str)]) {
        self.add_agent_with(id, labels, |_| {}).await
    }

    /// Like [`Harness::add_agent`], with a chance to adjust the agent's config.
    pub async fn add_agent_with(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        configure: impl FnOnce(&mut faultline_agent::AgentConfig),
    ) {
        let mut cfg = faultline_agent::AgentConfig::new(self.url.clone());
        cfg.agent_id = id.to_string();
        cfg.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        cfg.backoff_initial = Duration::from_millis(50);
        cfg.backoff_max = Duration::from_millis(500);
        // Its own journal, kept for as long as the agent task runs; no sweep:
        // in-process agents share the machine's namespace with other tests.
        let state = tempfile::tempdir().expect("agent state dir");
        cfg.state_dir = state.path().to_path_buf();
        cfg.sweep_orphans = false;
        configure(&mut cfg);
        let stop = CancellationToken::new();
        let agent_stop = stop.clone();
        let task = tokio::spawn(async move {
            let _state = state;
            if let Err(e) = faultline_agent::run(cfg, agent_stop).await {
                panic!("agent failed to start: {e}");
            }
        });
        self.agents.push((stop, task));
        let want = self.agents.len();
        assert!(
            self.coordinator.registry.wait_for(want, Duration::from_secs(10)).await,
            "agent {id} did not register"
        );
    }

    /// Submits an experiment and follows it to the end.
    pub async fn run(&self, yaml: &str, vars: &[(&str, &str)]) -> Result<RunResult, tonic::Status> {
        self.run_observed(yaml, vars, None).await
    }

    /// Like [`Harness::run`], also copying every event to `watch` as it arrives.
    pub async fn run_observed(
        &self,
        yaml: &str,
        vars: &[(&str, &str)],
        watch: Option<tokio::sync::mpsc::UnboundedSender<v1::RunEvent>>,
    ) -> Result<RunResult, tonic::Status> {
        let mut client = self.control().await;
        let mut stream = client
            .submit_run(v1::SubmitRunRequest {
                source: Some(source(yaml, vars)),
            })
            .await?
            .into_inner();
        let mut events = Vec::new();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("test: no run event for 60s"))??
        {
            if let Some(w) = &watch {
                let _ = w.send(ev.clone());
            }
            if let Some(v1::run_event::Event::Finished(f)) = &ev.event {
                let report: Report = serde_json::from_str(&f.report_json).expect("report json");
                assert_eq!(report.exit_code, f.exit_code);
                let exit_code = f.exit_code;
                events.push(ev);
                return Ok(RunResult {
                    exit_code,
                    report,
                    events,
                });
            }
            events.push(ev);
        }
        Err(tonic::Status::internal("test: stream ended without RunFinished"))
    }

    /// A Control client.
    pub async fn control(&self) -> v1::control_client::ControlClient<tonic::transport::Channel> {
        let ch = tonic::transport::Endpoint::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect control");
        v1::control_client::ControlClient::new(ch)
    }

    /// Stops the coordinator but keeps the agents running.
    pub async fn stop_coordinator(&mut self) {
        self.server_stop.cancel();
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(40), s)
                .await
                .expect("coordinator stops within 40s")
                .expect("coordinator task");
        }
    }

    /// Hands the agents over to another harness (used after a restart).
    pub fn take_agents(&mut self) -> Vec<(CancellationToken, tokio::task::JoinHandle<()>)> {
        std::mem::take(&mut self.agents)
    }

    /// Stops agents (restoring their faults), then the coordinator.
    pub async fn stop(mut self) {
        for (stop, task) in self.agents.drain(..) {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        self.stop_coordinator().await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // On panic: stop everything; agents restore on cancellation.
        for (stop, _) in &self.agents {
            stop.cancel();
        }
        self.server_stop.cancel();
    }
}

/// An experiment source for Control calls.
pub fn source(yaml: &str, vars: &[(&str, &str)]) -> v1::ExperimentSource {
    v1::ExperimentSource {
        name: "test.yaml".into(),
        yaml: yaml.into(),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

/// A child process this test started; killed and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
    /// A regex that matches this child's command line and nothing else.
    pub cmdline_regex: String,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the process has exited (it is reaped here).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique number for marking processes of this test.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// A `sleep` process with a command line unique to this call.
pub fn sleeper() -> ChildGuard {
    // GNU sleep adds its arguments: "300 0.<n>" sleeps 300.<n> seconds and
    // makes the command line unique.
    let frac = format!("0.{:09}", unique());
    let child = Command::new("sleep")
        .args(["300", &frac])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    ChildGuard {
        child,
        cmdline_regex: format!("^sleep 300 {}$", frac.replace('.', "\\.")),
    }
}

/// The `faultline-test-http` helper: a real HTTP server process on a free
/// loopback port. Returns the guard and the port.
pub fn http_server(bin: &str) -> (ChildGuard, u16) {
    // The tag makes this child's command line unique among parallel tests.
    let tag = unique().to_string();
    let mut child = Command::new(bin)
        .args(["--tag", &tag])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test http server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("read port");
    let port: u16 = line.trim().parse().expect("port number");
    (
        ChildGuard {
            child,
            cmdline_regex: format!("faultline-test-http --tag {tag}$"),
        },
        port,
    )
}

/// Serves `200 ok` on a loopback port inside this process until the token
/// fires; returns the port.
pub async fn serve_http_in_process(stop: CancellationToken) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                    .await;
            });
        }
    });
    port
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Labels as a map, for assertions.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
