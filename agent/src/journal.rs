//! The undo journal and the orphan sweep: how an agent puts its node back
//! after it died without restoring (kill -9, OOM, power loss).
//!
//! Before a fault touches the node, the agent writes an undo record — the
//! kernel objects and files the fault is about to create — to its state
//! directory: written to a temporary file, `fsync`ed, renamed over the final
//! name, and the directory `fsync`ed. Rename is atomic, so after a crash a
//! record is either whole or absent, never half-written; and because it is
//! durable *before* the first change, no change can exist without its record.
//! After a successful restore the record is deleted.
//!
//! On start, before it registers with the coordinator, the agent removes
//! everything its records list, then sweeps for orphans: any object that
//! carries the naming of one of the fault kinds ([`Owned`], declared by each
//! kind in its [`crate::faults::Registration`]: iptables chains, nftables
//! tables, root qdisc handles, fill files in an allowed fill directory).
//! Removal is idempotent: an object already gone is fine.
//!
//! The state directory is locked (`flock`) while the agent runs, so two
//! agents never restore each other's live faults.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::firewall::{self, Family, Firewall};
use crate::qdisc::{self, Tc};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("state directory {0} is in use by another faultline agent (it holds the lock); give each agent its own --state-dir")]
    Locked(PathBuf),
    #[error("undo record {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// Records are named after fault ids; an id outside the one id rule
    /// could name two faults' records alike (or a path outside the directory).
    #[error("no undo record for an invalid {0}")]
    BadId(#[from] faultline_proto::ids::IdError),
    /// An object to remove needs a tool this node lacks.
    #[error("no {0} on this node")]
    NoTool(&'static str),
    #[error(transparent)]
    Firewall(#[from] firewall::Error),
    #[error(transparent)]
    Tc(#[from] qdisc::Error),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::Error),
    /// A file a fault created could not be removed.
    #[error("{}: {source}", path.display())]
    Remove { path: PathBuf, source: std::io::Error },
}

/// Result of the journal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Something a fault creates on the node, named so it can be found and
/// removed later without any other state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Object {
    /// An iptables chain and every rule jumping to it.
    IptablesChain {
        ipv6: bool,
        table: String,
        chain: String,
    },
    /// A root qdisc with this major handle.
    Qdisc {
        dev: String,
        handle: u16,
    },
    NftTable {
        family: String,
        name: String,
    },
    File {
        path: PathBuf,
    },
    /// A file inside a container's filesystem: the container's identity and
    /// the path as the container sees it (its host path changes with its
    /// init PID when it restarts).
    ContainerFile {
        container_id: String,
        container_name: String,
        dir: PathBuf,
        name: String,
    },
    /// An object (iptables chain, nftables table) inside a container's
    /// network namespace, named by its inode; gone with the namespace once
    /// the container restarted or was removed.
    InContainerNetns {
        container_id: String,
        netns_inode: u64,
        object: Box<Object>,
    },
    /// A stressor cgroup directory and every process in it.
    Cgroup {
        path: PathBuf,
    },
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::IptablesChain { ipv6, table, chain } => {
                write!(
                    f,
                    "{} {table} chain {chain}",
                    if *ipv6 { "ip6tables" } else { "iptables" }
                )
            }
            Object::Qdisc { dev, handle } => write!(f, "qdisc {handle:x}: on {dev}"),
            Object::NftTable { family, name } => write!(f, "nftables table {family} {name}"),
            Object::File { path } => write!(f, "file {}", path.display()),
            Object::InContainerNetns {
                container_id,
                netns_inode,
                object,
            } => write!(f, "{object} in net:[{netns_inode}] of container {container_id}"),
            Object::ContainerFile {
                container_id,
                container_name,
                dir,
                name,
            } => write!(
                f,
                "file {} in container {container_name} ({container_id})",
                dir.join(name).display()
            ),
            Object::Cgroup { path } => write!(f, "cgroup {}", path.display()),
        }
    }
}

