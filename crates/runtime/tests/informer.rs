//! The shared informer against a real (in-process) skiff API server: the
//! initial list, live changes, late subscribers, a deletion that happened
//! while the informer was cut off (found by the relist after a 410), and
//! the end of the watch when the last handle is dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use skiff_runtime::informer::{Change, Informer};
use skiff_store::Store;

async fn serve(dir: &std::path::Path, port: u16, store: Arc<dyn Store>) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let cfg = skiff_apiserver::Config {
        data_dir: dir.to_path_buf(),
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: port,
        tls_san: vec![],
        token_auth_file: None,
        compaction_interval: Duration::from_secs(3600),
        default_not_ready_toleration_seconds: 300,
        default_unreachable_toleration_seconds: 300,
        service_cidr: Default::default(),
        service_account_issuer: skiff_apiserver::DEFAULT_SERVICE_ACCOUNT_ISSUER.into(),
        authorization_modes: vec![skiff_apiserver::AuthorizationMode::Node, skiff_apiserver::AuthorizationMode::Rbac],
        encryption_provider_config: None,
        secrets_encryption: true,
        audit: None,
        certificate_lifetime: None,
        node_certificate_lifetime: None,
        advertise_address: None,
        server_join: None,
        publish_bootstrap: None,
        request_limits: Default::default(),
    };
    let server = skiff_apiserver::ApiServer::bind(cfg, store).await.expect("the API server binds");
    let port = server.local_addr.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    (port, stop)
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap { metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
}

fn name(o: &ConfigMap) -> String {
    o.metadata.name.clone().unwrap_or_default()
}

/// The next change within 20 s, with the name of its object.
async fn next(changes: &mut (impl futures::Stream<Item = Change<ConfigMap>> + Unpin)) -> (&'static str, String) {
    let c = tokio::time::timeout(Duration::from_secs(20), changes.next()).await.expect("a change within 20 s").expect("the feed is open");
    match c {
        Change::Applied(o) => ("applied", name(&o)),
        Change::Deleted(o) => ("deleted", name(&o)),
        Change::Synced => ("synced", String::new()),
    }
}

/// A loopback TCP relay to the API server that the test can cut (every
/// connection dropped, nothing listening) and restore on the same port.
struct Relay {
    port: u16,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(port: u16, upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the relay binds");
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { port, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informer_lists_watches_forwards_deletions_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(skiff_store::MemoryStore::new());
    let (port, stop) = serve(dir.path(), 0, store.clone()).await;
    let admin = dir.path().join("admin.kubeconfig");
    let api: Api<ConfigMap> = Api::namespaced(skiff_runtime::client(&admin).await.unwrap(), "default");
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &cm(n)).await.unwrap();
    }
    // The informer reaches the server through the relay.
    let relay = Relay::start(0, port).await;
    let relayed = dir.path().join("relayed.kubeconfig");
    let kc = std::fs::read_to_string(&admin).unwrap().replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{}", relay.port));
    std::fs::write(&relayed, kc).unwrap();
    let informer_api: Api<ConfigMap> = Api::namespaced(skiff_runtime::client(&relayed).await.unwrap(), "default");
    let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let informer = Informer::start(informer_api, watcher::Config::default(), shutdown);
    let mut changes = informer.changes().boxed();
    let mut listed = vec![next(&mut changes).await, next(&mut changes).await];
    listed.sort();
    assert_eq!(listed, vec![("applied", "a".to_string()), ("applied", "b".to_string())]);
    assert_eq!(next(&mut changes).await, ("synced", String::new()));
    assert_eq!(informer.store().len(), 2);

    // Live changes, deletions included.
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    assert_eq!(next(&mut changes).await, ("applied", "c".into()));
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(next(&mut changes).await, ("deleted", "a".into()));

    // A late subscriber starts from the cache.
    let mut late = informer.changes().boxed();
    let mut seen = vec![next(&mut late).await, next(&mut late).await];
    seen.sort();
    assert_eq!(seen, vec![("applied", "b".to_string()), ("applied", "c".to_string())]);
    assert_eq!(next(&mut late).await, ("synced", String::new()));

    // The informer is cut off; meanwhile `b` is deleted and the server is
    // replaced by one over the same store whose watch cache starts after the
    // deletion, so the informer's resumed watch is too old (410) and it
    // relists.
    relay.cut();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let _ = stop.send(());
    let (port, stop) = serve(dir.path(), 0, store.clone()).await;
    let _relay = Relay::start(relay.port, port).await;
    let mut after = Vec::new();
    loop {
        let c = next(&mut changes).await;
        if c.0 == "synced" {
            break;
        }
        after.push(c);
    }
    assert!(after.contains(&("deleted", "b".into())), "the deletion missed while the watch was down is forwarded: {after:?}");
    assert!(!after.iter().any(|c| c.0 == "deleted" && c.1 != "b"), "only b was deleted: {after:?}");
    assert_eq!(informer.store().len(), 1, "the cache holds exactly the relist");

    // The last handle dropped, the watch stops and every feed ends.
    drop(informer);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while changes.next().await.is_some() {}
        while late.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "feeds end when the informer is dropped");
    let _ = stop.send(());
}
