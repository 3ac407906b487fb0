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
