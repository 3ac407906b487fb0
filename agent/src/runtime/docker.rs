//! Docker Engine API over its unix socket: a minimal HTTP/1.1 client (one
//! request per connection, `Connection: close`) for the two calls the agent
//! needs, `GET /containers/json` and `GET /containers/<id>/json`.
//!
//! Hand-written rather than hyper + hyperlocal: two GETs whose answers are
//! JSON need no connection pool, and a blocking std `UnixStream` with
//! timeouts keeps the fault kinds' `prepare` synchronous.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Container, ContainerRuntime, Error, Result};

/// Where dockerd listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Longest a request may take: the daemon answers these in milliseconds;
/// a hung daemon must not hold the fault table.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (a node with thousands of containers stays under it).
const MAX_RESPONSE: u64 = 64 << 20;

/// The Docker Engine on this node.
pub struct Docker {
    socket: PathBuf,
}

impl Docker {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }

    /// `GET path`, returning the status code and body.
    fn get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        unix_get("docker", &self.socket, path)
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>> {
        let (code, body) = self.get(path)?;
        let api = |message: String| Error::Api {
            runtime: "docker",
            request: format!("GET {path}"),
            message,
        };
        match code {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| api(format!("unreadable JSON: {e}"))),
            404 => Ok(None),
            c => Err(api(format!("status {c}: {}", String::from_utf8_lossy(&body).trim()))),
        }
    }
}

/// `GET path` over the unix socket `socket` (HTTP/1.1, one request per
/// connection), returning the status code and body; `runtime` names the
/// runtime in errors. CRI-O's inspect API is served the same way.
pub(super) fn unix_get(runtime: &'static str, socket: &std::path::Path, path: &str) -> Result<(u16, Vec<u8>)> {
    let io = |source| Error::Connect {
        runtime,
        socket: socket.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {runtime}\r\nConnection: close\r\n\r\n").map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).map_err(|message| Error::Api {
        runtime,
        request: format!("GET {path}"),
        message,
    })
}

/// Splits an HTTP/1.1 response into status and body, undoing chunked
/// transfer encoding.
fn parse_response(raw: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code: u16 = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[end + 4..];
    if !chunked {
        return Ok((code, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..nl]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Ok((code, out));
        }
        if rest.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    restart_count: u64,
    state: State,
    #[serde(default)]
    config: Config,
    #[serde(default)]
    graph_driver: GraphDriver,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct State {
    #[serde(default)]
    running: bool,
    #[serde(default)]
    pid: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Config {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
}

impl From<Inspect> for Container {
    fn from(i: Inspect) -> Self {
        Container {
            id: i.id,
            name: i.name.trim_start_matches('/').to_string(),
            image: i.config.image,
            labels: i.config.labels.unwrap_or_default(),
            running: i.state.running,
            pid: if i.state.running { i.state.pid } else { 0 },
            restart_count: i.restart_count,
        }
    }
}

/// Container ids are hex; anything else never reaches a request path.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ContainerRuntime for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn list(&self) -> Result<Vec<Container>> {
        let running: Vec<Summary> = self.get_json("/containers/json")?.unwrap_or_default();
        let mut out = Vec::new();
        for s in running {
            // Removed between the two calls: skip it.
            if let Some(c) = self.inspect(&s.id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn inspect(&self, id: &str) -> Result<Option<Container>> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(self
            .get_json::<Inspect>(&format!("/containers/{id}/json"))?
            .map(Container::from))
    }

    fn upper_dir(&self, id: &str) -> Result<Option<PathBuf>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let i: Option<Inspect> = self.get_json(&format!("/containers/{id}/json"))?;
        Ok(i.and_then(|i| i.graph_driver.data)
            .and_then(|d| d.get("UpperDir").cloned())
            .map(PathBuf::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_responses_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain).unwrap(), (200, b"[]".to_vec()));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"{\"a\"}".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }

    // A recorded answer of Docker 20.10's `GET /containers/<id>/json`, cut
    // to the fields read.
    #[test]
    fn an_inspect_answer_becomes_a_container() {
        let body = r#"{"Id":"0123abcd","Name":"/web-1","RestartCount":2,
            "State":{"Status":"running","Running":true,"Pid":4242},
            "Config":{"Image":"web:1","Labels":{"app":"web"}},
            "GraphDriver":{"Name":"overlay2","Data":{"UpperDir":"/var/lib/docker/overlay2/x/diff"}}}"#;
        let c: Container = serde_json::from_str::<Inspect>(body).unwrap().into();
        assert_eq!(c.name, "web-1");
        assert_eq!(c.pid, 4242);
        assert_eq!(c.restart_count, 2);
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert!(!valid_id("../../x"));
    }
}
