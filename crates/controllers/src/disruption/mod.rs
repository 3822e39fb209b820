//! The disruption controller: each PodDisruptionBudget's `status` from the
//! pods it selects (`currentHealthy`, `desiredHealthy`, `expectedPods`,
//! `disruptionsAllowed`, the `DisruptionAllowed` condition), which the
//! eviction subresource reads and spends. Pods the eviction subresource
//! recorded in `disruptedPods` count as gone until they are deleted, or
//! for two minutes, as in Kubernetes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

/// How long an evicted pod counts as disrupted before it must be gone.
const DELETION_TIMEOUT: i64 = 120;

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx { client: client.clone(), pods: informers.pods.store(), replicasets: informers.replicasets.store() });
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(client), watcher::Config::default());
    let budgets = controller.store();
    controller
        // A pod change concerns the budgets of its namespace that select it.
        .watches_stream(informers.pods.objects(), move |pod: Pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            budgets
                .state()
                .into_iter()
                .filter(|b| b.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|b| selects(b, &labels))
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn selects(pdb: &PodDisruptionBudget, labels: &BTreeMap<String, String>) -> bool {
    // In policy/v1 an empty (or missing) selector selects every pod.
    match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) => skiff_runtime::selectors::label_selector_matches(sel, labels),
        None => true,
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A percentage of `total`, rounded up, or the integer itself.
fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// The replicas the pods' controllers want: the scale an integer budget
/// does not need, but a percentage or `maxUnavailable` is taken of.
/// Pods with no controller count themselves.
async fn expected_scale(ctx: &Ctx, ns: &str, pods: &[Arc<Pod>]) -> i32 {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for p in pods {
        let owner = p.metadata.owner_references.as_ref().and_then(|o| o.iter().find(|r| r.controller == Some(true)));
        let Some(owner) = owner else {
            total += 1;
            continue;
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        let replicas = match owner.kind.as_str() {
            "ReplicaSet" => ctx.replicasets.get(&ObjectRef::new(&owner.name).within(ns)).and_then(|rs| rs.spec.as_ref().and_then(|s| s.replicas)),
            "StatefulSet" => {
                Api::<StatefulSet>::namespaced(ctx.client.clone(), ns).get_opt(&owner.name).await.ok().flatten().and_then(|s| s.spec.and_then(|s| s.replicas))
            }
            _ => None,
        };
        total += replicas.unwrap_or(1);
    }
    total
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| selects(&pdb, &p.metadata.labels.clone().unwrap_or_default()))
        .collect();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    // Evicted pods still present and not yet past their deletion timeout.
    let mut disrupted: BTreeMap<String, String> = BTreeMap::new();
    for (pod, at) in pdb.status.as_ref().map(|s| s.disrupted_pods.clone().unwrap_or_default()).unwrap_or_default() {
        let present = pods.iter().any(|p| p.metadata.name.as_deref() == Some(pod.as_str()) && p.metadata.deletion_timestamp.is_none());
        let fresh = now - at.0.as_second() < DELETION_TIMEOUT;
        if present && fresh {
            disrupted.insert(pod, at.0.to_string());
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p) && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .count() as i32;
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), _) => (pods.len() as i32, *min),
        (Some(min), _) => {
            let scale = expected_scale(&ctx, &ns, &pods).await;
            (scale, scaled(min, scale))
        }
        (None, Some(max)) => {
            let scale = expected_scale(&ctx, &ns, &pods).await;
            (scale, (scale - scaled(max, scale)).max(0))
        }
        // Neither set: no disruption is allowed... of no pods.
        (None, None) => (pods.len() as i32, pods.len() as i32),
    };
    let allowed = (healthy - desired).max(0);
    let previous = pdb.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let (cond_status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    let transition = match previous {
        Some(c) if c.status == cond_status => c.last_transition_time.0.to_string(),
        _ => skiff_runtime::now(),
    };
    let generation = pdb.metadata.generation.unwrap_or(0);
    let status = json!({
        "observedGeneration": generation,
        "disruptedPods": disrupted,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [{"type": "DisruptionAllowed", "status": cond_status, "reason": reason, "message": "",
                        "observedGeneration": generation, "lastTransitionTime": transition}],
    });
    let current = serde_json::to_value(pdb.status.clone().unwrap_or_default()).unwrap_or_default();
    let same = ["observedGeneration", "disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"]
        .iter()
        .all(|k| current.get(*k).cloned().unwrap_or(json!(0)) == status[*k])
        && current.get("disruptedPods").cloned().unwrap_or(json!({})) == status["disruptedPods"]
        && previous.is_some_and(|c| c.status == cond_status && c.reason == reason);
    if !same {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        // A merge patch replaces `disruptedPods` entries one by one: send
        // nulls for the ones that went.
        let mut patch_status = status.clone();
        for gone in current.get("disruptedPods").and_then(|d| d.as_object()).into_iter().flatten().map(|(k, _)| k) {
            if !disrupted.contains_key(gone) {
                patch_status["disruptedPods"][gone] = serde_json::Value::Null;
            }
        }
        // The resourceVersion makes it a compare-and-swap with evictions.
        let patch = json!({"metadata": {"resourceVersion": pdb.metadata.resource_version}, "status": patch_status});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(e) if crate::util::is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(50))),
            Err(e) if crate::util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // Recorded disruptions expire: look again when the oldest does.
    Ok(if disrupted.is_empty() { Action::await_change() } else { Action::requeue(Duration::from_secs(DELETION_TIMEOUT as u64)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3), 2);
        assert_eq!(scaled(&IntOrString::Int(1), 3), 1);
    }
}
