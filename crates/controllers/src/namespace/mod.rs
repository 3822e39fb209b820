//! The Namespace controller: a namespace being deleted has everything in it
//! deleted (every namespaced resource the server lists in discovery), then
//! its `kubernetes` finalizer removed through `namespaces/{n}/finalize`, so
//! the API server removes it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

struct Ctx {
    client: kube::Client,
    /// How many times each terminating namespace was found not yet empty.
    attempts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx { client: client.clone(), attempts: Default::default() });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        // Pods going away (the slow part of emptying a namespace) re-check it.
        .watches_stream(informers.pods.deletions(), |p| p.metadata.namespace.map(|ns| kube::runtime::reflector::ObjectRef::<Namespace>::new(&ns)))
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == "kubernetes") {
        return Ok(Action::await_change());
    }
    let discovery = Discovery::new(ctx.client.clone()).run().await?;
    let mut remaining = 0usize;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) || !caps.supports_operation(verbs::DELETE) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, &ar);
            let items = api.list(&ListParams::default()).await?.items;
            for obj in items {
                remaining += 1;
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let oname = obj.metadata.name.clone().unwrap_or_default();
                match api.delete(&oname, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if remaining > 0 {
        // Content with finalizers or graceful deletion takes time; check again.
        // Other kinds with finalizers have no event here: look again, backing
        // off from 1 s to 30 s.
        let n = ctx.attempts.lock().map(|mut a| {
            let e = a.entry(name.clone()).or_insert(0);
            *e += 1;
            *e
        });
        let wait = Duration::from_secs(1u64 << n.unwrap_or(1).saturating_sub(1).min(5)).min(Duration::from_secs(30));
        return Ok(Action::requeue(wait));
    }
    if let Ok(mut a) = ctx.attempts.lock() {
        a.remove(&name);
    }
    let mut cur = (*ns).clone();
    if let Some(spec) = cur.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != "kubernetes").collect());
    }
    cur.metadata.managed_fields = None;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let body = serde_json::to_vec(&cur)?;
    let req = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
        .header("Content-Type", "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    match ctx.client.request_text(req).await {
        Ok(_) => {}
        Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = api;
    Ok(Action::await_change())
}
