//! Admission webhooks: the MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook links of the admission chain. For each
//! request, the webhooks of the configurations in the watch cache whose
//! rules, namespace and object selectors and `matchConditions` (CEL) match
//! are called with an `AdmissionReview` (v1) over HTTPS, by `url` or by
//! `service` (routed to a ready endpoint of the Service, verified as
//! `NAME.NAMESPACE.svc`, as kube-apiserver with aggregator routing);
//! mutating ones in order, their JSONPatch responses applied (and those
//! with `reinvocationPolicy: IfNeeded` called once more if a later one
//! changed the object), validating ones at once. `failurePolicy` decides
//! what an unreachable or broken webhook means.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use skiff_api::admissionregistration::{rules_match, Operation, Target};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, ResourceType};
use tokio_rustls::rustls;

use crate::cache::WatchCache;
use crate::handler::State;

/// Idle connections kept per webhook endpoint.
const POOL_PER_ENDPOINT: usize = 16;

/// What admission is asked about.
pub(crate) struct Request<'a> {
    /// The resource type.
    pub(crate) rt: &'a ResourceType,
    /// What the request does.
    pub(crate) operation: Operation,
    /// The subresource written, or empty.
    pub(crate) subresource: &'a str,
    /// The object's name.
    pub(crate) name: &'a str,
    /// Its namespace.
    pub(crate) namespace: Option<&'a str>,
    /// The object before the request (updates and deletes).
    pub(crate) old: Option<&'a Value>,
    /// Who asks.
    pub(crate) user: &'a skiff_api::rbac::UserInfo,
    /// `dryRun=All`.
    pub(crate) dry_run: bool,
}

impl Request<'_> {
    fn target(&self) -> Target<'_> {
        Target {
            operation: self.operation,
            group: self.rt.group,
            version: self.rt.version,
            resource: self.rt.plural,
            subresource: self.subresource,
            namespaced: self.rt.namespaced,
        }
    }

    /// The `request` of an AdmissionReview (also CEL's `request`).
    pub(crate) fn review_request(&self, uid: &str, object: Option<&Value>) -> Value {
        let kind = json!({"group": self.rt.group, "version": self.rt.version, "kind": self.rt.kind});
        let resource = json!({"group": self.rt.group, "version": self.rt.version, "resource": self.rt.plural});
        let mut user = json!({"username": self.user.name, "groups": self.user.groups});
        if !self.user.uid.is_empty() {
            user["uid"] = json!(self.user.uid);
        }
        if !self.user.extra.is_empty() {
            user["extra"] = self.user.extra.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>().into();
        }
        let options = match self.operation {
            Operation::Create => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
            Operation::Update => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
            Operation::Delete => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
            Operation::Connect => Value::Null,
        };
        let mut r = json!({
            "uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
            "name": self.name, "operation": self.operation.as_str(), "userInfo": user,
            "object": object.cloned().unwrap_or(Value::Null), "oldObject": self.old.cloned().unwrap_or(Value::Null),
            "dryRun": self.dry_run, "options": options,
        });
        if let Some(ns) = self.namespace {
            r["namespace"] = json!(ns);
        }
        if !self.subresource.is_empty() {
            r["subResource"] = json!(self.subresource);
            r["requestSubResource"] = json!(self.subresource);
        }
        r
    }
}

/// HTTPS connections to webhooks, kept for reuse, and TLS configurations
/// by CA bundle. Hand-written rather than hyper-util's pooled client:
/// a `service` webhook is dialed at an endpoint's address but verified
/// under the Service's DNS name, which that client cannot separate.
pub(crate) struct WebhookClient {
    /// What a `clientConfig` without a `caBundle` is verified against.
    cluster_ca: String,
    idle: Mutex<HashMap<PoolKey, Vec<Sender>>>,
    tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
}

/// A kept connection's request half.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Kept connections by address, verified name and CA bundle.
type PoolKey = (SocketAddr, String, String);

/// Where a webhook is reached.
struct Endpoint {
    addr: SocketAddr,
    server_name: String,
    path: String,
    /// As kube names it in errors: `https://host:port/path`.
    url: String,
}

