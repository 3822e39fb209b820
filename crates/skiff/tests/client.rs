//! End to end with the `kube` crate (the Rust client): watch order and
//! resumption, 410 Gone, pagination, optimistic concurrency, the status
//! subresource, and bad input.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::Client;

async fn client(s: &common::Server) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    Client::try_from(cfg).expect("client")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(BTreeMap::from([("k".to_string(), value.to_string())])),
        ..Default::default()
    }
}

fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API Status, got {other:?}"),
    }
}

/// Collects `n` watch events (or fewer if the stream ends) as (type, name, rv).
async fn collect(api: &Api<ConfigMap>, rv: &str, n: usize) -> Vec<(String, String, i64)> {
    let stream = api.watch(&WatchParams::default().timeout(10), rv).await.expect("watch");
    // The root CA publisher's kube-root-ca.crt may come at any time.
    let mine = |e: &WatchEvent<ConfigMap>| {
        let name = match e {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o.metadata.name.as_deref(),
            _ => None,
        };
        futures::future::ready(name != Some("kube-root-ca.crt"))
    };
    let events: Vec<_> = stream.try_filter(mine).take(n).try_collect().await.expect("events");
    events
        .into_iter()
        .map(|e| {
            let (ty, o) = match e {
                WatchEvent::Added(o) => ("ADDED", o),
                WatchEvent::Modified(o) => ("MODIFIED", o),
                WatchEvent::Deleted(o) => ("DELETED", o),
                other => panic!("unexpected event {other:?}"),
            };
            let rv = o.metadata.resource_version.clone().unwrap_or_default().parse().expect("numeric rv");
            (ty.to_string(), o.metadata.name.clone().unwrap_or_default(), rv)
        })
        .collect()
}

#[tokio::test]
async fn watch_is_ordered_and_resumes_from_any_revision() {
    let s = common::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let start = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("list rv");
    api.create(&PostParams::default(), &cm("a", "0")).await.expect("create a");
    for i in 1..=5 {
        let mut c = api.get("a").await.expect("get");
        c.data = Some(BTreeMap::from([("k".to_string(), i.to_string())]));
        api.replace("a", &PostParams::default(), &c).await.expect("replace");
    }
    api.create(&PostParams::default(), &cm("b", "0")).await.expect("create b");
    api.delete("a", &Default::default()).await.expect("delete a");

    let all = collect(&api, &start, 8).await;
    let types: Vec<&str> = all.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "MODIFIED", "MODIFIED", "ADDED", "DELETED"]);
    assert!(all.windows(2).all(|w| w[0].2 < w[1].2), "revisions must increase: {all:?}");

    // Resuming from the third event's revision replays exactly what followed.
    let resumed = collect(&api, &all[2].2.to_string(), 5).await;
    assert_eq!(resumed, all[3..].to_vec());
}

#[tokio::test]
async fn stale_revisions_answer_410_gone() {
    let mut s = common::start_with(&["--compaction-interval", "1"]);
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "x")).await.expect("create");
    }
    let page = api.list(&ListParams::default().limit(2)).await.expect("first page");
    let token = page.metadata.continue_.clone().expect("continue token");
    let old_rv = page.metadata.resource_version.clone().expect("rv");
    api.create(&PostParams::default(), &cm("later", "x")).await.expect("create later");

    // A restarted server's watch cache starts at its current revision.
    s.restart();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let mut stream = api.watch(&WatchParams::default().timeout(5), &old_rv).await.expect("watch").boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // Once compaction passes the list's revision, its continue token is gone.
    api.create(&PostParams::default(), &cm("more", "x")).await.expect("create more");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = api.list(&ListParams::default().limit(2).continue_token(&token)).await.expect_err("continue after compaction");
    assert_eq!(code(&err), 410, "{err:?}");
}

