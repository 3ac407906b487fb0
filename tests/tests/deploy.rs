//! The deployment files: the policies shipped in the Kubernetes ConfigMaps
//! parse with the real parsers, and the kustomize base renders (where
//! `kubectl` is installed; CI also validates the rendered manifests against
//! the Kubernetes API schemas with `kubernetes-validate`, see `.ci/run`).

use std::path::Path;

use serde::Deserialize;

/// The `data` entry `key` of the ConfigMap `name` in `deploy/kubernetes/config.yaml`.
fn configmap_entry(name: &str, key: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/config.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = serde_norway::Value::deserialize(doc).unwrap();
        if v["metadata"]["name"].as_str() == Some(name) {
            return v["data"][key].as_str().unwrap().to_string();
        }
    }
    panic!("no ConfigMap {name}");
}

#[test]
fn the_shipped_policies_parse() {
    let agent = configmap_entry("faultline-agent-policy", "agent-policy.yaml");
    faultline_agent::policy::AgentPolicy::parse("agent-policy.yaml", &agent).unwrap();
    let coord = configmap_entry("faultline-coordinator-policy", "policy.yaml");
    faultline_coordinator::policy::Policy::parse("policy.yaml", &coord).unwrap();
}
