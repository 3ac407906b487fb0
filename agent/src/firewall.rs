//! The packet-filter boundary: iptables (for NFQUEUE rules) and nftables
//! (for block tables).
//!
//! Fault code talks to the [`Firewall`] trait and hands it whole scripts, so
//! each change is one atomic transaction in the kernel: `iptables-restore
//! --noflush` commits a table at once, `nft -f` commits a ruleset at once.
//! A fault is never half-applied. [`SystemFirewall`] runs the real tools;
//! tests use a fake that records the scripts.
//!
//! iptables rules go through the *legacy* backend where it is installed:
//! the `NFQUEUE` target is an xtables extension, and the kernels we target
//! (see DESIGN.md) lack nftables' own `queue` expression.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// Errors from the packet-filter boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} is not installed (looked for {looked_for})")]
    Missing { tool: &'static str, looked_for: String },
    #[error("cannot run {tool}: {source}")]
    Spawn { tool: String, source: std::io::Error },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: String, stderr: String },
}

/// Result of the packet-filter boundary.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// IP version of an iptables command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Packet-filter operations faults need. Scripts are applied atomically.
pub trait Firewall: Send + Sync {
    /// Applies an `iptables-restore --noflush` script for `family`.
    fn iptables_restore(&self, family: Family, script: &str) -> Result<()>;
    /// `iptables-save -t <table>` output: chain declarations (`:name ...`)
    /// and rules (`-A chain ...`).
    fn iptables_save(&self, family: Family, table: &str) -> Result<String>;
    /// Applies an `nft -f` script.
    fn nft_apply(&self, script: &str) -> Result<()>;
    /// Every nftables table as `(family, name)`.
    fn nft_tables(&self) -> Result<Vec<(String, String)>>;
}

/// Chain names declared in `iptables-save` output.
pub fn chains(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `iptables-restore --noflush` script that deletes `chain` of `table`:
/// every rule jumping to it, then its rules, then the chain. `None` when
/// `save` does not declare the chain.
pub fn remove_chain_script(save: &str, table: &str, chain: &str) -> Option<String> {
    if !chains(save).iter().any(|c| c == chain) {
        return None;
    }
    let mut s = format!("*{table}\n");
    for l in save.lines() {
        let Some(rule) = l.strip_prefix("-A ") else { continue };
        let words: Vec<&str> = rule.split_whitespace().collect();
        let jumps = words
            .windows(2)
            .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == chain);
        if jumps && words.first() != Some(&chain) {
            s += &format!("-D {rule}\n");
        }
    }
    s += &format!("-F {chain}\n-X {chain}\nCOMMIT\n");
    Some(s)
}

/// Traffic no fault may slow down or cut: the agent's control channel, so
/// restores and lease renewals keep flowing during the fault, and SSH, so
/// an operator can always get in. Loopback is exempt too.
#[derive(Debug, Clone, Default)]
pub struct Exempt {
    /// The coordinator's addresses (resolved from its URL at start).
    pub coordinator: Vec<IpAddr>,
    /// TCP ports never touched, in both directions. By default, 22.
    pub tcp_ports: Vec<u16>,
}

impl Exempt {
    /// The exemptions for an agent talking to `coordinator`.
    pub fn new(coordinator: Vec<IpAddr>) -> Self {
        Self {
            coordinator,
            tcp_ports: vec![22],
        }
    }
}

/// Runs the real `iptables-restore`, `iptables-save` and `nft`.
pub struct SystemFirewall {
    iptables_restore: [Option<String>; 2],
    iptables_save: [Option<String>; 2],
    nft: Option<String>,
}

/// Finds an executable in `PATH` (and the sbin directories, which a
/// non-login root shell may lack).
pub fn which(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false));
    found
}

fn first_of(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| which(n))
}

impl SystemFirewall {
    /// Looks the tools up once; missing ones fail when used.
    pub fn detect() -> Self {
        Self {
            iptables_restore: [
                first_of(&["iptables-legacy-restore", "iptables-restore"]),
                first_of(&["ip6tables-legacy-restore", "ip6tables-restore"]),
            ],
            iptables_save: [
                first_of(&["iptables-legacy-save", "iptables-save"]),
                first_of(&["ip6tables-legacy-save", "ip6tables-save"]),
            ],
            nft: which("nft"),
        }
    }

    /// Whether `iptables-restore` for `family` was found.
    pub fn has_iptables(&self, family: Family) -> bool {
        self.iptables_restore[family as usize].is_some() && self.iptables_save[family as usize].is_some()
    }

    /// Whether `nft` was found.
    pub fn has_nft(&self) -> bool {
        self.nft.is_some()
    }
}

fn tool<'a>(found: &'a Option<String>, looked_for: &str, name: &'static str) -> Result<&'a str> {
    found.as_deref().ok_or_else(|| Error::Missing {
        tool: name,
        looked_for: looked_for.to_string(),
    })
}

/// Runs `bin args`, feeding `stdin`, and returns stdout.
fn run(bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            tool: bin.to_string(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|source| Error::Spawn {
            tool: bin.to_string(),
            source,
        })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        tool: bin.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Failed {
            tool: bin.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Firewall for SystemFirewall {
    fn iptables_restore(&self, family: Family, script: &str) -> Result<()> {
        let bin = tool(
            &self.iptables_restore[family as usize],
            "iptables-legacy-restore, iptables-restore",
            "iptables-restore",
        )?;
        // -w: wait for the xtables lock (up to 5 s) instead of failing when
        // another tool is changing rules at the same moment.
        run(bin, &["--noflush", "-w", "5"], Some(script)).map(|_| ())
    }

    fn iptables_save(&self, family: Family, table: &str) -> Result<String> {
        let bin = tool(
            &self.iptables_save[family as usize],
            "iptables-legacy-save, iptables-save",
            "iptables-save",
        )?;
        run(bin, &["-t", table], None)
    }

    fn nft_apply(&self, script: &str) -> Result<()> {
        let bin = tool(&self.nft, "nft", "nft")?;
        run(bin, &["-f", "-"], Some(script)).map(|_| ())
    }

    fn nft_tables(&self) -> Result<Vec<(String, String)>> {
        let bin = tool(&self.nft, "nft", "nft")?;
        let out = run(bin, &["list", "tables"], None)?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("table"), Some(fam), Some(name)) => Some((fam.to_string(), name.to_string())),
                    _ => None,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save\n*mangle\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:faultline-r1-1 - [0:0]\n:other - [0:0]\n-A POSTROUTING ! -o lo -j faultline-r1-1\n-A POSTROUTING -o eth0 -j other\n-A faultline-r1-1 -d 10.0.0.2/32 -j NFQUEUE --queue-num 17920 --queue-bypass\nCOMMIT\n";

    #[test]
    fn removing_a_chain_deletes_its_jumps_then_the_chain_and_nothing_else() {
        assert_eq!(
            chains(SAVE),
            vec!["PREROUTING", "POSTROUTING", "faultline-r1-1", "other"]
        );
        assert_eq!(
            remove_chain_script(SAVE, "mangle", "faultline-r1-1").unwrap(),
            "*mangle\n-D POSTROUTING ! -o lo -j faultline-r1-1\n-F faultline-r1-1\n-X faultline-r1-1\nCOMMIT\n"
        );
        assert_eq!(remove_chain_script(SAVE, "mangle", "faultline-r9-9"), None);
    }
}
