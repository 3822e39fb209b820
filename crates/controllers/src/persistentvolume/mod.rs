//! The PersistentVolume controller with the local-path provisioner folded
//! in (kube-controller-manager's `pkg/controller/volume/persistentvolume`,
//! and the provisioner k3s ships as an add-on):
//!
//! - a claim is bound to the smallest Available volume of its class that
//!   fits its access modes, volume mode and request (or to the volume it
//!   names), volume first (`claimRef`, a compare-and-swap), then claim;
//! - a claim of a class whose provisioner is `skiff.io/local-path` gets a new
//!   volume: a directory under the node's local-path root (the kubelet
//!   publishes it on its Node), pinned to that node by node affinity. With
//!   `WaitForFirstConsumer` the node is the one the first pod using the
//!   claim was scheduled to;
//! - a volume whose claim is gone is Released, or deleted when its
//!   reclaim policy is Delete;
//! - a deleted claim keeps its `kubernetes.io/pvc-protection` finalizer
//!   (the pvc-protection controller's job) until no pod that has not
//!   finished uses it, so its volume is never reclaimed under a running pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_api::storage::{LOCAL_PATH_PROVISIONER as PROVISIONER, LOCAL_PATH_ROOT_ANNOTATION, PVC_PROTECTION_FINALIZER};
use skiff_runtime::events::{EventType, Recorder};
use tokio::sync::watch;

use crate::util::{is_conflict, is_not_found, on_shutdown, retry};
use crate::Error;
use skiff_runtime::informer::Informer;

/// Where local-path volumes live on a node that does not say.
const DEFAULT_LOCAL_PATH_ROOT: &str = "/var/lib/skiff/agent/storage";
/// The claim annotation naming the node a WaitForFirstConsumer claim is for.
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    recorder: Recorder,
}

/// Runs the claim binder/provisioner and the volume reclaimer until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    // One watch per kind, shared by both loops.
    let claims = Informer::start(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let volumes = Informer::start(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let classes = Informer::start(Api::<StorageClass>::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: informers.pods.store(),
        nodes: informers.nodes.store(),
        volumes: volumes.store(),
        classes: classes.store(),
        recorder: Recorder::new(client, "persistentvolume-controller"),
    });
    let binder = Controller::for_stream(claims.objects(), claims.store())
        // A pod scheduled to a node is the first consumer its claims wait for.
        .watches_stream(informers.pods.objects(), |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            claims_of(&pod).into_iter().map(|c| ObjectRef::<PersistentVolumeClaim>::new(&c).within(&ns)).collect::<Vec<_>>()
        })
        // A volume appearing, or freed, may suit a waiting claim.
        .watches_stream(volumes.objects(), |pv: PersistentVolume| {
            pv.spec.and_then(|s| s.claim_ref).and_then(|r| Some(ObjectRef::<PersistentVolumeClaim>::new(r.name.as_deref()?).within(r.namespace.as_deref()?)))
        })
        .graceful_shutdown_on(on_shutdown(shutdown.clone()))
        .run(reconcile_claim, retry, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let reclaimer = Controller::for_stream(volumes.objects(), volumes.store())
        // A claim going away releases its volume.
        .watches_stream(claims.objects(), |pvc: PersistentVolumeClaim| {
            pvc.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty()).map(|v| ObjectRef::<PersistentVolume>::new(&v))
        })
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile_volume, retry, ctx)
        .for_each(|_| futures::future::ready(()));
    tokio::join!(binder, reclaimer);
}

/// The claims a pod's volumes name.
fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone())).collect()
}

/// A quantity in bytes (0 when absent or unparseable).
fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> u128 {
    q.and_then(|q| skiff_runtime::quantity::value(&q.0)).map_or(0, |v| v.max(0) as u128)
}

