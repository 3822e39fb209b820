//! skiff's cluster DNS, built in: the `kube-dns` Service in `kube-system`
//! (the service range's 10th address, as k3s), answered from the shared
//! informer's Service and EndpointSlice caches the way CoreDNS's
//! kubernetes plugin answers (see [`zone`]), everything else forwarded to
//! the node's resolvers with a cache. UDP and TCP. The server runs in the
//! skiff process on the node and publishes itself as the Service's
//! endpoint, so pods reach it through the proxy like any Service.

#![deny(missing_docs)]

pub mod answer;
pub mod forward;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::informer::Informer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// How the DNS server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// The `kube-dns` Service's address (`--cluster-dns`).
    pub cluster_dns: Ipv4Addr,
    /// The port it listens on (0: any); a taken port falls back to any.
    pub port: u16,
    /// The address pods reach it at (the node's).
    pub advertise: IpAddr,
    /// The node it runs on.
    pub node_name: String,
    /// Where upstream resolvers are read (`--resolv-conf`; default the host's).
    pub resolv_conf: Option<PathBuf>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error("binding the DNS port: {0}")]
    Bind(#[from] std::io::Error),
}

/// The upstream resolvers per `resolv_conf`: as given, or the host's
/// `/etc/resolv.conf` without its loopback stub, falling back to
/// systemd-resolved's list of real servers.
pub fn upstreams(resolv_conf: Option<&std::path::Path>) -> Vec<SocketAddr> {
    if let Some(p) = resolv_conf {
        return forward::nameservers(&std::fs::read_to_string(p).unwrap_or_default(), false);
    }
    let host = forward::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(), true);
    if !host.is_empty() {
        return host;
    }
    forward::nameservers(&std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default(), true)
}

