//! The ReplicaSet controller, which is also the ReplicationController's
//! (one loop over [`Replicated`] kinds, as kube-controller-manager runs the
//! replication manager on the ReplicaSet controller's code): keeps
//! `spec.replicas` active pods matching the selector, creating from the
//! template and deleting the least useful first; adopts matching orphans;
//! reports status. Expectations (the names it created or deleted and has
//! not yet seen in its pod informer) keep it from acting twice on a stale
//! cache.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::resources::{pod_ready, pod_terminated};
use skiff_runtime::selectors::label_selector_matches;
use tokio::sync::watch;

use crate::util::{controller_ref, controller_uid, on_shutdown, retry};
use crate::Error;

/// How long unobserved creations/deletions hold a ReplicaSet back.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Most pods created or deleted in one reconcile.
const BURST: usize = 500;

/// Pod names created or deleted but not yet seen so in the informer.
#[derive(Default)]
struct Expected {
    adds: HashSet<String>,
    dels: HashSet<String>,
    since: Option<Instant>,
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    expectations: Mutex<HashMap<String, Expected>>,
    recorder: skiff_runtime::events::Recorder,
}

/// What the loop reads of a replicated kind's spec and status.
pub struct Replicas {
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// The pods it owns.
    pub selector: LabelSelector,
    /// What new pods are made from.
    pub template: Option<PodTemplateSpec>,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// `status`: replicas, fullyLabeled, ready, available, observedGeneration.
    pub status: (i32, i32, i32, i32, Option<i64>),
}

/// The counts of a ReplicaSet's or ReplicationController's status (two
/// types with the same fields).
macro_rules! status_counts {
    ($st:expr) => {
        ($st.replicas, $st.fully_labeled_replicas.unwrap_or(0), $st.ready_replicas.unwrap_or(0), $st.available_replicas.unwrap_or(0), $st.observed_generation)
    };
}

/// A kind that keeps a number of pods: ReplicaSet, ReplicationController.
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
    /// The event source of its controller.
    const CONTROLLER: &'static str;
    /// Its spec and status, if it has a spec.
    fn replicas(&self) -> Option<Replicas>;
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    fn replicas(&self) -> Option<Replicas> {
        let spec = self.spec.clone()?;
        let st = self.status.clone().unwrap_or_default();
        Some(Replicas {
            replicas: spec.replicas,
            selector: spec.selector,
            template: spec.template,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            status: status_counts!(st),
        })
    }
}

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    fn replicas(&self) -> Option<Replicas> {
        let spec = self.spec.clone()?;
        let st = self.status.clone().unwrap_or_default();
        // A map selector; empty means the template's labels (defaulting
        // fills it in, this covers an object written before).
        let labels = spec.selector.clone().filter(|s| !s.is_empty()).or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone());
        Some(Replicas {
            replicas: spec.replicas,
            selector: LabelSelector { match_labels: labels, match_expressions: None },
            template: spec.template,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            status: status_counts!(st),
        })
    }
}

/// Runs the controller of kind `K` until shutdown.
pub async fn run<K: Replicated>(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let pod_stream = informers.pods.objects();
    let pods = informers.pods.store();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        expectations: Mutex::default(),
        recorder: skiff_runtime::events::Recorder::new(client.clone(), K::CONTROLLER),
    });
    Controller::new(Api::<K>::all(client), watcher::Config::default())
        .owns_stream(pod_stream)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile::<K>, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Pods are active while not finished and not being deleted.
fn active(p: &Pod) -> bool {
    !pod_terminated(p) && p.metadata.deletion_timestamp.is_none()
}

/// Whether a pod has been Ready for at least `min_ready` seconds.
fn available(p: &Pod, min_ready: i32, now: i64) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second());
    since.is_some_and(|s| s + min_ready as i64 <= now)
}

/// Deletion order: unscheduled, then pending, then not ready, then newest.
fn deletion_rank(p: &Pod) -> (bool, bool, bool, std::cmp::Reverse<i64>) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty());
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
    (scheduled, running, pod_ready(p), std::cmp::Reverse(created))
}

