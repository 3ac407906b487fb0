//! `faultline-bench`: benchmarks that print figures (see BENCHMARKS.md).
//!
//! - `fanout --agents 100,1000,10000`: a real `faultline serve` process and
//!   N *recording agents* — real `AgentLink` gRPC streams over loopback whose
//!   backend only records and acknowledges, touching no kernel — measuring
//!   submit → every Inject acknowledged, abort → every Restore acknowledged,
//!   coordinator RSS per agent and idle CPU.
//! - `footprint --seconds 60`: the real agent binary connected and idle: RSS,
//!   CPU, binary size.
//! - `restore --faults 100`: lease expiry → restored, and agent start →
//!   journal fully restored, with N journaled faults (real agent library,
//!   disk fills on a tmpfs; needs root).
//! - `stress --seconds 5`: cpu_stress and memory_stress accuracy and
//!   restore → clean time (real agent library and cgroups; needs root).
//! - `packets [--datagrams 5000]`: requested vs achieved for corrupt,
//!   duplicate, reorder and bandwidth in the namespace lab (needs root).
//! - `judge [--aa-reps 10000] [--power-reps 1000]`: the canary judge's A/A
//!   false-positive rate, power table and time for 10,000 samples per group
//!   (pure computation, seeded).
//!
//! - `crash-points --iterations 200 [--seed N]`: runs with latency, block
//!   and disk fill on 3 lab hosts, SIGKILLing a random agent or the
//!   coordinator at a random moment, restarting it, and proving every host
//!   clean (needs root; see `faultline_tests::crashpoints`).
//!
//! - `soak --runs 1000 --every 100`: consecutive runs against one
//!   coordinator process and 3 agents; RSS, open fds and the database size
//!   sampled, bounds checked, then the database pruned (needs root; see
//!   `faultline_tests::soak`).
//!
//! Build with `cargo build --release --bins` first; the benchmarks use the
//! release binaries next to this one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "bench_parts/judge.rs"]
mod judge;
#[path = "bench_parts/packets.rs"]
mod packets;
#[path = "bench_parts/stress.rs"]
mod stress;

use faultline_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("dir").join(name)
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ut + st
}

/// CPU use of `pid` over `d`, in percent of one core.
fn cpu_percent(pid: u32, d: Duration) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let a = cpu_ticks(pid);
    std::thread::sleep(d);
    let b = cpu_ticks(pid);
    (b - a) as f64 / hz / d.as_secs_f64() * 100.0
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // SIGTERM first (a profiler wrapping it writes its data on exit),
        // then SIGKILL after 30 s.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_coordinator(port: u16) -> Killed {
    // FAULTLINE_BENCH_WRAP runs the coordinator under a profiler, e.g.
    // "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out".
    let wrap: Vec<String> = std::env::var("FAULTLINE_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(sibling("faultline"));
            c
        }
        None => Command::new(sibling("faultline")),
    };
    let child = cmd
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--no-store"])
        .env("FAULTLINE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn faultline serve (build with cargo build --release --bins)");
    for _ in 0..3000 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Killed(child)
}

/// What the recording agents saw, across all of them.
#[derive(Default)]
struct Recorder {
    connected: AtomicUsize,
    injects: AtomicUsize,
    restores: AtomicUsize,
}

