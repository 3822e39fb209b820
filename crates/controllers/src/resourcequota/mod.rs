//! The ResourceQuota controller (kube-controller-manager's
//! `resourcequota`): each quota's `status.hard` mirrors its spec and
//! `status.used` counts what its namespace holds (pods by phase and scope,
//! their requests and limits, services, node ports, claims and storage,
//! secrets, config maps, replication controllers, quotas, and `count/*`
//! of those), with the arithmetic the API server's admission uses. It
//! recounts a namespace when a quota or a pod there changes, and every
//! namespace with a quota every 10 s for the other kinds (kube's
//! replenishment does the same on their deletions).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ReplicationController, ResourceQuota, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{json, Value};
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::{mpsc, watch};

use crate::Informers;

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: Informers, shutdown: watch::Receiver<bool>) {
    let quotas = Informer::<ResourceQuota>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let forward = |tx: mpsc::UnboundedSender<String>| {
        move |ns: Option<String>| {
            if let Some(ns) = ns {
                let _ = tx.send(ns);
            }
        }
    };
    let on_quota = forward(tx.clone());
    let mut quota_changes = quotas.changes();
    tokio::spawn(async move {
        while let Some(c) = quota_changes.next().await {
            if let Change::Applied(q) | Change::Deleted(q) = c {
                on_quota(q.metadata.namespace.clone());
            }
        }
    });
    let on_pod = forward(tx);
    let mut pod_changes = informers.pods.changes();
    tokio::spawn(async move {
        while let Some(c) = pod_changes.next().await {
            if let Change::Applied(p) | Change::Deleted(p) = c {
                on_pod(p.metadata.namespace.clone());
            }
        }
    });
    let mut stop = shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        let mut due: BTreeSet<String> = BTreeSet::new();
        tokio::select! {
            ns = rx.recv() => match ns {
                Some(ns) => { due.insert(ns); }
                None => return,
            },
            _ = tick.tick() => due.extend(quotas.store().state().iter().filter_map(|q| q.metadata.namespace.clone())),
            _ = stop.wait_for(|s| *s) => return,
        }
        // Coalesce a burst (a Deployment's pods) into one count per namespace.
        while let Ok(ns) = rx.try_recv() {
            due.insert(ns);
        }
        for ns in due {
            let mine: Vec<ResourceQuota> = quotas.store().state().iter().filter(|q| q.metadata.namespace.as_deref() == Some(ns.as_str())).map(|q| (**q).clone()).collect();
            if mine.is_empty() {
                continue;
            }
            if let Err(e) = recount(&client, &informers, &ns, &mine).await {
                tracing::warn!(namespace = %ns, error = %e, "counting quota usage failed; retried at the next change or tick");
            }
        }
    }
}

async fn list<K>(client: &kube::Client, ns: &str) -> Result<Vec<Value>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let items = Api::<K>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items;
    Ok(items.iter().filter_map(|o| serde_json::to_value(o).ok()).collect())
}

async fn recount(client: &kube::Client, informers: &Informers, ns: &str, quotas: &[ResourceQuota]) -> Result<(), kube::Error> {
    let pods: Vec<Value> =
        informers.pods.store().state().iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns)).filter_map(|p| serde_json::to_value(&**p).ok()).collect();
    let mut objects: Vec<(&str, &str, &str, Vec<Value>)> = vec![("Pod", "", "pods", pods)];
    objects.push(("Service", "", "services", list::<Service>(client, ns).await?));
    objects.push(("PersistentVolumeClaim", "", "persistentvolumeclaims", list::<PersistentVolumeClaim>(client, ns).await?));
    objects.push(("Secret", "", "secrets", list::<Secret>(client, ns).await?));
    objects.push(("ConfigMap", "", "configmaps", list::<ConfigMap>(client, ns).await?));
    objects.push(("ReplicationController", "", "replicationcontrollers", list::<ReplicationController>(client, ns).await?));
    objects.push(("ResourceQuota", "", "resourcequotas", quotas.iter().filter_map(|q| serde_json::to_value(q).ok()).collect()));
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    for q in quotas {
        let quota = serde_json::to_value(q).unwrap_or_default();
        let used = skiff_api::quota::used(&quota, objects.iter().flat_map(|(k, g, p, objs)| objs.iter().map(move |o| (*k, *g, *p, o))));
        let used: BTreeMap<String, String> = used.iter().map(|(k, v)| (k.clone(), skiff_api::quota::show(k, *v))).collect();
        let hard = quota.pointer("/spec/hard").cloned().unwrap_or(json!({}));
        let status = json!({"hard": hard, "used": used});
        if quota.get("status") == Some(&status) {
            continue;
        }
        // An update (kube's role grants no patch), guarded by the version counted.
        let name = q.metadata.name.clone().unwrap_or_default();
        let mut next = quota.clone();
        next["status"] = status;
        let next: ResourceQuota = serde_json::from_value(next).map_err(kube::Error::SerdeError)?;
        match api.replace_status(&name, &PostParams::default(), &next).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
