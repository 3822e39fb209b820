//! One worker per pod, level-triggered: each sync compares what the API
//! asks for with what the runtime has and takes the next steps (sandbox,
//! init containers in order, app containers, restarts with back-off,
//! probes), then reports the pod's status. A worker wakes on a change of
//! its pod (API watch), of its containers (the PLEG relist), or when a
//! back-off or probe falls due.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use skiff_cri::{api, Runtime};
use skiff_runtime::events::{EventType, Recorder};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::probe::{self, Kind, Tally};
use crate::spec::{self, CONTAINER_NAME, POD_UID};
use crate::volumes::{self, HostPaths};

/// What every pod worker shares.
pub struct Ctx {
    /// The API client (the node's identity).
    pub client: kube::Client,
    /// The container runtime.
    pub rt: Runtime,
    /// Writes the pod's Events.
    pub recorder: Recorder,
    /// The node's InternalIP (hostIP, and podIP of host-network pods).
    pub node_ip: String,
    /// Per-pod directories (volumes).
    pub pods_dir: PathBuf,
    /// Container logs, `<ns>_<pod>_<uid>/<container>/<n>.log`.
    pub logs_dir: PathBuf,
    /// The node's memory, for OOM scores.
    pub node_memory: u64,
    /// The node's DNS settings, for pods' resolv.conf.
    pub dns: crate::dns::Settings,
    /// Every Service, from a watch: containers' Service variables.
    pub services: Arc<skiff_runtime::informer::Informer<k8s_openapi::api::core::v1::Service>>,
}

/// The restart back-off: 10 s doubling to 5 min, as the kubelet's.
fn backoff_delay(count: u32) -> Duration {
    Duration::from_secs((10u64 << count.min(5)).min(300))
}

/// What a sync leaves to do.
enum Step {
    /// Sync again after this long at the latest.
    Again(Duration),
    /// The pod is gone; the worker ends.
    Done,
}

/// The runtime's view of one container instance.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    attempt: u32,
    state: i32,
    status: Option<api::ContainerStatus>,
}

struct Worker {
    ctx: Arc<Ctx>,
    /// Restart back-off per container name: (restarts so far, not before).
    backoff: HashMap<String, (u32, Instant)>,
    /// Image pull back-off per image.
    pull_backoff: HashMap<String, (u32, Instant)>,
    /// Why a container that has no instance yet waits (ErrImagePull, …).
    waiting: HashMap<String, (String, String)>,
    probes: HashMap<(String, Kind), Tally>,
    last_status: Option<Value>,
    start_time: Option<String>,
    /// Containers whose SIGKILL exit was re-read for an OOM reason.
    oom_checked: std::sync::Mutex<std::collections::HashSet<String>>,
    volumes: Option<(HostPaths, Instant)>,
}

/// The pod's ephemeral containers as containers (the same fields; the
/// target container's process namespace is not shared yet).
fn ephemeral(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| serde_json::to_value(e).ok().and_then(|v| serde_json::from_value::<Container>(v).ok()))
        .collect()
}

fn ns_name(pod: &Pod) -> (String, String, String) {
    let m = &pod.metadata;
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default(), m.uid.clone().unwrap_or_default())
}

