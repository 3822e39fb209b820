//! `POST pods/{name}/eviction` (policy/v1 `Eviction`): a delete that
//! respects the PodDisruptionBudget covering the pod, as kube-apiserver's
//! eviction REST does: 429 `TooManyRequests` while the budget allows no
//! disruption (so `kubectl drain` waits and retries), else the budget's
//! `disruptionsAllowed` is spent (with the pod recorded in
//! `disruptedPods`, a compare-and-swap on the budget) and the pod deleted.

use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, ResourceType};

use crate::handler::State;
use crate::respond::{json_response, now, Resp};
use crate::write::{DeleteOptions, Scope, WriteOptions};

const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn too_many(cause: String) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", VIOLATES);
    e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}));
    e
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Evicts `name`; `eviction` is the decoded `Eviction` body.
pub(crate) async fn evict(state: &State, pods: &ResourceType, ns: &str, name: &str, eviction: &Value, opts: &WriteOptions) -> Result<Resp, ApiError> {
    if let Some(n) = eviction.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty() && *n != name) {
        return Err(ApiError::bad_request(format!("name in URL does not match name in Eviction object: {name} != {n}")));
    }
    let del_body = eviction.get("deleteOptions").map(|d| d.to_string()).unwrap_or_default();
    let del = DeleteOptions::parse(del_body.as_bytes(), &Default::default())?;
    let kv = state.store.get(&pods.key(Some(ns), name)).await.map_err(|e| crate::respond::store_err(pods, name, e))?;
    let pod: Value = match kv {
        Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?,
        None => return Err(ApiError::not_found(pods, name)),
    };
    // A finished, pending or already deleting pod disrupts nothing.
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    let ignore_budget = matches!(phase, "Succeeded" | "Failed" | "Pending") || pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    if !ignore_budget {
        spend_budget(state, ns, name, &pod, opts).await?;
    }
    if !opts.dry_run {
        crate::write::delete(state, pods, Some(ns), name, &del).await?;
    }
    Ok(json_response(201, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
}

/// Checks the pod's budget and takes one disruption from it.
async fn spend_budget(state: &State, ns: &str, name: &str, pod: &Value, opts: &WriteOptions) -> Result<(), ApiError> {
    let Some(pdbs) = skiff_api::registry::find("policy", "v1", "poddisruptionbudgets") else { return Ok(()) };
    let prefix = format!("{}{ns}/", pdbs.key_prefix());
    let everything = LabelSelector::parse("").map_err(ApiError::internal)?;
    let no_fields = FieldSelector::parse("", pdbs.kind).map_err(ApiError::internal)?;
    let covering: Vec<Value> = state
        .cache
        .list(pdbs, &prefix, &everything, &no_fields, usize::MAX)
        .items
        .iter()
        .map(|c| c.object())
        .filter(|pdb| {
            // An empty selector selects every pod in policy/v1.
            let sel = pdb.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            LabelSelector::from_label_selector(&sel).is_ok_and(|s| s.matches(pod))
        })
        .collect();
    let pdb = match covering.as_slice() {
        [] => return Ok(()),
        [one] => one,
        _ => return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")),
    };
    let pdb_name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let ready = is_ready(pod);
    let always_allow = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
    if !ready && always_allow {
        return Ok(());
    }
    let status_opts = WriteOptions { scope: Scope::Status, ..opts.clone() };
    crate::write::update(
        state,
        pdbs,
        Some(ns),
        &pdb_name,
        |cur| {
            let st = &cur["status"];
            let generation = cur.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            if st.get("observedGeneration").and_then(Value::as_i64).unwrap_or(0) < generation {
                return Err(too_many(format!("The disruption budget {pdb_name} is still being processed by the server.")));
            }
            let healthy = st.get("currentHealthy").and_then(Value::as_i64).unwrap_or(0);
            let desired = st.get("desiredHealthy").and_then(Value::as_i64).unwrap_or(0);
            // An unready pod may go while the budget is met (the default
            // IfHealthyBudget policy): it is not counted as healthy.
            if !ready {
                return if healthy >= desired {
                    Ok(cur.clone())
                } else {
                    Err(too_many(format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently")))
                };
            }
            let allowed = st.get("disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
            if allowed <= 0 {
                return Err(too_many(format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently")));
            }
            let mut next = cur.clone();
            next["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if !next["status"]["disruptedPods"].is_object() {
                next["status"]["disruptedPods"] = json!({});
            }
            next["status"]["disruptedPods"][name] = json!(now());
            if let Some(m) = next["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(next)
        },
        &status_opts,
    )
    .await?;
    Ok(())
}
