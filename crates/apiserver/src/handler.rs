//! Request handling: routing, discovery and the REST verbs.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{defaults, managed, patch, table, validation, ApiError, ResourceType, RESOURCES};
use skiff_pki::CertIdentity;
use skiff_store::{ListOptions, Store, StoreError};

/// Bodies over this size are refused with 413, as kube-apiserver does.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared server state.
pub(crate) struct State {
    pub(crate) store: Arc<dyn Store>,
}

type Resp = Response<UnsyncBoxBody<Bytes, std::convert::Infallible>>;

fn full(b: Bytes) -> UnsyncBoxBody<Bytes, std::convert::Infallible> {
    Full::new(b).boxed_unsync()
}

fn json_response(code: u16, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .body(full(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn error(e: &ApiError) -> Resp {
    json_response(e.code, &e.to_status())
}

fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(rt, name),
        StoreError::AlreadyExists(_) => ApiError::already_exists(rt, name),
        StoreError::Conflict { .. } => ApiError::conflict(rt, name),
        StoreError::Compacted { requested, compacted } => {
            ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Creates the namespaces every cluster has.
pub(crate) async fn bootstrap(state: &State) -> Result<(), StoreError> {
    let Some(ns) = skiff_api::registry::find("", "v1", "namespaces") else { return Ok(()) };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "labels": {"kubernetes.io/metadata.name": name}}});
        defaults::apply("Namespace", &mut obj);
        match state.store.create(&ns.key(None, name), Bytes::from(obj.to_string())).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Handles one request.
pub(crate) async fn handle(state: &State, identity: Option<CertIdentity>, req: Request<hyper::body::Incoming>) -> Resp {
    // Like kube-apiserver's default system:public-info-viewer binding: health
    // and version are open to anyone; everything else needs a credential.
    let public = matches!(req.uri().path(), "/healthz" | "/livez" | "/readyz" | "/version");
    if identity.is_none() && !public {
        return error(&ApiError::unauthorized());
    }
    match route(state, req).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

fn query_map(req: &Request<hyper::body::Incoming>) -> std::collections::HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn route(state: &State, req: Request<hyper::body::Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_get = req.method() == Method::GET;
    match segs.as_slice() {
        ["version"] if is_get => {
            return Ok(json_response(200, &json!({
                "major": "1", "minor": skiff_api::KUBERNETES_MINOR, "gitVersion": skiff_api::KUBERNETES_VERSION,
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
                "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH })})))
        }
        ["livez"] | ["readyz"] | ["healthz"] if is_get => {
            return Ok(Response::builder().status(200).header("Content-Type", "text/plain").body(full(Bytes::from_static(b"ok"))).unwrap_or_else(|_| Response::new(full(Bytes::new()))))
        }
        ["api"] if is_get => {
            return Ok(json_response(200, &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})))
        }
        ["apis"] if is_get => {
            let groups: Vec<Value> = skiff_api::registry::group_versions().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, v)| {
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                json!({"name": g, "versions": [gv], "preferredVersion": gv})
            }).collect();
            return Ok(json_response(200, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})));
        }
        ["openapi", "v3"] if is_get => {
            let paths: serde_json::Map<String, Value> = openapi_docs()
                .iter()
                .map(|(gv, (hash, _))| (gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")})))
                .collect();
            return Ok(json_response(200, &json!({"paths": paths})));
        }
        ["openapi", "v3", gv @ ..] if is_get => {
            let (_, doc) = openapi_docs().get(&gv.join("/")).ok_or_else(ApiError::no_such_path)?;
            return Ok(Response::builder()
                .status(200)
                .header("Content-Type", "application/json")
                .body(full(doc.clone()))
                .unwrap_or_else(|_| Response::new(full(Bytes::new()))));
        }
        ["api", v] if is_get => return resource_list("", v),
        ["apis", g, v] if is_get => return resource_list(g, v),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    // namespaces/{ns}/{plural}/... or {plural}/...
    // `namespaces/{name}[/status|/finalize]` is a namespace object itself;
    // `namespaces/{ns}/{plural}/…` is inside one; `{plural}/…` is not.
    let (ns, plural, name, sub) = match rest {
        ["namespaces", n] => (None, "namespaces", Some(*n), None),
        ["namespaces", n, sub @ ("status" | "finalize")] => (None, "namespaces", Some(*n), Some(*sub)),
        ["namespaces", ns, plural, tail @ ..] => (Some(ns.to_string()), *plural, tail.first().copied(), tail.get(1).copied()),
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(ApiError::no_such_path()),
    };
    let rt = skiff_api::registry::find(group, version, plural).ok_or_else(ApiError::no_such_path)?;
    let status_only = match sub {
        None => false,
        Some("status") if rt.status => true,
        Some("scale") if rt.scale => false,
        Some("binding") if rt.kind == "Pod" => false,
        Some(_) => return Err(ApiError::no_such_path()),
    };
    let scale = sub == Some("scale");
    let ns = if rt.namespaced { ns } else { None };
    let q = query_map(&req);
    let accept = req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let ctype = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("unknown").split('/').next().unwrap_or("unknown").to_string();
    let manager = q.get("fieldManager").cloned().unwrap_or(agent);
    let method = req.method().clone();
    let body = match method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => read_body(req).await?,
        _ => Bytes::new(),
    };
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let fv = match q.get("fieldValidation").map(String::as_str) {
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Warn") | Some("") | None => FieldValidation::Warn,
        Some(other) => return Err(ApiError::bad_request(format!("fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"))),
    };
    let reply = |r: Result<(Value, Vec<String>), ApiError>| -> Result<Resp, ApiError> {
        let (obj, warnings) = r?;
        let body = if scale { scale_of(&obj) } else { obj };
        Ok(with_warnings(json_response(200, &body), &warnings))
    };
    match (method, name) {
        (Method::GET, Some(name)) if scale => {
            let key = rt.key(ns.as_deref(), name);
            let kv = state.store.get(&key).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
            Ok(json_response(200, &scale_of(&with_rv(&kv.value, kv.mod_revision)?)))
        }
        (Method::PUT | Method::PATCH, Some(name)) if scale => {
            let body_v = decode(&body, if req_is_patch(&ctype) { "application/json" } else { &ctype })?;
            let ct = ctype.split(';').next().unwrap_or_default().trim().to_string();
            let is_patch = req_is_patch(&ctype);
            reply(update(state, rt, ns.as_deref(), name, |cur| {
                let mut sc = scale_of(cur);
                if is_patch {
                    match ct.as_str() {
                        "application/json-patch+json" => patch::json_patch(&mut sc, &body_v).map_err(|e| ApiError::new(422, "Invalid", e))?,
                        "application/merge-patch+json" | "application/strategic-merge-patch+json" => patch::merge_patch(&mut sc, &body_v),
                        other => return Err(ApiError::unsupported_media_type(other)),
                    }
                } else {
                    if let Some(rv) = body_v.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                        if Some(rv) != cur.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                            return Err(ApiError::conflict(rt, name));
                        }
                    }
                    sc = body_v.clone();
                }
                let replicas = sc.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                if replicas < 0 {
                    return Err(ApiError::new(422, "Invalid", format!("Scale.autoscaling {name:?} is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0")));
                }
                let mut n = cur.clone();
                n["spec"]["replicas"] = json!(replicas);
                if let Some(m) = n["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                Ok(n)
            }, &manager, dry_run, fv, Scope::Main).await)
        }
        (Method::POST, Some(name)) if sub == Some("binding") => {
            let binding = decode(&body, &ctype)?;
            let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if node.is_empty() {
                return Err(ApiError::invalid(rt, name, vec![skiff_api::FieldError::required("target.name", "")]));
            }
            update(state, rt, ns.as_deref(), name, |cur| {
                if cur.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
                    let have = cur.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
                    return Err(ApiError::conflict_with(rt, name, &format!("pod {name} is already assigned to node {have:?}")));
                }
                if cur.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
                    return Err(ApiError::conflict_with(rt, name, "pod is being deleted, cannot be assigned to a host"));
                }
                let mut n = cur.clone();
                n["spec"]["nodeName"] = json!(node);
                // Binding also records the condition, through the status the
                // main-resource write would otherwise preserve.
                let mut conds: Vec<Value> = n.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
                n["status"]["conditions"] = json!(conds);
                Ok(n)
            }, &manager, dry_run, fv, Scope::All).await?;
            Ok(json_response(201, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
        }
        (Method::GET, Some(name)) => get(state, rt, ns.as_deref(), name, &accept).await,
        (Method::GET, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(state, rt, ns.as_deref(), &q, &accept).await;
            }
            list(state, rt, ns.as_deref(), &q, &accept).await
        }
        (Method::POST, None) => {
            let obj = decode(&body, &ctype)?;
            create(state, rt, ns.as_deref(), obj, &manager, dry_run, fv).await
        }
        (Method::PUT, Some(name)) => {
            let obj = decode(&body, &ctype)?;
            reply(update(state, rt, ns.as_deref(), name, |_| Ok(obj.clone()), &manager, dry_run, fv, if status_only { Scope::Status } else { Scope::Main }).await)
        }
        (Method::PATCH, Some(name)) => {
            let p = decode(&body, "application/json")?;
            let ct = ctype.split(';').next().unwrap_or_default().trim().to_string();
            reply(update(state, rt, ns.as_deref(), name, |cur| {
                let mut new = cur.clone();
                match ct.as_str() {
                    "application/json-patch+json" => patch::json_patch(&mut new, &p).map_err(|e| ApiError::new(422, "Invalid", e))?,
                    "application/merge-patch+json" => patch::merge_patch(&mut new, &p),
                    "application/strategic-merge-patch+json" => patch::strategic_merge(&mut new, &p).map_err(ApiError::bad_request)?,
                    other => return Err(ApiError::unsupported_media_type(other)),
                }
                Ok(new)
            }, &manager, dry_run, fv, if status_only { Scope::Status } else { Scope::Main }).await)
        }
        (Method::DELETE, Some(name)) => delete(state, rt, ns.as_deref(), name, dry_run).await,
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

/// The OpenAPI v3 documents by group-version path, with their hashes,
/// generated once on first use (they only depend on the served types).
fn openapi_docs() -> &'static std::collections::BTreeMap<String, (String, Bytes)> {
    static DOCS: std::sync::OnceLock<std::collections::BTreeMap<String, (String, Bytes)>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        skiff_api::registry::group_versions()
            .into_iter()
            .filter_map(|(g, v)| {
                let doc = serde_json::to_vec(&skiff_api::openapi::group_version_document(g, v)?).ok()?;
                Some((skiff_api::openapi::gv_path(g, v), (skiff_api::openapi::hash(&doc), Bytes::from(doc))))
            })
            .collect()
    })
}

