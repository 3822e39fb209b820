//! Durability under `kill -9`: a child process creates keys as fast as it can
//! and prints each acknowledged one; the parent kills it mid-stream with
//! SIGKILL, reopens the database, and checks that every acknowledged write is
//! there and that revisions keep increasing after the restart.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use skiff_store::{SqliteOptions, SqliteStore, Store};

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD_DB";

/// In the child: write until killed, printing `key rev` per acknowledged write.
fn child(db: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(db, SqliteOptions::default()).expect("open");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{t}/{i}");
                    let kv = store.create(&key, Bytes::from(vec![b'v'; 512])).await.expect("create");
                    println!("{key} {}", kv.mod_revision);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        child(&db);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let mut proc = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "acknowledged_writes_survive_sigkill", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let out = proc.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("line");
        let mut parts = line.split_whitespace();
        if let (Some(k), Some(r)) = (parts.next(), parts.next().and_then(|r| r.parse::<i64>().ok())) {
            if k.starts_with("/crash/") {
                acked.push((k.to_string(), r));
            }
        }
        if acked.len() >= 3000 {
            break;
        }
    }
    // SIGKILL, by the pid we started.
    Command::new("kill").args(["-9", &proc.id().to_string()]).status().expect("kill");
    let _ = proc.wait();
    assert!(acked.len() >= 3000, "writer acknowledged only {}", acked.len());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(&db, SqliteOptions::default()).expect("reopen after crash");
        let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
        assert!(store.current_revision() >= max_acked);
        for (key, rev) in &acked {
            let kv = store.get(key).await.expect("get").unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
        }
        let next = store.create("/crash/after", Bytes::from_static(b"x")).await.expect("create after restart");
        assert!(next.mod_revision > store.current_revision() - 1 && next.mod_revision > max_acked);
    });
}
