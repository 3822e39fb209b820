//! Pod garbage collection, as Kubernetes' PodGC: pods bound to nodes that
//! no longer exist are deleted (no kubelet will ever finish them) once the
//! node has been missing for 40 s; finished pods beyond
//! `--terminated-pod-gc-threshold` (12,500) are deleted oldest first.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};

use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// Finished pods kept before the oldest are deleted (`--terminated-pod-gc-threshold`).
    threshold: usize,
    /// When each missing node was first found missing.
    missing: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a node must stay missing before its pods are deleted (PodGC's
/// quarantine: an informer may not have seen a new node yet).
const QUARANTINE: std::time::Duration = std::time::Duration::from_secs(40);

/// Runs the collector until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, threshold: usize, shutdown: watch::Receiver<bool>) {
    // A node going away is the event that orphans pods.
    let node_deleted = informers.nodes.deletions().map(|_| ());
    let ctx = Arc::new(Ctx { client: client.clone(), nodes: informers.nodes.store(), pods: informers.pods.store(), threshold, missing: Default::default() });
    let controller = Controller::for_stream(informers.pods.objects(), informers.pods.store());
    controller
        .reconcile_all_on(node_deleted)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ctx.threshold > 0 && skiff_runtime::resources::pod_terminated(&pod) {
        collect_terminated(&ctx).await?;
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) else { return Ok(Action::await_change()) };
    // Only act once the node informer has listed everything.
    if ctx.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::await_change());
    }
    if ctx.nodes.get(&reflector::ObjectRef::new(&node)).is_some() {
        if let Ok(mut m) = ctx.missing.lock() {
            m.remove(&node);
        }
        return Ok(Action::await_change());
    }
    let since = ctx.missing.lock().map(|mut m| *m.entry(node.clone()).or_insert_with(std::time::Instant::now)).unwrap_or_else(|_| std::time::Instant::now());
    if since.elapsed() < QUARANTINE {
        // The quarantine's end is a deadline, not an event.
        return Ok(Action::requeue(QUARANTINE - since.elapsed() + std::time::Duration::from_millis(100)));
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    // Confirm with a live read: the informer may lag a node's creation.
    if Api::<Node>::all(ctx.client.clone()).get_opt(&node).await?.is_some() {
        return Ok(Action::await_change());
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(pod.metadata.name.as_deref().unwrap_or(""), &dp).await {
        Ok(_) => tracing::info!(pod = ?pod.metadata.name, node, "deleted a pod bound to a node that is gone"),
        Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Deletes the oldest finished pods beyond the threshold.
async fn collect_terminated(ctx: &Ctx) -> Result<(), Error> {
    let mut done: Vec<Arc<Pod>> =
        ctx.pods.state().into_iter().filter(|p| skiff_runtime::resources::pod_terminated(p) && p.metadata.deletion_timestamp.is_none()).collect();
    if done.len() <= ctx.threshold {
        return Ok(());
    }
    done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0));
    let extra = done.len() - ctx.threshold;
    for p in done.into_iter().take(extra) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(p.metadata.name.as_deref().unwrap_or(""), &dp).await {
            Ok(_) => {}
            Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
