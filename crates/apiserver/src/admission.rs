//! Admission: the chain of named plugins every create passes after
//! defaulting, in kube-apiserver's order ([`MUTATING`]), and what its
//! registry strategies add: a Job's generated selector and labels, and a
//! Service's cluster IP and node ports, allocated from the service CIDR
//! (`--service-cidr`, 10.43.0.0/16 by default as k3s) and 30000–32767.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, FieldError, ResourceType};

use crate::handler::State;

pub(crate) mod policy;
pub(crate) mod quota;
pub(crate) mod webhook;
use skiff_api::admissionregistration::Operation;
use skiff_api::rbac::UserInfo;
pub(crate) use webhook::Request;

/// Addresses at the start of the service range that are never handed out
/// at random: `.1` is the `kubernetes` Service's, `.10` the cluster DNS's.
const RESERVED: u32 = 11;
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Who asks for a write, and the warnings admission has for them.
pub(crate) struct Asker<'a> {
    /// The requester.
    pub(crate) user: &'a UserInfo,
    /// `Warning` headers of the answer.
    pub(crate) warnings: std::cell::RefCell<Vec<String>>,
}

/// One built-in admission plugin: it may change the object (mutating
/// plugins), or refuse it; it sees who asks. They look at creates.
type Plugin = fn(&State, &ResourceType, &str, &mut Value, &Asker) -> Result<(), ApiError>;

/// One link of the admission chain.
enum Step {
    /// A built-in plugin.
    Plugin(Plugin),
    /// The mutating admission webhooks.
    MutatingWebhooks,
    /// The ValidatingAdmissionPolicies (CEL) and their bindings.
    Policies,
    /// The validating admission webhooks.
    ValidatingWebhooks,
}

/// The mutating links, in kube-apiserver's order.
const MUTATING: &[(&str, Step)] = &[
    ("LimitRanger", Step::Plugin(|state, rt, name, obj, _| quota::limit_ranger(state, rt, name, obj))),
    ("ServiceAccount", Step::Plugin(service_account)),
    ("Priority", Step::Plugin(priority)),
    ("DefaultTolerationSeconds", Step::Plugin(default_toleration_seconds)),
    ("DefaultStorageClass", Step::Plugin(default_storage_class)),
    ("StorageObjectInUseProtection", Step::Plugin(storage_object_in_use_protection)),
    ("RuntimeClass", Step::Plugin(runtime_class)),
    ("DefaultIngressClass", Step::Plugin(default_ingress_class)),
    ("MutatingAdmissionWebhook", Step::MutatingWebhooks),
];

/// The validating links, in kube-apiserver's order.
const VALIDATING: &[(&str, Step)] = &[
    ("NodeRestriction", Step::Plugin(node_restriction)),
    ("PodSecurity", Step::Plugin(pod_security)),
    ("ValidatingAdmissionPolicy", Step::Policies),
    ("ValidatingAdmissionWebhook", Step::ValidatingWebhooks),
    ("ResourceQuota", Step::Plugin(|state, rt, name, obj, _| quota::resource_quota(state, rt, name, obj))),
];

/// Runs one built-in plugin, with the warnings it has.
fn run_plugin(state: &State, plugin: Plugin, name: &str, req: &Request<'_>, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let asker = Asker { user: req.user, warnings: std::cell::RefCell::new(Vec::new()) };
    plugin(state, req.rt, req.name, obj, &asker).inspect_err(|_| tracing::debug!(plugin = name, kind = req.rt.kind, name = req.name, "refused by admission"))?;
    Ok(asker.warnings.into_inner())
}

/// Runs the links of one phase on an object about to be written.
async fn run(state: &State, steps: &[(&str, Step)], req: &Request<'_>, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    for (name, step) in steps {
        match step {
            Step::Plugin(p) if req.operation == Operation::Create => warnings.extend(run_plugin(state, *p, name, req, obj)?),
            Step::Plugin(_) => {}
            Step::MutatingWebhooks => warnings.extend(webhook::mutate(state, req, obj).await?),
            Step::Policies => warnings.extend(policy::validate(state, req, Some(obj))?),
            Step::ValidatingWebhooks => warnings.extend(webhook::validate(state, req, Some(obj)).await?),
        }
    }
    Ok(warnings)
}

/// The mutating half of the chain, before the object is validated.
/// Returns the warnings.
pub(crate) async fn mutate(state: &State, req: &Request<'_>, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    run(state, MUTATING, req, obj).await
}