fn requested(pvc: &PersistentVolumeClaim) -> u128 {
    bytes(pvc.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")))
}

fn capacity(pv: &PersistentVolume) -> u128 {
    bytes(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")))
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Whether `pv` can serve `pvc`: same class and volume mode, every access
/// mode the claim asks for, enough room, and free (or reserved for it).
fn fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else { return false };
    let free = match &vs.claim_ref {
        None => true,
        Some(r) => r.namespace == pvc.metadata.namespace && r.name == pvc.metadata.name && r.uid.as_ref().is_none_or(|u| Some(u) == pvc.metadata.uid.as_ref()),
    };
    let modes = vs.access_modes.clone().unwrap_or_default();
    free && pv.metadata.deletion_timestamp.is_none()
        && !matches!(phase(pv), "Released" | "Failed")
        && vs.storage_class_name.as_deref().unwrap_or("") == cs.storage_class_name.as_deref().unwrap_or("")
        && vs.volume_mode.as_deref().unwrap_or("Filesystem") == cs.volume_mode.as_deref().unwrap_or("Filesystem")
        && cs.access_modes.iter().flatten().all(|m| modes.contains(m))
        && capacity(pv) >= requested(pvc)
}

async fn reconcile_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = (pvc.namespace().unwrap_or_default(), pvc.name_any());
    if pvc.metadata.deletion_timestamp.is_some() {
        return release_protection(&ctx, &pvc, &ns, &name).await;
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    if let Some(volume) = spec.volume_name.clone().filter(|v| !v.is_empty()) {
        let Some(pv) = ctx.volumes.get(&ObjectRef::new(&volume)) else {
            // The volume it was bound to is gone: the claim is Lost.
            if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
                patch_claim_status(&ctx, &ns, &name, json!({"status": {"phase": "Lost"}})).await?;
                ctx.recorder.record(&*pvc, EventType::Warning, "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!");
            }
            return Ok(Action::await_change());
        };
        return bind(&ctx, &pv, &pvc).await;
    }
    // A volume that fits: one reserved for this claim first, then the smallest.
    let mut candidates: Vec<Arc<PersistentVolume>> = ctx.volumes.state().into_iter().filter(|pv| fits(pv, &pvc)).collect();
    candidates.sort_by_key(|pv| (pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none(), capacity(pv), pv.name_any()));
    if let Some(pv) = candidates.first() {
        return bind(&ctx, pv, &pvc).await;
    }
    let class_name = spec.storage_class_name.clone().unwrap_or_default();
    if class_name.is_empty() {
        return Ok(Action::await_change());
    }
    let Some(class) = ctx.classes.get(&ObjectRef::new(&class_name)) else {
        let msg = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
        ctx.recorder.record(&*pvc, EventType::Warning, "ProvisioningFailed", &msg);
        return Ok(Action::await_change());
    };
    if class.provisioner != PROVISIONER {
        let msg = format!(
            "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
            class.provisioner
        );
        ctx.recorder.record(&*pvc, EventType::Normal, "ExternalProvisioning", &msg);
        return Ok(Action::await_change());
    }
    let wait_for_consumer = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    let Some(node) = node_for(&ctx, &pvc, wait_for_consumer) else {
        if wait_for_consumer {
            ctx.recorder.record(&*pvc, EventType::Normal, "WaitForFirstConsumer", "waiting for first consumer to be created before binding");
            return Ok(Action::await_change());
        }
        // Immediate binding with no node to put the volume on yet.
        return Ok(Action::requeue(std::time::Duration::from_secs(5)));
    };
    let pv = provision(&ctx, &pvc, &class, &node).await?;
    bind(&ctx, &pv, &pvc).await
}

/// Lifts the pvc-protection finalizer of a deleted claim once no pod that
/// has not finished uses it. The pod watch brings the claim back here when
/// its last user ends or goes.
async fn release_protection(ctx: &Ctx, pvc: &PersistentVolumeClaim, ns: &str, name: &str) -> Result<Action, Error> {
    let finalizers = pvc.finalizers();
    if !finalizers.iter().any(|f| f == PVC_PROTECTION_FINALIZER) {
        return Ok(Action::await_change());
    }
    let in_use = ctx.pods.state().into_iter().any(|p| {
        let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        p.namespace().as_deref() == Some(ns) && !finished && claims_of(&p).iter().any(|c| c == name)
    });
    if in_use {
        return Ok(Action::await_change());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != PVC_PROTECTION_FINALIZER).collect();
    // The resourceVersion makes this a compare-and-swap: a finalizer added
    // meanwhile is not lost.
    let p = json!({"metadata": {"finalizers": rest, "resourceVersion": pvc.resource_version()}});
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    match claims.patch(name, &PatchParams::default(), &Patch::Merge(p)).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_not_found(&e) => Ok(Action::await_change()),
        Err(e) if is_conflict(&e) => Ok(Action::requeue(std::time::Duration::from_millis(200))),
        Err(e) => Err(e.into()),
    }
}

/// The node a new local volume for `pvc` goes to: the one the scheduler
/// selected, else the node of a pod using the claim, else (Immediate
/// binding only) the first Ready node.
fn node_for(ctx: &Ctx, pvc: &PersistentVolumeClaim, wait_for_consumer: bool) -> Option<Arc<Node>> {
    let by_name = |n: &str| ctx.nodes.get(&ObjectRef::new(n));
    if let Some(n) = pvc.annotations().get(SELECTED_NODE).and_then(|n| by_name(n)) {
        return Some(n);
    }
    let (ns, name) = (pvc.namespace().unwrap_or_default(), pvc.name_any());
    let consumer = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && claims_of(p).contains(&name))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .find_map(|n| by_name(&n));
    if consumer.is_some() || wait_for_consumer {
        return consumer;
    }
    let mut ready: Vec<Arc<Node>> = ctx
        .nodes
        .state()
        .into_iter()
        .filter(|n| n.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == "Ready" && c.status == "True"))
        .collect();
    ready.sort_by_key(|n| n.name_any());
    ready.into_iter().next()
}

