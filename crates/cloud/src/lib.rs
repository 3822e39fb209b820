//! skiff's cloud-controller-manager with a built-in `local` provider, in
//! the spirit of k3s's ServiceLB: a `type: LoadBalancer` Service gets
//! `status.loadBalancer.ingress` addresses, from `--lb-address-pool` when
//! one is given (one address per Service, kept while it lives), else the
//! InternalIPs of the nodes that run its endpoints (of every node while it
//! has none). kube-proxy answers on those addresses. Services naming
//! another `loadBalancerClass` are left to their own controller. Nodes
//! started with `--cloud-provider external` are initialized by [`node`].

#![deny(missing_docs)]

pub mod node;

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_api::cidr::Cidr;
use skiff_runtime::informer::Informer;
use tokio::sync::watch;

/// How the controller runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Addresses to hand out (`--lb-address-pool`); none: node addresses.
    pub pool: Option<Cidr>,
}

/// The ingress addresses `svc` has now.
fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref()).into_iter().flatten().filter_map(|i| i.ip.clone()).collect()
}

/// The ingress addresses `svc` should have.
fn wanted(
    svc: &Service,
    nodes: &[std::sync::Arc<Node>],
    slices: &[std::sync::Arc<EndpointSlice>],
    pool: Option<Cidr>,
    taken: &HashSet<Ipv4Addr>,
) -> Vec<String> {
    let current = ingress_ips(svc);
    if let Some(pool) = pool {
        // Keep the one it has; else the first free one (skipping the
        // network and broadcast addresses).
        if let Some(ip) = current.iter().find(|ip| ip.parse::<Ipv4Addr>().is_ok_and(|a| pool.contains(a))) {
            return vec![ip.clone()];
        }
        return (1..pool.size().saturating_sub(1)).map(|n| pool.nth(n)).find(|a| !taken.contains(a)).map(|a| vec![a.to_string()]).unwrap_or_default();
    }
    let (ns, name) = (svc.metadata.namespace.as_deref().unwrap_or(""), svc.metadata.name.as_deref().unwrap_or(""));
    let hosting: HashSet<&str> = slices
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(String::as_str) == Some(name))
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.as_deref())
        .collect();
    let ips: BTreeSet<String> = nodes
        .iter()
        .filter(|n| hosting.is_empty() || n.metadata.name.as_deref().is_some_and(|m| hosting.contains(m)))
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP" && a.address.parse::<Ipv4Addr>().is_ok())
        .map(|a| a.address.clone())
        .collect();
    ips.into_iter().collect()
}

fn ours(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else { return false };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref().is_none_or(|c| c.is_empty())
}

/// Runs until shutdown: every change to Services, EndpointSlices or Nodes
/// re-evaluates the LoadBalancer Services (a few per cluster).
pub async fn run(client: kube::Client, opts: Options, mut shutdown: watch::Receiver<bool>) {
    let services = Informer::<Service>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let nodes = Informer::<Node>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let slices = Informer::<EndpointSlice>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let mut changes =
        futures::stream::select_all([services.changes().map(|_| ()).boxed(), nodes.changes().map(|_| ()).boxed(), slices.changes().map(|_| ()).boxed()]);
    loop {
        tokio::select! {
            c = changes.next() => if c.is_none() { return },
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        // Let a burst settle, then look at everything once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Some(Some(())) = futures::FutureExt::now_or_never(changes.next()) {}
        let (svcs, ns, eps) = (services.store().state(), nodes.store().state(), slices.store().state());
        for n in &ns {
            initialize(&client, n).await;
        }
        let mut taken: HashSet<Ipv4Addr> = svcs.iter().filter(|s| ours(s)).flat_map(|s| ingress_ips(s)).filter_map(|ip| ip.parse().ok()).collect();
        for svc in svcs.iter().filter(|s| ours(s)) {
            let want = wanted(svc, &ns, &eps, opts.pool, &taken);
            let have = ingress_ips(svc);
            if want == have {
                continue;
            }
            taken.extend(want.iter().filter_map(|ip| ip.parse::<Ipv4Addr>().ok()));
            let ingress: Vec<serde_json::Value> = want.iter().map(|ip| json!({"ip": ip})).collect();
            let api: Api<Service> = Api::namespaced(client.clone(), svc.metadata.namespace.as_deref().unwrap_or("default"));
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            match api.patch_status(svc.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::info!(service = ?svc.metadata.name, ingress = ?want, "load balancer addresses"),
                Err(e) => tracing::warn!(error = %e, "writing a load balancer's addresses"),
            }
        }
    }
}

/// Initializes a node waiting for its cloud provider (see [`node`]).
async fn initialize(client: &kube::Client, n: &Node) {
    let name = n.metadata.name.as_deref().unwrap_or_default();
    match node::initialization(n) {
        None => {}
        Some(Err(node::NoAddress)) => tracing::warn!(node = name, "no address to initialize the node with (its kubelet's --node-ip)"),
        Some(Ok((status, object))) => {
            let api: Api<Node> = Api::all(client.clone());
            let pp = PatchParams::default();
            let done = match api.patch_status(name, &pp, &Patch::Merge(&status)).await {
                Ok(_) => api.patch(name, &pp, &Patch::Merge(&object)).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(_) => tracing::info!(node = name, "node initialized by the local cloud provider"),
                Err(e) => tracing::warn!(node = name, error = %e, "initializing the node (retried at its next change)"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_out_free_addresses_and_keeps_them() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"type": "LoadBalancer"}})).unwrap();
        let pool: Cidr = "198.51.100.0/29".parse().unwrap();
        let taken: HashSet<Ipv4Addr> = [Ipv4Addr::new(198, 51, 100, 1)].into();
        assert_eq!(wanted(&svc, &[], &[], Some(pool), &taken), vec!["198.51.100.2".to_string()]);
        let kept: Service = serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.5"}]}}}))
        .unwrap();
        assert_eq!(wanted(&kept, &[], &[], Some(pool), &taken), vec!["198.51.100.5".to_string()]);
        let foreign: Service =
            serde_json::from_value(json!({"metadata": {"name": "b"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}})).unwrap();
        assert!(!ours(&foreign) && ours(&svc));
    }

    #[test]
    fn without_a_pool_the_nodes_running_endpoints_answer() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"type": "LoadBalancer"}})).unwrap();
        let node = |n: &str, ip: &str| {
            std::sync::Arc::new(
                serde_json::from_value::<Node>(json!({"metadata": {"name": n}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})).unwrap(),
            )
        };
        let nodes = vec![node("n1", "192.0.2.1"), node("n2", "192.0.2.2")];
        let slice: EndpointSlice =
            serde_json::from_value(json!({"metadata": {"name": "a-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.1.5"], "nodeName": "n2"}]}))
            .unwrap();
        assert_eq!(wanted(&svc, &nodes, &[std::sync::Arc::new(slice)], None, &HashSet::new()), vec!["192.0.2.2".to_string()]);
        assert_eq!(wanted(&svc, &nodes, &[], None, &HashSet::new()), vec!["192.0.2.1".to_string(), "192.0.2.2".to_string()], "no endpoints: every node");
    }
}
