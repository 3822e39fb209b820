//! LimitRanger and ResourceQuota admission: a namespace's LimitRanges give
//! containers their default requests and limits and bound them (per
//! Container and per Pod), and its ResourceQuotas bound what the namespace
//! holds, each with kube's wording (`minimum cpu usage per Container is
//! 100m, but request is 50m`; `exceeded quota: q, requested: pods=1, used:
//! pods=2, limited: pods=2`). Usage is counted from the watch cache at
//! admission, under a lock per server, so two creates never both take the
//! last unit (kube keeps the count in the quota's status with a
//! compare-and-swap; the quota controller publishes the same count there).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use skiff_api::quota::{app_containers, counted, format_cpu, format_value, in_scope, quantity, show, text, usage_of};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, ResourceType};

use crate::handler::State;

/// The objects of one kind in a namespace, from the watch cache.
fn in_namespace(state: &State, group: &str, plural: &str, ns: &str) -> Vec<Value> {
    let Some(rt) = skiff_api::registry::find(group, "v1", plural) else { return Vec::new() };
    let prefix = format!("{}{ns}/", rt.key_prefix());
    state.cache.list(rt, &prefix, &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|o| o.object()).collect()
}

/// Whether a namespace has any ResourceQuota (one cache lookup, nothing copied).
pub(crate) fn has_quota(state: &State, ns: &str) -> bool {
    let Some(rt) = skiff_api::registry::find("", "v1", "resourcequotas") else { return false };
    let prefix = format!("{}{ns}/", rt.key_prefix());
    !state.cache.list(rt, &prefix, &LabelSelector::default(), &FieldSelector::default(), 1).items.is_empty()
}

fn forbidden(rt: &ResourceType, name: &str, errors: &[String]) -> ApiError {
    let why = if errors.len() == 1 { errors[0].clone() } else { format!("[{}]", errors.join(", ")) };
    let mut e = ApiError::forbidden(format!("{} {name:?} is forbidden: {why}", rt.qualified()));
    e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
    e
}

