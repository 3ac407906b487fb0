//! `http` probe: one request; success is an expected status and, if set, a
//! body matching the regex. `https://` URLs go through the probe's own
//! rustls client (see [`super::tls`]).

use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::tls::{self, RawTls, Tls};
use super::{Clients, Kind, Reading};
use crate::experiment::values::{self, compile};

/// Methods a probe may send.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Statuses that count as success; empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub body_match: Option<Regex>,
    /// For `https://` URLs: whom to trust and which certificate to show.
    pub tls: Option<Tls>,
}

/// Why a written `http` probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("http.url {0:?}: must start with http:// or https://")]
    Scheme(String),
    #[error("http.method {0:?}: use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]
    Method(String),
    #[error("http.expect_status: {0} is not an HTTP status (100-599)")]
    Status(u16),
    #[error("http.url {0:?}: ca, cert, key and insecure_skip_verify apply to https:// URLs only")]
    TlsOnPlainHttp(String),
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error(transparent)]
    Value(#[from] values::Error),
}

/// Why one request failed, in the short, stable words reports count.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Method(String),
    #[error("timeout")]
    Timeout,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("connection reset")]
    ConnectionReset,
    /// Another I/O error under the request, in the OS's words.
    #[error("{0}")]
    Io(String),
    #[error("connect error")]
    Connect,
    /// Any other request error, in reqwest's words.
    #[error("{0}")]
    Request(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("body does not match /{0}/")]
    BodyMismatch(Regex),
    /// The probe's TLS client could not be built (unreadable CA, key).
    #[error(transparent)]
    Client(#[from] tls::ClientError),
    /// The TLS handshake failed: an untrusted or expired certificate, a
    /// name mismatch, a refused client certificate.
    #[error("tls: {0}")]
    Handshake(String),
}

/// An `http` probe as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default)]
    expect_status: Vec<u16>,
    body_match: Option<String>,
    #[serde(flatten)]
    tls: RawTls,
}

impl Kind for HttpProbe {
    const NAME: &'static str = "http";
    type Raw = RawHttp;
    type Error = Error;
    type Failure = Failure;

    fn from_raw(h: RawHttp) -> Result<Self, Error> {
        let https = h.url.starts_with("https://");
        if !https && !h.url.starts_with("http://") {
            return Err(Error::Scheme(h.url));
        }
        let tls_written =
            h.tls.ca.is_some() || h.tls.cert.is_some() || h.tls.key.is_some() || h.tls.insecure_skip_verify;
        if !https && tls_written {
            return Err(Error::TlsOnPlainHttp(h.url));
        }
        let tls = https.then(|| Tls::from_raw("http", h.tls)).transpose()?;
        let method = h.method.unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(Error::Method(method));
        }
        if let Some(bad) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(Error::Status(*bad));
        }
        Ok(HttpProbe {
            method,
            url: h.url,
            headers: h.headers,
            body: h.body,
            expect_status: h.expect_status,
            body_match: h.body_match.map(|re| compile("http.body_match", &re)).transpose()?,
            tls,
        })
    }

    fn target(&self) -> String {
        format!("{} {}", self.method, self.url)
    }

    /// Sends the request and judges the response.
    async fn check(&self, clients: &Clients, timeout: Duration) -> Result<Reading, Failure> {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).map_err(|e| Failure::Method(e.to_string()))?;
        let client = match &self.tls {
            Some(tls) => tls.client()?,
            None => clients.http.clone(),
        };
        let mut req = client.request(method, &self.url).timeout(timeout);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(body) = &self.body {
            req = req.body(body.clone());
        }
        let resp = req.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let ok_status = if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        };
        if !ok_status {
            return Err(Failure::Status(status));
        }
        if let Some(re) = &self.body_match {
            let body = resp.text().await.map_err(describe)?;
            if !re.is_match(&body) {
                return Err(Failure::BodyMismatch(re.clone()));
            }
        }
        Ok(Reading::Done)
    }
}

/// The kind of failure rather than reqwest's nested chain.
pub(crate) fn describe(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout;
    }
    if let Some(tls) = find_tls_error(&e) {
        return Failure::Handshake(tls.to_string());
    }
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Failure::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset => Failure::ConnectionReset,
                _ => Failure::Io(io.to_string()),
            };
        }
        src = s.source();
    }
    if e.is_connect() {
        Failure::Connect
    } else {
        Failure::Request(e.to_string())
    }
}

/// The rustls error under a failed request, if the handshake failed:
/// rustls reports it as an I/O error wrapping its own, which `source()`
/// skips, so wrapped I/O errors are opened too.
fn find_tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    for _ in 0..32 {
        let s = src?;
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(tls) = find_tls_error(inner) {
                return Some(tls);
            }
        }
        src = s.source();
    }
    None
}
