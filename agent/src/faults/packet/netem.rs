//! The netem backend of `corrupt`, `duplicate` and `reorder`: the latency
//! netem backend's tree (see `faults/latency/netem.rs`) with the kind's
//! netem parameters in the netem child.
//!
//! ```text
//! prio fa<h>: (4 bands)            root of the interface, handle from the fault id
//!  ├─ bands 1-3: normal traffic    exemptions (coordinator, SSH) are filtered here first
//!  └─ band 4 ── netem fb<h>:       corrupt P% | duplicate P% | delay G reorder (100-P)%
//! ```
//!
//! The qdiscs are named like a netem latency fault's, so the latency kind's
//! sweep naming ([`crate::journal::Owned::RootQdiscs`] `fa00`) covers them,
//! and only one netem fault (of any kind) holds an interface at a time.
//! netem counts no packets per effect: the observation says so
//! (`uncounted`) and its counters stay 0.

use std::sync::Arc;

use faultline_proto::v1;

use super::{NetemPlan, PacketKind, Result};
use crate::faults::latency::netem::{Netem, Tree};
use crate::faults::{self, Applied, Prepared, Report, Restoring};
use crate::firewall::Exempt;
use crate::journal::Object;

/// A packet fault placed on an interface, ready to build its tree.
pub struct PreparedNetem {
    kind: &'static PacketKind,
    fault_id: String,
    netem: Arc<Netem>,
    plan: NetemPlan,
    effect: String,
    exempt: Exempt,
    dev: String,
    handle: u16,
}

impl PreparedNetem {
    /// Picks the interface and handle, refusing one whose root qdisc is not
    /// the kernel's default.
    pub fn new(
        kind: &'static PacketKind,
        fault_id: &str,
        netem: Arc<Netem>,
        plan: NetemPlan,
        effect: String,
        exempt: Exempt,
    ) -> Result<Self> {
        let (dev, handle) = netem.placement(fault_id, &plan.scope.interface)?;
        Ok(PreparedNetem {
            kind,
            fault_id: fault_id.to_string(),
            netem,
            plan,
            effect,
            exempt,
            dev,
            handle,
        })
    }
}

impl Prepared for PreparedNetem {
    fn undo_objects(&self) -> Vec<Object> {
        vec![Object::Qdisc {
            dev: self.dev.clone(),
            handle: self.handle,
        }]
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        Ok((
            format!(
                "would be {}, with netem: qdisc prio {:x}: + netem on {}",
                self.effect, self.handle, self.dev
            ),
            "netem".into(),
        ))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        let tree = self
            .netem
            .apply_tree(
                &self.fault_id,
                &Some(self.dev.clone()),
                self.plan.qdisc,
                &self.plan.scope.netem_match(),
                &self.exempt,
            )
            .map_err(super::Error::from)?;
        Ok(Box::new(AppliedNetem {
            kind: self.kind,
            tree,
            effect: self.effect,
        }))
    }
}

struct AppliedNetem {
    kind: &'static PacketKind,
    tree: Tree,
    effect: String,
}

impl AppliedNetem {
    fn observation(&self) -> v1::observation::Kind {
        (self.kind.wrap)(v1::PacketObservation {
            objects: vec![self.tree.describe()],
            packets_seen: 0,
            packets_affected: 0,
            uncounted: true,
        })
    }
}

impl Applied for AppliedNetem {
    fn backend(&self) -> String {
        "netem".into()
    }