/// A failed call, in kube's words.
struct CallError(String);

impl WebhookClient {
    /// A client trusting `cluster_ca` where a webhook names no CA bundle.
    pub(crate) fn new(cluster_ca: &str) -> Self {
        Self { cluster_ca: cluster_ca.to_string(), idle: Default::default(), tls: Default::default() }
    }

    fn tls_for(&self, ca_bundle: Option<&str>) -> Result<Arc<rustls::ClientConfig>, CallError> {
        let key = ca_bundle.unwrap_or("").to_string();
        if let Some(cfg) = self.tls.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(cfg);
        }
        // Without a caBundle the cluster CA is trusted.
        let pem = match ca_bundle {
            Some(b) => String::from_utf8(skiff_api::unbase64(b).unwrap_or_default()).map_err(|e| CallError(format!("caBundle: {e}")))?,
            None => self.cluster_ca.clone(),
        };
        let cfg = skiff_pki::trusting(&pem).map_err(|e| CallError(format!("caBundle: {e}")))?;
        if let Ok(mut m) = self.tls.lock() {
            m.insert(key, cfg.clone());
        }
        Ok(cfg)
    }

    /// POSTs a review and reads the answer, on a kept connection when
    /// there is one.
    async fn post(&self, ep: &Endpoint, ca_bundle: Option<&str>, body: Bytes, timeout: Duration) -> Result<Value, CallError> {
        let key = (ep.addr, ep.server_name.clone(), ca_bundle.unwrap_or("").to_string());
        let pooled = self.idle.lock().ok().and_then(|mut m| m.get_mut(&key).and_then(Vec::pop));
        let call = async {
            let mut sender = match pooled.filter(|s| s.is_ready()) {
                Some(s) => s,
                None => {
                    let tls = self.tls_for(ca_bundle)?;
                    let tcp = tokio::net::TcpStream::connect(ep.addr).await.map_err(|e| CallError(format!("dial tcp {}: connect: {e}", ep.addr)))?;
                    let _ = tcp.set_nodelay(true);
                    let name = rustls::pki_types::ServerName::try_from(ep.server_name.clone()).map_err(|e| CallError(e.to_string()))?;
                    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| CallError(format!("tls: {e}")))?;
                    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| CallError(e.to_string()))?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    sender
                }
            };
            let req = hyper::Request::post(&ep.path)
                .header("Host", format!("{}:{}", ep.server_name, ep.addr.port()))
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(Full::new(body))
                .map_err(|e| CallError(e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| CallError(e.to_string()))?;
            let code = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| CallError(e.to_string()))?.to_bytes();
            if let Ok(mut m) = self.idle.lock() {
                let idle = m.entry(key).or_default();
                if idle.len() < POOL_PER_ENDPOINT {
                    idle.push(sender);
                }
            }
            if !code.is_success() {
                return Err(CallError(format!("server returned HTTP {}: {}", code.as_u16(), String::from_utf8_lossy(&bytes).trim())));
            }
            serde_json::from_slice(&bytes).map_err(|e| CallError(format!("the response is not an AdmissionReview: {e}")))
        };
        let url = ep.url.clone();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(CallError(e))) => Err(CallError(format!("Post \"{url}?timeout={}s\": {e}", timeout.as_secs()))),
            Err(_) => Err(CallError(format!("Post \"{url}?timeout={}s\": context deadline exceeded", timeout.as_secs()))),
        }
    }
}

/// Where a webhook's `clientConfig` points.
async fn endpoint(cache: &WatchCache, cc: &Value) -> Result<Endpoint, CallError> {
    if let Some(u) = cc.get("url").and_then(Value::as_str) {
        let parsed = url::Url::parse(u).map_err(|e| CallError(format!("url: {e}")))?;
        let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addr = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| CallError(format!("dial tcp: lookup {host}: {e}")))?
                .next()
                .ok_or_else(|| CallError(format!("dial tcp: lookup {host}: no such host")))?,
        };
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path = format!("{path}?{q}");
        }
        return Ok(Endpoint { addr, server_name: host, path, url: u.to_string() });
    }
    let svc = cc.get("service").cloned().unwrap_or_default();
    let (ns, name) = (svc["namespace"].as_str().unwrap_or_default(), svc["name"].as_str().unwrap_or_default());
    let port = svc["port"].as_i64().unwrap_or(443);
    let path = svc["path"].as_str().unwrap_or("/").to_string();
    let server_name = format!("{name}.{ns}.svc");
    let url = format!("https://{server_name}:{port}{path}");
    let addr = service_address(cache, ns, name, port).map_err(|why| CallError(format!("Post \"{url}\": {why}")))?;
    Ok(Endpoint { addr, server_name, path, url })
}

