//! `GET /api/v1/componentstatuses` (`kubectl get cs`): the health of the
//! scheduler, the controller manager and the store, as kube-apiserver
//! reports it (deprecated there since 1.19, still read by tools and the
//! conformance suite). kube-apiserver probes each component's `/healthz`;
//! skiff's components may run in other processes with no port of their
//! own, so a component is healthy while its leader Lease is renewed.

use serde_json::{json, Value};
use skiff_api::{table, ApiError};

use crate::handler::State;
use crate::respond::{json_response, with_warnings, Resp};

const DEPRECATED: &str = "v1 ComponentStatus is deprecated in v1.19+";

fn status(name: &str, healthy: Result<(), String>) -> Value {
    let condition = match healthy {
        Ok(()) => json!({"type": "Healthy", "status": "True", "message": "ok"}),
        Err(e) => json!({"type": "Healthy", "status": "False", "message": "", "error": e}),
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name, "creationTimestamp": null}, "conditions": [condition]})
}

/// Whether the named leader Lease in kube-system is held and renewed.
async fn leader(state: &State, lease: &str) -> Result<(), String> {
    let rt = skiff_api::registry::find("coordination.k8s.io", "v1", "leases").ok_or("no Lease resource")?;
    let kv = state
        .store
        .get(&rt.key(Some("kube-system"), lease))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no leader: Lease kube-system/{lease} does not exist"))?;
    let l: Value = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
    let renewed = l.pointer("/spec/renewTime").and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let duration = l.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(15);
    match renewed {
        Some(t) if (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds() <= duration => Ok(()),
        Some(t) => Err(format!("the leader last renewed Lease kube-system/{lease} at {}", t.to_rfc3339())),
        None => Err(format!("Lease kube-system/{lease} has no renewTime")),
    }
}

async fn all(state: &State) -> Vec<Value> {
    let store = state.store.get("/healthz").await.map(|_| ()).map_err(|e| e.to_string());
    vec![
        status("scheduler", leader(state, "kube-scheduler").await),
        status("controller-manager", leader(state, "kube-controller-manager").await),
        status("etcd-0", store),
    ]
}

/// Serves `componentstatuses` and `componentstatuses/{name}`.
pub(crate) async fn serve(state: &State, name: Option<&str>, accept: &str) -> Result<Resp, ApiError> {
    let items = all(state).await;
    let warn = [DEPRECATED.to_string()];
    if let Some(name) = name {
        let item = items.into_iter().find(|i| i.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
        let item = item.ok_or_else(|| ApiError::new(404, "NotFound", format!("componentstatuses \"{name}\" not found")))?;
        return Ok(with_warnings(json_response(200, &item), &warn));
    }
    if crate::read::wants_table(accept) {
        let refs: Vec<&Value> = items.iter().collect();
        let t = table::table("ComponentStatus", &refs, table::IncludeObject::None, "", None, chrono::Utc::now());
        return Ok(with_warnings(json_response(200, &t), &warn));
    }
    Ok(with_warnings(json_response(200, &json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})), &warn))
}
