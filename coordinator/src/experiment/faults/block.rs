//! `block`: drop the traffic between a target and a set of peers (zones
//! resolved by the coordinator to agent addresses, CIDRs), in one or both
//! directions: a zone outage or a partition. The agent installs one
//! nftables table per fault.

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::peers::{self, check_ports, join_ports, Peers, RawPeers};

/// Parameters of a `block` fault.
#[derive(Debug, Clone)]
pub struct BlockFault {
    /// Never empty.
    pub peers: Peers,
    pub ports: Vec<u16>,
    /// in, out or both.
    pub direction: String,
}

/// Why a written `block` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Peers(#[from] peers::Error),
    #[error("block.peers: set zones (e.g. zones: [b]) and/or cidrs (e.g. cidrs: [10.0.2.0/24])")]
    NoPeers,
    #[error("block.direction {0:?}: use in, out or both")]
    Direction(String),
}

/// A `block` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlock {
    #[serde(default)]
    peers: RawPeers,
    #[serde(default)]
    ports: Vec<u16>,
    direction: Option<String>,
}

impl Kind for BlockFault {
    const NAME: &'static str = "block";
    type Raw = RawBlock;
    type Error = Error;
    type Wire = v1::BlockSpec;
    type Observation = v1::BlockObservation;

    fn from_raw(b: RawBlock) -> Result<Self, Error> {
        let peers = b.peers.check("block.peers")?;
        if peers.is_empty() {
            return Err(Error::NoPeers);
        }
        check_ports("block.ports", &b.ports)?;
        let direction = match b.direction.as_deref() {
            None => "both".to_string(),
            Some(d @ ("in" | "out" | "both")) => d.to_string(),
            Some(d) => return Err(Error::Direction(d.to_string())),
        };
        Ok(BlockFault {
            peers,
            ports: b.ports,
            direction,
        })
    }

    fn summary(&self) -> String {
        let mut s = format!("drop {} traffic with {}", self.direction, self.peers);
        if !self.ports.is_empty() {
            s += &format!(" on ports {}", join_ports(&self.ports));
        }
        s
    }

    fn to_wire(&self, peers: &[String]) -> v1::BlockSpec {
        v1::BlockSpec {
            peers: peers.to_vec(),
            ports: self.ports.iter().map(|p| u32::from(*p)).collect(),
            direction: self.direction.clone(),
        }
    }

    fn peers(&self) -> Option<&Peers> {
        Some(&self.peers)
    }

    fn observe(b: &v1::BlockObservation, _state: v1::FaultState, into: &mut Observed) {
        into.objects = vec![format!("nftables table {}", b.table)];
        into.set_figure("blocked", f64::from(b.peers), "networks");
    }
}
