//! Pod spec → CRI configs: the sandbox (metadata, hostname, logs, ports,
//! cgroup parent, namespaces) and each container (image, command, env,
//! mounts, resources as cgroup limits, security context).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_cri::api;

use crate::volumes::HostPaths;

/// Labels that tie CRI objects to their pod and container.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The container's name.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    [(POD_UID, m.uid.clone()), (POD_NAME, m.name.clone()), (POD_NAMESPACE, m.namespace.clone())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.unwrap_or_default()))
        .collect()
}

/// Where a pod's container logs go: `<logs>/<ns>_<name>_<uid>`, as /var/log/pods.
pub fn log_directory(logs_root: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    logs_root.join(format!("{}_{}_{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""), m.uid.as_deref().unwrap_or("")))
}

/// The QoS class Kubernetes derives from requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else { return "BestEffort" };
    let mut any = false;
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let r = c.resources.as_ref();
        let req = r.and_then(|r| r.requests.as_ref());
        let lim = r.and_then(|r| r.limits.as_ref());
        for res in ["cpu", "memory"] {
            let (q, l) = (req.and_then(|m| m.get(res)).or(lim.and_then(|m| m.get(res))), lim.and_then(|m| m.get(res)));
            if q.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || q.map(|q| &q.0) != l.map(|l| &l.0) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The sandbox config for `pod`, attempt `attempt`.
pub fn sandbox(pod: &Pod, logs_root: &Path, attempt: u32, dns: &crate::dns::Settings) -> api::PodSandboxConfig {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    // A host-network pod shares the node's UTS namespace, so it already has
    // the node's name; naming it again makes runc (≥ 1.1) refuse the sandbox
    // ("unable to set hostname without a private UTS namespace").
    let hostname = if host_network {
        String::new()
    } else {
        let h = spec.hostname.clone().unwrap_or_else(|| m.name.clone().unwrap_or_default());
        h.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| api::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp as i32,
                Some("SCTP") => api::Protocol::Sctp as i32,
                _ => api::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let ns_mode = |host: bool| if host { api::NamespaceMode::Node as i32 } else { api::NamespaceMode::Pod as i32 };
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: log_directory(logs_root, pod).display().to_string(),
        dns_config: Some(crate::dns::config(pod, dns)),
        port_mappings,
        labels: pod_labels(pod),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("/skiff/pod{}", m.uid.as_deref().unwrap_or("")),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: ns_mode(host_network),
                    pid: if spec.host_pid.unwrap_or(false) {
                        api::NamespaceMode::Node as i32
                    } else if spec.share_process_namespace.unwrap_or(false) {
                        api::NamespaceMode::Pod as i32
                    } else {
                        api::NamespaceMode::Container as i32
                    },
                    ipc: ns_mode(spec.host_ipc.unwrap_or(false)),
                    ..Default::default()
                }),
                privileged: spec.containers.iter().any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantity(c: &Container, kind: &str, res: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    let map = if kind == "limits" { r.limits.as_ref() } else { r.requests.as_ref() };
    map?.get(res).and_then(|q| skiff_runtime::quantity::parse_milli(&q.0))
}

/// cgroup limits from a container's requests and limits, as the kubelet
/// computes them (shares from the CPU request, CFS quota from the CPU
/// limit, the memory limit, an OOM score from the QoS class).
pub fn resources(pod: &Pod, c: &Container, node_memory: u64) -> api::LinuxContainerResources {
    let cpu_req = quantity(c, "requests", "cpu").or_else(|| quantity(c, "limits", "cpu"));
    let cpu_lim = quantity(c, "limits", "cpu");
    let mem_lim = quantity(c, "limits", "memory").map(|m| (m / 1000) as i64);
    let mem_req = quantity(c, "requests", "memory").or_else(|| quantity(c, "limits", "memory")).map(|m| (m / 1000) as i64).unwrap_or(0);
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ if node_memory > 0 => (1000 - 1000 * mem_req / node_memory as i64).clamp(2, 999),
        _ => 999,
    };
    api::LinuxContainerResources {
        cpu_shares: cpu_req.map(|m| ((m * 1024) / 1000).max(2) as i64).unwrap_or(2),
        cpu_period: if cpu_lim.is_some() { 100_000 } else { 0 },
        cpu_quota: cpu_lim.map(|m| ((m * 100_000) / 1000).max(1000) as i64).unwrap_or(0),
        memory_limit_in_bytes: mem_lim.unwrap_or(0),
        oom_score_adj,
        ..Default::default()
    }
}

/// The container config: `attempt` counts earlier instances (restarts).
pub fn container(
    pod: &Pod,
    c: &Container,
    image_ref: &str,
    env: Vec<(String, String)>,
    volumes: &HostPaths,
    attempt: u32,
    node_memory: u64,
) -> api::ContainerConfig {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let expand = |v: &Option<Vec<String>>| v.iter().flatten().map(|s| crate::env::expand(s, &vars)).collect::<Vec<_>>();
    let mounts = c
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|vm| {
            let base = volumes.get(&vm.name)?;
            let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty() && !s.split('/').any(|p| p == "..")) {
                Some(sub) => {
                    let p = base.join(sub);
                    if !p.exists() {
                        let _ = std::fs::create_dir_all(&p);
                    }
                    p
                }
                None => base.clone(),
            };
            Some(api::Mount {
                container_path: vm.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: vm.read_only.unwrap_or(false),
                propagation: match vm.mount_propagation.as_deref() {
                    Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer as i32,
                    Some("Bidirectional") => api::MountPropagation::PropagationBidirectional as i32,
                    _ => api::MountPropagation::PropagationPrivate as i32,
                },
                ..Default::default()
            })
        })
        .collect();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let run_as_user = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group));
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.into(), c.name.clone());
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(api::ImageSpec { image: image_ref.to_string(), ..Default::default() }),
        command: expand(&c.command),
        args: expand(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env.into_iter().map(|(key, value)| api::KeyValue { key, value }).collect(),
        mounts,
        labels,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources(pod, c, node_memory)),
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities: caps.map(|c| api::Capability {
                    add_capabilities: c.add.clone().unwrap_or_default(),
                    drop_capabilities: c.drop.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
                run_as_user: run_as_user.map(|value| api::Int64Value { value }),
                run_as_group: run_as_group.map(|value| api::Int64Value { value }),
                readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
                supplemental_groups: pod_sc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default(),
                no_new_privs: sc.and_then(|s| s.allow_privilege_escalation).is_some_and(|a| !a),
                namespace_options: Some(api::NamespaceOption {
                    network: if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
                        api::NamespaceMode::Node as i32
                    } else {
                        api::NamespaceMode::Pod as i32
                    },
                    pid: if pod.spec.as_ref().and_then(|s| s.share_process_namespace).unwrap_or(false) {
                        api::NamespaceMode::Pod as i32
                    } else {
                        api::NamespaceMode::Container as i32
                    },
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                masked_paths: if sc.and_then(|s| s.privileged).unwrap_or(false) { vec![] } else { default_masked() },
                readonly_paths: if sc.and_then(|s| s.privileged).unwrap_or(false) { vec![] } else { default_readonly() },
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn default_masked() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn default_readonly() -> Vec<String> {
    ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"].iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(res: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "n", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": res}]}}))
        .expect("pod")
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&pod(serde_json::json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(qos_class(&pod(serde_json::json!({"requests": {"cpu": "100m"}}))), "Burstable");
    }

    #[test]
    fn limits_become_cgroup_settings() {
        let p = pod(serde_json::json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}));
        let r = resources(&p, &p.spec.as_ref().expect("spec").containers[0], 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_quota, r.cpu_period), (50_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert!((2..=999).contains(&r.oom_score_adj));
    }
}