/// A family of objects a fault kind creates, recognisable by name alone:
/// what the orphan sweep looks for. Each kind declares its own
/// ([`crate::faults::Registration::owns`]) next to the function that names
/// them, so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    /// iptables and ip6tables chains of `table` whose names start with `prefix`.
    IptablesChains { table: &'static str, prefix: &'static str },
    /// nftables tables (any family) whose names start with `prefix`.
    NftTables { prefix: &'static str },
    /// Root qdiscs whose major handle, masked with `mask`, is `handle`.
    RootQdiscs { mask: u16, handle: u16 },
    /// Files whose names start with `prefix`, in the directories faults may
    /// create files in (the allowed fill paths).
    Files { prefix: &'static str },
    /// Cgroups at the top of a hierarchy whose names start with `prefix`.
    Cgroups { prefix: &'static str },
}

impl Owned {
    /// Whether `obj` carries this naming (so the sweep would remove it).
    pub fn covers(&self, obj: &Object) -> bool {
        match (self, obj) {
            (Owned::IptablesChains { table, prefix }, Object::IptablesChain { table: t, chain, .. }) => {
                t == table && chain.starts_with(prefix)
            }
            (Owned::NftTables { prefix }, Object::NftTable { name, .. }) => name.starts_with(prefix),
            (Owned::RootQdiscs { mask, handle }, Object::Qdisc { handle: h, .. }) => h & mask == *handle,
            (Owned::Files { prefix }, Object::File { path }) => path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix)),
            (Owned::Cgroups { prefix }, Object::Cgroup { path }) => path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix)),
            _ => false,
        }
    }
}

/// One fault's undo record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub fault_id: String,
    pub run_id: String,
    pub kind: String,
    pub created_unix_ms: u64,
    /// What the fault creates; removing all of them undoes it.
    pub objects: Vec<Object>,
}

/// A record and the file it was read from.
type RecordFile = (PathBuf, Record);

/// The journal in a state directory, locked for this agent.
pub struct Journal {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of a fault's record: `undo-<fault id>.json`. Injective
/// because only valid fault ids (`faultline_proto::ids`: letters, digits,
/// `_`, `-`) get one, and those are file names as they are.
pub fn record_name(fault_id: &str) -> Result<String> {
    faultline_proto::ids::validate_fault_id(fault_id)?;
    Ok(format!("undo-{fault_id}.json"))
}

impl Journal {
    /// Opens (creating, mode 0700) `dir` and locks it.
    pub fn open(dir: &Path) -> Result<Journal> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        let lock_path = dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|_| Error::Locked(dir.to_path_buf()))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `rec` durably: temp file, fsync, rename, fsync of the directory.
    pub fn write(&self, rec: &Record) -> Result<()> {
        let name = record_name(&rec.fault_id)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&json).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// Deletes the record of `fault_id` (durably); absent is fine.
    pub fn remove(&self, fault_id: &str) -> Result<()> {
        self.remove_file(&self.dir.join(record_name(fault_id)?))
    }

    /// Deletes one record file (durably); absent is fine.
    fn remove_file(&self, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Whether a record of `fault_id` exists.
    pub fn contains(&self, fault_id: &str) -> Result<bool> {
        let path = self.dir.join(record_name(fault_id)?);
        path.try_exists().map_err(io(&path))
    }

    /// Every record, plus the files that could not be read as one.
    pub fn load(&self) -> Result<(Vec<Record>, Vec<Error>)> {
        let (recs, bad) = self.load_files()?;
        Ok((recs.into_iter().map(|(_, r)| r).collect(), bad))
    }

    /// Every record with the file it was read from (a record written by an
    /// older agent may carry a fault id that today's rule refuses: it is
    /// still restored, and deleted by its path).
    fn load_files(&self) -> Result<(Vec<RecordFile>, Vec<Error>)> {
        let mut recs = Vec::new();
        let mut bad = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".undo-") && name.ends_with(".tmp") {
                // A write that crashed before its rename: the fault was
                // never applied (records are durable before any change).
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if !(name.starts_with("undo-") && name.ends_with(".json")) {
                continue;
            }
            let path = entry.path();
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => recs.push((path, r)),
                Err(message) => bad.push(Error::Corrupt { path, message }),
            }
        }
        recs.sort_by(|a, b| a.1.fault_id.cmp(&b.1.fault_id));
        Ok((recs, bad))
    }
}

