//! `dns` fault: lookups of chosen names fail (NXDOMAIN or SERVFAIL) or time
//! out for the node, through the NFQUEUE packet machinery
//! ([`super::packet`]).
//!
//! The chain queues the node's outgoing port-53 traffic (UDP and TCP, to
//! the chosen resolvers or any). The queue thread reads the question of
//! each query. A query for a name not chosen goes on untouched. A chosen
//! one over UDP is dropped, and for `nxdomain` / `servfail` an answer with
//! the query's id and question and that response code is sent back to the
//! asking socket from the resolver's address and port (a raw socket of the
//! query's family, marked so the chain returns it); the resolver never
//! sees the query. IPv4 and IPv6 resolvers alike: the chain is in
//! iptables and ip6tables, and an answer to an IPv6 query is an IPv6/UDP
//! packet (its UDP checksum, mandatory over IPv6, over the IPv6
//! pseudo-header).
//! Over TCP a chosen query's segment is dropped whatever the action (the
//! client times out and retries until it gives up): forging a TCP answer
//! needs the stream's sequence numbers, which is not done (yet).

use faultline_proto::v1;

use super::packet::{self, Decision, Handler, PacketKind, Plan};
use crate::faults::latency::Choice;
use crate::faults::Registration;
use crate::journal::Owned;
use crate::nfqueue::CopyMode;

const NAME: &str = "dns";
/// The start of every dns chain's name.
pub const CHAIN_PREFIX: &str = "faultline-n-";
/// Most names per fault.
pub const MAX_NAMES: usize = 64;

static PACKET: PacketKind = PacketKind {
    name: NAME,
    prefix: CHAIN_PREFIX,
    plan,
    wrap: v1::observation::Kind::Dns,
};

pub const KIND: Registration = Registration {
    name: NAME,
    owns: &[Owned::IptablesChains {
        table: packet::TABLE,
        prefix: CHAIN_PREFIX,
    }],
    takes: |w| matches!(w, v1::fault_spec::Kind::Dns(_)),
    backend: "nfqueue",
    build: |s| packet::build(&PACKET, s, false),
};

/// What a chosen lookup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// "No such name" (rcode 3), answered from the resolver's address.
    NxDomain,
    /// "Server failure" (rcode 2), answered likewise.
    ServFail,
    /// The query is dropped; the client times out.
    Timeout,
}

/// A name pattern: exact, or a suffix (`*.example.com`, which matches
/// `example.com` and every name under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Suffix(String),
}

/// A `dns.names` entry that is not a DNS name or `*.` suffix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name {0:?} is not a DNS name (write db.example.com or *.example.com)")]
pub struct BadName(pub String);

impl Pattern {
    pub fn parse(raw: &str) -> Result<Self, BadName> {
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let ok_label = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
            return Err(BadName(raw.to_string()));
        }
        Ok(if suffix {
            Pattern::Suffix(name)
        } else {
            Pattern::Exact(name)
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Suffix(s) => {
                name == s
                    || (name.len() > s.len()
                        && name.ends_with(s.as_str())
                        && name.as_bytes()[name.len() - s.len() - 1] == b'.')
            }
        }
    }
}

fn plan(_fault_id: &str, w: v1::fault_spec::Kind) -> packet::Result<Plan> {
    let invalid = |message| packet::Error::InvalidSpec { kind: NAME, message };
    let v1::fault_spec::Kind::Dns(w) = w else {
        return Err(invalid("not a dns spec".into()));
    };
    if w.names.len() > MAX_NAMES {
        return Err(invalid(format!("at most {MAX_NAMES} names")));
    }
    let names = w
        .names
        .iter()
        .map(|n| Pattern::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let action = match w.action.as_str() {
        "" | "nxdomain" => Action::NxDomain,
        "servfail" => Action::ServFail,
        "timeout" => Action::Timeout,
        a => return Err(invalid(format!("action {a:?}: use nxdomain, servfail or timeout"))),
    };
    let resolvers = packet::networks(NAME, "resolvers", &w.resolvers)?;
    let scope_lines = packet::FamilyLines::for_destinations(
        &resolvers,
        &["-p udp --dport 53".to_string(), "-p tcp --dport 53".to_string()],
    );
    let which = if names.is_empty() {
        "every name".to_string()
    } else {
        w.names.join(", ")
    };
    let how = match action {
        Action::NxDomain => "answering NXDOMAIN",
        Action::ServFail => "answering SERVFAIL",
        Action::Timeout => "dropping",
    };
    Ok(Plan {
        scope_lines,
        interface: None,
        copy: CopyMode::Packet,
        effect: format!("{how} to DNS lookups of {which}"),
        handler: Box::new(Dns { names, action }),
        backend: Choice::Nfqueue,
        netem: None,
    })
}

struct Dns {
    names: Vec<Pattern>,
    action: Action,
}

/// A DNS query's first question: its name (lower case, no trailing dot),
/// and where the question ends in the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub end: usize,
}

