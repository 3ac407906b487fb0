//! The NFQUEUE latency backend.
//!
//! Per fault: one iptables chain in the `mangle` table, named after the
//! fault (`faultline-<fault id>`, or a hash of the id where that does not
//! fit the 28-character limit: see [`chain_name`]),
//! jumped to from `POSTROUTING` (egress, both locally generated and
//! forwarded packets). The chain first returns the exempt traffic (the
//! coordinator, SSH), then sends matching packets to an NFQUEUE queue that
//! only this fault's thread is bound to. The thread holds each packet's
//! verdict until its release time.
//!
//! The rule uses `--queue-bypass`: if the agent dies, the kernel lets the
//! packets through instead of dropping them, so a crash removes the delay
//! rather than cutting the node off. Restore removes the rules first (no new
//! packets are queued), then releases every held packet, then unbinds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::time::TimeSpec;

use super::{exempt_hosts, short_hash, AppliedLatency, Counters, Error, LatencyBackend, LatencySpec, Protocol, Result};
use crate::firewall::{Exempt, Family, Firewall};
use crate::nfqueue::{QueueSocket, Verdict};

/// Queue numbers the agent tries, from this base upwards.
pub const QUEUE_BASE: u16 = 0x4600;
/// How many queue numbers are tried before giving up.
const QUEUE_TRIES: u16 = 256;
/// Kernel-side queue length: enough for 100 ms at 100,000 packets/s.
const QUEUE_MAX_LEN: u32 = 10_000;
/// Table and hook the chain hangs off.
pub const TABLE: &str = "mangle";
const HOOK: &str = "POSTROUTING";

