//! `corrupt`: flip one bit in the transport header or payload of a share of the packets a target sends (after the checksum: receivers drop them), matched by destination, ports and protocol. The agent
//! uses an NFQUEUE queue (see `agent/src/faults/corrupt.rs`).

use faultline_proto::v1;
use serde::Deserialize;

use super::packet::{self, Scope};
use super::{Kind, Observed};
use crate::experiment::peers::RawPeers;
use crate::experiment::values::RawRate;

/// Parameters of a `corrupt` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct CorruptFault {
    /// Share of matching packets, in percent: (0, 100].
    pub percent: f64,
    pub scope: Scope,
}

/// A `corrupt` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCorrupt {
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

impl Kind for CorruptFault {
    const NAME: &'static str = "corrupt";
    type Raw = RawCorrupt;
    type Error = packet::Error;
    type Wire = v1::CorruptSpec;
    type Observation = v1::PacketObservation;

    fn from_raw(r: RawCorrupt) -> Result<Self, packet::Error> {
        Ok(CorruptFault {
            percent: packet::percent(Self::NAME, r.percent)?,
            scope: Scope::check(Self::NAME, r.to, r.ports, r.source_ports, r.protocol, r.interface)?,
        })
    }

    fn summary(&self) -> String {
        format!("corrupt {}% of packets {}", self.percent, self.scope.summary())
    }

    fn to_wire(&self, peers: &[String]) -> v1::CorruptSpec {
        v1::CorruptSpec {
            scope: self.scope.to_wire(peers),
            percent: self.percent,
        }
    }

    fn peers(&self) -> Option<&crate::experiment::peers::Peers> {
        Some(&self.scope.to)
    }

    fn observe(o: &v1::PacketObservation, state: v1::FaultState, into: &mut Observed) {
        packet::observe(o, state, "corrupted", into);
    }
}
