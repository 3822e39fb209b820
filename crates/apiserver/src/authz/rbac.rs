//! The RBAC authorizer: Roles, ClusterRoles and their bindings, read from
//! the watch cache into an [`Index`] by subject that is rebuilt only when
//! one of the four kinds changed.

use std::sync::{Arc, RwLock};

use serde_json::Value;
pub(crate) use skiff_api::rbac::index::Index;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::ResourceType;

use crate::cache::WatchCache;

/// The RBAC authorizer's view: the index, rebuilt when the watch cache's
/// RBAC resources moved past the revisions it was built at.
pub(crate) struct Rbac {
    kinds: Option<[&'static ResourceType; 4]>,
    current: RwLock<(Vec<i64>, Arc<Index>)>,
    /// One rebuild at a time: requests that find the index stale while
    /// another rebuilds wait for that one instead of each building their own.
    rebuilding: std::sync::Mutex<()>,
}

impl Rbac {
    /// An authorizer with an empty index.
    pub(crate) fn new() -> Self {
        let find = |plural| skiff_api::registry::find(skiff_api::rbac::GROUP, "v1", plural);
        let kinds = match (find("clusterroles"), find("roles"), find("clusterrolebindings"), find("rolebindings")) {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        };
        Self { kinds, current: RwLock::new((Vec::new(), Arc::new(Index::default()))), rebuilding: std::sync::Mutex::new(()) }
    }

    /// The index as of the cache's latest RBAC changes.
    pub(crate) fn index(&self, cache: &WatchCache) -> Arc<Index> {
        let Some(kinds) = &self.kinds else { return Arc::new(Index::default()) };
        let revs: Vec<i64> = kinds.iter().map(|rt| cache.resource_revision(rt)).collect();
        let fresh_enough = |revs: &[i64]| self.current.read().ok().filter(|cur| cur.0 == revs).map(|cur| cur.1.clone());
        if let Some(index) = fresh_enough(&revs) {
            return index;
        }
        let _one = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let revs: Vec<i64> = kinds.iter().map(|rt| cache.resource_revision(rt)).collect();
        if let Some(index) = fresh_enough(&revs) {
            return index;
        }
        let objects = |rt: &ResourceType| -> Vec<Value> {
            cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|o| o.object()).collect()
        };
        let fresh = Arc::new(Index::build(&objects(kinds[0]), &objects(kinds[1]), &objects(kinds[2]), &objects(kinds[3])));
        if let Ok(mut cur) = self.current.write() {
            *cur = (revs, fresh.clone());
        }
        fresh
    }
}
