//! The resource types the API server serves, with what discovery, storage
//! and decoding need to know about each.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core};
use k8s_openapi::api::{discovery::v1 as discovery, events::v1 as events, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage};
use k8s_openapi::api::autoscaling::v1 as autoscaling_v1;
use k8s_openapi::api::{autoscaling::v2 as autoscaling, networking::v1 as networking, node::v1 as node};
use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;

/// Decodes a JSON value into the resource's Rust type and back: the round
/// trip checks every field's type and drops what the type does not know.
pub type Normalizer = fn(Value) -> Result<Value, String>;

/// Generates the OpenAPI schema of a resource's kind.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// One served resource type (a REST collection).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// URL segment, e.g. `pods`.
    pub plural: &'static str,
    /// Singular name, e.g. `pod`.
    pub singular: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts.
    pub short_names: &'static [&'static str],
    /// Categories (`all` makes `kubectl get all` include it).
    pub categories: &'static [&'static str],
    /// Has a `status` subresource (the main resource ignores status writes).
    pub status: bool,
    /// Has a `scale` subresource (`spec.replicas`).
    pub scale: bool,
    /// Round-trips an object through its Rust type.
    pub normalize: Normalizer,
    /// Its schema, for OpenAPI.
    pub schema: SchemaFn,
    /// The OpenAPI schema name (e.g. `io.k8s.api.core.v1.Pod`).
    pub schema_name: fn() -> String,
    /// What a CustomResourceDefinition says of this version (`None` for
    /// the built-in types).
    pub custom: Option<std::sync::Arc<crate::apiextensions::CustomVersion>>,
    /// How a built-in type served in another version than it is stored in
    /// converts (`autoscaling/v1` HorizontalPodAutoscalers).
    pub conversion: Option<&'static Conversion>,
}

/// A built-in conversion between a served version and the stored one.
#[derive(Debug)]
pub struct Conversion {
    /// The version objects are stored in.
    pub storage_version: &'static str,
    /// Stored → served.
    pub to_served: fn(Value) -> Value,
    /// Served → stored.
    pub to_storage: fn(Value) -> Value,
}

/// `autoscaling/v1` HorizontalPodAutoscalers are stored as `autoscaling/v2`.
static HPA_V1: Conversion = Conversion { storage_version: "v2", to_served: crate::autoscaling::v2_to_v1, to_storage: crate::autoscaling::v1_to_v2 };

impl ResourceType {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix of this resource's objects.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/{name}", self.key_prefix()),
            None => format!("{}{name}", self.key_prefix()),
        }
    }

    /// The `group.resource` form Kubernetes uses in messages
    /// (`deployments.apps`, or `pods` for the core group).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether a write to the main resource changes the generation when its
    /// spec changes (Kubernetes tracks it for workloads and a few others).
    pub fn tracks_generation(&self) -> bool {
        self.custom.is_some()
            || matches!(self.kind, "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" | "PodDisruptionBudget")
    }
}

fn normalize<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn schema<T: schemars::JsonSchema>(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    gen.subschema_for::<T>()
}

fn schema_name<T: schemars::JsonSchema>() -> String {
    T::schema_name().into_owned()
}

macro_rules! resource {
    ($ty:ty, $group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr,
     [$($short:expr),*], [$($cat:expr),*], status: $status:expr, scale: $scale:expr) => {
        resource!($ty, $group, $version, $plural, $singular, $kind, $ns, [$($short),*], [$($cat),*], status: $status, scale: $scale, conversion: None)
    };
    ($ty:ty, $group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr,
     [$($short:expr),*], [$($cat:expr),*], status: $status:expr, scale: $scale:expr, conversion: $conversion:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            status: $status,
            scale: $scale,
            normalize: normalize::<$ty>,
            schema: schema::<$ty>,
            schema_name: schema_name::<$ty>,
            custom: None,
            conversion: $conversion,
        }
    };
}

