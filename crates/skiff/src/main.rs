//! The `skiff` binary: one executable for every component.
//!
//! `skiff server` runs the control plane (API server over the embedded
//! store, scheduler, controller manager); each of those can also run alone
//! against any API server, as `skiff scheduler` / `skiff controller-manager`.
//! `skiff sim-nodes` runs simulated nodes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

mod datastore;
mod embedded_etcd;
mod secrets_encrypt;
mod snapshot;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

// The API server allocates many small JSON values per request; glibc's
// malloc spent ~10% of server CPU in consolidation under load (perf), and
// mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "skiff", version, about = "A Kubernetes-compatible container orchestrator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane: API server over the embedded store, scheduler
    /// and controller manager.
    Server(ServerArgs),
    /// Runs the scheduler alone against an API server.
    Scheduler {
        /// Kubeconfig of the API server to use.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Leader election on `kube-system/kube-scheduler`, so several can run.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
    },
    /// Runs the controller manager alone against an API server.
    ControllerManager {
        /// Kubeconfig of the API server to use.
        #[arg(long)]
        kubeconfig: PathBuf,
        #[command(flatten)]
        controllers: ControllerArgs,
        /// Leader election on `kube-system/kube-controller-manager`.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
    },
    /// Runs a node: the kubelet with a supervised containerd (or the CRI
    /// socket given), registered with an API server. Join a cluster with
    /// `--server URL --token TOKEN` (the server's `DATA_DIR/node-token`),
    /// or run with a kubeconfig and the cluster's PKI directory.
    Agent {
        /// The API server to join, e.g. `https://10.0.0.1:6443`.
        #[arg(long, requires = "token", conflicts_with_all = ["kubeconfig", "pki_dir"])]
        server: Option<String>,
        /// The join token (`K10<ca-sha256>::node:<secret>`).
        #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Kubeconfig of the API server to use (the node's identity).
        #[arg(long, requires = "pki_dir")]
        kubeconfig: Option<PathBuf>,
        /// The cluster's PKI directory (the server's `DATA_DIR/pki`), whose
        /// CA signs the kubelet API's serving certificate.
        #[arg(long, requires = "kubeconfig")]
        pki_dir: Option<PathBuf>,
        /// Where the agent keeps containerd, pods, logs, images and, when it
        /// joined with a token, its certificates and kubeconfig.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Components not to run (comma-separated: proxy).
        #[arg(long, value_delimiter = ',')]
        disable: Vec<String>,
        /// The pod network's range (the server's `--cluster-cidr`).
        #[arg(long, default_value = "10.42.0.0/16")]
        cluster_cidr: String,
        /// The local port of the agent's load balancer (k3s's 6444): the
        /// kubelet and the proxy reach the API servers through it, and it
        /// moves on to another server when one dies (0: any free port).
        #[arg(long, default_value_t = 6444)]
        lb_server_port: u16,
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Runs the service proxy (kube-proxy) alone against an API server, or
    /// removes its rules (`--cleanup`).
    Proxy {
        /// Kubeconfig of the API server to use.
        #[arg(long, required_unless_present = "cleanup")]
        kubeconfig: Option<PathBuf>,
        /// The node this proxy runs on (default: the host name).
        #[arg(long)]
        hostname_override: Option<String>,
        /// The node's data directory, which names the nftables table
        /// (`/var/lib/skiff/agent`: `ip skiff-proxy`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The pod network's range.
        #[arg(long, default_value = "10.42.0.0/16")]
        cluster_cidr: String,
        /// Delete the proxy's nftables table (nothing else) and exit.
        #[arg(long)]
        cleanup: bool,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Runs the cloud-controller-manager (its built-in `local` load
    /// balancer provider) alone against an API server.
    CloudControllerManager {
        /// Kubeconfig of the API server to use.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Addresses LoadBalancer Services get (default: the addresses of
        /// the nodes that run their endpoints).
        #[arg(long)]
        lb_address_pool: Option<skiff_api::cidr::Cidr>,
    },
    /// Image tools for nodes.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Snapshots of a server's store: save, restore, ls, delete.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// The embedded etcd of `skiff server --cluster-init`.
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
        /// The server's data directory.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Removes what a stopped node leaves on this machine, as k3s-killall.sh
    /// does: its containers and their containerd, mounts under the data
    /// directory, the node's bridge and nftables table. Nothing else.
    Killall {
        /// The server's or agent's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Renews a stopped server's certificates (all but the CA's), as k3s's
    /// `certificate rotate`: the next start issues them anew.
    Certificate {
        /// `rotate`.
        #[arg(value_parser = ["rotate"])]
        action: String,
        /// The server's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Rotates the keys that encrypt Secrets at rest, as k3s's
    /// `secrets-encrypt`: status, prepare, rotate, reencrypt.
    SecretsEncrypt {
        /// The step.
        #[arg(value_enum)]
        step: secrets_encrypt::Step,
        /// The server's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The encryption configuration, if not the data dir's.
        #[arg(long)]
        encryption_provider_config: Option<PathBuf>,
        /// How long `reencrypt` waits for the server.
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
    /// Runs simulated nodes (hollow kubelets) for tests, demos and benchmarks.
    SimNodes {
        /// Kubeconfig of the API server to use.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        count: usize,
        /// Node names are `<prefix><i>`.
        #[arg(long, default_value = "sim-")]
        prefix: String,
        /// CPU per node.
        #[arg(long, default_value = "8")]
        cpu: String,
        /// Memory per node.
        #[arg(long, default_value = "32Gi")]
        memory: String,
        /// Pods per node.
        #[arg(long, default_value_t = 110)]
        pods: u32,
        /// Node Lease duration in seconds; renewed every quarter of it.
        #[arg(long, default_value_t = 40)]
        lease_duration_seconds: u32,
    },
}

#[derive(Subcommand)]
enum EtcdCommand {
    /// The cluster's members.
    Member {
        #[command(subcommand)]
        command: embedded_etcd::MemberCommand,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Imports an image archive (OCI or Docker) into the node's containerd.
    Import {
        /// The archive.
        file: PathBuf,
        /// The agent's data dir (default: the server's, plus `/agent`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Builds an OCI image archive from this machine's static busybox
    /// (`/bin/busybox` and its applets, `sh` by default): an image to run
    /// where no registry can be reached.
    BuildBusybox {
        /// The image name, e.g. `skiff.local/busybox:1`.
        #[arg(long)]
        name: String,
        /// The archive to write (import it with `skiff images import`, or
        /// drop it into `DATA_DIR/agent/images/` before the agent starts).
        #[arg(long, short)]
        output: PathBuf,
        /// The busybox binary (must be static).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
}

/// The node's flags, shared by `skiff server` (its in-process agent) and `skiff agent`.
#[derive(Args, Clone)]
struct AgentArgs {
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The address the node reports and serves the kubelet API on (default: the first global IPv4 address).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Extra node labels, `key=value,...`.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Taints to register the node with, `key=value:Effect,...`.
    #[arg(long, default_value = "")]
    register_with_taints: String,
    /// An existing CRI socket (`unix:///run/containerd/containerd.sock`) instead of a supervised containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// The kubelet API's port (0: any free port).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// A registry (`host[:port]`) to pull from over plain HTTP (repeatable).
    /// Other registry settings go in containerd's own format under
    /// `DATA_DIR/agent/certs.d/<host>/hosts.toml`.
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// The cluster DNS address pods are given (default: the service
    /// range's 10th address, 10.43.0.10).
    #[arg(long)]
    cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolv.conf: pods with `dnsPolicy: Default` get its
    /// servers, and the cluster DNS forwards outside names to them.
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// How pods on different nodes reach each other: `vxlan` (an overlay,
    /// the default), `host-gw` (routes via the nodes' addresses; nodes on
    /// one L2 segment) or `none` (a network of the user's own).
    #[arg(long, default_value = "vxlan")]
    flannel_backend: skiff_podnet::Backend,
    /// `external`: the node registers tainted
    /// `node.cloudprovider.kubernetes.io/uninitialized` and the cloud
    /// controller sets its addresses and providerID, then lifts the taint.
    #[arg(long, value_parser = ["external"])]
    cloud_provider: Option<String>,
}

/// The node name a host gets by default: its host name, lowercased.
fn host_node_name() -> String {
    let h = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_lowercase()).unwrap_or_default();
    if h.is_empty() {
        "skiff-node".into()
    } else {
        h
    }
}

impl AgentArgs {
    fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(host_node_name)
    }

    /// Starts the pod network between nodes (none with `--flannel-backend
    /// none`, or on a node known only by a loopback address); returns the
    /// MTU pods get under it and its task.
    async fn start_pod_network(
        &self,
        client: kube::Client,
        agent_dir: &std::path::Path,
        cluster_cidr: &str,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<(Option<u32>, Option<tokio::task::JoinHandle<()>>)> {
        let backend = self.flannel_backend;
        let node_ip = self.node_ip.unwrap_or_else(skiff_kubelet::default_node_ip);
        if backend == skiff_podnet::Backend::None {
            return Ok((None, None));
        }
        let IpAddr::V4(ip) = node_ip else { anyhow::bail!("--flannel-backend {}: the pod network needs an IPv4 --node-ip", backend.as_str()) };
        if ip.is_loopback() {
            tracing::warn!(node_ip = %ip, "no pod network to other nodes: this node has only a loopback address (--node-ip)");
            return Ok((None, None));
        }
        let cidr = cluster_cidr.parse::<skiff_api::cidr::Cidr>().map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
        let mtu = skiff_podnet::pod_mtu(backend, ip).await.context("the pod network")?;
        let opts =
            skiff_podnet::Options { backend, node_name: self.node_name(), node_ip: ip, cluster_cidr: cidr, device: skiff_podnet::device_name(agent_dir) };
        let task = tokio::spawn(async move {
            if let Err(e) = skiff_podnet::run(client, opts, shutdown).await {
                tracing::error!(error = %e, "the pod network stopped");
            }
        });
        Ok((mtu, Some(task)))
    }

    fn config(&self, dir: PathBuf, tls: Arc<rustls::ServerConfig>, cluster_dns: std::net::Ipv4Addr) -> anyhow::Result<skiff_kubelet::Config> {
        let mut labels = std::collections::BTreeMap::new();
        for l in self.node_labels.iter().filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once('=').with_context(|| format!("--node-labels: {l:?} is not key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(skiff_kubelet::Config {
            node_name: self.node_name(),
            node_ip: self.node_ip.unwrap_or_else(skiff_kubelet::default_node_ip),
            node_labels: labels,
            taints: skiff_kubelet::parse_taints(&self.register_with_taints).map_err(|e| anyhow::anyhow!("--register-with-taints: {e}"))?,
            dir,
            runtime_endpoint: self.container_runtime_endpoint.as_deref().map(skiff_cri::socket_path),
            kubelet_port: self.kubelet_port,
            max_pods: self.max_pods,
            insecure_registries: self.insecure_registry.clone(),
            tls,
            cluster_dns: vec![self.cluster_dns.unwrap_or(cluster_dns).to_string()],
            cluster_domain: self.cluster_domain.clone(),
            resolv_conf: self.resolv_conf.clone().unwrap_or_else(|| PathBuf::from("/etc/resolv.conf")),
            cluster_cidr: None,
            pod_mtu: None,
            api_server_switched: None,
            external_cloud_provider: self.cloud_provider.is_some(),
        })
    }
}

/// The service proxy's flags, as kube-proxy names them.
#[derive(Args, Clone)]
struct ProxyArgs {
    /// CIDRs of the node addresses NodePorts answer on (comma-separated;
    /// default: every local address but loopback).
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// The least time between two rule syncs (e.g. `1s`, `500ms`): changes
    /// arriving meanwhile are applied together.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    min_sync_period: std::time::Duration,
    /// Where the proxy serves `/healthz` and `/metrics` (empty: nowhere).
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: String,
}

impl ProxyArgs {
    fn options(&self, node_name: &str, agent_dir: &std::path::Path, cluster_cidr: &str) -> anyhow::Result<skiff_proxy::Options> {
        let healthz = if self.healthz_bind_address.is_empty() {
            None
        } else {
            Some(self.healthz_bind_address.parse().with_context(|| format!("--healthz-bind-address {:?}", self.healthz_bind_address))?)
        };
        let nodeport_addresses = self
            .nodeport_addresses
            .iter()
            .map(|c| c.parse::<skiff_proxy::nft::Cidr>().map_err(|e| anyhow::anyhow!("--nodeport-addresses: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        cluster_cidr.parse::<skiff_api::cidr::Cidr>().map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
        Ok(skiff_proxy::Options {
            table: skiff_proxy::table_for(agent_dir),
            cluster_cidr: Some(cluster_cidr.parse().map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?),
            nodeport_addresses,
            min_sync_period: self.min_sync_period,
            healthz_bind_address: healthz,
            ..skiff_proxy::Options::new(node_name)
        })
    }
}

/// A duration as Kubernetes' flags write them: `1s`, `500ms`, `2m`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration {s:?}: the unit is one of ms, s, m, h")),
    };
    std::time::Duration::try_from_secs_f64(n * scale).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[derive(Args)]
struct ServerArgs {
    /// Where the store, certificates and kubeconfigs live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// kube-apiserver's static token file: CSV `token,user,uid[,"groups"]`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Extra host names or IP addresses for the serving certificate
    /// (repeatable), e.g. the name agents on other machines dial.
    #[arg(long)]
    tls_san: Vec<String>,
    /// Seconds between compactions of the store's history; each keeps
    /// one interval of history and never passes the watch cache. Watches
    /// resume from the watch cache's own history, so the store keeps
    /// little: under churn the database stays near the size of the live
    /// data (1,000 Leases renewed every 10 s: 1.7× their JSON at 1 s).
    /// Default: 1 over SQLite, 300 over etcd (kube-apiserver's 5 minutes,
    /// so that every server's watch cache keeps up before history goes).
    #[arg(long)]
    compaction_interval: Option<u64>,
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// Start a new embedded etcd cluster under DATA_DIR/etcd (a real
    /// `etcd` child process, from Debian's etcd-server) instead of SQLite,
    /// so further servers can join; an existing SQLite store moves onto it.
    #[arg(long, conflicts_with_all = ["datastore_endpoint", "server"])]
    cluster_init: bool,
    /// Join the control plane of the server at this URL (with `--token`,
    /// the first server's DATA_DIR/token): this server adds an etcd member
    /// of its own and serves the API over the shared etcd.
    #[arg(long, requires = "token", conflicts_with = "datastore_endpoint")]
    server: Option<String>,
    /// The embedded etcd's client port.
    #[arg(long, default_value_t = 2379)]
    etcd_client_port: u16,
    /// The embedded etcd's peer port.
    #[arg(long, default_value_t = 2380)]
    etcd_peer_port: u16,
    /// The secret servers of one cluster share (k3s's server token): over
    /// a shared store it seals the cluster CA and keys every server takes
    /// at start. Default: generated at the first start, kept in
    /// DATA_DIR/token.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Take snapshots of the store on this cron schedule (e.g.
    /// `0 */12 * * *`; a sixth, leading field counts seconds) into
    /// DATA_DIR/snapshots.
    #[arg(long)]
    snapshot_schedule_cron: Option<String>,
    /// Scheduled snapshots kept (the oldest go first; 0: all).
    #[arg(long, default_value_t = 5)]
    snapshot_retention: usize,
    /// The address published for this server in the `kubernetes`
    /// endpoints (default: the bound address, or the host's first IPv4
    /// address when bound to all).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// The longest a request may take before it is answered with a 504
    /// `Timeout` (watches, logs, exec and other streams excepted); a
    /// request's own `?timeout=` can only shorten it.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    request_timeout: std::time::Duration,
    /// Read-only requests served at once; past it a request is answered
    /// 429 with `Retry-After` (0: no limit; system:masters is not counted).
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// Mutating requests served at once; past it, 429 (0: no limit).
    #[arg(long, default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// Components not to run in-process (comma-separated: scheduler,
    /// controllers, agent, proxy, dns, cloud-controller).
    #[arg(long, value_delimiter = ',')]
    disable: Vec<String>,
    /// The range ClusterIPs are allocated from; its 1st address is the
    /// `kubernetes` Service's, its 10th the cluster DNS's.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: skiff_api::cidr::Cidr,
    /// The issuer ServiceAccount tokens name (and the audience they must
    /// name to authenticate with this server).
    #[arg(long, default_value = skiff_apiserver::DEFAULT_SERVICE_ACCOUNT_ISSUER)]
    service_account_issuer: String,
    /// The authorizers asked, in order (comma-separated: Node, RBAC,
    /// AlwaysAllow). `AlwaysAllow` lets every authenticated user do
    /// everything.
    #[arg(long, default_value = "Node,RBAC")]
    authorization_mode: String,
    /// kube-apiserver's EncryptionConfiguration file (aescbc, aesgcm,
    /// secretbox, identity; the first provider writes, all read; re-read
    /// when it changes).
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Encrypt Secrets at rest with a key generated under the data dir
    /// (DATA_DIR/encryption-config.yaml) when no configuration is given;
    /// rotate it with `skiff secrets-encrypt`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    secrets_encryption: bool,
    /// Where the audit log is written (JSON lines of audit.k8s.io/v1
    /// Events); needs --audit-policy-file.
    #[arg(long, requires = "audit_policy_file")]
    audit_log_path: Option<PathBuf>,
    /// The audit.k8s.io/v1 Policy choosing each request's level.
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Megabytes of audit log before it is rotated (0: never).
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// Rotated audit logs kept (0: all).
    #[arg(long, default_value_t = 10)]
    audit_log_maxbackup: usize,
    /// How long the certificates the server issues itself live (its
    /// serving certificate, the components' and nodes' client
    /// certificates), e.g. `8760h`; those within 90 days of their end are
    /// renewed at start.
    #[arg(long, value_parser = parse_duration)]
    certificate_lifetime: Option<std::time::Duration>,
    /// Addresses LoadBalancer Services get from the built-in cloud
    /// controller (default: the addresses of the nodes running their endpoints).
    #[arg(long)]
    lb_address_pool: Option<skiff_api::cidr::Cidr>,
    /// The port the cluster DNS listens on (the `kube-dns` Service's
    /// target; a taken port falls back to any free one).
    #[arg(long, default_value_t = 10053)]
    dns_port: u16,
    /// Seconds pods tolerate a not-ready node before eviction.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node before eviction.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    #[command(flatten)]
    controllers: ControllerArgs,
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// Where a server's store is (k3s's `--datastore-*` flags).
#[derive(Args, Clone, Default)]
pub(crate) struct DatastoreArgs {
    /// The store, as k3s names it: `sqlite://PATH` (the default,
    /// `DATA_DIR/state.db`), or etcd's client URLs
    /// (`https://a:2379,https://b:2379`), which several servers can share.
    #[arg(long, env = "SKIFF_DATASTORE_ENDPOINT")]
    pub(crate) datastore_endpoint: Option<String>,
    /// The CA (PEM) that signed the etcd members' certificates.
    #[arg(long)]
    pub(crate) datastore_cafile: Option<PathBuf>,
    /// The client certificate (PEM) presented to etcd.
    #[arg(long, requires = "datastore_keyfile")]
    pub(crate) datastore_certfile: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "datastore_certfile")]
    pub(crate) datastore_keyfile: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ControllerArgs {
    /// The range node podCIDRs are cut from.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Seconds without a lease renewal before a node is NotReady.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Finished pods kept before the oldest are deleted (0: never).
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// The CA (PEM) published to every namespace as the kube-root-ca.crt
    /// ConfigMap; by default the one the kubeconfig trusts.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// Each controller acts as its own ServiceAccount in kube-system
    /// (bound to its `system:controller:*` role), with tokens kept beside
    /// the kubeconfig (`controller-credentials/`), as kube's
    /// `--use-service-account-credentials`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    use_service_account_credentials: bool,
    /// The directory of the cluster CA (`ca.crt`, `ca.key`) the built-in
    /// certificate signers use (`skiff server`: its own `DATA_DIR/pki`).
    #[arg(long)]
    cluster_signing_dir: Option<PathBuf>,
    /// The longest the certificates signed for nodes and through the
    /// certificates API live (e.g. `8760h`, the default); nodes renew
    /// theirs at 70–90 % of that.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: std::time::Duration,
}

impl ControllerArgs {
    fn options(&self, leader_elect: bool, kubeconfig: &std::path::Path) -> anyhow::Result<skiff_controllers::Options> {
        let root_ca = match &self.root_ca_file {
            Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("reading --root-ca-file {}", f.display()))?),
            None => skiff_runtime::kubeconfig_ca_pem(kubeconfig)?,
        };
        Ok(skiff_controllers::Options {
            leader_elect,
            root_ca,
            cluster_cidr: self.cluster_cidr.clone(),
            node_monitor_grace_period: std::time::Duration::from_secs(self.node_monitor_grace_period),
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            cluster_signing: self.cluster_signing_dir.clone(),
            cluster_signing_duration: self.cluster_signing_duration,
            credentials: self.use_service_account_credentials.then(|| skiff_controllers::credentials::Credentials {
                kubeconfig: kubeconfig.to_path_buf(),
                dir: kubeconfig.parent().unwrap_or(std::path::Path::new(".")).join("controller-credentials"),
            }),
            ..Default::default()
        })
    }
}

/// The address of `--server`'s URL (its host looked up).
async fn server_address(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let uri: http::Uri = url.parse().with_context(|| format!("--server {url:?}"))?;
    let host = uri.host().with_context(|| format!("--server {url:?} names no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(6443);
    let found = tokio::net::lookup_host((host.as_str(), port)).await?.next();
    found.with_context(|| format!("--server {url:?}: {host} has no address"))
}

pub(crate) fn default_data_dir() -> PathBuf {
    // Root gets the system location, like k3s; others their own.
    if std::env::var("USER").is_ok_and(|u| u == "root") || std::env::var("HOME").is_ok_and(|h| h == "/root") {
        PathBuf::from("/var/lib/skiff")
    } else {
        std::env::var("HOME").map(|h| PathBuf::from(h).join(".local/share/skiff")).unwrap_or_else(|_| PathBuf::from("skiff-data"))
    }
}

/// A shutdown signal: flips to true on Ctrl-C or SIGTERM.
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => futures_pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        let _ = tx.send(true);
    });
    rx
}

async fn futures_pending() {
    std::future::pending::<()>().await
}

/// The stack of each runtime thread. Requests evaluate CEL (CRD rules,
/// admission policies), whose interpreter recurses once per level of an
/// expression tree; trees are held to `skiff_api::cel`'s depth limit, and
/// this leaves that depth a wide margin (it is reserved address space;
/// only the pages used are committed).
const RUNTIME_STACK: usize = 8 << 20;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(RUNTIME_STACK).build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let shutdown = shutdown_signal();
    match Cli::parse().command {
        Command::Server(args) => server(args, shutdown).await,
        Command::Scheduler { kubeconfig, leader_elect } => {
            let client = skiff_runtime::client(&kubeconfig).await?;
            skiff_scheduler::run(client, skiff_scheduler::Options { leader_elect, ..Default::default() }, shutdown).await;
            Ok(())
        }
        Command::ControllerManager { kubeconfig, controllers, leader_elect } => {
            let client = skiff_runtime::client(&kubeconfig).await?;
            skiff_controllers::run(client, controllers.options(leader_elect, &kubeconfig)?, shutdown).await;
            Ok(())
        }
        Command::Agent { server, token, kubeconfig, pki_dir, data_dir, disable, cluster_cidr, lb_server_port, agent, proxy } => {
            for d in &disable {
                if d != "proxy" {
                    anyhow::bail!("--disable: unknown component {d:?} (proxy)");
                }
            }
            let node_ip = agent.node_ip.unwrap_or_else(skiff_kubelet::default_node_ip);
            let name = agent.node_name();
            let dir = data_dir.unwrap_or_else(|| default_data_dir().join("agent"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let dir = std::path::absolute(&dir)?;
            let mut switched = None;
            let (client, tls) = match (server, token, kubeconfig, pki_dir) {
                (Some(server), Some(token), _, _) => {
                    let token = skiff_pki::JoinToken::parse(&token)?;
                    // Every request goes through the local load balancer,
                    // which follows the live API servers.
                    let first = server_address(&server).await?;
                    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], lb_server_port));
                    let lb = skiff_kubelet::loadbalancer::LoadBalancer::start(listen, vec![first], shutdown.clone())
                        .await
                        .with_context(|| format!("the agent's load balancer on {listen}"))?;
                    let through = format!("https://127.0.0.1:{}", lb.local.port());
                    let creds = skiff_kubelet::bootstrap::join(&through, &token, &dir, &name, &[node_ip]).await.context("joining the cluster")?;
                    let client = skiff_kubelet::certificates::client(&creds.kubeconfig, &creds.rotation.client).await?;
                    switched = Some(lb.switched.clone());
                    tokio::spawn(lb.follow_endpoints(client.clone(), vec![first], std::time::Duration::from_secs(10), shutdown.clone()));
                    tokio::spawn(skiff_kubelet::certificates::rotate(client.clone(), creds.rotation, shutdown.clone()));
                    (client, creds.tls)
                }
                (None, _, Some(kubeconfig), Some(pki_dir)) => {
                    let pki = skiff_pki::ClusterPki::load_or_create(&pki_dir).context("reading the cluster PKI")?;
                    let names = vec![name.clone(), node_ip.to_string()];
                    let pair = pki.load_or_issue(&format!("kubelet-{name}-{node_ip}"), |p| p.issue_server(&name, &names))?;
                    (skiff_runtime::client(&kubeconfig).await?, pki.server_tls(&pair, &[b"http/1.1"])?)
                }
                _ => anyhow::bail!("skiff agent needs --server and --token (to join), or --kubeconfig and --pki-dir"),
            };
            let mut agent = agent;
            agent.node_ip = Some(node_ip);
            let proxy = if disable.iter().any(|d| d == "proxy") {
                None
            } else {
                // The proxy acts with the node's credentials here (k3s gives
                // agents a kube-proxy certificate; join hands out one identity).
                Some(tokio::spawn(skiff_proxy::run(client.clone(), proxy.options(&name, &dir, &cluster_cidr)?, shutdown.clone())))
            };
            let (pod_mtu, network) = agent.start_pod_network(client.clone(), &dir, &cluster_cidr, shutdown.clone()).await?;
            let mut cfg = agent.config(dir, tls, skiff_api::cidr::Cidr::default().nth(10))?;
            cfg.cluster_cidr = Some(cluster_cidr);
            cfg.pod_mtu = pod_mtu;
            cfg.api_server_switched = switched;
            skiff_kubelet::run(client, cfg, shutdown).await?;
            for task in [proxy, network].into_iter().flatten() {
                let _ = task.await;
            }
            Ok(())
        }
        Command::CloudControllerManager { kubeconfig, lb_address_pool } => {
            let client = skiff_runtime::client(&kubeconfig).await?;
            skiff_cloud::run(client, skiff_cloud::Options { pool: lb_address_pool }, shutdown).await;
            Ok(())
        }
        Command::Proxy { kubeconfig, hostname_override, data_dir, cluster_cidr, cleanup, proxy } => {
            let dir = std::path::absolute(data_dir.unwrap_or_else(|| default_data_dir().join("agent")))?;
            let table = skiff_proxy::table_for(&dir);
            if cleanup {
                skiff_proxy::cleanup(&table).await.with_context(|| format!("deleting nftables table ip {table}"))?;
                println!("removed nftables table ip {table}");
                return Ok(());
            }
            let kubeconfig = kubeconfig.context("--kubeconfig is required")?;
            let client = skiff_runtime::client(&kubeconfig).await?;
            let node = hostname_override.unwrap_or_else(host_node_name);
            skiff_proxy::run(client, proxy.options(&node, &dir, &cluster_cidr)?, shutdown).await;
            Ok(())
        }
        Command::Certificate { action: _, data_dir } => {
            let pki = data_dir.unwrap_or_else(default_data_dir).join("pki");
            let mut renewed = Vec::new();
            for entry in std::fs::read_dir(&pki).with_context(|| format!("reading {}", pki.display()))?.flatten() {
                let path = entry.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                // The CA and the ServiceAccount signing key stay: what they
                // signed must keep verifying.
                let leaf = (name.ends_with(".crt") || name.ends_with(".key")) && !name.starts_with("ca.") && !name.starts_with("service-account");
                if leaf {
                    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                    if name.ends_with(".crt") {
                        renewed.push(name.trim_end_matches(".crt").to_string());
                    }
                }
            }
            renewed.sort();
            println!("certificates renewed at the next start: {}", renewed.join(", "));
            Ok(())
        }
        Command::SecretsEncrypt { step, data_dir, encryption_provider_config, timeout_seconds } => {
            let dir = data_dir.unwrap_or_else(default_data_dir);
            secrets_encrypt::run(step, &dir, encryption_provider_config, std::time::Duration::from_secs(timeout_seconds))
        }
        Command::Snapshot { command } => snapshot::run(command).await,
        Command::Etcd { command: EtcdCommand::Member { command }, data_dir } => {
            embedded_etcd::member(&data_dir.unwrap_or_else(default_data_dir), command).await
        }
        Command::Killall { data_dir } => {
            let dir = std::path::absolute(data_dir.unwrap_or_else(default_data_dir))?;
            let report = skiff_kubelet::killall::killall(&dir);
            let agent_dir = skiff_kubelet::killall::agent_dir(&dir);
            let table = skiff_proxy::table_for(&agent_dir);
            if let Err(e) = skiff_proxy::cleanup(&table).await {
                tracing::warn!(error = %e, "removing the proxy's nftables table");
            }
            if let Err(e) = skiff_podnet::remove(&agent_dir, None).await {
                tracing::warn!(error = %e, "removing the pod network's device and routes");
            }
            println!(
                "killed {} processes, unmounted {} mounts, removed {} pod network namespaces, bridge and nftables table {} and the pod network's routes",
                report.killed.len(),
                report.unmounted.len(),
                report.namespaces.len(),
                report.network
            );
            Ok(())
        }
        Command::Images { command: ImagesCommand::Import { file, data_dir } } => {
            let dir = data_dir.unwrap_or_else(|| default_data_dir().join("agent"));
            let out = skiff_cri::oci::import(&dir.join("containerd").join("containerd.sock"), &file).await?;
            println!("{out}");
            Ok(())
        }
        Command::Images { command: ImagesCommand::BuildBusybox { name, output, busybox } } => {
            skiff_cri::oci::Image::busybox(&name, &busybox)
                .and_then(|i| i.write(&output))
                .with_context(|| format!("building {name} from {}", busybox.display()))?;
            println!("{}", output.display());
            Ok(())
        }
        Command::SimNodes { kubeconfig, count, prefix, cpu, memory, pods, lease_duration_seconds } => {
            let client = skiff_runtime::client(&kubeconfig).await?;
            skiff_simnodes::run(client, skiff_simnodes::Config { count, prefix, cpu, memory, pods, lease_duration_seconds }, shutdown).await?;
            Ok(())
        }
    }
}

async fn server(args: ServerArgs, shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    for d in &args.disable {
        if !matches!(d.as_str(), "scheduler" | "controllers" | "agent" | "proxy" | "dns" | "cloud-controller") {
            anyhow::bail!("--disable: unknown component {d:?} (scheduler, controllers, agent, proxy, dns, cloud-controller)");
        }
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    // The kubeconfig names certificate files; kubectl resolves relative
    // paths against the kubeconfig's folder, so they must be absolute.
    let data_dir = std::path::absolute(&data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
    // Every server has a token: it seals the cluster's CA and keys in the
    // store, for servers that share it and for restores from snapshots.
    let token = datastore::server_token(args.token.as_deref(), &data_dir)?;
    let embedded = if args.cluster_init || args.server.is_some() || embedded_etcd::configured(&data_dir) {
        let listen = embedded_etcd::Listen {
            name: (!args.disable.iter().any(|d| d == "agent")).then(|| args.agent.node_name()),
            advertise: args
                .advertise_address
                .or_else(|| Some(args.bind_address).filter(|a| !a.is_unspecified()))
                .or_else(|| skiff_kubelet::default_node_ip().is_ipv4().then(skiff_kubelet::default_node_ip))
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            client_port: args.etcd_client_port,
            peer_port: args.etcd_peer_port,
        };
        Some(match &args.server {
            Some(url) => embedded_etcd::join(&data_dir, listen, url, &token).await?,
            None => embedded_etcd::start_or_init(&data_dir, listen).await?,
        })
    } else {
        None
    };
    let datastore = match &embedded {
        Some(_) => datastore::Datastore::Etcd(embedded_etcd::client_options(&data_dir)?),
        None => datastore::Datastore::parse(&args.datastore, &data_dir)?,
    };
    let store = datastore.open().await?;
    if embedded.is_some() {
        embedded_etcd::migrate_sqlite(&data_dir, store.as_ref()).await?;
    }
    // A further server over a shared store takes the cluster's CA and keys.
    let joined = skiff_apiserver::shared_bootstrap::take(store.as_ref(), &data_dir, &token).await.context("taking the cluster's bootstrap data")?;
    let server_join = match &datastore {
        datastore::Datastore::Etcd(opts) => Some((token.clone(), opts.endpoints.clone())),
        datastore::Datastore::Sqlite(_) => None,
    };
    let compaction_interval = args.compaction_interval.unwrap_or(match datastore {
        datastore::Datastore::Etcd(_) => 300,
        datastore::Datastore::Sqlite(_) => 1,
    });
    let cfg = skiff_apiserver::Config {
        data_dir: data_dir.clone(),
        bind_address: args.bind_address,
        secure_port: args.secure_port,
        token_auth_file: args.token_auth_file.clone(),
        tls_san: args.tls_san.clone(),
        compaction_interval: std::time::Duration::from_secs(compaction_interval.max(1)),
        advertise_address: args.advertise_address,
        request_limits: skiff_apiserver::RequestLimits {
            timeout: args.request_timeout,
            max_inflight: args.max_requests_inflight,
            max_mutating_inflight: args.max_mutating_requests_inflight,
        },
        server_join,
        publish_bootstrap: (!joined).then(|| (store.clone(), token.clone())),
        default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
        service_cidr: args.service_cidr,
        service_account_issuer: args.service_account_issuer.clone(),
        encryption_provider_config: args.encryption_provider_config.clone(),
        secrets_encryption: args.secrets_encryption,
        certificate_lifetime: args.certificate_lifetime,
        node_certificate_lifetime: Some(args.controllers.cluster_signing_duration),
        audit: match (&args.audit_log_path, &args.audit_policy_file) {
            (Some(path), Some(policy)) => Some(skiff_apiserver::AuditConfig {
                path: path.clone(),
                policy: policy.clone(),
                max_size_mb: args.audit_log_maxsize,
                max_backups: args.audit_log_maxbackup,
            }),
            _ => None,
        },
        authorization_modes: skiff_apiserver::AuthorizationMode::parse_list(&args.authorization_mode).map_err(|e| anyhow::anyhow!("--authorization-mode: {e}"))?,
    };
    let server = skiff_apiserver::ApiServer::bind(cfg, store.clone()).await.context("starting the API server")?;
    if let Some(cron) = &args.snapshot_schedule_cron {
        croner::Cron::new(cron).with_seconds_optional().parse().map_err(|e| anyhow::anyhow!("--snapshot-schedule-cron {cron:?}: {e}"))?;
        tokio::spawn(snapshot::schedule(datastore.clone(), data_dir.clone(), cron.clone(), args.snapshot_retention, shutdown.clone()));
    }
    let mut components = Vec::new();
    if !args.disable.iter().any(|d| d == "scheduler") {
        let kc = data_dir.join("scheduler.kubeconfig");
        server.write_kubeconfig(&kc, "scheduler", "system:kube-scheduler", None)?;
        let client = skiff_runtime::client(&kc).await?;
        components.push(tokio::spawn(skiff_scheduler::run(client, Default::default(), shutdown.clone())));
    }
    if embedded.is_some() {
        // The server's own loop (it holds the CA key and etcd's keys):
        // it only watches Nodes.
        let kc = data_dir.join("etcd-member-remover.kubeconfig");
        server.write_kubeconfig(&kc, "etcd-member-remover", "system:skiff-etcd", Some("system:masters"))?;
        let client = skiff_runtime::client(&kc).await?;
        components.push(tokio::spawn(embedded_etcd::remove_members_of_deleted_nodes(data_dir.clone(), client, shutdown.clone())));
    }
    if !args.disable.iter().any(|d| d == "controllers") {
        let kc = data_dir.join("controller-manager.kubeconfig");
        server.write_kubeconfig(&kc, "controller-manager", "system:kube-controller-manager", None)?;
        let client = skiff_runtime::client(&kc).await?;
        let mut opts = args.controllers.options(true, &kc)?;
        opts.cluster_signing.get_or_insert_with(|| data_dir.join("pki"));
        components.push(tokio::spawn(skiff_controllers::run(client, opts, shutdown.clone())));
    }
    if !args.disable.iter().any(|d| d == "agent") {
        let node = args.agent.node_name();
        let kc = data_dir.join("kubelet.kubeconfig");
        let client_name = format!("kubelet-{node}");
        server.write_kubeconfig(&kc, &client_name, &format!("system:node:{node}"), Some("system:nodes"))?;
        let node_ip = args.agent.node_ip.unwrap_or_else(skiff_kubelet::default_node_ip);
        // The node's certificates renew themselves through the certificates
        // API, as a joined node's do.
        let pki = |n: &str, ext: &str| data_dir.join("pki").join(format!("{n}.{ext}"));
        let serving_name = server.kubelet_serving(&node, node_ip)?;
        let load = |n: &str| skiff_kubelet::certificates::NodeCert::load(pki(n, "crt"), pki(n, "key"));
        let rotation = skiff_kubelet::certificates::Rotation {
            node_name: node.clone(),
            serving_names: vec![node.clone(), node_ip.to_string()],
            client: load(&client_name)?,
            serving: load(&serving_name)?,
        };
        let client = skiff_kubelet::certificates::client(&kc, &rotation.client).await?;
        let ca = std::fs::read_to_string(pki("ca", "crt")).context("reading the cluster CA")?;
        let tls = skiff_pki::server_tls_from(&ca, rotation.serving.slot.clone(), &[b"http/1.1"])?;
        components.push(tokio::spawn(skiff_kubelet::certificates::rotate(client.clone(), rotation, shutdown.clone())));
        let mut agent = args.agent.clone();
        agent.node_ip = Some(node_ip);
        let (pod_mtu, network) = agent.start_pod_network(client.clone(), &data_dir.join("agent"), &args.controllers.cluster_cidr, shutdown.clone()).await?;
        components.extend(network);
        let mut cfg = agent.config(data_dir.join("agent"), tls, args.service_cidr.nth(10))?;
        cfg.cluster_cidr = Some(args.controllers.cluster_cidr.clone());
        cfg.pod_mtu = pod_mtu;
        // The server's own node is a control-plane node (`kubectl get nodes`
        // shows its role), as k3s labels its servers.
        cfg.node_labels.entry("node-role.kubernetes.io/control-plane".into()).or_insert_with(|| "true".into());
        let stop = shutdown.clone();
        components.push(tokio::spawn(async move {
            if let Err(e) = skiff_kubelet::run(client, cfg, stop).await {
                tracing::error!(error = %e, "the agent stopped");
            }
        }));
    }
    if !args.disable.iter().any(|d| d == "proxy") {
        let kc = data_dir.join("kube-proxy.kubeconfig");
        server.write_kubeconfig(&kc, "kube-proxy", "system:kube-proxy", None)?;
        let client = skiff_runtime::client(&kc).await?;
        let opts = args.proxy.options(&args.agent.node_name(), &data_dir.join("agent"), &args.controllers.cluster_cidr)?;
        components.push(tokio::spawn(skiff_proxy::run(client, opts, shutdown.clone())));
    }
    if !args.disable.iter().any(|d| d == "cloud-controller") {
        let kc = data_dir.join("cloud-controller-manager.kubeconfig");
        server.write_kubeconfig(&kc, "cloud-controller-manager", "system:cloud-controller-manager", None)?;
        let client = skiff_runtime::client(&kc).await?;
        components.push(tokio::spawn(skiff_cloud::run(client, skiff_cloud::Options { pool: args.lb_address_pool }, shutdown.clone())));
    }
    let shutdown_dns = shutdown.clone();
    if !args.disable.iter().any(|d| d == "dns") {
        let kc = data_dir.join("dns.kubeconfig");
        server.write_kubeconfig(&kc, "dns", "system:skiff-dns", None)?;
        let client = skiff_runtime::client(&kc).await?;
        let opts = skiff_dns::Options {
            cluster_domain: args.agent.cluster_domain.clone(),
            cluster_dns: args.agent.cluster_dns.unwrap_or(args.service_cidr.nth(10)),
            port: args.dns_port,
            advertise: args.agent.node_ip.unwrap_or_else(skiff_kubelet::default_node_ip),
            node_name: args.agent.node_name(),
            resolv_conf: args.agent.resolv_conf.clone(),
        };
        components.push(tokio::spawn(async move {
            if let Err(e) = skiff_dns::run(client, opts, shutdown_dns).await {
                tracing::error!(error = %e, "the cluster DNS stopped");
            }
        }));
    }
    tracing::info!(
        address = %server.local_addr,
        kubeconfig = %server.kubeconfig.display(),
        node_token = %data_dir.join("node-token").display(),
        "API server ready; admin kubeconfig written; agents join with `skiff agent --server URL --token $(cat NODE_TOKEN)`"
    );
    // On shutdown the components end first, while the API server still
    // answers their last requests (the leaders give their leases up), and
    // then the API server.
    let mut stop = shutdown.clone();
    server
        .serve(async move {
            let _ = stop.wait_for(|s| *s).await;
            for c in components {
                let _ = c.await;
            }
        })
        .await;
    // The store's own process goes last.
    if let Some(e) = embedded {
        e.stop().await;
    }
    Ok(())
}
