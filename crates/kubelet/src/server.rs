//! The kubelet's HTTPS API (port 10250): `containerLogs`, which the API
//! server's `pods/log` proxies to; `exec`, `attach` and `portForward`,
//! which ask the runtime for a streaming URL (CRI `Exec`, `Attach`,
//! `PortForward`) and relay the client's upgraded SPDY or WebSocket stream
//! to the runtime's streaming server; and `healthz`. Callers authenticate
//! with a certificate signed by the cluster CA or a bearer token, and each
//! request is authorized by the API server ([`crate::auth`]).
//! `stats/summary` answers resource usage for `kubectl top`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_cri::{api, Runtime};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::logs::{self, Options};
use crate::spec::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE};
use crate::stats::Stats;

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn text(code: u16, msg: impl Into<String>) -> Response<Body> {
    let body = Full::new(Bytes::from(msg.into())).boxed_unsync();
    Response::builder().status(code).header("Content-Type", "text/plain").body(body).unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// Serves the kubelet API on `listener` until `shutdown` flips.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    rt: Runtime,
    stats: Arc<Stats>,
    auth: Arc<crate::auth::Auth>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let (acceptor, rt, stats, auth, stop) = (acceptor.clone(), rt.clone(), stats.clone(), auth.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| skiff_pki::identity_of(c.as_ref()));
            let cert = cert.map(|i| crate::auth::Caller { user: i.user, groups: i.groups, uid: None });
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (rt, stats, auth, stop, cert) = (rt.clone(), stats.clone(), auth.clone(), stop.clone(), cert.clone());
                async move {
                    let caller = match cert {
                        Some(c) => Some(c),
                        None => match bearer(&req) {
                            Some(token) => auth.token(&token).await,
                            None => None,
                        },
                    };
                    let Some(caller) = caller else { return Ok::<_, Infallible>(text(401, "Unauthorized")) };
                    let ask = crate::auth::ask(req.method(), req.uri().path());
                    if !auth.allowed(&caller, &ask).await {
                        return Ok(text(403, crate::auth::forbidden(&caller, &ask)));
                    }
                    Ok(route(&rt, &stats, req, stop).await)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
        });
    }
}

/// The bearer token of a request.
fn bearer<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim().to_string())
}

async fn route(rt: &Runtime, stats: &Stats, req: Request<hyper::body::Incoming>, stop: tokio::sync::watch::Receiver<bool>) -> Response<Body> {
    let path = req.uri().path().trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        ["healthz"] => text(200, "ok"),
        ["stats", "summary"] => match stats.summary(rt).await {
            Ok(v) => Response::builder()
                .header("Content-Type", "application/json")
                .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
                .unwrap_or_else(|_| text(500, "building the response")),
            Err(e) => text(500, format!("container stats: {}", e.message())),
        },
        ["containerLogs", ns, pod, container] => {
            let o = Options::from_query(req.uri().query().unwrap_or(""));
            container_logs(rt, ns, pod, container, o, stop).await
        }
        [kind @ ("exec" | "attach"), ns, pod, container] => {
            let (kind, ns, pod, container) = (kind.to_string(), ns.to_string(), pod.to_string(), container.to_string());
            stream(rt, &kind, &ns, &pod, Some(&container), req).await
        }
        ["portForward", ns, pod] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            stream(rt, "portForward", &ns, &pod, None, req).await
        }
        _ => text(404, "404 page not found"),
    }
}

/// Query parameters as Go's `url.Values` encodes them (`+` is a space).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    query.split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))).map(|(k, v)| (decode(k), decode(v))).collect()
}

/// The ports a WebSocket port-forward names in its query (`ports=8080`,
/// repeated or comma-separated), worded as the kubelet words a bad one.
fn websocket_ports(q: &[(String, String)]) -> Result<Vec<i32>, String> {
    let values: Vec<&str> = q.iter().filter(|(k, _)| k == "ports").map(|(_, v)| v.as_str()).collect();
    if values.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    let mut ports = Vec::new();
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"ports\" cannot be empty".into());
        }
        for p in v.split(',') {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {v:?} must be > 0")),
                Ok(n) => ports.push(i32::from(n)),
                Err(e) => return Err(format!("unable to parse {v:?} as a port: {e}")),
            }
        }
    }
    Ok(ports)
}

