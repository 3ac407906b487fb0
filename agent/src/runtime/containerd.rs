//! containerd through its gRPC API on its unix socket: the containers
//! service (`containerd.services.containers.v1.Containers` `List` / `Get`:
//! id, labels, image, snapshot) and the tasks service
//! (`containerd.services.tasks.v1.Tasks` `List` / `Get`: the init PID and
//! status), in one containerd namespace (`k8s.io` for Kubernetes' CRI
//! plugin, `moby` for Docker's own containerd), named in the
//! `containerd-namespace` request header as containerd's clients do.
//!
//! The messages are written here by hand with only the fields read
//! (protobuf skips the others), so no containerd `.proto` files are
//! vendored. A call runs on its own thread with a current-thread tokio
//! runtime, so [`ContainerRuntime`]'s blocking methods can be called from
//! anywhere, the async runtime included.
//!
//! What containerd records depends on its client: the CRI plugin puts the
//! pod's and container's identity in labels (`io.kubernetes.*`,
//! `io.cri-containerd.kind`); Docker 20.10 records neither labels nor the
//! image in its `moby` namespace (only `com.docker/engine.bundle.path`), so
//! there the id and PID are all there is and Docker's own API is the
//! better resolver.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};

use super::{Container, ContainerRuntime, Error, Result};

/// Where containerd listens, in the order [`super::detect`] tries them,
/// each with the namespace Kubernetes uses there: upstream containerd,
/// k3s and RKE2 (both run their containerd at the same path), MicroK8s.
pub const KUBERNETES_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/snap/microk8s/common/run/containerd.sock",
];
/// Docker's own containerd (Docker 20.10 runs one; its namespace is `moby`).
pub const DOCKER_SOCKET: &str = "/var/run/docker/containerd/containerd.sock";
/// The namespace of the CRI plugin (Kubernetes' containers).
pub const KUBERNETES_NAMESPACE: &str = "k8s.io";
/// The namespace of Docker's containers.
pub const DOCKER_NAMESPACE: &str = "moby";

/// Longest a call may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// containerd's task status `RUNNING` (`containerd.v1.types.Status`).
const STATUS_RUNNING: i32 = 2;

/// containerd on this node, in one namespace.
pub struct Containerd {
    socket: PathBuf,
    namespace: String,
}

// --- The messages, cut to the fields read. ---

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersRequest {
    #[prost(string, repeated, tag = "1")]
    filters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    containers: Vec<CtrContainer>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    container: Option<CtrContainer>,
}

/// `containerd.services.containers.v1.Container`.
#[derive(Clone, PartialEq, prost::Message)]
struct CtrContainer {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "2")]
    labels: std::collections::HashMap<String, String>,
    #[prost(string, tag = "3")]
    image: String,
    #[prost(string, tag = "6")]
    snapshotter: String,
    #[prost(string, tag = "7")]
    snapshot_key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListTasksRequest {
    #[prost(string, tag = "1")]
    filter: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListTasksResponse {
    #[prost(message, repeated, tag = "1")]
    tasks: Vec<Process>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    exec_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetTaskResponse {
    #[prost(message, optional, tag = "1")]
    process: Option<Process>,
}

/// `containerd.v1.types.Process`: a task's init process.
#[derive(Clone, PartialEq, prost::Message)]
struct Process {
    #[prost(string, tag = "1")]
    container_id: String,
    /// The task id: the container's id for its init process.
    #[prost(string, tag = "2")]
    id: String,
    #[prost(uint32, tag = "3")]
    pid: u32,
    #[prost(int32, tag = "4")]
    status: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MountsRequest {
    #[prost(string, tag = "1")]
    snapshotter: String,
    #[prost(string, tag = "2")]
    key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MountsResponse {
    #[prost(message, repeated, tag = "1")]
    mounts: Vec<Mount>,
}

/// `containerd.types.Mount`.
#[derive(Clone, PartialEq, prost::Message)]
struct Mount {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, repeated, tag = "4")]
    options: Vec<String>,
}

/// Connects a gRPC channel to a unix socket (the URI is ignored).
#[derive(Clone)]
struct UnixConnector(PathBuf);

impl tonic::codegen::Service<Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            Ok(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        })
    }
}

