//! VolumeBinding: a pod's claims must exist; a bound claim's volume pins
//! the pod to the nodes its node affinity allows (a local volume lives on
//! one node); an unbound claim is fine only when its class waits for the
//! first consumer (the provisioner then makes the volume on the pod's node).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{ObjectRef, Store};
use skiff_runtime::selectors::node_term_matches;

/// The failure reason of a node a bound volume cannot reach.
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";

/// The claims, volumes and classes the scheduler sees.
#[derive(Clone)]
pub struct Volumes(Option<Stores>);

#[derive(Clone)]
struct Stores {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

impl Volumes {
    /// Lookups in the given caches.
    pub fn new(claims: Store<PersistentVolumeClaim>, volumes: Store<PersistentVolume>, classes: Store<StorageClass>) -> Self {
        Self(Some(Stores { claims, volumes, classes }))
    }

    /// No volumes known: pods with claims are scheduled as if they had none
    /// (for tests of the other plugins).
    pub fn none() -> Self {
        Self(None)
    }
}

/// Before any node is looked at: the volumes of the pod's bound claims, or
/// why the pod cannot be scheduled anywhere yet.
pub fn prefilter(pod: &Pod, v: &Volumes) -> Result<Vec<Arc<PersistentVolume>>, String> {
    let Some(s) = &v.0 else { return Ok(Vec::new()) };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).filter_map(|v| v.persistent_volume_claim.as_ref());
    let mut bound = Vec::new();
    for c in claims {
        let name = &c.claim_name;
        let Some(claim) = s.claims.get(&ObjectRef::new(name).within(ns)) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let spec = claim.spec.clone().unwrap_or_default();
        match spec.volume_name.filter(|v| !v.is_empty()) {
            Some(volume) => match s.volumes.get(&ObjectRef::new(&volume)) {
                Some(pv) => bound.push(pv),
                None => return Err(format!("persistentvolume \"{volume}\" not found")),
            },
            None => {
                let class = spec.storage_class_name.unwrap_or_default();
                let waits = s.classes.get(&ObjectRef::new(&class)).is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
                if !waits {
                    return Err("pod has unbound immediate PersistentVolumeClaims".into());
                }
            }
        }
    }
    Ok(bound)
}

/// Filter: every bound volume's node affinity admits the node.
pub fn filter(bound: &[Arc<PersistentVolume>], node: &Node) -> Result<(), Vec<String>> {
    let admits = |pv: &PersistentVolume| {
        let terms = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms);
        terms.is_none_or(|t| t.iter().any(|t| node_term_matches(t, node)))
    };
    if bound.iter().all(|pv| admits(pv)) {
        Ok(())
    } else {
        Err(vec![CONFLICT.into()])
    }
}