/// Reads the first question of a DNS query message; `None` when it is not
/// a query or the question is malformed or compressed.
pub fn question(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        let label = msg.get(i + 1..i + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += 1 + len;
    }
    let end = i + 4; // qtype, qclass
    (end <= msg.len()).then(|| Question {
        name: labels.join("."),
        end,
    })
}

/// The answer to a query: its id and question, `rcode`, no records.
pub fn answer(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(q.end);
    m.extend_from_slice(&query[..2]);
    // QR, the query's opcode and RD; RA; the rcode.
    m.push(0x80 | (query[2] & 0x79));
    m.push(0x80 | (rcode & 0x0f));
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&query[12..q.end]);
    m
}

/// The one's-complement sum used by IPv4 and UDP checksums.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A UDP packet carrying `dns` from the query's destination to its
/// source, ports swapped, in the query's IP family.
pub fn reply_packet(query: &[u8], udp_off: usize, dns: &[u8]) -> Vec<u8> {
    if query[0] >> 4 == 6 {
        reply_packet_v6(query, udp_off, dns)
    } else {
        reply_packet_v4(query, udp_off, dns)
    }
}

/// [`reply_packet`] over IPv6: a 40-byte header (no extension headers),
/// then UDP with its checksum over the IPv6 pseudo-header (RFC 8200 §8.1).
fn reply_packet_v6(query: &[u8], udp_off: usize, dns: &[u8]) -> Vec<u8> {
    let (src, dst) = (&query[24..40], &query[8..24]);
    let (sport, dport) = (&query[udp_off + 2..udp_off + 4], &query[udp_off..udp_off + 2]);
    let udp_len = 8 + dns.len();
    let mut p = Vec::with_capacity(40 + udp_len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(sport);
    p.extend_from_slice(dport);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(dns);
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let sum = match fold(sum16(&p[40..], sum16(&pseudo, 0))) {
        0 => 0xffff,
        s => s,
    };
    p[46..48].copy_from_slice(&sum.to_be_bytes());
    p
}

fn reply_packet_v4(query: &[u8], udp_off: usize, dns: &[u8]) -> Vec<u8> {
    let (src, dst) = (&query[16..20], &query[12..16]);
    let (sport, dport) = (&query[udp_off + 2..udp_off + 4], &query[udp_off..udp_off + 2]);
    let udp_len = 8 + dns.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    let ip_sum = fold(sum16(&p, 0));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(sport);
    p.extend_from_slice(dport);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(dns);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = match fold(sum16(&p[20..], sum16(&pseudo, 0))) {
        0 => 0xffff,
        s => s,
    };
    p[26..28].copy_from_slice(&sum.to_be_bytes());
    p
}

impl Dns {
    fn chosen(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|p| p.matches(name))
    }
}