/// Binds and unbinds a queue to check that this kernel has nfnetlink_queue.
pub fn probe_queue() -> std::io::Result<()> {
    let mut last = None;
    for q in 0..QUEUE_TRIES {
        match QueueSocket::bind(QUEUE_BASE.wrapping_add(0x100).wrapping_add(q), 16) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no queue number free")))
}

/// Longest iptables chain name (`XT_EXTENSION_MAXNAMELEN` less the NUL).
const MAX_CHAIN: usize = 28;
/// The start of every fault's chain name; the orphan sweep removes chains
/// of [`TABLE`] named so.
pub const CHAIN_PREFIX: &str = "faultline-";

/// The chain name of a fault, one per valid fault id (`faultline_proto::ids`):
/// `faultline-<fault id>` when that fits in 28 characters; otherwise
/// `faultline-<last 4 characters of the id>~<64-bit hash of the id, base32>`.
/// The two forms never meet (`~` is not in any fault id) and ids are not
/// cut short, which would map every id with the same tail to one chain; a
/// hash collision, not impossible in 64 bits, is refused by the fault table
/// (an object of an active fault) and by [`Nfqueue`]'s apply (the chain
/// exists), so it can never adopt or remove another fault's chain.
pub fn chain_name(fault_id: &str) -> Result<String> {
    faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let prefix = CHAIN_PREFIX;
    if prefix.len() + fault_id.len() <= MAX_CHAIN {
        return Ok(format!("{prefix}{fault_id}"));
    }
    // Ids are ASCII, so byte offsets are character offsets.
    let tail = &fault_id[fault_id.len() - 4..];
    Ok(format!("{prefix}{tail}~{}", base32(fnv1a64(fault_id))))
}

/// The 64-bit FNV-1a of `s` in 13 base32 characters, for names with a
/// length limit (the packet faults' chains too).
pub fn hash_base32(s: &str) -> String {
    base32(fnv1a64(s))
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// 13 lower-case base32 characters holding all 64 bits.
fn base32(mut v: u64) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = [0u8; 13];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    out.iter().map(|&c| c as char).collect()
}

/// The real NFQUEUE backend.
pub struct Nfqueue {
    firewall: Arc<dyn Firewall>,
    /// Whether ip6tables is installed: a fault to any destination then
    /// covers IPv6 too (an IPv6 destination without it fails loudly).
    ipv6: bool,
}

impl Nfqueue {
    pub fn new(firewall: Arc<dyn Firewall>, ipv6: bool) -> Self {
        Self { firewall, ipv6 }
    }
}

/// Match arguments of the rules that queue packets, one line per combination.
fn match_lines(spec: &LatencySpec, family: Family) -> Vec<String> {
    let dests: Vec<Option<String>> = {
        let d: Vec<_> = spec
            .destinations
            .iter()
            .filter(|c| (family == Family::V4) == c.is_ipv4())
            .map(|c| Some(format!("-d {c}")))
            .collect();
        if d.is_empty() {
            vec![None]
        } else {
            d
        }
    };
    let ported = !(spec.dst_ports.is_empty() && spec.src_ports.is_empty());
    let protos: Vec<Option<&str>> = match (spec.protocol, ported) {
        (Protocol::Any, false) => vec![None],
        (Protocol::Any, true) => vec![Some("tcp"), Some("udp")],
        (Protocol::Tcp, _) => vec![Some("tcp")],
        (Protocol::Udp, _) => vec![Some("udp")],
        (Protocol::Icmp, _) => vec![Some(if family == Family::V4 { "icmp" } else { "ipv6-icmp" })],
    };
    let list = |p: &[u16]| p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
    let mut out = Vec::new();
    for d in &dests {
        for p in &protos {
            let mut parts: Vec<String> = Vec::new();
            if let Some(d) = d {
                parts.push(d.clone());
            }
            if let Some(p) = p {
                parts.push(format!("-p {p}"));
            }
            if ported {
                parts.push("-m multiport".into());
                if !spec.dst_ports.is_empty() {
                    parts.push(format!("--dports {}", list(&spec.dst_ports)));
                }
                if !spec.src_ports.is_empty() {
                    parts.push(format!("--sports {}", list(&spec.src_ports)));
                }
            }
            out.push(parts.join(" "));
        }
    }
    out
}

fn jump(spec: &LatencySpec, chain: &str) -> String {
    match &spec.interface {
        Some(i) => format!("{HOOK} -o {i} -j {chain}"),
        // Never loopback: local control traffic stays fast.
        None => format!("{HOOK} ! -o lo -j {chain}"),
    }
}

/// The `iptables-restore --noflush` script that installs the fault.
pub fn install_script(spec: &LatencySpec, exempt: &Exempt, family: Family, chain: &str, queue: u16) -> String {
    let mut s = format!("*{TABLE}\n:{chain} - [0:0]\n");
    for h in exempt_hosts(exempt)
        .iter()
        .filter(|h| (family == Family::V4) == h.is_ipv4())
    {
        s += &format!("-A {chain} -d {h} -j RETURN\n");
    }
    for p in &exempt.tcp_ports {
        s += &format!("-A {chain} -p tcp --dport {p} -j RETURN\n-A {chain} -p tcp --sport {p} -j RETURN\n");
    }
    for m in match_lines(spec, family) {
        let m = if m.is_empty() { String::new() } else { format!("{m} ") };
        s += &format!("-A {chain} {m}-j NFQUEUE --queue-num {queue} --queue-bypass\n");
    }
    s += &format!("-I {}\nCOMMIT\n", jump(spec, chain));
    s
}

/// The script that removes what [`install_script`] installed.
pub fn remove_script(spec: &LatencySpec, chain: &str) -> String {
    format!("*{TABLE}\n-D {}\n-F {chain}\n-X {chain}\nCOMMIT\n", jump(spec, chain))
}

/// Release parameters of the queue thread.
#[derive(Debug, Clone, Copy)]
struct Shape {
    delay: Duration,
    jitter: Duration,
    loss: f64,
}

/// xorshift64*: jitter and loss need cheap randomness, not security.
struct Rng(u64);

impl Rng {
    fn seeded(fault_id: &str) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((t ^ ((short_hash(fault_id) as u64) << 32)) | 1)
    }

    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Holds packets until their release time. With no jitter every packet
/// waits the same time, so release order is arrival order and one batch
/// verdict releases a whole run of packets; with jitter a heap orders them.
fn release_loop(mut sock: QueueSocket, stop: Arc<EventFd>, shape: Shape, mut rng: Rng) -> (Counters, Option<String>) {
    let mut fifo: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut heap: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut ids = Vec::with_capacity(256);
    let mut counters = Counters::default();
    let jitter = !shape.jitter.is_zero();
    let mut error = None;
    loop {
        let next = if jitter {
            heap.peek().map(|Reverse((t, _))| *t)
        } else {
            fifo.front().map(|(t, _)| *t)
        };
        let timeout = next.map(|t| TimeSpec::from_duration(t.saturating_duration_since(Instant::now())));
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
            ids.clear();
            if let Err(e) = sock.recv_ids(&mut ids) {
                error = Some(format!("receiving from the queue: {e}"));
                break;
            }
            let now = Instant::now();
            for &id in &ids {
                if shape.loss > 0.0 && rng.unit() * 100.0 < shape.loss {
                    counters.dropped += 1;
                    let _ = sock.verdict(id, Verdict::Drop);
                    continue;
                }
                if jitter {
                    let j = shape.jitter.as_secs_f64() * (2.0 * rng.unit() - 1.0);
                    let d = Duration::from_secs_f64((shape.delay.as_secs_f64() + j).max(0.0));
                    heap.push(Reverse((now + d, id)));
                } else {
                    fifo.push_back((now + shape.delay, id));
                }
            }
        }
        let now = Instant::now();
        if jitter {
            while let Some(Reverse((t, id))) = heap.peek().copied() {
                if t > now {
                    break;
                }
                heap.pop();
                counters.delayed += 1;
                let _ = sock.verdict(id, Verdict::Accept);
            }
        } else {
            let mut last = None;
            while let Some(&(t, id)) = fifo.front() {
                if t > now {
                    break;
                }
                fifo.pop_front();
                counters.delayed += 1;
                last = Some(id);
            }
            if let Some(id) = last {
                let _ = sock.verdict_batch(id, Verdict::Accept);
            }
        }
    }
    // Stopping: the rules are gone, so nothing new arrives; let every held
    // packet go now rather than have the kernel drop them on unbind.
    ids.clear();
    let _ = sock.recv_ids(&mut ids);
    let held: Vec<u32> = fifo
        .drain(..)
        .map(|(_, id)| id)
        .chain(heap.drain().map(|Reverse((_, id))| id))
        .chain(ids.iter().copied())
        .collect();
    for id in held {
        counters.delayed += 1;
        let _ = sock.verdict(id, Verdict::Accept);
    }
    (counters, error)
}

