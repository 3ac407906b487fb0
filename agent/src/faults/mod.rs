//! Fault kinds, one module each, behind one trait (the shape of youki's
//! `Executor`): the fault table, the undo journal, the orphan sweep, the
//! capabilities in Hello and the policy's `allowed_kinds` only ever see a
//! kind through [`Registration`] and [`FaultKind`].
//!
//! A fault's life on the agent:
//! 1. [`FaultKind::prepare`] turns the wire spec into the kind's domain spec
//!    (refusing with a reason) and names every kernel object and file the
//!    fault will create ([`Prepared::undo_objects`]), touching nothing;
//! 2. the table writes those objects to the undo journal (a dry run asks
//!    [`Prepared::preview`] instead and stops here);
//! 3. [`Prepared::apply`] changes the node and returns an [`Applied`] fault,
//!    which says what it did ([`Applied::injected`]);
//! 4. [`Applied::restore`] undoes it (on request, lease expiry, shutdown),
//!    and the table deletes the record.
//!
//! Layout (each kind's whole life is in its files):
//! - `kill.rs`: spec, refusals, preview and apply, its [`Registration`];
//!   `kill/selection.rs`: protected processes, threads, the mass-kill rule;
//!   `kill/watch.rs`: the restart watcher and the restore that stops it.
//! - `disk_fill.rs`: spec, `df`'s Use%, the fill file's name, apply, restore.
//! - `latency.rs`: spec, its [`Registration`], the fault over either
//!   backend; `latency/backends.rs`: which backends work here and their
//!   trait; `latency/netem.rs` and `latency/nfqueue.rs`: the two backends.
//! - `block.rs`: spec, the nftables table's name and script, apply, restore.
//! - `<kind>/container.rs` (kill, disk_fill, latency, block): the same kind
//!   inside containers, given a [`Place::Containers`] by `prepare`.
//! - `bandwidth.rs`: a tbf root qdisc with its own handle range.
//! - `packet.rs`: what the NFQUEUE packet kinds share (scope, chain, queue
//!   thread, raw socket); `corrupt.rs`, `duplicate.rs`, `reorder.rs` and
//!   `dns.rs`: each one's spec and per-packet decision.
//! - `stress.rs`: what the stress kinds share: stressor processes (forked,
//!   async-signal-safe) in a cgroup of the fault's, started and stopped;
//!   `cpu_stress.rs`, `memory_stress.rs` and `io_stress.rs`: each kind's
//!   spec, limits and figures (and the IO workers' loop).
//!
//! # Adding a fault kind
//!
//! On the agent side a new kind touches exactly:
//! - the proto (`proto/proto/faultline/v1/faultline.proto`): its wire spec
//!   in `FaultSpec.kind` and its observation in `Observation.kind`;
//! - its module `agent/src/faults/<kind>.rs` (with `faults/<kind>/` for its
//!   parts once it grows past ~600 lines): the domain spec and its
//!   `TryFrom` the wire spec with the refusal reasons, the injective naming
//!   function of what it creates and the [`Owned`] patterns the sweep looks
//!   for, apply, restore, the detail texts and the observation, and a
//!   `pub const KIND: Registration` (name, owned patterns, which wire spec
//!   it takes, how it is set up);
//! - this file: `pub mod <kind>;` and its line in [`REGISTRY`].
//!
//! If the kind needs a node fact or operator limit that no kind has yet
//! (like [`FillPolicy`]), that is also a field of [`Setup`], filled in by
//! `run` in `lib.rs` (and, when the operator sets it, a field of
//! `AgentConfig` and a flag in `main.rs`). Nothing else spells its name:
//! the table, journal, sweep, capabilities, policy and metrics read it from
//! the registry, and the registry's tests check that every name it creates
//! is one its own sweep pattern covers.

pub mod bandwidth;
pub mod block;
pub mod corrupt;
pub mod cpu_stress;
pub mod disk_fill;
pub mod dns;
pub mod duplicate;
pub mod io_stress;
pub mod kill;
pub mod latency;
pub mod memory_stress;
pub mod packet;
pub mod reorder;
pub mod stress;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use faultline_proto::v1;

pub use block::{AppliedBlock, BlockSpec};
pub use disk_fill::{AppliedFill, DiskFillSpec, FillPolicy};
pub use kill::{AppliedKill, KillSpec, Protection};
pub use latency::{AppliedLatency, Backends, LatencySpec};
pub use stress::{Stress, StressPolicy};

