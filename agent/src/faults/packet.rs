//! What the NFQUEUE packet faults share: `corrupt`, `duplicate`, `reorder`
//! and `dns`.
//!
//! Per fault: one iptables chain in the `filter` table, named by the kind's
//! prefix and the fault id ([`chain_name`]), jumped to from `OUTPUT`
//! (packets this node sends; forwarded packets are not taken). The chain
//! first returns the agent's own packets (duplicates and DNS answers carry
//! [`MARK`]), the coordinator and SSH, then hands matching packets to an
//! NFQUEUE queue bound by this fault's thread. The thread asks the kind's
//! [`Handler`] what to do with each packet: accept, drop, accept a changed
//! copy, hold it back, accept it and send it again, or drop it and send an
//! answer instead.
//!
//! Why NFQUEUE and not netem: this kernel family often lacks `sch_netem`
//! (see the README), while the xt `NFQUEUE` target is nearly everywhere.
//! The rule uses `--queue-bypass`, so a dead agent lets packets through;
//! restore removes the rules first, then releases every held packet, then
//! unbinds. IPv4 only: an IPv6 destination is refused.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use faultline_proto::v1;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
use nix::sys::time::TimeSpec;

use crate::cidr::Cidr;
use crate::faults::latency::{self, nfqueue::probe_queue, short_hash, Protocol, MAX_PORTS};
use crate::faults::{self, Applied, FaultKind, Place, Prepared, Report, Restoring, Setup};
use crate::firewall::{Exempt, Family, Firewall};
use crate::journal::Object;
use crate::nfqueue::{CopyMode, QueueSocket, Verdict};

/// The iptables table of every packet fault's chain.
pub const TABLE: &str = "filter";
const HOOK: &str = "OUTPUT";
/// The firewall mark of packets the agent sends itself (duplicates, DNS
/// answers): the chains return them, so they are not queued again.
pub const MARK: u32 = 0x4654_0d0d;
/// Queue numbers of packet faults start here (latency's at 0x4600).
const QUEUE_BASE: u16 = 0x4700;
const QUEUE_TRIES: u16 = 256;
const QUEUE_MAX_LEN: u32 = 10_000;
/// Longest iptables chain name.
const MAX_CHAIN: usize = 28;

/// Errors of the packet faults.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {kind} spec: {message}")]
    InvalidSpec { kind: &'static str, message: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error("nfqueue backend: {0}")]
    Failed(String),
}

impl From<Error> for faults::Error {
    fn from(e: Error) -> Self {
        let refusal = !matches!(e, Error::Failed(_));
        faults::Error::of(e, refusal)
    }
}

/// Result of the packet faults.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which packets leaving the node a fault takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub interface: Option<String>,
    /// Empty means any destination.
    pub destinations: Vec<Cidr>,
    pub dst_ports: Vec<u16>,
    pub src_ports: Vec<u16>,
    pub protocol: Protocol,
}

fn ports(kind: &'static str, what: &str, raw: &[u32]) -> Result<Vec<u16>> {
    let invalid = |message| Error::InvalidSpec { kind, message };
    if raw.len() > MAX_PORTS {
        return Err(invalid(format!("{what}: at most {MAX_PORTS} ports")));
    }
    raw.iter()
        .map(|p| match u16::try_from(*p) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(invalid(format!("{what}: {p} is not a port (1-65535)"))),
        })
        .collect()
}

/// IPv4 networks from the wire, refusing IPv6 (not yet).
pub fn ipv4_networks(kind: &'static str, what: &str, raw: &[String]) -> Result<Vec<Cidr>> {
    raw.iter()
        .map(|d| {
            let c = d.parse::<Cidr>().map_err(|e| Error::InvalidSpec {
                kind,
                message: format!("{what}: {e}"),
            })?;
            if !c.is_ipv4() {
                return Err(Error::InvalidSpec {
                    kind,
                    message: format!("{what}: {c} is IPv6; {kind} takes IPv4 packets only (not yet IPv6)"),
                });
            }
            Ok(c)
        })
        .collect()
}

