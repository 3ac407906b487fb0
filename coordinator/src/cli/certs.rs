//! `faultline certs init DIR`: a CA, a coordinator certificate, one client
//! certificate per agent (common name = agent id) and one for the CLI.

use super::common::eprint_err;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Make a CA and certificates in DIR (keys are written mode 0600).
    Init {
        /// Directory to write ca.pem, coordinator.{pem,key}, agent-<id>.{pem,key}, cli.{pem,key}.
        dir: std::path::PathBuf,
        /// A name or IP agents and clients use to reach the coordinator
        /// (localhost and 127.0.0.1 are always included); repeatable.
        #[arg(long = "host", value_name = "NAME_OR_IP")]
        hosts: Vec<String>,
        /// An agent id to make a certificate for; repeatable.
        #[arg(long = "agent", value_name = "ID")]
        agents: Vec<String>,
    },
}

pub fn main(a: Args) -> i32 {
    match a.command {
        Command::Init { dir, hosts, agents } => match crate::security::certs_init(&dir, &hosts, &agents) {
            Ok(made) => {
                for f in made.files {
                    println!("{}", f.display());
                }
                eprintln!(
                    "faultline: serve with --tls-dir {0}; agents with --tls-dir {0} (each needs its agent-<id> files and ca.pem); the CLI with FAULTLINE_TLS_DIR={0}",
                    dir.display()
                );
                0
            }
            Err(e) => {
                eprint_err(e);
                5
            }
        },
    }
}