fn req_is_patch(ctype: &str) -> bool {
    ctype.contains("patch")
}

/// The `autoscaling/v1` `Scale` view of a scalable object.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_label_selector(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

fn resource_list(group: &str, version: &str) -> Result<Resp, ApiError> {
    let rts: Vec<&ResourceType> = RESOURCES.iter().filter(|r| r.group == group && r.version == version).collect();
    if rts.is_empty() {
        return Err(ApiError::no_such_path());
    }
    let mut resources: Vec<Value> = Vec::new();
    for r in &rts {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update"],
            "shortNames": r.short_names, "categories": r.categories,
        }));
        if r.status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.kind == "Pod" {
            resources.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
        }
        if r.scale {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json_response(200, &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})))
}

async fn read_body(req: Request<hyper::body::Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

fn decode(body: &[u8], ctype: &str) -> Result<Value, ApiError> {
    let ct = ctype.split(';').next().unwrap_or_default().trim();
    let v: Value = if ct == "application/vnd.kubernetes.protobuf" {
        skiff_api::protobuf::decode(body).map_err(ApiError::bad_request)?
    } else if ct.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    Ok(v)
}

fn with_rv(value: &[u8], rev: i64) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(value).map_err(|e| ApiError::internal(e.to_string()))?;
    v["metadata"]["resourceVersion"] = json!(rev.to_string());
    Ok(v)
}

fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

async fn get(state: &State, rt: &ResourceType, ns: Option<&str>, name: &str, accept: &str) -> Result<Resp, ApiError> {
    let kv = state.store.get(&rt.key(ns, name)).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    let obj = with_rv(&kv.value, kv.mod_revision)?;
    if wants_table(accept) {
        return Ok(json_response(200, &table::table(rt.kind, &[&obj], table::IncludeObject::Metadata, &kv.mod_revision.to_string(), None, chrono::Utc::now())));
    }
    Ok(json_response(200, &obj))
}

async fn list(state: &State, rt: &ResourceType, ns: Option<&str>, q: &std::collections::HashMap<String, String>, accept: &str) -> Result<Resp, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), rt.kind).map_err(ApiError::bad_request)?;
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let prefix = match ns {
        Some(ns) => format!("{}{ns}/", rt.key_prefix()),
        None => rt.key_prefix(),
    };
    let (mut revision, mut start_after) = (None, None);
    if let Some(c) = q.get("continue").filter(|c| !c.is_empty()) {
        let (rev, key) = c.split_once(':').ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        revision = Some(rev.parse::<i64>().map_err(|_| ApiError::bad_request("invalid continue token"))?);
        start_after = Some(key.to_string());
    }
    let mut items = Vec::new();
    let mut next = None;
    let mut rev;
    loop {
        let page = state.store.list(&prefix, ListOptions { revision, start_after: start_after.clone(), limit: if limit > 0 { limit } else { 0 } }).await.map_err(|e| match e {
            StoreError::Compacted { .. } => ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."),
            e => store_err(rt, "", e),
        })?;
        rev = page.revision;
        revision = Some(page.revision);
        for kv in &page.items {
            let obj = with_rv(&kv.value, kv.mod_revision)?;
            if labels.matches(&obj) && fields.matches(&obj) {
                items.push(obj);
            }
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        if limit > 0 && items.len() >= limit {
            next = start_after.as_ref().map(|k| format!("{rev}:{k}"));
            break;
        }
    }
    if wants_table(accept) {
        let refs: Vec<&Value> = items.iter().collect();
        return Ok(json_response(200, &table::table(rt.kind, &refs, table::IncludeObject::Metadata, &rev.to_string(), next.as_deref(), chrono::Utc::now())));
    }
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(n) = next {
        meta["continue"] = json!(n);
    }
    Ok(json_response(200, &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items})))
}

