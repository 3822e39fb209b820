//! Request handling: authentication, routing and the REST verbs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{defaults, managed, patch, ApiError, ResourceType};
use skiff_pki::CertIdentity;
use skiff_store::{Store, StoreError};

use crate::auth::{bearer, Bearer, TokenFile};
use crate::authz::reviews::Review;
use crate::authz::{Authorizer, Decision};
use skiff_api::rbac::{Attributes, UserInfo};
use crate::cache::WatchCache;
use crate::metrics::Metrics;
use crate::respond::{error, full, json_response, now, with_rv, with_warnings, Resp};
use crate::write::{DeleteOptions, FieldValidation, Scope, WriteOptions};

/// A request's body: as it arrived, or read already (for the audit log).
pub(crate) type ReqBody = http_body_util::Either<hyper::body::Incoming, http_body_util::Full<Bytes>>;

/// Bodies over this size are refused with 413, as kube-apiserver does.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared server state.
pub(crate) struct State {
    /// The store: the only place state lives.
    pub(crate) store: Arc<dyn Store>,
    /// Lists and watches are served from here.
    pub(crate) cache: Arc<WatchCache>,
    /// Request metrics.
    pub(crate) metrics: Metrics,
    /// Static bearer tokens.
    pub(crate) tokens: TokenFile,
    /// Flips to true when the server shuts down (ends watches).
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    /// Seconds of the default not-ready and unreachable tolerations.
    pub(crate) toleration_seconds: (i64, i64),
    /// TLS towards kubelets (`pods/log`): the cluster CA and the API server's kubelet-client certificate.
    pub(crate) kubelet_tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Serializes Service creates while they allocate IPs and ports.
    pub(crate) allocations: tokio::sync::Mutex<()>,
    /// Serializes creates in namespaces with ResourceQuotas.
    pub(crate) quota_lock: tokio::sync::Mutex<()>,
    /// The node-join endpoints' CA and token.
    pub(crate) join: crate::join::Join,
    /// Where ClusterIPs come from (`--service-cidr`).
    pub(crate) service_cidr: skiff_api::cidr::Cidr,
    /// Signs and verifies ServiceAccount tokens.
    pub(crate) service_accounts: skiff_pki::ServiceAccountKey,
    /// The audiences a token must name to authenticate here (`--api-audiences`: the issuer).
    pub(crate) api_audiences: Vec<String>,
    /// The `--authorization-mode` chain.
    pub(crate) authorizer: Authorizer,
    /// The audit log, when `--audit-log-path` is set.
    pub(crate) auditor: Option<crate::audit::Auditor>,
    /// The custom resource types the CRDs serve.
    pub(crate) crds: crate::crd::CustomResources,
    /// Connections to admission webhooks.
    pub(crate) webhooks: Arc<crate::admission::webhook::WebhookClient>,
    /// What the aggregator knows of the servers APIServices name.
    pub(crate) aggregator: crate::aggregator::Aggregator,
    /// Requests in flight, read-only and mutating apart.
    pub(crate) in_flight: crate::limits::InFlight,
    /// The longest a request that is not long-running may take.
    pub(crate) request_timeout: std::time::Duration,
}

/// Creates the namespaces every cluster has.
/// `advertise`: the address pods reach this server at, published as the
/// `kubernetes` Service's endpoint.
pub(crate) async fn bootstrap(state: &State, secure_port: u16) -> Result<(), StoreError> {
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
    // The default StorageClass, served by the controller manager's
    // local-path provisioner (k3s ships the same as an add-on, and, as k3s,
    // puts it back at start when it is missing).
    if let Some(sc) = skiff_api::registry::find("storage.k8s.io", "v1", "storageclasses") {
        let name = skiff_api::storage::LOCAL_PATH_CLASS;
        let mut obj = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "annotations": {skiff_api::storage::DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": skiff_api::storage::LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
        defaults::apply("StorageClass", &mut obj);
        match state.store.create(&sc.key(None, name), Bytes::from(obj.to_string())).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // The system PriorityClasses.
    if let Some(pc) = skiff_api::registry::find("scheduling.k8s.io", "v1", "priorityclasses") {
        for (name, value, description) in crate::admission::SYSTEM_PRIORITY_CLASSES {
            let mut obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name,
                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now()}, "value": value, "description": description});
            defaults::apply("PriorityClass", &mut obj);
            match state.store.create(&pc.key(None, name), Bytes::from(obj.to_string())).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // The `kubernetes` Service every cluster has, on the first service IP.
    if let Some(svc) = skiff_api::registry::find("", "v1", "services") {
        let ip = state.service_cidr.nth(1).to_string();
        let mut obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default",
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}]}});
        defaults::apply("Service", &mut obj);
        match state.store.create(&svc.key(Some("default"), "kubernetes"), Bytes::from(obj.to_string())).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // Its endpoints are the live API servers' (`peers`).
    Ok(())
}

