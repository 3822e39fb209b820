//! `admissionregistration.k8s.io/v1`: webhook configurations and
//! ValidatingAdmissionPolicies — their defaults, their validation with
//! kube's messages, and which requests a webhook's or policy's rules match.

use serde_json::{json, Value};

use crate::FieldError;

/// The API group.
pub const GROUP: &str = "admissionregistration.k8s.io";

/// What a request does, as admission names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A create.
    Create,
    /// An update (put, patch, subresource writes).
    Update,
    /// A delete.
    Delete,
    /// exec, attach, port-forward, proxy.
    Connect,
}

impl Operation {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The request a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// What the request does.
    pub operation: Operation,
    /// API group of the resource.
    pub group: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Its plural.
    pub resource: &'a str,
    /// The subresource, or empty.
    pub subresource: &'a str,
    /// Whether the resource is namespaced.
    pub namespaced: bool,
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array().is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
}

/// Whether one of `rules` (a webhook's `rules`, a policy's
/// `matchConstraints.resourceRules`) matches the request.
pub fn rules_match(rules: &Value, t: &Target) -> bool {
    rules.as_array().is_some_and(|rules| rules.iter().any(|r| rule_matches(r, t)))
}

fn rule_matches(r: &Value, t: &Target) -> bool {
    if !has(&r["operations"], t.operation.as_str()) || !has(&r["apiGroups"], t.group) || !has(&r["apiVersions"], t.version) {
        return false;
    }
    let scope_ok = match r["scope"].as_str().unwrap_or("*") {
        "Cluster" => !t.namespaced,
        "Namespaced" => t.namespaced,
        _ => true,
    };
    let resource_ok = r["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|pattern| {
            let (pr, ps) = pattern.split_once('/').unwrap_or((pattern, ""));
            let res_ok = pr == "*" || pr == t.resource;
            let sub_ok = if pattern.contains('/') { ps == "*" || ps == t.subresource } else { t.subresource.is_empty() };
            res_ok && sub_ok
        })
    });
    scope_ok && resource_ok
}

/// Defaults of a webhook configuration (kube's `SetDefaults_*Webhook`).
pub fn webhook_defaults(obj: &mut Value, mutating: bool) {
    let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else { return };
    for h in hooks {
        let Some(o) = h.as_object_mut() else { continue };
        for (k, v) in [
            ("failurePolicy", json!("Fail")),
            ("matchPolicy", json!("Equivalent")),
            ("namespaceSelector", json!({})),
            ("objectSelector", json!({})),
            ("timeoutSeconds", json!(10)),
        ] {
            o.entry(k).or_insert(v);
        }
        if mutating {
            o.entry("reinvocationPolicy").or_insert(json!("Never"));
        }
        if let Some(svc) = o.get_mut("clientConfig").and_then(|c| c.get_mut("service")).and_then(Value::as_object_mut) {
            svc.entry("port").or_insert(json!(443));
        }
        if let Some(rules) = o.get_mut("rules").and_then(Value::as_array_mut) {
            for r in rules.iter_mut().filter_map(Value::as_object_mut) {
                r.entry("scope").or_insert(json!("*"));
            }
        }
    }
}

