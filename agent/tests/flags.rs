//! The `faultline-agent` binary refuses bad flags before it touches the node
//! or dials the coordinator, naming the flag.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_faultline-agent");

/// Runs the agent with `args`; an agent that accepted them would dial and
/// retry forever, so it is killed after 10 s (and the test then fails).
fn agent(args: &[&str]) -> Output {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(AGENT)
        .args(["--coordinator", "http://127.0.0.1:1", "--state-dir"])
        .arg(state.path())
        .args(args)
        .env_remove("FAULTLINE_COORDINATOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run faultline-agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn refused(args: &[&str], want: &str) {
    let out = agent(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} must be refused: {err}");
    assert!(err.contains(want), "{args:?}: {err} should contain {want}");
}

#[test]
fn invalid_agent_ids_are_refused_naming_the_flag() {
    refused(&["--id", "a/b"], "--id: agent id \"a/b\" contains '/'");
    refused(&["--id", "../../etc/passwd"], "--id: agent id \"../../etc/passwd\"");
    refused(&["--id", "x\u{202e}y"], "--id: agent id \"x\\u{202e}y\" contains");
}

#[test]
fn too_many_labels_are_refused_naming_the_flag() {
    let labels: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["--id", "node-a"];
    for l in &labels {
        args.extend(["--label", l.as_str()]);
    }
    refused(&args, "--label: Hello.labels has 65 entries; at most 64 are allowed");
}

#[test]
fn non_loopback_metrics_need_metrics_public() {
    refused(
        &["--id", "node-a", "--metrics-listen", "0.0.0.0:0"],
        "refusing to serve metrics on 0.0.0.0:0",
    );
    refused(&["--id", "node-a", "--metrics-listen", "0.0.0.0:0"], "--metrics-public");
}

#[test]
fn runtime_socket_and_namespace_need_a_runtime_that_takes_them() {
    refused(
        &["--id", "node-a", "--runtime-socket", "/run/x.sock"],
        "--runtime-socket and --runtime-namespace need --runtime docker, containerd or crio",
    );
    refused(
        &["--id", "node-a", "--runtime", "docker", "--runtime-namespace", "moby"],
        "--runtime-namespace is for --runtime containerd",
    );
    refused(&["--id", "node-a", "--runtime", "podman"], "podman");
}
