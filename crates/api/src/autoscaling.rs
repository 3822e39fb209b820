//! `autoscaling/v2` HorizontalPodAutoscalers: validation, defaults and the
//! TARGETS column, as kube-apiserver and kubectl have them. (The controller
//! that scales is not built yet.)

use serde_json::{json, Value};

use crate::error::FieldError;

/// HPA validation.
pub fn validate(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    for f in ["kind", "name"] {
        if spec.pointer(&format!("/scaleTargetRef/{f}")).and_then(Value::as_str).unwrap_or_default().is_empty() {
            errs.push(FieldError::required(format!("spec.scaleTargetRef.{f}"), ""));
        }
    }
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    if let Some(m) = min.filter(|m| *m < 1) {
        errs.push(FieldError::invalid("spec.minReplicas", m, "must be greater than or equal to 1"));
    }
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if max < 1 {
        errs.push(FieldError::invalid("spec.maxReplicas", max, "must be greater than 0"));
    } else if min.is_some_and(|m| max < m) {
        errs.push(FieldError::invalid("spec.maxReplicas", max, "must be greater than or equal to `minReplicas`"));
    }
    const TYPES: &[&str] = &["ContainerResource", "External", "Object", "Pods", "Resource"];
    for (i, m) in spec.get("metrics").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("spec.metrics[{i}]");
        let Some(t) = m.get("type").and_then(Value::as_str) else {
            errs.push(FieldError::required(format!("{at}.type"), "must specify a metric source type"));
            continue;
        };
        if !TYPES.contains(&t) {
            errs.push(FieldError::not_supported(format!("{at}.type"), t, TYPES));
            continue;
        }
        if t == "Resource" {
            let r = m.get("resource").cloned().unwrap_or(json!({}));
            if r.get("name").and_then(Value::as_str).unwrap_or_default().is_empty() {
                errs.push(FieldError::required(format!("{at}.resource.name"), "must specify a resource name"));
            }
            match r.pointer("/target/type").and_then(Value::as_str) {
                Some("Utilization") => {
                    if r.pointer("/target/averageUtilization").and_then(Value::as_i64).is_none_or(|u| u < 1) {
                        errs.push(FieldError::invalid(format!("{at}.resource.target.averageUtilization"), r.pointer("/target/averageUtilization").cloned().unwrap_or(Value::Null), "must be greater than 0"));
                    }
                }
                Some("Value" | "AverageValue") => {}
                Some(other) => errs.push(FieldError::not_supported(format!("{at}.resource.target.type"), other, &["AverageValue", "Utilization", "Value"])),
                None => errs.push(FieldError::required(format!("{at}.resource.target.type"), "must specify a metric target type")),
            }
        }
    }
}

/// HPA defaults: one replica at least, 80 % CPU when no metric is given,
/// and kube's scale-up and scale-down rules where a `behavior` leaves them out.
pub fn defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.entry("minReplicas").or_insert(json!(1));
    if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        spec.insert("metrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]));
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else { return };
    let rules = [
        ("scaleUp", 0, json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}])),
        ("scaleDown", 300, json!([{"type": "Percent", "value": 100, "periodSeconds": 15}])),
    ];
    for (dir, window, policies) in rules {
        let r = behavior.entry(dir).or_insert(json!({}));
        if let Some(r) = r.as_object_mut() {
            r.entry("stabilizationWindowSeconds").or_insert(json!(window));
            r.entry("selectPolicy").or_insert(json!("Max"));
            r.entry("policies").or_insert(policies);
        }
    }
}

