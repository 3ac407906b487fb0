//! Tests of the fault table: leases, admission, the journal around apply, dry runs.

use super::*;
use crate::faults::FillPolicy;
use crate::journal::{Object, Record};
use crate::process::fake::{proc, FakeProcesses};

fn table() -> (FaultTable, mpsc::UnboundedReceiver<v1::FaultStatus>) {
    table_with(AgentPolicy::default())
}

fn table_with(policy: AgentPolicy) -> (FaultTable, mpsc::UnboundedReceiver<v1::FaultStatus>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let procs = vec![proc(4242, 1, "victim", "victim")];
    let (t, _) = FaultTable::spawn(
        TableConfig {
            default_lease: Duration::from_secs(5),
            max_lease: Duration::from_secs(10),
            policy,
            ..TableConfig::basic(Arc::new(FakeProcesses::new(procs)))
        },
        tx,
    );
    (t, rx)
}

fn kill_victim() -> v1::FaultSpec {
    v1::FaultSpec {
        kind: Some(v1::fault_spec::Kind::Kill(v1::KillSpec {
            name: "victim".into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_restores_without_the_coordinator() {
    let (t, mut rx) = table();
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "r1".into(),
        spec: kill_victim(),
        lease: Duration::from_secs(3),
        dry_run: false,
        container: None,
    })
    .await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Injected);
    // A renewal pushes the deadline out; without further renewals it expires.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.send(Command::Renew {
        fault_ids: vec!["f1".into()],
        lease: Duration::from_secs(3),
    })
    .await;
    let start = Instant::now();
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Expired);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited <= Duration::from_millis(3200),
        "{waited:?}"
    );
    assert_eq!(t.active_faults(), 0);
}

#[tokio::test]
async fn a_kind_outside_the_agent_policy_is_refused_before_anything_runs() {
    let policy = AgentPolicy::parse("agent.yaml", "allowed_kinds: [latency]\n").unwrap();
    let (t, mut rx) = table_with(policy);
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "r1".into(),
        spec: kill_victim(),
        lease: Duration::from_secs(3),
        dry_run: false,
        container: None,
    })
    .await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused);
    assert!(
        st.detail
            .contains("agent.yaml: fault kind kill is not in allowed_kinds"),
        "{}",
        st.detail
    );
    assert_eq!(t.active_faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn max_fault_duration_restores_even_with_renewals() {
    let policy = AgentPolicy::parse("agent.yaml", "max_fault_duration: 4s\n").unwrap();
    let (t, mut rx) = table_with(policy);
    let start = Instant::now();
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "r1".into(),
        spec: kill_victim(),
        lease: Duration::from_secs(3),
        dry_run: false,
        container: None,
    })
    .await;
    assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Injected);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        t.send(Command::Renew {
            fault_ids: vec!["f1".into()],
            lease: Duration::from_secs(3),
        })
        .await;
    }
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Expired);
    assert!(st.detail.contains("max_fault_duration 4s reached"), "{}", st.detail);
    let at = start.elapsed();
    assert!(
        at >= Duration::from_secs(4) && at <= Duration::from_millis(4100),
        "{at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn leases_are_capped_by_the_agent() {
    let (t, mut rx) = table();
    let start = Instant::now();
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "r1".into(),
        spec: kill_victim(),
        lease: Duration::from_secs(3600),
        dry_run: false,
        container: None,
    })
    .await;
    assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Injected);
    assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Expired);
    assert!(start.elapsed() <= Duration::from_secs(11));
}

#[tokio::test]
async fn unknown_spec_is_refused_with_a_reason() {
    let (t, mut rx) = table();
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "r1".into(),
        spec: v1::FaultSpec { kind: None },
        lease: Duration::ZERO,
        dry_run: false,
        container: None,
    })
    .await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused);
    assert!(st.detail.contains("supports"), "{}", st.detail);
}

fn inject(fault_id: &str, spec: v1::FaultSpec, dry_run: bool) -> Command {
    Command::Inject {
        fault_id: fault_id.into(),
        run_id: "r1".into(),
        spec,
        lease: Duration::from_secs(10),
        dry_run,
        container: None,
    }
}

fn fill(dir: &std::path::Path) -> v1::FaultSpec {
    v1::FaultSpec {
        kind: Some(v1::fault_spec::Kind::DiskFill(v1::DiskFillSpec {
            path: dir.display().to_string(),
            size_bytes: 4096,
            ..Default::default()
        })),
    }
}

fn kill_cmdline(re: &str, allow_mass_kill: bool) -> v1::FaultSpec {
    v1::FaultSpec {
        kind: Some(v1::fault_spec::Kind::Kill(v1::KillSpec {
            cmdline_regex: re.into(),
            allow_mass_kill,
            ..Default::default()
        })),
    }
}

