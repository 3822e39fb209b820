//! The pod network: a CNI configuration for containerd's CRI plugin, a
//! bridge on this node with host-local addresses from the node's podCIDR
//! (what k3s's flannel does on one host, and kubenet did before it), a
//! loopback in every pod, and portmap for `hostPort`.
//!
//! Traffic leaving the pod network is masqueraded by one nftables rule for
//! the whole podCIDR, written once when the node gets its range, as
//! flannel does; traffic to other nodes' pods (the cluster CIDR, which
//! `skiff-podnet` routes) keeps its pod address: the bridge plugin's own `ipMasq` adds an iptables chain
//! per pod, several `iptables` runs that serialize on the xtables lock and
//! grow slower with every pod, which made sandbox creation the bottleneck
//! of pods starting together. Should the kernel refuse the table, the bridge
//! plugin masquerades.

use std::path::Path;

use serde_json::json;
use skiff_nftables::{Cidr, Hook, HookPoint, Op, Rule, Transaction};

/// The bridge and network name for a node: unique per data directory, so
/// several skiff agents on one machine (tests) never share a bridge or
/// its address book. Linux limits interface names to 15 bytes.
pub fn bridge_name(data_dir: &Path) -> String {
    format!("skiff{:08x}", skiff_runtime::path_hash(data_dir))
}

/// The pod network of one node, as its CNI config describes it.
#[derive(Debug, Clone)]
pub struct PodNetwork<'a> {
    /// The bridge (and CNI network) name.
    pub bridge: &'a str,
    /// The node's podCIDR.
    pub pod_cidr: &'a str,
    /// host-local's address book.
    pub ipam_dir: &'a Path,
    /// Whether the bridge plugin masquerades (when [`masquerade`] cannot).
    pub ip_masq: bool,
    /// The pods' MTU (less than the node's under an overlay); `None`: the default.
    pub mtu: Option<u32>,
}

/// The CNI conflist for a node's pod network.
pub fn conflist(net: &PodNetwork) -> String {
    let mut bridge = json!({"type": "bridge", "bridge": net.bridge, "isGateway": true, "ipMasq": net.ip_masq, "hairpinMode": true,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": net.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": net.ipam_dir.display().to_string()}});
    if let Some(mtu) = net.mtu {
        bridge["mtu"] = json!(mtu);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": net.bridge,
        "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]
    })
    .to_string()
}

/// The nftables transaction that masquerades what pods in `pod_cidr` send
/// off the pod network (`cluster_cidr`: every node's pods, reached
/// unchanged): one table named after the node's bridge (several agents on
/// one machine never touch each other's), replaced whole in one
/// transaction, so applying it again is harmless.
pub fn masquerade_rules(bridge: &str, pod_cidr: Cidr, cluster_cidr: Cidr) -> Transaction {
    let mut tx = Transaction::replacing(bridge);
    tx.push(Op::AddChain { name: "postrouting".into(), hook: Some(Hook { nat: true, hook: HookPoint::Postrouting, priority: 100 }) });
    let multicast = Cidr { addr: std::net::Ipv4Addr::new(224, 0, 0, 0), len: 4 };
    let rule = Rule::new().addr_in_cidr(true, pod_cidr, false).addr_in_cidr(false, cluster_cidr, true).addr_in_cidr(false, multicast, true).masquerade(false);
    tx.push(Op::AddRule { chain: "postrouting".into(), rule });
    tx
}

/// Installs [`masquerade_rules`]. Fails when a CIDR does not parse or the
/// kernel refuses them.
pub async fn masquerade(bridge: &str, pod_cidr: &str, cluster_cidr: &str) -> std::io::Result<()> {
    let cidr = |c: &str| c.parse::<Cidr>().map_err(std::io::Error::other);
    masquerade_rules(bridge, cidr(pod_cidr)?, cidr(cluster_cidr)?).apply().await.map_err(std::io::Error::other)
}

/// Removes a node's pod network from this machine: its bridge and its
/// masquerade table (for tests and benchmarks that start throwaway nodes;
/// a real node keeps both across restarts, as its pods keep running).
pub fn remove(agent_dir: &Path) {
    let bridge = bridge_name(agent_dir);
    let _ = std::process::Command::new("ip").args(["link", "delete", &bridge]).output();
    let _ = Transaction::deleting(&bridge).apply_blocking();
}

/// Writes the conflist into `conf_dir` (atomically: containerd watches the
/// directory and must never read half a file). Returns whether it changed.
pub fn write(conf_dir: &Path, net: &PodNetwork) -> std::io::Result<bool> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join("10-skiff.conflist");
    let text = conflist(net);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    let tmp = conf_dir.join(".10-skiff.conflist.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_differ_per_data_dir_and_fit_an_interface_name() {
        let a = bridge_name(Path::new("/var/lib/skiff"));
        let b = bridge_name(Path::new("/tmp/x/skiff"));
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
        assert_eq!(a, bridge_name(Path::new("/var/lib/skiff")));
    }

    #[test]
    fn conflist_uses_the_node_cidr() {
        let net = PodNetwork { bridge: "skiff0", pod_cidr: "10.42.3.0/24", ipam_dir: Path::new("/d"), ip_masq: false, mtu: None };
        let c: serde_json::Value = serde_json::from_str(&conflist(&net)).expect("json");
        assert_eq!(c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        assert!(c["plugins"][0].get("mtu").is_none());
        assert_eq!(c["plugins"][1]["type"], "portmap");
        let c: serde_json::Value = serde_json::from_str(&conflist(&PodNetwork { mtu: Some(1450), ..net })).expect("json");
        assert_eq!(c["plugins"][0]["mtu"], 1450, "pods fit inside the overlay's MTU");
    }

    #[test]
    fn masquerade_covers_the_pod_range_leaving_the_cluster() {
        let r = masquerade_rules("skiff0", "10.42.3.0/24".parse().unwrap(), "10.42.0.0/16".parse().unwrap()).to_string();
        assert!(r.starts_with("add table ip skiff0\ndelete table ip skiff0\nadd table ip skiff0\n"), "{r}");
        assert!(r.contains("add rule ip skiff0 postrouting ip saddr 10.42.3.0/24 ip daddr != 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"), "{r}");
    }
}
