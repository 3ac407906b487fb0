//! Facts about the node the agent runs on.

use std::net::IpAddr;

/// The node's host name, or "unknown-host" if it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Non-loopback IP addresses of every interface, so the coordinator can
/// resolve zones to the peers a block fault should cut off.
pub fn addresses() -> Vec<String> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<String> = ifaddrs
        .filter_map(|ifa| {
            let addr = ifa.address?;
            let ip: IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                return None;
            };
            (!ip.is_loopback() && !is_link_local(&ip)).then(|| ip.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}