/// The TARGETS column (`cpu: 40%/80%`, `<unknown>` before the first
/// reading, the first two and `+ N more...`).
pub fn targets(hpa: &Value) -> String {
    let specs = hpa.pointer("/spec/metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = hpa.pointer("/status/currentMetrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            let (kind, key) = match spec.get("type").and_then(Value::as_str) {
                Some("Resource") => ("resource", "resource"),
                Some("ContainerResource") => ("containerResource", "containerResource"),
                Some("Pods") => ("pods", "pods"),
                Some("Object") => ("object", "object"),
                Some("External") => ("external", "external"),
                _ => return "<unknown type>".to_string(),
            };
            let source = spec.get(kind).cloned().unwrap_or(json!({}));
            let current = status.and_then(|s| s.get(key)).and_then(|s| s.get("current"));
            let target = source.get("target").cloned().unwrap_or(json!({}));
            let named = |body: String| match kind {
                "resource" | "containerResource" => format!("{}: {body}", text(source.get("name"))),
                _ => body,
            };
            if let Some(util) = target.get("averageUtilization").and_then(Value::as_i64) {
                let now = current.and_then(|c| c.get("averageUtilization")).and_then(Value::as_i64).map_or_else(|| "<unknown>".into(), |u| format!("{u}%"));
                named(format!("{now}/{util}%"))
            } else {
                let (field, want) = if target.get("averageValue").is_some() { ("averageValue", target.get("averageValue")) } else { ("value", target.get("value")) };
                let now = current.and_then(|c| c.get(field)).map_or_else(|| "<unknown>".to_string(), |v| text(Some(v)));
                let avg = if field == "averageValue" && kind != "resource" && kind != "containerResource" { " (avg)" } else { "" };
                named(format!("{now}/{}{avg}", text(want)))
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_the_targets_column() {
        let mut hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}});
        defaults(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 60, "what is given stays");
        assert_eq!(hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"], 4);
        assert_eq!(targets(&hpa), "cpu: <unknown>/80%");
        hpa["status"] = json!({"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}}]});
        assert_eq!(targets(&hpa), "cpu: 42%/80%");
        let mut errs = Vec::new();
        validate(&json!({"spec": {"scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 3, "maxReplicas": 2}}), &mut errs);
        let e: Vec<String> = errs.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect();
        assert!(e.contains(&"spec.scaleTargetRef.name: ".to_string()), "{e:?}");
        assert!(e.iter().any(|e| e.contains("spec.maxReplicas") && e.contains("`minReplicas`")), "{e:?}");
    }
}

/// Where `autoscaling/v1` keeps what it has no field for, as kube does.
const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource" && m.pointer("/resource/name") == Some(&json!("cpu")) && m.pointer("/resource/target/type") == Some(&json!("Utilization"))
}

/// An `autoscaling/v2` HPA as `autoscaling/v1` shows it: the CPU
/// utilization target in `targetCPUUtilizationPercentage`, the other
/// metrics, the conditions and the behavior in annotations.
pub fn v2_to_v1(mut obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let status = obj.get("status").cloned();
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let (cpu, other): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    let mut v1 = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if let Some(m) = spec.get("minReplicas") {
        v1["minReplicas"] = m.clone();
    }
    if let Some(u) = cpu.first().and_then(|m| m.pointer("/resource/target/averageUtilization")) {
        v1["targetCPUUtilizationPercentage"] = u.clone();
    }
    let mut notes = serde_json::Map::new();
    if !other.is_empty() {
        notes.insert(METRICS_ANNOTATION.into(), json!(json!(other).to_string()));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.insert(BEHAVIOR_ANNOTATION.into(), json!(b.to_string()));
    }
    if let Some(st) = &status {
        let mut s1 = json!({"currentReplicas": st.get("currentReplicas").cloned().unwrap_or(json!(0)), "desiredReplicas": st.get("desiredReplicas").cloned().unwrap_or(json!(0))});
        for f in ["observedGeneration", "lastScaleTime"] {
            if let Some(v) = st.get(f) {
                s1[f] = v.clone();
            }
        }
        let current = st["currentMetrics"].as_array().cloned().unwrap_or_default();
        if let Some(u) = current.iter().find(|m| m["type"] == "Resource" && m.pointer("/resource/name") == Some(&json!("cpu"))).and_then(|m| m.pointer("/resource/current/averageUtilization")) {
            s1["currentCPUUtilizationPercentage"] = u.clone();
        }
        if !current.is_empty() {
            notes.insert(CURRENT_METRICS_ANNOTATION.into(), json!(json!(current).to_string()));
        }
        if let Some(c) = st.get("conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
            notes.insert(CONDITIONS_ANNOTATION.into(), json!(c.to_string()));
        }
        obj["status"] = s1;
    }
    if !notes.is_empty() {
        let ann = obj["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        let mut ann = ann;
        ann.extend(notes);
        obj["metadata"]["annotations"] = Value::Object(ann);
    }
    obj["spec"] = v1;
    obj["apiVersion"] = json!("autoscaling/v1");
    obj
}

/// An `autoscaling/v1` HPA in `autoscaling/v2`: its CPU target becomes a
/// Resource metric, the annotations v1 keeps turn back into fields.
pub fn v1_to_v2(mut obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let mut ann = obj["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    let take = |ann: &mut serde_json::Map<String, Value>, k: &str| -> Option<Value> { ann.remove(k).and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok())) };
    let mut metrics: Vec<Value> = Vec::new();
    if let Some(u) = spec.get("targetCPUUtilizationPercentage").filter(|u| !u.is_null()) {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": u}}}));
    }
    if let Some(Value::Array(other)) = take(&mut ann, METRICS_ANNOTATION) {
        metrics.extend(other);
    }
    let mut v2 = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if let Some(m) = spec.get("minReplicas") {
        v2["minReplicas"] = m.clone();
    }
    if !metrics.is_empty() {
        v2["metrics"] = json!(metrics);
    }
    if let Some(b) = take(&mut ann, BEHAVIOR_ANNOTATION) {
        v2["behavior"] = b;
    }
    let current = take(&mut ann, CURRENT_METRICS_ANNOTATION);
    let conditions = take(&mut ann, CONDITIONS_ANNOTATION);
    if let Some(st) = obj.get("status").cloned().filter(|s| s.is_object()) {
        let mut s2 = json!({"currentReplicas": st.get("currentReplicas").cloned().unwrap_or(json!(0)), "desiredReplicas": st.get("desiredReplicas").cloned().unwrap_or(json!(0))});
        for f in ["observedGeneration", "lastScaleTime"] {
            if let Some(v) = st.get(f) {
                s2[f] = v.clone();
            }
        }
        if let Some(c) = current {
            s2["currentMetrics"] = c;
        } else if let Some(u) = st.get("currentCPUUtilizationPercentage") {
            s2["currentMetrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u}}}]);
        }
        if let Some(c) = conditions {
            s2["conditions"] = c;
        }
        obj["status"] = s2;
    }
    if ann.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    } else {
        obj["metadata"]["annotations"] = Value::Object(ann);
    }
    obj["spec"] = v2;
    obj["apiVersion"] = json!("autoscaling/v2");
    obj
}

#[cfg(test)]
mod conversion_tests {
    use super::*;

    #[test]
    fn v2_round_trips_through_v1() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3, "conditions": [{"type": "AbleToScale", "status": "True"}],
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 90}}}]}});
        let v1 = v2_to_v1(v2.clone());
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 90);
        assert!(v1["metadata"]["annotations"][METRICS_ANNOTATION].as_str().is_some_and(|m| m.contains("memory")));
        assert_eq!(v1_to_v2(v1), v2);
    }
}
