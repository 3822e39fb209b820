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
//! of pods starting together. Without `nft` the bridge plugin masquerades.

use std::path::Path;

use serde_json::json;
use tokio::io::AsyncWriteExt;

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

/// The nftables script that masquerades what pods in `pod_cidr` send off
/// the pod network (`cluster_cidr`: every node's pods, reached unchanged):
/// one table named after the node's bridge (several agents on one machine
/// never touch each other's), replaced whole in one transaction, so
/// writing it again is harmless.
pub fn masquerade_rules(bridge: &str, pod_cidr: &str, cluster_cidr: &str) -> String {
    format!(
        "table ip {bridge} {{}}\nflush table ip {bridge}\ntable ip {bridge} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {pod_cidr} ip daddr != {cluster_cidr} ip daddr != 224.0.0.0/4 masquerade\n  }}\n}}\n"
    )
}

/// Installs [`masquerade_rules`] with `nft`. Fails when `nft` is missing
/// or refuses them (its message is returned).
pub async fn masquerade(bridge: &str, pod_cidr: &str, cluster_cidr: &str) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(masquerade_rules(bridge, pod_cidr, cluster_cidr).as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Removes a node's pod network from this machine: its bridge and its
/// masquerade table (for tests and benchmarks that start throwaway nodes;
/// a real node keeps both across restarts, as its pods keep running).
pub fn remove(agent_dir: &Path) {
    let bridge = bridge_name(agent_dir);
    let _ = std::process::Command::new("ip").args(["link", "delete", &bridge]).output();
    let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &bridge]).output();
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
        let r = masquerade_rules("skiff0", "10.42.3.0/24", "10.42.0.0/16");
        assert!(r.starts_with("table ip skiff0 {}\nflush table ip skiff0\n"), "{r}");
        assert!(r.contains("ip saddr 10.42.3.0/24 ip daddr != 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"), "{r}");
    }
}