#[tokio::test]
async fn pagination_returns_one_snapshot_in_pages() {
    let s = common::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    for i in 0..25 {
        api.create(&PostParams::default(), &cm(&format!("p{i:02}"), "x")).await.expect("create");
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.expect("page");
        pages += 1;
        assert!(page.items.len() <= 10);
        // (Every namespace also has the root CA publisher's kube-root-ca.crt.)
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()).filter(|n| n.starts_with('p')));
        if pages == 1 {
            // Written after the first page: not part of this list's snapshot.
            api.create(&PostParams::default(), &cm("p99-late", "x")).await.expect("create late");
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, want);
}

#[tokio::test]
async fn stale_writes_conflict() {
    let s = common::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    api.create(&PostParams::default(), &cm("occ", "0")).await.expect("create");
    let first = api.get("occ").await.expect("get");
    let mut second = first.clone();
    let mut c = first.clone();
    c.data = Some(BTreeMap::from([("k".to_string(), "1".to_string())]));
    api.replace("occ", &PostParams::default(), &c).await.expect("first writer wins");
    second.data = Some(BTreeMap::from([("k".to_string(), "2".to_string())]));
    let err = api.replace("occ", &PostParams::default(), &second).await.expect_err("stale write");
    assert_eq!(code(&err), 409);
    let now = api.get("occ").await.expect("get");
    assert_eq!(now.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("1"));
}

