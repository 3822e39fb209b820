//! InterPodAffinity: required pod affinity and anti-affinity (the incoming
//! pod's, and existing pods' anti-affinity against it) filter by topology
//! domain; preferred terms score. Computed once per scheduling cycle.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::PodAffinityTerm;
use skiff_runtime::selectors::label_selector_matches;

use crate::cache::{Cache, NodeInfo, PodInfo};

/// Whether `candidate` is selected by `term`, a term of a pod in `owner_ns`.
fn term_matches(term: &PodAffinityTerm, owner_ns: &str, candidate: &PodInfo) -> bool {
    let Some(sel) = &term.label_selector else { return false };
    let in_ns = match (&term.namespaces, &term.namespace_selector) {
        (Some(nss), _) if !nss.is_empty() => nss.iter().any(|n| n == candidate.namespace()),
        // An (empty) namespaceSelector selects every namespace.
        (_, Some(_)) => true,
        _ => candidate.namespace() == owner_ns,
    };
    in_ns && label_selector_matches(sel, candidate.labels())
}

/// The per-cycle view of affinity for one incoming pod.
#[derive(Debug, Default)]
pub struct Precomputed {
    affinity: Vec<(String, HashSet<String>)>,
    self_match: bool,
    anti: Vec<(String, HashSet<String>)>,
    existing_anti: HashSet<(String, String)>,
    preferred: HashMap<(String, String), i64>,
}

/// Whether any of this matters for the pod (so the scan can be skipped).
pub fn relevant(pod: &PodInfo, cache_has_anti: bool) -> bool {
    cache_has_anti || pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

/// Scans the cluster once for the pod's terms.
pub fn precompute(pod: &PodInfo, cache: &Cache) -> Precomputed {
    let mut pre = Precomputed::default();
    let ns = pod.namespace().to_string();
    let aff = pod.pod.spec.as_ref().and_then(|s| s.affinity.clone()).unwrap_or_default();
    let req_aff: Vec<PodAffinityTerm> =
        aff.pod_affinity.as_ref().and_then(|a| a.required_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
    let req_anti: Vec<PodAffinityTerm> =
        aff.pod_anti_affinity.as_ref().and_then(|a| a.required_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
    let pref_aff = aff.pod_affinity.as_ref().and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
    let pref_anti = aff.pod_anti_affinity.as_ref().and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
    pre.affinity = req_aff.iter().map(|t| (t.topology_key.clone(), HashSet::new())).collect();
    pre.anti = req_anti.iter().map(|t| (t.topology_key.clone(), HashSet::new())).collect();
    pre.self_match = !req_aff.is_empty() && req_aff.iter().all(|t| term_matches(t, &ns, pod));
    for node in &cache.nodes {
        for existing in node.pods.values() {
            for (i, t) in req_aff.iter().enumerate() {
                if let Some(v) = node.label(&t.topology_key) {
                    if term_matches(t, &ns, existing) {
                        pre.affinity[i].1.insert(v.to_string());
                    }
                }
            }
            for (i, t) in req_anti.iter().enumerate() {
                if let Some(v) = node.label(&t.topology_key) {
                    if term_matches(t, &ns, existing) {
                        pre.anti[i].1.insert(v.to_string());
                    }
                }
            }
            let theirs = existing.pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).and_then(|a| a.pod_anti_affinity.as_ref());
            for t in theirs.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten() {
                if let Some(v) = node.label(&t.topology_key) {
                    if term_matches(t, existing.namespace(), pod) {
                        pre.existing_anti.insert((t.topology_key.clone(), v.to_string()));
                    }
                }
            }
            for w in &pref_aff {
                if let Some(v) = node.label(&w.pod_affinity_term.topology_key) {
                    if term_matches(&w.pod_affinity_term, &ns, existing) {
                        *pre.preferred.entry((w.pod_affinity_term.topology_key.clone(), v.to_string())).or_default() += w.weight as i64;
                    }
                }
            }
            for w in &pref_anti {
                if let Some(v) = node.label(&w.pod_affinity_term.topology_key) {
                    if term_matches(&w.pod_affinity_term, &ns, existing) {
                        *pre.preferred.entry((w.pod_affinity_term.topology_key.clone(), v.to_string())).or_default() -= w.weight as i64;
                    }
                }
            }
        }
    }
    pre
}

/// Filter.
pub fn filter(pre: &Precomputed, node: &NodeInfo) -> Result<(), Vec<String>> {
    for (key, forbidden) in &pre.anti {
        if node.label(key).is_some_and(|v| forbidden.contains(v)) {
            return Err(vec!["node(s) didn't match pod anti-affinity rules".into()]);
        }
    }
    if pre.existing_anti.iter().any(|(k, v)| node.label(k) == Some(v.as_str())) {
        return Err(vec!["node(s) didn't satisfy existing pods anti-affinity rules".into()]);
    }
    // The first pod of a group that selects itself may go anywhere its
    // topology key exists.
    let none_anywhere = pre.affinity.iter().all(|(_, vals)| vals.is_empty());
    for (key, allowed) in &pre.affinity {
        let ok = match node.label(key) {
            Some(v) => allowed.contains(v) || (none_anywhere && pre.self_match),
            None => false,
        };
        if !ok {
            return Err(vec!["node(s) didn't match pod affinity rules".into()]);
        }
    }
    Ok(())
}

/// Raw score: preferred affinity weights minus preferred anti-affinity
/// weights of the node's domains.
pub fn score(pre: &Precomputed, node: &NodeInfo) -> i64 {
    pre.preferred.iter().filter(|((k, v), _)| node.label(k) == Some(v.as_str())).map(|(_, w)| *w).sum()
}
