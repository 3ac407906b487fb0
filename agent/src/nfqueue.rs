//! A minimal client for the kernel's NFQUEUE (`nfnetlink_queue`) protocol.
//!
//! An iptables rule with `-j NFQUEUE --queue-num N` hands each matching
//! packet to whichever netlink socket is bound to queue `N`; the packet
//! stays in the kernel until that socket sends a verdict (accept or drop)
//! for its id. Holding the verdict back is how the latency fault delays
//! packets without copying them: we ask for metadata only (`COPY_META`), so
//! a packet costs a few dozen bytes of netlink traffic however large it is.
//!
//! Verdicts may be given out of order (needed for jitter), and a batch
//! verdict accepts every queued packet up to an id at once (used when the
//! delay is constant and packets leave in arrival order).
//!
//! The packet faults (corrupt, duplicate, dns) need the packet itself: they
//! bind with [`CopyMode::Packet`], read it from `NFQA_PAYLOAD`, and may give the
//! verdict with a changed payload (the kernel then replaces the packet's
//! bytes). Packets are copied after the kernel computed their checksums
//! (`skb_checksum_help` for offloaded ones), so a changed byte is one the
//! receiver's checksum catches.
//!
//! The queue is configured fail-open: if it is full, or the socket cannot
//! take more messages, the kernel lets packets through rather than dropping
//! them, so a slow agent degrades the fault, never the node.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_META: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// What the kernel decides for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
        }
    }
}

/// What the kernel copies to userspace for each queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Ids only (a few dozen bytes per packet).
    Meta,
    /// Ids and the whole packet, from its IP header on.
    Packet,
}

/// A queued packet: its id and, with [`CopyMode::Packet`], its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: u32,
    pub payload: Vec<u8>,
}

/// A netlink socket bound to one NFQUEUE queue number. Dropping it unbinds
/// the queue; the kernel then drops packets still waiting for a verdict, so
/// release them first.
pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netfilter netlink message for the queue subsystem.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(msg_type: u16, flags: u16, seq: u32, queue: u16) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.push(0); // family: AF_UNSPEC
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&queue.to_be_bytes());
        Self { buf }
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

impl QueueSocket {
    /// Opens a socket and binds it to `queue`, asking for packet metadata
    /// only, a kernel-side queue of up to `max_len` packets, and fail-open.
    /// Fails with `EBUSY` if another socket already owns the queue.
    pub fn bind(queue: u16, max_len: u32) -> io::Result<Self> {
        Self::bind_copying(queue, max_len, CopyMode::Meta)
    }

