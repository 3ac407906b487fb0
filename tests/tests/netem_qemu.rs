//! The netem latency backend on a real kernel: Debian's kernel (which has
//! `sch_netem`) under qemu, an initramfs of this host's binaries, two
//! network namespaces inside the guest, and the real faultline binaries.
//!
//! 1. Local mode (`faultline run`, in-process coordinator and agent in
//!    namespace `a`): a 100 ms latency fault with `backend: netem` towards
//!    namespace `b`; a tcp probe (its connect time is one SYN → SYN-ACK
//!    round trip, so the delay of the outgoing SYN shows once) measures it.
//!    Asserted: the median connect time during the fault minus the
//!    baseline's is 100 ms ± 10 ms, and the root qdisc is the kernel's
//!    default again afterwards.
//! 2. `faultline serve` and `faultline-agent` as processes: the agent is
//!    killed with SIGKILL while the netem qdisc is in place; the qdisc
//!    stays (nobody restored it); the restarted agent removes it from its
//!    undo journal before it registers.
//!
//! Needs root, qemu-system-x86_64 and the kernel package `.ci/run`
//! downloads (see `faultline_tests::qemu`); skips with a reason outside CI,
//! fails under `CI=true`.

use std::path::PathBuf;
use std::time::Duration;

use faultline_tests::lab::{agent_bin, faultline_bin, root_or_skip};
use faultline_tests::qemu::{self, console_field as field, Kernel, QEMU_TOOLS};
use faultline_tests::tools::present_or_skip;

const LOCAL_RUN: &str = r#"name: netem-in-a-vm
hypothesis:
  probes:
    - name: b-connect
      interval: 200ms
      tcp: { address: "10.88.0.2:8080" }
baseline: 4s
duration: 6s
recovery: 3s
faults:
  - name: slow-b
    targets: { mode: all }
    latency: { delay: 100ms, to: { cidrs: [10.88.0.2/32] }, backend: netem, interface: eth0 }
"#;

const LONG_RUN: &str = r#"name: netem-kill
hypothesis:
  probes:
    - name: b-connect
      interval: 500ms
      tcp: { address: "10.88.0.2:8080" }
baseline: 1s
duration: 60s
recovery: 1s
lease: 60s
faults:
  - name: slow-b
    targets: { mode: all }
    latency: { delay: 100ms, to: { cidrs: [10.88.0.2/32] }, backend: netem, interface: eth0 }
"#;

/// The guest's /init: bash, printing `@@ KEY value` lines the test reads.
const INIT: &str = r#"#!/bin/bash
export PATH=/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns /var/lib
# The host name stays the kernel's `(none)`: local mode must cope.
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
echo "@@ QDISC-BEFORE $(qdisc)"

# 1. local mode
ip netns exec a faultline run /exp/local.yaml --format json > /tmp/report.json 2> /tmp/run.err
echo "@@ RUN-EXIT $?"
echo "@@ QDISC-AFTER $(qdisc)"
echo "@@ REPORT $(tr -d '\n' < /tmp/report.json)"
echo "@@ RUN-STDERR $(tail -5 /tmp/run.err | tr '\n' ' ')"

# 2. agent SIGKILLed mid-fault, restarted
ip netns exec a faultline serve --listen 127.0.0.1:7000 --insecure --db /tmp/h.db 2> /tmp/serve.log &
sleep 1
ip netns exec a faultline-agent --coordinator http://127.0.0.1:7000 --id a --state-dir /var/lib/fl 2> /tmp/agent1.log &
AGENT=$!
sleep 2
ip netns exec a faultline run /exp/long.yaml --coordinator http://127.0.0.1:7000 > /tmp/long.out 2>&1 &
for i in $(seq 1 200); do qdisc | grep -q netem && break; sleep 0.1; done
echo "@@ MID-FAULT $(qdisc)"
kill -9 $AGENT
sleep 1
echo "@@ AFTER-KILL $(qdisc)"
t0=$(date +%s%N)
ip netns exec a faultline-agent --coordinator http://127.0.0.1:7000 --id a --state-dir /var/lib/fl 2> /tmp/agent2.log &
for i in $(seq 1 300); do qdisc | grep -q netem || break; sleep 0.02; done
t1=$(date +%s%N)
echo "@@ CLEANED-MS $(( (t1 - t0) / 1000000 ))"
echo "@@ AFTER-RESTART $(qdisc)"
echo "@@ AGENT2-LOG $(grep -i -E 'restor|clean' /tmp/agent2.log | head -5 | tr '\n' ' ')"
echo "@@ LONG-OUT $(tail -5 /tmp/long.out | tr '\n' ' ')"
echo "@@ AGENT1-LOG $(tail -5 /tmp/agent1.log | tr '\n' ' ')"
echo "@@ DONE"
echo o > /proc/sysrq-trigger
sleep 10
"#;