fn rfc3339_nanos(ns: i64) -> Option<String> {
    (ns > 0)
        .then(|| chrono::DateTime::from_timestamp(ns / 1_000_000_000, (ns % 1_000_000_000) as u32))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Runs the worker for one pod until the pod is gone or the kubelet stops.
pub async fn run(ctx: Arc<Ctx>, mut pod_rx: watch::Receiver<Option<Pod>>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut w = Worker {
        ctx,
        backoff: HashMap::new(),
        pull_backoff: HashMap::new(),
        waiting: HashMap::new(),
        probes: HashMap::new(),
        last_status: None,
        start_time: None,
        oom_checked: Default::default(),
        volumes: None,
    };
    let mut last: Option<Pod> = None;
    loop {
        let pod = pod_rx.borrow_and_update().clone();
        let step = match pod {
            Some(p) => {
                last = Some(p.clone());
                w.sync(&p).await
            }
            None => {
                // Deleted from the API without us (force deletion): stop everything now.
                if let Some(p) = &last {
                    w.terminate(p, 0).await;
                }
                Step::Done
            }
        };
        let next = match step {
            Step::Done => return,
            Step::Again(d) => d,
        };
        tokio::select! {
            r = pod_rx.changed() => if r.is_err() { return },
            _ = wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl Worker {
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.ctx.pods_dir.join(uid)
    }

    async fn sandboxes(&self, uid: &str) -> Vec<api::PodSandbox> {
        let filter = api::PodSandboxFilter { label_selector: [(POD_UID.to_string(), uid.to_string())].into(), ..Default::default() };
        match self.ctx.rt.runtime.clone().list_pod_sandbox(api::ListPodSandboxRequest { filter: Some(filter) }).await {
            Ok(r) => r.into_inner().items,
            Err(e) => {
                tracing::warn!(pod = uid, error = %e, "listing sandboxes");
                Vec::new()
            }
        }
    }

    async fn instances(&self, sandbox: &str) -> HashMap<String, Vec<Instance>> {
        let filter = api::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
        let list = match self.ctx.rt.runtime.clone().list_containers(api::ListContainersRequest { filter: Some(filter) }).await {
            Ok(r) => r.into_inner().containers,
            Err(_) => Vec::new(),
        };
        let mut by_name: HashMap<String, Vec<Instance>> = HashMap::new();
        for c in list {
            let name = c.labels.get(CONTAINER_NAME).cloned().or_else(|| c.metadata.as_ref().map(|m| m.name.clone())).unwrap_or_default();
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            by_name.entry(name).or_default().push(Instance { id: c.id, attempt, state: c.state, status: None });
        }
        for v in by_name.values_mut() {
            v.sort_by_key(|i| std::cmp::Reverse(i.attempt));
            // The newest two carry state and lastState; details for those only.
            for inst in v.iter_mut().take(2) {
                inst.status = self.runtime_status(&inst.id).await;
                // containerd's CRI learns of an OOM kill from a separate event
                // that it can apply after the exit, late under load (and the
                // PLEG sees exits within milliseconds): a SIGKILL exit is read
                // again for up to 4 s from when it is first seen, once per
                // container, so an OOM kill is reported as OOMKilled, not Error
                // (1.5 s was too short with 18 nodes' containerds busy at once).
                let unsettled_kill = |s: &Option<api::ContainerStatus>| s.as_ref().is_some_and(|s| s.exit_code == 137 && s.reason != "OOMKilled");
                if unsettled_kill(&inst.status) && self.oom_checked.lock().unwrap_or_else(|e| e.into_inner()).insert(inst.id.clone()) {
                    for _ in 0..40 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        inst.status = self.runtime_status(&inst.id).await;
                        if !unsettled_kill(&inst.status) {
                            break;
                        }
                    }
                }
            }
        }
        by_name
    }

    /// The CRI runtime handler of the pod's RuntimeClass (empty: the
    /// runtime's default).
    async fn runtime_handler(&self, pod: &Pod) -> Result<String, String> {
        let Some(name) = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone()).filter(|n| !n.is_empty()) else { return Ok(String::new()) };
        let classes: kube::Api<k8s_openapi::api::node::v1::RuntimeClass> = kube::Api::all(self.ctx.client.clone());
        match classes.get_opt(&name).await {
            Ok(Some(c)) => Ok(c.handler),
            Ok(None) => Err(format!("RuntimeClass {name:?} not found")),
            Err(e) => Err(format!("getting RuntimeClass {name:?}: {e}")),
        }
    }

    async fn runtime_status(&self, id: &str) -> Option<api::ContainerStatus> {
        let req = api::ContainerStatusRequest { container_id: id.to_string(), verbose: false };
        self.ctx.rt.runtime.clone().container_status(req).await.ok().and_then(|r| r.into_inner().status)
    }

    async fn sync(&mut self, pod: &Pod) -> Step {
        let (ns, name, uid) = ns_name(pod);
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            self.terminate(pod, grace).await;
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                ..Default::default()
            };
            return match api.delete(&name, &dp).await {
                Ok(_) => Step::Done,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Step::Done,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "final delete failed; retrying");
                    Step::Again(Duration::from_secs(1))
                }
            };
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            // Finished: release the sandbox (and its IP); logs stay until deletion.
            for sb in self.sandboxes(&uid).await.into_iter().filter(|s| s.state == api::PodSandboxState::SandboxReady as i32) {
                let _ = self.ctx.rt.runtime.clone().stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: sb.id }).await;
            }
            return Step::Again(Duration::from_secs(300));
        }
        if self.start_time.is_none() {
            self.start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string()).or_else(|| Some(skiff_runtime::now()));
        }
        // Volumes: set up before the sandbox; configMap/secret contents refreshed every few seconds.
        let stale = self.volumes.as_ref().is_none_or(|(_, at)| at.elapsed() > Duration::from_secs(5));
        if stale {
            match volumes::prepare(&self.ctx.client, pod, &self.pod_dir(&uid)).await {
                Ok(v) => self.volumes = Some((v, Instant::now())),
                Err(e) => {
                    self.ctx.recorder.record(pod, EventType::Warning, "FailedMount", &e.to_string());
                    if self.volumes.is_none() {
                        self.report(pod, None, &HashMap::new(), false, false).await;
                        return Step::Again(Duration::from_secs(2));
                    }
                }
            }
        }
        let sandboxes = self.sandboxes(&uid).await;
        let ready = sandboxes.iter().filter(|s| s.state == api::PodSandboxState::SandboxReady as i32).max_by_key(|s| s.created_at).cloned();
        let sandbox_id = match ready {
            Some(s) => s.id,
            None => {
                let attempt = sandboxes.iter().filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1)).max().unwrap_or(0);
                for old in &sandboxes {
                    let _ = self.ctx.rt.runtime.clone().remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: old.id.clone() }).await;
                }
                let config = spec::sandbox(pod, &self.ctx.logs_dir, attempt, &self.ctx.dns);
                let _ = std::fs::create_dir_all(&config.log_directory);
                let runtime_handler = match self.runtime_handler(pod).await {
                    Ok(h) => h,
                    Err(msg) => {
                        self.ctx.recorder.record(pod, EventType::Warning, "FailedCreatePodSandBox", &format!("Failed to create pod sandbox: {msg}"));
                        self.report(pod, None, &HashMap::new(), false, false).await;
                        return Step::Again(Duration::from_secs(5));
                    }
                };
                match self.ctx.rt.runtime.clone().run_pod_sandbox(api::RunPodSandboxRequest { config: Some(config), runtime_handler }).await {
                    Ok(r) => r.into_inner().pod_sandbox_id,
                    Err(e) => {
                        let msg = format!("Failed to create pod sandbox: {}", e.message());
                        self.ctx.recorder.record(pod, EventType::Warning, "FailedCreatePodSandBox", &msg);
                        self.report(pod, None, &HashMap::new(), false, false).await;
                        return Step::Again(Duration::from_secs(5));
                    }
                }
            }
        };
        let pod_ip = self.pod_ip(pod, &sandbox_id).await;
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let mut by_name = self.instances(&sandbox_id).await;
        let mut changed = false;
        let mut next = Duration::from_secs(10);

        // Init containers, in order: each must succeed before the next starts.
        let mut initialized = true;
        let mut init_failed = false;
        for c in spec.init_containers.iter().flatten() {
            let latest = by_name.get(&c.name).and_then(|v| v.first()).cloned();
            match latest {
                None => {
                    changed |= self.start(pod, c, &sandbox_id, 0, pod_ip.as_deref()).await;
                    initialized = false;
                    break;
                }
                Some(i) if i.state == api::ContainerState::ContainerExited as i32 => {
                    let code = i.status.as_ref().map(|s| s.exit_code).unwrap_or(0);
                    if code == 0 {
                        continue;
                    }
                    initialized = false;
                    if policy == "Never" {
                        init_failed = true;
                    } else if let Some(wait) = self.restart(pod, c, &sandbox_id, &i, pod_ip.as_deref()).await {
                        next = next.min(wait);
                    } else {
                        changed = true;
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                let latest = by_name.get(&c.name).and_then(|v| v.first()).cloned();
                match latest {
                    None => changed |= self.start(pod, c, &sandbox_id, 0, pod_ip.as_deref()).await,
                    Some(i) if i.state == api::ContainerState::ContainerExited as i32 => {
                        let code = i.status.as_ref().map(|s| s.exit_code).unwrap_or(0);
                        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                        if restart {
                            match self.restart(pod, c, &sandbox_id, &i, pod_ip.as_deref()).await {
                                Some(wait) => next = next.min(wait),
                                None => changed = true,
                            }
                        }
                    }
                    Some(i) if i.state == api::ContainerState::ContainerRunning as i32 => {
                        if let Some(wait) = self.probe(pod, c, &i, pod_ip.as_deref().unwrap_or("")).await {
                            next = next.min(wait);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        // Ephemeral containers (`kubectl debug`): started once, never
        // restarted, never probed.
        for c in ephemeral(&spec) {
            if !by_name.contains_key(&c.name) && !self.waiting.contains_key(&c.name) {
                changed |= self.start(pod, &c, &sandbox_id, 0, pod_ip.as_deref()).await;
            }
        }
        if changed {
            by_name = self.instances(&sandbox_id).await;
        }
        self.report(pod, pod_ip, &by_name, initialized, init_failed).await;
        Step::Again(next)
    }

    async fn pod_ip(&self, pod: &Pod, sandbox: &str) -> Option<String> {
        if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
            return Some(self.ctx.node_ip.clone());
        }
        let req = api::PodSandboxStatusRequest { pod_sandbox_id: sandbox.into(), verbose: false };
        let st = self.ctx.rt.runtime.clone().pod_sandbox_status(req).await.ok()?.into_inner().status?;
        st.network.map(|n| n.ip).filter(|ip| !ip.is_empty())
    }

    /// Restarts an exited container unless it is backing off; returns how
    /// long the back-off still runs.
    async fn restart(&mut self, pod: &Pod, c: &Container, sandbox: &str, last: &Instance, pod_ip: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        // A container that ran for 10 minutes starts its back-off over.
        let ran_long = last.status.as_ref().is_some_and(|s| s.finished_at - s.started_at > 600_000_000_000);
        if ran_long {
            self.backoff.remove(&c.name);
        }
        if let Some((count, until)) = self.backoff.get(&c.name).copied() {
            if now < until {
                let (_, name, uid) = ns_name(pod);
                let msg = format!(
                    "back-off {}s restarting failed container={} pod={name}_{}({uid})",
                    backoff_delay(count.saturating_sub(1)).as_secs(),
                    c.name,
                    pod.metadata.namespace.as_deref().unwrap_or("")
                );
                self.waiting.insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
                if self.last_status.as_ref().is_some_and(|s| !s.to_string().contains("CrashLoopBackOff")) {
                    self.ctx.recorder.record(
                        pod,
                        EventType::Warning,
                        "BackOff",
                        &format!("Back-off restarting failed container {} in pod {name}_{}({uid})", c.name, pod.metadata.namespace.as_deref().unwrap_or("")),
                    );
                }
                return Some(until - now);
            }
        }
        let count = self.backoff.get(&c.name).map(|b| b.0).unwrap_or(0);
        self.backoff.insert(c.name.clone(), (count + 1, now + backoff_delay(count)));
        self.waiting.remove(&c.name);
        self.probes.retain(|(n, _), _| *n != c.name);
        // Keep the last instance (for lastState and --previous logs); drop older ones.
        if let Some(old) = self.instances(sandbox).await.get(&c.name) {
            for i in old.iter().skip(1) {
                let _ = self.ctx.rt.runtime.clone().remove_container(api::RemoveContainerRequest { container_id: i.id.clone() }).await;
            }
        }
        self.start(pod, c, sandbox, last.attempt + 1, pod_ip).await;
        None
    }

    /// Pulls (per policy), creates and starts one container. Returns true
    /// if a container was created.
    async fn start(&mut self, pod: &Pod, c: &Container, sandbox: &str, attempt: u32, pod_ip: Option<&str>) -> bool {
        let image_ref = match self.ensure_image(pod, c).await {
            Ok(r) => r,
            Err((reason, message)) => {
                self.waiting.insert(c.name.clone(), (reason, message));
                return false;
            }
        };
        let mut with_ip = pod.clone();
        if let (Some(ip), Some(st)) = (pod_ip, with_ip.status.as_mut()) {
            st.pod_ip = Some(ip.to_string());
            st.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP { ip: ip.to_string() }]);
            st.host_ip = Some(self.ctx.node_ip.clone());
        }
        let env = match crate::env::resolve(&self.ctx.client, &self.ctx.services.store(), &with_ip, c).await {
            Ok(e) => e,
            Err(message) => {
                self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {message}"));
                self.waiting.insert(c.name.clone(), ("CreateContainerConfigError".into(), message));
                return false;
            }
        };
        let no_volumes = HostPaths::new();
        let vols = self.volumes.as_ref().map(|(v, _)| v).unwrap_or(&no_volumes);
        let mut config = spec::container(&with_ip, c, &image_ref, env, vols, attempt, self.ctx.node_memory);
        // The kubelet-managed /etc/hosts, unless the container mounts its own.
        let own_hosts = config.mounts.iter().any(|m| m.container_path == "/etc/hosts");
        if let (false, Some(ip), Some(uid)) = (own_hosts, pod_ip, pod.metadata.uid.as_deref()) {
            if let Some(text) = crate::dns::hosts_file(pod, ip, &self.ctx.dns.cluster_domain) {
                let path = self.pod_dir(uid).join("etc-hosts");
                if std::fs::create_dir_all(self.pod_dir(uid)).and_then(|()| std::fs::write(&path, text)).is_ok() {
                    config.mounts.push(api::Mount { container_path: "/etc/hosts".into(), host_path: path.display().to_string(), ..Default::default() });
                }
            }
        }
        let sandbox_config = spec::sandbox(pod, &self.ctx.logs_dir, 0, &self.ctx.dns);
        let _ = std::fs::create_dir_all(spec::log_directory(&self.ctx.logs_dir, pod).join(&c.name));
        let mut rt = self.ctx.rt.runtime.clone();
        let req = api::CreateContainerRequest { pod_sandbox_id: sandbox.into(), config: Some(config), sandbox_config: Some(sandbox_config) };
        let id = match rt.create_container(req).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {}", e.message()));
                self.waiting.insert(c.name.clone(), ("CreateContainerError".into(), e.message().to_string()));
                return false;
            }
        };
        self.ctx.recorder.record(pod, EventType::Normal, "Created", &format!("Created container {}", c.name));
        if let Err(e) = rt.start_container(api::StartContainerRequest { container_id: id.clone() }).await {
            self.ctx.recorder.record(pod, EventType::Warning, "Failed", &format!("Error: {}", e.message()));
            return true;
        }
        self.ctx.recorder.record(pod, EventType::Normal, "Started", &format!("Started container {}", c.name));
        self.waiting.remove(&c.name);
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let (ns, name, uid) = ns_name(pod);
            let who = format!("{name}_{ns}({uid})");
            if let Err(msg) = crate::hook::run(&self.ctx.rt, h, c, &id, pod_ip.unwrap_or(""), &who, Duration::from_secs(30)).await {
                // As the kubelet: the hook's failure is an event, and the container is killed.
                self.ctx.recorder.record(pod, EventType::Warning, "FailedPostStartHook", &msg);
                self.ctx.recorder.record(pod, EventType::Normal, "Killing", &format!("FailedPostStartHook: stopping container {}", c.name));
                let _ = rt.stop_container(api::StopContainerRequest { container_id: id, timeout: 0 }).await;
            }
        }
        true
    }

    async fn ensure_image(&mut self, pod: &Pod, c: &Container) -> Result<String, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into());
        let mut images = self.ctx.rt.images.clone();
        let spec = api::ImageSpec { image: image.clone(), ..Default::default() };
        let present = images.image_status(api::ImageStatusRequest { image: Some(spec.clone()), verbose: false }).await.ok().and_then(|r| r.into_inner().image);
        if let Some(img) = &present {
            if policy != "Always" {
                if !self.waiting.contains_key(&c.name) {
                    self.ctx.recorder.record(pod, EventType::Normal, "Pulled", &format!("Container image \"{image}\" already present on machine"));
                }
                return Ok(img.id.clone());
            }
        }
        if policy == "Never" {
            let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
            self.ctx.recorder.record(pod, EventType::Warning, "ErrImageNeverPull", &msg);
            return Err(("ErrImageNeverPull".into(), msg));
        }
        let now = Instant::now();
        if let Some((_, until)) = self.pull_backoff.get(&image) {
            if now < *until {
                return Err(("ImagePullBackOff".into(), format!("Back-off pulling image \"{image}\"")));
            }
        }
        self.ctx.recorder.record(pod, EventType::Normal, "Pulling", &format!("Pulling image \"{image}\""));
        let started = std::time::Instant::now();
        match images.pull_image(api::PullImageRequest { image: Some(spec), auth: None, sandbox_config: None }).await {
            Ok(r) => {
                self.pull_backoff.remove(&image);
                self.ctx.recorder.record(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    &format!("Successfully pulled image \"{image}\" in {:.3}s", started.elapsed().as_secs_f64()),
                );
                Ok(r.into_inner().image_ref)
            }
            Err(e) => {
                let count = self.pull_backoff.get(&image).map(|b| b.0).unwrap_or(0);
                self.pull_backoff.insert(image.clone(), (count + 1, now + backoff_delay(count)));
                let msg = format!("Failed to pull image \"{image}\": {}", e.message());
                self.ctx.recorder.record(pod, EventType::Warning, "Failed", &msg);
                self.ctx.recorder.record(pod, EventType::Warning, "Failed", "Error: ErrImagePull");
                Err(("ErrImagePull".into(), msg))
            }
        }
    }

    /// Runs the container's due probes; a failed liveness (or startup)
    /// probe kills the container, and the next sync restarts it.
    /// Returns when the next probe is due.
    async fn probe(&mut self, pod: &Pod, c: &Container, inst: &Instance, pod_ip: &str) -> Option<Duration> {
        let started_ns = inst.status.as_ref().map(|s| s.started_at).unwrap_or(0);
        let since_start = Duration::from_nanos((chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - started_ns).max(0) as u64);
        let started = Instant::now().checked_sub(since_start).unwrap_or_else(Instant::now);
        let mut next: Option<Duration> = None;
        let startup_done = probe::of(c, Kind::Startup).is_none()
            || self.probes.get(&(c.name.clone(), Kind::Startup)).is_some_and(|t| t.container_id == inst.id && t.passing && t.next > started);
        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            let Some(p) = probe::of(c, kind) else { continue };
            if kind != Kind::Startup && !startup_done {
                continue;
            }
            let key = (c.name.clone(), kind);
            let tally = self.probes.entry(key.clone()).or_insert_with(|| Tally::new(&inst.id, kind, p, started));
            if tally.container_id != inst.id {
                *tally = Tally::new(&inst.id, kind, p, started);
            }
            if kind == Kind::Startup && tally.passing && tally.next > started && startup_done {
                continue;
            }
            let now = Instant::now();
            if tally.next > now {
                next = Some(next.map_or(tally.next - now, |n: Duration| n.min(tally.next - now)));
                continue;
            }
            let result = probe::run(&self.ctx.rt, p, c, &inst.id, pod_ip).await;
            let Some(tally) = self.probes.get_mut(&key) else { continue };
            let ok = result.is_ok();
            let flipped = tally.record(p, ok, result.err().unwrap_or_default());
            let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
            next = Some(next.map_or(period, |n| n.min(period)));
            let what = match kind {
                Kind::Startup => "Startup",
                Kind::Liveness => "Liveness",
                Kind::Readiness => "Readiness",
            };
            if !ok {
                self.ctx.recorder.record(pod, EventType::Warning, "Unhealthy", &format!("{what} probe failed: {}", tally.last_message));
            }
            if flipped && !tally.passing && kind != Kind::Readiness {
                let msg = format!("Container {} failed {} probe, will be restarted", c.name, what.to_lowercase());
                self.ctx.recorder.record(pod, EventType::Normal, "Killing", &msg);
                let grace = p.termination_grace_period_seconds.or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds)).unwrap_or(30);
                // Stopping takes up to the grace period: in the background, so
                // the pod's other containers keep being probed meanwhile; the
                // relist sees the exit and the next sync restarts it.
                let (mut rt, id) = (self.ctx.rt.runtime.clone(), inst.id.clone());
                tokio::spawn(async move {
                    let _ = rt.stop_container(api::StopContainerRequest { container_id: id, timeout: grace }).await;
                });
                self.probes.retain(|(n, _), _| *n != c.name);
                return Some(Duration::from_millis(100));
            }
        }
        next
    }

    fn ready(&self, c: &Container, inst: &Instance) -> bool {
        let passing = |k: Kind| probe::of(c, k).is_none() || self.probes.get(&(c.name.clone(), k)).is_some_and(|t| t.container_id == inst.id && t.passing);
        inst.state == api::ContainerState::ContainerRunning as i32 && passing(Kind::Startup) && passing(Kind::Readiness)
    }

    fn container_status(&self, c: &Container, insts: Option<&Vec<Instance>>) -> (Value, &'static str) {
        let image = c.image.clone().unwrap_or_default();
        let terminated = |i: &Instance| {
            let s = i.status.clone().unwrap_or_default();
            let reason = if !s.reason.is_empty() && s.reason != "Completed" && s.reason != "Error" {
                s.reason.clone()
            } else if s.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            json!({"terminated": {"exitCode": s.exit_code, "reason": reason, "message": (!s.message.is_empty()).then_some(s.message.clone()),
                   "startedAt": rfc3339_nanos(s.started_at), "finishedAt": rfc3339_nanos(s.finished_at), "containerID": format!("containerd://{}", i.id)}})
        };
        let Some(latest) = insts.and_then(|v| v.first()) else {
            let (reason, message) = self.waiting.get(&c.name).cloned().unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
            let w = if message.is_empty() { json!({"reason": reason}) } else { json!({"reason": reason, "message": message}) };
            return (
                json!({"name": c.name, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": 0, "state": {"waiting": w}, "lastState": {}}),
                "waiting",
            );
        };
        let s = latest.status.clone().unwrap_or_default();
        let last_state = insts.and_then(|v| v.get(1)).map(terminated).unwrap_or_else(|| json!({}));
        let (state, last_state, kind) = if latest.state == api::ContainerState::ContainerRunning as i32 {
            (json!({"running": {"startedAt": rfc3339_nanos(s.started_at)}}), last_state, "running")
        } else if latest.state == api::ContainerState::ContainerExited as i32 {
            match self.waiting.get(&c.name) {
                // Backing off before a restart: waiting, with the exit as lastState.
                Some((reason, message)) => (json!({"waiting": {"reason": reason, "message": message}}), terminated(latest), "restarting"),
                None => (terminated(latest), last_state, if s.exit_code == 0 { "succeeded" } else { "failed" }),
            }
        } else {
            (json!({"waiting": {"reason": "ContainerCreating"}}), last_state, "waiting")
        };
        let image_id = if s.image_ref.is_empty() { String::new() } else { s.image_ref.clone() };
        (
            json!({"name": c.name, "image": image, "imageID": image_id, "containerID": format!("containerd://{}", latest.id),
                   "ready": self.ready(c, latest), "started": kind == "running", "restartCount": latest.attempt, "state": state, "lastState": last_state}),
            kind,
        )
    }

    /// Computes the pod's status and writes it when it changed.
    async fn report(&mut self, pod: &Pod, pod_ip: Option<String>, by_name: &HashMap<String, Vec<Instance>>, initialized: bool, init_failed: bool) {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let inits: Vec<Value> = spec.init_containers.iter().flatten().map(|c| self.container_status(c, by_name.get(&c.name)).0).collect();
        let ephemerals: Vec<Value> = ephemeral(&spec).iter().map(|c| self.container_status(c, by_name.get(&c.name)).0).collect();
        let mut kinds = Vec::new();
        let mut statuses = Vec::new();
        let mut all_ready = !spec.containers.is_empty();
        for c in &spec.containers {
            let (st, kind) = self.container_status(c, by_name.get(&c.name));
            all_ready &= st["ready"] == json!(true);
            statuses.push(st);
            kinds.push(kind);
        }
        let phase = if init_failed {
            "Failed"
        } else if !initialized || kinds.contains(&"waiting") {
            "Pending"
        } else if kinds.iter().any(|k| *k == "running" || *k == "restarting") {
            "Running"
        } else {
            let any_failed = kinds.contains(&"failed");
            match policy.as_str() {
                "Never" if any_failed => "Failed",
                "Never" => "Succeeded",
                "OnFailure" if !any_failed => "Succeeded",
                _ => "Running",
            }
        };
        let ready = all_ready && initialized && phase == "Running";
        let previous = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let now = skiff_runtime::now();
        let cond = |t: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == t && c.status == status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| now.clone());
            json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since, "reason": if ok { None } else { reason }})
        };
        let terminal = phase == "Succeeded" || phase == "Failed";
        let not_ready_reason = if terminal { "PodCompleted" } else { "ContainersNotReady" };
        let ip = pod_ip.clone();
        let status = json!({
            "phase": phase,
            "conditions": [
                cond("PodReadyToStartContainers", pod_ip.is_some() && !terminal, None),
                cond("Initialized", initialized, Some(if terminal { "PodCompleted" } else { "ContainersNotInitialized" })),
                cond("Ready", ready, Some(not_ready_reason)),
                cond("ContainersReady", ready, Some(not_ready_reason)),
                cond("PodScheduled", true, None),
            ],
            "hostIP": self.ctx.node_ip, "hostIPs": [{"ip": self.ctx.node_ip}],
            "podIP": ip, "podIPs": ip.as_ref().map(|i| json!([{"ip": i}])),
            "startTime": self.start_time,
            "qosClass": spec::qos_class(pod),
            "containerStatuses": statuses,
            "initContainerStatuses": if inits.is_empty() { Value::Null } else { json!(inits) },
            "ephemeralContainerStatuses": if ephemerals.is_empty() { Value::Null } else { json!(ephemerals) },
        });
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let (ns, name, _) = ns_name(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
            Ok(_) => self.last_status = Some(status),
            Err(e) => tracing::debug!(pod = %name, error = %e, "status not written"),
        }
    }

    /// Stops the pod: preStop hooks, then each container with the grace
    /// period (SIGTERM, SIGKILL when it runs out), then the sandbox; and
    /// removes its volumes.
    async fn terminate(&mut self, pod: &Pod, grace: i64) {
        let (_, _, uid) = ns_name(pod);
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        let spec = pod.spec.clone().unwrap_or_default();
        let sandboxes = self.sandboxes(&uid).await;
        let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        let (ns, name, _) = ns_name(pod);
        let who = format!("{name}_{ns}({uid})");
        let mut stops = Vec::new();
        for sb in &sandboxes {
            for (name, insts) in self.instances(&sb.id).await {
                let Some(inst) = insts.into_iter().find(|i| i.state == api::ContainerState::ContainerRunning as i32) else { continue };
                let c = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name).cloned();
                let (rt, recorder, pod, pod_ip, who) = (self.ctx.rt.clone(), self.ctx.recorder.clone(), pod.clone(), pod_ip.clone(), who.clone());
                stops.push(async move {
                    recorder.record(&pod, EventType::Normal, "Killing", &format!("Stopping container {name}"));
                    if let Some((c, h)) = c.as_ref().and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.as_ref()?))) {
                        // The hook has what is left of the grace period; then SIGTERM.
                        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
                        if let Err(msg) = crate::hook::run(&rt, h, c, &inst.id, &pod_ip, &who, left).await {
                            recorder.record(&pod, EventType::Warning, "FailedPreStopHook", &msg);
                        }
                    }
                    let left = deadline.saturating_duration_since(Instant::now()).as_secs() as i64;
                    let _ = rt.runtime.clone().stop_container(api::StopContainerRequest { container_id: inst.id, timeout: left }).await;
                });
            }
        }
        futures::future::join_all(stops).await;
        for sb in sandboxes {
            let mut rt = self.ctx.rt.runtime.clone();
            let _ = rt.stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await;
            let _ = rt.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: sb.id }).await;
        }
        volumes::cleanup(&self.pod_dir(&uid));
        volumes::forget_tokens(&uid);
        let _ = std::fs::remove_dir_all(spec::log_directory(&self.ctx.logs_dir, pod));
    }
}

/// Stops and removes a sandbox no pod on this node owns any more: its
/// containers first, as the kubelet kills a pod. (Left to StopPodSandbox
/// alone, containerd 1.6 forgot an app container whose pause had been
/// stopped after a restart of containerd, and its process lived on.)
pub async fn remove_orphan(rt: &Runtime, sandbox: &str) {
    let mut r = rt.runtime.clone();
    let filter = api::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
    let containers = r.list_containers(api::ListContainersRequest { filter: Some(filter) }).await.map(|l| l.into_inner().containers).unwrap_or_default();
    for c in containers {
        let _ = r.stop_container(api::StopContainerRequest { container_id: c.id.clone(), timeout: 0 }).await;
        let _ = r.remove_container(api::RemoveContainerRequest { container_id: c.id }).await;
    }
    let _ = r.stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: sandbox.into() }).await;
    let _ = r.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: sandbox.into() }).await;
}
