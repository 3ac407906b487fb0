//! `faultline certs init DIR`: a CA, a coordinator certificate, one client
//! certificate per agent (common name = agent id) and one for the CLI;
//! `faultline certs add-agent DIR ID...`: more agents signed by that CA.

use super::common::eprint_err;
use crate::certs::{self, Error};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Make a CA and certificates in DIR (keys are written mode 0600).
    Init {
        /// Directory to write ca.{pem,key}, coordinator.{pem,key}, agent-<id>.{pem,key}, cli.{pem,key}.
        dir: std::path::PathBuf,
        /// A name or IP agents and clients use to reach the coordinator
        /// (localhost and 127.0.0.1 are always included); repeatable.
        #[arg(long = "host", value_name = "NAME_OR_IP")]
        hosts: Vec<String>,
        /// An agent id to make a certificate for; repeatable.
        #[arg(long = "agent", value_name = "ID")]
        agents: Vec<String>,
        /// Replace a CA and certificates already in DIR. Every certificate
        /// already deployed stops working. By default, existing files are
        /// never replaced.
        #[arg(long)]
        force: bool,
    },
    /// Sign agent certificates with the CA already in DIR (made by `certs init`).
    AddAgent {
        /// Directory holding ca.pem and ca.key; agent-<id>.{pem,key} are written there.
        dir: std::path::PathBuf,
        /// Agent ids (ASCII letters, digits, '.', '_', '-').
        #[arg(required = true, value_name = "ID")]
        agents: Vec<String>,
        /// Replace an agent's existing certificate and key.
        #[arg(long)]
        force: bool,
    },
}

pub fn main(a: Args) -> i32 {
    let (dir, made) = match a.command {
        Command::Init {
            dir,
            hosts,
            agents,
            force,
        } => {
            let r = certs::init(&dir, &hosts, &agents, force);
            (dir, r)
        }
        Command::AddAgent { dir, agents, force } => {
            let r = certs::add_agents(&dir, &agents, force);
            (dir, r)
        }
    };
    match made {
        Ok(made) => {
            for f in made.files {
                println!("{}", f.display());
            }
            eprintln!(
                "faultline: serve with --tls-dir {0}; agents with --tls-dir {0} (each needs its agent-<id> files and ca.pem); the CLI with FAULTLINE_TLS_DIR={0} (cli.pem, cli.key, ca.pem). Keep ca.key off the nodes.",
                dir.display()
            );
            0
        }
        Err(e @ Error::Exists { .. }) => {
            eprint_err(format!(
                "{e}: nothing was written. Replacing it would invalidate the certificates already deployed; use `faultline certs add-agent {} ID` to add agents, or pass --force to replace",
                dir.display()
            ));
            2
        }
        Err(e @ Error::NoCaKey { .. }) => {
            eprint_err(format!(
                "{e} (directories made before `certs add-agent` existed have none): make a new CA with `faultline certs init {} --force` and redeploy",
                dir.display()
            ));
            2
        }
        Err(e @ (Error::Id(_) | Error::DuplicateAgent(_) | Error::Host { .. })) => {
            eprint_err(format!("{e}; nothing was written"));
            2
        }
        Err(e) => {
            eprint_err(e);
            5
        }
    }
}
