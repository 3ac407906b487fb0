//! `kill` fault: signal processes chosen by name, command line, pid or user.
//!
//! A kill cannot be undone, so "restore" here means: stop watching. While the
//! fault is active a watcher polls the process table for a process matching
//! the same selector that was not there before the kill, which is how a
//! supervisor's restart shows up; the time until it appeared is reported.
//!
//! Safety: pid 1, the agent itself, its parent, kernel threads and any
//! configured protected name are never signalled, whatever the selector says.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::v1;
use nix::sys::signal::Signal;
use regex::Regex;
use tokio_util::sync::CancellationToken;

use crate::process::{self, ProcInfo, ProcessTable};

/// How often the watcher looks for a restarted process. Short enough to
/// measure a restart within a tenth of a second, long enough to cost little.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound on how long a watcher runs even if no restore ever arrives.
const WATCH_LIMIT: Duration = Duration::from_secs(3600);

/// Errors of the kill fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is unusable; nothing was touched.
    #[error("invalid kill spec: {0}")]
    InvalidSpec(String),
    /// Every process the selector matched is protected; nothing was touched.
    #[error("refused: {0}")]
    Protected(String),
    /// No process matched the selector; nothing was touched.
    #[error("no process matches {0}")]
    NoMatch(String),
    #[error(transparent)]
    Process(#[from] process::Error),
}

impl Error {
    /// True when the agent declined before touching anything because of what
    /// it was asked (as opposed to the node's state).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Protected(_))
    }
}

/// How many matching processes to signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCount {
    All,
    AtMost(u32),
}

/// A validated kill request.
#[derive(Debug, Clone)]
pub struct KillSpec {
    pub name: Option<String>,
    pub cmdline: Option<Regex>,
    pub pid: Option<u32>,
    /// Owner, resolved to a uid when the fault is applied.
    pub user: Option<String>,
    pub signal: Signal,
    pub count: KillCount,
}

impl TryFrom<v1::KillSpec> for KillSpec {
    type Error = Error;

    fn try_from(w: v1::KillSpec) -> Result<Self, Error> {
        let cmdline = match w.cmdline_regex.as_str() {
            "" => None,
            re => Some(Regex::new(re).map_err(|e| Error::InvalidSpec(format!("cmdline regex {re:?}: {e}")))?),
        };
        let name = Some(w.name).filter(|s| !s.is_empty());
        let pid = Some(w.pid).filter(|p| *p != 0);
        if name.is_none() && cmdline.is_none() && pid.is_none() {
            return Err(Error::InvalidSpec(
                "set at least one of name, cmdline or pid; a user alone would match every process of that user".into(),
            ));
        }
        let signal = match w.signal {
            0 => Signal::SIGKILL,
            n => Signal::try_from(n).map_err(|_| Error::InvalidSpec(format!("unknown signal number {n}")))?,
        };
        Ok(KillSpec {
            name,
            cmdline,
            pid,
            user: Some(w.user).filter(|s| !s.is_empty()),
            signal,
            count: match w.count {
                0 => KillCount::All,
                n => KillCount::AtMost(n),
            },
        })
    }
}

impl KillSpec {
    fn matches(&self, p: &ProcInfo, uid: Option<u32>) -> bool {
        !p.zombie
            && self.pid.is_none_or(|pid| pid == p.pid)
            && self.name.as_ref().is_none_or(|n| *n == p.name)
            && self.cmdline.as_ref().is_none_or(|re| re.is_match(&p.cmdline))
            && uid.is_none_or(|u| p.uid == Some(u))
    }

    /// The selector in words, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name={n}"));
        }
        if let Some(re) = &self.cmdline {
            parts.push(format!("cmdline=~/{re}/"));
        }
        if let Some(p) = self.pid {
            parts.push(format!("pid={p}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={u}"));
        }
        parts.join(" ")
    }
}

/// Processes that are never signalled.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    pub pids: Vec<u32>,
    pub names: Vec<String>,
}

impl Protection {
    /// pid 1, this process and its parent, plus `names`.
    pub fn for_this_process(names: Vec<String>) -> Self {
        Self {
            pids: vec![1, std::process::id(), nix::unistd::getppid().as_raw() as u32],
            names,
        }
    }

    fn why(&self, p: &ProcInfo) -> Option<String> {
        if p.pid == 1 {
            Some("pid 1 (init) is protected".into())
        } else if p.pid == std::process::id() {
            Some(format!("pid {} is the agent itself", p.pid))
        } else if self.pids.contains(&p.pid) {
            Some(format!("pid {} ({}) is protected", p.pid, p.name))
        } else if p.is_kernel_thread() {
            Some(format!("pid {} ({}) is a kernel thread", p.pid, p.name))
        } else if self.names.contains(&p.name) {
            Some(format!("process name {} is protected by agent policy", p.name))
        } else {
            None
        }
    }
}

