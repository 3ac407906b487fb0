//! The agent's wire edge: arbitrary bytes decoded as a CoordinatorMessage,
//! turned into a fault-table command and run through a real fault table
//! (id validation, policy, each kind's spec conversion, the undo journal in
//! a private directory, apply, restore) on a node that cannot be harmed: a
//! fake process table (signals are only recorded), no fill paths, no network
//! backends. Every Inject must be answered with one status, quickly, and the
//! table must end empty after RestoreAll.
#![no_main]
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use faultline_agent::journal::Journal;
use faultline_agent::process::{ProcInfo, ProcessTable, Result as ProcResult};
use faultline_agent::table::{Command, FaultTable, TableConfig};
use faultline_proto::v1;
use libfuzzer_sys::fuzz_target;
use nix::sys::signal::Signal;
use prost::Message;

/// Three processes that only exist here.
struct FakeProcs(Mutex<Vec<ProcInfo>>);

impl ProcessTable for FakeProcs {
    fn list(&self) -> ProcResult<Vec<ProcInfo>> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn signal(&self, pid: u32, _: Signal) -> ProcResult<()> {
        self.0.lock().unwrap().retain(|p| p.pid != pid);
        Ok(())
    }
}

fn procs() -> Arc<FakeProcs> {
    let p = |pid: u32, name: &str| ProcInfo {
        pid,
        tgid: pid,
        ppid: 1,
        name: name.into(),
        cmdline: format!("/usr/bin/{name} --serve"),
        uid: Some(1000),
        zombie: false,
    };
    Arc::new(FakeProcs(Mutex::new(vec![p(100, "api"), p(101, "worker"), p(102, "cache")])))
}

fn journal() -> Arc<Journal> {
    static J: OnceLock<(tempfile::TempDir, Arc<Journal>)> = OnceLock::new();
    J.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let j = Arc::new(Journal::open(dir.path()).expect("a journal in a fresh directory"));
        (dir, j)
    })
    .1
    .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = v1::CoordinatorMessage::decode(data) else { return };
    let Some(cmd) = faultline_agent::link::command_from_wire(msg) else { return };
    let is_inject = matches!(cmd, Command::Inject { .. });
    runtime().block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let config = TableConfig {
            journal: Some(journal()),
            ..TableConfig::basic(procs())
        };
        let (table, task) = FaultTable::spawn(config, tx);
        assert!(table.send(cmd).await, "the table stopped on a command");
        if is_inject {
            let st = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an Inject is answered within 5 s")
                .expect("an Inject is answered");
            assert_ne!(st.state(), v1::FaultState::Unspecified);
        }
        tokio::time::timeout(Duration::from_secs(5), table.restore_all("fuzz"))
            .await
            .expect("restore all finishes within 5 s");
        assert_eq!(table.active_faults(), 0);
        drop(table);
        let _ = task.await;
    });
    // Nothing is left in the journal once everything is restored.
    assert!(journal().load().map(|(r, _)| r.is_empty()).unwrap_or(true), "stale undo records");
});
