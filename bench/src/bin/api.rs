//! The API server over its embedded store, end to end through HTTPS with the
//! `kube` client, beside real etcd in the same run.
//!
//! Prints: start → ready; pod creates/s with p50/p99 at 1, 16 and 64
//! concurrent clients (each a durable write through validation, defaulting
//! and the store), next to the same number of durable 1 KiB etcd puts at
//! the same concurrency and the ratio; list of 10,000 pods (p50/p99);
//! watch delivery latency from a create to each of 100 watchers; server RSS
//! idle and after the pods. The scheduler and controllers are disabled:
//! this measures the API server over its store.
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin api [-- N]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_bench::{client, etcd_puts, ms, rss_kib, run_clients, start_etcd, start_skiff, summarize};



async fn namespace(c: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(c.clone()).create(&PostParams::default(), &ns).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    // The API server and its store alone: with the scheduler running, every
    // pod of this benchmark (there are no nodes) would also get a
    // FailedScheduling event and a status write, which is the scheduler's
    // cost, measured by the scheduler benchmark.
    let skiff = start_skiff(&dir.path().join("skiff"), &["--disable", "scheduler,controllers,agent,proxy,dns"])?;
    println!("start → ready: {:.1} ms", ms(skiff.ready_after));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(skiff.child.id())?;
    println!("idle RSS: {:.1} MiB", idle as f64 / 1024.0);
    let c = client(&skiff.kubeconfig).await?;
    let etcd = start_etcd(dir.path()).await;
    if let Err(e) = &etcd {
        println!("etcd unavailable, skiff figures only: {e:#}");
    }

    println!("\npod creates through the API ({total} per run; 1 client: {})", total / 10);
    println!("{:>8} {:>12} {:>9} {:>9} {:>14} {:>9} {:>9} {:>8}", "clients", "creates/s", "p50 ms", "p99 ms", "etcd puts/s", "p50 ms", "p99 ms", "ratio");
    for clients in [1usize, 16, 64] {
        let n = if clients == 1 { total / 10 } else { total };
        let ns = format!("c{clients}");
        namespace(&c, &ns).await?;
        let api: Api<Pod> = Api::namespaced(c.clone(), &ns);
        let s = run_clients(n, clients, move |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &skiff_bench::bench_pod(&format!("p{i}"))?).await?;
                Ok(())
            }
        })
        .await?;
        let e = match &etcd {
            Ok((_, url)) => Some(etcd_puts(url, n, clients, &ns).await?),
            Err(_) => None,
        };
        match e {
            Some(e) => println!(
                "{clients:>8} {:>12.0} {:>9.2} {:>9.2} {:>14.0} {:>9.2} {:>9.2} {:>7.2}x",
                s.rate,
                ms(s.p50),
                ms(s.p99),
                e.rate,
                ms(e.p50),
                ms(e.p99),
                s.rate / e.rate
            ),
            None => println!("{clients:>8} {:>12.0} {:>9.2} {:>9.2}", s.rate, ms(s.p50), ms(s.p99)),
        }
    }

    let api: Api<Pod> = Api::namespaced(c.clone(), "c64");
    let mut lat = Vec::new();
    let t = Instant::now();
    let mut count = 0;
    for _ in 0..20 {
        let s = Instant::now();
        count = api.list(&ListParams::default()).await?.items.len();
        lat.push(s.elapsed());
    }
    let l = summarize(lat, t.elapsed());
    println!("\nlist of {count} pods (20 lists, typed client decode included): p50 {:.1} ms, p99 {:.1} ms", ms(l.p50), ms(l.p99));
    let mut lat = Vec::new();
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..20 {
        let s = Instant::now();
        let req = http::Request::get("/api/v1/namespaces/c64/pods").body(Vec::new())?;
        bytes = c.request_text(req).await?.len();
        lat.push(s.elapsed());
    }
    let l = summarize(lat, t.elapsed());
    println!("list of {count} pods as raw JSON ({:.1} MB, no decode): p50 {:.1} ms, p99 {:.1} ms", bytes as f64 / 1e6, ms(l.p50), ms(l.p99));

    namespace(&c, "watch").await?;
    let wapi: Api<Pod> = Api::namespaced(c.clone(), "watch");
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let received: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let events = 100usize;
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let (wapi, sent, received) = (wapi.clone(), sent.clone(), received.clone());
        let stream = wapi.watch(&WatchParams::default().timeout(120), "0").await?;
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0;
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(p) = ev {
                    let at = Instant::now();
                    let name = p.metadata.name.unwrap_or_default();
                    let start = sent.lock().ok().and_then(|m| m.get(&name).copied());
                    if let (Some(start), Ok(mut r)) = (start, received.lock()) {
                        r.push(at - start);
                    }
                    seen += 1;
                    if seen == events {
                        return;
                    }
                }
            }
        }));
    }
    let t = Instant::now();
    for i in 0..events {
        let name = format!("w{i}");
        if let Ok(mut m) = sent.lock() {
            m.insert(name.clone(), Instant::now());
        }
        wapi.create(&PostParams::default(), &skiff_bench::bench_pod(&name)?).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w).await??;
    }
    let got = received.lock().map(|r| r.clone()).unwrap_or_default();
    let n = got.len();
    let w = summarize(got, t.elapsed());
    println!("watch delivery, create → event at each of 100 watchers ({n} deliveries): p50 {:.2} ms, p99 {:.2} ms", ms(w.p50), ms(w.p99));

    let pods = total / 10 + 2 * total + events;
    println!("server RSS after {pods} pods: {:.1} MiB (idle was {:.1} MiB)", rss_kib(skiff.child.id())? as f64 / 1024.0, idle as f64 / 1024.0);
    Ok(())
}