/// A recording agent: a real AgentLink stream; every Inject and Restore is
/// recorded and acknowledged at once, nothing is touched.
async fn recording_agent(url: String, id: String, rec: Arc<Recorder>) {
    let Ok(ch) = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await else {
        return;
    };
    let mut client = v1::agent_link_client::AgentLinkClient::new(ch);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(64);
    let hello = v1::Hello {
        agent_id: id,
        hostname: "bench".into(),
        labels: HashMap::from([("bench".to_string(), "1".to_string())]),
        capabilities: vec!["kill".into()],
        version: "bench".into(),
        ..Default::default()
    };
    let _ = tx
        .send(v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Hello(hello)),
        })
        .await;
    let Ok(resp) = client.connect(ReceiverStream::new(rx)).await else {
        return;
    };
    let mut inbound = resp.into_inner();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    let mut active = 0u32;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let _ = tx.send(v1::AgentMessage { msg: Some(v1::agent_message::Msg::Heartbeat(v1::Heartbeat { active_faults: active })) }).await;
            }
            m = inbound.message() => {
                let Ok(Some(m)) = m else { return };
                let reply = match m.msg {
                    Some(v1::coordinator_message::Msg::Welcome(_)) => {
                        rec.connected.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Some(v1::coordinator_message::Msg::Inject(i)) => {
                        rec.injects.fetch_add(1, Ordering::Relaxed);
                        active += 1;
                        Some((i.fault_id, i.run_id, v1::FaultState::Injected))
                    }
                    Some(v1::coordinator_message::Msg::Restore(r)) => {
                        rec.restores.fetch_add(1, Ordering::Relaxed);
                        active = active.saturating_sub(1);
                        Some((r.fault_id, r.run_id, v1::FaultState::Restored))
                    }
                    _ => None,
                };
                if let Some((fault_id, run_id, state)) = reply {
                    let st = v1::FaultStatus {
                        fault_id,
                        run_id,
                        state: state as i32,
                        detail: "recorded".into(),
                        backend: "recording".into(),
                        at_unix_ms: faultline_proto::now_unix_ms(),
                        observation: None,
                        containers: Vec::new(),
                        matching_units: 0,
                        selected_units: 0,
                        pods: Vec::new(),
                    };
                    let _ = tx.send(v1::AgentMessage { msg: Some(v1::agent_message::Msg::FaultStatus(st)) }).await;
                }
            }
        }
    }
}

