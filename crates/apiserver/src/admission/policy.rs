//! ValidatingAdmissionPolicy: CEL validations in the admission chain. Each
//! binding names a policy; a request its policy's `matchConstraints` (and
//! the binding's `matchResources`) select is checked by the policy's
//! `validations`, with `object`, `oldObject`, `request`, `params` (the
//! binding's `paramRef` objects), `namespaceObject` and `variables`; a
//! failure denies, warns or is only audited, as `validationActions` say.

use serde_json::{json, Value};
use skiff_api::admissionregistration::rules_match;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::ApiError;

use super::webhook::{conditions_match, selectors_match, Request};
use crate::handler::State;

fn objects(state: &State, plural: &str) -> Vec<Value> {
    let Some(rt) = skiff_api::registry::find(skiff_api::admissionregistration::GROUP, "v1", plural) else { return Vec::new() };
    state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|c| c.object()).collect()
}

/// Whether `matchConstraints` or `matchResources` select the request.
fn matches(state: &State, m: &Value, req: &Request, object: Option<&Value>) -> bool {
    if let Some(rules) = m.get("resourceRules") {
        if !rules_match(rules, &req_target(req)) {
            return false;
        }
    }
    if m.get("excludeResourceRules").is_some_and(|ex| rules_match(ex, &req_target(req))) {
        return false;
    }
    selectors_match(state, m.get("namespaceSelector"), m.get("objectSelector"), req, object)
}

fn req_target<'a>(req: &'a Request) -> skiff_api::admissionregistration::Target<'a> {
    skiff_api::admissionregistration::Target {
        operation: req.operation,
        group: req.rt.group,
        version: req.rt.version,
        resource: req.rt.plural,
        subresource: req.subresource,
        namespaced: req.rt.namespaced,
    }
}