impl Containerd {
    pub fn new(socket: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            namespace: namespace.into(),
        }
    }

    /// The namespace it reads.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api(&self, request: &str, message: String) -> Error {
        Error::Api {
            runtime: "containerd",
            request: format!("{request} (namespace {})", self.namespace),
            message,
        }
    }

    /// Runs the calls `f` makes on a fresh channel, on a thread of its own.
    fn with_client<T: Send>(
        &self,
        what: &str,
        f: impl FnOnce(Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>> + Send,
    ) -> Result<T> {
        let socket = self.socket.clone();
        let namespace = self.namespace.clone();
        let connect_err = |source: std::io::Error| Error::Connect {
            runtime: "containerd",
            socket: socket.display().to_string(),
            source,
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(connect_err)?;
                rt.block_on(async {
                    let call = async {
                        let channel = Endpoint::from_static("http://containerd.invalid")
                            .connect_timeout(TIMEOUT)
                            .connect_with_connector(UnixConnector(socket.clone()))
                            .await
                            .map_err(|e| connect_err(std::io::Error::other(e)))?;
                        f(Client {
                            grpc: tonic::client::Grpc::new(channel),
                            namespace: namespace.clone(),
                        })
                        .await
                    };
                    tokio::time::timeout(TIMEOUT, call)
                        .await
                        .map_err(|_| self.api(what, format!("no answer within {TIMEOUT:?}")))?
                })
            })
            .join()
            .map_err(|_| self.api(what, "the request thread panicked".into()))?
        })
    }
}

/// One connection's calls.
struct Client {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    namespace: String,
}

impl Client {
    /// A unary call; `Ok(None)` when containerd answers NotFound.
    async fn unary<Req, Resp>(&mut self, method: &'static str, req: Req) -> Result<Option<Resp>>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let api = |message: String| Error::Api {
            runtime: "containerd",
            request: method.to_string(),
            message,
        };
        self.grpc
            .ready()
            .await
            .map_err(|e| api(format!("connection not ready: {e}")))?;
        let mut r = tonic::Request::new(req);
        let ns = self
            .namespace
            .parse()
            .map_err(|_| api(format!("namespace {:?} is not a valid header value", self.namespace)))?;
        r.metadata_mut().insert("containerd-namespace", ns);
        match self
            .grpc
            .unary::<Req, Resp, _>(r, PathAndQuery::from_static(method), tonic_prost::ProstCodec::default())
            .await
        {
            Ok(resp) => Ok(Some(resp.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(api(format!("{:?}: {}", s.code(), s.message()))),
        }
    }
}

const LIST_CONTAINERS: &str = "/containerd.services.containers.v1.Containers/List";
const GET_CONTAINER: &str = "/containerd.services.containers.v1.Containers/Get";
const LIST_TASKS: &str = "/containerd.services.tasks.v1.Tasks/List";
const GET_TASK: &str = "/containerd.services.tasks.v1.Tasks/Get";
const SNAPSHOT_MOUNTS: &str = "/containerd.services.snapshots.v1.Snapshots/Mounts";

/// A container's name: the CRI's `<pod namespace>/<pod name>/<container
/// name>` (or `<pod namespace>/<pod name>` for a pod sandbox), nerdctl's
/// `nerdctl/name` label, else its id (what Docker's `moby` namespace has).
pub(super) fn name_of(id: &str, labels: &BTreeMap<String, String>) -> String {
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    match (
        get(super::pods::POD_NAMESPACE),
        get(super::pods::POD_NAME),
        get(super::pods::CONTAINER_NAME),
    ) {
        (Some(ns), Some(pod), Some(c)) => format!("{ns}/{pod}/{c}"),
        (Some(ns), Some(pod), None) => format!("{ns}/{pod}"),
        _ => get("nerdctl/name").cloned().unwrap_or_else(|| id.to_string()),
    }
}

fn to_container(c: CtrContainer, task: Option<&Process>) -> Container {
    let labels: BTreeMap<String, String> = c.labels.into_iter().collect();
    let running = task.is_some_and(|t| t.status == STATUS_RUNNING && t.pid > 0);
    Container {
        name: name_of(&c.id, &labels),
        id: c.id,
        image: c.image,
        labels,
        running,
        pid: if running { task.map_or(0, |t| t.pid) } else { 0 },
        // containerd keeps no restart count (the kubelet does).
        restart_count: 0,
    }
}

/// containerd ids are free-form (`[A-Za-z0-9._-]`, up to 76 bytes); they
/// go in protobuf fields, never in a path, but an odd one is not looked up.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ContainerRuntime for Containerd {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn list(&self) -> Result<Vec<Container>> {
        let (containers, tasks) = self.with_client("List", |mut c| {
            Box::pin(async move {
                let cs: ListContainersResponse = c
                    .unary(LIST_CONTAINERS, ListContainersRequest::default())
                    .await?
                    .unwrap_or_default();
                let ts: ListTasksResponse = c
                    .unary(LIST_TASKS, ListTasksRequest::default())
                    .await?
                    .unwrap_or_default();
                Ok((cs.containers, ts.tasks))
            })
        })?;
        // Tasks/List fills the task's `id` (the container's id, for its
        // init process) and leaves `container_id` empty (containerd 1.6).
        let tasks: BTreeMap<String, Process> = tasks
            .into_iter()
            .map(|t| {
                let id = if t.id.is_empty() {
                    t.container_id.clone()
                } else {
                    t.id.clone()
                };
                (id, t)
            })
            .collect();
        Ok(containers
            .into_iter()
            .map(|c| {
                let t = tasks.get(&c.id);
                to_container(c, t)
            })
            .collect())
    }

    fn inspect(&self, id: &str) -> Result<Option<Container>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let id = id.to_string();
        let (container, task) = self.with_client("Get", |mut c| {
            Box::pin(async move {
                let cr: Option<GetContainerResponse> =
                    c.unary(GET_CONTAINER, GetContainerRequest { id: id.clone() }).await?;
                let Some(container) = cr.and_then(|r| r.container) else {
                    return Ok((None, None));
                };
                let tr: Option<GetTaskResponse> = c
                    .unary(
                        GET_TASK,
                        GetTaskRequest {
                            container_id: id,
                            exec_id: String::new(),
                        },
                    )
                    .await?;
                Ok((Some(container), tr.and_then(|r| r.process)))
            })
        })?;
        Ok(container.map(|c| to_container(c, task.as_ref())))
    }

    /// The overlay snapshot's `upperdir`, from the snapshots service's
    /// Mounts of the container's snapshot (`None` for Docker's `moby`
    /// containers, which keep their layers outside containerd).
    fn upper_dir(&self, id: &str) -> Result<Option<PathBuf>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let id = id.to_string();
        self.with_client("Mounts", |mut c| {
            Box::pin(async move {
                let cr: Option<GetContainerResponse> = c.unary(GET_CONTAINER, GetContainerRequest { id }).await?;
                let Some(container) = cr.and_then(|r| r.container) else {
                    return Ok(None);
                };
                if container.snapshotter.is_empty() || container.snapshot_key.is_empty() {
                    return Ok(None);
                }
                let m: Option<MountsResponse> = c
                    .unary(
                        SNAPSHOT_MOUNTS,
                        MountsRequest {
                            snapshotter: container.snapshotter,
                            key: container.snapshot_key,
                        },
                    )
                    .await?;
                Ok(m.and_then(|m| upperdir(&m.mounts)))
            })
        })
    }
}

