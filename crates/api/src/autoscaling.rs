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
