//! The netem backend of `corrupt`, `duplicate` and `reorder` on a real
//! kernel: Debian's kernel (which has `sch_netem`) under qemu, as in
//! `netem_qemu.rs` (see `faultline_tests::qemu`), two network namespaces
//! `a` and `b` joined by a veth pair inside the guest.
//!
//! For each kind, `faultline run` (local mode, in namespace `a`) injects
//! the fault with `backend: netem` towards `b`, UDP port of its own; while
//! it is in place, 2000 numbered datagrams go from `a` to `b` (the
//! `faultline-test-udp` binary at both ends) and the receiver counts what
//! arrived. Asserted per kind: the report names the netem backend and the
//! restore; the achieved rate is within a few points of the asked one
//! (corrupt 30 % → datagrams lost as bad checksums, duplicate 20 % →
//! datagrams delivered twice, reorder 25 % with a 20 ms gap → datagrams
//! arriving after a later one); the root qdisc is the kernel's default
//! again afterwards.
//!
//! Needs root, qemu-system-x86_64 and the kernel package; skips with a
//! reason outside CI, fails under `CI=true`.

use std::path::PathBuf;
use std::time::Duration;

use faultline_tests::lab::{agent_bin, faultline_bin, root_or_skip};
use faultline_tests::qemu::{self, console_field as field, Kernel, QEMU_TOOLS};
use faultline_tests::tools::present_or_skip;

/// Datagrams per kind.
const N: u64 = 2000;

/// (kind, port, the fault as written).
const KINDS: &[(&str, u16, &str)] = &[
    (
        "corrupt",
        9101,
        "corrupt: { percent: 30%, protocol: udp, ports: [9101], to: { cidrs: [10.88.0.2/32] }, interface: eth0, backend: netem }",
    ),
    (
        "duplicate",
        9102,
        "duplicate: { percent: 20%, protocol: udp, ports: [9102], to: { cidrs: [10.88.0.2/32] }, interface: eth0, backend: netem }",
    ),
    (
        "reorder",
        9103,
        "reorder: { percent: 25%, gap: 20ms, protocol: udp, ports: [9103], to: { cidrs: [10.88.0.2/32] }, interface: eth0, backend: netem }",
    ),
];

fn experiment(fault: &str) -> String {
    format!(
        r#"name: netem-packets
hypothesis:
  probes:
    - name: b-connect
      interval: 500ms
      tcp: {{ address: "10.88.0.2:8080" }}
baseline: 1s
duration: 12s
recovery: 1s
faults:
  - name: f
    targets: {{ mode: all }}
    {fault}
"#
    )
}

