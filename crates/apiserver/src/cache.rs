//! The watch cache: one store watch over `/registry/` keeps every resource's
//! current objects and recent history in memory, and serves lists and
//! watches without a store request per client (kube-apiserver's cacher).
//!
//! The dispatcher applies each store event to its resource's cache under a
//! write lock, broadcasts it while still holding the lock, and only then
//! advances the global `seen` revision. So a reader that holds a resource's
//! read lock and sees `seen = S` knows the cache holds exactly the state at
//! revision `max(S, last event of that resource)`, and a subscriber taken
//! under the lock misses nothing and gets nothing twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ResourceType, RESOURCES};
use skiff_store::{EventKind, ListOptions, Store, StoreError};
use tokio::sync::{broadcast, watch};

/// Events kept per resource for watches that resume from a revision.
const HISTORY: usize = 10_000;
/// Live events a watcher may fall behind before its stream is closed.
const FANOUT: usize = 1024;
/// How long a read waits for the cache to reach a requested revision
/// before answering "Too large resource version".
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// One object as the cache holds it: its JSON (with `resourceVersion`) and
/// the few fields selectors look at.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The store key.
    pub(crate) key: String,
    /// The object's JSON, `metadata.resourceVersion` included.
    pub(crate) json: Bytes,
    /// Name, namespace, labels and selectable fields.
    pub(crate) selectable: Value,
    /// A custom resource (not of a built-in group version).
    custom: bool,
    /// Its protobuf message (apiVersion, kind, message), made once, when a
    /// protobuf client first needs it.
    protobuf: std::sync::OnceLock<Option<(String, String, Bytes)>>,
}

impl Cached {
    fn new(key: String, stored: &[u8], rev: i64) -> Option<Self> {
        let mut obj: Value = serde_json::from_slice(stored).ok()?;
        obj["metadata"]["resourceVersion"] = json!(rev.to_string());
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let selectable = skiff_api::selector::selectable(kind, &obj);
        let custom = !builtin(&key);
        Some(Self { key, json: Bytes::from(serde_json::to_vec(&obj).ok()?), selectable, custom, protobuf: std::sync::OnceLock::new() })
    }

    /// Whether both selectors accept this object. A custom resource's
    /// selectable fields (its CRD's) are read from the whole object.
    pub(crate) fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        if !labels.matches(&self.selectable) {
            return false;
        }
        if self.custom && fields.beyond_metadata() {
            return fields.matches(&self.object());
        }
        fields.matches(&self.selectable)
    }

    /// The object as Kubernetes' protobuf envelope (`None` if its kind has
    /// no protobuf message).
    pub(crate) fn protobuf(&self) -> Option<Bytes> {
        let (api_version, kind, raw) = self.protobuf_message()?;
        Some(Bytes::from(skiff_api::protobuf::envelope(api_version, kind, raw)))
    }

    /// The object's protobuf message alone, as list items carry it.
    pub(crate) fn protobuf_message(&self) -> Option<(&str, &str, &Bytes)> {
        self.protobuf
            .get_or_init(|| {
                let o = self.object();
                let api_version = o.get("apiVersion").and_then(Value::as_str)?.to_string();
                let kind = o.get("kind").and_then(Value::as_str)?.to_string();
                Some((api_version, kind, Bytes::from(skiff_api::protobuf::encode_body(&o)?)))
            })
            .as_ref()
            .map(|(a, k, r)| (a.as_str(), k.as_str(), r))
    }

    /// The whole object, parsed.
    pub(crate) fn object(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// What a store event did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted; the object is its last state, at the deletion revision.
    Deleted,
}

/// One change of one object, with the object before it (for selector
/// transitions: an update that stops matching is a DELETED to that watcher).
#[derive(Debug)]
pub(crate) struct CacheEvent {
    /// The store revision of the change.
    pub(crate) rev: i64,
    /// What happened.
    pub(crate) change: Change,
    /// The object after the change (its last state for a delete).
    pub(crate) object: Arc<Cached>,
    /// The object before the change, if it existed.
    pub(crate) prev: Option<Arc<Cached>>,
}

/// Messages a watcher receives.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    /// A change.
    Event(Arc<CacheEvent>),
    /// The cache was rebuilt (its store watch broke); watchers must end so
    /// that clients resume, or re-list on 410.
    Reset,
}

