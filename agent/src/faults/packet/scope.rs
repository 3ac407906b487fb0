//! Which packets a packet fault takes: the scope from the wire, checked,
//! and the iptables / ip6tables matches it makes, per IP family.

use faultline_proto::v1;

use super::{Error, Result};
use crate::cidr::Cidr;
use crate::faults::latency::{self, netem::Match, Choice, Protocol, MAX_PORTS};
use crate::firewall::Family;

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

/// Networks (IPv4 or IPv6) from the wire.
pub fn networks(kind: &'static str, what: &str, raw: &[String]) -> Result<Vec<Cidr>> {
    raw.iter()
        .map(|d| {
            d.parse::<Cidr>().map_err(|e| Error::InvalidSpec {
                kind,
                message: format!("{what}: {e}"),
            })
        })
        .collect()
}

/// Match lines per IP family: the iptables ones for [`Family::V4`], the
/// ip6tables ones for [`Family::V6`]. A family with no line is not touched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FamilyLines {
    pub v4: Vec<String>,
    pub v6: Vec<String>,
    /// Whether the IPv6 lines come from IPv6 destinations named in the
    /// spec (then a node without ip6tables refuses the fault) rather than
    /// from "any destination" (then it covers IPv4 only, and the fault's
    /// objects name an iptables chain alone).
    pub v6_asked: bool,
}

impl FamilyLines {
    pub fn of(&self, family: Family) -> &[String] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The families with lines, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| !self.of(*f).is_empty())
            .collect()
    }

    /// Lines for every destination in `destinations` (empty: any) of each
    /// family, each line followed by `rest`.
    pub fn for_destinations(destinations: &[Cidr], rest: &[String]) -> Self {
        let family_lines = |v4: bool| -> Vec<String> {
            let dests: Vec<String> = if destinations.is_empty() {
                vec![String::new()]
            } else {
                destinations
                    .iter()
                    .filter(|c| c.is_ipv4() == v4)
                    .map(|c| format!("-d {c}"))
                    .collect()
            };
            dests
                .iter()
                .flat_map(|d| {
                    rest.iter().map(move |r| {
                        let r = if v4 {
                            r.clone()
                        } else {
                            r.replace("-p icmp", "-p ipv6-icmp")
                        };
                        [d.as_str(), r.as_str()]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                })
                .collect()
        };
        FamilyLines {
            v4: family_lines(true),
            v6: family_lines(false),
            v6_asked: destinations.iter().any(|c| !c.is_ipv4()),
        }
    }
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
            destinations: networks(kind, "destinations", &w.destinations)?,
            dst_ports,
            src_ports,
            protocol,
        })
    }

    /// iptables and ip6tables match arguments, one line per destination ×
    /// protocol (`icmp` is `ipv6-icmp` for ip6tables).
    pub fn match_lines(&self) -> FamilyLines {
        let ported = !(self.dst_ports.is_empty() && self.src_ports.is_empty());
        let protos: Vec<Option<&str>> = match (self.protocol, ported) {
            (Protocol::Any, false) => vec![None],
            (Protocol::Any, true) => vec![Some("tcp"), Some("udp")],
            (Protocol::Tcp, _) => vec![Some("tcp")],
            (Protocol::Udp, _) => vec![Some("udp")],
            (Protocol::Icmp, _) => vec![Some("icmp")],
        };
        let list = |p: &[u16]| p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        let rest: Vec<String> = protos
            .iter()
            .map(|p| {
                let mut parts: Vec<String> = Vec::new();
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
                parts.join(" ")
            })
            .collect();
        FamilyLines::for_destinations(&self.destinations, &rest)
    }

    /// Whether an IPv6 destination is named (netem then cannot take it).
    pub fn has_ipv6(&self) -> bool {
        self.destinations.iter().any(|c| !c.is_ipv4())
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
        let list = |p: &[u16]| p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        if !self.dst_ports.is_empty() {
            parts.push(format!("ports {}", list(&self.dst_ports)));
        }
        if !self.src_ports.is_empty() {
            parts.push(format!("source ports {}", list(&self.src_ports)));
        }
        parts.join(" ")
    }
}

