//! Pod queries: which pods on this node match a pod selector, and each
//! one's IP address, so the coordinator can make release-gate groups of
//! pods (`hypothesis.groups.NAME.pods`) and probe every pod at its own IP.
//!
//! The address is read from the pod's **network namespace**, through the
//! PID of one of its running containers (every container of a pod shares
//! the sandbox's namespace): procfs' `/proc/<pid>/net/` shows the network
//! namespace of `<pid>` (not the reader's), so `fib_trie` there lists the
//! namespace's local IPv4 addresses and `if_inet6` its IPv6 ones. This is
//! runtime-agnostic (Docker, containerd and CRI-O alike; the engines'
//! inspect data has no pod IP for containerd's tasks, which CNI plumbs,
//! not the runtime) and needs no `setns`. The first global IPv4 address
//! wins, else the first global IPv6 address; loopback and link-local ones
//! are skipped (a probe from another node cannot use them).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use faultline_proto::v1;

use super::{pods, ContainerRuntime, ContainerSelector, Protected, Result};

/// How many pods of the node a "nothing matches" answer names. By
/// default, 20: enough to spot a typo in a label, bounded for big nodes.
pub const MAX_LISTED: usize = 20;

/// The answer to a pod query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The matching pods, by namespace and name.
    pub pods: Vec<v1::PodAddress>,
    /// The pods this node runs (`namespace/name {labels}`), at most
    /// [`MAX_LISTED`], for a coordinator that must say what exists.
    pub seen: Vec<String>,
}

/// Resolves `sel`'s pods on this node with their addresses; `proc` is
/// procfs' root (`/proc`; a tempdir in tests). Protected pods (kube-system
/// unless allowed, faultline's own) are refused as a fault's resolution
/// refuses them.
pub fn query(
    runtime: &dyn ContainerRuntime,
    sel: &ContainerSelector,
    protected: &Protected,
    proc: &Path,
) -> Result<Answer> {
    let all = runtime.list()?;
    let seen: Vec<String> = all
        .iter()
        .filter(|c| pods::is_sandbox(c))
        .filter_map(|c| {
            let ns = c.labels.get(pods::POD_NAMESPACE)?;
            let name = c.labels.get(pods::POD_NAME)?;
            let own: Vec<String> = c
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("io.kubernetes.") && !k.starts_with("io.cri-containerd."))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            Some(format!("{ns}/{name} {{{}}}", own.join(", ")))
        })
        .take(MAX_LISTED)
        .collect();
    let place = match super::resolve(runtime, sel, protected) {
        Ok(p) => p,
        Err(super::Error::NoMatch(_)) => return Ok(Answer { pods: Vec::new(), seen }),
        Err(e) => return Err(e),
    };
    let super::Place::Containers { containers, .. } = place else {
        return Ok(Answer { pods: Vec::new(), seen });
    };
    // (namespace, name) -> the pod; its sandbox's PID when the runtime
    // lists one, else its first container's.
    let mut by_pod: BTreeMap<(String, String), (v1::PodAddress, u32)> = BTreeMap::new();
    for c in &containers {
        let ns = c.labels.get(pods::POD_NAMESPACE).cloned().unwrap_or_default();
        let name = c.labels.get(pods::POD_NAME).cloned().unwrap_or_default();
        let e = by_pod.entry((ns.clone(), name.clone())).or_insert_with(|| {
            (
                v1::PodAddress {
                    namespace: ns,
                    name,
                    ..Default::default()
                },
                c.pid,
            )
        });
        e.0.containers.push(c.name.clone());
    }
    let pods = by_pod
        .into_values()
        .map(|(mut p, pid)| {
            p.ip = address_of_pid(proc, pid).map(|ip| ip.to_string()).unwrap_or_default();
            p
        })
        .collect();
    Ok(Answer { pods, seen })
}

/// The address of `pid`'s network namespace a probe would use.
pub fn address_of_pid(proc: &Path, pid: u32) -> Option<IpAddr> {
    let dir = proc.join(pid.to_string()).join("net");
    let v4 = std::fs::read_to_string(dir.join("fib_trie")).unwrap_or_default();
    if let Some(ip) = local_v4(&v4).into_iter().next() {
        return Some(IpAddr::V4(ip));
    }
    let v6 = std::fs::read_to_string(dir.join("if_inet6")).unwrap_or_default();
    global_v6(&v6).into_iter().next().map(IpAddr::V6)
}

