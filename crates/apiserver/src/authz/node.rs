//! The Node authorizer: a kubelet (`system:node:NAME` in `system:nodes`)
//! reads only the Secrets, ConfigMaps, claims and volumes of pods bound to
//! it, asks tokens only for their ServiceAccounts, writes only its own
//! Node, its own Lease and the pods bound to it; everything else it may do
//! is the `system:node` role's rules. Relationships are read from the
//! watch cache at the moment of the request (kube keeps a graph; the
//! answer is the same).

use serde_json::Value;
use skiff_api::rbac::{Attributes, PolicyRule, UserInfo};
use skiff_api::selector::{FieldSelector, LabelSelector};

use super::Decision;
use crate::cache::WatchCache;

/// The node a user is, if it is one.
pub(crate) fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (user.groups.iter().any(|g| g == "system:nodes") && !name.is_empty()).then_some(name)
}

/// The `system:node` role's rules, from the bootstrap policy.
pub(crate) fn rules() -> &'static [PolicyRule] {
    static RULES: std::sync::OnceLock<Vec<PolicyRule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        skiff_api::rbac::bootstrap::ROLES
            .iter()
            .filter(|r| r.name == "system:node" && r.namespace.is_none())
            .flat_map(|r| r.rules.iter())
            .chain(SKIFF_NODE_RULES.iter())
            .map(PolicyRule::from_bootstrap)
            .collect()
    })
}

/// What skiff's node does beyond kube's kubelet: its local-path volume
/// cleaner follows PersistentVolumes (k3s's provisioner runs as its own
/// pod with this permission), and a joined agent's service proxy, which
/// acts with the node's credentials (k3s hands agents a kube-proxy
/// certificate; skiff's join hands out one identity), follows
/// EndpointSlices as `system:node-proxier` does.
const SKIFF_NODE_RULES: &[skiff_api::rbac::bootstrap::Rule] = &[
    skiff_api::rbac::bootstrap::Rule { verbs: &["list", "watch"], groups: &[""], resources: &["persistentvolumes"], names: &[], urls: &[] },
    skiff_api::rbac::bootstrap::Rule { verbs: &["list", "watch"], groups: &["discovery.k8s.io"], resources: &["endpointslices"], names: &[], urls: &[] },
];

/// Decides a node's request.
pub(crate) fn authorize(cache: &WatchCache, user: &UserInfo, a: &Attributes) -> Decision {
    let Some(node) = node_name(user) else { return Decision::NoOpinion(String::new()) };
    let no_relationship = || Decision::NoOpinion(format!("no relationship found between node '{node}' and this object"));
    if a.resource_request {
        match (a.group.as_str(), a.resource.as_str()) {
            ("", "secrets" | "configmaps") => {
                if !matches!(a.verb.as_str(), "get" | "list" | "watch") || !a.subresource.is_empty() {
                    return Decision::NoOpinion("can only read resources of this type".to_string());
                }
                if a.name.is_empty() {
                    return Decision::NoOpinion("can only read namespaced object of this type".into());
                }
                return if pods_on(cache, node).iter().any(|p| references(p, &a.resource, &a.namespace, &a.name)) { allow() } else { no_relationship() };
            }
            ("", "persistentvolumeclaims") if a.verb == "get" && a.subresource.is_empty() => {
                return if pods_on(cache, node).iter().any(|p| references(p, "persistentvolumeclaims", &a.namespace, &a.name)) { allow() } else { no_relationship() };
            }
            ("", "persistentvolumes") if a.verb == "get" && a.subresource.is_empty() => {
                return if claims_on(cache, node).iter().any(|c| c.pointer("/spec/volumeName").and_then(Value::as_str) == Some(a.name.as_str())) {
                    allow()
                } else {
                    no_relationship()
                };
            }
            ("", "serviceaccounts") if a.subresource == "token" => {
                if a.verb != "create" {
                    return Decision::NoOpinion("can only create tokens for individual service accounts".into());
                }
                let uses = |p: &Value| {
                    p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(a.namespace.as_str())
                        && p.pointer("/spec/serviceAccountName").and_then(Value::as_str) == Some(a.name.as_str())
                };
                return if pods_on(cache, node).iter().any(uses) { allow() } else { no_relationship() };
            }
            ("coordination.k8s.io", "leases") => {
                if !matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") || a.namespace != "kube-node-lease" {
                    return Decision::NoOpinion("can only access node lease with the same name as the requesting node".into());
                }
                if a.verb != "create" && a.name != node {
                    return Decision::NoOpinion("can only access node lease with the same name as the requesting node".into());
                }
                return allow();
            }
            // Its own Node only (a create is checked by NodeRestriction
            // admission, which sees the object's name).
            ("", "nodes") if !matches!(a.verb.as_str(), "get" | "list" | "watch" | "create")
                && a.name != node => {
                    return Decision::NoOpinion(format!("node '{node}' cannot modify node '{}'", a.name));
                }
            // Pods bound to it: their status, their deletion.
            ("", "pods") if matches!(a.verb.as_str(), "update" | "patch" | "delete") => {
                let bound = pod(cache, &a.namespace, &a.name).is_some_and(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node));
                if !bound {
                    return Decision::NoOpinion(format!("node '{node}' can only modify pods bound to it"));
                }
            }
            _ => {}
        }
    }
    if rules().iter().any(|r| r.allows(a)) {
        allow()
    } else {
        Decision::NoOpinion(String::new())
    }
}