/// A ready endpoint of a Service's port (kube-apiserver's endpoint
/// routing, which k3s turns on): where webhooks and aggregated APIs are
/// dialed.
pub(crate) fn service_address(cache: &WatchCache, ns: &str, name: &str, port: i64) -> Result<SocketAddr, String> {
    let unreachable = |why: &str| why.to_string();
    let services = skiff_api::registry::find("", "v1", "services").ok_or_else(|| unreachable("no services"))?;
    let service = cache
        .list(services, &services.key(Some(ns), name), &LabelSelector::default(), &FieldSelector::default(), 0)
        .items
        .iter()
        .map(|c| c.object())
        .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| unreachable(&format!("service \"{name}\" not found")))?;
    let sport = service.pointer("/spec/ports").and_then(Value::as_array).and_then(|ps| ps.iter().find(|p| p["port"].as_i64() == Some(port)).cloned());
    let Some(sport) = sport else { return Err(unreachable(&format!("no service port {port} found for service \"{name}\""))) };
    let slices = skiff_api::registry::find("discovery.k8s.io", "v1", "endpointslices").ok_or_else(|| unreachable("no endpointslices"))?;
    let selector = LabelSelector::parse(&format!("kubernetes.io/service-name={name}")).map_err(|e| unreachable(&e))?;
    let snap = cache.list(slices, &format!("{}{ns}/", slices.key_prefix()), &selector, &FieldSelector::default(), 0);
    for slice in snap.items.iter().map(|c| c.object()) {
        let port_number = slice["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"].as_str().unwrap_or("") == sport["name"].as_str().unwrap_or("")))
            .and_then(|p| p["port"].as_u64())
            .or_else(|| sport["targetPort"].as_u64());
        let Some(port_number) = port_number.and_then(|p| u16::try_from(p).ok()) else { continue };
        let ready = slice["endpoints"].as_array().into_iter().flatten().filter(|e| e.pointer("/conditions/ready") != Some(&Value::Bool(false)));
        if let Some(ip) = ready.flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default()).find_map(|a| a.as_str().and_then(|s| s.parse().ok())) {
            return Ok(SocketAddr::new(ip, port_number));
        }
    }
    Err(unreachable(&format!("no endpoints available for service \"{name}\"")))
}

impl WebhookClient {
    /// Sends a review (an AdmissionReview or ConversionReview) to the
    /// server a `clientConfig` names; its answer, or why there is none.
    pub(crate) async fn review(&self, cache: &WatchCache, client_config: &Value, review: &Value, timeout: Duration) -> Result<Value, String> {
        let ep = endpoint(cache, client_config).await.map_err(|CallError(e)| e)?;
        let ca = client_config.get("caBundle").and_then(Value::as_str).filter(|c| !c.is_empty());
        self.post(&ep, ca, Bytes::from(review.to_string()), timeout).await.map_err(|CallError(e)| e)
    }
}

/// Whether the namespace and object selectors of a webhook or policy
/// accept the request.
pub(crate) fn selectors_match(state: &State, ns_selector: Option<&Value>, obj_selector: Option<&Value>, req: &Request, object: Option<&Value>) -> bool {
    let accepts = |selector: Option<&Value>, labelled: &[Option<&Value>]| -> bool {
        let Some(sel) = selector.filter(|s| s.as_object().is_some_and(|o| !o.is_empty())) else { return true };
        let Ok(sel) = LabelSelector::from_label_selector(sel) else { return false };
        labelled.iter().flatten().any(|o| sel.matches(o))
    };
    if !accepts(obj_selector, &[object, req.old]) {
        return false;
    }
    // A Namespace is selected by its own labels; other cluster-scoped
    // objects by any namespace selector.
    if req.rt.kind == "Namespace" && req.rt.group.is_empty() {
        return accepts(ns_selector, &[object.or(req.old)]);
    }
    let Some(ns) = req.namespace.filter(|_| req.rt.namespaced) else { return true };
    let Some(nsrt) = skiff_api::registry::find("", "v1", "namespaces") else { return true };
    let namespace = state.cache.list(nsrt, &nsrt.key(None, ns), &LabelSelector::default(), &FieldSelector::default(), 0).items.first().map(|c| c.object());
    accepts(ns_selector, &[namespace.as_ref()])
}

