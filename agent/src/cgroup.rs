//! The cgroups stressors run in: one per fault, named
//! `<kind prefix><fault_id>` (`faultline-cpu-stress-…`,
//! `faultline-memory-stress-…`), made directly under the root of each
//! hierarchy the stressor needs.
//!
//! cgroup v1 (this project's test machine) mounts one hierarchy per
//! controller, `/sys/fs/cgroup/<controller>`; `cpu` and `cpuacct` may be
//! co-mounted (one directory behind two names), which is found by
//! canonicalising. cgroup v2 has one hierarchy, `/sys/fs/cgroup` with a
//! `cgroup.controllers` file; the same cgroup then holds every controller
//! (the ones used here are enabled in the root's `cgroup.subtree_control`).
//!
//! A cgroup is removed by killing every process in it (SIGKILL), waiting for
//! it to empty (bounded) and `rmdir`; that is the same whether the agent
//! restores its own fault or a restarted agent sweeps one it finds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The start of every cgroup name of the stress kinds (each kind adds its
/// own word, so the sweep tells them apart).
pub const PREFIX: &str = "faultline-";

/// How long removal waits for killed processes to leave a cgroup.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup hierarchy with the {0} controller under /sys/fs/cgroup")]
    NoController(&'static str),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: processes still in it after SIGKILL and {}s", path.display(), EMPTY_WAIT.as_secs())]
    Busy { path: PathBuf },
    #[error("the process is in no cgroup of the {0} controller")]
    NotMember(&'static str),
    #[error(
        "cgroup path {0:?} is outside this agent's cgroup namespace; run the agent in the host's cgroup namespace"
    )]
    OutsideNamespace(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup layout this node has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy (`/sys/fs/cgroup/cgroup.controllers` exists).
    V2(PathBuf),
    /// A hierarchy per controller, under this directory.
    V1(PathBuf),
}

impl Layout {
    /// The layout under `/sys/fs/cgroup`.
    pub fn detect() -> Layout {
        Self::under(Path::new(ROOT))
    }

    pub fn under(root: &Path) -> Layout {
        if root.join("cgroup.controllers").exists() {
            Layout::V2(root.to_path_buf())
        } else {
            Layout::V1(root.to_path_buf())
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2(_))
    }

    /// The root of the hierarchy holding `controller` (v1: `cpu`,
    /// `cpuacct`, `memory`); a co-mount's link (`cpu -> cpu,cpuacct`) is
    /// followed within the root (not canonicalised: a root reached through
    /// `/proc/1/root` must stay so).
    pub fn hierarchy(&self, controller: &'static str) -> Result<PathBuf> {
        let dir = match self {
            Layout::V2(root) => root.clone(),
            Layout::V1(root) => match fs::read_link(root.join(controller)) {
                Ok(target) if target.is_relative() && target.components().count() == 1 => root.join(target),
                _ => root.join(controller),
            },
        };
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::NoController(controller))
        }
    }

    /// Every hierarchy root a stressor cgroup may be in, for the sweep.
    pub fn hierarchies(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = match self {
            Layout::V2(root) => vec![root.clone()],
            Layout::V1(_) => ["cpu", "cpuacct", "memory"]
                .into_iter()
                .filter_map(|c| self.hierarchy(c).ok())
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }
}

/// The stressor cgroup's name for a fault, after its kind's `prefix`.
/// `None` for an id outside the one id rule (it could name a path outside
/// the hierarchy).
pub fn name(prefix: &str, fault_id: &str) -> Option<String> {
    faultline_proto::ids::validate_fault_id(fault_id).ok()?;
    Some(format!("{prefix}{fault_id}"))
}

/// The cgroup directories of `name` for these controllers, one per
/// distinct hierarchy, in a stable order.
pub fn dirs(layout: &Layout, controllers: &[&'static str], name: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for c in controllers {
        let d = layout.hierarchy(c)?.join(name);
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Creates a cgroup directory (an existing one is reused: a retry).
pub fn create(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Writes a control file of a cgroup.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    fs::write(&p, value).map_err(io(&p))
}

/// Reads a control file of a cgroup, trimmed.
pub fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    fs::read_to_string(&p).map(|s| s.trim().to_string()).map_err(io(&p))
}

/// A number in a control file; `None` when absent or not a number.
pub fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file).ok()?.parse().ok()
}