/// exec, attach and portForward: the runtime's streaming URL for the
/// request, then the client's upgraded stream relayed to it.
async fn stream(rt: &Runtime, kind: &str, ns: &str, pod: &str, container: Option<&str>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let q = query_pairs(req.uri().query().unwrap_or(""));
    let flag = |k: &str| q.iter().any(|(kk, v)| kk == k && (v == "true" || v == "1"));
    let mut r = rt.runtime.clone();
    let url = match (kind, container) {
        ("portForward", _) => {
            let labels = [(POD_NAMESPACE, ns), (POD_NAME, pod)].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let state = Some(api::PodSandboxStateValue { state: api::PodSandboxState::SandboxReady as i32 });
            let filter = api::PodSandboxFilter { label_selector: labels, state, ..Default::default() };
            let sandbox = match r.list_pod_sandbox(api::ListPodSandboxRequest { filter: Some(filter) }).await {
                Ok(l) => l.into_inner().items.into_iter().max_by_key(|s| s.created_at),
                Err(e) => return text(500, e.message().to_string()),
            };
            let Some(sb) = sandbox else { return text(404, format!("pod \"{pod}\" has no running sandbox")) };
            // SPDY clients name each port in a stream's headers; a plain
            // WebSocket client (the official Python client) names them in
            // the query, and the runtime's streaming server takes them from
            // the CRI request.
            let port = if skiff_upgrade::is_websocket(&req) {
                match websocket_ports(&q) {
                    Ok(p) => p,
                    Err(msg) => return text(400, msg),
                }
            } else {
                Vec::new()
            };
            r.port_forward(api::PortForwardRequest { pod_sandbox_id: sb.id, port }).await.map(|x| x.into_inner().url)
        }
        (_, Some(container)) => {
            let status = match find(rt, ns, pod, container, false).await {
                Ok(s) => s,
                Err(resp) => return resp,
            };
            // containerd's task stops a moment before its CRI says so: an
            // attach let in then would get nothing, where a refusal makes
            // `kubectl run -i` fall back to the logs of what already ran.
            if status.state != api::ContainerState::ContainerRunning as i32 || rt.task_stopped(&status.id).await == Some(true) {
                return text(400, format!("container {container} is not running"));
            }
            let (stdin, stdout, stderr, tty) = (flag("stdin"), flag("stdout"), flag("stderr") && !flag("tty"), flag("tty"));
            if kind == "exec" {
                let cmd: Vec<String> = q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
                r.exec(api::ExecRequest { container_id: status.id, cmd, tty, stdin, stdout, stderr }).await.map(|x| x.into_inner().url)
            } else {
                r.attach(api::AttachRequest { container_id: status.id, stdin, tty, stdout, stderr }).await.map(|x| x.into_inner().url)
            }
        }
        _ => return text(404, "404 page not found"),
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return text(500, e.message().to_string()),
    };
    // The runtime's streaming server: http://host:port/path (on this node).
    let Some((host, path)) = url.strip_prefix("http://").and_then(|rest| rest.split_once('/').map(|(h, p)| (h.to_string(), format!("/{p}")))) else {
        return text(500, format!("unexpected streaming URL {url:?}"));
    };
    let tcp = match tokio::net::TcpStream::connect(&host).await {
        Ok(t) => t,
        Err(e) => return text(502, format!("dialing the runtime's streaming server {host}: {e}")),
    };
    match skiff_upgrade::proxy(req, tcp, &host, &path).await {
        Ok(resp) => resp,
        Err(e) => text(502, e),
    }
}

