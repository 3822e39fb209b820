//! TaintToleration: a pod goes only where it tolerates every NoSchedule and
//! NoExecute taint; PreferNoSchedule taints it does not tolerate lower the
//! score.

use k8s_openapi::api::core::v1::{Pod, Taint};

use crate::cache::NodeInfo;

/// Whether the pod tolerates the taint.
pub fn tolerates(pod: &Pod, taint: &Taint) -> bool {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_ref()).is_some_and(|ts| ts.iter().any(|t| skiff_runtime::selectors::tolerates(t, taint)))
}

/// Filter: the first untolerated NoSchedule/NoExecute taint fails it.
pub fn filter(pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
    for taint in node.node.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !tolerates(pod, taint) {
            return Err(vec![format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value.as_deref().unwrap_or(""))]);
        }
    }
    Ok(())
}

/// Raw score: the number of untolerated PreferNoSchedule taints (fewer is
/// better; normalized in reverse).
pub fn score(pod: &Pod, node: &NodeInfo) -> i64 {
    node.node.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().filter(|t| t.effect == "PreferNoSchedule" && !tolerates(pod, t)).count()
        as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(k: &str, v: &str, e: &str) -> Taint {
        Taint { key: k.into(), value: Some(v.into()), effect: e.into(), ..Default::default() }
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
            {"key": "flaky", "operator": "Exists"}]}}))
        .expect("pod");
        assert!(tolerates(&pod, &taint("dedicated", "gpu", "NoSchedule")));
        assert!(!tolerates(&pod, &taint("dedicated", "gpu", "NoExecute")));
        assert!(!tolerates(&pod, &taint("dedicated", "cpu", "NoSchedule")));
        assert!(tolerates(&pod, &taint("flaky", "anything", "NoExecute")));
        let all: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}})).expect("pod");
        assert!(tolerates(&all, &taint("x", "y", "NoSchedule")));
    }
}
