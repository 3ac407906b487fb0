//! `corrupt` fault: flip one bit in a share of the packets the node sends,
//! through the NFQUEUE packet machinery ([`super::packet`]).
//!
//! Like netem, the bit is flipped after the kernel computed the checksums
//! (NFQUEUE copies offloaded packets with their checksum filled in), so the
//! IP header stays valid and routable while the receiver's transport
//! checksum fails: UDP datagrams are dropped (`InCsumErrors`), TCP segments
//! are dropped and retransmitted. The bit is taken from the transport
//! payload, or from the transport header of a packet without payload
//! (a bare TCP ACK); the IP header is never touched. IPv4 and IPv6 alike:
//! over IPv6 the UDP checksum is mandatory (RFC 8200 §8.1), so a flipped
//! payload bit fails it just the same; the IPv6 extension headers are
//! skipped like the IPv4 options.

use faultline_proto::v1;

use super::packet::{self, Common, Decision, Handler, PacketKind, Plan, Rng};
use crate::faults::Registration;
use crate::journal::Owned;
use crate::nfqueue::CopyMode;
use crate::qdisc;

const NAME: &str = "corrupt";
/// The start of every corrupt chain's name.
pub const CHAIN_PREFIX: &str = "faultline-c-";

static PACKET: PacketKind = PacketKind {
    name: NAME,
    prefix: CHAIN_PREFIX,
    plan,
    wrap: v1::observation::Kind::Corrupt,
};

pub const KIND: Registration = Registration {
    name: NAME,
    owns: &[Owned::IptablesChains {
        table: packet::TABLE,
        prefix: CHAIN_PREFIX,
    }],
    takes: |w| matches!(w, v1::fault_spec::Kind::Corrupt(_)),
    backend: "",
    build: |s| packet::build(&PACKET, s, true),
};

fn plan(fault_id: &str, w: v1::fault_spec::Kind) -> packet::Result<Plan> {
    let v1::fault_spec::Kind::Corrupt(w) = w else {
        return Err(packet::Error::InvalidSpec {
            kind: NAME,
            message: "not a corrupt spec".into(),
        });
    };
    let c = Common::from_wire(NAME, w.scope, w.percent, &w.backend)?;
    let percent = c.percent;
    let effect = format!("corrupting {percent}% of packets {}", c.scope.describe());
    let handler = Box::new(Corrupt {
        percent,
        rng: Rng::seeded(fault_id),
    });
    let netem = qdisc::Netem {
        corrupt_percent: percent,
        ..Default::default()
    };
    Ok(c.plan(CopyMode::Packet, effect, handler, netem))
}

struct Corrupt {
    percent: f64,
    rng: Rng,
}

/// Where the bit to flip may be: the transport payload if there is one,
/// else the transport header; `None` when the packet has neither.
pub fn corruptible(p: &[u8]) -> Option<std::ops::Range<usize>> {
    let (off, proto) = packet::transport(p)?;
    let header = match proto {
        6 if p.len() >= off + 13 => usize::from(p[off + 12] >> 4) * 4,
        // UDP, ICMP, ICMPv6: 8-byte headers.
        17 | 1 | 58 => 8,
        _ => 0,
    };
    let payload = (off + header).min(p.len());
    if payload < p.len() {
        Some(payload..p.len())
    } else if off < p.len() {
        Some(off..p.len())
    } else {
        None
    }
}

impl Handler for Corrupt {
    fn decide(&mut self, p: &[u8]) -> Decision {
        if !self.rng.chance(self.percent) {
            return Decision::Accept;
        }
        let Some(range) = corruptible(p) else {
            return Decision::Accept;
        };
        let bit = (self.rng.unit() * (range.len() * 8) as f64) as usize % (range.len() * 8);
        let mut changed = p.to_vec();
        changed[range.start + bit / 8] ^= 1 << (bit % 8);
        Decision::Change(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        p.extend([0x30, 0x39, 0x23, 0x28, 0, 0, 0, 0]);
        p.extend(payload);
        p
    }

    #[test]
    fn one_payload_bit_flips_and_the_ip_and_udp_headers_stay() {
        let p = udp(&[0u8; 100]);
        let mut c = Corrupt {
            percent: 100.0,
            rng: Rng::seeded("t-1"),
        };
        for _ in 0..50 {
            let Decision::Change(q) = c.decide(&p) else {
                panic!("not changed")
            };
            assert_eq!(q[..28], p[..28], "headers changed");
            let flipped: u32 = q.iter().zip(&p).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(flipped, 1);
        }
    }

    #[test]
    fn over_ipv6_a_payload_bit_flips_after_the_extension_headers() {
        // IPv6, next header hop-by-hop (8 bytes), then UDP, then 50 bytes.
        let mut p = vec![0x60, 0, 0, 0, 0, 66, 0, 64];
        p.extend_from_slice(&[0xfd; 32]);
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x30, 0x39, 0x23, 0x28, 0, 58, 0x12, 0x34]);
        p.extend_from_slice(&[0u8; 50]);
        assert_eq!(corruptible(&p), Some(56..106));
        let mut c = Corrupt {
            percent: 100.0,
            rng: Rng::seeded("t-1"),
        };
        for _ in 0..50 {
            let Decision::Change(q) = c.decide(&p) else {
                panic!("not changed")
            };
            assert_eq!(q[..56], p[..56], "headers changed");
            let flipped: u32 = q.iter().zip(&p).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(flipped, 1);
        }
    }

    #[test]
    fn a_packet_without_payload_gets_its_transport_header_hit_never_the_ip_header() {
        let p = udp(&[]);
        assert_eq!(corruptible(&p), Some(20..28));
        assert_eq!(corruptible(&p[..20]), None);
        let mut c = Corrupt {
            percent: 0.0001,
            rng: Rng::seeded("t-1"),
        };
        assert_eq!(c.decide(&p), Decision::Accept);
    }
}