impl Scope {
    /// The scope of a wire spec; none means every packet.
    pub fn from_wire(kind: &'static str, w: Option<v1::PacketScope>) -> Result<Self> {
        let w = w.unwrap_or_default();
        let invalid = |message| Error::InvalidSpec { kind, message };
        let interface = match w.interface.as_str() {
            "" => None,
            i if latency::valid_interface(i) => Some(i.to_string()),
            i => return Err(invalid(format!("interface {i:?} is not a valid interface name"))),
        };
        let protocol = match w.protocol.to_ascii_lowercase().as_str() {
            "" | "any" | "all" => Protocol::Any,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            p => return Err(invalid(format!("protocol {p:?}: use tcp, udp, icmp or leave it empty"))),
        };
        let dst_ports = ports(kind, "dst_ports", &w.dst_ports)?;
        let src_ports = ports(kind, "src_ports", &w.src_ports)?;
        if protocol == Protocol::Icmp && !(dst_ports.is_empty() && src_ports.is_empty()) {
            return Err(invalid("icmp has no ports; drop the port lists".into()));
        }
        Ok(Scope {
            interface,
            destinations: ipv4_networks(kind, "destinations", &w.destinations)?,
            dst_ports,
            src_ports,
            protocol,
        })
    }

    /// iptables match arguments, one line per destination × protocol.
    pub fn match_lines(&self) -> Vec<String> {
        let dests: Vec<Option<String>> = if self.destinations.is_empty() {
            vec![None]
        } else {
            self.destinations.iter().map(|c| Some(format!("-d {c}"))).collect()
        };
        let ported = !(self.dst_ports.is_empty() && self.src_ports.is_empty());
        let protos: Vec<Option<&str>> = match (self.protocol, ported) {
            (Protocol::Any, false) => vec![None],
            (Protocol::Any, true) => vec![Some("tcp"), Some("udp")],
            (Protocol::Tcp, _) => vec![Some("tcp")],
            (Protocol::Udp, _) => vec![Some("udp")],
            (Protocol::Icmp, _) => vec![Some("icmp")],
        };
        let list = |p: &[u16]| p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        let mut out = Vec::new();
        for d in &dests {
            for p in &protos {
                let mut parts: Vec<String> = d.iter().cloned().collect();
                if let Some(p) = p {
                    parts.push(format!("-p {p}"));
                }
                if ported {
                    parts.push("-m multiport".into());
                    if !self.dst_ports.is_empty() {
                        parts.push(format!("--dports {}", list(&self.dst_ports)));
                    }
                    if !self.src_ports.is_empty() {
                        parts.push(format!("--sports {}", list(&self.src_ports)));
                    }
                }
                out.push(parts.join(" "));
            }
        }
        out
    }

    /// "to 10.0.0.2/32 udp ports 53", for detail texts.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.destinations.is_empty() {
            parts.push("to any destination".to_string());
        } else {
            let d: Vec<String> = self.destinations.iter().map(|c| c.to_string()).collect();
            parts.push(format!("to {}", d.join(", ")));
        }
        if let Some(i) = &self.interface {
            parts.push(format!("via {i}"));
        }
        match self.protocol {
            Protocol::Any => {}
            Protocol::Tcp => parts.push("tcp".into()),
            Protocol::Udp => parts.push("udp".into()),
            Protocol::Icmp => parts.push("icmp".into()),
        }
        if !self.dst_ports.is_empty() {
            parts.push(format!("ports {:?}", self.dst_ports));
        }
        if !self.src_ports.is_empty() {
            parts.push(format!("source ports {:?}", self.src_ports));
        }
        parts.join(" ")
    }
}

/// A share of packets, checked: (0, 100].
pub fn percent(kind: &'static str, p: f64) -> Result<f64> {
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(Error::InvalidSpec {
            kind,
            message: format!("percent {p} is not within (0, 100]"),
        })
    }
}

/// The chain of a fault: `<prefix><fault id>` when that fits iptables' 28
/// characters, else `<prefix>~<64-bit FNV-1a of the id, base32>`. Injective
/// like latency's [`latency::nfqueue::chain_name`] (`~` is in no fault id);
/// a hash collision is refused at apply (the chain exists).
pub fn chain_name(prefix: &str, fault_id: &str) -> Result<String> {
    faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| Error::Refused(e.to_string()))?;
    if prefix.len() + fault_id.len() <= MAX_CHAIN {
        return Ok(format!("{prefix}{fault_id}"));
    }
    Ok(format!("{prefix}~{}", latency::nfqueue::hash_base32(fault_id)))
}