/// A running NFQUEUE latency fault.
struct Applied {
    firewall: Arc<dyn Firewall>,
    spec: LatencySpec,
    chain: String,
    queue: u16,
    families: Vec<Family>,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<(Counters, Option<String>)>>,
}

impl Applied {
    fn stop_thread(&mut self) -> (Counters, Option<String>) {
        let _ = self.stop.write(1);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => (Counters::default(), Some("the queue thread panicked".into())),
            None => (Counters::default(), None),
        }
    }
}

impl AppliedLatency for Applied {
    fn objects(&self) -> Vec<String> {
        let fams: Vec<&str> = self
            .families
            .iter()
            .map(|f| if *f == Family::V4 { "iptables" } else { "ip6tables" })
            .collect();
        vec![
            format!("{} {TABLE} chain {}", fams.join("+"), self.chain),
            format!("nfqueue {}", self.queue),
        ]
    }

    fn restore(mut self: Box<Self>) -> Result<Counters> {
        let mut errors = Vec::new();
        for f in self.families.clone() {
            if let Err(e) = self
                .firewall
                .iptables_restore(f, &remove_script(&self.spec, &self.chain))
            {
                errors.push(e.to_string());
            }
        }
        let (counters, err) = self.stop_thread();
        errors.extend(err);
        if errors.is_empty() {
            Ok(counters)
        } else {
            Err(Error::Backend {
                backend: "nfqueue",
                message: errors.join("; "),
            })
        }
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        // Only reached without restore() on a failed apply: the thread must
        // still release what it holds.
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
    }
}

