//! Fault kinds, one module each. A kind's module owns its whole life on the
//! coordinator: the YAML it is written as (with positioned validation: its
//! errors surface through serde at the position of the fault), its domain
//! type, its wire spec, its one-line summary for plans and reports, and how
//! the observation an agent sends back reads in reports (objects, figures
//! and notes in [`Observed`]). This module only lists the kinds and
//! dispatches to them; the planner, engine and reports never match on a
//! kind.
//!
//! # Adding a fault kind
//!
//! A new kind `foo` touches exactly:
//! 1. the proto (`proto/proto/faultline/v1/faultline.proto`): a `FooSpec` in
//!    `FaultSpec.kind` and a `FooObservation` in `Observation.kind`, under
//!    the same variant name;
//! 2. the agent: `agent/src/faults/foo.rs` and one line in the agent's list
//!    of kinds;
//! 3. the coordinator: `coordinator/src/experiment/faults/foo.rs`
//!    implementing [`Kind`], its `pub mod foo;` and one line in
//!    [`fault_kinds!`] below;
//! 4. its example, `experiments/foo.yaml` (or `foo-*.yaml`), which
//!    `faultline validate` accepts with no flags;
//! 5. its docs: its section in the README (the faults table and the
//!    kind's own section).
//!
//! Tests in this module fail when a listed kind has no example in
//! `experiments/` or no mention in the README.

pub mod bandwidth;
pub mod block;
pub mod corrupt;
pub mod cpu_stress;
pub mod disk_fill;
pub mod dns;
pub mod duplicate;
pub mod io_stress;
pub mod kill;
pub mod latency;
pub mod memory_stress;
pub mod packet;
pub mod reorder;

use faultline_proto::v1;
use serde::Deserialize;

use super::model::Fault;
use super::peers::Peers;
use super::targets::RawTargets;
use crate::report::{Figure, KilledProcess};

/// What every fault kind provides to the coordinator.
pub trait Kind: Sized {
    /// The kind's name: its key in experiment files (equal to its module's
    /// name), its name on the wire and in agents' capabilities.
    const NAME: &'static str;
    /// The fault as written under its key, e.g. `latency: { delay: 100ms }`.
    type Raw: serde::de::DeserializeOwned;
    /// Why a written fault is refused, in the file's words.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The kind's wire spec (a variant of `v1::fault_spec::Kind`).
    type Wire;
    /// What an agent reports about it (a variant of `v1::observation::Kind`).
    type Observation;

    /// Checks what serde cannot (ranges, combinations, regexes).
    fn from_raw(raw: Self::Raw) -> Result<Self, Self::Error>;

    /// The parameters in words, for plans and reports.
    fn summary(&self) -> String;

    /// The wire spec for one target; `peers` are the networks the
    /// coordinator resolved for it (network kinds only).
    fn to_wire(&self, peers: &[String]) -> Self::Wire;

    /// Peers the coordinator resolves to addresses for each target.
    fn peers(&self) -> Option<&Peers> {
        None
    }

    /// Whether an agent advertising `caps` can run this fault: by default
    /// the kind itself (`kill`) or the kind with any backend
    /// (`latency:nfqueue`).
    fn runs_on(&self, caps: &[String]) -> bool {
        caps.iter()
            .any(|c| c == Self::NAME || c.strip_prefix(Self::NAME).is_some_and(|r| r.starts_with(':')))
    }

    /// What the fault needs of an agent, for the error when none offers it.
    fn requirement(&self) -> String {
        Self::NAME.to_string()
    }

    /// Folds an agent's observation, sent with `state`, into `into`.
    fn observe(observation: &Self::Observation, state: v1::FaultState, into: &mut Observed);
}

