//! Probes, one kind per module, and the runner that samples them. A probe
//! kind's module owns its YAML (with its validation), its domain type and
//! its check; this module only lists the kinds and dispatches to them.
//!
//! # Adding a probe kind
//!
//! A new kind `foo` touches exactly `coordinator/src/probes/foo.rs`
//! (implementing [`Kind`]), its `pub mod foo;` and one line in
//! [`probe_kinds!`] below, an example that uses it in `experiments/`, and
//! its section in the README. Probes run on the coordinator, so neither
//! the proto nor the agent changes.

pub mod command;
pub mod grpc;
pub mod http;
pub mod prometheus;
pub mod runner;
pub mod tcp;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

pub use runner::{check_once, start, Samples};

use crate::experiment::durations::{
    fmt_duration, Dur, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, MAX_TIMEOUT, MAX_WINDOW, MIN_INTERVAL,
};
use crate::experiment::tolerances::ToleranceSpec;
use crate::experiment::{Guardrail, Probe};

/// What the checks of every probe kind share: one HTTP client per run, so
/// connections are reused across samples.
#[derive(Clone)]
pub struct Clients {
    pub http: reqwest::Client,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            http: tls::default_client(),
        }
    }
}

/// What one successful check measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// The check held; the kind measures no value (http, tcp, command).
    Done,
    /// The check held and measured this value (prometheus).
    Value(f64),
    /// The check is not counted: no sample is recorded (prometheus'
    /// `on_empty: skip`).
    Skipped,
}

/// What every probe kind provides.
pub trait Kind: Sized {
    /// The kind's name: its key in experiment files (equal to its module's
    /// name) and in reports.
    const NAME: &'static str;
    /// The probe as written under its key, e.g. `tcp: { address: ... }`.
    type Raw: serde::de::DeserializeOwned;
    /// Why a written probe is refused, in the file's words.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Why one check failed; its text is the sample's error in reports.
    type Failure: std::error::Error;

    /// Checks what serde cannot.
    fn from_raw(raw: Self::Raw) -> Result<Self, Self::Error>;

    /// What the probe measures (URL, address, command), for reports.
    fn target(&self) -> String;

    /// One check, bounded by `timeout`.
    fn check(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> impl Future<Output = Result<Reading, Self::Failure>> + Send;

    /// The value a failed check measured (a metric out of its bounds), so
    /// reports can show it. By default, none.
    fn failure_value(_failure: &Self::Failure) -> Option<f64> {
        None
    }
}

/// Lists the kinds: `module => Variant(module::Type)`, in the order the
/// kinds are named in messages; the YAML key is the module's name.
macro_rules! probe_kinds {
    ($($module:ident => $variant:ident($ty:ty)),+ $(,)?) => {
        /// A probe's kind and its parameters.
        #[derive(Debug, Clone)]
        pub enum ProbeKind {
            $($variant($ty),)+
        }

        /// The kinds' names, in the order of [`ProbeKind`].
        pub const NAMES: &[&str] = &[$(<$ty as Kind>::NAME,)+];

        #[cfg(test)]
        const KEYS: &[&str] = &[$(stringify!($module),)+];

        /// Why one check of a probe failed.
        #[derive(Debug, thiserror::Error)]
        pub enum Failure {
            $(#[error(transparent)] $variant(<$ty as Kind>::Failure),)+
            /// The check did not finish within the probe's timeout.
            #[error("timeout")]
            Timeout,
        }

        impl Failure {
            /// The value the failed check measured, if any.
            pub fn value(&self) -> Option<f64> {
                match self {
                    $(Failure::$variant(f) => <$ty as Kind>::failure_value(f),)+
                    Failure::Timeout => None,
                }
            }
        }

        /// A probe as written.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawProbe {
            name: String,
            interval: Option<Dur>,
            timeout: Option<Dur>,
            $($module: Option<<$ty as Kind>::Raw>,)+
            #[serde(default)]
            tolerances: Vec<ToleranceSpec>,
            /// Run once per group of `hypothesis.groups` (see
            /// [`crate::experiment::groups`]). By default, false.
            #[serde(default)]
            per_group: bool,
        }

        impl RawProbe {
            fn kinds_written(&self) -> usize {
                0 $(+ usize::from(self.$module.is_some()))+
            }

            /// The first kind written, checked.
            fn take_kind(&mut self) -> Option<Result<ProbeKind, BoxError>> {
                $(
                    if let Some(raw) = self.$module.take() {
                        return Some(<$ty as Kind>::from_raw(raw).map(ProbeKind::$variant).map_err(Into::into));
                    }
                )+
                None
            }
        }

        impl ProbeKind {
            /// The kind's name (see [`Kind::NAME`]).
            pub fn name(&self) -> &'static str {
                match self {
                    $(ProbeKind::$variant(_) => <$ty as Kind>::NAME,)+
                }
            }

            /// What the probe measures, for reports.
            pub fn target(&self) -> String {
                match self {
                    $(ProbeKind::$variant(p) => p.target(),)+
                }
            }

            /// One check, bounded by `timeout`.
            pub async fn check(&self, clients: &Clients, timeout: Duration) -> Result<Reading, Failure> {
                match self {
                    $(ProbeKind::$variant(p) => p.check(clients, timeout).await.map_err(Failure::$variant),)+
                }
            }
        }
    };
}

