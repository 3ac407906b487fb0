//! `corrupt`: flip one bit in the transport header or payload of a share of the packets a target sends (after the checksum: receivers drop them), matched by destination, ports and protocol. The agent
//! uses netem's `corrupt` where its kernel has `sch_netem`, else an NFQUEUE
//! queue (`backend:` picks one; see `agent/src/faults/corrupt.rs`).

use faultline_proto::v1;

use super::packet::{self, RawShare, Share};
use super::{Kind, Observed};

/// Parameters of a `corrupt` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct CorruptFault {
    pub share: Share,
}

impl Kind for CorruptFault {
    const NAME: &'static str = "corrupt";
    type Raw = RawShare;
    type Error = packet::Error;
    type Wire = v1::CorruptSpec;
    type Observation = v1::PacketObservation;

    fn from_raw(r: RawShare) -> Result<Self, packet::Error> {
        Ok(CorruptFault {
            share: Share::check(Self::NAME, r)?,
        })
    }

    fn summary(&self) -> String {
        self.share.summary("corrupt")
    }

    fn to_wire(&self, peers: &[String]) -> v1::CorruptSpec {
        v1::CorruptSpec {
            scope: self.share.wire_scope(peers),
            percent: self.share.percent,
            backend: self.share.backend.clone().unwrap_or_default(),
        }
    }

    fn peers(&self) -> Option<&crate::experiment::peers::Peers> {
        Some(&self.share.scope.to)
    }

    fn runs_on(&self, caps: &[String]) -> bool {
        self.share.runs_on(Self::NAME, caps)
    }

    fn requirement(&self) -> String {
        self.share.requirement(Self::NAME)
    }

    fn observe(o: &v1::PacketObservation, state: v1::FaultState, into: &mut Observed) {
        packet::observe(o, state, "corrupted", into);
    }
}