/// Removes objects through the real (or fake) boundaries.
#[derive(Clone, Default)]
pub struct Cleaner {
    pub firewall: Option<Arc<dyn Firewall>>,
    pub tc: Option<Arc<dyn Tc>>,
    /// The container runtime, for files inside containers.
    pub runtime: Option<Arc<dyn crate::runtime::ContainerRuntime>>,
    /// Where stress cgroups are swept; `None`: `/sys/fs/cgroup`.
    pub cgroups: Option<crate::cgroup::Layout>,
}

impl Cleaner {
    /// Removes `obj` if it is there; true if something was removed.
    pub fn remove(&self, obj: &Object) -> Result<bool> {
        match obj {
            Object::IptablesChain { ipv6, table, chain } => {
                let fw = self.firewall.as_ref().ok_or(Error::NoTool("iptables"))?;
                let fam = if *ipv6 { Family::V6 } else { Family::V4 };
                let save = match fw.iptables_save(fam, table) {
                    Ok(s) => s,
                    // No ip6tables (or no table): nothing of ours can be there.
                    Err(firewall::Error::Missing { .. }) => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
                match firewall::remove_chain_script(&save, table, chain) {
                    None => Ok(false),
                    Some(script) => Ok(fw.iptables_restore(fam, &script).map(|_| true)?),
                }
            }
            Object::NftTable { family, name } => {
                let fw = self.firewall.as_ref().ok_or(Error::NoTool("nftables"))?;
                let tables = match fw.nft_tables() {
                    Ok(t) => t,
                    Err(firewall::Error::Missing { .. }) => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
                if !tables.iter().any(|(f, n)| f == family && n == name) {
                    return Ok(false);
                }
                Ok(fw.nft_apply(&format!("delete table {family} {name}\n")).map(|_| true)?)
            }
            Object::Qdisc { dev, handle } => {
                let tc = self.tc.as_ref().ok_or(Error::NoTool("tc"))?;
                match tc.root_qdisc(dev) {
                    Ok(Some(q)) if q.handle == *handle => Ok(tc.delete_root(dev).map(|_| true)?),
                    // Gone, replaced by someone else's, or the device is gone.
                    _ => Ok(false),
                }
            }
            Object::InContainerNetns {
                container_id,
                netns_inode,
                object,
            } => {
                let rt = self.runtime.as_ref().ok_or(Error::NoTool("container runtime"))?;
                let pid = match rt.inspect(container_id)? {
                    Some(c) if c.running => c.pid,
                    _ => return Ok(false),
                };
                if crate::runtime::ns_inode(pid, "net") != Some(*netns_inode) {
                    return Ok(false);
                }
                let path = format!("/proc/{pid}/ns/net");
                let io = |source| Error::Remove {
                    path: path.clone().into(),
                    source,
                };
                let ns = File::open(&path).map_err(io)?;
                crate::runtime::netns::enter(&ns, || self.remove(object)).map_err(io)?
            }
            Object::ContainerFile {
                container_id,
                dir,
                name,
                ..
            } => {
                let rt = self.runtime.as_ref().ok_or(Error::NoTool("a container runtime"))?;
                crate::faults::disk_fill::remove_in_container(rt.as_ref(), container_id, dir, name).map_err(|source| {
                    Error::Remove {
                        path: dir.join(name),
                        source,
                    }
                })
            }
            Object::File { path } => match fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(Error::Remove {
                    path: path.clone(),
                    source,
                }),
            },
            Object::Cgroup { path } => Ok(crate::cgroup::remove(path)?),
        }
    }

    /// Every object on the node that carries the naming of a fault kind
    /// ([`crate::faults::owned`]): chains, tables, qdiscs, and files in
    /// `fill_dirs`.
    pub fn find_orphans(&self, fill_dirs: &[PathBuf]) -> Vec<Object> {
        let mut out = Vec::new();
        for owned in crate::faults::owned() {
            let found: Vec<Object> = match owned {
                Owned::IptablesChains { table, .. } => {
                    let Some(fw) = &self.firewall else { continue };
                    [(Family::V4, false), (Family::V6, true)]
                        .into_iter()
                        .filter_map(|(fam, ipv6)| Some((fw.iptables_save(fam, table).ok()?, ipv6)))
                        .flat_map(|(save, ipv6)| {
                            firewall::chains(&save)
                                .into_iter()
                                .map(move |chain| Object::IptablesChain {
                                    ipv6,
                                    table: table.into(),
                                    chain,
                                })
                        })
                        .collect()
                }
                Owned::NftTables { .. } => {
                    let Some(Ok(tables)) = self.firewall.as_ref().map(|fw| fw.nft_tables()) else {
                        continue;
                    };
                    tables
                        .into_iter()
                        .map(|(family, name)| Object::NftTable { family, name })
                        .collect()
                }
                Owned::RootQdiscs { .. } => {
                    let Some(Ok(roots)) = self.tc.as_ref().map(|tc| tc.roots()) else {
                        continue;
                    };
                    roots
                        .into_iter()
                        .map(|(dev, q)| Object::Qdisc { dev, handle: q.handle })
                        .collect()
                }
                Owned::Files { .. } => fill_dirs
                    .iter()
                    .filter_map(|dir| fs::read_dir(dir).ok())
                    .flat_map(|rd| rd.flatten().map(|e| Object::File { path: e.path() }))
                    .collect(),
                Owned::Cgroups { prefix } => crate::cgroup::find(
                    &self.cgroups.clone().unwrap_or_else(crate::cgroup::Layout::detect),
                    prefix,
                )
                .into_iter()
                .map(|path| Object::Cgroup { path })
                .collect(),
            };
            out.extend(found.into_iter().filter(|o| owned.covers(o)));
        }
        out
    }
}

/// Restores everything in `journal`, then removes orphans (unless `sweep` is
/// off). Returns one line per thing done, for the log and for Hello, and the
/// records that were restored (so their runs can be told).
pub fn recover(journal: &Journal, cleaner: &Cleaner, fill_dirs: &[PathBuf], sweep: bool) -> (Vec<String>, Vec<Record>) {
    let mut lines = Vec::new();
    let mut restored = Vec::new();
    let (records, bad) = match journal.load_files() {
        Ok(x) => x,
        Err(e) => {
            lines.push(format!("cannot read the undo journal: {e}"));
            (Vec::new(), Vec::new())
        }
    };
    for e in bad {
        lines.push(format!("skipped an unreadable undo record: {e}"));
    }
    for (path, rec) in records {
        let mut ok = true;
        for obj in &rec.objects {
            match cleaner.remove(obj) {
                Ok(true) => lines.push(format!("restored {} fault {}: removed {obj}", rec.kind, rec.fault_id)),
                Ok(false) => {}
                Err(e) => {
                    ok = false;
                    lines.push(format!("could not remove {obj} of fault {}: {e}", rec.fault_id));
                }
            }
        }
        if ok {
            if let Err(e) = journal.remove_file(&path) {
                lines.push(format!("could not delete the undo record of {}: {e}", rec.fault_id));
            }
            if !lines.iter().any(|l| l.contains(&format!("fault {}:", rec.fault_id))) {
                lines.push(format!(
                    "undo record of {} fault {} found; its objects were already gone",
                    rec.kind, rec.fault_id
                ));
            }
            restored.push(rec);
        }
    }
    if sweep {
        let (inside, failed) = crate::runtime::sweep::find_orphans(cleaner, fill_dirs);
        lines.extend(failed);
        for obj in cleaner.find_orphans(fill_dirs).into_iter().chain(inside) {
            match cleaner.remove(&obj) {
                Ok(true) => lines.push(format!("removed orphaned {obj}")),
                Ok(false) => {}
                Err(e) => lines.push(format!("could not remove orphaned {obj}: {e}")),
            }
        }
    }
    (lines, restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, objects: Vec<Object>) -> Record {
        Record {
            fault_id: id.into(),
            run_id: "r1".into(),
            kind: "disk_fill".into(),
            created_unix_ms: 1,
            objects,
        }
    }

    #[test]
    fn records_are_written_whole_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let r = rec(
            "r1-1",
            vec![Object::File {
                path: "/x/.faultline-fill-r1-1".into(),
            }],
        );
        j.write(&r).unwrap();
        // No temporary file is left behind by a completed write.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert_eq!(j.load().unwrap().0, vec![r]);
        j.remove("r1-1").unwrap();
        j.remove("r1-1").unwrap();
        assert!(j.load().unwrap().0.is_empty());
    }

