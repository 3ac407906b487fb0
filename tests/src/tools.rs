//! Commands the root tests need on this machine, checked before a test
//! starts so that a missing one is named (with its Debian package) instead
//! of surfacing as a failed `ip netns add` halfway through a lab.

use std::path::Path;

/// A command and the Debian package that installs it.
pub type Tool = (&'static str, &'static str);

/// What the namespace lab and the real agent in it run: `ip` and `tc`
/// (namespaces, veths, qdiscs), `iptables-restore`/`iptables-legacy-save`
/// (the NFQUEUE latency backend and the cleanup proof), `nft` (block
/// faults), `ps` (the lab's process checks).
pub const LAB_TOOLS: &[Tool] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("iptables-restore", "iptables"),
    ("iptables-legacy-save", "iptables"),
    ("nft", "nftables"),
    ("ps", "procps"),
];

/// The tools of `tools` not found as executables in `path` (a `PATH`
/// value).
pub fn missing(tools: &[Tool], path: &str) -> Vec<Tool> {
    tools
        .iter()
        .filter(|(cmd, _)| {
            !std::env::split_paths(path).any(|dir| {
                let p = dir.join(cmd);
                is_executable(&p)
            })
        })
        .copied()
        .collect()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What to tell the user when `test` lacks `missing` tools.
pub fn message(test: &str, missing: &[Tool]) -> String {
    let cmds: Vec<String> = missing.iter().map(|(c, p)| format!("`{c}` (package {p})")).collect();
    let mut pkgs: Vec<&str> = Vec::new();
    for (_, p) in missing {
        if !pkgs.contains(p) {
            pkgs.push(p);
        }
    }
    format!(
        "{test} needs {} which this machine does not have; install with: apt-get install -y {}",
        cmds.join(", "),
        pkgs.join(" ")
    )
}

/// True when every one of `tools` is installed. Otherwise prints which are
/// missing and how to install them and returns false, unless `CI=true`,
/// where a missing tool is a failure.
pub fn present_or_skip(test: &str, tools: &[Tool]) -> bool {
    let missing = missing(tools, &std::env::var("PATH").unwrap_or_default());
    if missing.is_empty() {
        return true;
    }
    let msg = message(test, &missing);
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{msg} (CI=true forbids skipping)"
    );
    eprintln!("skipping {msg}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package_and_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let tools: &[Tool] = &[("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")];
        let m = missing(tools, path);
        assert_eq!(m.len(), 3);
        let msg = message("lab_test", &m);
        assert_eq!(
            msg,
            "lab_test needs `ip` (package iproute2), `tc` (package iproute2), `nft` (package nftables) which this machine does not have; install with: apt-get install -y iproute2 nftables"
        );
        // A present executable is not reported; a non-executable file is.
        let ip = dir.path().join("ip");
        std::fs::write(&ip, "#!/bin/sh\n").unwrap();
        assert_eq!(missing(tools, path).len(), 3);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ip, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(missing(tools, path), vec![("tc", "iproute2"), ("nft", "nftables")]);
    }
}