/// The container instance whose log to read: the newest, or the one before it.
async fn find(rt: &Runtime, ns: &str, pod: &str, container: &str, previous: bool) -> Result<api::ContainerStatus, Response<Body>> {
    let labels = [(POD_NAMESPACE, ns), (POD_NAME, pod), (CONTAINER_NAME, container)].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let filter = api::ContainerFilter { label_selector: labels, ..Default::default() };
    let mut list = match rt.runtime.clone().list_containers(api::ListContainersRequest { filter: Some(filter) }).await {
        Ok(r) => r.into_inner().containers,
        Err(e) => return Err(text(500, e.message().to_string())),
    };
    list.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let pick = if previous { list.get(1) } else { list.first() };
    let Some(c) = pick else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
        };
        return Err(text(400, msg));
    };
    match rt.runtime.clone().container_status(api::ContainerStatusRequest { container_id: c.id.clone(), verbose: false }).await {
        Ok(r) => r.into_inner().status.ok_or_else(|| text(404, "container not found")),
        Err(e) => Err(text(404, e.message().to_string())),
    }
}

async fn container_logs(rt: &Runtime, ns: &str, pod: &str, container: &str, o: Options, mut stop: tokio::sync::watch::Receiver<bool>) -> Response<Body> {
    let status = match find(rt, ns, pod, container, o.previous).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let data = tokio::fs::read(&status.log_path).await.unwrap_or_default();
    let data = String::from_utf8_lossy(&data).into_owned();
    let (records, used) = logs::parse(&data);
    let first = logs::render(&records, &o);
    if !o.follow {
        return text(200, first);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let (rt, id, path) = (rt.clone(), status.id.clone(), status.log_path.clone());
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        let mut offset = used as u64;
        let follow_opts = Options { timestamps: o.timestamps, ..Default::default() };
        let mut changes = logs::FileChanges::watch(std::path::Path::new(&path));
        let (mut closed, mut done) = (false, false);
        loop {
            let mut buf = Vec::new();
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                    let _ = f.read_to_end(&mut buf).await;
                }
            }
            let chunk = String::from_utf8_lossy(&buf).into_owned();
            let (records, used) = logs::parse(&chunk);
            offset += used as u64;
            if !records.is_empty() && tx.send(Ok(Frame::data(Bytes::from(logs::render(&records, &follow_opts))))).await.is_err() {
                return;
            }
            if !records.is_empty() {
                continue;
            }
            if done {
                return;
            }
            // At the end of what is written: a container that has stopped
            // gets one last read; a running one is waited on.
            let running = rt
                .runtime
                .clone()
                .container_status(api::ContainerStatusRequest { container_id: id.clone(), verbose: false })
                .await
                .ok()
                .and_then(|r| r.into_inner().status)
                .is_some_and(|s| s.state == api::ContainerState::ContainerRunning as i32);
            if !running {
                done = true;
                continue;
            }
            // Writes wake the follower at once. The runtime reports the exit
            // a moment after it closes the file, so once closed the state
            // is asked again soon; otherwise every second, as the kubelet does.
            let quiet = if closed { Duration::from_millis(100) } else { Duration::from_secs(1) };
            tokio::select! {
                wake = changes.next(quiet) => closed |= wake == logs::Wake::Closed,
                _ = stop.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let body = BodyExt::boxed_unsync(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
    Response::builder().status(200).header("Content-Type", "text/plain").body(body).unwrap_or_else(|_| text(500, "response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(query: &str) -> Vec<(String, String)> {
        query_pairs(query)
    }

    #[test]
    fn websocket_port_forward_reads_its_ports_from_the_query() {
        assert_eq!(websocket_ports(&q("ports=8080")), Ok(vec![8080]));
        assert_eq!(websocket_ports(&q("ports=80,443&ports=8080")), Ok(vec![80, 443, 8080]));
        assert_eq!(websocket_ports(&q("")), Err("query parameter \"ports\" is required".into()));
        assert_eq!(websocket_ports(&q("ports=")), Err("query parameter \"ports\" cannot be empty".into()));
        assert!(websocket_ports(&q("ports=0")).is_err_and(|e| e.contains("must be > 0")));
        assert!(websocket_ports(&q("ports=70000")).is_err_and(|e| e.contains("unable to parse")));
        assert!(websocket_ports(&q("ports=http")).is_err_and(|e| e.contains("unable to parse")));
    }
}
