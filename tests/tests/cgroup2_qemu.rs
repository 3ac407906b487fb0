//! cpu_stress and memory_stress on cgroup v2: this machine has cgroup v1
//! only, so Debian's kernel boots under qemu (see `faultline_tests::qemu`)
//! with the unified hierarchy mounted at `/sys/fs/cgroup` and the cpu and
//! memory controllers enabled, and the real faultline binaries run there.
//!
//! 1. Local mode (`faultline run`): a cpu_stress of 50 % of a core and a
//!    memory_stress of 64 MiB; the report's achieved CPU (v2 `cpu.stat`
//!    `usage_usec`) and resident bytes (`memory.current`) are checked, and
//!    no stress cgroup is left.
//! 2. `faultline serve` and `faultline-agent` as processes: the agent is
//!    killed with SIGKILL mid-stress; its stressors exit by themselves
//!    (they watch their parent) but the cgroup stays; the restarted agent
//!    removes it from its undo journal before it registers.
//!
//! Needs root, qemu-system-x86_64 and the kernel package `.ci/run`
//! downloads; skips with a reason outside CI, fails under `CI=true`.

use std::path::PathBuf;
use std::time::Duration;

use faultline_tests::lab::{agent_bin, faultline_bin, root_or_skip};
use faultline_tests::qemu::{self, console_field as field, Kernel, QEMU_TOOLS};
use faultline_tests::tools::present_or_skip;

const LOCAL_RUN: &str = r#"name: stress-on-cgroup-v2
hypothesis:
  probes:
    - name: web
      interval: 500ms
      http: { url: "http://127.0.0.1:8080/" }
baseline: 1s
duration: 6s
recovery: 1s
faults:
  - name: busy
    targets: { mode: all }
    cpu_stress: { workers: 1, load: "50%" }
  - name: hold
    targets: { mode: all }
    memory_stress: { size: 64MiB }
"#;

const LONG_RUN: &str = r#"name: stress-kill
hypothesis:
  probes:
    - name: web
      interval: 500ms
      http: { url: "http://127.0.0.1:8080/" }
baseline: 1s
duration: 60s
recovery: 1s
lease: 60s
faults:
  - name: busy
    targets: { mode: all }
    cpu_stress: { workers: 1, load: "30%" }
"#;

/// The guest's /init: bash, printing `@@ KEY value` lines the test reads.
const INIT: &str = r#"#!/bin/bash
export PATH=/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /var/lib
mount -t cgroup2 none /sys/fs/cgroup
echo "+cpu +memory" > /sys/fs/cgroup/cgroup.subtree_control
echo 1 > /proc/sys/kernel/printk
echo "@@ KERNEL $(uname -r) controllers=$(cat /sys/fs/cgroup/cgroup.subtree_control | tr ' ' ',')"
ip link set lo up
faultline-test-http --listen 127.0.0.1:8080 --tag v2 > /tmp/http.out &
sleep 1
stress_dirs() { ls -d /sys/fs/cgroup/faultline-* 2>/dev/null | tr '\n' ' '; }

# 1. local mode
faultline run /exp/local.yaml --format json > /tmp/report.json 2> /tmp/run.err
echo "@@ RUN-EXIT $?"
echo "@@ LEFT-AFTER-RUN [$(stress_dirs)]"
echo "@@ REPORT $(tr -d '\n' < /tmp/report.json)"
echo "@@ RUN-STDERR $(tail -5 /tmp/run.err | tr '\n' ' ')"

# 2. agent SIGKILLed mid-stress, restarted
faultline serve --listen 127.0.0.1:7000 --insecure --db /tmp/h.db 2> /tmp/serve.log &
sleep 1
faultline-agent --coordinator http://127.0.0.1:7000 --id a --state-dir /var/lib/fl 2> /tmp/agent1.log &
AGENT=$!
sleep 2
faultline run /exp/long.yaml --coordinator http://127.0.0.1:7000 > /tmp/long.out 2>&1 &
# (cgroup files have size 0: read them, `test -s` says nothing)
for i in $(seq 1 600); do test -n "$(stress_dirs)" && grep -q . "$(stress_dirs | tr -d ' ')/cgroup.procs" && break; sleep 0.1; done
D=$(stress_dirs | tr -d ' ')
echo "@@ MID-FAULT [$D] procs=$(cat $D/cgroup.procs 2>/dev/null | tr '\n' ',')"
kill -9 $AGENT
sleep 1
echo "@@ AFTER-KILL [$(stress_dirs)] procs=$(cat $D/cgroup.procs 2>/dev/null | tr '\n' ',')"
t0=$(date +%s%N)
faultline-agent --coordinator http://127.0.0.1:7000 --id a --state-dir /var/lib/fl 2> /tmp/agent2.log &
for i in $(seq 1 300); do test -z "$(stress_dirs)" && break; sleep 0.02; done
t1=$(date +%s%N)
echo "@@ CLEANED-MS $(( (t1 - t0) / 1000000 ))"
echo "@@ AFTER-RESTART [$(stress_dirs)]"
echo "@@ AGENT2-LOG $(grep -i -E 'restor|clean' /tmp/agent2.log | head -5 | tr '\n' ' ')"
echo "@@ LONG-OUT $(tail -5 /tmp/long.out | tr '\n' ' ')"
echo "@@ AGENT1-LOG $(tail -5 /tmp/agent1.log | tr '\n' ' ')"
echo "@@ DONE"
echo o > /proc/sysrq-trigger
sleep 10
"#;

