//! The embedded, durable backend: SQLite in WAL mode.
//!
//! Layout: `log` holds every retained revision (like etcd's MVCC keyspace);
//! `kv` points each live key at its newest revision; `meta` holds the current
//! and the compacted revision.
//!
//! All writes go through one writer thread that group-commits: it drains the
//! queue of pending writes, applies them in one transaction with one fsync
//! (`synchronous=FULL`), then publishes the events and answers the callers.
//! Because only that thread ever writes, SQLite's "database is locked" cannot
//! happen, and compaction runs there in small slices between client batches,
//! never holding the write lock for long. Reads use a pool of read-only
//! connections, which WAL lets run concurrently with the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use crate::watch::{spawn_watch, HistoryReader, HISTORY_BATCH};
use crate::{prefix_end, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream};

/// Options of [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Revisions deleted per compaction slice.
    pub compaction_slice: i64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { max_batch: 512, compaction_slice: 2000 }
    }
}

enum WriteOp {
    Create { key: String, value: Bytes, reply: oneshot::Sender<Result<KeyValue>> },
    Update { key: String, value: Bytes, expected: Revision, reply: oneshot::Sender<Result<KeyValue>> },
    Delete { key: String, expected: Option<Revision>, reply: oneshot::Sender<Result<KeyValue>> },
    Compact { revision: Revision, reply: oneshot::Sender<Result<()>> },
}

struct Shared {
    path: PathBuf,
    /// An exclusive lock on `<db>.lock`: one process writes a database.
    _lock: std::fs::File,
    current: AtomicI64,
    compacted: AtomicI64,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

/// The embedded SQLite store. Cloning shares the same database.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: std_mpsc::Sender<WriteOp>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn open(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    // The writer is the only writer, so a busy wait only covers checkpoints.
    conn.busy_timeout(Duration::from_secs(30)).map_err(backend)?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
  rev INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  deleted INTEGER NOT NULL,
  create_rev INTEGER NOT NULL,
  value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY,
  create_rev INTEGER NOT NULL,
  mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('rev', 0), ('compacted', 0);
";

/// Writes a consistent copy of the database at `db` to `out` (SQLite's
/// `VACUUM INTO`, one read transaction, so a server may keep writing
/// meanwhile); returns the revision the copy holds. Revisions and history
/// are kept, so a restored cluster's resourceVersions stay in order.
pub fn backup(db: &Path, out: &Path) -> Result<Revision> {
    if out.exists() {
        return Err(backend(format!("{} already exists", out.display())));
    }
    let conn = open(db, true)?;
    let target = out.to_str().ok_or_else(|| backend("the snapshot path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(backend)?;
    revision_of(out)
}

/// The revision a database file holds (a check that it is a skiff store).
pub fn revision_of(db: &Path) -> Result<Revision> {
    let conn = open(db, true)?;
    conn.query_row("SELECT value FROM meta WHERE name = 'rev'", [], |r| r.get(0))
        .map_err(|e| backend(format!("{} is not a skiff SQLite store: {e}", db.display())))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock = lock_exclusively(&path)?;
        let conn = open(&path, false)?;
        // A small WAL: checkpoint every 32 pages (128 KiB) and cut the file
        // back to 128 KiB after each, so under churn the WAL stays small
        // (the default sits at 4 MiB).
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=32; PRAGMA journal_size_limit=131072;")
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let meta = |name: &str| -> Result<i64> { conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).map_err(backend) };
        let current = meta("rev")?;
        let compacted = meta("compacted")?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            path,
            _lock: lock,
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            readers: Mutex::new(Vec::new()),
            events,
        });
        let (tx, rx) = std_mpsc::channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new().name("skiff-store-writer".into()).spawn(move || writer_loop(conn, rx, writer_shared, opts)).map_err(backend)?;
        Ok(Self { shared, writer: tx })
    }

    /// Size in bytes of the database file plus its WAL.
    pub fn disk_usage(&self) -> u64 {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.shared.path.clone().into_os_string();
            p.push(suffix);
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        total
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteOp) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(make(reply)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        read_with(self.shared.clone(), f).await
    }
}

async fn read_with<T: Send + 'static>(shared: Arc<Shared>, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let pooled = shared.readers.lock().map_err(backend)?.pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open(&shared.path, true)?,
        };
        let out = f(&mut conn);
        if let Ok(mut pool) = shared.readers.lock() {
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
        out
    })
    .await
    .map_err(backend)?
}

