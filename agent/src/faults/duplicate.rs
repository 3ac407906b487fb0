//! `duplicate` fault: send a share of the packets the node sends twice,
//! through the NFQUEUE packet machinery ([`super::packet`]).
//!
//! The original is accepted, and an identical copy (the bytes NFQUEUE
//! handed us, checksums included) goes out right after it through a raw
//! socket of its family (IPv4 `IP_HDRINCL`, or IPv6 `IPPROTO_RAW`, which
//! Linux also takes with the header included) of the agent's network
//! namespace. The copy
//! carries [`packet::MARK`], which the fault's chain returns first, so it is
//! not queued (nor duplicated) again. The kernel routes the copy anew; on
//! a node with policy routing by mark it could leave by another route.

use faultline_proto::v1;

use super::packet::{self, Common, Decision, Handler, PacketKind, Plan, Rng};
use crate::faults::Registration;
use crate::journal::Owned;
use crate::nfqueue::CopyMode;
use crate::qdisc;

const NAME: &str = "duplicate";
/// The start of every duplicate chain's name.
pub const CHAIN_PREFIX: &str = "faultline-d-";

static PACKET: PacketKind = PacketKind {
    name: NAME,
    prefix: CHAIN_PREFIX,
    plan,
    wrap: v1::observation::Kind::Duplicate,
};

pub const KIND: Registration = Registration {
    name: NAME,
    owns: &[Owned::IptablesChains {
        table: packet::TABLE,
        prefix: CHAIN_PREFIX,
    }],
    takes: |w| matches!(w, v1::fault_spec::Kind::Duplicate(_)),
    backend: "",
    build: |s| packet::build(&PACKET, s, true),
};

fn plan(fault_id: &str, w: v1::fault_spec::Kind) -> packet::Result<Plan> {
    let v1::fault_spec::Kind::Duplicate(w) = w else {
        return Err(packet::Error::InvalidSpec {
            kind: NAME,
            message: "not a duplicate spec".into(),
        });
    };
    let c = Common::from_wire(NAME, w.scope, w.percent, &w.backend)?;
    let percent = c.percent;
    let effect = format!("duplicating {percent}% of packets {}", c.scope.describe());
    let handler = Box::new(Duplicate {
        percent,
        rng: Rng::seeded(fault_id),
    });
    let netem = qdisc::Netem {
        duplicate_percent: percent,
        ..Default::default()
    };
    Ok(c.plan(CopyMode::Packet, effect, handler, netem))
}

struct Duplicate {
    percent: f64,
    rng: Rng,
}

impl Handler for Duplicate {
    fn decide(&mut self, p: &[u8]) -> Decision {
        // Only whole IP packets (not later fragments) are sent again.
        if packet::transport(p).is_some() && self.rng.chance(self.percent) {
            Decision::Duplicate
        } else {
            Decision::Accept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_the_asked_share_is_duplicated_over_ipv4_and_ipv6_and_non_ip_never() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 17;
        let mut d = Duplicate {
            percent: 20.0,
            rng: Rng::seeded("t-1"),
        };
        let n = (0..10_000).filter(|_| d.decide(&p) == Decision::Duplicate).count();
        assert!((1_800..2_200).contains(&n), "{n}");
        let mut q = vec![0u8; 48];
        q[0] = 0x60;
        q[6] = 17;
        let n = (0..10_000).filter(|_| d.decide(&q) == Decision::Duplicate).count();
        assert!((1_800..2_200).contains(&n), "{n}");
        assert_eq!(d.decide(&[0x20; 40]), Decision::Accept);
    }
}
