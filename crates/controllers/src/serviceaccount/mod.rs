//! The ServiceAccount controller: every active namespace has a `default`
//! ServiceAccount (recreated if deleted).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;

pub mod tokens;

use crate::util::{on_shutdown, retry};
use crate::Error;

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, shutdown: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx { client: client.clone() });
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(Api::<ServiceAccount>::all(client), watcher::Config::default().fields("metadata.name=default"), |sa| {
            sa.metadata.namespace.clone().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if api.get_opt("default").await?.is_none() {
        let sa = ServiceAccount { metadata: kube::api::ObjectMeta { name: Some("default".into()), ..Default::default() }, ..Default::default() };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(e) if crate::util::is_conflict(&e) => {}
            // The namespace may have started terminating meanwhile.
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
