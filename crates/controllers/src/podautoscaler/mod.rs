//! The horizontal pod autoscaler (kube-controller-manager's
//! `horizontalpodautoscaling`): every 15 s, and when an HPA changes, it
//! reads the target's `scale` subresource, the usage of the pods its
//! selector picks from `metrics.k8s.io`, and their requests, and sets the
//! replicas as kube does for Resource metrics: utilization (or the average
//! value) against the target, a 10 % tolerance, the recommendation
//! stabilized over the behavior's windows (scale-down 300 s by default),
//! the scale-up and scale-down policies, then `minReplicas`/`maxReplicas`.
//! Its status carries the current metrics and the AbleToScale,
//! ScalingActive and ScalingLimited conditions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

/// kube's `--horizontal-pod-autoscaler-sync-period`.
const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// kube's `--horizontal-pod-autoscaler-tolerance`.
const TOLERANCE: f64 = 0.1;

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    /// Recommendations per HPA (uid): when, how many.
    history: Mutex<HashMap<String, Vec<(Instant, i32)>>>,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx { client: client.clone(), pods: informers.pods.store(), history: Mutex::default() });
    Controller::new(Api::<HorizontalPodAutoscaler>::all(client), watcher::Config::default())
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The path of a scale target's `scale` subresource.
fn scale_path(ns: &str, target: &Value) -> Option<String> {
    let kind = target.get("kind")?.as_str()?;
    let api_version = target.get("apiVersion").and_then(Value::as_str).unwrap_or("apps/v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let rt = skiff_api::RESOURCES.iter().find(|r| r.kind == kind && r.group == group && r.version == version && r.scale)?;
    let name = target.get("name")?.as_str()?;
    let base = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    Some(format!("{base}/namespaces/{ns}/{}/{name}/scale", rt.plural))
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" }, "reason": reason, "message": message,
           "lastTransitionTime": skiff_runtime::now()})
}

