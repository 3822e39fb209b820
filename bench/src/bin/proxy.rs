//! The service proxy's figures, in a network namespace of the benchmark's
//! own (nothing on the host is touched):
//!
//! 1. full sync at 10,000 Services × 10 endpoints: render time, ruleset
//!    size, and the netlink transaction's time (beside `nft -f` of the same
//!    transaction's text); then one endpoint changed (a partial sync) at
//!    that size;
//! 2. the same full sync at 2,000 Services in kube-proxy's own nftables
//!    layout (a chain per endpoint, an anonymous `numgen … vmap` per
//!    Service), rendered by this benchmark for comparison and applied with
//!    `nft -f`, beside skiff's;
//! 3. network programming latency through the real stack: `skiff server`
//!    with 1,000 Services × 10 endpoints, an EndpointSlice changed through
//!    the API, and a probe connection to the ClusterIP until the new
//!    endpoint answers (p50/p99).
//!
//! Run as root: `cargo build --release -p skiff -p skiff-bench && target/release/proxy`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_bench::{in_own_netns, ms, start_skiff};
use skiff_proxy::model::{Endpoint, Protocol, ServicePort};
use skiff_proxy::nft::Transaction;
use skiff_proxy::rules::{render, RuleConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ports(services: usize, endpoints: usize) -> Vec<ServicePort> {
    (0..services as u32)
        .map(|s| {
            let eps = (0..endpoints as u32)
                .map(|e| Endpoint {
                    ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 2)) + s * endpoints as u32 + e),
                    port: 8080,
                    local: true,
                    ready: true,
                    serving: true,
                    terminating: false,
                })
                .collect();
            ServicePort::cluster(&format!("default/svc-{s}/tcp/http"), Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 11)) + s), 80, Protocol::Tcp, eps)
        })
        .collect()
}

/// kube-proxy's nftables layout for the same ports (what its proxier
/// writes for a plain ClusterIP Service: a chain per endpoint with the
/// hairpin check and the DNAT, and the Service chain's `numgen … vmap`).
fn kube_proxy_layout(ports: &[ServicePort], table: &str) -> String {
    let t = format!("ip {table}");
    let mut s = format!("add table {t}\ndelete table {t}\nadd table {t}\n");
    s += &format!("add chain {t} mark-for-masquerade\nadd rule {t} mark-for-masquerade meta mark set meta mark or 0x4000\n");
    s += &format!("add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n");
    s += &format!("add chain {t} services\nadd rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips\n");
    s += &format!("add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}\nadd rule {t} nat-prerouting jump services\n");
    for (i, p) in ports.iter().enumerate() {
        let ip = p.cluster_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut vmap = Vec::new();
        for (j, e) in p.endpoints.iter().enumerate() {
            let c = format!("endpoint-{i}-{j}");
            s += &format!(
                "add chain {t} {c}\nadd rule {t} {c} ip saddr {} jump mark-for-masquerade\nadd rule {t} {c} meta l4proto tcp dnat to {}:{}\n",
                e.ip, e.ip, e.port
            );
            vmap.push(format!("{j} : goto {c}"));
        }
        s += &format!("add chain {t} service-{i}\nadd rule {t} service-{i} ip daddr {ip} tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade\n");
        s += &format!("add rule {t} service-{i} numgen random mod {} vmap {{ {} }}\n", p.endpoints.len(), vmap.join(", "));
        s += &format!("add element {t} service-ips {{ {ip} . tcp . 80 : goto service-{i} }}\n");
    }
    s
}

async fn timed_apply(tx: &Transaction) -> anyhow::Result<Duration> {
    let t = Instant::now();
    tx.clone().apply().await?;
    Ok(t.elapsed())
}

/// Applies an nft script with `nft -f`, timed.
fn timed_nft(script: &str) -> anyhow::Result<Duration> {
    use std::io::Write;
    let t = Instant::now();
    let mut child = std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().context("nft")?;
    child.stdin.take().context("stdin")?.write_all(script.as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "nft -f failed");
    Ok(t.elapsed())
}

