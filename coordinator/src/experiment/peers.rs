//! The remote ends of a network fault (zones and networks) and its ports,
//! as written and checked. Shared by the network kinds (`latency`, `block`).

use std::fmt;

use serde::Deserialize;

/// Why written peers or ports are refused; `field` is where they were
/// written, e.g. `latency.to`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}.cidrs: {cidr:?} is not an IP address or CIDR (e.g. 10.0.0.0/24)")]
    NotAnAddress { field: &'static str, cidr: String },
    #[error("{field}.cidrs: {cidr:?} has a prefix outside 0..={max}")]
    Prefix { field: &'static str, cidr: String, max: u8 },
    #[error("{field}.zones: {zone:?} is not a zone name")]
    Zone { field: &'static str, zone: String },
    #[error("{field}: 0 is not a port (1-65535)")]
    PortZero { field: &'static str },
    #[error("{field}: at most 15 ports")]
    TooManyPorts { field: &'static str },
}

/// Remote ends of a network fault: zones (agents whose `zone` label is one
/// of them, resolved to the addresses those agents reported) and networks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peers {
    pub zones: Vec<String>,
    /// Networks as written (already checked to parse), e.g. `10.0.0.0/8`.
    pub cidrs: Vec<String>,
}

impl Peers {
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.cidrs.is_empty()
    }
}

impl fmt::Display for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.zones.is_empty() {
            parts.push(format!("zones {}", self.zones.join(",")));
        }
        if !self.cidrs.is_empty() {
            parts.push(self.cidrs.join(","));
        }
        if parts.is_empty() {
            f.write_str("any destination")
        } else {
            f.write_str(&parts.join(" + "))
        }
    }
}

/// Peers as written: `{ zones: [b], cidrs: [10.0.2.0/24] }`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeers {
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    cidrs: Vec<String>,
}

impl RawPeers {
    /// Checks every network and zone name written under `field`.
    pub fn check(self, field: &'static str) -> Result<Peers, Error> {
        for c in &self.cidrs {
            check_cidr(field, c)?;
        }
        if let Some(z) = self.zones.iter().find(|z| z.trim().is_empty()) {
            return Err(Error::Zone { field, zone: z.clone() });
        }
        Ok(Peers {
            zones: self.zones,
            cidrs: self.cidrs,
        })
    }
}

/// Checks `addr` or `addr/prefix`.
fn check_cidr(field: &'static str, c: &str) -> Result<(), Error> {
    let (a, p) = match c.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (c, None),
    };
    let Ok(ip) = a.parse::<std::net::IpAddr>() else {
        return Err(Error::NotAnAddress {
            field,
            cidr: c.to_string(),
        });
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(p) = p {
        if !matches!(p.parse::<u8>(), Ok(n) if n <= max) {
            return Err(Error::Prefix {
                field,
                cidr: c.to_string(),
                max,
            });
        }
    }
    Ok(())
}

/// Checks the ports written in `field`: no 0, at most 15 (what one
/// iptables multiport match takes).
pub(crate) fn check_ports(field: &'static str, ports: &[u16]) -> Result<(), Error> {
    if ports.contains(&0) {
        return Err(Error::PortZero { field });
    }
    if ports.len() > 15 {
        return Err(Error::TooManyPorts { field });
    }
    Ok(())
}

/// Ports joined for summaries: `80,443`.
pub(crate) fn join_ports(ports: &[u16]) -> String {
    ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
}