    /// Like [`QueueSocket::bind`], copying what `copy` says.
    pub fn bind_copying(queue: u16, max_len: u32, copy: CopyMode) -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Room for bursts: at 10,000 packets/s a 100 ms delay holds 1,000
        // packets; the socket buffer only carries their metadata.
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBufForce, &(8 << 20));
        let mut s = Self {
            fd,
            queue,
            seq: 0,
            // A copied packet is at most 64 KiB (GSO packets are segmented
            // before they are queued), plus the message's headers.
            buf: vec![0; if copy == CopyMode::Packet { 1 << 18 } else { 1 << 16 }],
        };
        s.config_cmd(NFQNL_CFG_CMD_BIND)?;
        let mut params = Vec::with_capacity(5);
        match copy {
            CopyMode::Meta => {
                params.extend_from_slice(&0u32.to_be_bytes()); // copy range: none
                params.push(NFQNL_COPY_META);
            }
            CopyMode::Packet => {
                params.extend_from_slice(&0xffffu32.to_be_bytes());
                params.push(NFQNL_COPY_PACKET);
            }
        }
        s.request(NFQNL_MSG_CONFIG, |m| m.attr(NFQA_CFG_PARAMS, &params))?;
        s.request(NFQNL_MSG_CONFIG, |m| {
            m.attr(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())
        })?;
        s.request(NFQNL_MSG_CONFIG, |m| {
            m.attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes())
                .attr(NFQA_CFG_MASK, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes())
        })?;
        Ok(s)
    }

    /// The queue number this socket owns.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    fn config_cmd(&mut self, cmd: u8) -> io::Result<()> {
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
        let payload = [cmd, 0, 0, 0];
        self.request(NFQNL_MSG_CONFIG, |m| m.attr(NFQA_CFG_CMD, &payload))
    }

    /// Sends a message with NLM_F_ACK and waits for the kernel's answer.
    fn request(&mut self, msg_type: u16, build: impl FnOnce(Msg) -> Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(Msg::new(msg_type, NLM_F_ACK, seq, self.queue)).finish();
        socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        // Bounded: the kernel answers every request; anything else that
        // arrives first (packets, on a queue that is already live) is skipped.
        for _ in 0..1024 {
            let n = socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let h = &self.buf[off..];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let kind = u16::from_ne_bytes([h[4], h[5]]);
                let rseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && rseq == seq && len >= NLMSG_HDRLEN + 4 {
                    let errno = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-errno))
                    };
                }
                off += align4(len);
            }
        }
        Err(io::Error::other("no answer from nfnetlink_queue"))
    }

    /// Reads every packet notification available without blocking and
    /// appends the packet ids to `ids`, in arrival order.
    pub fn recv_ids(&mut self, ids: &mut Vec<u32>) -> io::Result<()> {
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                // The socket buffer overflowed: those packets went through
                // (fail-open) or wait for us under ids we will see later.
                Err(Errno::ENOBUFS) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            parse_packet_ids(&self.buf[..n], ids);
        }
    }

    /// Like [`QueueSocket::recv_ids`], with each packet's bytes.
    pub fn recv_packets(&mut self, out: &mut Vec<Packet>) -> io::Result<()> {
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::ENOBUFS) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            parse_packets(&self.buf[..n], out);
        }
    }

    /// Accepts one packet with `payload` in place of its bytes.
    pub fn accept_changed(&mut self, id: u32, payload: &[u8]) -> io::Result<()> {
        if payload.len() > usize::from(u16::MAX) - 4 {
            return Err(io::Error::other(format!(
                "payload of {} bytes is too long",
                payload.len()
            )));
        }
        let msg = Msg::new(NFQNL_MSG_VERDICT, 0, 0, self.queue)
            .attr(NFQA_VERDICT_HDR, &verdict_hdr(id, Verdict::Accept))
            .attr(NFQA_PAYLOAD, payload)
            .finish();
        loop {
            match socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => return r.map(|_| ()).map_err(Into::into),
            }
        }
    }

    /// Gives one packet its verdict.
    pub fn verdict(&mut self, id: u32, verdict: Verdict) -> io::Result<()> {
        self.send_verdict(NFQNL_MSG_VERDICT, id, verdict)
    }

    /// Gives every packet still queued with an id up to `id` the same verdict.
    pub fn verdict_batch(&mut self, id: u32, verdict: Verdict) -> io::Result<()> {
        self.send_verdict(NFQNL_MSG_VERDICT_BATCH, id, verdict)
    }

    fn send_verdict(&mut self, kind: u16, id: u32, verdict: Verdict) -> io::Result<()> {
        let msg = Msg::new(kind, 0, 0, self.queue)
            .attr(NFQA_VERDICT_HDR, &verdict_hdr(id, verdict))
            .finish();
        loop {
            match socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => return r.map(|_| ()).map_err(Into::into),
            }
        }
    }
}

/// struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
fn verdict_hdr(id: u32, verdict: Verdict) -> [u8; 8] {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&verdict.code().to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    hdr
}

impl AsFd for QueueSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for QueueSocket {
    fn drop(&mut self) {
        let _ = self.config_cmd(NFQNL_CFG_CMD_UNBIND);
    }
}

/// Extracts packet ids from a buffer of netlink messages.
fn parse_packet_ids(buf: &[u8], ids: &mut Vec<u32>) {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let h = &buf[off..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return;
        }
        if kind == NLMSG_DONE {
            return;
        }
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            let mut a = NLMSG_HDRLEN + NFGENMSG_LEN;
            while a + 4 <= len {
                let alen = u16::from_ne_bytes([h[a], h[a + 1]]) as usize;
                let akind = u16::from_ne_bytes([h[a + 2], h[a + 3]]) & 0x3fff;
                if alen < 4 || a + alen > len {
                    break;
                }
                // struct nfqnl_msg_packet_hdr { be32 packet_id; be16 hw_protocol; u8 hook; }
                if akind == NFQA_PACKET_HDR && alen >= 8 {
                    ids.push(u32::from_be_bytes([h[a + 4], h[a + 5], h[a + 6], h[a + 7]]));
                    break;
                }
                a += align4(alen);
            }
        }
        off += align4(len);
    }
}

