//! `faultline plan FILE`: which agents each fault would hit, and every
//! blast-radius limit with its headroom. Injects nothing.

use faultline_proto::v1;

use super::common::{self, eprint_err, key_values, Source};
use crate::outcome::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment file (YAML).
    pub file: String,
    /// Coordinator URL; without it, plan against the local agent (local mode).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Value for a ${var} placeholder, as KEY=VALUE; repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Local mode only: label of the in-process agent, as KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

pub async fn main(a: Args) -> i32 {
    let (source, labels) = match Source::read(&a.file, &a.vars).and_then(|s| Ok((s, key_values("--label", &a.labels)?)))
    {
        Ok(x) => x,
        Err(e) => {
            eprint_err(e);
            return Outcome::Invalid.exit_code();
        }
    };
    if let Err(e) = source.parse() {
        eprint_err(e);
        return Outcome::Invalid.exit_code();
    }
    #[cfg(feature = "local")]
    let mut local = None;
    let url = match a.coordinator {
        Some(u) => u,
        None => {
            #[cfg(feature = "local")]
            match crate::local::Local::start(labels).await {
                Ok(l) => {
                    let u = l.url.clone();
                    local = Some(l);
                    u
                }
                Err(e) => {
                    eprint_err(e);
                    return Outcome::Error.exit_code();
                }
            }
            #[cfg(not(feature = "local"))]
            {
                let _ = labels;
                eprint_err("this build has no local mode: pass --coordinator URL");
                return Outcome::Error.exit_code();
            }
        }
    };
    let code = match common::control(&url).await {
        Err(e) => {
            eprint_err(e);
            Outcome::Error.exit_code()
        }
        Ok(mut c) => match c
            .plan(v1::PlanRequest {
                source: Some(source.to_wire()),
            })
            .await
        {
            Err(s) => {
                eprint_err(s.message());
                common::status_exit(&s)
            }
            Ok(r) => {
                let p = r.into_inner();
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
                }
                println!("limits:");
                for l in &p.limits {
                    println!("  {l}");
                }
                0
            }
        },
    };
    #[cfg(feature = "local")]
    if let Some(l) = local {
        l.stop().await;
    }
    code
}