/// Handles one request: authenticates it, applies impersonation,
/// authorizes it, routes it, records metrics.
pub(crate) async fn handle(state: &State, cert: Option<CertIdentity>, peer: Option<std::net::IpAddr>, req: Request<hyper::body::Incoming>) -> Resp {
    let started = Instant::now();
    let received = crate::audit::now();
    let req = req.map(http_body_util::Either::Left);
    let authenticated = match (cert, bearer(req.headers())) {
        (_, Bearer::Token(t)) => match state.tokens.user(t) {
            Some(u) => Some(u.clone()),
            None => crate::service_account::authenticate(state, t, &state.api_audiences).await,
        },
        (Some(c), Bearer::Absent) => Some(c),
        (None, Bearer::Absent) => None,
    };
    // A joining node has no credential yet; the join endpoints check its token.
    if crate::join::is_join_path(req.uri().path()) {
        return crate::join::serve(state, req).await.unwrap_or_else(|e| error(&e));
    }
    let attrs = Attributes::from_request(req.method().as_str(), req.uri().path(), req.uri().query());
    let user = match authenticated {
        Some(c) => {
            let mut groups = c.groups;
            if !groups.iter().any(|g| g == "system:authenticated") {
                groups.push("system:authenticated".into());
            }
            UserInfo { name: c.user, groups, ..Default::default() }
        }
        None => {
            // Without a credential a request is answered only where
            // `system:anonymous` is allowed (the public-info paths:
            // /healthz, /livez, /readyz, /version); elsewhere 401, as
            // kube-apiserver with anonymous auth limited to those paths.
            let anonymous = UserInfo { name: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()], ..Default::default() };
            let allowed = if state.authorizer.always_allows() {
                matches!(attrs.path.as_str(), "/healthz" | "/livez" | "/readyz" | "/version")
            } else {
                matches!(state.authorizer.authorize(&state.cache, &anonymous, &attrs), Decision::Allow(_))
            };
            if !allowed {
                return error(&ApiError::unauthorized());
            }
            anonymous
        }
    };
    // The requester is kept apart only when it acts as someone else.
    let impersonated = crate::authz::impersonation::requested(req.headers());
    let requester = if impersonated { user.clone() } else { UserInfo::default() };
    let user = match crate::authz::impersonation::resolve(&state.authorizer, &state.cache, user, req.headers()) {
        Ok(u) => u,
        Err(e) => return error(&e),
    };
    let audit = state.auditor.as_ref().map(|a| a.level(&user, &attrs)).filter(|(level, _)| *level > crate::audit::Level::None);
    let record = audit.as_ref().map(|(level, omit)| {
        let r = crate::audit::Request {
            id: uuid::Uuid::new_v4().to_string(),
            level: *level,
            uri: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            attrs: &attrs,
            user: if impersonated { &requester } else { &user },
            impersonated: impersonated.then_some(&user),
            source: peer,
            agent: header(&req, "user-agent"),
            received: received.clone(),
        };
        (r, omit.clone())
    });
    let emit = |stage: &str, code: Option<u16>, decision: Option<(&str, &str)>, request: Option<&Value>, response: Option<&Value>| {
        if let (Some(auditor), Some((r, omit))) = (&state.auditor, &record) {
            if !omit.iter().any(|o| o == stage) {
                auditor.record(&crate::audit::event(r, stage, code, decision, request, response));
            }
        }
    };
    emit("RequestReceived", None, None, None, None);
    // After authentication, before authorization, as kube's chain: the
    // in-flight limit and the deadline, for all but long-running requests.
    // system:masters is exempt from the in-flight limit, as in kube, so an
    // administrator can still reach a server that clients flood.
    let long_running = crate::limits::is_long_running(&attrs.verb, &attrs.subresource, skiff_upgrade::is_upgrade(&req));
    // A long-running request has no deadline, so its `timeout` is not read.
    let deadline = match long_running {
        true => state.request_timeout,
        false => match crate::limits::deadline(req.uri().query(), state.request_timeout) {
            Ok(d) => d,
            Err(e) => return error(&e),
        },
    };
    let expires = tokio::time::Instant::now() + deadline;
    // Health probes are not counted either: kube's default flow schemas
    // put them in the exempt priority level, so a flooded server still
    // reports that it is alive and ready.
    let probe = matches!(attrs.path.as_str(), "/healthz" | "/livez" | "/readyz");
    let _in_flight = if long_running || probe || user.groups.iter().any(|g| g == "system:masters") {
        None
    } else {
        match state.in_flight.admit(crate::limits::is_mutating(req.method())) {
            Ok(permit) => permit,
            Err(e) => {
                state.metrics.observe(metric_verb(&attrs), &attrs.resource, 429, started.elapsed().as_secs_f64());
                emit("ResponseComplete", Some(429), None, None, None);
                return error(&e);
            }
        }
    };
    let reason = match state.authorizer.authorize(&state.cache, &user, &attrs) {
        Decision::Allow(why) => why,
        Decision::NoOpinion(why) => {
            let e = crate::authz::forbidden(&user, &attrs, &why);
            state.metrics.observe(metric_verb(&attrs), &attrs.resource, 403, started.elapsed().as_secs_f64());
            emit("ResponseComplete", Some(403), Some(("forbid", &why)), None, None);
            return error(&e);
        }
    };
    // The request's body, at `Request` level and above: read here and
    // handed on as it was.
    let (req, request_object) = match &record {
        Some((r, _)) if r.level >= crate::audit::Level::Request && matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) && !skiff_upgrade::is_upgrade(&req) => {
            let (parts, body) = req.into_parts();
            let bytes = match tokio::time::timeout_at(expires, read_body(Request::from_parts(parts.clone(), body))).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return error(&e),
                Err(_) => return error(&crate::limits::timed_out()),
            };
            let object = body_object(&bytes);
            (Request::from_parts(parts, http_body_util::Either::Right(http_body_util::Full::new(bytes))), object)
        }
        _ => (req, None),
    };
    let protobuf = skiff_api::protobuf::accepts(&header(&req, "accept"));
    let path = attrs.path.clone();
    let routed = crate::respond::PROTOBUF.scope(protobuf, async {
        // A panic is a bug, but it answers this request alone with a 500,
        // as kube's panic recovery filter does, instead of dropping the
        // connection without an answer.
        match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(route(state, req, &user))).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => error(&e),
            Err(_) => {
                tracing::error!(%path, "a request panicked");
                error(&ApiError::internal("This request caused apiserver to panic. Look in the logs for details."))
            }
        }
    });
    // Past the deadline the request's work is dropped (not left running
    // as kube's timeout filter leaves it): every store write is one atomic
    // operation, so what was cut off is either wholly written or not at all,
    // and the core it held is free at once.
    let resp = if long_running {
        routed.await
    } else {
        match tokio::time::timeout_at(expires, routed).await {
            Ok(r) => r,
            Err(_) => crate::respond::PROTOBUF.sync_scope(protobuf, || error(&crate::limits::timed_out())),
        }
    };
    let code = resp.status().as_u16();
    state.metrics.observe(metric_verb(&attrs), &attrs.resource, code, started.elapsed().as_secs_f64());
    let Some((r, _)) = &record else { return resp };
    // Long-running requests (watches, logs, upgraded streams) go on after
    // this answer: only their start is recorded.
    let streaming = long_running || code == 101;
    let reason = reason.text(&user);
    let decision = Some(("allow", reason.as_str()));
    if streaming {
        emit("ResponseStarted", Some(code), decision, request_object.as_ref(), None);
        return resp;
    }
    // A create names its object only in the answer: read it for the
    // event's objectRef even when the level records no bodies.
    if r.level < crate::audit::Level::RequestResponse && attrs.verb != "create" {
        emit("ResponseComplete", Some(code), decision, request_object.as_ref(), None);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let response_object = body_object(&bytes);
    emit("ResponseComplete", Some(code), decision, request_object.as_ref(), response_object.as_ref());
    Response::from_parts(parts, full(bytes))
}

