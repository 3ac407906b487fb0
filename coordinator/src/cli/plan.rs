//! `faultline plan FILE`: which agents each fault would hit, and every
//! blast-radius limit with its headroom. Injects nothing.

use faultline_proto::v1;

use super::common::{self, eprint_err, CoordinatorAddr, ExperimentArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

pub async fn main(a: Args) -> i32 {
    let (source, labels) = match a.experiment.load() {
        Ok(x) => x,
        Err(code) => return code,
    };
    let policy = match a.experiment.policy() {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Planning records nothing: no store.
    let coordinator = match CoordinatorAddr::open(
        a.experiment.coordinator.clone(),
        labels,
        policy,
        super::common::StoreChoice::Memory,
        true,
    )
    .await
    {
        Ok(t) => t,
        Err(code) => return code,
    };
    let code = plan(&coordinator.url, &source).await;
    coordinator.stop().await;
    code
}

async fn plan(url: &str, source: &common::Source) -> i32 {
    let mut c = match common::control_or_exit(url).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let p = match c
        .plan(v1::PlanRequest {
            source: Some(source.to_wire()),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(s.message());
            return common::status_exit(&s);
        }
    };
    println!("plan for {:?} (nothing is injected by plan)", p.experiment);
    for f in &p.faults {
        println!(
            "  fault {} ({}: {}): {} of {} matching agent(s): {}",
            f.fault_id,
            f.kind,
            f.summary,
            f.agent_ids.len(),
            f.matching_agents,
            f.agent_ids.join(", ")
        );
        for line in &f.previews {
            println!("    {line}");
        }
    }
    println!("limits:");
    for l in &p.limits {
        println!("  {l}");
    }
    // The groups as the coordinator resolved them (a group that selects
    // agents, with its agents and addresses), then the judge, read from the
    // same file the coordinator planned (it accepted it, so it parses).
    if !p.groups.is_empty() {
        println!("groups:");
        for g in &p.groups {
            println!("  group {} ({})", g.name, g.definition);
            for a in &g.agents {
                if a.pod.is_empty() {
                    println!("    agent {} at {}", a.agent_id, a.address);
                } else {
                    println!("    pod {} at {} on agent {}", a.pod, a.address, a.agent_id);
                }
            }
            for probe in &g.probes {
                println!("    probe {probe}");
            }
        }
    }
    if let Ok(e) = source.parse() {
        print!("{}", super::validate::judge_lines(&e));
    }
    0
}
