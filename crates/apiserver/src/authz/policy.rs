//! The bootstrap policy at start, reconciled as kube-apiserver's RBAC
//! post-start hook does: missing roles and bindings are created; existing
//! ones annotated `rbac.authorization.kubernetes.io/autoupdate: "true"`
//! regain the rules, labels and subjects they lost (what users added stays);
//! `"false"` leaves them alone. Also skiff's own roles for the components
//! kube does not bootstrap (cluster DNS, the cloud controller).

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::rbac::bootstrap::{r, rn, BootstrapBinding, BootstrapRole, Rule, BINDINGS, ROLES};
use skiff_store::StoreError;

use crate::handler::State;
use crate::respond::now;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// skiff's components that kube leaves to add-ons, with the rules they use.
const SKIFF_ROLES: &[BootstrapRole] = &[
    BootstrapRole {
        name: "system:skiff-dns",
        namespace: None,
        labels: &[],
        rules: &[
            r(&["list", "watch"], &[""], &["services", "endpoints", "pods", "namespaces"]),
            r(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            r(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
        ],
        aggregate_from: &[],
    },
    // Publishing the `kube-dns` Service and its EndpointSlice.
    BootstrapRole {
        name: "system:skiff-dns",
        namespace: Some("kube-system"),
        labels: &[],
        rules: &[
            r(&["get", "create", "update", "patch"], &[""], &["services"]),
            r(&["get", "create", "update", "patch"], &["discovery.k8s.io"], &["endpointslices"]),
        ],
        aggregate_from: &[],
    },
    // What kube's controllers read through the manager's shared informers
    // (its role lists and watches everything); skiff's controllers watch
    // with their own clients, so their accounts read what the manager
    // reads. Writes stay each controller's own role's.
    BootstrapRole {
        name: "skiff:controller:informers",
        namespace: None,
        labels: &[],
        rules: &[r(&["get", "list", "watch"], &["*"], &["*"])],
        aggregate_from: &[],
    },
    // skiff's approver also approves a node's serving certificate for its
    // own name and addresses (kube leaves that to an external approver).
    BootstrapRole {
        name: "skiff:controller:certificate-controller:kubelet-serving",
        namespace: None,
        labels: &[],
        rules: &[rn(&["approve"], &["certificates.k8s.io"], &["signers"], &["kubernetes.io/kubelet-serving"])],
        aggregate_from: &[],
    },
    BootstrapRole {
        name: "system:cloud-controller-manager",
        namespace: None,
        labels: &[],
        rules: &[
            r(&["get", "list", "watch", "patch", "update"], &[""], &["nodes", "services"]),
            r(&["patch", "update"], &[""], &["nodes/status", "services/status"]),
            r(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            r(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
            r(&["get", "create", "update"], &["coordination.k8s.io"], &["leases"]),
        ],
        aggregate_from: &[],
    },
];

const SKIFF_BINDINGS: &[BootstrapBinding] = &[
    // skiff's endpoints controller writes Endpoints and EndpointSlices both
    // (kube splits them in two controllers).
    BootstrapBinding {
        name: "skiff:controller:endpoint-controller:endpointslices",
        namespace: None,
        role: ("ClusterRole", "system:controller:endpointslice-controller"),
        subjects: &[("ServiceAccount", "endpoint-controller", "kube-system")],
    },
    BootstrapBinding {
        name: "skiff:controller:certificate-controller:kubelet-serving",
        namespace: None,
        role: ("ClusterRole", "skiff:controller:certificate-controller:kubelet-serving"),
        subjects: &[("ServiceAccount", "certificate-controller", "kube-system")],
    },
    BootstrapBinding { name: "system:skiff-dns", namespace: None, role: ("ClusterRole", "system:skiff-dns"), subjects: &[("User", "system:skiff-dns", "")] },
    BootstrapBinding {
        name: "system:skiff-dns",
        namespace: Some("kube-system"),
        role: ("Role", "system:skiff-dns"),
        subjects: &[("User", "system:skiff-dns", "")],
    },
    BootstrapBinding {
        name: "system:cloud-controller-manager",
        namespace: None,
        role: ("ClusterRole", "system:cloud-controller-manager"),
        subjects: &[("User", "system:cloud-controller-manager", "")],
    },
];

/// A rule as JSON.
fn rule_json(rule: &Rule) -> Value {
    skiff_api::rbac::PolicyRule::from_bootstrap(rule).to_json()
}

fn metadata(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> Value {
    let mut m = json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}, "annotations": {AUTOUPDATE: "true"}});
    for (k, v) in labels {
        m["labels"][*k] = json!(v);
    }
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn role_object(role: &BootstrapRole) -> Value {
    let kind = if role.namespace.is_some() { "Role" } else { "ClusterRole" };
    let mut rules: Vec<Value> = role.rules.iter().map(rule_json).collect();
    // skiff's controllers write status with merge patches where kube's
    // update whole objects: a controller role's `update` comes with
    // `patch` (the same power over the same resources).
    if role.name.starts_with("system:controller:") {
        for r in &mut rules {
            let Some(verbs) = r.get_mut("verbs").and_then(Value::as_array_mut) else { continue };
            if verbs.iter().any(|v| v == "update") && !verbs.iter().any(|v| v == "patch" || v == "*") {
                verbs.push(json!("patch"));
            }
        }
    }
    let mut obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata(role.name, role.namespace, role.labels),
        "rules": rules});
    if !role.aggregate_from.is_empty() {
        let selectors: Vec<Value> = role.aggregate_from.iter().map(|(k, v)| json!({"matchLabels": {*k: v}})).collect();
        obj["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    }
    obj
}

fn binding_object(b: &BootstrapBinding) -> Value {
    let kind = if b.namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" };
    let subjects: Vec<Value> = b
        .subjects
        .iter()
        .map(|(kind, name, ns)| match *kind {
            "ServiceAccount" => json!({"kind": kind, "name": name, "namespace": ns}),
            _ => json!({"kind": kind, "name": name, "apiGroup": skiff_api::rbac::GROUP}),
        })
        .collect();
    let mut obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata(b.name, b.namespace, &[]),
        "roleRef": {"apiGroup": skiff_api::rbac::GROUP, "kind": b.role.0, "name": b.role.1}});
    if !subjects.is_empty() {
        obj["subjects"] = json!(subjects);
    }
    obj
}

/// Creates or repairs the bootstrap policy.
pub(crate) async fn reconcile(state: &State) -> Result<(), StoreError> {
    for role in ROLES.iter().chain(SKIFF_ROLES) {
        put(state, role_object(role), "rules").await?;
    }
    // Every controller account reads as the manager's informers do.
    let readers: Vec<Value> = BINDINGS
        .iter()
        .filter(|b| b.name.starts_with("system:controller:"))
        .flat_map(|b| b.subjects.iter())
        .filter(|(kind, _, _)| *kind == "ServiceAccount")
        .map(|(kind, name, ns)| json!({"kind": kind, "name": name, "namespace": ns}))
        .collect();
    let informers = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": metadata("skiff:controller:informers", None, &[]),
        "roleRef": {"apiGroup": skiff_api::rbac::GROUP, "kind": "ClusterRole", "name": "skiff:controller:informers"}, "subjects": readers});
    put(state, informers, "subjects").await?;
    for binding in BINDINGS.iter().chain(SKIFF_BINDINGS) {
        let obj = binding_object(binding);
        put(state, obj, "subjects").await?;
    }
    Ok(())
}

