//! Durable writes of skiff's embedded store, beside real etcd in the same run.
//!
//! For 1, 16 and 64 concurrent writers: N creates of ~1 KiB values into
//! `SqliteStore` (WAL, synchronous=FULL, group commit), then the same number
//! of puts into a one-member etcd (Debian `etcd-server`, data dir on the same
//! disk) through its v3 JSON gateway. Prints creates/s, p50/p99 latency and
//! the ratio skiff/etcd. The etcd side pays JSON-gateway overhead that a gRPC
//! client would not; the figures say so rather than hide it.
//!
//! Run: `cargo run --release -p skiff-bench --bin store [-- N]`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use skiff_api::base64;
use skiff_store::{SqliteOptions, SqliteStore, Store};

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut lat: Vec<Duration>, elapsed: Duration) -> Figures {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Figures { rate: lat.len() as f64 / elapsed.as_secs_f64(), p50: pick(0.5), p99: pick(0.99) }
}

async fn run_clients<F, Fut>(total: usize, clients: usize, op: F) -> anyhow::Result<Figures>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < total {
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
                i += clients;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(summarize(all, start.elapsed()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Etcd(Child);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_etcd(dir: &std::path::Path) -> anyhow::Result<(Etcd, String)> {
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args(["--data-dir", &dir.join("etcd").to_string_lossy()])
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")?;
    let etcd = Etcd(child);
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok((etcd, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd did not become healthy")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let value = Bytes::from(vec![b'x'; 1024]);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let etcd = start_etcd(dir.path()).await;
    if let Err(e) = &etcd {
        println!("etcd unavailable, skiff figures only: {e:#}");
    }
    println!("{total} durable writes of 1 KiB per run");
    println!("{:>8} {:>14} {:>10} {:>10} {:>14} {:>10} {:>10} {:>8}", "clients", "skiff ops/s", "p50 ms", "p99 ms", "etcd ops/s", "p50 ms", "p99 ms", "ratio");
    for clients in [1usize, 16, 64] {
        let n = if clients == 1 { total / 10 } else { total };
        let store = SqliteStore::open(dir.path().join(format!("skiff-{clients}.db")), SqliteOptions::default())?;
        let v = value.clone();
        let s = run_clients(n, clients, move |i| {
            let (store, v) = (store.clone(), v.clone());
            async move {
                store.create(&format!("/registry/core/pods/default/p{i}"), v).await?;
                Ok(())
            }
        })
        .await?;
        let e = match &etcd {
            Ok((_, url)) => {
                let http = reqwest::Client::new();
                let (url, val) = (url.clone(), base64(&value));
                Some(
                    run_clients(n, clients, move |i| {
                        let (http, url, val) = (http.clone(), url.clone(), val.clone());
                        async move {
                            let key = base64(format!("/registry/pods/c{clients}/p{i}").as_bytes());
                            let r = http.post(format!("{url}/v3/kv/put")).json(&serde_json::json!({"key": key, "value": val})).send().await?;
                            if !r.status().is_success() {
                                bail!("etcd put: {}", r.status());
                            }
                            Ok(())
                        }
                    })
                    .await?,
                )
            }
            Err(_) => None,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match e {
            Some(e) => println!("{clients:>8} {:>14.0} {:>10.2} {:>10.2} {:>14.0} {:>10.2} {:>10.2} {:>7.2}x", s.rate, ms(s.p50), ms(s.p99), e.rate, ms(e.p50), ms(e.p99), s.rate / e.rate),
            None => println!("{clients:>8} {:>14.0} {:>10.2} {:>10.2}", s.rate, ms(s.p50), ms(s.p99)),
        }
    }
    Ok(())
}
