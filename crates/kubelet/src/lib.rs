//! The kubelet: registers this machine as a Node, keeps its Lease and
//! status fresh, and runs the pods bound to it as containers through CRI
//! (a containerd it supervises, or any CRI socket it is given).
//!
//! Layout, as the real kubelet's: [`node`] (registration, status, Lease),
//! [`network`] (the CNI config for the node's podCIDR), [`pod`] (one
//! worker per pod), [`spec`] (pod spec → CRI configs), [`env`] and
//! [`volumes`] (what a container sees), [`probe`], [`hook`] (postStart, preStop), [`logs`] and [`server`]
//! (the HTTPS API on 10250 that `kubectl logs` reaches through the API server).

#![deny(missing_docs)]

pub mod auth;
pub mod bootstrap;
pub mod certificates;
pub mod dns;
pub mod env;
pub mod hook;
pub mod killall;
pub mod loadbalancer;
pub mod local_path;
pub mod logs;
pub mod network;
pub mod node;
pub mod pod;
pub mod probe;
pub mod server;
pub mod spec;
pub mod stats;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use skiff_cri::{api, containerd, oci, Runtime};
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::{watch, Notify};

/// The version the node reports (`kubectl get nodes` VERSION).
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";

/// Errors that stop the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// An API call failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A local file or socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How the kubelet runs.
#[derive(Clone)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// The address the node reports and the kubelet API listens on.
    pub node_ip: IpAddr,
    /// Extra labels (`--node-labels`).
    pub node_labels: BTreeMap<String, String>,
    /// Taints registered with the node (`--register-with-taints`).
    pub taints: Vec<serde_json::Value>,
    /// The agent's directory: containerd, CNI config, pods, logs, images.
    pub dir: PathBuf,
    /// An existing CRI socket; `None` runs a supervised containerd.
    pub runtime_endpoint: Option<PathBuf>,
    /// The kubelet API's port (0: any free port).
    pub kubelet_port: u16,
    /// Pod capacity.
    pub max_pods: u32,
    /// Registries (`host[:port]`) the supervised containerd pulls from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// TLS for the kubelet API (its serving certificate; clients verified against the cluster CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// `--cluster-dns` (empty: pods get the node's resolvers).
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--resolv-conf`: the node's resolvers, for `dnsPolicy: Default`.
    pub resolv_conf: PathBuf,
    /// The whole pod network (`--cluster-cidr`): pods reach it unmasqueraded.
    /// `None`: only this node's podCIDR.
    pub cluster_cidr: Option<String>,
    /// The pods' MTU (the pod network's overlay takes its share); `None`: the default.
    pub pod_mtu: Option<u32>,
    /// Signalled when the agent's load balancer moves to another API
    /// server: the node renews its Lease and reports its status through it
    /// at once, instead of at the next heartbeat.
    pub api_server_switched: Option<Arc<Notify>>,
    /// `--cloud-provider external`: the node registers tainted
    /// uninitialized, and its addresses are the cloud controller's to set.
    pub external_cloud_provider: bool,
}

/// Parses `--register-with-taints` (`key=value:Effect,key:Effect`).
pub fn parse_taints(s: &str) -> Result<Vec<serde_json::Value>, String> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (kv, effect) = t.trim().rsplit_once(':').ok_or_else(|| format!("invalid taint {t:?}: want key[=value]:Effect"))?;
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(format!("invalid taint effect {effect:?}: want NoSchedule, PreferNoSchedule or NoExecute"));
            }
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok(serde_json::json!({"key": k, "value": (!v.is_empty()).then_some(v), "effect": effect}))
        })
        .collect()
}

/// The node's own address: the IPv4 address of the interface that holds
/// the default route (as the kubelet picks it), else of the first up
/// interface that is not a bridge or veth of a pod network, else loopback.
/// Never a pod bridge's gateway: another agent's bridge on the same
/// machine can disappear at any time.
pub fn default_node_ip() -> IpAddr {
    let default_iface = std::fs::read_to_string("/proc/net/route").ok().and_then(|t| {
        t.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
        })
    });
    let addrs: Vec<(String, std::net::Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter_map(|a| {
                let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
                Some((a.interface_name, ip))
            })
            .collect()
        })
        .unwrap_or_default();
    let pod_network = |name: &str| ["skiff", "cni", "veth", "flannel", "docker", "lo"].iter().any(|p| name.starts_with(p));
    addrs
        .iter()
        .find(|(n, _)| Some(n) == default_iface.as_ref())
        .or_else(|| addrs.iter().find(|(n, ip)| !pod_network(n) && !ip.is_loopback() && !ip.is_link_local()))
        .map(|(_, ip)| IpAddr::V4(*ip))
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The runtime as the node sees it: connected, or why not.
enum RuntimeState {
    Up(Box<Runtime>, String),
    Down(String),
}

async fn start_runtime(cfg: &Config) -> (RuntimeState, Option<containerd::Containerd>) {
    if let Some(sock) = &cfg.runtime_endpoint {
        return match Runtime::connect(sock).await {
            Ok(rt) => {
                let v = rt.version().await.unwrap_or_default();
                (RuntimeState::Up(Box::new(rt), v), None)
            }
            Err(e) => (RuntimeState::Down(format!("container runtime is down: {e}")), None),
        };
    }
    let mut missing = containerd::missing();
    let busybox = skiff_cri::which("busybox");
    if busybox.is_none() {
        missing.push("busybox, for the pause image (Debian package busybox-static)".into());
    }
    if !missing.is_empty() {
        return (RuntimeState::Down(format!("container runtime is not available: missing {}", missing.join(", "))), None);
    }
    let ccfg = containerd::Config {
        dir: cfg.dir.join("containerd"),
        cni_bin_dir: containerd::cni_bin_dir().unwrap_or_else(|| PathBuf::from("/usr/lib/cni")),
        cni_conf_dir: cfg.dir.join("etc/cni/net.d"),
        sandbox_image: oci::PAUSE_IMAGE.into(),
        registry_config_dir: cfg.dir.join("certs.d"),
        restrict_oom_score_adj: !containerd::can_lower_oom_score(),
    };
    for host in &cfg.insecure_registries {
        if let Err(e) = containerd::allow_plain_http(&ccfg.registry_config_dir, host) {
            return (RuntimeState::Down(format!("--insecure-registry: {e}")), None);
        }
    }
    let (ctd, rt) = match containerd::Containerd::start(&ccfg).await {
        Ok(x) => x,
        Err(e) => return (RuntimeState::Down(format!("container runtime is down: {e}")), None),
    };
    // The pause image, then the air-gapped images in agent/images/.
    let pause = cfg.dir.join("pause.tar");
    let built = busybox.ok_or_else(|| std::io::Error::other("busybox")).and_then(|b| oci::Image::pause(&b)).and_then(|img| img.write(&pause));
    if let Err(e) = built {
        return (RuntimeState::Down(format!("building the pause image: {e}")), Some(ctd));
    }
    let images_dir = cfg.dir.join("images");
    let _ = std::fs::create_dir_all(&images_dir);
    for archive in std::iter::once(pause).chain(oci::archives_in(&images_dir)) {
        if let Err(e) = oci::import(&ctd.socket, &archive).await {
            tracing::warn!(archive = %archive.display(), error = %e, "image import failed");
        }
    }
    let v = rt.version().await.unwrap_or_default();
    (RuntimeState::Up(Box::new(rt), v), Some(ctd))
}

/// Runs the kubelet until `shutdown` flips to true.
pub async fn run(client: kube::Client, cfg: Config, shutdown: watch::Receiver<bool>) -> Result<(), KubeletError> {
    for d in ["pods", "logs", "storage", "images", "cni/ipam"] {
        std::fs::create_dir_all(cfg.dir.join(d))?;
    }
    let listener = tokio::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), cfg.kubelet_port)).await?;
    let port = listener.local_addr()?.port();
    let nodes: Api<Node> = Api::all(client.clone());
    // The API server may still be starting (a separate process): retry.
    let mut delay = Duration::from_millis(100);
    while let Err(e) = node::register(&nodes, &cfg).await {
        tracing::warn!(error = %e, "registering the node");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        if *shutdown.borrow() {
            return Ok(());
        }
    }
    let facts = node::Facts::gather(&cfg.dir);
    let since = skiff_runtime::now();
    let (state, supervised) = start_runtime(&cfg).await;
    let (rt, version, readiness) = match state {
        RuntimeState::Up(rt, v) => (Some(*rt), v, node::Readiness::NotReady("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized".into())),
        RuntimeState::Down(msg) => {
            tracing::error!(node = %cfg.node_name, "{msg}");
            (None, String::new(), node::Readiness::NotReady(msg))
        }
    };
    let status = node::status(&cfg, &facts, &version, &readiness, port, &since);
    nodes.patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    tracing::info!(node = %cfg.node_name, runtime = %version, kubelet_port = port, "node registered");

    let mut tasks = Vec::new();
    let network_configured = Arc::new(Notify::new());
    tasks.push(tokio::spawn(heartbeat(
        client.clone(),
        cfg.clone(),
        facts.clone(),
        rt.clone(),
        version.clone(),
        readiness,
        port,
        since,
        network_configured.clone(),
        shutdown.clone(),
    )));
    if let Some(rt) = rt {
        let auth = Arc::new(auth::Auth::new(client.clone(), &cfg.node_name));
        tasks.push(tokio::spawn(server::serve(listener, cfg.tls.clone(), rt.clone(), Arc::new(stats::Stats::new(&cfg.node_name)), auth, shutdown.clone())));
        tasks.push(tokio::spawn(pod_cidr(client.clone(), cfg.clone(), network_configured, shutdown.clone())));
        // Services for the pods' environment variables.
        let services = Informer::<Service>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
        tasks.push(tokio::spawn(local_path::run(client.clone(), local_path::root(&cfg.dir), shutdown.clone())));
        let ctx = Arc::new(pod::Ctx {
            client: client.clone(),
            rt: rt.clone(),
            recorder: skiff_runtime::events::Recorder::new(client.clone(), "kubelet"),
            node_ip: cfg.node_ip.to_string(),
            pods_dir: cfg.dir.join("pods"),
            logs_dir: cfg.dir.join("logs"),
            node_memory: facts.memory,
            dns: dns::Settings {
                cluster_dns: cfg.cluster_dns.clone(),
                cluster_domain: cfg.cluster_domain.clone(),
                host_resolv_conf: std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default(),
            },
            services,
        });
        tasks.push(tokio::spawn(pods(ctx, cfg.node_name.clone(), shutdown.clone())));
    }
    let mut stop = shutdown.clone();
    let _ = stop.wait_for(|s| *s).await;
    for t in tasks {
        let _ = t.await;
    }
    if let Some(c) = supervised {
        c.stop().await;
    }
    Ok(())
}

/// Renews the Lease every 10 s and rewrites the status when readiness
/// changes (or every minute, as the kubelet's status report). When the pod
/// network has just been configured, readiness is re-read at once (the
/// runtime takes a moment to load the CNI config), so the node turns Ready
/// without waiting for the next tick.
#[allow(clippy::too_many_arguments)]
async fn heartbeat(
    client: kube::Client,
    cfg: Config,
    facts: node::Facts,
    rt: Option<Runtime>,
    version: String,
    mut readiness: node::Readiness,
    port: u16,
    mut since: String,
    network_configured: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut last_report = tokio::time::Instant::now();
    let switched = cfg.api_server_switched.clone().unwrap_or_default();
    let mut failures = 0u32;
    loop {
        let (network_changed, switched_server) = tokio::select! {
            _ = tick.tick() => (false, false),
            _ = network_configured.notified() => (true, false),
            _ = switched.notified() => (false, true),
            _ = shutdown.changed() => return,
        };
        if !network_changed {
            let renewed = match nodes.get(&cfg.node_name).await {
                Ok(n) => node::renew_lease(&leases, &n, &cfg.node_name, 40).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match renewed {
                Ok(()) => failures = 0,
                Err(e) => {
                    // As the kubelet's lease controller: retry soon (200 ms,
                    // doubling to 7 s) rather than a whole interval later.
                    let backoff = Duration::from_millis(200 * 2u64.pow(failures.min(6))).min(Duration::from_secs(7));
                    failures += 1;
                    tracing::warn!(error = %e, retry_in = ?backoff, "lease renewal failed");
                    tick.reset_after(backoff);
                }
            }
        }
        if switched_server {
            // A new server hears the node's status at once.
            last_report = tokio::time::Instant::now() - Duration::from_secs(120);
        }
        let mut now_ready = match &rt {
            None => readiness.clone(),
            Some(rt) => runtime_readiness(rt).await,
        };
        if let (true, Some(rt)) = (network_changed, &rt) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while now_ready != node::Readiness::Ready && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                now_ready = runtime_readiness(rt).await;
            }
        }
        if now_ready != readiness || last_report.elapsed() > Duration::from_secs(60) {
            if now_ready != readiness {
                since = skiff_runtime::now();
            }
            readiness = now_ready;
            let status = node::status(&cfg, &facts, &version, &readiness, port, &since);
            if nodes.patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&status)).await.is_ok() {
                last_report = tokio::time::Instant::now();
            }
        }
    }
}

/// The runtime's own conditions (CRI `Status`), as the kubelet maps them.
async fn runtime_readiness(rt: &Runtime) -> node::Readiness {
    match rt.runtime.clone().status(api::StatusRequest { verbose: false }).await {
        Err(e) => node::Readiness::NotReady(format!("container runtime is down: {}", e.message())),
        Ok(r) => {
            let conds = r.into_inner().status.map(|s| s.conditions).unwrap_or_default();
            match conds.iter().find(|c| !c.status) {
                None => node::Readiness::Ready,
                Some(c) if c.r#type == "NetworkReady" => {
                    node::Readiness::NotReady(format!("container runtime network not ready: NetworkReady=false reason:{} message:{}", c.reason, c.message))
                }
                Some(c) => node::Readiness::NotReady(format!(
                    "container runtime status check may not have completed yet: {}={} reason:{}",
                    c.r#type, c.status, c.reason
                )),
            }
        }
    }
}

/// Writes the pod network's CNI config once the node has a podCIDR, and
/// tells the heartbeat.
async fn pod_cidr(client: kube::Client, cfg: Config, network_configured: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let wc = watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let node = Informer::<Node>::start(Api::all(client), wc, shutdown.clone());
    let bridge = network::bridge_name(&cfg.dir);
    let (conf_dir, ipam_dir) = (cfg.dir.join("etc/cni/net.d"), cfg.dir.join("cni/ipam"));
    // The range last configured; a failed write is tried again at the next event.
    let mut configured: Option<String> = None;
    let mut events = node.changes().boxed();
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = shutdown.changed() => return,
        };
        let cidr = match ev {
            Some(Change::Applied(n)) => n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).filter(|c| !c.is_empty()),
            Some(_) => None,
            None => return,
        };
        let Some(cidr) = cidr.filter(|c| configured.as_ref() != Some(c)) else { continue };
        // Masquerade first: pods start once the conflist exists.
        let cluster = cfg.cluster_cidr.as_deref().unwrap_or(&cidr);
        let ip_masq = match network::masquerade(&bridge, &cidr, cluster).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "no nftables masquerade for the pod network; the bridge plugin masquerades per pod");
                true
            }
        };
        let net = network::PodNetwork { bridge: &bridge, pod_cidr: &cidr, ipam_dir: &ipam_dir, ip_masq, mtu: cfg.pod_mtu };
        match network::write(&conf_dir, &net) {
            Ok(changed) => {
                if changed {
                    tracing::info!(pod_cidr = %cidr, bridge = %bridge, "pod network configured");
                }
                configured = Some(cidr);
                network_configured.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "writing the CNI config"),
        }
    }
}

struct Handle {
    pod: watch::Sender<Option<Pod>>,
    wake: Arc<Notify>,
}

/// Watches the pods bound to this node and runs one worker per pod; the
/// PLEG relist wakes workers whose containers changed state.
async fn pods(ctx: Arc<pod::Ctx>, node_name: String, shutdown: watch::Receiver<bool>) {
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let informer = Informer::<Pod>::start(Api::all(ctx.client.clone()), wc, shutdown.clone());
    let workers: Arc<std::sync::Mutex<HashMap<String, Handle>>> = Arc::default();
    let (synced_tx, synced_rx) = watch::channel(false);
    let watch_pods = {
        let (workers, ctx, shutdown) = (workers.clone(), ctx.clone(), shutdown.clone());
        informer.changes().for_each(move |change| {
            let mut w = workers.lock().unwrap_or_else(|e| e.into_inner());
            match change {
                Change::Applied(p) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    match w.get(&uid) {
                        Some(h) => {
                            h.pod.send_replace(Some((*p).clone()));
                        }
                        None => {
                            let (tx, rx) = watch::channel(Some((*p).clone()));
                            let wake = Arc::new(Notify::new());
                            let (ctx, wake2, shutdown, workers) = (ctx.clone(), wake.clone(), shutdown.clone(), workers.clone());
                            let uid2 = uid.clone();
                            tokio::spawn(async move {
                                pod::run(ctx, rx, wake2, shutdown).await;
                                workers.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid2);
                            });
                            w.insert(uid, Handle { pod: tx, wake });
                        }
                    }
                }
                Change::Deleted(p) => {
                    if let Some(h) = w.get(p.metadata.uid.as_deref().unwrap_or("")) {
                        h.pod.send_replace(None);
                    }
                }
                Change::Synced => {
                    let _ = synced_tx.send(true);
                }
            }
            futures::future::ready(())
        })
    };
    let relist = pleg(ctx.rt.clone(), workers.clone(), synced_rx);
    let mut stop = shutdown.clone();
    tokio::select! {
        _ = watch_pods => {}
        _ = relist => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// How often the PLEG relists when the runtime streams its task events (a
/// safety net, as the kubelet's evented PLEG keeps one), and when it does not.
const RELIST_WITH_EVENTS: Duration = Duration::from_secs(30);
const RELIST_WITHOUT_EVENTS: Duration = Duration::from_secs(1);

/// The pod lifecycle event generator: relists the runtime's containers and
/// wakes the worker of each pod whose containers changed state. Relists
/// follow containerd's task events (a container started, exited, was
/// OOM-killed), so an exit reaches its pod's status at once; where the
/// runtime streams no events (another CRI runtime, or containerd
/// restarting), it relists every second, as the generic PLEG does.
/// Sandboxes of pods no longer bound here are removed once the pod list
/// has been read.
async fn pleg(rt: Runtime, workers: Arc<std::sync::Mutex<HashMap<String, Handle>>>, synced: watch::Receiver<bool>) {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut events = None;
    let mut sync_done = synced.clone();
    // containerd publishes an exit before its CRI plugin agrees on it (for
    // a moment ListContainers and ContainerStatus can differ): the pod of
    // an exited container is relisted and woken again, 20 ms doubling to
    // 640 ms after the event; its syncs write nothing while nothing changed.
    let mut pending: HashSet<String> = HashSet::new();
    let mut retry = Duration::from_millis(20);
    // When the event stream last ended: subscribing again waits a second,
    // so a runtime without the events API is not asked in a loop.
    let mut ended: Option<tokio::time::Instant> = None;
    loop {
        if events.is_none() && ended.is_none_or(|t| t.elapsed() >= RELIST_WITHOUT_EVENTS) {
            events = Some(Box::pin(rt.task_events()));
        }
        if let Some(now) = relist(&rt, &workers, &synced, &mut seen).await {
            owners = now;
        }
        if !pending.is_empty() {
            let w = workers.lock().unwrap_or_else(|e| e.into_inner());
            for uid in pending.iter().filter_map(|id| owners.get(id)) {
                if let Some(h) = w.get(uid) {
                    h.wake.notify_one();
                }
            }
        }
        let next = if pending.is_empty() || retry > Duration::from_millis(640) {
            pending.clear();
            RELIST_WITH_EVENTS
        } else {
            let this_time = retry;
            retry *= 2;
            this_time
        };
        match events.as_mut() {
            Some(stream) => {
                tokio::select! {
                    ev = stream.next() => match ev {
                        Some(ev) => {
                            // A burst (a pod's containers ending together) is one relist.
                            let mut burst = vec![ev];
                            while let Some(Some(ev)) = stream.next().now_or_never() {
                                burst.push(ev);
                            }
                            // An OOM kill's exit has its own event; the worker re-reads fresh kills.
                            pending.extend(burst.into_iter().filter(|e| e.topic == "/tasks/exit").map(|e| e.container_id));
                            retry = Duration::from_millis(20);
                            ended = None;
                        }
                        None => {
                            if ended.is_none() {
                                tracing::warn!("the runtime streams no task events (or stopped); relisting every second");
                            }
                            ended = Some(tokio::time::Instant::now());
                            events = None;
                        }
                    },
                    _ = tokio::time::sleep(next) => {}
                    // Orphans can be told apart once the pod list is read.
                    _ = sync_done.wait_for(|s| *s), if !*sync_done.borrow() => {}
                }
            }
            None => tokio::time::sleep(RELIST_WITHOUT_EVENTS).await,
        }
    }
}

/// One relist: wakes the workers of pods whose containers' states differ
/// from `seen`, and removes sandboxes no worker owns. Returns the pod uid
/// of each container and sandbox by id, or None when the runtime did not
/// answer.
async fn relist(
    rt: &Runtime,
    workers: &std::sync::Mutex<HashMap<String, Handle>>,
    synced: &watch::Receiver<bool>,
    seen: &mut HashMap<String, String>,
) -> Option<HashMap<String, String>> {
    let listed = async {
        let containers = rt.runtime.clone().list_containers(api::ListContainersRequest { filter: None }).await?.into_inner().containers;
        let sandboxes = rt.runtime.clone().list_pod_sandbox(api::ListPodSandboxRequest { filter: None }).await?.into_inner().items;
        Ok::<_, tonic::Status>((containers, sandboxes))
    };
    let (containers, sandboxes) = match listed.await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "relist: the runtime did not answer");
            return None;
        }
    };
    let mut now: HashMap<String, String> = HashMap::new();
    let mut owners = HashMap::new();
    for c in containers {
        let uid = c.labels.get(spec::POD_UID).cloned().unwrap_or_default();
        now.entry(uid.clone()).or_default().push_str(&format!("{}:{};", c.id, c.state));
        owners.insert(c.id, uid);
    }
    for s in &sandboxes {
        let uid = s.labels.get(spec::POD_UID).cloned().unwrap_or_default();
        now.entry(uid.clone()).or_default().push_str(&format!("{}:{};", s.id, s.state));
        owners.insert(s.id.clone(), uid);
    }
    let known: HashSet<String> = {
        let w = workers.lock().unwrap_or_else(|e| e.into_inner());
        for (uid, fp) in &now {
            if seen.get(uid) != Some(fp) {
                if let Some(h) = w.get(uid) {
                    h.wake.notify_one();
                }
            }
        }
        w.keys().cloned().collect()
    };
    if *synced.borrow() {
        for s in sandboxes.iter().filter(|s| s.labels.get(spec::POD_UID).is_some_and(|u| !known.contains(u))) {
            tracing::info!(sandbox = %s.id, "removing the sandbox of a pod no longer on this node");
            pod::remove_orphan(rt, &s.id).await;
        }
    }
    *seen = now;
    Some(owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_the_kubelet_flag() {
        let t = parse_taints("dedicated=gpu:NoSchedule,spot:PreferNoSchedule").expect("taints");
        assert_eq!(t[0], serde_json::json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}));
        assert_eq!(t[1], serde_json::json!({"key": "spot", "value": null, "effect": "PreferNoSchedule"}));
        assert!(parse_taints("a=b:Sometimes").is_err());
    }
}
