//! Facts about the node the agent runs on.

use std::net::IpAddr;

/// The node's host name, or "unknown-host" if it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// An agent id made from a host name: characters an id may not hold
/// become `-`, leading ones that are not letters or digits are dropped, and
/// it is cut to the id length limit; `local` when nothing is left. A host
/// whose name was never set is called `(none)` by the kernel (a minimal VM
/// or container), which is not a valid id; local mode, which has no `--id`
/// flag, used it as it was and could not start.
pub fn agent_id_from(hostname: &str) -> String {
    let mapped: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let id: String = trimmed.chars().take(faultline_proto::ids::MAX_AGENT_ID_LEN).collect();
    if id.is_empty() {
        "local".to_string()
    } else {
        id
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_host_name_gives_a_valid_agent_id() {
        for (h, want) in [
            ("web-1.example", "web-1.example"),
            ("(none)", "none-"),
            ("((", "local"),
            ("", "local"),
            ("höst name", "h-st-name"),
        ] {
            let id = agent_id_from(h);
            assert_eq!(id, want, "{h:?}");
            faultline_proto::ids::validate_agent_id(&id).unwrap();
        }
        let long = "a".repeat(300);
        faultline_proto::ids::validate_agent_id(&agent_id_from(&long)).unwrap();
    }
}
