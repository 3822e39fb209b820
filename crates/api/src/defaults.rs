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

/// Applies the defaults of `kind` to an object about to be stored.
pub fn apply(kind: &str, obj: &mut Value) {
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
                rolling_update(spec, "updateStrategy", &[("partition", json!(0))]);
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
                if let Some(jt) = child(spec, "jobTemplate").and_then(|jt| child(jt, "spec")) {
                    job_spec(jt);
                }
            }
        }
        "Service" => {
            if let Some(spec) = child(o, "spec") {
                default(spec, "type", json!("ClusterIP"));
                if spec.get("type") != Some(&json!("ExternalName")) {
                    default(spec, "sessionAffinity", json!("None"));
                    default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            default(p, "targetPort", port);
                        }
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
    default(spec, "parallelism", json!(1));
    if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism") == Some(&json!(1)) {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
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
    default(spec, "enableServiceLinks", json!(true));
    if is_pod {
        default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        default(spec, "priority", json!(0));
        default(spec, "serviceAccountName", json!("default"));
        if let Some(sa) = spec.get("serviceAccountName").cloned() {
            default(spec, "serviceAccount", sa);
        }
    }
    for field in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(field) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
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
    // Limits without requests: requests default to the limits.
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
    fn qos_classes() {
        assert_eq!(qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]})),
            "Guaranteed"
        );
        assert_eq!(qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})), "Burstable");
    }
}
