//! The console's HTTP/1.1: one request per connection, bounded in size and
//! time, and every response with the console's security headers.
//!
//! The console needs a handful of GET and form-POST routes and one
//! Server-Sent Events stream, so it reads requests itself (like the
//! metrics endpoint) instead of pulling in a web framework.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most bytes of a request's line and headers. By default, 16 KiB.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most bytes of a request body (the forms are a token and a few fields).
pub const MAX_BODY: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The console's Content-Security-Policy: its own script file and nothing
/// else; no inline script, no inline style, no framing.
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The stored HTML report's policy: it carries its own inline `<style>`
/// and SVG charts and no script at all.
pub const REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'";

/// Errors reading a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("client too slow: no full request within {READ_TIMEOUT:?}")]
    Timeout,
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// The body as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> HashMap<String, String> {
        parse_form(&String::from_utf8_lossy(&self.body))
    }
}

/// Reads one request from `sock`.
pub async fn read_request<S: AsyncRead + Unpin>(sock: &mut S) -> Result<Request, Error> {
    tokio::time::timeout(READ_TIMEOUT, read_inner(sock))
        .await
        .map_err(|_| Error::Timeout)?
}

async fn read_inner<S: AsyncRead + Unpin>(sock: &mut S) -> Result<Request, Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Error::HeadTooLarge);
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Malformed("connection closed before the end of the headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(Error::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| Error::Malformed("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) = (first.next(), first.next(), first.next(), first.next())
    else {
        return Err(Error::Malformed("request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Error::Malformed("only HTTP/1.x"));
    }
    let mut headers = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or(Error::Malformed("header line"))?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let len: usize = match headers.get("content-length") {
        None => 0,
        Some(v) => v.parse().map_err(|_| Error::Malformed("content-length"))?,
    };
    if headers.contains_key("transfer-encoding") {
        return Err(Error::Malformed("chunked bodies are not accepted; send content-length"));
    }
    if len > MAX_BODY {
        return Err(Error::BodyTooLarge);
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Malformed("connection closed before the end of the body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    })
}

/// A response to send.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub csp: &'static str,
}

impl Response {
    pub fn html(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: body.into_bytes(),
            csp: CSP,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
            csp: CSP,
        }
    }

    /// A 303 See Other: after a POST, the browser GETs `to`.
    pub fn redirect(to: &str) -> Response {
        let mut r = Response::text(303, format!("see {to}\n"));
        r.headers.push(("location", to.to_string()));
        r
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The status line and headers, security headers included.
    pub fn head(&self, content_length: Option<usize>) -> String {
        let mut h = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\n{}",
            self.status,
            reason(self.status),
            self.content_type,
            security_headers(self.csp)
        );
        for (k, v) in &self.headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = content_length {
            h.push_str(&format!("Content-Length: {n}\r\n"));
        }
        h.push_str("Connection: close\r\n\r\n");
        h
    }

    pub async fn send<S: AsyncWrite + Unpin>(&self, sock: &mut S, head_only: bool) -> std::io::Result<()> {
        sock.write_all(self.head(Some(self.body.len())).as_bytes()).await?;
        if !head_only {
            sock.write_all(&self.body).await?;
        }
        sock.flush().await
    }
}

/// The headers every console response carries.
pub fn security_headers(csp: &str) -> String {
    format!(
        "Content-Security-Policy: {csp}\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-store\r\n"
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

/// Parses `a=1&b=x%20y` (`+` is a space).
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_percent_decoded() {
        let f = parse_form("token=a%2Bb+c&csrf=x&bad=%zz&end=%4");
        assert_eq!(f["token"], "a+b c");
        assert_eq!(f["csrf"], "x");
        assert_eq!(f["bad"], "%zz");
        assert_eq!(f["end"], "%4");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[tokio::test]
    async fn requests_are_read_with_their_body_and_cookies() {
        let raw =
            b"POST /login?x=1 HTTP/1.1\r\nHost: a\r\nCookie: a=1; fl_session=abc\r\nContent-Length: 5\r\n\r\nt=1&y";
        let r = read_request(&mut &raw[..]).await.unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("POST", "/login", "x=1")
        );
        assert_eq!(r.cookie("fl_session"), Some("abc"));
        assert_eq!(r.body, b"t=1&y");
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(
            read_request(&mut big.as_bytes()).await,
            Err(Error::BodyTooLarge)
        ));
    }
}
