//! The live state of the run's checks (guardrails and stop conditions) as
//! run events: each check's first state when observe begins, then one
//! `CheckChanged` whenever its state changes, so a live view (the console,
//! `faultline follow`) can show every check's current state without
//! re-deriving it from samples. The abort itself stays with the observe
//! loop; this only reports.

use std::collections::HashMap;
use std::fmt;

use faultline_proto::{now_unix_ms, v1};

use super::context::Ctx;

/// What kind of check a state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Guardrail,
    StopCondition,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Guardrail => "guardrail",
            Kind::StopCondition => "stop_condition",
        })
    }
}

/// A check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not evaluated yet, or too few samples in a guardrail's window.
    Pending,
    Ok,
    /// A guardrail violated, a stop condition true.
    Breached,
    /// A stop condition's query failed (not evidence of harm: no abort).
    Error,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Pending => "pending",
            State::Ok => "ok",
            State::Breached => "breached",
            State::Error => "error",
        })
    }
}

/// The last state sent per check, so only changes go out.
#[derive(Default)]
pub(super) struct Checks {
    last: HashMap<(Kind, String), State>,
}

impl Checks {
    /// Sends a `CheckChanged` if `name`'s state differs from the last one
    /// sent (or none was). The detail alone changing (a new measurement in
    /// the same state) is not sent: it would be one event per evaluation.
    pub(super) async fn set(&mut self, ctx: &Ctx, kind: Kind, name: &str, state: State, detail: String) {
        let key = (kind, name.to_string());
        if self.last.get(&key) == Some(&state) {
            return;
        }
        self.last.insert(key, state);
        ctx.emit(v1::run_event::Event::Check(v1::CheckChanged {
            kind: kind.to_string(),
            name: name.to_string(),
            state: state.to_string(),
            detail,
            at_unix_ms: now_unix_ms(),
        }))
        .await;
    }
}

/// A check event as one line for the CLI's progress and the store.
pub fn line(c: &v1::CheckChanged) -> String {
    let kind = c.kind.replace('_', " ");
    if c.detail.is_empty() {
        format!("{kind} {}: {}", c.name, c.state)
    } else {
        format!("{kind} {}: {} — {}", c.name, c.state, c.detail)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use faultline_proto::v1::{self, run_event::Event};

    use crate::engine::testing::{query_api, run_yaml};
    use crate::outcome::Outcome;
    use crate::policy::Policy;

    fn checks(events: &[v1::RunEvent], kind: &str) -> Vec<(String, String)> {
        events
            .iter()
            .filter_map(|e| match &e.event {
                Some(Event::Check(c)) if c.kind == kind => Some((c.name.clone(), c.state.clone())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_guardrail_goes_pending_ok_then_breached_when_its_service_dies() {
        // The probed service: accepting until the guardrail has been seen
        // ok, then gone (connections refused), like a killed process.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let service = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                drop(tcp);
            }
        });
        let kill = Arc::new(Mutex::new(Some(service)));
        let on_event = {
            let kill = kill.clone();
            move |ev: &v1::RunEvent| {
                if matches!(&ev.event, Some(Event::Check(c)) if c.state == "ok") {
                    if let Some(s) = kill.lock().expect("lock").take() {
                        s.abort();
                    }
                }
            }
        };
        let yaml = format!(
            "name: t\nhypothesis:\n  probes:\n    - name: web\n      interval: 100ms\n      tcp: {{ address: \"127.0.0.1:{port}\" }}\n      tolerances:\n        - success_rate: \"90%\"\n          guardrail: true\n          window: 1s\nbaseline: 1s\nduration: 20s\nrecovery: 1s\nfaults:\n  - kill: {{ name: x }}\n"
        );
        let (report, events) = run_yaml("r-check-guardrail", &yaml, Policy::default(), on_event).await;
        assert_eq!(report.outcome, Outcome::Aborted, "{}", report.reason);
        let name = "web: success rate >= 90.0% over 1s".to_string();
        assert_eq!(
            checks(&events, "guardrail"),
            [
                (name.clone(), "pending".to_string()),
                (name.clone(), "ok".to_string()),
                (name, "breached".to_string()),
            ]
        );
        let breached = events
            .iter()
            .find_map(|e| match &e.event {
                Some(Event::Check(c)) if c.state == "breached" => Some(c.clone()),
                _ => None,
            })
            .expect("breached");
        assert!(breached.detail.starts_with("measured "), "{}", breached.detail);
        assert!(breached.at_unix_ms > 0);
    }

    #[tokio::test]
    async fn a_stop_condition_goes_pending_then_breached() {
        let port = query_api("7").await;
        let extra = format!(
            "stop_conditions:\n  - name: error-storm\n    severity: critical\n    prometheus: {{ url: \"http://127.0.0.1:{port}\", query: \"sum(rate(errors_total[30s])) > 5\" }}\n"
        );
        let yaml = format!(
            "name: t\nhypothesis:\n  probes:\n    - name: ok\n      interval: 200ms\n      command: {{ run: \"true\" }}\n      tolerances:\n        - success_rate: \"90%\"\nbaseline: 1s\nduration: 4s\nrecovery: 1s\nfaults:\n  - kill: {{ name: x }}\n{extra}"
        );
        let (report, events) = run_yaml("r-check-stop", &yaml, Policy::default(), |_| {}).await;
        assert_eq!(report.outcome, Outcome::Aborted);
        assert!(checks(&events, "guardrail").is_empty());
        assert_eq!(
            checks(&events, "stop_condition"),
            [
                ("error-storm".to_string(), "pending".to_string()),
                ("error-storm".to_string(), "breached".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn a_stop_condition_whose_query_fails_shows_error_and_the_run_goes_on() {
        // A port nothing listens on: the query is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let yaml = format!(
            "name: t\nhypothesis:\n  probes:\n    - name: ok\n      interval: 200ms\n      command: {{ run: \"true\" }}\n      tolerances:\n        - success_rate: \"90%\"\nbaseline: 500ms\nduration: 2s\nrecovery: 500ms\nfaults:\n  - kill: {{ name: x }}\nstop_conditions:\n  - name: down\n    severity: critical\n    prometheus: {{ url: \"http://127.0.0.1:{port}\", query: \"up == 0\" }}\n"
        );
        let (report, events) = run_yaml("r-check-error", &yaml, Policy::default(), |_| {}).await;
        assert_eq!(report.outcome, Outcome::Passed, "{}", report.reason);
        assert_eq!(
            checks(&events, "stop_condition"),
            [
                ("down".to_string(), "pending".to_string()),
                ("down".to_string(), "error".to_string()),
            ],
            "one event per change, not one per evaluation"
        );
    }

    #[test]
    fn a_check_is_one_line() {
        let c = v1::CheckChanged {
            kind: "stop_condition".into(),
            name: "error-storm".into(),
            state: "breached".into(),
            detail: "true (critical severity): returned 7".into(),
            at_unix_ms: 1,
        };
        assert_eq!(
            super::line(&c),
            "stop condition error-storm: breached — true (critical severity): returned 7"
        );
    }
}
