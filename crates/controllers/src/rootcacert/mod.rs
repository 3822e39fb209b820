//! The root CA publisher (kube-controller-manager's
//! `root-ca-cert-publisher`): every active namespace has a
//! `kube-root-ca.crt` ConfigMap holding the cluster CA, which in-cluster
//! clients mount to trust the API server; it is recreated if deleted and
//! put back if changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";
/// Its key.
pub const KEY: &str = "ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: kube::Client,
    ca: String,
}

/// Runs the publisher until shutdown, publishing `ca` (PEM).
pub async fn run(client: kube::Client, ca: String, shutdown: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx { client: client.clone(), ca });
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(Api::<ConfigMap>::all(client), watcher::Config::default().fields(&format!("metadata.name={NAME}")), |cm| {
            cm.metadata.namespace.clone().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn wanted(ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(NAME.into()),
            annotations: Some(BTreeMap::from([("kubernetes.io/description".to_string(), DESCRIPTION.to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), ca.to_string())])),
        ..Default::default()
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let result = match api.get_opt(NAME).await? {
        None => api.create(&PostParams::default(), &wanted(&ctx.ca)).await.map(|_| ()),
        Some(cm) if cm.data.as_ref().and_then(|d| d.get(KEY)) != Some(&ctx.ca) || cm.data.as_ref().is_some_and(|d| d.len() != 1) => {
            // Put the published data back, keeping the object (its
            // resourceVersion makes the write a compare-and-swap).
            let mut fixed = cm.clone();
            fixed.data = wanted(&ctx.ca).data;
            fixed.binary_data = None;
            api.replace(NAME, &PostParams::default(), &fixed).await.map(|_| ())
        }
        Some(_) => Ok(()),
    };
    match result {
        Ok(()) => Ok(Action::await_change()),
        // A race with another writer: the watch brings the next state.
        Err(e) if crate::util::is_conflict(&e) => Ok(Action::requeue(std::time::Duration::from_millis(100))),
        // The namespace may have started terminating meanwhile.
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