/// Outcome of selection over a process list.
#[derive(Debug, Default)]
pub struct Selection {
    /// Processes to signal, oldest (lowest pid) first.
    pub chosen: Vec<ProcInfo>,
    /// Matching processes left alone because they are protected, with why.
    pub protected: Vec<(ProcInfo, String)>,
    /// Every unprotected matching pid, chosen or not (used to tell a
    /// restarted process from one that was already there).
    pub matching: HashSet<u32>,
}

/// Chooses the processes a kill would signal.
pub fn select(procs: &[ProcInfo], spec: &KillSpec, uid: Option<u32>, protection: &Protection) -> Selection {
    let mut sel = Selection::default();
    let mut candidates = Vec::new();
    for p in procs.iter().filter(|p| spec.matches(p, uid)) {
        match protection.why(p) {
            Some(why) => sel.protected.push((p.clone(), why)),
            None => {
                sel.matching.insert(p.pid);
                candidates.push(p.clone());
            }
        }
    }
    candidates.sort_by_key(|p| p.pid);
    if let KillCount::AtMost(n) = spec.count {
        candidates.truncate(n as usize);
    }
    sel.chosen = candidates;
    sel
}

/// A kill that was carried out and whose watcher is running.
pub struct AppliedKill {
    killed: Vec<v1::KilledProcess>,
    stop: CancellationToken,
    watcher: tokio::task::JoinHandle<Option<(Duration, u32)>>,
    pub summary: String,
}

impl AppliedKill {
    /// What was killed, for the injected status.
    pub fn observation(&self) -> v1::KillObservation {
        v1::KillObservation {
            killed: self.killed.clone(),
            reappeared_after_ms: None,
            reappeared_pid: None,
        }
    }

    /// Stops the watcher and returns the final observation.
    pub async fn restore(self) -> v1::KillObservation {
        self.stop.cancel();
        let seen = self.watcher.await.ok().flatten();
        v1::KillObservation {
            killed: self.killed,
            reappeared_after_ms: seen.map(|(d, _)| d.as_millis() as u64),
            reappeared_pid: seen.map(|(_, pid)| pid),
        }
    }
}

/// Resolves the spec's user name to a uid.
fn resolve_uid(spec: &KillSpec) -> Result<Option<u32>, Error> {
    let Some(user) = &spec.user else {
        return Ok(None);
    };
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(Some(u.uid.as_raw())),
        Ok(None) => Err(Error::InvalidSpec(format!("unknown user {user:?} on this node"))),
        Err(e) => Err(Error::InvalidSpec(format!("cannot look up user {user:?}: {e}"))),
    }
}

