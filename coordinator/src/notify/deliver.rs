//! One webhook delivery: a signed POST, retried with exponential backoff
//! on a network error, a timeout, 429 or 5xx; never more than
//! [`Retry::attempts`] tries, each bounded by [`Retry::timeout`].

use std::time::Duration;

use super::sign;

/// How a delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    /// Wait before the second try; doubled each time, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Bound of one try (connect, send, answer).
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a delivery failed, after its last try.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("{url}: answered {status} after {attempts} tries")]
    Status { url: String, status: u16, attempts: u32 },
    #[error("{url}: {why} after {attempts} tries")]
    Transport { url: String, why: String, attempts: u32 },
}

/// POSTs `body` (JSON) to `url`, signed with `secret` when there is one;
/// the number of tries it took.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    secret: Option<&[u8]>,
    retry: Retry,
) -> Result<u32, Failure> {
    let mut wait = retry.backoff;
    let mut last = Failure::Transport {
        url: url.to_string(),
        why: "not tried".into(),
        attempts: 0,
    };
    for attempt in 1..=retry.attempts.max(1) {
        let mut req = client
            .post(url)
            .timeout(retry.timeout)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = secret {
            req = req.header(sign::HEADER, sign::signature(s, body));
        }
        let retryable = match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(attempt),
            Ok(r) => {
                let status = r.status().as_u16();
                last = Failure::Status {
                    url: url.to_string(),
                    status,
                    attempts: attempt,
                };
                status == 429 || status >= 500
            }
            Err(e) => {
                last = Failure::Transport {
                    url: url.to_string(),
                    why: if e.is_timeout() {
                        format!("no answer within {:?}", retry.timeout)
                    } else {
                        e.to_string()
                    },
                    attempts: attempt,
                };
                true
            }
        };
        if !retryable || attempt == retry.attempts {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(retry.max_backoff);
    }
    Err(last)
}