impl Handler for Dns {
    fn decide(&mut self, p: &[u8]) -> Decision {
        let Some((off, proto)) = packet::transport(p) else {
            return Decision::Accept;
        };
        match proto {
            17 if p.len() >= off + 8 => {
                let msg = &p[off + 8..];
                let Some(q) = question(msg).filter(|q| self.chosen(&q.name)) else {
                    return Decision::Accept;
                };
                match self.action {
                    Action::Timeout => Decision::Drop,
                    Action::NxDomain => Decision::Answer(reply_packet(p, off, &answer(msg, &q, 3))),
                    Action::ServFail => Decision::Answer(reply_packet(p, off, &answer(msg, &q, 2))),
                }
            }
            6 if p.len() >= off + 13 => {
                let data = off + usize::from(p[off + 12] >> 4) * 4;
                // A query over TCP: a two-byte length, then the message.
                match p.get(data + 2..).and_then(question) {
                    Some(q) if self.chosen(&q.name) => Decision::Drop,
                    _ => Decision::Accept,
                }
            }
            _ => Decision::Accept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    fn udp_packet(dns: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 53];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(dns);
        p
    }

    #[test]
    fn patterns_match_exact_names_and_suffixes_at_label_boundaries() {
        let s = Pattern::parse("*.Example.com.").unwrap();
        assert!(s.matches("example.com") && s.matches("db.example.com"));
        assert!(!s.matches("badexample.com"));
        let e = Pattern::parse("db.example.com").unwrap();
        assert!(e.matches("db.example.com") && !e.matches("x.db.example.com"));
        for bad in ["", "*.", "a..b", "a b.com", "*x.com"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_chosen_udp_query_is_answered_nxdomain_from_the_resolver_with_its_id_and_question() {
        let q = query("db.example.com");
        let p = udp_packet(&q);
        let mut d = Dns {
            names: vec![Pattern::parse("*.example.com").unwrap()],
            action: Action::NxDomain,
        };
        let Decision::Answer(r) = d.decide(&p) else {
            panic!("not answered")
        };
        assert_eq!(&r[12..16], &[10, 0, 0, 53], "from the resolver");
        assert_eq!(&r[16..20], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([r[20], r[21]]), 53);
        assert_eq!(u16::from_be_bytes([r[22], r[23]]), 40000);
        assert_eq!(fold(sum16(&r[..20], 0)), 0, "IP checksum");
        let dns = &r[28..];
        assert_eq!(&dns[..2], &[0x12, 0x34]);
        assert_eq!(dns[3] & 0x0f, 3);
        assert_eq!(dns[2] & 0x80, 0x80);
        assert_eq!(&dns[12..], &q[12..], "the question");
        // Other names go through; timeouts drop.
        assert_eq!(d.decide(&udp_packet(&query("example.org"))), Decision::Accept);
        d.action = Action::Timeout;
        assert_eq!(d.decide(&p), Decision::Drop);
    }

    #[test]
    fn a_chosen_query_to_an_ipv6_resolver_is_answered_over_ipv6_with_a_valid_udp_checksum() {
        let q = query("db.example.com");
        let udp_len = (8 + q.len()) as u16;
        let client: [u8; 16] = "fd00:77::11".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let resolver: [u8; 16] = "fd00:77::12".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&client);
        p.extend_from_slice(&resolver);
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&q);
        let mut d = Dns {
            names: vec![Pattern::parse("*.example.com").unwrap()],
            action: Action::ServFail,
        };
        let Decision::Answer(r) = d.decide(&p) else {
            panic!("not answered")
        };
        assert_eq!((r[0] >> 4, r[6]), (6, 17));
        assert_eq!(usize::from(u16::from_be_bytes([r[4], r[5]])), r.len() - 40);
        assert_eq!(&r[8..24], &resolver, "from the resolver");
        assert_eq!(&r[24..40], &client);
        assert_eq!(u16::from_be_bytes([r[40], r[41]]), 53);
        assert_eq!(u16::from_be_bytes([r[42], r[43]]), 40000);
        // The receiver's check: the sum over pseudo-header and datagram,
        // checksum included, folds to zero.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&r[8..40]);
        pseudo.extend_from_slice(&((r.len() - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(fold(sum16(&r[40..], sum16(&pseudo, 0))), 0, "UDP checksum");
        let dns = &r[48..];
        assert_eq!((&dns[..2], dns[3] & 0x0f), (&[0x12, 0x34][..], 2));
        assert_eq!(&dns[12..], &q[12..], "the question");
        // An IPv6 resolver in the spec makes an ip6tables line only.
        let w = v1::fault_spec::Kind::Dns(v1::DnsSpec {
            resolvers: vec!["fd00:77::12".into()],
            ..Default::default()
        });
        let lines = plan("t-1", w).unwrap().scope_lines;
        assert!(lines.v4.is_empty() && lines.v6_asked, "{lines:?}");
        assert_eq!(lines.v6[0], "-d fd00:77::12/128 -p udp --dport 53");
    }

    #[test]
    fn answers_are_not_queries_and_bad_specs_are_refused() {
        let mut r = query("a.b");
        r[2] |= 0x80;
        assert_eq!(question(&r), None);
        assert_eq!(question(&query("a.b")[..14]), None);
        let e = plan(
            "t-1",
            v1::fault_spec::Kind::Dns(v1::DnsSpec {
                action: "refuse".into(),
                ..Default::default()
            }),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("nxdomain, servfail or timeout"), "{e}");
    }
}
