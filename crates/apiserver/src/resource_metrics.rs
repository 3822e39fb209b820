//! `metrics.k8s.io/v1beta1`, what `kubectl top node|pod` reads. In a
//! Kubernetes cluster metrics-server answers it as an aggregated API,
//! scraping every kubelet; skiff answers it in the API server, asking the
//! kubelets' `/stats/summary` when a request comes (nothing is scraped
//! while nobody asks).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::ApiError;

use crate::handler::State;
use crate::respond::{json_response, Resp};

/// The group and version served.
pub(crate) const GROUP_VERSION: &str = "metrics.k8s.io/v1beta1";
/// How long one kubelet may take to answer before it is left out.
const KUBELET_TIMEOUT: Duration = Duration::from_secs(5);

/// The window CPU usage is averaged over. The kubelet's rate spans the
/// time since the previous summary (≤ 60 s) or a fresh quarter second;
/// metrics-server's default resolution is reported, as clients expect one.
const WINDOW: &str = "10s";

/// Quantities as metrics-server writes them: CPU in nanocores, memory in KiB.
fn usage(stats: &Value) -> Value {
    let cpu = stats["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
    let mem = stats["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", mem / 1024)})
}

fn cached(state: &State, plural: &str, prefix_ns: Option<&str>, labels: &LabelSelector) -> Vec<Value> {
    let Some(rt) = skiff_api::registry::find("", "v1", plural) else { return Vec::new() };
    let prefix = match prefix_ns {
        Some(ns) => format!("{}{ns}/", rt.key_prefix()),
        None => rt.key_prefix(),
    };
    state.cache.list(rt, &prefix, labels, &FieldSelector::default(), 0).items.iter().map(|c| c.object()).collect()
}

/// Every node's summary (nodes that do not answer in time are left out, as
/// metrics-server leaves out nodes it could not scrape).
async fn summaries(state: &State, nodes: &[Value]) -> HashMap<String, Value> {
    let asks = nodes.iter().map(|n| async move {
        let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
        let (ip, port) = crate::proxy::kubelet_address(n);
        let got = tokio::time::timeout(KUBELET_TIMEOUT, crate::proxy::kubelet_get(state, &ip, port, "/stats/summary")).await;
        match got {
            Ok(Ok(body)) => serde_json::from_slice::<Value>(&body).ok().map(|v| (name, v)),
            Ok(Err(e)) => {
                tracing::debug!(node = %name, error = %e.message, "no stats from the kubelet");
                None
            }
            Err(_) => None,
        }
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

fn meta(obj: &Value, now: &str) -> Value {
    let mut m = json!({"name": obj["metadata"]["name"], "creationTimestamp": now});
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        m["namespace"] = json!(ns);
    }
    if let Some(l) = obj["metadata"]["labels"].as_object() {
        m["labels"] = json!(l);
    }
    m
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::new(404, "NotFound", format!("{kind}.metrics.k8s.io \"{name}\" not found"))
}

/// Serves `GET /apis/metrics.k8s.io/v1beta1/{rest}`.
pub(crate) async fn serve(state: &State, rest: &[&str], query: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let now = crate::respond::now();
    match rest {
        ["nodes"] | ["nodes", _] => {
            let nodes = cached(state, "nodes", None, &labels);
            let nodes: Vec<Value> = match rest {
                [_, name] => nodes.into_iter().filter(|n| n["metadata"]["name"] == *name).collect(),
                _ => nodes,
            };
            let stats = summaries(state, &nodes).await;
            let items: Vec<Value> = nodes
                .iter()
                .filter_map(|n| {
                    let s = stats.get(n["metadata"]["name"].as_str()?)?;
                    Some(json!({"metadata": meta(n, &now), "timestamp": s["node"]["cpu"]["time"], "window": WINDOW, "usage": usage(&s["node"])}))
                })
                .collect();
            match rest {
                [_, name] => {
                    let mut one = items.into_iter().next().ok_or_else(|| not_found("nodemetrics", name))?;
                    one["kind"] = json!("NodeMetrics");
                    one["apiVersion"] = json!(GROUP_VERSION);
                    Ok(json_response(200, &one))
                }
                _ => Ok(json_response(200, &json!({"kind": "NodeMetricsList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}))),
            }
        }
        ["pods"] | ["namespaces", _, "pods"] | ["namespaces", _, "pods", _] => {
            let ns = match rest {
                ["namespaces", ns, ..] => Some(*ns),
                _ => None,
            };
            let mut pods = cached(state, "pods", ns, &labels);
            if let ["namespaces", _, "pods", name] = rest {
                pods.retain(|p| p["metadata"]["name"] == *name);
            }
            pods.retain(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) && p["status"]["phase"] == "Running");
            let node_names: std::collections::HashSet<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
            let nodes: Vec<Value> = cached(state, "nodes", None, &LabelSelector::default())
                .into_iter()
                .filter(|n| n["metadata"]["name"].as_str().is_some_and(|name| node_names.contains(name)))
                .collect();
            let stats = summaries(state, &nodes).await;
            let by_uid: HashMap<&str, &Value> =
                stats.values().flat_map(|s| s["pods"].as_array().into_iter().flatten()).filter_map(|p| Some((p["podRef"]["uid"].as_str()?, p))).collect();
            let items: Vec<Value> = pods
                .iter()
                .filter_map(|p| {
                    let s = by_uid.get(p["metadata"]["uid"].as_str()?)?;
                    let containers: Vec<Value> =
                        s["containers"].as_array().into_iter().flatten().map(|c| json!({"name": c["name"], "usage": usage(c)})).collect();
                    Some(json!({"metadata": meta(p, &now), "timestamp": s["cpu"]["time"], "window": WINDOW, "containers": containers}))
                })
                .collect();
            match rest {
                ["namespaces", _, "pods", name] => {
                    let mut one = items.into_iter().next().ok_or_else(|| not_found("podmetrics", name))?;
                    one["kind"] = json!("PodMetrics");
                    one["apiVersion"] = json!(GROUP_VERSION);
                    Ok(json_response(200, &one))
                }
                _ => Ok(json_response(200, &json!({"kind": "PodMetricsList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}))),
            }
        }
        _ => Err(ApiError::no_such_path()),
    }
}
