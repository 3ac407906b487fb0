//! `latency`: delay (and optionally drop) the packets a target sends,
//! matched by destination (zones resolved by the coordinator, CIDRs),
//! ports and protocol. The agent uses `tc netem` or an NFQUEUE queue.

use std::time::Duration;

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::durations::{fmt_duration, Dur};
use crate::experiment::peers::{self, check_ports, join_ports, Peers, RawPeers};
use crate::experiment::values::RawRate;

/// Parameters of a `latency` fault (egress of the target).
#[derive(Debug, Clone)]
pub struct LatencyFault {
    pub delay: Duration,
    pub jitter: Duration,
    /// Percent of matching packets dropped, 0..=100.
    pub loss_percent: f64,
    pub interface: Option<String>,
    /// Destinations; empty means any.
    pub to: Peers,
    pub dst_ports: Vec<u16>,
    pub src_ports: Vec<u16>,
    /// tcp, udp or icmp; `None` means any.
    pub protocol: Option<String>,
    /// netem or nfqueue; `None` lets the agent choose.
    pub backend: Option<String>,
}

/// Longest `latency.delay`: 10 s.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Why a written `latency` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("latency.loss {0:?}: write a percentage, e.g. \"10%\" or 10")]
    LossText(String),
    #[error("latency.loss {0}: must be within 0..100 (percent)")]
    LossRange(f64),
    #[error("latency: set delay (e.g. delay: 100ms) and/or loss (e.g. loss: \"10%\")")]
    Nothing,
    #[error("latency.delay {}: at most 10s", fmt_duration(*.0))]
    DelayTooLong(Duration),
    #[error("latency.jitter {} is larger than the delay {}", fmt_duration(*.jitter), fmt_duration(*.delay))]
    Jitter { jitter: Duration, delay: Duration },
    #[error("latency.interface {0:?} is not an interface name")]
    Interface(String),
    #[error("latency.protocol {0:?}: use tcp, udp or icmp (or leave it out for any)")]
    Protocol(String),
    #[error(transparent)]
    Peers(#[from] peers::Error),
    #[error("latency: icmp has no ports; remove ports/source_ports or use tcp/udp")]
    IcmpPorts,
    #[error("latency.backend {0:?}: use netem, nfqueue or auto")]
    Backend(String),
}

/// A `latency` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatency {
    delay: Option<Dur>,
    jitter: Option<Dur>,
    loss: Option<RawRate>,
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

impl Kind for LatencyFault {
    const NAME: &'static str = "latency";
    type Raw = RawLatency;
    type Error = Error;
    type Wire = v1::LatencySpec;
    type Observation = v1::LatencyObservation;

    fn from_raw(l: RawLatency) -> Result<Self, Error> {
        let delay = l.delay.map(|d| d.0).unwrap_or(Duration::ZERO);
        let jitter = l.jitter.map(|d| d.0).unwrap_or(Duration::ZERO);
        let loss_percent = match l.loss {
            None => 0.0,
            Some(RawRate::Fraction(f)) => f,
            Some(RawRate::Text(t)) => RawRate::percent_text(&t).ok_or(Error::LossText(t))?,
        };
        if !(0.0..=100.0).contains(&loss_percent) {
            return Err(Error::LossRange(loss_percent));
        }
        if delay.is_zero() && loss_percent == 0.0 {
            return Err(Error::Nothing);
        }
        if delay > MAX_DELAY {
            return Err(Error::DelayTooLong(delay));
        }
        if jitter > delay {
            return Err(Error::Jitter { jitter, delay });
        }
        if let Some(i) = &l.interface {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', ':']) {
                return Err(Error::Interface(i.clone()));
            }
        }
        let protocol = match l.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("any") | Some("all") => None,
            Some(p @ ("tcp" | "udp" | "icmp")) => Some(p.to_string()),
            Some(p) => return Err(Error::Protocol(p.to_string())),
        };
        check_ports("latency.ports", &l.ports)?;
        check_ports("latency.source_ports", &l.source_ports)?;
        if protocol.as_deref() == Some("icmp") && !(l.ports.is_empty() && l.source_ports.is_empty()) {
            return Err(Error::IcmpPorts);
        }
        let backend = match l.backend.as_deref() {
            None | Some("auto") => None,
            Some(b @ ("netem" | "nfqueue")) => Some(b.to_string()),
            Some(b) => return Err(Error::Backend(b.to_string())),
        };
        Ok(LatencyFault {
            delay,
            jitter,
            loss_percent,
            interface: l.interface,
            to: l.to.check("latency.to")?,
            dst_ports: l.ports,
            src_ports: l.source_ports,
            protocol,
            backend,
        })
    }

    fn summary(&self) -> String {
        let mut parts = vec![format!("delay {}", fmt_duration(self.delay))];
        if !self.jitter.is_zero() {
            parts.push(format!("jitter {}", fmt_duration(self.jitter)));
        }
        if self.loss_percent > 0.0 {
            parts.push(format!("loss {}%", self.loss_percent));
        }
        parts.push(format!("to {}", self.to));
        if let Some(i) = &self.interface {
            parts.push(format!("via {i}"));
        }
        if let Some(p) = &self.protocol {
            parts.push(p.clone());
        }
        if !self.dst_ports.is_empty() {
            parts.push(format!("ports {}", join_ports(&self.dst_ports)));
        }
        if !self.src_ports.is_empty() {
            parts.push(format!("source ports {}", join_ports(&self.src_ports)));
        }
        if let Some(b) = &self.backend {
            parts.push(format!("backend {b}"));
        }
        parts.join(" ")
    }

    fn to_wire(&self, peers: &[String]) -> v1::LatencySpec {
        let ports = |p: &[u16]| p.iter().map(|p| u32::from(*p)).collect::<Vec<u32>>();
        v1::LatencySpec {
            delay_us: self.delay.as_micros() as u64,
            jitter_us: self.jitter.as_micros() as u64,
            loss_percent: self.loss_percent,
            interface: self.interface.clone().unwrap_or_default(),
            destinations: peers.to_vec(),
            dst_ports: ports(&self.dst_ports),
            src_ports: ports(&self.src_ports),
            protocol: self.protocol.clone().unwrap_or_default(),
            backend: self.backend.clone().unwrap_or_default(),
        }
    }

    fn peers(&self) -> Option<&Peers> {
        Some(&self.to)
    }

    /// A requested backend must be advertised as `latency:<backend>`.
    fn runs_on(&self, caps: &[String]) -> bool {
        match &self.backend {
            Some(b) => caps.iter().any(|c| *c == format!("{}:{b}", Self::NAME)),
            None => caps
                .iter()
                .any(|c| c == Self::NAME || c.starts_with(&format!("{}:", Self::NAME))),
        }
    }

    fn requirement(&self) -> String {
        match &self.backend {
            Some(b) => format!("{} (backend {b})", Self::NAME),
            None => Self::NAME.to_string(),
        }
    }

    /// The packet counters are final only in the status of the restore.
    fn observe(l: &v1::LatencyObservation, state: v1::FaultState, into: &mut Observed) {
        into.objects = l.objects.clone();
        if state != v1::FaultState::Injected {
            into.packets = Some((l.packets_delayed, l.packets_dropped));
            into.set_figure("delayed", l.packets_delayed as f64, "packets");
            into.set_figure("dropped", l.packets_dropped as f64, "packets");
        }
    }
}