/// Which parts of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The main resource: everything but status.
    Main,
    /// The status subresource: status only.
    Status,
    /// Server-internal writes that set both (pods/binding).
    All,
}

/// What to do with fields the type does not declare (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    /// Refuse the request (400).
    Strict,
    /// Drop them and say so in `Warning` headers (the default).
    Warn,
    /// Drop them silently.
    Ignore,
}

/// Streams watch events as newline-delimited JSON, straight from the store
/// (the watch cache that will serve this without a store watch per client
/// is still to come).
async fn watch(
    state: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    q: &std::collections::HashMap<String, String>,
    accept: &str,
) -> Result<Resp, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), rt.kind).map_err(ApiError::bad_request)?;
    let prefix = match ns {
        Some(ns) => format!("{}{ns}/", rt.key_prefix()),
        None => rt.key_prefix(),
    };
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let mut initial: Vec<(&'static str, Value)> = Vec::new();
    let from = if rv.is_empty() || rv == "0" {
        // Unset or 0: the current state as ADDED events, then changes.
        let page = state.store.list(&prefix, ListOptions::default()).await.map_err(|e| store_err(rt, "", e))?;
        for kv in &page.items {
            initial.push(("ADDED", with_rv(&kv.value, kv.mod_revision)?));
        }
        page.revision + 1
    } else {
        rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))? + 1
    };
    let table = wants_table(accept);
    let timeout = std::time::Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let render = move |ty: &str, obj: Value| -> Option<Bytes> {
        if !(labels.matches(&obj) && fields.matches(&obj)) {
            return None;
        }
        let obj = if table {
            let rv = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
            table::table(rt.kind, &[&obj], table::IncludeObject::Metadata, &rv, None, chrono::Utc::now())
        } else {
            obj
        };
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).ok()?;
        line.push(b'\n');
        Some(Bytes::from(line))
    };
    let events: futures::stream::BoxStream<'static, Bytes> = match state.store.watch(&prefix, from).await {
        Ok(stream) => {
            // The stream ends at the first store error (the client re-lists).
            let live = stream.take_while(|ev| std::future::ready(ev.is_ok())).filter_map(|ev| async move {
                let ev = ev.ok()?;
                let mut obj: Value = serde_json::from_slice(&ev.kv.value).ok()?;
                obj["metadata"]["resourceVersion"] = json!(ev.kv.mod_revision.to_string());
                let ty = match ev.kind {
                    skiff_store::EventKind::Delete => "DELETED",
                    skiff_store::EventKind::Put if ev.created => "ADDED",
                    _ => "MODIFIED",
                };
                Some((ty, obj))
            });
            futures::stream::iter(initial).chain(live).filter_map(move |(ty, obj)| std::future::ready(render(ty, obj))).boxed()
        }
        Err(StoreError::Compacted { requested, compacted }) => {
            // As Kubernetes does: 200, then one ERROR event carrying a 410.
            let status = ApiError::expired(format!("too old resource version: {} ({compacted})", requested - 1)).to_status();
            let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
            line.push(b'\n');
            futures::stream::iter([Bytes::from(line)]).boxed()
        }
        Err(e) => return Err(store_err(rt, "", e)),
    };
    let deadline = tokio::time::sleep(timeout);
    let body = events.take_until(deadline).map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)));
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(body)))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Decodes through the Rust type (type errors are 400s) and checks
/// apiVersion/kind and the namespace against the URL.
fn normalize(
    rt: &ResourceType,
    ns: Option<&str>,
    mut obj: Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let gvk = format!("{}, Kind={}", rt.api_version(), rt.kind);
    for (field, want) in [("apiVersion", rt.api_version()), ("kind", rt.kind.to_string())] {
        match obj.get(field).and_then(Value::as_str) {
            None | Some("") => obj[field] = json!(want),
            Some(have) if have != want => {
                return Err(ApiError::bad_request(format!("the API version in the data ({}) does not match the expected API version ({gvk})", have)));
            }
            _ => {}
        }
    }
    if let Some(ns) = ns {
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => {}
        }
    }
    let input = obj.clone();
    let mut v = (rt.normalize)(obj).map_err(|e| ApiError::bad_request(format!("{} in version {:?} cannot be handled as a {}: {e}", rt.kind, rt.version, rt.kind)))?;
    let mut unknown = Vec::new();
    unknown_fields(&input, &v, "", &mut unknown);
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
        match validation {
            FieldValidation::Strict => return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", ")))),
            FieldValidation::Warn => warnings.extend(list),
            FieldValidation::Ignore => {}
        }
    }
    if let Some(ns) = ns {
        v["metadata"]["namespace"] = json!(ns);
    }
    Ok(v)
}

