//! `latency` fault: delay (and optionally drop) packets leaving the node.
//!
//! Two backends implement [`LatencyBackend`]:
//! - [`netem`]: the kernel's `sch_netem` qdisc, attached under a `prio` qdisc
//!   with u32 filters for the scope. Precise and cheap, but only where the
//!   kernel has the module.
//! - [`nfqueue`]: an iptables rule hands matching packets to a userspace
//!   queue that gives each one its verdict after delay ± jitter. Works on
//!   any kernel with the xt `NFQUEUE` target, at the cost of one netlink
//!   round trip per packet.
//!
//! The agent detects at start which backends work ([`Backends::detect`]),
//! advertises them as capabilities (`latency:netem`, `latency:nfqueue`) and
//! refuses a latency fault it has no backend for, before touching anything.

mod backends;
mod container;
pub mod netem;
pub mod nfqueue;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;

use crate::cidr::Cidr;
use crate::faults::{self, Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::firewall::Exempt;
use crate::journal::{Object, Owned};

pub use self::backends::{Allowed, AppliedLatency, Backends, LatencyBackend};

/// Longest delay accepted; more is almost certainly a typo (ms vs s).
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Most ports per list (the iptables multiport limit).
pub const MAX_PORTS: usize = 15;

/// Errors of the latency fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid latency spec: {0}")]
    InvalidSpec(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{backend} backend: {message}")]
    Backend { backend: &'static str, message: String },
}

impl Error {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Refused(_))
    }
}

/// Result of the latency fault.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which packets a latency fault affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    /// IP protocol number for IPv4 (ICMPv6 differs: see [`Protocol::number_v6`]).
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Any => None,
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
        }
    }

    pub fn number_v6(self) -> Option<u8> {
        match self {
            Protocol::Icmp => Some(58),
            p => p.number(),
        }
    }
}

/// Which backend the coordinator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Netem,
    Nfqueue,
}

/// A validated latency request.
#[derive(Debug, Clone)]
pub struct LatencySpec {
    pub delay: Duration,
    pub jitter: Duration,
    /// 0..=100.
    pub loss_percent: f64,
    pub interface: Option<String>,
    /// Empty means any destination.
    pub destinations: Vec<Cidr>,
    pub dst_ports: Vec<u16>,
    pub src_ports: Vec<u16>,
    pub protocol: Protocol,
    pub backend: Choice,
}

fn ports(what: &str, raw: &[u32]) -> Result<Vec<u16>> {
    if raw.len() > MAX_PORTS {
        return Err(Error::InvalidSpec(format!("{what}: at most {MAX_PORTS} ports")));
    }
    raw.iter()
        .map(|p| match u16::try_from(*p) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(Error::InvalidSpec(format!("{what}: {p} is not a port (1-65535)"))),
        })
        .collect()
}

/// Checks an interface name the way the kernel would (IFNAMSIZ, no `/`).
pub fn valid_interface(name: &str) -> bool {
    !name.is_empty() && name.len() < 16 && !name.contains(['/', ' ', '\t', '\n', ':']) && name != "." && name != ".."
}

impl TryFrom<v1::LatencySpec> for LatencySpec {
    type Error = Error;