fn read_history(conn: &mut Connection, prefix: &str, from: Revision) -> Result<(Vec<Event>, Revision)> {
    let tx = conn.transaction().map_err(backend)?;
    let current: i64 = tx.query_row("SELECT value FROM meta WHERE name='rev'", [], |r| r.get(0)).map_err(backend)?;
    let compacted: i64 = tx.query_row("SELECT value FROM meta WHERE name='compacted'", [], |r| r.get(0)).map_err(backend)?;
    if from < compacted {
        return Err(StoreError::Compacted { requested: from, compacted });
    }
    let end = prefix_end(prefix);
    let mut stmt = tx
        .prepare_cached(
            "SELECT rev, key, deleted, create_rev, value FROM log
             WHERE rev >= ?1 AND rev <= ?2 AND key >= ?3 AND key < ?4 ORDER BY rev LIMIT ?5",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![from, current, prefix, end, HISTORY_BATCH as i64], |r| {
            let rev: i64 = r.get(0)?;
            let deleted: i64 = r.get(2)?;
            let create_rev: i64 = r.get(3)?;
            Ok(Event {
                kind: if deleted != 0 { EventKind::Delete } else { EventKind::Put },
                created: deleted == 0 && create_rev == rev,
                kv: KeyValue { key: r.get(1)?, value: decode(4, r.get::<_, Vec<u8>>(4)?)?, create_revision: create_rev, mod_revision: rev },
            })
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    Ok((rows, current))
}

impl Store for SqliteStore {
    fn current_revision(&self) -> Revision {
        self.shared.current.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let key = key.to_string();
        self.read(move |conn| {
            conn.query_row("SELECT kv.create_rev, kv.mod_rev, log.value FROM kv JOIN log ON log.rev = kv.mod_rev WHERE kv.key = ?1", [&key], |r| {
                Ok(KeyValue { key: key.clone(), create_revision: r.get(0)?, mod_revision: r.get(1)?, value: decode(2, r.get::<_, Vec<u8>>(2)?)? })
            })
            .optional()
            .map_err(backend)
        })
        .boxed()
    }

    fn list(&self, prefix: &str, opts: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        let prefix = prefix.to_string();
        self.read(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let current: i64 = tx.query_row("SELECT value FROM meta WHERE name='rev'", [], |r| r.get(0)).map_err(backend)?;
            let compacted: i64 = tx.query_row("SELECT value FROM meta WHERE name='compacted'", [], |r| r.get(0)).map_err(backend)?;
            let end = prefix_end(&prefix);
            let start = match &opts.start_after {
                // The smallest key strictly greater than `after`.
                Some(after) if after.as_str() >= prefix.as_str() => format!("{after}\0"),
                _ => prefix.clone(),
            };
            let limit: i64 = if opts.limit == 0 { -1 } else { opts.limit as i64 + 1 };
            let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<KeyValue> {
                Ok(KeyValue { key: r.get(0)?, create_revision: r.get(1)?, mod_revision: r.get(2)?, value: decode(3, r.get::<_, Vec<u8>>(3)?)? })
            };
            let (mut items, revision) = match opts.revision {
                Some(rev) if rev > 0 && rev < current => {
                    if rev < compacted {
                        return Err(StoreError::Compacted { requested: rev, compacted });
                    }
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT key, create_rev, rev, value FROM (
                               SELECT key, create_rev, MAX(rev) AS rev, value, deleted FROM log
                               WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key)
                             WHERE deleted = 0 ORDER BY key LIMIT ?4",
                        )
                        .map_err(backend)?;
                    let items =
                        stmt.query_map(params![start, end, rev, limit], map).map_err(backend)?.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)?;
                    (items, rev)
                }
                Some(rev) if rev > current => {
                    return Err(StoreError::FutureRevision { requested: rev, current });
                }
                _ => {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT kv.key, kv.create_rev, kv.mod_rev, log.value FROM kv JOIN log ON log.rev = kv.mod_rev
                             WHERE kv.key >= ?1 AND kv.key < ?2 ORDER BY kv.key LIMIT ?3",
                        )
                        .map_err(backend)?;
                    let items = stmt.query_map(params![start, end, limit], map).map_err(backend)?.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)?;
                    (items, current)
                }
            };
            let more = opts.limit > 0 && items.len() > opts.limit;
            items.truncate(if opts.limit > 0 { opts.limit } else { items.len() });
            Ok(ListResult { items, revision, more })
        })
        .boxed()
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        self.send(move |reply| WriteOp::Create { key, value, reply }).boxed()
    }

    fn update(&self, key: &str, value: Bytes, expected: Revision) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        self.send(move |reply| WriteOp::Update { key, value, expected, reply }).boxed()
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        self.send(move |reply| WriteOp::Delete { key, expected, reply }).boxed()
    }

    fn watch(&self, prefix: &str, from: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        async move {
            let live = self.shared.events.subscribe();
            let current = self.current_revision();
            let from = if from <= 0 { current + 1 } else { from };
            let compacted = self.compacted_revision();
            if from < compacted {
                return Err(StoreError::Compacted { requested: from, compacted });
            }
            let shared = self.shared.clone();
            let history: HistoryReader = Arc::new(move |prefix: String, from: Revision| {
                let shared = shared.clone();
                read_with(shared, move |conn| read_history(conn, &prefix, from)).boxed()
            });
            Ok(spawn_watch(prefix, from, live, history))
        }
        .boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        self.send(move |reply| WriteOp::Compact { revision, reply }).boxed()
    }
}

