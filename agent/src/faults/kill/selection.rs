//! Which processes a kill signals: the selector's matches minus protected
//! processes and threads, and whether that is a mass kill.

use std::collections::HashSet;

use super::{KillCount, KillSpec, MASS_KILL_MAX, MASS_KILL_SHARE_MIN, MASS_KILL_SHARE_PERCENT};
use crate::process::ProcInfo;

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

    /// Why `p` (an entry of `procs`) must not be signalled, or `None`. A
    /// thread is never signalled; it is judged by its process (`tgid`), so
    /// every thread of a protected process is reported as protected.
    fn why(&self, p: &ProcInfo, procs: &[ProcInfo]) -> Option<String> {
        if p.is_thread() {
            let leader = procs
                .iter()
                .find(|l| l.pid == p.tgid && !l.is_thread())
                .cloned()
                .unwrap_or_else(|| ProcInfo {
                    pid: p.tgid,
                    ..p.clone()
                });
            return Some(match self.why_process(&leader) {
                Some(why) => format!("pid {} is a thread of a protected process: {why}", p.pid),
                None => format!(
                    "pid {} is a thread of process {}; kills signal processes, not threads",
                    p.pid, p.tgid
                ),
            });
        }
        self.why_process(p)
    }

    fn why_process(&self, p: &ProcInfo) -> Option<String> {
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
    /// User-space processes on the node (not kernel threads, not zombies,
    /// not threads), protected ones included: the base of the mass-kill share.
    pub node_processes: usize,
}

impl Selection {
    /// Why this selection is a mass kill, or `None`.
    pub fn mass_kill(&self, spec: &KillSpec) -> Option<String> {
        let m = self.matching.len();
        let n = self.node_processes;
        let share = m >= MASS_KILL_SHARE_MIN && m * 100 > n * MASS_KILL_SHARE_PERCENT;
        let many = self.chosen.len() > MASS_KILL_MAX;
        if !(share || many) {
            return None;
        }
        let rule = if share {
            format!("more than {MASS_KILL_SHARE_PERCENT} % of them")
        } else {
            format!("it would signal {}, more than {MASS_KILL_MAX}", self.chosen.len())
        };
        Some(format!(
            "the kill selector {} matches {m} of the {n} user-space processes on this node ({rule}); \
             a mass kill needs allow_mass_kill set on the kill fault",
            spec.describe()
        ))
    }
}

/// Chooses the processes a kill would signal.
pub fn select(procs: &[ProcInfo], spec: &KillSpec, uid: Option<u32>, protection: &Protection) -> Selection {
    let mut sel = Selection {
        node_processes: procs
            .iter()
            .filter(|p| !p.zombie && !p.is_thread() && !p.is_kernel_thread())
            .count(),
        ..Selection::default()
    };
    let mut candidates = Vec::new();
    for p in procs.iter().filter(|p| spec.matches(p, uid)) {
        match protection.why(p, procs) {
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::kill::tests::{node, spec};
    use crate::process::fake::{proc, thread};

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
    fn threads_of_protected_and_unprotected_processes_are_never_chosen() {
        let procs = vec![
            proc(500, 1, "sshd", "sshd: root"),
            thread(501, 500, "sshd-worker", "sshd: root"),
            proc(600, 1, "worker", "worker --x"),
            thread(601, 600, "worker-io", "worker --x"),
        ];
        let protection = Protection {
            pids: vec![],
            names: vec!["sshd".into()],
        };
        let sel = select(&procs, &spec(None, Some("."), 0), None, &protection);
        assert_eq!(sel.chosen.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![600]);
        let why: Vec<&str> = sel.protected.iter().map(|(_, w)| w.as_str()).collect();
        assert!(
            why.iter()
                .any(|w| w.contains("pid 501 is a thread of a protected process: process name sshd")),
            "{why:?}"
        );
        assert!(
            why.iter().any(|w| w.contains("pid 601 is a thread of process 600")),
            "{why:?}"
        );
        // Threads count neither as matches nor as node processes.
        assert_eq!(sel.matching.len(), 1);
        assert_eq!(sel.node_processes, 2);
    }

    #[test]
    fn the_mass_kill_rule_counts_share_and_number_to_signal() {
        let rule = |procs: &[ProcInfo], s: &KillSpec| select(procs, s, None, &Protection::default()).mass_kill(s);
        // 60 of 301 processes are "w": 20 %, under the share; all 60 is
        // more than 50 to signal, one of them is not.
        let mut procs = node(241);
        procs.extend((1000..1060).map(|pid| proc(pid, 1, "w", "w")));
        assert!(rule(&procs, &spec(Some("w"), None, 0))
            .unwrap()
            .contains("more than 50"));
        assert!(rule(&procs, &spec(Some("w"), None, 1)).is_none());
        // A small node: 2 of 4 is half, but two processes are below the
        // share rule's minimum; 3 of 5 is not.
        let small = vec![
            proc(10, 1, "w", "w"),
            proc(11, 1, "w", "w"),
            proc(12, 1, "db", "db"),
            proc(13, 1, "sh", "sh"),
        ];
        assert!(rule(&small, &spec(Some("w"), None, 0)).is_none());
        let mut small = small;
        small.push(proc(14, 1, "w", "w"));
        assert!(rule(&small, &spec(Some("w"), None, 0))
            .unwrap()
            .contains("more than 25 %"));
    }
}
