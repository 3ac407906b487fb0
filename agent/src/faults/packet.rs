//! What the packet faults share: `corrupt`, `duplicate`, `reorder` and
//! `dns`: their spec parts, the choice of backend, and the NFQUEUE
//! machinery.
//!
//! With NFQUEUE, per fault: one iptables chain in the `filter` table,
//! named by the kind's prefix and the fault id ([`chain_name`]), jumped to
//! from `OUTPUT` (packets this node sends; forwarded ones are not taken),
//! and the same chain in ip6tables' `filter` table for IPv6 (both queue to
//! the one NFQUEUE queue; NFQUEUE is family-blind). The
//! chain
//! first returns the agent's own packets (duplicates and DNS answers carry
//! [`MARK`]), the coordinator and SSH, then hands matching packets to an
//! NFQUEUE queue bound by this fault's thread. The thread asks the kind's
//! [`Handler`] what to do with each packet: accept, drop, accept a changed
//! copy, hold it back, accept it and send it again, or drop it and send an
//! answer instead.
//!
//! Why NFQUEUE as well as netem: this kernel family often lacks
//! `sch_netem` (see the README), while the xt `NFQUEUE` target is nearly
//! everywhere. The rule uses `--queue-bypass`, so a dead agent lets packets
//! through; restore removes the rules first, then releases every held
//! packet, then unbinds. IPv6: an IPv6 destination gets an ip6tables
//! chain (refused where ip6tables is missing); a fault to any destination
//! covers IPv6 too where ip6tables is installed (as latency's nfqueue
//! backend does), else IPv4 only.
//!
//! `corrupt`, `duplicate` and `reorder` also have a netem backend
//! (`backend: netem`, the default where the node has `sch_netem`, as for
//! latency): the latency netem backend's tree (prio + netem child + u32
//! filters for the scope) with netem's own `corrupt`, `duplicate` or
//! `delay G reorder` instead of a queue; see `packet/netem.rs`. `dns` has
//! none (netem cannot read a query). The netem form is IPv4 only: with an
//! IPv6 destination, `auto` picks nfqueue and `backend: netem` is refused.
//!
//! In containers (`targets.containers`) the NFQUEUE form runs inside the
//! container's network namespace (`packet/container.rs`); netem is refused
//! there.
//!
//! Parts: `packet/scope.rs` (which packets, checked, as iptables matches;
//! what the kinds' specs share), `packet/headers.rs` (where the transport
//! header of an IPv4 or IPv6 packet starts), `packet/rules.rs` (the
//! iptables-restore scripts), `packet/queue.rs` (the queue thread and
//! the fault in place), `packet/netem.rs` (the netem backend),
//! `packet/container.rs` (inside a container's network namespace).

mod container;
mod headers;
mod netem;
mod queue;
mod rules;
mod scope;

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;
use nix::sys::eventfd::EventFd;

use crate::faults::latency::{self, nfqueue::probe_queue, short_hash, Choice};
use crate::faults::{self, Applied, FaultKind, Place, Prepared, Setup};
use crate::firewall::{Exempt, Family, Firewall};
use crate::journal::Object;
use crate::nfqueue::{CopyMode, QueueSocket};

pub use self::headers::transport;
pub use self::queue::Counters;
use self::queue::{queue_loop, AppliedPacket, RawSockets};
pub use self::rules::{install_script, remove_script};
pub use self::scope::{backend, networks, percent, Common, FamilyLines, Scope};

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
    /// From the netem tree (shared with latency), refusals included.
    #[error(transparent)]
    Netem(#[from] latency::Error),
}

impl From<Error> for faults::Error {
    fn from(e: Error) -> Self {
        let refusal = match &e {
            Error::Failed(_) => false,
            Error::Netem(e) => e.is_refusal(),
            _ => true,
        };
        faults::Error::of(e, refusal)
    }
}

/// Result of the packet faults.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// Drop it and send these bytes (an IPv4 or IPv6 packet) instead
    /// (counted as affected).
    Answer(Vec<u8>),
}

/// A kind's per-packet logic, run on the queue's thread.
pub trait Handler: Send + 'static {
    /// What to do with `packet` (its IPv4 or IPv6 header on; empty with
    /// [`CopyMode::Meta`]).
    fn decide(&mut self, packet: &[u8]) -> Decision;
}