async fn rules_at_scale() -> anyhow::Result<()> {
    let cfg = RuleConfig { table: "skiff-proxy-bench".into(), cluster_cidr: Some("10.42.0.0/16".parse()?), nodeport_addresses: vec![] };
    for services in [1_000usize, 10_000] {
        let p = ports(services, 10);
        let t = Instant::now();
        let r = render(&p, &cfg);
        let tx = r.full(&cfg.table);
        let rendered = t.elapsed();
        let script = tx.to_string();
        let by_nft = timed_nft(&script)?;
        let applied = timed_apply(&tx).await?;
        println!(
            "full sync, {services} Services x 10 endpoints: {} rules+elements, render {:.0} ms, netlink transaction {:.0} ms (nft -f of the same {:.1} MB script: {:.0} ms)",
            r.size(),
            ms(rendered),
            ms(applied),
            script.len() as f64 / 1e6,
            ms(by_nft)
        );
        if services == 10_000 {
            // The proxy's own path: only the changed port rendered and compared.
            let (mut applied, _) = skiff_proxy::rules::Applied::full(&p, &cfg);
            let (mut times, mut cpu, mut kernel) = (Vec::new(), Vec::new(), Vec::new());
            let mut q = p.clone();
            for k in 0..20 {
                q[k * 97].endpoints[3].ip = Ipv4Addr::new(10, 99, 0, k as u8 + 1);
                let t = Instant::now();
                let diff = applied.partial(&q).context("a partial sync")?;
                cpu.push(t.elapsed());
                kernel.push(timed_apply(&diff).await?);
                times.push(t.elapsed());
            }
            for v in [&mut times, &mut cpu, &mut kernel] {
                v.sort();
            }
            println!(
                "partial sync, one endpoint changed at 10000 Services: median {:.2} ms (render + diff {:.2} ms, netlink {:.2} ms), max {:.2} ms",
                ms(times[times.len() / 2]),
                ms(cpu[cpu.len() / 2]),
                ms(kernel[kernel.len() / 2]),
                ms(times[times.len() - 1])
            );
        }
    }
    skiff_proxy::nft::delete_table(&cfg.table).await?;
    let p = ports(2_000, 10);
    let ours = timed_apply(&render(&p, &cfg).full(&cfg.table)).await?;
    let theirs = timed_nft(&kube_proxy_layout(&p, "kube-proxy-layout"))?;
    println!(
        "2000 Services x 10 endpoints, one transaction: skiff's layout by netlink {:.0} ms, kube-proxy's layout by nft -f {:.0} ms (ratio {:.1}x)",
        ms(ours),
        ms(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    skiff_proxy::nft::delete_table(&cfg.table).await?;
    skiff_proxy::nft::delete_table("kube-proxy-layout").await?;
    Ok(())
}

/// Accepts on `port` and tells each connection which port it reached.
async fn banner(port: u16) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = c.write_all(port.to_string().as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// Connects to `ip:80` from 10.42.0.1 (inside the cluster CIDR, so the
/// proxy does not masquerade: there is no address to masquerade to on
/// loopback) and reads the banner.
async fn probe(ip: &str) -> Option<String> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(([10, 42, 0, 1], 0).into()).ok()?;
    let addr = std::net::SocketAddr::new(ip.parse().ok()?, 80);
    let mut c = tokio::time::timeout(Duration::from_millis(200), sock.connect(addr)).await.ok()?.ok()?;
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn slice(i: usize, port: u16) -> anyhow::Result<EndpointSlice> {
    // Ten endpoints on loopback addresses of their own (127.1.x.y: every
    // 127/8 address is this namespace's), all served by the banner.
    let eps: Vec<serde_json::Value> = (0..10)
        .map(|e| {
            let n = (i * 10 + e + 1) as u32;
            json!({"addresses": [format!("127.1.{}.{}", n / 250, n % 250 + 1)], "conditions": {"ready": true}})
        })
        .collect();
    Ok(serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}"), "namespace": "default",
        "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}], "endpoints": eps}))?)
}

async fn programming_latency() -> anyhow::Result<()> {
    const SERVICES: usize = 1_000;
    // ClusterIPs are local here, so a probe before its rule exists is
    // refused at once instead of leaving the namespace.
    let route = std::process::Command::new("ip").args(["route", "add", "local", "10.43.0.0/16", "dev", "lo"]).status()?;
    anyhow::ensure!(route.success(), "ip route add local 10.43.0.0/16 failed");
    let addr = std::process::Command::new("ip").args(["addr", "add", "10.42.0.1/32", "dev", "lo"]).status()?;
    anyhow::ensure!(addr.success(), "ip addr add 10.42.0.1/32 dev lo failed");
    banner(8080).await?;
    banner(8081).await?;
    let dir = tempfile::tempdir()?;
    let skiff = start_skiff(&dir.path().join("skiff"), &["--disable", "scheduler,controllers,agent,dns", "--node-name", "bench"])?;
    let kc = kube::config::Kubeconfig::read_from(&skiff.kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let mut ips = Vec::new();
    for i in 0..SERVICES {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"ports": [{"name": "http", "port": 80}]}}))?;
        let created = services.create(&PostParams::default(), &svc).await?;
        ips.push(created.spec.and_then(|s| s.cluster_ip).context("a ClusterIP")?);
        slices.create(&PostParams::default(), &slice(i, 8080)?).await?;
    }
    let t = Instant::now();
    while probe(&ips[SERVICES - 1]).await.as_deref() != Some("8080") {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the last Service never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::new();
    for k in 0..60 {
        let i = (k * 17) % SERVICES;
        let port = if k % 2 == 0 { 8081 } else { 8080 };
        // Changes spaced past the proxy's 1 s minimum sync period, as a
        // cluster's occasional change is.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut s = slices.get(&format!("svc-{i}")).await?;
        s.ports = slice(i, port)?.ports;
        let t = Instant::now();
        slices.replace(&format!("svc-{i}"), &PostParams::default(), &s).await?;
        let want = port.to_string();
        while probe(&ips[i]).await.as_deref() != Some(want.as_str()) {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "a change never took effect");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "network programming latency at {SERVICES} Services x 10 endpoints (EndpointSlice replaced through the API -> probe reaches the new port), {} changes: p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        ms(lat[lat.len() / 2]),
        ms(lat[(lat.len() * 99 / 100).min(lat.len() - 1)])
    );
    drop(skiff);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !in_own_netns()? {
        return Ok(());
    }
    rules_at_scale().await?;
    programming_latency().await?;
    Ok(())
}
