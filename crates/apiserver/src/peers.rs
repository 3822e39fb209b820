//! Several API servers over one store: each announces itself with a Lease
//! and the `kubernetes` Service's endpoints list every live one, as
//! kube-apiserver's identity leases and its lease endpoint reconciler do.
//! In-cluster clients (and agents, which learn the servers from these
//! endpoints) reach whichever servers run.
//!
//! Every server renews `kube-system/apiserver-<id>` every few seconds and
//! rewrites the endpoints from the leases not yet expired; a server that
//! stops deletes its lease, one that dies drops out when its lease ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_store::{ListOptions, StoreError};

use crate::handler::State;
use crate::respond::now;

/// The label kube-apiserver's identity leases carry.
const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// Where a lease records the address its server serves at.
const ADDRESS_ANNOTATION: &str = "skiff.io/advertise-address";
/// How long a lease lasts without renewal: a dead server leaves the
/// endpoints within this.
pub(crate) const LEASE_SECONDS: i64 = 15;
const RENEW: Duration = Duration::from_secs(5);

fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// This server's lease name: stable across its restarts (host, address,
/// data directory), so a restarted server takes its lease back.
pub(crate) fn identity(host: &str, address: &str, data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{host}\n{address}\n{}", data_dir.display()).as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("apiserver-{hex}")
}

/// Renews this server's lease and reconciles the endpoints until
/// shutdown; then gives the lease up and reconciles once more.
pub(crate) async fn run(state: Arc<State>, id: String, advertise: Option<(IpAddr, u16)>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(leases) = skiff_api::registry::find("coordination.k8s.io", "v1", "leases") else { return };
    let key = leases.key(Some("kube-system"), &id);
    loop {
        if let Err(e) = renew(&state, &key, &id, advertise).await {
            tracing::warn!(error = %e, "apiserver lease: renewal failed");
        }
        if let Err(e) = reconcile(&state).await {
            tracing::warn!(error = %e, "kubernetes endpoints: reconcile failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = state.store.delete(&key, None).await;
    let _ = reconcile(&state).await;
}

async fn renew(state: &State, key: &str, id: &str, advertise: Option<(IpAddr, u16)>) -> Result<(), StoreError> {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let mut annotations = serde_json::Map::new();
    if let Some((ip, port)) = advertise {
        annotations.insert(ADDRESS_ANNOTATION.into(), json!(std::net::SocketAddr::new(ip, port).to_string()));
    }
    let current = state.store.get(key).await?;
    let mut lease = match &current {
        Some(kv) => serde_json::from_slice::<Value>(&kv.value).unwrap_or_else(|_| json!({})),
        None => json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": id, "namespace": "kube-system", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now()},
            "spec": {"acquireTime": micro_now()}}),
    };
    lease["metadata"]["labels"] = json!({IDENTITY_LABEL: "kube-apiserver", "kubernetes.io/hostname": host});
    lease["metadata"]["annotations"] = Value::Object(annotations);
    lease["spec"]["holderIdentity"] = json!(id);
    lease["spec"]["leaseDurationSeconds"] = json!(LEASE_SECONDS);
    lease["spec"]["renewTime"] = json!(micro_now());
    let body = Bytes::from(lease.to_string());
    match current {
        Some(kv) => state.store.update(key, body, kv.mod_revision).await.map(|_| ()),
        None => state.store.create(key, body).await.map(|_| ()),
    }
}

/// The addresses of the servers whose leases are live; deletes expired
/// ones (their servers are gone).
async fn live_servers(state: &State) -> Result<Vec<(IpAddr, u16)>, StoreError> {
    let Some(leases) = skiff_api::registry::find("coordination.k8s.io", "v1", "leases") else { return Ok(Vec::new()) };
    let prefix = format!("{}kube-system/", leases.key_prefix());
    let listed = state.store.list(&prefix, ListOptions::default()).await?;
    let now = chrono::Utc::now();
    let mut live = Vec::new();
    for kv in listed.items {
        let Ok(lease) = serde_json::from_slice::<Value>(&kv.value) else { continue };
        if lease.pointer(&format!("/metadata/labels/{}", IDENTITY_LABEL.replace('/', "~1"))).and_then(Value::as_str) != Some("kube-apiserver") {
            continue;
        }
        let renewed = lease.pointer("/spec/renewTime").and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let duration = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(LEASE_SECONDS);
        let alive = renewed.is_some_and(|t| t.with_timezone(&chrono::Utc) + chrono::Duration::seconds(duration) > now);
        if !alive {
            let _ = state.store.delete(&kv.key, Some(kv.mod_revision)).await;
            continue;
        }
        let address = lease.pointer(&format!("/metadata/annotations/{}", ADDRESS_ANNOTATION.replace('/', "~1"))).and_then(Value::as_str);
        if let Some(addr) = address.and_then(|a| a.parse::<std::net::SocketAddr>().ok()) {
            live.push((addr.ip(), addr.port()));
        }
    }
    live.sort();
    live.dedup();
    Ok(live)
}

/// Writes the `kubernetes` Endpoints and EndpointSlice from the live
/// servers (one subset per port; the slice carries the first port's).
pub(crate) async fn reconcile(state: &State) -> Result<(), StoreError> {
    let live = live_servers(state).await?;
    if live.is_empty() {
        return Ok(());
    }
    let mut ports: Vec<u16> = live.iter().map(|(_, p)| *p).collect();
    ports.sort();
    ports.dedup();
    let subsets: Vec<Value> = ports
        .iter()
        .map(|port| {
            let addresses: Vec<Value> = live.iter().filter(|(_, p)| p == port).map(|(ip, _)| json!({"ip": ip.to_string()})).collect();
            json!({"addresses": addresses, "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
        })
        .collect();
    let first = ports[0];
    let slice_endpoints: Vec<Value> =
        live.iter().filter(|(_, p)| *p == first).map(|(ip, _)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect();
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if live.iter().all(|(ip, _)| ip.is_ipv4()) { "IPv4" } else { "IPv6" }, "endpoints": slice_endpoints,
        "ports": [{"name": "https", "port": first, "protocol": "TCP"}]});
    for (group, plural, mut obj) in [("", "endpoints", endpoints), ("discovery.k8s.io", "endpointslices", slice)] {
        let Some(rt) = skiff_api::registry::find(group, "v1", plural) else { continue };
        let key = rt.key(Some("default"), "kubernetes");
        match state.store.get(&key).await? {
            None => {
                obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                obj["metadata"]["creationTimestamp"] = json!(now());
                match state.store.create(&key, Bytes::from(obj.to_string())).await {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(cur) => {
                let old: Value = serde_json::from_slice(&cur.value).unwrap_or_default();
                let same = old.get("subsets") == obj.get("subsets") && old.get("endpoints") == obj.get("endpoints") && old.get("ports") == obj.get("ports");
                if !same {
                    obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
                    obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                    match state.store.update(&key, Bytes::from(obj.to_string()), cur.mod_revision).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}
