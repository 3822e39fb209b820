//! NodeAffinity: `nodeSelector` and required node affinity filter;
//! preferred node affinity scores by the weights of the terms a node meets.

use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_runtime::selectors::node_term_matches;

/// The failure reason.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether the node satisfies the pod's nodeSelector and required affinity.
pub fn matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.as_ref();
        if !sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            return false;
        }
    }
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        // Terms are ORed.
        Some(r) => r.node_selector_terms.iter().any(|t| node_term_matches(t, node)),
        None => true,
    }
}

/// Filter.
pub fn filter(pod: &Pod, node: &Node) -> Result<(), Vec<String>> {
    if matches(pod, node) {
        Ok(())
    } else {
        Err(vec![REASON.into()])
    }
}

/// Raw score: the sum of the weights of preferred terms the node meets.
pub fn score(pod: &Pod, node: &Node) -> i64 {
    let preferred = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref());
    preferred.into_iter().flatten().filter(|p| node_term_matches(&p.preference, node)).map(|p| p.weight as i64).sum()
}