impl Scope {
    /// The same packets as u32 filters of a netem tree (IPv4 only: the
    /// netem form refuses IPv6 destinations, and "any destination" means
    /// any IPv4 one there).
    pub fn netem_match(&self) -> Match<'_> {
        Match {
            destinations: &self.destinations,
            dst_ports: &self.dst_ports,
            src_ports: &self.src_ports,
            protocol: self.protocol,
            ipv4_only: true,
        }
    }
}

/// What the `corrupt`, `duplicate` and `reorder` specs share, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub scope: Scope,
    /// (0, 100].
    pub percent: f64,
    pub backend: Choice,
}

impl Common {
    /// Checks the shared fields of a `kind` wire spec.
    pub fn from_wire(kind: &'static str, scope: Option<v1::PacketScope>, percent: f64, backend: &str) -> Result<Self> {
        Ok(Common {
            scope: Scope::from_wire(kind, scope)?,
            percent: self::percent(kind, percent)?,
            backend: self::backend(kind, backend)?,
        })
    }
}

/// The backend asked for: `netem`, `nfqueue`, or empty / `auto`.
pub fn backend(kind: &'static str, raw: &str) -> Result<Choice> {
    match raw {
        "" | "auto" => Ok(Choice::Auto),
        "netem" => Ok(Choice::Netem),
        "nfqueue" => Ok(Choice::Nfqueue),
        b => Err(Error::InvalidSpec {
            kind,
            message: format!("backend {b:?}: use netem, nfqueue or auto"),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_scopes_and_shares_are_refused_with_the_reason() {
        let bad = |w: v1::PacketScope, want: &str| {
            let e = Scope::from_wire("corrupt", Some(w)).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        };
        bad(
            v1::PacketScope {
                destinations: vec!["fd00::1/200".into()],
                ..Default::default()
            },
            "destinations",
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
        assert_eq!(backend("corrupt", "").unwrap(), Choice::Auto);
        assert_eq!(backend("corrupt", "netem").unwrap(), Choice::Netem);
        let e = backend("corrupt", "ebpf").unwrap_err().to_string();
        assert!(e.contains("use netem, nfqueue or auto"), "{e}");
    }

    #[test]
    fn ipv6_destinations_make_ip6tables_lines_and_any_destination_makes_both() {
        let scope = |dests: &[&str], protocol: &str, ports: Vec<u32>| {
            Scope::from_wire(
                "corrupt",
                Some(v1::PacketScope {
                    destinations: dests.iter().map(|d| d.to_string()).collect(),
                    dst_ports: ports,
                    protocol: protocol.into(),
                    ..Default::default()
                }),
            )
            .unwrap()
        };
        let l = scope(&["10.0.0.2", "fd00:77::12/128"], "udp", vec![9000]).match_lines();
        assert_eq!(l.v4, vec!["-d 10.0.0.2/32 -p udp -m multiport --dports 9000"]);
        assert_eq!(l.v6, vec!["-d fd00:77::12/128 -p udp -m multiport --dports 9000"]);
        assert!(l.v6_asked);
        assert_eq!(l.families(), vec![Family::V4, Family::V6]);
        let l = scope(&["fd00::/64"], "icmp", vec![]).match_lines();
        assert_eq!(
            (l.v4.len(), l.v6.as_slice()),
            (0, &["-d fd00::/64 -p ipv6-icmp".to_string()][..])
        );
        assert_eq!(l.families(), vec![Family::V6]);
        let l = scope(&[], "", vec![]).match_lines();
        assert_eq!(
            (l.v4, l.v6, l.v6_asked),
            (vec![String::new()], vec![String::new()], false)
        );
        assert!(scope(&["fd00::1"], "", vec![]).has_ipv6());
    }
}
