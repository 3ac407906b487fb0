//! `duplicate`: send a share of the packets a target sends twice, matched by destination, ports and protocol. The agent
//! uses netem's `duplicate` where its kernel has `sch_netem`, else an NFQUEUE
//! queue (`backend:` picks one; see `agent/src/faults/duplicate.rs`).

use faultline_proto::v1;

use super::packet::{self, RawShare, Share};
use super::{Kind, Observed};

/// Parameters of a `duplicate` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct DuplicateFault {
    pub share: Share,
}

impl Kind for DuplicateFault {
    const NAME: &'static str = "duplicate";
    type Raw = RawShare;
    type Error = packet::Error;
    type Wire = v1::DuplicateSpec;
    type Observation = v1::PacketObservation;

    fn from_raw(r: RawShare) -> Result<Self, packet::Error> {
        Ok(DuplicateFault {
            share: Share::check(Self::NAME, r)?,
        })
    }

    fn summary(&self) -> String {
        self.share.summary("duplicate")
    }

    fn to_wire(&self, peers: &[String]) -> v1::DuplicateSpec {
        v1::DuplicateSpec {
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
        packet::observe(o, state, "duplicated", into);
    }
}