/// Extracts packets (id and payload) from a buffer of netlink messages; a
/// message without a payload attribute gives an empty payload.
fn parse_packets(buf: &[u8], out: &mut Vec<Packet>) {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let h = &buf[off..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        if len < NLMSG_HDRLEN || off + len > buf.len() || kind == NLMSG_DONE {
            return;
        }
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            let mut id = None;
            let mut payload = Vec::new();
            let mut a = NLMSG_HDRLEN + NFGENMSG_LEN;
            while a + 4 <= len {
                let alen = u16::from_ne_bytes([h[a], h[a + 1]]) as usize;
                let akind = u16::from_ne_bytes([h[a + 2], h[a + 3]]) & 0x3fff;
                if alen < 4 || a + alen > len {
                    break;
                }
                if akind == NFQA_PACKET_HDR && alen >= 8 {
                    id = Some(u32::from_be_bytes([h[a + 4], h[a + 5], h[a + 6], h[a + 7]]));
                } else if akind == NFQA_PAYLOAD {
                    payload = h[a + 4..a + alen].to_vec();
                }
                a += align4(alen);
            }
            if let Some(id) = id {
                out.push(Packet { id, payload });
            }
        }
        off += align4(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_msg(id: u32) -> Vec<u8> {
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(3);
        // A mark attribute (NFQA_MARK) first, so the parser has to skip one.
        Msg::new(NFQNL_MSG_PACKET, 0, 0, 7)
            .attr(3, &5u32.to_be_bytes())
            .attr(NFQA_PACKET_HDR, &hdr)
            .finish()
    }

    #[test]
    fn packet_ids_are_read_from_batched_messages_in_order() {
        let mut buf = packet_msg(41);
        buf.extend(packet_msg(42));
        buf.extend(packet_msg(7));
        let mut ids = Vec::new();
        parse_packet_ids(&buf, &mut ids);
        assert_eq!(ids, vec![41, 42, 7]);
    }

    #[test]
    fn packets_are_read_with_their_payload_and_a_changed_payload_is_sent_as_nfqa_payload() {
        let mut hdr = 9u32.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(3);
        let mut buf = Msg::new(NFQNL_MSG_PACKET, 0, 0, 7)
            .attr(NFQA_PACKET_HDR, &hdr)
            .attr(3, &5u32.to_be_bytes())
            .attr(NFQA_PAYLOAD, &[0x45, 0, 0, 21, 1])
            .finish();
        buf.extend(packet_msg(10));
        let mut out = Vec::new();
        parse_packets(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                Packet {
                    id: 9,
                    payload: vec![0x45, 0, 0, 21, 1]
                },
                Packet {
                    id: 10,
                    payload: vec![]
                }
            ]
        );
        let m = Msg::new(NFQNL_MSG_VERDICT, 0, 0, 1)
            .attr(NFQA_VERDICT_HDR, &verdict_hdr(9, Verdict::Accept))
            .attr(NFQA_PAYLOAD, &[1, 2, 3])
            .finish();
        // header 16 + nfgenmsg 4 + verdict attr 12 + payload attr 4+3 padded to 8.
        assert_eq!(m.len(), 40);
        assert_eq!(u16::from_ne_bytes([m[32], m[33]]), 7);
        assert_eq!(u16::from_ne_bytes([m[34], m[35]]), NFQA_PAYLOAD);
        assert_eq!(&m[36..39], &[1, 2, 3]);
    }

    #[test]
    fn truncated_messages_are_ignored_not_misread() {
        let buf = packet_msg(41);
        let mut ids = Vec::new();
        parse_packet_ids(&buf[..buf.len() - 3], &mut ids);
        assert!(ids.is_empty());
    }

    #[test]
    fn verdict_message_layout_matches_the_kernel_structs() {
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&1u32.to_be_bytes());
        hdr[4..].copy_from_slice(&99u32.to_be_bytes());
        let m = Msg::new(NFQNL_MSG_VERDICT_BATCH, 0, 0, 0x4601)
            .attr(NFQA_VERDICT_HDR, &hdr)
            .finish();
        assert_eq!(m.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (3 << 8) | 3);
        assert_eq!(&m[18..20], &0x4601u16.to_be_bytes());
        assert_eq!(&m[24..28], &1u32.to_be_bytes());
        assert_eq!(&m[28..32], &99u32.to_be_bytes());
    }
}
