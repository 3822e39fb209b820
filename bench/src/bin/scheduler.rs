//! Scheduler throughput, and a large Deployment converging.
//!
//! 1. Scheduling cycles alone (no API): 10,000 pods onto 5,000 nodes in the
//!    scheduler's own cache, each pod filtered, scored and assumed.
//! 2. End to end through the API: `skiff server` without its scheduler,
//!    5,000 nodes, 10,000 pending pods; then a scheduler starts and the
//!    clock runs until every pod is bound (pods/s).
//! 3. A 10,000-replica Deployment on 1,000 simulated nodes (`skiff server`
//!    with scheduler and controllers, `skiff sim-nodes`): time until all
//!    replicas are Ready.
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin scheduler [-- NODES PODS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use skiff_bench::{rss_kib, start_skiff};
use skiff_scheduler::cache::{Cache, PodInfo};

fn node(name: &str) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(
        serde_json::json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": format!("z{}", name.len() % 3)}}, "spec": {}}),
    )?)
}

fn node_status() -> serde_json::Value {
    serde_json::json!({"status": {"capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"}, "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench"}]}})
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}))?)
}

async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    Ok(skiff_runtime::client(kubeconfig).await?)
}

fn cycles(nodes: usize, pods: usize) -> anyhow::Result<()> {
    let mut cache = Cache::default();
    for i in 0..nodes {
        let mut n = node(&format!("n{i}"))?;
        let st: Node = serde_json::from_value(node_status())?;
        n.status = st.status;
        cache.upsert_node(std::sync::Arc::new(n));
    }
    let mut start = 0;
    let t = Instant::now();
    for i in 0..pods {
        let p = Arc::new(pod(&format!("p{i}"))?);
        let info = PodInfo::new(p.clone());
        let host = skiff_scheduler::framework::schedule(&info, &cache, &mut start, false, &skiff_scheduler::plugins::volume_binding::Volumes::none())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        cache.add_pod(&host, p);
    }
    let e = t.elapsed();
    println!("scheduling cycles alone: {pods} pods on {nodes} nodes in {:.2} s = {:.0} pods/s", e.as_secs_f64(), pods as f64 / e.as_secs_f64());
    Ok(())
}

async fn end_to_end(nodes: usize, pods: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let skiff = start_skiff(&dir.path().join("skiff"), &["--disable", "scheduler,controllers,agent,proxy,dns"])?;
    let c = client(&skiff.kubeconfig).await?;
    let napi: Api<Node> = Api::all(c.clone());
    futures::stream::iter(0..nodes)
        .map(|i| {
            let napi = napi.clone();
            async move {
                let name = format!("n{i}");
                napi.create(&PostParams::default(), &node(&name)?).await?;
                napi.patch_status(&name, &PatchParams::default(), &Patch::Merge(node_status())).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let papi: Api<Pod> = Api::namespaced(c.clone(), "default");
    let t = Instant::now();
    futures::stream::iter(0..pods)
        .map(|i| {
            let papi = papi.clone();
            async move {
                let mut p = pod(&format!("p{i}"))?;
                p.metadata.uid = None;
                papi.create(&PostParams::default(), &p).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    println!("\nend to end: {nodes} nodes registered; {pods} pending pods created in {:.1} s", t.elapsed().as_secs_f64());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let opts = skiff_scheduler::Options { leader_elect: false, ..Default::default() };
    let t = Instant::now();
    let sched = tokio::spawn(skiff_scheduler::run(c.clone(), opts, stop));
    loop {
        // One matching item is enough to know some are still pending.
        let pending = papi.list(&kube::api::ListParams::default().fields("spec.nodeName=").limit(1)).await?.items.len();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = t.elapsed();
    let _ = stop_tx.send(true);
    let _ = sched.await;
    println!(
        "end to end: {pods} pods bound through pods/binding in {:.2} s = {:.0} pods/s (server RSS {:.0} MiB)",
        e.as_secs_f64(),
        pods as f64 / e.as_secs_f64(),
        rss_kib(skiff.child.id())? as f64 / 1024.0
    );
    Ok(())
}

async fn deployment(nodes: usize, replicas: i32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let skiff = start_skiff(&dir.path().join("skiff"), &["--disable", "agent,proxy,dns"])?;
    let c = client(&skiff.kubeconfig).await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = skiff_simnodes::Config { count: nodes, prefix: "sim-".into(), cpu: "32".into(), memory: "128Gi".into(), pods: 110, lease_duration_seconds: 40 };
    let sim = tokio::spawn(skiff_simnodes::run(c.clone(), cfg, stop.clone()));
    let napi: Api<Node> = Api::all(c.clone());
    while napi.list(&Default::default()).await?.items.len() < nodes {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dapi: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({"metadata": {"name": "big"}, "spec": {"replicas": replicas,
        "selector": {"matchLabels": {"app": "big"}}, "template": {"metadata": {"labels": {"app": "big"}},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}))?;
    let t = Instant::now();
    dapi.create(&PostParams::default(), &d).await?;
    loop {
        let cur = dapi.get("big").await?;
        if cur.status.and_then(|s| s.ready_replicas).unwrap_or(0) >= replicas {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not converged after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = t.elapsed();
    println!(
        "\ndeployment of {replicas} replicas on {nodes} simulated nodes: all Ready in {:.1} s ({:.0} pods/s; server RSS {:.0} MiB)",
        e.as_secs_f64(),
        replicas as f64 / e.as_secs_f64(),
        rss_kib(skiff.child.id())? as f64 / 1024.0
    );
    let _ = stop_tx.send(true);
    let _ = sim.await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let pods: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    cycles(nodes, pods)?;
    end_to_end(nodes, pods).await?;
    deployment(nodes / 5, pods as i32).await?;
    Ok(())
}
