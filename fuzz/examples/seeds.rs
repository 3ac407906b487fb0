//! Writes the binary seed corpora of the wire targets (`cargo run --example
//! seeds` in fuzz/): one encoded message per file, as the coordinator and the
//! agent really send them.
use faultline_proto::v1;
use prost::Message;

fn write(dir: &str, name: &str, bytes: Vec<u8>) {
    let d = format!("{}/corpus/{dir}", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(format!("{d}/{name}"), bytes).expect("seed file");
}

fn inject(spec: v1::fault_spec::Kind, dry_run: bool) -> Vec<u8> {
    v1::CoordinatorMessage {
        msg: Some(v1::coordinator_message::Msg::Inject(v1::Inject {
            fault_id: "r20261130-160000-ab12cd-1".into(),
            run_id: "r20261130-160000-ab12cd".into(),
            spec: Some(v1::FaultSpec { kind: Some(spec) }),
            lease_ms: 10_000,
            dry_run,
            container: None,
        })),
    }
    .encode_to_vec()
}

fn main() {
    use v1::fault_spec::Kind;
    let kill = Kind::Kill(v1::KillSpec {
        name: "api".into(),
        signal: 9,
        count: 1,
        ..Default::default()
    });
    let mass = Kind::Kill(v1::KillSpec {
        cmdline_regex: ".*".into(),
        ..Default::default()
    });
    let fill = Kind::DiskFill(v1::DiskFillSpec {
        path: "/tmp".into(),
        size_bytes: 1 << 20,
        ..Default::default()
    });
    let latency = Kind::Latency(v1::LatencySpec {
        delay_us: 100_000,
        destinations: vec!["10.0.0.0/8".into()],
        ..Default::default()
    });
    let block = Kind::Block(v1::BlockSpec {
        peers: vec!["10.0.0.2".into()],
        ports: vec![80],
        direction: "both".into(),
    });
    for (i, k) in [kill, mass, fill, latency, block].into_iter().enumerate() {
        write("agent_inject", &format!("inject-{i}"), inject(k.clone(), false));
        write("agent_inject", &format!("dry-run-{i}"), inject(k, true));
    }
    let restore = v1::CoordinatorMessage {
        msg: Some(v1::coordinator_message::Msg::Restore(v1::Restore {
            fault_id: "r20261130-160000-ab12cd-1".into(),
            run_id: "r20261130-160000-ab12cd".into(),
        })),
    };
    write("agent_inject", "restore", restore.encode_to_vec());

    let with_tag = |tag: u8, bytes: Vec<u8>| [vec![tag], bytes].concat();
    let hello = v1::Hello {
        agent_id: "node-a".into(),
        hostname: "node-a.example".into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        addresses: vec!["10.0.0.1".into()],
        capabilities: vec!["kill".into(), "latency:nfqueue".into()],
        version: "0.1.0".into(),
        pid: 42,
        cleaned: vec![],
    };
    write("coordinator_wire", "hello", with_tag(0, hello.encode_to_vec()));
    let status = v1::FaultStatus {
        fault_id: "r1-1".into(),
        run_id: "r1".into(),
        state: v1::FaultState::Injected as i32,
        detail: "killed 1 process".into(),
        ..Default::default()
    };
    write("coordinator_wire", "status", with_tag(1, status.encode_to_vec()));
    let source = v1::ExperimentSource {
        name: "kill.yaml".into(),
        yaml: include_str!("../../experiments/kill.yaml").into(),
        vars: Default::default(),
    };
    write(
        "coordinator_wire",
        "submit",
        with_tag(2, v1::SubmitRunRequest { source: Some(source.clone()) }.encode_to_vec()),
    );
    write(
        "coordinator_wire",
        "plan",
        with_tag(3, v1::PlanRequest { source: Some(source.clone()) }.encode_to_vec()),
    );
    write(
        "coordinator_wire",
        "list-runs",
        with_tag(6, v1::ListRunsRequest { limit: 5, outcome: "passed".into() }.encode_to_vec()),
    );
    write(
        "coordinator_wire",
        "schedule",
        with_tag(
            9,
            v1::AddScheduleRequest {
                source: Some(source),
                gameday: None,
                cron: "0 3 * * 1-5".into(),
                tz: "Europe/Berlin".into(),
                window: "Mon-Fri 02:00-04:00".into(),
            }
            .encode_to_vec(),
        ),
    );
    write(
        "coordinator_wire",
        "follow",
        with_tag(11, v1::FollowRequest { run_id: "r1".into(), from_event: 0 }.encode_to_vec()),
    );
}
