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

/// Every cgroup on the node named `prefix`… at the top of a hierarchy.
pub fn find(layout: &Layout, prefix: &str) -> Vec<PathBuf> {
    layout
        .hierarchies()
        .iter()
        .filter_map(|h| fs::read_dir(h).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect()
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