struct Inner {
    objects: BTreeMap<String, Arc<Cached>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event with a revision above this is in `history`.
    floor: i64,
    /// Revision of the last event applied.
    rev: i64,
}

/// The cache of one resource type (of every version: objects are kept as
/// stored).
pub(crate) struct ResourceCache {
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Message>,
}

/// Errors of cache reads.
#[derive(Debug)]
pub(crate) enum CacheError {
    /// The revision is older than the cache's window.
    TooOld { requested: i64, floor: i64 },
    /// The cache did not reach the revision in time.
    TooLarge { requested: i64, current: i64 },
}

/// A consistent snapshot of matching objects.
pub(crate) struct Snapshot {
    /// The revision the snapshot is at.
    pub(crate) rev: i64,
    /// Matching objects in key order.
    pub(crate) items: Vec<Arc<Cached>>,
    /// More matching objects follow the last item.
    pub(crate) more: bool,
}

/// A watch registered with the cache: the events to replay, then live ones.
pub(crate) struct Subscription {
    /// The state when the watch started (for "send initial events").
    pub(crate) initial: Vec<Arc<Cached>>,
    /// History events after the requested revision.
    pub(crate) replay: Vec<Arc<CacheEvent>>,
    /// Live events.
    pub(crate) live: broadcast::Receiver<Message>,
    /// The revision `initial` is at.
    pub(crate) rev: i64,
}

impl ResourceCache {
    fn apply(&self, ev: CacheEventInput) {
        let Ok(mut inner) = self.inner.write() else { return };
        let prev = inner.objects.get(&ev.key).cloned();
        let Some(object) = Cached::new(ev.key.clone(), &ev.value, ev.rev) else { return };
        let object = Arc::new(object);
        let change = match (ev.kind, &prev) {
            (EventKind::Delete, _) => {
                inner.objects.remove(&ev.key);
                Change::Deleted
            }
            (EventKind::Put, None) => {
                inner.objects.insert(ev.key.clone(), object.clone());
                Change::Added
            }
            (EventKind::Put, Some(_)) => {
                inner.objects.insert(ev.key.clone(), object.clone());
                Change::Modified
            }
            (EventKind::Progress, _) => return,
        };
        let event = Arc::new(CacheEvent { rev: ev.rev, change, object, prev });
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.floor = old.rev;
            }
        }
        inner.rev = ev.rev;
        // No receivers is fine; lagging ones find out on their next recv.
        let _ = self.tx.send(Message::Event(event));
    }

    fn reset(&self, objects: BTreeMap<String, Arc<Cached>>, rev: i64) {
        let Ok(mut inner) = self.inner.write() else { return };
        inner.objects = objects;
        inner.history.clear();
        inner.floor = rev;
        inner.rev = rev;
        let _ = self.tx.send(Message::Reset);
    }
}

struct CacheEventInput {
    kind: EventKind,
    key: String,
    value: Bytes,
    rev: i64,
}

/// The caches of every resource type, fed by one store watch. Built-in
/// types have theirs from the start; custom resources' are made when
/// their first object or reader comes.
pub(crate) struct WatchCache {
    store: Arc<dyn Store>,
    by_prefix: RwLock<HashMap<String, Arc<ResourceCache>>>,
    /// The revision of the last full load: a cache made later has seen
    /// every event of its prefix since.
    loaded: std::sync::atomic::AtomicI64,
    seen: watch::Sender<i64>,
}

fn empty_cache(floor: i64) -> Arc<ResourceCache> {
    let inner = Inner { objects: BTreeMap::new(), history: VecDeque::new(), floor, rev: floor };
    Arc::new(ResourceCache { inner: RwLock::new(inner), tx: broadcast::channel(FANOUT).0 })
}

/// Whether a store key is a built-in resource type's (a custom resource's
/// otherwise).
fn builtin(key: &str) -> bool {
    static PREFIXES: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    let prefixes = PREFIXES.get_or_init(|| RESOURCES.iter().map(ResourceType::key_prefix).collect());
    resource_prefix(key).is_some_and(|p| prefixes.contains(p))
}

/// `/registry/{group}/{plural}/` of a key.
fn resource_prefix(key: &str) -> Option<&str> {
    let mut slashes = key.match_indices('/').map(|(i, _)| i);
    let end = slashes.nth(3)?;
    Some(&key[..=end])
}