/// Stores `want`, or adds to the stored object what it lacks of `want`'s
/// labels and of its `list` field (rules or subjects).
async fn put(state: &State, mut want: Value, list: &str) -> Result<(), StoreError> {
    let kind = want["kind"].as_str().unwrap_or_default().to_string();
    let plural = format!("{}s", kind.to_lowercase());
    let Some(rt) = skiff_api::registry::find(skiff_api::rbac::GROUP, "v1", &plural) else { return Ok(()) };
    let name = want.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let ns = want.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
    let key = rt.key(ns.as_deref(), &name);
    match state.store.get(&key).await? {
        None => {
            want["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
            want["metadata"]["creationTimestamp"] = json!(now());
            skiff_api::defaults::apply(&kind, &mut want);
            match state.store.create(&key, Bytes::from(want.to_string())).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(kv) => {
            let Ok(mut have) = serde_json::from_slice::<Value>(&kv.value) else { return Ok(()) };
            if have.pointer(&format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1"))).and_then(Value::as_str) == Some("false") {
                return Ok(());
            }
            let before = have.clone();
            for (k, v) in want.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
                if have.pointer("/metadata/labels").and_then(|l| l.get(k)).is_none() {
                    have["metadata"]["labels"][k] = v.clone();
                }
            }
            // An aggregated role's rules belong to the aggregation controller.
            let aggregated = want.get("aggregationRule").is_some();
            if aggregated && have.get("aggregationRule") != want.get("aggregationRule") {
                have["aggregationRule"] = want["aggregationRule"].clone();
            }
            if !aggregated {
                let mut items = have.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
                for item in want.get(list).and_then(Value::as_array).into_iter().flatten() {
                    if !items.contains(item) {
                        items.push(item.clone());
                    }
                }
                if !items.is_empty() {
                    have[list] = json!(items);
                }
            }
            if have == before {
                return Ok(());
            }
            match state.store.update(&key, Bytes::from(have.to_string()), kv.mod_revision).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiff_roles_are_valid_and_bound() {
        for role in SKIFF_ROLES {
            let mut errs = Vec::new();
            skiff_api::rbac::validate_role(role.namespace.is_some(), &role_object(role), &mut errs);
            assert!(errs.is_empty(), "{}: {errs:?}", role.name);
        }
        for b in SKIFF_BINDINGS {
            let mut obj = binding_object(b);
            skiff_api::defaults::apply("ClusterRoleBinding", &mut obj);
            let mut errs = Vec::new();
            skiff_api::rbac::validate_binding(b.namespace.is_some(), &obj, &mut errs);
            assert!(errs.is_empty(), "{}: {errs:?}", b.name);
            let cluster = b.role.0 == "ClusterRole";
            assert!(SKIFF_ROLES.iter().chain(ROLES).any(|r| r.name == b.role.1 && r.namespace.is_none() == cluster && (cluster || r.namespace == b.namespace)));
        }
    }
}
