//! The DaemonSet controller: one pod on every node the template can run on
//! (node selector, required node affinity, and taints the pod tolerates;
//! daemon pods tolerate cordoning and not-ready/unreachable nodes as in
//! Kubernetes), placed through the scheduler with a node-name affinity;
//! pods on nodes that no longer qualify are removed; a changed template
//! rolls out `maxUnavailable` pods at a time. Reconciled on any node or pod
//! change.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use crate::deployment::{resolve, template_hash};
use crate::util::{controller_ref, controller_uid, on_shutdown, retry};
use crate::Error;

const REVISION_LABEL: &str = "controller-revision-hash";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    recorder: skiff_runtime::events::Recorder,
    /// Creations not yet seen in the pod informer, by (DaemonSet uid, node):
    /// a reconcile on a stale cache must not create a second pod.
    pending: std::sync::Mutex<HashMap<(String, String), std::time::Instant>>,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let pod_stream = informers.pods.objects();
    let pods = informers.pods.store();
    let node_stream = informers.nodes.objects();
    let nodes = informers.nodes.store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        nodes,
        recorder: skiff_runtime::events::Recorder::new(client.clone(), "daemonset-controller"),
        pending: Default::default(),
    });
    Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default())
        .owns_stream(pod_stream)
        .reconcile_all_on(node_stream.map(|_| ()))
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn tolerates(tols: &[Toleration], taint: &Taint) -> bool {
    tols.iter().any(|t| skiff_runtime::selectors::tolerates(t, taint))
}

/// The tolerations every daemon pod gets (Kubernetes adds these too).
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// Whether a daemon pod built from `pod` belongs on `node`.
pub fn should_run(pod: &Pod, node: &Node) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    if let Some(req) =
        spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
    {
        if !req.node_selector_terms.iter().any(|t| skiff_runtime::selectors::node_term_matches(t, node)) {
            return false;
        }
    }
    let mut tols = spec.tolerations.unwrap_or_default();
    tols.extend(daemon_tolerations());
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerates(&tols, t))
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let template = serde_json::to_value(&spec.template)?;
    let hash = template_hash(&template, ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0));
    let selector = ds.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    crate::util::ensure_revision(&ctx.client, &*ds, selector, &hash, &template).await?;

    let probe = Pod { metadata: Default::default(), spec: spec.template.spec.clone(), status: None };
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in ctx.pods.state() {
        if p.metadata.namespace.as_deref() != Some(ns.as_str()) || controller_uid(&*p) != Some(uid.as_str()) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = target_node(&p).unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    let nodes = ctx.nodes.state();
    let mut desired = 0;
    let (mut scheduled, mut ready, mut updated, mut available, mut misscheduled) = (0, 0, 0, 0, 0);
    let max_unavailable =
        resolve(spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.max_unavailable.as_ref()), "1", nodes.len() as i32, true)
            .max(1);
    let on_delete = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let unavailable_now = by_node.values().flatten().filter(|p| !skiff_runtime::resources::pod_ready(p)).count() as i32;
    let mut budget = max_unavailable - unavailable_now;
    for node in &nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let here = by_node.remove(&node_name).unwrap_or_default();
        if should_run(&probe, node) {
            desired += 1;
            let key = (uid.clone(), node_name.clone());
            if here.is_empty() {
                let waiting = ctx.pending.lock().ok().and_then(|p| p.get(&key).copied()).is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(30));
                if !waiting {
                    create_pod(&ctx, &ds, &pods_api, &node_name, &hash).await?;
                    if let Ok(mut p) = ctx.pending.lock() {
                        p.insert(key, std::time::Instant::now());
                    }
                }
                continue;
            }
            if let Ok(mut p) = ctx.pending.lock() {
                p.remove(&key);
            }
            scheduled += 1;
            // Extra copies go.
            for extra in here.iter().skip(1) {
                let _ = pods_api.delete(extra.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
            }
            let p = &here[0];
            let current = p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) == Some(&hash);
            let is_ready = skiff_runtime::resources::pod_ready(p);
            if current {
                updated += 1;
            }
            if is_ready {
                ready += 1;
                available += 1;
            }
            if !current && !on_delete && (budget > 0 || !is_ready) {
                // Rolling update: replace an old pod, within maxUnavailable.
                let _ = pods_api.delete(p.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
                if is_ready {
                    budget -= 1;
                }
            }
        } else if !here.is_empty() {
            misscheduled += 1;
            for p in here {
                let _ = pods_api.delete(p.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
            }
        }
    }
    // Pods for nodes that are gone.
    for p in by_node.into_values().flatten() {
        let _ = pods_api.delete(p.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
    }
    let status = json!({"desiredNumberScheduled": desired, "currentNumberScheduled": scheduled, "numberReady": ready, "numberAvailable": available,
        "numberUnavailable": (desired - available).max(0), "updatedNumberScheduled": updated, "numberMisscheduled": misscheduled,
        "observedGeneration": ds.metadata.generation});
    let cur = serde_json::to_value(ds.status.clone().unwrap_or_default())?;
    let keys = [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
        "numberMisscheduled",
        "observedGeneration",
    ];
    if keys.iter().any(|k| cur.get(*k).cloned().unwrap_or(json!(0)) != status.get(*k).cloned().unwrap_or(json!(0)))
        || cur.get("numberUnavailable").cloned().unwrap_or(json!(0)) != status["numberUnavailable"]
    {
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns).patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(Action::await_change())
}

/// The node a daemon pod is for: its `nodeName`, or the node its
/// node-name affinity names while it waits for the scheduler.
fn target_node(p: &Pod) -> Option<String> {
    if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = p.spec.as_ref()?.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?;
    terms
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

async fn create_pod(ctx: &Ctx, ds: &DaemonSet, api: &Api<Pod>, node: &str, hash: &str) -> Result<(), Error> {
    let spec = ds.spec.clone().unwrap_or_default();
    let mut pod: Pod = Pod { metadata: spec.template.metadata.clone().unwrap_or_default(), spec: spec.template.spec.clone(), status: None };
    let name = ds.metadata.name.clone().unwrap_or_default();
    pod.metadata.generate_name = Some(format!("{name}-"));
    pod.metadata.namespace = ds.metadata.namespace.clone();
    pod.metadata.owner_references = Some(vec![controller_ref(ds)]);
    pod.metadata.labels.get_or_insert_with(Default::default).insert(REVISION_LABEL.into(), hash.into());
    let mut v = serde_json::to_value(&pod)?;
    // Scheduled by the default scheduler onto exactly this node.
    v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    let mut tols: Vec<serde_json::Value> = v["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    for t in daemon_tolerations() {
        tols.push(serde_json::to_value(t)?);
    }
    v["spec"]["tolerations"] = json!(tols);
    let pod: Pod = serde_json::from_value(v)?;
    match api.create(&PostParams::default(), &pod).await {
        Ok(p) => {
            ctx.recorder.record(
                ds,
                skiff_runtime::events::EventType::Normal,
                "SuccessfulCreate",
                &format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