/// The params a binding names: `None` when the policy takes none.
fn params(state: &State, policy: &Value, binding: &Value, req: &Request) -> Result<Option<Vec<Value>>, String> {
    let Some(kind) = policy.pointer("/spec/paramKind") else { return Ok(None) };
    let api_version = kind["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind_name = kind["kind"].as_str().unwrap_or_default();
    let custom = state.crds.snapshot(&state.cache);
    let rt = skiff_api::RESOURCES
        .iter()
        .chain(custom.types.iter())
        .find(|r| r.group == group && r.version == version && r.kind == kind_name)
        .ok_or_else(|| format!("failed to find resource for param kind {api_version}, Kind={kind_name}"))?;
    let Some(pref) = binding.pointer("/spec/paramRef") else { return Err("no paramRef in the binding".into()) };
    let ns = if rt.namespaced { pref["namespace"].as_str().or(req.namespace).map(String::from) } else { None };
    let prefix = match &ns {
        Some(ns) => format!("{}{ns}/", rt.key_prefix()),
        None => rt.key_prefix(),
    };
    let selector = match pref.get("selector") {
        Some(s) => LabelSelector::from_label_selector(s)?,
        None => LabelSelector::default(),
    };
    let found: Vec<Value> = state
        .cache
        .list(rt, &prefix, &selector, &FieldSelector::default(), 0)
        .items
        .iter()
        .map(|c| c.object())
        .filter(|o| pref["name"].as_str().is_none_or(|n| o.pointer("/metadata/name").and_then(Value::as_str) == Some(n)))
        .collect();
    if found.is_empty() && pref["parameterNotFoundAction"].as_str().unwrap_or("Deny") == "Deny" {
        return Err("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".into());
    }
    Ok(Some(found))
}

/// Runs every bound policy that selects the request.
pub(crate) fn validate(state: &State, req: &Request, object: Option<&Value>) -> Result<Vec<String>, ApiError> {
    if req.rt.group == skiff_api::admissionregistration::GROUP && req.rt.custom.is_none() {
        return Ok(Vec::new());
    }
    let bindings = objects(state, "validatingadmissionpolicybindings");
    if bindings.is_empty() {
        return Ok(Vec::new());
    }
    let policies = objects(state, "validatingadmissionpolicies");
    let mut warnings = Vec::new();
    for binding in &bindings {
        let bname = binding.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let pname = binding.pointer("/spec/policyName").and_then(Value::as_str).unwrap_or_default();
        let Some(policy) = policies.iter().find(|p| p.pointer("/metadata/name").and_then(Value::as_str) == Some(pname)) else { continue };
        let spec = &policy["spec"];
        if !matches(state, spec.get("matchConstraints").unwrap_or(&Value::Null), req, object) {
            continue;
        }
        if let Some(mr) = binding.pointer("/spec/matchResources") {
            if !matches(state, mr, req, object) {
                continue;
            }
        }
        let ignore = spec["failurePolicy"].as_str() == Some("Ignore");
        let actions: Vec<&str> =
            binding.pointer("/spec/validationActions").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let deny = |message: String, code: u16, reason: &'static str| -> ApiError {
            let text = format!("ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request: {message}");
            let mut e = ApiError::new(code, reason, text.clone());
            // kubectl prints an Invalid error's causes (`is invalid: : …`).
            e.details = Some(json!({"name": req.name, "kind": req.rt.plural, "group": req.rt.group, "causes": [{"message": text}]}));
            e
        };
        let mut failures: Vec<(String, u16, &'static str)> = Vec::new();
        let mut fail = |message: String, code: u16, reason: &'static str| failures.push((message, code, reason));
        let request = req.review_request("", object);
        let null = Value::Null;
        let namespace_object = req
            .namespace
            .and_then(|ns| {
                let nsrt = skiff_api::registry::find("", "v1", "namespaces")?;
                state.cache.list(nsrt, &nsrt.key(None, ns), &LabelSelector::default(), &FieldSelector::default(), 0).items.first().map(|c| c.object())
            })
            .unwrap_or(Value::Null);
        let param_sets: Vec<Value> = match params(state, policy, binding, req) {
            Ok(None) => vec![Value::Null],
            Ok(Some(p)) => p,
            Err(e) => {
                if !ignore {
                    fail(e, 403, "Forbidden");
                }
                Vec::new()
            }
        };
        for param in &param_sets {
            let mut vars: Vec<(&str, &Value)> = vec![
                ("object", object.unwrap_or(&null)),
                ("oldObject", req.old.unwrap_or(&null)),
                ("request", &request),
                ("params", param),
                ("namespaceObject", &namespace_object),
            ];
            // `variables`: each a name for an expression's value, in order,
            // the later ones able to read the earlier.
            let mut variables = serde_json::Map::new();
            let mut variables_value = Value::Object(variables.clone());
            for v in spec["variables"].as_array().into_iter().flatten() {
                let (Some(name), Some(expr)) = (v["name"].as_str(), v["expression"].as_str()) else { continue };
                let mut with = vars.clone();
                with.push(("variables", &variables_value));
                if let Ok(val) = skiff_api::cel::eval_json(expr, &with) {
                    variables.insert(name.to_string(), val);
                    variables_value = Value::Object(variables.clone());
                }
            }
            vars.push(("variables", &variables_value));
            match conditions_match(spec.get("matchConditions"), &vars) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    if !ignore {
                        fail(e, 403, "Forbidden");
                    }
                    continue;
                }
            }
            for v in spec["validations"].as_array().into_iter().flatten() {
                let expr = v["expression"].as_str().unwrap_or("true");
                match skiff_api::cel::eval_bool(expr, &vars) {
                    Ok(true) => {}
                    Ok(false) => {
                        let message = v["messageExpression"]
                            .as_str()
                            .and_then(|m| skiff_api::cel::eval_string(m, &vars).ok())
                            .filter(|m| !m.trim().is_empty())
                            .or_else(|| v["message"].as_str().map(String::from))
                            .unwrap_or_else(|| format!("failed expression: {expr}"));
                        let (code, reason) = match v["reason"].as_str().unwrap_or("Invalid") {
                            "Unauthorized" => (401, "Unauthorized"),
                            "Forbidden" => (403, "Forbidden"),
                            "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
                            _ => (422, "Invalid"),
                        };
                        fail(message, code, reason);
                    }
                    Err(e) if !ignore => fail(format!("expression '{expr}' resulted in error: {e}"), 403, "Forbidden"),
                    Err(_) => {}
                }
            }
        }
        for (message, code, reason) in failures {
            if actions.contains(&"Warn") {
                warnings.push(format!("Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {message}"));
            }
            if actions.contains(&"Deny") {
                return Err(deny(message, code, reason));
            }
        }
    }
    Ok(warnings)
}
