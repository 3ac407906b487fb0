//! What `cpu_stress` and `memory_stress` share: stressor processes in a
//! cgroup of their own, and how they are started, measured and stopped.
//!
//! # How a stressor is started (and why so)
//!
//! A stressor is a `fork`ed child of the agent, not an external tool
//! (`stress-ng` allocates less than asked and is one more package) and not a
//! re-exec of the agent binary (an in-process agent, as in local mode or the
//! tests, has no agent binary to re-exec). Forking a multi-threaded process
//! is safe only if the child calls nothing but async-signal-safe functions
//! until it exits, so the child here never allocates, locks or unwinds:
//! everything it needs (the cgroup files, opened; the numbers) is prepared
//! before the fork, and after it the child makes raw system calls only:
//! 1. joins the fault's process group and writes `0` (itself) into each of
//!    the fault's cgroups' `cgroup.procs` (the agent also writes the child's
//!    pid there, so the child is in the cgroup when `apply` returns);
//! 2. resets every signal to its default action and unblocks them (it must
//!    not run the agent's SIGTERM handler), closes every inherited file
//!    descriptor (the journal's lock, sockets) with `close_range`;
//! 3. lowers itself to nice 19 and, for memory, sets `oom_score_adj` 1000 so
//!    the kernel's OOM killer picks it first;
//! 4. does the work, checking every 100 ms that its parent is still the
//!    agent: when the agent dies the child exits by itself.
//!
//! # Owned like every other fault
//!
//! The cgroup, `faultline-<kind>-stress-<fault id>`, is in the undo record before
//! the first fork. Restore (on request, lease expiry, shutdown) and a
//! restarted agent's recovery both kill every process in it and remove it;
//! the orphan sweep finds any cgroup named so. The agent is never starved:
//! CPU stressors run at nice 19 in a cgroup whose CFS quota is the load
//! asked for, which the agent's policy caps below the whole node (90 % by
//! default), so the rest is always left to the agent and everything else;
//! memory stressors have a memory limit of what was asked plus a small
//! headroom and `oom_score_adj` 1000, so the OOM killer acts inside their
//! cgroup, not on the node, and takes the stressor first.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, setpgid, ForkResult, Pid};

use crate::cgroup::{self, Layout};

/// How often a stressor checks its parent, and a CPU worker's period.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Errors of the stress faults.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {kind} spec: {message}")]
    InvalidSpec { kind: &'static str, message: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error("cannot start a stressor: {0}")]
    Fork(nix::Error),
}

impl Error {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::InvalidSpec { .. } | Error::Refused(_))
    }
}

impl From<Error> for crate::faults::Error {
    fn from(e: Error) -> Self {
        let refusal = e.is_refusal();
        crate::faults::Error::of(e, refusal)
    }
}

/// How much of the node stress faults may take (the operator's caps).
#[derive(Debug, Clone)]
pub struct StressPolicy {
    /// Highest total CPU load of one fault, in percent of the whole node
    /// (all cores). By default 90 %: the agent and sshd keep a share even
    /// before the low CPU weight is counted.
    pub max_cpu_percent: f64,
    /// Highest memory one fault may hold, in percent of the node's
    /// available memory (MemAvailable) when it starts. By default 80 %.
    pub max_memory_percent: f64,
}

impl Default for StressPolicy {
    fn default() -> Self {
        Self {
            max_cpu_percent: 90.0,
            max_memory_percent: 80.0,
        }
    }
}

/// What this node offers stress faults: its cgroup layout and the caps.
#[derive(Debug, Clone)]
pub struct Stress {
    pub layout: Layout,
    pub policy: StressPolicy,
}

