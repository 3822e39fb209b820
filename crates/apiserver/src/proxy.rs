//! Subresources the API server proxies to the pod's kubelet: `pods/log`
//! (`kubectl logs`), and the streams `pods/exec`, `pods/attach` and
//! `pods/portforward` (`kubectl exec`, `attach`, `cp`, `port-forward`),
//! relayed hop by hop once upgraded (SPDY or WebSocket). The API server dials the kubelet API (HTTPS, the
//! node's InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), verifies
//! it against the cluster CA and presents its kubelet-client certificate.

use std::convert::Infallible;

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

/// The container a `log`/`exec`/`attach` request names, or the pod's only one.
fn container_of(pod: &Value, name: &str, query: &str) -> Result<String, ApiError> {
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
    Ok(container)
}

/// The kubelet API address (node InternalIP, kubelet port) of the pod's node.
async fn kubelet_of(state: &State, pod: &Value, name: &str) -> Result<(String, u16), ApiError> {
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    let node = object(state, "nodes", None, &node_name).await?;
    Ok(kubelet_address(&node))
}

/// The kubelet API address a Node reports: its InternalIP and
/// `daemonEndpoints.kubeletEndpoint.Port`.
pub(crate) fn kubelet_address(node: &Value) -> (String, u16) {
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("")
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(10250);
    (ip, port)
}

/// One kubelet API answer, read whole.
struct KubeletAnswer {
    code: hyper::StatusCode,
    content_type: Option<hyper::header::HeaderValue>,
    body: Bytes,
}

/// `GET path` on a kubelet's API, whatever it answers.
async fn kubelet_request(state: &State, ip: &str, port: u16, path: &str) -> Result<KubeletAnswer, ApiError> {
    let stream = dial(state, ip, port).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = send.send_request(req).await.map_err(|e| ApiError::internal(format!("Get \"https://{ip}:{port}{path}\": {e}")))?;
    let (code, content_type) = (resp.status(), resp.headers().get(hyper::header::CONTENT_TYPE).cloned());
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(KubeletAnswer { code, content_type, body })
}

/// `GET path` on a kubelet's API: the whole body of a 200 answer.
pub(crate) async fn kubelet_get(state: &State, ip: &str, port: u16, path: &str) -> Result<Bytes, ApiError> {
    let a = kubelet_request(state, ip, port, path).await?;
    if !a.code.is_success() {
        return Err(ApiError::internal(format!("Get \"https://{ip}:{port}{path}\": {}: {}", a.code, String::from_utf8_lossy(&a.body).trim())));
    }
    Ok(a.body)
}

/// `GET nodes/{name}/proxy/{path}`: the node's kubelet API through the API
/// server, as kube-apiserver's node proxy serves `kubectl get --raw
/// /api/v1/nodes/NODE/proxy/stats/summary`. The name may carry a port
/// (`NODE:10250`); the kubelet's answer, code and type, is relayed as is.
pub(crate) async fn node(state: &State, name: &str, path: &str, query: Option<&str>) -> Result<Resp, ApiError> {
    // kubectl escapes the port's colon.
    let name = name.replace("%3A", ":").replace("%3a", ":");
    let (node_name, port) = match name.rsplit_once(':') {
        Some((n, p)) => {
            (n.strip_prefix("https:").unwrap_or(n), Some(p.parse::<u16>().map_err(|_| ApiError::bad_request(format!("invalid port in node name {name:?}")))?))
        }
        None => (name.as_str(), None),
    };
    let node = object(state, "nodes", None, node_name).await?;
    let (ip, default_port) = kubelet_address(&node);
    if ip.is_empty() {
        return Err(ApiError::new(503, "ServiceUnavailable", format!("no preferred addresses found; known addresses: []: node {node_name:?}")));
    }
    let target = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("/{path}?{q}"),
        None => format!("/{path}"),
    };
    let a = kubelet_request(state, &ip, port.unwrap_or(default_port), &target).await?;
    let mut resp = crate::respond::bytes_response(a.code.as_u16(), a.body);
    if let Some(ct) = a.content_type {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    Ok(resp)
}

/// `GET pods/{name}/log`: the container's log, streamed from its kubelet.
pub(crate) async fn pod_log(state: &State, ns: &str, name: &str, query: &str) -> Result<Resp, ApiError> {
    let pod = object(state, "pods", Some(ns), name).await?;
    let container = container_of(&pod, name, query)?;
    let (ip, port) = kubelet_of(state, &pod, name).await?;
    let path = format!("/containerLogs/{ns}/{name}/{container}?{query}");
    let stream = dial(state, &ip, port).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(&path)
        .header("host", format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = send.send_request(req).await.map_err(|e| ApiError::internal(format!("Get \"https://{ip}:{port}{path}\": {e}")))?;
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

/// A TLS connection to a kubelet's API, verified against the cluster CA.
async fn dial(state: &State, ip: &str, port: u16) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ApiError> {
    let tls = state.kubelet_tls.clone().ok_or_else(|| ApiError::internal("no kubelet client certificate"))?;
    let err = |e: String| ApiError::internal(format!("dialing the kubelet at {ip}:{port}: {e}"));
    let addr: std::net::IpAddr = ip.parse().map_err(|_| err(format!("node address {ip:?} is not an IP")))?;
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((addr, port)))
        .await
        .map_err(|_| err("timeout".into()))?
        .map_err(|e| err(e.to_string()))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.into());
    tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| err(e.to_string()))
}

/// `pods/{name}/exec|attach|portforward`: the upgraded stream, relayed to the kubelet.
pub(crate) async fn stream(state: &State, ns: &str, name: &str, sub: &str, req: hyper::Request<crate::handler::ReqBody>) -> Result<Resp, ApiError> {
    let query = req.uri().query().unwrap_or("").to_string();
    if !skiff_upgrade::is_upgrade(&req) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let pod = object(state, "pods", Some(ns), name).await?;
    let path = match sub {
        "portforward" => format!("/portForward/{ns}/{name}?{query}"),
        _ => format!("/{sub}/{ns}/{name}/{}?{query}", container_of(&pod, name, &query)?),
    };
    let (ip, port) = kubelet_of(state, &pod, name).await?;
    let stream = dial(state, &ip, port).await?;
    // kubectl ≥ 1.31 offers port-forward as SPDY inside WebSocket: that is
    // translated to plain SPDY towards the kubelet. Every other upgrade
    // (SPDY, and WebSocket exec/attach/port-forward such as the Python
    // client's `v4.channel.k8s.io`) is relayed as it is.
    let tunneled = sub == "portforward" && skiff_upgrade::websocket_protocols(&req).iter().any(|p| p == skiff_upgrade::SPDY_TUNNEL_PROTOCOL);
    let relayed = if tunneled {
        skiff_upgrade::tunnel_spdy(req, stream, &format!("{ip}:{port}"), &path).await
    } else {
        skiff_upgrade::proxy(req, stream, &format!("{ip}:{port}"), &path).await
    };
    relayed.map_err(|e| ApiError::internal(format!("proxying {sub} to the kubelet: {e}")))
}