/// LimitRanger (mutating, then validating) for a pod about to be created.
pub(crate) fn limit_ranger(state: &State, rt: &ResourceType, name: &str, pod: &mut Value) -> Result<(), ApiError> {
    if rt.kind != "Pod" {
        return Ok(());
    }
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
    let ranges = in_namespace(state, "", "limitranges", &ns);
    if ranges.is_empty() {
        return Ok(());
    }
    let items: Vec<Value> = ranges.iter().flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).cloned().unwrap_or_default()).collect();
    // Defaults: what a container does not say, its LimitRange does.
    let mut set: Vec<String> = Vec::new();
    for item in items.iter().filter(|i| i.get("type").and_then(Value::as_str) == Some("Container")) {
        for key in ["initContainers", "containers"] {
            for c in pod.pointer_mut(&format!("/spec/{key}")).and_then(Value::as_array_mut).into_iter().flatten() {
                let cname = text(c.get("name"));
                for (field, from) in [("requests", "defaultRequest"), ("limits", "default")] {
                    let mut added = Vec::new();
                    for (k, v) in item.get(from).and_then(Value::as_object).into_iter().flatten() {
                        if c.pointer(&format!("/resources/{field}/{k}")).is_none() {
                            c["resources"][field][k] = v.clone();
                            added.push(k.clone());
                        }
                    }
                    if !added.is_empty() {
                        let what = if field == "requests" { "request" } else { "limit" };
                        set.push(format!("{} {what} for {} {cname}", added.join(", "), if key == "containers" { "container" } else { "init container" }));
                    }
                }
            }
        }
    }
    if !set.is_empty() {
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] = json!(format!("LimitRanger plugin set: {}", set.join("; ")));
    }
    // Bounds.
    let mut errors = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    for item in &items {
        let ty = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let subjects: Vec<(BTreeMap<String, i128>, BTreeMap<String, i128>)> = match ty {
            "Container" => app_containers(&spec)
                .into_iter()
                .map(|c| {
                    let read = |f: &str| -> BTreeMap<String, i128> {
                        c.pointer(&format!("/resources/{f}"))
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten()
                            .filter_map(|(k, v)| quantity(Some(v)).map(|q| (k.clone(), q)))
                            .collect()
                    };
                    (read("requests"), read("limits"))
                })
                .collect(),
            "Pod" => {
                let mut sum = (BTreeMap::new(), BTreeMap::new());
                for c in spec.get("containers").and_then(Value::as_array).into_iter().flatten() {
                    for (f, acc) in [("requests", &mut sum.0), ("limits", &mut sum.1)] {
                        for (k, v) in c.pointer(&format!("/resources/{f}")).and_then(Value::as_object).into_iter().flatten() {
                            *acc.entry(k.clone()).or_insert(0) += quantity(Some(v)).unwrap_or(0);
                        }
                    }
                }
                vec![sum]
            }
            _ => continue,
        };
        let show = |k: &str, q: i128| if k == "cpu" { format_cpu(q) } else { format_value(q) };
        for (requests, limits) in &subjects {
            for (k, min) in item.get("min").and_then(Value::as_object).into_iter().flatten() {
                let (min_q, min_s) = (quantity(Some(min)).unwrap_or(0), text(Some(min)));
                match requests.get(k) {
                    None => errors.push(format!("minimum {k} usage per {ty} is {min_s}.  No request is specified")),
                    Some(r) if *r < min_q => errors.push(format!("minimum {k} usage per {ty} is {min_s}, but request is {}", show(k, *r))),
                    _ => {}
                }
                if let Some(l) = limits.get(k).filter(|l| **l < min_q) {
                    errors.push(format!("minimum {k} usage per {ty} is {min_s}, but limit is {}", show(k, *l)));
                }
            }
            for (k, max) in item.get("max").and_then(Value::as_object).into_iter().flatten() {
                let (max_q, max_s) = (quantity(Some(max)).unwrap_or(0), text(Some(max)));
                match limits.get(k) {
                    None => errors.push(format!("maximum {k} usage per {ty} is {max_s}.  No limit is specified")),
                    Some(l) if *l > max_q => errors.push(format!("maximum {k} usage per {ty} is {max_s}, but limit is {}", show(k, *l))),
                    _ => {}
                }
                if let Some(r) = requests.get(k).filter(|r| **r > max_q) {
                    errors.push(format!("maximum {k} usage per {ty} is {max_s}, but request is {}", show(k, *r)));
                }
            }
            for (k, ratio) in item.get("maxLimitRequestRatio").and_then(Value::as_object).into_iter().flatten() {
                let (Some(l), Some(r)) = (limits.get(k), requests.get(k)) else { continue };
                if *r > 0 {
                    let provided = *l as f64 / *r as f64;
                    let allowed = quantity(Some(ratio)).unwrap_or(0) as f64 / 1000.0;
                    if provided > allowed {
                        errors.push(format!("{k} max limit to request ratio per {ty} is {}, but provided ratio is {provided:.6}", text(Some(ratio))));
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(forbidden(rt, name, &errors))
    }
}

/// What the namespace's objects use of a quota's resources, from the watch cache.
pub(crate) fn used(state: &State, quota: &Value, ns: &str) -> BTreeMap<String, i128> {
    let hard: Vec<String> = quota.pointer("/spec/hard").and_then(Value::as_object).map(|h| h.keys().cloned().collect()).unwrap_or_default();
    let mut objects = Vec::new();
    for rt in skiff_api::RESOURCES.iter().filter(|rt| rt.namespaced && counted(&hard, rt.kind, rt.group, rt.plural)) {
        for obj in in_namespace(state, rt.group, rt.plural, ns) {
            objects.push((rt, obj));
        }
    }
    skiff_api::quota::used(quota, objects.iter().map(|(rt, o)| (rt.kind, rt.group, rt.plural, o)))
}

/// ResourceQuota (validating): refuses an object that would take its
/// namespace over a quota.
pub(crate) fn resource_quota(state: &State, rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
    let quotas = in_namespace(state, "", "resourcequotas", &ns);
    if quotas.is_empty() {
        return Ok(());
    }
    let requested = usage_of(rt.kind, rt.group, rt.plural, obj);
    for q in &quotas {
        if rt.kind == "Pod" && !in_scope(q, obj) {
            continue;
        }
        let qname = q.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let hard: BTreeMap<String, i128> =
            q.pointer("/spec/hard").and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| quantity(Some(v)).map(|h| (k.clone(), h))).collect();
        // A quota on requests or limits needs every container to say them.
        if rt.kind == "Pod" {
            let mut missing = Vec::new();
            for res in hard.keys().filter(|k| k.starts_with("requests.") || k.starts_with("limits.") || matches!(k.as_str(), "cpu" | "memory")) {
                let (field, r) = match res.split_once('.') {
                    Some((f, r)) => (f, r),
                    None => ("requests", res.as_str()),
                };
                if r == "storage" {
                    continue;
                }
                let lacking: Vec<String> = app_containers(&obj["spec"])
                    .iter()
                    .filter(|c| c.pointer(&format!("/resources/{field}/{r}")).is_none())
                    .map(|c| text(c.get("name")))
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!("{res} for: {}", lacking.join(",")));
                }
            }
            if !missing.is_empty() {
                return Err(forbidden(rt, name, &[format!("failed quota: {qname}: must specify {}", missing.join("; "))]));
            }
        }
        let relevant: Vec<&String> = requested.keys().filter(|k| hard.contains_key(*k)).collect();
        if relevant.is_empty() {
            continue;
        }
        let used = used(state, q, &ns);
        let over: Vec<&String> = relevant.iter().copied().filter(|k| used.get(*k).copied().unwrap_or(0) + requested[*k] > hard[*k]).collect();
        if !over.is_empty() {
            let list = |f: &dyn Fn(&String) -> i128| over.iter().map(|k| format!("{k}={}", show(k, f(k)))).collect::<Vec<_>>().join(",");
            let msg = format!(
                "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                list(&|k| requested[k]),
                list(&|k| used.get(k).copied().unwrap_or(0)),
                list(&|k| hard[k])
            );
            return Err(forbidden(rt, name, &[msg]));
        }
    }
    Ok(())
}

