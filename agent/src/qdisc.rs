//! The traffic-control boundary (`tc`): queueing disciplines and filters.
//!
//! The netem tree (latency, corrupt, duplicate, reorder) and bandwidth's
//! tbf talk to the [`Tc`] trait with typed calls, so their logic (which
//! handle they own, what they refuse to replace) is unit tested with the
//! recording fake `fake::FakeTc` (tests only); [`SystemTc`] renders the calls as `tc`
//! command lines.

use std::process::Command;
use std::time::Duration;

use crate::cidr::Cidr;

/// Errors from the tc boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tc is not installed")]
    Missing,
    #[error("cannot run tc: {0}")]
    Spawn(std::io::Error),
    #[error("tc {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Result of the tc boundary.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A qdisc as `tc qdisc show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    /// e.g. "noqueue", "fq_codel", "prio", "netem".
    pub kind: String,
    /// Major handle; 0 for the kernel's default qdiscs.
    pub handle: u16,
}

/// Where a qdisc attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    Root,
    /// A class `major:minor` of another qdisc.
    Class(u16, u16),
}

/// The qdiscs the netem backend builds.
#[derive(Debug, Clone, PartialEq)]
pub enum QdiscKind {
    /// `prio` with `bands` bands; unclassified traffic goes to bands 1-3 as
    /// with the default priomap, so only filtered traffic reaches the last.
    Prio {
        bands: u8,
    },
    Netem(Netem),
    /// Token bucket filter: `rate_bps` bits per second, a bucket of
    /// `burst` bytes, packets waiting longer than `latency` dropped.
    Tbf {
        rate_bps: u64,
        burst: u64,
        latency: Duration,
    },
}

/// A netem qdisc's parameters. Percentages are 0 when unused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Netem {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss_percent: f64,
    /// netem `corrupt`: flips one random bit of a share of the packets
    /// (after filling in an offloaded checksum, so receivers drop them).
    pub corrupt_percent: f64,
    /// netem `duplicate`: queues a share of the packets twice.
    pub duplicate_percent: f64,
    /// netem `reorder`: the share of packets sent at once, ahead of the
    /// ones waiting out `delay` (netem reorders only with a delay).
    pub reorder_percent: Option<f64>,
}

/// A u32 classifier sending matching packets to `major:band`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub v6: bool,
    pub dst: Option<Cidr>,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp).
    pub protocol: Option<u8>,
    pub dport: Option<u16>,
    pub sport: Option<u16>,
    pub band: u16,
}

/// tc operations the netem backend needs.
pub trait Tc: Send + Sync {
    /// The root qdisc of `dev`, if any.
    fn root_qdisc(&self, dev: &str) -> Result<Option<Qdisc>>;
    fn add_qdisc(&self, dev: &str, parent: Parent, handle: u16, kind: &QdiscKind) -> Result<()>;
    fn add_filter(&self, dev: &str, parent: u16, prio: u16, filter: &Filter) -> Result<()>;
    /// Deletes the root qdisc of `dev` (the kernel puts its default back).
    fn delete_root(&self, dev: &str) -> Result<()>;
    /// The root qdisc of every interface, as `(dev, qdisc)`.
    fn roots(&self) -> Result<Vec<(String, Qdisc)>>;
}

/// Runs the real `tc`.
pub struct SystemTc {
    bin: Option<String>,
}

impl SystemTc {
    pub fn detect() -> Self {
        Self {
            bin: crate::firewall::which("tc"),
        }
    }

    pub fn installed(&self) -> bool {
        self.bin.is_some()
    }

    fn run(&self, args: &[String]) -> Result<String> {
        let bin = self.bin.as_deref().ok_or(Error::Missing)?;
        let out = Command::new(bin).args(args).output().map_err(Error::Spawn)?;
        if !out.status.success() {
            return Err(Error::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Parses `tc qdisc show dev X` output for the root qdisc.
pub fn parse_root(out: &str) -> Option<Qdisc> {
    out.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() != Some(&"qdisc") || !w.contains(&"root") {
            return None;
        }
        let kind = w.get(1)?.to_string();
        let major = w.get(2)?.trim_end_matches(':').split(':').next()?;
        let handle = u16::from_str_radix(major, 16).ok()?;
        Some(Qdisc { kind, handle })
    })
}

/// Parses `tc qdisc show` (all interfaces) for every root qdisc.
pub fn parse_roots(out: &str) -> Vec<(String, Qdisc)> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let dev = w.iter().position(|x| *x == "dev").and_then(|i| w.get(i + 1))?;
            parse_root(l).map(|q| (dev.to_string(), q))
        })
        .collect()
}

fn us(d: Duration) -> String {
    format!("{}us", d.as_micros())
}

