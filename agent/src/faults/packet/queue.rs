//! A packet fault's queue thread: reads each queued packet, asks the
//! kind's [`Handler`] what to do, gives the verdict (holding packets back
//! where told), sends duplicates and answers from a marked raw socket of
//! the packet's family; and
//! the fault in place, whose restore removes the rules, then stops the
//! thread, which lets every held packet go.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use faultline_proto::v1;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6};
use nix::sys::time::TimeSpec;

use super::{remove_script, Decision, Error, Handler, PacketKind, MARK, TABLE};
use crate::faults::{Applied, Report, Restoring};
use crate::firewall::{Family, Firewall};
use crate::nfqueue::{QueueSocket, Verdict};

/// A raw socket of `family` for packets the agent sends, marked with
/// [`MARK`]. `IPPROTO_RAW` implies `IP_HDRINCL` for IPv4, and Linux sets
/// the same "header included" mode for an `AF_INET6` `IPPROTO_RAW`
/// socket: we give the whole IP header either way, checksums included.
fn raw_socket(family: AddressFamily) -> nix::Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw)?;
    socket::setsockopt(&fd, socket::sockopt::Mark, &MARK)?;
    Ok(fd)
}

/// The raw sockets of the families a fault takes.
pub(super) struct RawSockets {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
}

impl RawSockets {
    pub(super) fn open(families: &[Family]) -> nix::Result<Self> {
        let open = |f: Family, af| families.contains(&f).then(|| raw_socket(af)).transpose();
        Ok(RawSockets {
            v4: open(Family::V4, AddressFamily::Inet)?,
            v6: open(Family::V6, AddressFamily::Inet6)?,
        })
    }

    /// Sends a whole IPv4 or IPv6 packet to its destination address.
    fn send(&self, packet: &[u8]) -> bool {
        let sent = match (packet.first().map(|b| b >> 4), &self.v4, &self.v6) {
            (Some(4), Some(raw), _) if packet.len() >= 20 => {
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
                socket::sendto(std::os::fd::AsRawFd::as_raw_fd(raw), packet, &addr, MsgFlags::empty())
            }
            (Some(6), _, Some(raw)) if packet.len() >= 40 => {
                let mut dst = [0u8; 16];
                dst.copy_from_slice(&packet[24..40]);
                // Port 0: the protocol is the socket's (IPPROTO_RAW).
                let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::from(dst), 0, 0, 0));
                socket::sendto(std::os::fd::AsRawFd::as_raw_fd(raw), packet, &addr, MsgFlags::empty())
            }
            _ => return false,
        };
        sent.is_ok()
    }
}

/// Packets seen and affected by a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub affected: u64,
}

pub(super) fn queue_loop(
    mut sock: QueueSocket,
    raw: RawSockets,
    stop: Arc<EventFd>,
    mut handler: Box<dyn Handler>,
) -> (Counters, Option<String>) {
    let mut held: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut packets = Vec::with_capacity(256);
    let mut c = Counters::default();
    let mut error = None;
    loop {
        let timeout = held
            .peek()
            .map(|Reverse((t, _))| TimeSpec::from_duration(t.saturating_duration_since(Instant::now())));
        let (ready_sock, ready_stop) = {
            let mut fds = [
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match nix::poll::ppoll(&mut fds, timeout, None) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error = Some(format!("poll: {e}"));
                    break;
                }
            }
            (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false))
        };
        if ready_stop {
            break;
        }
        if ready_sock {
            packets.clear();
            if let Err(e) = sock.recv_packets(&mut packets) {
                error = Some(format!("receiving from the queue: {e}"));
                break;
            }
            let now = Instant::now();
            for p in packets.drain(..) {
                c.seen += 1;
                let d = handler.decide(&p.payload);
                if d != Decision::Accept {
                    c.affected += 1;
                }
                let _ = match d {
                    Decision::Accept => sock.verdict(p.id, Verdict::Accept),
                    Decision::Drop => sock.verdict(p.id, Verdict::Drop),
                    // A packet must never be left without a verdict: if the
                    // changed copy cannot be sent, the original goes.
                    Decision::Change(bytes) => sock
                        .accept_changed(p.id, &bytes)
                        .or_else(|_| sock.verdict(p.id, Verdict::Accept)),
                    Decision::Hold(d) => {
                        held.push(Reverse((now + d, p.id)));
                        Ok(())
                    }
                    Decision::Duplicate => {
                        let r = sock.verdict(p.id, Verdict::Accept);
                        raw.send(&p.payload);
                        r
                    }
                    Decision::Answer(bytes) => {
                        raw.send(&bytes);
                        sock.verdict(p.id, Verdict::Drop)
                    }
                };
            }
        }
        let now = Instant::now();
        while let Some(Reverse((t, id))) = held.peek().copied() {
            if t > now {
                break;
            }
            held.pop();
            let _ = sock.verdict(id, Verdict::Accept);
        }
    }
    // Stopping: the rules are gone; let what is held and waiting go now
    // rather than have the kernel drop it on unbind.
    packets.clear();
    let _ = sock.recv_packets(&mut packets);
    for id in held
        .drain()
        .map(|Reverse((_, id))| id)
        .chain(packets.iter().map(|p| p.id))
    {
        let _ = sock.verdict(id, Verdict::Accept);
    }
    (c, error)
}