impl Stress {
    /// The controllers' hierarchies exist and this process may create
    /// cgroups in them.
    pub fn usable(&self, controllers: &[&'static str]) -> bool {
        controllers.iter().all(|c| {
            self.layout
                .hierarchy(c)
                .is_ok_and(|d| nix::unistd::access(&d, nix::unistd::AccessFlags::W_OK).is_ok())
        })
    }

    /// The capability `kind` advertises: itself when `stress` can make
    /// cgroups in `controllers`, nothing otherwise.
    pub fn capabilities(stress: &Option<Stress>, controllers: &[&'static str], kind: &str) -> Vec<String> {
        match stress {
            Some(s) if s.usable(controllers) => vec![kind.into()],
            _ => vec![],
        }
    }

    /// `stress` if it can make cgroups in `controllers`; otherwise the
    /// refusal `why` (which says what the agent needs).
    pub fn usable_or_refuse(stress: &Option<Stress>, controllers: &[&'static str], why: &str) -> Result<Stress, Error> {
        stress
            .clone()
            .filter(|s| s.usable(controllers))
            .ok_or_else(|| Error::Refused(why.into()))
    }
}

/// MemAvailable of `/proc/meminfo`, in bytes.
pub fn mem_available() -> Option<u64> {
    meminfo("MemAvailable:")
}

/// MemTotal of `/proc/meminfo`, in bytes.
pub fn mem_total() -> Option<u64> {
    meminfo("MemTotal:")
}

fn meminfo(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// What one stressor process does.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Busy `load_percent` of every [`PERIOD`], asleep the rest.
    /// `cpu`: the CPU to pin this worker to, or -1.
    Cpu { load_percent: f64, cpu: i32 },
    /// Map and touch `bytes` of anonymous memory over `ramp`, then hold it.
    Memory { bytes: u64, ramp: Duration },
    /// Write and/or read one file (see [`super::io_stress`]).
    Io(super::io_stress::IoWork),
}

/// A fault's stressors: its cgroup directories and processes.
#[derive(Debug)]
pub struct Group {
    /// The cgroup directories, one per hierarchy.
    pub dirs: Vec<PathBuf>,
    /// The stressors, the first being the process group's leader.
    pub pids: Vec<Pid>,
    pub started: Instant,
}

/// How a stressor ended, found when it is reaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ended {
    /// Stressors that were already dead when restore came, by SIGKILL
    /// (the OOM killer's signal) or otherwise.
    pub killed_before_restore: usize,
    pub exited_before_restore: usize,
}

/// Creates the cgroups (the caller has journalled them), writes `limits`
/// into them (file, value; skipped where a directory lacks the file) and
/// starts `n` stressors doing `work`. On error, everything created is
/// removed again.
/// `work(i)` is what stressor `i` does, computed before its fork.
/// With `container_pid` (the host PID of a target container's init), each
/// stressor also exits by itself within [`PERIOD`] once that process is
/// gone (the container stopped or restarted), so it never holds the
/// container's cgroup open after the runtime tore the container down.
pub fn start(
    dirs: Vec<PathBuf>,
    limits: &[(&str, String)],
    n: u32,
    container_pid: Option<u32>,
    work: &dyn Fn(u32) -> Work,
) -> Result<Group, Error> {
    let group = Group {
        dirs,
        pids: Vec::new(),
        started: Instant::now(),
    };
    // A pidfd, not the pid: it cannot be reused by another process, and it
    // turns readable when the process exits (poll is async-signal-safe).
    let pidfd = match container_pid {
        Some(pid) => {
            // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
            if fd < 0 {
                return Err(Error::Refused(format!(
                    "the target container's init (pid {pid}) is gone: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: the fd was just returned to us and is owned here only.
            Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
        }
        None => None,
    };
    let watch = Watch {
        parent: getpid(),
        pidfd: pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
    };
    match start_in(group, limits, n, watch, work) {
        Ok(g) => Ok(g),
        Err((g, e)) => {
            let _ = stop(g);
            Err(e)
        }
    }
}

fn start_in(
    mut g: Group,
    limits: &[(&str, String)],
    n: u32,
    watch: Watch,
    work: &dyn Fn(u32) -> Work,
) -> Result<Group, (Group, Error)> {
    for d in &g.dirs {
        if let Err(e) = cgroup::create(d) {
            return Err((g, e.into()));
        }
    }
    for (file, value) in limits {
        for d in g.dirs.iter().filter(|d| d.join(file).exists()) {
            if let Err(e) = cgroup::write(d, file, value) {
                return Err((g, e.into()));
            }
        }
    }
    let procs: Vec<File> = match g
        .dirs
        .iter()
        .map(|d| {
            let p = d.join("cgroup.procs");
            OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|source| cgroup::Error::Io { path: p, source })
        })
        .collect::<Result<_, _>>()
    {
        Ok(f) => f,
        Err(e) => return Err((g, e.into())),
    };
    let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    for i in 0..n {
        let pgid = g.pids.first().copied().unwrap_or(Pid::from_raw(0));
        let work = work(i);
        // SAFETY: the child runs `child` only, which makes async-signal-safe
        // system calls on data prepared before the fork and never returns.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child(&fds, pgid, watch, work),
            Ok(ForkResult::Parent { child }) => {
                // Either side may win the race; both set the same group.
                let _ = setpgid(child, if pgid.as_raw() == 0 { child } else { pgid });
                g.pids.push(child);
                for d in &g.dirs {
                    if let Err(e) = cgroup::write(d, "cgroup.procs", &child.to_string()) {
                        return Err((g, e.into()));
                    }
                }
            }
            Err(e) => return Err((g, Error::Fork(e))),
        }
    }
    drop(procs);
    Ok(g)
}

/// Kills the stressors, reaps them and removes the cgroups.
pub fn stop(g: Group) -> Result<Ended, Error> {
    let mut ended = Ended::default();
    for pid in &g.pids {
        match waitpid(*pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Signaled(..)) => ended.killed_before_restore += 1,
            Ok(WaitStatus::Exited(..)) => ended.exited_before_restore += 1,
            _ => {}
        }
    }
    if let Some(leader) = g.pids.first() {
        let _ = killpg(*leader, Signal::SIGKILL);
    }
    let mut first_err = None;
    for d in &g.dirs {
        if let Err(e) = cgroup::remove(d) {
            first_err.get_or_insert(e);
        }
    }
    // Reap (bounded): a SIGKILLed child is gone within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in &g.pids {
        while Instant::now() < deadline {
            match waitpid(*pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(ended),
    }
}

/// Where one stress fault's stressors run: their cgroup directories and,
/// for a container target, the container whose cgroup holds them.
#[derive(Debug, Clone)]
pub struct Site {
    pub dirs: Vec<PathBuf>,
    pub container: Option<crate::runtime::Container>,
}

impl Site {
    /// The cgroups `<prefix><fault id>` for `controllers`: at the top of
    /// each hierarchy on a host target; inside the target container's own
    /// cgroups otherwise, so the container's limits bound the stressors and
    /// their use counts against the container. One container per fault:
    /// its stressors' observation (pids, cgroup, achieved figures) is one
    /// container's.
    pub fn of(
        stress: &Stress,
        place: &crate::faults::Place,
        kind: &'static str,
        controllers: &[&'static str],
        prefix: &str,
        fault_id: &str,
    ) -> Result<Site, Error> {
        let name = cgroup::name(prefix, fault_id).ok_or_else(|| Error::InvalidSpec {
            kind,
            message: format!("fault id {fault_id:?} is not a valid id"),
        })?;
        match place {
            crate::faults::Place::Host => Ok(Site {
                dirs: cgroup::dirs(&stress.layout, controllers, &name)?,
                container: None,
            }),
            crate::faults::Place::Containers { containers, .. } => {
                let [c] = containers.as_slice() else {
                    return Err(Error::Refused(format!(
                        "{kind} runs in one container per fault and the selector matched {}; narrow it with `mode: one` or `count: 1` (or a name regex)",
                        containers.len()
                    )));
                };
                let member = cgroup::Membership::of(c.pid)?;
                Ok(Site {
                    dirs: cgroup::dirs_in(&stress.layout, &member, controllers, &name)?,
                    container: Some(c.clone()),
                })
            }
        }
    }

    /// The target container's init, which the stressors watch.
    pub fn watch_pid(&self) -> Option<u32> {
        self.container.as_ref().map(|c| c.pid)
    }

    /// ` in container NAME` (empty on a host target), for details.
    pub fn describe(&self) -> String {
        self.container
            .as_ref()
            .map(|c| format!(" in container {}", c.name))
            .unwrap_or_default()
    }
}

/// Pids as the wire carries them.
pub fn wire_pids(g: &Group) -> Vec<u32> {
    g.pids.iter().map(|p| p.as_raw() as u32).collect()
}

/// The directory of `dirs` in the hierarchy holding `controller`.
pub fn dir_of<'a>(layout: &Layout, dirs: &'a [PathBuf], controller: &'static str) -> Option<&'a Path> {
    let h = layout.hierarchy(controller).ok()?;
    // Component-wise: `cpuacct/…` does not start with `cpu`. A stressor
    // cgroup may be nested (inside a container's).
    dirs.iter().find(|d| d.starts_with(&h)).map(|d| d.as_path())
}

// ---- the child: async-signal-safe system calls only from here on ----

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(super) fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time this (single-threaded) process has used.
fn cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

pub(super) fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads the timespec; an early wake-up is harmless.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// What a stressor watches to know it must exit by itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Watch {
    /// The agent: when the stressor's parent is another process, the agent
    /// died and the stressor was re-parented.
    parent: Pid,
    /// A pidfd of the target container's init, or -1 on a host target.
    pidfd: i32,
}

/// Exits when the agent is gone (the child was re-parented) or the target
/// container's init exited.
pub(super) fn exit_if_orphaned(w: Watch) {
    // SAFETY: getppid, poll and _exit are async-signal-safe; the pollfd is
    // on this stack.
    unsafe {
        if libc::getppid() != w.parent.as_raw() {
            libc::_exit(0);
        }
        if w.pidfd >= 0 {
            let mut p = libc::pollfd {
                fd: w.pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut p, 1, 0) > 0 {
                libc::_exit(0);
            }
        }
    }
}

fn child(procs: &[i32], pgid: Pid, watch: Watch, work: Work) -> ! {
    // SAFETY: raw system calls on memory prepared before the fork; nothing
    // here allocates, locks or unwinds. See the module docs.
    unsafe {
        libc::setpgid(0, pgid.as_raw());
        for fd in procs {
            libc::write(*fd, b"0".as_ptr().cast(), 1);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // Close every inherited descriptor but the container's pidfd.
        if watch.pidfd >= 3 {
            if watch.pidfd > 3 {
                libc::syscall(libc::SYS_close_range, 3u32, (watch.pidfd - 1) as u32, 0u32);
            }
            libc::syscall(libc::SYS_close_range, (watch.pidfd + 1) as u32, u32::MAX, 0u32);
        } else {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        libc::prctl(libc::PR_SET_NAME, c"faultline-stres".as_ptr() as libc::c_ulong, 0, 0, 0);
        if let Work::Memory { .. } = work {
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, b"1000".as_ptr().cast(), 4);
                libc::close(fd);
            }
        }
    }
    match work {
        Work::Cpu { load_percent, cpu: pin } => {
            if pin >= 0 {
                // SAFETY: a cpu_set_t on this stack; sched_setaffinity is a
                // plain system call.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(pin as usize, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
            }
            cpu(load_percent, watch)
        }
        Work::Memory { bytes, ramp } => memory(bytes, ramp, watch),
        Work::Io(w) => super::io_stress::io(w, watch),
    }
}

/// Keeps this process's CPU time at `load_percent` of the time since it
/// started: each period it runs until it has used its share up to the
/// period's end (catching up what contention took from it earlier), then
/// sleeps out the period. The cgroup's quota keeps the catching up from
/// ever exceeding the load asked for.
fn cpu(load_percent: f64, watch: Watch) -> ! {
    let period = PERIOD.as_nanos() as u64;
    let share = load_percent.clamp(0.0, 100.0) / 100.0;
    let (t0, c0) = (now_ns(), cpu_ns());
    let mut next = t0 + period;
    let mut x: u64 = 1;
    loop {
        let goal = ((next - t0) as f64 * share) as u64;
        while cpu_ns().saturating_sub(c0) < goal && now_ns() < next {
            // Some work the optimiser cannot drop.
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let n = now_ns();
        if n < next {
            sleep_ns(next - n);
        }
        next += period;
        exit_if_orphaned(watch);
    }
}

fn memory(bytes: u64, ramp: Duration, watch: Watch) -> ! {
    const PAGE: usize = 4096;
    let len = (bytes as usize).max(PAGE);
    // SAFETY: an anonymous private mapping, written only inside its bounds.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            libc::_exit(2);
        }
        let base = p as *mut u8;
        let pages = len.div_ceil(PAGE);
        let steps = (ramp.as_nanos() / PERIOD.as_nanos()).max(1) as usize;
        let per_step = pages.div_ceil(steps);
        let mut done = 0;
        while done < pages {
            let end = (done + per_step).min(pages);
            for i in done..end {
                std::ptr::write_volatile(base.add(i * PAGE), 0xa5);
            }
            done = end;
            if done < pages {
                sleep_ns(PERIOD.as_nanos() as u64);
                exit_if_orphaned(watch);
            }
        }
    }
    loop {
        sleep_ns(PERIOD.as_nanos() as u64);
        exit_if_orphaned(watch);
    }
}
