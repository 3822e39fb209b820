//! skiff's kube-scheduler. A client of the API like the real one: it
//! watches nodes and pods, keeps its own cache of what each node has
//! (including pods it has assumed but not yet seen bound), takes pending
//! pods from a priority queue, filters and scores nodes with the default
//! profile's plugins, and binds through `pods/binding`. Pods that fit
//! nowhere get a `FailedScheduling` event and `PodScheduled=False`, and
//! wait until a node or pod event could make them fit. Event-driven: the
//! only timers are backoff deadlines.

#![deny(missing_docs)]

pub mod cache;
pub mod framework;
pub mod plugins;
pub mod queue;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use skiff_runtime::events::{EventType, Recorder};
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::cache::Cache;
use crate::queue::Queue;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pods naming this `schedulerName` are ours (`default-scheduler`).
    pub scheduler_name: String,
    /// Hold the `kube-system/kube-scheduler` Lease while scheduling.
    pub leader_elect: bool,
    /// This instance's identity for leader election.
    pub identity: String,
}

impl Default for Options {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Self { scheduler_name: "default-scheduler".into(), leader_elect: true, identity: format!("{host}_{}", uuid_like()) }
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..16).map(|_| format!("{:x}", r.random_range(0..16u8))).collect()
}

/// Binds in flight at once.
const BINDS_IN_FLIGHT: usize = 128;
/// Pods scheduled between looks at the watch streams.
const BATCH: usize = 256;

/// Runs until `shutdown` flips to true.
pub async fn run(client: kube::Client, opts: Options, shutdown: watch::Receiver<bool>) {
    if opts.leader_elect {
        let c = client.clone();
        skiff_runtime::leader::lead(client, "kube-system", "kube-scheduler", &opts.identity.clone(), Default::default(), shutdown.clone(), move || {
            schedule_loop(c.clone(), opts.clone(), shutdown.clone())
        })
        .await;
    } else {
        schedule_loop(client, opts, shutdown).await;
    }
}

/// What a binding task reports back.
enum BindResult {
    Failed(String),
}

struct Scheduler {
    client: kube::Client,
    opts: Options,
    recorder: Recorder,
    cache: Cache,
    queue: Queue,
    /// Unbound pods of ours by uid (latest object seen).
    pending: HashMap<String, Arc<Pod>>,
    /// Pods assumed onto a node, binding in flight.
    assumed: HashSet<String>,
    start: usize,
    binds: Arc<Semaphore>,
    results: mpsc::UnboundedSender<BindResult>,
    /// Pods in the cache with required anti-affinity (they constrain everyone).
    anti_pods: HashSet<String>,
    /// Claims, volumes and storage classes, for VolumeBinding.
    volumes: plugins::volume_binding::Volumes,
}

impl Scheduler {
    fn ours(&self, pod: &Pod) -> bool {
        let name = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler");
        name == self.opts.scheduler_name
    }

    fn on_pod(&mut self, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let has_anti = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .is_some_and(|t| !t.is_empty());
        match node {
            Some(node) => {
                self.pending.remove(&uid);
                self.queue.remove(&uid);
                self.assumed.remove(&uid);
                if skiff_runtime::resources::pod_terminated(&pod) {
                    if self.cache.remove_pod(&uid) {
                        self.queue.move_all_unschedulable();
                    }
                    self.anti_pods.remove(&uid);
                } else {
                    if has_anti {
                        self.anti_pods.insert(uid);
                    }
                    self.cache.add_pod(&node, pod);
                }
            }
            // Binding in flight: keep the assumption, refresh the object.
            None if self.assumed.contains(&uid) => {}
            None if self.ours(&pod) && pod.metadata.deletion_timestamp.is_none() => {
                let prio = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                self.pending.insert(uid.clone(), pod);
                self.queue.add(&uid, prio);
            }
            None => {
                self.pending.remove(&uid);
                self.queue.remove(&uid);
            }
        }
    }

    fn on_pod_deleted(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.pending.remove(&uid);
        self.queue.remove(&uid);
        self.assumed.remove(&uid);
        self.anti_pods.remove(&uid);
        if self.cache.remove_pod(&uid) {
            self.queue.move_all_unschedulable();
        }
    }

