//! `bandwidth`: limit the rate of every packet leaving an interface of each
//! target (a `tbf` root qdisc the agent removes at restore). Not yet scoped
//! by destination: the interface's whole egress is limited.

use faultline_proto::v1;
use serde::Deserialize;

use super::{Kind, Observed};
use crate::experiment::durations::{fmt_duration, Dur};
use crate::experiment::values::{self, fmt_bytes, RawSize};

/// Parameters of a `bandwidth` fault.
#[derive(Debug, Clone)]
pub struct BandwidthFault {
    /// Empty: the interface of the target's default route.
    pub interface: String,
    pub rate_bps: u64,
    /// 0: the agent's default (rate / 100, at least 16 KiB).
    pub burst: u64,
    pub latency: std::time::Duration,
}

/// Why a written `bandwidth` is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bandwidth.rate {0:?}: write a rate in bits per second with a unit, e.g. 10mbit, 512kbit, 1gbit (at least 8kbit)")]
    Rate(String),
    #[error(transparent)]
    Value(#[from] values::Error),
    #[error("bandwidth.latency {0}: must be within 1ms..=10s")]
    Latency(String),
}

/// A `bandwidth` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBandwidth {
    rate: String,
    interface: Option<String>,
    burst: Option<RawSize>,
    latency: Option<Dur>,
}

/// `10mbit` → 10,000,000 (units bit, kbit, mbit, gbit; decimal, as tc).
pub fn parse_rate(t: &str) -> Option<u64> {
    let t = t.trim().to_ascii_lowercase();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n.trim().to_string(), *m)))?;
    let v: f64 = num.parse().ok()?;
    let bps = v * mult;
    (8_000.0..=1e12).contains(&bps).then_some(bps.round() as u64)
}

impl Kind for BandwidthFault {
    const NAME: &'static str = "bandwidth";
    type Raw = RawBandwidth;
    type Error = Error;
    type Wire = v1::BandwidthSpec;
    type Observation = v1::BandwidthObservation;

    fn from_raw(r: RawBandwidth) -> Result<Self, Error> {
        let rate_bps = parse_rate(&r.rate).ok_or(Error::Rate(r.rate))?;
        let latency = r.latency.map(|d| d.0).unwrap_or(std::time::Duration::from_millis(50));
        if latency < std::time::Duration::from_millis(1) || latency > std::time::Duration::from_secs(10) {
            return Err(Error::Latency(fmt_duration(latency)));
        }
        Ok(BandwidthFault {
            interface: r.interface.unwrap_or_default(),
            rate_bps,
            burst: r.burst.map(|b| b.bytes("bandwidth.burst")).transpose()?.unwrap_or(0),
            latency,
        })
    }

    fn summary(&self) -> String {
        let dev = if self.interface.is_empty() {
            "the default route's interface".to_string()
        } else {
            self.interface.clone()
        };
        let burst = if self.burst == 0 {
            String::new()
        } else {
            format!(", burst {}", fmt_bytes(self.burst))
        };
        format!("limit egress of {dev} to {} bit/s{burst}", self.rate_bps)
    }

    fn to_wire(&self, _peers: &[String]) -> v1::BandwidthSpec {
        v1::BandwidthSpec {
            interface: self.interface.clone(),
            rate_bits_per_second: self.rate_bps,
            burst_bytes: self.burst,
            latency_ms: self.latency.as_millis() as u64,
        }
    }

    fn observe(o: &v1::BandwidthObservation, _state: v1::FaultState, into: &mut Observed) {
        into.objects = vec![o.qdisc.clone()];
        into.set_figure("rate", o.rate_bits_per_second as f64, "bit/s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_bits_per_second_with_tc_units() {
        assert_eq!(parse_rate("10mbit"), Some(10_000_000));
        assert_eq!(parse_rate("512kbit"), Some(512_000));
        assert_eq!(parse_rate("1.5gbit"), Some(1_500_000_000));
        for bad in ["10", "10mb", "1kbit", "fast"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        let f = BandwidthFault::from_raw(serde_norway::from_str("rate: 8mbit\ninterface: eth0\n").unwrap()).unwrap();
        assert_eq!(f.to_wire(&[]).latency_ms, 50);
    }
}
