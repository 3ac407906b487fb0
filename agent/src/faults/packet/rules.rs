//! The `iptables-restore` / `ip6tables-restore` scripts of a packet
//! fault's chain: what installs it and what removes it.

use super::{HOOK, MARK, TABLE};
use crate::faults::latency;
use crate::firewall::{Exempt, Family};

fn jump(interface: &Option<String>, chain: &str) -> String {
    match interface {
        Some(i) => format!("{HOOK} -o {i} -j {chain}"),
        None => format!("{HOOK} ! -o lo -j {chain}"),
    }
}

/// The `iptables-restore --noflush` (or `ip6tables-restore`) script that
/// installs a packet fault for `family`; `lines` are that family's.
pub fn install_script(
    family: Family,
    lines: &[String],
    interface: &Option<String>,
    exempt: &Exempt,
    chain: &str,
    queue: u16,
) -> String {
    let mut s = format!("*{TABLE}\n:{chain} - [0:0]\n-A {chain} -m mark --mark {MARK:#x} -j RETURN\n");
    for h in latency::exempt_hosts(exempt)
        .iter()
        .filter(|h| h.is_ipv4() == (family == Family::V4))
    {
        s += &format!("-A {chain} -d {h} -j RETURN\n");
    }
    for p in &exempt.tcp_ports {
        s += &format!("-A {chain} -p tcp --dport {p} -j RETURN\n-A {chain} -p tcp --sport {p} -j RETURN\n");
    }
    for m in lines {
        let m = if m.is_empty() { String::new() } else { format!("{m} ") };
        s += &format!("-A {chain} {m}-j NFQUEUE --queue-num {queue} --queue-bypass\n");
    }
    s += &format!("-I {}\nCOMMIT\n", jump(interface, chain));
    s
}

/// The script that removes what [`install_script`] installed.
pub fn remove_script(interface: &Option<String>, chain: &str) -> String {
    format!(
        "*{TABLE}\n-D {}\n-F {chain}\n-X {chain}\nCOMMIT\n",
        jump(interface, chain)
    )
}

#[cfg(test)]
mod tests {
    use faultline_proto::v1;

    use std::sync::Arc;

    use super::*;
    use crate::faults::packet::Scope;
    use crate::firewall::{self, Firewall};
    use crate::journal::{recover, Cleaner, Journal, Object};

    #[test]
    fn install_script_returns_own_packets_and_exemptions_before_queueing() {
        let exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap()]);
        let scope = Scope::from_wire(
            "corrupt",
            Some(v1::PacketScope {
                destinations: vec!["10.9.0.2".into()],
                dst_ports: vec![9000],
                protocol: "udp".into(),
                ..Default::default()
            }),
        )
        .unwrap();
        let s = install_script(
            Family::V4,
            &scope.match_lines().v4,
            &None,
            &exempt,
            "faultline-c-x",
            18176,
        );
        assert_eq!(
            s,
            "*filter\n:faultline-c-x - [0:0]\n\
             -A faultline-c-x -m mark --mark 0x46540d0d -j RETURN\n\
             -A faultline-c-x -d 10.9.0.1/32 -j RETURN\n\
             -A faultline-c-x -p tcp --dport 22 -j RETURN\n\
             -A faultline-c-x -p tcp --sport 22 -j RETURN\n\
             -A faultline-c-x -d 10.9.0.2/32 -p udp -m multiport --dports 9000 -j NFQUEUE --queue-num 18176 --queue-bypass\n\
             -I OUTPUT ! -o lo -j faultline-c-x\nCOMMIT\n"
        );
        assert_eq!(
            remove_script(&Some("eth0".into()), "c"),
            "*filter\n-D OUTPUT -o eth0 -j c\n-F c\n-X c\nCOMMIT\n"
        );
    }

    #[test]
    fn the_ip6tables_script_keeps_the_ipv6_exemptions_only() {
        let exempt = Exempt::new(vec!["10.9.0.1".parse().unwrap(), "fd00:9::1".parse().unwrap()]);
        let lines = vec!["-d fd00:77::12/128 -p udp".to_string()];
        let s = install_script(Family::V6, &lines, &None, &exempt, "faultline-d-x", 18177);
        assert!(s.contains("-A faultline-d-x -d fd00:9::1/128 -j RETURN\n"), "{s}");
        assert!(!s.contains("10.9.0.1"), "{s}");
        assert!(
            s.contains("-A faultline-d-x -d fd00:77::12/128 -p udp -j NFQUEUE --queue-num 18177 --queue-bypass\n"),
            "{s}"
        );
        assert!(s.contains("-m mark --mark 0x46540d0d -j RETURN"), "{s}");
    }

    /// `filter` tables' iptables-save output per family; restores are
    /// recorded.
    #[derive(Default)]
    struct SavedTables {
        saves: std::sync::Mutex<Vec<(Family, String)>>,
        restored: std::sync::Mutex<Vec<(Family, String)>>,
    }

    impl Firewall for SavedTables {
        fn iptables_restore(&self, family: Family, script: &str) -> firewall::Result<()> {
            self.restored.lock().unwrap().push((family, script.to_string()));
            // The chain is gone: a second sweep pass finds nothing.
            self.saves.lock().unwrap().retain(|(f, _)| *f != family);
            Ok(())
        }
        fn iptables_save(&self, family: Family, table: &str) -> firewall::Result<String> {
            if table != TABLE {
                return Ok(String::new());
            }
            let saves = self.saves.lock().unwrap();
            Ok(saves
                .iter()
                .filter(|(f, _)| *f == family)
                .map(|(_, s)| s.clone())
                .collect())
        }
        fn nft_apply(&self, _: &str) -> firewall::Result<()> {
            Ok(())
        }
        fn nft_tables(&self) -> firewall::Result<Vec<(String, String)>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn the_sweep_removes_a_packet_faults_orphaned_ip6tables_chain_with_ip6tables() {
        let fw = Arc::new(SavedTables::default());
        fw.saves.lock().unwrap().push((
            Family::V6,
            "*filter\n:OUTPUT ACCEPT [0:0]\n:faultline-d-r0-9 - [0:0]\n:other - [0:0]\n\
             -A OUTPUT ! -o lo -j faultline-d-r0-9\n\
             -A faultline-d-r0-9 -p udp -j NFQUEUE --queue-num 18176 --queue-bypass\nCOMMIT\n"
                .into(),
        ));
        let cleaner = Cleaner {
            firewall: Some(fw.clone()),
            ..Default::default()
        };
        let chain = Object::IptablesChain {
            ipv6: true,
            table: "filter".into(),
            chain: "faultline-d-r0-9".into(),
        };
        let found = cleaner.find_orphans(&[]);
        assert!(found.contains(&chain), "{found:?}");
        assert!(
            !found
                .iter()
                .any(|o| matches!(o, Object::IptablesChain { chain, .. } if chain == "other")),
            "{found:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let (lines, _) = recover(&j, &cleaner, &[], true);
        assert_eq!(
            *fw.restored.lock().unwrap(),
            vec![(
                Family::V6,
                "*filter\n-D OUTPUT ! -o lo -j faultline-d-r0-9\n-F faultline-d-r0-9\n-X faultline-d-r0-9\nCOMMIT\n"
                    .to_string()
            )],
            "{lines:?}"
        );
    }
}
