//! The API server over real etcd, beside itself over SQLite and beside
//! etcd's own put rate, all in one run on the same disk; then what several
//! servers over one etcd give: watch delivery across servers, a standby's
//! takeover, and writes after losing an etcd member.
//!
//! Prints:
//! - pod creates/s with p50/p99 at 1, 16 and 64 clients through `skiff
//!   server` over SQLite, through `skiff server --datastore-endpoint` over a
//!   one-member etcd, and durable 1 KiB puts straight into that etcd over
//!   gRPC (etcd's own rate, no API server), with the ratio over-etcd /
//!   etcd at each concurrency (target at 64 clients: ≥ 80 %);
//! - watch delivery latency: a ConfigMap created through server A, seen by
//!   a watch through server B (p50/p99 over 200 events);
//! - takeover: `kill -9` of the server whose controllers lead, until the
//!   standby holds `kube-controller-manager` (target: within the 15 s lease);
//! - a three-member etcd losing its leader (`kill -9`): time until a write
//!   through the API succeeds again (target ≤ 5 s).
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin ha [-- N]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use skiff_bench::{client, free_port, ms, run_clients, start_etcd, start_skiff, summarize, Figures};


async fn pod_creates(kubeconfig: &std::path::Path, n: usize, clients: usize, tag: &str) -> anyhow::Result<Figures> {
    let api: Api<Pod> = Api::namespaced(client(kubeconfig).await?, "default");
    let tag = tag.to_string();
    run_clients(n, clients, move |i| {
        let (api, name) = (api.clone(), format!("{tag}-{i}"));
        async move {
            api.create(&PostParams::default(), &skiff_bench::bench_pod(&name)?).await?;
            Ok(())
        }
    })
    .await
}

/// Durable puts of 1 KiB values straight into etcd over gRPC.
async fn etcd_grpc_puts(url: &str, n: usize, clients: usize, tag: &str) -> anyhow::Result<Figures> {
    use skiff_store::etcd::pb;
    let store = skiff_store::EtcdStore::connect(skiff_store::EtcdOptions { endpoints: vec![url.to_string()], ..Default::default() }).await?;
    let channel = store.channel();
    let tag = tag.to_string();
    run_clients(n, clients, move |i| {
        let mut kv = pb::kv_client::KvClient::new(channel.clone());
        let key = format!("/bench/{tag}/p{i}").into_bytes();
        async move {
            kv.put(pb::PutRequest { key, value: vec![b'x'; 1024], ..Default::default() }).await?;
            Ok(())
        }
    })
    .await
}

const DISABLED: &str = "scheduler,controllers,agent,proxy,dns,cloud-controller";

/// A plain-HTTP etcd cluster of `n` members on loopback, killed on drop.
struct Cluster(Vec<Option<Child>>, Vec<String>);

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn etcd_cluster(dir: &std::path::Path, n: usize) -> anyhow::Result<Cluster> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok::<_, anyhow::Error>((free_port()?, free_port()?))).collect::<Result<_, _>>()?;
    let initial: Vec<String> = ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}")).collect();
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let url = format!("http://127.0.0.1:{c}");
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}"), "--data-dir", &dir.join(format!("m{i}")).to_string_lossy()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}"), "--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        children.push(Some(child));
        urls.push(url);
    }
    Ok(Cluster(children, urls))
}

