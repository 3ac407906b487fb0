//! What a kill leaves running: the watcher that looks for a restarted
//! process until the fault is restored, and the restore that stops it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_proto::v1;
use tokio_util::sync::CancellationToken;

use super::{select, KillSpec, Protection, KIND, WATCH_INTERVAL, WATCH_LIMIT};
use crate::faults::{Applied, Report, Restoring};
use crate::process::ProcessTable;

/// A kill that was carried out and whose watcher is running.
pub struct AppliedKill {
    pub(super) killed: Vec<v1::KilledProcess>,
    pub(super) stop: CancellationToken,
    pub(super) watcher: tokio::task::JoinHandle<Option<(Duration, u32)>>,
    pub summary: String,
    /// The watcher looks for a container running again (its PID 1 was
    /// killed) rather than a matching process.
    pub(super) container_restart: bool,
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

/// Polls until a process matching `spec` that was not in `before` appears.
pub(super) async fn watch_for_restart(
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

impl Applied for AppliedKill {
    fn backend(&self) -> String {
        KIND.backend.into()
    }

    fn injected(&self) -> Report {
        Report {
            detail: self.summary.clone(),
            observation: Some(v1::observation::Kind::Kill(self.observation())),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        Box::pin(async move {
            let container = self.container_restart;
            let obs = AppliedKill::restore(*self).await;
            let detail = match (obs.reappeared_after_ms, obs.reappeared_pid) {
                (Some(ms), Some(pid)) if container => {
                    format!("the container ran again {ms} ms after its PID 1 was killed (new PID 1: host pid {pid})")
                }
                (Some(ms), Some(pid)) => format!("a matching process (pid {pid}) reappeared {ms} ms after the kill"),
                _ => "no matching process reappeared".to_string(),
            };
            Ok(Report {
                detail,
                observation: Some(v1::observation::Kind::Kill(obs)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::kill::apply;
    use crate::faults::kill::tests::spec;
    use crate::process::fake::{proc, FakeProcesses};
    use nix::sys::signal::Signal;

    #[tokio::test]
    async fn watcher_reports_a_restarted_process() {
        let table = Arc::new(FakeProcesses::new(vec![proc(4000, 1, "svc", "svc --port 1")]));
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
