//! The StatefulSet controller: pods with stable names `<set>-0..N-1`,
//! hostnames under `serviceName`, and a PersistentVolumeClaim per
//! `volumeClaimTemplates` entry and ordinal (kept when scaling down).
//! `OrderedReady` creates one pod at a time, lowest ordinal first, each
//! after the ones before are Running and Ready, and removes them highest
//! first; `Parallel` does all at once. `RollingUpdate` replaces pods at or
//! above `partition`, highest first, one at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::resources::pod_ready;
use tokio::sync::watch;

use crate::deployment::template_hash;
use crate::util::{controller_ref, controller_uid, on_shutdown, retry};
use crate::Error;

const REVISION_LABEL: &str = "controller-revision-hash";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    recorder: skiff_runtime::events::Recorder,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let pod_stream = informers.pods.objects();
    let pods = informers.pods.store();
    let ctx = Arc::new(Ctx { client: client.clone(), pods, recorder: skiff_runtime::events::Recorder::new(client.clone(), "statefulset-controller") });
    Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default())
        .owns_stream(pod_stream)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The ordinal of `<set>-<i>`.
fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pod_ready(p) && p.metadata.deletion_timestamp.is_none()
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let spec = sts.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let template = serde_json::to_value(&spec.template)?;
    let update_rev = template_hash(&template, sts.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0));
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    crate::util::ensure_revision(&ctx.client, &*sts, selector.clone(), &update_rev, &template).await?;

    let mut pods: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for p in ctx.pods.state() {
        if p.metadata.namespace.as_deref() == Some(ns.as_str()) && controller_uid(&*p) == Some(uid.as_str()) {
            if let Some(i) = p.metadata.name.as_deref().and_then(|n| ordinal(&name, n)) {
                pods.insert(i, p);
            }
        }
    }
    // Finished pods are replaced (a stateful pod is meant to keep running).
    for (i, p) in &pods {
        if skiff_runtime::resources::pod_terminated(p) && p.metadata.deletion_timestamp.is_none() {
            let _ = pods_api.delete(&format!("{name}-{i}"), &DeleteParams::default()).await;
        }
    }
    let mut acted = false;
    // Create missing pods below `replicas`.
    for i in 0..replicas {
        if pods.contains_key(&i) {
            continue;
        }
        if !parallel && (0..i).any(|j| !pods.get(&j).is_some_and(|p| running_and_ready(p))) {
            break;
        }
        create_pod(&ctx, &sts, &pods_api, i, &update_rev).await?;
        acted = true;
        if !parallel {
            break;
        }
    }
    // Remove pods at or above `replicas`, highest first.
    if !acted {
        let extra: Vec<i32> = pods.keys().copied().filter(|i| *i >= replicas).rev().collect();
        for i in extra {
            let p = &pods[&i];
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            if !parallel && pods.iter().filter(|(j, _)| **j < i).any(|(_, q)| !running_and_ready(q)) {
                break;
            }
            let _ = pods_api.delete(&format!("{name}-{i}"), &DeleteParams::default()).await;
            ctx.recorder.record(
                &*sts,
                skiff_runtime::events::EventType::Normal,
                "SuccessfulDelete",
                &format!("delete Pod {name}-{i} in StatefulSet {name} successful"),
            );
            acted = true;
            if !parallel {
                break;
            }
        }
    }
    // Rolling update: highest ordinal at or above the partition first, one
    // at a time, once everything is Running and Ready.
    let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
    let all_ready = (0..replicas).all(|i| pods.get(&i).is_some_and(|p| running_and_ready(p)));
    if !acted && rolling && all_ready {
        let stale =
            (partition..replicas).rev().find(|i| pods.get(i).and_then(|p| p.metadata.labels.as_ref()).and_then(|l| l.get(REVISION_LABEL)) != Some(&update_rev));
        if let Some(i) = stale {
            let _ = pods_api.delete(&format!("{name}-{i}"), &DeleteParams::default()).await;
        }
    }
    // Status.
    let live: Vec<&Arc<Pod>> = pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let rev_of = |p: &Pod| p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).cloned().unwrap_or_default();
    let updated = live.iter().filter(|p| rev_of(p) == update_rev).count();
    let current_rev = match sts.status.as_ref().and_then(|s| s.current_revision.clone()) {
        Some(c) if updated < replicas as usize => c,
        _ => update_rev.clone(),
    };
    let current = live.iter().filter(|p| rev_of(p) == current_rev).count();
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let status = json!({"replicas": live.len(), "readyReplicas": ready, "availableReplicas": ready, "currentReplicas": current, "updatedReplicas": updated,
        "currentRevision": current_rev, "updateRevision": update_rev, "observedGeneration": sts.metadata.generation, "collisionCount": 0});
    let cur = serde_json::to_value(sts.status.clone().unwrap_or_default())?;
    let keys = ["replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "currentRevision", "updateRevision", "observedGeneration"];
    if keys.iter().any(|k| cur.get(*k).cloned().unwrap_or(json!(0)) != status[*k]) {
        Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns).patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(Action::await_change())
}

async fn create_pod(ctx: &Ctx, sts: &StatefulSet, api: &Api<Pod>, i: i32, rev: &str) -> Result<(), Error> {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.metadata.name.clone().unwrap_or_default();
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let pod_name = format!("{set}-{i}");
    // Claims first: the pod's volumes name them.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut claims = Vec::new();
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        let claim = format!("{tname}-{set}-{i}");
        let mut pvc = t.clone();
        pvc.metadata.name = Some(claim.clone());
        pvc.metadata.namespace = Some(ns.clone());
        pvc.metadata.labels = spec.selector.match_labels.clone();
        pvc.status = None;
        match pvcs.create(&PostParams::default(), &pvc).await {
            Ok(_) => {}
            Err(e) if crate::util::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        claims.push((tname, claim));
    }
    let mut meta = spec.template.metadata.clone().unwrap_or_default();
    meta.name = Some(pod_name.clone());
    meta.namespace = Some(ns);
    meta.owner_references = Some(vec![controller_ref(sts)]);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_LABEL.into(), rev.into());
    labels.insert("statefulset.kubernetes.io/pod-name".into(), pod_name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
    let mut v = serde_json::to_value(Pod { metadata: meta, spec: spec.template.spec.clone(), status: None })?;
    v["spec"]["hostname"] = json!(pod_name);
    if !spec.service_name.clone().unwrap_or_default().is_empty() {
        v["spec"]["subdomain"] = json!(spec.service_name);
    }
    let mut volumes: Vec<serde_json::Value> = v["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    for (tname, claim) in claims {
        volumes.retain(|vol| vol.get("name").and_then(|n| n.as_str()) != Some(tname.as_str()));
        volumes.push(json!({"name": tname, "persistentVolumeClaim": {"claimName": claim}}));
    }
    if !volumes.is_empty() {
        v["spec"]["volumes"] = json!(volumes);
    }
    let pod: Pod = serde_json::from_value(v)?;
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => {
            ctx.recorder.record(
                sts,
                skiff_runtime::events::EventType::Normal,
                "SuccessfulCreate",
                &format!("create Pod {pod_name} in StatefulSet {set} successful"),
            );
            Ok(())
        }
        Err(e) if crate::util::is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
    }
}