    fn try_from(w: v1::LatencySpec) -> Result<Self> {
        let delay = Duration::from_micros(w.delay_us);
        let jitter = Duration::from_micros(w.jitter_us);
        if delay > MAX_DELAY {
            return Err(Error::InvalidSpec(format!(
                "delay {} ms is over the {} s maximum",
                delay.as_millis(),
                MAX_DELAY.as_secs()
            )));
        }
        if jitter > delay {
            return Err(Error::InvalidSpec(format!(
                "jitter {} ms is larger than the delay {} ms",
                jitter.as_millis(),
                delay.as_millis()
            )));
        }
        if !(0.0..=100.0).contains(&w.loss_percent) {
            return Err(Error::InvalidSpec(format!(
                "loss {}% is not within 0..100",
                w.loss_percent
            )));
        }
        if delay.is_zero() && w.loss_percent == 0.0 {
            return Err(Error::InvalidSpec(
                "neither delay nor loss is set: nothing to inject".into(),
            ));
        }
        let interface = match w.interface.as_str() {
            "" => None,
            i if valid_interface(i) => Some(i.to_string()),
            i => {
                return Err(Error::InvalidSpec(format!(
                    "interface {i:?} is not a valid interface name"
                )))
            }
        };
        let destinations = w
            .destinations
            .iter()
            .map(|d| d.parse::<Cidr>().map_err(|e| Error::InvalidSpec(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let protocol = match w.protocol.to_ascii_lowercase().as_str() {
            "" | "any" | "all" => Protocol::Any,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            p => {
                return Err(Error::InvalidSpec(format!(
                    "protocol {p:?}: use tcp, udp, icmp or leave it empty"
                )))
            }
        };
        let dst_ports = ports("dst_ports", &w.dst_ports)?;
        let src_ports = ports("src_ports", &w.src_ports)?;
        if protocol == Protocol::Icmp && !(dst_ports.is_empty() && src_ports.is_empty()) {
            return Err(Error::InvalidSpec("icmp has no ports; drop the port lists".into()));
        }
        let backend = match w.backend.as_str() {
            "" | "auto" => Choice::Auto,
            "netem" => Choice::Netem,
            "nfqueue" => Choice::Nfqueue,
            b => return Err(Error::InvalidSpec(format!("backend {b:?}: use netem, nfqueue or auto"))),
        };
        Ok(Self {
            delay,
            jitter,
            loss_percent: w.loss_percent,
            interface,
            destinations,
            dst_ports,
            src_ports,
            protocol,
            backend,
        })
    }
}

impl LatencySpec {
    /// Whether the fault applies to IPv4 / IPv6 packets.
    pub fn families(&self) -> (bool, bool) {
        if self.destinations.is_empty() {
            (true, true)
        } else {
            (
                self.destinations.iter().any(|d| d.is_ipv4()),
                self.destinations.iter().any(|d| !d.is_ipv4()),
            )
        }
    }
}

/// What a restored latency fault reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub delayed: u64,
    pub dropped: u64,
}

/// A short, stable hash of a fault id, for kernel names with length limits.
pub fn short_hash(fault_id: &str) -> u32 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    fault_id
        .bytes()
        .fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// Addresses a latency or block fault must never touch, as networks.
pub fn exempt_hosts(exempt: &Exempt) -> Vec<Cidr> {
    exempt.coordinator.iter().map(|ip: &IpAddr| Cidr::host(*ip)).collect()
}

/// What a latency status carries.
pub fn observation(objects: Vec<String>, counters: &Counters) -> v1::LatencyObservation {
    v1::LatencyObservation {
        objects,
        packets_delayed: counters.delayed,
        packets_dropped: counters.dropped,
    }
}

/// The latency kind: an iptables chain per fault (nfqueue, named by
/// [`nfqueue::chain_name`]) or a root qdisc tree (netem, with a handle of
/// [`netem::OWN_PRIO`]'s range).
pub const KIND: Registration = Registration {
    name: "latency",
    owns: &[
        Owned::IptablesChains {
            table: nfqueue::TABLE,
            prefix: nfqueue::CHAIN_PREFIX,
        },
        Owned::RootQdiscs {
            mask: 0xff00,
            handle: netem::OWN_PRIO,
        },
    ],
    takes: |w| matches!(w, v1::fault_spec::Kind::Latency(_)),
    backend: "",
    build: |s: &Setup| {
        Arc::new(Latency {
            backends: s.latency.clone(),
            exempt: s.exempt.clone(),
        })
    },
};

impl From<Error> for faults::Error {
    fn from(e: Error) -> Self {
        let refusal = e.is_refusal();
        faults::Error::of(e, refusal)
    }
}

/// Latency faults with the backends that work on this node.
struct Latency {
    backends: Backends,
    exempt: Exempt,
}

impl FaultKind for Latency {
    fn capabilities(&self) -> Vec<String> {
        self.backends.capabilities()
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &faults::Place,
    ) -> faults::Result<Box<dyn Prepared>> {
        let v1::fault_spec::Kind::Latency(w) = spec else {
            return Err(Error::InvalidSpec("not a latency spec".into()).into());
        };
        let spec = LatencySpec::try_from(w)?;
        let backend = match place {
            faults::Place::Host => self.backends.choose(spec.backend)?,
            // The nfqueue backend only: netem names the host's interfaces.
            faults::Place::Containers { containers, .. } => {
                let nfqueue = self.backends.choose(Choice::Nfqueue)?;
                Arc::new(container::InNetnsBackend::new(nfqueue, containers)?)
            }
        };
        let objects = backend.plan(fault_id, &spec)?;
        Ok(Box::new(PreparedLatency {
            fault_id: fault_id.to_string(),
            spec,
            backend,
            objects,
            exempt: self.exempt.clone(),
        }))
    }
}

struct PreparedLatency {
    fault_id: String,
    spec: LatencySpec,
    backend: Arc<dyn LatencyBackend>,
    objects: Vec<Object>,
    exempt: Exempt,
}

impl LatencySpec {
    /// "100 ms ± 10 ms, 0% loss", for detail texts.
    fn shape(&self) -> String {
        format!(
            "{} ms ± {} ms, {}% loss",
            self.delay.as_millis(),
            self.jitter.as_millis(),
            self.loss_percent
        )
    }
}

impl Prepared for PreparedLatency {
    fn undo_objects(&self) -> Vec<Object> {
        self.objects.clone()
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let backend = self.backend.name();
        let objects: Vec<String> = self.objects.iter().map(|o| o.to_string()).collect();
        let detail = format!(
            "would delay by {}, with {backend}: {}",
            self.spec.shape(),
            objects.join(", ")
        );
        Ok((detail, backend.into()))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let applied = self.backend.apply(&self.fault_id, &self.spec, &self.exempt)?;
        Ok(Box::new(LatencyFault {
            backend: self.backend.name(),
            shape: self.spec.shape(),
            applied,
        }))
    }
}

/// A latency fault in place, with whichever backend.
struct LatencyFault {
    backend: &'static str,
    /// [`LatencySpec::shape`].
    shape: String,
    applied: Box<dyn AppliedLatency>,
}

impl Applied for LatencyFault {
    fn backend(&self) -> String {
        self.backend.into()
    }

    fn injected(&self) -> Report {
        let objects = self.applied.objects();
        Report {
            detail: format!(
                "delaying by {}, with {}: {}",
                self.shape,
                self.backend,
                objects.join(", ")
            ),
            observation: Some(v1::observation::Kind::Latency(observation(
                objects,
                &Counters::default(),
            ))),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let objects = self.applied.objects();
        let result = self.applied.restore();
        Box::pin(async move {
            let c = result?;
            Ok(Report {
                detail: format!(
                    "removed {}; {} packets delayed, {} dropped",
                    objects.join(", "),
                    c.delayed,
                    c.dropped
                ),
                observation: Some(v1::observation::Kind::Latency(observation(objects, &c))),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> v1::LatencySpec {
        v1::LatencySpec {
            delay_us: 100_000,
            destinations: vec!["10.0.0.2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn valid_spec_converts() {
        let s = LatencySpec::try_from(wire()).unwrap();
        assert_eq!(s.delay, Duration::from_millis(100));
        assert_eq!(s.destinations[0].to_string(), "10.0.0.2/32");
        assert_eq!(s.families(), (true, false));
        assert_eq!(s.backend, Choice::Auto);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let cases: Vec<(v1::LatencySpec, &str)> = vec![
            (v1::LatencySpec { delay_us: 0, ..wire() }, "nothing to inject"),
            (
                v1::LatencySpec {
                    jitter_us: 200_000,
                    ..wire()
                },
                "jitter",
            ),
            (
                v1::LatencySpec {
                    loss_percent: 150.0,
                    ..wire()
                },
                "loss",
            ),
            (
                v1::LatencySpec {
                    destinations: vec!["zone-b".into()],
                    ..wire()
                },
                "not an IP address",
            ),
            (
                v1::LatencySpec {
                    dst_ports: vec![70000],
                    ..wire()
                },
                "not a port",
            ),
            (
                v1::LatencySpec {
                    protocol: "icmp".into(),
                    dst_ports: vec![80],
                    ..wire()
                },
                "icmp has no ports",
            ),
            (
                v1::LatencySpec {
                    interface: "eth0; rm".into(),
                    ..wire()
                },
                "interface",
            ),
            (
                v1::LatencySpec {
                    backend: "ebpf".into(),
                    ..wire()
                },
                "backend",
            ),
        ];
        for (w, want) in cases {
            let e = LatencySpec::try_from(w).unwrap_err();
            assert!(e.is_refusal());
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(short_hash("r1-1"), short_hash("r1-1"));
        assert_ne!(short_hash("r1-1"), short_hash("r1-2"));
    }
}
