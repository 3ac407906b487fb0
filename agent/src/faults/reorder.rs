//! `reorder` fault: hold a share of the packets the node sends back by a
//! gap, so the packets sent after them overtake them; through the NFQUEUE
//! packet machinery ([`super::packet`]), metadata only.
//!
//! netem's semantics, seen from the other side: netem `delay G reorder P%`
//! sends P% of the packets at once and delays the rest by G; here P% are
//! held back by the gap and the rest leave at once, so only the chosen
//! share is late. Out-of-order verdicts are what NFQUEUE allows: a held
//! packet's verdict simply comes later. The netem backend asks netem for
//! the same thing ([`netem_form`]): `delay G reorder (100 - P)%`.

use std::time::Duration;

use faultline_proto::v1;

use super::packet::{self, Common, Decision, Handler, PacketKind, Plan, Rng};
use crate::faults::Registration;
use crate::journal::Owned;
use crate::nfqueue::CopyMode;
use crate::qdisc;

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
    backend: "",
    build: |s| packet::build(&PACKET, s, true),
};

fn plan(fault_id: &str, w: v1::fault_spec::Kind) -> packet::Result<Plan> {
    let v1::fault_spec::Kind::Reorder(w) = w else {
        return Err(packet::Error::InvalidSpec {
            kind: NAME,
            message: "not a reorder spec".into(),
        });
    };
    let c = Common::from_wire(NAME, w.scope, w.percent, &w.backend)?;
    let percent = c.percent;
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
    let effect = format!(
        "holding {percent}% of packets {} back by {} ms",
        c.scope.describe(),
        gap.as_secs_f64() * 1000.0
    );
    let handler = Box::new(Reorder {
        percent,
        gap,
        rng: Rng::seeded(fault_id),
    });
    Ok(c.plan(CopyMode::Meta, effect, handler, netem_form(percent, gap)))
}

/// netem's form of "hold `percent` back by `gap`": `delay gap reorder
/// (100 - percent)%`. netem reorders only with a delay: its `reorder P%`
/// sends P% at once (to the head of its queue) and the rest wait out the
/// delay, so the share sent at once is the complement of the share held.
/// With nothing sent at once (100% held) it is a plain delay.
pub fn netem_form(percent: f64, gap: Duration) -> qdisc::Netem {
    let at_once = 100.0 - percent;
    qdisc::Netem {
        delay: gap,
        reorder_percent: (at_once > 0.0).then_some(at_once),
        ..Default::default()
    }
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
                backend: String::new(),
            })
        };
        assert!(plan("t-1", w(0)).unwrap().effect.contains("by 10 ms"));
        let e = plan("t-1", w(5_000_000)).err().unwrap().to_string();
        assert!(e.contains("gap 5000 ms"), "{e}");
    }

    #[test]
    fn the_netem_form_delays_the_held_share_and_sends_the_rest_at_once() {
        let gap = Duration::from_millis(10);
        let n = netem_form(25.0, gap);
        assert_eq!((n.delay, n.reorder_percent), (gap, Some(75.0)));
        let args = qdisc::qdisc_args(
            "eth0",
            qdisc::Parent::Class(0xfa01, 4),
            0xfb01,
            &qdisc::QdiscKind::Netem(n),
        );
        assert!(args.join(" ").ends_with("netem delay 10000us reorder 75%"), "{args:?}");
        assert_eq!(netem_form(100.0, gap).reorder_percent, None);
    }
}
