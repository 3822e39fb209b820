//! The Node object: registration, status (capacity, addresses, nodeInfo,
//! conditions from the runtime's own Status) and the Lease heartbeat.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::Config;

/// How the node looks from this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory: u64,
    /// Bytes of the filesystem that holds the data directory.
    pub ephemeral_storage: u64,
    /// `uname -r`.
    pub kernel: String,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// This boot's id.
    pub boot_id: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Facts {
    /// Reads them from /proc and /etc.
    pub fn gather(data_dir: &std::path::Path) -> Self {
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let ephemeral_storage = nix::sys::statvfs::statvfs(data_dir).map(|s| s.blocks() * s.fragment_size()).unwrap_or(0);
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory,
            ephemeral_storage,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// The runtime's readiness as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Runtime and network ready.
    Ready,
    /// Not ready, with the message `kubectl describe node` shows.
    NotReady(String),
}

/// The Node object registered at start (labels and taints; status follows).
pub fn node_object(cfg: &Config) -> Result<Node, serde_json::Error> {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", cfg.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(cfg.node_labels.clone());
    // Where the local-path provisioner puts this node's volumes.
    let mut annotations = json!({skiff_api::storage::LOCAL_PATH_ROOT_ANNOTATION: crate::local_path::root(&cfg.dir).display().to_string()});
    let mut taints = cfg.taints.clone();
    if cfg.external_cloud_provider {
        // As the kubelet does: the cloud controller initializes the node
        // (addresses, providerID) and lifts the taint; the address given
        // is passed on for it.
        annotations[PROVIDED_NODE_IP_ANNOTATION] = json!(cfg.node_ip.to_string());
        if !taints.iter().any(|t| t["key"] == UNINITIALIZED_TAINT) {
            taints.push(json!({"key": UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}));
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": cfg.node_name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints},
    }))
}

/// The taint a node started with `--cloud-provider external` carries until
/// the cloud controller has initialized it.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// The address the kubelet was given (`--node-ip`), for the cloud controller.
pub const PROVIDED_NODE_IP_ANNOTATION: &str = "alpha.kubernetes.io/provided-node-ip";

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The node's status: capacity, allocatable, conditions, addresses, nodeInfo, kubelet port.
pub fn status(cfg: &Config, facts: &Facts, runtime_version: &str, readiness: &Readiness, kubelet_port: u16, since: &str) -> Value {
    let now = skiff_runtime::now();
    let cond = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": since});
    let capacity = json!({"cpu": facts.cpus.to_string(), "memory": format!("{}Ki", facts.memory / 1024), "pods": cfg.max_pods.to_string(),
                          "ephemeral-storage": format!("{}Ki", facts.ephemeral_storage / 1024)});
    let ready = match readiness {
        Readiness::Ready => cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        Readiness::NotReady(msg) => cond("Ready", "False", "KubeletNotReady", msg),
    };
    let mut status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ready,
        ],
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip.to_string()}, {"type": "Hostname", "address": cfg.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {"machineID": facts.machine_id, "systemUUID": facts.machine_id, "bootID": facts.boot_id, "kernelVersion": facts.kernel,
                     "osImage": facts.os_image, "containerRuntimeVersion": runtime_version, "kubeletVersion": crate::KUBELET_VERSION,
                     "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch()},
    }});
    if cfg.external_cloud_provider {
        // The cloud controller's to set (a merge patch leaves them as it wrote them).
        if let Some(s) = status["status"].as_object_mut() {
            s.remove("addresses");
        }
    }
    status
}

/// Creates the Node (or keeps the existing one, merging our labels).
pub async fn register(nodes: &Api<Node>, cfg: &Config) -> Result<(), kube::Error> {
    let node = node_object(cfg).map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let p = json!({"metadata": {"labels": node.metadata.labels, "annotations": node.metadata.annotations}});
            nodes.patch(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&p)).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Renews (or creates) the node's Lease in `kube-node-lease`.
pub async fn renew_lease(leases: &Api<Lease>, node: &Node, name: &str, duration: i32) -> Result<(), kube::Error> {
    let p = json!({"spec": {"renewTime": skiff_runtime::micro_now(), "holderIdentity": name, "leaseDurationSeconds": duration}});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(&p)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let owner = json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}]);
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "ownerReferences": owner},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": skiff_runtime::micro_now()}
            }))
            .map_err(kube::Error::SerdeError)?;
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
