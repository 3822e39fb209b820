//! The Deployment controller: one ReplicaSet per pod template (named by a
//! hash of the template), rolled with `RollingUpdate` (new scaled up within
//! `maxSurge`, old scaled down keeping `maxUnavailable`) or `Recreate`;
//! revision annotations for `kubectl rollout history|undo`; history trimmed
//! to `revisionHistoryLimit`; status and the Available/Progressing
//! conditions `kubectl rollout status` reads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::{json, Value};
use skiff_runtime::events::{EventType, Recorder};
use skiff_runtime::selectors::label_selector_matches;
use tokio::sync::watch;

use crate::util::{controller_ref, controller_uid, on_shutdown, retry};
use crate::Error;

/// The annotation carrying a rollout's revision number.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

struct Ctx {
    client: kube::Client,
    replicasets: Store<ReplicaSet>,
    recorder: Recorder,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let rs_stream = informers.replicasets.objects();
    let replicasets = informers.replicasets.store();
    let ctx = Arc::new(Ctx { client: client.clone(), replicasets, recorder: Recorder::new(client.clone(), "deployment-controller") });
    Controller::new(Api::<Deployment>::all(client), watcher::Config::default())
        .owns_stream(rs_stream)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// FNV-1a, 32 bit: the hash Kubernetes names template ReplicaSets by.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// The `pod-template-hash` of a template: FNV-1a of its JSON (and the
/// collision count), rendered in Kubernetes' vowel-free alphabet.
pub fn template_hash(template: &Value, collisions: i32) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if collisions > 0 {
        bytes.extend_from_slice(collisions.to_string().as_bytes());
    }
    fnv32a(&bytes).to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// A template without the hash label, for comparing.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            if let Some(m) = t.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
            }
        }
    }
    t
}

