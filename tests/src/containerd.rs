//! Containers made directly in the machine's real containerd (the one the
//! Docker Engine runs, at [`SOCKET`]) with `ctr`, in a containerd namespace
//! of the test's own (`fltest-<name>-<pid>`): the image is a [`DockerLab`]
//! image (built from host files) passed through `docker save | ctr images
//! import`, nothing is pulled. containerd itself then records the labels and
//! the image, as it does for Kubernetes' CRI plugin; [`CtrLab`]'s `Drop`
//! removes the tasks, containers, image, snapshots, the namespace and the
//! cgroups runc made for the namespace ([`cgroups_left`]).
//!
//! [`DockerLab`]: crate::docker::DockerLab

use std::process::Command;
use std::time::{Duration, Instant};

/// Docker's containerd (Docker 20.10 runs its own).
pub const SOCKET: &str = "/var/run/docker/containerd/containerd.sock";

/// Runs `ctr --address SOCKET ARGS`, returning its stdout and success.
fn ctr_try(args: &[&str]) -> (bool, String) {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(SOCKET)
        .args(args)
        .output()
        .expect("run ctr");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

/// Runs `ctr ARGS`; panics with its output on failure.
pub fn ctr(args: &[&str]) -> String {
    let (ok, text) = ctr_try(args);
    assert!(ok, "ctr {}: {text}", args.join(" "));
    text
}

/// True when `ctr` can reach [`SOCKET`]. Otherwise prints why and returns
/// false, unless `CI=true`, where it panics: CI's Docker Engine runs it.
pub fn containerd_or_skip(test: &str) -> bool {
    if !crate::docker::docker_or_skip(test) {
        return false;
    }
    let ok = Command::new("ctr")
        .args(["--address", SOCKET, "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let msg = format!("{test} needs ctr and Docker's containerd at {SOCKET}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// One test's containerd namespace, image and containers.
pub struct CtrLab {
    /// The containerd namespace (`fltest-<name>-<pid>`).
    pub namespace: String,
    /// The image reference as containerd records it.
    pub image: String,
    containers: Vec<String>,
}

impl CtrLab {
    /// Imports `docker_image` (a [`crate::docker::DockerLab`] image) into a
    /// new namespace.
    pub fn new(name: &str, docker_image: &str) -> CtrLab {
        let namespace = format!("fltest-{name}-{}", std::process::id());
        let lab = CtrLab {
            namespace,
            image: format!("docker.io/library/{docker_image}"),
            containers: Vec::new(),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("image.tar");
        crate::docker::docker(&["save", "-o", &tar.display().to_string(), docker_image]);
        lab.ctr(&["images", "import", &tar.display().to_string()]);
        lab
    }

    /// `ctr -n NAMESPACE ARGS`.
    pub fn ctr(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.namespace.as_str()];
        a.extend_from_slice(args);
        ctr(&a)
    }

    /// Starts container `id` (task detached) with `labels`, running `cmd`.
    pub fn run(&mut self, id: &str, labels: &[(&str, &str)], cmd: &[&str]) {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut a = vec!["run", "-d"];
        for p in &pairs {
            a.extend(["--label", p.as_str()]);
        }
        let image = self.image.clone();
        a.extend([image.as_str(), id]);
        a.extend_from_slice(cmd);
        self.containers.push(id.to_string());
        self.ctr(&a);
    }

    /// The host PID of container `id`'s task (0 if none).
    pub fn pid(&self, id: &str) -> u32 {
        let (ok, out) = ctr_try(&["-n", &self.namespace, "tasks", "ls"]);
        if !ok {
            return 0;
        }
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok())?
            })
            .next()
            .unwrap_or(0)
    }
}

impl Drop for CtrLab {
    fn drop(&mut self) {
        let ns = self.namespace.clone();
        let c = |args: &[&str]| {
            let mut a = vec!["-n", ns.as_str()];
            a.extend_from_slice(args);
            ctr_try(&a)
        };
        for id in &self.containers {
            let _ = c(&["tasks", "kill", "-s", "SIGKILL", id]);
        }
        for id in &self.containers {
            // The task exits asynchronously after SIGKILL: retry its delete.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                let (ok, out) = c(&["tasks", "rm", "-f", id]);
                if ok || out.contains("not found") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c(&["containers", "rm", id]);
        }
        let _ = c(&["images", "rm", &self.image]);
        // Snapshots and content go once nothing references them; the
        // namespace only when empty. Bounded retries: the garbage
        // collector runs asynchronously.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let (_, snaps) = c(&["snapshots", "ls"]);
            for key in snaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()) {
                let _ = c(&["snapshots", "rm", key]);
            }
            let (_, blobs) = c(&["content", "ls", "-q"]);
            for d in blobs.lines() {
                let _ = c(&["content", "rm", d]);
            }
            if ctr_try(&["namespaces", "rm", &ns]).0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        remove_cgroups(&ns);
    }
}

/// Where cgroup v1 controllers are mounted on this machine.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directories runc made for containerd namespace `ns`: with
/// no cgroups path in the spec, `ctr` puts each container in
/// `/<namespace>/<id>`, so every v1 controller gets a `<namespace>`
/// directory (and the unified hierarchy one, on a hybrid host). runc
/// removes the container's own directory when the task is deleted, not the
/// namespace's: nobody else does.
pub fn cgroups_left(ns: &str) -> Vec<std::path::PathBuf> {
    let Ok(controllers) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut out: Vec<std::path::PathBuf> = controllers
        .flatten()
        .map(|c| c.path().join(ns))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Removes the cgroup directories of namespace `ns` (children first, by
/// `rmdir`: a cgroup that still holds a process stays, and nothing else
/// is touched). Bounded: the kernel frees a cgroup asynchronously after
/// its last process exits, so a few retries.
fn remove_cgroups(ns: &str) {
    for _ in 0..20 {
        let left = cgroups_left(ns);
        if left.is_empty() {
            return;
        }
        for dir in left {
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether containerd still has namespace `ns`.
pub fn namespace_exists(ns: &str) -> bool {
    ctr(&["namespaces", "ls", "-q"]).lines().any(|l| l.trim() == ns)
}

/// PID 1 (`sh`) restarts `sleep` whenever it dies.
pub const LOOP: &[&str] = &["/bin/sh", "-c", "while :; do /bin/sleep 1000; done"];

/// Host pids of the processes named `name` in the pid namespace of `pid`.
pub fn in_ns(pid: u32, name: &str) -> Vec<u32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let same = std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns);
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if same && comm.trim() == name {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Polls `f` every 50 ms for at most `limit`.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