/// The guest's /init: the set-up of `netem_qemu.rs`, then one measurement
/// per kind, printing `@@ KEY value` lines.
fn init() -> String {
    let mut s = String::from(
        r#"#!/bin/bash
export PATH=/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns /var/lib
echo 1 > /proc/sys/kernel/printk
for m in /lib/modules/*.ko*; do insmod "$m" || echo "@@ INSMOD-FAILED $m"; done
echo "@@ KERNEL $(uname -r) netem=$(test -d /sys/module/sch_netem && echo loaded)"
ip link set lo up
ip netns add a && ip netns add b
ip link add eth0 netns a type veth peer name eth0 netns b
ip -n a addr add 10.88.0.1/24 dev eth0; ip -n a link set eth0 up; ip -n a link set lo up
ip -n b addr add 10.88.0.2/24 dev eth0; ip -n b link set eth0 up; ip -n b link set lo up
ip netns exec b faultline-test-http --listen 10.88.0.2:8080 --tag b > /tmp/http.out &
sleep 1
qdisc() { ip netns exec a tc qdisc show dev eth0 | tr '\n' ' '; }
snmp() { ip netns exec b grep -E '^(Ip|Udp):' /proc/net/snmp | tr '\n' '|'; }
echo "@@ QDISC-BEFORE $(qdisc)"
measure() {
  k=$1; port=$2
  ip netns exec a faultline run /exp/$k.yaml --format json > /tmp/$k.json 2> /tmp/$k.err &
  RUN=$!
  for i in $(seq 1 600); do qdisc | grep -q netem && break; sleep 0.1; done
  echo "@@ MID-$k $(qdisc)"
  echo "@@ SNMP0-$k $(snmp)"
  ip netns exec b faultline-test-udp recv 10.88.0.2:$port N_SENT > /tmp/$k.udp &
  RECV=$!
  sleep 0.5
  ip netns exec a faultline-test-udp send 10.88.0.2:$port N_SENT 500
  wait $RECV
  echo "@@ UDP-$k $(cat /tmp/$k.udp)"
  echo "@@ SNMP1-$k $(snmp)"
  echo "@@ STILL-IN-PLACE-$k $(qdisc | grep -c netem)"
  wait $RUN
  echo "@@ RUN-EXIT-$k $?"
  echo "@@ QDISC-AFTER-$k $(qdisc)"
  echo "@@ REPORT-$k $(tr -d '\n' < /tmp/$k.json)"
  echo "@@ STDERR-$k $(tail -3 /tmp/$k.err | tr '\n' ' ')"
}
"#,
    )
    .replace("N_SENT", &N.to_string());
    for (kind, port, _) in KINDS {
        s += &format!("measure {kind} {port}\n");
    }
    s += "echo \"@@ DONE\"\necho o > /proc/sysrq-trigger\nsleep 10\n";
    s
}

/// `key=value` of the receiver's line.
fn udp(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A counter from `snmp`'s `Ip:`/`Udp:` lines joined by `|`.
fn snmp(joined: &str, table: &str, name: &str) -> u64 {
    let rows: Vec<&str> = joined
        .split('|')
        .filter(|l| l.starts_with(&format!("{table}:")))
        .collect();
    if rows.len() < 2 {
        panic!("no {table} rows in {joined:?}");
    }
    rows[0]
        .split_whitespace()
        .zip(rows[1].split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {table} {name} in {joined:?}"))
}

#[test]
fn corrupt_duplicate_and_reorder_over_netem_reach_their_rates_and_restore() {
    let test = "corrupt_duplicate_and_reorder_over_netem_reach_their_rates_and_restore";
    if !root_or_skip(test) || !present_or_skip(test, QEMU_TOOLS) {
        return;
    }
    let Some(deb) = qemu::kernel_deb_or_skip(test) else {
        return;
    };
    let kernel = Kernel::unpack(&deb).expect("unpack the kernel package");
    let modules: Vec<PathBuf> = [
        "drivers/net/veth.ko",
        "net/sched/sch_prio.ko",
        "net/sched/sch_netem.ko",
        "net/sched/cls_u32.ko",
    ]
    .iter()
    .map(|m| kernel.module(m).expect("module"))
    .collect();
    let mut bins: Vec<(PathBuf, Option<&str>)> = vec![
        (faultline_bin(), None),
        (agent_bin(), None),
        (faultline_bin().with_file_name("faultline-test-http"), None),
        (faultline_bin().with_file_name("faultline-test-udp"), None),
    ];
    for cmd in [
        "bash", "mount", "insmod", "ip", "tc", "uname", "sleep", "cat", "tr", "grep", "seq", "mkdir", "tail",
    ] {
        let p = qemu::which(cmd).unwrap_or_else(|| panic!("{cmd} not found on this host"));
        bins.push((p, None));
    }
    let files: Vec<(String, String)> = KINDS
        .iter()
        .map(|(kind, _, fault)| (format!("exp/{kind}.yaml"), experiment(fault)))
        .collect();
    let files: Vec<(&str, String)> = files.iter().map(|(p, y)| (p.as_str(), y.clone())).collect();
    let initrd = qemu::initramfs(&bins, &files, &modules, &init()).expect("build the initramfs");
    eprintln!(
        "kernel {} from {}; initramfs {} MiB",
        kernel.release,
        deb.display(),
        initrd.len() / (1 << 20)
    );
    let boot = qemu::boot(&kernel.vmlinuz, &initrd, 2048, Duration::from_secs(900)).expect("boot the guest");
    let c = &boot.console;
    eprintln!("guest ran {:?} (KVM: {})", boot.wall, boot.kvm);
    let show = || {
        c.lines()
            .filter(|l| l.contains("@@ ") && !l.contains("@@ REPORT"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(field(c, "DONE").is_some(), "the guest did not finish its script:\n{c}");
    assert!(
        field(c, "KERNEL").is_some_and(|k| k.contains("netem=loaded")),
        "sch_netem did not load:\n{}",
        show()
    );
    assert!(!c.contains("@@ INSMOD-FAILED"), "{}", show());
    let before = field(c, "QDISC-BEFORE").unwrap_or("").to_string();
    assert!(!before.contains("netem") && !before.contains("prio"), "{before}");

    for (kind, _, _) in KINDS {
        let get = |key: &str| field(c, &format!("{key}-{kind}")).unwrap_or("").to_string();
        let mid = get("MID");
        let report: serde_json::Value =
            serde_json::from_str(&get("REPORT")).unwrap_or_else(|e| panic!("{kind}: report: {e}\n{}", show()));
        let target = &report["faults"][0]["targets"][0];
        assert_eq!(target["backend"], "netem", "{kind}: {target}\n{}", show());
        assert_eq!(target["state"], "restored", "{kind}: {target}");
        // netem counts nothing: no packet figures, a note that says so.
        assert!(
            target["figures"].as_array().is_none_or(Vec::is_empty),
            "{kind}: {target}"
        );
        assert!(
            target["notes"].to_string().contains("counts no packets"),
            "{kind}: {target}"
        );
        assert_eq!(
            get("STILL-IN-PLACE"),
            "1",
            "{kind}: the fault ended before the measurement did"
        );
        let line = get("UDP");
        let share = |n: u64| n as f64 * 100.0 / N as f64;
        match *kind {
            "corrupt" => {
                assert!(mid.contains("corrupt 30%"), "{kind}: {mid}");
                let lost = udp(&line, "lost");
                let (s0, s1) = (get("SNMP0"), get("SNMP1"));
                let csum = snmp(&s1, "Udp", "InCsumErrors") - snmp(&s0, "Udp", "InCsumErrors");
                let hdr = snmp(&s1, "Ip", "InHdrErrors") - snmp(&s0, "Ip", "InHdrErrors");
                eprintln!(
                    "netem corrupt 30%: {lost} of {N} datagrams lost ({:.1}%): {csum} UDP checksum errors, {hdr} IP header errors at b, {} damaged delivered",
                    share(lost),
                    udp(&line, "damaged")
                );
                // netem flips a bit anywhere in the frame, Ethernet header
                // included: a flipped source MAC (48 of the 1136 bits of
                // these frames) still delivers the datagram intact.
                assert!(
                    (share(lost) - 30.0).abs() <= 5.0,
                    "{kind}: asked 30%, lost {:.1}%",
                    share(lost)
                );
                assert_eq!(udp(&line, "damaged"), 0, "a corrupted datagram was delivered");
                assert!(csum > 0, "no checksum errors at the receiver");
            }
            "duplicate" => {
                assert!(mid.contains("duplicate 20%"), "{kind}: {mid}");
                let dups = udp(&line, "duplicates");
                eprintln!(
                    "netem duplicate 20%: {} of {N} lost, {dups} delivered twice ({:.1}%), at most {} copies",
                    udp(&line, "lost"),
                    share(dups),
                    udp(&line, "most_copies")
                );
                assert_eq!(udp(&line, "lost"), 0, "{line}");
                assert!(udp(&line, "most_copies") <= 2, "{line}");
                assert!(
                    (share(dups) - 20.0).abs() <= 4.0,
                    "{kind}: asked 20%, duplicated {:.1}%",
                    share(dups)
                );
            }
            _ => {
                assert!(mid.contains("reorder 75%") && mid.contains("delay 20"), "{kind}: {mid}");
                let late = udp(&line, "late");
                eprintln!(
                    "netem reorder 25% (gap 20 ms): {late} of {N} arrived after a later one ({:.1}%), {} lost, {} duplicated",
                    share(late),
                    udp(&line, "lost"),
                    udp(&line, "duplicates")
                );
                assert_eq!((udp(&line, "lost"), udp(&line, "duplicates")), (0, 0), "{line}");
                assert!(
                    (share(late) - 25.0).abs() <= 5.0,
                    "{kind}: asked 25%, {:.1}% late",
                    share(late)
                );
            }
        }
        assert_eq!(get("RUN-EXIT"), "0", "{kind}: {}", show());
        assert_eq!(
            get("QDISC-AFTER"),
            before,
            "{kind}: the root qdisc is the default again"
        );
    }
}