fn allow() -> Decision {
    Decision::Allow(super::Reason::Plain)
}

fn pod(cache: &WatchCache, ns: &str, name: &str) -> Option<Value> {
    let rt = skiff_api::registry::find("", "v1", "pods")?;
    let key = rt.key(Some(ns), name);
    cache.list(rt, &key, &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().find(|o| o.key == key).map(|o| o.object())
}

/// The pods bound to a node.
fn pods_on(cache: &WatchCache, node: &str) -> Vec<Value> {
    let Some(rt) = skiff_api::registry::find("", "v1", "pods") else { return Vec::new() };
    let Ok(fields) = FieldSelector::parse(&format!("spec.nodeName={node}"), "Pod") else { return Vec::new() };
    cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &fields, 0).items.iter().map(|o| o.object()).collect()
}

/// The claims the pods of a node use.
fn claims_on(cache: &WatchCache, node: &str) -> Vec<Value> {
    let Some(rt) = skiff_api::registry::find("", "v1", "persistentvolumeclaims") else { return Vec::new() };
    let pods = pods_on(cache, node);
    cache
        .list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0)
        .items
        .iter()
        .map(|o| o.object())
        .filter(|c| {
            let ns = c.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
            let name = c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            pods.iter().any(|p| references(p, "persistentvolumeclaims", ns, name))
        })
        .collect()
}

/// Whether a pod uses a Secret, ConfigMap or claim: in volumes (projected
/// too), env, envFrom, image pull secrets, or an ephemeral volume's claim.
pub(crate) fn references(pod: &Value, resource: &str, ns: &str, name: &str) -> bool {
    if pod.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns) {
        return false;
    }
    let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    let spec = &pod["spec"];
    let volumes = spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let containers: Vec<Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec.get(*k).and_then(Value::as_array).cloned().unwrap_or_default())
        .collect();
    match resource {
        "secrets" => {
            volumes.iter().any(|v| {
                is(v.pointer("/secret/secretName"))
                    || v.pointer("/projected/sources").and_then(Value::as_array).is_some_and(|s| s.iter().any(|s| is(s.pointer("/secret/name"))))
                    || ["/csi/nodePublishSecretRef/name", "/cephfs/secretRef/name", "/rbd/secretRef/name", "/iscsi/secretRef/name", "/azureFile/secretName"]
                        .iter()
                        .any(|p| is(v.pointer(p)))
            }) || spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|s| s.iter().any(|s| is(s.get("name"))))
                || containers.iter().any(|c| env_refs(c, "secretKeyRef", "secretRef", name))
        }
        "configmaps" => {
            volumes.iter().any(|v| {
                is(v.pointer("/configMap/name"))
                    || v.pointer("/projected/sources").and_then(Value::as_array).is_some_and(|s| s.iter().any(|s| is(s.pointer("/configMap/name"))))
            }) || containers.iter().any(|c| env_refs(c, "configMapKeyRef", "configMapRef", name))
        }
        "persistentvolumeclaims" => volumes.iter().any(|v| {
            is(v.pointer("/persistentVolumeClaim/claimName"))
                || (v.get("ephemeral").is_some_and(|e| !e.is_null())
                    && format!("{pod_name}-{}", v.get("name").and_then(Value::as_str).unwrap_or_default()) == name)
        }),
        _ => false,
    }
}

fn env_refs(container: &Value, key_ref: &str, from_ref: &str, name: &str) -> bool {
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    container.get("env").and_then(Value::as_array).is_some_and(|e| e.iter().any(|e| is(e.pointer(&format!("/valueFrom/{key_ref}/name")))))
        || container.get("envFrom").and_then(Value::as_array).is_some_and(|e| e.iter().any(|e| is(e.pointer(&format!("/{from_ref}/name")))))
}
