//! Notifications (`faultline serve --notify FILE`): webhooks on run start,
//! finish and abort and on a game day's finish, and an optional pre-flight
//! approval webhook.
//!
//! ```yaml
//! webhooks:
//!   - url: https://hooks.example.com/faultline
//!     events: [run_start, run_finish, run_abort, gameday_finish]  # default: all
//!     secret_file: /etc/faultline/webhook.secret                 # optional
//! approval:                                                      # optional
//!   url: https://change.example.com/approve
//!   secret_file: /etc/faultline/approval.secret
//!   timeout: 10s
//! ```
//!
//! A notification is a JSON body with `event`, the run's or game day's
//! fields, and a Slack-compatible `text`; with a secret it carries
//! `X-Faultline-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//! Delivery never blocks or fails a run: notifications go through a bounded
//! queue ([`QUEUE`]; when it is full they are dropped and counted), each is
//! retried with exponential backoff ([`deliver::Retry`]), and failures are
//! counted in `faultline_notifications_total{result}` and kept for the
//! console ([`Notifier::failures`]).
//!
//! Layout:
//! - [`sign`]: the HMAC-SHA256 signature.
//! - [`deliver`]: one signed POST with bounded retries.
//! - [`approval`]: the pre-flight approval of a run's planned targets.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};

use faultline_proto::metrics::Metrics;

pub mod approval;
pub mod deliver;
pub mod sign;

/// Notifications waiting to be sent; more are dropped (and counted).
pub const QUEUE: usize = 256;
/// Deliveries in flight at once.
pub const PARALLEL: usize = 8;
/// Failures kept for the console.
pub const FAILURES_KEPT: usize = 50;

/// Why a notification config is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read notification config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: webhooks[{index}].url {url:?}: use an http:// or https:// URL")]
    Url { path: PathBuf, index: usize, url: String },
    #[error("{path}: approval.url {url:?}: use an http:// or https:// URL")]
    ApprovalUrl { path: PathBuf, url: String },
    #[error("{path}: cannot read secret_file {secret}: {source}")]
    Secret {
        path: PathBuf,
        secret: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: secret_file {secret} is empty")]
    EmptySecret { path: PathBuf, secret: PathBuf },
}

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunStart,
    RunFinish,
    RunAbort,
    GamedayFinish,
}

impl EventKind {
    /// The `event` field of the body.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunStart => "run.started",
            EventKind::RunFinish => "run.finished",
            EventKind::RunAbort => "run.aborted",
            EventKind::GamedayFinish => "gameday.finished",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    approval: Option<RawApproval>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    events: Option<Vec<EventKind>>,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    url: String,
    secret_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    timeout: Option<Duration>,
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// One webhook, checked, with its secret read.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub events: Vec<EventKind>,
    pub secret: Option<Vec<u8>>,
}

/// The notification config, checked, secrets read.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub webhooks: Vec<Webhook>,
    pub approval: Option<approval::Approval>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// `text` as the file at `path` (relative secret files are relative to it).
    pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        let raw: RawConfig = serde_norway::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let secret = |file: &Option<PathBuf>| -> Result<Option<Vec<u8>>, Error> {
            let Some(f) = file else { return Ok(None) };
            let full = base.join(f);
            let s = std::fs::read(&full).map_err(|source| Error::Secret {
                path: path.to_owned(),
                secret: full.clone(),
                source,
            })?;
            let s = s.trim_ascii().to_vec();
            if s.is_empty() {
                return Err(Error::EmptySecret {
                    path: path.to_owned(),
                    secret: full,
                });
            }
            Ok(Some(s))
        };
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        let mut webhooks = Vec::new();
        for (index, w) in raw.webhooks.into_iter().enumerate() {
            if !http(&w.url) {
                return Err(Error::Url {
                    path: path.to_owned(),
                    index,
                    url: w.url,
                });
            }
            webhooks.push(Webhook {
                secret: secret(&w.secret_file)?,
                events: w.events.unwrap_or_else(|| {
                    vec![
                        EventKind::RunStart,
                        EventKind::RunFinish,
                        EventKind::RunAbort,
                        EventKind::GamedayFinish,
                    ]
                }),
                url: w.url,
            });
        }
        let approval = match raw.approval {
            None => None,
            Some(a) if !http(&a.url) => {
                return Err(Error::ApprovalUrl {
                    path: path.to_owned(),
                    url: a.url,
                })
            }
            Some(a) => Some(approval::Approval {
                secret: secret(&a.secret_file)?,
                timeout: a.timeout.unwrap_or(approval::DEFAULT_TIMEOUT),
                url: a.url,
            }),
        };
        Ok(Config { webhooks, approval })
    }
}