/// A compaction in progress: revisions below `target` are being removed,
/// slice by slice, from `cursor` upwards.
struct Compaction {
    target: Revision,
    cursor: Revision,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<WriteOp>, shared: Arc<Shared>, opts: SqliteOptions) {
    let mut rev = shared.current.load(Ordering::Acquire);
    let mut compaction: Option<Compaction> = None;
    loop {
        // Block for work unless a compaction has slices left to do.
        let first = if compaction.is_some() {
            match rx.try_recv() {
                Ok(op) => Some(op),
                Err(std_mpsc::TryRecvError::Empty) => None,
                Err(std_mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        };
        let mut batch = Vec::new();
        if let Some(op) = first {
            batch.push(op);
            while batch.len() < opts.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            apply_batch(&mut conn, &shared, &mut rev, batch, &mut compaction);
        }
        if let Some(c) = compaction.as_mut() {
            match compact_slice(&mut conn, c, opts.compaction_slice) {
                Ok(true) => {
                    if let Some(done) = compaction.take() {
                        // Give the WAL back to the file system once the
                        // deletions are durable, so it stays bounded.
                        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                            tracing::warn!(error = %e, "WAL checkpoint after compaction failed");
                        }
                        for w in done.waiters {
                            let _ = w.send(Ok(()));
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "compaction slice failed");
                    if let Some(done) = compaction.take() {
                        for w in done.waiters {
                            let _ = w.send(Err(StoreError::Backend(e.to_string())));
                        }
                    }
                }
            }
        }
    }
}

/// Deletes one slice of compacted history; returns whether it finished.
fn compact_slice(conn: &mut Connection, c: &mut Compaction, slice: i64) -> rusqlite::Result<bool> {
    let hi = (c.cursor + slice).min(c.target);
    // A row below the target goes if it is a tombstone or if a newer row of
    // the same key at or below the target supersedes it: what remains is
    // exactly what a read at any retained revision needs.
    conn.execute(
        "DELETE FROM log WHERE rev >= ?1 AND rev < ?2 AND (deleted = 1 OR EXISTS (
           SELECT 1 FROM log n WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= ?3))",
        params![c.cursor, hi, c.target],
    )?;
    c.cursor = hi;
    Ok(hi >= c.target)
}

