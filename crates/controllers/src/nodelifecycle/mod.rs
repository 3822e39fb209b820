//! Node lifecycle: a node whose Lease has not been renewed within the grace
//! period (`--node-monitor-grace-period`, 40 s) gets its conditions set to
//! Unknown and the `node.kubernetes.io/unreachable` taints (`not-ready` when
//! its kubelet reports Ready=False); the taints go when it is healthy again.
//! Pods on a node with NoExecute taints they do not tolerate are evicted,
//! at once or after their `tolerationSeconds` (300 s by default, added to
//! every pod by the API server).
//!
//! TaintNodesByCondition: `spec.unschedulable` (`kubectl cordon`) and the
//! kubelet's pressure and network conditions become NoSchedule taints
//! (`node.kubernetes.io/unschedulable`, `memory-pressure`, `disk-pressure`,
//! `pid-pressure`, `network-unavailable`), removed when they clear.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::informer::Informer;
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

/// The taint of a node whose kubelet stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose kubelet reports NotReady.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a cordoned node.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Node conditions that, when True, keep new pods off the node, with
/// their NoSchedule taints.
const CONDITION_TAINTS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    ("NetworkUnavailable", "node.kubernetes.io/network-unavailable"),
];

/// The taints this controller owns: it adds and removes them; any other
/// taint on the node is left as it is.
fn managed(key: &str) -> bool {
    key == UNREACHABLE || key == NOT_READY || key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, k)| *k == key)
}

struct Ctx {
    client: kube::Client,
    leases: Store<Lease>,
    pods: Store<Pod>,
    grace: Duration,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, grace: Duration, shutdown: watch::Receiver<bool>) {
    let lease_informer = Informer::start(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"), watcher::Config::default(), shutdown.clone());
    let (leases, lease_stream) = (lease_informer.store(), lease_informer.objects());
    let pod_stream = informers.pods.objects();
    let pods = informers.pods.store();
    let ctx = Arc::new(Ctx { client: client.clone(), leases, pods, grace });
    Controller::for_stream(informers.nodes.objects(), informers.nodes.store())
        .watches_stream(lease_stream, |l: Lease| l.metadata.name.map(|n| ObjectRef::<Node>::new(&n)))
        .watches_stream(pod_stream, |p: Pod| p.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()).map(|n| ObjectRef::<Node>::new(&n)))
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// When (unix seconds) a pod must go because of the node's NoExecute
/// taints: `Some(0)` now, `None` never.
pub fn eviction_time(pod: &Pod, taints: &[Taint]) -> Option<i64> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut at: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| skiff_runtime::selectors::tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // Tolerated forever unless every matching toleration has a limit.
        if matching.iter().all(|t| t.toleration_seconds.is_some()) {
            let secs = matching.iter().filter_map(|t| t.toleration_seconds).min().unwrap_or(0).max(0);
            let added = taint.time_added.as_ref().map(|t| t.0.as_second()).unwrap_or_else(now);
            let when = added + secs;
            at = Some(at.map_or(when, |a| a.min(when)));
        }
    }
    at
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let lease = ctx.leases.get(&ObjectRef::new(&name).within("kube-node-lease"));
    let renewed = lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.renew_time.as_ref()).map(|t| t.0.as_second());
    let grace = ctx.grace.as_secs() as i64;
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into());
    // A node without a lease yet counts from its creation.
    let since = renewed.or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second())).unwrap_or_else(now);
    let stale = now() - since > grace;
    let mut requeue: Option<i64> = (!stale).then_some(since + grace + 1);

    if stale && ready != "Unknown" {
        let ts = skiff_runtime::now();
        let conds: Vec<serde_json::Value> = conditions
            .iter()
            .map(|c| {
                json!({"type": c.type_, "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
                            "lastHeartbeatTime": c.last_heartbeat_time, "lastTransitionTime": ts})
            })
            .collect();
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(json!({"status": {"conditions": conds}}))).await?;
        return Ok(Action::await_change());
    }
    // Which lifecycle taint the node should carry.
    // A node that has not reported any status yet is starting, not lost
    // (Kubernetes' node startup grace): only a lapsed lease or a reported
    // Unknown makes it unreachable.
    let reported = conditions.iter().any(|c| c.type_ == "Ready");
    let want: Option<&str> = match (stale, ready.as_str()) {
        (true, _) => Some(UNREACHABLE),
        (false, "Unknown") if reported => Some(UNREACHABLE),
        (false, "False") => Some(NOT_READY),
        _ => None,
    };
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    // (key, effect, stamped): NoExecute taints carry the time they were
    // added, from which tolerationSeconds count.
    let mut wanted: Vec<(&str, &str, bool)> = Vec::new();
    if let Some(key) = want {
        wanted.extend([(key, "NoSchedule", true), (key, "NoExecute", true)]);
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push((UNSCHEDULABLE, "NoSchedule", false));
    }
    for (cond, key) in CONDITION_TAINTS {
        if conditions.iter().any(|c| c.type_ == *cond && c.status == "True") {
            wanted.push((key, "NoSchedule", false));
        }
    }
    let mut next: Vec<Taint> = taints.iter().filter(|t| !managed(&t.key) || wanted.iter().any(|(k, e, _)| *k == t.key && *e == t.effect)).cloned().collect();
    for (key, effect, stamped) in wanted {
        if !next.iter().any(|t| t.key == key && t.effect == effect) {
            next.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: stamped.then(|| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())),
            });
        }
    }
    if next != taints {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": next}}))).await?;
        return Ok(Action::await_change());
    }
    // Evict pods that do not tolerate the node's NoExecute taints.
    if taints.iter().any(|t| t.effect == "NoExecute") {
        for pod in ctx.pods.state().into_iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())) {
            if pod.metadata.deletion_timestamp.is_some() || skiff_runtime::resources::pod_terminated(&pod) {
                continue;
            }
            match eviction_time(&pod, &taints) {
                Some(at) if at <= now() => {
                    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
                    let dp =
                        DeleteParams { preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }), ..Default::default() };
                    match pods.delete(pod.metadata.name.as_deref().unwrap_or(""), &dp).await {
                        Ok(_) => tracing::info!(pod = ?pod.metadata.name, node = %name, "evicted by taint"),
                        Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(at) => requeue = Some(requeue.map_or(at, |r| r.min(at))),
                None => {}
            }
        }
    }
    // Lease expiry and toleration ends are deadlines, not events.
    Ok(match requeue {
        Some(at) => Action::requeue(Duration::from_secs((at - now()).max(1) as u64)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_follows_toleration_seconds() {
        let taint = Taint { key: UNREACHABLE.into(), effect: "NoExecute".into(), value: None, time_added: None };
        let pod = |tol: serde_json::Value| -> Pod { serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tol}})).expect("pod") };
        assert_eq!(eviction_time(&pod(json!([])), std::slice::from_ref(&taint)), Some(0));
        let t = eviction_time(
            &pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])),
            std::slice::from_ref(&taint),
        );
        assert!(t.is_some_and(|t| t >= now() + 299));
        assert_eq!(eviction_time(&pod(json!([{"operator": "Exists"}])), &[taint]), None);
    }
}
