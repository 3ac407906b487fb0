use std::collections::HashMap;

use crate::experiment::parse;

/// A release gate over groups that select agents; `groups` and `targets`
/// replace the groups' and the fault's lines.
fn file(groups: &str, targets: &str) -> String {
    format!(
        "name: sel
hypothesis:
  groups:
{groups}
  probes:
    - name: api
      per_group: true
      interval: 1s
      tcp: {{ address: \"${{group.address}}:${{group.port:-80}}\" }}
duration: 2s
faults:
  - name: slow
    targets: {targets}
    latency: {{ delay: 10ms }}
"
    )
}

const GROUPS: &str =
    "    control: { agents: { track: stable } }\n    canary: { agents: { track: canary }, port: \"8080\" }";

fn err(text: &str) -> String {
    parse("sel.yaml", text, &HashMap::new()).unwrap_err().to_string()
}

#[test]
fn groups_selecting_agents_validate_with_a_stand_in_agent_and_keep_the_text() {
    let e = parse(
        "sel.yaml",
        &file(GROUPS, "{ groups: [control, canary] }"),
        &HashMap::new(),
    )
    .unwrap();
    let sel: Vec<Option<String>> = e
        .groups
        .iter()
        .map(|g| g.agents.as_ref().map(crate::group_agents::fmt_selector))
        .collect();
    assert_eq!(sel, [Some("{track=stable}".to_string()), Some("{track=canary}".into())]);
    assert_eq!(e.faults[0].targets.groups, ["control", "canary"]);
    let targets: Vec<String> = e.hypothesis.probes.iter().map(|p| p.kind.target()).collect();
    assert_eq!(targets, ["192.0.2.1:80", "192.0.2.1:8080"]);
    assert!(e
        .unresolved
        .as_ref()
        .is_some_and(|s| s.text.contains("${group.address}")));
    // Value-only groups stay parse-time: nothing to resolve.
    let e = parse(
        "v.yaml",
        &file(
            "    control: { port: \"1\" }\n    canary: { port: \"2\" }",
            "{ labels: { zone: a } }",
        )
        .replace("${group.address}", "127.0.0.1"),
        &HashMap::new(),
    )
    .unwrap();
    assert!(e.unresolved.is_none());
    assert_eq!(e.hypothesis.probes[1].name, "api [canary]");
}

#[test]
fn a_bad_selector_is_refused_at_its_line() {
    let e = err(&file(
        "    control: { agents: {} }\n    canary: { agents: { track: canary } }",
        "{}",
    ));
    assert!(e.starts_with("sel.yaml:4:"), "{e}");
    assert!(
        e.contains("hypothesis.groups.control.agents: name at least one label"),
        "{e}"
    );
    let e = err(&file(
        "    control: { agents: stable }\n    canary: { agents: { track: canary } }",
        "{}",
    ));
    assert!(
        e.contains("hypothesis.groups.control.agents: expected a mapping of agent labels"),
        "{e}"
    );
    let e = err(&file(
        "    control: { port: { a: b } }\n    canary: { port: \"1\" }",
        "{}",
    ));
    assert!(e.contains("only `agents` and `pods` take a mapping"), "{e}");
    let e = err(&file(
        "    control: { agents: { track: stable }, address: \"10.0.0.1\" }\n    canary: { agents: { track: canary } }",
        "{}",
    ));
    assert!(
        e.contains("hypothesis.groups.control.address: this group selects agents"),
        "{e}"
    );
}

#[test]
fn a_fault_naming_an_unknown_or_value_only_group_is_refused_at_its_line() {
    let e = err(&file(GROUPS, "{ groups: [control, canery] }"));
    assert_eq!(
        e,
        "sel.yaml:14:34: fault \"slow\": targets.groups names group \"canery\", which is not defined (groups: control, canary)"
    );
    let e = err(&file(
        "    control: { agents: { track: stable } }\n    canary: { port: \"8080\", address: \"10.0.0.1\" }",
        "{ groups: [canary] }",
    ));
    assert!(e.starts_with("sel.yaml:14:"), "{e}");
    assert!(e.contains("group \"canary\", which selects no agents"), "{e}");
    let text = "name: x
hypothesis:
  probes:
    - { name: api, interval: 1s, tcp: { address: \"127.0.0.1:1\" } }
duration: 2s
faults:
  - name: slow
    targets:
      groups:
        - canary
    latency: { delay: 10ms }
";
    let e = err(text);
    assert!(e.starts_with("sel.yaml:10:11: "), "{e}");
    assert!(e.contains("but no groups are defined"), "{e}");
}

#[test]
fn address_and_agent_outside_a_selecting_group_say_where_they_come_from() {
    let e = err(&file("    control: { port: \"1\" }\n    canary: { port: \"2\" }", "{}"));
    assert!(e.contains("group \"control\" has no value \"address\""), "{e}");
    assert!(e.contains("address and agent come from a group's agents"), "{e}");
}

const POD_GROUPS: &str = "    control: { pods: { namespace: shop, labels: { track: stable } } }\n    canary: { pods: { namespace: shop, labels: { track: canary } }, port: \"8080\" }";

#[test]
fn groups_of_pods_validate_with_a_stand_in_pod_and_refuse_what_cannot_be_meant() {
    let e = parse(
        "pods.yaml",
        &file(POD_GROUPS, "{ groups: [control, canary] }"),
        &HashMap::new(),
    )
    .unwrap();
    let sel: Vec<Option<String>> = e.groups.iter().map(|g| g.pods.as_ref().map(|p| p.describe())).collect();
    assert_eq!(
        sel,
        [
            Some("{namespace=shop, track=stable}".to_string()),
            Some("{namespace=shop, track=canary}".into())
        ]
    );
    assert!(e.unresolved.is_some(), "pods are resolved when the run is planned");
    let targets: Vec<String> = e.hypothesis.probes.iter().map(|p| p.kind.target()).collect();
    assert_eq!(targets, ["192.0.2.1:80", "192.0.2.1:8080"]);
    // ${group.pod} exists for groups of pods only.
    let with_pod = file(POD_GROUPS, "{ groups: [control, canary] }").replace("${group.port:-80}", "80/${group.pod}");
    assert!(parse("pods.yaml", &with_pod, &HashMap::new()).is_ok());
    let agents_pod = file(GROUPS, "{ groups: [control, canary] }").replace("${group.port:-80}", "80/${group.pod}");
    assert!(
        err(&agents_pod).contains("has no value \"pod\""),
        "{}",
        err(&agents_pod)
    );
    // kube-system needs the opt-in, like a fault's targets.
    let sys = POD_GROUPS.replacen("namespace: shop", "namespace: kube-system", 1);
    let e = err(&file(&sys, "{ groups: [control, canary] }"));
    assert!(
        e.contains("kube-system pods are protected; set allow_kube_system: true"),
        "{e}"
    );
    let allowed = POD_GROUPS.replacen(
        "namespace: shop,",
        "namespace: kube-system, allow_kube_system: true,",
        1,
    );
    assert!(parse(
        "pods.yaml",
        &file(&allowed, "{ groups: [control, canary] }"),
        &HashMap::new()
    )
    .is_ok());
    let e = err(&file(
        "    control: { pods: { labels: { a: b } } }\n    canary: { pods: { namespace: shop, labels: { a: c } } }",
        "{ labels: { zone: a } }",
    ));
    assert!(
        e.contains("hypothesis.groups.control.pods.namespace: name the pods' namespace"),
        "{e}"
    );
    let e = err(&file(
        "    control: { pods: { namespace: shop, lables: { a: b } } }\n    canary: { pods: { namespace: shop, labels: { a: c } } }",
        "{ labels: { zone: a } }",
    ));
    assert!(e.contains("unknown field \"lables\""), "{e}");
    // The fault goes to the groups' pods: no containers of its own, no mix with groups of agents.
    let e = err(&file(
        POD_GROUPS,
        "{ groups: [control, canary], containers: { name: web } }",
    ));
    assert!(
        e.contains("a group of pods, so the fault goes to the group's pods; remove targets.containers"),
        "{e}"
    );
    let mixed = "    control: { agents: { track: stable } }\n    canary: { pods: { namespace: shop, labels: { track: canary } } }";
    let e = err(&file(mixed, "{ groups: [control, canary] }"));
    assert!(e.contains("mixes groups of pods"), "{e}");
}