/// The value of `key` in a flat keyed file (`memory.events`,
/// `memory.oom_control`, `cpu.stat`).
pub fn keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(dir, file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The pids in a cgroup (empty when it is gone).
pub fn pids(dir: &Path) -> Vec<i32> {
    read(dir, "cgroup.procs")
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in the cgroup, waits for it to empty and removes
/// it. True if it existed.
pub fn remove(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    let deadline = Instant::now() + EMPTY_WAIT;
    loop {
        let pids = pids(dir);
        for pid in &pids {
            // Only what is inside our own cgroup: processes the agent forked.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) if Instant::now() >= deadline => {
                return Err(if pids.is_empty() {
                    io(dir)(e)
                } else {
                    Error::Busy { path: dir.into() }
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// How deep below a hierarchy's root the sweep looks for stressor
/// cgroups: a container's cgroup is at most a few levels down
/// (`kubepods/burstable/pod<uid>/<id>`, `system.slice/docker-<id>.scope`).
const FIND_DEPTH: usize = 6;

/// Every cgroup on the node named `prefix`…: at the top of a hierarchy
/// (host targets) or inside a container's cgroup (container targets),
/// looked for at most [`FIND_DEPTH`] levels down, never below a match.
pub fn find(layout: &Layout, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in layout.hierarchies() {
        let mut stack = vec![(h, 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                // file_type does not follow links: a cgroup is a real directory.
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    out.push(p);
                } else if depth + 1 < FIND_DEPTH {
                    stack.push((p, depth + 1));
                }
            }
        }
    }
    out.sort();
    out
}

/// A process's cgroups as `/proc/<pid>/cgroup` lists them: one line per
/// hierarchy, `ID:CONTROLLERS:PATH`. cgroup v1 has a line per mounted
/// hierarchy (`4:cpu,cpuacct:/docker/<id>`; named ones such as
/// `1:name=systemd:/...` hold no controller), cgroup v2 one line `0::PATH`.
/// The path is relative to the reader's cgroup namespace root, which is
/// why [`Membership::of`] reads it as the host's init would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The v2 path (`0::/...`), if there is a v2 line.
    v2: Option<String>,
    /// v1: controller → path.
    v1: std::collections::BTreeMap<String, String>,
}

impl Membership {
    /// Parses the file's text (malformed lines are skipped).
    pub fn parse(text: &str) -> Membership {
        let mut m = Membership::default();
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                m.v2 = Some(path.to_string());
            } else {
                for c in ctrls.split(',').filter(|c| !c.is_empty() && !c.starts_with("name=")) {
                    m.v1.insert(c.to_string(), path.to_string());
                }
            }
        }
        m
    }

    /// `pid`'s cgroups as the host sees them. The agent normally shares the
    /// host's cgroup namespace (DaemonSet and compose run it so); when it
    /// does not (Kubernetes gives containers a private one on cgroup v2),
    /// the file is read from a thread that entered the cgroup namespace of
    /// PID 1 (the host's init, under `hostPID`), since the kernel renders
    /// the paths relative to the reader's namespace.
    pub fn of(pid: u32) -> Result<Membership> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let own = fs::read_link("/proc/self/ns/cgroup").ok();
        let init = fs::read_link("/proc/1/ns/cgroup").ok();
        let text = if own.is_some() && init.is_some() && own != init {
            let ns = fs::File::open("/proc/1/ns/cgroup").map_err(io(Path::new("/proc/1/ns/cgroup")))?;
            std::thread::scope(|s| {
                s.spawn(|| {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(std::io::Error::from)?;
                    fs::read_to_string(&path)
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the thread reading a cgroup file panicked")))
            })
        } else {
            fs::read_to_string(&path)
        };
        Ok(Membership::parse(&text.map_err(io(&path))?))
    }

    /// The directory of this membership's cgroup in the hierarchy holding
    /// `controller`. A path that climbs out of its namespace root
    /// (`/../..`) cannot be placed under the mount and is refused.
    pub fn dir(&self, layout: &Layout, controller: &'static str) -> Result<PathBuf> {
        let rel = match layout {
            Layout::V2(_) => self.v2.as_deref(),
            Layout::V1(_) => self.v1.get(controller).map(String::as_str),
        }
        .ok_or(Error::NotMember(controller))?;
        let rel = rel.trim_start_matches('/');
        if Path::new(rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::OutsideNamespace(rel.to_string()));
        }
        Ok(layout.hierarchy(controller)?.join(rel))
    }
}

/// Like [`dirs`], but inside `member`'s cgroups: the stressor's cgroup is
/// a child of the target container's, so the container's limits (CFS
/// quota, memory limit) bound the stressor too and its use counts against
/// the container.
pub fn dirs_in(layout: &Layout, member: &Membership, controllers: &[&'static str], name: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for c in controllers {
        let d = member.dir(layout, c)?.join(name);
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_refuse_ids_outside_the_rule() {
        assert_eq!(
            name("faultline-cpu-stress-", "r1-1").unwrap(),
            "faultline-cpu-stress-r1-1"
        );
        for bad in ["../x", "", "a/b", ".x"] {
            assert!(name(PREFIX, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_layout_is_v2_only_with_a_controllers_file_and_comounts_are_one_dir() {
        let d = tempfile::tempdir().unwrap();
        assert!(!Layout::under(d.path()).is_v2());
        fs::create_dir(d.path().join("cpu,cpuacct")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpuacct")).unwrap();
        fs::create_dir(d.path().join("memory")).unwrap();
        let l = Layout::under(d.path());
        let got = dirs(&l, &["cpu", "cpuacct"], "faultline-stress-x").unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(l.hierarchies().len(), 2);
        fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert!(Layout::under(d.path()).is_v2());
    }

    #[test]
    fn membership_is_parsed_for_v1_and_v2_and_placed_under_the_hierarchy() {
        let v1 = Membership::parse(
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\nbad line\n",
        );
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("cpu,cpuacct")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", d.path().join("cpuacct")).unwrap();
        fs::create_dir(d.path().join("memory")).unwrap();
        let l = Layout::under(d.path());
        assert_eq!(v1.dir(&l, "memory").unwrap(), d.path().join("memory/docker/abc"));
        let got = dirs_in(&l, &v1, &["cpu", "cpuacct"], "faultline-cpu-stress-x").unwrap();
        assert_eq!(got, [d.path().join("cpu,cpuacct/docker/abc/faultline-cpu-stress-x")]);
        assert!(matches!(v1.dir(&l, "pids"), Err(Error::NotMember("pids"))));

        let v2 = Membership::parse("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n");
        let e = tempfile::tempdir().unwrap();
        fs::write(e.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let l2 = Layout::under(e.path());
        assert_eq!(
            v2.dir(&l2, "memory").unwrap(),
            e.path()
                .join("kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope")
        );
        // A private cgroup namespace shows other containers' paths climbing out.
        let outside = Membership::parse("0::/../../kubepods.slice/x.scope\n");
        let err = outside.dir(&l2, "cpu").unwrap_err();
        assert!(err.to_string().contains("host's cgroup namespace"), "{err}");
    }

    #[test]
    fn this_process_has_a_readable_membership() {
        let m = Membership::of(std::process::id()).unwrap();
        let l = Layout::detect();
        if l.hierarchy("memory").is_ok() {
            assert!(m.dir(&l, "memory").is_ok(), "{m:?}");
        }
    }

    #[test]
    fn find_looks_inside_nested_cgroups_but_not_below_a_match() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(
            d.path()
                .join("memory/docker/abc/faultline-memory-stress-a/faultline-memory-stress-b"),
        )
        .unwrap();
        fs::create_dir_all(d.path().join("memory/faultline-memory-stress-c")).unwrap();
        fs::create_dir_all(d.path().join("memory/a/b/c/d/e/f/g/faultline-memory-stress-deep")).unwrap();
        let got = find(&Layout::under(d.path()), "faultline-memory-stress-");
        assert_eq!(
            got,
            [
                d.path().join("memory/docker/abc/faultline-memory-stress-a"),
                d.path().join("memory/faultline-memory-stress-c"),
            ]
        );
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(keyed(d.path(), "memory.oom_control", "oom_kill"), Some(2));
        assert_eq!(keyed(d.path(), "memory.oom_control", "oom"), None);
    }
}
