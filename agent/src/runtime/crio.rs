//! CRI-O through the HTTP API it serves on its unix socket
//! (`/var/run/crio/crio.sock`, next to the CRI gRPC service): `GET /info`
//! (storage driver and root, cgroup driver) and `GET /containers/<id>`
//! (name, init PID, image, labels, annotations, CRI-O's own annotations,
//! root, sandbox id, addresses; for a pod's sandbox — CRI-O's "infra
//! container" — too).
//!
//! That API cannot **list** containers (its routes are `/config`, `/info`,
//! `/containers/{id}`, `/pause/{id}`, `/unpause/{id}`); listing is the CRI's
//! gRPC `ListContainers`, which needs the CRI's protobuf types. So the
//! resolver lists what the kernel shows instead: every process in a CRI-O
//! container sits in a cgroup named after the container id (`crio-<id>.scope`
//! under the systemd cgroup driver, `.../crio-<id>` under cgroupfs; the
//! `crio-conmon-<id>` monitors are not containers), read from
//! `/proc/<pid>/cgroup` as the host sees it, and asks `/containers/<id>` about
//! each id found. Sandboxes are recognised by CRI-O's
//! `io.kubernetes.cri-o.ContainerType: sandbox` annotation, which the
//! resolver copies into the container's labels for [`super::pods`].
//!
//! Proven only against recorded responses (a test unix-socket HTTP server
//! serving `agent/tests/fixtures/crio/`): no CRI-O runs on this machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::{Container, ContainerRuntime, Error, Result};

/// Where CRI-O listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/crio/crio.sock";
/// CRI-O's annotation naming a container `sandbox` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

/// CRI-O on this node.
pub struct Crio {
    socket: PathBuf,
    /// Where `/proc` is (a tempdir in tests).
    proc_root: PathBuf,
}

/// `GET /info`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Info {
    #[serde(default)]
    pub storage_driver: String,
    #[serde(default)]
    pub storage_root: String,
    #[serde(default)]
    pub cgroup_driver: String,
}

/// `GET /containers/<id>` (CRI-O's `types.ContainerInfo`), cut to the
/// fields read.
#[derive(Debug, Deserialize)]
struct ContainerInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    pid: i64,
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    crio_annotations: Option<BTreeMap<String, String>>,
}

impl Crio {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self::with_proc(socket, "/proc")
    }

    /// Like [`Crio::new`], reading processes under `proc_root`.
    pub fn with_proc(socket: impl Into<PathBuf>, proc_root: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            proc_root: proc_root.into(),
        }
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<Option<T>> {
        let (code, body) = super::docker::unix_get("cri-o", &self.socket, path)?;
        let api = |message: String| Error::Api {
            runtime: "cri-o",
            request: format!("GET {path}"),
            message,
        };
        match code {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| api(format!("unreadable JSON: {e}"))),
            404 => Ok(None),
            c => Err(api(format!("status {c}: {}", String::from_utf8_lossy(&body).trim()))),
        }
    }

    /// `GET /info`.
    pub fn info(&self) -> Result<Info> {
        self.get_json("/info")?.ok_or_else(|| Error::Api {
            runtime: "cri-o",
            request: "GET /info".into(),
            message: "status 404".into(),
        })
    }

    /// Ids of the CRI-O containers that have a process on this node.
    fn ids_from_proc(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return ids;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path().join("cgroup")) {
                ids.extend(ids_in_cgroup(&text));
            }
        }
        ids
    }

    fn alive(&self, pid: u32) -> bool {
        pid > 0 && self.proc_root.join(pid.to_string()).exists()
    }

    fn to_container(&self, id: &str, i: ContainerInfo) -> Container {
        let mut labels = i.labels.unwrap_or_default();
        let kind = i
            .crio_annotations
            .as_ref()
            .and_then(|a| a.get(CONTAINER_TYPE))
            .or_else(|| i.annotations.as_ref().and_then(|a| a.get(CONTAINER_TYPE)));
        if let Some(k) = kind {
            labels.insert(CONTAINER_TYPE.into(), k.clone());
        }
        let pid = u32::try_from(i.pid).unwrap_or(0);
        let running = self.alive(pid);
        let name = match super::containerd::name_of(id, &labels) {
            n if n == id && !i.name.is_empty() => i.name,
            n => n,
        };
        Container {
            id: id.to_string(),
            name,
            image: i.image,
            labels,
            running,
            pid: if running { pid } else { 0 },
            restart_count: 0,
        }
    }
}

/// The CRI-O container ids in one `/proc/<pid>/cgroup` (v1 or v2): the
/// last `crio-<64 hex>` path component, without `.scope`; conmon's
/// `crio-conmon-<id>` is not a container.
pub fn ids_in_cgroup(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for comp in path.split('/') {
            let Some(rest) = comp.strip_prefix("crio-") else {
                continue;
            };
            let id = rest.strip_suffix(".scope").unwrap_or(rest);
            if valid_id(id) && id.len() == 64 && !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

/// CRI-O ids are 64 hex digits; anything else never reaches a request path.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ContainerRuntime for Crio {
    fn name(&self) -> &'static str {
        "cri-o"
    }

    fn list(&self) -> Result<Vec<Container>> {
        // Answers at all (a node without CRI-O fails here, not with an
        // empty list).
        self.info()?;
        let mut out = Vec::new();
        for id in self.ids_from_proc() {
            if let Some(c) = self.inspect(&id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn inspect(&self, id: &str) -> Result<Option<Container>> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(self
            .get_json::<ContainerInfo>(&format!("/containers/{id}"))?
            .map(|i| self.to_container(id, i)))
    }

    /// CRI-O's inspect names the container's mount point (`root`) only
    /// while it is mounted; a stopped container's writable layer is not
    /// read (not yet).
    fn upper_dir(&self, _id: &str) -> Result<Option<PathBuf>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_read_from_systemd_and_cgroupfs_paths_and_conmon_is_skipped() {
        let id = "a".repeat(64);
        let other = "b".repeat(64);
        let text = format!(
            "12:pids:/kubepods.slice/kubepods-pod1.slice/crio-{id}.scope\n\
             0::/kubepods/besteffort/pod1/crio-{other}\n\
             1:name=systemd:/system.slice/crio-conmon-{id}.scope\n"
        );
        assert_eq!(ids_in_cgroup(&text), vec![id, other]);
        assert!(ids_in_cgroup("0::/system.slice/crio.service\n").is_empty());
    }
}