/// The validating half, after the object is validated.
pub(crate) async fn validate(state: &State, req: &Request<'_>, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    run(state, VALIDATING, req, obj).await
}

/// What a delete passes: the policies and validating webhooks, with the
/// object as `oldObject`.
pub(crate) async fn validate_delete(state: &State, req: &Request<'_>) -> Result<Vec<String>, ApiError> {
    namespace_lifecycle_delete(req)?;
    let mut warnings = policy::validate(state, req, None)?;
    warnings.extend(webhook::validate(state, req, None).await?);
    Ok(warnings)
}

/// NamespaceLifecycle on deletes: the namespaces every cluster needs
/// (kube's immortal ones) cannot be deleted.
fn namespace_lifecycle_delete(req: &Request<'_>) -> Result<(), ApiError> {
    const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];
    if req.rt.group.is_empty() && req.rt.plural == "namespaces" && req.subresource.is_empty() && IMMORTAL.contains(&req.name) {
        return Err(ApiError::forbidden(format!("namespaces \"{}\" is forbidden: this namespace may not be deleted", req.name)));
    }
    Ok(())
}

/// PodSecurity: a namespace's `pod-security.kubernetes.io/enforce` level
/// refuses pods that break it; `warn` (and `audit`, here a warning too)
/// answers `Warning` headers, for pods and for the pod templates of
/// workloads, as kube's plugin does. Levels are held to the latest checks.
fn pod_security(state: &State, rt: &ResourceType, name: &str, obj: &mut Value, asker: &Asker) -> Result<(), ApiError> {
    use skiff_api::pod_security::{check, label, message, Level};
    let (spec, meta) = match rt.kind {
        "Pod" => (obj.get("spec"), obj.get("metadata")),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" | "PodTemplate" => {
            (obj.pointer("/spec/template/spec").or_else(|| obj.pointer("/template/spec")), obj.pointer("/spec/template/metadata"))
        }
        "CronJob" => (obj.pointer("/spec/jobTemplate/spec/template/spec"), obj.pointer("/spec/jobTemplate/spec/template/metadata")),
        _ => return Ok(()),
    };
    let Some(spec) = spec else { return Ok(()) };
    let meta = meta.cloned().unwrap_or(Value::Null);
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
    let Some(nsrt) = skiff_api::registry::find("", "v1", "namespaces") else { return Ok(()) };
    let key = nsrt.key(None, &ns);
    let snap = state.cache.list(nsrt, &key, &LabelSelector::default(), &FieldSelector::default(), 0);
    let Some(namespace) = snap.items.iter().find(|o| o.key == key).map(|o| o.object()) else { return Ok(()) };
    let labels = namespace.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
    let level_of = |mode: &str| labels.get(label(mode)).and_then(Value::as_str).and_then(Level::parse);
    let version_of = |mode: &str| labels.get(format!("{}-version", label(mode))).and_then(Value::as_str).unwrap_or("latest").to_string();
    if rt.kind == "Pod" {
        if let Some(level) = level_of("enforce") {
            let v = check(level, spec, &meta);
            if !v.is_empty() {
                let mut e = ApiError::forbidden(format!("pods {name:?} is forbidden: violates PodSecurity {}", message(level, &version_of("enforce"), &v)));
                e.details = Some(json!({"name": name, "kind": "pods"}));
                return Err(e);
            }
        }
    }
    let mut warned = Vec::new();
    for mode in ["warn", "audit"] {
        let Some(level) = level_of(mode) else { continue };
        if warned.contains(&level) {
            continue;
        }
        let v = check(level, spec, &meta);
        if !v.is_empty() {
            warned.push(level);
            asker.warnings.borrow_mut().push(format!("would violate PodSecurity {}", message(level, &version_of(mode), &v)));
        }
    }
    Ok(())
}

