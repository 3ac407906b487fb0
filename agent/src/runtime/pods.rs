//! Kubernetes pods as the node's runtime records them, so an agent selects
//! pods without any Kubernetes API rights.
//!
//! The CRI implementations label every container they create for a pod:
//! `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`,
//! `io.kubernetes.pod.uid` and, on application containers,
//! `io.kubernetes.container.name`. The pod's own labels (`app: web`) are
//! on its **sandbox** container only (the `pause` container holding the
//! pod's namespaces): containerd's CRI plugin marks it
//! `io.cri-containerd.kind=sandbox`, cri-dockerd
//! `io.kubernetes.docker.type=podsandbox`, CRI-O
//! `io.kubernetes.cri-o.ContainerType=sandbox` (an annotation the CRI-O
//! resolver copies into the labels). So pod labels are matched on the
//! sandbox and joined to the application containers by pod uid. Sandboxes
//! themselves are never targets: killing or filling a `pause` container
//! tests nothing but the kubelet.

use std::collections::BTreeMap;

use super::Container;

pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// containerd CRI: `sandbox` or `container`.
pub const CRI_CONTAINERD_KIND: &str = "io.cri-containerd.kind";
/// cri-dockerd (and dockershim before it): `podsandbox` or `container`.
pub const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
/// The namespace whose pods are protected unless `allow_kube_system`.
pub const KUBE_SYSTEM: &str = "kube-system";
/// Pods (and containers) carrying this label with value [`FAULTLINE`]
/// are faultline's own (the manifests in `deploy/` set it on the
/// coordinator's and the agent's pods and containers) and are never
/// targets.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const FAULTLINE: &str = "faultline";

/// Which pods, as the experiment says (`targets.containers.pod`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSelector {
    /// The pod's namespace (required).
    pub namespace: String,
    /// Labels the pod must carry, all of them.
    pub labels: BTreeMap<String, String>,
    /// The pod's exact name, if given.
    pub name: Option<String>,
}

/// Whether `c` is a pod sandbox (`pause`) container.
pub fn is_sandbox(c: &Container) -> bool {
    c.labels.get(CRI_CONTAINERD_KIND).map(String::as_str) == Some("sandbox")
        || c.labels.get(DOCKER_TYPE).map(String::as_str) == Some("podsandbox")
        || c.labels.get(super::crio::CONTAINER_TYPE).map(String::as_str) == Some("sandbox")
}

/// The pods' own labels on this node, by pod uid, read off the sandboxes.
pub fn pod_labels(all: &[Container]) -> BTreeMap<String, BTreeMap<String, String>> {
    all.iter()
        .filter(|c| is_sandbox(c))
        .filter_map(|c| Some((c.labels.get(POD_UID)?.clone(), c.labels.clone())))
        .collect()
}

/// The pod `c` belongs to, by uid (`None`: not a Kubernetes container).
pub fn pod_uid(c: &Container) -> Option<&str> {
    c.labels.get(POD_UID).map(String::as_str).filter(|u| !u.is_empty())
}

impl PodSelector {
    /// Whether application container `c` is in a selected pod; `pods` are
    /// the pods' labels by uid ([`pod_labels`]).
    pub fn matches(&self, c: &Container, pods: &BTreeMap<String, BTreeMap<String, String>>) -> bool {
        let label = |k: &str| c.labels.get(k).map(String::as_str);
        if label(POD_NAMESPACE) != Some(self.namespace.as_str()) {
            return false;
        }
        if self.name.as_deref().is_some_and(|n| label(POD_NAME) != Some(n)) {
            return false;
        }
        if self.labels.is_empty() {
            return true;
        }
        let Some(own) = pod_uid(c).and_then(|u| pods.get(u)) else {
            // No sandbox seen: the pod's labels are unknown here.
            return false;
        };
        self.labels.iter().all(|(k, v)| own.get(k) == Some(v))
    }

    /// The selector in words.
    pub fn describe(&self) -> String {
        let mut s = format!("pod namespace={}", self.namespace);
        if let Some(n) = &self.name {
            s += &format!(" name={n}");
        }
        for (k, v) in &self.labels {
            s += &format!(" {k}={v}");
        }
        s
    }
}

/// Why `c` is protected by its Kubernetes identity, if it is: a pod in
/// `kube-system` (unless allowed), or faultline's own pod or container.
pub fn protected(
    c: &Container,
    pods: &BTreeMap<String, BTreeMap<String, String>>,
    allow_kube_system: bool,
) -> Option<String> {
    let own = |labels: &BTreeMap<String, String>| labels.get(PART_OF).map(String::as_str) == Some(FAULTLINE);
    if own(&c.labels) || pod_uid(c).and_then(|u| pods.get(u)).is_some_and(own) {
        return Some(format!(
            "container {} is faultline's own ({PART_OF}={FAULTLINE})",
            c.name
        ));
    }
    if !allow_kube_system && c.labels.get(POD_NAMESPACE).map(String::as_str) == Some(KUBE_SYSTEM) {
        return Some(format!(
            "container {} is in a kube-system pod; set allow_kube_system: true in the fault's targets.containers to target it",
            c.name
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::container;

    fn pod(uid: &str, ns: &str, name: &str, kind: &str, extra: &[(&str, &str)]) -> Container {
        let mut labels = vec![
            (POD_UID, uid),
            (POD_NAMESPACE, ns),
            (POD_NAME, name),
            (CRI_CONTAINERD_KIND, kind),
        ];
        labels.extend_from_slice(extra);
        container(&format!("{uid}-{kind}"), &format!("{ns}/{name}"), &labels)
    }

    #[test]
    fn pod_labels_come_from_the_sandbox_and_join_by_uid() {
        let all = vec![
            pod("u1", "shop", "web-0", "sandbox", &[("app", "web")]),
            pod("u1", "shop", "web-0", "container", &[(CONTAINER_NAME, "nginx")]),
            pod("u2", "shop", "db-0", "sandbox", &[("app", "db")]),
            pod("u2", "shop", "db-0", "container", &[(CONTAINER_NAME, "pg")]),
        ];
        let pods = pod_labels(&all);
        let sel = PodSelector {
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            name: None,
        };
        let hit: Vec<&str> = all
            .iter()
            .filter(|c| !is_sandbox(c) && sel.matches(c, &pods))
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(hit, ["u1-container"]);
        let other_ns = PodSelector {
            namespace: "prod".into(),
            ..sel
        };
        assert!(!all.iter().any(|c| other_ns.matches(c, &pods)));
        assert!(is_sandbox(&all[0]) && !is_sandbox(&all[1]));
    }

    #[test]
    fn kube_system_and_faultlines_own_pods_are_protected() {
        let sys = pod("u3", KUBE_SYSTEM, "coredns", "container", &[]);
        let pods = BTreeMap::new();
        let why = protected(&sys, &pods, false).unwrap();
        assert!(why.contains("allow_kube_system: true"), "{why}");
        assert!(protected(&sys, &pods, true).is_none());
        let coord = pod("u4", "faultline", "coordinator", "sandbox", &[(PART_OF, FAULTLINE)]);
        let app = pod("u4", "faultline", "coordinator", "container", &[]);
        let pods = pod_labels(&[coord]);
        assert!(protected(&app, &pods, true).unwrap().contains("faultline's own"));
    }
}
