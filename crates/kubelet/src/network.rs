//! The pod network: a CNI configuration for containerd's CRI plugin, a
//! bridge on this node with host-local addresses from the node's podCIDR
//! (what k3s's flannel does on one host, and kubenet did before it), a
//! loopback in every pod, and portmap for `hostPort`.

use std::path::Path;

use serde_json::json;

/// The bridge and network name for a node: unique per data directory, so
/// several skiff agents on one machine (tests) never share a bridge or
/// its address book. Linux limits interface names to 15 bytes.
pub fn bridge_name(data_dir: &Path) -> String {
    // FNV-1a: a stable hash, unlike std's randomly seeded one.
    let mut h: u32 = 0x811c9dc5;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    format!("skiff{:08x}", h)
}

/// The CNI conflist for a node whose pods get addresses from `pod_cidr`.
pub fn conflist(bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": ipam_dir.display().to_string()}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
    .to_string()
}

/// Writes the conflist into `conf_dir` (atomically: containerd watches the
/// directory and must never read half a file). Returns whether it changed.
pub fn write(conf_dir: &Path, bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> std::io::Result<bool> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join("10-skiff.conflist");
    let text = conflist(bridge, pod_cidr, ipam_dir);
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
        let c: serde_json::Value = serde_json::from_str(&conflist("skiff0", "10.42.3.0/24", Path::new("/d"))).expect("json");
        assert_eq!(c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }
}
