//! Cleaning inside containers through the real containerd the Docker
//! Engine runs: the start-up sweep of orphans in a container's network
//! namespace and root, and a stopped container's writable layer found
//! through its snapshot. With `CI=true` a missing engine or `ctr` fails.

use std::time::Duration;

use faultline_agent::runtime::containerd::{Containerd, DOCKER_NAMESPACE};
use faultline_agent::runtime::ContainerRuntime;
use faultline_tests::containerd::{containerd_or_skip, wait_for, CtrLab, LOOP, SOCKET};
use faultline_tests::docker::DockerLab;

/// The nftables tables in the network namespace of `pid`, one per line.
fn nft_tables(pid: u32) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "nft", "list", "tables"])
        .output()
        .expect("nsenter nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starting_without_records_sweeps_its_objects_inside_containers_and_nothing_else() {
    if !containerd_or_skip("an_agent_starting_without_records_sweeps_its_objects_inside_containers_and_nothing_else") {
        return;
    }
    let docker_lab = DockerLab::new("ctrd-sweep");
    let mut lab = CtrLab::new("ctrd-sweep", &docker_lab.image);
    lab.run("victim", &[], LOOP);
    let pid = lab.pid("victim");
    assert!(pid > 0);
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        host_net,
        "ctr gave the container a network namespace of its own"
    );
    // What a killed agent whose state directory was lost would leave, and
    // what is not ours.
    let ours = format!("faultline_orphan{}", std::process::id());
    let theirs = format!("keepme{}", std::process::id());
    for t in [&ours, &theirs] {
        let st = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "nft", "add", "table", "inet", t])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let dir = format!("/proc/{pid}/root/fltest-sweep");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/.faultline-fill-orphan"), b"x").unwrap();
    std::fs::write(format!("{dir}/keep.txt"), b"x").unwrap();
    let tables = nft_tables(pid);
    assert!(tables.contains(&ours) && tables.contains(&theirs), "{tables}");

    // The agent binary, sweep on, in a network namespace of its own (so its
    // host sweep touches nothing of the machine's), with a cgroup root and
    // a fill directory that hold nothing on the host, and containerd
    // limited to this test's namespace: the coordinator is never reached;
    // the sweep runs before dialling.
    let state = tempfile::tempdir().unwrap();
    let cgroups = tempfile::tempdir().unwrap();
    let log = state.path().join("agent.log");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent = faultline_tests::lab::agent_bin();
    let _agent = Reap(
        std::process::Command::new("unshare")
            .arg("-n")
            .arg(&agent)
            .args(["--coordinator", "http://127.0.0.1:9", "--id", "sweeper", "--state-dir"])
            .arg(state.path().join("journal"))
            .arg("--cgroup-root")
            .arg(cgroups.path())
            .args([
                "--allow-fill",
                "/fltest-sweep",
                "--runtime",
                "containerd",
                "--runtime-socket",
                SOCKET,
            ])
            .args(["--runtime-namespace", &lab.namespace])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn unshare faultline-agent"),
    );
    let fill = format!("{dir}/.faultline-fill-orphan");
    let swept = wait_for(Duration::from_secs(20), || {
        !nft_tables(pid).contains(&ours) && !std::path::Path::new(&fill).exists()
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    println!("agent log:\n{text}");
    assert!(swept, "the agent removed its orphans inside the container");
    assert!(text.contains("removed orphaned nftables table inet"), "{text}");
    assert!(
        text.contains("removed orphaned file /fltest-sweep/.faultline-fill-orphan"),
        "{text}"
    );
    assert!(nft_tables(pid).contains(&theirs), "a table not ours stays");
    assert!(
        std::path::Path::new(&format!("{dir}/keep.txt")).exists(),
        "a file not ours stays"
    );
    assert_eq!(lab.pid("victim"), pid, "the container runs on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_containerd_containers_writable_layer_is_found_through_its_snapshot() {
    if !containerd_or_skip("a_stopped_containerd_containers_writable_layer_is_found_through_its_snapshot") {
        return;
    }
    let docker_lab = DockerLab::new("ctrd-upper");
    let mut lab = CtrLab::new("ctrd-upper", &docker_lab.image);
    lab.run("c", &[], LOOP);
    let pid = lab.pid("c");
    std::fs::write(format!("/proc/{pid}/root/tmp/marker"), b"written while running").unwrap();
    let rt = Containerd::new(SOCKET, lab.namespace.clone());
    lab.ctr(&["tasks", "kill", "-s", "SIGKILL", "c"]);
    assert!(wait_for(Duration::from_secs(5), || tokio::task::block_in_place(|| rt
        .inspect("c")
        .unwrap()
        .is_some_and(|c| !c.running))));
    let upper = tokio::task::block_in_place(|| rt.upper_dir("c"))
        .unwrap()
        .expect("an overlay upperdir");
    println!("stopped container's writable layer: {}", upper.display());
    assert_eq!(
        std::fs::read(upper.join("tmp/marker")).unwrap(),
        b"written while running",
        "the file written inside the container is in that layer"
    );
    // Docker's containers keep their layers outside containerd.
    let mut dlab = docker_lab;
    let id = dlab.run("d", &[], LOOP);
    let moby = Containerd::new(SOCKET, DOCKER_NAMESPACE);
    assert_eq!(tokio::task::block_in_place(|| moby.upper_dir(&id)).unwrap(), None);
}