fn apply_batch(conn: &mut Connection, shared: &Shared, rev: &mut Revision, batch: Vec<WriteOp>, compaction: &mut Option<Compaction>) {
    let start_rev = *rev;
    let mut results: Vec<(WriteOp, Result<KeyValue>)> = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(batch, &e.to_string());
            return;
        }
    };
    let mut fatal: Option<String> = None;
    for op in batch {
        if fatal.is_some() {
            results.push((op, Err(StoreError::Closed)));
            continue;
        }
        let out = match &op {
            WriteOp::Compact { revision, .. } => {
                let target = (*revision).min(*rev + 1);
                let old = shared.compacted.load(Ordering::Acquire);
                if target > old {
                    match tx.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [target]) {
                        Ok(_) => {
                            // A row becomes removable when a newer version
                            // of its key appears, which can be long after
                            // the previous compaction point: scan from the
                            // oldest retained revision.
                            let oldest: i64 = tx.query_row("SELECT COALESCE(MIN(rev), 0) FROM log", [], |r| r.get(0)).unwrap_or(old);
                            let cursor = compaction.as_ref().map_or(oldest, |c| c.cursor.min(oldest));
                            let waiters = compaction.take().map(|c| c.waiters).unwrap_or_default();
                            *compaction = Some(Compaction { target, cursor, waiters });
                            shared.compacted.store(target, Ordering::Release);
                        }
                        Err(e) => fatal = Some(e.to_string()),
                    }
                }
                Ok(KeyValue { key: String::new(), value: Bytes::new(), create_revision: 0, mod_revision: 0 })
            }
            WriteOp::Create { key, value, .. } => apply_create(&tx, rev, key, value),
            WriteOp::Update { key, value, expected, .. } => apply_update(&tx, rev, key, value, *expected),
            WriteOp::Delete { key, expected, .. } => apply_delete(&tx, rev, key, *expected),
        };
        match out {
            Err(StoreError::Backend(e)) => {
                fatal = Some(e.clone());
                results.push((op, Err(StoreError::Backend(e))));
            }
            out => {
                if let (Ok(kv), false) = (&out, matches!(op, WriteOp::Compact { .. })) {
                    let kind = if matches!(op, WriteOp::Delete { .. }) { EventKind::Delete } else { EventKind::Put };
                    events.push(Event { kind, created: matches!(op, WriteOp::Create { .. }), kv: kv.clone() });
                }
                results.push((op, out));
            }
        }
    }
    let committed = match fatal {
        Some(e) => Err(e),
        None => tx.execute("UPDATE meta SET value = ?1 WHERE name = 'rev'", [*rev]).and_then(|_| tx.commit()).map_err(|e| e.to_string()),
    };
    if let Err(e) = committed {
        *rev = start_rev;
        for (op, _) in results {
            reply(op, Err(StoreError::Backend(e.clone())));
        }
        return;
    }
    // Publish before answering: a client that saw its write acknowledged
    // must find it in any watch or read it starts next.
    shared.current.store(*rev, Ordering::Release);
    if !events.is_empty() {
        let _ = shared.events.send(Arc::new(events));
    }
    for (op, out) in results {
        match op {
            WriteOp::Compact { revision, reply: r } => {
                // Answered when its slices are all done (or at once if there
                // was nothing to do).
                match compaction.as_mut() {
                    Some(c) if c.target >= revision.min(*rev + 1) => c.waiters.push(r),
                    _ => {
                        let _ = r.send(Ok(()));
                    }
                }
            }
            op => reply(op, out),
        }
    }
}

fn reply(op: WriteOp, out: Result<KeyValue>) {
    match op {
        WriteOp::Create { reply, .. } | WriteOp::Update { reply, .. } | WriteOp::Delete { reply, .. } => {
            let _ = reply.send(out);
        }
        WriteOp::Compact { reply, .. } => {
            let _ = reply.send(out.map(|_| ()));
        }
    }
}

fn fail_all(batch: Vec<WriteOp>, msg: &str) {
    for op in batch {
        reply(op, Err(StoreError::Backend(msg.to_string())));
    }
}

fn current_of(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<Option<(Revision, Revision)>> {
    tx.prepare_cached("SELECT create_rev, mod_rev FROM kv WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)
}

/// Takes the database's lock file, waiting a little for a previous owner in
/// this process to finish closing. Two processes writing one database
/// would each count revisions on their own: the second is refused.
fn lock_exclusively(path: &Path) -> Result<std::fs::File> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", lock_path.display())))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(format!("{} is in use by another process (it holds {})", path.display(), lock_path.display())))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::Backend(format!("{}: {e}", lock_path.display()))),
        }
    }
}

/// Values are stored LZ4-compressed behind a marker byte JSON never starts
/// with; values written before compression (no marker) read as they are.
/// Kubernetes objects compress 3–5×, which keeps the database (and each
/// durable write) small under churn.
const COMPRESSED: u8 = 0xFF;
/// Marks a short value stored as is that itself starts with a marker byte.
const ESCAPED: u8 = 0xFE;
/// Values shorter than this are stored as they are.
const COMPRESS_FROM: usize = 64;

