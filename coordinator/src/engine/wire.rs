//! A fault's parameters in wire form, for Inject (and `plan`'s dry runs).

use faultline_proto::v1;

use crate::experiment::{FaultKind, FillAmount};

/// The wire form of a fault's parameters; `peers` are the resolved peer
/// networks of this target (network faults only).
pub fn spec_to_wire(kind: &FaultKind, peers: &[String]) -> v1::FaultSpec {
    let ports = |p: &[u16]| p.iter().map(|p| *p as u32).collect::<Vec<u32>>();
    match kind {
        FaultKind::DiskFill(d) => {
            let (size_bytes, target_used_percent, leave_free_bytes) = match d.amount {
                FillAmount::Bytes(b) => (b, 0.0, 0),
                FillAmount::UsedPercent(p) => (0, p, 0),
                FillAmount::LeaveFree(b) => (0, 0.0, b),
            };
            v1::FaultSpec {
                kind: Some(v1::fault_spec::Kind::DiskFill(v1::DiskFillSpec {
                    path: d.path.clone(),
                    size_bytes,
                    target_used_percent,
                    leave_free_bytes,
                })),
            }
        }
        FaultKind::Latency(l) => v1::FaultSpec {
            kind: Some(v1::fault_spec::Kind::Latency(v1::LatencySpec {
                delay_us: l.delay.as_micros() as u64,
                jitter_us: l.jitter.as_micros() as u64,
                loss_percent: l.loss_percent,
                interface: l.interface.clone().unwrap_or_default(),
                destinations: peers.to_vec(),
                dst_ports: ports(&l.dst_ports),
                src_ports: ports(&l.src_ports),
                protocol: l.protocol.clone().unwrap_or_default(),
                backend: l.backend.clone().unwrap_or_default(),
            })),
        },
        FaultKind::Block(b) => v1::FaultSpec {
            kind: Some(v1::fault_spec::Kind::Block(v1::BlockSpec {
                peers: peers.to_vec(),
                ports: ports(&b.ports),
                direction: b.direction.clone(),
            })),
        },
        FaultKind::Kill(k) => v1::FaultSpec {
            kind: Some(v1::fault_spec::Kind::Kill(v1::KillSpec {
                name: k.name.clone().unwrap_or_default(),
                cmdline_regex: k.cmdline.clone().unwrap_or_default(),
                pid: k.pid.unwrap_or(0),
                user: k.user.clone().unwrap_or_default(),
                signal: k.signal,
                count: k.count.unwrap_or(0),
                allow_mass_kill: k.allow_mass_kill,
            })),
        },
    }
}
