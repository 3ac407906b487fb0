//! The netem latency backend.
//!
//! The fault replaces the interface's root qdisc — only if that is the
//! kernel's default (handle `0:`), never a qdisc someone configured — with
//! its own tree:
//!
//! ```text
//! prio fa<h>: (4 bands)        handle derived from the fault id
//!  ├─ bands 1-3: normal traffic (default priomap)
//!  └─ band 4 ── netem fb<h>:   delay ± jitter, loss
//! ```
//!
//! u32 filters send the exempt traffic (coordinator, SSH) to band 1 first,
//! then the fault's scope to band 4. Restore deletes the root qdisc only if
//! it still carries the fault's handle; the kernel then puts its default
//! back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{exempt_hosts, short_hash, AppliedLatency, Counters, Error, LatencyBackend, LatencySpec, Protocol, Result};
use crate::cidr::Cidr;
use crate::firewall::Exempt;
use crate::qdisc::{self, Filter, Parent, QdiscKind, Tc};

/// Major handles of faultline's prio qdiscs are `fa00`..`faff`.
pub const OWN_PRIO: u16 = 0xfa00;
/// ... and of their netem children `fb00`..`fbff`.
const OWN_NETEM: u16 = 0xfb00;
const BANDS: u8 = 4;
const NETEM_BAND: u16 = 4;
const NORMAL_BAND: u16 = 1;

/// Whether the kernel under `root` has `sch_netem`: loaded, built in, or
/// installed as a module the kernel loads on first use.
pub fn kernel_has_netem(root: &Path) -> bool {
    if root.join("sys/module/sch_netem").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease")) else {
        return false;
    };
    let modules = root.join("lib/modules").join(release.trim());
    let builtin = std::fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    if builtin.lines().any(|l| l.ends_with("/sch_netem.ko")) {
        return true;
    }
    let dir = modules.join("kernel/net/sched");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("sch_netem.ko"))
        })
        .unwrap_or(false)
}

/// The interface of the IPv4 default route, from `<root>/proc/net/route`.
pub fn default_route_interface(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("proc/net/route")).ok()?;
    text.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.get(1) == Some(&"00000000") && w.get(7) == Some(&"00000000")).then(|| w[0].to_string())
    })
}

/// The netem backend over a [`Tc`] boundary.
pub struct Netem {
    tc: Arc<dyn Tc>,
    root: PathBuf,
}

impl Netem {
    pub fn new(tc: Arc<dyn Tc>, root: &Path) -> Self {
        Self {
            tc,
            root: root.to_path_buf(),
        }
    }

    /// The interface and the prio handle a fault will use, refused if the
    /// interface's root qdisc is not the kernel's default.
    ///
    /// The handle has only 8 bits of the fault id's hash, so it is not
    /// injective by itself: (interface, handle) names one fault because a
    /// fault takes the interface's root and a second one on the same
    /// interface is refused here, before its undo record is written (a
    /// record naming the first fault's qdisc would remove it on recovery).
    pub fn placement(&self, fault_id: &str, interface: &Option<String>) -> Result<(String, u16)> {
        faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let dev = match interface {
            Some(i) => i.clone(),
            None => default_route_interface(&self.root).ok_or_else(|| {
                Error::Refused("netem needs an interface and this node has no IPv4 default route; set interface".into())
            })?,
        };
        let current = self.tc.root_qdisc(&dev).map_err(|e| Error::Backend {
            backend: "netem",
            message: e.to_string(),
        })?;
        match current {
            Some(q) if q.handle & 0xff00 == OWN_PRIO => {
                return Err(Error::Refused(format!(
                    "another faultline netem fault (qdisc {:x}:) already holds the root qdisc of {dev}",
                    q.handle
                )))
            }
            Some(q) if q.handle != 0 => {
                return Err(Error::Refused(format!(
                    "the root qdisc of {dev} is {} {:x}:, which faultline did not create; refusing to replace it",
                    q.kind, q.handle
                )))
            }
            _ => {}
        }
        Ok((dev, OWN_PRIO | (short_hash(fault_id) & 0xff) as u16))
    }

