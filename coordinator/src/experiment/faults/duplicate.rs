//! `duplicate`: send a share of the packets a target sends twice, matched by destination, ports and protocol. The agent
//! uses an NFQUEUE queue (see `agent/src/faults/duplicate.rs`).

use faultline_proto::v1;
use serde::Deserialize;

use super::packet::{self, Scope};
use super::{Kind, Observed};
use crate::experiment::peers::RawPeers;
use crate::experiment::values::RawRate;

/// Parameters of a `duplicate` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct DuplicateFault {
    /// Share of matching packets, in percent: (0, 100].
    pub percent: f64,
    pub scope: Scope,
}

/// A `duplicate` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDuplicate {
    percent: RawRate,
    interface: Option<String>,
    #[serde(default)]
    to: RawPeers,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    source_ports: Vec<u16>,
    protocol: Option<String>,
}

impl Kind for DuplicateFault {
    const NAME: &'static str = "duplicate";
    type Raw = RawDuplicate;
    type Error = packet::Error;
    type Wire = v1::DuplicateSpec;
    type Observation = v1::PacketObservation;

    fn from_raw(r: RawDuplicate) -> Result<Self, packet::Error> {
        Ok(DuplicateFault {
            percent: packet::percent(Self::NAME, r.percent)?,
            scope: Scope::check(Self::NAME, r.to, r.ports, r.source_ports, r.protocol, r.interface)?,
        })
    }

    fn summary(&self) -> String {
        format!("duplicate {}% of packets {}", self.percent, self.scope.summary())
    }

    fn to_wire(&self, peers: &[String]) -> v1::DuplicateSpec {
        v1::DuplicateSpec {
            scope: self.scope.to_wire(peers),
            percent: self.percent,
        }
    }

    fn peers(&self) -> Option<&crate::experiment::peers::Peers> {
        Some(&self.scope.to)
    }

    fn observe(o: &v1::PacketObservation, state: v1::FaultState, into: &mut Observed) {
        packet::observe(o, state, "duplicated", into);
    }
}
