//! NodePorts: a host port (protocol, IP, port) can be used once per node;
//! `0.0.0.0` conflicts with every IP.

use crate::cache::{NodeInfo, PodInfo};

/// The failure reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// Filter.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    for (proto, ip, port) in &pod.ports {
        let clash = node
            .pods
            .values()
            .flat_map(|p| p.ports.iter())
            .any(|(p2, ip2, port2)| port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0"));
        if clash {
            return Err(vec![REASON.into()]);
        }
    }
    Ok(())
}