    fn schedule_one(&mut self, uid: String) {
        let Some(pod) = self.pending.get(&uid).cloned() else { return };
        let info = cache::PodInfo::new(pod.clone());
        match framework::schedule(&info, &self.cache, &mut self.start, !self.anti_pods.is_empty(), &self.volumes) {
            Ok(node) => {
                // Assume: account the pod on the node now, bind in the background.
                let mut bound = (*pod).clone();
                if let Some(s) = bound.spec.as_mut() {
                    s.node_name = Some(node.clone());
                }
                self.cache.add_pod(&node, Arc::new(bound));
                self.assumed.insert(uid.clone());
                self.pending.remove(&uid);
                let (client, recorder, results, sem) = (self.client.clone(), self.recorder.clone(), self.results.clone(), self.binds.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = sem.acquire().await else { return };
                    match bind(&client, &pod, &node).await {
                        Ok(()) => {
                            let who = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""));
                            recorder.record(&*pod, EventType::Normal, "Scheduled", &format!("Successfully assigned {who} to {node}"));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "binding failed");
                            let _ = results.send(BindResult::Failed(pod.metadata.uid.clone().unwrap_or_default()));
                        }
                    }
                });
            }
            Err(fit) => {
                let message = fit.to_string();
                self.queue.unschedulable(&uid);
                // Evicting pods cannot make a missing claim appear.
                let preemptable = fit.prefilter.is_none();
                if let Some((node, victims)) = framework::preempt(&info, &self.cache).filter(|_| preemptable) {
                    self.evict(&pod, &node, victims);
                }
                self.recorder.record(&*pod, EventType::Warning, "FailedScheduling", &message);
                let already =
                    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                        cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(message.as_str()))
                    });
                if !already {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    tokio::spawn(async move {
                        let p = serde_json::json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": message, "lastProbeTime": null, "lastTransitionTime": skiff_runtime::now()}]}});
                        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&p)).await {
                            tracing::debug!(error = %e, "PodScheduled condition not written");
                        }
                    });
                }
            }
        }
    }

    /// Deletes preemption victims and nominates `node` for the preemptor;
    /// the victims' deletion events bring the pod back to the queue.
    fn evict(&self, pod: &Arc<Pod>, node: &str, victims: Vec<Arc<Pod>>) {
        let (client, recorder) = (self.client.clone(), self.recorder.clone());
        let (pod, node) = (pod.clone(), node.to_string());
        tokio::spawn(async move {
            let who = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""));
            for v in victims {
                let api: Api<Pod> = Api::namespaced(client.clone(), v.metadata.namespace.as_deref().unwrap_or("default"));
                let dp = kube::api::DeleteParams {
                    preconditions: Some(kube::api::Preconditions { uid: v.metadata.uid.clone(), resource_version: None }),
                    ..Default::default()
                };
                match api.delete(v.metadata.name.as_deref().unwrap_or(""), &dp).await {
                    Ok(_) => recorder.record(
                        &*v,
                        EventType::Normal,
                        "Preempted",
                        &format!("Preempted by pod {} on node {node}", pod.metadata.uid.as_deref().unwrap_or(&who)),
                    ),
                    Err(e) => tracing::debug!(error = %e, "preemption victim not deleted"),
                }
            }
            let api: Api<Pod> = Api::namespaced(client, pod.metadata.namespace.as_deref().unwrap_or("default"));
            let p = serde_json::json!({"status": {"nominatedNodeName": node}});
            if let Err(e) = api.patch_status(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&p)).await {
                tracing::debug!(error = %e, "nominatedNodeName not written");
            }
        });
    }

    fn on_bind_failed(&mut self, uid: &str) {
        if self.assumed.remove(uid) {
            self.cache.remove_pod(uid);
            // The watch tells whether it was bound after all (then the retry
            // finds it gone from `pending`); otherwise it is retried after a backoff.
            self.queue.retry(uid);
        }
    }
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
                                  "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let req = http_request(&format!("/api/v1/namespaces/{ns}/pods/{name}/binding"), &body)?;
    client.request_text(req).await.map(|_| ())
}

fn http_request(path: &str, body: &serde_json::Value) -> Result<http::Request<Vec<u8>>, kube::Error> {
    let bytes = serde_json::to_vec(body).map_err(kube::Error::SerdeError)?;
    http::Request::post(path).header("Content-Type", "application/json").body(bytes).map_err(kube::Error::HttpError)
}

