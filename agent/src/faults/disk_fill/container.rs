//! Fills inside containers: the fill file goes in the container's own
//! filesystem, reached through `/proc/<pid>/root` of its init process.
//!
//! The directory is opened with `openat2(RESOLVE_IN_ROOT)`: the kernel
//! resolves every component (`..`, absolute symlinks, magic links refused)
//! as if `/proc/<pid>/root` were `/`, so a symlink the container's image or
//! workload planted (`/tmp -> /`) can never lead out of the container into
//! the host. The file itself is then created relative to that directory's
//! descriptor with `O_EXCL | O_NOFOLLOW`.
//!
//! Restore re-resolves the container through the runtime, because a
//! restarted container has a new init PID (and `/proc/<old pid>` is gone)
//! while keeping its writable layer and so the file: running, the file is
//! removed through the new PID's root; stopped, through the layer's host
//! directory (`UpperDir`), resolved the same way; removed, its layer went
//! with it and nothing is left.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use std::sync::Arc;

use faultline_proto::v1;

use super::{allocate, bytes_for, fill_file_name, DiskFillSpec, Error, FillPolicy, Space, KIND};
use crate::faults::{self, Applied, Prepared, Report, Restoring};
use crate::journal::Object;
use crate::runtime::{Container, ContainerRuntime};

/// Opens `dir` (an absolute path as the container sees it) below `root`,
/// never leaving `root`.
pub fn open_in_root(root: &Path, dir: &Path) -> std::io::Result<OwnedFd> {
    let root = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    Ok(openat2(&root, dir, how)?)
}

