//! Node IPAM: gives every node a `podCIDR` (a /24 of `--cluster-cidr`), the
//! range its pods' IPs come from.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

struct Ctx {
    client: kube::Client,
    base: u32,
    blocks: u32,
    /// CIDRs handed out (seen on nodes or assigned by us).
    used: Mutex<HashSet<String>>,
    /// What we assigned, by node: a node reconciled again before its
    /// update is seen keeps the same CIDR.
    assigned: Mutex<std::collections::HashMap<String, String>>,
}

/// Parses `a.b.c.d/len` into (base, number of /24 blocks).
pub fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 24 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, 1 << (24 - len)))
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, cluster_cidr: &str, shutdown: watch::Receiver<bool>) {
    let Some((base, blocks)) = parse_cidr(cluster_cidr) else {
        tracing::error!(cidr = cluster_cidr, "node IPAM disabled: --cluster-cidr must be an IPv4 CIDR of /24 or wider");
        return;
    };
    let ctx = Arc::new(Ctx { client: client.clone(), base, blocks, used: Mutex::default(), assigned: Mutex::default() });
    let controller = Controller::new(Api::<Node>::all(client), watcher::Config::default());
    let store = controller.store();
    let ctx2 = ctx.clone();
    controller
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(
            move |node, ctx: Arc<Ctx>| {
                // Everything any node already holds counts as used.
                if let Ok(mut used) = ctx.used.lock() {
                    for n in store.state() {
                        if let Some(c) = n.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
                            used.insert(c);
                        }
                    }
                }
                reconcile(node, ctx)
            },
            retry,
            ctx2,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
    let _ = ctx;
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if node.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some_and(|c| !c.is_empty()) {
        return Ok(Action::await_change());
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let cidr = {
        let mut assigned = ctx.assigned.lock().map_err(|_| Error::Invalid("poisoned".into()))?;
        let mut used = ctx.used.lock().map_err(|_| Error::Invalid("poisoned".into()))?;
        if let Some(c) = assigned.get(&name) {
            c.clone()
        } else {
            let free = (0..ctx.blocks).map(|i| format!("{}/24", Ipv4Addr::from(ctx.base + (i << 8)))).find(|c| !used.contains(c));
            let Some(c) = free else {
                return Err(Error::Invalid("cluster CIDR exhausted".into()));
            };
            used.insert(c.clone());
            assigned.insert(name.clone(), c.clone());
            c
        }
    };
    let p = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    Api::<Node>::all(ctx.client.clone()).patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_cidr_splits_into_24s() {
        assert_eq!(parse_cidr("10.42.0.0/16"), Some((u32::from(Ipv4Addr::new(10, 42, 0, 0)), 256)));
        assert_eq!(parse_cidr("10.42.7.0/24").map(|(_, n)| n), Some(1));
        assert_eq!(parse_cidr("10.42.0.0/25"), None);
        assert_eq!(parse_cidr("nonsense"), None);
    }
}
