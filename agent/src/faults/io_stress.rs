//! `io_stress` fault: worker processes that write and/or read their own
//! file, `.faultline-io-<fault id>-<n>`, in a directory under the agent's
//! allowed fill paths, round and round, optionally at a total rate. The
//! workers run in the cgroup `faultline-io-stress-<fault id>` (see
//! [`super::stress`]); restore kills them and removes their files.
//!
//! IO goes through the page cache: at the end of each pass over its file a
//! worker `fdatasync`s it and drops its cached pages
//! (`POSIX_FADV_DONTNEED`), so on a filesystem with a device both the writes
//! and the reads reach it. `read` writes the file once first (counted as
//! written); `mixed` writes a block and reads it back. The bytes each worker
//! moved are counted in a shared anonymous mapping the agent reads at
//! restore (the achieved rate).
//!
//! Safety: the directory must be under an allowed fill path (none by
//! default), and the files may not take the filesystem past the agent's
//! maximum used percentage (the disk_fill cap).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;
use nix::libc;

use super::disk_fill::{FillPolicy, Space};
use super::stress::{self, exit_if_orphaned, now_ns, sleep_ns, Error, Group, Stress, Work};
use crate::cgroup;
use crate::faults::{Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::journal::{Object, Owned};

const KIND_NAME: &str = "io_stress";

/// The start of this kind's cgroup names (swept by name).
pub const CGROUP_PREFIX: &str = "faultline-io-stress-";
/// The start of the workers' file names (swept in the allowed fill paths).
pub const FILE_PREFIX: &str = ".faultline-io-";

/// What a worker does with its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Read,
    Mixed,
}

/// A validated IO stress.
#[derive(Debug, Clone, PartialEq)]
pub struct IoStressSpec {
    pub path: PathBuf,
    pub workers: u32,
    pub mode: Mode,
    pub block_bytes: u64,
    /// Total over all workers; 0: unlimited.
    pub rate_bytes_per_second: u64,
    pub file_bytes: u64,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        kind: KIND_NAME,
        message: message.into(),
    }
}

impl TryFrom<v1::IoStressSpec> for IoStressSpec {
    type Error = Error;

    fn try_from(w: v1::IoStressSpec) -> Result<Self, Error> {
        if !w.path.starts_with('/') {
            return Err(invalid(format!("path {:?} must be absolute", w.path)));
        }
        let mode = match w.mode.as_str() {
            "" | "write" => Mode::Write,
            "read" => Mode::Read,
            "mixed" => Mode::Mixed,
            m => return Err(invalid(format!("mode {m:?}: use write, read or mixed"))),
        };
        let workers = if w.workers == 0 { 1 } else { w.workers };
        if workers > 64 {
            return Err(invalid(format!("{workers} workers: at most 64")));
        }
        let block_bytes = if w.block_bytes == 0 { 1 << 20 } else { w.block_bytes };
        if !(512..=(64 << 20)).contains(&block_bytes) {
            return Err(invalid(format!("block_bytes {block_bytes}: within 512 B ..= 64 MiB")));
        }
        let file_bytes = if w.file_bytes == 0 { 64 << 20 } else { w.file_bytes };
        if file_bytes < block_bytes {
            return Err(invalid(format!(
                "file_bytes {file_bytes} is smaller than block_bytes {block_bytes}"
            )));
        }
        Ok(IoStressSpec {
            path: PathBuf::from(w.path),
            workers,
            mode,
            block_bytes,
            rate_bytes_per_second: w.rate_bytes_per_second,
            file_bytes,
        })
    }
}

/// The file of worker `n` of a fault.
pub fn file_name(fault_id: &str, n: u32) -> Option<String> {
    faultline_proto::ids::validate_fault_id(fault_id).ok()?;
    Some(format!("{FILE_PREFIX}{fault_id}-{n}"))
}

const CONTROLLERS: &[&str] = &["cpu"];

