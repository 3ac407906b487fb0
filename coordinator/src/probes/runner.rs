//! Samples every probe of a hypothesis at its interval, through every phase
//! of a run, tagging each sample with the phase in which it completed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Clients, Failure, Reading};
use crate::experiment::Probe;
use crate::outcome::Phase;
use crate::stats::Sample;

/// Samples of every probe, indexed like the hypothesis' probes.
pub type Samples = Arc<Mutex<Vec<Vec<Sample>>>>;

/// Runs one check of `probe`.
pub async fn check_once(clients: &Clients, probe: &Probe) -> Result<Reading, Failure> {
    let fut = probe.kind.check(clients, probe.timeout);
    // Belt and braces: every kind has its own timeout, this bounds them all.
    match tokio::time::timeout(probe.timeout + Duration::from_millis(50), fut).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout),
    }
}

/// Starts one sampling task per probe; they stop when `stop` fires.
pub fn start(
    probes: &[Probe],
    run_start: Instant,
    phase: watch::Receiver<Phase>,
    stop: CancellationToken,
) -> (Samples, Vec<tokio::task::JoinHandle<()>>) {
    let samples: Samples = Arc::new(Mutex::new(vec![Vec::new(); probes.len()]));
    let clients = Clients::default();
    let tasks = probes
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, probe)| {
            let samples = samples.clone();
            let phase = phase.clone();
            let stop = stop.clone();
            let clients = clients.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(probe.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let t0 = Instant::now();
                    let result = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = check_once(&clients, &probe) => r,
                    };
                    let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    let value = match &result {
                        Ok(Reading::Skipped) => continue,
                        Ok(Reading::Value(v)) => Some(*v),
                        Ok(Reading::Done) => None,
                        Err(e) => e.value(),
                    };
                    // A sample belongs to the phase in which its result is
                    // known, read while holding the samples lock: the engine
                    // switches the phase first and then reads the samples
                    // under the same lock, so a phase's statistics taken at
                    // its end hold exactly the samples tagged with it, and no
                    // straggler started in the phase is added afterwards.
                    if let Ok(mut all) = samples.lock() {
                        let sample = Sample {
                            at_ms: run_start.elapsed().as_millis() as u64,
                            phase: *phase.borrow(),
                            ok: result.is_ok(),
                            latency_ms,
                            value,
                            error: result.err().map(|e| e.to_string()),
                        };
                        all[i].push(sample);
                    }
                }
            })
        })
        .collect();
    (samples, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::command::CommandProbe;
    use crate::probes::tcp::TcpProbe;
    use crate::probes::ProbeKind;

    fn probe(kind: ProbeKind) -> Probe {
        Probe {
            name: "p".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            kind,
            tolerances: vec![],
            guardrails: vec![],
            per_group: false,
            group: None,
        }
    }

    #[tokio::test]
    async fn command_probe_checks_exit_code_and_stdout() {
        let c = Clients::default();
        let ok = probe(ProbeKind::Command(CommandProbe {
            run: "echo ready".into(),
            exit_code: 0,
            stdout_match: Some(regex::Regex::new("^ready").unwrap()),
        }));
        assert_eq!(check_once(&c, &ok).await.map(|_| ()).map_err(|e| e.to_string()), Ok(()));
        let bad = probe(ProbeKind::Command(CommandProbe {
            run: "exit 3".into(),
            exit_code: 0,
            stdout_match: None,
        }));
        assert_eq!(
            check_once(&c, &bad).await.map(|_| ()).map_err(|e| e.to_string()),
            Err("exit code 3, expected 0".into())
        );
        let slow = probe(ProbeKind::Command(CommandProbe {
            run: "sleep 5".into(),
            exit_code: 0,
            stdout_match: None,
        }));
        assert_eq!(
            check_once(&c, &slow).await.map(|_| ()).map_err(|e| e.to_string()),
            Err("timeout".into())
        );
    }

    #[tokio::test]
    async fn tcp_probe_tells_open_from_refused() {
        let c = Clients::default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = probe(ProbeKind::Tcp(TcpProbe {
            address: l.local_addr().unwrap().to_string(),
        }));
        assert_eq!(
            check_once(&c, &open).await.map(|_| ()).map_err(|e| e.to_string()),
            Ok(())
        );
        let port = l.local_addr().unwrap().port();
        drop(l);
        let closed = probe(ProbeKind::Tcp(TcpProbe {
            address: format!("127.0.0.1:{port}"),
        }));
        assert_eq!(
            check_once(&c, &closed).await.map(|_| ()).map_err(|e| e.to_string()),
            Err("connection refused".into())
        );
    }
}