impl WatchCache {
    /// Loads every resource from the store and starts following it. The
    /// follower stops when `shutdown` is cancelled.
    pub(crate) async fn start(store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) -> Result<Arc<Self>, StoreError> {
        let by_prefix = RESOURCES.iter().map(|rt| (rt.key_prefix(), empty_cache(0))).collect();
        let cache = Arc::new(Self { store, by_prefix: RwLock::new(by_prefix), loaded: std::sync::atomic::AtomicI64::new(0), seen: watch::channel(0).0 });
        let mut rev = cache.load().await?;
        let follower = cache.clone();
        tokio::spawn(async move {
            loop {
                let stream = match follower.store.watch("/registry/", rev + 1).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cache: store watch failed; reloading");
                        match follower.reload(&mut shutdown).await {
                            Some(r) => {
                                rev = r;
                                continue;
                            }
                            None => return,
                        }
                    }
                };
                tokio::pin!(stream);
                loop {
                    let ev = tokio::select! {
                        ev = stream.next() => ev,
                        _ = shutdown.changed() => return,
                    };
                    match ev {
                        Some(Ok(ev)) if ev.kind == EventKind::Progress => {
                            // Nothing under /registry/ changed up to here.
                            rev = rev.max(ev.kv.mod_revision);
                            follower.seen.send_replace(rev);
                        }
                        Some(Ok(ev)) => {
                            rev = ev.kv.mod_revision;
                            if let Some(rc) = resource_prefix(&ev.kv.key).map(|p| follower.prefix_cache(p)) {
                                rc.apply(CacheEventInput { kind: ev.kind, key: ev.kv.key, value: ev.kv.value, rev });
                            }
                            follower.seen.send_replace(rev);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "watch cache: store watch broke; reloading");
                            match follower.reload(&mut shutdown).await {
                                Some(r) => rev = r,
                                None => return,
                            }
                            break;
                        }
                        None => {
                            // The store closed the watch (it is shutting down).
                            return;
                        }
                    }
                }
            }
        });
        Ok(cache)
    }

    /// Re-lists everything, retrying until it works or shutdown.
    async fn reload(&self, shutdown: &mut watch::Receiver<bool>) -> Option<i64> {
        loop {
            match self.load().await {
                Ok(rev) => return Some(rev),
                Err(e) => tracing::warn!(error = %e, "watch cache: reload failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }

    /// Lists the whole registry at one revision into the caches.
    async fn load(&self) -> Result<i64, StoreError> {
        let mut fresh: HashMap<String, BTreeMap<String, Arc<Cached>>> = HashMap::new();
        let mut opts = ListOptions { revision: None, start_after: None, limit: 5000 };
        let rev = loop {
            let page = self.store.list("/registry/", opts.clone()).await?;
            for kv in page.items.iter() {
                let Some(prefix) = resource_prefix(&kv.key) else { continue };
                if let Some(c) = Cached::new(kv.key.clone(), &kv.value, kv.mod_revision) {
                    fresh.entry(prefix.to_string()).or_default().insert(kv.key.clone(), Arc::new(c));
                }
            }
            opts.revision = Some(page.revision);
            opts.start_after = page.items.last().map(|kv| kv.key.clone());
            if !page.more {
                break page.revision;
            }
        };
        for prefix in fresh.keys() {
            self.prefix_cache(prefix);
        }
        let caches: Vec<(String, Arc<ResourceCache>)> = match self.by_prefix.read() {
            Ok(m) => m.iter().map(|(p, rc)| (p.clone(), rc.clone())).collect(),
            Err(_) => Vec::new(),
        };
        for (prefix, rc) in caches {
            rc.reset(fresh.remove(&prefix).unwrap_or_default(), rev);
        }
        self.loaded.store(rev, std::sync::atomic::Ordering::SeqCst);
        self.seen.send_replace(rev);
        Ok(rev)
    }

    /// The cache of one key prefix, made empty when it has none yet.
    fn prefix_cache(&self, prefix: &str) -> Arc<ResourceCache> {
        if let Some(rc) = self.by_prefix.read().ok().and_then(|m| m.get(prefix).cloned()) {
            return rc;
        }
        let floor = self.loaded.load(std::sync::atomic::Ordering::SeqCst);
        match self.by_prefix.write() {
            Ok(mut m) => m.entry(prefix.to_string()).or_insert_with(|| empty_cache(floor)).clone(),
            Err(_) => empty_cache(floor),
        }
    }

    fn resource(&self, rt: &ResourceType) -> Option<Arc<ResourceCache>> {
        Some(self.prefix_cache(&rt.key_prefix()))
    }

    /// Waits until the cache has applied every write up to `rev`.
    pub(crate) async fn wait_for(&self, rev: i64) -> Result<(), CacheError> {
        let mut rx = self.seen.subscribe();
        let reached = tokio::time::timeout(FRESHNESS_WAIT, rx.wait_for(|seen| *seen >= rev)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CacheError::TooLarge { requested: rev, current: *self.seen.borrow() }),
        }
    }

    /// The store's current revision, asked of it now: what a consistent
    /// read must reach. Over etcd another API server may have written
    /// since this one last heard, so the store is asked (and its watch
    /// sends a progress notification, which moves the cache up to it).
    pub(crate) async fn store_revision(&self) -> Result<i64, skiff_api::error::ApiError> {
        self.store.fresh_revision().await.map_err(crate::respond::store_unavailable)
    }

    /// The latest revision the cache has applied.
    pub(crate) fn revision(&self) -> i64 {
        *self.seen.borrow()
    }

    /// The revision of the last change to one resource type (derived
    /// state, like the RBAC index, is rebuilt when it moves).
    pub(crate) fn resource_revision(&self, rt: &ResourceType) -> i64 {
        self.resource(rt).and_then(|rc| rc.inner.read().ok().map(|i| i.rev)).unwrap_or(0)
    }

    /// Matching objects under `prefix`, after the key `start_after`, at
    /// most `limit` (0 = all).
    pub(crate) fn list(&self, rt: &ResourceType, prefix: &str, labels: &LabelSelector, fields: &FieldSelector, limit: usize) -> Snapshot {
        let Some(rc) = self.resource(rt) else { return Snapshot { rev: self.revision(), items: Vec::new(), more: false } };
        let Ok(inner) = rc.inner.read() else { return Snapshot { rev: self.revision(), items: Vec::new(), more: false } };
        let rev = inner.rev.max(*self.seen.borrow());
        let mut items = Vec::new();
        let mut more = false;
        for (_, obj) in inner.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)) {
            if !obj.matches(labels, fields) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push(obj.clone());
        }
        Snapshot { rev, items, more }
    }

    /// One object by its store key, as the cache holds it now (an informer
    /// lister's read: it may lag the store).
    pub(crate) fn get(&self, rt: &ResourceType, key: &str) -> Option<Arc<Cached>> {
        let rc = self.resource(rt)?;
        let inner = rc.inner.read().ok()?;
        inner.objects.get(key).cloned()
    }

    /// Registers a watch. With `from = None` the current state is returned
    /// as `initial`; with `Some(rev)` the history after `rev` is replayed.
    pub(crate) fn subscribe(&self, rt: &ResourceType, prefix: &str, from: Option<i64>) -> Result<Subscription, CacheError> {
        let rc = self.resource(rt).ok_or(CacheError::TooOld { requested: from.unwrap_or(0), floor: 0 })?;
        let inner = rc.inner.read().map_err(|_| CacheError::TooOld { requested: from.unwrap_or(0), floor: 0 })?;
        let rev = inner.rev.max(*self.seen.borrow());
        let live = rc.tx.subscribe();
        match from {
            None => {
                let initial = inner.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, o)| o.clone()).collect();
                Ok(Subscription { initial, replay: Vec::new(), live, rev })
            }
            Some(from) if from < inner.floor => Err(CacheError::TooOld { requested: from, floor: inner.floor }),
            Some(from) => {
                let replay = inner.history.iter().filter(|e| e.rev > from && e.object.key.starts_with(prefix)).cloned().collect();
                Ok(Subscription { initial: Vec::new(), replay, live, rev })
            }
        }
    }

    /// A receiver of the applied revision, for bookmarks.
    pub(crate) fn seen(&self) -> watch::Receiver<i64> {
        self.seen.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_prefix_is_the_first_three_segments() {
        assert_eq!(resource_prefix("/registry/core/pods/default/web"), Some("/registry/core/pods/"));
        assert_eq!(resource_prefix("/registry/core/namespaces/default"), Some("/registry/core/namespaces/"));
        assert_eq!(resource_prefix("/registry/core"), None);
    }
}