/// A request's or answer's body as an object, for the audit log: JSON,
/// Kubernetes' protobuf, or YAML.
fn body_object(bytes: &[u8]) -> Option<Value> {
    if bytes.starts_with(skiff_api::protobuf::MAGIC) {
        return skiff_api::protobuf::decode(bytes).ok();
    }
    serde_json::from_slice::<Value>(bytes).ok().or_else(|| skiff_api::yaml::from_slice(bytes).ok().filter(Value::is_object))
}

/// The verb a request is counted under in `/metrics`.
fn metric_verb(a: &Attributes) -> &'static str {
    if !a.resource_request {
        return "";
    }
    match a.verb.as_str() {
        "watch" => "watch",
        "get" => "get",
        "list" => "list",
        "create" => "create",
        "update" => "update",
        "patch" => "patch",
        "delete" => "delete",
        "deletecollection" => "deletecollection",
        _ => "",
    }
}

fn query_map(req: &Request<ReqBody>) -> HashMap<String, String> {
    req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn header<B>(req: &Request<B>, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn route(state: &State, req: Request<ReqBody>, user: &UserInfo) -> Result<Resp, ApiError> {
    let path = req.uri().path().trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_get = req.method() == Method::GET;
    let accept = header(&req, "accept");
    // A group version another server serves (an APIService with a Service).
    if let ["apis", g, v, ..] = segs.as_slice() {
        if let Some(svc) = crate::aggregator::remote(state, g, v) {
            return crate::aggregator::proxy(state, &svc, req, user).await;
        }
    }
    match segs.as_slice() {
        ["version"] if is_get => {
            return Ok(json_response(
                200,
                &json!({
                "major": "1", "minor": skiff_api::KUBERNETES_MINOR, "gitVersion": skiff_api::KUBERNETES_VERSION,
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
                "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH })}),
            ))
        }
        ["livez"] | ["readyz"] | ["healthz"] if is_get => return Ok(text(200, "ok".to_string())),
        ["metrics"] if is_get => return Ok(text(200, state.metrics.render(state.store.current_revision()))),
        _ if is_get => {
            let discovery_path = matches!(segs.first(), Some(&"api" | &"apis" | &"openapi"));
            let custom = if discovery_path { state.crds.snapshot(&state.cache) } else { Default::default() };
            let remote = if discovery_path { crate::aggregator::remote_versions(state) } else { Vec::new() };
            if let Some(r) = crate::discovery::serve(&segs, &accept, &custom, &remote) {
                return r;
            }
        }
        _ => {}
    }
    if is_get {
        if let Some(r) = crate::service_account::discovery(state, &path) {
            return Ok(r);
        }
    }
    let post_only = |req: &Request<ReqBody>| {
        if req.method() == Method::POST {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(req.method().as_str()))
        }
    };
    match segs.as_slice() {
        ["apis", "authorization.k8s.io", "v1", review @ ("selfsubjectaccessreviews" | "subjectaccessreviews" | "selfsubjectrulesreviews")] => {
            post_only(&req)?;
            let ctype = header(&req, "content-type");
            let body = decode(&read_body(req).await?, &ctype)?;
            return match *review {
                "selfsubjectrulesreviews" => crate::authz::reviews::rules(state, user, body),
                "selfsubjectaccessreviews" => crate::authz::reviews::access(state, Review::SelfAccess, None, user, body),
                _ => crate::authz::reviews::access(state, Review::Subject, None, user, body),
            };
        }
        ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"] => {
            post_only(&req)?;
            let ctype = header(&req, "content-type");
            let body = decode(&read_body(req).await?, &ctype)?;
            return crate::authz::reviews::access(state, Review::Local, Some(ns), user, body);
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => {
            post_only(&req)?;
            let ctype = header(&req, "content-type");
            let review = decode(&read_body(req).await?, &ctype)?;
            return crate::service_account::token_review(state, review).await;
        }
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => {
            post_only(&req)?;
            let ctype = header(&req, "content-type");
            let mut review = decode(&read_body(req).await?, &ctype)?;
            review["apiVersion"] = json!("authentication.k8s.io/v1");
            review["kind"] = json!("SelfSubjectReview");
            review["metadata"] = json!({"creationTimestamp": now()});
            let mut info = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                info["uid"] = json!(user.uid);
            }
            if !user.extra.is_empty() {
                info["extra"] = user.extra.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>().into();
            }
            review["status"] = json!({"userInfo": info});
            return Ok(json_response(201, &review));
        }
        ["api", "v1", "namespaces", ns, "serviceaccounts", name, "token"] => {
            post_only(&req)?;
            let ctype = header(&req, "content-type");
            let body = read_body(req).await?;
            let request = if body.is_empty() { json!({}) } else { decode(&body, &ctype)? };
            return crate::service_account::token_request(state, ns, name, request).await;
        }
        _ => {}
    }
    if let ["api", "v1", "nodes", name, "proxy", rest @ ..] = segs.as_slice() {
        if !is_get {
            return Err(ApiError::method_not_allowed(req.method().as_str()));
        }
        return crate::proxy::node(state, name, &rest.join("/"), req.uri().query()).await;
    }
    if let ["api", "v1", "componentstatuses", rest @ ..] = segs.as_slice() {
        if !is_get || rest.len() > 1 {
            return Err(ApiError::method_not_allowed(req.method().as_str()));
        }
        return crate::component_status::serve(state, rest.first().copied(), &accept).await;
    }
    if let ["apis", "metrics.k8s.io", "v1beta1", rest @ ..] = segs.as_slice() {
        if !is_get {
            return Err(ApiError::method_not_allowed(req.method().as_str()));
        }
        return crate::resource_metrics::serve(state, rest, &query_map(&req)).await;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    // `namespaces/{name}[/status|/finalize]` is a namespace object itself;
    // `namespaces/{ns}/{plural}/…` is inside one; `{plural}/…` is not.
    let (ns, plural, name, sub) = match rest {
        ["namespaces", n] => (None, "namespaces", Some(*n), None),
        ["namespaces", n, sub @ ("status" | "finalize")] => (None, "namespaces", Some(*n), Some(*sub)),
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => (Some(ns.to_string()), *plural, tail.first().copied(), tail.get(1).copied()),
        [plural, tail @ ..] if tail.len() <= 2 => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        _ => return Err(ApiError::no_such_path()),
    };
    let custom_rt;
    let rt: &ResourceType = match skiff_api::registry::find(group, version, plural) {
        Some(rt) => rt,
        None => {
            // A CRD established a moment ago may not be in the cache yet.
            let mut found = state.crds.find(&state.cache, group, version, plural);
            if found.is_none() && state.cache.wait_for(state.cache.store_revision().await?).await.is_ok() {
                found = state.crds.find(&state.cache, group, version, plural);
            }
            custom_rt = found.ok_or_else(ApiError::no_such_path)?;
            &custom_rt
        }
    };
    let scope = match sub {
        None => Scope::Main,
        Some("status") if rt.status => Scope::Status,
        // A CertificateSigningRequest's answer lives in its status too.
        Some("approval") if rt.kind == "CertificateSigningRequest" => Scope::Status,
        Some("scale") if rt.scale => Scope::Main,
        Some("binding" | "eviction") if rt.kind == "Pod" => Scope::All,
        Some("finalize") if rt.kind == "Namespace" => Scope::Finalize,
        Some("ephemeralcontainers") if rt.kind == "Pod" => Scope::EphemeralContainers,
        Some(sub @ ("exec" | "attach" | "portforward")) if rt.kind == "Pod" => {
            return crate::proxy::stream(state, ns.as_deref().unwrap_or("default"), name.unwrap_or(""), sub, req).await;
        }
        Some("log") if rt.kind == "Pod" && req.method() == Method::GET => {
            let query = req.uri().query().unwrap_or("").to_string();
            return crate::proxy::pod_log(state, ns.as_deref().unwrap_or("default"), name.unwrap_or(""), &query).await;
        }
        Some(_) => return Err(ApiError::no_such_path()),
    };
    let scale = sub == Some("scale");
    if let (Some(sub @ ("approval" | "status")), Some(name), true) = (sub, name, rt.kind == "CertificateSigningRequest") {
        if matches!(*req.method(), Method::PUT | Method::PATCH) {
            let kv = state.store.get(&rt.key(None, name)).await.map_err(|e| crate::respond::store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
            let csr: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
            crate::admission::certificate_signer(state, user, &csr, sub)?;
        }
    }
    let ns = if rt.namespaced { ns } else { None };
    let q = query_map(&req);
    let ctype = header(&req, "content-type");
    let agent = header(&req, "user-agent");
    let agent = agent.split('/').next().filter(|a| !a.is_empty()).unwrap_or("unknown");
    let method = req.method().clone();
    let body = match method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => read_body(req).await?,
        _ => Bytes::new(),
    };
    let validation = match q.get("fieldValidation").map(String::as_str) {
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Warn") | Some("") | None => FieldValidation::Warn,
        Some(other) => return Err(ApiError::bad_request(format!("fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"))),
    };
    let ct = ctype.split(';').next().unwrap_or_default().trim().to_string();
    if rt.custom.is_some() && method == Method::PATCH && ct == "application/strategic-merge-patch+json" {
        // Custom resources have no patch strategies: kube refuses.
        return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ct:?})")));
    }
    let apply = method == Method::PATCH && ct == "application/apply-patch+yaml";
    let manager = match q.get("fieldManager") {
        Some(m) if m.chars().count() > 128 => return Err(ApiError::bad_request("fieldManager: Too long: may not be more than 128 bytes")),
        Some(m) => m.clone(),
        None if apply => {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"))
        }
        None => agent.to_string(),
    };
    let opts = WriteOptions { manager, dry_run: q.get("dryRun").is_some_and(|d| d == "All"), validation, scope, apply: false, user: user.clone() };
    let prefix = match ns.as_deref() {
        Some(ns) => format!("{}{ns}/", rt.key_prefix()),
        None => rt.key_prefix(),
    };
    let reply = |r: Result<(Value, Vec<String>), ApiError>| -> Result<Resp, ApiError> {
        let (obj, warnings) = r?;
        let body = if scale { scale_of(rt, &obj) } else { obj };
        Ok(with_warnings(json_response(200, &body), &warnings))
    };
    let ns = ns.as_deref();
    let resp = verb(state, rt, ns, name, sub, method, scale, apply, body, ct, ctype, q, opts, prefix, accept, reply).await;
    // Every answer from a deprecated version carries its warning.
    match rt.custom.as_ref().and_then(|c| c.deprecation.clone()) {
        Some(w) => resp.map(|r| with_warnings(r, &[w])),
        None => resp,
    }
}

/// Serves one verb on a resource (or its `scale`, `binding`, `eviction`).
#[allow(clippy::too_many_arguments)]
async fn verb(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
    method: Method,
    scale: bool,
    apply: bool,
    body: Bytes,
    ct: String,
    ctype: String,
    q: HashMap<String, String>,
    opts: WriteOptions,
    prefix: String,
    accept: String,
    reply: impl Fn(Result<(Value, Vec<String>), ApiError>) -> Result<Resp, ApiError>,
) -> Result<Resp, ApiError> {
    match (method, name) {
        (Method::GET, Some(name)) if scale => {
            let kv =
                state.store.get(&rt.key(ns, name)).await.map_err(|e| crate::respond::store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
            Ok(json_response(200, &scale_of(rt, &with_rv(&kv.value, kv.mod_revision)?)))
        }
        (Method::PUT | Method::PATCH, Some(name)) if scale => reply(write_scale(state, rt, ns, name, &body, &ct, &opts).await),
        (Method::POST, Some(name)) if sub == Some("binding") => {
            bind(state, rt, ns, name, &body, &ctype, &opts).await?;
            Ok(json_response(201, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
        }
        (Method::POST, Some(name)) if sub == Some("eviction") => {
            crate::eviction::evict(state, rt, ns.unwrap_or("default"), name, &decode(&body, &ctype)?, &opts).await
        }
        (Method::GET, Some(name)) => crate::read::get(state, rt, ns, name, &q, &accept).await,
        (Method::GET, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return crate::watch::watch(state, rt.clone(), prefix, &q, &accept).await;
            }
            crate::read::list(state, rt, prefix, &q, &accept).await
        }
        (Method::POST, None) => crate::write::create(state, rt, ns, decode(&body, &ctype)?, &opts).await,
        (Method::PUT, Some(name)) => {
            let obj = decode(&body, &ctype)?;
            reply(crate::write::update(state, rt, ns, name, |_| Ok(obj.clone()), &opts).await)
        }
        (Method::PATCH, Some(name)) if apply => server_side_apply(state, rt, ns, name, &body, &q, opts).await,
        (Method::PATCH, Some(name)) => {
            let p: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            reply(
                crate::write::update(
                    state,
                    rt,
                    ns,
                    name,
                    |cur| {
                        let mut new = cur.clone();
                        apply_patch(&mut new, &ct, &p)?;
                        if !new.is_object() {
                            return Err(ApiError::bad_request(format!("the patched {} is {}, not an object", rt.kind, json_kind(&new))));
                        }
                        // Only a resourceVersion the patch itself names is a
                        // precondition; otherwise lost races are retried.
                        if !pins_resource_version(&p) {
                            if let Some(m) = new["metadata"].as_object_mut() {
                                m.remove("resourceVersion");
                            }
                        }
                        Ok(new)
                    },
                    &opts,
                )
                .await,
            )
        }
        (Method::DELETE, Some(name)) => {
            let mut del = DeleteOptions::parse(&body, &q)?;
            del.user = opts.user.clone();
            let (gone, obj) = crate::write::delete(state, rt, ns, name, &del).await?;
            Ok(json_response(200, &deleted_body(rt, gone, obj)))
        }
        (Method::DELETE, None) => delete_collection(state, rt, ns, &prefix, &body, &q, &opts.user).await,
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

/// Applies a JSON, merge or strategic merge patch of content type `ct`.
fn apply_patch(target: &mut Value, ct: &str, p: &Value) -> Result<(), ApiError> {
    // A merge patch that is not an object would replace the whole object
    // with a scalar or a list; kube refuses such a body when it decodes it.
    if ct != "application/json-patch+json" && !p.is_object() {
        return Err(ApiError::bad_request(format!("error decoding patch: a {ct} patch is a JSON object, not {}", json_kind(p))));
    }
    match ct {
        "application/json-patch+json" => patch::json_patch(target, p).map_err(|e| ApiError::new(422, "Invalid", e)),
        "application/merge-patch+json" => {
            patch::merge_patch(target, p);
            Ok(())
        }
        "application/strategic-merge-patch+json" => patch::strategic_merge(target, p).map_err(ApiError::bad_request),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// What a JSON value is, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a patch names `metadata.resourceVersion` (a JSON patch through
/// any operation on that path).
fn pins_resource_version(p: &Value) -> bool {
    match p {
        Value::Array(ops) => ops.iter().any(|op| op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")),
        other => other.pointer("/metadata/resourceVersion").is_some_and(|v| !v.is_null()),
    }
}

fn text(code: u16, body: String) -> Resp {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(full(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// What a DELETE answers: pods and objects still being deleted come back
/// whole; other objects deleted at once are a success `Status`, as in
/// kube-apiserver.
fn deleted_body(rt: &ResourceType, gone: bool, obj: Value) -> Value {
    if !gone || matches!(rt.kind, "Pod" | "Namespace") {
        return obj;
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
           "details": {"name": obj.pointer("/metadata/name"), "group": rt.group, "kind": rt.plural, "uid": obj.pointer("/metadata/uid")}})
}

/// `DELETE` on a collection: every object matching the selectors.
async fn delete_collection(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    prefix: &str,
    body: &[u8],
    q: &HashMap<String, String>,
    user: &UserInfo,
) -> Result<Resp, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse_for(q.get("fieldSelector").map_or("", String::as_str), rt).map_err(ApiError::bad_request)?;
    let mut del = DeleteOptions::parse(body, q)?;
    del.user = user.clone();
    state.cache.wait_for(state.cache.store_revision().await?).await.map_err(crate::watch::cache_error)?;
    let snap = state.cache.list(rt, prefix, &labels, &fields, 0);
    let mut items = Vec::new();
    for obj in &snap.items {
        let name = obj.selectable.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        match crate::write::delete(state, rt, ns, &name, &del).await {
            Ok((_, o)) => items.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": state.cache.revision().to_string()}, "items": items}),
    ))
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply. Creates
/// the object when it does not exist (201), else merges the applied
/// configuration, refusing with 409 fields another manager owns unless
/// `force=true`.
async fn server_side_apply(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
    q: &HashMap<String, String>,
    mut opts: WriteOptions,
) -> Result<Resp, ApiError> {
    let applied = decode(body, "application/yaml")?;
    let force = q.get("force").is_some_and(|f| f == "true");
    opts.apply = true;
    if opts.scope != Scope::Main {
        return Err(ApiError::unsupported_media_type("application/apply-patch+yaml"));
    }
    let applied_name = applied.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(name);
    if applied_name != name {
        return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
    }
    let exists = state.store.get(&rt.key(ns, name)).await.map_err(|e| crate::respond::store_err(rt, name, e))?.is_some();
    let api_version = rt.api_version();
    let mut warnings = Vec::new();
    if !exists {
        let keys = skiff_api::apiextensions::list_keys_of(rt);
        let mut obj = skiff_api::patch::with_list_keys(keys, || managed::apply(None, &applied, &opts.manager, &api_version, force, &now()))
            .map_err(|c| apply_conflict(rt, name, &c))?;
        obj["metadata"]["name"] = json!(name);
        let resp = crate::write::create(state, rt, ns, obj, &opts).await;
        match resp {
            Err(e) if e.code == 409 && e.reason == "AlreadyExists" => {}
            other => return other,
        }
    }
    let (obj, w) = crate::write::update(
        state,
        rt,
        ns,
        name,
        |cur| {
            let mut base = cur.clone();
            if let Some(m) = base["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let keys = skiff_api::apiextensions::list_keys_of(rt);
            skiff_api::patch::with_list_keys(keys, || managed::apply(Some(&base), &applied, &opts.manager, &api_version, force, &now()))
                .map_err(|c| apply_conflict(rt, name, &c))
        },
        &opts,
    )
    .await?;
    warnings.extend(w);
    Ok(with_warnings(json_response(200, &obj), &warnings))
}

fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
    let mut e = ApiError::new(409, "Conflict", managed::conflict_message(conflicts));
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {:?} using {}", c.manager, c.api_version), "field": c.field}))
        .collect();
    e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}));
    e
}

/// `PUT`/`PATCH …/scale`: changes `spec.replicas` of the parent.
async fn write_scale(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
    ct: &str,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let is_patch = ct.contains("patch");
    let body_v = decode(body, if is_patch { "application/json" } else { ct })?;
    crate::write::update(
        state,
        rt,
        ns,
        name,
        |cur| {
            let mut sc = scale_of(rt, cur);
            if is_patch {
                // A Scale has no list fields: strategic merge is a merge patch.
                apply_patch(&mut sc, ct, &body_v)?;
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
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("Scale.autoscaling {name:?} is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
                ));
            }
            let mut n = cur.clone();
            set_pointer(&mut n, &scale_paths(rt).0, json!(replicas));
            if let Some(m) = n["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(n)
        },
        opts,
    )
    .await
}

/// `POST pods/{name}/binding`: sets `spec.nodeName` once and records
/// `PodScheduled=True`.
async fn bind(state: &State, rt: &ResourceType, ns: Option<&str>, name: &str, body: &[u8], ctype: &str, opts: &WriteOptions) -> Result<(), ApiError> {
    let binding = decode(body, ctype)?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(rt, name, vec![skiff_api::FieldError::required("target.name", "")]));
    }
    crate::write::update(
        state,
        rt,
        ns,
        name,
        |cur| {
            if let Some(have) = cur.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict_with(rt, name, &format!("pod {name} is already assigned to node {have:?}")));
            }
            if cur.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
                return Err(ApiError::conflict_with(rt, name, "pod is being deleted, cannot be assigned to a host"));
            }
            let mut n = cur.clone();
            n["spec"]["nodeName"] = json!(node);
            let mut conds: Vec<Value> = n.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
            n["status"]["conditions"] = json!(conds);
            if let Some(m) = n["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(n)
        },
        opts,
    )
    .await?;
    Ok(())
}

/// Where a scalable type keeps its desired and current replicas and its
/// selector (JSON pointers): a CRD's `scale` subresource names them.
fn scale_paths(rt: &ResourceType) -> (String, String, Option<String>) {
    match rt.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(p) => (p.spec_replicas.clone(), p.status_replicas.clone(), p.label_selector.clone()),
        None => ("/spec/replicas".into(), "/status/replicas".into(), None),
    }
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut at = obj;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, p) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        if i + 1 == parts.len() {
            at[*p] = value;
            return;
        }
        at = &mut at[*p];
    }
}

