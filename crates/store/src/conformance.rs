//! The same behavioural checks run against every backend.

use bytes::Bytes;
use futures::StreamExt;

use crate::{EventKind, ListOptions, MemoryStore, SqliteOptions, SqliteStore, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

async fn crud_and_cas(s: &dyn Store) {
    let a = s.create("/r/a", b("1")).await.expect("create");
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(matches!(s.create("/r/a", b("x")).await, Err(StoreError::AlreadyExists(_))));
    let a2 = s.update("/r/a", b("2"), a.mod_revision).await.expect("update");
    assert!(a2.mod_revision > a.mod_revision);
    assert_eq!(a2.create_revision, a.create_revision);
    // A stale writer loses.
    assert!(matches!(s.update("/r/a", b("3"), a.mod_revision).await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.get("/r/a").await.expect("get").expect("present").value, b("2"));
    assert!(matches!(s.delete("/r/a", Some(a.mod_revision)).await, Err(StoreError::Conflict { .. })));
    let d = s.delete("/r/a", Some(a2.mod_revision)).await.expect("delete");
    assert_eq!(d.value, b("2"), "a delete returns the last value");
    assert!(s.get("/r/a").await.expect("get").is_none());
    assert!(matches!(s.update("/r/a", b("4"), d.mod_revision).await, Err(StoreError::NotFound(_))));
    assert_eq!(s.current_revision(), d.mod_revision);
}

async fn list_paginates_and_reads_history(s: &dyn Store) {
    for i in 0..10 {
        s.create(&format!("/p/{i:02}"), b(&i.to_string())).await.expect("create");
    }
    s.create("/q/other", b("x")).await.expect("create");
    let page = s.list("/p/", ListOptions { limit: 4, ..Default::default() }).await.expect("list");
    assert_eq!(page.items.len(), 4);
    assert!(page.more);
    let rev = page.revision;
    // Change things after the first page; the next pages at `rev` must not see it.
    let cur = s.get("/p/05").await.expect("get").expect("present");
    s.update("/p/05", b("changed"), cur.mod_revision).await.expect("update");
    s.delete("/p/09", None).await.expect("delete");
    let mut all = page.items.clone();
    let mut after = page.items.last().map(|kv| kv.key.clone());
    loop {
        let p = s.list("/p/", ListOptions { limit: 4, start_after: after.clone(), revision: Some(rev) }).await.expect("next page");
        assert_eq!(p.revision, rev);
        all.extend(p.items.clone());
        after = p.items.last().map(|kv| kv.key.clone());
        if !p.more {
            break;
        }
    }
    let keys: Vec<_> = all.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert_eq!(all[5].value, b("5"), "history read sees the old value");
    let now = s.list("/p/", ListOptions::default()).await.expect("list");
    assert_eq!(now.items.len(), 9);
    assert!(now.items.iter().any(|kv| kv.value == b("changed")));
}

async fn watch_replays_then_follows(s: &dyn Store) {
    let first = s.create("/w/a", b("1")).await.expect("create");
    s.create("/other/x", b("1")).await.expect("create");
    let mut w = s.watch("/w/", first.mod_revision).await.expect("watch");
    let e = w.next().await.expect("event").expect("ok");
    assert_eq!((e.kind, e.kv.key.as_str(), e.created), (EventKind::Put, "/w/a", true));
    let u = s.update("/w/a", b("2"), first.mod_revision).await.expect("update");
    s.delete("/w/a", None).await.expect("delete");
    let e = w.next().await.expect("event").expect("ok");
    assert_eq!((e.kind, e.kv.mod_revision, e.created), (EventKind::Put, u.mod_revision, false));
    let e = w.next().await.expect("event").expect("ok");
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.kv.value, b("2"));
    // Lots of writes: every one arrives, in order, none twice.
    let mut expected = Vec::new();
    for i in 0..3000 {
        expected.push(s.create(&format!("/w/n{i}"), b("v")).await.expect("create").mod_revision);
    }
    for rev in expected {
        let e = w.next().await.expect("event").expect("ok");
        assert_eq!(e.kv.mod_revision, rev);
    }
}

async fn compaction_forgets_history(s: &dyn Store) {
    let a = s.create("/c/a", b("1")).await.expect("create");
    let a2 = s.update("/c/a", b("2"), a.mod_revision).await.expect("update");
    s.create("/c/b", b("1")).await.expect("create");
    s.delete("/c/b", None).await.expect("delete");
    // The compaction revision is a live key's put: etcd drops a delete's
    // tombstone at the compaction revision itself once compaction runs.
    s.create("/c/c", b("1")).await.expect("create");
    let cur = s.current_revision();
    s.compact(cur).await.expect("compact");
    assert_eq!(s.compacted_revision(), cur);
    assert!(matches!(s.watch("/c/", a.mod_revision).await, Err(StoreError::Compacted { .. })));
    assert!(matches!(s.list("/c/", ListOptions { revision: Some(a.mod_revision), ..Default::default() }).await, Err(StoreError::Compacted { .. })));
    // The live state is intact, and reads at the compaction revision work.
    assert_eq!(s.get("/c/a").await.expect("get").expect("present").mod_revision, a2.mod_revision);
    let s2 = s.create("/c/z", b("1")).await.expect("create");
    let at = s.list("/c/", ListOptions { revision: Some(cur), ..Default::default() }).await.expect("list at");
    assert_eq!(at.items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), vec!["/c/a", "/c/c"]);
    assert!(s2.mod_revision > cur);
    let mut w = s.watch("/c/", cur).await.expect("watch from compaction rev");
    let e = w.next().await.expect("ev").expect("ok");
    assert_eq!((e.kind, e.kv.key.as_str()), (EventKind::Put, "/c/c"), "the compaction revision itself is kept");
    assert_eq!(w.next().await.expect("ev").expect("ok").kv.key, "/c/z");
}