/// The `tc` arguments of a qdisc.
pub fn qdisc_args(dev: &str, parent: Parent, handle: u16, kind: &QdiscKind) -> Vec<String> {
    let mut a: Vec<String> = vec!["qdisc".into(), "add".into(), "dev".into(), dev.into()];
    match parent {
        Parent::Root => a.push("root".into()),
        Parent::Class(maj, min) => a.extend(["parent".into(), format!("{maj:x}:{min:x}")]),
    }
    a.extend(["handle".into(), format!("{handle:x}:")]);
    match kind {
        QdiscKind::Prio { bands } => {
            a.extend(["prio".into(), "bands".into(), bands.to_string(), "priomap".into()]);
            a.extend("1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1".split(' ').map(String::from));
        }
        QdiscKind::Netem(n) => {
            a.extend(["netem".into(), "delay".into(), us(n.delay)]);
            if !n.jitter.is_zero() {
                a.push(us(n.jitter));
            }
            for (what, p) in [
                ("loss", n.loss_percent),
                ("corrupt", n.corrupt_percent),
                ("duplicate", n.duplicate_percent),
            ] {
                if p > 0.0 {
                    a.extend([what.into(), format!("{p}%")]);
                }
            }
            if let Some(p) = n.reorder_percent {
                a.extend(["reorder".into(), format!("{p}%")]);
            }
        }
        QdiscKind::Tbf {
            rate_bps,
            burst,
            latency,
        } => {
            a.extend([
                "tbf".into(),
                "rate".into(),
                format!("{rate_bps}bit"),
                "burst".into(),
                burst.to_string(),
                "latency".into(),
                us(*latency),
            ]);
        }
    }
    a
}

/// The `tc` arguments of a filter.
pub fn filter_args(dev: &str, parent: u16, prio: u16, f: &Filter) -> Vec<String> {
    let ip = if f.v6 { "ip6" } else { "ip" };
    let mut a: Vec<String> = vec![
        "filter".into(),
        "add".into(),
        "dev".into(),
        dev.into(),
        "parent".into(),
        format!("{parent:x}:"),
        "protocol".into(),
        if f.v6 { "ipv6".into() } else { "ip".into() },
        "prio".into(),
        prio.to_string(),
        "u32".into(),
    ];
    let mut matched = false;
    if let Some(d) = f.dst {
        a.extend(["match".into(), ip.into(), "dst".into(), d.to_string()]);
        matched = true;
    }
    if let Some(p) = f.protocol {
        a.extend([
            "match".into(),
            ip.into(),
            "protocol".into(),
            p.to_string(),
            "0xff".into(),
        ]);
        matched = true;
    }
    if let Some(p) = f.dport {
        a.extend([
            "match".into(),
            ip.into(),
            "dport".into(),
            p.to_string(),
            "0xffff".into(),
        ]);
        matched = true;
    }
    if let Some(p) = f.sport {
        a.extend([
            "match".into(),
            ip.into(),
            "sport".into(),
            p.to_string(),
            "0xffff".into(),
        ]);
        matched = true;
    }
    if !matched {
        a.extend(["match".into(), "u32".into(), "0".into(), "0".into()]);
    }
    a.extend(["flowid".into(), format!("{parent:x}:{:x}", f.band)]);
    a
}

impl Tc for SystemTc {
    fn root_qdisc(&self, dev: &str) -> Result<Option<Qdisc>> {
        let out = self.run(&["qdisc".into(), "show".into(), "dev".into(), dev.into()])?;
        Ok(parse_root(&out))
    }

    fn add_qdisc(&self, dev: &str, parent: Parent, handle: u16, kind: &QdiscKind) -> Result<()> {
        self.run(&qdisc_args(dev, parent, handle, kind)).map(|_| ())
    }

    fn add_filter(&self, dev: &str, parent: u16, prio: u16, filter: &Filter) -> Result<()> {
        self.run(&filter_args(dev, parent, prio, filter)).map(|_| ())
    }

    fn delete_root(&self, dev: &str) -> Result<()> {
        self.run(&["qdisc".into(), "del".into(), "dev".into(), dev.into(), "root".into()])
            .map(|_| ())
    }

    fn roots(&self) -> Result<Vec<(String, Qdisc)>> {
        Ok(parse_roots(&self.run(&["qdisc".into(), "show".into()])?))
    }
}

/// The recording fake of [`Tc`], shared by every test of a qdisc user.
#[cfg(test)]
pub mod fake {
    use std::sync::Mutex;

    use super::*;

    /// Records typed tc calls and keeps a model of each device's root.
    #[derive(Default)]
    pub struct FakeTc {
        pub calls: Mutex<Vec<String>>,
        pub roots: Mutex<std::collections::HashMap<String, Qdisc>>,
        pub fail_filters: bool,
        /// (dev, parent, prio) → whether its filters are IPv6: the kernel
        /// keeps one protocol per priority of a parent.
        pub prios: Mutex<std::collections::HashMap<(String, u16, u16), bool>>,
    }

