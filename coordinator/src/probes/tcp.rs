//! `tcp` probe: success is a completed TCP connect within the timeout.

use std::time::Duration;

use serde::Deserialize;

use super::{Clients, Kind, Reading};

#[derive(Debug, Clone)]
pub struct TcpProbe {
    /// host:port to connect to.
    pub address: String,
}

/// Why a written `tcp` probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tcp.address {0:?}: write host:port")]
    Address(String),
}

/// Why one connect failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("timeout")]
    Timeout,
    #[error("connection refused")]
    ConnectionRefused,
    #[error(transparent)]
    Io(std::io::Error),
}

/// A `tcp` probe as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    address: String,
}

impl Kind for TcpProbe {
    const NAME: &'static str = "tcp";
    type Raw = RawTcp;
    type Error = Error;
    type Failure = Failure;

    fn from_raw(t: RawTcp) -> Result<Self, Error> {
        if !t.address.contains(':') {
            return Err(Error::Address(t.address));
        }
        Ok(TcpProbe { address: t.address })
    }

    fn target(&self) -> String {
        self.address.clone()
    }

    async fn check(&self, _clients: &Clients, timeout: Duration) -> Result<Reading, Failure> {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&self.address)).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Failure::ConnectionRefused),
            Ok(Err(e)) => Err(Failure::Io(e)),
            Ok(Ok(_)) => Ok(Reading::Done),
        }
    }
}
