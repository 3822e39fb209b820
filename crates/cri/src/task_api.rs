//! The two calls of containerd's own API that the kubelet makes beside CRI:
//! `Events.Subscribe` (task exits, which containerd 1.6's CRI does not
//! stream) and `Tasks.Get` (whether a task has stopped). Their few messages
//! are written out here with `prost` derives, with containerd's field
//! numbers, rather than taking the `containerd-client` crate, whose build
//! script needs a system `protoc` to generate all of containerd's API.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// `containerd.services.events.v1.SubscribeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeRequest {
    /// Alternatives; within one, the conditions all hold.
    #[prost(string, repeated, tag = "1")]
    pub filters: Vec<String>,
}

/// `containerd.types.Envelope`: one event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// When it was published.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<prost_types::Timestamp>,
    /// The containerd namespace it happened in.
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// e.g. `/tasks/exit`.
    #[prost(string, tag = "3")]
    pub topic: String,
    /// The event message (`containerd.events.TaskExit`, …).
    #[prost(message, optional, tag = "4")]
    pub event: Option<prost_types::Any>,
}

/// `containerd.services.tasks.v1.GetRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRequest {
    /// The container whose task is asked for.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// An exec'd process within it; empty for the task itself.
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `containerd.services.tasks.v1.GetResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResponse {
    /// The task's process.
    #[prost(message, optional, tag = "1")]
    pub process: Option<Process>,
}

/// `containerd.v1.types.Process`, the fields read here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    /// The container.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Its pid.
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    /// `containerd.v1.types.Status`: see [`STATUS_STOPPED`].
    #[prost(int32, tag = "4")]
    pub status: i32,
}

/// `containerd.v1.types.Status.STOPPED`.
pub const STATUS_STOPPED: i32 = 3;

async fn ready(channel: &Channel) -> Result<tonic::client::Grpc<Channel>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(grpc)
}

/// `Events.Subscribe`: a stream of envelopes.
pub async fn subscribe(channel: &Channel, req: SubscribeRequest) -> Result<tonic::Streaming<Envelope>, tonic::Status> {
    let mut grpc = ready(channel).await?;
    let path = PathAndQuery::from_static("/containerd.services.events.v1.Events/Subscribe");
    let codec: ProstCodec<SubscribeRequest, Envelope> = ProstCodec::default();
    Ok(grpc.server_streaming(tonic::Request::new(req), path, codec).await?.into_inner())
}

/// `Tasks.Get` in a containerd namespace.
pub async fn get_task(channel: &Channel, namespace: &'static str, req: GetRequest) -> Result<GetResponse, tonic::Status> {
    let mut grpc = ready(channel).await?;
    let path = PathAndQuery::from_static("/containerd.services.tasks.v1.Tasks/Get");
    let mut req = tonic::Request::new(req);
    req.metadata_mut().insert("containerd-namespace", tonic::metadata::MetadataValue::from_static(namespace));
    let codec: ProstCodec<GetRequest, GetResponse> = ProstCodec::default();
    Ok(grpc.unary(req, path, codec).await?.into_inner())
}