    impl Tc for FakeTc {
        fn root_qdisc(&self, dev: &str) -> Result<Option<Qdisc>> {
            Ok(self.roots.lock().unwrap().get(dev).cloned())
        }
        fn add_qdisc(&self, dev: &str, parent: Parent, handle: u16, kind: &QdiscKind) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(qdisc_args(dev, parent, handle, kind).join(" "));
            if parent == Parent::Root {
                let kind = match kind {
                    QdiscKind::Prio { .. } => "prio",
                    QdiscKind::Netem { .. } => "netem",
                    QdiscKind::Tbf { .. } => "tbf",
                };
                self.roots.lock().unwrap().insert(
                    dev.into(),
                    Qdisc {
                        kind: kind.into(),
                        handle,
                    },
                );
            }
            Ok(())
        }
        fn add_filter(&self, dev: &str, parent: u16, prio: u16, f: &Filter) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(filter_args(dev, parent, prio, f).join(" "));
            if self.fail_filters {
                return Err(Error::Failed {
                    args: "filter".into(),
                    stderr: "RTNETLINK answers: Invalid argument".into(),
                });
            }
            // As the kernel does (found on a real kernel under qemu): a
            // second protocol at a priority that already holds filters of
            // another is refused.
            let mut prios = self.prios.lock().unwrap();
            match prios.get(&(dev.to_string(), parent, prio)) {
                Some(v6) if *v6 != f.v6 => Err(Error::Failed {
                    args: "filter".into(),
                    stderr: "Error: Filter with specified priority/protocol not found.".into(),
                }),
                _ => {
                    prios.insert((dev.to_string(), parent, prio), f.v6);
                    Ok(())
                }
            }
        }
        fn delete_root(&self, dev: &str) -> Result<()> {
            self.calls.lock().unwrap().push(format!("qdisc del dev {dev} root"));
            self.roots.lock().unwrap().remove(dev);
            Ok(())
        }
        fn roots(&self) -> Result<Vec<(String, Qdisc)>> {
            Ok(self.roots.lock().unwrap().clone().into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_qdisc_is_read_from_tc_output() {
        let out = "qdisc noqueue 0: root refcnt 2 \nqdisc ingress ffff: parent ffff:fff1 ----------------\n";
        assert_eq!(
            parse_root(out),
            Some(Qdisc {
                kind: "noqueue".into(),
                handle: 0
            })
        );
        let out = "qdisc prio fa12: root refcnt 2 bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1\nqdisc netem fb12: parent fa12:4 limit 1000 delay 100ms\n";
        assert_eq!(
            parse_root(out).map(|q| (q.kind, q.handle)),
            Some(("prio".into(), 0xfa12))
        );
        assert_eq!(parse_root(""), None);
        let all = "qdisc noqueue 0: dev lo root refcnt 2\nqdisc prio fa12: dev eth0 root refcnt 2 bands 4\nqdisc netem fb12: dev eth0 parent fa12:4 limit 1000\n";
        assert_eq!(
            parse_roots(all)
                .into_iter()
                .map(|(d, q)| (d, q.handle))
                .collect::<Vec<_>>(),
            vec![("lo".to_string(), 0), ("eth0".to_string(), 0xfa12)]
        );
    }

    #[test]
    fn netem_and_filter_arguments() {
        let a = qdisc_args(
            "eth0",
            Parent::Class(0xfa12, 4),
            0xfb12,
            &QdiscKind::Netem(Netem {
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(5),
                loss_percent: 10.0,
                ..Default::default()
            }),
        );
        assert_eq!(
            a.join(" "),
            "qdisc add dev eth0 parent fa12:4 handle fb12: netem delay 100000us 5000us loss 10%"
        );
        let packets = |n: Netem| qdisc_args("eth0", Parent::Class(0xfa12, 4), 0xfb12, &QdiscKind::Netem(n)).join(" ");
        assert!(packets(Netem {
            corrupt_percent: 30.0,
            ..Default::default()
        })
        .ends_with("netem delay 0us corrupt 30%"));
        assert!(packets(Netem {
            duplicate_percent: 2.5,
            ..Default::default()
        })
        .ends_with("netem delay 0us duplicate 2.5%"));
        // reorder 0% is meaningful (every packet waits): it is written.
        assert!(packets(Netem {
            delay: Duration::from_millis(10),
            reorder_percent: Some(0.0),
            ..Default::default()
        })
        .ends_with("netem delay 10000us reorder 0%"));
        let f = Filter {
            v6: false,
            dst: Some("10.0.0.0/24".parse().unwrap()),
            protocol: Some(6),
            dport: Some(80),
            sport: None,
            band: 4,
        };
        assert_eq!(
            filter_args("eth0", 0xfa12, 10, &f).join(" "),
            "filter add dev eth0 parent fa12: protocol ip prio 10 u32 match ip dst 10.0.0.0/24 match ip protocol 6 0xff match ip dport 80 0xffff flowid fa12:4"
        );
    }
}
