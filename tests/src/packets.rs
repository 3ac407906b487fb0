//! Measuring packet faults between two lab hosts: numbered UDP datagrams
//! from one host to another, what arrived (order, copies, damage), and the
//! receiver's UDP counters. Shared by `tests/packet_faults.rs` and
//! `faultline-bench packets`.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
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

/// Sends `n` numbered datagrams from `a` to `b`:`port` (b's IPv4
/// address), one every `pace`, and collects what `b` receives until it has
/// been quiet for a second (at most a minute).
pub fn udp_exchange(a: &LabHost, b: &LabHost, port: u16, n: u32, pace: Duration) -> Received {
    udp_exchange_to(a, b, SocketAddrV4::new(b.ip, port).into(), n, pace)
}

/// [`udp_exchange`] to any address of `b`, IPv4 or IPv6 (`to`).
pub fn udp_exchange_to(a: &LabHost, b: &LabHost, to: SocketAddr, n: u32, pace: Duration) -> Received {
    let (ans, bns) = (a.netns.clone(), b.netns.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        enter_netns(&bns).expect("enter b");
        let s = UdpSocket::bind(to).expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        ready_tx.send(()).expect("ready");
        receive(&s)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("receiver ready");
    let sender = std::thread::spawn(move || {
        enter_netns(&ans).expect("enter a");
        let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(any).expect("bind sender");
        send(&s, to, n, pace);
    });
    sender.join().expect("sender");
    receiver.join().expect("receiver")
}

/// The IPv6 address [`add_ipv6`] gives the `i`-th lab host (0-based):
/// `fd00:77::11`, `fd00:77::12` ..., a ULA next to the lab's 10.77.0.0/24.
pub fn lab_ipv6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x11 + u16::from(i))
}

/// Gives `host` the address [`lab_ipv6`]`(i)`/64 on its `eth0` (the lab's
/// bridge carries IPv6 as it is), without duplicate address detection so
/// it is usable at once. It goes with the host's namespace.
pub fn add_ipv6(host: &LabHost, i: u8) -> Ipv6Addr {
    let addr = lab_ipv6(i);
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            host.netns.as_str(),
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .output()
        .expect("run ip addr add");
    assert!(
        out.status.success(),
        "ip addr add {addr} in {}: {}",
        host.netns,
        String::from_utf8_lossy(&out.stderr)
    );
    addr
}

/// A counter of `/proc/net/snmp6` in `netns`, e.g. `Udp6InCsumErrors`.
pub fn udp6_counter(netns: &str, name: &str) -> u64 {
    let snmp = in_netns(netns, &["cat", "/proc/net/snmp6"]);
    snmp.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp6 of {netns}"))
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

/// faultline lines of the filter table in `netns`, IPv4 and IPv6 (the
/// agent uses iptables-legacy and ip6tables-legacy where installed).
pub fn filter_chains(netns: &str) -> String {
    ["iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save"]
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
