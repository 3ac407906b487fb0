//! The pre-flight approval webhook: before a submitted run starts, its
//! planned targets are POSTed (signed like a notification); a 2xx answer
//! lets it start, anything else refuses it with the answer's reason (the
//! body's `reason` field, or its text). No answer within the timeout
//! refuses it too: a run nobody approved does not start.

use std::time::Duration;

use super::sign;

/// How long the approver may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an answer's reason kept.
const REASON_MAX: usize = 500;

/// The approval webhook, checked.
#[derive(Debug, Clone)]
pub struct Approval {
    pub url: String,
    pub secret: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Why a run was not approved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the approval webhook refused the run ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("the approval webhook {url} could not be asked: {why}")]
    Unreachable { url: String, why: String },
}

/// Asks the approver about `planned` (the body: experiment and targets).
pub async fn ask(a: &Approval, client: &reqwest::Client, planned: &serde_json::Value) -> Result<(), Refusal> {
    let body = serde_json::to_vec(planned).unwrap_or_default();
    let mut req = client
        .post(&a.url)
        .timeout(a.timeout)
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(s) = &a.secret {
        req = req.header(sign::HEADER, sign::signature(s, &body));
    }
    let resp = req.send().await.map_err(|e| Refusal::Unreachable {
        url: a.url.clone(),
        why: if e.is_timeout() {
            format!("no answer within {:?}", a.timeout)
        } else {
            e.to_string()
        },
    })?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or(text);
    let mut reason: String = reason.trim().chars().filter(|c| !c.is_control()).collect();
    if reason.len() > REASON_MAX {
        let cut = (0..=REASON_MAX)
            .rev()
            .find(|&i| reason.is_char_boundary(i))
            .unwrap_or(0);
        reason.truncate(cut);
        reason.push('…');
    }
    if reason.is_empty() {
        reason = "no reason given".into();
    }
    Err(Refusal::Refused { status, reason })
}
