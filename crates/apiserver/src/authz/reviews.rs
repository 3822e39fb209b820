//! `authorization.k8s.io/v1` reviews: SubjectAccessReview (may this user
//! do this?), LocalSubjectAccessReview (the same within a namespace),
//! SelfSubjectAccessReview (`kubectl auth can-i`) and
//! SelfSubjectRulesReview (`kubectl auth can-i --list`), answered by the
//! same authorizer chain that guards requests.

use serde_json::{json, Value};
use skiff_api::rbac::{Attributes, UserInfo};
use skiff_api::ApiError;

use super::Decision;
use crate::handler::State;
use crate::respond::{json_response, Resp};

/// Which review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Review {
    /// `subjectaccessreviews`: about the user the spec names.
    Subject,
    /// `namespaces/NS/localsubjectaccessreviews`.
    Local,
    /// `selfsubjectaccessreviews`: about the requester.
    SelfAccess,
}

impl Review {
    fn kind(self) -> &'static str {
        match self {
            Review::Subject => "SubjectAccessReview",
            Review::Local => "LocalSubjectAccessReview",
            Review::SelfAccess => "SelfSubjectAccessReview",
        }
    }
}

fn invalid(kind: &str, field: &str, value: Value, detail: &str) -> ApiError {
    ApiError::new(422, "Invalid", format!("{kind}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {detail}"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default()
}

/// Answers an access review posted by `requester`.
pub(crate) fn access(state: &State, kind: Review, namespace: Option<&str>, requester: &UserInfo, mut review: Value) -> Result<Resp, ApiError> {
    let name = kind.kind();
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    if resource.is_some() == non_resource.is_some() {
        return Err(invalid(name, "spec.resourceAttributes", json!("null"), "exactly one of nonResourceAttributes or resourceAttributes must be specified"));
    }
    let user = match kind {
        Review::SelfAccess => requester.clone(),
        Review::Subject | Review::Local => {
            let user = UserInfo {
                name: spec.get("user").and_then(Value::as_str).unwrap_or_default().to_string(),
                groups: strings(spec.get("groups")),
                extra: spec
                    .get("extra")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(Some(v)))).collect())
                    .unwrap_or_default(),
                uid: spec.get("uid").and_then(Value::as_str).unwrap_or_default().to_string(),
            };
            if user.name.is_empty() && user.groups.is_empty() {
                return Err(invalid(name, "spec.user", json!(""), "at least one of user or group must be specified"));
            }
            user
        }
    };
    let get = |v: Option<&Value>, f: &str| v.and_then(|v| v.get(f)).and_then(Value::as_str).unwrap_or_default().to_string();
    let attrs = match resource {
        Some(r) => {
            let ns = get(Some(r), "namespace");
            if kind == Review::Local && Some(ns.as_str()) != namespace {
                return Err(invalid(name, "spec.resourceAttributes.namespace", json!(ns), "must match metadata.namespace"));
            }
            Attributes {
                verb: get(Some(r), "verb"),
                resource_request: true,
                group: get(Some(r), "group"),
                version: get(Some(r), "version"),
                resource: get(Some(r), "resource"),
                subresource: get(Some(r), "subresource"),
                name: get(Some(r), "name"),
                namespace: ns,
                path: String::new(),
            }
        }
        None => Attributes { verb: get(non_resource, "verb"), path: get(non_resource, "path"), ..Default::default() },
    };
    let status = match state.authorizer.authorize(&state.cache, &user, &attrs) {
        Decision::Allow(why) => json!({"allowed": true, "reason": why.text(&user)}),
        Decision::NoOpinion(why) if why.is_empty() => json!({"allowed": false}),
        Decision::NoOpinion(why) => json!({"allowed": false, "reason": why}),
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!(name);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    Ok(json_response(201, &review))
}

/// `selfsubjectrulesreviews`: every rule that applies to the requester in
/// `spec.namespace`.
pub(crate) fn rules(state: &State, requester: &UserInfo, mut review: Value) -> Result<Resp, ApiError> {
    let ns = review.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
    if ns.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "SelfSubjectRulesReview.authorization.k8s.io \"\" is invalid: spec.namespace: Required value: namespace is required",
        ));
    }
    let mut rules = state.authorizer.rbac.index(&state.cache).rules_for(requester, &ns);
    if requester.groups.iter().any(|g| g == super::MASTERS) {
        let all = vec!["*".to_string()];
        rules.push(skiff_api::rbac::PolicyRule { verbs: all.clone(), groups: all.clone(), resources: all.clone(), ..Default::default() });
        rules.push(skiff_api::rbac::PolicyRule { verbs: all.clone(), urls: all, ..Default::default() });
    }
    if super::node::node_name(requester).is_some() {
        rules.extend(super::node::rules().iter().cloned());
    }
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for r in rules {
        if r.urls.is_empty() {
            let mut v = json!({"verbs": r.verbs, "apiGroups": r.groups, "resources": r.resources});
            if !r.names.is_empty() {
                v["resourceNames"] = json!(r.names);
            }
            resource_rules.push(v);
        } else {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.urls}));
        }
    }
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectRulesReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
    Ok(json_response(201, &review))
}