async fn reconcile<K: Replicated>(rs: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let meta = rs.meta();
    if meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let generation = meta.generation;
    let key = format!("{}/{ns}/{name}", K::kind(&()));
    let spec = rs.replicas().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let selector = spec.selector.clone();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all: Vec<Arc<Pod>> = ctx.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str())).collect();

    // Expectations: wait until the informer shows what we did last time.
    {
        let mut exp = ctx.expectations.lock().map_err(|_| Error::Invalid("poisoned".into()))?;
        if let Some(e) = exp.get_mut(&key) {
            let present: HashSet<&str> = all.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).filter_map(|p| p.metadata.name.as_deref()).collect();
            e.adds.retain(|n| !present.contains(n.as_str()));
            e.dels.retain(|n| present.contains(n.as_str()));
            let fresh = e.since.is_some_and(|s| s.elapsed() < EXPECTATION_TIMEOUT);
            if (!e.adds.is_empty() || !e.dels.is_empty()) && fresh {
                return Ok(Action::requeue(EXPECTATION_TIMEOUT));
            }
            exp.remove(&key);
        }
    }

    let labels = |p: &Pod| p.metadata.labels.clone().unwrap_or_default();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for p in &all {
        match controller_uid(&**p) {
            Some(u) if u == uid => owned.push(p.clone()),
            None if active(p) && label_selector_matches(&selector, &labels(p)) => {
                // Adopt the orphan.
                let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(&*rs));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": p.metadata.uid}});
                let pname = p.metadata.name.clone().unwrap_or_default();
                if pods_api.patch(&pname, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                    owned.push(p.clone());
                }
            }
            _ => {}
        }
    }
    let mut live: Vec<Arc<Pod>> = owned.iter().filter(|p| active(p)).cloned().collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let mut expected = Expected { since: Some(Instant::now()), ..Default::default() };
    if live.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let n = (want - live.len()).min(BURST);
        let mut meta = template.metadata.clone().unwrap_or_default();
        meta.generate_name = Some(format!("{name}-"));
        meta.name = None;
        meta.namespace = Some(ns.clone());
        meta.owner_references = Some(vec![controller_ref(&*rs)]);
        let pod = Pod { metadata: meta, spec: template.spec.clone(), status: None };
        let created = futures::stream::iter(0..n)
            .map(|_| {
                let (api, pod) = (pods_api.clone(), pod.clone());
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let mut failed = None;
        for r in created {
            match r {
                Ok(p) => {
                    if let Some(n) = p.metadata.name {
                        expected.adds.insert(n);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            ctx.recorder.record(&*rs, skiff_runtime::events::EventType::Warning, "FailedCreate", &format!("Error creating: {e}"));
        } else {
            ctx.recorder.record(&*rs, skiff_runtime::events::EventType::Normal, "SuccessfulCreate", &format!("Created {n} pod(s)"));
        }
    } else if live.len() > want {
        live.sort_by_key(|p| deletion_rank(p));
        let doomed: Vec<Arc<Pod>> = live.drain(..(live.len() - want).min(BURST)).collect();
        for p in &doomed {
            let pname = p.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams { preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }), ..Default::default() };
            match pods_api.delete(&pname, &dp).await {
                Ok(_) => {
                    expected.dels.insert(pname.clone());
                    ctx.recorder.record(&*rs, skiff_runtime::events::EventType::Normal, "SuccessfulDelete", &format!("Deleted pod: {pname}"));
                }
                Err(e) if crate::util::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !expected.adds.is_empty() || !expected.dels.is_empty() {
        if let Ok(mut exp) = ctx.expectations.lock() {
            exp.insert(key, expected);
        }
    }

    // Status from what the informer shows.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let min_ready = spec.min_ready_seconds;
    let active_pods: Vec<&Arc<Pod>> = owned.iter().filter(|p| active(p)).collect();
    let ready = active_pods.iter().filter(|p| pod_ready(p)).count();
    let avail = active_pods.iter().filter(|p| available(p, min_ready, now)).count();
    let labelled = active_pods
        .iter()
        .filter(|p| {
            spec.template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref())
                .is_none_or(|tl| tl.iter().all(|(k, v)| labels(p).get(k) == Some(v)))
        })
        .count();
    let status = json!({
        "replicas": active_pods.len(), "fullyLabeledReplicas": labelled, "readyReplicas": ready, "availableReplicas": avail,
        "observedGeneration": generation,
    });
    let (replicas, fully_labeled, ready_now, available_now, observed) = spec.status;
    let same = replicas as usize == active_pods.len()
        && ready_now as usize == ready
        && available_now as usize == avail
        && fully_labeled as usize == labelled
        && observed == generation;
    if !same {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => {}
            Err(e) if crate::util::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // Pods becoming available after minReadySeconds is a deadline, not an event.
    if min_ready > 0 && ready > avail {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscheduled_and_unready_pods_go_first() {
        let pod = |node: Option<&str>, phase: &str, ready: bool, created: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"creationTimestamp": created}, "spec": {"containers": [], "nodeName": node},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .expect("pod")
        };
        let mut pods = [
            pod(Some("n"), "Running", true, "2026-01-01T00:00:00Z"),
            pod(None, "Pending", false, "2026-01-01T00:00:00Z"),
            pod(Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
            pod(Some("n"), "Running", true, "2026-01-02T00:00:00Z"),
        ];
        pods.sort_by_key(deletion_rank);
        assert!(pods[0].spec.as_ref().and_then(|s| s.node_name.clone()).is_none(), "unscheduled first");
        assert!(!pod_ready(&pods[1]), "then not ready");
        let newest = pods[2].metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
        let oldest = pods[3].metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
        assert!(newest > oldest, "then the newest ready pod");
    }
}