async fn schedule_loop(client: kube::Client, opts: Options, mut shutdown: watch::Receiver<bool>) {
    let cfg = watcher::Config::default;
    let pod_informer = Informer::start(Api::<Pod>::all(client.clone()), cfg(), shutdown.clone());
    let node_informer = Informer::start(Api::<Node>::all(client.clone()), cfg(), shutdown.clone());
    let (mut pod_events, mut node_events) = (pod_informer.changes().boxed(), node_informer.changes().boxed());
    let (results_tx, mut results) = mpsc::unbounded_channel();
    let recorder = Recorder::new(client.clone(), &opts.scheduler_name);
    // Claims, volumes and classes are read from their caches; any change to
    // them may let a waiting pod fit.
    let claims = Informer::<PersistentVolumeClaim>::start(Api::all(client.clone()), cfg(), shutdown.clone());
    let volumes = Informer::<PersistentVolume>::start(Api::all(client.clone()), cfg(), shutdown.clone());
    let classes = Informer::<StorageClass>::start(Api::all(client.clone()), cfg(), shutdown.clone());
    let mut volume_changes =
        futures::stream::select_all([claims.changes().map(|_| ()).boxed(), volumes.changes().map(|_| ()).boxed(), classes.changes().map(|_| ()).boxed()]);
    let (c, v, k) = (claims.store(), volumes.store(), classes.store());
    for ready in [
        async move { c.wait_until_ready().await }.boxed(),
        async move { v.wait_until_ready().await }.boxed(),
        async move { k.wait_until_ready().await }.boxed(),
    ] {
        tokio::select! {
            _ = ready => {}
            _ = shutdown.changed() => return,
        }
    }
    let mut s = Scheduler {
        client,
        opts,
        recorder,
        cache: Cache::default(),
        queue: Queue::default(),
        pending: HashMap::new(),
        assumed: HashSet::new(),
        start: 0,
        binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
        results: results_tx,
        anti_pods: HashSet::new(),
        volumes: plugins::volume_binding::Volumes::new(claims.store(), volumes.store(), classes.store()),
    };
    let (mut pods_synced, mut nodes_synced) = (false, false);
    loop {
        // Wait for anything to do.
        let wakeup = s.queue.next_wakeup();
        let ready = pods_synced && nodes_synced && s.queue.has_active();
        if !ready {
            tokio::select! {
                ev = pod_events.next() => match ev {
                    Some(ev) => handle_pod_event(&mut s, ev, &mut pods_synced),
                    None => return,
                },
                ev = node_events.next() => match ev {
                    Some(ev) => handle_node_event(&mut s, ev, &mut nodes_synced),
                    None => return,
                },
                Some(r) = results.recv() => match r { BindResult::Failed(uid) => s.on_bind_failed(&uid) },
                Some(()) = volume_changes.next() => s.queue.move_all_unschedulable(),
                _ = sleep_until(wakeup) => s.queue.flush(),
                _ = shutdown.changed() => return,
            }
        }
        // Take in whatever else has arrived before deciding.
        for _ in 0..4096 {
            let mut any = false;
            if let Some(Some(ev)) = pod_events.next().now_or_never() {
                handle_pod_event(&mut s, ev, &mut pods_synced);
                any = true;
            }
            if let Some(Some(ev)) = node_events.next().now_or_never() {
                handle_node_event(&mut s, ev, &mut nodes_synced);
                any = true;
            }
            if let Some(Some(())) = volume_changes.next().now_or_never() {
                s.queue.move_all_unschedulable();
                any = true;
            }
            if let Ok(BindResult::Failed(uid)) = results.try_recv() {
                s.on_bind_failed(&uid);
                any = true;
            }
            if !any {
                break;
            }
        }
        s.queue.flush();
        if pods_synced && nodes_synced {
            for _ in 0..BATCH {
                match s.queue.pop() {
                    Some(uid) => s.schedule_one(uid),
                    None => break,
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

fn handle_pod_event(s: &mut Scheduler, ev: Change<Pod>, synced: &mut bool) {
    match ev {
        Change::Applied(p) => s.on_pod(p),
        Change::Deleted(p) => s.on_pod_deleted(&p),
        Change::Synced => *synced = true,
    }
}

fn handle_node_event(s: &mut Scheduler, ev: Change<Node>, synced: &mut bool) {
    match ev {
        Change::Applied(n) => {
            s.cache.upsert_node(n);
            if *synced {
                s.queue.move_all_unschedulable();
            }
        }
        Change::Deleted(n) => s.cache.remove_node(n.metadata.name.as_deref().unwrap_or("")),
        Change::Synced => {
            *synced = true;
            s.queue.move_all_unschedulable();
        }
    }
}