impl LatencyBackend for Nfqueue {
    fn name(&self) -> &'static str {
        "nfqueue"
    }

    fn plan(&self, fault_id: &str, _spec: &LatencySpec) -> Result<Vec<crate::journal::Object>> {
        // Both families: removal of a chain that is not there is a no-op.
        let chain = chain_name(fault_id)?;
        Ok([false, true]
            .into_iter()
            .map(|ipv6| crate::journal::Object::IptablesChain {
                ipv6,
                table: TABLE.into(),
                chain: chain.clone(),
            })
            .collect())
    }

    fn apply(&self, fault_id: &str, spec: &LatencySpec, exempt: &Exempt) -> Result<Box<dyn AppliedLatency>> {
        let backend_err = |message: String| Error::Backend {
            backend: "nfqueue",
            message,
        };
        let chain = chain_name(fault_id)?;
        // Refuse rather than adopt a chain we did not make in this life.
        if let Ok(save) = self.firewall.iptables_save(Family::V4, TABLE) {
            if crate::firewall::chains(&save).contains(&chain) {
                return Err(Error::Refused(format!(
                    "iptables chain {chain} already exists; is fault {fault_id} already injected?"
                )));
            }
        }
        let start = QUEUE_BASE.wrapping_add((short_hash(fault_id) % 0x100) as u16);
        let mut last = None;
        let mut sock = None;
        for i in 0..QUEUE_TRIES {
            match QueueSocket::bind(start.wrapping_add(i), QUEUE_MAX_LEN) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let sock = sock.ok_or_else(|| {
            backend_err(format!(
                "no free NFQUEUE queue number from {start}: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        let queue = sock.queue();
        let stop = Arc::new(EventFd::new().map_err(|e| backend_err(format!("eventfd: {e}")))?);
        let shape = Shape {
            delay: spec.delay,
            jitter: spec.jitter,
            loss: spec.loss_percent,
        };
        let rng = Rng::seeded(fault_id);
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nfqueue-{queue}"))
            .spawn(move || release_loop(sock, stop_thread, shape, rng))
            .map_err(|e| backend_err(format!("cannot start the queue thread: {e}")))?;
        let (v4, v6) = spec.families();
        let mut families = Vec::new();
        if v4 {
            families.push(Family::V4);
        }
        if v6 && (self.ipv6 || !spec.destinations.is_empty()) {
            families.push(Family::V6);
        }
        let mut applied = Applied {
            firewall: self.firewall.clone(),
            spec: spec.clone(),
            chain: chain.clone(),
            queue,
            families: Vec::new(),
            stop,
            thread: Some(thread),
        };
        for f in families {
            if let Err(e) = self
                .firewall
                .iptables_restore(f, &install_script(spec, exempt, f, &chain, queue))
            {
                // Undo the families already installed, then stop the queue.
                for done in applied.families.clone() {
                    let _ = self.firewall.iptables_restore(done, &remove_script(spec, &chain));
                }
                applied.families.clear();
                drop(applied);
                return Err(backend_err(e.to_string()));
            }
            applied.families.push(f);
        }
        Ok(Box::new(applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall;
    use std::sync::Mutex;

    fn spec(dst: &[&str], ports: &[u16], proto: Protocol) -> LatencySpec {
        LatencySpec {
            delay: Duration::from_millis(100),
            jitter: Duration::ZERO,
            loss_percent: 0.0,
            interface: None,
            destinations: dst.iter().map(|d| d.parse().unwrap()).collect(),
            dst_ports: ports.to_vec(),
            src_ports: vec![],
            protocol: proto,
            backend: super::super::Choice::Nfqueue,
        }
    }

    #[test]
    fn chain_names_carry_the_fault_id_and_fit_iptables() {
        assert_eq!(chain_name("r1-1").unwrap(), "faultline-r1-1");
        let long = chain_name("r20261123-144000-abc123-12").unwrap();
        assert_eq!(long.len(), 28, "{long}");
        assert!(long.starts_with("faultline-3-12~"), "{long}");
        assert!(chain_name("a b").unwrap_err().is_refusal());
        assert!(chain_name("c.x").unwrap_err().is_refusal());
    }

    // Cutting long ids to their tail mapped every id with the same last 17
    // characters (two runs' faults in the same second) to one chain.
    #[test]
    fn long_fault_ids_sharing_a_tail_get_different_chains() {
        let a = chain_name("xa-r20261123-144000-abc123-12").unwrap();
        let b = chain_name("xb-r20261123-144000-abc123-12").unwrap();
        assert_ne!(a, b);
        let max = "a".repeat(faultline_proto::ids::MAX_FAULT_ID_LEN);
        assert!(chain_name(&max).unwrap().len() <= MAX_CHAIN);
        // An id that just fits is kept whole.
        let fits = "r".repeat(MAX_CHAIN - "faultline-".len());
        assert_eq!(chain_name(&fits).unwrap(), format!("faultline-{fits}"));
    }

    #[test]
    fn install_script_exempts_control_traffic_before_queueing() {
        let exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap()]);
        let s = install_script(
            &spec(&["10.9.0.2", "fd00::2"], &[80, 443], Protocol::Any),
            &exempt,
            Family::V4,
            "faultline-x",
            17920,
        );
        assert_eq!(
            s,
            "*mangle\n:faultline-x - [0:0]\n\
             -A faultline-x -d 10.9.0.1/32 -j RETURN\n\
             -A faultline-x -p tcp --dport 22 -j RETURN\n\
             -A faultline-x -p tcp --sport 22 -j RETURN\n\
             -A faultline-x -d 10.9.0.2/32 -p tcp -m multiport --dports 80,443 -j NFQUEUE --queue-num 17920 --queue-bypass\n\
             -A faultline-x -d 10.9.0.2/32 -p udp -m multiport --dports 80,443 -j NFQUEUE --queue-num 17920 --queue-bypass\n\
             -I POSTROUTING ! -o lo -j faultline-x\nCOMMIT\n"
        );
        let r = remove_script(&spec(&[], &[], Protocol::Any), "faultline-x");
        assert_eq!(
            r,
            "*mangle\n-D POSTROUTING ! -o lo -j faultline-x\n-F faultline-x\n-X faultline-x\nCOMMIT\n"
        );
    }

    #[test]
    fn a_scope_without_destinations_queues_everything_but_the_exemptions() {
        let s = install_script(&spec(&[], &[], Protocol::Any), &Exempt::default(), Family::V4, "c", 1);
        assert!(s.contains("-A c -j NFQUEUE --queue-num 1 --queue-bypass\n"), "{s}");
    }

    struct FailingFirewall(Mutex<Vec<String>>);
    impl Firewall for FailingFirewall {
        fn iptables_restore(&self, _: Family, script: &str) -> firewall::Result<()> {
            self.0.lock().unwrap().push(script.to_string());
            Err(firewall::Error::Failed {
                tool: "iptables-restore".into(),
                stderr: "No chain/target/match by that name".into(),
            })
        }
        fn iptables_save(&self, _: Family, _: &str) -> firewall::Result<String> {
            Ok(String::new())
        }
        fn nft_apply(&self, _: &str) -> firewall::Result<()> {
            unreachable!()
        }
        fn nft_tables(&self) -> firewall::Result<Vec<(String, String)>> {
            unreachable!()
        }
    }

    #[test]
    fn the_release_rng_is_uniform_enough() {
        let mut r = Rng(12345);
        let n = 10_000;
        let below_half = (0..n).filter(|_| r.unit() < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
    }

    #[test]
    fn firewall_failure_is_reported_and_nothing_is_left_installed() {
        // Binding a queue needs root; the rest of the path is what matters.
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "binding an NFQUEUE socket needs root, and CI=true forbids skipping"
            );
            eprintln!("skipping: binding an NFQUEUE socket needs root");
            return;
        }
        let fw = Arc::new(FailingFirewall(Mutex::new(vec![])));
        let b = Nfqueue::new(fw.clone(), false);
        let e = b
            .apply("t-1", &spec(&["10.9.0.2"], &[], Protocol::Tcp), &Exempt::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("No chain/target"), "{e}");
        // One install attempt, no remove: nothing had been installed.
        assert_eq!(fw.0.lock().unwrap().len(), 1);
    }
}
