//! A run's events as Server-Sent Events (`GET /runs/ID/events`).
//!
//! The stream is [`crate::follow::follow`], the same one `Control.Follow`
//! serves: the run's stored events first, then its live ones without a gap
//! or a duplicate, until RunFinished. Each event becomes one SSE message
//! whose `event:` is its kind (`started`, `phase`, `probe`, `fault`,
//! `check`, `log`, `finished`) and whose `data:` is one line of JSON. A comment
//! line every [`KEEPALIVE`] keeps proxies from closing an idle stream.

use std::time::Duration;

use faultline_proto::v1::{self, run_event::Event};
use serde_json::json;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::http::{security_headers, Response, CSP};
use crate::server::Coordinator;

/// How often an idle stream sends a comment line. By default, 15 s.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Streams `run_id`'s events to `sock` until the run's end, the client
/// leaving, or shutdown.
pub async fn stream<S: AsyncWrite + Unpin>(c: &Coordinator, run_id: &str, sock: &mut S, stop: CancellationToken) {
    if faultline_proto::ids::validate_run_id(run_id).is_err() {
        let _ = Response::text(404, "no such run\n").send(sock, false).await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(64);
    let task = match crate::follow::follow(c.store.clone(), c.events.followers(), run_id, 0, tx) {
        Ok(t) => t,
        Err(e) => {
            let _ = Response::text(404, format!("{e}\n")).send(sock, false).await;
            return;
        }
    };
    // Ends when its run ends or when this stream drops the receiver.
    tokio::spawn(task);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n{}Connection: close\r\n\r\n",
        security_headers(CSP)
    );
    if sock.write_all(head.as_bytes()).await.is_err() || sock.flush().await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            _ = keepalive.tick() => ": keepalive\n\n".to_string(),
            ev = rx.recv() => match ev {
                Some(Ok(ev)) => message(&ev),
                Some(Err(_)) | None => return,
            },
        };
        if sock.write_all(msg.as_bytes()).await.is_err() || sock.flush().await.is_err() {
            return;
        }
    }
}

/// One SSE message for `ev`.
pub fn message(ev: &v1::RunEvent) -> String {
    let (kind, data) = match &ev.event {
        Some(Event::Started(s)) => (
            "started",
            json!({"experiment": s.experiment, "planned_ms": s.planned_ms}),
        ),
        Some(Event::Phase(p)) => ("phase", json!({"phase": p.phase, "planned_ms": p.planned_ms})),
        Some(Event::Probe(p)) => (
            "probe",
            json!({
                "probe": p.probe, "phase": p.phase, "samples": p.samples, "successes": p.successes,
                "last_latency_us": p.last_latency_us, "last_error": p.last_error,
                // Compact for the chart: [at_ms, ok (0/1), latency ms, value or null].
                "points": p.points.iter().map(|x| json!([
                    x.at_ms, u8::from(x.ok), x.latency_us as f64 / 1000.0, x.value.filter(|v| v.is_finite()),
                ])).collect::<Vec<_>>(),
                "baseline": p.baseline.as_ref().map(|b| json!({
                    "low": b.low, "high": b.high, "unit": b.unit, "samples": b.samples,
                })),
            }),
        ),
        Some(Event::Fault(f)) => {
            let s = f.status.clone().unwrap_or_default();
            let state = v1::FaultState::try_from(s.state)
                .map(|st| st.as_str_name().trim_start_matches("FAULT_STATE_").to_ascii_lowercase())
                .unwrap_or_else(|_| format!("state {}", s.state));
            (
                "fault",
                json!({
                    "agent_id": f.agent_id, "fault_id": s.fault_id, "state": state,
                    "detail": s.detail, "backend": s.backend, "at_unix_ms": s.at_unix_ms,
                }),
            )
        }
        Some(Event::Finished(f)) => (
            "finished",
            json!({"outcome": f.outcome, "exit_code": f.exit_code, "reason": f.reason}),
        ),
        Some(Event::Log(l)) => ("log", json!({"message": l.message})),
        Some(Event::Check(c)) => (
            "check",
            json!({
                "kind": c.kind, "name": c.name, "state": c.state,
                "detail": c.detail, "at_unix_ms": c.at_unix_ms,
            }),
        ),
        None => ("log", json!({"message": ""})),
    };
    let mut data = data;
    data["elapsed_ms"] = json!(ev.elapsed_ms);
    // serde_json writes one line: no newline can end the SSE field early.
    format!("event: {kind}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_sse_message_of_its_kind() {
        let ev = v1::RunEvent {
            run_id: "r".into(),
            elapsed_ms: 42,
            event: Some(Event::Log(v1::LogLine {
                message: "two\nlines".into(),
            })),
        };
        let m = message(&ev);
        assert_eq!(
            m,
            "event: log\ndata: {\"elapsed_ms\":42,\"message\":\"two\\nlines\"}\n\n"
        );
    }

    #[test]
    fn probe_events_carry_chart_points_and_the_baseline_band() {
        let ev = v1::RunEvent {
            run_id: "r".into(),
            elapsed_ms: 1500,
            event: Some(Event::Probe(v1::ProbeProgress {
                probe: "web".into(),
                phase: "observe".into(),
                samples: 2,
                successes: 1,
                points: vec![
                    v1::ProbePoint {
                        at_ms: 1200,
                        ok: true,
                        latency_us: 2500,
                        value: None,
                    },
                    v1::ProbePoint {
                        at_ms: 1300,
                        ok: false,
                        latency_us: 300_000,
                        value: Some(f64::NAN),
                    },
                ],
                baseline: Some(v1::ProbeBand {
                    low: 1.0,
                    high: 4.5,
                    unit: "ms".into(),
                    samples: 10,
                }),
                ..Default::default()
            })),
        };
        let m = message(&ev);
        let data: serde_json::Value =
            serde_json::from_str(m.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["points"], json!([[1200, 1, 2.5, null], [1300, 0, 300.0, null]]));
        assert_eq!(
            data["baseline"],
            json!({"low": 1.0, "high": 4.5, "unit": "ms", "samples": 10})
        );
    }

    #[test]
    fn check_events_are_check_messages_with_their_state() {
        let ev = v1::RunEvent {
            run_id: "r".into(),
            elapsed_ms: 2100,
            event: Some(Event::Check(v1::CheckChanged {
                kind: "stop_condition".into(),
                name: "error-storm".into(),
                state: "error".into(),
                detail: "timeout".into(),
                at_unix_ms: 1_700_000_000_000,
            })),
        };
        assert_eq!(
            message(&ev),
            "event: check\ndata: {\"at_unix_ms\":1700000000000,\"detail\":\"timeout\",\"elapsed_ms\":2100,\"kind\":\"stop_condition\",\"name\":\"error-storm\",\"state\":\"error\"}\n\n"
        );
    }
}
