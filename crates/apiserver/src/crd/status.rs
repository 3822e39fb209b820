//! The CRD controllers kube-apiserver runs in process: naming (the
//! `NamesAccepted` condition and `acceptedNames`), establishing
//! (`Established`, `storedVersions`) and the cleanup finalizer (a deleted
//! CRD's objects are deleted, then the CRD goes).
//!
//! Each API server runs them from its watch cache; their writes are
//! compare-and-swap updates that agree, so several servers may.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::apiextensions::{self, CLEANUP_FINALIZER};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::ApiError;
use tokio::sync::broadcast;

use crate::cache::Message;
use crate::handler::State;
use crate::write::{set_condition, DeleteOptions, Scope};

/// How soon a CRD whose objects are not all gone yet is looked at again.
const CLEANUP_RETRY: Duration = Duration::from_secs(1);

/// Follows the CRDs until shutdown, reconciling each one that changes.
pub(crate) async fn run(state: Arc<State>) {
    let Some(crd_rt) = super::crd_type() else { return };
    let mut shutdown = state.shutdown.clone();
    loop {
        let sub = match state.cache.subscribe(crd_rt, &crd_rt.key_prefix(), None) {
            Ok(s) => s,
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        for c in &sub.initial {
            if let Some(name) = c.object().pointer("/metadata/name").and_then(Value::as_str) {
                due.insert(name.to_string(), tokio::time::Instant::now());
            }
        }
        let mut live = sub.live;
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                msg = live.recv() => match msg {
                    Ok(Message::Event(ev)) => {
                        if let Some(name) = ev.object.object().pointer("/metadata/name").and_then(Value::as_str) {
                            due.insert(name.to_string(), tokio::time::Instant::now());
                        }
                    }
                    Ok(Message::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = async { if let Some(at) = next { tokio::time::sleep_until(at).await } else { std::future::pending().await } } => {
                    let now = tokio::time::Instant::now();
                    let ready: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
                    for name in ready {
                        due.remove(&name);
                        match reconcile(&state, &name).await {
                            Ok(Some(after)) => { due.insert(name, now + after); }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(crd = %name, error = %e.message, "CustomResourceDefinition reconcile failed");
                                due.insert(name, now + CLEANUP_RETRY);
                            }
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Brings one CRD's status up to date, or cleans up after its deletion.
/// `Some(delay)` asks to be called again.
async fn reconcile(state: &State, name: &str) -> Result<Option<Duration>, ApiError> {
    let Some(crd_rt) = super::crd_type() else { return Ok(None) };
    let Some(kv) = state.store.get(&crd_rt.key(None, name)).await.map_err(|e| ApiError::internal(e.to_string()))? else { return Ok(None) };
    let crd: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
    if crd.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return cleanup(state, &crd).await;
    }
    let others: Vec<Value> =
        state.cache.list(crd_rt, &crd_rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|c| c.object()).collect();
    let conflict = apiextensions::name_conflict(&crd, &others);
    let wanted = status_of(&crd, conflict.as_deref());
    if crd.get("status") == Some(&wanted) {
        return Ok(None);
    }
    change(state, name, Scope::Status, |cur, next| next["status"] = status_of(cur, conflict.as_deref())).await?;
    Ok(None)
}

/// Writes a CRD as `edit` changes it (the stored object, the next one).
async fn change(state: &State, name: &str, scope: Scope, edit: impl Fn(&Value, &mut Value)) -> Result<(), ApiError> {
    let Some(crd_rt) = super::crd_type() else { return Ok(()) };
    crate::write::server_update(state, crd_rt, name, scope, edit).await
}

/// The status a live CRD should have: its names accepted unless another
/// CRD holds them, Established once they are, its storage version among
/// `storedVersions`.
fn status_of(crd: &Value, conflict: Option<&str>) -> Value {
    let mut status = crd.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    match conflict {
        None => {
            status["acceptedNames"] = crd.pointer("/spec/names").cloned().unwrap_or_default();
            set_condition(&mut conditions, "NamesAccepted", true, "NoConflicts", "no conflicts found");
            set_condition(&mut conditions, "Established", true, "InitialNamesAccepted", "the initial names have been accepted");
        }
        Some(why) => {
            if status.get("acceptedNames").is_none() {
                status["acceptedNames"] = json!({"plural": "", "kind": ""});
            }
            set_condition(&mut conditions, "NamesAccepted", false, "Conflict", why);
            if !apiextensions::condition(crd, "Established") {
                set_condition(&mut conditions, "Established", false, "NotAccepted", "not all names are accepted");
            }
        }
    }
    status["conditions"] = json!(conditions);
    let mut stored: Vec<Value> = status["storedVersions"].as_array().cloned().unwrap_or_default();
    if let Some(v) = apiextensions::storage_version(crd) {
        if !stored.iter().any(|s| s == v) && (conflict.is_none() || apiextensions::condition(crd, "Established")) {
            stored.push(json!(v));
        }
    }
    status["storedVersions"] = json!(stored);
    status
}

/// A deleted CRD: marks it Terminating, deletes its objects (their own
/// finalizers are honoured), and once none is left removes the cleanup
/// finalizer, which lets the CRD go.
async fn cleanup(state: &State, crd: &Value) -> Result<Option<Duration>, ApiError> {
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let has_finalizer = crd.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
    if !has_finalizer {
        return Ok(None);
    }
    if !crd.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Terminating" && c["status"] == "True")) {
        change(state, &name, Scope::Status, |_, next| {
            let mut conditions: Vec<Value> = next.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            set_condition(&mut conditions, "Terminating", true, "InstanceDeletionInProgress", "CustomResource deletion is in progress");
            next["status"]["conditions"] = json!(conditions);
        })
        .await?;
    }
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
    let plural = crd
        .pointer("/status/acceptedNames/plural")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .or_else(|| crd.pointer("/spec/names/plural").and_then(Value::as_str))
        .unwrap_or_default();
    // Any served version names the objects' keys (they share the storage).
    let served: Vec<skiff_api::ResourceType> = apiextensions::served_types(crd);
    if let Some(rt) = served.first().filter(|_| !plural.is_empty()) {
        let prefix = format!("/registry/{group}/{plural}/");
        let page = state
            .store
            .list(&prefix, skiff_store::ListOptions { revision: None, start_after: None, limit: 0 })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !page.items.is_empty() {
            for kv in &page.items {
                let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else { continue };
                let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
                let obj_name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                if obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
                    continue;
                }
                match crate::write::delete(state, rt, ns, obj_name, &DeleteOptions::default()).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Some(CLEANUP_RETRY));
        }
    }
    change(state, &name, Scope::Main, |_, next| {
        if let Some(f) = next.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
            f.retain(|x| x != CLEANUP_FINALIZER);
        }
    })
    .await?;
    Ok(None)
}