/// What one metric asks for.
struct Reading {
    /// The replicas it recommends.
    replicas: i32,
    /// Its `currentMetrics` entry.
    status: Value,
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let uid = hpa.metadata.uid.clone().unwrap_or_default();
    let obj = serde_json::to_value(&*hpa).map_err(|e| Error::Invalid(e.to_string()))?;
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1) as i32;
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(1) as i32;
    let mut status = obj.get("status").cloned().unwrap_or(json!({}));
    let mut conditions: Vec<Value> = Vec::new();
    let Some(path) = scale_path(&ns, spec.get("scaleTargetRef").unwrap_or(&Value::Null)) else {
        conditions.push(condition("AbleToScale", false, "FailedGetScale", "the HPA controller was unable to get the target's current scale: no scale subresource for the target"));
        return write_status(&ctx, &obj, status, conditions).await;
    };
    let get = http::Request::get(&path).body(Vec::new()).map_err(|e| Error::Invalid(e.to_string()))?;
    let scale: Value = match ctx.client.request(get).await {
        Ok(s) => s,
        Err(e) => {
            conditions.push(condition("AbleToScale", false, "FailedGetScale", &format!("the HPA controller was unable to get the target's current scale: {e}")));
            return write_status(&ctx, &obj, status, conditions).await;
        }
    };
    let current = scale.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0) as i32;
    let selector = scale.pointer("/status/selector").and_then(Value::as_str).unwrap_or_default().to_string();
    status["currentReplicas"] = json!(current);
    // Scaled to zero by hand: autoscaling is off, as in kube.
    if current == 0 && min > 0 {
        status["desiredReplicas"] = json!(0);
        conditions.push(condition("ScalingActive", false, "ScalingDisabled", "scaling is disabled since the replica count of the target is zero"));
        return write_status(&ctx, &obj, status, conditions).await;
    }
    let readings = read_metrics(&ctx, &ns, &selector, &spec, current).await;
    let (mut proposal, metrics_status) = match readings {
        Ok(r) if !r.is_empty() => (r.iter().map(|r| r.replicas).max().unwrap_or(current), r.into_iter().map(|r| r.status).collect::<Vec<_>>()),
        Ok(_) | Err(_) => {
            let why = readings_error(&ctx, &ns, &selector);
            conditions.push(condition("ScalingActive", false, "FailedGetResourceMetric", &why));
            conditions.push(condition("AbleToScale", true, "SucceededGetScale", "the HPA controller was able to get the target's current scale"));
            return write_status(&ctx, &obj, status, conditions).await;
        }
    };
    conditions.push(condition("ScalingActive", true, "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"));
    status["currentMetrics"] = json!(metrics_status);
    proposal = {
        let mut history = ctx.history.lock().unwrap_or_else(|e| e.into_inner());
        stabilize(history.entry(uid.clone()).or_default(), Instant::now(), &spec, current, proposal)
    };
    let desired = proposal.clamp(min.max(1), max.max(1));
    let limited = desired != proposal;
    conditions.push(if limited {
        let reason = if proposal > max { "TooManyReplicas" } else { "TooFewReplicas" };
        condition("ScalingLimited", true, reason, &format!("the desired replica count is {} the {} replica count", if proposal > max { "more than" } else { "less than" }, if proposal > max { "maximum" } else { "minimum" }))
    } else {
        condition("ScalingLimited", false, "DesiredWithinRange", "the desired count is within the acceptable range")
    });
    status["desiredReplicas"] = json!(desired);
    if desired != current {
        let mut next = scale.clone();
        next["spec"]["replicas"] = json!(desired);
        let put = http::Request::put(&path)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&next).map_err(|e| Error::Invalid(e.to_string()))?)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        match ctx.client.request::<Value>(put).await {
            Ok(_) => {
                tracing::info!(hpa = %format!("{ns}/{name}"), from = current, to = desired, "rescaled");
                status["lastScaleTime"] = json!(skiff_runtime::now());
                conditions.push(condition("AbleToScale", true, "SucceededRescale", &format!("the HPA controller was able to update the target scale to {desired}")));
            }
            Err(e) => conditions.push(condition("AbleToScale", false, "FailedUpdateScale", &format!("the HPA controller was unable to update the target scale: {e}"))),
        }
    } else {
        conditions.push(condition("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size"));
    }
    write_status(&ctx, &obj, status, conditions).await
}

/// Why no metric could be read (kube's wording).
fn readings_error(ctx: &Ctx, ns: &str, selector: &str) -> String {
    let pods = selected(ctx, ns, selector);
    if pods.is_empty() {
        "the HPA was unable to compute the replica count: no pods matched the scale target's selector".into()
    } else {
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API".into()
    }
}

fn selected(ctx: &Ctx, ns: &str, selector: &str) -> Vec<Arc<Pod>> {
    let Ok(sel) = skiff_api::selector::LabelSelector::parse(selector) else { return Vec::new() };
    ctx.pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let labels: serde_json::Map<String, Value> = p.metadata.labels.iter().flatten().map(|(k, v)| (k.clone(), json!(v))).collect();
            sel.matches_map(&labels)
        })
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