/// The figure `name` of fault `fault`'s first target in the JSON report.
fn figure(report: &serde_json::Value, fault: usize, name: &str) -> Option<f64> {
    report["faults"][fault]["targets"][0]["figures"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)?["value"]
        .as_f64()
}

#[test]
fn stress_on_cgroup_v2_measures_its_figures_and_a_restarted_agent_removes_an_orphaned_cgroup() {
    let test = "stress_on_cgroup_v2_measures_its_figures_and_a_restarted_agent_removes_an_orphaned_cgroup";
    if !root_or_skip(test) || !present_or_skip(test, QEMU_TOOLS) {
        return;
    }
    let Some(deb) = qemu::kernel_deb_or_skip(test) else {
        return;
    };
    let kernel = Kernel::unpack(&deb).expect("unpack the kernel package");
    let mut bins: Vec<(PathBuf, Option<&str>)> = vec![
        (faultline_bin(), None),
        (agent_bin(), None),
        (faultline_bin().with_file_name("faultline-test-http"), None),
    ];
    for cmd in [
        "bash", "mount", "ip", "uname", "sleep", "cat", "tr", "grep", "seq", "date", "mkdir", "tail", "head", "ls",
        "test",
    ] {
        let p = qemu::which(cmd).unwrap_or_else(|| panic!("{cmd} not found on this host"));
        bins.push((p, None));
    }
    let files = [
        ("exp/local.yaml", LOCAL_RUN.to_string()),
        ("exp/long.yaml", LONG_RUN.to_string()),
    ];
    let initrd = qemu::initramfs(&bins, &files, &[], INIT).expect("build the initramfs");
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
        field(c, "KERNEL").is_some_and(|k| k.contains("cpu") && k.contains("memory")),
        "the cpu and memory controllers are not enabled: {}",
        show()
    );

    // 1. Figures measured through the v2 files; nothing left.
    let report: serde_json::Value =
        serde_json::from_str(field(c, "REPORT").unwrap_or("")).unwrap_or_else(|e| panic!("report: {e}\n{}", show()));
    assert_eq!(field(c, "RUN-EXIT"), Some("0"), "{}\n{}", report["reason"], show());
    let achieved = figure(&report, 0, "achieved").unwrap_or_else(|| panic!("no achieved CPU: {report}"));
    let resident = figure(&report, 1, "resident").unwrap_or_else(|| panic!("no resident bytes: {report}"));
    let want = 64.0 * 1048576.0;
    eprintln!(
        "cgroup v2: cpu_stress 50% -> {achieved:.1}% achieved; memory_stress 64 MiB -> {resident} bytes resident ({:+.2}%)",
        (resident - want) / want * 100.0
    );
    // Under emulation the guest's clock and CPU are both emulated: the
    // stressor still holds its share of the guest's time.
    assert!((achieved - 50.0).abs() <= 5.0, "achieved {achieved}% for 50% asked");
    assert!((resident - want).abs() <= 0.02 * want, "resident {resident} for 64 MiB");
    assert_eq!(field(c, "LEFT-AFTER-RUN"), Some("[]"), "{}", show());

    // 2. Agent kill -9: the stressors leave by themselves, the cgroup is
    //    removed by the next start.
    let mid = field(c, "MID-FAULT").unwrap_or("");
    assert!(
        mid.contains("faultline-cpu-stress-"),
        "the fault was in place: {}",
        show()
    );
    let after_kill = field(c, "AFTER-KILL").unwrap_or("");
    assert!(
        after_kill.contains("faultline-cpu-stress-") && after_kill.ends_with("procs="),
        "the cgroup stays, emptied by the stressors themselves: {}",
        show()
    );
    assert_eq!(field(c, "AFTER-RESTART"), Some("[]"), "{}", show());
    let cleaned_ms: u64 = field(c, "CLEANED-MS").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    eprintln!(
        "cgroup v2: agent kill -9 mid-stress -> restarted agent removed the cgroup {cleaned_ms} ms after its start"
    );
    assert!(cleaned_ms < 6_000, "{}", show());
}
