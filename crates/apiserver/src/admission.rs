//! What kube-apiserver's admission and registry strategies add to new
//! objects beyond defaulting: a Job's generated selector and labels, and a
//! Service's cluster IP and node ports, allocated from the service CIDR
//! (10.43.0.0/16, as k3s) and 30000–32767.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, FieldError, ResourceType};

use crate::handler::State;

/// First address of the service range; `.1` is the `kubernetes` Service's.
pub(crate) const SERVICE_CIDR_BASE: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 0);
const SERVICE_CIDR_SIZE: u32 = 1 << 16;
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// A claim that names no class gets the default StorageClass, as the
/// DefaultStorageClass admission plugin does (the newest one when several
/// are marked default). An explicit `""` asks for no class and is kept.
/// Every claim also gets the `kubernetes.io/pvc-protection` finalizer, as
/// StorageObjectInUseProtection adds it, so a claim deleted while a pod
/// uses it stays (Terminating) until no pod does.
pub(crate) fn persistent_volume_claim(state: &State, obj: &mut Value) {
    let fin = json!(skiff_api::storage::PVC_PROTECTION_FINALIZER);
    match obj.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
        Some(f) if f.contains(&fin) => {}
        Some(f) => f.push(fin),
        None => obj["metadata"]["finalizers"] = json!([fin]),
    }
    if obj.pointer("/spec/storageClassName").is_some_and(|c| !c.is_null()) {
        return;
    }
    let Some(rt) = skiff_api::registry::find("storage.k8s.io", "v1", "storageclasses") else { return };
    let snap = state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
    let default = snap
        .items
        .iter()
        .map(|o| o.object())
        .filter(|c| c.pointer("/metadata/annotations").and_then(|a| a.get(skiff_api::storage::DEFAULT_CLASS_ANNOTATION)).and_then(Value::as_str) == Some("true"))
        .max_by_key(|c| c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default().to_string());
    if let Some(name) = default.and_then(|c| c.pointer("/metadata/name").and_then(Value::as_str).map(String::from)) {
        obj["spec"]["storageClassName"] = json!(name);
    }
}

/// A Job without `manualSelector` selects its pods by its own uid.
pub(crate) fn job(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name});
    if let Some(l) = labels.as_object() {
        for (k, v) in l {
            obj["spec"]["template"]["metadata"]["labels"][k] = v.clone();
        }
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
}

/// Cluster IPs and node ports in use, from the watch cache.
fn in_use(state: &State, rt: &ResourceType) -> (HashSet<String>, HashSet<i64>) {
    let snap = state.cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for o in snap.items {
        let v = o.object();
        for ip in v.pointer("/spec/clusterIPs").and_then(Value::as_array).into_iter().flatten().chain(v.pointer("/spec/clusterIP")) {
            if let Some(s) = ip.as_str() {
                ips.insert(s.to_string());
            }
        }
        for p in v.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                ports.insert(n);
            }
        }
    }
    (ips, ports)
}

/// Gives a new Service its cluster IP and node ports. The caller holds
/// `state.allocations` until the Service is stored, so two creates never
/// get the same address (one API server; several would need a shared
/// allocator, as Kubernetes' IPAddress objects are).
pub(crate) async fn service(state: &State, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    state.cache.wait_for(state.cache.store_revision()).await.map_err(crate::watch::cache_error)?;
    let (ips, ports) = in_use(state, rt);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        match obj.pointer("/spec/clusterIP").and_then(Value::as_str) {
            Some("None") => obj["spec"]["clusterIPs"] = json!(["None"]),
            Some(ip) if !ip.is_empty() => {
                let parsed: Option<Ipv4Addr> = ip.parse().ok();
                let base = u32::from(SERVICE_CIDR_BASE);
                if parsed.is_none_or(|p| u32::from(p) < base || u32::from(p) >= base + SERVICE_CIDR_SIZE) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        vec![FieldError::invalid("spec.clusterIPs[0]", ip, "provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16")],
                    ));
                }
                if ips.contains(ip) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        vec![FieldError::invalid("spec.clusterIPs", ip, format!("failed to allocate IP {ip}: provided IP is already allocated"))],
                    ));
                }
                let ip = ip.to_string();
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            _ => {
                // Random, then linear: spreads addresses like the kube allocator.
                let start = (uuid::Uuid::new_v4().as_u128() as u32) % (SERVICE_CIDR_SIZE - 12) + 10;
                let pick = (0..SERVICE_CIDR_SIZE - 12)
                    .map(|i| Ipv4Addr::from(u32::from(SERVICE_CIDR_BASE) + 10 + (start - 10 + i) % (SERVICE_CIDR_SIZE - 12)).to_string())
                    .find(|ip| !ips.contains(ip))
                    .ok_or_else(|| ApiError::internal("the service IP range is full"))?;
                obj["spec"]["clusterIP"] = json!(pick);
                obj["spec"]["clusterIPs"] = json!([pick]);
            }
        }
        obj["spec"]["ipFamilies"] = json!(["IPv4"]);
        if obj.pointer("/spec/ipFamilyPolicy").is_none() {
            obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let mut taken = ports;
        if let Some(list) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for (i, p) in list.iter_mut().enumerate() {
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(n) if !NODE_PORTS.contains(&n) => {
                        return Err(ApiError::invalid(
                            rt,
                            &name,
                            vec![FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                n,
                                "provided port is not in the valid range. The range of valid ports is 30000-32767",
                            )],
                        ));
                    }
                    Some(n) if taken.contains(&n) => {
                        return Err(ApiError::invalid(
                            rt,
                            &name,
                            vec![FieldError::invalid(format!("spec.ports[{i}].nodePort"), n, "provided port is already allocated")],
                        ));
                    }
                    Some(n) => {
                        taken.insert(n);
                    }
                    None => {
                        let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
                        let start = (uuid::Uuid::new_v4().as_u128() % span as u128) as i64;
                        let n = (0..span)
                            .map(|k| NODE_PORTS.start() + (start + k) % span)
                            .find(|n| !taken.contains(n))
                            .ok_or_else(|| ApiError::internal("no free node port"))?;
                        taken.insert(n);
                        p["nodePort"] = json!(n);
                    }
                }
            }
        }
    }
    Ok(())
}
