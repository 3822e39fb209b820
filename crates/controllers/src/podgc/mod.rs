//! Pod garbage collection: pods bound to nodes that no longer exist are
//! deleted at once (no kubelet will ever finish them), as Kubernetes'
//! PodGC does for orphaned pods.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
}

/// Runs the collector until shutdown.
pub async fn run(client: kube::Client, shutdown: watch::Receiver<bool>) {
    let (nodes, nw) = reflector::store();
    let node_events = reflector::reflector(nw, watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff());
    // A node going away is the event that orphans pods.
    let node_deleted = node_events.filter_map(|ev| futures::future::ready(matches!(ev, Ok(watcher::Event::Delete(_))).then_some(())));
    let ctx = Arc::new(Ctx { client: client.clone(), nodes: nodes.clone() });
    let controller = Controller::new(Api::<Pod>::all(client), watcher::Config::default().fields("spec.nodeName!="));
    controller
        .reconcile_all_on(node_deleted)
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) else { return Ok(Action::await_change()) };
    // Only act once the node informer has listed everything.
    if ctx.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::await_change());
    }
    if ctx.nodes.get(&reflector::ObjectRef::new(&node)).is_some() {
        return Ok(Action::await_change());
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
