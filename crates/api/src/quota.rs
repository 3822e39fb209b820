//! Resource quota arithmetic, network-free: what an object uses of each
//! quota resource (`pods`, `requests.cpu`, `services.nodeports`,
//! `count/deployments.apps`, …), which pods a quota's scopes select, and
//! quantities printed as kube prints them. The API server's admission and
//! the quota controller both count with this.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::parse_milli;

/// A quantity in milli-units (`"500m"` → 500, `2` → 2000).
pub fn quantity(v: Option<&Value>) -> Option<i128> {
    match v? {
        Value::String(s) => parse_milli(s),
        Value::Number(n) => n.as_f64().map(|f| (f * 1000.0).round() as i128),
        _ => None,
    }
}

/// A JSON value as text.
pub fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// A pod spec's init and app containers.
pub fn app_containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"].iter().flat_map(|k| spec.get(*k).and_then(Value::as_array).into_iter().flatten()).collect()
}

/// CPU as kube prints it (`500m`, `2`).
pub fn format_cpu(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// A byte count as kube prints it (`64Mi`, `1Gi`, `1000`).
pub fn format_value(milli: i128) -> String {
    let v = milli / 1000;
    for (suffix, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if v != 0 && v % (1i128 << shift) == 0 {
            return format!("{}{suffix}", v >> shift);
        }
    }
    v.to_string()
}

/// Whether a pod has finished (it no longer counts against quota).
fn finished(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) || pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// What one object uses of each quota resource it counts against.
pub fn usage_of(kind: &str, group: &str, plural: &str, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let one = 1000i128;
    let count_key = if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") };
    u.insert(count_key, one);
    match kind {
        "Pod" => {
            if finished(obj) {
                return BTreeMap::new();
            }
            u.insert("pods".into(), one);
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            for res in ["cpu", "memory", "ephemeral-storage"] {
                for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
                    // Init containers run one at a time: the pod needs the larger of
                    // their largest and the sum of the app containers.
                    let sum: i128 = spec
                        .get("containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| quantity(c.pointer(&format!("/resources/{field}/{res}"))))
                        .sum();
                    let init = spec
                        .get("initContainers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| quantity(c.pointer(&format!("/resources/{field}/{res}"))))
                        .max()
                        .unwrap_or(0);
                    let total = sum.max(init);
                    if total > 0 {
                        u.insert(format!("{prefix}{res}"), total);
                        if field == "requests" {
                            u.insert(res.to_string(), total);
                        }
                    }
                }
            }
        }
        "Service" => {
            u.insert("services".into(), one);
            let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len) as i128;
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one);
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                u.insert("services.nodeports".into(), ports * one);
            }
        }
        "PersistentVolumeClaim" => {
            u.insert("persistentvolumeclaims".into(), one);
            if let Some(q) = quantity(obj.pointer("/spec/resources/requests/storage")) {
                u.insert("requests.storage".into(), q);
            }
        }
        "Secret" => {
            u.insert("secrets".into(), one);
        }
        "ConfigMap" => {
            u.insert("configmaps".into(), one);
        }
        "ReplicationController" => {
            u.insert("replicationcontrollers".into(), one);
        }
        "ResourceQuota" => {
            u.insert("resourcequotas".into(), one);
        }
        _ => {}
    }
    u
}

/// Whether a quota's scopes select a pod.
pub fn in_scope(quota: &Value, pod: &Value) -> bool {
    let best_effort = || {
        app_containers(&pod["spec"]).iter().all(|c| {
            c.pointer("/resources/requests").and_then(Value::as_object).is_none_or(|m| m.is_empty())
                && c.pointer("/resources/limits").and_then(Value::as_object).is_none_or(|m| m.is_empty())
        })
    };
    let terminating = || pod.pointer("/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null());
    let scope = |s: &str| match s {
        "Terminating" => terminating(),
        "NotTerminating" => !terminating(),
        "BestEffort" => best_effort(),
        "NotBestEffort" => !best_effort(),
        _ => true,
    };
    let scopes_ok = quota.pointer("/spec/scopes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).all(scope);
    let selector_ok = quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten().all(|e| {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or_default();
        let op = e.get("operator").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        if name == "PriorityClass" {
            let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default();
            match op {
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            }
        } else {
            scope(name) == (op != "DoesNotExist")
        }
    });
    scopes_ok && selector_ok
}

/// A quota amount as kube prints it.
pub fn show(resource: &str, milli: i128) -> String {
    let base = resource.rsplit('.').next().unwrap_or(resource);
    if base == "cpu" {
        format_cpu(milli)
    } else if matches!(base, "memory" | "storage" | "ephemeral-storage") {
        format_value(milli)
    } else {
        (milli / 1000).to_string()
    }
}


/// What `objects` (pods, services, … of one namespace, each with its kind,
/// group and plural) use of the resources a quota limits.
pub fn used<'a>(quota: &Value, objects: impl IntoIterator<Item = (&'a str, &'a str, &'a str, &'a Value)>) -> BTreeMap<String, i128> {
    let hard: Vec<String> = quota.pointer("/spec/hard").and_then(Value::as_object).map(|h| h.keys().cloned().collect()).unwrap_or_default();
    let mut total: BTreeMap<String, i128> = hard.iter().map(|k| (k.clone(), 0)).collect();
    let scoped = quota.pointer("/spec/scopes").is_some() || quota.pointer("/spec/scopeSelector").is_some();
    for (kind, group, plural, obj) in objects {
        if scoped && kind != "Pod" {
            continue;
        }
        if kind == "Pod" && !in_scope(quota, obj) {
            continue;
        }
        for (k, v) in usage_of(kind, group, plural, obj) {
            if let Some(t) = total.get_mut(&k) {
                *t += v;
            }
        }
    }
    total
}

/// The namespaced kinds a quota with these hard limits counts.
pub fn counted(hard: &[String], kind: &str, group: &str, plural: &str) -> bool {
    let count_key = if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") };
    matches!(kind, "Pod" | "Service" | "PersistentVolumeClaim" | "Secret" | "ConfigMap" | "ReplicationController" | "ResourceQuota") || hard.contains(&count_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_use_their_requests_and_limits_and_init_containers_count_at_their_peak() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "250m"}}}]}});
        let u = usage_of("Pod", "", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["requests.cpu"], 2000, "the init container's 2 CPUs outweigh 750m");
        assert_eq!(show("requests.memory", u["requests.memory"]), "64Mi");
        assert_eq!(show("limits.memory", u["limits.memory"]), "128Mi");
        assert_eq!(u["count/pods"], 1000);
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert!(usage_of("Pod", "", "pods", &done).is_empty(), "finished pods use nothing");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage_of("Service", "", "services", &lb);
        assert_eq!((u["services.loadbalancers"], u["services.nodeports"]), (1000, 2000));
    }

    #[test]
    fn scopes_select_pods() {
        let best_effort = json!({"spec": {"containers": [{"name": "c"}]}});
        let burstable = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}], "priorityClassName": "high"}});
        let q = json!({"spec": {"scopes": ["BestEffort"]}});
        assert!(in_scope(&q, &best_effort) && !in_scope(&q, &burstable));
        let q = json!({"spec": {"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(in_scope(&q, &burstable) && !in_scope(&q, &best_effort));
    }
}
