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

/// The YAML documents of a file under `deploy/`.
fn documents(rel: &str) -> Vec<serde_norway::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .collect()
}

/// The Argo Rollouts AnalysisTemplate: kubernetes-validate has no schema
/// for the CRD (CI validates its Job as a batch/v1 Job, see `.ci/run`), so
/// this checks its shape and runs the Job's arguments, with Argo's
/// `{{args.*}}` filled in, through the real `faultline` flag parser; the
/// experiment it names is the shipped one.
#[test]
fn the_argo_analysis_template_runs_faultline_gate_with_valid_flags() {
    use clap::Parser;
    let docs = documents("release-gates/argo-analysis-template.yaml");
    assert_eq!(docs.len(), 1);
    let t = &docs[0];
    assert_eq!(t["apiVersion"].as_str(), Some("argoproj.io/v1alpha1"));
    assert_eq!(t["kind"].as_str(), Some("AnalysisTemplate"));
    let declared: Vec<&str> = t["spec"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    let job = &t["spec"]["metrics"][0]["provider"]["job"]["spec"];
    assert_eq!(job["backoffLimit"].as_u64(), Some(0), "a failed gate is not retried");
    let c = &job["template"]["spec"]["containers"][0];
    let mut argv = vec!["faultline".to_string()];
    for a in c["args"].as_sequence().unwrap() {
        let mut a = a.as_str().unwrap().to_string();
        while let Some(i) = a.find("{{args.") {
            let end = a[i..].find("}}").unwrap() + i;
            let name = &a[i + 7..end];
            assert!(
                declared.contains(&name),
                "{{{{args.{name}}}}} is not declared in spec.args"
            );
            a.replace_range(i..end + 2, "x");
        }
        argv.push(a);
    }
    let cli = faultline_coordinator::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let faultline_coordinator::cli::app::Command::Gate(g) = cli.command else {
        panic!("{argv:?} is not `faultline gate`")
    };
    assert!(
        g.experiment.file.ends_with("/canary-gate.yaml"),
        "{}",
        g.experiment.file
    );
    assert!(
        g.experiment.coordinator.is_some(),
        "the Job runs against the cluster's coordinator"
    );
}

/// The Flagger Canary's webhook points at the gate endpoint, with the
/// experiment's variables and a token in its metadata (Flagger's webhooks
/// carry strings only).
#[test]
fn the_flagger_canary_calls_the_gate_endpoint_with_the_experiments_vars() {
    let docs = documents("release-gates/flagger-canary.yaml");
    let hook = &docs[0]["spec"]["analysis"]["webhooks"][0];
    assert!(hook["url"].as_str().unwrap().contains("/gate/canary-gate"), "{hook:?}");
    let meta = hook["metadata"].as_mapping().unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/canary-gate.yaml")).unwrap();
    for (k, v) in meta {
        let k = k.as_str().unwrap();
        assert!(v.as_str().is_some(), "metadata.{k} must be a string for Flagger");
        if k != "token" {
            assert!(
                example.contains(&format!("${{{k}")),
                "metadata.{k} is no variable of canary-gate.yaml"
            );
        }
    }
}
