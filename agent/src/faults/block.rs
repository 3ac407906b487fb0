//! `block` fault: drop traffic between this node and a set of peers — a zone
//! outage or a network partition, seen from one side.
//!
//! One nftables table per fault, `inet faultline_<fault id>`, with an
//! `input` and an `output` chain, loaded with one `nft -f` transaction so the
//! block is all there or not at all; restore deletes the table. The chains
//! accept loopback, the coordinator's addresses and SSH before any drop, so
//! the agent keeps its control channel (restores and lease renewals still
//! arrive) and an operator can still log in. Packets are dropped, not
//! rejected, as a dead zone would: peers see timeouts.
//!
//! Forwarded traffic (the node as a router) is not blocked.

use std::sync::Arc;

use faultline_proto::v1;

use crate::cidr::Cidr;
use crate::faults::{self, Applied, FaultKind, Prepared, Registration, Report, Restoring, Setup};
use crate::firewall::{Exempt, Firewall};
use crate::journal::{Object, Owned};

mod container;

/// The start of every block fault's nftables table name; the orphan sweep
/// deletes tables named so.
pub const NFT_PREFIX: &str = "faultline_";

/// Errors of the block fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid block spec: {0}")]
    InvalidSpec(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("nftables: {0}")]
    Nft(#[from] crate::firewall::Error),
}

impl Error {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Refused(_))
    }
}

/// Result of the block fault.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which way packets are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

/// A validated block request.
#[derive(Debug, Clone)]
pub struct BlockSpec {
    pub peers: Vec<Cidr>,
    pub ports: Vec<u16>,
    pub direction: Direction,
}

impl TryFrom<v1::BlockSpec> for BlockSpec {
    type Error = Error;

