//! NodeUnschedulable: cordoned nodes take only pods that tolerate
//! `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::{Pod, Taint};

use crate::cache::NodeInfo;
use crate::plugins::taint_toleration::tolerates;

/// The failure reason.
pub const REASON: &str = "node(s) were unschedulable";

/// Filter.
pub fn filter(pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
    if !node.node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        return Ok(());
    }
    let taint = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
    if tolerates(pod, &taint) {
        Ok(())
    } else {
        Err(vec![REASON.into()])
    }
}