fn encode(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if value.len() < COMPRESS_FROM {
        if matches!(value.first(), Some(&COMPRESSED | &ESCAPED)) {
            let mut out = Vec::with_capacity(value.len() + 1);
            out.push(ESCAPED);
            out.extend_from_slice(value);
            return std::borrow::Cow::Owned(out);
        }
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len() / 2 + 8);
    out.push(COMPRESSED);
    out.extend_from_slice(&lz4_flex::compress_prepend_size(value));
    std::borrow::Cow::Owned(out)
}

fn decode(column: usize, stored: Vec<u8>) -> rusqlite::Result<Bytes> {
    match stored.first() {
        Some(&COMPRESSED) => lz4_flex::decompress_size_prepended(&stored[1..])
            .map(Bytes::from)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Blob, Box::new(e))),
        Some(&ESCAPED) => Ok(Bytes::copy_from_slice(&stored[1..])),
        _ => Ok(Bytes::from(stored)),
    }
}

fn insert_log(tx: &rusqlite::Transaction<'_>, rev: Revision, key: &str, deleted: bool, create_rev: Revision, value: &[u8]) -> Result<()> {
    let stored = encode(value);
    tx.prepare_cached("INSERT INTO log (rev, key, deleted, create_rev, value) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![rev, key, deleted as i64, create_rev, &stored[..]]))
        .map(|_| ())
        .map_err(backend)
}

fn apply_create(tx: &rusqlite::Transaction<'_>, rev: &mut Revision, key: &str, value: &Bytes) -> Result<KeyValue> {
    if current_of(tx, key)?.is_some() {
        return Err(StoreError::AlreadyExists(key.to_string()));
    }
    let new = *rev + 1;
    insert_log(tx, new, key, false, new, value)?;
    tx.prepare_cached("INSERT INTO kv (key, create_rev, mod_rev) VALUES (?1, ?2, ?2)").and_then(|mut s| s.execute(params![key, new])).map_err(backend)?;
    *rev = new;
    Ok(KeyValue { key: key.to_string(), value: value.clone(), create_revision: new, mod_revision: new })
}

fn apply_update(tx: &rusqlite::Transaction<'_>, rev: &mut Revision, key: &str, value: &Bytes, expected: Revision) -> Result<KeyValue> {
    let Some((create_rev, mod_rev)) = current_of(tx, key)? else {
        return Err(StoreError::NotFound(key.to_string()));
    };
    if mod_rev != expected {
        return Err(StoreError::Conflict { key: key.to_string(), expected, actual: mod_rev });
    }
    let new = *rev + 1;
    insert_log(tx, new, key, false, create_rev, value)?;
    tx.prepare_cached("UPDATE kv SET mod_rev = ?2 WHERE key = ?1").and_then(|mut s| s.execute(params![key, new])).map_err(backend)?;
    *rev = new;
    Ok(KeyValue { key: key.to_string(), value: value.clone(), create_revision: create_rev, mod_revision: new })
}

fn apply_delete(tx: &rusqlite::Transaction<'_>, rev: &mut Revision, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
    let Some((create_rev, mod_rev)) = current_of(tx, key)? else {
        return Err(StoreError::NotFound(key.to_string()));
    };
    if let Some(expected) = expected {
        if mod_rev != expected {
            return Err(StoreError::Conflict { key: key.to_string(), expected, actual: mod_rev });
        }
    }
    let value: Bytes =
        tx.prepare_cached("SELECT value FROM log WHERE rev = ?1").and_then(|mut s| s.query_row([mod_rev], |r| decode(0, r.get(0)?))).map_err(backend)?;
    let new = *rev + 1;
    insert_log(tx, new, key, true, create_rev, &value)?;
    tx.prepare_cached("DELETE FROM kv WHERE key = ?1").and_then(|mut s| s.execute([key])).map_err(backend)?;
    *rev = new;
    Ok(KeyValue { key: key.to_string(), value, create_revision: create_rev, mod_revision: new })
}

#[cfg(test)]
mod encoding_tests {
    use super::*;

    #[test]
    fn every_value_round_trips() {
        let long_json = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"}}"#;
        for v in [&b""[..], b"{}", &[0xFF, 1, 2], &[0xFE], &[0xFF; 200], long_json] {
            let stored = encode(v).into_owned();
            assert_eq!(&decode(0, stored.clone()).expect("decode")[..], v, "{stored:?}");
        }
        assert!(encode(long_json).len() < long_json.len(), "JSON compresses");
        // Values written before compression read as they are.
        assert_eq!(&decode(0, long_json.to_vec()).expect("legacy")[..], &long_json[..]);
    }
}