pub(super) struct AppliedPacket {
    pub(super) kind: &'static PacketKind,
    pub(super) firewall: Arc<dyn Firewall>,
    pub(super) chain: String,
    /// The families whose chain is in place.
    pub(super) families: Vec<Family>,
    pub(super) interface: Option<String>,
    pub(super) queue: u16,
    pub(super) effect: String,
    pub(super) stop: Arc<EventFd>,
    pub(super) thread: Option<JoinHandle<(Counters, Option<String>)>>,
}

impl AppliedPacket {
    pub(super) fn stop_thread(&mut self) -> (Counters, Option<String>) {
        let _ = self.stop.write(1);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => (Counters::default(), Some("the queue thread panicked".into())),
            None => (Counters::default(), None),
        }
    }

    /// Removes the chain of every family in place; the errors, if any.
    pub(super) fn remove_rules(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for f in std::mem::take(&mut self.families) {
            if let Err(e) = self
                .firewall
                .iptables_restore(f, &remove_script(&self.interface, &self.chain))
            {
                // Still listed: the undo journal keeps it for a later try.
                self.families.push(f);
                errors.push(e.to_string());
            }
        }
        errors
    }

    fn objects(&self) -> Vec<String> {
        vec![
            format!("{} {TABLE} chain {}", super::tools(&self.families), self.chain),
            format!("nfqueue {}", self.queue),
        ]
    }

    fn observation(&self, objects: Vec<String>, c: Counters) -> v1::observation::Kind {
        (self.kind.wrap)(v1::PacketObservation {
            objects,
            packets_seen: c.seen,
            packets_affected: c.affected,
            uncounted: false,
        })
    }
}

impl Drop for AppliedPacket {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
    }
}

impl Applied for AppliedPacket {
    fn backend(&self) -> String {
        "nfqueue".into()
    }

    fn injected(&self) -> Report {
        Report {
            detail: format!("{}, with nfqueue: {}", self.effect, self.objects().join(", ")),
            observation: Some(self.observation(self.objects(), Counters::default())),
        }
    }

    fn restore(mut self: Box<Self>) -> Restoring {
        // Named before removal, for the report.
        let objects = self.objects();
        let mut errors = self.remove_rules();
        let (c, err) = self.stop_thread();
        errors.extend(err);
        let observation = self.observation(objects.clone(), c);
        Box::pin(async move {
            if !errors.is_empty() {
                return Err(Error::Failed(errors.join("; ")).into());
            }
            Ok(Report {
                detail: format!(
                    "removed {}; {} packets seen, {} affected",
                    objects.join(", "),
                    c.seen,
                    c.affected
                ),
                observation: Some(observation),
            })
        })
    }
}