struct Job {
    url: String,
    secret: Option<Vec<u8>>,
    event: EventKind,
    body: Vec<u8>,
}

/// Sends notifications in the background.
pub struct Notifier {
    config: Config,
    tx: mpsc::Sender<Job>,
    metrics: Metrics,
    failures: Arc<Mutex<VecDeque<String>>>,
    client: reqwest::Client,
}

impl Notifier {
    /// Starts the sender task (on the current runtime) with `retry`.
    pub fn start(config: Config, metrics: Metrics, retry: deliver::Retry) -> Arc<Notifier> {
        metrics.describe(
            "faultline_notifications_total",
            "counter",
            "Webhook notifications, by event and result (delivered, failed, dropped: the queue was full).",
        );
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let client = crate::probes::tls::default_client();
        let failures: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let n = Arc::new(Notifier {
            config,
            tx,
            metrics: metrics.clone(),
            failures: failures.clone(),
            client: client.clone(),
        });
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(PARALLEL));
            while let Some(job) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (client, metrics, failures) = (client.clone(), metrics.clone(), failures.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let r = deliver::post(&client, &job.url, &job.body, job.secret.as_deref(), retry).await;
                    let result = match r {
                        Ok(_) => "delivered",
                        Err(e) => {
                            tracing::warn!(event = job.event.as_str(), err = %e, "webhook notification failed");
                            let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
                            if f.len() == FAILURES_KEPT {
                                f.pop_front();
                            }
                            f.push_back(format!(
                                "{} {}: {e}",
                                crate::timestamp::rfc3339_now(),
                                job.event.as_str()
                            ));
                            "failed"
                        }
                    };
                    metrics.inc(
                        "faultline_notifications_total",
                        &[("event", job.event.as_str()), ("result", result)],
                    );
                });
            }
        });
        n
    }

    /// Queues `event` with `fields` (an object; `event` and `text` are
    /// added) for every webhook that wants it. Never waits.
    pub fn notify(&self, event: EventKind, mut fields: serde_json::Value, text: String) {
        if let Some(o) = fields.as_object_mut() {
            o.insert("event".into(), event.as_str().into());
            o.insert("at".into(), crate::timestamp::rfc3339_now().into());
            o.insert("text".into(), text.into());
        }
        let body = serde_json::to_vec(&fields).unwrap_or_default();
        for w in self.config.webhooks.iter().filter(|w| w.events.contains(&event)) {
            let job = Job {
                url: w.url.clone(),
                secret: w.secret.clone(),
                event,
                body: body.clone(),
            };
            if self.tx.try_send(job).is_err() {
                self.metrics.inc(
                    "faultline_notifications_total",
                    &[("event", event.as_str()), ("result", "dropped")],
                );
            }
        }
    }

    /// The newest failures, oldest first.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The approval webhook, if configured, with the client to call it.
    pub fn approval(&self) -> Option<(&approval::Approval, &reqwest::Client)> {
        self.config.approval.as_ref().map(|a| (a, &self.client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_checked_and_its_secrets_read_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "topsecret\n").unwrap();
        let path = dir.path().join("notify.yaml");
        let c = Config::parse(
            &path,
            "webhooks:\n  - url: http://127.0.0.1:1/h\n    events: [run_finish]\n    secret_file: s\n  - url: https://x/y\napproval:\n  url: http://127.0.0.1:1/a\n  timeout: 2s\n",
        )
        .unwrap();
        assert_eq!(c.webhooks[0].secret.as_deref(), Some(&b"topsecret"[..]));
        assert_eq!(c.webhooks[0].events, [EventKind::RunFinish]);
        assert_eq!(c.webhooks[1].events.len(), 4);
        assert_eq!(c.approval.unwrap().timeout, Duration::from_secs(2));
        let e = Config::parse(&path, "webhooks:\n  - url: ftp://x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("webhooks[0].url \"ftp://x\": use an http:// or https:// URL"),
            "{e}"
        );
        let e = Config::parse(&path, "webhooks:\n  - url: http://x\n    secret_file: nope\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read secret_file") && e.contains("nope"), "{e}");
        let e = Config::parse(&path, "webhooks:\n  - url: http://x\n    events: [run_explode]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("run_explode"), "{e}");
    }
}
