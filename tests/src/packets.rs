//! Measuring packet faults between two lab hosts: numbered UDP datagrams
//! from one host to another, what arrived (order, copies, damage), and the
//! receiver's UDP counters. Shared by `tests/packet_faults.rs` and
//! `faultline-bench packets`.

use std::collections::HashMap;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::lab::{enter_netns, in_netns, LabHost};

/// Bytes of each datagram: a big-endian sequence number, then 0xa5s.
pub const PAYLOAD: usize = 100;

/// What the receiver got.
#[derive(Debug, Default)]
pub struct Received {
    /// Sequence numbers of intact datagrams, in arrival order.
    pub seqs: Vec<u32>,
    /// Datagrams whose payload differed from what was sent.
    pub damaged: u64,
}

impl Received {
    /// Sent datagrams that never arrived intact.
    pub fn lost(&self, sent: u32) -> u64 {
        let mut seen: Vec<u32> = self.seqs.clone();
        seen.sort_unstable();
        seen.dedup();
        u64::from(sent) - seen.len() as u64
    }

    /// Datagrams that arrived more than once, counted per extra copy.
    pub fn duplicates(&self) -> u64 {
        let mut count: HashMap<u32, u32> = HashMap::new();
        for s in &self.seqs {
            *count.entry(*s).or_default() += 1;
        }
        count.values().map(|c| u64::from(c - 1)).sum()
    }

    /// The most copies of one datagram.
    pub fn most_copies(&self) -> u32 {
        let mut count: HashMap<u32, u32> = HashMap::new();
        for s in &self.seqs {
            *count.entry(*s).or_default() += 1;
        }
        count.values().copied().max().unwrap_or(0)
    }

    /// Arrivals after a datagram sent later had arrived.
    pub fn late(&self) -> u64 {
        let mut max = None;
        let mut late = 0;
        for s in &self.seqs {
            match max {
                Some(m) if *s < m => late += 1,
                _ => max = Some(*s),
            }
        }
        late
    }
}

/// Collects numbered datagrams on `sock` until its read timeout passes
/// with nothing (at most a minute).
pub fn receive(sock: &UdpSocket) -> Received {
    let mut r = Received::default();
    let mut buf = [0u8; 2048];
    let limit = Instant::now() + Duration::from_secs(60);
    while Instant::now() < limit {
        let Ok(len) = sock.recv(&mut buf) else { break };
        if len != PAYLOAD || buf[4..len].iter().any(|b| *b != 0xa5) {
            r.damaged += 1;
            continue;
        }
        r.seqs.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
    }
    r
}

/// Sends `n` numbered datagrams of [`PAYLOAD`] bytes (a big-endian
/// sequence number, then 0xa5s) from `sock` to `to`, one every `pace`.
pub fn send(sock: &UdpSocket, to: std::net::SocketAddr, n: u32, pace: Duration) {
    let mut buf = [0xa5u8; PAYLOAD];
    for seq in 0..n {
        buf[..4].copy_from_slice(&seq.to_be_bytes());
        sock.send_to(&buf, to).expect("send");
        std::thread::sleep(pace);
    }
}

/// Sends `n` numbered datagrams from `a` to `b`:`port`, one every `pace`,
/// and collects what `b` receives until it has been quiet for a second
/// (at most a minute).
pub fn udp_exchange(a: &LabHost, b: &LabHost, port: u16, n: u32, pace: Duration) -> Received {
    let (ans, bns, bip) = (a.netns.clone(), b.netns.clone(), b.ip);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        enter_netns(&bns).expect("enter b");
        let s = UdpSocket::bind((bip, port)).expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        ready_tx.send(()).expect("ready");
        receive(&s)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("receiver ready");
    let sender = std::thread::spawn(move || {
        enter_netns(&ans).expect("enter a");
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind sender");
        send(&s, SocketAddrV4::new(bip, port).into(), n, pace);
    });
    sender.join().expect("sender");
    receiver.join().expect("receiver")
}

/// A counter of the `Udp:` lines of `/proc/net/snmp` in `netns`.
pub fn udp_counter(netns: &str, name: &str) -> u64 {
    let snmp = in_netns(netns, &["cat", "/proc/net/snmp"]);
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        panic!("no Udp lines in {snmp}");
    }
    udp[0]
        .split_whitespace()
        .zip(udp[1].split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Udp {name} in {snmp}"))
}

/// faultline lines of the filter table in `netns` (the agent uses
/// iptables-legacy where it is installed).
pub fn filter_chains(netns: &str) -> String {
    ["iptables-legacy-save", "iptables-nft-save"]
        .iter()
        .map(|tool| in_netns(netns, &[tool, "-t", "filter"]))
        .collect::<String>()
        .lines()
        .filter(|l| l.contains("faultline"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_copies_and_losses_are_counted_from_arrivals() {
        let r = Received {
            seqs: vec![0, 2, 1, 3, 3, 5, 4],
            damaged: 0,
        };
        assert_eq!((r.late(), r.duplicates(), r.most_copies(), r.lost(7)), (2, 1, 2, 1));
    }
}
