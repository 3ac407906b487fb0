//! Selectors resolved against the recording fake runtime.

use super::fake::{container, FakeRuntime};
use super::*;

fn sel(name: &str, labels: &[(&str, &str)], count: u32) -> ContainerSelector {
    ContainerSelector::try_from(v1::ContainerSelector {
        name_regex: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        count,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_selector_resolves_to_matching_running_containers_in_name_order_up_to_count() {
    let rt = FakeRuntime::default();
    let mut stopped = container("c3", "web-0", &[("app", "web")]);
    stopped.running = false;
    *rt.containers.lock().unwrap() = vec![
        container("c2", "web-2", &[("app", "web")]),
        container("c1", "web-1", &[("app", "web")]),
        container("c4", "db", &[("app", "db")]),
        stopped,
    ];
    let p = resolve(&rt, &sel("^web", &[("app", "web")], 0), &Protected::default()).unwrap();
    let Place::Containers { containers, .. } = p else {
        panic!()
    };
    assert_eq!(
        containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    let p = resolve(&rt, &sel("", &[("app", "web")], 1), &Protected::default()).unwrap();
    let Place::Containers { containers, .. } = p else {
        panic!()
    };
    assert_eq!(containers.len(), 1);
    let err = resolve(&rt, &sel("nope", &[], 0), &Protected::default()).unwrap_err();
    assert!(matches!(err, Error::NoMatch(_)), "{err}");
}

#[test]
fn the_agents_own_container_is_protected() {
    let rt = FakeRuntime::default();
    *rt.containers.lock().unwrap() = vec![container("abc123", "agent", &[])];
    let me = Protected {
        own_pid_ns: None,
        own_cgroup: "12:pids:/docker/abc123\n".into(),
    };
    let err = resolve(&rt, &sel("", &[], 0), &me).unwrap_err();
    assert!(err.to_string().contains("agent's own"), "{err}");
}

fn k8s(uid: &str, pod: &str, kind: &str, extra: &[(&str, &str)]) -> Container {
    let mut labels = vec![
        (pods::POD_UID, uid),
        (pods::POD_NAMESPACE, "shop"),
        (pods::POD_NAME, pod),
        (pods::CRI_CONTAINERD_KIND, kind),
    ];
    labels.extend_from_slice(extra);
    let name = match extra.iter().find(|(k, _)| *k == pods::CONTAINER_NAME) {
        Some((_, c)) => format!("shop/{pod}/{c}"),
        None => format!("shop/{pod}"),
    };
    container(&format!("{uid}-{name}"), &name, &labels)
}

fn pod_sel(labels: &[(&str, &str)], container: &str, count: u32, percent: f64) -> ContainerSelector {
    ContainerSelector::try_from(v1::ContainerSelector {
        pod: Some(v1::PodSelector {
            namespace: "shop".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            name: String::new(),
        }),
        container_name: container.into(),
        count,
        percent,
        ..Default::default()
    })
    .unwrap()
}

fn ids(p: Place) -> Vec<String> {
    let Place::Containers { containers, .. } = p else {
        panic!()
    };
    containers.into_iter().map(|c| c.name).collect()
}

/// Three web pods of two containers each and one db pod, as the CRI
/// labels them (the pod labels on the sandboxes only).
fn shop() -> FakeRuntime {
    let rt = FakeRuntime::default();
    let mut all = Vec::new();
    for (uid, pod, app) in [
        ("u1", "web-1", "web"),
        ("u2", "web-2", "web"),
        ("u3", "web-3", "web"),
        ("u4", "db-0", "db"),
    ] {
        all.push(k8s(uid, pod, "sandbox", &[("app", app)]));
        all.push(k8s(uid, pod, "container", &[(pods::CONTAINER_NAME, "main")]));
        all.push(k8s(uid, pod, "container", &[(pods::CONTAINER_NAME, "sidecar")]));
    }
    *rt.containers.lock().unwrap() = all;
    rt
}

#[test]
fn a_pod_selector_matches_pod_labels_on_the_sandbox_and_never_targets_a_sandbox() {
    let rt = shop();
    let got = ids(resolve(&rt, &pod_sel(&[("app", "web")], "", 0, 0.0), &Protected::default()).unwrap());
    assert_eq!(
        got,
        [
            "shop/web-1/main",
            "shop/web-1/sidecar",
            "shop/web-2/main",
            "shop/web-2/sidecar",
            "shop/web-3/main",
            "shop/web-3/sidecar"
        ]
    );
    let got = ids(resolve(
        &rt,
        &pod_sel(&[("app", "db")], "sidecar", 0, 0.0),
        &Protected::default(),
    )
    .unwrap());
    assert_eq!(got, ["shop/db-0/sidecar"]);
    // Even an any-container selector leaves the sandboxes out.
    let got = ids(resolve(&rt, &sel("", &[], 0), &Protected::default()).unwrap());
    assert_eq!(got.len(), 8);
}

#[test]
fn count_and_percent_count_pods_with_a_pod_selector_and_containers_without() {
    let rt = shop();
    // 2 of 3 web pods (66.7 % rounds down), both containers of each.
    let got = ids(resolve(&rt, &pod_sel(&[("app", "web")], "", 0, 70.0), &Protected::default()).unwrap());
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got
        .iter()
        .all(|n| n.starts_with("shop/web-1/") || n.starts_with("shop/web-2/")));
    let got = ids(resolve(&rt, &pod_sel(&[("app", "web")], "", 1, 0.0), &Protected::default()).unwrap());
    assert_eq!(got, ["shop/web-1/main", "shop/web-1/sidecar"]);
    // Without a pod selector percent counts containers: 50 % of 8.
    let mut s = sel("", &[], 0);
    s.percent = Some(50.0);
    assert_eq!(ids(resolve(&rt, &s, &Protected::default()).unwrap()).len(), 4);
    let err = resolve(&rt, &pod_sel(&[("app", "db")], "", 0, 50.0), &Protected::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ZeroPercent {
                matching: 1,
                unit: "pods",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_refusal());
}

#[test]
fn kube_system_pods_are_refused_naming_the_override() {
    let rt = FakeRuntime::default();
    let mut c = k8s("u9", "coredns", "container", &[(pods::CONTAINER_NAME, "coredns")]);
    c.labels.insert(pods::POD_NAMESPACE.into(), pods::KUBE_SYSTEM.into());
    *rt.containers.lock().unwrap() = vec![c];
    let err = resolve(&rt, &sel("coredns", &[], 0), &Protected::default()).unwrap_err();
    assert!(err.to_string().contains("allow_kube_system: true"), "{err}");
    let mut s = sel("coredns", &[], 0);
    s.allow_kube_system = true;
    assert_eq!(ids(resolve(&rt, &s, &Protected::default()).unwrap()).len(), 1);
}

#[test]
fn bad_percent_and_an_empty_pod_namespace_are_refused() {
    for p in [-1.0, 100.5, f64::NAN] {
        let err = ContainerSelector::try_from(v1::ContainerSelector {
            percent: p,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::Percent(_)), "{err}");
    }
    let err = ContainerSelector::try_from(v1::ContainerSelector {
        pod: Some(v1::PodSelector::default()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("pod.namespace"), "{err}");
}

#[test]
fn a_bad_name_regex_is_named() {
    let err = ContainerSelector::try_from(v1::ContainerSelector {
        name_regex: "(".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("name_regex"), "{err}");
}

#[test]
fn detection_skips_a_containerd_without_kubernetes_containers_for_docker() {
    let empty: Arc<dyn ContainerRuntime> = Arc::new(FakeRuntime::default());
    let docker = FakeRuntime::default();
    *docker.containers.lock().unwrap() = vec![container("d1", "web", &[])];
    let docker: Arc<dyn ContainerRuntime> = Arc::new(docker);
    // An empty k8s.io namespace (Docker's packaged containerd) is passed over.
    let got = first_answering(vec![(empty.clone(), true), (docker.clone(), false)]).unwrap();
    assert!(Arc::ptr_eq(&got, &docker));
    // Explicitly chosen, or last in line, an empty runtime is still used.
    let got = first_answering(vec![(empty.clone(), false), (docker, false)]).unwrap();
    assert!(Arc::ptr_eq(&got, &empty));
}
