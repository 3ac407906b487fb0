//! `kill` fault: signal processes chosen by name, command line, pid or user.
//!
//! A kill cannot be undone, so "restore" here means: stop watching. While the
//! fault is active a watcher polls the process table for a process matching
//! the same selector that was not there before the kill, which is how a
//! supervisor's restart shows up; the time until it appeared is reported.
//!
//! Safety: pid 1, the agent itself, its parent, kernel threads and any
//! configured protected name are never signalled, whatever the selector says.
//! Kills select processes, never threads: a thread's id reaches its whole
//! process through `kill(2)`, so a thread entry (which the listing should not
//! return anyway) is never chosen, and one of a protected process counts as
//! protected. A selector that matches a large part of the node (see
//! [`MASS_KILL_SHARE_PERCENT`] and [`MASS_KILL_MAX`]) is refused unless the
//! fault sets `allow_mass_kill`.

mod container;
mod selection;
mod watch;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::v1;
use nix::sys::signal::Signal;
use regex::Regex;
use tokio_util::sync::CancellationToken;

use self::container::{watch_containers_whose_init_was_killed, InContainers};
pub use self::selection::{select, Protection, Selection};
use self::watch::watch_for_restart;
pub use self::watch::AppliedKill;
use crate::faults::{self, Applied, FaultKind, Prepared, Registration, Setup};
use crate::process::{self, ProcInfo, ProcessTable};

/// How often the watcher looks for a restarted process. Short enough to
/// measure a restart within a tenth of a second, long enough to cost little.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound on how long a watcher runs even if no restore ever arrives.
const WATCH_LIMIT: Duration = Duration::from_secs(3600);
/// A selector whose (unprotected) matches are more than this share of the
/// node's user-space processes is a mass kill, whatever `count` says: a
/// pattern that broad (`.*`) hits processes nobody meant to name.
pub const MASS_KILL_SHARE_PERCENT: usize = 25;
/// ... but the share rule starts at this many matches, so that killing one
/// or two processes of a small node (a container) needs no opt-in.
pub const MASS_KILL_SHARE_MIN: usize = 3;
/// A kill that would signal more than this many processes is a mass kill.
pub const MASS_KILL_MAX: usize = 50;

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
    /// The selector matches a large part of the node and the fault does not
    /// opt in; nothing was touched.
    #[error("refused: {0}")]
    MassKill(String),
    #[error(transparent)]
    Process(#[from] process::Error),
}

impl Error {
    /// True when the agent declined before touching anything because of what
    /// it was asked (as opposed to the node's state).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Protected(_) | Error::MassKill(_))
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
    /// The operator's opt-in for a selector that matches a large part of
    /// the node (see [`MASS_KILL_SHARE_PERCENT`], [`MASS_KILL_MAX`]). By
    /// default, false: such a kill is refused.
    pub allow_mass_kill: bool,
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
            allow_mass_kill: w.allow_mass_kill,
        })
    }
}

impl KillSpec {
    /// Whether `p` matches the selector (threads included: [`select`]
    /// decides what a matching thread means).
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

/// Lists the node and selects what `spec` would signal, refusing before
/// anything is touched: nothing unprotected matches, or a mass kill without
/// the opt-in.
fn choose(
    spec: &KillSpec,
    table: &dyn ProcessTable,
    protection: &Protection,
) -> Result<(Option<u32>, Selection), Error> {
    let uid = resolve_uid(spec)?;
    let procs = table.list()?;
    let sel = select(&procs, spec, uid, protection);
    if sel.chosen.is_empty() {
        if let Some((_, why)) = sel.protected.first() {
            return Err(Error::Protected(format!(
                "every process matching {} is protected: {why}",
                spec.describe()
            )));
        }
        return Err(Error::NoMatch(spec.describe()));
    }
    if !spec.allow_mass_kill {
        if let Some(why) = sel.mass_kill(spec) {
            return Err(Error::MassKill(why));
        }
    }
    Ok((uid, sel))
}

/// How many pids a preview names before it says "...".
const PREVIEW_PIDS: usize = 10;

/// What [`apply`] would do, in words, touching nothing (a dry run).
pub fn preview(spec: &KillSpec, table: &dyn ProcessTable, protection: &Protection) -> Result<String, Error> {
    let (_, sel) = choose(spec, table, protection)?;
    let mut pids: Vec<String> = sel
        .chosen
        .iter()
        .take(PREVIEW_PIDS)
        .map(|p| format!("{} ({})", p.pid, p.name))
        .collect();
    if sel.chosen.len() > PREVIEW_PIDS {
        pids.push(format!("and {} more", sel.chosen.len() - PREVIEW_PIDS));
    }
    let mut s = format!(
        "would send {} to {} of {} processes ({} match {}): {}",
        spec.signal,
        sel.chosen.len(),
        sel.node_processes,
        sel.matching.len(),
        spec.describe(),
        pids.join(", ")
    );
    if !sel.protected.is_empty() {
        s.push_str(&format!("; {} protected left alone", sel.protected.len()));
    }
    if spec.allow_mass_kill && sel.mass_kill(spec).is_some() {
        s.push_str("; a mass kill, allowed by allow_mass_kill");
    }
    Ok(s)
}

/// Selects and signals processes, then starts the restart watcher.
pub fn apply(spec: KillSpec, table: Arc<dyn ProcessTable>, protection: &Protection) -> Result<AppliedKill, Error> {
    let (uid, sel) = choose(&spec, table.as_ref(), protection)?;
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
        container_restart: false,
    })
}