/// Validates a webhook configuration.
pub fn validate_webhooks(obj: &Value, errs: &mut Vec<FieldError>) {
    let hooks = obj.get("webhooks").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let p = format!("webhooks[{i}]");
        let name = h["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        } else if name.split('.').count() < 3 || !crate::validation::is_dns1123_subdomain(name) {
            errs.push(FieldError::invalid(format!("{p}.name"), name, "should be a domain with at least three segments separated by dots"));
        } else if names.contains(&name) {
            errs.push(FieldError::duplicate(format!("{p}.name"), name));
        }
        names.push(name);
        match h["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => errs.push(FieldError::not_supported(format!("{p}.sideEffects"), other, &["None", "NoneOnDryRun"])),
            None => errs.push(FieldError::required(format!("{p}.sideEffects"), "must specify one of None, NoneOnDryRun")),
        }
        let versions = h["admissionReviewVersions"].as_array().cloned().unwrap_or_default();
        if !versions.iter().any(|v| v == "v1" || v == "v1beta1") {
            errs.push(FieldError::required(format!("{p}.admissionReviewVersions"), "must specify one of v1, v1beta1"));
        }
        if let Some(fp) = h["failurePolicy"].as_str() {
            if !matches!(fp, "Fail" | "Ignore") {
                errs.push(FieldError::not_supported(format!("{p}.failurePolicy"), fp, &["Fail", "Ignore"]));
            }
        }
        if let Some(t) = h["timeoutSeconds"].as_i64() {
            if !(1..=30).contains(&t) {
                errs.push(FieldError::invalid(format!("{p}.timeoutSeconds"), t, "the timeout value must be between 1 and 30 seconds"));
            }
        }
        let cc = &h["clientConfig"];
        match (cc.get("url").and_then(Value::as_str), cc.get("service")) {
            (Some(_), Some(_)) | (None, None) => errs.push(FieldError::required(format!("{p}.clientConfig"), "exactly one of url or service is required")),
            (Some(u), None) => match url::Url::parse(u) {
                Ok(parsed) if parsed.scheme() != "https" => {
                    errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), u, "'https' is the only allowed URL scheme"));
                }
                Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                    errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), u, "host must be specified"));
                }
                Ok(_) => {}
                Err(e) => errs.push(FieldError::invalid(format!("{p}.clientConfig.url"), u, format!("url must be a valid URL: {e}"))),
            },
            (None, Some(svc)) => {
                for f in ["name", "namespace"] {
                    if svc[f].as_str().is_none_or(str::is_empty) {
                        errs.push(FieldError::required(format!("{p}.clientConfig.service.{f}"), format!("service {f} is required")));
                    }
                }
            }
        }
        if let Some(ca) = cc.get("caBundle").and_then(Value::as_str) {
            if crate::unbase64(ca).is_none() {
                errs.push(FieldError::invalid(format!("{p}.clientConfig.caBundle"), ca, "must be base64"));
            }
        }
        validate_rules(&h["rules"], &format!("{p}.rules"), errs);
        validate_match_conditions(&h["matchConditions"], &format!("{p}.matchConditions"), errs);
    }
}

fn validate_rules(rules: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (j, r) in rules.as_array().into_iter().flatten().enumerate() {
        for f in ["operations", "apiGroups", "apiVersions", "resources"] {
            if r[f].as_array().is_none_or(Vec::is_empty) {
                errs.push(FieldError::required(format!("{path}[{j}].{f}"), ""));
            }
        }
        if let Some(ops) = r["operations"].as_array() {
            for (k, op) in ops.iter().enumerate() {
                let op = op.as_str().unwrap_or_default();
                if !matches!(op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
                    errs.push(FieldError::not_supported(format!("{path}[{j}].operations[{k}]"), op, &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]));
                }
            }
        }
        if let Some(scope) = r["scope"].as_str() {
            if !matches!(scope, "*" | "Cluster" | "Namespaced") {
                errs.push(FieldError::not_supported(format!("{path}[{j}].scope"), scope, &["*", "Cluster", "Namespaced"]));
            }
        }
    }
}

fn validate_match_conditions(conds: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (j, c) in conds.as_array().into_iter().flatten().enumerate() {
        if c["name"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}[{j}].name"), ""));
        }
        match c["expression"].as_str() {
            None | Some("") => errs.push(FieldError::required(format!("{path}[{j}].expression"), "")),
            Some(e) => {
                if let Err(why) = crate::cel::compile(e) {
                    errs.push(FieldError::invalid(format!("{path}[{j}].expression"), e, why));
                }
            }
        }
    }
}

/// Defaults of a ValidatingAdmissionPolicy.
pub fn policy_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.entry("failurePolicy").or_insert(json!("Fail"));
    if let Some(mc) = spec.get_mut("matchConstraints").and_then(Value::as_object_mut) {
        mc.entry("matchPolicy").or_insert(json!("Equivalent"));
        mc.entry("namespaceSelector").or_insert(json!({}));
        mc.entry("objectSelector").or_insert(json!({}));
        if let Some(rules) = mc.get_mut("resourceRules").and_then(Value::as_array_mut) {
            for r in rules.iter_mut().filter_map(Value::as_object_mut) {
                r.entry("scope").or_insert(json!("*"));
            }
        }
    }
}