fn row(label: &str, f: &Figures) {
    println!("{label:<34} {:>10.0} {:>9.2} {:>9.2}", f.rate, ms(f.p50), ms(f.p99));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5_000);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let (_etcd, url) = start_etcd(dir.path()).await?;

    println!("== creates: over SQLite, over etcd, and etcd's own puts (same disk, same run; {total} per row, {} at 1 client)", total / 10);
    println!("{:<34} {:>10} {:>9} {:>9}", "", "ops/s", "p50 ms", "p99 ms");
    let sqlite = start_skiff(&dir.path().join("sqlite"), &["--disable", DISABLED])?;
    let over_etcd = start_skiff(&dir.path().join("etcd-server"), &["--disable", DISABLED, "--datastore-endpoint", &url])?;
    for clients in [1usize, 16, 64] {
        let n = if clients == 1 { total / 10 } else { total };
        let s = pod_creates(&sqlite.kubeconfig, n, clients, &format!("s{clients}")).await?;
        let e = pod_creates(&over_etcd.kubeconfig, n, clients, &format!("e{clients}")).await?;
        let raw = etcd_grpc_puts(&url, n, clients, &format!("r{clients}")).await?;
        row(&format!("{clients:>2} clients: skiff over SQLite"), &s);
        row(&format!("{clients:>2} clients: skiff over etcd"), &e);
        row(&format!("{clients:>2} clients: etcd gRPC puts"), &raw);
        println!("{:<34} {:>9.1} %", format!("{clients:>2} clients: over etcd / etcd"), 100.0 * e.rate / raw.rate);
    }
    drop(sqlite);

    println!("\n== watch delivery across servers (create through A, watch through B, one etcd)");
    let b = start_skiff(&dir.path().join("etcd-server-b"), &["--disable", DISABLED, "--datastore-endpoint", &url])?;
    let a_api: Api<ConfigMap> = Api::namespaced(client(&over_etcd.kubeconfig).await?, "default");
    let b_api: Api<ConfigMap> = Api::namespaced(client(&b.kubeconfig).await?, "default");
    let mut stream = b_api.watch(&WatchParams::default().labels("bench=watch"), "0").await?.boxed();
    let mut lat = Vec::new();
    let started = Instant::now();
    for i in 0..200 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("w{i}"), "labels": {"bench": "watch"}}}))?;
        let t = Instant::now();
        a_api.create(&PostParams::default(), &cm).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await? {
                Some(Ok(WatchEvent::Added(o))) if o.metadata.name.as_deref() == Some(&format!("w{i}")) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("watch: {e}"),
                None => anyhow::bail!("watch ended"),
            }
        }
        lat.push(t.elapsed());
    }
    let w = summarize(lat, started.elapsed());
    println!("create through A → event through B: p50 {:.2} ms, p99 {:.2} ms (the create's own latency included)", ms(w.p50), ms(w.p99));
    drop(b);
    drop(over_etcd);

    println!("\n== takeover: kill -9 of the leading server, a standby over the same etcd");
    let leader = start_skiff(&dir.path().join("lead"), &["--disable", "agent,proxy,dns,cloud-controller", "--datastore-endpoint", &url])?;
    let leases: Api<Lease> = Api::namespaced(client(&leader.kubeconfig).await?, "kube-system");
    let holder = |l: Option<Lease>| l.and_then(|l| l.spec).and_then(|s| s.holder_identity).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder(leases.get_opt("kube-controller-manager").await?).is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "no controller-manager leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let standby = start_skiff(&dir.path().join("standby"), &["--disable", "agent,proxy,dns,cloud-controller", "--datastore-endpoint", &url])?;
    let first = holder(leases.get_opt("kube-controller-manager").await?);
    let standby_leases: Api<Lease> = Api::namespaced(client(&standby.kubeconfig).await?, "kube-system");
    let mut leader = leader;
    let _ = leader.child.kill();
    let killed = Instant::now();
    loop {
        let now = holder(standby_leases.get_opt("kube-controller-manager").await?);
        if !now.is_empty() && now != first {
            break;
        }
        anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "no takeover in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("standby leads {:.1} s after the leader was killed (lease 15 s, retry 2 s)", killed.elapsed().as_secs_f64());
    drop(standby);

    println!("\n== losing an etcd member: three members, kill -9 of etcd's leader, writes through the API");
    let mut cluster = etcd_cluster(&dir.path().join("three"), 3).await?;
    let endpoints = cluster.1.join(",");
    let s = start_skiff(&dir.path().join("three-server"), &["--disable", DISABLED, "--datastore-endpoint", &endpoints])?;
    let api: Api<ConfigMap> = Api::namespaced(client(&s.kubeconfig).await?, "default");
    let store = skiff_store::EtcdStore::connect(skiff_store::EtcdOptions { endpoints: cluster.1.clone(), ..Default::default() }).await?;
    let mut client = skiff_store::etcd::pb::maintenance_client::MaintenanceClient::new(store.channel());
    let status = client.status(skiff_store::etcd::pb::StatusRequest {}).await?.into_inner();
    let leader_id = status.leader;
    let members = store.members().await?;
    let leader_url = members.iter().find(|m| m.id == leader_id).and_then(|m| m.client_ur_ls.first().cloned()).unwrap_or_default();
    let index = cluster.1.iter().position(|u| *u == leader_url).unwrap_or(0);
    for i in 0..20 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("before-{i}")}}))?;
        api.create(&PostParams::default(), &cm).await?;
    }
    if let Some(mut c) = cluster.0[index].take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let lost = Instant::now();
    let mut i = 0;
    let resumed = loop {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("after-{i}")}}))?;
        i += 1;
        if api.create(&PostParams::default(), &cm).await.is_ok() {
            break lost.elapsed();
        }
        anyhow::ensure!(lost.elapsed() < Duration::from_secs(60), "writes did not resume in 60 s");
    };
    println!("a write succeeded {:.2} s after etcd's leader was killed", resumed.as_secs_f64());
    Ok(())
}
