//! The process boundary: listing processes and sending signals.
//!
//! Fault code talks to the [`ProcessTable`] trait so it can be unit-tested
//! with a fake ([`fake::FakeProcesses`]); [`SystemProcessTable`] is the real
//! one (sysinfo reads `/proc`, nix sends the signal).
//!
//! Only processes are listed, never threads. On Linux every thread is a task
//! with its own id, reachable as `/proc/<tid>` and listed under
//! `/proc/<pid>/task`; it carries its own name (`tokio-runtime-w`) but the
//! command line of its process. `kill(tid, sig)` signals the whole thread
//! group, so a listed thread would let a selector reach a protected process
//! (the agent itself) under another pid and name. A task whose thread-group
//! id (`Tgid` in `/proc/<tid>/status`) differs from its id is a thread.

use std::sync::Mutex;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind};

/// Errors from the process boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the process table: {0}")]
    List(String),
    #[error("cannot send {signal} to pid {pid}: {source}")]
    Signal {
        pid: u32,
        signal: Signal,
        source: nix::Error,
    },
}

/// Result of the process boundary.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What fault code needs to know about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    /// Thread-group id: the process this task belongs to. Equal to `pid`
    /// for a process (a thread-group leader); the real listing returns only
    /// those, but selection still treats any other entry as a thread of
    /// `tgid` (defence in depth).
    pub tgid: u32,
    /// Parent pid; 0 when unknown.
    pub ppid: u32,
    /// Short name (the kernel's `comm`).
    pub name: String,
    /// Full command line, arguments joined by spaces.
    pub cmdline: String,
    /// Real user id; `None` when it could not be read.
    pub uid: Option<u32>,
    /// Zombies have exited already: signalling them does nothing and they
    /// must never count as a live match.
    pub zombie: bool,
}

impl ProcInfo {
    /// Kernel threads have no command line and descend from kthreadd (pid 2).
    pub fn is_kernel_thread(&self) -> bool {
        self.pid == 2 || self.ppid == 2
    }

    /// A thread of another process rather than a process.
    pub fn is_thread(&self) -> bool {
        self.tgid != self.pid
    }
}

/// Lists processes and signals them.
pub trait ProcessTable: Send + Sync {
    /// Every process (thread-group leader) currently on the node; no threads.
    fn list(&self) -> Result<Vec<ProcInfo>>;
    /// Sends `signal` to `pid`.
    fn signal(&self, pid: u32, signal: Signal) -> Result<()>;
}

/// The node's real process table.
pub struct SystemProcessTable {
    // sysinfo keeps caches between refreshes; reuse them across calls.
    system: Mutex<Option<System>>,
}

impl SystemProcessTable {
    pub fn new() -> Self {
        Self {
            system: Mutex::new(None),
        }
    }
}

impl Default for SystemProcessTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessTable for SystemProcessTable {
    fn list(&self) -> Result<Vec<ProcInfo>> {
        let mut guard = self
            .system
            .lock()
            .map_err(|_| Error::List("process table lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(System::new().map_err(|e| Error::List(e.to_string()))?);
        }
        let Some(system) = guard.as_mut() else {
            return Err(Error::List("process table unavailable".into()));
        };
        // Only what selection needs: command line and owner. CPU and memory
        // are expensive to read for every process and are not used. Tasks
        // (threads) are not read: sysinfo would list each as a process of its
        // own (`nothing()` still includes them). The command line is read
        // every time: `execve` keeps the pid and start time, so sysinfo
        // treats an exec'd process as the one it cached (a container's loop
        // forks `sh`, which then execs `sleep`).
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_cmd(UpdateKind::Always)
                .with_user(UpdateKind::OnlyIfNotSet),
        );
        Ok(system
            .processes()
            .iter()
            // A thread found some other way (sysinfo marks it) is still not
            // a process.
            .filter(|(_, p)| p.thread_kind() != Some(ThreadKind::Userland))
            .map(|(pid, p)| ProcInfo {
                pid: pid.as_u32(),
                tgid: pid.as_u32(),
                ppid: p.parent().map(|p| p.as_u32()).unwrap_or(0),
                // sysinfo keeps the name it first saw (before any exec);
                // the kernel's comm is current.
                name: std::fs::read_to_string(format!("/proc/{}/comm", pid.as_u32()))
                    .map(|c| c.trim_end_matches('\n').to_string())
                    .unwrap_or_else(|_| p.name().to_string_lossy().into_owned()),
                cmdline: p
                    .cmd()
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                uid: p.user_id().map(|u| **u),
                zombie: matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead),
            })
            .collect())
    }

    fn signal(&self, pid: u32, signal: Signal) -> Result<()> {
        let raw = i32::try_from(pid).map_err(|_| Error::Signal {
            pid,
            signal,
            source: nix::Error::EINVAL,
        })?;
        nix::sys::signal::kill(Pid::from_raw(raw), signal).map_err(|source| Error::Signal { pid, signal, source })
    }
}