/// What a kind makes of a fault: everything the shared machinery needs.
pub struct Plan {
    /// The iptables / ip6tables match lines of the packets to queue.
    pub scope_lines: FamilyLines,
    pub interface: Option<String>,
    pub copy: CopyMode,
    /// What the fault does, e.g. "corrupting 30% of packets to any
    /// destination", for detail texts.
    pub effect: String,
    pub handler: Box<dyn Handler>,
    /// The backend asked for.
    pub backend: Choice,
    /// What the netem backend does instead; `None`: nfqueue only (dns).
    pub netem: Option<NetemPlan>,
}

/// A packet fault as a netem qdisc over the fault's scope.
pub struct NetemPlan {
    pub qdisc: crate::qdisc::Netem,
    pub scope: Scope,
}

impl Common {
    /// The plan of a kind with these shared fields: `handler` for the
    /// nfqueue backend, `qdisc` for the netem one.
    pub fn plan(self, copy: CopyMode, effect: String, handler: Box<dyn Handler>, qdisc: crate::qdisc::Netem) -> Plan {
        Plan {
            scope_lines: self.scope.match_lines(),
            interface: self.scope.interface.clone(),
            copy,
            effect,
            handler,
            backend: self.backend,
            netem: Some(NetemPlan {
                qdisc,
                scope: self.scope,
            }),
        }
    }
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
    /// Whether ip6tables is installed: a fault to any destination then
    /// covers IPv6 too, and an IPv6 destination can be taken at all.
    pub ipv6: bool,
}

impl Nfqueue {
    /// `Some` when iptables (IPv4) is installed and an NFQUEUE socket binds.
    pub fn detect() -> Option<Self> {
        let fw = crate::firewall::SystemFirewall::detect();
        if !fw.has_iptables(Family::V4) || probe_queue().is_err() {
            return None;
        }
        let ipv6 = fw.has_iptables(Family::V6);
        Some(Nfqueue {
            firewall: Arc::new(fw),
            ipv6,
        })
    }
}

struct Kind {
    kind: &'static PacketKind,
    nfqueue: Option<Nfqueue>,
    /// The netem tree builder, where the node has `sch_netem` and `tc`.
    netem: Option<Arc<latency::netem::Netem>>,
    /// Why netem is missing, e.g. "netem: the kernel has no sch_netem module".
    netem_missing: String,
    /// Whether the kind has a netem form (not dns).
    has_netem_form: bool,
    exempt: Exempt,
}

/// Sets a packet kind up on this node; `has_netem_form` says whether its
/// plans carry a [`NetemPlan`].
pub fn build(kind: &'static PacketKind, setup: &Setup, has_netem_form: bool) -> Arc<dyn FaultKind> {
    Arc::new(Kind {
        kind,
        nfqueue: setup.nfqueue.clone(),
        netem: setup.latency.tree.clone(),
        netem_missing: setup.latency.why_missing("netem"),
        has_netem_form,
        exempt: setup.exempt.clone(),
    })
}

impl Kind {
    fn no_nfqueue(&self) -> Error {
        Error::Refused(format!(
            "{} needs iptables and the kernel's nfnetlink_queue, which this node lacks",
            self.kind.name
        ))
    }

    fn no_netem(&self) -> Error {
        let why = if self.netem_missing.is_empty() {
            "netem: tc or sch_netem is missing".to_string()
        } else {
            self.netem_missing.clone()
        };
        Error::Refused(format!(
            "the netem backend is not available here ({why}); use backend: nfqueue"
        ))
    }
}

impl FaultKind for Kind {
    fn capabilities(&self) -> Vec<String> {
        let mut c = Vec::new();
        if self.has_netem_form && self.netem.is_some() {
            c.push(format!("{}:netem", self.kind.name));
        }
        if self.nfqueue.is_some() {
            c.push(format!("{}:nfqueue", self.kind.name));
        }
        c
    }

