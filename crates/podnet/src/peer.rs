//! What a node tells the others about its end of the pod network, in the
//! Node annotations flannel uses (so tools that read flannel's annotations
//! read ours), and what this node makes of the other nodes' annotations.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use skiff_api::cidr::Cidr;

use crate::Backend;

/// The backend a node runs.
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// The backend's data: for vxlan `{"VNI":1,"VtepMAC":"..."}`.
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// The address other nodes send its pods' traffic to.
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// Marks subnets taken from the Node's podCIDR (flannel's kube subnet manager).
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// Another node's end of the pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's pod range.
    pub pod_cidr: Cidr,
    /// Where its pods' traffic goes: the node's address (host-gw's next
    /// hop, vxlan's tunnel endpoint).
    pub public_ip: Ipv4Addr,
    /// The MAC address of its vxlan device (vxlan only).
    pub vtep_mac: Option<[u8; 6]>,
}

/// Why a node is not (yet) a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum NotAPeer {
    /// It has no podCIDR, address or backend annotations yet.
    Incomplete,
    /// It runs another backend (a misconfiguration worth a warning).
    OtherBackend(String),
    /// Its annotations do not parse (worth a warning).
    Invalid(String),
}

/// Reads another node's end of the pod network from its Node object.
pub fn peer(node: &Node, backend: Backend) -> Result<Peer, NotAPeer> {
    let pod_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).filter(|c| !c.is_empty()).ok_or(NotAPeer::Incomplete)?;
    let pod_cidr: Cidr = pod_cidr.parse().map_err(|e| NotAPeer::Invalid(format!("spec.podCIDR: {e}")))?;
    let empty = BTreeMap::new();
    let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let kind = ann.get(BACKEND_TYPE).ok_or(NotAPeer::Incomplete)?;
    if kind != backend.as_str() {
        return Err(NotAPeer::OtherBackend(kind.clone()));
    }
    let public_ip = match ann.get(PUBLIC_IP) {
        Some(ip) => ip.parse().map_err(|_| NotAPeer::Invalid(format!("{PUBLIC_IP}: {ip:?} is not an IPv4 address")))?,
        None => internal_ip(node).ok_or(NotAPeer::Incomplete)?,
    };
    let vtep_mac = match backend {
        Backend::Vxlan => {
            let data: serde_json::Value =
                ann.get(BACKEND_DATA).and_then(|d| serde_json::from_str(d).ok()).ok_or_else(|| NotAPeer::Invalid(format!("{BACKEND_DATA}: not JSON")))?;
            let mac = data["VtepMAC"].as_str().ok_or(NotAPeer::Invalid(format!("{BACKEND_DATA}: no VtepMAC")))?;
            Some(parse_mac(mac).ok_or_else(|| NotAPeer::Invalid(format!("{BACKEND_DATA}: VtepMAC {mac:?} is not a MAC address")))?)
        }
        Backend::HostGw | Backend::None => None,
    };
    Ok(Peer { pod_cidr, public_ip, vtep_mac })
}

/// The node's first IPv4 `InternalIP`.
fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status.as_ref()?.addresses.as_ref()?.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())
}

/// The annotations this node publishes for `backend`.
pub fn annotations(backend: Backend, public_ip: Ipv4Addr, vni: u32, vtep_mac: Option<[u8; 6]>) -> BTreeMap<String, String> {
    let data = match vtep_mac {
        Some(mac) if backend == Backend::Vxlan => json!({"VNI": vni, "VtepMAC": format_mac(mac)}).to_string(),
        _ => "null".to_string(),
    };
    BTreeMap::from([
        (BACKEND_TYPE.to_string(), backend.as_str().to_string()),
        (BACKEND_DATA.to_string(), data),
        (PUBLIC_IP.to_string(), public_ip.to_string()),
        (KUBE_SUBNET_MANAGER.to_string(), "true".to_string()),
    ])
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "b", "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": "b"}, {"type": "InternalIP", "address": "10.99.0.3"}]}
        }))
        .expect("node")
    }

    #[test]
    fn a_vxlan_peer_is_read_back_from_the_annotations_it_published() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        let ann = annotations(Backend::Vxlan, "10.99.0.3".parse().expect("ip"), 1, Some(mac));
        assert_eq!(ann[BACKEND_DATA], r#"{"VNI":1,"VtepMAC":"02:42:ac:11:00:02"}"#);
        let pairs: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = peer(&node(Some("10.42.1.0/24"), &pairs), Backend::Vxlan).expect("peer");
        assert_eq!(p, Peer { pod_cidr: "10.42.1.0/24".parse().expect("cidr"), public_ip: "10.99.0.3".parse().expect("ip"), vtep_mac: Some(mac) });
    }

    #[test]
    fn a_host_gw_peer_falls_back_to_the_internal_ip() {
        let p = peer(&node(Some("10.42.2.0/24"), &[(BACKEND_TYPE, "host-gw")]), Backend::HostGw).expect("peer");
        assert_eq!(p.public_ip, "10.99.0.3".parse::<Ipv4Addr>().expect("ip"));
        assert_eq!(p.vtep_mac, None);
    }

    #[test]
    fn nodes_not_ready_or_on_another_backend_are_not_peers() {
        assert_eq!(peer(&node(None, &[(BACKEND_TYPE, "vxlan")]), Backend::Vxlan), Err(NotAPeer::Incomplete));
        assert_eq!(peer(&node(Some("10.42.2.0/24"), &[]), Backend::Vxlan), Err(NotAPeer::Incomplete));
        assert_eq!(peer(&node(Some("10.42.2.0/24"), &[(BACKEND_TYPE, "host-gw")]), Backend::Vxlan), Err(NotAPeer::OtherBackend("host-gw".into())));
        let bad = peer(&node(Some("10.42.2.0/24"), &[(BACKEND_TYPE, "vxlan"), (BACKEND_DATA, r#"{"VNI":1,"VtepMAC":"zz"}"#)]), Backend::Vxlan);
        assert!(matches!(bad, Err(NotAPeer::Invalid(m)) if m.contains("VtepMAC")));
    }

    #[test]
    fn macs_round_trip() {
        assert_eq!(parse_mac("0a:0b:0c:0d:0e:ff"), Some([10, 11, 12, 13, 14, 255]));
        assert_eq!(parse_mac("0a:0b:0c:0d:0e"), None);
        assert_eq!(parse_mac("0a:0b:0c:0d:0e:ff:00"), None);
        assert_eq!(format_mac([10, 11, 12, 13, 14, 255]), "0a:0b:0c:0d:0e:ff");
    }
}