pub const KIND: Registration = Registration {
    name: KIND_NAME,
    owns: &[
        Owned::Cgroups { prefix: CGROUP_PREFIX },
        Owned::Files { prefix: FILE_PREFIX },
    ],
    takes: |w| matches!(w, v1::fault_spec::Kind::IoStress(_)),
    backend: "cgroup",
    build: |s: &Setup| {
        Arc::new(IoStress {
            stress: s.stress.clone(),
            fill: s.fill.clone(),
        })
    },
};

struct IoStress {
    stress: Option<Stress>,
    fill: FillPolicy,
}

impl FaultKind for IoStress {
    fn capabilities(&self) -> Vec<String> {
        Stress::capabilities(&self.stress, CONTROLLERS, KIND_NAME)
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &crate::faults::Place,
    ) -> crate::faults::Result<Box<dyn Prepared>> {
        crate::faults::refuse_containers(KIND.name, place)?;
        let v1::fault_spec::Kind::IoStress(w) = spec else {
            return Err(invalid("not an io_stress spec").into());
        };
        let spec = IoStressSpec::try_from(w)?;
        let stress = Stress::usable_or_refuse(
            &self.stress,
            CONTROLLERS,
            "this agent cannot create cpu cgroups for IO workers (it needs root)",
        )?;
        let refused = |m: String| crate::faults::Error::from(Error::Refused(m));
        let dir = spec
            .path
            .canonicalize()
            .map_err(|e| refused(format!("path {}: {e}", spec.path.display())))?;
        let allowed = self
            .fill
            .allowed
            .iter()
            .filter_map(|a| a.canonicalize().ok())
            .any(|a| dir.starts_with(&a));
        if !dir.is_dir() || !allowed {
            return Err(refused(format!(
                "path {} is not a directory under the agent's allowed fill paths; allow it with --allow-fill DIR",
                dir.display()
            )));
        }
        let space = Space::of(&dir).map_err(|e| refused(e.to_string()))?;
        let bytes = spec.file_bytes.saturating_mul(spec.workers as u64);
        let after = space.used_percent(bytes);
        if bytes > space.available || after > self.fill.max_used_percent + 1e-9 {
            return Err(refused(format!(
                "{bytes} bytes of IO files would leave {} {after:.1}% used, over the agent's maximum of {}%",
                dir.display(),
                self.fill.max_used_percent
            )));
        }
        let name = cgroup::name(CGROUP_PREFIX, fault_id)
            .ok_or_else(|| invalid(format!("fault id {fault_id:?} is not a valid id")))?;
        let dirs = cgroup::dirs(&stress.layout, CONTROLLERS, &name).map_err(Error::from)?;
        let files = (0..spec.workers)
            .map(|n| file_name(fault_id, n).map(|f| dir.join(f)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("invalid fault id"))?;
        Ok(Box::new(PreparedIo { spec, dirs, files }))
    }
}

struct PreparedIo {
    spec: IoStressSpec,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Prepared for PreparedIo {
    fn undo_objects(&self) -> Vec<Object> {
        // The cgroup first: its workers are killed before their files go.
        let mut out: Vec<Object> = self.dirs.iter().map(|d| Object::Cgroup { path: d.clone() }).collect();
        out.extend(self.files.iter().map(|f| Object::File { path: f.clone() }));
        out
    }

    fn preview(&self) -> crate::faults::Result<(String, String)> {
        Ok((
            format!(
                "would start {} IO worker(s) ({:?}, {} B blocks) on {}",
                self.spec.workers,
                self.spec.mode,
                self.spec.block_bytes,
                self.files[0].display()
            ),
            "cgroup".into(),
        ))
    }

    fn apply(self: Box<Self>) -> crate::faults::Result<Box<dyn Applied>> {
        let n = self.spec.workers as usize;
        let counters = Counters::new(n).map_err(Error::Fork)?;
        let paths: Vec<CString> = self
            .files
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(|_| invalid("path contains a NUL byte")))
            .collect::<Result<_, _>>()?;
        let buf = vec![0x5au8; self.spec.block_bytes as usize];
        let rate = self.spec.rate_bytes_per_second.div_ceil(self.spec.workers as u64);
        let group = stress::start(self.dirs.clone(), &[], self.spec.workers, None, &|i| {
            Work::Io(IoWork {
                path: paths[i as usize].as_ptr(),
                buf: buf.as_ptr(),
                block: self.spec.block_bytes as usize,
                file_bytes: self.spec.file_bytes,
                mode: self.spec.mode,
                rate,
                counters: counters.worker(i as usize),
            })
        });
        let group = match group {
            Ok(g) => g,
            Err(e) => {
                for f in &self.files {
                    let _ = std::fs::remove_file(f);
                }
                return Err(e.into());
            }
        };
        Ok(Box::new(AppliedIo {
            files: self.files,
            group,
            counters,
        }))
    }
}

/// Per-worker byte counters (written, read) in a shared anonymous mapping,
/// so the agent sees what its forked workers did.
pub struct Counters {
    ptr: *mut AtomicU64,
    len: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Counters {}

impl Counters {
    fn new(workers: usize) -> Result<Counters, nix::Error> {
        let len = workers * 2 * std::mem::size_of::<AtomicU64>();
        // SAFETY: a fresh shared anonymous mapping (zeroed by the kernel).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(nix::Error::last());
        }
        Ok(Counters {
            ptr: p.cast(),
            len: workers * 2,
        })
    }