/// Resolves an int-or-percent against `total` (rounding up or down).
pub fn resolve(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let owned = IntOrString::String(default.to_string());
    match v.unwrap_or(&owned) {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

async fn scale(ctx: &Ctx, d: &Deployment, rs: &ReplicaSet, to: i32, max_replicas: i32) -> Result<(), Error> {
    let from = spec_replicas(rs);
    if from == to {
        return Ok(());
    }
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = json!({"metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": desired.to_string(),
        "deployment.kubernetes.io/max-replicas": max_replicas.to_string()}}, "spec": {"replicas": to}});
    Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let verb = if to > from { "up" } else { "down" };
    ctx.recorder.record(d, EventType::Normal, "ScalingReplicaSet", &format!("Scaled {verb} replica set {name} from {from} to {to}"));
    Ok(())
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let replicas = spec.replicas.unwrap_or(1);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);

    let mut owned: Vec<Arc<ReplicaSet>> = Vec::new();
    for rs in ctx.replicasets.state().into_iter().filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str())) {
        match controller_uid(&*rs) {
            Some(u) if u == uid => owned.push(rs),
            None if rs.metadata.deletion_timestamp.is_none()
                && label_selector_matches(&spec.selector, rs.metadata.labels.as_ref().unwrap_or(&Default::default())) =>
            {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(&*d));
                let rname = rs.metadata.name.clone().unwrap_or_default();
                if rs_api.patch(&rname, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"ownerReferences": refs}}))).await.is_ok() {
                    owned.push(rs);
                }
            }
            _ => {}
        }
    }
    owned.retain(|r| r.metadata.deletion_timestamp.is_none());
    owned.sort_by_key(|r| (r.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0), r.metadata.name.clone()));
    let template = serde_json::to_value(&spec.template)?;
    let new_rs = owned
        .iter()
        .find(|r| {
            r.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| serde_json::to_value(t).ok())
                .is_some_and(|t| without_hash(&t) == without_hash(&template))
        })
        .cloned();
    let old: Vec<Arc<ReplicaSet>> = owned.iter().filter(|r| new_rs.as_ref().is_none_or(|n| n.metadata.uid != r.metadata.uid)).cloned().collect();
    let max_old_revision = old.iter().map(|r| revision_of(r)).max().unwrap_or(0);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rolling = spec.strategy.as_ref().and_then(|s| s.rolling_update.clone()).unwrap_or_default();
    let surge = if recreate { 0 } else { resolve(rolling.max_surge.as_ref(), "25%", replicas, true) };
    let mut unavailable = if recreate { replicas } else { resolve(rolling.max_unavailable.as_ref(), "25%", replicas, false) };
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let mut created_now = false;

    let new_rs = match new_rs {
        Some(rs) => {
            // A template that comes back (rollout undo) becomes the newest revision.
            if revision_of(&rs) <= max_old_revision && !paused {
                let rname = rs.metadata.name.clone().unwrap_or_default();
                let p = json!({"metadata": {"annotations": {REVISION: (max_old_revision + 1).to_string()}}});
                rs_api.patch(&rname, &PatchParams::default(), &Patch::Merge(&p)).await?;
            }
            Some(rs)
        }
        None if paused => None,
        None => {
            let collisions = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
            let hash = template_hash(&template, collisions);
            let old_total: i32 = old.iter().map(|r| spec_replicas(r)).sum();
            let start = if recreate || old.is_empty() {
                if recreate && old_total > 0 {
                    0
                } else {
                    replicas
                }
            } else {
                (replicas + surge - old_total).clamp(0, replicas)
            };
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut selector = serde_json::to_value(&spec.selector)?;
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut labels = t["metadata"]["labels"].clone();
            labels[HASH_LABEL] = json!(hash);
            let mut annotations = json!({REVISION: (max_old_revision + 1).to_string(), "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                                         "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string()});
            if let Some(cause) = d.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/change-cause")) {
                annotations["kubernetes.io/change-cause"] = json!(cause);
            }
            let rs: ReplicaSet = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels, "annotations": annotations,
                             "ownerReferences": [controller_ref(&*d)]},
                "spec": {"replicas": start, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": t},
            }))?;
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    ctx.recorder.record(&*d, EventType::Normal, "ScalingReplicaSet", &format!("Scaled up replica set {}-{hash} from 0 to {start}", name));
                    created_now = true;
                    Some(Arc::new(created))
                }
                Err(e) if crate::util::is_conflict(&e) => {
                    // Someone else's ReplicaSet has this name: count a collision.
                    let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
                    dapi.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"collisionCount": collisions + 1}}))).await?;
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };

    if !paused {
        if let Some(new_rs) = &new_rs {
            if recreate {
                for r in &old {
                    scale(&ctx, &d, r, 0, replicas).await?;
                }
                let old_running: i32 = old.iter().map(|r| r.status.as_ref().map(|s| s.replicas).unwrap_or(0)).sum();
                if old_running == 0 {
                    scale(&ctx, &d, new_rs, replicas, replicas).await?;
                }
            } else if !created_now {
                // Scale the new ReplicaSet up within maxSurge…
                let total: i32 = owned.iter().map(|r| spec_replicas(r)).sum();
                let cur_new = spec_replicas(new_rs);
                let target = if cur_new > replicas {
                    replicas
                } else {
                    let room = (replicas + surge - total).max(0);
                    cur_new + room.min(replicas - cur_new)
                };
                scale(&ctx, &d, new_rs, target, replicas + surge).await?;
                // …and the old ones down while keeping enough available.
                let old_total: i32 = old.iter().map(|r| spec_replicas(r)).sum();
                if old_total > 0 {
                    let all_total = total - cur_new + target;
                    let min_available = replicas - unavailable;
                    let new_unavailable = target - available(new_rs);
                    let mut budget = all_total - min_available - new_unavailable;
                    let mut down: Vec<(Arc<ReplicaSet>, i32)> = old.iter().map(|r| (r.clone(), spec_replicas(r))).collect();
                    // Unhealthy replicas go first: removing them costs no availability.
                    for (r, to) in down.iter_mut() {
                        if budget <= 0 {
                            break;
                        }
                        let unhealthy = (*to - available(r)).max(0).min(budget);
                        *to -= unhealthy;
                        budget -= unhealthy;
                    }
                    let available_total: i32 = owned.iter().map(|r| available(r)).sum();
                    let mut healthy_budget = (available_total - min_available).max(0).min(budget.max(0));
                    for (r, to) in down.iter_mut() {
                        let cut = (*to).min(healthy_budget).min(available(r));
                        *to -= cut;
                        healthy_budget -= cut;
                    }
                    for (r, to) in &down {
                        scale(&ctx, &d, r, *to, replicas + surge).await?;
                    }
                }
            }
        }
        // Trim history: old ReplicaSets with nothing left, oldest first.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&Arc<ReplicaSet>> = old.iter().filter(|r| spec_replicas(r) == 0 && r.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0).collect();
        if empty.len() > limit {
            for r in &empty[..empty.len() - limit] {
                let rname = r.metadata.name.clone().unwrap_or_default();
                match rs_api.delete(&rname, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if crate::util::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    sync_status(&ctx, &d, &owned, new_rs.as_deref(), replicas, unavailable, created_now).await
}

async fn sync_status(
    ctx: &Ctx,
    d: &Deployment,
    owned: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
    replicas: i32,
    max_unavailable: i32,
    created_now: bool,
) -> Result<Action, Error> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let sum = |f: fn(&ReplicaSet) -> i32| owned.iter().map(|r| f(r)).sum::<i32>();
    let total = sum(|r| r.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(|r| r.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let avail = sum(available);
    let updated = new_rs.and_then(|r| r.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
    let new_name = new_rs.and_then(|r| r.metadata.name.clone()).unwrap_or_default();
    let now = skiff_runtime::now();
    let prev = d.status.clone().unwrap_or_default();
    let prev_cond = |t: &str| prev.conditions.iter().flatten().find(|c| c.type_ == t).cloned();
    let complete = updated == replicas && total == replicas && avail == replicas && new_rs.is_some_and(|r| spec_replicas(r) == replicas);
    let (pstatus, preason, pmsg) = if complete {
        ("True", "NewReplicaSetAvailable", format!("ReplicaSet {new_name:?} has successfully progressed."))
    } else if created_now {
        ("True", "NewReplicaSetCreated", format!("Created new replica set {new_name:?}"))
    } else {
        ("True", "ReplicaSetUpdated", format!("ReplicaSet {new_name:?} is progressing."))
    };
    let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600) as i64;
    let progressed =
        prev.updated_replicas.unwrap_or(0) != updated || prev.available_replicas.unwrap_or(0) != avail || prev.replicas.unwrap_or(0) != total || created_now;
    let prev_progress = prev_cond("Progressing");
    let last_update = match &prev_progress {
        Some(c) if !progressed && c.reason.as_deref() == Some(preason) => c.last_update_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| now.clone()),
        _ => now.clone(),
    };
    let stalled = !complete && d.spec.as_ref().and_then(|s| s.paused) != Some(true) && {
        let since: Option<k8s_openapi::jiff::Timestamp> = last_update.parse().ok();
        since.is_some_and(|s| k8s_openapi::jiff::Timestamp::now().as_second() - s.as_second() > deadline)
    };
    let (pstatus, preason, pmsg) =
        if stalled { ("False", "ProgressDeadlineExceeded", format!("ReplicaSet {new_name:?} has timed out progressing.")) } else { (pstatus, preason, pmsg) };
    let transition = |t: &str, status: &str| {
        prev_cond(t).filter(|c| c.status == status).and_then(|c| c.last_transition_time).map(|t| t.0.to_string()).unwrap_or_else(|| now.clone())
    };
    let is_available = avail >= replicas - max_unavailable;
    let (astatus, areason, amsg) = if is_available {
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    } else {
        ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    };
    let status = json!({
        "observedGeneration": d.metadata.generation, "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": avail, "unavailableReplicas": (replicas - avail).max(0),
        "collisionCount": prev.collision_count,
        "conditions": [
            {"type": "Available", "status": astatus, "reason": areason, "message": amsg, "lastUpdateTime": transition("Available", astatus), "lastTransitionTime": transition("Available", astatus)},
            {"type": "Progressing", "status": pstatus, "reason": preason, "message": pmsg, "lastUpdateTime": last_update, "lastTransitionTime": transition("Progressing", pstatus)},
        ],
    });
    let mut same = prev.observed_generation == d.metadata.generation
        && prev.replicas.unwrap_or(0) == total
        && prev.updated_replicas.unwrap_or(0) == updated
        && prev.ready_replicas.unwrap_or(0) == ready
        && prev.available_replicas.unwrap_or(0) == avail
        && prev_cond("Available").is_some_and(|c| c.status == astatus)
        && prev_progress.as_ref().is_some_and(|c| c.status == pstatus && c.reason.as_deref() == Some(preason) && c.message.as_deref() == Some(pmsg.as_str()));
    let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    // The deployment carries its newest revision, as `rollout history` expects.
    let revision = new_rs.map(revision_of).filter(|r| *r > 0);
    if let Some(rev) = revision {
        if d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) != Some(&rev.to_string()) {
            let p = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            dapi.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await?;
            same = false;
        }
    }
    if !same {
        match dapi.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => {}
            Err(e) if crate::util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if !complete && !stalled {
        // The progress deadline is a deadline, not an event.
        return Ok(Action::requeue(Duration::from_secs(deadline.max(1) as u64)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(resolve(Some(&pct), "25%", 10, true), 3);
        assert_eq!(resolve(Some(&pct), "25%", 10, false), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(1)), "25%", 10, false), 1);
        assert_eq!(resolve(None, "25%", 3, false), 0);
        assert_eq!(resolve(None, "25%", 3, true), 1);
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let h = template_hash(&t, 0);
        assert_eq!(h, template_hash(&t, 0));
        assert_ne!(h, template_hash(&t, 1));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{h}");
        let mut t2 = t.clone();
        t2["metadata"]["labels"][HASH_LABEL] = json!(h);
        assert_eq!(without_hash(&t2), t);
    }
}
