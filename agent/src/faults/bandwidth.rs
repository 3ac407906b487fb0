//! `bandwidth` fault: limit the rate of every packet leaving an interface
//! with a `tbf` (token bucket filter) root qdisc; restore deletes it.
//!
//! The qdisc's handle is `fb<8 bits of the fault id's hash>:` (the latency
//! netem backend's are `fa..:`), which the orphan sweep recognises. Like
//! netem, the fault only takes an interface whose root qdisc is the
//! kernel's default: it never replaces a qdisc it did not create, and a
//! second faultline qdisc on the same interface is refused.
//!
//! Not yet: scoping by destination or port (every packet leaving the
//! interface is limited, the agent's own traffic included), ingress.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use faultline_proto::v1;

use crate::faults::latency::netem::{default_route_interface, OWN_PRIO};
use crate::faults::latency::short_hash;
use crate::faults::{self, Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::journal::{Object, Owned};
use crate::qdisc::{Parent, QdiscKind, Tc};

const KIND_NAME: &str = "bandwidth";

/// The major handles of bandwidth qdiscs: `0xfb00 | hash`.
pub const OWN_TBF: u16 = 0xfb00;

/// Errors of the bandwidth fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid bandwidth spec: {0}")]
    InvalidSpec(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("tc: {0}")]
    Tc(#[from] crate::qdisc::Error),
}

impl From<Error> for faults::Error {
    fn from(e: Error) -> Self {
        let refusal = matches!(e, Error::InvalidSpec(_) | Error::Refused(_));
        faults::Error::of(e, refusal)
    }
}

/// A validated bandwidth limit.
#[derive(Debug, Clone, PartialEq)]
pub struct BandwidthSpec {
    pub interface: Option<String>,
    pub rate_bps: u64,
    pub burst: u64,
    pub latency: Duration,
}

impl TryFrom<v1::BandwidthSpec> for BandwidthSpec {
    type Error = Error;

    fn try_from(w: v1::BandwidthSpec) -> Result<Self, Error> {
        if w.rate_bits_per_second < 8_000 {
            return Err(Error::InvalidSpec(format!(
                "rate {} bit/s: at least 8000 (8kbit)",
                w.rate_bits_per_second
            )));
        }
        if !w.interface.is_empty()
            && (w.interface.len() > 15
                || !w
                    .interface
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)))
        {
            return Err(Error::InvalidSpec(format!(
                "interface {:?} is not an interface name",
                w.interface
            )));
        }
        let burst = if w.burst_bytes == 0 {
            (w.rate_bits_per_second / 8 / 100).max(16 << 10)
        } else {
            w.burst_bytes
        };
        let latency = Duration::from_millis(if w.latency_ms == 0 { 50 } else { w.latency_ms });
        Ok(BandwidthSpec {
            interface: (!w.interface.is_empty()).then_some(w.interface),
            rate_bps: w.rate_bits_per_second,
            burst,
            latency,
        })
    }
}

/// The qdisc handle of a fault.
pub fn handle(fault_id: &str) -> u16 {
    OWN_TBF | (short_hash(fault_id) & 0xff) as u16
}

pub const KIND: Registration = Registration {
    name: KIND_NAME,
    owns: &[Owned::RootQdiscs {
        mask: 0xff00,
        handle: OWN_TBF,
    }],
    takes: |w| matches!(w, v1::fault_spec::Kind::Bandwidth(_)),
    backend: "tbf",
    build: |s: &Setup| Arc::new(Bandwidth { tc: s.tc.clone() }),
};

struct Bandwidth {
    tc: Option<Arc<dyn Tc>>,
}

