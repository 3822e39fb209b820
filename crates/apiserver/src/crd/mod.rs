//! CustomResourceDefinitions in the API server (kube's
//! apiextensions-apiserver, in process): the custom resource types served,
//! read from the watch cache's CRDs so every API server over one store
//! serves the same, and their OpenAPI documents (`crate::convert` converts
//! their objects between versions). `status` keeps each CRD's conditions
//! and removes its objects when it is deleted.

pub(crate) mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::ResourceType;

use crate::cache::WatchCache;

/// The CustomResourceDefinition resource type.
pub(crate) fn crd_type() -> Option<&'static ResourceType> {
    skiff_api::registry::find(skiff_api::apiextensions::GROUP, "v1", "customresourcedefinitions")
}

/// The custom resource types served at one revision of the CRDs.
#[derive(Default)]
pub(crate) struct Snapshot {
    /// The CRDs' cache revision this was made at.
    rev: i64,
    /// Every served version of every Established CRD.
    pub(crate) types: Vec<ResourceType>,
    /// OpenAPI v3 documents of the custom group versions, by path, with hashes.
    pub(crate) docs: BTreeMap<String, (String, Bytes)>,
}

/// The served custom resource types, remade when the CRDs change.
#[derive(Default)]
pub(crate) struct CustomResources {
    current: RwLock<Arc<Snapshot>>,
}

impl CustomResources {
    /// The types served now (as the watch cache has the CRDs).
    pub(crate) fn snapshot(&self, cache: &WatchCache) -> Arc<Snapshot> {
        let Some(crd_rt) = crd_type() else { return Arc::default() };
        let rev = cache.resource_revision(crd_rt);
        if let Ok(cur) = self.current.read() {
            if cur.rev == rev {
                return cur.clone();
            }
        }
        let crds = cache.list(crd_rt, &crd_rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
        let mut types = Vec::new();
        for c in &crds.items {
            types.extend(skiff_api::apiextensions::served_types(&c.object()));
        }
        let mut by_gv: BTreeMap<(&str, &str), Vec<&ResourceType>> = BTreeMap::new();
        for t in &types {
            by_gv.entry((t.group, t.version)).or_default().push(t);
        }
        let docs = by_gv
            .into_iter()
            .filter_map(|((g, v), rts)| {
                let doc = serde_json::to_vec(&skiff_api::openapi::document(&rts)?).ok()?;
                Some((skiff_api::openapi::gv_path(g, v), (skiff_api::openapi::hash(&doc), Bytes::from(doc))))
            })
            .collect();
        let snap = Arc::new(Snapshot { rev, types, docs });
        if let Ok(mut cur) = self.current.write() {
            *cur = snap.clone();
        }
        snap
    }

    /// The custom resource type at `group/version/plural`, if served.
    pub(crate) fn find(&self, cache: &WatchCache, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.snapshot(cache).types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }
}
