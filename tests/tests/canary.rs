//! The release gate on real kernels (the namespace lab): a control and a
//! canary service call one dependency on host c; the canary has a real
//! regression that only shows under a fault (it calls the dependency with
//! no timeout, while the control gives it 50 ms and falls back). With
//! latency injected on the dependency, the canary judge must classify the
//! canary's latency `high`, score it below the pass threshold and fail the
//! run (exit 1); with two identical versions (A/A) the gate passes. Both
//! runs use the shipped `experiments/canary-gate.yaml`. Needs root; skips
//! with a reason without it and fails under `CI=true`.

use faultline_coordinator::canary::Classification;
use faultline_tests::lab::{lab_or_skip, Lab, HTTP_PORT};

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/canary-gate.yaml"))
        .expect("experiments/canary-gate.yaml")
}

#[test]
fn a_canary_without_a_timeout_fails_the_gate_under_a_slow_dependency_and_an_a_a_pair_passes() {
    if !lab_or_skip("a_canary_without_a_timeout_fails_the_gate_under_a_slow_dependency_and_an_a_a_pair_passes") {
        return;
    }
    let mut lab = Lab::new(&[("a", "a"), ("b", "b"), ("c", "c")]);
    // The dependency is host c's own HTTP service.
    let dependency = format!("{}:{HTTP_PORT}", lab.host("c").ip);
    let control = lab.start_demo_service("a", 9090, &["--upstream", &dependency, "--upstream-timeout", "50ms"]);
    let canary = lab.start_demo_service("b", 9090, &["--upstream", &dependency]);
    let same_as_control = lab.start_demo_service("b", 9091, &["--upstream", &dependency, "--upstream-timeout", "50ms"]);
    let control_url = format!("http://{control}/work");
    let vars = |canary_url: &str| {
        vec![
            ("control_url".to_string(), control_url.clone()),
            ("canary_url".to_string(), canary_url.to_string()),
            ("dependency_zone".to_string(), "c".to_string()),
            ("caller_zones".to_string(), "a,b".to_string()),
            ("delay".to_string(), "300ms".to_string()),
        ]
    };
    let run = |vars: Vec<(String, String)>| {
        let v: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        lab.submit_with(&example(), &v).finish()
    };

    let during = |r: &faultline_tests::RunResult| {
        r.report
            .probes
            .iter()
            .map(|p| {
                format!(
                    "{} during p50 {:?} ms ({} samples)",
                    p.name, p.during.p50_ms, p.during.samples
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };

    // The regressed canary.
    let result = run(vars(&format!("http://{canary}/work")));
    eprintln!("regressed canary: {}", during(&result));
    let j = result
        .report
        .judge
        .as_ref()
        .unwrap_or_else(|| panic!("no judgement: {}", result.report.reason));
    let latency = j
        .judgement
        .metrics
        .iter()
        .find(|m| m.name == "work latency")
        .expect("latency judged");
    eprintln!(
        "regressed canary: score {:.1} ({:?}); latency {:?}, effect {:?}, shift {:?}, interval {:?}, p {:?}, canary median {:?} ms vs control {:?} ms, n {}/{}; reason: {}",
        j.judgement.score,
        j.judgement.verdict,
        latency.classification,
        latency.effect_size,
        latency.shift,
        latency.interval,
        latency.p_value,
        latency.canary_center,
        latency.control_center,
        latency.canary_count,
        latency.control_count,
        result.report.reason
    );
    assert_eq!(latency.classification, Classification::High, "{}", result.report.reason);
    assert!(
        latency.effect_size.is_some_and(|e| e > 1.25),
        "effect {:?}",
        latency.effect_size
    );
    assert!(
        j.judgement.score < j.judgement.config.pass,
        "score {} vs pass {}",
        j.judgement.score,
        j.judgement.config.pass
    );
    assert!(!j.passed);
    assert_eq!(result.exit_code, 1, "{}", result.report.reason);
    let junit = faultline_coordinator::report::junit::render(&result.report);
    assert!(
        junit.contains(r#"<testcase classname="faultline.canary-gate.judge" name="work latency""#)
            && junit.contains(r#"type="canary">high: effect x"#),
        "{junit}"
    );

    // A/A: the canary is the same version as the control.
    let result = run(vars(&format!("http://{same_as_control}/work")));
    eprintln!("A/A: {}", during(&result));
    let j = result
        .report
        .judge
        .as_ref()
        .unwrap_or_else(|| panic!("no judgement: {}", result.report.reason));
    for m in &j.judgement.metrics {
        eprintln!(
            "A/A: {} {:?}, effect {:?}, interval {:?}, p {:?}",
            m.name, m.classification, m.effect_size, m.interval, m.p_value
        );
    }
    eprintln!("A/A: score {:.1}: {}", j.judgement.score, result.report.reason);
    assert!(j.passed, "{}", result.report.reason);
    assert_eq!(result.exit_code, 0, "{}", result.report.reason);
    lab.assert_clean();
}

fn agents_example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../experiments/canary-gate-agents.yaml"
    ))
    .expect("experiments/canary-gate-agents.yaml")
}

/// The same gate with groups that select agents by label: the control is
/// host a (zone a), the canary hosts b and d (zone b), each running the
/// regressed canary on its own address. The probe must run once per agent
/// at that agent's address, the judge must pool both canary agents'
/// samples, `plan` must show each group's agents and addresses, the fault
/// must go to the groups' agents, and a group matching no agent must
/// refuse the run (exit 5) naming the group and its selector.
#[test]
fn a_gate_over_groups_of_agents_probes_each_agent_pools_the_canary_and_refuses_an_empty_group() {
    if !lab_or_skip("a_gate_over_groups_of_agents_probes_each_agent_pools_the_canary_and_refuses_an_empty_group") {
        return;
    }
    let mut lab = Lab::new(&[("a", "a"), ("b", "b"), ("d", "b"), ("c", "c")]);
    let dependency = format!("{}:{HTTP_PORT}", lab.host("c").ip);
    lab.start_demo_service("a", 9090, &["--upstream", &dependency, "--upstream-timeout", "50ms"]);
    lab.start_demo_service("b", 9090, &["--upstream", &dependency]);
    lab.start_demo_service("d", 9090, &["--upstream", &dependency]);
    let vars = [("control_zone", "a"), ("canary_zone", "b"), ("dependency_zone", "c")];

    // plan: each group with its agents and their addresses.
    let h = lab.harness().clone();
    let source = faultline_tests::source(&agents_example(), &vars);
    let plan = lab
        .block_on(async move {
            h.control()
                .await
                .plan(faultline_proto::v1::PlanRequest { source: Some(source) })
                .await
        })
        .expect("plan")
        .into_inner();
    // Each group: its name, its (agent, address) pairs and its probe instances.
    type Planned = (String, Vec<(String, String)>, Vec<String>);
    let groups: Vec<Planned> = plan
        .groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.agents
                    .iter()
                    .map(|a| (a.agent_id.clone(), a.address.clone()))
                    .collect(),
                g.probes.clone(),
            )
        })
        .collect();
    eprintln!("plan groups: {groups:?}");
    let ip = |h: &str| lab.host(h).ip.to_string();
    assert_eq!(
        groups,
        [
            (
                "control".to_string(),
                vec![("a".to_string(), ip("a"))],
                vec![format!("work [control/a]: http GET http://{}:9090/work", ip("a"))]
            ),
            (
                "canary".to_string(),
                vec![("b".to_string(), ip("b")), ("d".to_string(), ip("d"))],
                vec![
                    format!("work [canary/b]: http GET http://{}:9090/work", ip("b")),
                    format!("work [canary/d]: http GET http://{}:9090/work", ip("d")),
                ]
            ),
        ]
    );
    let mut targets = plan.faults[0].agent_ids.clone();
    targets.sort();
    assert_eq!(targets, ["a", "b", "d"], "the fault goes to both groups' agents");

    // The run: instances per agent, the canary pooled and judged high.
    let result = lab.submit_with(&agents_example(), &vars).finish();
    let names: Vec<&str> = result.report.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["work [control/a]", "work [canary/b]", "work [canary/d]"]);
    for p in &result.report.probes {
        eprintln!(
            "{} at {}: during p50 {:?} ms, {} samples",
            p.name, p.target, p.during.p50_ms, p.during.samples
        );
    }
    let j = result
        .report
        .judge
        .as_ref()
        .unwrap_or_else(|| panic!("no judgement: {}", result.report.reason));
    let metric = |name: &str| {
        j.judgement
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} judged"))
    };
    let latency = metric("work latency");
    let rate = metric("work success_rate");
    eprintln!(
        "groups of agents: score {:.1} ({:?}); latency {:?}, effect {:?}, interval {:?}, p {:?}, n {}/{}; success rate n {}/{}; reason: {}",
        j.judgement.score,
        j.judgement.verdict,
        latency.classification,
        latency.effect_size,
        latency.interval,
        latency.p_value,
        latency.canary_count,
        latency.control_count,
        rate.canary_count,
        rate.control_count,
        result.report.reason
    );
    // Pooled: the canary's samples are both canary agents' inject samples.
    // The report's `during` is taken when observe ends; a probe still in
    // flight then (one per instance at most) is judged, taken under the
    // fault, but not in `during`: hence up to one more per instance.
    let during = |name: &str| {
        result
            .report
            .probes
            .iter()
            .find(|p| p.name == name)
            .map(|p| u64::from(p.during.samples))
            .expect("probe")
    };
    let (b, d, a) = (
        during("work [canary/b]"),
        during("work [canary/d]"),
        during("work [control/a]"),
    );
    assert!(
        (b + d..=b + d + 2).contains(&rate.canary_count) && b > 0 && d > 0,
        "canary judged on {} samples; agents b and d took {b} and {d}",
        rate.canary_count
    );
    assert!(
        (a..=a + 1).contains(&rate.control_count),
        "control {} vs {a}",
        rate.control_count
    );
    assert_eq!(latency.classification, Classification::High, "{}", result.report.reason);
    assert!(!j.passed);
    assert_eq!(result.exit_code, 1, "{}", result.report.reason);

    // A group whose labels match no agent refuses the run: exit 5.
    let none = [("control_zone", "a"), ("canary_zone", "z"), ("dependency_zone", "c")];
    let refused = lab.submit_with(&agents_example(), &none).finish();
    assert_eq!(refused.exit_code, 5, "{}", refused.report.reason);
    assert!(
        refused
            .report
            .reason
            .contains("group \"canary\": no connected agent matches agents {zone=z}"),
        "{}",
        refused.report.reason
    );
    lab.assert_clean();
}