probe_kinds! {
    http => Http(http::HttpProbe),
    tcp => Tcp(tcp::TcpProbe),
    command => Command(command::CommandProbe),
    prometheus => Prometheus(prometheus::PrometheusProbe),
    grpc => Grpc(grpc::GrpcProbe),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a written probe is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("probe {name:?}: set exactly one of {}", crate::experiment::faults::one_of(NAMES))]
    NotExactlyOneKind { name: String },
    /// The kind's own refusal, in its words.
    #[error("probe {name:?}: {source}")]
    Kind { name: String, source: BoxError },
    #[error("probe {name:?}: interval: must be at least {}", fmt_duration(MIN_INTERVAL))]
    IntervalTooShort { name: String },
    #[error("probe {name:?}: interval: {} is longer than the limit of {}", fmt_duration(*.interval), fmt_duration(MAX_WINDOW))]
    IntervalTooLong { name: String, interval: Duration },
    #[error("probe {name:?}: timeout: must be more than 0s")]
    TimeoutZero { name: String },
    #[error("probe {name:?}: timeout: {} is longer than the limit of {}", fmt_duration(*.timeout), fmt_duration(MAX_TIMEOUT))]
    TimeoutTooLong { name: String, timeout: Duration },
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Probe::try_from(RawProbe::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawProbe> for Probe {
    type Error = Error;

    fn try_from(mut r: RawProbe) -> Result<Self, Error> {
        let name = std::mem::take(&mut r.name);
        if r.kinds_written() != 1 {
            return Err(Error::NotExactlyOneKind { name });
        }
        let kind = match r.take_kind() {
            Some(Ok(kind)) => kind,
            Some(Err(source)) => return Err(Error::Kind { name, source }),
            None => unreachable!("exactly one kind was checked above"),
        };
        let interval = r.interval.map(|d| d.0).unwrap_or(DEFAULT_INTERVAL);
        if interval < MIN_INTERVAL {
            return Err(Error::IntervalTooShort { name });
        }
        if interval > MAX_WINDOW {
            return Err(Error::IntervalTooLong { name, interval });
        }
        let timeout = r
            .timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_TIMEOUT.min(interval.max(Duration::from_millis(100))));
        if timeout.is_zero() {
            return Err(Error::TimeoutZero { name });
        }
        if timeout > MAX_TIMEOUT {
            return Err(Error::TimeoutTooLong { name, timeout });
        }
        let guardrails = r
            .tolerances
            .iter()
            .filter_map(|t| {
                t.guardrail.map(|window| Guardrail {
                    tolerance: t.tolerance.clone(),
                    window,
                })
            })
            .collect();
        Ok(Probe {
            name,
            interval,
            timeout,
            kind,
            tolerances: r.tolerances.into_iter().map(|t| t.tolerance).collect(),
            guardrails,
            per_group: r.per_group,
            group: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_kind_is_named_by_its_module() {
        assert_eq!(NAMES, KEYS);
    }
}