use crate::firewall::{Exempt, Firewall};
use crate::journal::{Object, Owned};
use crate::process::ProcessTable;
use crate::runtime::ContainerRuntime;
pub use crate::runtime::Place;

/// Every fault kind this agent knows, in the order its capabilities are
/// advertised. Adding a kind adds its line here.
pub const REGISTRY: &[Registration] = &[
    kill::KIND,
    disk_fill::KIND,
    latency::KIND,
    block::KIND,
    cpu_stress::KIND,
    memory_stress::KIND,
    io_stress::KIND,
    bandwidth::KIND,
    corrupt::KIND,
    duplicate::KIND,
    reorder::KIND,
    dns::KIND,
];

/// A fault kind's static facts and how to set it up on a node.
pub struct Registration {
    /// The kind's one name: on the wire (capabilities), in the policy's
    /// `allowed_kinds`, in undo records, metrics and logs.
    pub name: &'static str,
    /// Name patterns of the kernel objects and files it creates, for the
    /// orphan sweep (which sweeps every kind's, available here or not).
    pub owns: &'static [Owned],
    /// Whether a wire spec is this kind's.
    pub takes: fn(&v1::fault_spec::Kind) -> bool,
    /// The backend named on a status of this kind before a backend is
    /// chosen (a refusal, a failed apply); empty where it depends on the
    /// fault (latency).
    pub backend: &'static str,
    /// Sets the kind up with this node's facts and limits.
    pub build: fn(&Setup) -> Arc<dyn FaultKind>,
}

/// The names of every kind, in [`REGISTRY`] order.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|r| r.name)
}

/// Every kind's [`Registration::owns`], for the orphan sweep.
pub fn owned() -> impl Iterator<Item = Owned> {
    REGISTRY.iter().flat_map(|r| r.owns.iter().copied())
}

/// What the kinds are set up with: this node's facts (probed at start) and
/// the operator's limits.
#[derive(Clone)]
pub struct Setup {
    /// The node's container runtime (kills watch a container restart
    /// through it; fills remove files inside restarted containers). By
    /// default, none.
    pub runtime: Option<Arc<dyn ContainerRuntime>>,
    /// The process boundary (real or fake), for kills.
    pub processes: Arc<dyn ProcessTable>,
    /// Processes a kill never signals.
    pub protection: Protection,
    /// Where disk fills may go and how full they may leave a filesystem.
    /// By default, nowhere.
    pub fill: FillPolicy,
    /// Latency backends that work on this node. By default, none.
    pub latency: Backends,
    /// nftables for block faults; `None` when `nft` is not installed (or
    /// block is switched off). By default, none.
    pub block: Option<Arc<dyn Firewall>>,
    /// Traffic no network fault touches (the coordinator, SSH).
    pub exempt: Exempt,
    /// The cgroup layout and caps for CPU and memory stress; `None`
    /// switches them off. By default, off.
    pub stress: Option<Stress>,
    /// `tc` for bandwidth faults; `None` when it is not installed. By
    /// default, none.
    pub tc: Option<Arc<dyn crate::qdisc::Tc>>,
    /// iptables and a working NFQUEUE for the packet faults (corrupt,
    /// duplicate, reorder, dns); `None` when either is missing. By
    /// default, none.
    pub nfqueue: Option<packet::Nfqueue>,
}

impl Setup {
    /// No network backends and no fill paths: kill (and refusing disk
    /// fills) only, for tests.
    pub fn basic(processes: Arc<dyn ProcessTable>) -> Self {
        Self {
            runtime: None,
            processes,
            protection: Protection::default(),
            fill: FillPolicy::default(),
            latency: Backends::default(),
            block: None,
            exempt: Exempt::default(),
            stress: None,
            tc: None,
            nfqueue: None,
        }
    }
}

/// Why a fault was not injected, or not restored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Declined before anything was touched, because of what was asked or
    /// what the node lacks: reported as REFUSED.
    #[error("{0}")]
    Refused(Box<dyn std::error::Error + Send + Sync>),
    /// Tried, and the node said no: reported as FAILED.
    #[error("{0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A kind's error, refused or failed as the kind classifies it.
    pub fn of<E: std::error::Error + Send + Sync + 'static>(e: E, refusal: bool) -> Self {
        if refusal {
            Error::Refused(Box::new(e))
        } else {
            Error::Failed(Box::new(e))
        }
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused(_))
    }
}

