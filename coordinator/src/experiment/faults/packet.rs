//! What the packet kinds (`corrupt`, `duplicate`, `reorder`) share on the
//! coordinator: the scope as written (destinations, ports, protocol,
//! interface), the share of packets, the backend, and how their
//! observation reads. The agent applies them with netem (where its kernel
//! has `sch_netem`) or an NFQUEUE queue. The NFQUEUE backend takes IPv4
//! and IPv6 (iptables and ip6tables chains); netem's filters are IPv4
//! only, so with `backend: netem` an IPv6 CIDR is refused and resolved
//! IPv6 peer addresses are left out of the wire spec. Without a backend,
//! an IPv6 destination makes the agent pick nfqueue.

use faultline_proto::v1;
use serde::Deserialize;

use super::Observed;
use crate::experiment::peers::{self, check_ports, join_ports, Peers, RawPeers};
use crate::experiment::values::RawRate;

/// Why a written packet fault is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind}.percent {text:?}: write a percentage, e.g. \"10%\" or 10")]
    PercentText { kind: &'static str, text: String },
    #[error("{kind}.percent {value}: must be within (0, 100] (percent)")]
    PercentRange { kind: &'static str, value: f64 },
    #[error("{kind}.interface {name:?} is not an interface name")]
    Interface { kind: &'static str, name: String },
    #[error("{kind}.protocol {name:?}: use tcp, udp or icmp (or leave it out for any)")]
    Protocol { kind: &'static str, name: String },
    #[error("{kind}: icmp has no ports; remove ports/source_ports or use tcp/udp")]
    IcmpPorts { kind: &'static str },
    #[error("{kind}.to: {cidr} is IPv6; backend: netem takes IPv4 only (use backend: nfqueue, or leave backend out)")]
    Ipv6 { kind: &'static str, cidr: String },
    #[error("{kind}.backend {name:?}: use netem, nfqueue or auto")]
    Backend { kind: &'static str, name: String },
    #[error(transparent)]
    Peers(#[from] peers::Error),
}

/// A `corrupt` or `duplicate` as written (`reorder` adds `gap`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    percent: RawRate,
    interface: Option<String>,
    #[serde(default)]
    to: RawPeers,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    source_ports: Vec<u16>,
    protocol: Option<String>,
    backend: Option<String>,
}

/// What `corrupt`, `duplicate` and `reorder` share, checked.
#[derive(Debug, Clone)]
pub struct Share {
    /// Share of matching packets, in percent: (0, 100].
    pub percent: f64,
    pub scope: Scope,
    /// `netem` or `nfqueue`; `None` lets the agent pick (netem where its
    /// kernel has it, as for latency).
    pub backend: Option<String>,
}

impl Share {
    /// Checks a `corrupt` or `duplicate` as written under `kind`.
    pub(crate) fn check(kind: &'static str, r: RawShare) -> Result<Self, Error> {
        Share {
            percent: percent(kind, r.percent)?,
            scope: Scope::check(kind, r.to, r.ports, r.source_ports, r.protocol, r.interface)?,
            backend: backend(kind, r.backend)?,
        }
        .checked(kind)
    }

    /// Refuses an IPv6 CIDR with `backend: netem` (netem's u32 filters
    /// match IPv4 only; the nfqueue backend takes both).
    pub(crate) fn checked(self, kind: &'static str) -> Result<Self, Error> {
        if self.backend.as_deref() == Some("netem") {
            if let Some(c) = self.scope.to.cidrs.iter().find(|c| c.contains(':')) {
                return Err(Error::Ipv6 { kind, cidr: c.clone() });
            }
        }
        Ok(self)
    }

    /// The wire scope: `peers` resolved for the target, IPv6 ones left out
    /// for `backend: netem` only.
    pub fn wire_scope(&self, peers: &[String]) -> Option<v1::PacketScope> {
        self.scope.to_wire(peers, self.backend.as_deref() != Some("netem"))
    }

    /// "corrupt 30% of packets to zones b udp ports 9000 backend netem".
    pub fn summary(&self, verb: &str) -> String {
        let mut s = format!("{verb} {}% of packets {}", self.percent, self.scope.summary());
        if let Some(b) = &self.backend {
            s += &format!(" backend {b}");
        }
        s
    }

    /// A requested backend must be advertised as `<kind>:<backend>`; else
    /// any backend of the kind will do.
    pub fn runs_on(&self, kind: &str, caps: &[String]) -> bool {
        match &self.backend {
            Some(b) => caps.iter().any(|c| *c == format!("{kind}:{b}")),
            None => caps.iter().any(|c| c.starts_with(&format!("{kind}:"))),
        }
    }

    /// What the fault needs of an agent, for the planner's refusal.
    pub fn requirement(&self, kind: &str) -> String {
        match self.backend.as_deref() {
            Some("netem") => {
                format!("{kind} (backend: netem needs the kernel's sch_netem; use backend: nfqueue without it)")
            }
            Some(b) => format!("{kind} (backend {b})"),
            None => kind.to_string(),
        }
    }
}

/// A backend as written: `netem`, `nfqueue`, or `auto` / absent (`None`).
pub(crate) fn backend(kind: &'static str, raw: Option<String>) -> Result<Option<String>, Error> {
    match raw.as_deref() {
        None | Some("auto") => Ok(None),
        Some("netem" | "nfqueue") => Ok(raw),
        Some(b) => Err(Error::Backend {
            kind,
            name: b.to_string(),
        }),
    }
}

/// Which packets a packet fault takes, checked.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub interface: Option<String>,
    /// Destinations; empty means any.
    pub to: Peers,
    pub dst_ports: Vec<u16>,
    pub src_ports: Vec<u16>,
    /// tcp, udp or icmp; `None` means any.
    pub protocol: Option<String>,
}

/// Field names, for errors: `corrupt.to` ...
fn field(kind: &'static str, what: &str) -> &'static str {
    match (kind, what) {
        ("corrupt", "to") => "corrupt.to",
        ("corrupt", "ports") => "corrupt.ports",
        ("corrupt", _) => "corrupt.source_ports",
        ("duplicate", "to") => "duplicate.to",
        ("duplicate", "ports") => "duplicate.ports",
        ("duplicate", _) => "duplicate.source_ports",
        ("reorder", "to") => "reorder.to",
        ("reorder", "ports") => "reorder.ports",
        ("reorder", _) => "reorder.source_ports",
        (_, "to") => "to",
        (_, "ports") => "ports",
        _ => "source_ports",
    }
}

impl Scope {
    /// Checks the scope fields written under `kind`.
    pub(crate) fn check(
        kind: &'static str,
        to: RawPeers,
        ports: Vec<u16>,
        source_ports: Vec<u16>,
        protocol: Option<String>,
        interface: Option<String>,
    ) -> Result<Self, Error> {
        if let Some(i) = &interface {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', ':']) {
                return Err(Error::Interface { kind, name: i.clone() });
            }
        }
        let protocol = match protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("any") | Some("all") => None,
            Some(p @ ("tcp" | "udp" | "icmp")) => Some(p.to_string()),
            Some(p) => {
                return Err(Error::Protocol {
                    kind,
                    name: p.to_string(),
                })
            }
        };
        check_ports(field(kind, "ports"), &ports)?;
        check_ports(field(kind, "source_ports"), &source_ports)?;
        if protocol.as_deref() == Some("icmp") && !(ports.is_empty() && source_ports.is_empty()) {
            return Err(Error::IcmpPorts { kind });
        }
        let to = to.check(field(kind, "to"))?;
        Ok(Scope {
            interface,
            to,
            dst_ports: ports,
            src_ports: source_ports,
            protocol,
        })
    }

    /// "to zones b udp ports 9000", for summaries.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("to {}", self.to)];
        if let Some(i) = &self.interface {
            parts.push(format!("via {i}"));
        }
        if let Some(p) = &self.protocol {
            parts.push(p.clone());
        }
        if !self.dst_ports.is_empty() {
            parts.push(format!("ports {}", join_ports(&self.dst_ports)));
        }
        if !self.src_ports.is_empty() {
            parts.push(format!("source ports {}", join_ports(&self.src_ports)));
        }
        parts.join(" ")
    }

    /// The wire scope; `peers` resolved for the target, IPv6 ones kept
    /// when `ipv6`.
    pub fn to_wire(&self, peers: &[String], ipv6: bool) -> Option<v1::PacketScope> {
        let ports = |p: &[u16]| p.iter().map(|p| u32::from(*p)).collect::<Vec<u32>>();
        Some(v1::PacketScope {
            interface: self.interface.clone().unwrap_or_default(),
            destinations: peers.iter().filter(|p| ipv6 || !p.contains(':')).cloned().collect(),
            dst_ports: ports(&self.dst_ports),
            src_ports: ports(&self.src_ports),
            protocol: self.protocol.clone().unwrap_or_default(),
        })
    }
}

/// A share of packets as written (`30%` or 30), checked: (0, 100].
pub(crate) fn percent(kind: &'static str, raw: RawRate) -> Result<f64, Error> {
    let p = match raw {
        RawRate::Fraction(f) => f,
        RawRate::Text(t) => RawRate::percent_text(&t).ok_or(Error::PercentText { kind, text: t })?,
    };
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(Error::PercentRange { kind, value: p })
    }
}

/// How a packet observation reads: its objects, and the counters once the
/// fault is restored; `affected` names what the kind did to a packet.
pub fn observe(o: &v1::PacketObservation, state: v1::FaultState, affected: &str, into: &mut Observed) {
    into.objects = o.objects.clone();
    if o.uncounted {
        let note = "the backend (netem) counts no packets".to_string();
        if !into.notes.contains(&note) {
            into.notes.push(note);
        }
        return;
    }
    if state != v1::FaultState::Injected {
        into.set_figure("seen", o.packets_seen as f64, "packets");
        into.set_figure(affected, o.packets_affected as f64, "packets");
    }
}

#[cfg(test)]
mod tests {
    use super::super::corrupt::CorruptFault;
    use super::super::duplicate::DuplicateFault;
    use super::super::reorder::ReorderFault;
    use super::super::Kind;

    #[test]
    fn shares_scopes_and_gaps_are_checked_and_ipv6_peers_go_to_the_wire_except_for_netem() {
        let f = CorruptFault::from_raw(
            serde_norway::from_str(
                "percent: 30%\nprotocol: udp\nports: [9000]\nto: { zones: [b], cidrs: [10.0.0.0/8] }\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            f.summary(),
            "corrupt 30% of packets to zones b + 10.0.0.0/8 udp ports 9000"
        );
        let w = f.to_wire(&["10.77.0.12/32".into(), "fd00::12/128".into()]);
        let scope = w.scope.unwrap();
        assert_eq!(
            scope.destinations,
            vec!["10.77.0.12/32".to_string(), "fd00::12/128".to_string()]
        );
        let netem = CorruptFault::from_raw(
            serde_norway::from_str(
                "percent: 5
backend: netem
",
            )
            .unwrap(),
        )
        .unwrap();
        let nw = netem.to_wire(&["10.77.0.12/32".into(), "fd00::12/128".into()]);
        assert_eq!(nw.scope.unwrap().destinations, vec!["10.77.0.12/32".to_string()]);
        for backend in ["", "\nbackend: nfqueue"] {
            let yaml = format!("percent: 5\nto: {{ cidrs: ['fd00::1'] }}{backend}");
            assert!(
                DuplicateFault::from_raw(serde_norway::from_str(&yaml).unwrap()).is_ok(),
                "{yaml}"
            );
        }
        assert_eq!(
            (w.percent, scope.dst_ports, scope.protocol.as_str()),
            (30.0, vec![9000], "udp")
        );
        for (yaml, want) in [
            ("percent: 0", "corrupt.percent 0"),
            ("percent: 101%", "corrupt.percent 101"),
            ("percent: lots", "corrupt.percent \"lots\""),
            (
                "percent: 5\nto: { cidrs: ['fd00::1'] }\nbackend: netem",
                "backend: netem takes IPv4 only (use backend: nfqueue",
            ),
            ("percent: 5\nprotocol: icmp\nports: [1]", "icmp has no ports"),
            ("percent: 5\nprotocol: sctp", "corrupt.protocol"),
        ] {
            let e = CorruptFault::from_raw(serde_norway::from_str(yaml).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let r = ReorderFault::from_raw(serde_norway::from_str("percent: 25\n").unwrap()).unwrap();
        assert_eq!(r.to_wire(&[]).gap_us, 10_000);
        let e = ReorderFault::from_raw(serde_norway::from_str("percent: 25\ngap: 5s\n").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("reorder.gap 5s"), "{e}");
    }

    #[test]
    fn a_backend_goes_to_the_wire_and_needs_its_capability() {
        let caps = vec!["corrupt:nfqueue".to_string(), "reorder:nfqueue".to_string()];
        let f = CorruptFault::from_raw(
            serde_norway::from_str(
                "percent: 5
backend: netem
",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(f.to_wire(&[]).backend, "netem");
        assert!(f.summary().ends_with("backend netem"), "{}", f.summary());
        assert!(!f.runs_on(&caps));
        assert!(f.runs_on(&["corrupt:netem".to_string()]));
        assert!(f.requirement().contains("use backend: nfqueue"), "{}", f.requirement());
        let auto = CorruptFault::from_raw(
            serde_norway::from_str(
                "percent: 5
",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(auto.to_wire(&[]).backend, "");
        assert!(auto.runs_on(&caps) && !auto.runs_on(&["duplicate:netem".to_string()]));
        let d = DuplicateFault::from_raw(
            serde_norway::from_str(
                "percent: 5
backend: nfqueue
",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(d.to_wire(&[]).backend, "nfqueue");
        let r = ReorderFault::from_raw(
            serde_norway::from_str(
                "percent: 5
backend: netem
",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.to_wire(&[]).backend, "netem");
        assert!(!r.runs_on(&caps));
        let e = CorruptFault::from_raw(serde_norway::from_str("percent: 5\nbackend: ebpf\n").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("corrupt.backend \"ebpf\": use netem, nfqueue or auto"),
            "{e}"
        );
    }

    #[test]
    fn a_netem_observation_has_no_packet_figures_but_a_note() {
        use faultline_proto::v1;
        let mut into = super::Observed::default();
        let o = v1::PacketObservation {
            objects: vec!["qdisc prio fa01: + netem on eth0".into()],
            uncounted: true,
            ..Default::default()
        };
        super::observe(&o, v1::FaultState::Restored, "corrupted", &mut into);
        super::observe(&o, v1::FaultState::Restored, "corrupted", &mut into);
        assert!(into.figures.is_empty(), "{:?}", into.figures);
        assert_eq!(into.notes, vec!["the backend (netem) counts no packets".to_string()]);
        let counted = v1::PacketObservation {
            packets_seen: 10,
            packets_affected: 3,
            ..Default::default()
        };
        let mut into = super::Observed::default();
        super::observe(&counted, v1::FaultState::Restored, "corrupted", &mut into);
        assert_eq!(into.figures.len(), 2);
    }
}
