//! One scheduling cycle: filter nodes (stopping once enough feasible nodes
//! are found, as kube-scheduler's percentageOfNodesToScore does), score
//! them with the default profile's weights, pick the best.

use std::collections::BTreeMap;

use rand::Rng;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::plugins::{
    balanced_allocation, inter_pod_affinity, node_affinity, node_ports, node_resources_fit, node_unschedulable, pod_topology_spread, taint_toleration,
    volume_binding,
};

/// Why no node fits: failure reason → number of nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes were considered.
    pub nodes: usize,
    /// Reason → node count.
    pub reasons: BTreeMap<String, usize>,
    /// Why no node was even looked at (a PreFilter rejection).
    pub prefilter: Option<String>,
}

impl std::fmt::Display for FitError {
    /// `0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}.`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.prefilter {
            return write!(f, "0/{} nodes are available: {why}.", self.nodes);
        }
        let mut parts: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        if parts.is_empty() {
            write!(f, "0/{} nodes are available.", self.nodes)
        } else {
            write!(f, "0/{} nodes are available: {}.", self.nodes, parts.join(", "))
        }
    }
}

/// Per-cycle state computed once for the incoming pod.
struct Cycle {
    volumes: Vec<std::sync::Arc<k8s_openapi::api::core::v1::PersistentVolume>>,
    affinity: Option<inter_pod_affinity::Precomputed>,
    spread: Option<pod_topology_spread::Precomputed>,
}

/// Runs the filters in the default profile's order; the first failing
/// plugin's reasons count.
fn filter(pod: &PodInfo, node: &NodeInfo, cycle: &Cycle) -> Result<(), Vec<String>> {
    node_unschedulable::filter(&pod.pod, node)?;
    taint_toleration::filter(&pod.pod, node)?;
    node_affinity::filter(&pod.pod, &node.node)?;
    node_ports::filter(pod, node)?;
    volume_binding::filter(&cycle.volumes, &node.node)?;
    node_resources_fit::filter(pod, node)?;
    if let Some(s) = &cycle.spread {
        pod_topology_spread::filter(s, node)?;
    }
    if let Some(a) = &cycle.affinity {
        inter_pod_affinity::filter(a, node)?;
    }
    Ok(())
}

/// How many feasible nodes to find before scoring (kube-scheduler's
/// adaptive percentage: 50% minus 1% per 125 nodes, at least 5%, at least 100).
fn feasible_to_find(n: usize) -> usize {
    if n <= 100 {
        return n;
    }
    let pct = (50i64 - (n as i64) / 125).max(5) as usize;
    (n * pct / 100).max(100)
}

/// Scales raw scores to 0–100 (reversed when lower is better).
fn normalize(raw: &mut [i64], reverse: bool) {
    let (min, max) = (raw.iter().copied().min().unwrap_or(0), raw.iter().copied().max().unwrap_or(0));
    for s in raw.iter_mut() {
        let v = if max == min {
            if reverse {
                100
            } else if max == 0 {
                0
            } else {
                100
            }
        } else {
            (*s - min) * 100 / (max - min)
        };
        *s = if reverse && max != min { 100 - v } else { v };
    }
}

