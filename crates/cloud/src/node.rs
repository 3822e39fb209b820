//! The cloud node controller, for the `local` provider: a node started
//! with `--cloud-provider external` registers with the
//! `node.cloudprovider.kubernetes.io/uninitialized` taint and without
//! addresses; this gives it its addresses (the InternalIP its kubelet was
//! given, passed on in `alpha.kubernetes.io/provided-node-ip`, and its
//! Hostname), a `providerID` (`skiff://NAME`) and the instance-type label,
//! then lifts the taint, as the cloud-node controller does with a real
//! provider's answers.

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

/// The taint an uninitialized node carries.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// The kubelet's `--node-ip`, as it passes it on.
pub const PROVIDED_NODE_IP: &str = "alpha.kubernetes.io/provided-node-ip";
/// The provider's scheme in `spec.providerID`.
pub const PROVIDER_ID_PREFIX: &str = "skiff://";
/// The instance type the local provider reports.
pub const INSTANCE_TYPE: &str = "skiff";

/// Why a node cannot be initialized yet.
#[derive(Debug, PartialEq, Eq)]
pub struct NoAddress;

/// For a node waiting to be initialized: its status patch (addresses),
/// then its object patch (providerID, labels, the taint lifted). `None`
/// for a node that is not waiting.
pub fn initialization(node: &Node) -> Option<Result<(Value, Value), NoAddress>> {
    let spec = node.spec.as_ref()?;
    let taints = spec.taints.as_deref().unwrap_or_default();
    if !taints.iter().any(|t| t.key == UNINITIALIZED_TAINT) {
        return None;
    }
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let given = node.metadata.annotations.as_ref().and_then(|a| a.get(PROVIDED_NODE_IP)).cloned();
    let known = node.status.as_ref().and_then(|s| s.addresses.as_ref()).and_then(|a| a.iter().find(|a| a.type_ == "InternalIP")).map(|a| a.address.clone());
    let Some(ip) = given.or(known).filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()) else { return Some(Err(NoAddress)) };
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}});
    let kept: Vec<_> = taints.iter().filter(|t| t.key != UNINITIALIZED_TAINT).collect();
    let mut object = json!({
        "metadata": {
            "labels": {"node.kubernetes.io/instance-type": INSTANCE_TYPE, "beta.kubernetes.io/instance-type": INSTANCE_TYPE},
            // The taints are replaced whole: only if no one changed them meanwhile.
            "resourceVersion": node.metadata.resource_version,
        },
        "spec": {"taints": kept},
    });
    if spec.provider_id.as_deref().is_none_or(str::is_empty) {
        object["spec"]["providerID"] = json!(format!("{PROVIDER_ID_PREFIX}{name}"));
    }
    Some(Ok((status, object)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(taints: Value, annotations: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "w1", "resourceVersion": "7", "annotations": annotations}, "spec": {"taints": taints}}))
            .expect("node")
    }

    #[test]
    fn an_uninitialized_node_gets_addresses_a_provider_id_and_loses_only_that_taint() {
        let n = node(
            json!([{"key": UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}, {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
            json!({PROVIDED_NODE_IP: "192.0.2.7"}),
        );
        let (status, object) = initialization(&n).expect("waiting").expect("an address");
        assert_eq!(status["status"]["addresses"], json!([{"type": "InternalIP", "address": "192.0.2.7"}, {"type": "Hostname", "address": "w1"}]));
        assert_eq!(object["spec"]["providerID"], "skiff://w1");
        assert_eq!(object["spec"]["taints"], json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        assert_eq!(object["metadata"]["resourceVersion"], "7");
        assert_eq!(object["metadata"]["labels"]["node.kubernetes.io/instance-type"], "skiff");
    }

    #[test]
    fn initialized_nodes_are_left_and_nodes_without_an_address_wait() {
        assert!(initialization(&node(json!([]), json!({PROVIDED_NODE_IP: "192.0.2.7"}))).is_none());
        assert_eq!(initialization(&node(json!([{"key": UNINITIALIZED_TAINT, "effect": "NoSchedule"}]), json!({}))), Some(Err(NoAddress)));
    }
}