/// The `upperdir=` option of an overlay mount.
fn upperdir(mounts: &[Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.r#type == "overlay")
        .flat_map(|m| m.options.iter())
        .find_map(|o| o.strip_prefix("upperdir="))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_cri_container_is_named_after_its_pod_and_a_task_gives_its_pid() {
        let mut c = CtrContainer {
            id: "abc".into(),
            image: "registry.k8s.io/pause:3.9".into(),
            ..Default::default()
        };
        for (k, v) in [
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.container.name", "nginx"),
        ] {
            c.labels.insert(k.into(), v.into());
        }
        // Through the wire, as containerd would send it.
        let c = CtrContainer::decode(c.encode_to_vec().as_slice()).unwrap();
        let running = Process {
            container_id: "abc".into(),
            id: "abc".into(),
            pid: 77,
            status: STATUS_RUNNING,
        };
        let got = to_container(c.clone(), Some(&running));
        assert_eq!(
            (got.name.as_str(), got.pid, got.running),
            ("shop/web-0/nginx", 77, true)
        );
        let stopped = Process { status: 3, ..running };
        assert_eq!(to_container(c.clone(), Some(&stopped)).pid, 0);
        let none = to_container(c, None);
        assert!(!none.running);
        assert_eq!(name_of("id1", &BTreeMap::new()), "id1");
    }

    #[test]
    fn the_overlay_upperdir_is_read_from_the_snapshot_mounts() {
        let m = vec![Mount {
            r#type: "overlay".into(),
            options: vec![
                "index=off".into(),
                "upperdir=/var/lib/x/fs".into(),
                "lowerdir=/a".into(),
            ],
        }];
        assert_eq!(upperdir(&m), Some(PathBuf::from("/var/lib/x/fs")));
        assert_eq!(upperdir(&[]), None);
        assert!(!valid_id("../x"));
    }

    #[test]
    fn an_absent_socket_is_a_connect_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let err = Containerd::new(&sock, "k8s.io").list().unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert!(err.to_string().contains("none.sock"), "{err}");
    }
}