    /// Builds the tree (prio, a netem child with `netem`, the filters of
    /// `scope` after the exemptions) on the interface [`Netem::placement`]
    /// picks. On failure what was built is removed again.
    pub fn apply_tree(
        &self,
        fault_id: &str,
        interface: &Option<String>,
        netem: qdisc::Netem,
        scope: &Match,
        exempt: &Exempt,
    ) -> Result<Tree> {
        let err = |message: String| Error::Backend {
            backend: "netem",
            message,
        };
        let (dev, handle) = self.placement(fault_id, interface)?;
        let low = handle & 0xff;
        self.tc
            .add_qdisc(&dev, Parent::Root, handle, &QdiscKind::Prio { bands: BANDS })
            .map_err(|e| err(e.to_string()))?;
        let tree = Tree {
            tc: self.tc.clone(),
            dev: dev.clone(),
            handle,
        };
        let build = || -> Result<()> {
            self.tc
                .add_qdisc(
                    &dev,
                    Parent::Class(handle, NETEM_BAND),
                    OWN_NETEM | low,
                    &QdiscKind::Netem(netem),
                )
                .map_err(|e| err(e.to_string()))?;
            for f in filters(scope, exempt) {
                // One priority per protocol: the kernel refuses an IPv6
                // filter at a priority that holds IPv4 ones ("Filter with
                // specified priority/protocol not found").
                let prio = match (f.band == NORMAL_BAND, f.v6) {
                    (true, false) => 1,
                    (true, true) => 2,
                    (false, false) => 10,
                    (false, true) => 11,
                };
                self.tc
                    .add_filter(&dev, handle, prio, &f)
                    .map_err(|e| err(e.to_string()))?;
            }
            Ok(())
        };
        if let Err(e) = build() {
            // Deleting our root removes the netem child and filters with it.
            let _ = tree.remove();
            return Err(e);
        }
        Ok(tree)
    }
}

/// Which packets go to the netem band.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    /// Empty means any destination.
    pub destinations: &'a [Cidr],
    pub dst_ports: &'a [u16],
    pub src_ports: &'a [u16],
    pub protocol: Protocol,
    /// Leave IPv6 packets alone even with no destination (the netem form
    /// of the packet kinds is IPv4 only; their nfqueue form takes IPv6).
    pub ipv4_only: bool,
}

impl<'a> Match<'a> {
    /// The packets of a latency fault.
    pub fn of(spec: &'a LatencySpec) -> Self {
        Match {
            destinations: &spec.destinations,
            dst_ports: &spec.dst_ports,
            src_ports: &spec.src_ports,
            protocol: spec.protocol,
            ipv4_only: false,
        }
    }

    fn families(&self) -> (bool, bool) {
        if self.destinations.is_empty() {
            (true, !self.ipv4_only)
        } else {
            (
                self.destinations.iter().any(|d| d.is_ipv4()),
                self.destinations.iter().any(|d| !d.is_ipv4()),
            )
        }
    }
}

/// A netem tree in place: a root prio qdisc of faultline's range on one
/// interface.
pub struct Tree {
    tc: Arc<dyn Tc>,
    dev: String,
    handle: u16,
}

impl Tree {
    /// The tree in words, for reports and logs.
    pub fn describe(&self) -> String {
        format!("qdisc prio {:x}: + netem on {}", self.handle, self.dev)
    }

    /// Deletes the root qdisc if it is still this tree's.
    pub fn remove(self) -> Result<()> {
        let err = |message: String| Error::Backend {
            backend: "netem",
            message,
        };
        match self.tc.root_qdisc(&self.dev).map_err(|e| err(e.to_string()))? {
            Some(q) if q.handle == self.handle => self.tc.delete_root(&self.dev).map_err(|e| err(e.to_string())),
            // Someone replaced or removed our qdisc: not ours to delete.
            Some(q) => Err(err(format!(
                "the root qdisc of {} is now {} {:x}:, not ours ({:x}:); left it alone",
                self.dev, q.kind, q.handle, self.handle
            ))),
            None => Ok(()),
        }
    }
}