    // `c/x`, `c.x` and `c_x` were all written to `undo-c_x.json`.
    #[test]
    fn record_names_are_one_per_fault_id_and_invalid_ids_get_none() {
        assert_eq!(record_name("c_x").unwrap(), "undo-c_x.json");
        assert_ne!(record_name("c-x").unwrap(), record_name("c_x").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        for bad in ["c/x", "c.x", "../x", ""] {
            assert!(matches!(record_name(bad), Err(Error::BadId(_))), "{bad}");
            assert!(j.write(&rec(bad, vec![])).is_err(), "{bad}");
            assert!(j.remove(bad).is_err(), "{bad}");
        }
        assert!(j.load().unwrap().0.is_empty());
    }

    #[test]
    fn recovery_deletes_a_record_an_older_agent_wrote_for_an_id_now_refused() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let old = serde_json::to_vec(&rec("c.x", vec![])).unwrap();
        fs::write(dir.path().join("undo-c_x.json"), old).unwrap();
        let (_, restored) = recover(&j, &Cleaner::default(), &[], false);
        assert_eq!(restored.len(), 1);
        assert!(j.load().unwrap().0.is_empty(), "deleted by its path");
    }

    #[test]
    fn a_second_agent_cannot_open_a_locked_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _j = Journal::open(dir.path()).unwrap();
        let e = Journal::open(dir.path()).err().unwrap();
        assert!(matches!(e, Error::Locked(_)), "{e}");
        assert!(e.to_string().contains("--state-dir"));
    }

    #[test]
    fn recovery_restores_records_skips_corrupt_ones_and_drops_torn_writes() {
        let dir = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let fill = fill_dir.path().join(".faultline-fill-r1-1");
        fs::write(&fill, b"x").unwrap();
        let orphan = fill_dir.path().join(".faultline-fill-r0-9");
        fs::write(&orphan, b"x").unwrap();
        let unrelated = fill_dir.path().join("data.db");
        fs::write(&unrelated, b"x").unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.write(&rec("r1-1", vec![Object::File { path: fill.clone() }]))
            .unwrap();
        fs::write(dir.path().join("undo-broken.json"), b"{not json").unwrap();
        fs::write(dir.path().join(".undo-r1-2.json.tmp"), b"{\"fault_id\":").unwrap();

        let (lines, restored) = recover(&j, &Cleaner::default(), &[fill_dir.path().to_path_buf()], true);
        let text = lines.join("\n");
        assert!(!fill.exists() && !orphan.exists(), "{text}");
        assert!(unrelated.exists(), "only faultline's files are removed");
        assert_eq!(restored.len(), 1);
        assert!(text.contains("restored disk_fill fault r1-1: removed file"), "{text}");
        assert!(text.contains("removed orphaned file"), "{text}");
        assert!(text.contains("unreadable undo record"), "{text}");
        assert!(!dir.path().join(".undo-r1-2.json.tmp").exists());
        assert!(j.load().unwrap().0.is_empty());
    }

    #[test]
    fn sweep_off_leaves_unjournaled_objects_alone() {
        let dir = tempfile::tempdir().unwrap();
        let fill_dir = tempfile::tempdir().unwrap();
        let orphan = fill_dir.path().join(".faultline-fill-r0-9");
        fs::write(&orphan, b"x").unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let (lines, _) = recover(&j, &Cleaner::default(), &[fill_dir.path().to_path_buf()], false);
        assert!(lines.is_empty() && orphan.exists());
    }
}
