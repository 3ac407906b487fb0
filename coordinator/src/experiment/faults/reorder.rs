//! `reorder`: hold a share of the packets a target sends back by a gap so
//! later ones overtake them, matched by destination, ports and protocol.
//! The agent uses netem (`delay <gap> reorder <100 - percent>%`: netem
//! reorders only behind a delay) where its kernel has `sch_netem`, else an
//! NFQUEUE queue (`backend:` picks one; see `agent/src/faults/reorder.rs`).

use std::time::Duration;

use faultline_proto::v1;
use serde::Deserialize;

use super::packet::{self, Scope, Share};
use super::{Kind, Observed};
use crate::experiment::durations::{fmt_duration, Dur};
use crate::experiment::peers::RawPeers;
use crate::experiment::values::RawRate;

/// Parameters of a `reorder` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct ReorderFault {
    /// The share of matching packets held back, their scope, the backend.
    pub share: Share,
    /// How long a held packet waits. By default, 10 ms.
    pub gap: Duration,
}

/// Why a written `reorder` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Packet(#[from] packet::Error),
    #[error("reorder.gap {0}: must be within 1ms..=2s")]
    Gap(String),
}

/// A `reorder` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReorder {
    percent: RawRate,
    gap: Option<Dur>,
    interface: Option<String>,
    #[serde(default)]
    to: RawPeers,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    source_ports: Vec<u16>,
    protocol: Option<String>,
    backend: Option<String>,
}

impl Kind for ReorderFault {
    const NAME: &'static str = "reorder";
    type Raw = RawReorder;
    type Error = Error;
    type Wire = v1::ReorderSpec;
    type Observation = v1::PacketObservation;

    fn from_raw(r: RawReorder) -> Result<Self, Error> {
        let gap = r.gap.map(|d| d.0).unwrap_or(Duration::from_millis(10));
        if gap < Duration::from_millis(1) || gap > Duration::from_secs(2) {
            return Err(Error::Gap(fmt_duration(gap)));
        }
        Ok(ReorderFault {
            share: Share {
                percent: packet::percent(Self::NAME, r.percent)?,
                scope: Scope::check(Self::NAME, r.to, r.ports, r.source_ports, r.protocol, r.interface)?,
                backend: packet::backend(Self::NAME, r.backend)?,
            }
            .checked(Self::NAME)?,
            gap,
        })
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "hold {}% of packets {} back by {}",
            self.share.percent,
            self.share.scope.summary(),
            fmt_duration(self.gap)
        );
        if let Some(b) = &self.share.backend {
            s += &format!(" backend {b}");
        }
        s
    }

    fn to_wire(&self, peers: &[String]) -> v1::ReorderSpec {
        v1::ReorderSpec {
            scope: self.share.wire_scope(peers),
            percent: self.share.percent,
            gap_us: self.gap.as_micros() as u64,
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
        packet::observe(o, state, "held back", into);
    }
}