/// Each Resource metric's recommendation, from the pods' usage and requests.
async fn read_metrics(ctx: &Ctx, ns: &str, selector: &str, spec: &Value, current: i32) -> Result<Vec<Reading>, Error> {
    let pods = selected(ctx, ns, selector);
    let query = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair("labelSelector", selector).finish());
    let req = http::Request::get(&query).body(Vec::new()).map_err(|e| Error::Invalid(e.to_string()))?;
    let list: Value = ctx.client.request(req).await?;
    // Usage per pod name, per resource (milli-units).
    let mut usage: HashMap<String, BTreeMap<String, i128>> = HashMap::new();
    for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let entry = usage.entry(name).or_default();
        for c in item.get("containers").and_then(Value::as_array).into_iter().flatten() {
            for (res, q) in c.get("usage").and_then(Value::as_object).into_iter().flatten() {
                *entry.entry(res.clone()).or_default() += q.as_str().and_then(skiff_api::quantity::parse_milli).unwrap_or(0);
            }
        }
    }
    let mut out = Vec::new();
    for m in spec.get("metrics").and_then(Value::as_array).into_iter().flatten() {
        if m.get("type").and_then(Value::as_str) != Some("Resource") {
            continue;
        }
        let res = m.pointer("/resource/name").and_then(Value::as_str).unwrap_or("cpu");
        let target = m.pointer("/resource/target").cloned().unwrap_or(json!({}));
        let (mut used, mut requested, mut counted) = (0i128, 0i128, 0i32);
        for p in &pods {
            let Some(u) = usage.get(p.metadata.name.as_deref().unwrap_or_default()).and_then(|u| u.get(res)) else { continue };
            used += u;
            counted += 1;
            requested += p
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .filter_map(|c| c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(res)))
                .map(|q| skiff_api::quantity::parse_milli(&q.0).unwrap_or(0))
                .sum::<i128>();
        }
        if counted == 0 {
            continue;
        }
        if let Some(util) = target.get("averageUtilization").and_then(Value::as_i64) {
            if requested <= 0 {
                continue; // kube: "missing request for cpu"
            }
            let now = (used * 100 / requested) as i64;
            let ratio = now as f64 / util as f64;
            let replicas = if (ratio - 1.0).abs() <= TOLERANCE { current } else { (ratio * f64::from(counted)).ceil() as i32 };
            let avg = skiff_api::quota::show(res, used / i128::from(counted));
            out.push(Reading {
                replicas,
                status: json!({"type": "Resource", "resource": {"name": res, "current": {"averageUtilization": now, "averageValue": avg}}}),
            });
        } else if let Some(want) = target.get("averageValue").and_then(Value::as_str).and_then(skiff_api::quantity::parse_milli).filter(|w| *w > 0) {
            let ratio = used as f64 / (want as f64 * f64::from(counted));
            let replicas = if (ratio - 1.0).abs() <= TOLERANCE { current } else { (used as f64 / want as f64).ceil() as i32 };
            out.push(Reading {
                replicas,
                status: json!({"type": "Resource", "resource": {"name": res, "current": {"averageValue": skiff_api::quota::show(res, used / i128::from(counted))}}}),
            });
        }
    }
    Ok(out)
}

/// kube's behavior: the recommendation stabilized over each direction's
/// window (the highest of the scale-down window's, the lowest of the
/// scale-up window's), then limited by the direction's policies.
fn stabilize(h: &mut Vec<(Instant, i32)>, now: Instant, spec: &Value, current: i32, proposal: i32) -> i32 {
    let rules = |dir: &str, window: i64| {
        let r = spec.pointer(&format!("/behavior/{dir}")).cloned().unwrap_or(json!({}));
        let w = r.get("stabilizationWindowSeconds").and_then(Value::as_i64).unwrap_or(window);
        (Duration::from_secs(w.max(0) as u64), r)
    };
    let (down_window, down) = rules("scaleDown", 300);
    let (up_window, up) = rules("scaleUp", 0);
    h.push((now, proposal));
    let keep = down_window.max(up_window);
    h.retain(|(at, _)| now.duration_since(*at) <= keep);
    let within = |w: Duration| h.iter().filter(move |(at, _)| now.duration_since(*at) <= w).map(|(_, r)| *r);
    let up_limit = within(up_window).min().unwrap_or(proposal);
    let down_limit = within(down_window).max().unwrap_or(proposal);
    let stable = if proposal > current { up_limit.max(current) } else { down_limit.min(current) };
    // The policies: how far one step may go (the default: scale-up
    // max(+4 pods, +100 %), scale-down −100 %).
    let step = |r: &Value, up: bool| -> i32 {
        let policies = r.get("policies").and_then(Value::as_array).cloned().unwrap_or_else(|| {
            if up {
                vec![json!({"type": "Pods", "value": 4}), json!({"type": "Percent", "value": 100})]
            } else {
                vec![json!({"type": "Percent", "value": 100})]
            }
        });
        let limits: Vec<i32> = policies
            .iter()
            .map(|p| {
                let v = p.get("value").and_then(Value::as_i64).unwrap_or(0) as i32;
                match p.get("type").and_then(Value::as_str) {
                    Some("Percent") => (f64::from(current) * f64::from(v) / 100.0).ceil() as i32,
                    _ => v,
                }
            })
            .collect();
        match r.get("selectPolicy").and_then(Value::as_str) {
            Some("Disabled") => 0,
            Some("Min") => limits.into_iter().min().unwrap_or(0),
            _ => limits.into_iter().max().unwrap_or(0),
        }
    };
    if stable > current {
        stable.min(current + step(&up, true))
    } else if stable < current {
        stable.max(current - step(&down, false))
    } else {
        stable
    }
}