/// A table with an undo journal in `state` that may fill `fill_dir`.
fn journaled(
    state: &std::path::Path,
    fill_dir: &std::path::Path,
    procs: Vec<crate::process::ProcInfo>,
) -> (FaultTable, mpsc::UnboundedReceiver<v1::FaultStatus>, Arc<Journal>) {
    let journal = Arc::new(Journal::open(state).unwrap());
    let mut setup = Setup::basic(Arc::new(FakeProcesses::new(procs)));
    setup.fill = FillPolicy {
        allowed: vec![fill_dir.to_path_buf()],
        max_used_percent: 100.0,
    };
    let mut config = TableConfig::new(Kinds::new(&setup));
    config.journal = Some(journal.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let (t, _) = FaultTable::spawn(config, tx);
    (t, rx, journal)
}

// Before ids were checked, `c.x` and `c/x` named the same undo record
// as `c_x` (`undo-c_x.json`): the second inject overwrote the first
// fault's record, and a refused one deleted it. A re-sent `c_x` was
// acknowledged as injected.
#[tokio::test]
async fn colliding_and_duplicate_fault_ids_are_refused_and_the_first_fault_keeps_its_record() {
    let state = tempfile::tempdir().unwrap();
    let fill_dir = tempfile::tempdir().unwrap();
    let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), vec![]);
    t.send(inject("c_x", fill(fill_dir.path()), false)).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Injected, "{}", st.detail);
    let first_file = fill_dir.path().join(".faultline-fill-c_x");
    assert!(first_file.exists());
    let record = state.path().join("undo-c_x.json");
    let before = std::fs::read(&record).unwrap();

    for (id, why) in [
        ("c.x", "fault id \"c.x\" contains '.'"),
        ("c/x", "fault id \"c/x\" contains '/'"),
        ("c_x", "fault c_x (run r1) is already active on this agent"),
    ] {
        t.send(inject(id, fill(fill_dir.path()), false)).await;
        let st = rx.recv().await.unwrap();
        assert_eq!(st.state(), v1::FaultState::Refused, "{id}: {}", st.detail);
        assert!(st.detail.contains(why), "{id}: {}", st.detail);
        // The first fault's record is untouched, its fill still there,
        // and no other record or fill file appeared.
        assert_eq!(std::fs::read(&record).unwrap(), before, "{id}");
        assert!(first_file.exists(), "{id}");
        assert_eq!(journal.load().unwrap().0.len(), 1, "{id}");
        assert_eq!(std::fs::read_dir(fill_dir.path()).unwrap().count(), 1, "{id}");
    }
    assert_eq!(t.active_faults(), 1);

    // The first fault is still restorable, and its record goes with it.
    t.send(Command::Restore { fault_id: "c_x".into() }).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Restored, "{}", st.detail);
    assert!(!first_file.exists());
    assert!(!record.exists());
}

#[tokio::test]
async fn an_invalid_run_id_is_refused_before_the_journal_is_touched() {
    let state = tempfile::tempdir().unwrap();
    let fill_dir = tempfile::tempdir().unwrap();
    let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), vec![]);
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "../r".into(),
        spec: fill(fill_dir.path()),
        lease: Duration::ZERO,
        dry_run: false,
        container: None,
    })
    .await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused);
    assert!(st.detail.contains("run id"), "{}", st.detail);
    assert!(journal.load().unwrap().0.is_empty());
    assert_eq!(std::fs::read_dir(fill_dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_left_over_undo_record_is_neither_overwritten_nor_deleted() {
    let state = tempfile::tempdir().unwrap();
    let fill_dir = tempfile::tempdir().unwrap();
    let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), vec![]);
    let old = Record {
        fault_id: "f1".into(),
        run_id: "r0".into(),
        kind: "disk_fill".into(),
        created_unix_ms: 1,
        objects: vec![Object::File {
            path: fill_dir.path().join(".faultline-fill-f1"),
        }],
    };
    journal.write(&old).unwrap();
    t.send(inject("f1", fill(fill_dir.path()), false)).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused);
    assert!(st.detail.contains("already in the state directory"), "{}", st.detail);
    assert_eq!(journal.load().unwrap().0, vec![old]);
}

#[tokio::test]
async fn a_mass_kill_is_refused_unless_the_fault_allows_it() {
    let state = tempfile::tempdir().unwrap();
    let fill_dir = tempfile::tempdir().unwrap();
    let procs = (100..120).map(|p| proc(p, 1, "w", &format!("w {p}"))).collect();
    let (t, mut rx, _journal) = journaled(state.path(), fill_dir.path(), procs);
    t.send(inject("k1", kill_cmdline(".*", false), false)).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused);
    assert!(
        st.detail.contains("matches 20 of the 20 user-space processes") && st.detail.contains("allow_mass_kill"),
        "{}",
        st.detail
    );
    t.send(inject("k2", kill_cmdline(".*", true), false)).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Injected, "{}", st.detail);
    assert!(st.detail.starts_with("sent SIGKILL to 20 process(es)"), "{}", st.detail);
}