/// Lists the kinds: `module => Variant(module::Type)`, in the order the
/// kinds are named in messages. The YAML key is the module's name; the
/// variant's name is the one of the kind's `v1::fault_spec::Kind` and
/// `v1::observation::Kind` variants.
macro_rules! fault_kinds {
    ($($module:ident => $variant:ident($ty:ty)),+ $(,)?) => {
        /// A fault's kind and its parameters.
        #[derive(Debug, Clone)]
        pub enum FaultKind {
            $($variant($ty),)+
        }

        /// The kinds' names, in the order of [`FaultKind`].
        pub const NAMES: &[&str] = &[$(<$ty as Kind>::NAME,)+];

        /// The YAML keys of the kinds, in the same order: each must equal
        /// the kind's [`Kind::NAME`].
        #[cfg(test)]
        const KEYS: &[&str] = &[$(stringify!($module),)+];

        /// A fault as written.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawFault {
            name: Option<String>,
            #[serde(default)]
            targets: RawTargets,
            $($module: Option<<$ty as Kind>::Raw>,)+
        }

        impl RawFault {
            fn kinds_written(&self) -> usize {
                0 $(+ usize::from(self.$module.is_some()))+
            }

            /// The first kind written, checked.
            fn take_kind(&mut self) -> Option<Result<FaultKind, BoxError>> {
                $(
                    if let Some(raw) = self.$module.take() {
                        return Some(<$ty as Kind>::from_raw(raw).map(FaultKind::$variant).map_err(Into::into));
                    }
                )+
                None
            }
        }

        impl FaultKind {
            /// The kind's name (see [`Kind::NAME`]).
            pub fn name(&self) -> &'static str {
                match self {
                    $(FaultKind::$variant(_) => <$ty as Kind>::NAME,)+
                }
            }

            /// The parameters in words, for plans and reports.
            pub fn summary(&self) -> String {
                match self {
                    $(FaultKind::$variant(k) => k.summary(),)+
                }
            }

            /// See [`Kind::runs_on`].
            pub fn runs_on(&self, caps: &[String]) -> bool {
                match self {
                    $(FaultKind::$variant(k) => k.runs_on(caps),)+
                }
            }

            /// See [`Kind::requirement`].
            pub fn requirement(&self) -> String {
                match self {
                    $(FaultKind::$variant(k) => k.requirement(),)+
                }
            }

            /// Peers the coordinator resolves to addresses for each target.
            pub fn peers(&self) -> Option<&Peers> {
                match self {
                    $(FaultKind::$variant(k) => k.peers(),)+
                }
            }

            /// The wire form of the fault's parameters; `peers` are the
            /// resolved peer networks of this target (network kinds only).
            pub fn to_wire(&self, peers: &[String]) -> v1::FaultSpec {
                v1::FaultSpec {
                    kind: Some(match self {
                        $(FaultKind::$variant(k) => v1::fault_spec::Kind::$variant(k.to_wire(peers)),)+
                    }),
                }
            }
        }

        impl Observed {
            /// Folds an agent's observation, sent with `state`, into what
            /// the report shows: the kind of the observation reads it.
            pub fn update(&mut self, observation: &v1::Observation, state: v1::FaultState) {
                match &observation.kind {
                    $(Some(v1::observation::Kind::$variant(o)) => <$ty as Kind>::observe(o, state, self),)+
                    None => {}
                }
            }
        }
    };
}