async fn all(s: &dyn Store) {
    crud_and_cas(s).await;
    list_paginates_and_reads_history(s).await;
    watch_replays_then_follows(s).await;
    compaction_forgets_history(s).await;
}

#[tokio::test]
async fn memory_store_conforms() {
    all(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("db.sqlite"), SqliteOptions::default()).expect("open");
    all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let rev = {
        let s = SqliteStore::open(&path, SqliteOptions::default()).expect("open");
        s.create("/k", b("v")).await.expect("create").mod_revision
    };
    let s = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen");
    assert_eq!(s.current_revision(), rev);
    assert_eq!(s.get("/k").await.expect("get").expect("present").value, b("v"));
    assert!(s.create("/k2", b("v")).await.expect("create").mod_revision > rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writers_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("db.sqlite"), SqliteOptions::default()).expect("open");
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                s.create(&format!("/g/{t}/{i}"), b("v")).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let l = s.list("/g/", ListOptions::default()).await.expect("list");
    assert_eq!(l.items.len(), 1600);
    assert_eq!(s.current_revision(), 1600);
}

/// Lease-style churn: the same keys rewritten over and over, compacted as
/// the API server would, must not grow the database and WAL without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_stays_bounded_under_churn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("db.sqlite"), SqliteOptions::default()).expect("open");
    // Incompressible values (a fixed pseudo-random stream), so the bound is
    // about history and compaction, not about how well LZ4 does.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let value = Bytes::from(
        (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect::<Vec<u8>>(),
    );
    let mut revs = Vec::new();
    for i in 0..1000 {
        revs.push(s.create(&format!("/leases/{i}"), value.clone()).await.expect("create").mod_revision);
    }
    let live = 1000 * 1024u64;
    let mut peak = 0;
    for _round in 0..30 {
        for (i, rev) in revs.iter_mut().enumerate() {
            *rev = s.update(&format!("/leases/{i}"), value.clone(), *rev).await.expect("renew").mod_revision;
        }
        s.compact(s.current_revision()).await.expect("compact");
        peak = peak.max(s.disk_usage());
    }
    let end = s.disk_usage();
    eprintln!("live {live} B, disk at end {end} B, peak {peak} B");
    // 30 rounds wrote 30x the live data; what stays on disk is a small
    // multiple of one round, not of the history.
    assert!(end < 4 * live, "database + WAL grew to {end} bytes for {live} bytes of live data");
}

/// A one-member etcd on loopback ports, in its own temp dir (a real etcd,
/// Debian's etcd-server). Without the binary the test says so and passes
/// only outside CI: under `CI=true` a missing etcd fails it.
pub(crate) async fn etcd_member(dir: &std::path::Path) -> Option<crate::etcd::process::EtcdProcess> {
    if crate::etcd::process::binary().is_err() {
        assert!(std::env::var("CI").is_err(), "CI=true but etcd is not installed (apt-get install etcd-server)");
        eprintln!("skipping: etcd is not installed");
        return None;
    }
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (client, peer) = (port(0), port(1));
    let cfg = crate::etcd::process::MemberConfig {
        name: "m0".into(),
        data_dir: dir.join("etcd"),
        client_url: format!("http://127.0.0.1:{client}"),
        peer_url: format!("http://127.0.0.1:{peer}"),
        initial_cluster: format!("m0=http://127.0.0.1:{peer}"),
        existing: false,
        tls: None,
        log_file: dir.join("etcd.log"),
    };
    Some(crate::etcd::process::EtcdProcess::start(&cfg).await.expect("start etcd"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut etcd) = etcd_member(dir.path()).await else { return };
    let opts = crate::EtcdOptions { endpoints: vec![etcd.client_url.clone()], ..Default::default() };
    let s = crate::EtcdStore::connect(opts).await.expect("connect");
    all(&s).await;
    // A page bigger than gRPC's default 4 MiB message (the watch cache
    // lists 5,000 objects a page) is read whole.
    let big = Bytes::from(vec![b'v'; 700 * 1024]);
    for i in 0..8 {
        s.create(&format!("/big/{i}"), big.clone()).await.expect("create a large value");
    }
    let page = s.list("/big/", ListOptions::default()).await.expect("a 5.6 MiB page");
    assert_eq!(page.items.len(), 8);
    etcd.stop().await;
}