impl FaultKind for Bandwidth {
    fn capabilities(&self) -> Vec<String> {
        match self.tc {
            Some(_) => vec![KIND_NAME.into()],
            None => vec![],
        }
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &crate::faults::Place,
    ) -> faults::Result<Box<dyn Prepared>> {
        crate::faults::refuse_containers(KIND.name, place)?;
        let v1::fault_spec::Kind::Bandwidth(w) = spec else {
            return Err(Error::InvalidSpec("not a bandwidth spec".into()).into());
        };
        let spec = BandwidthSpec::try_from(w)?;
        faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let Some(tc) = self.tc.clone() else {
            return Err(Error::Refused("tc is not installed".into()).into());
        };
        let dev = match &spec.interface {
            Some(i) => i.clone(),
            None => default_route_interface(Path::new("/"))
                .ok_or_else(|| Error::Refused("this node has no IPv4 default route; set interface".into()))?,
        };
        match tc.root_qdisc(&dev).map_err(Error::from)? {
            Some(q) if q.handle & 0xff00 == OWN_TBF || q.handle & 0xff00 == OWN_PRIO => {
                return Err(Error::Refused(format!(
                    "another faultline fault (qdisc {:x}:) already holds the root qdisc of {dev}",
                    q.handle
                ))
                .into())
            }
            Some(q) if q.handle != 0 => {
                return Err(Error::Refused(format!(
                    "the root qdisc of {dev} is {} {:x}:, which faultline did not create; refusing to replace it",
                    q.kind, q.handle
                ))
                .into())
            }
            _ => {}
        }
        Ok(Box::new(PreparedBandwidth {
            handle: handle(fault_id),
            dev,
            spec,
            tc,
        }))
    }
}

struct PreparedBandwidth {
    spec: BandwidthSpec,
    dev: String,
    handle: u16,
    tc: Arc<dyn Tc>,
}

impl Prepared for PreparedBandwidth {
    fn undo_objects(&self) -> Vec<Object> {
        vec![Object::Qdisc {
            dev: self.dev.clone(),
            handle: self.handle,
        }]
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        Ok((
            format!(
                "would limit {} to {} bit/s (tbf {:x}:, burst {} B)",
                self.dev, self.spec.rate_bps, self.handle, self.spec.burst
            ),
            "tbf".into(),
        ))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let kind = QdiscKind::Tbf {
            rate_bps: self.spec.rate_bps,
            burst: self.spec.burst,
            latency: self.spec.latency,
        };
        self.tc
            .add_qdisc(&self.dev, Parent::Root, self.handle, &kind)
            .map_err(Error::from)?;
        Ok(Box::new(AppliedBandwidth {
            observation: v1::BandwidthObservation {
                qdisc: format!("qdisc tbf {:x}: on {}", self.handle, self.dev),
                interface: self.dev.clone(),
                rate_bits_per_second: self.spec.rate_bps,
            },
            dev: self.dev,
            handle: self.handle,
            tc: self.tc,
        }))
    }
}

struct AppliedBandwidth {
    observation: v1::BandwidthObservation,
    dev: String,
    handle: u16,
    tc: Arc<dyn Tc>,
}

impl Applied for AppliedBandwidth {
    fn backend(&self) -> String {
        "tbf".into()
    }

    fn injected(&self) -> Report {
        Report {
            detail: format!(
                "limited {} to {} bit/s ({})",
                self.dev, self.observation.rate_bits_per_second, self.observation.qdisc
            ),
            observation: Some(v1::observation::Kind::Bandwidth(self.observation.clone())),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        // Only ours: a root qdisc someone replaced it with stays.
        let result = match self.tc.root_qdisc(&self.dev) {
            Ok(Some(q)) if q.handle == self.handle => self.tc.delete_root(&self.dev).map_err(Error::from),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::from(e)),
        };
        let o = self.observation;
        Box::pin(async move {
            result?;
            Ok(Report {
                detail: format!("removed {}", o.qdisc),
                observation: Some(v1::observation::Kind::Bandwidth(o)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_below_8kbit_and_bad_interface_names_are_refused_and_burst_has_a_floor() {
        let s = BandwidthSpec::try_from(v1::BandwidthSpec {
            rate_bits_per_second: 1_000_000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((s.burst, s.latency), (16 << 10, Duration::from_millis(50)));
        for w in [
            v1::BandwidthSpec {
                rate_bits_per_second: 100,
                ..Default::default()
            },
            v1::BandwidthSpec {
                rate_bits_per_second: 1_000_000,
                interface: "eth0; rm".into(),
                ..Default::default()
            },
        ] {
            assert!(BandwidthSpec::try_from(w).is_err());
        }
    }

    #[test]
    fn the_tbf_command_line_names_rate_burst_and_latency() {
        let args = crate::qdisc::qdisc_args(
            "eth0",
            Parent::Root,
            handle("r1-1"),
            &QdiscKind::Tbf {
                rate_bps: 8_000_000,
                burst: 16384,
                latency: Duration::from_millis(50),
            },
        );
        let line = args.join(" ");
        assert!(line.starts_with("qdisc add dev eth0 root handle fb"), "{line}");
        assert!(
            line.ends_with("tbf rate 8000000bit burst 16384 latency 50000us"),
            "{line}"
        );
    }
}