/// Creates the local-path volume for `pvc` on `node` (or finds the one
/// already made), reserved for the claim.
async fn provision(ctx: &Ctx, pvc: &PersistentVolumeClaim, class: &StorageClass, node: &Node) -> Result<Arc<PersistentVolume>, Error> {
    let (ns, name, uid) = (pvc.namespace().unwrap_or_default(), pvc.name_any(), pvc.metadata.uid.clone().unwrap_or_default());
    let pv_name = format!("pvc-{uid}");
    if let Some(pv) = ctx.volumes.get(&ObjectRef::new(&pv_name)) {
        return Ok(pv);
    }
    let node_name = node.name_any();
    let root = node.annotations().get(LOCAL_PATH_ROOT_ANNOTATION).cloned().unwrap_or_else(|| DEFAULT_LOCAL_PATH_ROOT.into());
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).map(|q| q.0.clone()).unwrap_or_else(|| "0".into());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.name_any(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": format!("{root}/{pv_name}_{ns}_{name}"), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
        },
    }))?;
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let created = match api.create(&PostParams::default(), &pv).await {
        Ok(pv) => {
            let msg = format!("Successfully provisioned volume {pv_name} on node {node_name}");
            ctx.recorder.record(pvc, EventType::Normal, "ProvisioningSucceeded", &msg);
            pv
        }
        Err(e) if is_conflict(&e) => api.get(&pv_name).await?,
        Err(e) => return Err(e.into()),
    };
    Ok(Arc::new(created))
}

/// Binds `pvc` to `pv`: the volume's `claimRef` first (so two claims never
/// take one volume), then the claim's `volumeName`, then both statuses.
async fn bind(ctx: &Ctx, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<Action, Error> {
    let (ns, name, uid) = (pvc.namespace().unwrap_or_default(), pvc.name_any(), pvc.metadata.uid.clone().unwrap_or_default());
    let pv_name = pv.name_any();
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let claimed = claim_ref.is_some_and(|r| r.namespace.as_deref() == Some(ns.as_str()) && r.name.as_deref() == Some(name.as_str()));
    if claimed && claim_ref.and_then(|r| r.uid.as_deref()).is_some_and(|u| !u.is_empty() && u != uid) {
        // Reserved for an earlier claim of the same name.
        return Ok(Action::await_change());
    }
    if !claimed || claim_ref.and_then(|r| r.uid.as_deref()).unwrap_or("").is_empty() {
        let mut taken = pv.clone();
        taken.spec.get_or_insert_with(Default::default).claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(ns.clone()),
            name: Some(name.clone()),
            uid: Some(uid.clone()),
            resource_version: pvc.metadata.resource_version.clone(),
            ..Default::default()
        });
        taken.annotations_mut().insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
        taken.status = None;
        match volumes.replace(&pv_name, &PostParams::default(), &taken).await {
            Ok(_) => {}
            // Someone else changed the volume first: look again.
            Err(e) if is_conflict(&e) => return Ok(Action::requeue(std::time::Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        }
    }
    if phase(pv) != "Bound" {
        volumes.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await?;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    if pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(pv_name.as_str()) {
        let p = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
                       "spec": {"volumeName": pv_name}});
        claims.patch(&name, &PatchParams::default(), &Patch::Merge(p)).await?;
    }
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let status = pvc.status.clone().unwrap_or_default();
    let want_capacity: BTreeMap<String, _> = pv_spec.capacity.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound") || status.capacity.as_ref() != Some(&want_capacity) {
        let p = json!({"status": {"phase": "Bound", "accessModes": pv_spec.access_modes, "capacity": want_capacity}});
        patch_claim_status(ctx, &ns, &name, p).await?;
    }
    Ok(Action::await_change())
}

async fn patch_claim_status(ctx: &Ctx, ns: &str, name: &str, p: Value) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    match claims.patch_status(name, &PatchParams::default(), &Patch::Merge(p)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = pv.name_any();
    let set_phase = |p: &'static str| {
        let volumes = volumes.clone();
        let name = name.clone();
        async move { volumes.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": p}}))).await.map(|_| ()) }
    };
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        if matches!(phase(&pv), "" | "Pending") {
            set_phase("Available").await?;
        }
        return Ok(Action::await_change());
    };
    let (Some(ns), Some(claim_name)) = (claim_ref.namespace.clone(), claim_ref.name.clone()) else { return Ok(Action::await_change()) };
    // Read from the API, not the cache: deleting a volume (and, for
    // local-path, its data) must not rest on a claim the cache has not seen yet.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let claim = claims.get_opt(&claim_name).await?;
    let same = claim.as_ref().is_some_and(|c| claim_ref.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref()));
    if same {
        // Still (or about to be) bound: the claim side finishes binding.
        return Ok(Action::await_change());
    }
    // The claim is gone: reclaim.
    if pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete") {
        match volumes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    } else if phase(&pv) != "Released" {
        set_phase("Released").await?;
    }
    Ok(Action::await_change())
}
