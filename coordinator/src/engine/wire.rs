//! A fault's parameters in wire form, for Inject (and `plan`'s dry runs).

use faultline_proto::v1;

use crate::experiment::FaultKind;

/// The wire form of a fault's parameters; `peers` are the resolved peer
/// networks of this target (network faults only).
pub fn spec_to_wire(kind: &FaultKind, peers: &[String]) -> v1::FaultSpec {
    kind.to_wire(peers)
}
