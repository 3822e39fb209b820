//! Subresources the API server proxies to the pod's kubelet: `pods/log`
//! (`kubectl logs`). The API server dials the kubelet API (HTTPS, the
//! node's InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), verifies
//! it against the cluster CA and presents its kubelet-client certificate.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_api::ApiError;
use tokio_rustls::rustls;

use crate::handler::State;
use crate::respond::Resp;

async fn object(state: &State, plural: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let rt = skiff_api::registry::find("", "v1", plural).ok_or_else(ApiError::no_such_path)?;
    let kv = state.store.get(&rt.key(ns, name)).await.map_err(|e| crate::respond::store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET pods/{name}/log`: the container's log, streamed from its kubelet.
pub(crate) async fn pod_log(state: &State, ns: &str, name: &str, query: &str) -> Result<Resp, ApiError> {
    let pod = object(state, "pods", Some(ns), name).await?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let names: Vec<String> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let app: Vec<String> = pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(String::from)).collect();
    let container = match params.iter().find(|(k, _)| k == "container").map(|(_, v)| v.clone()).filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => c,
        Some(c) => return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if app.len() == 1 => app[0].clone(),
        None => return Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", names.join(" ")))),
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    let node = object(state, "nodes", None, &node_name).await?;
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("")
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or(10250);
    let tls = state.kubelet_tls.clone().ok_or_else(|| ApiError::internal("no kubelet client certificate"))?;
    let path = format!("/containerLogs/{ns}/{name}/{container}?{query}");
    let resp = get(tls, &ip, port as u16, &path).await.map_err(|e| ApiError::internal(format!("Get \"https://{ip}:{port}{path}\": {e}")))?;
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        // The kubelet's refusals (a container still waiting, no previous
        // instance) reach the client as 400s, as kube-apiserver relays them.
        return Err(if code < 500 { ApiError::bad_request(msg) } else { ApiError::internal(msg) });
    }
    // Relay the (possibly endless, with follow) body frame by frame.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(Ok(Frame::data(data))).await.is_err() {
                    return;
                }
            }
        }
    });
    let body = BodyExt::boxed_unsync(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
    hyper::Response::builder().status(200).header("Content-Type", "text/plain").body(body).map_err(|e| ApiError::internal(e.to_string()))
}

async fn get(tls: Arc<rustls::ClientConfig>, ip: &str, port: u16, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let addr: std::net::IpAddr = ip.parse().map_err(|_| format!("node address {ip:?} is not an IP"))?;
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((addr, port)))
        .await
        .map_err(|_| "dial timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.into());
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path).header("host", format!("{ip}:{port}")).body(http_body_util::Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    send.send_request(req).await.map_err(|e| e.to_string())
}