/// The namespace's own IPv4 addresses from `fib_trie`: a leaf `|-- ADDR`
/// followed by a `/32 host LOCAL` route is an address of an interface.
/// Loopback and link-local (169.254/16) are left out; order of first
/// appearance, no duplicates (the trie lists the Main and Local tables).
pub fn local_v4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            leaf = a.trim().parse().ok();
        } else if t.starts_with("+-- ") {
            leaf = None;
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = leaf {
                if !ip.is_loopback() && !ip.is_link_local() && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The namespace's global-scope IPv6 addresses from `if_inet6` (32 hex
/// digits, ifindex, prefix length, scope, flags, device; scope 00 is
/// global).
pub fn global_v6(if_inet6: &str) -> Vec<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[3] != "00" || f[0].len() != 32 {
                return None;
            }
            u128::from_str_radix(f[0], 16).ok().map(Ipv6Addr::from)
        })
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{container, FakeRuntime};

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 172.17.0.0/16 2 0 2
        +-- 172.17.0.0/30 2 0 2
           |-- 172.17.0.0
              /16 link UNICAST
           |-- 172.17.0.3
              /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 172.17.0.3
              /32 host LOCAL
";

    #[test]
    fn the_namespaces_own_ipv4_address_comes_from_its_fib_trie() {
        assert_eq!(local_v4(FIB_TRIE), [Ipv4Addr::new(172, 17, 0, 3)]);
        assert!(local_v4("Main:\n     |-- 127.0.0.1\n        /32 host LOCAL\n").is_empty());
    }

    #[test]
    fn ipv6_takes_global_scope_addresses_only() {
        let t = "00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
20010db8000000000000000000000002 02 40 00 80     eth0
";
        assert_eq!(global_v6(t), ["2001:db8::2".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn a_pod_query_answers_each_matching_pod_once_with_its_namespaces_address() {
        let proc = tempfile::tempdir().unwrap();
        let pod = |uid: &str, name: &str, kind: &str, extra: &[(&str, &str)]| {
            let mut l = vec![
                (pods::POD_UID, uid),
                (pods::POD_NAMESPACE, "shop"),
                (pods::POD_NAME, name),
                (pods::CRI_CONTAINERD_KIND, kind),
            ];
            l.extend_from_slice(extra);
            container(
                &format!("{uid}-{kind}-{}", extra.len()),
                &format!("{name}-{kind}-{}", extra.len()),
                &l,
            )
        };
        let mut web = pod("u1", "web-0", "container", &[(pods::CONTAINER_NAME, "main")]);
        web.pid = 4242;
        let mut side = pod(
            "u1",
            "web-0",
            "container",
            &[(pods::CONTAINER_NAME, "side"), ("x", "y")],
        );
        side.pid = 4242;
        let rt = FakeRuntime::default();
        *rt.containers.lock().unwrap() = vec![
            pod("u1", "web-0", "sandbox", &[("app", "web")]),
            web,
            side,
            pod("u2", "db-0", "sandbox", &[("app", "db")]),
            pod("u2", "db-0", "container", &[]),
        ];
        let net = proc.path().join("4242/net");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("fib_trie"), FIB_TRIE).unwrap();
        let app = |app: &str| {
            ContainerSelector::try_from(v1::ContainerSelector {
                pod: Some(v1::PodSelector {
                    namespace: "shop".into(),
                    labels: [("app".to_string(), app.to_string())].into(),
                    name: String::new(),
                }),
                ..Default::default()
            })
            .unwrap()
        };
        let a = query(&rt, &app("web"), &Protected::default(), proc.path()).unwrap();
        assert_eq!(a.pods.len(), 1, "{a:?}");
        assert_eq!(
            (
                a.pods[0].namespace.as_str(),
                a.pods[0].name.as_str(),
                a.pods[0].ip.as_str()
            ),
            ("shop", "web-0", "172.17.0.3")
        );
        assert_eq!(a.pods[0].containers.len(), 2);
        assert_eq!(a.seen, ["shop/web-0 {app=web}", "shop/db-0 {app=db}"]);
        let a = query(&rt, &app("cart"), &Protected::default(), proc.path()).unwrap();
        assert!(a.pods.is_empty() && a.seen.len() == 2, "{a:?}");
    }
}
