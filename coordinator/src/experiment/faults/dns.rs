//! `dns`: make the lookups of chosen names (or all) fail with NXDOMAIN or
//! SERVFAIL, or time out, for each target. The agent queues the target's
//! outgoing port-53 traffic with NFQUEUE and answers or drops the chosen
//! queries (see `agent/src/faults/dns.rs`).

use faultline_proto::v1;
use serde::Deserialize;

use super::{packet, Kind, Observed};

/// Most names per fault (as the agent takes).
const MAX_NAMES: usize = 64;

/// Parameters of a `dns` fault.
#[derive(Debug, Clone)]
pub struct DnsFault {
    /// Exact names or `*.suffix`; empty means every name.
    pub names: Vec<String>,
    /// nxdomain, servfail or timeout.
    pub action: String,
    /// Only queries to these resolvers (IPv4 or IPv6 address or CIDR);
    /// empty: any.
    pub resolvers: Vec<String>,
}

/// Why a written `dns` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dns.names: {0:?} is not a DNS name (write db.example.com or *.example.com)")]
    Name(String),
    #[error("dns.names: at most {MAX_NAMES} names")]
    TooMany,
    #[error("dns.action {0:?}: use nxdomain, servfail or timeout")]
    Action(String),
    #[error("dns.resolvers: {0:?} is not an IPv4 or IPv6 address or CIDR")]
    Resolver(String),
}

/// A `dns` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    #[serde(default)]
    names: Vec<String>,
    action: Option<String>,
    #[serde(default)]
    resolvers: Vec<String>,
}

fn valid_name(raw: &str) -> bool {
    let n = raw.trim_end_matches('.');
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn valid_resolver(r: &str) -> bool {
    let (a, p) = match r.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (r, None),
    };
    let max = match a.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    p.is_none_or(|p| matches!(p.parse::<u8>(), Ok(n) if n <= max))
}

impl Kind for DnsFault {
    const NAME: &'static str = "dns";
    type Raw = RawDns;
    type Error = Error;
    type Wire = v1::DnsSpec;
    type Observation = v1::PacketObservation;

    fn from_raw(r: RawDns) -> Result<Self, Error> {
        if r.names.len() > MAX_NAMES {
            return Err(Error::TooMany);
        }
        if let Some(n) = r.names.iter().find(|n| !valid_name(n)) {
            return Err(Error::Name(n.clone()));
        }
        let action = match r.action.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("nxdomain") => "nxdomain".to_string(),
            Some(a @ ("servfail" | "timeout")) => a.to_string(),
            Some(a) => return Err(Error::Action(a.to_string())),
        };
        if let Some(r) = r.resolvers.iter().find(|r| !valid_resolver(r)) {
            return Err(Error::Resolver(r.clone()));
        }
        Ok(DnsFault {
            names: r.names,
            action,
            resolvers: r.resolvers,
        })
    }

    fn summary(&self) -> String {
        let names = if self.names.is_empty() {
            "every name".to_string()
        } else {
            self.names.join(", ")
        };
        let via = if self.resolvers.is_empty() {
            String::new()
        } else {
            format!(" via {}", self.resolvers.join(", "))
        };
        format!("{} lookups of {names}{via}", self.action)
    }

    fn to_wire(&self, _peers: &[String]) -> v1::DnsSpec {
        v1::DnsSpec {
            names: self.names.clone(),
            action: self.action.clone(),
            resolvers: self.resolvers.clone(),
        }
    }

    fn observe(o: &v1::PacketObservation, state: v1::FaultState, into: &mut Observed) {
        packet::observe(o, state, "failed", into);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<DnsFault, Error> {
        DnsFault::from_raw(serde_norway::from_str(y).unwrap())
    }

    #[test]
    fn names_actions_and_resolvers_are_checked() {
        let f = parse("names: ['*.example.com', db.internal]\naction: timeout\nresolvers: [10.0.0.53]\n").unwrap();
        assert_eq!(
            f.summary(),
            "timeout lookups of *.example.com, db.internal via 10.0.0.53"
        );
        assert_eq!(parse("{}").unwrap().to_wire(&[]).action, "nxdomain");
        assert!(parse("names: ['a b']").unwrap_err().to_string().contains("dns.names"));
        assert!(parse("action: refuse").unwrap_err().to_string().contains("dns.action"));
        assert_eq!(
            parse("resolvers: ['fd00::53', 'fd00:1::/64']")
                .unwrap()
                .to_wire(&[])
                .resolvers,
            vec!["fd00::53".to_string(), "fd00:1::/64".to_string()]
        );
        for bad in ["fd00::1/129", "10.0.0.1/33", "resolver.local"] {
            let e = parse(&format!("resolvers: ['{bad}']")).unwrap_err().to_string();
            assert!(e.contains("not an IPv4 or IPv6 address or CIDR"), "{bad}: {e}");
        }
    }
}