/// Writes `status` with `conditions` over the HPA (`hpa`, as JSON) when it changed.
async fn write_status(ctx: &Ctx, hpa: &Value, mut status: Value, conditions: Vec<Value>) -> Result<Action, Error> {
    // A condition keeps its transition time while its status stays.
    let old = hpa.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|mut c| {
            if let Some(prev) = old.iter().find(|o| o.get("type") == c.get("type") && o.get("status") == c.get("status")) {
                c["lastTransitionTime"] = prev.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
            }
            c
        })
        .collect();
    status["conditions"] = json!(conditions);
    status["observedGeneration"] = hpa.pointer("/metadata/generation").cloned().unwrap_or(Value::Null);
    if hpa.get("status") == Some(&status) {
        return Ok(Action::requeue(SYNC_PERIOD));
    }
    let mut next = hpa.clone();
    next["status"] = status;
    let next: HorizontalPodAutoscaler = serde_json::from_value(next).map_err(|e| Error::Invalid(e.to_string()))?;
    let text = |p: &str| hpa.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &text("/metadata/namespace"));
    match api.replace_status(&text("/metadata/name"), &PostParams::default(), &next).await {
        Ok(_) => Ok(Action::requeue(SYNC_PERIOD)),
        Err(e) if crate::util::is_conflict(&e) => Ok(Action::requeue(Duration::from_millis(200))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_down_waits_out_its_window_and_scale_up_is_limited_by_policy() {
        let spec = json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}});
        let mut h = Vec::new();
        let t0 = Instant::now();
        assert_eq!(stabilize(&mut h, t0, &spec, 2, 20), 6, "up: max(+4, +100 %) from 2");
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(10), &spec, 6, 1), 6, "down: the window still holds 20");
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(80), &spec, 6, 1), 1, "the window passed");
        let none = json!({});
        let mut h = Vec::new();
        assert_eq!(stabilize(&mut h, t0, &none, 4, 4), 4);
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(200), &none, 4, 2), 4, "the default scale-down window is 300 s");
        assert_eq!(stabilize(&mut h, t0 + Duration::from_secs(301), &none, 4, 2), 2);
    }

    #[test]
    fn a_scale_target_maps_to_its_scale_subresource() {
        let t = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
        assert_eq!(scale_path("ns", &t).as_deref(), Some("/apis/apps/v1/namespaces/ns/deployments/web/scale"));
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "name": "rc"});
        assert_eq!(scale_path("ns", &rc).as_deref(), Some("/api/v1/namespaces/ns/replicationcontrollers/rc/scale"));
        assert_eq!(scale_path("ns", &json!({"apiVersion": "v1", "kind": "Pod", "name": "p"})), None, "pods have no scale");
    }
}
