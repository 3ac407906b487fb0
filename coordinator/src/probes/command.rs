//! `command` probe: runs a shell command on the coordinator's host (never on
//! agents); success is the expected exit code and, if set, stdout matching.

use std::process::Stdio;
use std::time::Duration;

use crate::experiment::CommandProbe;

pub async fn check(p: &CommandProbe, timeout: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&p.run)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // A probe that overruns its timeout is killed, not left behind.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => return Err("timeout".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(o)) => o,
    };
    let code = out.status.code().unwrap_or(-1);
    if code != p.exit_code {
        return Err(format!("exit code {code}, expected {}", p.exit_code));
    }
    if let Some(re) = &p.stdout_match {
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !re.is_match(&stdout) {
            return Err(format!("stdout does not match /{re}/"));
        }
    }
    Ok(())
}