/// `matchConditions`: all must be true for the webhook to be called;
/// `Err` when one cannot be evaluated.
pub(crate) fn conditions_match(conds: Option<&Value>, vars: &[(&str, &Value)]) -> Result<bool, String> {
    for c in conds.and_then(Value::as_array).into_iter().flatten() {
        let expr = c["expression"].as_str().unwrap_or("true");
        if !skiff_api::cel::eval_bool(expr, vars).map_err(|e| format!("matchCondition {:?}: {e}", c["name"].as_str().unwrap_or("")))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Requests the webhooks never see: the configurations that could lock
/// them out, as in kube.
fn exempt(req: &Request) -> bool {
    req.rt.group == skiff_api::admissionregistration::GROUP && req.rt.custom.is_none()
}

/// The webhooks of the configurations of one kind, in name order.
fn hooks(state: &State, plural: &str) -> Vec<Value> {
    let Some(rt) = skiff_api::registry::find(skiff_api::admissionregistration::GROUP, "v1", plural) else { return Vec::new() };
    let snap = state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
    snap.items.iter().flat_map(|c| c.object()["webhooks"].as_array().cloned().unwrap_or_default()).collect()
}

/// The outcome of calling one webhook.
enum Called {
    /// Not called: it does not apply.
    Skipped,
    /// It answered: the review's `response`.
    Answered(Value),
}

async fn call(state: &State, hook: &Value, req: &Request<'_>, object: Option<&Value>) -> Result<Called, ApiError> {
    if !rules_match(&hook["rules"], &req.target()) || !selectors_match(state, hook.get("namespaceSelector"), hook.get("objectSelector"), req, object) {
        return Ok(Called::Skipped);
    }
    let name = hook["name"].as_str().unwrap_or_default();
    let ignore = hook["failurePolicy"].as_str() == Some("Ignore");
    let failed = |why: String| -> Result<Called, ApiError> {
        if ignore {
            tracing::warn!(webhook = name, error = %why, "failed calling webhook, failing open");
            Ok(Called::Skipped)
        } else {
            Err(ApiError::internal(format!("failed calling webhook {name:?}: {why}")))
        }
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let request = req.review_request(&uid, object);
    let null = Value::Null;
    let vars = [("object", object.unwrap_or(&null)), ("oldObject", req.old.unwrap_or(&null)), ("request", &request)];
    match conditions_match(hook.get("matchConditions"), &vars) {
        Ok(true) => {}
        Ok(false) => return Ok(Called::Skipped),
        Err(e) => return failed(format!("failed to evaluate match conditions: {e}")),
    }
    if req.dry_run && !matches!(hook["sideEffects"].as_str(), Some("None" | "NoneOnDryRun")) {
        return Err(ApiError::bad_request(format!("admission webhook {name:?} does not support dry run")));
    }
    let ep = match endpoint(&state.cache, &hook["clientConfig"]).await {
        Ok(ep) => ep,
        Err(CallError(e)) => return failed(format!("failed to call webhook: {e}")),
    };
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
    let ca = hook.pointer("/clientConfig/caBundle").and_then(Value::as_str).filter(|c| !c.is_empty());
    let answer = match state.webhooks.post(&ep, ca, Bytes::from(review.to_string()), timeout).await {
        Ok(a) => a,
        Err(CallError(e)) => return failed(format!("failed to call webhook: {e}")),
    };
    let response = answer.get("response").cloned().unwrap_or(Value::Null);
    if response["uid"].as_str() != Some(uid.as_str()) {
        return failed(format!("expected response.uid={uid:?}, got {:?}", response["uid"].as_str().unwrap_or("")));
    }
    Ok(Called::Answered(response))
}

/// A webhook's refusal as kube words it (`ToStatusErr`).
fn denied(name: &str, response: &Value) -> ApiError {
    let status = &response["status"];
    let code = status["code"].as_u64().and_then(|c| u16::try_from(c).ok()).filter(|c| *c >= 400).unwrap_or(400);
    let by = format!("admission webhook {name:?} denied the request");
    let message = match (status["message"].as_str().filter(|m| !m.is_empty()), status["reason"].as_str().filter(|r| !r.is_empty())) {
        (Some(m), _) => format!("{by}: {m}"),
        (None, Some(r)) => format!("{by}: {r}"),
        (None, None) => by,
    };
    let reason: &'static str = match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        _ => "BadRequest",
    };
    ApiError::new(code, reason, message)
}

fn warnings_of(response: &Value) -> Vec<String> {
    response["warnings"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

/// The mutating webhooks, in order, on the object about to be written.
pub(crate) async fn mutate(state: &State, req: &Request<'_>, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    if exempt(req) {
        return Ok(Vec::new());
    }
    let hooks = hooks(state, "mutatingwebhookconfigurations");
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    // (index, object after it ran) of webhooks that may be called again.
    let mut reinvocable: Vec<usize> = Vec::new();
    let mut changed_after: Vec<bool> = vec![false; hooks.len()];
    for (i, hook) in hooks.iter().enumerate() {
        let changed = run_mutating(state, hook, req, obj, &mut warnings).await?;
        if changed {
            for c in changed_after.iter_mut().take(i) {
                *c = true;
            }
        }
        if hook["reinvocationPolicy"] == "IfNeeded" {
            reinvocable.push(i);
        }
    }
    // Once more, for those a later webhook changed the object after.
    for i in reinvocable.into_iter().filter(|i| changed_after[*i]) {
        run_mutating(state, &hooks[i], req, obj, &mut warnings).await?;
    }
    Ok(warnings)
}

/// Calls one mutating webhook and applies its patch; true if the object changed.
async fn run_mutating(state: &State, hook: &Value, req: &Request<'_>, obj: &mut Value, warnings: &mut Vec<String>) -> Result<bool, ApiError> {
    let name = hook["name"].as_str().unwrap_or_default();
    let Called::Answered(response) = call(state, hook, req, Some(obj)).await? else { return Ok(false) };
    warnings.extend(warnings_of(&response));
    if response["allowed"] != true {
        return Err(denied(name, &response));
    }
    let Some(patch) = response["patch"].as_str().filter(|p| !p.is_empty()) else { return Ok(false) };
    if response["patchType"].as_str().unwrap_or("JSONPatch") != "JSONPatch" {
        return Err(ApiError::internal(format!("failed calling webhook {name:?}: unsupported patch type {:?}", response["patchType"])));
    }
    let ops: Value = skiff_api::unbase64(patch)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::internal(format!("failed calling webhook {name:?}: the patch is not base64 JSON")))?;
    let before = obj.clone();
    skiff_api::patch::json_patch(obj, &ops).map_err(|e| ApiError::internal(format!("JSON Patch from webhook {name:?}: {e}")))?;
    Ok(*obj != before)
}

/// The validating webhooks, all at once, on the object about to be
/// stored (or, for a delete, the object going).
pub(crate) async fn validate(state: &State, req: &Request<'_>, obj: Option<&Value>) -> Result<Vec<String>, ApiError> {
    if exempt(req) {
        return Ok(Vec::new());
    }
    let hooks = hooks(state, "validatingwebhookconfigurations");
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let results = futures::future::join_all(hooks.iter().map(|h| call(state, h, req, obj))).await;
    let mut warnings = Vec::new();
    for (hook, result) in hooks.iter().zip(results) {
        if let Called::Answered(response) = result? {
            warnings.extend(warnings_of(&response));
            if response["allowed"] != true {
                return Err(denied(hook["name"].as_str().unwrap_or_default(), &response));
            }
        }
    }
    Ok(warnings)
}