/// NodeRestriction: a kubelet creates only its own Node, and only mirror
/// pods bound to itself (the Node authorizer limits its other writes).
fn node_restriction(_: &State, rt: &ResourceType, name: &str, obj: &mut Value, asker: &Asker) -> Result<(), ApiError> {
    let Some(node) = crate::authz::node::node_name(asker.user) else { return Ok(()) };
    let refuse = |why: String| {
        let mut e = ApiError::forbidden(format!("{} {name:?} is forbidden: {why}", rt.qualified()));
        e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        e
    };
    match rt.kind {
        "Node" if name != node => Err(refuse(format!("node {node:?} is not allowed to modify node {name:?}"))),
        "Pod" => {
            let mirror = obj.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some();
            if !mirror {
                return Err(refuse(format!("pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods")));
            }
            if obj.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
                return Err(refuse(format!("node {node:?} can only create pods with spec.nodeName set to itself")));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Where the ServiceAccount admission plugin mounts the API credentials.
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// ServiceAccount: a pod runs as `default` unless it names another, and
/// gets the API's credentials (a projected `kube-api-access-*` volume: a
/// token bound to it, the cluster CA as `ca.crt`, its namespace) mounted
/// read-only in every container, unless the pod or its ServiceAccount
/// says `automountServiceAccountToken: false` or something is mounted there
/// already. (kube also refuses a pod whose ServiceAccount does not exist
/// yet; skiff admits it, and its kubelet waits for the account instead.)
fn service_account(state: &State, rt: &ResourceType, _: &str, pod: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "Pod" || !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let spec = &mut pod["spec"];
    let sa = match spec.get("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(n) => n.to_string(),
        None => spec.get("serviceAccount").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("default").to_string(),
    };
    spec["serviceAccountName"] = json!(sa);
    spec["serviceAccount"] = json!(sa);
    let pod_says = spec.get("automountServiceAccountToken").and_then(Value::as_bool);
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
    let account_says = skiff_api::registry::find("", "v1", "serviceaccounts").and_then(|sart| {
        let snap = state.cache.list(sart, &sart.key(Some(&ns), &sa), &LabelSelector::default(), &FieldSelector::default(), 0);
        snap.items
            .iter()
            .map(|o| o.object())
            .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(sa.as_str()))
            .and_then(|o| o.get("automountServiceAccountToken").and_then(Value::as_bool))
    });
    if pod_says.or(account_says) == Some(false) {
        return Ok(());
    }
    let spec = &mut pod["spec"];
    let containers = ["initContainers", "containers", "ephemeralContainers"];
    let mounted = containers.iter().flat_map(|c| spec.get(*c).and_then(Value::as_array).into_iter().flatten()).any(|c| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m.get("mountPath").and_then(Value::as_str).map(|p| p.trim_end_matches('/')) == Some(SERVICE_ACCOUNT_MOUNT)))
    });
    if mounted {
        return Ok(());
    }
    let volume = format!("kube-api-access-{}", crate::write::random_suffix());
    let projected = json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}});
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(v) => v.push(projected),
        None => spec["volumes"] = json!([projected]),
    }
    for c in containers {
        for container in spec.get_mut(c).and_then(Value::as_array_mut).into_iter().flatten() {
            let mount = json!({"name": volume, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT});
            match container.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(m) => m.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
        }
    }
    Ok(())
}

/// The PriorityClasses every cluster has (kube-apiserver creates them).
pub(crate) const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

/// Priority: a pod's `priorityClassName` (or the global default class)
/// becomes its `priority` and `preemptionPolicy`; a class that does not
/// exist, or a priority the pod set itself, is refused with 403.
fn priority(state: &State, rt: &ResourceType, name: &str, pod: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "Pod" {
        return Ok(());
    }
    let Some(pcs) = skiff_api::registry::find("scheduling.k8s.io", "v1", "priorityclasses") else { return Ok(()) };
    let classes: Vec<Value> =
        state.cache.list(pcs, &pcs.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|o| o.object()).collect();
    let wanted = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default().to_string();
    let class = if wanted.is_empty() {
        classes.iter().find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
    } else {
        let found = classes.iter().find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(wanted.as_str()));
        if found.is_none() {
            return Err(ApiError::forbidden(format!("pods \"{name}\" is forbidden: no PriorityClass with name {wanted} was found")));
        }
        found
    };
    let (value, policy) = match class {
        Some(c) => (c.get("value").and_then(Value::as_i64).unwrap_or(0), c.get("preemptionPolicy").cloned().unwrap_or(json!("PreemptLowerPriority"))),
        None => (0, json!("PreemptLowerPriority")),
    };
    // Defaulting filled in 0; a pod that set another value itself is refused.
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64).filter(|g| *g != 0 && *g != value) {
        return Err(ApiError::forbidden(format!(
            "pods \"{name}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some(c) = class {
        pod["spec"]["priorityClassName"] = c["metadata"]["name"].clone();
    }
    pod["spec"]["priority"] = json!(value);
    pod["spec"]["preemptionPolicy"] = policy;
    Ok(())
}

/// kube-apiserver's DefaultTolerationSeconds admission: every pod tolerates
/// a not-ready or unreachable node for a while before it is evicted.
fn default_toleration_seconds(state: &State, rt: &ResourceType, _name: &str, pod: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "Pod" {
        return Ok(());
    }
    let (not_ready, unreachable) = state.toleration_seconds;
    let mut tols: Vec<Value> = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    for (key, secs) in [("node.kubernetes.io/not-ready", not_ready), ("node.kubernetes.io/unreachable", unreachable)] {
        let covered = tols.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
            (k == key || (k.is_empty() && exists)) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            tols.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
        }
    }
    pod["spec"]["tolerations"] = json!(tols);
    Ok(())
}

/// StorageObjectInUseProtection: every claim gets the
/// `kubernetes.io/pvc-protection` finalizer, so a claim deleted while a pod
/// uses it stays (Terminating) until no pod does.
fn storage_object_in_use_protection(_: &State, rt: &ResourceType, _: &str, obj: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "PersistentVolumeClaim" {
        return Ok(());
    }
    let fin = json!(skiff_api::storage::PVC_PROTECTION_FINALIZER);
    match obj.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
        Some(f) if f.contains(&fin) => {}
        Some(f) => f.push(fin),
        None => obj["metadata"]["finalizers"] = json!([fin]),
    }
    Ok(())
}

