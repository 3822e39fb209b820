//! Defaulting, as Kubernetes' `SetDefaults_*` functions and default
//! admission plugins fill in what a client left out.

use serde_json::{json, Map, Value};

/// Sets `obj[key]` to `value` when it is absent or null.
fn default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

/// The object at `obj[key]`, created empty if absent.
fn child<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), json!({}));
    }
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// Applies the defaults of a resource type's objects: its kind's, or a
/// custom resource's schema defaults.
pub fn apply_for(rt: &crate::ResourceType, obj: &mut Value) {
    if let Some(c) = rt.conversion {
        // Defaulted in the stored version, as kube defaults after converting.
        let mut stored = (c.to_storage)(std::mem::take(obj));
        apply(rt.kind, &mut stored);
        *obj = (c.to_served)(stored);
        return;
    }
    match &rt.custom {
        Some(custom) => {
            if let Some(s) = &custom.schema {
                crate::apiextensions::schema::default(obj, s);
            }
        }
        None => apply(rt.kind, obj),
    }
}

/// Applies the defaults of `kind` to an object about to be stored.
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "CustomResourceDefinition" => crate::apiextensions::defaults(obj),
        "MutatingWebhookConfiguration" => crate::admissionregistration::webhook_defaults(obj, true),
        "ValidatingWebhookConfiguration" => crate::admissionregistration::webhook_defaults(obj, false),
        "ValidatingAdmissionPolicy" => crate::admissionregistration::policy_defaults(obj),
        _ => {}
    }
    let Some(o) = obj.as_object_mut() else { return };
    // Go's `Status` fields are structs, never omitted: kube-apiserver
    // answers `"status": {}` for a new object, and clients read into it
    // (`d.status.ready_replicas` in the Python client).
    if crate::RESOURCES.iter().any(|r| r.kind == kind && r.status) {
        let empty = if kind == "Service" { json!({"loadBalancer": {}}) } else { json!({}) };
        default(o, "status", empty);
    }
    match kind {
        "Pod" => {
            if let Some(spec) = child(o, "spec") {
                pod_spec(spec, true);
            }
        }
        "Deployment" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                rolling_update(spec, "strategy", &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))]);
                template(spec, "Always");
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "replicas", json!(1));
                template(spec, "Always");
            }
        }
        "StatefulSet" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(spec, "revisionHistoryLimit", json!(10));
                // Unlike Deployments and DaemonSets, a StatefulSet gets a
                // `rollingUpdate` only when it named no strategy type.
                if let Some(strategy) = child(spec, "updateStrategy") {
                    if strategy.get("type").is_none_or(Value::is_null) {
                        strategy.insert("type".into(), json!("RollingUpdate"));
                        default(strategy, "rollingUpdate", json!({}));
                    }
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        if let Some(ru) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                            default(ru, "partition", json!(0));
                        }
                    }
                }
                for claim in spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
                    if let Some(cs) = child(claim, "spec") {
                        default(cs, "volumeMode", json!("Filesystem"));
                    }
                    if let Some(st) = child(claim, "status") {
                        default(st, "phase", json!("Pending"));
                    }
                }
                if let Some(p) = child(spec, "persistentVolumeClaimRetentionPolicy") {
                    default(p, "whenDeleted", json!("Retain"));
                    default(p, "whenScaled", json!("Retain"));
                }
                template(spec, "Always");
            }
        }
        "DaemonSet" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "revisionHistoryLimit", json!(10));
                rolling_update(spec, "updateStrategy", &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))]);
                template(spec, "Always");
            }
        }
        "Job" => {
            let template_labels = o.get("spec").and_then(|s| s.pointer("/template/metadata/labels")).cloned();
            if let (Some(labels), Some(meta)) = (template_labels, child(o, "metadata")) {
                if meta.get("labels").is_none_or(|l| l.as_object().is_none_or(Map::is_empty)) {
                    meta.insert("labels".into(), labels);
                }
            }
            if let Some(spec) = child(o, "spec") {
                job_spec(spec);
            }
        }
        "CronJob" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
                // The Job defaults are the Job's, when it is made; the
                // template gets its pod template's only.
                if let Some(jt) = child(spec, "jobTemplate").and_then(|jt| child(jt, "spec")) {
                    template(jt, "");
                }
            }
        }
        "Service" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "type", json!("ClusterIP"));
                default(spec, "sessionAffinity", json!("None"));
                let ty = spec.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
                if ty != "ExternalName" {
                    default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if spec.get("sessionAffinity") == Some(&json!("None")) {
                    spec.remove("sessionAffinityConfig");
                } else if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
                    if let Some(ip) = child(spec, "sessionAffinityConfig").and_then(|c| child(c, "clientIP")) {
                        default(ip, "timeoutSeconds", json!(10800));
                    }
                }
                let external_ips = spec.get("externalIPs").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
                if ty == "NodePort" || ty == "LoadBalancer" || (ty == "ClusterIP" && external_ips) {
                    default(spec, "externalTrafficPolicy", json!("Cluster"));
                }
                if ty == "LoadBalancer" {
                    default(spec, "allocateLoadBalancerNodePorts", json!(true));
                }
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", json!("TCP"));
                        // An explicit 0 or "" is unset too.
                        if matches!(p.get("targetPort"), Some(t) if *t == json!(0) || *t == json!("")) {
                            p.remove("targetPort");
                        }
                        if let Some(port) = p.get("port").cloned() {
                            default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        "Endpoints" => {
            for subset in o.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
                for p in subset.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
                    default(p, "protocol", json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            for p in o.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
                default(p, "name", json!(""));
                default(p, "protocol", json!("TCP"));
            }
        }
        "Node" => {
            if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
                if let Some(capacity) = status.get("capacity").cloned() {
                    default(status, "allocatable", capacity);
                }
            }
        }
        "LimitRange" => {
            let limits = o.get_mut("spec").and_then(|s| s.get_mut("limits")).and_then(Value::as_array_mut);
            for item in limits.into_iter().flatten().filter_map(Value::as_object_mut) {
                if item.get("type") != Some(&json!("Container")) {
                    continue;
                }
                // default ← max; defaultRequest ← default, else min.
                let max = item.get("max").and_then(Value::as_object).cloned().unwrap_or_default();
                let min = item.get("min").and_then(Value::as_object).cloned().unwrap_or_default();
                if let Some(d) = child(item, "default") {
                    for (k, v) in &max {
                        d.entry(k.clone()).or_insert(v.clone());
                    }
                }
                let dflt = item.get("default").and_then(Value::as_object).cloned().unwrap_or_default();
                if let Some(dr) = child(item, "defaultRequest") {
                    for (k, v) in dflt.iter().chain(min.iter()) {
                        dr.entry(k.clone()).or_insert(v.clone());
                    }
                }
            }
        }
        "Namespace" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = child(o, "status") {
                default(status, "phase", json!("Active"));
            }
        }
        "Secret" => {
            default(o, "type", json!("Opaque"));
        }
        "PodTemplate" => template(o, "Always"),
        "ReplicationController" => {
            // The selector and the object's labels default to the template's.
            let labels = o.get("spec").and_then(|s| s.pointer("/template/metadata/labels")).cloned();
            if let Some(labels) = labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
                if let Some(meta) = child(o, "metadata") {
                    if meta.get("labels").is_none_or(|l| l.as_object().is_none_or(Map::is_empty)) {
                        meta.insert("labels".into(), labels.clone());
                    }
                }
                if let Some(spec) = child(o, "spec") {
                    if spec.get("selector").is_none_or(|l| l.as_object().is_none_or(Map::is_empty)) {
                        spec.insert("selector".into(), labels);
                    }
                }
            }
            if let Some(spec) = child(o, "spec") {
                default(spec, "replicas", json!(1));
                template(spec, "Always");
            }
        }
        "PriorityClass" => {
            default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        "NetworkPolicy" => crate::networking::network_policy_defaults(obj),
        "HorizontalPodAutoscaler" => crate::autoscaling::defaults(obj),
        "CSIDriver" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "attachRequired", json!(true));
                default(spec, "podInfoOnMount", json!(false));
                default(spec, "requiresRepublish", json!(false));
                default(spec, "storageCapacity", json!(false));
                default(spec, "seLinuxMount", json!(false));
                default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
                default(spec, "volumeLifecycleModes", json!(["Persistent"]));
            }
        }
        // A subject's group: none for ServiceAccounts, RBAC's for users and groups.
        "RoleBinding" | "ClusterRoleBinding" => {
            for subject in o.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
                let Some(subject) = subject.as_object_mut() else { continue };
                let user_or_group = matches!(subject.get("kind").and_then(Value::as_str), Some("User" | "Group"));
                if user_or_group && subject.get("apiGroup").and_then(Value::as_str).unwrap_or_default().is_empty() {
                    subject.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
                }
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = child(o, "status") {
                default(status, "phase", json!("Pending"));
            }
        }
        "StorageClass" => {
            default(o, "reclaimPolicy", json!("Delete"));
            default(o, "volumeBindingMode", json!("Immediate"));
        }
        "PersistentVolume" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = child(o, "status") {
                default(status, "phase", json!("Pending"));
            }
        }
        _ => {}
    }
}

