//! The process boundary: listing processes and sending signals.
//!
//! Fault code talks to the [`ProcessTable`] trait so it can be unit-tested
//! with a fake; [`SystemProcessTable`] is the real one (sysinfo reads `/proc`,
//! nix sends the signal).

use std::sync::Mutex;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

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
}

/// Lists processes and signals them.
pub trait ProcessTable: Send + Sync {
    /// Every process currently on the node.
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
        // Only what selection needs: command line and owner. CPU, memory and
        // tasks are expensive to read for every process and are not used.
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cmd(UpdateKind::OnlyIfNotSet)
                .with_user(UpdateKind::OnlyIfNotSet),
        );
        Ok(system
            .processes()
            .iter()
            .map(|(pid, p)| ProcInfo {
                pid: pid.as_u32(),
                ppid: p.parent().map(|p| p.as_u32()).unwrap_or(0),
                name: p.name().to_string_lossy().into_owned(),
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