/// A claim that names no class gets the default StorageClass, as the
/// DefaultStorageClass admission plugin does (the newest one when several
/// are marked default). An explicit `""` asks for no class and is kept.
fn default_storage_class(state: &State, rt: &ResourceType, _: &str, obj: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "PersistentVolumeClaim" || !obj.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    if obj.pointer("/spec/storageClassName").is_some_and(|c| !c.is_null()) {
        return Ok(());
    }
    if let Some(name) = newest_default(state, "storage.k8s.io", "storageclasses", skiff_api::storage::DEFAULT_CLASS_ANNOTATION) {
        obj["spec"]["storageClassName"] = json!(name);
    }
    Ok(())
}

/// A pod naming a RuntimeClass gets its overhead and scheduling (node
/// selector and tolerations), as kube's RuntimeClass admission plugin
/// gives them; a RuntimeClass that does not exist refuses the pod.
fn runtime_class(state: &State, rt: &ResourceType, name: &str, pod: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "Pod" {
        return Ok(());
    }
    let Some(class_name) = pod.pointer("/spec/runtimeClassName").and_then(Value::as_str).filter(|c| !c.is_empty()).map(String::from) else { return Ok(()) };
    let refuse = |why: String| ApiError::forbidden(format!("pods \"{name}\" is forbidden: pod rejected: {why}"));
    let classes = skiff_api::registry::find("node.k8s.io", "v1", "runtimeclasses").ok_or_else(ApiError::no_such_path)?;
    let snap = state.cache.list(classes, &classes.key(None, &class_name), &LabelSelector::default(), &FieldSelector::default(), 0);
    let Some(class) = snap.items.iter().map(|o| o.object()).find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(class_name.as_str())) else {
        return Err(refuse(format!("RuntimeClass {class_name:?} not found")));
    };
    if let Some(overhead) = class.pointer("/overhead/podFixed") {
        match pod.pointer("/spec/overhead") {
            Some(given) if !given.is_null() && given != overhead => return Err(refuse("Pod's Overhead doesn't match RuntimeClass's defined Overhead".into())),
            _ => pod["spec"]["overhead"] = overhead.clone(),
        }
    }
    if let Some(selector) = class.pointer("/scheduling/nodeSelector").and_then(Value::as_object) {
        for (k, v) in selector {
            match pod.pointer(&format!("/spec/nodeSelector/{}", k.replace('~', "~0").replace('/', "~1"))) {
                Some(have) if have != v => {
                    return Err(refuse(format!("conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}", v.as_str().unwrap_or_default(), have.as_str().unwrap_or_default())));
                }
                _ => pod["spec"]["nodeSelector"][k] = v.clone(),
            }
        }
    }
    for t in class.pointer("/scheduling/tolerations").and_then(Value::as_array).into_iter().flatten() {
        let list = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        if !list.contains(t) {
            let mut list = list;
            list.push(t.clone());
            pod["spec"]["tolerations"] = Value::Array(list);
        }
    }
    Ok(())
}

