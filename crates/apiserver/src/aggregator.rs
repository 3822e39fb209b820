//! API aggregation (kube-aggregator, in process): APIServices say which
//! server serves a group version. Local ones are this server's (one for
//! every built-in group version, `metrics.k8s.io` included, made at start
//! when missing); a request for a group version an APIService sends to a
//! Service is proxied to a ready endpoint of it, authenticated with the
//! front-proxy client certificate and carrying the requester in
//! `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*` (what the
//! `extension-apiserver-authentication` ConfigMap tells extension servers
//! to trust). The availability controller checks each such backend's
//! discovery every [`CHECK_PERIOD`] and on every APIService change, sets
//! the `Available` condition, and keeps the backend's resource list and
//! OpenAPI v3 document for discovery and `/openapi/v3`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use skiff_api::apiregistration::{available, name_of, GROUP};
use skiff_api::rbac::UserInfo;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, ResourceType};
use skiff_store::StoreError;
use tokio_rustls::rustls;

use crate::handler::{ReqBody, State};
use crate::respond::{now, Resp};
use crate::write::Scope;

/// How often each backend's discovery is checked.
const CHECK_PERIOD: Duration = Duration::from_secs(10);
/// How long a proxied request may take to start answering (watches then
/// stream as long as they last).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate the API server presents to aggregated servers.
const FRONT_PROXY: &str = "front-proxy-client";

/// What the aggregator knows of the backends.
#[derive(Default)]
pub(crate) struct Aggregator {
    /// The `APIResourceList` each available remote APIService last served.
    discovery: RwLock<HashMap<String, Value>>,
    /// The OpenAPI v3 document of each one's group version, with its hash,
    /// when its server has one.
    openapi: RwLock<HashMap<String, (String, Bytes)>>,
}

fn apiservices() -> Option<&'static ResourceType> {
    skiff_api::registry::find(GROUP, "v1", "apiservices")
}

fn all(state: &State) -> Vec<Value> {
    let Some(rt) = apiservices() else { return Vec::new() };
    state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|c| c.object()).collect()
}

fn is_remote(svc: &Value) -> bool {
    svc.pointer("/spec/service").is_some_and(|s| !s.is_null())
}

/// The remote APIService serving `group`/`version`, if one does.
pub(crate) fn remote(state: &State, group: &str, version: &str) -> Option<Value> {
    let rt = apiservices()?;
    let key = rt.key(None, &name_of(group, version));
    state
        .cache
        .list(rt, &key, &LabelSelector::default(), &FieldSelector::default(), 0)
        .items
        .iter()
        .find(|c| c.key == key)
        .map(|c| c.object())
        .filter(is_remote)
}

/// One group version served by another server, for discovery.
pub(crate) struct RemoteVersion {
    /// API group.
    pub(crate) group: String,
    /// Version.
    pub(crate) version: String,
    /// Its `APIResourceList`, once the backend answered it.
    pub(crate) resources: Option<Value>,
    /// Its OpenAPI v3 document (hash, bytes), when the backend serves one.
    pub(crate) openapi: Option<(String, Bytes)>,
}

/// The available remote group versions, by group priority then version
/// priority, as kube orders them.
pub(crate) fn remote_versions(state: &State) -> Vec<RemoteVersion> {
    let mut svcs: Vec<Value> = all(state).into_iter().filter(|s| is_remote(s) && available(s)).collect();
    let prio = |s: &Value, f: &str| s.pointer(&format!("/spec/{f}")).and_then(Value::as_i64).unwrap_or(0);
    svcs.sort_by(|a, b| {
        prio(b, "groupPriorityMinimum").cmp(&prio(a, "groupPriorityMinimum")).then(prio(b, "versionPriority").cmp(&prio(a, "versionPriority")))
    });
    let docs = state.aggregator.discovery.read().map(|d| d.clone()).unwrap_or_default();
    let openapi = state.aggregator.openapi.read().map(|d| d.clone()).unwrap_or_default();
    svcs.iter()
        .map(|s| {
            let name = s.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            RemoteVersion {
                group: s.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default().to_string(),
                version: s.pointer("/spec/version").and_then(Value::as_str).unwrap_or_default().to_string(),
                resources: docs.get(name).cloned(),
                openapi: openapi.get(name).cloned(),
            }
        })
        .collect()
}

/// TLS towards a backend: its `caBundle` (else the cluster CA), or no
/// verification with `insecureSkipTLSVerify`; the front-proxy certificate.
fn tls_for(state: &State, svc: &Value) -> Result<Arc<rustls::ClientConfig>, String> {
    let pair = state.join.pki.load_or_issue(FRONT_PROXY, |p| p.issue_client(FRONT_PROXY, None)).map_err(|e| e.to_string())?;
    if svc.pointer("/spec/insecureSkipTLSVerify") == Some(&Value::Bool(true)) {
        return skiff_pki::client_tls_unverified(&pair).map_err(|e| e.to_string());
    }
    let ca = match svc.pointer("/spec/caBundle").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        Some(b) => String::from_utf8(skiff_api::unbase64(b).unwrap_or_default()).map_err(|e| e.to_string())?,
        None => state.join.pki.ca_cert_pem().to_string(),
    };
    skiff_pki::client_tls(&ca, &pair).map_err(|e| e.to_string())
}