/// The container's root as the host reaches it.
fn proc_root(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// Checks an in-container path against the fill policy: absolute, no `..`,
/// under an allowed path (the agent's `--allow-fill` paths, read as paths
/// inside the container).
pub fn check_path(dir: &Path, policy: &FillPolicy) -> Result<(), Error> {
    if !dir.is_absolute() || dir.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::Refused(format!(
            "path {} inside a container must be absolute and without ..",
            dir.display()
        )));
    }
    if !policy.allowed.iter().any(|a| dir.starts_with(a)) {
        return Err(Error::Refused(format!(
            "path {} is outside the agent's allowed fill paths ({}), which also apply inside containers; allow it with --allow-fill DIR",
            dir.display(),
            policy
                .allowed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// One fill file in one container.
#[derive(Debug, Clone)]
pub struct ContainerFill {
    pub container: Container,
    /// The directory as the container sees it.
    pub dir: PathBuf,
    /// The fill file's name.
    pub name: String,
}

impl ContainerFill {
    /// `name:/dir/file`, for details.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.container.name, self.dir.join(&self.name).display())
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: PathBuf::from(self.describe()),
            source,
        }
    }

    /// The filesystem's space and how many bytes `amount` means there,
    /// refusing over the policy's maximum; touches nothing.
    pub fn size(&self, amount: super::Amount, policy: &FillPolicy) -> Result<(Space, u64, f64), Error> {
        let fd = open_in_root(&proc_root(self.container.pid), &self.dir).map_err(|e| self.io(e))?;
        let st = nix::sys::statvfs::fstatvfs(&fd).map_err(|e| self.io(e.into()))?;
        let space = Space::from_blocks(
            st.fragment_size() as u64,
            st.blocks() as u64,
            st.blocks_free() as u64,
            st.blocks_available() as u64,
        );
        let bytes = bytes_for(amount, space)?;
        let after = space.used_percent(bytes);
        if after > policy.max_used_percent + 1e-9 {
            return Err(Error::Refused(format!(
                "the fill would leave {} {after:.1}% used (as df counts it), over the agent's maximum of {}%",
                self.describe(),
                policy.max_used_percent
            )));
        }
        Ok((space, bytes, after))
    }

    /// Creates and allocates the file; returns the method used.
    pub fn create(&self, bytes: u64) -> Result<&'static str, Error> {
        let dir = open_in_root(&proc_root(self.container.pid), &self.dir).map_err(|e| self.io(e))?;
        let fd = openat(
            &dir,
            self.name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.io(e.into()))?;
        let mut f = File::from(fd);
        allocate(&mut f, bytes)
            .inspect_err(|_| {
                let _ = unlinkat(&dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
            })
            .map_err(|e| self.io(e))
    }
}

/// Removes the fill file `name` in `dir` of container `id`, wherever the
/// container is now (see the module docs). True if a file was removed.
pub fn remove(runtime: &dyn ContainerRuntime, id: &str, dir: &Path, name: &str) -> std::io::Result<bool> {
    let to_io = |e: crate::runtime::Error| std::io::Error::other(e.to_string());
    let root = match runtime.inspect(id).map_err(to_io)? {
        // Removed: its writable layer, and the file, went with it.
        None => return Ok(false),
        Some(c) if c.running && c.pid > 0 => proc_root(c.pid),
        Some(_) => match runtime.upper_dir(id).map_err(to_io)? {
            Some(upper) => upper,
            None => {
                return Err(std::io::Error::other(format!(
                    "container {id} is stopped and its runtime names no writable layer"
                )))
            }
        },
    };
    let dir = match open_in_root(&root, dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Fills in containers that passed the spec's and the policy's checks.
pub struct PreparedFills {
    fills: Vec<ContainerFill>,
    amount: super::Amount,
    policy: FillPolicy,
    runtime: Arc<dyn ContainerRuntime>,
}

impl PreparedFills {
    pub fn new(
        fault_id: &str,
        spec: DiskFillSpec,
        containers: &[Container],
        policy: &FillPolicy,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> Result<Self, Error> {
        check_path(&spec.path, policy)?;
        let name = fill_file_name(fault_id)?;
        Ok(Self {
            fills: containers
                .iter()
                .map(|c| ContainerFill {
                    container: c.clone(),
                    dir: spec.path.clone(),
                    name: name.clone(),
                })
                .collect(),
            amount: spec.amount,
            policy: policy.clone(),
            runtime,
        })
    }
}

impl Prepared for PreparedFills {
    fn undo_objects(&self) -> Vec<Object> {
        self.fills
            .iter()
            .map(|f| Object::ContainerFile {
                container_id: f.container.id.clone(),
                container_name: f.container.name.clone(),
                dir: f.dir.clone(),
                name: f.name.clone(),
            })
            .collect()
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let mut parts = Vec::new();
        for f in &self.fills {
            let (space, bytes, after) = f.size(self.amount, &self.policy)?;
            parts.push(format!(
                "{bytes} bytes in {} ({:.1}% -> {after:.1}% used)",
                f.describe(),
                space.used_percent(0)
            ));
        }
        Ok((format!("would allocate {}", parts.join("; ")), KIND.backend.into()))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let mut done: Vec<(ContainerFill, v1::DiskFillObservation)> = Vec::new();
        let undo = |done: &[(ContainerFill, v1::DiskFillObservation)]| {
            for (f, _) in done {
                let _ = remove(self.runtime.as_ref(), &f.container.id, &f.dir, &f.name);
            }
        };
        for f in &self.fills {
            let created = f.size(self.amount, &self.policy).and_then(|(space, bytes, after)| {
                let method = f.create(bytes)?;
                Ok(v1::DiskFillObservation {
                    file: f.describe(),
                    bytes,
                    method: method.into(),
                    used_percent_before: space.used_percent(0),
                    used_percent_after: after,
                })
            });
            match created {
                Ok(obs) => done.push((f.clone(), obs)),
                Err(e) => {
                    undo(&done);
                    return Err(e.into());
                }
            }
        }
        Ok(Box::new(AppliedFills {
            fills: done,
            runtime: self.runtime,
        }))
    }
}

/// Fill files in place inside containers.
pub struct AppliedFills {
    fills: Vec<(ContainerFill, v1::DiskFillObservation)>,
    runtime: Arc<dyn ContainerRuntime>,
}

impl Applied for AppliedFills {
    fn backend(&self) -> String {
        self.fills.first().map(|(_, o)| o.method.clone()).unwrap_or_default()
    }

    fn injected(&self) -> Report {
        let parts: Vec<String> = self
            .fills
            .iter()
            .map(|(_, o)| {
                format!(
                    "{} bytes in {} with {} ({:.1}% -> {:.1}% used)",
                    o.bytes, o.file, o.method, o.used_percent_before, o.used_percent_after
                )
            })
            .collect();
        Report {
            detail: format!("allocated {}", parts.join("; ")),
            observation: self
                .fills
                .first()
                .map(|(_, o)| v1::observation::Kind::DiskFill(o.clone())),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        Box::pin(async move {
            let mut lines = Vec::new();
            let mut failed = None;
            for (f, _) in &self.fills {
                match remove(self.runtime.as_ref(), &f.container.id, &f.dir, &f.name) {
                    Ok(true) => lines.push(format!("removed {}", f.describe())),
                    Ok(false) => lines.push(format!(
                        "{} was already gone (container restarted empty or removed)",
                        f.describe()
                    )),
                    Err(e) => failed = Some(f.io(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            Ok(Report {
                detail: lines.join("; "),
                observation: self
                    .fills
                    .first()
                    .map(|(_, o)| v1::observation::Kind::DiskFill(o.clone())),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_pointing_out_of_the_root_stays_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        // An absolute symlink to a host directory, and one climbing out.
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", root.path().join("tmp/up")).unwrap();
        let fd = open_in_root(root.path(), Path::new("/evil"));
        // Resolved inside the root, where `outside`'s path does not exist.
        assert!(fd.is_err(), "resolved out of the root");
        let up = open_in_root(root.path(), Path::new("/tmp/up/tmp")).unwrap();
        // `..` at the root stays at the root: /tmp/up/tmp is the root's tmp.
        let f = openat(
            &up,
            "probe",
            OFlag::O_WRONLY | OFlag::O_CREAT,
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        drop(f);
        assert!(root.path().join("tmp/probe").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn container_paths_must_be_absolute_allowed_and_without_dotdot() {
        let policy = FillPolicy {
            allowed: vec!["/tmp".into()],
            max_used_percent: 95.0,
        };
        assert!(check_path(Path::new("/tmp/x"), &policy).is_ok());
        assert!(check_path(Path::new("/tmp/../etc"), &policy).is_err());
        assert!(check_path(Path::new("/etc"), &policy).is_err());
        assert!(check_path(Path::new("tmp"), &policy).is_err());
    }
}
