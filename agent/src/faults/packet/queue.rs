//! A packet fault's queue thread: reads each queued packet, asks the
//! kind's [`Handler`] what to do, gives the verdict (holding packets back
//! where told), sends duplicates and answers from a marked raw socket; and
//! the fault in place, whose restore removes the rules, then stops the
//! thread, which lets every held packet go.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use faultline_proto::v1;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
use nix::sys::time::TimeSpec;

use super::{remove_script, Decision, Error, Handler, PacketKind, MARK, TABLE};
use crate::faults::{Applied, Report, Restoring};
use crate::firewall::{Family, Firewall};
use crate::nfqueue::{QueueSocket, Verdict};

/// A raw IPv4 socket for packets the agent sends (`IPPROTO_RAW` implies
/// `IP_HDRINCL`: we give the whole IP header), marked with [`MARK`].
pub(super) fn raw_socket() -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    )?;
    socket::setsockopt(&fd, socket::sockopt::Mark, &MARK)?;
    Ok(fd)
}

fn send_raw(raw: &OwnedFd, packet: &[u8]) -> bool {
    if packet.len() < 20 {
        return false;
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    socket::sendto(std::os::fd::AsRawFd::as_raw_fd(raw), packet, &addr, MsgFlags::empty()).is_ok()
}

/// Packets seen and affected by a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub affected: u64,
}

pub(super) fn queue_loop(
    mut sock: QueueSocket,
    raw: OwnedFd,
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
                        send_raw(&raw, &p.payload);
                        r
                    }
                    Decision::Answer(bytes) => {
                        send_raw(&raw, &bytes);
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

    fn objects(&self) -> Vec<String> {
        vec![
            format!("iptables {TABLE} chain {}", self.chain),
            format!("nfqueue {}", self.queue),
        ]
    }

    fn observation(&self, c: Counters) -> v1::observation::Kind {
        (self.kind.wrap)(v1::PacketObservation {
            objects: self.objects(),
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
            observation: Some(self.observation(Counters::default())),
        }
    }

    fn restore(mut self: Box<Self>) -> Restoring {
        let mut errors = Vec::new();
        if let Err(e) = self
            .firewall
            .iptables_restore(Family::V4, &remove_script(&self.interface, &self.chain))
        {
            errors.push(e.to_string());
        }
        let (c, err) = self.stop_thread();
        errors.extend(err);
        let objects = self.objects();
        let observation = self.observation(c);
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
