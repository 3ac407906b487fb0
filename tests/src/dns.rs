//! A tiny DNS server and client for the `dns` fault's lab tests: the server
//! answers every A query with one address (NOERROR), the client sends one
//! query and reads the answer's response code. Only what the tests need:
//! one question, no compression, no TCP.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The address the server answers for every name.
pub const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A query for `name`, type A, class IN, with `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// What a lookup got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// NOERROR with this A record.
    Address(Ipv4Addr),
    /// Another response code (3: NXDOMAIN, 2: SERVFAIL), from this address.
    Rcode(u8, SocketAddr),
    /// No answer within the timeout.
    Timeout,
    /// An answer that did not match the query (id or question).
    Mismatch(String),
}

/// One lookup of `name` at `server` (IPv4 or IPv6) from a fresh socket of
/// the calling thread's namespace.
pub fn lookup(server: impl Into<SocketAddr>, name: &str, id: u16, timeout: Duration) -> Lookup {
    let server: SocketAddr = server.into();
    let any = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(any).expect("bind client socket");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    let q = query(id, name);
    s.send_to(&q, server).expect("send query");
    let mut buf = [0u8; 512];
    let (n, from) = match s.recv_from(&mut buf) {
        Ok(r) => r,
        Err(_) => return Lookup::Timeout,
    };
    let a = &buf[..n];
    if n < q.len() || a[..2] != q[..2] || a[12..q.len()] != q[12..] || a[2] & 0x80 == 0 {
        return Lookup::Mismatch(format!("{a:02x?}"));
    }
    let rcode = a[3] & 0x0f;
    if rcode != 0 {
        return Lookup::Rcode(rcode, from);
    }
    // The answer: a pointer to the question, type, class, ttl, rdlength 4, address.
    match a.get(q.len() + 12..q.len() + 16) {
        Some(ip) => Lookup::Address(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        None => Lookup::Mismatch(format!("no answer record: {a:02x?}")),
    }
}

/// A DNS server on a thread, stopped and joined on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Queries answered.
    pub answered: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on `socket` (bound by the caller, in whichever namespace).
    pub fn spawn(socket: UdpSocket) -> Server {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (st, an) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(r) = answer(&buf[..n]) {
                    let _ = socket.send_to(&r, from);
                    an.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Server {
            stop,
            answered,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// NOERROR with one A record ([`ANSWER`]) for a well-formed query.
fn answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 17 || q[2] & 0x80 != 0 {
        return None;
    }
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(q[i]);
    }
    let end = i + 5;
    if end > q.len() {
        return None;
    }
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ANSWER.octets());
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_answers_the_client_on_loopback() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = match s.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let server = Server::spawn(s);
        assert_eq!(
            lookup(addr, "db.example.com", 7, Duration::from_secs(2)),
            Lookup::Address(ANSWER)
        );
        assert_eq!(server.answered.load(Ordering::Relaxed), 1);
    }
}
