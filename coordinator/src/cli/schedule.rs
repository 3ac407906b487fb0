//! `faultline schedule add|list|rm`: run an experiment or a game day on a
//! cron schedule on a coordinator (`faultline serve`), which keeps schedules
//! in its store. The file's kind is detected: a game day lists
//! `experiments:`, and its experiment files are read now and sent with it.

use faultline_proto::v1;

use super::common::{self, eprint_err, Source, DEFAULT_COORDINATOR};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// Coordinator URL.
    #[arg(long, global = true, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Schedule FILE (an experiment or a game day). A tick while the
    /// previous run (or game day) still goes is skipped;
    /// ticks missed while the coordinator was down are recorded, not replayed.
    Add {
        file: String,
        /// Cron expression: minute hour day month weekday (or seconds first), e.g. "0 10 * * MON-FRI".
        #[arg(long)]
        cron: String,
        /// Time zone of the expression and the window, e.g. Europe/Paris. Default: UTC.
        #[arg(long, default_value = "")]
        tz: String,
        /// Only start runs inside this window, e.g. "Mon-Fri 09:00-16:00".
        #[arg(long)]
        window: Option<String>,
        /// Value for a ${var} placeholder, as KEY=VALUE; repeatable.
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// List schedules with their next tick and recent ticks.
    List,
    /// Remove a schedule.
    Rm { id: String },
}

pub async fn main(a: Args) -> i32 {
    // Check the timing here first: a typo costs no connection, and the
    // message can name the flags.
    if let Command::Add { cron, tz, window, .. } = &a.command {
        if let Err(e) = crate::schedule::Timing::new(cron, tz, window.as_deref()) {
            let flag = match e {
                crate::schedule::Error::TimeZone(_) => "--tz",
                crate::schedule::Error::Window(_) => "--window",
                _ => "--cron",
            };
            eprint_err(format!("{flag}: {e}"));
            return 2;
        }
    }
    let mut c = match common::control_or_exit(&a.coordinator).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let fail = |s: tonic::Status| {
        eprint_err(s.message());
        common::status_exit(&s)
    };
    match a.command {
        Command::Add {
            file,
            cron,
            tz,
            window,
            vars,
        } => {
            let source = match Source::read(&file, &vars) {
                Ok(s) => s,
                Err(e) => {
                    eprint_err(e);
                    return 2;
                }
            };
            // A game day lists experiments; it is sent with their files.
            let (source, gameday, what) = if super::gameday::is_game_day(&source.yaml) {
                if !vars.is_empty() {
                    eprint_err(format!(
                        "{file} is a game day: --var does not apply; set variables in the vars of each of its experiments"
                    ));
                    return 2;
                }
                match super::gameday::load(&file) {
                    Ok(suite) => (None, Some(suite.to_wire()), "game day"),
                    Err(e) => {
                        eprint_err(e);
                        return 2;
                    }
                }
            } else {
                (Some(source.to_wire()), None, "experiment")
            };
            match c
                .add_schedule(v1::AddScheduleRequest {
                    source,
                    gameday,
                    cron,
                    tz,
                    window: window.unwrap_or_default(),
                })
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    println!(
                        "schedule {} added ({what}); first tick at {}",
                        r.schedule_id,
                        common::rfc3339_ms(r.next_unix_ms)
                    );
                    0
                }
                Err(s) => fail(s),
            }
        }
        Command::List => match c.list_schedules(v1::ListSchedulesRequest {}).await {
            Ok(r) => {
                let list = r.into_inner().schedules;
                if list.is_empty() {
                    println!("no schedules");
                }
                for s in list {
                    println!(
                        "{}  {}{}  cron {:?}{}{}  next {}",
                        s.schedule_id,
                        if s.kind == "gameday" { "game day " } else { "" },
                        s.experiment,
                        s.cron,
                        if s.tz.is_empty() {
                            String::new()
                        } else {
                            format!(" tz {}", s.tz)
                        },
                        if s.window.is_empty() {
                            String::new()
                        } else {
                            format!(" window {:?}", s.window)
                        },
                        common::rfc3339_ms(s.next_unix_ms)
                    );
                    for t in s.recent_ticks {
                        let (ms, rest) = t.split_once(' ').unwrap_or((&t, ""));
                        println!("    {} {rest}", common::rfc3339_ms(ms.parse().unwrap_or(0)));
                    }
                }
                0
            }
            Err(s) => fail(s),
        },
        Command::Rm { id } => match c
            .remove_schedule(v1::RemoveScheduleRequest {
                schedule_id: id.clone(),
            })
            .await
        {
            Ok(r) if r.get_ref().found => {
                println!("schedule {id} removed");
                0
            }
            Ok(_) => {
                eprint_err(format!("no schedule {id}"));
                5
            }
            Err(s) => fail(s),
        },
    }
}
