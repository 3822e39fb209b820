//! The one watch cache every skiff component reads the API through, as
//! client-go's shared informer: one list+watch per kind and process, a
//! cache (the reader half of a kube-runtime reflector store), and a change
//! feed fanned out to any number of subscribers.
//!
//! Built on kube-runtime's `watcher`, which lists, watches, resumes from
//! the last resourceVersion and relists when the watch expires (410). What
//! this adds is what the components need beyond a reflector:
//!
//! * **deletions are forwarded**, including objects that vanished while the
//!   watch was down (found by comparing a relist with the cache), so a
//!   consumer that keeps derived state (the scheduler's node accounting, a
//!   proxy's rules) never keeps a ghost;
//! * **fan-out without loss**: each subscriber has its own unbounded queue
//!   (a slow one delays only itself), and a new subscriber first receives
//!   the cache's contents, so no one misses the initial list by subscribing
//!   a moment late;
//! * **an end**: the watch stops on shutdown, or when the last handle is
//!   dropped (a leader that lost its Lease drops its informers), and every
//!   feed then ends.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

/// One change, as a subscriber sees it.
#[derive(Debug)]
pub enum Change<K> {
    /// The object was added or modified (or listed).
    Applied(Arc<K>),
    /// The object was deleted (or was gone when the kind was relisted).
    Deleted(Arc<K>),
    /// A (re)list is complete: every listed object has been given as
    /// `Applied`, every vanished one as `Deleted`, and the cache holds
    /// exactly the list.
    Synced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Applied(o) => Self::Applied(o.clone()),
            Self::Deleted(o) => Self::Deleted(o.clone()),
            Self::Synced => Self::Synced,
        }
    }
}

/// The subscribers and what they need to join late.
struct Feed<K> {
    subscribers: Vec<mpsc::UnboundedSender<Change<K>>>,
    /// Whether the first list has completed.
    synced: bool,
    /// Whether the watch has stopped (new feeds end at once).
    ended: bool,
}

/// One kind's shared cache and change feed. Cheap to share behind an `Arc`;
/// the watch runs until shutdown or until the last handle is dropped.
pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    feed: Arc<Mutex<Feed<K>>>,
    /// Dropped with the handle, which stops the watch.
    _alive: watch::Sender<()>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// Starts watching `api` (filtered by `config`) until `shutdown` flips.
    pub fn start(api: Api<K>, config: watcher::Config, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        Self::start_with(api, Default::default(), config, shutdown)
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// As [`Informer::start`], for kinds known at run time (dynamic objects).
    pub fn start_with(api: Api<K>, dyntype: K::DynamicType, config: watcher::Config, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let writer = kube::runtime::reflector::store::Writer::new(dyntype.clone());
        let store = writer.as_reader();
        let feed = Arc::new(Mutex::new(Feed { subscribers: Vec::new(), synced: false, ended: false }));
        let (alive, dropped) = watch::channel(());
        tokio::spawn(reflect(api, config, dyntype, writer, store.clone(), feed.clone(), shutdown, dropped));
        Arc::new(Self { store, feed, _alive: alive })
    }

    /// The cache (filled once the first list completes).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every change from now on, after the cache's present contents (each as
    /// `Applied`, then `Synced` if the first list is done). Ends when the
    /// watch stops.
    pub fn changes(&self) -> impl Stream<Item = Change<K>> + Send + Unpin + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut feed = lock(&self.feed);
        // Under the lock the watch cannot apply an event: the snapshot and
        // the live feed join without a gap or an overlap.
        if !feed.ended {
            for o in self.store.state() {
                let _ = tx.send(Change::Applied(o));
            }
            if feed.synced {
                let _ = tx.send(Change::Synced);
            }
            feed.subscribers.push(tx);
        }
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
    }

    /// The objects of [`Informer::changes`] (applied or deleted alike), as
    /// kube-runtime's `Controller` streams take them.
    pub fn objects(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + Unpin + 'static {
        self.changes().filter_map(|c| {
            futures::future::ready(match c {
                Change::Applied(o) | Change::Deleted(o) => Some(Ok((*o).clone())),
                Change::Synced => None,
            })
        })
    }

    /// Deleted objects only.
    pub fn deletions(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + Unpin + 'static {
        self.changes().filter_map(|c| futures::future::ready(if let Change::Deleted(o) = c { Some(Ok((*o).clone())) } else { None }))
    }
}

fn lock<K>(feed: &Mutex<Feed<K>>) -> std::sync::MutexGuard<'_, Feed<K>> {
    feed.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watch loop: applies each event to the cache and hands the changes
/// to every subscriber, under one lock so late joiners see a consistent cut.
#[allow(clippy::too_many_arguments)]
async fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    mut writer: kube::runtime::reflector::store::Writer<K>,
    store: Store<K>,
    feed: Arc<Mutex<Feed<K>>>,
    mut shutdown: watch::Receiver<bool>,
    mut dropped: watch::Receiver<()>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    // No component reads managedFields, and they are often the bulk of an
    // object: drop them before caching.
    let mut events = watcher(api, config).default_backoff().modify(|o| o.meta_mut().managed_fields = None).boxed();
    // The objects seen by the relist in progress.
    let mut listed: HashSet<ObjectRef<K>> = HashSet::new();
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = shutdown.wait_for(|s| *s) => break,
            // The last handle is gone.
            _ = dropped.changed() => break,
        };
        let ev = match ev {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(kind = %K::kind(&dyntype), error = %e, "watch failed; retrying");
                continue;
            }
            Some(Ok(ev)) => ev,
        };
        let mut feed = lock(&feed);
        let before = matches!(ev, watcher::Event::InitDone).then(|| store.state());
        writer.apply_watcher_event(&ev);
        let changes = match ev {
            watcher::Event::Init => {
                listed.clear();
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                listed.insert(ObjectRef::from_obj_with(&o, dyntype.clone()));
                vec![Change::Applied(Arc::new(o))]
            }
            watcher::Event::Apply(o) => vec![Change::Applied(Arc::new(o))],
            watcher::Event::Delete(o) => vec![Change::Deleted(Arc::new(o))],
            watcher::Event::InitDone => {
                let mut changes: Vec<Change<K>> = before
                    .into_iter()
                    .flatten()
                    .filter(|o| !listed.contains(&ObjectRef::from_obj_with(o.as_ref(), dyntype.clone())))
                    .map(Change::Deleted)
                    .collect();
                listed.clear();
                feed.synced = true;
                changes.push(Change::Synced);
                changes
            }
        };
        feed.subscribers.retain(|s| changes.iter().all(|c| s.send(c.clone()).is_ok()));
    }
    let mut feed = lock(&feed);
    feed.ended = true;
    feed.subscribers.clear();
}
