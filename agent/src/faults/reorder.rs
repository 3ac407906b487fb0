//! `reorder` fault: hold a share of the packets the node sends back by a
//! gap, so the packets sent after them overtake them; through the NFQUEUE
//! packet machinery ([`super::packet`]), metadata only.
//!
//! netem's semantics, seen from the other side: netem `delay G reorder P%`
//! sends P% of the packets at once and delays the rest by G; here P% are
//! held back by the gap and the rest leave at once, so only the chosen
//! share is late. Out-of-order verdicts are what NFQUEUE allows: a held
//! packet's verdict simply comes later.

use std::time::Duration;

use faultline_proto::v1;

use super::packet::{self, Decision, Handler, PacketKind, Plan, Rng, Scope};
use crate::faults::Registration;
use crate::journal::Owned;
use crate::nfqueue::CopyMode;

const NAME: &str = "reorder";
/// The start of every reorder chain's name.
pub const CHAIN_PREFIX: &str = "faultline-r-";
/// The gap when none is given.
pub const DEFAULT_GAP: Duration = Duration::from_millis(10);
/// Longest gap accepted (a longer hold is latency, not reordering).
pub const MAX_GAP: Duration = Duration::from_secs(2);

static PACKET: PacketKind = PacketKind {
    name: NAME,
    prefix: CHAIN_PREFIX,
    plan,
    wrap: v1::observation::Kind::Reorder,
};

pub const KIND: Registration = Registration {
    name: NAME,
    owns: &[Owned::IptablesChains {
        table: packet::TABLE,
        prefix: CHAIN_PREFIX,
    }],
    takes: |w| matches!(w, v1::fault_spec::Kind::Reorder(_)),
    backend: "nfqueue",
    build: |s| packet::build(&PACKET, s),
};

fn plan(fault_id: &str, w: v1::fault_spec::Kind) -> packet::Result<Plan> {
    let v1::fault_spec::Kind::Reorder(w) = w else {
        return Err(packet::Error::InvalidSpec {
            kind: NAME,
            message: "not a reorder spec".into(),
        });
    };
    let scope = Scope::from_wire(NAME, w.scope)?;
    let percent = packet::percent(NAME, w.percent)?;
    let gap = match w.gap_us {
        0 => DEFAULT_GAP,
        us => Duration::from_micros(us),
    };
    if gap > MAX_GAP {
        return Err(packet::Error::InvalidSpec {
            kind: NAME,
            message: format!("gap {} ms is over the {} s maximum", gap.as_millis(), MAX_GAP.as_secs()),
        });
    }
    Ok(Plan {
        scope_lines: scope.match_lines(),
        interface: scope.interface.clone(),
        copy: CopyMode::Meta,
        effect: format!(
            "holding {percent}% of packets {} back by {} ms",
            scope.describe(),
            gap.as_secs_f64() * 1000.0
        ),
        handler: Box::new(Reorder {
            percent,
            gap,
            rng: Rng::seeded(fault_id),
        }),
    })
}

struct Reorder {
    percent: f64,
    gap: Duration,
    rng: Rng,
}

impl Handler for Reorder {
    fn decide(&mut self, _: &[u8]) -> Decision {
        if self.rng.chance(self.percent) {
            Decision::Hold(self.gap)
        } else {
            Decision::Accept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_defaults_to_10ms_and_has_a_ceiling() {
        let w = |gap_us| {
            v1::fault_spec::Kind::Reorder(v1::ReorderSpec {
                scope: None,
                percent: 25.0,
                gap_us,
            })
        };
        assert!(plan("t-1", w(0)).unwrap().effect.contains("by 10 ms"));
        let e = plan("t-1", w(5_000_000)).err().unwrap().to_string();
        assert!(e.contains("gap 5000 ms"), "{e}");
    }
}
