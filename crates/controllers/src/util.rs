//! Helpers the controllers share: owner references, shutdown futures,
//! error policy.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::controller::Action;
use kube::Resource;
use tokio::sync::watch;

/// Resolves when `shutdown` flips to true.
pub(crate) async fn on_shutdown(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// A controller `OwnerReference` pointing at `owner`.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of the controller owning `obj`, if any.
pub(crate) fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta().owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

/// Retry failed reconciles with a short backoff (kube-runtime adds jitter
/// and per-object deduplication).
pub(crate) fn retry<K>(_obj: Arc<K>, err: &crate::Error, _ctx: Arc<impl Sized>) -> Action {
    tracing::debug!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Whether an API error is 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is 409.
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Makes sure a ControllerRevision named `<owner>-<hash>` records
/// `template` (for `kubectl rollout history` of DaemonSets and
/// StatefulSets); revisions number up from the owner's existing ones.
pub(crate) async fn ensure_revision<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    owner: &K,
    mut labels: std::collections::BTreeMap<String, String>,
    hash: &str,
    template: &serde_json::Value,
) -> Result<(), crate::Error> {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let name = format!("{}-{hash}", owner.meta().name.clone().unwrap_or_default());
    let api: kube::Api<ControllerRevision> = kube::Api::namespaced(client.clone(), &ns);
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let revision =
        api.list(&Default::default()).await?.items.iter().filter(|r| controller_uid(*r) == Some(uid.as_str())).map(|r| r.revision).max().unwrap_or(0) + 1;
    labels.insert("controller-revision-hash".into(), hash.into());
    let cr: ControllerRevision = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(owner)]},
        "data": {"spec": {"template": template}}, "revision": revision}))?;
    match api.create(&Default::default(), &cr).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