/// Why a kind refuses a fault targeting containers.
#[derive(Debug, thiserror::Error)]
#[error("{kind} faults cannot target containers yet; remove targets.containers")]
pub struct NotInContainers {
    pub kind: &'static str,
}

/// For kinds that work on the node only: refuses [`Place::Containers`].
pub fn refuse_containers(kind: &'static str, place: &Place) -> Result<()> {
    match place {
        Place::Host => Ok(()),
        Place::Containers { .. } => Err(Error::Refused(Box::new(NotInContainers { kind }))),
    }
}

/// Result of the fault kinds.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a fault says in a status: its detail text and observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub detail: String,
    pub observation: Option<v1::observation::Kind>,
}

/// A fault kind set up on this node.
pub trait FaultKind: Send + Sync {
    /// Capabilities to advertise, e.g. `kill` or `latency:nfqueue`: only
    /// what works on this node; empty when the kind cannot run here.
    fn capabilities(&self) -> Vec<String>;
    /// Checks `spec` (one this kind [`Registration::takes`]) and names what
    /// the fault will create, touching nothing.
    /// `place` is where it applies: the node, or containers resolved from
    /// the Inject's selector; a kind that cannot work inside containers
    /// refuses those ([`refuse_containers`]).
    fn prepare(&self, fault_id: &str, spec: v1::fault_spec::Kind, place: &Place) -> Result<Box<dyn Prepared>>;
}

/// A fault that passed its kind's checks and is ready to apply.
pub trait Prepared: Send {
    /// The kernel objects and files [`Prepared::apply`] will create, for the
    /// undo record written before it runs. Empty: nothing to undo (kill).
    fn undo_objects(&self) -> Vec<Object>;
    /// What [`Prepared::apply`] would do, in words, and the backend it would
    /// use, touching nothing (a dry run).
    fn preview(&self) -> Result<(String, String)>;
    /// Changes the node.
    fn apply(self: Box<Self>) -> Result<Box<dyn Applied>>;
}

/// A restore in progress: its detail text and observation, or why it failed.
pub type Restoring = Pin<Box<dyn Future<Output = Result<Report>> + Send>>;

/// A fault in place.
pub trait Applied: Send {
    /// The backend that applied it (`signal`, `fallocate`, `netem`, ...).
    fn backend(&self) -> String;
    /// What the injected status says.
    fn injected(&self) -> Report;
    /// Undoes the fault.
    fn restore(self: Box<Self>) -> Restoring;
}

/// The kinds set up on this node, read by the table and the capabilities.
#[derive(Clone)]
pub struct Kinds {
    kinds: Vec<(&'static Registration, Arc<dyn FaultKind>)>,
}

impl Kinds {
    /// Every kind of [`REGISTRY`], set up with `setup`.
    pub fn new(setup: &Setup) -> Self {
        Self {
            kinds: REGISTRY.iter().map(|r| (r, (r.build)(setup))).collect(),
        }
    }

    /// What this node can run, in [`REGISTRY`] order.
    pub fn capabilities(&self) -> Vec<String> {
        self.kinds.iter().flat_map(|(_, k)| k.capabilities()).collect()
    }

