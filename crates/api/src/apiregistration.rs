//! `apiregistration.k8s.io/v1` APIServices: which API server serves a
//! group version (this one, "Local", or a Service it proxies to), and
//! their validation with kube's messages.

use serde_json::Value;

use crate::FieldError;

/// The API group.
pub const GROUP: &str = "apiregistration.k8s.io";

/// The name an APIService of `group`/`version` has (`v1.apps`, `v1.` for
/// the core group).
pub fn name_of(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

/// Validates an APIService (kube's `ValidateAPIService`).
pub fn validate(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let group = spec["group"].as_str().unwrap_or_default();
    let version = spec["version"].as_str().unwrap_or_default();
    if version.is_empty() {
        errs.push(FieldError::required("spec.version", ""));
    }
    if name != name_of(group, version) {
        errs.push(FieldError::invalid("metadata.name", name, format!("must be `spec.version+\".\"+spec.group`: {:?}", name_of(group, version))));
    }
    let local = spec.get("service").is_none_or(Value::is_null);
    if !local {
        let gp = spec["groupPriorityMinimum"].as_i64().unwrap_or(0);
        if !(1..=20000).contains(&gp) {
            errs.push(FieldError::invalid("spec.groupPriorityMinimum", gp, "must be positive and less than 20000"));
        }
        let vp = spec["versionPriority"].as_i64().unwrap_or(0);
        if !(1..=1000).contains(&vp) {
            errs.push(FieldError::invalid("spec.versionPriority", vp, "must be positive and less than 1000"));
        }
        for f in ["name", "namespace"] {
            if spec["service"][f].as_str().is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("spec.service.{f}"), ""));
            }
        }
        let insecure = spec["insecureSkipTLSVerify"] == true;
        let ca = spec["caBundle"].as_str().is_some_and(|c| !c.is_empty());
        if insecure && ca {
            errs.push(FieldError::invalid("spec.insecureSkipTLSVerify", true, "may not be true if caBundle is present"));
        }
    }
}

/// Whether an APIService's `Available` condition is `True`.
pub fn available(obj: &Value) -> bool {
    obj.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Available" && c["status"] == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_priorities_and_tls_are_checked() {
        let ok = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
            "service": {"name": "metrics-server", "namespace": "kube-system"}, "groupPriorityMinimum": 100, "versionPriority": 100, "insecureSkipTLSVerify": true}});
        let mut errs = Vec::new();
        validate(&ok, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut bad = ok.clone();
        bad["metadata"]["name"] = json!("metrics");
        bad["spec"]["versionPriority"] = json!(0);
        bad["spec"]["caBundle"] = json!("AAEC");
        let mut errs = Vec::new();
        validate(&bad, &mut errs);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].starts_with("metadata.name: Invalid value: \"metrics\""), "{text:?}");
        let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"}});
        let mut errs = Vec::new();
        validate(&local, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }
}