impl AppliedLatency for Tree {
    fn objects(&self) -> Vec<String> {
        vec![self.describe()]
    }

    fn restore(self: Box<Self>) -> Result<Counters> {
        self.remove().map(|()| Counters::default())
    }
}

impl LatencyBackend for Netem {
    fn name(&self) -> &'static str {
        "netem"
    }

    fn plan(&self, fault_id: &str, spec: &LatencySpec) -> Result<Vec<crate::journal::Object>> {
        let (dev, handle) = self.placement(fault_id, &spec.interface)?;
        Ok(vec![crate::journal::Object::Qdisc { dev, handle }])
    }

    fn apply(&self, fault_id: &str, spec: &LatencySpec, exempt: &Exempt) -> Result<Box<dyn AppliedLatency>> {
        let netem = qdisc::Netem {
            delay: spec.delay,
            jitter: spec.jitter,
            loss_percent: spec.loss_percent,
            ..Default::default()
        };
        let tree = self.apply_tree(fault_id, &spec.interface, netem, &Match::of(spec), exempt)?;
        Ok(Box::new(tree))
    }
}

/// Filters in the order they are added: exemptions to the normal band,
/// then the scope to the netem band.
fn filters(spec: &Match, exempt: &Exempt) -> Vec<Filter> {
    let mut out = Vec::new();
    for h in exempt_hosts(exempt) {
        out.push(Filter {
            v6: !h.is_ipv4(),
            dst: Some(h),
            protocol: None,
            dport: None,
            sport: None,
            band: NORMAL_BAND,
        });
    }
    for p in &exempt.tcp_ports {
        for v6 in [false, true] {
            for (dport, sport) in [(Some(*p), None), (None, Some(*p))] {
                out.push(Filter {
                    v6,
                    dst: None,
                    protocol: Some(6),
                    dport,
                    sport,
                    band: NORMAL_BAND,
                });
            }
        }
    }
    let (v4, v6) = spec.families();
    let opt = |v: &[u16]| -> Vec<Option<u16>> {
        if v.is_empty() {
            vec![None]
        } else {
            v.iter().copied().map(Some).collect()
        }
    };
    for fam_v6 in [false, true] {
        if (fam_v6 && !v6) || (!fam_v6 && !v4) {
            continue;
        }
        let dsts: Vec<_> = if spec.destinations.is_empty() {
            vec![None]
        } else {
            spec.destinations
                .iter()
                .filter(|d| d.is_ipv4() != fam_v6)
                .copied()
                .map(Some)
                .collect()
        };
        for dst in &dsts {
            for dport in opt(spec.dst_ports) {
                for sport in opt(spec.src_ports) {
                    out.push(Filter {
                        v6: fam_v6,
                        dst: *dst,
                        protocol: if fam_v6 {
                            spec.protocol.number_v6()
                        } else {
                            spec.protocol.number()
                        },
                        dport,
                        sport,
                        band: NETEM_BAND,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::latency::Choice;
    use crate::qdisc::fake::FakeTc;
    use crate::qdisc::Qdisc;
    use std::time::Duration;

    fn spec() -> LatencySpec {
        LatencySpec {
            delay: Duration::from_millis(100),
            jitter: Duration::ZERO,
            loss_percent: 0.0,
            interface: Some("eth0".into()),
            destinations: vec!["10.9.0.2".parse().unwrap()],
            dst_ports: vec![],
            src_ports: vec![],
            protocol: Protocol::Any,
            backend: Choice::Netem,
        }
    }

    fn netem(tc: Arc<FakeTc>) -> Netem {
        Netem::new(tc, Path::new("/nonexistent"))
    }

    #[test]
    fn netem_builds_its_own_tree_and_restore_removes_only_it() {
        let tc = Arc::new(FakeTc::default());
        let exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap()]);
        let applied = netem(tc.clone()).apply("r1-1", &spec(), &exempt).unwrap();
        let calls = tc.calls.lock().unwrap().clone();
        let h = OWN_PRIO | (short_hash("r1-1") & 0xff) as u16;
        assert_eq!(
            calls[0],
            format!("qdisc add dev eth0 root handle {h:x}: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1")
        );
        assert!(calls[1].contains(&format!("parent {h:x}:4")) && calls[1].contains("netem delay 100000us"));
        assert!(calls[2].contains("match ip dst 10.9.0.1/32 flowid") && calls[2].ends_with(":1"));
        let last = calls.last().unwrap();
        assert!(
            last.contains("prio 10 u32 match ip dst 10.9.0.2/32") && last.ends_with(":4"),
            "{last}"
        );
        applied.restore().unwrap();
        assert_eq!(tc.calls.lock().unwrap().last().unwrap(), "qdisc del dev eth0 root");
        assert!(tc.roots.lock().unwrap().is_empty());
    }

    #[test]
    fn netem_refuses_a_root_qdisc_it_does_not_own() {
        let tc = Arc::new(FakeTc::default());
        tc.roots.lock().unwrap().insert(
            "eth0".into(),
            Qdisc {
                kind: "htb".into(),
                handle: 1,
            },
        );
        let e = netem(tc.clone())
            .apply("r1-1", &spec(), &Exempt::default())
            .err()
            .unwrap();
        assert!(e.is_refusal());
        assert!(e.to_string().contains("htb 1:, which faultline did not create"), "{e}");
        assert!(tc.calls.lock().unwrap().is_empty(), "nothing may be touched");
    }

    #[test]
    fn netem_replaces_the_kernel_default_but_not_another_fault() {
        let tc = Arc::new(FakeTc::default());
        tc.roots.lock().unwrap().insert(
            "eth0".into(),
            Qdisc {
                kind: "noqueue".into(),
                handle: 0,
            },
        );
        let first = netem(tc.clone()).apply("r1-1", &spec(), &Exempt::default()).unwrap();
        let e = netem(tc.clone())
            .apply("r2-1", &spec(), &Exempt::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("another faultline netem fault"), "{e}");
        // Planning refuses too, so no undo record naming the first fault's
        // qdisc is written (handles are 8 bits: two ids can share one).
        let e = netem(tc.clone()).plan("r2-1", &spec()).unwrap_err();
        assert!(
            e.is_refusal() && e.to_string().contains("another faultline netem fault"),
            "{e}"
        );
        first.restore().unwrap();
    }

    #[test]
    fn restore_leaves_a_qdisc_that_is_no_longer_ours() {
        let tc = Arc::new(FakeTc::default());
        let applied = netem(tc.clone()).apply("r1-1", &spec(), &Exempt::default()).unwrap();
        tc.roots.lock().unwrap().insert(
            "eth0".into(),
            Qdisc {
                kind: "fq".into(),
                handle: 0x8001,
            },
        );
        let e = applied.restore().unwrap_err();
        assert!(e.to_string().contains("left it alone"), "{e}");
        assert!(!tc.calls.lock().unwrap().iter().any(|c| c.contains(" del ")));
    }

    #[test]
    fn a_failed_filter_rolls_the_tree_back() {
        let tc = Arc::new(FakeTc {
            fail_filters: true,
            ..Default::default()
        });
        let e = netem(tc.clone())
            .apply("r1-1", &spec(), &Exempt::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("Invalid argument"), "{e}");
        assert_eq!(tc.calls.lock().unwrap().last().unwrap(), "qdisc del dev eth0 root");
        assert!(tc.roots.lock().unwrap().is_empty());
    }

    #[test]
    fn detection_reads_the_module_tree_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!kernel_has_netem(dir.path()));
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        let m = dir.path().join("lib/modules/6.1.0-test/kernel/net/sched");
        std::fs::create_dir_all(&m).unwrap();
        assert!(!kernel_has_netem(dir.path()));
        std::fs::write(m.join("sch_netem.ko.xz"), "").unwrap();
        assert!(kernel_has_netem(dir.path()));
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        std::fs::write(
            dir.path().join("proc/net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t0009000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth1\t00000000\t0109000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        )
        .unwrap();
        assert_eq!(default_route_interface(dir.path()).as_deref(), Some("eth1"));
    }
}
