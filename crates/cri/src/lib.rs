//! The Container Runtime Interface side of a skiff node.
//!
//! - [`Runtime`]: a CRI v1 client (RuntimeService and ImageService) over
//!   the runtime's unix socket, on `tonic` with [`api`]'s messages
//!   (compiled from `proto/cri.proto` at build time, with no system
//!   `protoc`); and, where the runtime is containerd, its task events
//!   ([`Runtime::task_events`], through [`task_api`]).
//! - [`containerd`]: a containerd that the agent starts and supervises with
//!   its own root, state, socket and CNI directories, the way k3s does.
//! - [`oci`]: OCI image archives built locally (the pause image, and the
//!   busybox images tests run), imported into containerd with `ctr`.

#![deny(missing_docs)]

pub mod containerd;
pub mod oci;
pub mod task_api;

/// CRI v1 (`runtime.v1`): the messages and clients of `proto/cri.proto`.
#[allow(missing_docs, clippy::all)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Errors of the CRI layer.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The runtime's socket did not answer.
    #[error("connecting to the container runtime at {endpoint}: {message}")]
    Connect {
        /// The socket.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// A CRI call failed.
    #[error("{0}")]
    Call(#[from] tonic::Status),
    /// A prerequisite program is not installed.
    #[error("{program} is not installed (Debian package {package})")]
    Missing {
        /// The program looked for.
        program: String,
        /// The package that has it.
        package: String,
    },
    /// The supervised runtime failed to start or exited.
    #[error("containerd: {0}")]
    Containerd(String),
    /// A file or process error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A connected CRI runtime. Cloning is cheap (one shared HTTP/2 channel).
#[derive(Clone)]
pub struct Runtime {
    /// RuntimeService: sandboxes and containers.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService: pulls and image status.
    pub images: ImageServiceClient<Channel>,
    /// The socket path.
    pub socket: PathBuf,
    channel: Channel,
}

/// The socket path of a CRI endpoint given as `unix:///path` or `/path`.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Runtime {
    /// Connects to the CRI socket and checks that it answers `Version`.
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let err = |message: String| CriError::Connect { endpoint: socket.display().to_string(), message };
        let path = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| err(e.to_string()))?;
        let me = Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel.clone()),
            socket: socket.to_path_buf(),
            channel,
        };
        me.version().await?;
        Ok(me)
    }

    /// containerd's events for the processes of CRI's containers and
    /// sandboxes that ended on their own (`/tasks/exit`, `/tasks/oom`), with
    /// the ids CRI uses: what CRI v1 in containerd 1.6 has no stream for.
    /// The stream ends when the runtime goes away, or at once when it
    /// serves no containerd events API (another CRI runtime).
    ///
    /// The subscription is made when the stream is first polled, and is
    /// part of the stream: containerd answers a subscription only with its
    /// first event, so waiting for the answer apart from the events would
    /// wait for the first container to exit.
    pub fn task_events(&self) -> impl futures::Stream<Item = TaskEvent> + Send + 'static {
        use futures::StreamExt;
        use task_api::SubscribeRequest;
        // Filters are alternatives; within one, conditions all hold.
        let filters = ["/tasks/exit", "/tasks/oom"].iter().map(|t| format!("namespace=={CRI_NAMESPACE},topic==\"{t}\"")).collect();
        let req = SubscribeRequest { filters };
        let channel = self.channel.clone();
        let subscribed = async move { task_api::subscribe(&channel, req).await };
        futures::stream::once(subscribed).filter_map(|r| futures::future::ready(r.ok())).flatten().take_while(|r| futures::future::ready(r.is_ok())).filter_map(
            |r| {
                futures::future::ready(
                    r.ok().filter(|e| e.namespace == CRI_NAMESPACE).map(|e| TaskEvent { topic: e.topic, container_id: container_id_of(e.event) }),
                )
            },
        )
    }

    /// Whether containerd's own task for a CRI container has stopped.
    /// containerd marks its task stopped a moment before its CRI plugin
    /// reports the container exited; an attach in that moment would be let
    /// in and get nothing. `None` when the runtime cannot say (no containerd
    /// tasks API, no such task).
    pub async fn task_stopped(&self, container_id: &str) -> Option<bool> {
        let req = task_api::GetRequest { container_id: container_id.to_string(), exec_id: String::new() };
        let process = task_api::get_task(&self.channel, CRI_NAMESPACE, req).await.ok()?.process?;
        Some(process.status == task_api::STATUS_STOPPED)
    }

    /// The runtime's name and version, e.g. `containerd://1.6.20`.
    pub async fn version(&self) -> Result<String, CriError> {
        let v = self.runtime.clone().version(api::VersionRequest { version: "v1".into() }).await?.into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }
}

/// The containerd namespace that its CRI plugin keeps pods in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// A change of a container's (or sandbox's) process, from containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// `/tasks/exit` or `/tasks/oom`.
    pub topic: String,
    /// The CRI container or sandbox id; empty when the event names none.
    pub container_id: String,
}

/// The container id of a task event: the first field of every task event
/// message (`TaskStart`, `TaskExit`, `TaskOOM`, `TaskDelete`, `TaskCreate`,
/// `TaskPaused`, … all number `container_id` 1).
fn container_id_of(any: Option<prost_types::Any>) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct ContainerIdOnly {
        #[prost(string, tag = "1")]
        container_id: String,
    }
    any.and_then(|a| <ContainerIdOnly as prost::Message>::decode(a.value.as_slice()).ok()).map(|m| m.container_id).unwrap_or_default()
}

/// Finds `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
