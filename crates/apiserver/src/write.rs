//! Writes: create, update (put, patch, subresources) and delete.

use serde_json::{json, Value};
use skiff_api::admissionregistration::Operation;
use skiff_api::{defaults, managed, validation, ApiError, ResourceType};
use skiff_store::StoreError;

use crate::handler::State;
use crate::respond::{json_response, now, store_err, with_rv, with_warnings, Resp};

/// Which parts of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource: everything but status.
    Main,
    /// The status subresource: status only.
    Status,
    /// Server-internal writes that set both (pods/binding).
    All,
    /// `namespaces/{n}/finalize`: `spec.finalizers` only.
    Finalize,
    /// `pods/{n}/ephemeralcontainers`: `spec.ephemeralContainers` only.
    EphemeralContainers,
}

/// What to do with fields the type does not declare (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Refuse the request (400).
    Strict,
    /// Drop them and say so in `Warning` headers (the default).
    Warn,
    /// Drop them silently.
    Ignore,
}

/// Decodes through the Rust type (type errors are 400s) and checks
/// apiVersion/kind and the namespace against the URL.
fn normalize(rt: &ResourceType, ns: Option<&str>, mut obj: Value, validation: FieldValidation, warnings: &mut Vec<String>) -> Result<Value, ApiError> {
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
    let mut v =
        (rt.normalize)(obj).map_err(|e| ApiError::bad_request(format!("{} in version {:?} cannot be handled as a {}: {e}", rt.kind, rt.version, rt.kind)))?;
    let mut unknown = Vec::new();
    unknown_fields(&input, &v, "", &mut unknown);
    // A custom resource keeps what its schema declares (kube's pruning).
    if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        skiff_api::apiextensions::schema::prune(&mut v, schema, "", true, &mut unknown);
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
        match validation {
            FieldValidation::Strict => {
                // kube's transformDecodeError wording.
                return Err(ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                    rt.kind,
                    rt.version,
                    rt.kind,
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => warnings.extend(list),
            FieldValidation::Ignore => {}
        }
    }
    if let Some(ns) = ns {
        v["metadata"]["namespace"] = json!(ns);
    }
    Ok(v)
}

/// NamespaceLifecycle: no new objects in a namespace that is missing or
/// terminating. As kube's plugin, the watch cache answers first (no store
/// round trip per create, which over etcd is a quorum read); a namespace the
/// cache does not hold yet (made a moment ago, perhaps through another
/// server) is looked up in the store.
async fn ensure_namespace(state: &State, ns: Option<&str>) -> Result<(), ApiError> {
    let Some(ns) = ns else { return Ok(()) };
    let nrt = skiff_api::registry::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
    let key = nrt.key(None, ns);
    let v: Value = match state.cache.get(nrt, &key) {
        Some(cached) => cached.object(),
        None => {
            let kv = state.store.get(&key).await.map_err(crate::respond::store_unavailable)?.ok_or_else(|| ApiError::not_found(nrt, ns))?;
            serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?
        }
    };
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

pub(crate) fn random_suffix() -> String {
    // Kubernetes' alphabet for generated names: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes().iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// How a write was asked for.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    /// `fieldManager` (or the client's user agent).
    pub(crate) manager: String,
    /// `dryRun=All`: validate and answer, store nothing.
    pub(crate) dry_run: bool,
    /// What to do with unknown fields.
    pub(crate) validation: FieldValidation,
    /// Which parts the write may change.
    pub(crate) scope: Scope,
    /// Server-side apply: `managedFields` were computed by the apply.
    pub(crate) apply: bool,
    /// Who writes (RBAC objects are checked against what they hold).
    pub(crate) user: skiff_api::rbac::UserInfo,
}

impl WriteOptions {
    /// A write the API server makes itself (its in-process controllers),
    /// as `system:apiserver`.
    pub(crate) fn server(scope: Scope) -> Self {
        Self {
            manager: "kube-apiserver".into(),
            dry_run: false,
            validation: FieldValidation::Ignore,
            scope,
            apply: false,
            user: skiff_api::rbac::UserInfo { name: "system:apiserver".into(), groups: vec!["system:masters".into()], ..Default::default() },
        }
    }
}

/// A write the API server makes itself: `edit` changes the next state of
/// the stored object (given as it is stored); lost races are retried.
pub(crate) async fn server_update(
    state: &State,
    rt: &ResourceType,
    name: &str,
    scope: Scope,
    edit: impl Fn(&Value, &mut Value),
) -> Result<(), ApiError> {
    let make = |cur: &Value| {
        let mut next = cur.clone();
        edit(cur, &mut next);
        if let Some(m) = next["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        Ok(next)
    };
    update(state, rt, None, name, make, &WriteOptions::server(scope)).await.map(|_| ())
}

/// Sets a condition of `type` in a status's conditions, keeping its
/// transition time while its status holds.
pub(crate) fn set_condition(conditions: &mut Vec<Value>, ty: &str, status: bool, reason: &str, message: &str) {
    let status = if status { "True" } else { "False" };
    if let Some(c) = conditions.iter_mut().find(|c| c["type"] == ty) {
        if c["status"] != status {
            c["lastTransitionTime"] = json!(now());
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        return;
    }
    conditions.push(json!({"type": ty, "status": status, "lastTransitionTime": now(), "reason": reason, "message": message}));
}

/// Writes that give up after this many lost compare-and-swap races (only
/// writes without a client precondition are retried, as GuaranteedUpdate does).
const CAS_RETRIES: usize = 16;

/// `POST` a new object.
pub(crate) async fn create(state: &State, rt: &ResourceType, ns: Option<&str>, obj: Value, opts: &WriteOptions) -> Result<Resp, ApiError> {
    if rt.custom.as_ref().is_some_and(|c| c.terminating) {
        return Err(ApiError::method_not_allowed_because("create not allowed while custom resource definition is terminating"));
    }
    let mut warnings = Vec::new();
    let mut obj = normalize(rt, ns, obj, opts.validation, &mut warnings)?;
    if rt.namespaced && ns.is_none() {
        return Err(ApiError::no_such_path());
    }
    let meta = obj.get_mut("metadata").and_then(Value::as_object_mut);
    let Some(meta) = meta else {
        return Err(ApiError::invalid(rt, "", vec![skiff_api::FieldError::required("metadata.name", "name or generateName is required")]));
    };
    if meta.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        if let Some(g) = meta.get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty()) {
            let name = format!("{g}{}", random_suffix());
            meta.insert("name".into(), json!(name));
        }
    }
    let mut strip = vec!["uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"];
    if !opts.apply {
        strip.push("managedFields");
    }
    for f in strip {
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
    defaults::apply_for(rt, &mut obj);
    if rt.kind == "Job" {
        crate::admission::job(&mut obj);
    }
    if rt.kind == "CertificateSigningRequest" {
        crate::admission::certificate_request(&mut obj, &opts.user);
    }
    // Admission counts quota usage from the watch cache: creates in a
    // namespace with quotas are serialized (through the store write) so two
    // never both take the last unit.
    let quota_ns = ns.filter(|n| crate::admission::quota::has_quota(state, n));
    let _counting = if quota_ns.is_some() && !opts.dry_run { Some(state.quota_lock.lock().await) } else { None };
    if quota_ns.is_some() {
        state.cache.wait_for(state.cache.store_revision().await?).await.map_err(crate::watch::cache_error)?;
    }
    let request = crate::admission::Request {
        rt,
        operation: Operation::Create,
        subresource: "",
        name: &name,
        namespace: ns,
        old: None,
        user: &opts.user,
        dry_run: opts.dry_run,
    };
    warnings.extend(crate::admission::mutate(state, &request, &mut obj).await?);
    crate::authz::escalation::check(&state.authorizer, &state.cache, &opts.user, rt, ns, &obj)?;
    if rt.kind == "Pod" {
        let qos = defaults::qos_class(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    let errs = validation::validate(rt, &obj, None);
    if !errs.is_empty() {
        return Err(ApiError::invalid(rt, &name, errs));
    }
    warnings.extend(crate::admission::validate(state, &request, &mut obj).await?);
    ensure_namespace(state, ns).await?;
    // Held until the Service is stored, so concurrent creates never share an IP.
    let _allocating = if rt.kind == "Service" && !opts.dry_run { Some(state.allocations.lock().await) } else { None };
    if rt.kind == "Service" {
        crate::admission::service(state, rt, &mut obj).await?;
    }
    if !opts.apply {
        let keys = skiff_api::apiextensions::list_keys_of(rt);
        skiff_api::patch::with_list_keys(keys, || managed::track_update(None, &mut obj, &opts.manager, &rt.api_version(), "", &now()));
    }
    if opts.dry_run {
        return Ok(with_warnings(json_response(201, &obj), &warnings));
    }
    let stored = crate::convert::stored(state, rt, &obj).await?;
    let kv = state.store.create(&rt.key(ns, &name), stored).await.map_err(|e| store_err(rt, &name, e))?;
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(with_warnings(json_response(201, &obj), &warnings))
}

/// `stringData` is write-only: merged into `data` (base64) on write.
pub(crate) fn secret_string_data(obj: &mut Value) {
    let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    if let Some(map) = sd.as_object() {
        for (k, v) in map {
            obj["data"][k] = json!(skiff_api::base64(v.as_str().unwrap_or_default().as_bytes()));
        }
    }
}

/// Whether an object being deleted has nothing left holding it.
fn finalized(rt: &ResourceType, obj: &Value) -> bool {
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    deleting && !has_finalizers(rt, obj)
}

fn has_finalizers(rt: &ResourceType, obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
        || (rt.kind == "Namespace" && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty()))
}

/// Reads the object, lets `make` propose its next state, and writes it if
/// it changed, guarded by the revision read. Lost races are retried when
/// the client set no `resourceVersion` precondition.
pub(crate) async fn update(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    make: impl Fn(&Value) -> Result<Value, ApiError>,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match update_once(state, rt, ns, name, &make, opts).await {
            Err(Retry::Lost) if attempt < CAS_RETRIES => continue,
            Err(Retry::Lost) => return Err(ApiError::conflict(rt, name)),
            Err(Retry::Fail(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
}

enum Retry {
    /// The compare-and-swap lost a race with another writer.
    Lost,
    /// A real error.
    Fail(ApiError),
}

impl From<ApiError> for Retry {
    fn from(e: ApiError) -> Self {
        Retry::Fail(e)
    }
}

/// Gives `to` the field `field` under `parent` (`""`, `/spec` or
/// `/metadata`) as `from` has it, or removes it where `from` has none.
fn keep_field(to: &mut Value, from: &Value, parent: &str, field: &str) {
    match from.pointer(parent).and_then(|p| p.get(field)) {
        Some(v) => {
            let place = if parent.is_empty() { &mut *to } else { &mut to[&parent[1..]] };
            place[field] = v.clone();
        }
        None => {
            if let Some(p) = to.pointer_mut(parent).and_then(Value::as_object_mut) {
                p.remove(field);
            }
        }
    }
}

async fn update_once(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    make: &impl Fn(&Value) -> Result<Value, ApiError>,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>), Retry> {
    let mut warnings = Vec::new();
    let key = rt.key(ns, name);
    let kv = state.store.get(&key).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    let old = crate::convert::served(state, rt, with_rv(&kv.value, kv.mod_revision)?).await?;
    let proposed = make(&old)?;
    let precondition = proposed.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|r| !r.is_empty()).map(String::from);
    if let Some(rv) = &precondition {
        if *rv != kv.mod_revision.to_string() {
            return Err(ApiError::conflict(rt, name).into());
        }
    }
    // Server-made writes (pods/binding) change known fields of an object
    // that was normalized when stored: no typed round trip needed.
    let mut new = if opts.scope == Scope::All { proposed } else { normalize(rt, ns, proposed, opts.validation, &mut warnings)? };
    if new.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request("the name of the object does not match the name on the URL").into());
    }
    // A subresource write changes its own field and nothing else.
    let own = match opts.scope {
        Scope::Status => Some(("", "status")),
        Scope::Finalize => Some(("/spec", "finalizers")),
        Scope::EphemeralContainers => Some(("/spec", "ephemeralContainers")),
        Scope::Main | Scope::All => None,
    };
    if let Some((parent, field)) = own {
        let request = std::mem::replace(&mut new, old.clone());
        keep_field(&mut new, &request, parent, field);
    }
    // Only the subresource adds ephemeral containers.
    if rt.kind == "Pod" && opts.scope != Scope::EphemeralContainers {
        keep_field(&mut new, &old, "/spec", "ephemeralContainers");
    }
    for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        keep_field(&mut new, &old, "/metadata", f);
    }
    if rt.status && matches!(opts.scope, Scope::Main | Scope::Finalize) {
        keep_field(&mut new, &old, "", "status");
    }
    if rt.kind == "Secret" {
        secret_string_data(&mut new);
    }
    defaults::apply_for(rt, &mut new);
    // Server-made writes (bindings, the CRD controllers') and writes that
    // finish a deletion are not admitted again.
    let request = crate::admission::Request {
        rt,
        operation: Operation::Update,
        subresource: match opts.scope {
            Scope::Status => "status",
            Scope::Finalize => "finalize",
            Scope::EphemeralContainers => "ephemeralcontainers",
            Scope::Main | Scope::All => "",
        },
        name,
        namespace: ns,
        old: Some(&old),
        user: &opts.user,
        dry_run: opts.dry_run,
    };
    let admitted = opts.scope != Scope::All;
    if admitted {
        warnings.extend(crate::admission::mutate(state, &request, &mut new).await?);
    }
    crate::authz::escalation::check(&state.authorizer, &state.cache, &opts.user, rt, ns, &new)?;
    let errs = validation::validate(rt, &new, Some(&old));
    if !errs.is_empty() {
        return Err(ApiError::invalid(rt, name, errs).into());
    }
    if admitted {
        warnings.extend(crate::admission::validate(state, &request, &mut new).await?);
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
    if !opts.apply {
        let sub = match opts.scope {
            Scope::Status => "status",
            Scope::EphemeralContainers => "ephemeralcontainers",
            _ => "",
        };
        let keys = skiff_api::apiextensions::list_keys_of(rt);
        skiff_api::patch::with_list_keys(keys, || managed::track_update(Some(&old), &mut new, &opts.manager, &rt.api_version(), sub, &now()));
    }
    let without_managed = |v: &Value| {
        let mut c = v.clone();
        if let Some(m) = c["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        c
    };
    if opts.dry_run {
        return Ok((new, warnings));
    }
    if without_managed(&new) == without_managed(&old) && !(opts.apply && new["metadata"]["managedFields"] != old["metadata"]["managedFields"]) {
        return Ok((old, warnings));
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    if finalized(rt, &new) {
        // The last finalizer is gone: the deletion completes now.
        let kv = state.store.delete(&key, Some(kv.mod_revision)).await.map_err(|e| cas(rt, name, e))?;
        new["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        return Ok((new, warnings));
    }
    let stored = crate::convert::stored(state, rt, &new).await?;
    let kv = state.store.update(&key, stored, kv.mod_revision).await.map_err(|e| match (e, &precondition) {
        (StoreError::Conflict { .. }, None) => Retry::Lost,
        (e, _) => Retry::Fail(store_err(rt, name, e)),
    })?;
    new["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok((new, warnings))
}

fn cas(rt: &ResourceType, name: &str, e: StoreError) -> Retry {
    match e {
        StoreError::Conflict { .. } => Retry::Lost,
        e => Retry::Fail(store_err(rt, name, e)),
    }
}

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOptions {
    /// `Background`, `Foreground` or `Orphan`.
    pub(crate) propagation: Option<String>,
    /// Grace period for pods.
    pub(crate) grace_period: Option<i64>,
    /// `preconditions.uid`.
    pub(crate) uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub(crate) resource_version: Option<String>,
    /// `dryRun: ["All"]`.
    pub(crate) dry_run: bool,
    /// Who deletes (admission sees it).
    pub(crate) user: skiff_api::rbac::UserInfo,
}

impl DeleteOptions {
    /// Reads the options from a `DeleteOptions` body and query parameters
    /// (the Python client sends them as parameters).
    pub(crate) fn parse(body: &[u8], q: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else if body.starts_with(skiff_api::protobuf::MAGIC) {
            // client-go (kubectl drain too) sends them as protobuf.
            skiff_api::protobuf::decode(body).map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        let mut o = Self {
            propagation: v.get("propagationPolicy").and_then(Value::as_str).map(String::from),
            grace_period: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            uid: v.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
            resource_version: v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from),
            dry_run: v.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|x| x == "All")),
            user: Default::default(),
        };
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation = Some(p.clone());
        }
        if let Some(g) = q.get("gracePeriodSeconds") {
            o.grace_period = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?);
        }
        if q.get("dryRun").is_some_and(|d| d == "All") {
            o.dry_run = true;
        }
        if let Some(p) = &o.propagation {
            if !matches!(p.as_str(), "Background" | "Foreground" | "Orphan") {
                return Err(ApiError::new(422, "Invalid", format!("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"")));
            }
        }
        if o.grace_period.is_some_and(|g| g < 0) {
            return Err(ApiError::new(
                422,
                "Invalid",
                "DeleteOptions.meta.k8s.io \"\" is invalid: gracePeriodSeconds: Invalid value: must be >= 0".to_string(),
            ));
        }
        Ok(o)
    }
}

/// `DELETE` one object; true when it is gone (rather than marked). Finalizers (and the `foregroundDeletion`/`orphan`
/// finalizers the propagation policy adds) keep it, marked with a
/// `deletionTimestamp`, until their controllers remove them; a pod on an
/// existing node is deleted gracefully so its kubelet can stop it.
pub(crate) async fn delete(state: &State, rt: &ResourceType, ns: Option<&str>, name: &str, opts: &DeleteOptions) -> Result<(bool, Value), ApiError> {
    for _ in 0..CAS_RETRIES {
        match delete_once(state, rt, ns, name, opts).await {
            Err(Retry::Lost) => continue,
            Err(Retry::Fail(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
    Err(ApiError::conflict(rt, name))
}

async fn delete_once(state: &State, rt: &ResourceType, ns: Option<&str>, name: &str, opts: &DeleteOptions) -> Result<(bool, Value), Retry> {
    let key = rt.key(ns, name);
    let kv = state.store.get(&key).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    let mut obj = crate::convert::served(state, rt, with_rv(&kv.value, kv.mod_revision)?).await?;
    if let Some(uid) = &opts.uid {
        let have = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        if uid != have {
            return Err(ApiError::conflict_with(rt, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")).into());
        }
    }
    if let Some(rv) = &opts.resource_version {
        if *rv != kv.mod_revision.to_string() {
            return Err(ApiError::conflict_with(
                rt,
                name,
                &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", kv.mod_revision),
            )
            .into());
        }
    }
    // A CRD's objects go before it does (kube's REST Delete adds this).
    let is_crd = rt.group == skiff_api::apiextensions::GROUP && rt.kind == "CustomResourceDefinition";
    if is_crd && skiff_api::apiextensions::condition(&obj, "Established") {
        let mut fins = obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        if !fins.iter().any(|f| f == skiff_api::apiextensions::CLEANUP_FINALIZER) {
            fins.push(json!(skiff_api::apiextensions::CLEANUP_FINALIZER));
            obj["metadata"]["finalizers"] = json!(fins);
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
        let request = crate::admission::Request {
            rt,
            operation: Operation::Delete,
            subresource: "",
            name,
            namespace: ns,
            old: Some(&obj),
            user: &opts.user,
            dry_run: opts.dry_run,
        };
        crate::admission::validate_delete(state, &request).await?;
    }
    let policy_finalizer = match opts.propagation.as_deref() {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    let graceful_pod = rt.kind == "Pod" && is_graceful_pod(state, &obj, opts).await;
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    if !has_finalizers(rt, &obj) && policy_finalizer.is_none() && !graceful_pod {
        if !opts.dry_run {
            let rev = state.store.delete(&key, Some(kv.mod_revision)).await.map_err(|e| cas(rt, name, e))?;
            obj["metadata"]["resourceVersion"] = json!(rev.mod_revision.to_string());
        }
        return Ok((true, obj));
    }
    let mut changed = false;
    if let Some(f) = policy_finalizer {
        let fins = obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        if !fins.iter().any(|x| x == f) {
            let mut fins: Vec<Value> = fins.into_iter().filter(|x| x != "foregroundDeletion" && x != "orphan").collect();
            fins.push(json!(f));
            obj["metadata"]["finalizers"] = json!(fins);
            changed = true;
        }
    }
    if graceful_pod {
        let grace = opts.grace_period.or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30);
        let current = obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
        // A shorter grace period may replace a longer one, never the reverse.
        if current.is_none_or(|c| grace < c) {
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            obj["metadata"]["deletionTimestamp"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            changed = true;
        }
        if grace == 0 && !has_finalizers(rt, &obj) {
            // Force deletion: gone now.
            if !opts.dry_run {
                let rev = state.store.delete(&key, Some(kv.mod_revision)).await.map_err(|e| cas(rt, name, e))?;
                obj["metadata"]["resourceVersion"] = json!(rev.mod_revision.to_string());
            }
            return Ok((true, obj));
        }
    } else if !deleting {
        obj["metadata"]["deletionTimestamp"] = json!(now());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        changed = true;
    }
    if rt.kind == "Namespace" && obj.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        obj["status"]["phase"] = json!("Terminating");
        changed = true;
    }
    if changed && !opts.dry_run {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let stored = crate::convert::stored(state, rt, &obj).await?;
        let kv = state.store.update(&key, stored, kv.mod_revision).await.map_err(|e| cas(rt, name, e))?;
        obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    }
    Ok((false, obj))
}

/// A pod is deleted gracefully when it is bound to a node that exists
/// (whose kubelet will stop it and then delete it for good).
async fn is_graceful_pod(state: &State, pod: &Value, opts: &DeleteOptions) -> bool {
    if opts.grace_period == Some(0) && pod.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
        return false;
    }
    if pod.pointer("/status/phase").and_then(Value::as_str).is_some_and(|p| p == "Succeeded" || p == "Failed") {
        return false;
    }
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else { return false };
    let Some(nodes) = skiff_api::registry::find("", "v1", "nodes") else { return false };
    matches!(state.store.get(&nodes.key(None, node)).await, Ok(Some(_)))
}