/// A xorshift generator for the per-packet coin flips.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(fault_id: &str) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((t ^ ((short_hash(fault_id) as u64) << 32)) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: f64) -> bool {
        self.unit() * 100.0 < percent
    }
}

/// What becomes of one queued packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it go unchanged.
    Accept,
    /// Let it go with these bytes instead (counted as affected).
    Change(Vec<u8>),
    /// Drop it (counted as affected).
    Drop,
    /// Let it go after this long (counted as affected).
    Hold(Duration),
    /// Let it go, and send it once more (counted as affected).
    Duplicate,
    /// Drop it and send these bytes (an IPv4 packet) instead (counted as
    /// affected).
    Answer(Vec<u8>),
}

/// A kind's per-packet logic, run on the queue's thread.
pub trait Handler: Send + 'static {
    /// What to do with `packet` (its IPv4 header on; empty with
    /// [`CopyMode::Meta`]).
    fn decide(&mut self, packet: &[u8]) -> Decision;
}

/// What a kind makes of a fault: everything the shared machinery needs.
pub struct Plan {
    pub scope_lines: Vec<String>,
    pub interface: Option<String>,
    pub copy: CopyMode,
    /// What the fault does, e.g. "corrupting 30% of packets to any
    /// destination", for detail texts.
    pub effect: String,
    pub handler: Box<dyn Handler>,
}

/// A packet kind's static parts.
pub struct PacketKind {
    pub name: &'static str,
    /// Its chains' prefix (`faultline-c-` ...), covered by its `owns`.
    pub prefix: &'static str,
    /// Checks a wire spec and makes the plan.
    pub plan: fn(&str, v1::fault_spec::Kind) -> Result<Plan>,
    /// Wraps the observation in the kind's variant.
    pub wrap: fn(v1::PacketObservation) -> v1::observation::Kind,
}

/// The node's side of packet faults: iptables and a working NFQUEUE.
#[derive(Clone)]
pub struct Nfqueue {
    pub firewall: Arc<dyn Firewall>,
}

impl Nfqueue {
    /// `Some` when iptables (IPv4) is installed and an NFQUEUE socket binds.
    pub fn detect() -> Option<Self> {
        let fw = crate::firewall::SystemFirewall::detect();
        if !fw.has_iptables(Family::V4) || probe_queue().is_err() {
            return None;
        }
        Some(Nfqueue { firewall: Arc::new(fw) })
    }
}

struct Kind {
    kind: &'static PacketKind,
    nfqueue: Option<Nfqueue>,
    exempt: Exempt,
}

/// Sets a packet kind up on this node.
pub fn build(kind: &'static PacketKind, setup: &Setup) -> Arc<dyn FaultKind> {
    Arc::new(Kind {
        kind,
        nfqueue: setup.nfqueue.clone(),
        exempt: setup.exempt.clone(),
    })
}

impl FaultKind for Kind {
    fn capabilities(&self) -> Vec<String> {
        match self.nfqueue {
            Some(_) => vec![format!("{}:nfqueue", self.kind.name)],
            None => vec![],
        }
    }

    fn prepare(&self, fault_id: &str, spec: v1::fault_spec::Kind, place: &Place) -> faults::Result<Box<dyn Prepared>> {
        faults::refuse_containers(self.kind.name, place)?;
        let plan = (self.kind.plan)(fault_id, spec)?;
        let chain = chain_name(self.kind.prefix, fault_id)?;
        let Some(nfqueue) = self.nfqueue.clone() else {
            return Err(Error::Refused(format!(
                "{} needs iptables and the kernel's nfnetlink_queue, which this node lacks",
                self.kind.name
            ))
            .into());
        };
        Ok(Box::new(PreparedPacket {
            kind: self.kind,
            fault_id: fault_id.to_string(),
            chain,
            plan,
            nfqueue,
            exempt: self.exempt.clone(),
        }))
    }
}

struct PreparedPacket {
    kind: &'static PacketKind,
    fault_id: String,
    chain: String,
    plan: Plan,
    nfqueue: Nfqueue,
    exempt: Exempt,
}

fn jump(interface: &Option<String>, chain: &str) -> String {
    match interface {
        Some(i) => format!("{HOOK} -o {i} -j {chain}"),
        None => format!("{HOOK} ! -o lo -j {chain}"),
    }
}

