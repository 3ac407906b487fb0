//! `tcp` probe: success is a completed TCP connect within the timeout.

use std::time::Duration;

use crate::experiment::TcpProbe;

pub async fn check(p: &TcpProbe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&p.address)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err("connection refused".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) => Ok(()),
    }
}