    /// The kind of a wire spec.
    pub fn of(&self, spec: &v1::fault_spec::Kind) -> Option<(&'static Registration, &dyn FaultKind)> {
        self.kinds
            .iter()
            .find(|(r, _)| (r.takes)(spec))
            .map(|(r, k)| (*r, k.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_specs() -> Vec<v1::fault_spec::Kind> {
        use v1::fault_spec::Kind as W;
        vec![
            W::Kill(Default::default()),
            W::DiskFill(Default::default()),
            W::Latency(Default::default()),
            W::Block(Default::default()),
            W::CpuStress(Default::default()),
            W::MemoryStress(Default::default()),
            W::IoStress(Default::default()),
            W::Bandwidth(Default::default()),
            W::Corrupt(Default::default()),
            W::Duplicate(Default::default()),
            W::Reorder(Default::default()),
            W::Dns(Default::default()),
        ]
    }

    #[test]
    fn kind_names_are_unique_and_every_wire_spec_has_exactly_one_kind() {
        let mut names: Vec<&str> = names().collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        for w in wire_specs() {
            let n = REGISTRY.iter().filter(|r| (r.takes)(&w)).count();
            assert_eq!(n, 1, "{w:?}");
        }
    }

    // The orphan sweep's safety depends on it: whatever a kind names, its
    // own `owns` covers, so the sweep finds it; and nothing of one kind's
    // is mistaken for another's.
    #[test]
    fn every_name_a_kind_creates_is_one_the_sweep_looks_for() {
        let long = "r20261123-144000-abc123-12";
        let cases: Vec<(&str, Object)> = vec![
            (
                "disk_fill",
                Object::File {
                    path: std::path::Path::new("/var/tmp").join(disk_fill::fill_file_name("r1-1").unwrap()),
                },
            ),
            (
                "block",
                Object::NftTable {
                    family: "inet".into(),
                    name: block::table_name("r1-1").unwrap(),
                },
            ),
            (
                "latency",
                Object::IptablesChain {
                    ipv6: false,
                    table: latency::nfqueue::TABLE.into(),
                    chain: latency::nfqueue::chain_name("r1-1").unwrap(),
                },
            ),
            (
                "latency",
                Object::IptablesChain {
                    ipv6: true,
                    table: latency::nfqueue::TABLE.into(),
                    chain: latency::nfqueue::chain_name(long).unwrap(),
                },
            ),
            (
                "cpu_stress",
                Object::Cgroup {
                    path: std::path::Path::new("/sys/fs/cgroup/cpu")
                        .join(crate::cgroup::name(cpu_stress::CGROUP_PREFIX, long).unwrap()),
                },
            ),
            (
                "memory_stress",
                Object::Cgroup {
                    path: std::path::Path::new("/sys/fs/cgroup/memory")
                        .join(crate::cgroup::name(memory_stress::CGROUP_PREFIX, "r1-1").unwrap()),
                },
            ),
            (
                "io_stress",
                Object::Cgroup {
                    path: std::path::Path::new("/sys/fs/cgroup/cpu")
                        .join(crate::cgroup::name(io_stress::CGROUP_PREFIX, "r1-1").unwrap()),
                },
            ),
            (
                "io_stress",
                Object::File {
                    path: std::path::Path::new("/var/tmp").join(io_stress::file_name("r1-1", 0).unwrap()),
                },
            ),
            (
                "bandwidth",
                Object::Qdisc {
                    dev: "eth0".into(),
                    handle: bandwidth::handle("r1-1"),
                },
            ),
            (
                "latency",
                Object::Qdisc {
                    dev: "eth0".into(),
                    handle: latency::netem::OWN_PRIO | 0x7f,
                },
            ),
        ];
        let mut cases = cases;
        for (kind, prefix) in [
            ("corrupt", corrupt::CHAIN_PREFIX),
            ("duplicate", duplicate::CHAIN_PREFIX),
            ("reorder", reorder::CHAIN_PREFIX),
            ("dns", dns::CHAIN_PREFIX),
        ] {
            for id in ["r1-1", long] {
                cases.push((
                    kind,
                    Object::IptablesChain {
                        ipv6: false,
                        table: packet::TABLE.into(),
                        chain: packet::chain_name(prefix, id).unwrap(),
                    },
                ));
            }
        }
        for (kind, obj) in cases {
            let owners: Vec<&str> = REGISTRY
                .iter()
                .filter(|r| r.owns.iter().any(|o| o.covers(&obj)))
                .map(|r| r.name)
                .collect();
            assert_eq!(owners, vec![kind], "{obj}");
        }
        // Someone else's objects are not.
        for obj in [
            Object::File {
                path: "/var/tmp/data.db".into(),
            },
            Object::NftTable {
                family: "inet".into(),
                name: "filter".into(),
            },
            Object::Qdisc {
                dev: "eth0".into(),
                handle: 0x8001,
            },
            Object::Cgroup {
                path: "/sys/fs/cgroup/memory/system.slice".into(),
            },
        ] {
            assert!(!owned().any(|o| o.covers(&obj)), "{obj}");
        }
    }

    #[test]
    fn capabilities_are_only_what_works_on_this_node() {
        let procs = Arc::new(crate::process::fake::FakeProcesses::new(vec![]));
        let kinds = Kinds::new(&Setup::basic(procs));
        assert_eq!(kinds.capabilities(), vec!["kill", "disk_fill"]);
    }
}
