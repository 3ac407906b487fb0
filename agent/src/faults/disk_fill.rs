//! `disk_fill` fault: allocate one file, `.faultline-fill-<fault_id>`, in a
//! directory, so the filesystem runs short of space; restore unlinks it.
//!
//! `fallocate` reserves the blocks without writing them, so even gigabytes
//! are filled in milliseconds; filesystems without it (some network and
//! FUSE filesystems) get zeros written in 1 MiB chunks instead. The file name
//! carries the fault id so the agent only ever removes files it created.
//!
//! Safety: the directory must be under one of the agent's allowed paths
//! (none by default: every fill is refused until the operator allows a
//! path), and the fill is refused if it would leave the filesystem more than
//! the agent's maximum used percentage full.
//!
//! "Used %" is what `df` shows: used / (used + available), where used is
//! total − free. Filesystems keep a reserve (ext4: 5 % by default) that only
//! root may write: it is free but not available, so counted against total a
//! 95 % cap would leave ordinary programs no space at all. Against used +
//! available, 100 % is exactly the point where they get ENOSPC. (`df` rounds
//! the figure up to a whole percent; the agent keeps the exact ratio.)

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use faultline_proto::v1;

use crate::faults::{self, Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::journal::{Object, Owned};

mod container;
pub use container::open_in_root;
pub use container::remove as remove_in_container;

/// The start of every fill file's name; the orphan sweep removes files
/// named so in the allowed fill paths.
pub const FILL_PREFIX: &str = ".faultline-fill-";

/// Bytes written per chunk by the write fallback.
const CHUNK: usize = 1 << 20;

/// Errors of the disk_fill fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid disk_fill spec: {0}")]
    InvalidSpec(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("cannot fill {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Refused(_))
    }
}

/// How much to fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    UsedPercent(f64),
    LeaveFree(u64),
}

/// A validated fill request.
#[derive(Debug, Clone)]
pub struct DiskFillSpec {
    pub path: PathBuf,
    pub amount: Amount,
}

impl TryFrom<v1::DiskFillSpec> for DiskFillSpec {
    type Error = Error;

    fn try_from(w: v1::DiskFillSpec) -> Result<Self, Error> {
        if w.path.is_empty() {
            return Err(Error::InvalidSpec("path is empty".into()));
        }
        let set = [w.size_bytes > 0, w.target_used_percent > 0.0, w.leave_free_bytes > 0];
        let amount = match set {
            [true, false, false] => Amount::Bytes(w.size_bytes),
            [false, true, false] if w.target_used_percent <= 100.0 => Amount::UsedPercent(w.target_used_percent),
            [false, true, false] => {
                return Err(Error::InvalidSpec(format!(
                    "target_used_percent {} is over 100",
                    w.target_used_percent
                )))
            }
            [false, false, true] => Amount::LeaveFree(w.leave_free_bytes),
            _ => {
                return Err(Error::InvalidSpec(
                    "set exactly one of size_bytes, target_used_percent, leave_free_bytes".into(),
                ))
            }
        };
        Ok(DiskFillSpec {
            path: PathBuf::from(w.path),
            amount,
        })
    }
}

/// Where fills may go and how full they may make a filesystem.
#[derive(Debug, Clone)]
pub struct FillPolicy {
    /// Directories (and everything below them) fills may target. By
    /// default, none: fills are refused until the operator allows a path.
    pub allowed: Vec<PathBuf>,
    /// Highest used percentage a fill may leave behind, as `df` counts it
    /// (see the module docs). By default, 95 %.
    pub max_used_percent: f64,
}

impl Default for FillPolicy {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            max_used_percent: 95.0,
        }
    }
}

/// Size of a filesystem, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub total: u64,
    /// Available to unprivileged users (what applications see).
    pub available: u64,
    /// Total minus free (free includes the root-only reserve).
    pub used: u64,
}

impl Space {
    /// Reads the filesystem holding `path`.
    pub fn of(path: &Path) -> Result<Space, Error> {
        let st = nix::sys::statvfs::statvfs(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Space::from_blocks(
            st.fragment_size() as u64,
            st.blocks() as u64,
            st.blocks_free() as u64,
            st.blocks_available() as u64,
        ))
    }