    fn prepare(&self, fault_id: &str, spec: v1::fault_spec::Kind, place: &Place) -> faults::Result<Box<dyn Prepared>> {
        let mut plan = (self.kind.plan)(fault_id, spec)?;
        // In a container: its network namespace, with nfqueue only (netem
        // would need the container's interface, which the spec cannot
        // name; the node's `tc` sees the host's).
        let in_netns = match place {
            Place::Host => None,
            Place::Containers { containers, .. } => {
                if plan.backend == Choice::Netem {
                    return Err(Error::Refused(format!(
                        "{} in containers runs over nfqueue only; use backend: nfqueue (or auto)",
                        self.kind.name
                    ))
                    .into());
                }
                plan.backend = Choice::Nfqueue;
                Some(container::InNetns::new(self.kind.name, containers)?)
            }
        };
        let use_netem = match (plan.backend, &plan.netem, &self.netem) {
            (Choice::Nfqueue, _, _) => false,
            (Choice::Netem, None, _) => {
                return Err(Error::InvalidSpec {
                    kind: self.kind.name,
                    message: "there is no netem form of this kind; use backend: nfqueue".into(),
                }
                .into())
            }
            // netem's u32 filters match IPv4 only.
            (Choice::Netem, Some(_), _) if plan.scope_lines.v6_asked => {
                return Err(Error::Refused(format!(
                    "the netem backend of {} takes IPv4 destinations only; use backend: nfqueue (or auto) for IPv6",
                    self.kind.name
                ))
                .into())
            }
            (Choice::Auto, _, _) if plan.scope_lines.v6_asked => false,
            (Choice::Netem, Some(_), None) => return Err(self.no_netem().into()),
            (Choice::Netem, Some(_), Some(_)) => true,
            (Choice::Auto, Some(_), Some(_)) => true,
            (Choice::Auto, _, _) => false,
        };
        if use_netem {
            let (Some(tree), Some(np)) = (self.netem.clone(), plan.netem.take()) else {
                return Err(self.no_netem().into());
            };
            return Ok(Box::new(netem::PreparedNetem::new(
                self.kind,
                fault_id,
                tree,
                np,
                plan.effect,
                self.exempt.clone(),
            )?));
        }
        let chain = chain_name(self.kind.prefix, fault_id)?;
        let Some(nfqueue) = self.nfqueue.clone() else {
            return Err(self.no_nfqueue().into());
        };
        if !nfqueue.ipv6 {
            if plan.scope_lines.v6_asked {
                return Err(Error::Refused(format!(
                    "{} to an IPv6 destination needs ip6tables, which this node lacks",
                    self.kind.name
                ))
                .into());
            }
            // Any destination, without ip6tables: IPv4 only.
            plan.scope_lines.v6.clear();
        }
        let families = plan.scope_lines.families();
        let prepared = Box::new(PreparedPacket {
            kind: self.kind,
            fault_id: fault_id.to_string(),
            chain,
            families,
            plan,
            nfqueue,
            exempt: self.exempt.clone(),
        });
        Ok(match in_netns {
            Some(netns) => netns.wrap(prepared),
            None => prepared,
        })
    }
}

struct PreparedPacket {
    kind: &'static PacketKind,
    fault_id: String,
    chain: String,
    /// The families whose filter table gets the chain, IPv4 first.
    families: Vec<Family>,
    plan: Plan,
    nfqueue: Nfqueue,
    exempt: Exempt,
}