/// The `iptables-restore --noflush` script that installs a packet fault.
pub fn install_script(
    lines: &[String],
    interface: &Option<String>,
    exempt: &Exempt,
    chain: &str,
    queue: u16,
) -> String {
    let mut s = format!("*{TABLE}\n:{chain} - [0:0]\n-A {chain} -m mark --mark {MARK:#x} -j RETURN\n");
    for h in latency::exempt_hosts(exempt).iter().filter(|h| h.is_ipv4()) {
        s += &format!("-A {chain} -d {h} -j RETURN\n");
    }
    for p in &exempt.tcp_ports {
        s += &format!("-A {chain} -p tcp --dport {p} -j RETURN\n-A {chain} -p tcp --sport {p} -j RETURN\n");
    }
    for m in lines {
        let m = if m.is_empty() { String::new() } else { format!("{m} ") };
        s += &format!("-A {chain} {m}-j NFQUEUE --queue-num {queue} --queue-bypass\n");
    }
    s += &format!("-I {}\nCOMMIT\n", jump(interface, chain));
    s
}

/// The script that removes what [`install_script`] installed.
pub fn remove_script(interface: &Option<String>, chain: &str) -> String {
    format!(
        "*{TABLE}\n-D {}\n-F {chain}\n-X {chain}\nCOMMIT\n",
        jump(interface, chain)
    )
}