    /// From statvfs figures: fragment size, and total, free and available
    /// blocks (in fragments), as `df` reads them.
    pub fn from_blocks(fragment_size: u64, blocks: u64, free: u64, available: u64) -> Space {
        let total = blocks.saturating_mul(fragment_size);
        Space {
            total,
            available: available.saturating_mul(fragment_size),
            used: total.saturating_sub(free.saturating_mul(fragment_size)),
        }
    }

    /// What `used + available` adds up to: the space programs can fill.
    fn usable(&self) -> u64 {
        self.used.saturating_add(self.available)
    }

    /// Used percentage as `df` counts it, after `extra` more bytes are
    /// allocated: (used + extra) / (used + available), unrounded.
    pub fn used_percent(&self, extra: u64) -> f64 {
        if self.usable() == 0 {
            return 100.0;
        }
        self.used.saturating_add(extra) as f64 * 100.0 / self.usable() as f64
    }

    /// `df`'s Use% column: [`Space::used_percent`] rounded up to a whole percent.
    pub fn df_use_percent(&self) -> u64 {
        match self.usable() {
            0 => 100,
            u => (self.used as u128 * 100).div_ceil(u as u128) as u64,
        }
    }
}

/// Bytes to allocate for `amount` on a filesystem of `space`.
pub fn bytes_for(amount: Amount, space: Space) -> Result<u64, Error> {
    let n = match amount {
        Amount::Bytes(n) => n,
        Amount::UsedPercent(p) => {
            let target = (space.usable() as f64 * p / 100.0) as u64;
            if target <= space.used {
                return Err(Error::Refused(format!(
                    "the filesystem is already {:.1}% used (as df counts it), at or above the requested {p}%",
                    space.used_percent(0)
                )));
            }
            target - space.used
        }
        Amount::LeaveFree(keep) => {
            if space.available <= keep {
                return Err(Error::Refused(format!(
                    "only {} bytes are available, not more than the {keep} to leave free",
                    space.available
                )));
            }
            space.available - keep
        }
    };
    if n > space.available {
        return Err(Error::Refused(format!(
            "{n} bytes requested but only {} are available",
            space.available
        )));
    }
    Ok(n)
}

/// A fill that is in place.
#[derive(Debug)]
pub struct AppliedFill {
    pub observation: v1::DiskFillObservation,
    file: PathBuf,
}

impl AppliedFill {
    /// Unlinks the fill file.
    pub fn restore(self) -> Result<v1::DiskFillObservation, Error> {
        match std::fs::remove_file(&self.file) {
            Ok(()) => Ok(self.observation),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.observation),
            Err(source) => Err(Error::Io {
                path: self.file,
                source,
            }),
        }
    }
}

/// The fill file's name for `fault_id`: `.faultline-fill-<fault id>`.
/// Injective because only valid fault ids (`faultline_proto::ids`: letters,
/// digits, `_`, `-`; never `/` or `.`) get one, and those are file names as
/// they are.
pub fn fill_file_name(fault_id: &str) -> Result<String, Error> {
    faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    Ok(format!("{FILL_PREFIX}{fault_id}"))
}

/// A fill that passed every check and has its size, not yet allocated.
struct Checked {
    dir: PathBuf,
    file: PathBuf,
    space: Space,
    bytes: u64,
    after: f64,
}