/// Runs until shutdown.
pub async fn run(client: kube::Client, opts: Options, shutdown: watch::Receiver<bool>) -> Result<(), DnsError> {
    // UDP on the advertised address itself (and loopback), not the
    // wildcard: a reply must leave from the address the query was DNATed
    // to, or conntrack cannot map it back to the Service's, and a wildcard
    // socket answers from whichever address routes to the pod.
    let udp = match UdpSocket::bind((opts.advertise, opts.port)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(port = opts.port, error = %e, "DNS port taken; listening on another");
            UdpSocket::bind((opts.advertise, 0)).await?
        }
    };
    let udp_port = udp.local_addr()?.port();
    let local_udp = if opts.advertise.is_loopback() { None } else { UdpSocket::bind(("127.0.0.1", udp_port)).await.ok() };
    let tcp = match TcpListener::bind(("0.0.0.0", udp_port)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind(("0.0.0.0", 0)).await?,
    };
    let tcp_port = tcp.local_addr()?.port();
    let ups = upstreams(opts.resolv_conf.as_deref());
    tracing::info!(udp = udp_port, tcp = tcp_port, upstreams = ?ups, cluster_dns = %opts.cluster_dns, "cluster DNS listening");
    let forwarder = Arc::new(forward::Forwarder::new(ups));
    let zone = Arc::new(RwLock::new(Arc::new(zone::Zone::build(&opts.cluster_domain, std::iter::empty(), std::iter::empty()))));
    tokio::spawn(publish(client.clone(), opts.clone(), udp_port, tcp_port, shutdown.clone()));
    tokio::spawn(follow(client, opts.cluster_domain.clone(), zone.clone(), shutdown.clone()));
    let mut tasks = Vec::new();
    for sock in std::iter::once(udp).chain(local_udp) {
        let sock = Arc::new(sock);
        for _ in 0..2 {
            tasks.push(tokio::spawn(serve_udp(sock.clone(), zone.clone(), forwarder.clone(), shutdown.clone())));
        }
    }
    tasks.push(tokio::spawn(serve_tcp(tcp, zone, forwarder, shutdown)));
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Keeps the zone in step with the caches: rebuilt at most every 20 ms
/// while changes arrive.
async fn follow(client: kube::Client, domain: String, zone: Arc<RwLock<Arc<zone::Zone>>>, mut shutdown: watch::Receiver<bool>) {
    let services = Informer::<Service>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let slices = Informer::<EndpointSlice>::start(Api::all(client), watcher::Config::default(), shutdown.clone());
    let mut changes = futures::stream::select(services.changes().map(|_| ()), slices.changes().map(|_| ()));
    loop {
        tokio::select! {
            c = changes.next() => if c.is_none() { return },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(Some(())) = futures::FutureExt::now_or_never(changes.next()) {}
        let (svcs, eps) = (services.store().state(), slices.store().state());
        let z = zone::Zone::build(&domain, svcs.iter().map(|s| s.as_ref()), eps.iter().map(|s| s.as_ref()));
        *zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(z);
    }
}

fn current(zone: &RwLock<Arc<zone::Zone>>) -> Arc<zone::Zone> {
    zone.read().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn serve_udp(sock: Arc<UdpSocket>, zone: Arc<RwLock<Arc<zone::Zone>>>, forwarder: Arc<forward::Forwarder>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return } else { continue },
        };
        match answer::answer(&buf[..n], &current(&zone), true) {
            answer::Outcome::Reply(b) => {
                let _ = sock.send_to(&b, peer).await;
            }
            answer::Outcome::Forward(q) => {
                let (sock, forwarder, packet) = (sock.clone(), forwarder.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(b) = forwarder.resolve(&q, &packet).await {
                        let _ = sock.send_to(&b, peer).await;
                    }
                });
            }
            answer::Outcome::Drop => {}
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<RwLock<Arc<zone::Zone>>>, forwarder: Arc<forward::Forwarder>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (mut conn, _) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return } else { continue },
        };
        let (zone, forwarder) = (zone.clone(), forwarder.clone());
        tokio::spawn(async move {
            // Messages framed by a two-byte length, several per connection.
            loop {
                let mut len = [0u8; 2];
                if tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut len)).await.map_or(true, |r| r.is_err()) {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let reply = match answer::answer(&msg, &current(&zone), false) {
                    answer::Outcome::Reply(b) => Some(b),
                    answer::Outcome::Forward(q) => forwarder.resolve(&q, &msg).await,
                    answer::Outcome::Drop => None,
                };
                let Some(b) = reply else { return };
                let Ok(n) = u16::try_from(b.len()) else { return };
                if conn.write_all(&n.to_be_bytes()).await.is_err() || conn.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Creates `name` as `obj`, or replaces what is there (keeping its
/// ClusterIP, which is immutable). Not server-side apply: its two ports
/// share the number 53, and apply's list merge here keys Service ports by
/// number alone.
async fn put<K>(api: &Api<K>, name: &str, mut obj: serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        None => {
            let typed: K = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &typed).await.map(|_| ())
        }
        Some(cur) => {
            let cur = serde_json::to_value(&cur).map_err(kube::Error::SerdeError)?;
            obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            if let Some(ip) = cur.pointer("/spec/clusterIP") {
                obj["spec"]["clusterIP"] = ip.clone();
            }
            let typed: K = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
            api.replace(name, &PostParams::default(), &typed).await.map(|_| ())
        }
    }
}

/// Publishes the `kube-dns` Service and, as its endpoint, this server:
/// applied (server-side) at start and again whenever that fails.
async fn publish(client: kube::Client, opts: Options, udp_port: u16, tcp_port: u16, mut shutdown: watch::Receiver<bool>) {
    let labels = json!({"k8s-app": "kube-dns", "kubernetes.io/name": "skiff-dns", "kubernetes.io/cluster-service": "true"});
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {"clusterIP": opts.cluster_dns.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": udp_port},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": tcp_port}]}});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-skiff", "namespace": "kube-system",
            "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "skiff-dns"}},
        "addressType": if opts.advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "ports": [{"name": "dns", "port": udp_port, "protocol": "UDP"}, {"name": "dns-tcp", "port": tcp_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [opts.advertise.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": opts.node_name}]});
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "kube-system");
    loop {
        let r = async {
            put(&services, "kube-dns", svc.clone()).await?;
            put(&slices, "kube-dns-skiff", slice.clone()).await
        }
        .await;
        match r {
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "publishing the kube-dns Service; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}