async fn ensure_namespace(state: &State, ns: Option<&str>) -> Result<(), ApiError> {
    let Some(ns) = ns else { return Ok(()) };
    let nrt = skiff_api::registry::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
    let kv = state.store.get(&nrt.key(None, ns)).await.map_err(|e| ApiError::internal(e.to_string()))?.ok_or_else(|| ApiError::not_found(nrt, ns))?;
    let v: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
    if v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return Err(ApiError::forbidden(format!("unable to create new content in namespace {ns} because it is being terminated")));
    }
    Ok(())
}

/// Paths of fields set in `input` that the typed round trip dropped: the
/// fields the type does not declare.
fn unknown_fields(input: &Value, normalized: &Value, path: &str, out: &mut Vec<String>) {
    match (input, normalized) {
        (Value::Object(i), Value::Object(n)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match n.get(k) {
                    Some(nv) => unknown_fields(v, nv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(n)) => {
            for (idx, (iv, nv)) in i.iter().zip(n).enumerate() {
                unknown_fields(iv, nv, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

fn random_suffix() -> String {
    // Kubernetes' alphabet for generated names: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes().iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

async fn create(state: &State, rt: &ResourceType, ns: Option<&str>, obj: Value, manager: &str, dry_run: bool, fv: FieldValidation) -> Result<Resp, ApiError> {
    let mut warnings = Vec::new();
    let mut obj = normalize(rt, ns, obj, fv, &mut warnings)?;
    if rt.namespaced && ns.is_none() {
        return Err(ApiError::no_such_path());
    }
    let meta = obj.get_mut("metadata").and_then(Value::as_object_mut);
    let Some(meta) = meta else { return Err(ApiError::invalid(rt, "", vec![skiff_api::FieldError::required("metadata.name", "name or generateName is required")])) };
    if meta.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        if let Some(g) = meta.get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty()) {
            let name = format!("{g}{}", random_suffix());
            meta.insert("name".into(), json!(name));
        }
    }
    for f in ["uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"] {
        meta.remove(f);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    if rt.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if rt.status {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    if rt.kind == "Namespace" {
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
    if rt.kind == "Secret" {
        secret_string_data(&mut obj);
    }
    defaults::apply(rt.kind, &mut obj);
    if rt.kind == "Pod" {
        let qos = defaults::qos_class(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    let errs = validation::validate(rt, &obj, None);
    if !errs.is_empty() {
        return Err(ApiError::invalid(rt, &name, errs));
    }
    ensure_namespace(state, ns).await?;
    managed::track_update(None, &mut obj, manager, &rt.api_version(), "", &now());
    if dry_run {
        return Ok(with_warnings(json_response(201, &obj), &warnings));
    }
    let kv = state.store.create(&rt.key(ns, &name), Bytes::from(obj.to_string())).await.map_err(|e| store_err(rt, &name, e))?;
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(with_warnings(json_response(201, &obj), &warnings))
}

/// Adds `Warning: 299 - "…"` headers, which kubectl prints.
fn with_warnings(mut resp: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("299 - {w:?}")) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

/// `stringData` is write-only: merged into `data` (base64) on write.
fn secret_string_data(obj: &mut Value) {
    let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    if let Some(map) = sd.as_object() {
        for (k, v) in map {
            obj["data"][k] = json!(skiff_api::base64(v.as_str().unwrap_or_default().as_bytes()));
        }
    }
}

async fn update(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    make: impl Fn(&Value) -> Result<Value, ApiError>,
    manager: &str,
    dry_run: bool,
    fv: FieldValidation,
    scope: Scope,
) -> Result<(Value, Vec<String>), ApiError> {
    let mut warnings = Vec::new();
    let key = rt.key(ns, name);
    let kv = state.store.get(&key).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    let old = with_rv(&kv.value, kv.mod_revision)?;
    let proposed = make(&old)?;
    if let Some(rv) = proposed.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        if rv != kv.mod_revision.to_string() {
            return Err(ApiError::conflict(rt, name));
        }
    }
    let mut new = normalize(rt, ns, proposed, fv, &mut warnings)?;
    if new.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
    }
    if scope == Scope::Status {
        // A status write changes status and nothing else.
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(st) => new["status"] = st,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match old["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if rt.status && scope == Scope::Main {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if rt.kind == "Secret" {
        secret_string_data(&mut new);
    }
    defaults::apply(rt.kind, &mut new);
    let errs = validation::validate(rt, &new, Some(&old));
    if !errs.is_empty() {
        return Err(ApiError::invalid(rt, name, errs));
    }
    let spec_of = |v: &Value| {
        let mut c = v.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        c
    };
    if rt.tracks_generation() && spec_of(&new) != spec_of(&old) {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    managed::track_update(Some(&old), &mut new, manager, &rt.api_version(), "", &now());
    let mut unchanged_old = old.clone();
    if let Some(m) = unchanged_old["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    let mut unchanged_new = new.clone();
    if let Some(m) = unchanged_new["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    if unchanged_new == unchanged_old || dry_run {
        return Ok((if dry_run { new } else { old }, warnings));
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let kv = state.store.update(&key, Bytes::from(new.to_string()), kv.mod_revision).await.map_err(|e| store_err(rt, name, e))?;
    new["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok((new, warnings))
}

async fn delete(state: &State, rt: &ResourceType, ns: Option<&str>, name: &str, dry_run: bool) -> Result<Resp, ApiError> {
    let key = rt.key(ns, name);
    let kv = state.store.get(&key).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    let mut obj = with_rv(&kv.value, kv.mod_revision)?;
    let has_finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
        || (rt.kind == "Namespace" && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty()));
    if dry_run {
        return Ok(json_response(200, &obj));
    }
    if has_finalizers {
        // Finalizers hold the object: mark it, and let their controllers finish.
        if obj.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if rt.kind == "Namespace" {
                obj["status"]["phase"] = json!("Terminating");
            }
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let kv = state.store.update(&key, Bytes::from(obj.to_string()), kv.mod_revision).await.map_err(|e| store_err(rt, name, e))?;
            obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        }
        return Ok(json_response(200, &obj));
    }
    state.store.delete(&key, Some(kv.mod_revision)).await.map_err(|e| store_err(rt, name, e))?;
    Ok(json_response(200, &obj))
}
