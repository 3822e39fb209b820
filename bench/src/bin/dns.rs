//! The cluster DNS under load, in a network namespace of the benchmark's
//! own: `skiff server` with 1,000 Services, its DNS answering on loopback,
//! and a load client on loopback sending A queries for cluster names
//! (random Services), then for an outside name the DNS forwards to an
//! upstream the benchmark runs (cached after the first answer).
//! Queries/s and p50/p99 latency for each.
//!
//! Run as root: `cargo build --release -p skiff -p skiff-bench && target/release/dns [SECONDS]`.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_bench::{in_own_netns, ms, start_skiff, summarize};
use skiff_dns::answer::{addresses, query};
use tokio::net::UdpSocket;

const SERVICES: usize = 1_000;
const DNS_PORT: u16 = 15353;
/// Outstanding queries per client socket, and client sockets.
const CLIENTS: usize = 32;

/// The upstream resolver: every name is 192.0.2.99 for 300 s.
async fn upstream() -> anyhow::Result<()> {
    let sock = UdpSocket::bind(("127.0.0.2", 53)).await?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.queries = q.queries.clone();
            if let Some(qq) = q.queries.first() {
                r.add_answer(Record::from_rdata(qq.name().clone(), 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 99)))));
            }
            if let Ok(b) = r.to_vec() {
                let _ = sock.send_to(&b, peer).await;
            }
        }
    });
    Ok(())
}

/// `CLIENTS` sockets asking one query at a time each for `secs`.
async fn load(names: Arc<Vec<String>>, secs: u64) -> anyhow::Result<skiff_bench::Figures> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (names, stop) = (names.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind(("127.0.0.1", 0)).await?;
            sock.connect(("127.0.0.1", DNS_PORT)).await?;
            let mut lat = Vec::new();
            let mut buf = [0u8; 1500];
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let id = (i % 65_536) as u16;
                let q = query(id, &names[i % names.len()], RecordType::A);
                let t = Instant::now();
                sock.send(&q).await?;
                match tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        let (code, addrs) = addresses(&buf[..n]);
                        anyhow::ensure!(code == ResponseCode::NoError && !addrs.is_empty(), "a failed answer: {code:?}");
                        lat.push(t.elapsed());
                    }
                    _ => anyhow::bail!("a query went unanswered for 2 s"),
                }
                i += CLIENTS;
            }
            anyhow::Ok(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(summarize(all, elapsed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !in_own_netns()? {
        return Ok(());
    }
    let secs: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    upstream().await?;
    let dir = tempfile::tempdir()?;
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.2\n")?;
    let resolv_arg = resolv.display().to_string();
    let port = DNS_PORT.to_string();
    let skiff = start_skiff(
        &dir.path().join("skiff"),
        &[
            "--disable",
            "scheduler,controllers,agent,proxy",
            "--node-name",
            "bench",
            "--node-ip",
            "127.0.0.1",
            "--dns-port",
            &port,
            "--resolv-conf",
            &resolv_arg,
        ],
    )?;
    let kc = kube::config::Kubeconfig::read_from(&skiff.kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let services: Api<Service> = Api::namespaced(client, "default");
    for i in 0..SERVICES {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"ports": [{"name": "http", "port": 80}]}}))?;
        services.create(&PostParams::default(), &svc).await?;
    }
    // Ready when the last Service resolves.
    let sock = UdpSocket::bind(("127.0.0.1", 0)).await?;
    sock.connect(("127.0.0.1", DNS_PORT)).await?;
    let last = format!("svc-{}.default.svc.cluster.local", SERVICES - 1);
    let t = Instant::now();
    loop {
        sock.send(&query(1, &last, RecordType::A)).await?;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await {
            if !addresses(&buf[..n]).1.is_empty() {
                break;
            }
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the DNS never answered for {last}");
    }
    let cluster: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i}.default.svc.cluster.local")).collect();
    let f = load(Arc::new(cluster), secs).await.context("cluster names")?;
    println!("cluster names ({SERVICES} Services, {CLIENTS} clients, {secs} s): {:.0} queries/s, p50 {:.3} ms, p99 {:.3} ms", f.rate, ms(f.p50), ms(f.p99));
    let outside: Vec<String> = (0..16).map(|i| format!("host-{i}.outside.example")).collect();
    let f = load(Arc::new(outside), secs).await.context("forwarded names")?;
    println!("forwarded names (16, cached after the first answer): {:.0} queries/s, p50 {:.3} ms, p99 {:.3} ms", f.rate, ms(f.p50), ms(f.p99));
    drop(skiff);
    Ok(())
}
