//! Snapshots of the embedded SQLite store: saved from a running server,
//! restored into a wiped data dir with every object, uid and
//! resourceVersion back; a snapshot taken during writes restores a
//! consistent state; scheduled snapshots keep the newest few.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;



/// Removes the server's store (the database and its WAL), nothing else.
fn wipe_store(s: &Server) {
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(s.dir.path().join(f));
    }
}

#[test]
fn a_sqlite_snapshot_of_a_live_server_restores_every_object_uid_and_resource_version() {
    let mut s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&s, &["create", "namespace", "keep"]);
    ok(&s, &["create", "secret", "generic", "s", "-n", "keep", "--from-literal=password=hunter2"]);
    ok(&s, &["create", "deployment", "web", "-n", "keep", "--image=x", "--replicas=2"]);
    let crd = open_crd("gadgets", "gadget", "Gadget");
    ok(&s, &["apply", "-f", &manifest(&dir, "crd.yaml", &crd)]);
    wait_for(&s, 30, |s| kubectl(s, &["get", "gadgets", "-n", "keep"]).0);
    ok(&s, &["apply", "-f", &manifest(&dir, "g.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1, namespace: keep}\nspec: {size: 3}\n")]);
    let objects = [
        vec!["namespace", "keep"],
        vec!["secret", "s", "-n", "keep"],
        vec!["deployment", "web", "-n", "keep"],
        vec!["crd", "gadgets.example.com"],
        vec!["gadget", "g1", "-n", "keep"],
    ];
    let before: Vec<(String, i64)> = objects.iter().map(|o| uid_and_rv(&s, o)).collect();
    let data = s.dir.path().display().to_string();
    let file = dir.path().join("state.snapshot");
    let saved = skiff(&["snapshot", "save", &file.display().to_string(), "--data-dir", &data]);
    assert!(saved.contains("snapshot saved"), "{saved}");

    s.stop();
    wipe_store(&s);
    // Restoring refuses to overwrite a store; into the wiped dir it works.
    let restored = skiff(&["snapshot", "restore", &file.display().to_string(), "--data-dir", &data]);
    assert!(restored.contains("restored revision"), "{restored}");
    let again =
        Command::new(env!("CARGO_BIN_EXE_skiff")).args(["snapshot", "restore", &file.display().to_string(), "--data-dir", &data]).output().expect("run");
    assert!(!again.status.success(), "a second restore over the restored store is refused");
    s.start_again();
    for (o, want) in objects.iter().zip(&before) {
        assert_eq!(&uid_and_rv(&s, o), want, "{o:?} is back with its uid and resourceVersion");
    }
    assert_eq!(ok(&s, &["get", "secret", "s", "-n", "keep", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");
    ok(&s, &["create", "configmap", "after", "-n", "keep"]);
    let highest = before.iter().map(|(_, rv)| *rv).max().unwrap_or(0);
    assert!(uid_and_rv(&s, &["configmap", "after", "-n", "keep"]).1 > highest, "resourceVersions go on after the restored ones");
}

#[test]
fn a_snapshot_taken_during_writes_restores_a_consistent_prefix() {
    let mut s = start();
    ok(&s, &["create", "namespace", "busy"]);
    let kubeconfig = s.kubeconfig.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    // One writer creating ConfigMaps as fast as the server takes them.
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
            let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config")).expect("client");
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "busy");
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop_writer.load(std::sync::atomic::Ordering::SeqCst) {
                let cm = k8s_openapi::api::core::v1::ConfigMap {
                    metadata: kube::api::ObjectMeta { name: Some(format!("cm-{i:05}")), ..Default::default() },
                    ..Default::default()
                };
                let made = api.create(&Default::default(), &cm).await.expect("create");
                acked.push((format!("cm-{i:05}"), made.metadata.resource_version.unwrap_or_default().parse::<i64>().unwrap_or(0)));
                i += 1;
            }
            acked
        })
    });
    std::thread::sleep(Duration::from_millis(700));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("busy.snapshot");
    let data = s.dir.path().display().to_string();
    let saved = skiff(&["snapshot", "save", &file.display().to_string(), "--data-dir", &data]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.join().expect("writer");
    let snap_rev: i64 = saved.rsplit("revision ").next().and_then(|r| r.trim().trim_end_matches(')').parse().ok()).expect("the snapshot's revision");
    assert!(acked.iter().any(|(_, rv)| *rv > snap_rev), "writes went on after the snapshot");
    assert!(acked.iter().any(|(_, rv)| *rv <= snap_rev), "writes came before the snapshot");

    s.stop();
    wipe_store(&s);
    skiff(&["snapshot", "restore", &file.display().to_string(), "--data-dir", &data]);
    s.start_again();
    let listed = ok(&s, &["get", "configmaps", "-n", "busy", "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.resourceVersion}{\"\\n\"}{end}"]);
    let present: std::collections::HashMap<&str, i64> =
        listed.lines().filter(|l| l.starts_with("cm-")).filter_map(|l| l.split_once(' ')).map(|(n, rv)| (n, rv.parse().unwrap_or(-1))).collect();
    for (name, rv) in &acked {
        if *rv <= snap_rev {
            assert_eq!(present.get(name.as_str()), Some(rv), "{name} (rv {rv}) was written before the snapshot at {snap_rev}");
        } else {
            assert!(!present.contains_key(name.as_str()), "{name} (rv {rv}) was written after the snapshot at {snap_rev}");
        }
    }
}

#[test]
fn scheduled_snapshots_keep_the_newest_and_can_be_listed_and_deleted() {
    let s = start_with(&["--snapshot-schedule-cron", "* * * * * *", "--snapshot-retention", "2"]);
    let data = s.dir.path().display().to_string();
    let names = || -> Vec<String> {
        skiff(&["snapshot", "ls", "--data-dir", &data]).lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
    };
    wait_for(&s, 20, |_| names().len() == 2);
    // Older ones went: a few seconds on there are still two, and newer.
    let first = names();
    std::thread::sleep(Duration::from_secs(3));
    let later = names();
    assert!((2..=3).contains(&later.len()), "retention keeps two: {later:?}");
    assert!(later.iter().all(|n| !first.contains(n) || n == &first[1]), "the oldest were pruned: {first:?} then {later:?}");
    let victim = later[0].clone();
    let out = skiff(&["snapshot", "delete", &victim, "--data-dir", &data]);
    assert!(out.contains(&victim));
    assert!(!s.dir.path().join("snapshots").join(&victim).exists());
}