#[tokio::test]
async fn status_and_spec_are_written_separately() {
    let s = common::start();
    let api: Api<Deployment> = Api::namespaced(client(&s).await, "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("deployment");
    api.create(&PostParams::default(), &d).await.expect("create");
    let mut cur = api.get("web").await.expect("get");
    cur.status = Some(serde_json::from_value(serde_json::json!({"replicas": 7, "observedGeneration": 1})).expect("status"));
    cur.spec.as_mut().expect("spec").replicas = Some(3);
    let after = api.replace_status("web", &PostParams::default(), &cur).await.expect("status write");
    assert_eq!(after.status.as_ref().and_then(|s| s.replicas), Some(7), "status written");
    assert_eq!(after.spec.as_ref().and_then(|s| s.replicas), Some(1), "spec untouched by a status write");
    assert_eq!(after.metadata.generation, Some(1));

    let mut main = after.clone();
    main.spec.as_mut().expect("spec").replicas = Some(3);
    main.status = None;
    let after = api.replace("web", &PostParams::default(), &main).await.expect("main write");
    assert_eq!(after.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(after.status.as_ref().and_then(|s| s.replicas), Some(7), "status untouched by a main write");
    assert_eq!(after.metadata.generation, Some(2), "spec change bumps generation");
}

#[tokio::test]
async fn bad_input_is_a_4xx_status_and_nothing_is_stored() {
    let s = common::start();
    let client = client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // Not the root CA publisher's kube-root-ca.crt, which may come at any time.
    let mine = ListParams::default().fields("metadata.name!=kube-root-ca.crt");
    let before = api.list(&mine).await.expect("list").items.len();
    let post =
        |body: Vec<u8>| http::Request::post("/api/v1/namespaces/default/configmaps").header("Content-Type", "application/json").body(body).expect("request");
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "malformed JSON"),
        (br#"{"metadata": {"name": "x"}, "data": {"k": 5}}"#.to_vec(), 400, "wrong type"),
        (br#"{"metadata": {"name": "Bad_Name"}}"#.to_vec(), 422, "invalid name"),
        (br#"{"metadata": {"name": "x"}, "data": {"bad key!": "v"}}"#.to_vec(), 422, "invalid key"),
        (format!(r#"{{"metadata": {{"name": "big"}}, "data": {{"k": "{}"}}}}"#, "x".repeat(4 << 20)).into_bytes(), 413, "oversized"),
        (b"[1,2,3]".to_vec(), 400, "not an object"),
        (format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), 400, "nesting"),
    ];
    for (body, want, what) in cases {
        let err = client.request_text(post(body)).await.expect_err(what);
        assert_eq!(code(&err), want, "{what}: {err:?}");
    }
    // A YAML alias bomb ("billion laughs") is refused, not expanded.
    let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\na: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        bomb.push_str(&format!("{cur}: &{cur} [{}]\n", vec![format!("*{prev}"); 9].join(",")));
    }
    let yaml =
        http::Request::post("/api/v1/namespaces/default/configmaps").header("Content-Type", "application/yaml").body(bomb.into_bytes()).expect("request");
    let err = client.request_text(yaml).await.expect_err("alias bomb");
    assert_eq!(code(&err), 400, "{err:?}");
    let err = api.create(&PostParams::default(), &cm("Bad_Name", "x")).await.expect_err("invalid name");
    match &err {
        kube::Error::Api(s) => {
            assert_eq!(s.reason, "Invalid");
            let causes = s.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
            assert!(causes.iter().any(|c| c.field == "metadata.name"), "the cause names the field: {s:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(api.list(&mine).await.expect("list").items.len(), before, "nothing stored");
    api.create(&PostParams::default(), &cm("fine", "x")).await.expect("server keeps serving");
}

#[tokio::test]
async fn a_label_change_moves_an_object_in_and_out_of_a_selector_watch() {
    let s = common::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let rv = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("rv");
    let stream = api.watch(&WatchParams::default().labels("tier=web").timeout(10), &rv).await.expect("watch");
    let mut c = cm("sel", "x");
    api.create(&PostParams::default(), &c).await.expect("create unlabelled");
    let label = |v: &str| serde_json::json!({"metadata": {"labels": {"tier": v}}});
    let pp = kube::api::PatchParams::default();
    api.patch("sel", &pp, &kube::api::Patch::Merge(label("web"))).await.expect("label in");
    api.patch("sel", &pp, &kube::api::Patch::Merge(serde_json::json!({"data": {"k": "y"}}))).await.expect("change");
    api.patch("sel", &pp, &kube::api::Patch::Merge(label("db"))).await.expect("label out");
    c.metadata.name = Some("other".into());
    api.create(&PostParams::default(), &c).await.expect("unrelated");
    let events: Vec<_> = stream.take(3).try_collect().await.expect("events");
    let types: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(_) => "ADDED".to_string(),
            WatchEvent::Modified(_) => "MODIFIED".to_string(),
            WatchEvent::Deleted(_) => "DELETED".to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "entering the selector is ADDED, leaving it DELETED");
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_of_the_server() {
    let mut s = common::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64)>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (api, tx, stop) = (api.clone(), tx.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let name = format!("w{w}-{i}");
                    match api.create(&PostParams::default(), &cm(&name, "x")).await {
                        Ok(c) => {
                            let rv = c.metadata.resource_version.and_then(|r| r.parse().ok()).unwrap_or(0);
                            if tx.send((name, rv)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 300 {
        match rx.recv().await {
            Some(a) => acked.push(a),
            None => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    s.restart(); // SIGKILL mid-stream, then start again on the same data.
    for w in writers {
        let _ = w.await;
    }
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }
    assert!(acked.len() >= 300, "writes were acknowledged before the kill");
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let names: std::collections::HashSet<String> =
        api.list(&ListParams::default()).await.expect("list").items.into_iter().filter_map(|c| c.metadata.name).collect();
    let lost: Vec<&String> = acked.iter().map(|(n, _)| n).filter(|n| !names.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let highest = acked.iter().map(|(_, rv)| *rv).max().unwrap_or(0);
    let next = api.create(&PostParams::default(), &cm("after-restart", "x")).await.expect("write after restart");
    let rv: i64 = next.metadata.resource_version.and_then(|r| r.parse().ok()).unwrap_or(0);
    assert!(rv > highest, "revisions keep increasing: {rv} after {highest}");
}

/// A kube-rs custom resource: its CRD is generated by `kube::CustomResource`
/// (schemars' structural schema) and served once Established.
#[derive(kube::CustomResource, serde::Deserialize, serde::Serialize, Clone, Debug, schemars::JsonSchema)]
#[kube(group = "rs.skiff.dev", version = "v1", kind = "Counter", namespaced, status = "CounterStatus", shortname = "ctr")]
#[kube(printcolumn = r#"{"name":"Doubled", "type":"integer", "jsonPath":".status.doubled"}"#)]
pub struct CounterSpec {
    count: i64,
}

/// What the controller reports.
#[derive(serde::Deserialize, serde::Serialize, Clone, Debug, Default, schemars::JsonSchema)]
pub struct CounterStatus {
    doubled: i64,
}

/// A kube-rs `Controller` over a CRD: it reconciles each Counter into its
/// status and an owned ConfigMap, re-runs on spec changes and on changes
/// to what it owns, and the garbage collector removes the ConfigMap with
/// its Counter.
#[tokio::test]
async fn a_kube_rs_controller_reconciles_a_custom_resource() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::controller::Action;
    use kube::runtime::{wait::await_condition, wait::conditions, watcher, Controller};
    use kube::{CustomResourceExt, Resource, ResourceExt};
    use std::sync::Arc;

    let s = common::start();
    let c = client(&s).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.create(&PostParams::default(), &Counter::crd()).await.expect("create the CRD");
    tokio::time::timeout(Duration::from_secs(20), await_condition(crds, "counters.rs.skiff.dev", conditions::is_crd_established()))
        .await
        .expect("established in time")
        .expect("watch");

    async fn reconcile(counter: Arc<Counter>, c: Arc<Client>) -> Result<Action, kube::Error> {
        let ns = counter.namespace().unwrap_or_default();
        let doubled = counter.spec.count * 2;
        let counters: Api<Counter> = Api::namespaced((*c).clone(), &ns);
        let status = serde_json::json!({"status": {"doubled": doubled}});
        counters.patch_status(&counter.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        let mut owned = cm(&format!("{}-doubled", counter.name_any()), &doubled.to_string());
        owned.metadata.owner_references = counter.controller_owner_ref(&()).map(|r| vec![r]);
        let cms: Api<ConfigMap> = Api::namespaced((*c).clone(), &ns);
        cms.patch(&owned.name_any(), &PatchParams::apply("counter-controller").force(), &Patch::Apply(&owned)).await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<Counter>, _: &kube::Error, _: Arc<Client>) -> Action {
        Action::requeue(Duration::from_millis(500))
    }
    let counters: Api<Counter> = Api::namespaced(c.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let controller = tokio::spawn(
        Controller::new(counters.clone(), watcher::Config::default())
            .owns(cms.clone(), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(c.clone()))
            .for_each(|_| futures::future::ready(())),
    );

    let mut counter = Counter::new("one", CounterSpec { count: 21 });
    counter.metadata.namespace = Some("default".into());
    counters.create(&PostParams::default(), &counter).await.expect("create a Counter");
    let doubled = |want: i64| {
        let (counters, cms) = (counters.clone(), cms.clone());
        async move {
            for _ in 0..100 {
                let status = counters.get("one").await.ok().and_then(|c| c.status).map(|s| s.doubled);
                let data = cms.get_opt("one-doubled").await.ok().flatten().and_then(|m| m.data).and_then(|d| d.get("k").cloned());
                if status == Some(want) && data.as_deref() == Some(want.to_string().as_str()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the controller did not reconcile to {want}");
        }
    };
    doubled(42).await;
    counters.patch("one", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"spec": {"count": 5}}))).await.expect("patch");
    doubled(10).await;
    // A change to an owned object brings its owner back to the controller.
    cms.patch("one-doubled", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"data": {"k": "wrong"}}))).await.expect("patch cm");
    doubled(10).await;
    let generation = counters.get("one").await.expect("get").metadata.generation;
    assert_eq!(generation, Some(2), "one spec change, status writes do not count");

    counters.delete("one", &Default::default()).await.expect("delete");
    for _ in 0..400 {
        if cms.get_opt("one-doubled").await.expect("get cm").is_none() {
            controller.abort();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the owned ConfigMap outlived its Counter");
}
