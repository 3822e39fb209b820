//! PodTopologySpread: `DoNotSchedule` constraints filter nodes whose domain
//! would exceed `maxSkew`; `ScheduleAnyway` ones score (fewer matching
//! pods in the domain is better).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use skiff_runtime::selectors::label_selector_matches;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::plugins::node_affinity;

/// Counts per domain for each constraint.
#[derive(Debug, Default)]
pub struct Precomputed {
    constraints: Vec<(TopologySpreadConstraint, HashMap<String, i64>, bool)>,
}

/// The pod's constraints, if any.
pub fn constraints(pod: &PodInfo) -> Vec<TopologySpreadConstraint> {
    pod.pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.clone()).unwrap_or_default()
}

/// Counts matching pods per domain over the nodes the pod could use.
pub fn precompute(pod: &PodInfo, cache: &Cache) -> Precomputed {
    let ns = pod.namespace();
    let constraints = constraints(pod)
        .into_iter()
        .map(|c| {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in &cache.nodes {
                let Some(domain) = node.label(&c.topology_key) else { continue };
                if !node_affinity::matches(&pod.pod, &node.node) {
                    continue;
                }
                let n = node
                    .pods
                    .values()
                    .filter(|p| p.namespace() == ns && p.pod.metadata.deletion_timestamp.is_none())
                    .filter(|p| c.label_selector.as_ref().is_some_and(|s| label_selector_matches(s, p.labels())))
                    .count() as i64;
                *counts.entry(domain.to_string()).or_default() += n;
            }
            let self_match = c.label_selector.as_ref().is_some_and(|s| label_selector_matches(s, pod.labels()));
            (c, counts, self_match)
        })
        .collect();
    Precomputed { constraints }
}

/// Filter.
pub fn filter(pre: &Precomputed, node: &NodeInfo) -> Result<(), Vec<String>> {
    for (c, counts, self_match) in pre.constraints.iter().filter(|(c, _, _)| c.when_unsatisfiable == "DoNotSchedule") {
        let Some(domain) = node.label(&c.topology_key) else {
            return Err(vec!["node(s) didn't match pod topology spread constraints (missing required label)".into()]);
        };
        let min = counts.values().copied().min().unwrap_or(0);
        let here = counts.get(domain).copied().unwrap_or(0) + i64::from(*self_match);
        if here - min > c.max_skew as i64 {
            return Err(vec!["node(s) didn't match pod topology spread constraints".into()]);
        }
    }
    Ok(())
}

/// Raw score: matching pods in the node's domains (lower is better).
pub fn score(pre: &Precomputed, node: &NodeInfo) -> i64 {
    pre.constraints
        .iter()
        .filter(|(c, _, _)| c.when_unsatisfiable == "ScheduleAnyway")
        .map(|(c, counts, _)| node.label(&c.topology_key).and_then(|d| counts.get(d)).copied().unwrap_or(0))
        .sum()
}