/// A workload's update strategy: `RollingUpdate` unless said otherwise, and
/// then the given `rollingUpdate` parameters.
fn rolling_update(spec: &mut Map<String, Value>, field: &str, params: &[(&str, Value)]) {
    if let Some(strategy) = child(spec, field) {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                for (k, v) in params {
                    default(ru, k, v.clone());
                }
            }
        }
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    let unset = |spec: &Map<String, Value>, k: &str| spec.get(k).is_none_or(Value::is_null);
    // Both unset: one pod, once. An explicit parallelism with no
    // completions is a work queue, and keeps completions unset.
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    let per_index = !unset(spec, "backoffLimitPerIndex");
    default(spec, "backoffLimit", json!(if per_index { i64::from(i32::MAX) } else { 6 }));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "manualSelector", json!(false));
    let failure_policy = !unset(spec, "podFailurePolicy");
    default(spec, "podReplacementPolicy", json!(if failure_policy { "Failed" } else { "TerminatingOrFailed" }));
    if let Some(rules) = spec.get_mut("podFailurePolicy").and_then(|p| p.get_mut("rules")).and_then(Value::as_array_mut) {
        for rule in rules {
            for c in rule.get_mut("onPodConditions").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
                default(c, "status", json!("True"));
            }
        }
    }
    template(spec, "");
}

