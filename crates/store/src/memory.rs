//! An in-memory backend with the same semantics as [`crate::SqliteStore`],
//! for unit tests of the layers above. Nothing survives the process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::broadcast;

use crate::watch::{spawn_watch, HistoryReader, HISTORY_BATCH};
use crate::{Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream};

#[derive(Default)]
struct State {
    rev: Revision,
    compacted: Revision,
    live: BTreeMap<String, KeyValue>,
    /// Every retained event in revision order.
    log: Vec<Event>,
}

impl State {
    /// The value of `key` as of `rev`, from the log.
    fn at(&self, key: &str, rev: Revision) -> Option<KeyValue> {
        self.log.iter().rev().find(|e| e.kv.key == key && e.kv.mod_revision <= rev).filter(|e| e.kind == EventKind::Put).map(|e| e.kv.clone())
    }
}

/// The in-memory store (a fake of the durable one, for tests).
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self { state: Arc::default(), events: broadcast::channel(1024).0 }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn write(&self, f: impl FnOnce(&mut State) -> Result<Event>) -> Result<KeyValue> {
        let mut st = self.lock()?;
        let ev = f(&mut st)?;
        st.rev = ev.kv.mod_revision;
        st.log.push(ev.clone());
        match ev.kind {
            EventKind::Put => st.live.insert(ev.kv.key.clone(), ev.kv.clone()),
            EventKind::Delete => st.live.remove(&ev.kv.key),
            EventKind::Progress => None,
        };
        let _ = self.events.send(Arc::new(vec![ev.clone()]));
        Ok(ev.kv)
    }
}

impl Store for MemoryStore {
    fn current_revision(&self) -> Revision {
        self.lock().map(|s| s.rev).unwrap_or(0)
    }

    fn compacted_revision(&self) -> Revision {
        self.lock().map(|s| s.compacted).unwrap_or(0)
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let out = self.lock().map(|s| s.live.get(key).cloned());
        async move { out }.boxed()
    }

    fn list(&self, prefix: &str, opts: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        let out = (|| {
            let st = self.lock()?;
            let revision = match opts.revision {
                Some(r) if r > st.rev => return Err(StoreError::FutureRevision { requested: r, current: st.rev }),
                Some(r) if r > 0 && r < st.compacted => return Err(StoreError::Compacted { requested: r, compacted: st.compacted }),
                Some(r) if r > 0 => r,
                _ => st.rev,
            };
            let keys: Vec<String> = if revision == st.rev {
                st.live.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
            } else {
                let mut k: Vec<String> = st.log.iter().filter(|e| e.kv.key.starts_with(prefix)).map(|e| e.kv.key.clone()).collect();
                k.sort();
                k.dedup();
                k
            };
            let mut items = Vec::new();
            let mut more = false;
            for key in keys {
                if opts.start_after.as_deref().is_some_and(|a| key.as_str() <= a) {
                    continue;
                }
                let kv = if revision == st.rev { st.live.get(&key).cloned() } else { st.at(&key, revision) };
                if let Some(kv) = kv {
                    if opts.limit > 0 && items.len() == opts.limit {
                        more = true;
                        break;
                    }
                    items.push(kv);
                }
            }
            Ok(ListResult { items, revision, more })
        })();
        async move { out }.boxed()
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<KeyValue>> {
        let out = self.write(|st| {
            if st.live.contains_key(key) {
                return Err(StoreError::AlreadyExists(key.to_string()));
            }
            let rev = st.rev + 1;
            Ok(Event { kind: EventKind::Put, created: true, kv: KeyValue { key: key.to_string(), value, create_revision: rev, mod_revision: rev } })
        });
        async move { out }.boxed()
    }

    fn update(&self, key: &str, value: Bytes, expected: Revision) -> BoxFuture<'_, Result<KeyValue>> {
        let out = self.write(|st| {
            let cur = st.live.get(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            if cur.mod_revision != expected {
                return Err(StoreError::Conflict { key: key.to_string(), expected, actual: cur.mod_revision });
            }
            Ok(Event {
                kind: EventKind::Put,
                created: false,
                kv: KeyValue { key: key.to_string(), value, create_revision: cur.create_revision, mod_revision: st.rev + 1 },
            })
        });
        async move { out }.boxed()
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<KeyValue>> {
        let out = self.write(|st| {
            let cur = st.live.get(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            if let Some(expected) = expected.filter(|e| *e != cur.mod_revision) {
                return Err(StoreError::Conflict { key: key.to_string(), expected, actual: cur.mod_revision });
            }
            Ok(Event { kind: EventKind::Delete, created: false, kv: KeyValue { mod_revision: st.rev + 1, ..cur.clone() } })
        });
        async move { out }.boxed()
    }

    fn watch(&self, prefix: &str, from: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        let live = self.events.subscribe();
        let out = (|| {
            let st = self.lock()?;
            let from = if from <= 0 { st.rev + 1 } else { from };
            if from < st.compacted {
                return Err(StoreError::Compacted { requested: from, compacted: st.compacted });
            }
            Ok(from)
        })();
        let state = self.state.clone();
        let history: HistoryReader = Arc::new(move |prefix: String, from: Revision| {
            let out = (|| {
                let st = state.lock().map_err(|e| StoreError::Backend(e.to_string()))?;
                if from < st.compacted {
                    return Err(StoreError::Compacted { requested: from, compacted: st.compacted });
                }
                let events: Vec<Event> =
                    st.log.iter().filter(|e| e.kv.mod_revision >= from && e.kv.key.starts_with(&prefix)).take(HISTORY_BATCH).cloned().collect();
                Ok((events, st.rev))
            })();
            async move { out }.boxed()
        });
        async move { Ok(spawn_watch(prefix, out?, live, history)) }.boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        let out = self.lock().map(|mut st| {
            let target = revision.min(st.rev + 1);
            if target > st.compacted {
                st.compacted = target;
                let live = st.live.clone();
                // Keep what a read at a retained revision still needs: the
                // newest version at or below the target of each live key.
                st.log.retain(|e| {
                    e.kv.mod_revision >= target || (e.kind == EventKind::Put && live.get(&e.kv.key).is_some_and(|kv| kv.mod_revision == e.kv.mod_revision))
                });
            }
        });
        async move { out }.boxed()
    }
}
