//! Where the transport header of a queued packet starts, for IPv4 and
//! IPv6: what `corrupt` (which bit may flip), `duplicate` (whole packets
//! only) and `dns` (the UDP/TCP payload) read before they touch a packet.

/// IPv6 extension headers that may come before the transport header
/// (RFC 8200 §4): hop-by-hop options, routing, fragment, destination
/// options. Anything else (ESP, AH, "no next header") ends the walk: the
/// transport header cannot be read.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;
/// Most extension headers walked; a longer chain is left alone.
const MAX_EXTENSIONS: usize = 8;

/// The offset of the transport header and the transport protocol of an
/// IPv4 packet, if it is one and is not a fragment after the first.
pub fn ipv4_transport(p: &[u8]) -> Option<(usize, u8)> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    if ihl < 20 || p.len() < ihl || frag_offset != 0 {
        return None;
    }
    Some((ihl, p[9]))
}

/// The same for an IPv6 packet: after the 40-byte fixed header and the
/// extension headers; `None` for a fragment after the first (its
/// transport header is in the first) or an unreadable chain.
pub fn ipv6_transport(p: &[u8]) -> Option<(usize, u8)> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let mut next = p[6];
    let mut off = 40;
    for _ in 0..MAX_EXTENSIONS {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                // Length in 8-octet units, not counting the first 8.
                let len = (usize::from(*p.get(off + 1)?) + 1) * 8;
                next = *p.get(off)?;
                off += len;
            }
            FRAGMENT => {
                let frag = p.get(off + 2..off + 4)?;
                if u16::from_be_bytes([frag[0], frag[1]]) >> 3 != 0 {
                    return None;
                }
                next = *p.get(off)?;
                off += 8;
            }
            proto => return (off <= p.len()).then_some((off, proto)),
        }
    }
    None
}

/// [`ipv4_transport`] or [`ipv6_transport`], by the version nibble.
pub fn transport(p: &[u8]) -> Option<(usize, u8)> {
    match p.first()? >> 4 {
        4 => ipv4_transport(p),
        6 => ipv6_transport(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_transport_skips_the_options_and_refuses_later_fragments() {
        let mut p = vec![0u8; 28];
        p[0] = 0x46;
        p[9] = 17;
        p.extend([0; 4]);
        assert_eq!(ipv4_transport(&p), Some((24, 17)));
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(ipv4_transport(&p), None);
        assert_eq!(ipv4_transport(&[0x60; 40]), None);
    }

    fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0xfd; 32]);
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn ipv6_transport_walks_extension_headers_and_refuses_later_fragments() {
        assert_eq!(transport(&ipv6(17, &[0; 8])), Some((40, 17)));
        // Hop-by-hop (8 bytes), then destination options (16), then TCP.
        let mut ext = vec![DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1]);
        ext.extend_from_slice(&[0; 14]);
        ext.extend_from_slice(&[0; 20]);
        assert_eq!(transport(&ipv6(HOP_BY_HOP, &ext)), Some((64, 6)));
        // A first fragment is read; a later one is not.
        let first = [17, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(transport(&ipv6(FRAGMENT, &first)), Some((48, 17)));
        let later = [17, 0, 0x05, 0x01, 0, 0, 0, 7];
        assert_eq!(transport(&ipv6(FRAGMENT, &later)), None);
        // A truncated chain, and not IP at all.
        assert_eq!(transport(&ipv6(HOP_BY_HOP, &[6])), None);
        assert_eq!(transport(&[0x20; 40]), None);
        assert_eq!(ipv6_transport(&[0x45; 40]), None);
    }
}