    fn try_from(w: v1::BlockSpec) -> Result<Self> {
        if w.peers.is_empty() {
            return Err(Error::InvalidSpec(
                "no peers: give zones that have agents, or CIDRs".into(),
            ));
        }
        let peers = w
            .peers
            .iter()
            .map(|p| p.parse::<Cidr>().map_err(|e| Error::InvalidSpec(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let ports = w
            .ports
            .iter()
            .map(|p| match u16::try_from(*p) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(Error::InvalidSpec(format!("ports: {p} is not a port (1-65535)"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let direction = match w.direction.as_str() {
            "" | "both" => Direction::Both,
            "in" => Direction::In,
            "out" => Direction::Out,
            d => return Err(Error::InvalidSpec(format!("direction {d:?}: use in, out or both"))),
        };
        Ok(Self {
            peers,
            ports,
            direction,
        })
    }
}

/// The nftables table name of a fault: `faultline_<fault id>`. Injective
/// because only valid fault ids (`faultline_proto::ids`: letters, digits,
/// `_`, `-`) get one, and nft takes those in an identifier unchanged after
/// the leading letter (replacing `-` by `_` would give `c-x` and `c_x` one
/// table).
pub fn table_name(fault_id: &str) -> Result<String> {
    faultline_proto::ids::validate_fault_id(fault_id).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    Ok(format!("{NFT_PREFIX}{fault_id}"))
}

fn set(cidrs: &[&Cidr]) -> String {
    let items: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The `nft -f` script that creates the fault's table.
pub fn install_script(spec: &BlockSpec, exempt: &Exempt, table: &str) -> String {
    let v4: Vec<&Cidr> = spec.peers.iter().filter(|c| c.is_ipv4()).collect();
    let v6: Vec<&Cidr> = spec.peers.iter().filter(|c| !c.is_ipv4()).collect();
    let ports = spec.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    let chain = |name: &str, hook: &str, lo: &str, dir: &str| {
        let mut s = format!("  chain {name} {{\n    type filter hook {hook} priority -10; policy accept;\n");
        s += &format!("    {lo} \"lo\" accept\n");
        for c in &exempt.coordinator {
            let fam = if c.is_ipv4() { "ip" } else { "ip6" };
            s += &format!("    {fam} {dir} {c} accept\n");
        }
        for p in &exempt.tcp_ports {
            s += &format!("    tcp dport {p} accept\n    tcp sport {p} accept\n");
        }
        for (fam, peers) in [("ip", &v4), ("ip6", &v6)] {
            if peers.is_empty() {
                continue;
            }
            if ports.is_empty() {
                s += &format!("    {fam} {dir} {} drop\n", set(peers));
            } else {
                for end in ["dport", "sport"] {
                    s += &format!(
                        "    {fam} {dir} {} meta l4proto {{ tcp, udp }} th {end} {{ {ports} }} drop\n",
                        set(peers)
                    );
                }
            }
        }
        s += "  }\n";
        s
    };
    let mut s = format!("table inet {table} {{\n");
    if matches!(spec.direction, Direction::In | Direction::Both) {
        s += &chain("input", "input", "iifname", "saddr");
    }
    if matches!(spec.direction, Direction::Out | Direction::Both) {
        s += &chain("output", "output", "oifname", "daddr");
    }
    s += "}\n";
    s
}

/// A block in place.
pub struct AppliedBlock {
    firewall: Arc<dyn Firewall>,
    pub table: String,
    pub peers: usize,
}

impl AppliedBlock {
    pub fn observation(&self) -> v1::BlockObservation {
        v1::BlockObservation {
            table: format!("inet {}", self.table),
            peers: self.peers as u32,
        }
    }

    /// Deletes the table (and with it every rule of the fault).
    pub fn restore(self) -> Result<()> {
        self.firewall
            .nft_apply(&format!("delete table inet {}\n", self.table))
            .map_err(Error::from)
    }
}

/// The fault's table name, refused if that table exists already.
fn free_table(firewall: &dyn Firewall, fault_id: &str) -> Result<String> {
    let table = table_name(fault_id)?;
    if firewall.nft_tables()?.iter().any(|(f, n)| f == "inet" && *n == table) {
        return Err(Error::Refused(format!(
            "nftables table inet {table} already exists; is fault {fault_id} already injected?"
        )));
    }
    Ok(table)
}

/// What [`apply`] would do, in words, touching nothing (a dry run).
pub fn preview(firewall: &dyn Firewall, fault_id: &str, spec: &BlockSpec) -> Result<String> {
    let table = free_table(firewall, fault_id)?;
    Ok(format!(
        "would drop traffic to and from {} peer network(s) with nftables table inet {table}",
        spec.peers.len()
    ))
}

/// Installs the block.
pub fn apply(firewall: Arc<dyn Firewall>, fault_id: &str, spec: &BlockSpec, exempt: &Exempt) -> Result<AppliedBlock> {
    let table = free_table(firewall.as_ref(), fault_id)?;
    firewall.nft_apply(&install_script(spec, exempt, &table))?;
    Ok(AppliedBlock {
        firewall,
        table,
        peers: spec.peers.len(),
    })
}

/// The block kind: one nftables table per fault, named by [`table_name`].
pub const KIND: Registration = Registration {
    name: "block",
    owns: &[Owned::NftTables { prefix: NFT_PREFIX }],
    takes: |w| matches!(w, v1::fault_spec::Kind::Block(_)),
    backend: "nftables",
    build: |s: &Setup| {
        Arc::new(Block {
            firewall: s.block.clone(),
            exempt: s.exempt.clone(),
        })
    },
};

impl From<Error> for faults::Error {
    fn from(e: Error) -> Self {
        let refusal = e.is_refusal();
        faults::Error::of(e, refusal)
    }
}

/// Blocks on this node; none without nftables.
struct Block {
    firewall: Option<Arc<dyn Firewall>>,
    exempt: Exempt,
}

impl FaultKind for Block {
    fn capabilities(&self) -> Vec<String> {
        match self.firewall {
            Some(_) => vec![KIND.name.into()],
            None => Vec::new(),
        }
    }

    fn prepare(
        &self,
        fault_id: &str,
        spec: v1::fault_spec::Kind,
        place: &faults::Place,
    ) -> faults::Result<Box<dyn Prepared>> {
        let v1::fault_spec::Kind::Block(w) = spec else {
            return Err(Error::InvalidSpec("not a block spec".into()).into());
        };
        let spec = BlockSpec::try_from(w)?;
        let table = table_name(fault_id)?;
        let firewall = self
            .firewall
            .clone()
            .ok_or_else(|| Error::Refused("nft is not installed on this node, so it cannot block traffic".into()))?;
        if let faults::Place::Containers { containers, .. } = place {
            return Ok(Box::new(container::PreparedBlocks::new(
                firewall,
                fault_id,
                spec,
                table,
                containers,
                self.exempt.clone(),
            )?));
        }
        Ok(Box::new(PreparedBlock {
            firewall,
            fault_id: fault_id.to_string(),
            spec,
            table,
            exempt: self.exempt.clone(),
        }))
    }
}

struct PreparedBlock {
    firewall: Arc<dyn Firewall>,
    fault_id: String,
    spec: BlockSpec,
    table: String,
    exempt: Exempt,
}

impl Prepared for PreparedBlock {
    fn undo_objects(&self) -> Vec<Object> {
        vec![Object::NftTable {
            family: "inet".into(),
            name: self.table.clone(),
        }]
    }

    fn preview(&self) -> faults::Result<(String, String)> {
        let detail = preview(self.firewall.as_ref(), &self.fault_id, &self.spec)?;
        Ok((detail, KIND.backend.into()))
    }

    fn apply(self: Box<Self>) -> faults::Result<Box<dyn Applied>> {
        Ok(Box::new(apply(
            self.firewall,
            &self.fault_id,
            &self.spec,
            &self.exempt,
        )?))
    }
}

impl Applied for AppliedBlock {
    fn backend(&self) -> String {
        KIND.backend.into()
    }

    fn injected(&self) -> Report {
        Report {
            detail: format!(
                "dropping traffic to and from {} peer network(s) with nftables table inet {}",
                self.peers, self.table
            ),
            observation: Some(v1::observation::Kind::Block(self.observation())),
        }
    }

    fn restore(self: Box<Self>) -> Restoring {
        let obs = self.observation();
        let table = self.table.clone();
        let result = AppliedBlock::restore(*self);
        Box::pin(async move {
            result?;
            Ok(Report {
                detail: format!("deleted nftables table inet {table}"),
                observation: Some(v1::observation::Kind::Block(obs)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{self, Family};
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeNft {
        scripts: Mutex<Vec<String>>,
        tables: Mutex<Vec<(String, String)>>,
    }

    impl Firewall for FakeNft {
        fn iptables_restore(&self, _: Family, _: &str) -> firewall::Result<()> {
            unreachable!()
        }
        fn iptables_save(&self, _: Family, _: &str) -> firewall::Result<String> {
            unreachable!()
        }
        fn nft_apply(&self, script: &str) -> firewall::Result<()> {
            self.scripts.lock().unwrap().push(script.to_string());
            Ok(())
        }
        fn nft_tables(&self) -> firewall::Result<Vec<(String, String)>> {
            Ok(self.tables.lock().unwrap().clone())
        }
    }

    fn spec(direction: Direction, ports: Vec<u16>) -> BlockSpec {
        BlockSpec {
            peers: vec![
                "10.9.0.2".parse().unwrap(),
                "10.9.0.0/29".parse().unwrap(),
                "fd00::2".parse().unwrap(),
            ],
            ports,
            direction,
        }
    }

    #[test]
    fn script_accepts_control_traffic_before_dropping_peers() {
        let exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap()]);
        let s = install_script(&spec(Direction::Out, vec![]), &exempt, "faultline_r1_1");
        assert_eq!(
            s,
            "table inet faultline_r1_1 {\n  chain output {\n    type filter hook output priority -10; policy accept;\n\
             \x20   oifname \"lo\" accept\n    ip daddr 10.9.0.1 accept\n    tcp dport 22 accept\n    tcp sport 22 accept\n\
             \x20   ip daddr { 10.9.0.2/32, 10.9.0.0/29 } drop\n    ip6 daddr { fd00::2/128 } drop\n  }\n}\n"
        );
    }

    #[test]
    fn both_directions_and_ports_make_two_chains_matching_either_end() {
        let s = install_script(&spec(Direction::Both, vec![80, 443]), &Exempt::default(), "t");
        assert!(s.contains("chain input") && s.contains("chain output"), "{s}");
        assert!(s.contains("ip saddr { 10.9.0.2/32, 10.9.0.0/29 } meta l4proto { tcp, udp } th dport { 80, 443 } drop"));
        assert!(s.contains("th sport { 80, 443 } drop"));
    }

    #[test]
    fn table_names_are_one_per_fault_id() {
        assert_eq!(
            table_name("r20261123-144000-abc123-1").unwrap(),
            "faultline_r20261123-144000-abc123-1"
        );
        // Once one name, `c-x` and `c_x` now have a table each; ids that
        // would need rewriting are refused instead.
        assert_ne!(table_name("c-x").unwrap(), table_name("c_x").unwrap());
        for bad in ["c/x", "c.x", "c x", ""] {
            assert!(table_name(bad).unwrap_err().is_refusal(), "{bad}");
        }
    }

    #[test]
    fn apply_refuses_an_existing_table_and_restore_deletes_only_its_own() {
        let fw = Arc::new(FakeNft::default());
        fw.tables.lock().unwrap().push(("inet".into(), "faultline_r1-1".into()));
        let e = apply(fw.clone(), "r1-1", &spec(Direction::Both, vec![]), &Exempt::default())
            .err()
            .unwrap();
        assert!(e.is_refusal() && e.to_string().contains("already exists"), "{e}");
        assert!(fw.scripts.lock().unwrap().is_empty());
        let b = apply(fw.clone(), "r1-2", &spec(Direction::Both, vec![]), &Exempt::default()).unwrap();
        b.restore().unwrap();
        assert_eq!(
            fw.scripts.lock().unwrap().last().unwrap(),
            "delete table inet faultline_r1-2\n"
        );
    }

    #[test]
    fn specs_without_peers_or_with_bad_values_are_refused() {
        for (w, want) in [
            (v1::BlockSpec::default(), "no peers"),
            (
                v1::BlockSpec {
                    peers: vec!["10.0.0.1".into()],
                    direction: "sideways".into(),
                    ..Default::default()
                },
                "direction",
            ),
            (
                v1::BlockSpec {
                    peers: vec!["10.0.0.1".into()],
                    ports: vec![0],
                    ..Default::default()
                },
                "not a port",
            ),
        ] {
            let e = BlockSpec::try_from(w).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