    fn injected(&self) -> Report {
        Report {
            detail: format!("{}, with netem: {}", self.effect, self.tree.describe()),
            observation: Some(self.observation()),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let observation = self.observation();
        let objects = self.tree.describe();
        let result = self.tree.remove();
        Box::pin(async move {
            result.map_err(super::Error::from)?;
            Ok(Report {
                detail: format!("removed {objects} (netem keeps no per-packet counts)"),
                observation: Some(observation),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::faults::{Kinds, Place, Setup};
    use crate::qdisc::fake::FakeTc;

    fn setup(tc: Option<Arc<FakeTc>>) -> Setup {
        let procs = Arc::new(crate::process::fake::FakeProcesses::new(vec![]));
        let mut s = Setup::basic(procs);
        s.exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap()]);
        match tc {
            Some(tc) => s.latency.tree = Some(Arc::new(Netem::new(tc, Path::new("/nonexistent")))),
            None => s
                .latency
                .missing
                .push(("netem", "the kernel has no sch_netem module".into())),
        }
        s
    }

    fn corrupt(backend: &str) -> v1::fault_spec::Kind {
        v1::fault_spec::Kind::Corrupt(v1::CorruptSpec {
            scope: Some(v1::PacketScope {
                interface: "eth0".into(),
                destinations: vec!["10.9.0.2".into()],
                dst_ports: vec![9000],
                protocol: "udp".into(),
                ..Default::default()
            }),
            percent: 30.0,
            backend: backend.into(),
        })
    }

    #[tokio::test]
    async fn corrupt_over_netem_builds_a_scoped_tree_and_restore_removes_it() {
        let tc = Arc::new(FakeTc::default());
        let kinds = Kinds::new(&setup(Some(tc.clone())));
        assert!(kinds.capabilities().contains(&"corrupt:netem".to_string()));
        assert!(!kinds.capabilities().contains(&"dns:netem".to_string()));
        let kind = kinds.of(&corrupt("")).unwrap().1;
        // auto picks netem where the node has it.
        let prepared = kind.prepare("r1-1", corrupt(""), &Place::Host).unwrap();
        let (detail, backend) = prepared.preview().unwrap();
        assert_eq!(backend, "netem");
        assert!(
            detail.contains("corrupting 30% of packets") && detail.contains("on eth0"),
            "{detail}"
        );
        assert!(matches!(prepared.undo_objects()[..], [Object::Qdisc { .. }]));
        let applied = prepared.apply().unwrap();
        assert_eq!(applied.backend(), "netem");
        let calls = tc.calls.lock().unwrap().clone();
        assert!(calls[1].ends_with("netem delay 0us corrupt 30%"), "{calls:?}");
        assert!(calls[2].contains("match ip dst 10.9.0.1/32") && calls[2].ends_with(":1"));
        let scoped = calls.last().unwrap();
        assert!(
            scoped.contains("match ip dst 10.9.0.2/32 match ip protocol 17 0xff match ip dport 9000 0xffff")
                && scoped.ends_with(":4"),
            "{scoped}"
        );
        // IPv4 only (an IPv6 destination takes the nfqueue backend).
        assert!(!calls.iter().any(|c| c.contains("protocol ipv6 prio 11")), "{calls:?}");
        let report = applied.restore().await.unwrap();
        assert!(report.detail.starts_with("removed qdisc prio fa"), "{}", report.detail);
        assert_eq!(tc.calls.lock().unwrap().last().unwrap(), "qdisc del dev eth0 root");
        assert!(tc.roots.lock().unwrap().is_empty());
    }

    #[test]
    fn netem_asked_where_the_kernel_lacks_it_is_refused_naming_nfqueue() {
        let kinds = Kinds::new(&setup(None));
        let kind = kinds.of(&corrupt("netem")).unwrap().1;
        let e = kind.prepare("r1-1", corrupt("netem"), &Place::Host).err().unwrap();
        assert!(e.is_refusal());
        let msg = e.to_string();
        assert!(
            msg.contains("netem: the kernel has no sch_netem module") && msg.contains("use backend: nfqueue"),
            "{msg}"
        );
        assert!(!kinds.capabilities().iter().any(|c| c.ends_with(":netem")));
    }

    #[test]
    fn a_second_netem_fault_on_the_interface_is_refused_before_its_undo_record() {
        let tc = Arc::new(FakeTc::default());
        let kinds = Kinds::new(&setup(Some(tc.clone())));
        let kind = kinds.of(&corrupt("netem")).unwrap().1;
        let first = kind
            .prepare("r1-1", corrupt("netem"), &Place::Host)
            .unwrap()
            .apply()
            .unwrap();
        let e = kind.prepare("r2-1", corrupt("netem"), &Place::Host).err().unwrap();
        assert!(
            e.is_refusal() && e.to_string().contains("another faultline netem fault"),
            "{e}"
        );
        drop(first);
    }
}
