//! Informers shared by the controllers of one controller manager: one
//! watch and one cache per kind (not one per controller), with every
//! change — deletions included — fanned out to each controller that
//! subscribes. (kube-runtime's shared reflector does not forward
//! deletions, and a ReplicaSet must hear that its pod was deleted.)

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

/// How many changes a slow subscriber may fall behind before missing some.
const BUFFER: usize = 1 << 16;

/// One kind's cache and change feed.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> {
    /// The cache, shared by every reader.
    pub store: Store<K>,
    tx: broadcast::Sender<(Arc<K>, bool)>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts watching `api` until `shutdown`.
    pub fn start(api: Api<K>, config: watcher::Config, mut shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let (store, writer) = reflector::store();
        let (tx, _) = broadcast::channel(BUFFER);
        let feed = tx.clone();
        tokio::spawn(async move {
            // managedFields are often the bulk of an object and no controller
            // reads them: drop them before caching.
            let stream = watcher(api, config).default_backoff().modify(|o| o.meta_mut().managed_fields = None);
            let mut events = reflector::reflector(writer, stream).boxed();
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = shutdown.changed() => return,
                };
                match ev {
                    Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                        let _ = feed.send((Arc::new(o), false));
                    }
                    Some(Ok(watcher::Event::Delete(o))) => {
                        let _ = feed.send((Arc::new(o), true));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "informer watch error; retrying"),
                    None => return,
                }
            }
        });
        Arc::new(Self { store, tx })
    }

    /// A feed of changed (or deleted) objects, for `Controller::owns_stream`
    /// and friends.
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.feed(false)
    }

    /// A feed of deleted objects only.
    pub fn deletions(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.feed(true)
    }

    fn feed(&self, only_deleted: bool) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let rx = self.tx.subscribe();
        futures::stream::unfold(rx, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok((o, deleted)) if deleted || !only_deleted => return Some((Ok((*o).clone()), rx)),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "controller fell behind its informer"),
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}