/// Checks the policy and sizes the fill, touching nothing.
fn check(fault_id: &str, spec: &DiskFillSpec, policy: &FillPolicy) -> Result<Checked, Error> {
    let name = fill_file_name(fault_id)?;
    let dir = spec
        .path
        .canonicalize()
        .map_err(|e| Error::Refused(format!("path {}: {e}", spec.path.display())))?;
    if !dir.is_dir() {
        return Err(Error::Refused(format!("path {} is not a directory", dir.display())));
    }
    let allowed = policy
        .allowed
        .iter()
        .filter_map(|a| a.canonicalize().ok())
        .any(|a| dir.starts_with(&a));
    if !allowed {
        return Err(Error::Refused(format!(
            "path {} is outside the agent's allowed fill paths ({}); allow it with --allow-fill DIR (on faultline-agent, or on faultline run/plan/gameday in local mode)",
            dir.display(),
            if policy.allowed.is_empty() {
                "none allowed".to_string()
            } else {
                policy
                    .allowed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    let space = Space::of(&dir)?;
    let bytes = bytes_for(spec.amount, space)?;
    let after = space.used_percent(bytes);
    if after > policy.max_used_percent + 1e-9 {
        return Err(Error::Refused(format!(
            "the fill would leave {} {after:.1}% used (as df counts it), over the agent's maximum of {}%",
            dir.display(),
            policy.max_used_percent
        )));
    }
    Ok(Checked {
        file: dir.join(name),
        dir,
        space,
        bytes,
        after,
    })
}

/// What [`apply`] would do, in words, touching nothing (a dry run).
pub fn preview(fault_id: &str, spec: &DiskFillSpec, policy: &FillPolicy) -> Result<String, Error> {
    let c = check(fault_id, spec, policy)?;
    Ok(format!(
        "would allocate {} bytes in {} ({:.1}% -> {:.1}% used, as df counts it)",
        c.bytes,
        c.file.display(),
        c.space.used_percent(0),
        c.after
    ))
}

/// Checks the policy, sizes and allocates the fill file.
pub fn apply(fault_id: &str, spec: &DiskFillSpec, policy: &FillPolicy) -> Result<AppliedFill, Error> {
    let Checked {
        dir,
        file,
        space,
        bytes,
        after,
    } = check(fault_id, spec, policy)?;
    let io = |source| Error::Io {
        path: file.clone(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(io)?;
    let method = allocate(&mut f, bytes).inspect_err(|_| {
        let _ = std::fs::remove_file(&file);
    });
    let method = method.map_err(io)?;
    Ok(AppliedFill {
        observation: v1::DiskFillObservation {
            file: file.display().to_string(),
            bytes,
            method: method.into(),
            used_percent_before: space.used_percent(0),
            used_percent_after: Space::of(&dir).map(|s| s.used_percent(0)).unwrap_or(after),
        },
        file,
    })
}

/// Reserves `bytes` in `f`: `fallocate`, or zeros written where the
/// filesystem lacks it. Returns the method used.
fn allocate(f: &mut std::fs::File, bytes: u64) -> std::io::Result<&'static str> {
    match nix::fcntl::fallocate(&*f, nix::fcntl::FallocateFlags::empty(), 0, bytes as i64) {
        Ok(()) => Ok("fallocate"),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let zeros = vec![0u8; CHUNK];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            Ok("write")
        }
        Err(e) => Err(e.into()),
    }
}

/// The disk_fill kind: one file per fault, named by [`fill_file_name`].
pub const KIND: Registration = Registration {
    name: "disk_fill",
    owns: &[Owned::Files { prefix: FILL_PREFIX }],
    takes: |w| matches!(w, v1::fault_spec::Kind::DiskFill(_)),
    backend: "fallocate",
    build: |s: &Setup| {
        Arc::new(DiskFill {
            policy: s.fill.clone(),
            runtime: s.runtime.clone(),
        })
    },
};

impl From<Error> for faults::Error {
    fn from(e: Error) -> Self {
        let refusal = e.is_refusal();
        faults::Error::of(e, refusal)
    }
}

/// Disk fills on this node, within `policy`.
struct DiskFill {
    policy: FillPolicy,
    runtime: Option<Arc<dyn crate::runtime::ContainerRuntime>>,
}

impl FaultKind for DiskFill {
    fn capabilities(&self) -> Vec<String> {
        vec![KIND.name.into()]
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &faults::Place,
    ) -> faults::Result<Box<dyn Prepared>> {
        let v1::fault_spec::Kind::DiskFill(w) = spec else {
            return Err(Error::InvalidSpec("not a disk_fill spec".into()).into());
        };
        let spec = DiskFillSpec::try_from(w)?;
        if let (faults::Place::Containers { containers, .. }, Some(rt)) = (place, &self.runtime) {
            return Ok(Box::new(container::PreparedFills::new(
                fault_id,
                spec,
                containers,
                &self.policy,
                rt.clone(),
            )?));
        }
        // The file apply creates, as check() will name it (a path that does
        // not resolve is refused there).
        let dir = spec.path.canonicalize().unwrap_or_else(|_| spec.path.clone());
        let file = dir.join(fill_file_name(fault_id)?);
        Ok(Box::new(PreparedFill {
            fault_id: fault_id.to_string(),
            spec,
            file,
            policy: self.policy.clone(),
        }))
    }
}

struct PreparedFill {
    fault_id: String,
    spec: DiskFillSpec,
    file: PathBuf,
    policy: FillPolicy,
}

impl Prepared for PreparedFill {
    fn undo_objects(&self) -> Vec<Object> {
        vec![Object::File {
            path: self.file.clone(),
        }]
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let detail = preview(&self.fault_id, &self.spec, &self.policy)?;
        Ok((detail, KIND.backend.into()))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        Ok(Box::new(apply(&self.fault_id, &self.spec, &self.policy)?))
    }
}

impl Applied for AppliedFill {
    fn backend(&self) -> String {
        self.observation.method.clone()
    }

    fn injected(&self) -> Report {
        let o = &self.observation;
        Report {
            detail: format!(
                "allocated {} bytes in {} with {} ({:.1}% -> {:.1}% used)",
                o.bytes, o.file, o.method, o.used_percent_before, o.used_percent_after
            ),
            observation: Some(v1::observation::Kind::DiskFill(o.clone())),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let result = AppliedFill::restore(*self);
        Box::pin(async move {
            let o = result?;
            Ok(Report {
                detail: format!("removed {}", o.file),
                observation: Some(v1::observation::Kind::DiskFill(o)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn space(used: u64, avail: u64) -> Space {
        Space {
            total: 10 * GIB,
            available: avail,
            used,
        }
    }

    #[test]
    fn amounts_are_sized_against_the_filesystem() {
        let s = space(4 * GIB, 6 * GIB);
        assert_eq!(bytes_for(Amount::Bytes(GIB), s).unwrap(), GIB);
        assert_eq!(bytes_for(Amount::UsedPercent(50.0), s).unwrap(), GIB);
        assert_eq!(bytes_for(Amount::LeaveFree(GIB), s).unwrap(), 5 * GIB);
        assert!(bytes_for(Amount::UsedPercent(30.0), s).unwrap_err().is_refusal());
        assert!(bytes_for(Amount::Bytes(7 * GIB), s).unwrap_err().is_refusal());
    }

    #[test]
    fn a_path_outside_the_allowed_list_is_refused_before_writing() {
        let dir = std::env::temp_dir();
        let spec = DiskFillSpec {
            path: dir.clone(),
            amount: Amount::Bytes(1),
        };
        let err = apply("f-1", &spec, &FillPolicy::default()).unwrap_err();
        assert!(err.is_refusal() && err.to_string().contains("--allow-fill"), "{err}");
        assert!(!dir.join(fill_file_name("f-1").unwrap()).exists());
    }

    // ext4-like: 1000 blocks of 4 KiB, 100 free of which 50 are the root
    // reserve (5 %). df: used = 1000 - 100 = 900, Use% = ceil(900 / (900 +
    // 50)) = ceil(94.74) = 95 %. Counted against total it would be 90 %.
    #[test]
    fn used_percent_is_what_df_shows_with_a_reserve() {
        let s = Space::from_blocks(4096, 1000, 100, 50);
        assert_eq!((s.used, s.available), (900 * 4096, 50 * 4096));
        assert!((s.used_percent(0) - 94.736_842).abs() < 1e-3, "{}", s.used_percent(0));
        assert_eq!(s.df_use_percent(), 95);
        assert_eq!(s.used_percent(0).ceil() as u64, s.df_use_percent());
        // Filling what is available is 100 % for df, whatever the reserve.
        assert!((s.used_percent(s.available) - 100.0).abs() < 1e-9);
        // A target percentage is reached as df will show it.
        let bytes = bytes_for(Amount::UsedPercent(97.0), s).unwrap();
        let after = Space::from_blocks(4096, 1000, 100 - bytes / 4096, 50 - bytes / 4096);
        assert_eq!(after.df_use_percent(), 97);
        // And the cap counts the same way: 96 % of total is over a 95 % cap.
        let policy_cap = 95.0;
        assert!(s.used_percent(20 * 4096) > policy_cap);
        assert!(
            ((900 + 20) as f64 * 100.0 / 1000.0) < policy_cap,
            "old formula would allow it"
        );
    }

    #[test]
    fn fill_file_names_are_refused_for_ids_outside_the_rule() {
        assert_eq!(fill_file_name("r1-1").unwrap(), ".faultline-fill-r1-1");
        for bad in ["c/x", "c.x", ".x", "", "../x"] {
            assert!(fill_file_name(bad).unwrap_err().is_refusal(), "{bad}");
        }
    }

    #[test]
    fn spec_needs_exactly_one_amount() {
        let err = DiskFillSpec::try_from(v1::DiskFillSpec {
            path: "/tmp".into(),
            size_bytes: 1,
            leave_free_bytes: 1,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.is_refusal(), "{err}");
    }
}
