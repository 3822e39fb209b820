//! Simulated nodes: hollow kubelets, like kwok's, for tests, demos and
//! scale benchmarks. Each registers a Node named `<prefix><i>` labelled
//! `node.skiff.dev/simulated=true`, renews its Lease every 10 s, and for
//! every pod bound to it reports the pod Running and Ready with an IP from
//! the node's podCIDR (Succeeded when its command is `true`; Failed, or
//! crash-looping under a restarting policy, when it is `false`), and
//! finishes graceful deletions at once. Nothing runs; stopping the process stops
//! the leases, so the node lifecycle controller marks the nodes NotReady.

#![deny(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::watch;

/// How the simulated nodes look.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix><i>`.
    pub prefix: String,
    /// CPU capacity per node (a quantity, e.g. `8`).
    pub cpu: String,
    /// Memory capacity per node (e.g. `32Gi`).
    pub memory: String,
    /// Pod capacity per node.
    pub pods: u32,
    /// The nodes' Lease duration; they renew every quarter of it, as the
    /// kubelet does (40 s → every 10 s).
    pub lease_duration_seconds: u32,
}

/// Label every simulated node carries.
pub const SIMULATED_LABEL: &str = "node.skiff.dev/simulated";
/// How many API writes the simulator keeps in flight.
const IN_FLIGHT: usize = 64;

fn node_object(name: &str, index: usize) -> Result<Node, serde_json::Error> {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", SIMULATED_LABEL: "true"},
            "annotations": {"node.skiff.dev/simulated-index": index.to_string()}},
        "spec": {}
    }))
}

fn node_status(index: usize, cfg: &Config) -> serde_json::Value {
    let now = skiff_runtime::now();
    let cond = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let res = json!({"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string(), "ephemeral-storage": "100Gi"});
    json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "simulated kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": node_ip(index)}, {"type": "Hostname", "address": format!("{}{index}", cfg.prefix)}],
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "simulated", "osImage": "skiff simulated node",
                     "containerRuntimeVersion": "simulated://1.0", "kubeletVersion": "v1.33.0-skiff-sim", "kubeProxyVersion": "",
                     "operatingSystem": "linux", "architecture": "amd64"},
        "phase": "Running",
    }})
}

/// 10.200.x.y for node `index`: unique per node, never a real host.
fn node_ip(index: usize) -> String {
    format!("10.200.{}.{}", (index / 250) % 256, index % 250 + 1)
}

/// Per-node pod IP allocation within the node's podCIDR (or a fallback
/// range when the node has none yet).
#[derive(Default)]
struct Ips {
    cidr: HashMap<String, String>,
    next: HashMap<String, u32>,
}

impl Ips {
    fn allocate(&mut self, node: &str, index: usize) -> String {
        let n = self.next.entry(node.to_string()).or_insert(1);
        *n += 1;
        let host = *n;
        match self.cidr.get(node).and_then(|c| c.split('/').next()).and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok()) {
            Some(base) => {
                let b = u32::from(base) + (host % 254).max(2);
                std::net::Ipv4Addr::from(b).to_string()
            }
            None => format!("10.{}.{}.{}", 96 + (index / 256) % 32, index % 256, (host % 254).max(2)),
        }
    }
}