/// Picks a node for `pod`, or explains why none fits. `start` rotates
/// where the search begins, so successive pods spread the work.
pub fn schedule(pod: &PodInfo, cache: &Cache, start: &mut usize, cluster_has_anti: bool, volumes: &volume_binding::Volumes) -> Result<String, FitError> {
    let n = cache.nodes.len();
    if n == 0 {
        return Err(FitError { nodes: 0, ..Default::default() });
    }
    let volumes = volume_binding::prefilter(&pod.pod, volumes).map_err(|why| FitError { nodes: n, reasons: BTreeMap::new(), prefilter: Some(why) })?;
    let cycle = Cycle {
        volumes,
        affinity: inter_pod_affinity::relevant(pod, cluster_has_anti).then(|| inter_pod_affinity::precompute(pod, cache)),
        spread: (!pod_topology_spread::constraints(pod).is_empty()).then(|| pod_topology_spread::precompute(pod, cache)),
    };
    let want = feasible_to_find(n);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want);
    let mut err = FitError { nodes: n, ..Default::default() };
    let mut checked = 0;
    for k in 0..n {
        let node = &cache.nodes[(*start + k) % n];
        checked += 1;
        match filter(pod, node, &cycle) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(reasons) => {
                for r in reasons {
                    *err.reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    *start = (*start + checked) % n;
    if feasible.is_empty() {
        return Err(err);
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].name().to_string());
    }
    // Default profile weights: NodeResourcesFit 1, BalancedAllocation 1,
    // TaintToleration 3, NodeAffinity 2, InterPodAffinity 2, PodTopologySpread 2.
    let mut fit: Vec<i64> = feasible.iter().map(|nd| node_resources_fit::score(pod, nd)).collect();
    let balanced: Vec<i64> = feasible.iter().map(|nd| balanced_allocation::score(pod, nd)).collect();
    let mut taints: Vec<i64> = feasible.iter().map(|nd| taint_toleration::score(&pod.pod, nd)).collect();
    normalize(&mut taints, true);
    let mut affinity: Vec<i64> = feasible.iter().map(|nd| node_affinity::score(&pod.pod, &nd.node)).collect();
    normalize(&mut affinity, false);
    let mut inter: Vec<i64> = match &cycle.affinity {
        Some(a) => feasible.iter().map(|nd| inter_pod_affinity::score(a, nd)).collect(),
        None => vec![0; feasible.len()],
    };
    normalize(&mut inter, false);
    let mut spread: Vec<i64> = match &cycle.spread {
        Some(s) => feasible.iter().map(|nd| pod_topology_spread::score(s, nd)).collect(),
        None => vec![0; feasible.len()],
    };
    normalize(&mut spread, true);
    for (i, f) in fit.iter_mut().enumerate() {
        *f += balanced[i] + 3 * taints[i] + 2 * affinity[i] + 2 * inter[i] + 2 * spread[i];
    }
    // Highest total; ties broken at random (reservoir sampling).
    let mut rng = rand::rng();
    let (mut best, mut best_score, mut ties) = (0, i64::MIN, 0u32);
    for (i, s) in fit.iter().enumerate() {
        if *s > best_score {
            (best, best_score, ties) = (i, *s, 1);
        } else if *s == best_score {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    Ok(feasible[best].name().to_string())
}

/// The priority of a pod (0 when unset).
pub fn priority(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// DefaultPreemption: when `pod` fits nowhere, finds the node where
/// removing the fewest, lowest-priority pods (all of lower priority than
/// `pod`) lets it fit — after giving back every victim that is not needed.
/// Only nodes that fail for reasons preemption can fix (resources, ports)
/// are considered. Returns the node and the victims.
pub fn preempt(pod: &PodInfo, cache: &Cache) -> Option<(String, Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>>)> {
    let prio = priority(&pod.pod);
    if pod.pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return None;
    }
    let fits = |node: &NodeInfo| node_ports::filter(pod, node).is_ok() && node_resources_fit::filter(pod, node).is_ok();
    let mut best: Option<(i32, usize, String, Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>>)> = None;
    for node in &cache.nodes {
        if node_unschedulable::filter(&pod.pod, node).is_err()
            || taint_toleration::filter(&pod.pod, node).is_err()
            || node_affinity::filter(&pod.pod, &node.node).is_err()
        {
            continue;
        }
        let mut lower: Vec<(String, PodInfo)> = node.pods.iter().filter(|(_, p)| priority(&p.pod) < prio).map(|(u, p)| (u.clone(), p.clone())).collect();
        if lower.is_empty() {
            continue;
        }
        let mut sim = node.clone();
        for (uid, _) in &lower {
            sim.remove(uid);
        }
        if !fits(&sim) {
            continue;
        }
        // Give back the most important pods first while the pod still fits.
        lower.sort_by_key(|(_, p)| std::cmp::Reverse(priority(&p.pod)));
        let mut victims = Vec::new();
        for (uid, p) in lower {
            sim.add(uid.clone(), p.clone());
            if !fits(&sim) {
                sim.remove(&uid);
                victims.push(p.pod.clone());
            }
        }
        let top = victims.iter().map(|v| priority(v)).max().unwrap_or(i32::MIN);
        let better = best.as_ref().is_none_or(|(bt, bn, _, _)| (top, victims.len()) < (*bt, *bn));
        if better {
            best = Some((top, victims.len(), node.name().to_string(), victims));
        }
    }
    best.map(|(_, _, node, victims)| (node, victims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;
    use std::sync::Arc;

    fn node(name: &str, cpu: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                if k == "labels" {
                    for (lk, lv) in v.as_object().into_iter().flatten() {
                        n["metadata"]["labels"][lk] = lv.clone();
                    }
                } else {
                    n["spec"][k] = v.clone();
                }
            }
        }
        serde_json::from_value(n).expect("node")
    }

    fn pod(spec: serde_json::Value, labels: serde_json::Value) -> PodInfo {
        let mut s = json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]});
        for (k, v) in spec.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default", "uid": "u-new", "labels": labels}, "spec": s})).expect("pod"),
        ))
    }

    fn cache(nodes: Vec<Node>) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.upsert_node(Arc::new(n));
        }
        c
    }

    fn place(c: &mut Cache, node: &str, uid: &str, labels: serde_json::Value, cpu: &str) {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": uid, "namespace": "default", "uid": uid, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
        .expect("pod");
        c.add_pod(node, Arc::new(p));
    }

    #[test]
    fn failure_message_has_kubernetes_shape() {
        let c = cache(vec![
            node("a", "500m", json!({})),
            node("b", "500m", json!({})),
            node("c", "500m", json!({})),
            node("d", "8", json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]})),
            node("e", "8", json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]})),
        ]);
        let err = schedule(&pod(json!({}), json!({})), &c, &mut 0, false, &volume_binding::Volumes::none()).expect_err("nothing fits");
        assert_eq!(err.to_string(), "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu.");
    }

    #[test]
    fn resources_and_least_allocated_pick_the_emptier_node() {
        let mut c = cache(vec![node("busy", "4", json!({})), node("idle", "4", json!({}))]);
        place(&mut c, "busy", "x", json!({}), "2");
        assert_eq!(schedule(&pod(json!({}), json!({})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("idle".to_string()));
        place(&mut c, "idle", "y", json!({}), "3500m");
        assert_eq!(schedule(&pod(json!({}), json!({})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("busy".to_string()));
    }

    #[test]
    fn node_selector_and_tolerations_place_pods() {
        let c = cache(vec![
            node("plain", "8", json!({})),
            node("gpu", "8", json!({"labels": {"accel": "gpu"}, "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]})),
        ]);
        let p = pod(json!({"nodeSelector": {"accel": "gpu"}}), json!({}));
        let err = schedule(&p, &c, &mut 0, false, &volume_binding::Volumes::none()).expect_err("taint not tolerated");
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}."
        );
        let p = pod(
            json!({"nodeSelector": {"accel": "gpu"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
            json!({}),
        );
        assert_eq!(schedule(&p, &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("gpu".to_string()));
    }

    #[test]
    fn required_anti_affinity_keeps_replicas_apart() {
        let mut c = cache(vec![node("a", "8", json!({})), node("b", "8", json!({}))]);
        place(&mut c, "a", "w1", json!({"app": "web"}), "1");
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        assert_eq!(schedule(&pod(anti.clone(), json!({"app": "web"})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
        place(&mut c, "b", "w2", json!({"app": "web"}), "1");
        let err = schedule(&pod(anti, json!({"app": "web"})), &c, &mut 0, false, &volume_binding::Volumes::none()).expect_err("no room");
        assert_eq!(err.to_string(), "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.");
    }

    #[test]
    fn required_affinity_follows_the_target() {
        let mut c = cache(vec![node("a", "8", json!({})), node("b", "8", json!({}))]);
        place(&mut c, "b", "db", json!({"app": "db"}), "1");
        let aff = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        assert_eq!(schedule(&pod(aff, json!({"app": "web"})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
    }

    #[test]
    fn host_ports_are_exclusive() {
        let mut c = cache(vec![node("a", "8", json!({}))]);
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "default", "uid": "x"},
            "spec": {"nodeName": "a", "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}))
        .expect("pod");
        c.add_pod("a", Arc::new(p));
        let want = pod(json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}), json!({}));
        assert_eq!(
            schedule(&want, &c, &mut 0, false, &volume_binding::Volumes::none()).expect_err("port taken").to_string(),
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
        );
    }

    #[test]
    fn topology_spread_limits_skew() {
        let zone = |z: &str| json!({"labels": {"zone": z}});
        let mut c = cache(vec![node("a", "8", zone("z1")), node("b", "8", zone("z2"))]);
        place(&mut c, "a", "w1", json!({"app": "web"}), "1");
        let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        assert_eq!(schedule(&pod(spread, json!({"app": "web"})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
    }

    #[test]
    fn preemption_evicts_the_fewest_lowest_priority_pods() {
        let mut c = cache(vec![node("a", "2", json!({})), node("b", "2", json!({}))]);
        let low = |c: &mut Cache, node: &str, uid: &str, prio: i32, cpu: &str| {
            let p: Pod = serde_json::from_value(json!({"metadata": {"name": uid, "namespace": "default", "uid": uid},
                "spec": {"nodeName": node, "priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
            .expect("pod");
            c.add_pod(node, Arc::new(p));
        };
        low(&mut c, "a", "a1", 0, "1");
        low(&mut c, "a", "a2", 0, "1");
        low(&mut c, "b", "b1", 500, "1");
        low(&mut c, "b", "b2", 10, "1");
        let want = pod(json!({"priority": 1000}), json!({}));
        assert!(schedule(&want, &c, &mut 0, false, &volume_binding::Volumes::none()).is_err(), "both nodes are full");
        // On a, one priority-0 pod is enough; b's cheapest victim has priority 10.
        let (node, victims) = preempt(&want, &c).expect("a victim");
        assert_eq!(node, "a");
        assert_eq!(victims.len(), 1);
        let nobody = pod(json!({"priority": 0}), json!({}));
        assert!(preempt(&nobody, &c).is_none(), "no one has lower priority");
        let never = pod(json!({"priority": 1000, "preemptionPolicy": "Never"}), json!({}));
        assert!(preempt(&never, &c).is_none());
    }

    #[test]
    fn balanced_allocation_prefers_even_use_of_cpu_and_memory() {
        let n = |cpu: &str, mem: &str| -> NodeInfo {
            let mut c =
                cache(vec![serde_json::from_value(json!({"metadata": {"name": "x"}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "10"}}}))
                    .expect("node")]);
            c.nodes.remove(0)
        };
        let p = pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}), json!({}));
        // 1 CPU of 2 and 1Gi of 2Gi: perfectly balanced. 1 of 2 and 1Gi of 64Gi: not.
        assert_eq!(balanced_allocation::score(&p, &n("2", "2Gi")), 100);
        assert!(balanced_allocation::score(&p, &n("2", "64Gi")) < 80);
        // LeastAllocated: more free room scores higher.
        assert!(node_resources_fit::score(&p, &n("16", "64Gi")) > node_resources_fit::score(&p, &n("2", "2Gi")));
    }

    #[test]
    fn preferences_steer_the_choice() {
        // Preferred node affinity.
        let c = cache(vec![node("a", "8", json!({})), node("b", "8", json!({"labels": {"disk": "ssd"}}))]);
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}),
            json!({}),
        );
        assert_eq!(node_affinity::score(&p.pod, &c.nodes[1].node), 50);
        assert_eq!(schedule(&p, &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
        // PreferNoSchedule taints are avoided when something else fits.
        let c = cache(vec![node("a", "8", json!({"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]})), node("b", "8", json!({}))]);
        let plain = pod(json!({}), json!({}));
        assert_eq!(taint_toleration::score(&plain.pod, &c.nodes[0]), 1);
        assert_eq!(schedule(&plain, &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
        // ScheduleAnyway spread prefers the emptier zone.
        let zone = |z: &str| json!({"labels": {"zone": z}});
        let mut c = cache(vec![node("a", "8", zone("z1")), node("b", "8", zone("z2"))]);
        place(&mut c, "a", "w1", json!({"app": "web"}), "100m");
        let soft = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        assert_eq!(schedule(&pod(soft, json!({"app": "web"})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
        // Preferred pod affinity pulls toward the target's node.
        let mut c = cache(vec![node("a", "8", json!({})), node("b", "8", json!({}))]);
        place(&mut c, "b", "cache1", json!({"app": "cache"}), "100m");
        let near = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}}]}}});
        assert_eq!(schedule(&pod(near, json!({})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
    }

    #[test]
    fn cordoned_nodes_are_skipped_and_sampling_finds_enough() {
        let c = cache(vec![node("a", "8", json!({"unschedulable": true})), node("b", "8", json!({}))]);
        assert_eq!(schedule(&pod(json!({}), json!({})), &c, &mut 0, false, &volume_binding::Volumes::none()), Ok("b".to_string()));
        assert_eq!(feasible_to_find(50), 50);
        assert_eq!(feasible_to_find(5000), 500);
        assert_eq!(feasible_to_find(200), 100, "48% of 200 is under the floor of 100");
    }
}