/// A connection to the backend of a remote APIService.
async fn connect(state: &State, svc: &Value) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String), String> {
    let s = &svc["spec"]["service"];
    let (ns, name) = (s["namespace"].as_str().unwrap_or_default(), s["name"].as_str().unwrap_or_default());
    let port = s["port"].as_i64().unwrap_or(443);
    let addr = crate::admission::webhook::service_address(&state.cache, ns, name, port)?;
    let tls = tls_for(state, svc)?;
    let server_name = format!("{name}.{ns}.svc");
    let dial = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
        let sn = rustls::pki_types::ServerName::try_from(server_name.clone()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(sn, tcp).await.map_err(|e| format!("tls: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, String>(sender)
    };
    let sender = tokio::time::timeout(CONNECT_TIMEOUT, dial).await.map_err(|_| format!("dial tcp {addr}: i/o timeout"))??;
    Ok((sender, format!("https://{addr}")))
}

/// Proxies a request for an aggregated group version to its backend, as
/// the requester.
pub(crate) async fn proxy(state: &State, svc: &Value, req: hyper::Request<ReqBody>, user: &UserInfo) -> Result<Resp, ApiError> {
    let unavailable = |why: String| ApiError::unavailable(format!("error trying to reach service: {why}"));
    let (mut sender, base) = connect(state, svc).await.map_err(unavailable)?;
    let (parts, body) = req.into_parts();
    let body = crate::handler::read_body(hyper::Request::from_parts(parts.clone(), body)).await?;
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut out = hyper::Request::builder().method(parts.method.clone()).uri(&path);
    for h in ["content-type", "accept", "user-agent"] {
        if let Some(v) = parts.headers.get(h) {
            out = out.header(h, v);
        }
    }
    out = out.header("X-Remote-User", &user.name);
    for g in &user.groups {
        out = out.header("X-Remote-Group", g);
    }
    for (k, vs) in &user.extra {
        let key: String = url::form_urlencoded::byte_serialize(k.as_bytes()).collect();
        for v in vs {
            out = out.header(format!("X-Remote-Extra-{key}"), v);
        }
    }
    let out = out.body(Full::new(body)).map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(out))
        .await
        .map_err(|_| unavailable(format!("{} {base}{path}: timeout awaiting response headers", parts.method)))?
        .map_err(|e| unavailable(format!("{} {base}{path}: {e}", parts.method)))?;
    let (rparts, mut rbody) = resp.into_parts();
    // Relayed frame by frame: watches stream through.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = rbody.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(Ok(Frame::data(data))).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut answer = hyper::Response::builder().status(rparts.status);
    if let Some(ct) = rparts.headers.get("content-type") {
        answer = answer.header("content-type", ct);
    }
    answer.body(BodyExt::boxed_unsync(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)))).map_err(|e| ApiError::internal(e.to_string()))
}

/// One GET on a backend connection, as the aggregator: the body of a 2xx
/// answer, or why there is none.
async fn get(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, path: &str) -> Result<Bytes, String> {
    let req = hyper::Request::get(path)
        .header("Accept", "application/json")
        .header("X-Remote-User", "system:kube-aggregator")
        .header("X-Remote-Group", "system:masters")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await.map_err(|_| "timeout".to_string())?.map_err(|e| e.to_string())?;
    let code = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !code.is_success() {
        return Err(format!("bad status: {}", code.as_u16()));
    }
    Ok(body)
}

/// Asks a backend for its discovery (`Ok(resource list)` when it answers)
/// and, on the same connection, its OpenAPI v3 document.
async fn check(state: &State, svc: &Value) -> Result<(Value, Option<Bytes>), (&'static str, String)> {
    let (g, v) =
        (svc.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default(), svc.pointer("/spec/version").and_then(Value::as_str).unwrap_or_default());
    let (mut sender, base) = connect(state, svc).await.map_err(|e| {
        let reason = if e.contains("not found") {
            "ServiceNotFound"
        } else if e.contains("no endpoints") || e.contains("no service port") {
            "MissingEndpoints"
        } else {
            "FailedDiscoveryCheck"
        };
        (reason, e)
    })?;
    let path = format!("/apis/{g}/{v}");
    let failed = |e: String| ("FailedDiscoveryCheck", format!("failing or missing response from {base}{path}: {e}"));
    let body = get(&mut sender, &path).await.map_err(failed)?;
    let list: Value = serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
    let openapi = get(&mut sender, &format!("/openapi/v3/apis/{g}/{v}")).await.ok().filter(|d| serde_json::from_slice::<Value>(d).is_ok_and(|d| d.is_object()));
    Ok((list, openapi))
}