/// An Ingress that names no class gets the default IngressClass (the
/// newest one when several are marked default), as the DefaultIngressClass
/// admission plugin does.
fn default_ingress_class(state: &State, rt: &ResourceType, _: &str, obj: &mut Value, _: &Asker) -> Result<(), ApiError> {
    if rt.kind != "Ingress" || obj.pointer("/spec/ingressClassName").is_some_and(|c| !c.is_null()) || !obj.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    if let Some(name) = newest_default(state, "networking.k8s.io", "ingressclasses", skiff_api::networking::DEFAULT_CLASS_ANNOTATION) {
        obj["spec"]["ingressClassName"] = json!(name);
    }
    Ok(())
}

/// The name of the newest object of `group/plural` annotated `annotation: "true"`.
fn newest_default(state: &State, group: &str, plural: &str, annotation: &str) -> Option<String> {
    let rt = skiff_api::registry::find(group, "v1", plural)?;
    let snap = state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
    snap.items
        .iter()
        .map(|o| o.object())
        .filter(|c| c.pointer("/metadata/annotations").and_then(|a| a.get(annotation)).and_then(Value::as_str) == Some("true"))
        .max_by_key(|c| c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default().to_string())
        .and_then(|c| c.pointer("/metadata/name").and_then(Value::as_str).map(String::from))
}

/// A Job without `manualSelector` selects its pods by its own uid.
pub(crate) fn job(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name});
    if let Some(l) = labels.as_object() {
        for (k, v) in l {
            obj["spec"]["template"]["metadata"]["labels"][k] = v.clone();
        }
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
}

/// A CertificateSigningRequest names who asked: the requester's user,
/// uid, groups and extra, whatever the body said (kube's strategy).
pub(crate) fn certificate_request(obj: &mut Value, user: &UserInfo) {
    let spec = &mut obj["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    match user.uid.is_empty() {
        true => {
            if let Some(s) = spec.as_object_mut() {
                s.remove("uid");
            }
        }
        false => spec["uid"] = json!(user.uid),
    }
    if user.extra.is_empty() {
        if let Some(s) = spec.as_object_mut() {
            s.remove("extra");
        }
    } else {
        spec["extra"] = user.extra.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>().into();
    }
    if let Some(s) = obj.get_mut("status").and_then(Value::as_object_mut) {
        s.clear();
    }
}

/// CertificateApproval and CertificateSigning: answering a request
/// (`approval`) takes the `approve` verb, and issuing its certificate
/// (`status`) the `sign` verb, on the `signers` resource named by the
/// request's signer (or its domain's wildcard, `example.com/*`).
pub(crate) fn certificate_signer(state: &State, user: &UserInfo, csr: &Value, sub: &str) -> Result<(), ApiError> {
    let verb = if sub == "approval" { "approve" } else { "sign" };
    let signer = csr.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or_default().to_string();
    let wildcard = signer.split_once('/').map(|(d, _)| format!("{d}/*")).unwrap_or_default();
    let may = |name: &str| {
        let a = skiff_api::rbac::Attributes {
            verb: verb.into(),
            resource_request: true,
            group: "certificates.k8s.io".into(),
            version: "v1".into(),
            resource: "signers".into(),
            name: name.into(),
            ..Default::default()
        };
        matches!(state.authorizer.authorize(&state.cache, user, &a), crate::authz::Decision::Allow(_))
    };
    if may(&signer) || may(&wildcard) {
        return Ok(());
    }
    let name = csr.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut e = ApiError::forbidden(format!(
        "certificatesigningrequests.certificates.k8s.io {name:?} is forbidden: user not permitted to {verb} requests with signerName {signer:?}"
    ));
    e.details = Some(json!({"name": name, "group": "certificates.k8s.io", "kind": "certificatesigningrequests"}));
    Err(e)
}

/// Cluster IPs and node ports in use, from the watch cache.
fn in_use(state: &State, rt: &ResourceType) -> (HashSet<String>, HashSet<i64>) {
    let snap = state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for o in snap.items {
        let v = o.object();
        for ip in v.pointer("/spec/clusterIPs").and_then(Value::as_array).into_iter().flatten().chain(v.pointer("/spec/clusterIP")) {
            if let Some(s) = ip.as_str() {
                ips.insert(s.to_string());
            }
        }
        for p in v.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                ports.insert(n);
            }
        }
        if let Some(n) = v.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64) {
            ports.insert(n);
        }
    }
    (ips, ports)
}