/// Defaults of a workload's `spec.template`; `restart` is the restart
/// policy to fill in, empty for none (Jobs must say theirs).
fn template(spec: &mut Map<String, Value>, restart: &str) {
    if let Some(t) = child(spec, "template") {
        if let Some(ps) = child(t, "spec") {
            if !restart.is_empty() {
                default(ps, "restartPolicy", json!(restart));
            }
            pod_spec(ps, false);
        }
    }
}

/// Pod spec defaults. `is_pod` adds what admission adds to real pods (not
/// templates): the service account. (The default not-ready/unreachable
/// tolerations are the API server's, with its configured seconds.)
pub fn pod_spec(spec: &mut Map<String, Value>, is_pod: bool) {
    if is_pod {
        default(spec, "restartPolicy", json!("Always"));
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    if is_pod {
        default(spec, "enableServiceLinks", json!(true));
        default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        default(spec, "priority", json!(0));
        default(spec, "serviceAccountName", json!("default"));
        if let Some(sa) = spec.get("serviceAccountName").cloned() {
            default(spec, "serviceAccount", sa);
        }
    }
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(field) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c, is_pod);
                // A host-network pod's ports are the host's.
                if is_pod && host_network {
                    for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
                        if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                            if let Some(cp) = p.get("containerPort").cloned() {
                                p.insert("hostPort".into(), cp);
                            }
                        }
                    }
                }
            }
        }
    }
    for v in spec.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
        volume(v);
    }
}

/// Volume source defaults (SetDefaults_Volume and the sources').
fn volume(v: &mut Map<String, Value>) {
    if v.keys().all(|k| k == "name") {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = v.get_mut(source).and_then(Value::as_object_mut) {
            default(src, "defaultMode", json!(420));
        }
    }
    if let Some(items) = v.get_mut("downwardAPI").and_then(|d| d.get_mut("items")).and_then(Value::as_array_mut) {
        field_refs(items);
    }
    if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        default(hp, "type", json!(""));
    }
    for src in v.get_mut("projected").and_then(|p| p.get_mut("sources")).and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(items) = src.get_mut("downwardAPI").and_then(|d| d.get_mut("items")).and_then(Value::as_array_mut) {
            field_refs(items);
        }
        if let Some(t) = src.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
            default(t, "expirationSeconds", json!(3600));
        }
    }
    if let Some(cs) = v.get_mut("ephemeral").and_then(|e| e.get_mut("volumeClaimTemplate")).and_then(|t| t.get_mut("spec")).and_then(Value::as_object_mut) {
        default(cs, "volumeMode", json!("Filesystem"));
    }
}

