//! skiff's key-value store, shaped like etcd's v3 API.
//!
//! Every write gets the next value of one global, monotonically increasing
//! revision. Updates and deletes are compare-and-swap on the key's
//! `mod_revision`, so concurrent writers never silently lose updates. A watch
//! starts at any revision still retained and is resumable; revisions older
//! than the last compaction answer [`StoreError::Compacted`] (the API server
//! turns that into `410 Gone`).
//!
//! Three backends implement [`Store`]: [`SqliteStore`] (the embedded default,
//! durable, group-committed), [`EtcdStore`] (a real etcd v3 cluster, for
//! several API servers and high availability) and [`MemoryStore`] (for unit
//! tests).

#![deny(missing_docs)]

pub mod etcd;
mod memory;
mod sqlite;
mod watch;

pub use etcd::{EtcdOptions, EtcdStore};
pub use memory::MemoryStore;
pub use sqlite::{backup as sqlite_backup, revision_of as sqlite_revision, SqliteOptions, SqliteStore};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A store revision: etcd's global, monotonically increasing write counter.
pub type Revision = i64;

/// One key and its value at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The stored bytes. For a delete event: the value the key had before.
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a delete: the delete).
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
    /// Nothing under the watched prefix changed up to `kv.mod_revision`
    /// (etcd's progress notification; `kv.key` is empty). Lets a watcher
    /// know how far it is current when other keys move the revision.
    Progress,
}

/// One change observed by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, its last value and the
    /// revision of the delete.
    pub kv: KeyValue,
    /// Whether this put created the key (rather than updating it).
    pub created: bool,
}

/// Options of a range read.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Read the state as of this revision (must not be compacted); `None`
    /// reads the latest state.
    pub revision: Option<Revision>,
    /// Only keys strictly greater than this one (pagination).
    pub start_after: Option<String>,
    /// At most this many items; 0 = no limit.
    pub limit: usize,
}

/// The result of a range read.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the read observed.
    pub revision: Revision,
    /// Whether more keys follow the last item.
    pub more: bool,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Create on an existing key.
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// Update or delete of a missing key.
    #[error("key {0:?} not found")]
    NotFound(String),
    /// The compare-and-swap failed: the key moved on since it was read.
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision the key has.
        actual: Revision,
    },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (oldest retained is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction revision: revisions below it are gone.
        compacted: Revision,
    },
    /// The requested revision has not been written yet.
    #[error("required revision {requested} is a future revision (current is {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The backend failed (I/O, corruption, ...).
    #[error("storage backend: {0}")]
    Backend(String),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// The backend did not answer in time; whether a write took effect is
    /// unknown (the API server answers 504 `Timeout`).
    #[error("{0}")]
    Timeout(String),
    /// The backend asks for fewer requests (etcd's "too many requests"; the
    /// API server answers 429 with `Retry-After`).
    #[error("{0}")]
    TooManyRequests(String),
    /// No backend member could be reached (the API server answers 503).
    #[error("{0}")]
    Unavailable(String),
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of watch events in revision order.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The storage interface, shaped so that etcd's Range/Txn/Watch map onto it
/// one call for one call.
pub trait Store: Send + Sync + 'static {
    /// The revision of the last committed write.
    fn current_revision(&self) -> Revision;
    /// The compaction revision: history below it is gone.
    fn compacted_revision(&self) -> Revision;
    /// Reads one key at the latest revision.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>>;
    /// Reads the keys under `prefix`.
    fn list(&self, prefix: &str, opts: ListOptions) -> BoxFuture<'_, Result<ListResult>>;
    /// Creates `key` if it is absent (etcd: Txn If(create_revision == 0)).
    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<KeyValue>>;
    /// Replaces `key` if its mod revision is still `expected`
    /// (etcd: Txn If(mod_revision == expected)).
    fn update(&self, key: &str, value: Bytes, expected: Revision) -> BoxFuture<'_, Result<KeyValue>>;
    /// Deletes `key`, if `expected` is given only when its mod revision still
    /// matches. Returns the deleted value with the delete's revision.
    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<KeyValue>>;
    /// Watches keys under `prefix` for changes with revision `>= from`.
    /// `from = 0` means "from now on".
    fn watch(&self, prefix: &str, from: Revision) -> BoxFuture<'_, Result<WatchStream>>;
    /// Discards history below `revision`.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>>;
    /// The backend's current revision, asked of it now: a consistent read
    /// must reach it. Where other processes write the same backend (etcd
    /// under several API servers) this is more than [`Store::current_revision`],
    /// which only knows this process's writes; the etcd backend also asks
    /// its watches for a progress notification, so that a watcher learns
    /// it is current even when no key it watches changed.
    fn fresh_revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move { Ok(self.current_revision()) })
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            // Keys are UTF-8 paths of ASCII separators; bumping the last byte
            // of an ASCII prefix stays valid UTF-8.
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    String::new()
}

#[cfg(test)]
mod conformance;