/// Registers the nodes and runs them until `shutdown` flips to true.
pub async fn run(client: kube::Client, cfg: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let names: Vec<String> = (0..cfg.count).map(|i| format!("{}{i}", cfg.prefix)).collect();
    let index: Arc<HashMap<String, usize>> = Arc::new(names.iter().cloned().enumerate().map(|(i, n)| (n, i)).collect());
    // Owned items: the future must be Send for any caller (a spawned task).
    futures::stream::iter(names.clone().into_iter().enumerate())
        .map(|(i, name)| {
            let (nodes, leases, cfg) = (nodes.clone(), leases.clone(), cfg.clone());
            async move { register(&nodes, &leases, &name, i, &cfg).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    tracing::info!(count = cfg.count, prefix = %cfg.prefix, "simulated nodes registered");

    let renewals = {
        let (leases, names, cfg) = (leases.clone(), names.clone(), cfg.clone());
        async move {
            let every = Duration::from_millis((cfg.lease_duration_seconds.max(1) as u64 * 1000 / 4).max(250));
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = skiff_runtime::micro_now();
                futures::stream::iter(names.clone())
                    .map(|n| {
                        let (leases, now) = (leases.clone(), now.clone());
                        async move {
                            let p = json!({"spec": {"renewTime": now}});
                            if let Err(e) = leases.patch(&n, &PatchParams::default(), &Patch::Merge(&p)).await {
                                tracing::warn!(node = %n, error = %e, "lease renewal failed");
                            }
                        }
                    })
                    .buffer_unordered(IN_FLIGHT)
                    .collect::<Vec<()>>()
                    .await;
            }
        }
    };

    let ips = Arc::new(Mutex::new(Ips::default()));
    let node_informer = Informer::start(nodes.clone(), watcher::Config::default().labels(&format!("{SIMULATED_LABEL}=true")), shutdown.clone());
    let cidrs = {
        let (ips, index) = (ips.clone(), index.clone());
        node_informer.changes().for_each(move |change| {
            if let Change::Applied(n) = change {
                let name = n.metadata.name.clone().unwrap_or_default();
                if let (true, Some(cidr)) = (index.contains_key(&name), n.spec.as_ref().and_then(|s| s.pod_cidr.clone())) {
                    if let Ok(mut ips) = ips.lock() {
                        ips.cidr.insert(name, cidr);
                    }
                }
            }
            futures::future::ready(())
        })
    };

    let pod_informer = Informer::<Pod>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let handled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let pods = pod_informer.changes().for_each(move |change| {
        let pod = match change {
            Change::Applied(p) => Some((*p).clone()),
            Change::Deleted(p) => {
                if let (Some(uid), Ok(mut h)) = (p.metadata.uid.clone(), handled.lock()) {
                    h.remove(&uid);
                }
                None
            }
            Change::Synced => None,
        };
        if let Some(pod) = pod {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            if let Some(&i) = index.get(&node) {
                let (client, ips, handled, sem) = (client.clone(), ips.clone(), handled.clone(), sem.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = sem.acquire().await else { return };
                    if let Err(e) = sync_pod(&client, pod, i, &ips, &handled).await {
                        tracing::debug!(error = %e, "pod status not written");
                    }
                });
            }
        }
        futures::future::ready(())
    });

    tokio::select! {
        _ = renewals => Ok(()),
        _ = cidrs => Ok(()),
        _ = pods => Ok(()),
        _ = shutdown.changed() => Ok(()),
    }
}

async fn register(nodes: &Api<Node>, leases: &Api<Lease>, name: &str, i: usize, cfg: &Config) -> Result<(), kube::Error> {
    let node = node_object(name, i).map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e),
    }
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(node_status(i, cfg))).await?;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": []},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": cfg.lease_duration_seconds, "renewTime": skiff_runtime::micro_now()}
    }))
    .map_err(kube::Error::SerdeError)?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let p = json!({"spec": {"renewTime": skiff_runtime::micro_now(), "holderIdentity": name}});
            leases.patch(name, &PatchParams::default(), &Patch::Merge(&p)).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// What a simulated pod does, from its containers' commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Keeps running (any other command).
    Runs,
    /// Every container's command is `true`: it completes.
    Succeeds,
    /// Some container's command is `false`: it exits with 1.
    Fails,
}

fn command_of(c: &k8s_openapi::api::core::v1::Container) -> Vec<&str> {
    c.command.iter().flatten().chain(c.args.iter().flatten()).map(String::as_str).collect()
}

fn outcome(pod: &Pod) -> Outcome {
    let Some(spec) = pod.spec.as_ref() else { return Outcome::Runs };
    let is = |word: &str, cmd: &[&str]| match cmd {
        [one] => *one == word || *one == format!("/bin/{word}"),
        ["sh" | "/bin/sh", "-c", script] => *script == word,
        _ => false,
    };
    if spec.containers.iter().any(|c| is("false", &command_of(c))) {
        return Outcome::Fails;
    }
    if !spec.containers.is_empty() && spec.containers.iter().all(|c| is("true", &command_of(c))) {
        return Outcome::Succeeds;
    }
    Outcome::Runs
}

