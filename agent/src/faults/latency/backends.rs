//! Which latency backends work on this node, and the trait they implement.

use std::sync::Arc;

use super::{netem, nfqueue, Choice, Counters, Error, LatencySpec, Result};
use crate::firewall::{Exempt, Firewall, SystemFirewall};
use crate::qdisc::SystemTc;

/// One way of delaying packets.
pub trait LatencyBackend: Send + Sync {
    /// "netem" or "nfqueue".
    fn name(&self) -> &'static str;
    /// What [`LatencyBackend::apply`] will create, for the undo journal,
    /// computed before anything is touched.
    fn plan(&self, fault_id: &str, spec: &LatencySpec) -> Result<Vec<crate::journal::Object>>;
    /// Applies the fault; everything it creates carries `fault_id`.
    fn apply(&self, fault_id: &str, spec: &LatencySpec, exempt: &Exempt) -> Result<Box<dyn AppliedLatency>>;
}

/// A latency fault in place.
pub trait AppliedLatency: Send {
    /// The kernel objects it owns, for reports and logs.
    fn objects(&self) -> Vec<String>;
    /// Removes everything it created.
    fn restore(self: Box<Self>) -> Result<Counters>;
}

/// The backends that work on this node, and why the others do not.
#[derive(Clone, Default)]
pub struct Backends {
    pub netem: Option<Arc<dyn LatencyBackend>>,
    pub nfqueue: Option<Arc<dyn LatencyBackend>>,
    /// The netem backend's tree builder, which the packet kinds (corrupt,
    /// duplicate, reorder) use too; `Some` exactly when `netem` is.
    pub tree: Option<Arc<netem::Netem>>,
    /// Why a backend is unavailable, for refusals: `(name, reason)`.
    pub missing: Vec<(&'static str, String)>,
}

/// Which backends the operator allows (`--latency-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    Auto,
    Netem,
    Nfqueue,
    None,
}

impl Backends {
    /// Probes this node: netem needs `tc` and the `sch_netem` module (loaded,
    /// built in, or installed); nfqueue needs `iptables-restore` and a
    /// bindable NFQUEUE netlink socket. `root` is `/` except in tests.
    pub fn detect(allowed: Allowed, root: &std::path::Path) -> Self {
        let mut b = Backends::default();
        if allowed == Allowed::None {
            b.missing.push(("netem", "disabled with --latency-backend none".into()));
            b.missing
                .push(("nfqueue", "disabled with --latency-backend none".into()));
            return b;
        }
        if matches!(allowed, Allowed::Auto | Allowed::Netem) {
            let tc = SystemTc::detect();
            match (tc.installed(), netem::kernel_has_netem(root)) {
                (true, true) => {
                    let tree = Arc::new(netem::Netem::new(Arc::new(tc), root));
                    b.netem = Some(tree.clone());
                    b.tree = Some(tree);
                }
                (false, _) => b.missing.push(("netem", "tc is not installed".into())),
                (true, false) => b.missing.push(("netem", "the kernel has no sch_netem module".into())),
            }
        } else {
            b.missing
                .push(("netem", "disabled with --latency-backend nfqueue".into()));
        }
        if matches!(allowed, Allowed::Auto | Allowed::Nfqueue) {
            let fw = SystemFirewall::detect();
            if !fw.has_iptables(crate::firewall::Family::V4) {
                b.missing
                    .push(("nfqueue", "iptables-restore/iptables-save are not installed".into()));
            } else if let Err(e) = nfqueue::probe_queue() {
                b.missing
                    .push(("nfqueue", format!("cannot bind an NFQUEUE socket: {e}")));
            } else {
                let ipv6 = fw.has_iptables(crate::firewall::Family::V6);
                let fw: Arc<dyn Firewall> = Arc::new(fw);
                b.nfqueue = Some(Arc::new(nfqueue::Nfqueue::new(fw, ipv6)));
            }
        } else {
            b.missing
                .push(("nfqueue", "disabled with --latency-backend netem".into()));
        }
        b
    }

    /// Capabilities to advertise, e.g. `latency:nfqueue`.
    pub fn capabilities(&self) -> Vec<String> {
        let mut c = Vec::new();
        if self.netem.is_some() {
            c.push("latency:netem".into());
        }
        if self.nfqueue.is_some() {
            c.push("latency:nfqueue".into());
        }
        c
    }

    /// Why `name` is unavailable, e.g. "netem: the kernel has no sch_netem
    /// module"; empty when it is available.
    pub fn why_missing(&self, name: &str) -> String {
        self.missing
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(n, r)| format!("{n}: {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The backend for `choice`, or a refusal that says why none fits.
    pub fn choose(&self, choice: Choice) -> Result<Arc<dyn LatencyBackend>> {
        let why = |name: &str| {
            self.missing
                .iter()
                .filter(|(n, _)| name.is_empty() || *n == name)
                .map(|(n, r)| format!("{n}: {r}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match choice {
            Choice::Auto => self
                .netem
                .clone()
                .or_else(|| self.nfqueue.clone())
                .ok_or_else(|| Error::Refused(format!("this agent has no working latency backend ({})", why("")))),
            Choice::Netem => self
                .netem
                .clone()
                .ok_or_else(|| Error::Refused(format!("the netem backend is not available here ({})", why("netem")))),
            Choice::Nfqueue => self.nfqueue.clone().ok_or_else(|| {
                Error::Refused(format!(
                    "the nfqueue backend is not available here ({})",
                    why("nfqueue")
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_backend_means_a_refusal_naming_each_reason() {
        let b = Backends::detect(Allowed::None, std::path::Path::new("/nonexistent"));
        assert!(b.capabilities().is_empty());
        let e = b.choose(Choice::Auto).err().unwrap();
        assert!(e.is_refusal());
        let msg = e.to_string();
        assert!(msg.contains("no working latency backend"), "{msg}");
        assert!(msg.contains("netem: disabled"), "{msg}");
        assert!(msg.contains("nfqueue: disabled"), "{msg}");
    }
}