/// The kill kind: nothing to undo, so no undo objects and no owned names.
pub const KIND: Registration = Registration {
    name: "kill",
    owns: &[],
    takes: |w| matches!(w, v1::fault_spec::Kind::Kill(_)),
    backend: "signal",
    build: |s: &Setup| {
        Arc::new(Kill {
            processes: s.processes.clone(),
            protection: s.protection.clone(),
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

/// Kills on this node.
struct Kill {
    processes: Arc<dyn ProcessTable>,
    protection: Protection,
    runtime: Option<Arc<dyn crate::runtime::ContainerRuntime>>,
}

impl FaultKind for Kill {
    fn capabilities(&self) -> Vec<String> {
        vec![KIND.name.into()]
    }

    fn prepare(
        &self,
        _fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &faults::Place,
    ) -> faults::Result<Box<dyn Prepared>> {
        let v1::fault_spec::Kind::Kill(w) = spec else {
            return Err(Error::InvalidSpec("not a kill spec".into()).into());
        };
        let spec = KillSpec::try_from(w)?;
        let (processes, containers) = match place {
            faults::Place::Host => (self.processes.clone(), None),
            faults::Place::Containers {
                containers, allow_pid1, ..
            } => {
                let table = InContainers::new(self.processes.clone(), containers, *allow_pid1);
                (Arc::new(table) as Arc<dyn ProcessTable>, Some(containers.clone()))
            }
        };
        Ok(Box::new(PreparedKill {
            spec,
            processes,
            protection: self.protection.clone(),
            containers,
            runtime: self.runtime.clone(),
            place: place.describe(),
        }))
    }
}

struct PreparedKill {
    spec: KillSpec,
    processes: Arc<dyn ProcessTable>,
    protection: Protection,
    /// The target containers, when the kill targets containers.
    containers: Option<Vec<crate::runtime::Container>>,
    runtime: Option<Arc<dyn crate::runtime::ContainerRuntime>>,
    /// ` in container(s) ...`, or empty on the node.
    place: String,
}

impl Prepared for PreparedKill {
    fn undo_objects(&self) -> Vec<crate::journal::Object> {
        Vec::new()
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let detail = preview(&self.spec, self.processes.as_ref(), &self.protection)?;
        Ok((format!("{detail}{}", self.place), KIND.backend.into()))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let mut applied = apply(self.spec, self.processes, &self.protection)?;
        applied.summary.push_str(&self.place);
        if let (Some(containers), Some(rt)) = (self.containers, self.runtime) {
            watch_containers_whose_init_was_killed(&mut applied, containers, rt);
        }
        Ok(Box::new(applied))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::process::fake::{proc, thread, FakeProcesses};
    use crate::process::SystemProcessTable;

    pub(super) fn spec(name: Option<&str>, re: Option<&str>, count: u32) -> KillSpec {
        KillSpec::try_from(v1::KillSpec {
            name: name.unwrap_or_default().into(),
            cmdline_regex: re.unwrap_or_default().into(),
            count,
            ..Default::default()
        })
        .unwrap()
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
        let table = Arc::new(FakeProcesses::new(vec![proc(1, 0, "init", "/sbin/init")]));
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

    fn with_mass_opt_in(mut s: KillSpec) -> KillSpec {
        s.allow_mass_kill = true;
        s
    }

    /// A node of `n` user-space processes `p<pid>` (pids 100..), plus init.
    pub(super) fn node(n: u32) -> Vec<ProcInfo> {
        let mut v = vec![proc(1, 0, "init", "/sbin/init")];
        v.extend((100..100 + n).map(|pid| proc(pid, 1, &format!("p{pid}"), &format!("/usr/bin/p{pid} --serve"))));
        v
    }

    #[tokio::test]
    async fn a_thread_of_the_agent_is_never_chosen() {
        let me = std::process::id();
        let table = Arc::new(FakeProcesses::new(vec![
            proc(me, 1, "faultline-agent", "faultline-agent --coordinator x"),
            thread(5001, me, "tokio-runtime-w", "faultline-agent --coordinator x"),
            thread(5002, me, "tokio-runtime-w", "faultline-agent --coordinator x"),
        ]));
        let protection = Protection::for_this_process(vec![]);
        for s in [
            spec(None, Some("faultline-agent"), 0),
            spec(Some("tokio-runtime-w"), None, 0),
        ] {
            let err = apply(s, table.clone(), &protection).err().unwrap();
            assert!(matches!(err, Error::Protected(_)), "{err}");
            assert!(err.is_refusal(), "{err}");
        }
        let err = apply(spec(Some("tokio-runtime-w"), None, 0), table.clone(), &protection)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("thread of a protected process: pid {me} is the agent itself")),
            "{err}"
        );
        assert!(table.signalled_pids().is_empty());
    }

    #[tokio::test]
    async fn a_kill_matching_everything_needs_allow_mass_kill() {
        let table = Arc::new(FakeProcesses::new(node(200)));
        let err = apply(
            spec(None, Some(".*"), 0),
            table.clone(),
            &Protection::for_this_process(vec![]),
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::MassKill(_)) && err.is_refusal(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("matches 200 of the 201 user-space processes"), "{msg}");
        assert!(msg.contains("allow_mass_kill"), "{msg}");
        assert!(table.signalled_pids().is_empty());
        // Counting down does not make a pattern this broad narrow.
        let err = apply(spec(None, Some(".*"), 1), table.clone(), &Protection::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::MassKill(_)), "{err}");
        assert!(table.signalled_pids().is_empty());
        // With the opt-in, it runs (on the fake table) and still spares init.
        let applied = apply(
            with_mass_opt_in(spec(None, Some(".*"), 0)),
            table.clone(),
            &Protection::for_this_process(vec![]),
        )
        .unwrap();
        assert_eq!(table.signalled_pids(), (100..300).collect::<Vec<u32>>());
        applied.restore().await;
    }

    #[test]
    fn preview_says_how_many_processes_would_be_signalled_and_touches_nothing() {
        let mut procs = node(209);
        procs.extend([
            proc(10, 1, "w", "w -a"),
            proc(11, 1, "w", "w -b"),
            proc(12, 1, "w", "w -c"),
        ]);
        let table = FakeProcesses::new(procs);
        let text = preview(&spec(Some("w"), None, 0), &table, &Protection::default()).unwrap();
        assert!(
            text.starts_with("would send SIGKILL to 3 of 213 processes (3 match name=w): 10 (w), 11 (w), 12 (w)"),
            "{text}"
        );
        let err = preview(&spec(None, Some(".*"), 0), &table, &Protection::default()).unwrap_err();
        assert!(err.to_string().contains("allow_mass_kill"), "{err}");
        assert!(table.signalled_pids().is_empty());
    }

    /// This process's command line as the listing shows it.
    fn own_cmdline() -> String {
        std::env::args().collect::<Vec<_>>().join(" ")
    }

    /// A thread of this process named `name`, running until the sender drops.
    fn named_thread(name: &str) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = rx.recv();
            })
            .unwrap();
        (tx, h)
    }

    // On the real process table, with a harmless signal (SIGCONT): before
    // threads were left out, this process's threads matched its command line
    // under their own ids and were signalled.
    #[tokio::test]
    async fn the_agent_process_cannot_be_reached_through_its_threads_on_the_real_table() {
        let (stop, h) = named_thread("fl-kill-thread");
        let table: Arc<dyn ProcessTable> = Arc::new(SystemProcessTable::new());
        let protection = Protection::for_this_process(vec![]);
        let mut by_cmdline = spec(None, Some(&format!("^{}$", regex::escape(&own_cmdline()))), 0);
        by_cmdline.signal = Signal::SIGCONT;
        let err = apply(by_cmdline, table.clone(), &protection).err().unwrap();
        assert!(matches!(err, Error::Protected(_)), "{err}");
        assert!(err.to_string().contains("is the agent itself"), "{err}");
        let mut by_thread_name = spec(Some("fl-kill-thread"), None, 0);
        by_thread_name.signal = Signal::SIGCONT;
        let err = apply(by_thread_name, table, &protection).err().unwrap();
        assert!(matches!(err, Error::NoMatch(_)), "{err}");
        drop(stop);
        h.join().unwrap();
    }

    #[tokio::test]
    async fn a_real_child_matching_the_cmdline_is_killed_and_nothing_else() {
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let marker = format!("2000.{}", std::process::id());
        let mut child = Reap(std::process::Command::new("sleep").arg(&marker).spawn().unwrap());
        let pid = child.0.id();
        let applied = apply(
            spec(None, Some(&format!("^sleep {}$", regex::escape(&marker))), 0),
            Arc::new(SystemProcessTable::new()),
            &Protection::for_this_process(vec![]),
        )
        .unwrap();
        let obs = applied.restore().await;
        assert_eq!(obs.killed.iter().map(|k| k.pid).collect::<Vec<_>>(), vec![pid]);
        let status = child.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }
}
