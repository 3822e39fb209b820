//! The agent's client-side load balancer (k3s's, on 127.0.0.1:6444): the
//! kubelet and the proxy dial this local port, and each connection is
//! passed on, byte for byte, to an API server that answers. TLS stays end
//! to end (every server's certificate names 127.0.0.1).
//!
//! The agent starts it with the server it joined through; it then learns
//! every server from the `kubernetes` Service's endpoints, so when its
//! server dies, new connections (the kubelet's watches and lease renewals
//! reconnect at once) go to another.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The servers connections go to, the one that last answered first.
#[derive(Clone)]
pub struct LoadBalancer {
    servers: Arc<Mutex<Vec<SocketAddr>>>,
    /// Signalled when connections start going to another server.
    pub switched: Arc<tokio::sync::Notify>,
    /// The local address clients dial.
    pub local: SocketAddr,
}

/// How long one server gets to accept a connection before the next is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

impl LoadBalancer {
    /// Listens on `listen` (port 0: any) and starts passing connections to
    /// `servers`, until `shutdown`.
    pub async fn start(listen: SocketAddr, servers: Vec<SocketAddr>, mut shutdown: tokio::sync::watch::Receiver<bool>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let lb = Self { servers: Arc::new(Mutex::new(servers)), switched: Arc::default(), local: listener.local_addr()? };
        let me = lb.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = shutdown.changed() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let me = me.clone();
                tokio::spawn(async move {
                    let Some(mut server) = me.dial().await else { return };
                    let mut client = client;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Ok(lb)
    }

    /// The servers, in the order they are tried.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Replaces the server list (the order of the first kept as it is, new
    /// ones after): what the `kubernetes` endpoints say, plus `keep` (the
    /// server joined through, in case the endpoints list none reachable).
    pub fn set_servers(&self, mut learned: Vec<SocketAddr>, keep: &[SocketAddr]) {
        for k in keep {
            if !learned.contains(k) {
                learned.push(*k);
            }
        }
        let Ok(mut servers) = self.servers.lock() else { return };
        let mut next: Vec<SocketAddr> = servers.iter().filter(|s| learned.contains(s)).copied().collect();
        next.extend(learned.into_iter().filter(|s| !servers.contains(s)));
        if *servers != next {
            tracing::info!(servers = ?next, "load balancer: API servers");
            *servers = next;
        }
    }

    /// Connects to the first server that answers and moves it to the front.
    async fn dial(&self) -> Option<TcpStream> {
        for addr in self.servers() {
            if let Ok(Ok(stream)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                let _ = stream.set_nodelay(true);
                if let Ok(mut servers) = self.servers.lock() {
                    if servers.first() != Some(&addr) {
                        tracing::info!(server = %addr, "load balancer: switched API server");
                        servers.retain(|s| *s != addr);
                        servers.insert(0, addr);
                        self.switched.notify_one();
                    }
                }
                return Some(stream);
            }
        }
        tracing::warn!("load balancer: no API server answers");
        None
    }

    /// Keeps the server list in step with the `kubernetes` Service's
    /// endpoints (read through this balancer), every `every`, until shutdown.
    pub async fn follow_endpoints(self, client: kube::Client, keep: Vec<SocketAddr>, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let api: kube::Api<k8s_openapi::api::core::v1::Endpoints> = kube::Api::namespaced(client, "default");
        loop {
            if let Ok(Some(ep)) = api.get_opt("kubernetes").await {
                let mut learned = Vec::new();
                for subset in ep.subsets.unwrap_or_default() {
                    let ports: Vec<u16> = subset.ports.unwrap_or_default().iter().filter_map(|p| u16::try_from(p.port).ok()).collect();
                    for a in subset.addresses.unwrap_or_default() {
                        if let Ok(ip) = a.ip.parse::<std::net::IpAddr>() {
                            learned.extend(ports.iter().map(|p| SocketAddr::new(ip, *p)));
                        }
                    }
                }
                if !learned.is_empty() {
                    self.set_servers(learned, &keep);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_a_server_that_answers_and_the_list_follows_what_it_learns() {
        let (_stop, rx) = tokio::sync::watch::channel(false);
        // One server that is gone (nothing listens), one that echoes.
        let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let live = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_addr = live.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = live.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let lb = LoadBalancer::start("127.0.0.1:0".parse().expect("addr"), vec![gone, live_addr], rx).await.expect("start");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = TcpStream::connect(lb.local).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        assert_eq!(lb.servers()[0], live_addr, "the server that answered goes first");
        let other: SocketAddr = "127.0.0.9:1".parse().expect("addr");
        lb.set_servers(vec![other], &[live_addr]);
        assert_eq!(lb.servers(), vec![live_addr, other]);
    }
}