async fn sync_pod(client: &kube::Client, pod: Pod, index: usize, ips: &Mutex<Ips>, handled: &Mutex<HashSet<String>>) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        // The containers "stop" at once: finish the graceful deletion.
        let dp =
            DeleteParams { grace_period_seconds: Some(0), preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }), ..Default::default() };
        return match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if phase != "Pending" && !phase.is_empty() {
        return Ok(());
    }
    {
        let Ok(mut h) = handled.lock() else { return Ok(()) };
        if !h.insert(uid.clone()) {
            return Ok(());
        }
    }
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let ip = ips.lock().map(|mut i| i.allocate(&node, index)).unwrap_or_default();
    let now = skiff_runtime::now();
    let outcome = outcome(&pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let restarts = spec.restart_policy.as_deref() != Some("Never");
    // A failing container under a restarting policy crash-loops; otherwise
    // the pod ends. The phase follows.
    let (phase, ready) = match (outcome, restarts) {
        (Outcome::Runs, _) => ("Running", true),
        (Outcome::Succeeds, _) => ("Succeeded", false),
        (Outcome::Fails, false) => ("Failed", false),
        (Outcome::Fails, true) => ("Running", false),
    };
    let cid = |c: &k8s_openapi::api::core::v1::Container| format!("sim://{uid}/{}", c.name);
    let status_of = |c: &k8s_openapi::api::core::v1::Container| {
        let fails = command_of(c).iter().any(|w| *w == "false" || *w == "/bin/false");
        let (state, last, restart_count) = match (outcome, fails, restarts) {
            (Outcome::Succeeds, _, _) => {
                (json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now, "containerID": cid(c)}}), json!({}), 0)
            }
            (Outcome::Fails, true, false) => {
                (json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now, "containerID": cid(c)}}), json!({}), 0)
            }
            (Outcome::Fails, true, true) => (
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off 10s restarting failed container={} pod={name}", c.name)}}),
                json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now, "containerID": cid(c)}}),
                1,
            ),
            _ => (json!({"running": {"startedAt": now}}), json!({}), 0),
        };
        let up = state.get("running").is_some();
        json!({"name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()), "containerID": cid(c),
               "ready": up && ready, "started": up, "restartCount": restart_count, "state": state, "lastState": last})
    };
    let init_done = |c: &k8s_openapi::api::core::v1::Container| {
        json!({"name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()), "containerID": cid(c), "ready": true, "restartCount": 0,
               "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now, "containerID": cid(c)}}})
    };
    let containers: Vec<serde_json::Value> = spec.containers.iter().map(status_of).collect();
    let inits: Vec<serde_json::Value> = spec.init_containers.iter().flatten().map(init_done).collect();
    let ready_s = if ready { "True" } else { "False" };
    let reason = match phase {
        "Succeeded" | "Failed" => json!("PodCompleted"),
        _ if !ready => json!("ContainersNotReady"),
        _ => json!(null),
    };
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": now, "reason": if s == "True" { json!(null) } else { reason.clone() }});
    let status = json!({"status": {
        "phase": phase,
        "conditions": [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"), cond("Ready", ready_s), cond("ContainersReady", ready_s), cond("PodScheduled", "True")],
        "hostIP": node_ip(index), "hostIPs": [{"ip": node_ip(index)}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": containers,
        "initContainerStatuses": inits,
    }});
    match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await {
        Ok(_) => Ok(()),
        Err(e) => {
            if let Ok(mut h) = handled.lock() {
                h.remove(&uid);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_decide_what_a_simulated_pod_does() {
        let p = |cmd: serde_json::Value| -> Pod { serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "command": cmd}]}})).expect("pod") };
        assert_eq!(outcome(&p(json!(["true"]))), Outcome::Succeeds);
        assert_eq!(outcome(&p(json!(["sh", "-c", "true"]))), Outcome::Succeeds);
        assert_eq!(outcome(&p(json!(["false"]))), Outcome::Fails);
        assert_eq!(outcome(&p(json!(["/bin/sh", "-c", "false"]))), Outcome::Fails);
        assert_eq!(outcome(&p(json!(["sleep", "3600"]))), Outcome::Runs);
        assert_eq!(outcome(&p(json!(null))), Outcome::Runs);
    }

    #[test]
    fn pod_ips_come_from_the_node_cidr() {
        let mut ips = Ips::default();
        ips.cidr.insert("sim-0".into(), "10.42.3.0/24".into());
        let a = ips.allocate("sim-0", 0);
        let b = ips.allocate("sim-0", 0);
        assert!(a.starts_with("10.42.3.") && b.starts_with("10.42.3.") && a != b, "{a} {b}");
    }
}