impl Prepared for PreparedPacket {
    fn undo_objects(&self) -> Vec<Object> {
        self.families
            .iter()
            .map(|f| Object::IptablesChain {
                ipv6: *f == Family::V6,
                table: TABLE.into(),
                chain: self.chain.clone(),
            })
            .collect()
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        Ok((
            format!(
                "would be {}, with nfqueue: {} {TABLE} chain {}",
                self.plan.effect,
                tools(&self.families),
                self.chain
            ),
            "nfqueue".into(),
        ))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let fw = self.nfqueue.firewall.clone();
        // Refuse rather than adopt a chain we did not make in this life.
        for f in &self.families {
            if let Ok(save) = fw.iptables_save(*f, TABLE) {
                if crate::firewall::chains(&save).contains(&self.chain) {
                    return Err(Error::Refused(format!(
                        "{} chain {} already exists; is fault {} already injected?",
                        tools(&[*f]),
                        self.chain,
                        self.fault_id
                    ))
                    .into());
                }
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
        // Any destination takes IPv6 where the node can (a kernel booted
        // with ipv6.disable=1 has ip6tables but no AF_INET6); an IPv6
        // destination needs it.
        let v6_optional = !self.plan.scope_lines.v6_asked;
        let mut families = self.families;
        let raw = match RawSockets::open(&families) {
            Ok(raw) => raw,
            Err(_) if v6_optional && families.contains(&Family::V6) => {
                families.retain(|f| *f == Family::V4);
                RawSockets::open(&families).map_err(|e| Error::Failed(format!("raw socket: {e}")))?
            }
            Err(e) => return Err(Error::Failed(format!("raw socket: {e}")).into()),
        };
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
            families: Vec::new(),
            interface: self.plan.interface,
            queue,
            effect: self.plan.effect,
            stop,
            thread: Some(thread),
        };
        for f in families {
            let script = install_script(
                f,
                self.plan.scope_lines.of(f),
                &applied.interface,
                &self.exempt,
                &applied.chain,
                queue,
            );
            if let Err(e) = fw.iptables_restore(f, &script) {
                if f == Family::V6 && v6_optional {
                    // IPv4 is in place; this node cannot take IPv6.
                    continue;
                }
                // Undo the families already in place, then stop the queue.
                let _ = applied.remove_rules();
                let _ = applied.stop_thread();
                return Err(Error::Failed(e.to_string()).into());
            }
            applied.families.push(f);
        }
        Ok(Box::new(applied))
    }
}

/// "iptables", "ip6tables" or "iptables+ip6tables", for texts.
pub fn tools(families: &[Family]) -> String {
    families
        .iter()
        .map(|f| if *f == Family::V4 { "iptables" } else { "ip6tables" })
        .collect::<Vec<_>>()
        .join("+")
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

    fn duplicate(dests: &[&str], backend: &str) -> v1::fault_spec::Kind {
        v1::fault_spec::Kind::Duplicate(v1::DuplicateSpec {
            scope: Some(v1::PacketScope {
                destinations: dests.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            }),
            percent: 20.0,
            backend: backend.into(),
        })
    }

    /// The chains a prepared fault's undo record names, as (ipv6, chain).
    fn chains_of(p: &dyn Prepared) -> Vec<(bool, String)> {
        p.undo_objects()
            .into_iter()
            .map(|o| match o {
                Object::IptablesChain { ipv6, chain, .. } => (ipv6, chain),
                o => panic!("{o:?}"),
            })
            .collect()
    }

    #[test]
    fn ipv6_destinations_get_an_ip6tables_chain_and_netem_or_a_node_without_ip6tables_refuses_them() {
        let kinds_with = |ipv6: bool| {
            let procs = Arc::new(crate::process::fake::FakeProcesses::new(vec![]));
            let mut setup = Setup::basic(procs);
            // prepare touches no firewall: the real one is only named here.
            setup.nfqueue = Some(Nfqueue {
                firewall: Arc::new(crate::firewall::SystemFirewall::detect()),
                ipv6,
            });
            faults::Kinds::new(&setup)
        };
        let kinds = kinds_with(true);
        let kind = kinds.of(&duplicate(&[], "")).unwrap().1;
        let chain = "faultline-d-r1-1".to_string();
        let p = kind
            .prepare("r1-1", duplicate(&["fd00:77::12"], ""), &Place::Host)
            .unwrap();
        assert_eq!(chains_of(p.as_ref()), vec![(true, chain.clone())]);
        let (detail, backend) = p.preview().unwrap();
        assert_eq!(backend, "nfqueue");
        assert!(
            detail.contains("with nfqueue: ip6tables filter chain faultline-d-r1-1"),
            "{detail}"
        );
        let p = kind.prepare("r1-1", duplicate(&[], "nfqueue"), &Place::Host).unwrap();
        assert_eq!(
            chains_of(p.as_ref()),
            vec![(false, chain.clone()), (true, chain.clone())]
        );
        let e = kind
            .prepare("r1-1", duplicate(&["10.0.0.2", "fd00::1"], "netem"), &Place::Host)
            .err()
            .unwrap();
        assert!(e.is_refusal(), "{e}");
        assert!(
            e.to_string().contains("IPv4 destinations only; use backend: nfqueue"),
            "{e}"
        );

        let kinds = kinds_with(false);
        let kind = kinds.of(&duplicate(&[], "")).unwrap().1;
        let e = kind
            .prepare("r1-1", duplicate(&["fd00:77::12"], ""), &Place::Host)
            .err()
            .unwrap();
        assert!(e.is_refusal() && e.to_string().contains("needs ip6tables"), "{e}");
        let p = kind.prepare("r1-1", duplicate(&[], ""), &Place::Host).unwrap();
        assert_eq!(chains_of(p.as_ref()), vec![(false, chain)]);
    }
}