fault_kinds! {
    kill => Kill(kill::KillFault),
    latency => Latency(latency::LatencyFault),
    block => Block(block::BlockFault),
    disk_fill => DiskFill(disk_fill::DiskFillFault),
    cpu_stress => CpuStress(cpu_stress::CpuStressFault),
    memory_stress => MemoryStress(memory_stress::MemoryStressFault),
    io_stress => IoStress(io_stress::IoStressFault),
    bandwidth => Bandwidth(bandwidth::BandwidthFault),
    corrupt => Corrupt(corrupt::CorruptFault),
    duplicate => Duplicate(duplicate::DuplicateFault),
    reorder => Reorder(reorder::ReorderFault),
    dns => Dns(dns::DnsFault),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `a, b, c or d`, for messages that list the kinds.
pub fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Why a written fault is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fault {label:?}: {source}")]
    Targets {
        label: String,
        source: super::targets::Error,
    },
    #[error("fault {label:?}: set exactly one fault kind: {}", one_of(NAMES))]
    NotExactlyOneKind { label: String },
    /// The kind's own refusal, in its words.
    #[error("fault {label:?}: {source}")]
    Kind { label: String, source: BoxError },
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fault::try_from(RawFault::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawFault> for Fault {
    type Error = Error;

    fn try_from(mut r: RawFault) -> Result<Self, Error> {
        let label = r.name.clone().unwrap_or_else(|| "(unnamed)".into());
        let targets = std::mem::take(&mut r.targets)
            .check()
            .map_err(|source| Error::Targets {
                label: label.clone(),
                source,
            })?;
        if r.kinds_written() != 1 {
            return Err(Error::NotExactlyOneKind { label });
        }
        let kind = match r.take_kind() {
            Some(Ok(kind)) => kind,
            Some(Err(source)) => return Err(Error::Kind { label, source }),
            None => unreachable!("exactly one kind was checked above"),
        };
        Ok(Fault {
            name: r.name.unwrap_or_default(),
            targets,
            kind,
        })
    }
}

/// What the agents observed of one fault on one target, as reports show
/// it. `objects`, `figures` and `notes` are kind-agnostic and rendered as
/// they are; `killed`, `reappeared` and `packets` fill the per-kind fields
/// the JSON report has carried since schema version 1.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Kernel objects and files the agent created for the fault.
    pub objects: Vec<String>,
    /// Numbers the kind observed, replaced by name as observations arrive.
    pub figures: Vec<Figure>,
    /// What the kind observed, in words.
    pub notes: Vec<String>,
    /// Kill: processes signalled.
    pub killed: Vec<KilledProcess>,
    /// Kill: ms from the kill until a matching process reappeared, and its pid.
    pub reappeared: Option<(u64, u32)>,
    /// Latency: packets delayed and dropped, known at restore.
    pub packets: Option<(u64, u64)>,
}

impl Observed {
    /// Sets the figure `name` (replacing an earlier value).
    pub fn set_figure(&mut self, name: &str, value: f64, unit: &str) {
        let figure = Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        };
        match self.figures.iter_mut().find(|f| f.name == name) {
            Some(f) => *f = figure,
            None => self.figures.push(figure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_by_its_module() {
        assert_eq!(NAMES, KEYS);
    }

    #[test]
    fn each_kind_reads_its_own_observation_into_figures_and_notes() {
        let mut o = Observed::default();
        let latency = v1::Observation {
            kind: Some(v1::observation::Kind::Latency(v1::LatencyObservation {
                objects: vec!["nfqueue 1".into()],
                packets_delayed: 10,
                packets_dropped: 2,
            })),
        };
        o.update(&latency, v1::FaultState::Injected);
        assert_eq!(
            (o.objects.len(), o.packets, o.figures.len()),
            (1, None, 0),
            "counters are final at restore"
        );
        o.update(&latency, v1::FaultState::Restored);
        assert_eq!(o.packets, Some((10, 2)));
        assert_eq!(o.figures[0].to_string(), "delayed: 10 packets");
        o.update(&latency, v1::FaultState::Restored);
        assert_eq!(o.figures.len(), 2, "a figure is replaced, not repeated");

        let mut o = Observed::default();
        o.update(
            &v1::Observation {
                kind: Some(v1::observation::Kind::Kill(v1::KillObservation {
                    killed: vec![v1::KilledProcess {
                        pid: 7,
                        name: "sleep".into(),
                        cmdline: "sleep 9".into(),
                    }],
                    reappeared_after_ms: Some(1500),
                    reappeared_pid: Some(8),
                })),
            },
            v1::FaultState::Injected,
        );
        assert_eq!(o.killed.len(), 1);
        assert_eq!(o.reappeared, Some((1500, 8)));
        assert_eq!(
            o.notes,
            vec![
                "killed pid 7 (sleep) `sleep 9`".to_string(),
                "a matching process reappeared after 1.5s (pid 8)".to_string()
            ]
        );

        let mut o = Observed::default();
        o.update(
            &v1::Observation {
                kind: Some(v1::observation::Kind::DiskFill(v1::DiskFillObservation {
                    file: "/tmp/x/.faultline-fill-r-1".into(),
                    bytes: 1024,
                    method: "fallocate".into(),
                    used_percent_before: 10.0,
                    used_percent_after: 12.5,
                })),
            },
            v1::FaultState::Injected,
        );
        assert!(o.objects[0].contains("fallocate"), "{:?}", o.objects);
        let figures: Vec<String> = o.figures.iter().map(ToString::to_string).collect();
        assert_eq!(
            figures,
            ["written: 1024 bytes", "used before: 10%", "used after: 12.5%"]
        );
    }

    #[test]
    fn every_kind_has_an_example_that_uses_it_and_readme_docs() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let examples: Vec<String> = std::fs::read_dir(format!("{root}/experiments"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        for name in NAMES {
            assert!(
                examples
                    .iter()
                    .any(|e| e.lines().any(|l| l.trim_start().starts_with(&format!("{name}:")))),
                "no example in experiments/ injects a {name} fault"
            );
            assert!(
                readme.contains(&format!("`{name}`")),
                "the README does not document `{name}`"
            );
        }
    }
}