impl Prepared for PreparedPacket {
    fn undo_objects(&self) -> Vec<Object> {
        vec![Object::IptablesChain {
            ipv6: false,
            table: TABLE.into(),
            chain: self.chain.clone(),
        }]
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        Ok((
            format!(
                "would be {}, with nfqueue: iptables {TABLE} chain {}",
                self.plan.effect, self.chain
            ),
            "nfqueue".into(),
        ))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let fw = self.nfqueue.firewall.clone();
        // Refuse rather than adopt a chain we did not make in this life.
        if let Ok(save) = fw.iptables_save(Family::V4, TABLE) {
            if crate::firewall::chains(&save).contains(&self.chain) {
                return Err(Error::Refused(format!(
                    "iptables chain {} already exists; is fault {} already injected?",
                    self.chain, self.fault_id
                ))
                .into());
            }
        }
        let start = QUEUE_BASE.wrapping_add((short_hash(&self.fault_id) % 0x100) as u16);
        let mut last = None;
        let mut sock = None;
        for i in 0..QUEUE_TRIES {
            match QueueSocket::bind_copying(start.wrapping_add(i), QUEUE_MAX_LEN, self.plan.copy) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let sock = sock.ok_or_else(|| {
            Error::Failed(format!(
                "no free NFQUEUE queue number from {start}: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        let queue = sock.queue();
        let raw = raw_socket().map_err(|e| Error::Failed(format!("raw IPv4 socket: {e}")))?;
        let stop = Arc::new(EventFd::new().map_err(|e| Error::Failed(format!("eventfd: {e}")))?);
        let stop_thread = stop.clone();
        let handler = self.plan.handler;
        let thread = std::thread::Builder::new()
            .name(format!("{}-{queue}", self.kind.name))
            .spawn(move || queue_loop(sock, raw, stop_thread, handler))
            .map_err(|e| Error::Failed(format!("cannot start the queue thread: {e}")))?;
        let mut applied = AppliedPacket {
            kind: self.kind,
            firewall: fw.clone(),
            chain: self.chain,
            interface: self.plan.interface,
            queue,
            effect: self.plan.effect,
            stop,
            thread: Some(thread),
        };
        let script = install_script(
            &self.plan.scope_lines,
            &applied.interface,
            &self.exempt,
            &applied.chain,
            queue,
        );
        if let Err(e) = fw.iptables_restore(Family::V4, &script) {
            let _ = applied.stop_thread();
            return Err(Error::Failed(e.to_string()).into());
        }
        Ok(Box::new(applied))
    }
}

/// A raw IPv4 socket for packets the agent sends (`IPPROTO_RAW` implies
/// `IP_HDRINCL`: we give the whole IP header), marked with [`MARK`].
fn raw_socket() -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    )?;
    socket::setsockopt(&fd, socket::sockopt::Mark, &MARK)?;
    Ok(fd)
}

fn send_raw(raw: &OwnedFd, packet: &[u8]) -> bool {
    if packet.len() < 20 {
        return false;
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    socket::sendto(std::os::fd::AsRawFd::as_raw_fd(raw), packet, &addr, MsgFlags::empty()).is_ok()
}

/// Packets seen and affected by a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub affected: u64,
}

fn queue_loop(
    mut sock: QueueSocket,
    raw: OwnedFd,
    stop: Arc<EventFd>,
    mut handler: Box<dyn Handler>,
) -> (Counters, Option<String>) {
    let mut held: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut packets = Vec::with_capacity(256);
    let mut c = Counters::default();
    let mut error = None;
    loop {
        let timeout = held
            .peek()
            .map(|Reverse((t, _))| TimeSpec::from_duration(t.saturating_duration_since(Instant::now())));
        let (ready_sock, ready_stop) = {
            let mut fds = [
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match nix::poll::ppoll(&mut fds, timeout, None) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error = Some(format!("poll: {e}"));
                    break;
                }
            }
            (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false))
        };
        if ready_stop {
            break;
        }
        if ready_sock {
            packets.clear();
            if let Err(e) = sock.recv_packets(&mut packets) {
                error = Some(format!("receiving from the queue: {e}"));
                break;
            }
            let now = Instant::now();
            for p in packets.drain(..) {
                c.seen += 1;
                let d = handler.decide(&p.payload);
                if d != Decision::Accept {
                    c.affected += 1;
                }
                let _ = match d {
                    Decision::Accept => sock.verdict(p.id, Verdict::Accept),
                    Decision::Drop => sock.verdict(p.id, Verdict::Drop),
                    Decision::Change(bytes) => sock.accept_changed(p.id, &bytes),
                    Decision::Hold(d) => {
                        held.push(Reverse((now + d, p.id)));
                        Ok(())
                    }
                    Decision::Duplicate => {
                        let r = sock.verdict(p.id, Verdict::Accept);
                        send_raw(&raw, &p.payload);
                        r
                    }
                    Decision::Answer(bytes) => {
                        send_raw(&raw, &bytes);
                        sock.verdict(p.id, Verdict::Drop)
                    }
                };
            }
        }
        let now = Instant::now();
        while let Some(Reverse((t, id))) = held.peek().copied() {
            if t > now {
                break;
            }
            held.pop();
            let _ = sock.verdict(id, Verdict::Accept);
        }
    }
    // Stopping: the rules are gone; let what is held and waiting go now
    // rather than have the kernel drop it on unbind.
    packets.clear();
    let _ = sock.recv_packets(&mut packets);
    for id in held
        .drain()
        .map(|Reverse((_, id))| id)
        .chain(packets.iter().map(|p| p.id))
    {
        let _ = sock.verdict(id, Verdict::Accept);
    }
    (c, error)
}

struct AppliedPacket {
    kind: &'static PacketKind,
    firewall: Arc<dyn Firewall>,
    chain: String,
    interface: Option<String>,
    queue: u16,
    effect: String,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<(Counters, Option<String>)>>,
}

impl AppliedPacket {
    fn stop_thread(&mut self) -> (Counters, Option<String>) {
        let _ = self.stop.write(1);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => (Counters::default(), Some("the queue thread panicked".into())),
            None => (Counters::default(), None),
        }
    }

    fn objects(&self) -> Vec<String> {
        vec![
            format!("iptables {TABLE} chain {}", self.chain),
            format!("nfqueue {}", self.queue),
        ]
    }

    fn observation(&self, c: Counters) -> v1::observation::Kind {
        (self.kind.wrap)(v1::PacketObservation {
            objects: self.objects(),
            packets_seen: c.seen,
            packets_affected: c.affected,
        })
    }
}

impl Drop for AppliedPacket {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
    }
}

impl Applied for AppliedPacket {
    fn backend(&self) -> String {
        "nfqueue".into()
    }

    fn injected(&self) -> Report {
        Report {
            detail: format!("{}, with nfqueue: {}", self.effect, self.objects().join(", ")),
            observation: Some(self.observation(Counters::default())),
        }
    }