async fn fanout(n: usize) {
    let port = free_port();
    let coord = start_coordinator(port);
    let pid = coord.0.id();
    let url = format!("http://127.0.0.1:{port}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(pid);
    let rec = Arc::new(Recorder::default());
    let t = Instant::now();
    for i in 0..n {
        tokio::spawn(recording_agent(url.clone(), format!("sim-{i:05}"), rec.clone()));
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    while rec.connected.load(Ordering::Relaxed) < n && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = t.elapsed();
    let connected = rec.connected.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_n = rss_kib(pid);
    let idle_cpu = tokio::task::spawn_blocking(move || cpu_percent(pid, Duration::from_secs(10)))
        .await
        .unwrap();

    // A probe target for the hypothesis.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_port = probe.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let _ = probe.accept().await;
        }
    });
    let yaml = format!(
        "name: fanout\nhypothesis:\n  probes:\n    - name: p\n      interval: 100ms\n      tcp: {{ address: \"127.0.0.1:{probe_port}\" }}\nbaseline: 200ms\nduration: 60s\nrecovery: 1s\nlease: 60s\nfaults:\n  - name: all\n    targets: {{ labels: {{ bench: \"1\" }} }}\n    kill: {{ name: bench-nothing }}\n"
    );
    let mut c = v1::control_client::ControlClient::new(
        tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
    .max_decoding_message_size(64 << 20);
    let mut stream = c
        .submit_run(v1::SubmitRunRequest {
            source: Some(v1::ExperimentSource {
                name: "fanout.yaml".into(),
                yaml,
                vars: Default::default(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut inject_at, mut observe_at, mut abort_at, mut restored_at) = (None, None, None, None);
    let mut outcome = String::new();
    while let Ok(Some(ev)) = stream.message().await {
        let run_id = ev.run_id.clone();
        match ev.event {
            Some(v1::run_event::Event::Phase(p)) => match p.phase.as_str() {
                "inject" => inject_at = Some(Instant::now()),
                "observe" => {
                    observe_at = Some(Instant::now());
                    abort_at = Some(Instant::now());
                    let _ = c
                        .abort(v1::AbortRequest {
                            run_id: run_id.clone(),
                            reason: "bench".into(),
                        })
                        .await;
                }
                "verdict" if restored_at.is_none() => restored_at = Some(Instant::now()),
                _ => {}
            },
            Some(v1::run_event::Event::Finished(f)) => {
                outcome = f.outcome;
                break;
            }
            _ => {}
        }
    }
    let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a).as_secs_f64() * 1000.0),
        _ => "n/a".into(),
    };
    println!(
        "fanout N={n}: connected {connected} in {:.2}s; inject->all acked {} ms; abort->all restores acked {} ms; injects recorded {}, restores recorded {}; outcome {outcome}; coordinator RSS {} KiB idle with 0 agents, {} KiB with {n} ({:.1} KiB/agent); idle CPU with {n} agents heartbeating {idle_cpu:.2}% of one core",
        connect_time.as_secs_f64(),
        ms(inject_at, observe_at),
        ms(abort_at, restored_at),
        rec.injects.load(Ordering::Relaxed),
        rec.restores.load(Ordering::Relaxed),
        rss0,
        rss_n,
        (rss_n.saturating_sub(rss0)) as f64 / n as f64,
    );
    drop(coord);
}

fn footprint(seconds: u64) {
    let port = free_port();
    let _coord = start_coordinator(port);
    let state = tempfile::tempdir().unwrap();
    let agent = Killed(
        Command::new(sibling("faultline-agent"))
            .args([
                "--coordinator",
                &format!("http://127.0.0.1:{port}"),
                "--id",
                "footprint",
                "--no-sweep",
            ])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faultline-agent"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.0.id();
    let cpu = cpu_percent(pid, Duration::from_secs(seconds));
    let rss = rss_kib(pid);
    let size = std::fs::metadata(sibling("faultline-agent"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "footprint: faultline-agent connected and idle for {seconds}s: RSS {:.1} MiB, CPU {cpu:.3}% of one core, release binary {:.1} MiB",
        rss as f64 / 1024.0,
        size as f64 / (1024.0 * 1024.0)
    );
}

/// Lease expiry → restored, and agent start → journal restored, with `n`
/// disk fills on a tmpfs this benchmark mounts (root).
async fn restore_paths(n: usize) {
    use faultline_agent::journal::{self, Journal};
    use faultline_agent::table::{Command as TableCommand, FaultTable, TableConfig};
    let fs = faultline_tests::lab::Tmpfs::mount(64);
    let dir = fs.path().to_path_buf();
    let state = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(state.path()).unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut setup =
        faultline_agent::faults::Setup::basic(Arc::new(faultline_agent::process::SystemProcessTable::new()));
    setup.fill.allowed = vec![dir.clone()];
    let mut cfg = TableConfig::new(faultline_agent::faults::Kinds::new(&setup));
    cfg.journal = Some(journal.clone());
    let (table, _task) = FaultTable::spawn(cfg, tx);
    let lease = Duration::from_millis(1500);
    let spec = || v1::FaultSpec {
        kind: Some(v1::fault_spec::Kind::DiskFill(v1::DiskFillSpec {
            path: dir.display().to_string(),
            size_bytes: 64 << 10,
            ..Default::default()
        })),
    };
    let t0 = Instant::now();
    for i in 0..n {
        table
            .send(TableCommand::Inject {
                fault_id: format!("bench-{i}"),
                run_id: "bench".into(),
                spec: spec(),
                lease,
                dry_run: false,
                container: None,
            })
            .await;
    }
    let mut injected = 0;
    while injected < n {
        if rx.recv().await.map(|s| s.state() == v1::FaultState::Injected) == Some(true) {
            injected += 1;
        }
    }
    let inject_all = t0.elapsed();
    // The last lease runs out `lease` after its injection.
    let last_deadline = Instant::now() + lease;
    let mut expired = 0;
    while expired < n {
        if rx.recv().await.map(|s| s.state() == v1::FaultState::Expired) == Some(true) {
            expired += 1;
        }
    }
    let after_deadline = Instant::now().saturating_duration_since(last_deadline);
    println!(
        "restore: {n} disk fills injected (with undo records) in {:.1} ms; all {n} restored by lease expiry {:.1} ms after the last lease ran out (lease {} ms)",
        inject_all.as_secs_f64() * 1000.0,
        after_deadline.as_secs_f64() * 1000.0,
        lease.as_millis()
    );
    drop(table);

    // A crashed agent's journal: n records and their files, then recovery.
    for i in 0..n {
        let path = dir.join(format!(".faultline-fill-crash-{i}"));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        journal
            .write(&journal::Record {
                fault_id: format!("crash-{i}"),
                run_id: "bench".into(),
                kind: "disk_fill".into(),
                created_unix_ms: 0,
                objects: vec![journal::Object::File { path }],
            })
            .unwrap();
    }
    drop(journal);
    let t = Instant::now();
    let j = Journal::open(state.path()).unwrap();
    let (lines, restored) = journal::recover(&j, &journal::Cleaner::default(), std::slice::from_ref(&dir), true);
    let took = t.elapsed();
    let left = std::fs::read_dir(&dir).unwrap().count();
    println!(
        "restore: agent start with {n} journaled faults: journal restored in {:.1} ms ({} restored, {} lines, {left} files left)",
        took.as_secs_f64() * 1000.0,
        restored.len(),
        lines.len()
    );
}

/// Per-packet round trips of a UDP flow from host `from` to an echo on host
/// `to` in a lab, at `rate` packets/s for `secs`: `Some(rtt)` per packet,
/// `None` for the lost ones.
fn udp_flow(lab: &faultline_tests::lab::Lab, from: &str, to: &str, rate: u32, secs: f64) -> Vec<Option<Duration>> {
    use std::net::UdpSocket;
    let to_host = lab.host(to).clone();
    let from_ns = lab.host(from).netns.clone();
    let echo_addr = std::net::SocketAddrV4::new(to_host.ip, 9999);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let echo = std::thread::spawn(move || {
        faultline_tests::lab::enter_netns(&to_host.netns).unwrap();
        let sock = UdpSocket::bind(echo_addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // Packets held in the delay queue still count against the sending
        // socket's buffer: at 10,000 packets/s x 100 ms, 1,000 replies are
        // in flight, more than the default 208 KiB holds.
        let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBufForce, &(32 << 20));
        let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(32 << 20));
        let mut buf = [0u8; 64];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], peer);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let n = (rate as f64 * secs) as usize;
    let result = std::thread::spawn(move || {
        faultline_tests::lab::enter_netns(&from_ns).unwrap();
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.connect(echo_addr).unwrap();
        let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(32 << 20));
        let recv = sock.try_clone().unwrap();
        recv.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let start = Instant::now();
        let rx = std::thread::spawn(move || {
            let mut got: Vec<Option<Duration>> = vec![None; n];
            let mut buf = [0u8; 64];
            let mut idle = 0;
            while idle < 10 {
                match recv.recv(&mut buf) {
                    Ok(16) => {
                        idle = 0;
                        let seq = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
                        let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                        let now = start.elapsed().as_nanos() as u64;
                        if seq < n {
                            got[seq] = Some(Duration::from_nanos(now.saturating_sub(sent)));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => idle += 1,
                }
            }
            got
        });
        let gap = Duration::from_secs_f64(1.0 / rate as f64);
        for seq in 0..n {
            let due = gap * seq as u32;
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
            let mut pkt = [0u8; 16];
            pkt[..8].copy_from_slice(&(seq as u64).to_le_bytes());
            pkt[8..].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_le_bytes());
            let _ = sock.send(&pkt);
        }
        rx.join().unwrap()
    })
    .join()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    result
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// NFQUEUE latency precision between two lab hosts (root).
fn precision(rates: &[u32], delays_ms: &[u64], secs: f64) {
    use faultline_tests::lab::Lab;
    let lab = Lab::new(&[("a", "a"), ("b", "b")]);
    for &delay in delays_ms {
        for &rate in rates {
            let base = udp_flow(&lab, "a", "b", rate.min(1000), 1.0);
            let mut b: Vec<f64> = base.iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
            b.sort_by(|x, y| x.partial_cmp(y).unwrap());
            let base_p50 = pct(&b, 50.0);
            let mut run = lab.submit(&format!(
                "name: precision\nhypothesis:\n  probes:\n    - name: p\n      interval: 500ms\n      tcp: {{ address: \"10.77.0.12:8080\" }}\nbaseline: 500ms\nduration: {}s\nrecovery: 1s\nfaults:\n  - targets: {{ labels: {{ host: b }} }}\n    latency: {{ delay: {delay}ms, protocol: udp, to: {{ zones: [a] }}, backend: nfqueue }}\n",
                (secs as u64) + 6
            ));
            assert!(run.wait_phase("observe", Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(300));
            let agent_pid = lab.agent_pid("b").unwrap_or(0);
            let cpu_start = cpu_ticks(agent_pid);
            let t = Instant::now();
            let flow = udp_flow(&lab, "a", "b", rate, secs);
            let cpu = (cpu_ticks(agent_pid) - cpu_start) as f64 / 100.0 / t.elapsed().as_secs_f64() * 100.0;
            let _ = run.finish();
            let lost = flow.iter().filter(|r| r.is_none()).count();
            let mut err: Vec<f64> = flow
                .iter()
                .flatten()
                .map(|d| (d.as_secs_f64() * 1000.0 - base_p50 - delay as f64).abs())
                .collect();
            err.sort_by(|x, y| x.partial_cmp(y).unwrap());
            println!(
                "precision: delay {delay} ms at {rate} packets/s for {secs}s: {} packets, {lost} lost ({:.2}%); added-delay error p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (baseline RTT p50 {base_p50:.3} ms); agent CPU {cpu:.1}% of one core",
                flow.len(),
                lost as f64 * 100.0 / flow.len().max(1) as f64,
                pct(&err, 50.0),
                pct(&err, 99.0),
                err.last().copied().unwrap_or(f64::NAN)
            );
        }
    }
    lab.assert_clean();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // 10,000 agents need 10,000 sockets here and in the coordinator.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65_536, 65_536);
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    match args.get(1).map(String::as_str) {
        Some("fanout") => {
            for n in get("--agents", "100,1000,10000").split(',') {
                match n.trim().parse() {
                    Ok(n) => fanout(n).await,
                    Err(_) => eprintln!("--agents: {n:?} is not a number"),
                }
            }
        }
        Some("footprint") => {
            let s = get("--seconds", "60").parse().unwrap_or(60);
            tokio::task::spawn_blocking(move || footprint(s)).await.unwrap();
        }
        Some("precision") => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("precision: needs root for the namespace lab");
                std::process::exit(2);
            }
            let list = |v: String| -> Vec<u64> { v.split(',').filter_map(|x| x.trim().parse().ok()).collect() };
            let rates: Vec<u32> = list(get("--rates", "1000,10000"))
                .into_iter()
                .map(|r| r as u32)
                .collect();
            let delays = list(get("--delays", "10,100"));
            let secs: f64 = get("--seconds", "3").parse().unwrap_or(3.0);
            tokio::task::spawn_blocking(move || precision(&rates, &delays, secs))
                .await
                .unwrap();
        }
        Some("restore") => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("restore: needs root to mount a tmpfs");
                std::process::exit(2);
            }
            restore_paths(get("--faults", "100").parse().unwrap_or(100)).await;
        }
        Some("stress") => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("stress: needs root to create cgroups");
                std::process::exit(2);
            }
            stress::run(get("--seconds", "5").parse().unwrap_or(5)).await;
        }
        Some("soak") => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("soak: needs root for the namespace lab");
                std::process::exit(2);
            }
            let runs: usize = get("--runs", "1000").parse().unwrap_or(1000);
            let every: usize = get("--every", "100").parse().unwrap_or(100);
            let ok = tokio::task::spawn_blocking(move || {
                use faultline_tests::soak::{check, soak, table};
                println!("soak: {runs} runs against one coordinator and 3 agents, sampled every {every}");
                let r = soak(runs, every, |s| {
                    println!(
                        "after {} runs ({:.0} s): coordinator {} KiB, {} fds; db {} bytes",
                        s.runs,
                        s.elapsed.as_secs_f64(),
                        s.coordinator.rss_kib,
                        s.coordinator.fds,
                        s.db_bytes
                    )
                });
                println!("{}", table(&r));
                match check(&r) {
                    Ok(()) => {
                        println!("bounds held");
                        true
                    }
                    Err(e) => {
                        println!("BOUNDS BROKEN:\n{e}");
                        false
                    }
                }
            })
            .await
            .unwrap();
            if !ok {
                std::process::exit(1);
            }
        }
        Some("crash-points") => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("crash-points: needs root for the namespace lab");
                std::process::exit(2);
            }
            let n: usize = get("--iterations", "200").parse().unwrap_or(200);
            let seed: u64 = get("--seed", "0").parse().unwrap_or(0);
            let ok = tokio::task::spawn_blocking(move || crash_points(n, seed))
                .await
                .unwrap();
            if !ok {
                std::process::exit(1);
            }
        }
        Some("packets") => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("packets: needs root for the namespace lab");
                std::process::exit(2);
            }
            let n: u32 = get("--datagrams", "5000").parse().unwrap_or(5000);
            tokio::task::spawn_blocking(move || packets::run(n)).await.unwrap();
        }
        Some("judge") => {
            let aa = get("--aa-reps", "10000").parse().unwrap_or(10_000);
            let power = get("--power-reps", "1000").parse().unwrap_or(1000);
            tokio::task::spawn_blocking(move || judge::run(aa, power))
                .await
                .unwrap();
        }
        _ => {
            eprintln!("usage: faultline-bench fanout [--agents 100,1000,10000] | footprint [--seconds 60] | restore [--faults 100] | precision [--rates 1000,10000] [--delays 10,100] [--seconds 3] | stress [--seconds 5] | crash-points [--iterations 200] [--seed N] | soak [--runs 1000] [--every 100] | packets [--datagrams 5000] | judge [--aa-reps 10000] [--power-reps 1000]");
            std::process::exit(2);
        }
    }
}

/// `crash-points`: iterations of random SIGKILLs; false if any failed.
fn crash_points(n: usize, seed: u64) -> bool {
    use faultline_tests::crashpoints::{summary, CrashLab, Rng};
    let seed = if seed == 0 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    } else {
        seed
    };
    println!("crash-points: {n} iterations, seed {seed} (replay with --seed {seed})");
    let mut rng = Rng::new(seed);
    let mut lab = CrashLab::build();
    let started = Instant::now();
    let mut its = Vec::with_capacity(n);
    for i in 0..n {
        let it = lab.iteration(&mut rng);
        println!(
            "{:>4} {:<14} killed after {:>5} ms ({:<15}) clean after {}{}",
            i + 1,
            it.victim,
            it.kill_after.as_millis(),
            it.point.name(),
            it.time_to_clean
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or("-".into()),
            it.failure
                .as_deref()
                .map(|f| format!("  FAILED: {f}"))
                .unwrap_or_default()
        );
        its.push(it);
    }
    println!("{}", summary(&its));
    println!("wall time {:?}", started.elapsed());
    its.iter().all(|i| i.failure.is_none())
}
