//! `faultline run --ui ADDR`: the web console over local mode's in-process
//! coordinator, on a loopback address, for watching one CLI run live. It
//! logs in with a random one-time operator token printed on stderr (so
//! Abort works), and stops when the run ends.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::common::CoordinatorAddr;
use crate::console::Console;
use crate::security::Tokens;

/// Why the local console did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--ui needs local mode (no --coordinator)")]
    NotLocal,
    #[error("--ui {addr}: cannot listen: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("--ui: cannot make a login token: {0}")]
    Token(String),
}

/// Starts the console for `coordinator` on `addr` until `stop`; returns its
/// base URL (`http://127.0.0.1:PORT`).
pub async fn start(coordinator: &CoordinatorAddr, addr: SocketAddr, stop: CancellationToken) -> Result<String, Error> {
    let c = coordinator.local_coordinator().ok_or(Error::NotLocal)?;
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let tokens = Tokens::parse(std::path::Path::new("--ui"), &format!("local {token} operator\n"))
        .map_err(|e| Error::Token(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    let base = format!("http://{bound}");
    eprintln!("faultline: console on {base}/ — log in with token {token}");
    tokio::spawn(Console::with_tokens(c, tokens).serve(listener, stop));
    Ok(base)
}