/// Gives a new Service its cluster IP and node ports. The caller holds
/// `state.allocations` until the Service is stored, so two creates never
/// get the same address (one API server; several would need a shared
/// allocator, as Kubernetes' IPAddress objects are).
pub(crate) async fn service(state: &State, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    state.cache.wait_for(state.cache.store_revision().await?).await.map_err(crate::watch::cache_error)?;
    let (ips, ports) = in_use(state, rt);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        match obj.pointer("/spec/clusterIP").and_then(Value::as_str) {
            Some("None") => obj["spec"]["clusterIPs"] = json!(["None"]),
            Some(ip) if !ip.is_empty() => {
                let parsed: Option<Ipv4Addr> = ip.parse().ok();
                let range = state.service_cidr;
                if parsed.is_none_or(|p| !range.contains(p)) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        vec![FieldError::invalid(
                            "spec.clusterIPs[0]",
                            ip,
                            format!("provided IP is not in the valid range. The range of valid IPs is {range}"),
                        )],
                    ));
                }
                if ips.contains(ip) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        vec![FieldError::invalid("spec.clusterIPs", ip, format!("failed to allocate IP {ip}: provided IP is already allocated"))],
                    ));
                }
                let ip = ip.to_string();
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            _ => {
                // Random, then linear: spreads addresses like the kube allocator.
                let range = state.service_cidr;
                // Neither the network nor the broadcast address, nor a reserved one.
                let usable = range.size() - RESERVED - 1;
                let start = (uuid::Uuid::new_v4().as_u128() as u32) % usable;
                let pick = (0..usable)
                    .map(|i| range.nth(RESERVED + (start + i) % usable).to_string())
                    .find(|ip| !ips.contains(ip))
                    .ok_or_else(|| ApiError::internal("the service IP range is full"))?;
                obj["spec"]["clusterIP"] = json!(pick);
                obj["spec"]["clusterIPs"] = json!([pick]);
            }
        }
        obj["spec"]["ipFamilies"] = json!(["IPv4"]);
        if obj.pointer("/spec/ipFamilyPolicy").is_none() {
            obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let mut taken = ports;
        let count = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
        for i in 0..count {
            let field = format!("spec.ports[{i}].nodePort");
            if let Some(n) = node_port(rt, &name, &field, obj["spec"]["ports"][i].get("nodePort").and_then(Value::as_i64), &mut taken)? {
                obj["spec"]["ports"][i]["nodePort"] = json!(n);
            }
        }
        // A LoadBalancer keeping traffic on the nodes with endpoints
        // (`externalTrafficPolicy: Local`) gets one more port, where each
        // node's proxy tells the load balancer whether it has any.
        let local = obj.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        if ty == "LoadBalancer" && local {
            let asked = obj.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).filter(|n| *n != 0);
            if let Some(n) = node_port(rt, &name, "spec.healthCheckNodePort", asked, &mut taken)? {
                obj["spec"]["healthCheckNodePort"] = json!(n);
            }
        } else if obj.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).is_some_and(|n| n != 0) {
            let n = obj.pointer("/spec/healthCheckNodePort").cloned().unwrap_or(Value::Null);
            return Err(ApiError::invalid(
                rt,
                &name,
                vec![FieldError::invalid("spec.healthCheckNodePort", n, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")],
            ));
        }
    }
    Ok(())
}

/// Checks a node port a Service asks for, or picks a free one (random,
/// then linear, as kube's allocator) when it asks for none: `Some` is a
/// port to write into the object.
fn node_port(rt: &ResourceType, name: &str, field: &str, asked: Option<i64>, taken: &mut HashSet<i64>) -> Result<Option<i64>, ApiError> {
    match asked {
        Some(n) if !NODE_PORTS.contains(&n) => Err(ApiError::invalid(
            rt,
            name,
            vec![FieldError::invalid(field, n, "provided port is not in the valid range. The range of valid ports is 30000-32767")],
        )),
        Some(n) if taken.contains(&n) => Err(ApiError::invalid(rt, name, vec![FieldError::invalid(field, n, "provided port is already allocated")])),
        Some(n) => {
            taken.insert(n);
            Ok(None)
        }
        None => {
            let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
            let start = (uuid::Uuid::new_v4().as_u128() % span as u128) as i64;
            let n = (0..span).map(|k| NODE_PORTS.start() + (start + k) % span).find(|n| !taken.contains(n)).ok_or_else(|| ApiError::internal("no free node port"))?;
            taken.insert(n);
            Ok(Some(n))
        }
    }
}
