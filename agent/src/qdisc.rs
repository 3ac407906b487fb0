//! The traffic-control boundary (`tc`): queueing disciplines and filters.
//!
//! The netem latency backend talks to the [`Tc`] trait with typed calls, so
//! its logic (which handle it owns, what it refuses to replace) is unit
//! tested with a recording fake; [`SystemTc`] renders the calls as `tc`
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
    Prio { bands: u8 },
    Netem {
        delay: Duration,
        jitter: Duration,
        loss_percent: f64,
    },
    /// Token bucket filter: `rate_bps` bits per second, a bucket of
    /// `burst` bytes, packets waiting longer than `latency` dropped.
    Tbf {
        rate_bps: u64,
        burst: u64,
        latency: Duration,
    },
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
        QdiscKind::Netem {
            delay,
            jitter,
            loss_percent,
        } => {
            a.extend(["netem".into(), "delay".into(), us(*delay)]);
            if !jitter.is_zero() {
                a.push(us(*jitter));
            }
            if *loss_percent > 0.0 {
                a.extend(["loss".into(), format!("{loss_percent}%")]);
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
            &QdiscKind::Netem {
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(5),
                loss_percent: 10.0,
            },
        );
        assert_eq!(
            a.join(" "),
            "qdisc add dev eth0 parent fa12:4 handle fb12: netem delay 100000us 5000us loss 10%"
        );
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