#[tokio::test]
async fn a_dry_run_says_what_it_would_do_and_touches_nothing() {
    let state = tempfile::tempdir().unwrap();
    let fill_dir = tempfile::tempdir().unwrap();
    let procs = (100..120).map(|p| proc(p, 1, "w", &format!("w {p}"))).collect();
    let (t, mut rx, journal) = journaled(state.path(), fill_dir.path(), procs);
    t.send(inject("plan-a-1", kill_cmdline("^w 10[0-2]$", false), true))
        .await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Planned, "{}", st.detail);
    assert!(
        st.detail.starts_with("would send SIGKILL to 3 of 20 processes"),
        "{}",
        st.detail
    );
    t.send(inject("plan-a-2", kill_cmdline(".*", false), true)).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused);
    assert!(st.detail.contains("allow_mass_kill"), "{}", st.detail);
    t.send(inject("plan-a-3", fill(fill_dir.path()), true)).await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Planned, "{}", st.detail);
    assert!(st.detail.starts_with("would allocate 4096 bytes in"), "{}", st.detail);
    t.send(inject("plan.a", fill(fill_dir.path()), true)).await;
    assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Refused);
    // Nothing applied, signalled, written or recorded.
    assert_eq!(t.active_faults(), 0);
    assert!(journal.load().unwrap().0.is_empty());
    assert_eq!(std::fs::read_dir(fill_dir.path()).unwrap().count(), 0);
    // The real inject after the preview still works.
    t.send(inject("k1", kill_cmdline("^w 100$", false), false)).await;
    assert_eq!(rx.recv().await.unwrap().state(), v1::FaultState::Injected);
}

#[tokio::test]
async fn a_container_fault_without_a_runtime_is_refused_and_touches_nothing() {
    let (t, mut rx) = table();
    t.send(Command::Inject {
        fault_id: "f1".into(),
        run_id: "r1".into(),
        spec: kill_victim(),
        lease: Duration::from_secs(3),
        dry_run: false,
        container: Some(Box::new(v1::ContainerSelector {
            name_regex: "^web".into(),
            ..Default::default()
        })),
    })
    .await;
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Refused, "{}", st.detail);
    assert!(st.detail.contains("no container runtime"), "{}", st.detail);
    assert_eq!(t.active_faults(), 0);
}

#[tokio::test]
async fn a_kindless_dry_run_with_a_pod_selector_answers_the_matching_pods_and_touches_nothing() {
    use crate::runtime::fake::{container, FakeRuntime};
    use crate::runtime::pods;
    let rt = Arc::new(FakeRuntime::default());
    *rt.containers.lock().unwrap() = vec![
        container(
            "s1",
            "k8s_POD_web-0",
            &[
                (pods::POD_UID, "u1"),
                (pods::POD_NAMESPACE, "shop"),
                (pods::POD_NAME, "web-0"),
                (pods::DOCKER_TYPE, "podsandbox"),
                ("track", "canary"),
            ],
        ),
        container(
            "c1",
            "k8s_main_web-0",
            &[
                (pods::POD_UID, "u1"),
                (pods::POD_NAMESPACE, "shop"),
                (pods::POD_NAME, "web-0"),
                (pods::DOCKER_TYPE, "container"),
            ],
        ),
    ];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (t, _) = FaultTable::spawn(
        TableConfig {
            runtime: Some(rt),
            ..TableConfig::basic(Arc::new(FakeProcesses::new(Vec::new())))
        },
        tx,
    );
    let query = |track: &str| Command::Inject {
        fault_id: format!("plan-q-{track}"),
        run_id: "plan-q".into(),
        spec: v1::FaultSpec::default(),
        lease: Duration::ZERO,
        dry_run: true,
        container: Some(Box::new(v1::ContainerSelector {
            pod: Some(v1::PodSelector {
                namespace: "shop".into(),
                labels: [("track".to_string(), track.to_string())].into(),
                name: String::new(),
            }),
            ..Default::default()
        })),
    };
    assert!(t.send(query("canary")).await);
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Planned, "{}", st.detail);
    let got: Vec<(&str, &str, &str)> = st
        .pods
        .iter()
        .map(|p| (p.namespace.as_str(), p.name.as_str(), p.ip.as_str()))
        .collect();
    // The fake's pid has no /proc entry: no address (the coordinator refuses that).
    assert_eq!(got, [("shop", "web-0", "")]);
    assert!(t.send(query("stable")).await);
    let st = rx.recv().await.unwrap();
    assert_eq!(st.state(), v1::FaultState::Planned);
    assert!(st.pods.is_empty());
    assert_eq!(
        st.detail,
        "no pod matches; pods on this node: shop/web-0 {track=canary}"
    );
    // A kind-less inject that is not a pod query is still refused.
    let mut not_dry = query("canary");
    if let Command::Inject { dry_run, .. } = &mut not_dry {
        *dry_run = false;
    }
    assert!(t.send(not_dry).await);
    let st = rx.recv().await.unwrap();
    assert_ne!(st.state(), v1::FaultState::Planned);
    assert!(st.pods.is_empty());
}
