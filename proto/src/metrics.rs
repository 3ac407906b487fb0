//! Prometheus text exposition (format 0.0.4) for both daemons: a small
//! registry of counters, gauges and histograms with labels, and a tiny HTTP
//! server for `GET /metrics`. Shared here because the agent and the
//! coordinator may not depend on each other.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the latency histograms: 1 ms to 10 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
enum Value {
    Counter(f64),
    Gauge(f64),
    Histogram { counts: Vec<u64>, sum: f64, count: u64 },
}

#[derive(Default)]
struct Inner {
    /// name → (type, help)
    meta: BTreeMap<String, (&'static str, String)>,
    values: BTreeMap<(String, Labels), Value>,
}

/// A registry of metrics. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut i)
    }

    /// Declares a metric (type `counter`, `gauge` or `histogram`) so it is
    /// exposed with its help text even before it has a value.
    pub fn describe(&self, name: &str, kind: &'static str, help: &str) {
        self.with(|i| {
            i.meta.insert(name.to_string(), (kind, help.to_string()));
        })
    }

    pub fn inc(&self, name: &str, l: &[(&str, &str)]) {
        self.add(name, l, 1.0)
    }

    pub fn add(&self, name: &str, l: &[(&str, &str)], v: f64) {
        self.with(|i| {
            let e = i
                .values
                .entry((name.to_string(), labels(l)))
                .or_insert(Value::Counter(0.0));
            if let Value::Counter(c) = e {
                *c += v;
            }
        })
    }

    pub fn set(&self, name: &str, l: &[(&str, &str)], v: f64) {
        self.with(|i| {
            i.values.insert((name.to_string(), labels(l)), Value::Gauge(v));
        })
    }

    pub fn gauge_add(&self, name: &str, l: &[(&str, &str)], v: f64) {
        self.with(|i| {
            let e = i
                .values
                .entry((name.to_string(), labels(l)))
                .or_insert(Value::Gauge(0.0));
            if let Value::Gauge(g) = e {
                *g += v;
            }
        })
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, name: &str, l: &[(&str, &str)], secs: f64) {
        self.with(|i| {
            let e = i
                .values
                .entry((name.to_string(), labels(l)))
                .or_insert(Value::Histogram {
                    counts: vec![0; BUCKETS.len()],
                    sum: 0.0,
                    count: 0,
                });
            if let Value::Histogram { counts, sum, count } = e {
                for (b, c) in BUCKETS.iter().zip(counts.iter_mut()) {
                    if secs <= *b {
                        *c += 1;
                    }
                }
                *sum += secs;
                *count += 1;
            }
        })
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let i = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = String::new();
        let mut names: Vec<&String> = i.meta.keys().collect();
        for (n, _) in i.values.keys() {
            if !i.meta.contains_key(n) {
                names.push(n);
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            if let Some((kind, help)) = i.meta.get(name) {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            for ((n, l), v) in i.values.iter().filter(|((n, _), _)| n == name) {
                let lbl = |extra: Option<(&str, String)>| {
                    let mut parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                    if let Some((k, v)) = extra {
                        parts.push(format!("{k}=\"{v}\""));
                    }
                    if parts.is_empty() {
                        String::new()
                    } else {
                        format!("{{{}}}", parts.join(","))
                    }
                };
                match v {
                    Value::Counter(c) | Value::Gauge(c) => {
                        let _ = writeln!(o, "{n}{} {c}", lbl(None));
                    }
                    Value::Histogram { counts, sum, count } => {
                        for (b, c) in BUCKETS.iter().zip(counts) {
                            let _ = writeln!(o, "{n}_bucket{} {c}", lbl(Some(("le", b.to_string()))));
                        }
                        let _ = writeln!(o, "{n}_bucket{} {count}", lbl(Some(("le", "+Inf".into()))));
                        let _ = writeln!(o, "{n}_sum{} {sum}", lbl(None));
                        let _ = writeln!(o, "{n}_count{} {count}", lbl(None));
                    }
                }
            }
        }
        o
    }
}

/// Whether metrics may be served on `addr`: loopback always; any other
/// address only when the operator said so (`--metrics-public`), because
/// `/metrics` has no TLS and no authentication.
pub fn exposure_allowed(addr: &std::net::SocketAddr, public: bool) -> bool {
    addr.ip().is_loopback() || public
}

/// Serves `GET /metrics` (and `HEAD /metrics`) on `listener` until `shutdown` resolves; `refresh`
/// runs before each scrape to update gauges that are read, not pushed.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    refresh: impl Fn(&Metrics) + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let refresh = Arc::new(refresh);
    tokio::pin!(shutdown);
    loop {
        let (mut sock, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let (m, refresh) = (metrics.clone(), refresh.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let mut words = req.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let head = method == "HEAD";
            let (status, ctype, body) =
                if (method == "GET" || head) && (path == "/metrics" || path.starts_with("/metrics?")) {
                    refresh(&m);
                    ("200 OK", "text/plain; version=0.0.4; charset=utf-8", m.render())
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "only GET /metrics is served here\n".to_string(),
                    )
                };
            // HEAD answers like GET, headers (with the length) without the body.
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                if head { "" } else { body.as_str() }
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.describe("x_total", "counter", "Things.");
        m.inc("x_total", &[("kind", "kill")]);
        m.inc("x_total", &[("kind", "kill")]);
        m.set("y", &[], 3.0);
        m.observe("z_seconds", &[], 0.003);
        let t = m.render();
        assert!(
            t.contains("# HELP x_total Things.\n# TYPE x_total counter\nx_total{kind=\"kill\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("y 3\n"), "{t}");
        assert!(
            t.contains("z_seconds_bucket{le=\"0.0025\"} 0\n") && t.contains("z_seconds_bucket{le=\"0.005\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("z_seconds_count 1\n"), "{t}");
    }

    async fn ask(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn head_metrics_answers_like_get_without_a_body() {
        let m = Metrics::new();
        m.set("y", &[], 3.0);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = stop_signal();
        let server = tokio::spawn(serve(l, m, |_| {}, stop.1));
        let get = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let head = ask(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
        assert!(get_head.starts_with("HTTP/1.1 200 OK"), "{get}");
        assert_eq!(get_body, "y 3\n");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head:?}");
        assert_eq!(head.trim_end(), get_head, "same headers, Content-Length included");
        let _ = stop.0.send(());
        server.await.unwrap();
    }

    fn stop_signal() -> (tokio::sync::oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    #[test]
    fn only_loopback_metrics_without_the_public_flag() {
        let lo: std::net::SocketAddr = "127.0.0.1:9700".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:9700".parse().unwrap();
        assert!(exposure_allowed(&lo, false));
        assert!(!exposure_allowed(&any, false));
        assert!(exposure_allowed(&any, true));
    }
}