/// The median latency of the first probe in a phase (`baseline`,
/// `during`, `recovery`) of the JSON report.
fn p50(report: &serde_json::Value, phase: &str) -> Option<f64> {
    report["probes"][0][phase]["p50_ms"].as_f64()
}

#[test]
fn netem_latency_on_a_real_kernel_is_measured_restored_and_cleaned_after_kill_9() {
    let test = "netem_latency_on_a_real_kernel_is_measured_restored_and_cleaned_after_kill_9";
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
    ];
    for cmd in [
        "bash", "mount", "insmod", "ip", "tc", "uname", "sleep", "cat", "tr", "grep", "seq", "date", "mkdir", "tail",
        "head",
    ] {
        let p = qemu::which(cmd).unwrap_or_else(|| panic!("{cmd} not found on this host"));
        bins.push((p, None));
    }
    let files = [
        ("exp/local.yaml", LOCAL_RUN.to_string()),
        ("exp/long.yaml", LONG_RUN.to_string()),
    ];
    let initrd = qemu::initramfs(&bins, &files, &modules, INIT).expect("build the initramfs");
    eprintln!(
        "kernel {} from {}; initramfs {} MiB; KVM {}",
        kernel.release,
        deb.display(),
        initrd.len() / (1 << 20),
        if qemu::kvm_usable() {
            "yes"
        } else {
            "no (TCG emulation)"
        }
    );
    let boot = qemu::boot(&kernel.vmlinuz, &initrd, 2048, Duration::from_secs(600)).expect("boot the guest");
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

    // 1. measured and restored.
    let report: serde_json::Value =
        serde_json::from_str(field(c, "REPORT").unwrap_or("")).unwrap_or_else(|e| panic!("report: {e}\n{}", show()));
    let (Some(baseline), Some(during)) = (p50(&report, "baseline"), p50(&report, "during")) else {
        panic!("no medians in the report: {}\n{}", report["reason"], show());
    };
    let added = during - baseline;
    eprintln!(
        "tcp connect median: baseline {baseline:.1} ms, during the 100 ms netem fault {during:.1} ms: +{added:.1} ms"
    );
    assert!(
        (added - 100.0).abs() <= 10.0,
        "netem 100 ms measured as +{added:.1} ms (baseline {baseline:.1}, during {during:.1})\n{}",
        show()
    );
    let before = field(c, "QDISC-BEFORE").unwrap_or("");
    let after = field(c, "QDISC-AFTER").unwrap_or("");
    assert!(!before.contains("netem") && !before.contains("prio"), "{before}");
    assert_eq!(after, before, "the root qdisc is the default again after the run");

    // 2. kill -9 mid-fault, cleaned on restart.
    let mid = field(c, "MID-FAULT").unwrap_or("");
    assert!(mid.contains("netem"), "the fault was in place: {}", show());
    assert!(
        field(c, "AFTER-KILL").unwrap_or("").contains("netem"),
        "a killed agent restores nothing"
    );
    let restarted = field(c, "AFTER-RESTART").unwrap_or("");
    assert_eq!(restarted, before, "the restarted agent removed the qdisc: {}", show());
    let cleaned_ms: u64 = field(c, "CLEANED-MS").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    eprintln!("agent kill -9 mid-fault -> restarted agent removed the netem qdisc {cleaned_ms} ms after its start");
    assert!(cleaned_ms < 6_000, "{}", show());
}