/// The one recording fake of [`ProcessTable`] for unit tests: a process list
/// the test sets, and every signal recorded instead of sent (a signalled
/// pid leaves the list, as a killed process would).
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Default)]
    pub struct FakeProcesses {
        pub procs: Mutex<Vec<ProcInfo>>,
        pub signalled: Mutex<Vec<(u32, Signal)>>,
    }

    impl FakeProcesses {
        pub fn new(procs: Vec<ProcInfo>) -> Self {
            Self {
                procs: Mutex::new(procs),
                signalled: Mutex::default(),
            }
        }

        /// Pids signalled so far, in order.
        pub fn signalled_pids(&self) -> Vec<u32> {
            self.signalled.lock().unwrap().iter().map(|(p, _)| *p).collect()
        }
    }

    /// A process (thread-group leader) of uid 1000.
    pub fn proc(pid: u32, ppid: u32, name: &str, cmdline: &str) -> ProcInfo {
        ProcInfo {
            pid,
            tgid: pid,
            ppid,
            name: name.into(),
            cmdline: cmdline.into(),
            uid: Some(1000),
            zombie: false,
        }
    }

    /// A thread `tid` of process `tgid`: its own name, the process's command line.
    pub fn thread(tid: u32, tgid: u32, name: &str, cmdline: &str) -> ProcInfo {
        ProcInfo {
            tgid,
            ..proc(tid, tgid, name, cmdline)
        }
    }

    impl ProcessTable for FakeProcesses {
        fn list(&self) -> Result<Vec<ProcInfo>> {
            Ok(self.procs.lock().unwrap().clone())
        }
        fn signal(&self, pid: u32, signal: Signal) -> Result<()> {
            self.signalled.lock().unwrap().push((pid, signal));
            self.procs.lock().unwrap().retain(|p| p.pid != pid && p.tgid != pid);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// Kills and reaps a child the test started, whatever the test's outcome.
    struct ChildGuard(Child);
    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Tid of a thread of this process whose name is `name`; the thread runs
    /// until the returned sender is dropped.
    fn named_thread(name: &str) -> (u32, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = tid_tx.send(nix::unistd::gettid().as_raw() as u32);
                let _ = stop_rx.recv();
            })
            .unwrap();
        (tid_rx.recv().unwrap(), stop_tx, h)
    }

    #[test]
    fn the_real_listing_has_processes_and_no_threads() {
        let marker = format!("1000.{}", std::process::id());
        let child = ChildGuard(Command::new("sleep").arg(&marker).spawn().unwrap());
        let child_pid = child.0.id();
        let (tid, stop, h) = named_thread("fl-test-thread");
        let me = std::process::id();
        let procs = SystemProcessTable::new().list().unwrap();
        drop(stop);
        h.join().unwrap();
        // The child (a process whose command line matches) is listed once.
        let re = regex::Regex::new(&regex::escape(&marker)).unwrap();
        let matching: Vec<u32> = procs
            .iter()
            .filter(|p| re.is_match(&p.cmdline))
            .map(|p| p.pid)
            .collect();
        assert_eq!(matching, vec![child_pid], "{procs:#?}");
        // This process is listed once, under its own pid; its threads are
        // not (neither by tid nor by thread name), though they share its
        // command line.
        let own_cmdline = procs.iter().find(|p| p.pid == me).map(|p| p.cmdline.clone()).unwrap();
        let same: Vec<u32> = procs
            .iter()
            .filter(|p| p.cmdline == own_cmdline)
            .map(|p| p.pid)
            .collect();
        assert_eq!(same, vec![me], "threads listed as processes: {procs:#?}");
        assert!(procs.iter().all(|p| p.pid != tid && p.name != "fl-test-thread"));
        assert!(procs.iter().all(|p| !p.is_thread()));
    }

    #[test]
    fn a_process_that_execs_after_it_was_first_listed_is_listed_under_its_new_name() {
        use std::io::Write;
        // `sh` until it reads a line, then `sleep` under the same pid (a
        // container's loop forking its next `sleep` looks like this).
        let marker = format!("1001.{}", std::process::id());
        let mut child = ChildGuard(
            Command::new("sh")
                .args(["-c", &format!("read _; exec sleep {marker}")])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id();
        let table = SystemProcessTable::new();
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let t = std::time::Instant::now();
        while comm().trim() != "sh" && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let before = table.list().unwrap().into_iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(before.name, "sh");
        child.0.stdin.take().unwrap().write_all(b"\n").unwrap();
        let t = std::time::Instant::now();
        while comm().trim() != "sleep" && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(comm().trim(), "sleep");
        let after = table.list().unwrap().into_iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(after.name, "sleep", "{after:?}");
        assert!(after.cmdline.contains(&marker), "{after:?}");
    }
}