/// Every resource type served, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    resource!(core::Namespace, "", "v1", "namespaces", "namespace", "Namespace", false, ["ns"], [], status: true, scale: false),
    resource!(core::Pod, "", "v1", "pods", "pod", "Pod", true, ["po"], ["all"], status: true, scale: false),
    resource!(core::Service, "", "v1", "services", "service", "Service", true, ["svc"], ["all"], status: true, scale: false),
    resource!(core::Endpoints, "", "v1", "endpoints", "endpoints", "Endpoints", true, ["ep"], [], status: false, scale: false),
    resource!(core::ConfigMap, "", "v1", "configmaps", "configmap", "ConfigMap", true, ["cm"], [], status: false, scale: false),
    resource!(core::Secret, "", "v1", "secrets", "secret", "Secret", true, [], [], status: false, scale: false),
    resource!(core::Node, "", "v1", "nodes", "node", "Node", false, ["no"], [], status: true, scale: false),
    resource!(core::Event, "", "v1", "events", "event", "Event", true, ["ev"], [], status: false, scale: false),
    resource!(core::ServiceAccount, "", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, ["sa"], [], status: false, scale: false),
    resource!(core::PersistentVolumeClaim, "", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", true, ["pvc"], [], status: true, scale: false),
    resource!(core::PersistentVolume, "", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", false, ["pv"], [], status: true, scale: false),
    resource!(core::LimitRange, "", "v1", "limitranges", "limitrange", "LimitRange", true, ["limits"], [], status: false, scale: false),
    resource!(core::ResourceQuota, "", "v1", "resourcequotas", "resourcequota", "ResourceQuota", true, ["quota"], [], status: true, scale: false),
    resource!(core::PodTemplate, "", "v1", "podtemplates", "podtemplate", "PodTemplate", true, [], [], status: false, scale: false),
    resource!(core::ReplicationController, "", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", true, ["rc"], ["all"], status: true, scale: true),
    resource!(apps::Deployment, "apps", "v1", "deployments", "deployment", "Deployment", true, ["deploy"], ["all"], status: true, scale: true),
    resource!(apps::ReplicaSet, "apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, ["rs"], ["all"], status: true, scale: true),
    resource!(apps::StatefulSet, "apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, ["sts"], ["all"], status: true, scale: true),
    resource!(apps::DaemonSet, "apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, ["ds"], ["all"], status: true, scale: false),
    resource!(apps::ControllerRevision, "apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", true, [], [], status: false, scale: false),
    resource!(batch::Job, "batch", "v1", "jobs", "job", "Job", true, [], ["all"], status: true, scale: false),
    resource!(batch::CronJob, "batch", "v1", "cronjobs", "cronjob", "CronJob", true, ["cj"], ["all"], status: true, scale: false),
    resource!(coordination::Lease, "coordination.k8s.io", "v1", "leases", "lease", "Lease", true, [], [], status: false, scale: false),
    resource!(discovery::EndpointSlice, "discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, [], [], status: false, scale: false),
    resource!(events::Event, "events.k8s.io", "v1", "events", "event", "Event", true, ["ev"], [], status: false, scale: false),
    resource!(storage::StorageClass, "storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", false, ["sc"], [], status: false, scale: false),
    resource!(storage::CSIDriver, "storage.k8s.io", "v1", "csidrivers", "csidriver", "CSIDriver", false, [], [], status: false, scale: false),
    resource!(storage::CSINode, "storage.k8s.io", "v1", "csinodes", "csinode", "CSINode", false, [], [], status: false, scale: false),
    resource!(storage::VolumeAttachment, "storage.k8s.io", "v1", "volumeattachments", "volumeattachment", "VolumeAttachment", false, [], [], status: true, scale: false),
    resource!(autoscaling::HorizontalPodAutoscaler, "autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", true, ["hpa"], ["all"], status: true, scale: false),
    resource!(autoscaling_v1::HorizontalPodAutoscaler, "autoscaling", "v1", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", true, ["hpa"], ["all"], status: true, scale: false, conversion: Some(&HPA_V1)),
    resource!(networking::Ingress, "networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", true, ["ing"], [], status: true, scale: false),
    resource!(networking::IngressClass, "networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", false, [], [], status: false, scale: false),
    resource!(networking::NetworkPolicy, "networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", true, ["netpol"], [], status: false, scale: false),
    resource!(node::RuntimeClass, "node.k8s.io", "v1", "runtimeclasses", "runtimeclass", "RuntimeClass", false, [], [], status: false, scale: false),
    resource!(policy::PodDisruptionBudget, "policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, ["pdb"], [], status: true, scale: false),
    resource!(scheduling::PriorityClass, "scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", false, ["pc"], [], status: false, scale: false),
    resource!(certificates::CertificateSigningRequest, "certificates.k8s.io", "v1", "certificatesigningrequests", "certificatesigningrequest", "CertificateSigningRequest", false, ["csr"], [], status: true, scale: false),
    resource!(apiextensions::CustomResourceDefinition, "apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, ["crd", "crds"], ["api-extensions"], status: true, scale: false),
    resource!(apiregistration::APIService, "apiregistration.k8s.io", "v1", "apiservices", "apiservice", "APIService", false, [], ["api-extensions"], status: true, scale: false),
    resource!(admissionregistration::MutatingWebhookConfiguration, "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", "MutatingWebhookConfiguration", false, [], ["api-extensions"], status: false, scale: false),
    resource!(admissionregistration::ValidatingWebhookConfiguration, "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "validatingwebhookconfiguration", "ValidatingWebhookConfiguration", false, [], ["api-extensions"], status: false, scale: false),
    resource!(admissionregistration::ValidatingAdmissionPolicy, "admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "validatingadmissionpolicy", "ValidatingAdmissionPolicy", false, [], ["api-extensions"], status: true, scale: false),
    resource!(admissionregistration::ValidatingAdmissionPolicyBinding, "admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", "ValidatingAdmissionPolicyBinding", false, [], ["api-extensions"], status: false, scale: false),
    resource!(rbac::ClusterRole, "rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, [], [], status: false, scale: false),
    resource!(rbac::ClusterRoleBinding, "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, [], [], status: false, scale: false),
    resource!(rbac::Role, "rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, [], [], status: false, scale: false),
    resource!(rbac::RoleBinding, "rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, [], [], status: false, scale: false),
];

/// A `&'static str` equal to `s`, made once per distinct string: custom
/// resource types carry their names like the built-in ones do. What is
/// kept is bounded by the distinct names CustomResourceDefinitions ever
/// used in this process (Go's apiserver interns these the same way).
pub fn intern(s: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.get(s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.insert(n);
    n
}

/// A `&'static` list of interned names, made once per distinct list.
pub fn intern_list(list: &[String]) -> &'static [&'static str] {
    type Lists = std::collections::BTreeMap<Vec<String>, &'static [&'static str]>;
    static LISTS: std::sync::Mutex<Lists> = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut lists = LISTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(l) = lists.get(list) {
        return l;
    }
    let l: &'static [&'static str] = Box::leak(list.iter().map(|s| intern(s)).collect::<Vec<_>>().into_boxed_slice());
    lists.insert(list.to_vec(), l);
    l
}

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The group versions served, in discovery order, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_resources_and_namespaces() {
        let pods = find("", "v1", "pods").expect("pods");
        assert_eq!(pods.key(Some("default"), "web"), "/registry/core/pods/default/web");
        let ns = find("", "v1", "namespaces").expect("namespaces");
        assert_eq!(ns.key(Some("ignored"), "default"), "/registry/core/namespaces/default");
        assert_eq!(find("apps", "v1", "deployments").expect("deploy").qualified(), "deployments.apps");
    }

    #[test]
    fn normalize_rejects_wrong_types_and_drops_unknown_fields() {
        let pods = find("", "v1", "pods").expect("pods");
        let err = (pods.normalize)(serde_json::json!({"spec": {"containers": "nope"}})).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let v = (pods.normalize)(serde_json::json!({"metadata": {"name": "a"}, "bogus": 1})).expect("ok");
        assert!(v.get("bogus").is_none());
    }
}