/// `fieldRef.apiVersion` defaults to v1 (downward API items).
fn field_refs(items: &mut [Value]) {
    for item in items {
        if let Some(f) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            default(f, "apiVersion", json!("v1"));
        }
    }
}

/// SetDefaults_Probe and its HTTP action's.
fn probe(p: &mut Map<String, Value>) {
    for (k, v) in [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)] {
        if p.get(k).and_then(Value::as_i64).unwrap_or(0) == 0 {
            p.insert(k.into(), json!(v));
        }
    }
    handler(p);
    if let Some(g) = p.get_mut("grpc").and_then(Value::as_object_mut) {
        default(g, "service", json!(""));
    }
}

/// An `httpGet` action's path and scheme.
fn handler(h: &mut Map<String, Value>) {
    if let Some(get) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        if get.get("path").and_then(Value::as_str).unwrap_or_default().is_empty() {
            get.insert("path".into(), json!("/"));
        }
        if get.get("scheme").and_then(Value::as_str).unwrap_or_default().is_empty() {
            get.insert("scheme".into(), json!("HTTP"));
        }
    }
}

fn container(c: &mut Map<String, Value>, is_pod: bool) {
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(p).and_then(Value::as_object_mut) {
            probe(p);
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(h) = c.get_mut("lifecycle").and_then(|l| l.get_mut(hook)).and_then(Value::as_object_mut) {
            handler(h);
        }
    }
    for e in c.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(f) = e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")).and_then(Value::as_object_mut) {
            default(f, "apiVersion", json!("v1"));
        }
    }
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    default(c, "imagePullPolicy", json!(pull_policy(image)));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
        }
    }
    // Limits without requests: requests default to the limits (on pods;
    // a template keeps what it was given).
    if !is_pod {
        return;
    }
    if let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) {
        if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() {
            let req = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(req) = req.as_object_mut() {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// The Kubernetes QoS class of a pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"].iter().filter_map(|f| spec.get(*f).and_then(Value::as_array)).flatten().collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r));
            if l.is_none() || (q.is_some() && q != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_match_kubernetes() {
        let mut pod =
            json!({"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}});
        apply("Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        // The not-ready/unreachable tolerations are admission's (the API server's), not defaults.
        assert!(pod["spec"].get("tolerations").is_none());
    }

    #[test]
    fn deployment_defaults_match_kubernetes() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}));
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(d["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn probes_volumes_and_env_get_kubernetes_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x:1",
            "readinessProbe": {"httpGet": {"port": 80}},
            "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
            "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}},
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
            "volumes": [{"name": "e"}, {"name": "s", "secret": {"secretName": "x"}}, {"name": "h", "hostPath": {"path": "/x"}},
                        {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}});
        apply("Pod", &mut pod);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["livenessProbe"]["periodSeconds"], 5);
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"], json!({"port": 80, "path": "/stop", "scheme": "HTTP"}));
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        let v = &pod["spec"]["volumes"];
        assert_eq!(v[0]["emptyDir"], json!({}));
        assert_eq!(v[1]["secret"]["defaultMode"], 420);
        assert_eq!(v[2]["hostPath"]["type"], "");
        assert_eq!(v[3]["projected"]["defaultMode"], 420);
        assert_eq!(v[3]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3600);
    }

    #[test]
    fn services_and_jobs_get_kubernetes_defaults() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 0}]}});
        apply("Service", &mut svc);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        let mut svc = json!({"spec": {"type": "ExternalName", "externalName": "x.example"}});
        apply("Service", &mut svc);
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        let mut svc = json!({"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 1}]}});
        apply("Service", &mut svc);
        assert_eq!(svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
        // A work queue: parallelism given, completions stay unset.
        let mut job = json!({"spec": {"parallelism": 1, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}});
        apply("Job", &mut job);
        assert!(job["spec"].get("completions").is_none(), "{job}");
        assert_eq!(job["metadata"]["labels"], json!({"a": "b"}));
        let mut job = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("Job", &mut job);
        assert_eq!((job["spec"]["completions"].clone(), job["spec"]["parallelism"].clone()), (json!(1), json!(1)));
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]})),
            "Guaranteed"
        );
        assert_eq!(qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})), "Burstable");
    }
}