    fn restore(mut self: Box<Self>) -> Restoring {
        let mut errors = Vec::new();
        if let Err(e) = self
            .firewall
            .iptables_restore(Family::V4, &remove_script(&self.interface, &self.chain))
        {
            errors.push(e.to_string());
        }
        let (c, err) = self.stop_thread();
        errors.extend(err);
        let objects = self.objects();
        let observation = self.observation(c);
        Box::pin(async move {
            if !errors.is_empty() {
                return Err(Error::Failed(errors.join("; ")).into());
            }
            Ok(Report {
                detail: format!(
                    "removed {}; {} packets seen, {} affected",
                    objects.join(", "),
                    c.seen,
                    c.affected
                ),
                observation: Some(observation),
            })
        })
    }
}

/// The offset of the transport header and the transport protocol of an
/// IPv4 packet, if it is one and is not a fragment after the first.
pub fn ipv4_transport(p: &[u8]) -> Option<(usize, u8)> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    if ihl < 20 || p.len() < ihl || frag_offset != 0 {
        return None;
    }
    Some((ihl, p[9]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_carry_the_prefix_and_fit_iptables() {
        assert_eq!(chain_name("faultline-c-", "r1-1").unwrap(), "faultline-c-r1-1");
        let long = chain_name("faultline-c-", "r20261123-144000-abc123-12").unwrap();
        assert!(long.len() <= MAX_CHAIN && long.starts_with("faultline-c-~"), "{long}");
        assert_ne!(long, chain_name("faultline-c-", "r20261123-144000-abc123-13").unwrap());
        assert!(chain_name("faultline-c-", "a b").is_err());
    }

    #[test]
    fn install_script_returns_own_packets_and_exemptions_before_queueing() {
        let exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap()]);
        let scope = Scope::from_wire(
            "corrupt",
            Some(v1::PacketScope {
                destinations: vec!["10.9.0.2".into()],
                dst_ports: vec![9000],
                protocol: "udp".into(),
                ..Default::default()
            }),
        )
        .unwrap();
        let s = install_script(&scope.match_lines(), &None, &exempt, "faultline-c-x", 18176);
        assert_eq!(
            s,
            "*filter\n:faultline-c-x - [0:0]\n\
             -A faultline-c-x -m mark --mark 0x46540d0d -j RETURN\n\
             -A faultline-c-x -d 10.9.0.1/32 -j RETURN\n\
             -A faultline-c-x -p tcp --dport 22 -j RETURN\n\
             -A faultline-c-x -p tcp --sport 22 -j RETURN\n\
             -A faultline-c-x -d 10.9.0.2/32 -p udp -m multiport --dports 9000 -j NFQUEUE --queue-num 18176 --queue-bypass\n\
             -I OUTPUT ! -o lo -j faultline-c-x\nCOMMIT\n"
        );
        assert_eq!(
            remove_script(&Some("eth0".into()), "c"),
            "*filter\n-D OUTPUT -o eth0 -j c\n-F c\n-X c\nCOMMIT\n"
        );
    }

    #[test]
    fn bad_scopes_and_shares_are_refused_with_the_reason() {
        let bad = |w: v1::PacketScope, want: &str| {
            let e = Scope::from_wire("corrupt", Some(w)).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        };
        bad(
            v1::PacketScope {
                destinations: vec!["fd00::1".into()],
                ..Default::default()
            },
            "IPv4 packets only",
        );
        bad(
            v1::PacketScope {
                dst_ports: vec![0],
                ..Default::default()
            },
            "not a port",
        );
        bad(
            v1::PacketScope {
                protocol: "sctp".into(),
                ..Default::default()
            },
            "protocol",
        );
        bad(
            v1::PacketScope {
                interface: "a/b".into(),
                ..Default::default()
            },
            "interface",
        );
        assert!(percent("corrupt", 0.0).is_err());
        assert!(percent("corrupt", 100.5).is_err());
        assert_eq!(percent("corrupt", 30.0).unwrap(), 30.0);
    }

    #[test]
    fn ipv4_transport_skips_the_options_and_refuses_later_fragments() {
        let mut p = vec![0u8; 28];
        p[0] = 0x46;
        p[9] = 17;
        p.extend([0; 4]);
        assert_eq!(ipv4_transport(&p), Some((24, 17)));
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(ipv4_transport(&p), None);
        assert_eq!(ipv4_transport(&[0x60; 40]), None);
    }
}
