//! The CRI-O resolver against CRI-O-shaped responses (`fixtures/crio/`)
//! served by a test HTTP server on a unix socket, with a `/proc` of files
//! in a tempdir: no CRI-O runs on this machine.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::runtime::crio::Crio;
use faultline_agent::runtime::{resolve, ContainerRuntime, ContainerSelector, Place, Protected};
use faultline_proto::v1;

const WEB: &str = "8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e3d2c1b0a9f";
const WEB_SANDBOX: &str = "3f1c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
const DB: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const DB_SANDBOX: &str = "d00dfeedd00dfeedd00dfeedd00dfeedd00dfeedd00dfeedd00dfeedd00dfeed";
/// Has a process but no answer from the server (removed in between).
const GONE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crio")
}

/// Serves `GET /info` and `GET /containers/<id>` from the fixtures, as
/// CRI-O does (404 with its message for an unknown id), on `socket`, for
/// at most 30 s; counts the requests.
fn serve(socket: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let file = match path.as_str() {
                "/info" => Some(fixtures().join("info.json")),
                p => p
                    .strip_prefix("/containers/")
                    .map(|id| fixtures().join("containers").join(format!("{id}.json"))),
            };
            let (status, ctype, body) = match file.and_then(|f| std::fs::read(f).ok()) {
                Some(b) => ("200 OK", "application/json", b),
                None => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    format!(
                        "can't find the container with id {}\n",
                        path.trim_start_matches("/containers/")
                    )
                    .into_bytes(),
                ),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    served
}

/// A `/proc` with the processes CRI-O's containers would have: each pid's
/// `cgroup` names its container's scope; conmon has its own.
fn fake_proc(dir: &Path) {
    for (pid, cgroup) in [
        ("4101", format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crio-{WEB_SANDBOX}.scope\n")),
        ("4150", format!("12:pids:/kubepods.slice/kubepods-pod1.slice/crio-{WEB}.scope\n1:name=systemd:/kubepods.slice/kubepods-pod1.slice/crio-{WEB}.scope\n")),
        ("4151", format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{WEB}.scope\n")),
        ("4120", format!("0::/system.slice/crio-conmon-{WEB}.scope\n")),
        ("4201", format!("0::/kubepods/besteffort/pod2/crio-{DB_SANDBOX}\n")),
        ("4250", format!("0::/kubepods/besteffort/pod2/crio-{DB}\n")),
        ("4300", format!("0::/kubepods/besteffort/pod3/crio-{GONE}\n")),
        ("1", "0::/init.scope\n".to_string()),
    ] {
        std::fs::create_dir_all(dir.join(pid)).unwrap();
        std::fs::write(dir.join(pid).join("cgroup"), cgroup).unwrap();
    }
    std::fs::create_dir_all(dir.join("self")).unwrap();
}

#[test]
fn crio_lists_containers_found_in_cgroups_and_inspects_each_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("crio.sock");
    let served = serve(&sock);
    let proc_root = dir.path().join("proc");
    fake_proc(&proc_root);
    let crio = Crio::with_proc(&sock, &proc_root);

    let info = crio.info().unwrap();
    assert_eq!(
        (info.storage_driver.as_str(), info.cgroup_driver.as_str()),
        ("overlay", "systemd")
    );

    let mut all = crio.list().unwrap();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    // Four containers (two sandboxes), not conmon, not the removed one.
    assert_eq!(
        names,
        [
            "shop/db-0/POD",
            "shop/db-0/postgres",
            "shop/web-0/POD",
            "shop/web-0/nginx"
        ]
    );
    let web = all.iter().find(|c| c.id == WEB).unwrap();
    assert_eq!((web.pid, web.running), (4150, true));
    assert_eq!(web.image, "docker.io/library/nginx:1.27");
    assert_eq!(
        web.labels.get("io.kubernetes.cri-o.ContainerType").map(String::as_str),
        Some("container")
    );
    // info(), then list's /info and one inspect per id found (5: four
    // known, one gone).
    assert_eq!(served.load(Ordering::Relaxed), 7);
    assert_eq!(crio.inspect(GONE).unwrap(), None);
    assert_eq!(crio.inspect("../info").unwrap(), None, "never a path");

    // A pod selector through CRI-O: web's labels are on its sandbox.
    let sel = ContainerSelector::try_from(v1::ContainerSelector {
        pod: Some(v1::PodSelector {
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            name: String::new(),
        }),
        ..Default::default()
    })
    .unwrap();
    let Place::Containers { containers, .. } = resolve(&crio, &sel, &Protected::default()).unwrap() else {
        panic!("containers expected")
    };
    assert_eq!(containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [WEB]);
}

#[test]
fn a_stopped_crio_container_is_not_running_and_an_absent_socket_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("crio.sock");
    serve(&sock);
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(&proc_root).unwrap();
    // CRI-O still reports a pid, but no such process exists any more.
    let crio = Crio::with_proc(&sock, &proc_root);
    let db = crio.inspect(DB).unwrap().unwrap();
    assert_eq!((db.running, db.pid), (false, 0));
    let none = Crio::with_proc(dir.path().join("none.sock"), &proc_root);
    let err = none.list().unwrap_err();
    assert!(err.to_string().contains("none.sock"), "{err}");
}