    fn worker(&self, i: usize) -> *const AtomicU64 {
        // SAFETY: i < workers, so i*2+1 < len.
        unsafe { self.ptr.add(i * 2) }
    }

    /// Bytes written and read by all workers so far.
    pub fn totals(&self) -> (u64, u64) {
        // SAFETY: within the mapping; AtomicU64 has no invalid bit patterns.
        let at = |i: usize| unsafe { (*self.ptr.add(i)).load(Ordering::Relaxed) };
        (0..self.len / 2).fold((0, 0), |(w, r), i| (w + at(i * 2), r + at(i * 2 + 1)))
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of this length.
        unsafe { libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<AtomicU64>()) };
    }
}

pub struct AppliedIo {
    files: Vec<PathBuf>,
    group: Group,
    counters: Counters,
}

fn observation(files: &[PathBuf], g: &Group, (w, r): (u64, u64), elapsed: Duration) -> v1::IoStressObservation {
    v1::IoStressObservation {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        cgroup: g
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        pids: stress::wire_pids(g),
        bytes_written: w,
        bytes_read: r,
        achieved_bytes_per_second: if elapsed.is_zero() {
            0.0
        } else {
            (w + r) as f64 / elapsed.as_secs_f64()
        },
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

impl Applied for AppliedIo {
    fn backend(&self) -> String {
        "cgroup".into()
    }

    fn injected(&self) -> Report {
        let o = observation(&self.files, &self.group, (0, 0), Duration::ZERO);
        Report {
            detail: format!(
                "started {} IO worker(s) (pids {:?}) on {}",
                o.pids.len(),
                o.pids,
                o.files.join(", ")
            ),
            observation: Some(v1::observation::Kind::IoStress(o)),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let AppliedIo { files, group, counters } = *self;
        let elapsed = group.started.elapsed();
        let skeleton = observation(&files, &group, (0, 0), elapsed);
        let stopped = stress::stop(group);
        // Read once the workers are dead: the counts are final.
        let totals = counters.totals();
        let empty = Group {
            dirs: Vec::new(),
            pids: Vec::new(),
            started: std::time::Instant::now(),
        };
        let o = v1::IoStressObservation {
            cgroup: skeleton.cgroup,
            pids: skeleton.pids,
            ..observation(&files, &empty, totals, elapsed)
        };
        let mut removed = Ok(());
        for f in &files {
            match std::fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    removed = Err(crate::journal::Error::Remove {
                        path: f.clone(),
                        source,
                    })
                }
            }
        }
        Box::pin(async move {
            stopped?;
            removed.map_err(|e| crate::faults::Error::Failed(Box::new(e)))?;
            Ok(Report {
                detail: format!(
                    "stopped the IO workers and removed their files: {} bytes written, {} read, {:.1} MiB/s over {:.1}s",
                    o.bytes_written,
                    o.bytes_read,
                    o.achieved_bytes_per_second / (1 << 20) as f64,
                    elapsed.as_secs_f64()
                ),
                observation: Some(v1::observation::Kind::IoStress(o)),
            })
        })
    }
}

/// What one IO worker is given (pointers into the agent's memory, valid in
/// the forked child's copy of it).
#[derive(Debug, Clone, Copy)]
pub struct IoWork {
    path: *const libc::c_char,
    buf: *const u8,
    block: usize,
    file_bytes: u64,
    mode: Mode,
    /// Bytes per second for this worker; 0: unlimited.
    rate: u64,
    /// This worker's two counters: written, read.
    counters: *const AtomicU64,
}

/// The worker's loop: async-signal-safe system calls and atomics only.
pub(super) fn io(w: IoWork, watch: stress::Watch) -> ! {
    // SAFETY: the pointers point into this process's copy of memory the
    // agent prepared before the fork; the buffer is this process's own.
    unsafe {
        let fd = libc::open(w.path, libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o600);
        if fd < 0 {
            libc::_exit(3);
        }
        let (written, read) = (&*w.counters, &*w.counters.add(1));
        let buf = w.buf as *mut libc::c_void;
        let block = w.block;
        let end_of_pass = |fd: i32| {
            libc::fdatasync(fd);
            libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
        };
        if w.mode == Mode::Read {
            let mut off = 0u64;
            while off < w.file_bytes {
                let n = libc::pwrite(fd, buf, block, off as libc::off_t);
                if n <= 0 {
                    break;
                }
                written.fetch_add(n as u64, Ordering::Relaxed);
                off += n as u64;
            }
            end_of_pass(fd);
        }
        let start = now_ns();
        let mut last_check = start;
        let mut done: u64 = 0;
        let mut off: u64 = 0;
        let mut writing = w.mode != Mode::Read;
        loop {
            let n = if writing {
                libc::pwrite(fd, buf, block, off as libc::off_t)
            } else {
                libc::pread(fd, buf, block, off as libc::off_t)
            };
            if n > 0 {
                let counter = if writing { written } else { read };
                counter.fetch_add(n as u64, Ordering::Relaxed);
                done += n as u64;
            } else if n < 0 {
                // ENOSPC and the like: keep the pressure, slowly.
                sleep_ns(10_000_000);
            }
            // Mixed: write a block, then read it back before moving on.
            let advance = match w.mode {
                Mode::Mixed => !writing,
                _ => true,
            };
            if w.mode == Mode::Mixed {
                writing = !writing;
            }
            if advance {
                off += block as u64;
                if off + block as u64 > w.file_bytes || n == 0 {
                    off = 0;
                    end_of_pass(fd);
                }
            }
            let now = now_ns();
            if w.rate > 0 {
                let due = start + (done as u128 * 1_000_000_000 / w.rate as u128) as u64;
                if due > now {
                    sleep_ns(due - now);
                }
            }
            if now.saturating_sub(last_check) >= stress::PERIOD.as_nanos() as u64 {
                exit_if_orphaned(watch);
                last_check = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_default_to_one_writer_of_1_mib_blocks_and_refuse_bad_modes() {
        let s = IoStressSpec::try_from(v1::IoStressSpec {
            path: "/tmp".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (s.workers, s.mode, s.block_bytes, s.file_bytes),
            (1, Mode::Write, 1 << 20, 64 << 20)
        );
        for w in [
            v1::IoStressSpec {
                path: "tmp".into(),
                ..Default::default()
            },
            v1::IoStressSpec {
                path: "/tmp".into(),
                mode: "append".into(),
                ..Default::default()
            },
            v1::IoStressSpec {
                path: "/tmp".into(),
                block_bytes: 2 << 20,
                file_bytes: 1 << 20,
                ..Default::default()
            },
        ] {
            assert!(IoStressSpec::try_from(w).unwrap_err().is_refusal());
        }
    }

    #[test]
    fn file_names_carry_the_prefix_and_the_worker() {
        assert_eq!(file_name("r1-1", 2).unwrap(), ".faultline-io-r1-1-2");
        assert!(file_name("../x", 0).is_none());
    }
}