/// Selects and signals processes, then starts the restart watcher.
pub fn apply(spec: KillSpec, table: Arc<dyn ProcessTable>, protection: &Protection) -> Result<AppliedKill, Error> {
    let uid = resolve_uid(&spec)?;
    let procs = table.list()?;
    let sel = select(&procs, &spec, uid, protection);
    if sel.chosen.is_empty() {
        if let Some((_, why)) = sel.protected.first() {
            return Err(Error::Protected(format!(
                "every process matching {} is protected: {why}",
                spec.describe()
            )));
        }
        return Err(Error::NoMatch(spec.describe()));
    }
    let started = Instant::now();
    let mut killed = Vec::new();
    let mut failures = Vec::new();
    for p in &sel.chosen {
        match table.signal(p.pid, spec.signal) {
            Ok(()) => killed.push(v1::KilledProcess {
                pid: p.pid,
                name: p.name.clone(),
                cmdline: p.cmdline.clone(),
            }),
            // The process exited between listing and signalling.
            Err(process::Error::Signal {
                source: nix::Error::ESRCH,
                ..
            }) => {}
            Err(e) => failures.push(e.to_string()),
        }
    }
    if killed.is_empty() {
        return Err(match failures.into_iter().next() {
            Some(f) => Error::Process(process::Error::List(f)),
            None => Error::NoMatch(format!(
                "{} (matching processes exited before the signal)",
                spec.describe()
            )),
        });
    }
    let mut summary = format!(
        "sent {} to {} process(es): {}",
        spec.signal,
        killed.len(),
        killed
            .iter()
            .map(|k| format!("{} ({})", k.pid, k.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !sel.protected.is_empty() {
        summary.push_str(&format!("; skipped {} protected", sel.protected.len()));
    }
    if !failures.is_empty() {
        summary.push_str(&format!("; failed: {}", failures.join("; ")));
    }
    let stop = CancellationToken::new();
    let before: HashSet<u32> = sel.matching;
    let watcher = tokio::spawn(watch_for_restart(
        spec,
        uid,
        protection.clone(),
        table,
        before,
        started,
        stop.clone(),
    ));
    Ok(AppliedKill {
        killed,
        stop,
        watcher,
        summary,
    })
}

/// Polls until a process matching `spec` that was not in `before` appears.
async fn watch_for_restart(
    spec: KillSpec,
    uid: Option<u32>,
    protection: Protection,
    table: Arc<dyn ProcessTable>,
    before: HashSet<u32>,
    started: Instant,
    stop: CancellationToken,
) -> Option<(Duration, u32)> {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < WATCH_LIMIT {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tick.tick() => {}
        }
        let table = table.clone();
        let Ok(Ok(procs)) = tokio::task::spawn_blocking(move || table.list()).await else {
            continue;
        };
        let sel = select(&procs, &spec, uid, &protection);
        if let Some(pid) = sel.matching.iter().copied().filter(|p| !before.contains(p)).min() {
            return Some((started.elapsed(), pid));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn proc(pid: u32, ppid: u32, name: &str, cmdline: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            name: name.into(),
            cmdline: cmdline.into(),
            uid: Some(1000),
            zombie: false,
        }
    }

    fn spec(name: Option<&str>, re: Option<&str>, count: u32) -> KillSpec {
        KillSpec::try_from(v1::KillSpec {
            name: name.unwrap_or_default().into(),
            cmdline_regex: re.unwrap_or_default().into(),
            count,
            ..Default::default()
        })
        .unwrap()
    }

    /// A process table that records signals instead of sending them.
    struct FakeTable {
        procs: Mutex<Vec<ProcInfo>>,
        signalled: Mutex<Vec<(u32, Signal)>>,
    }

    impl ProcessTable for FakeTable {
        fn list(&self) -> process::Result<Vec<ProcInfo>> {
            Ok(self.procs.lock().unwrap().clone())
        }
        fn signal(&self, pid: u32, signal: Signal) -> process::Result<()> {
            self.signalled.lock().unwrap().push((pid, signal));
            self.procs.lock().unwrap().retain(|p| p.pid != pid);
            Ok(())
        }
    }

    #[test]
    fn protected_pids_are_never_chosen() {
        let me = std::process::id();
        let procs = vec![
            proc(1, 0, "init", "/sbin/init"),
            proc(me, 1, "agent", "faultline-agent"),
            proc(77, 1, "parent", "sh"),
            proc(3, 2, "kworker/0:1", ""),
            proc(500, 1, "sshd", "sshd: root"),
            proc(900, 1, "victim", "victim --x"),
        ];
        let protection = Protection {
            pids: vec![1, me, 77],
            names: vec!["sshd".into()],
        };
        let sel = select(&procs, &spec(None, Some(".*"), 0), None, &protection);
        let chosen: Vec<u32> = sel.chosen.iter().map(|p| p.pid).collect();
        assert_eq!(chosen, vec![900]);
        assert_eq!(sel.protected.len(), 5);
    }

    #[test]
    fn count_limits_the_oldest_first() {
        let procs = vec![
            proc(30, 1, "w", "worker"),
            proc(10, 1, "w", "worker"),
            proc(20, 1, "w", "worker"),
        ];
        let sel = select(&procs, &spec(Some("w"), None, 2), None, &Protection::default());
        assert_eq!(sel.chosen.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![10, 20]);
        assert_eq!(sel.matching.len(), 3);
    }

    #[test]
    fn zombies_and_other_users_do_not_match() {
        let mut z = proc(10, 1, "w", "worker");
        z.zombie = true;
        let mut other = proc(11, 1, "w", "worker");
        other.uid = Some(0);
        let procs = vec![z, other, proc(12, 1, "w", "worker")];
        let sel = select(&procs, &spec(Some("w"), None, 0), Some(1000), &Protection::default());
        assert_eq!(sel.chosen.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![12]);
    }

    #[test]
    fn a_spec_without_a_process_selector_is_refused() {
        let err = KillSpec::try_from(v1::KillSpec {
            user: "root".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.is_refusal(), "{err}");
        let err = KillSpec::try_from(v1::KillSpec {
            cmdline_regex: "(".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("cmdline regex"), "{err}");
    }

    #[tokio::test]
    async fn only_protected_matches_is_a_refusal_and_nothing_is_signalled() {
        let table = Arc::new(FakeTable {
            procs: Mutex::new(vec![proc(1, 0, "init", "/sbin/init")]),
            signalled: Mutex::new(vec![]),
        });
        let err = apply(
            spec(Some("init"), None, 0),
            table.clone(),
            &Protection::for_this_process(vec![]),
        )
        .err()
        .unwrap();
        assert!(err.is_refusal(), "{err}");
        assert!(err.to_string().contains("pid 1"), "{err}");
        assert!(table.signalled.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn watcher_reports_a_restarted_process() {
        let table = Arc::new(FakeTable {
            procs: Mutex::new(vec![proc(4000, 1, "svc", "svc --port 1")]),
            signalled: Mutex::new(vec![]),
        });
        let applied = apply(spec(Some("svc"), None, 1), table.clone(), &Protection::default()).unwrap();
        assert_eq!(table.signalled.lock().unwrap().as_slice(), &[(4000, Signal::SIGKILL)]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        table.procs.lock().unwrap().push(proc(4001, 1, "svc", "svc --port 1"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let obs = applied.restore().await;
        assert_eq!(obs.killed.len(), 1);
        assert_eq!(obs.reappeared_pid, Some(4001));
        assert!(obs.reappeared_after_ms.unwrap() >= 150);
    }
}