/// Validates a ValidatingAdmissionPolicy: its CEL compiles.
pub fn validate_policy(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    if spec["validations"].as_array().is_none_or(Vec::is_empty) && spec["auditAnnotations"].as_array().is_none_or(Vec::is_empty) {
        errs.push(FieldError::required("spec.validations", "validations or auditAnnotations must contain at least one item"));
    }
    for (i, v) in spec["validations"].as_array().into_iter().flatten().enumerate() {
        for f in ["expression", "messageExpression"] {
            if let Some(e) = v[f].as_str() {
                if let Err(why) = crate::cel::compile(e) {
                    errs.push(FieldError::invalid(format!("spec.validations[{i}].{f}"), e, why));
                }
            }
        }
        if v["expression"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("spec.validations[{i}].expression"), "expression is not specified"));
        }
    }
    for (i, v) in spec["variables"].as_array().into_iter().flatten().enumerate() {
        if let Some(Err(why)) = v["expression"].as_str().map(crate::cel::compile) {
            errs.push(FieldError::invalid(format!("spec.variables[{i}].expression"), v["expression"].clone(), why));
        }
    }
    if spec.pointer("/matchConstraints/resourceRules").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        errs.push(FieldError::required("spec.matchConstraints.resourceRules", ""));
    }
    validate_rules(spec.pointer("/matchConstraints/resourceRules").unwrap_or(&Value::Null), "spec.matchConstraints.resourceRules", errs);
    validate_match_conditions(&spec["matchConditions"], "spec.matchConditions", errs);
    if let Some(fp) = spec["failurePolicy"].as_str() {
        if !matches!(fp, "Fail" | "Ignore") {
            errs.push(FieldError::not_supported("spec.failurePolicy", fp, &["Fail", "Ignore"]));
        }
    }
}

/// Validates a ValidatingAdmissionPolicyBinding.
pub fn validate_binding(obj: &Value, errs: &mut Vec<FieldError>) {
    if obj.pointer("/spec/policyName").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.policyName", ""));
    }
    let actions = obj.pointer("/spec/validationActions").and_then(Value::as_array).cloned().unwrap_or_default();
    if actions.is_empty() {
        errs.push(FieldError::required("spec.validationActions", "at least one validation action is required"));
    }
    for (i, a) in actions.iter().enumerate() {
        let a = a.as_str().unwrap_or_default();
        if !matches!(a, "Deny" | "Warn" | "Audit") {
            errs.push(FieldError::not_supported(format!("spec.validationActions[{i}]"), a, &["Audit", "Deny", "Warn"]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_operations_groups_resources_and_scope() {
        let rules = json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "pods/status"], "scope": "Namespaced"}]);
        let pod = Target { operation: Operation::Create, group: "", version: "v1", resource: "pods", subresource: "", namespaced: true };
        assert!(rules_match(&rules, &pod));
        assert!(rules_match(&rules, &Target { operation: Operation::Update, subresource: "status", ..pod }));
        assert!(!rules_match(&rules, &Target { subresource: "exec", ..pod }));
        assert!(!rules_match(&rules, &Target { operation: Operation::Delete, ..pod }));
        assert!(!rules_match(&rules, &Target { resource: "services", ..pod }));
        let all = json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "scope": "Cluster"}]);
        assert!(rules_match(&all, &Target { group: "rbac.authorization.k8s.io", resource: "clusterroles", namespaced: false, ..pod }));
        assert!(!rules_match(&all, &pod));
    }

    #[test]
    fn webhook_configurations_are_checked_as_kube_checks_them() {
        let mut obj = json!({"webhooks": [
            {"name": "deny", "clientConfig": {"url": "http://x"}, "rules": [{"operations": ["MAKE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
            {"name": "ok.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"], "clientConfig": {"service": {"name": "s", "namespace": "n"}}}]});
        webhook_defaults(&mut obj, true);
        assert_eq!(obj["webhooks"][1]["clientConfig"]["service"]["port"], 443);
        assert_eq!(obj["webhooks"][1]["reinvocationPolicy"], "Never");
        let mut errs = Vec::new();
        validate_webhooks(&obj, &mut errs);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"webhooks[0].name: Invalid value: \"deny\": should be a domain with at least three segments separated by dots".to_string()),
            "{text:?}"
        );
        assert!(text.contains(&"webhooks[0].clientConfig.url: Invalid value: \"http://x\": 'https' is the only allowed URL scheme".to_string()), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("webhooks[0].sideEffects: Required value")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("webhooks[0].rules[0].operations[0]: Unsupported value: \"MAKE\"")), "{text:?}");
        assert_eq!(text.len(), 5, "admissionReviewVersions too: {text:?}");
    }
}
