//! `http` probe: one request; success is an expected status and, if set, a
//! body matching the regex.

use std::time::Duration;

use crate::experiment::HttpProbe;

/// Sends the request and judges the response.
pub async fn check(client: &reqwest::Client, p: &HttpProbe, timeout: Duration) -> Result<(), String> {
    let method = reqwest::Method::from_bytes(p.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method, &p.url).timeout(timeout);
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    if let Some(body) = &p.body {
        req = req.body(body.clone());
    }
    let resp = req.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let ok_status = if p.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        p.expect_status.contains(&status)
    };
    if !ok_status {
        return Err(format!("HTTP {status}"));
    }
    if let Some(re) = &p.body_match {
        let body = resp.text().await.map_err(describe)?;
        if !re.is_match(&body) {
            return Err(format!("body does not match /{re}/"));
        }
    }
    Ok(())
}

/// A short, stable description of a request error for reports: the kind of
/// failure rather than reqwest's nested chain.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                _ => io.to_string(),
            };
        }
        src = s.source();
    }
    if e.is_connect() {
        "connect error".into()
    } else {
        e.to_string()
    }
}