/// Sets an APIService's `Available` condition, when it changes.
async fn set_available(state: &State, svc: &Value, ok: bool, reason: &str, message: &str) -> Result<(), ApiError> {
    let cur = svc.pointer("/status/conditions").and_then(Value::as_array).and_then(|c| c.iter().find(|c| c["type"] == "Available")).cloned();
    let status = if ok { "True" } else { "False" };
    if cur.as_ref().is_some_and(|c| c["status"] == status && c["reason"] == reason && c["message"] == message) {
        return Ok(());
    }
    let Some(rt) = apiservices() else { return Ok(()) };
    let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    crate::write::server_update(state, rt, name, Scope::Status, |_, next| {
        let mut conditions: Vec<Value> = next.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        crate::write::set_condition(&mut conditions, "Available", ok, reason, message);
        next["status"] = json!({"conditions": conditions});
    })
    .await
}

/// Checks every APIService once.
async fn check_all(state: &State) {
    let mut docs = HashMap::new();
    let mut openapi = HashMap::new();
    for svc in all(state) {
        let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let result = if is_remote(&svc) {
            match check(state, &svc).await {
                Ok((doc, spec)) => {
                    docs.insert(name.clone(), doc);
                    if let Some(spec) = spec {
                        openapi.insert(name.clone(), (skiff_api::openapi::hash(&spec), spec));
                    }
                    set_available(state, &svc, true, "Passed", "all checks passed").await
                }
                Err((reason, message)) => set_available(state, &svc, false, reason, &message).await,
            }
        } else {
            set_available(state, &svc, true, "Local", "Local APIServices are always available").await
        };
        if let Err(e) = result {
            tracing::debug!(apiservice = %name, error = %e.message, "APIService status update failed");
        }
    }
    if let Ok(mut d) = state.aggregator.discovery.write() {
        *d = docs;
    }
    if let Ok(mut d) = state.aggregator.openapi.write() {
        *d = openapi;
    }
}

/// The availability controller: every APIService checked every
/// [`CHECK_PERIOD`] and whenever one changes, until shutdown.
pub(crate) async fn run(state: Arc<State>) {
    let Some(rt) = apiservices() else { return };
    let mut shutdown = state.shutdown.clone();
    loop {
        let mut live = match state.cache.subscribe(rt, &rt.key_prefix(), None) {
            Ok(s) => s.live,
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        check_all(&state).await;
        let mut tick = tokio::time::interval(CHECK_PERIOD);
        loop {
            tokio::select! {
                msg = live.recv() => match msg {
                    // Spec changes (not this controller's status writes).
                    Ok(crate::cache::Message::Event(ev)) => {
                        let spec = |c: &crate::cache::Cached| c.object().get("spec").cloned();
                        if ev.prev.as_ref().map(|p| spec(p)) != Some(spec(&ev.object)) {
                            check_all(&state).await;
                        }
                    }
                    Ok(crate::cache::Message::Reset) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => check_all(&state).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Makes the local APIServices (every built-in group version) that are
/// missing, and publishes `kube-system/extension-apiserver-authentication`:
/// how extension API servers authenticate this server's proxied requests.
pub(crate) async fn bootstrap(state: &State) -> Result<(), StoreError> {
    let Some(rt) = apiservices() else { return Ok(()) };
    let mut gvs = skiff_api::registry::group_versions();
    gvs.push(("metrics.k8s.io", "v1beta1"));
    for (i, (g, v)) in gvs.iter().enumerate() {
        let name = name_of(g, v);
        let key = rt.key(None, &name);
        if state.store.get(&key).await?.is_some() {
            continue;
        }
        let mut spec = json!({"version": v, "groupPriorityMinimum": 18000 - 100 * i as i64, "versionPriority": 15});
        if !g.is_empty() {
            spec["group"] = json!(g);
        }
        let obj = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(), "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
            "spec": spec,
            "status": {"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": now(), "reason": "Local", "message": "Local APIServices are always available"}]}});
        match state.store.create(&key, Bytes::from(obj.to_string())).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let Some(cms) = skiff_api::registry::find("", "v1", "configmaps") else { return Ok(()) };
    let ca = state.join.pki.ca_cert_pem().to_string();
    let data = json!({
        "client-ca-file": ca,
        "requestheader-client-ca-file": ca,
        "requestheader-allowed-names": json!([FRONT_PROXY]).to_string(),
        "requestheader-username-headers": json!(["X-Remote-User"]).to_string(),
        "requestheader-group-headers": json!(["X-Remote-Group"]).to_string(),
        "requestheader-extra-headers-prefix": json!(["X-Remote-Extra-"]).to_string(),
    });
    let key = cms.key(Some("kube-system"), "extension-apiserver-authentication");
    match state.store.get(&key).await? {
        Some(kv) => {
            let mut cur: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if cur["data"] != data {
                cur["data"] = data;
                match state.store.update(&key, Bytes::from(cur.to_string()), kv.mod_revision).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        None => {
            let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now()},
                "data": data});
            match state.store.create(&key, Bytes::from(obj.to_string())).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