/// The `autoscaling/v1` `Scale` view of a scalable object.
fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
    let (spec, status, selector_path) = scale_paths(rt);
    let selector = match selector_path {
        // A custom resource's selector is kept serialized already.
        Some(p) => obj.pointer(&p).and_then(Value::as_str).unwrap_or_default().to_string(),
        None => match obj.pointer("/spec/selector") {
            // A ReplicationController's selector is a plain map of labels.
            Some(s) if rt.kind == "ReplicationController" => LabelSelector::from_label_selector(&json!({"matchLabels": s})).ok(),
            Some(s) if rt.custom.is_none() => LabelSelector::from_label_selector(s).ok(),
            _ => None,
        }
        .map(|s| s.to_string())
        .unwrap_or_default(),
    };
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj.pointer(&spec).cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer(&status).cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

pub(crate) async fn read_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Past the limit the rest is read and dropped (up to this much), so
    /// the client, still sending, can read the 413 instead of a reset.
    const DRAIN: usize = 64 * 1024 * 1024;
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if seen > MAX_BODY + DRAIN {
                break;
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(buf.freeze())
}

fn decode(body: &[u8], ctype: &str) -> Result<Value, ApiError> {
    let ct = ctype.split(';').next().unwrap_or_default().trim();
    let v: Value = if ct == "application/vnd.kubernetes.protobuf" {
        skiff_api::protobuf::decode(body).map_err(ApiError::bad_request)?
    } else if ct.contains("yaml") {
        skiff_api::yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    Ok(v)
}
