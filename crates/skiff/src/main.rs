//! The `skiff` binary: one executable for every component.
//!
//! `skiff server` runs the control plane (API server over the embedded
//! store, scheduler, controller manager); each of those can also run alone
//! against any API server, as `skiff scheduler` / `skiff controller-manager`.
//! `skiff sim-nodes` runs simulated nodes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Seconds between compactions of the store's history; each keeps
    /// one interval of history. Watches resume from the watch cache's own
    /// history, so the store keeps little: under churn the database stays
    /// near the size of the live data.
    #[arg(long, default_value_t = 5)]
    compaction_interval: u64,
    /// Components not to run in-process (comma-separated: scheduler, controllers).
    #[arg(long, value_delimiter = ',')]
    disable: Vec<String>,
    /// Seconds pods tolerate a not-ready node before eviction.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node before eviction.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    #[command(flatten)]
    controllers: ControllerArgs,
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
}

impl ControllerArgs {
    fn options(&self, leader_elect: bool) -> skiff_controllers::Options {
        skiff_controllers::Options {
            leader_elect,
            cluster_cidr: self.cluster_cidr.clone(),
            node_monitor_grace_period: std::time::Duration::from_secs(self.node_monitor_grace_period),
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            ..Default::default()
        }
    }
}

fn default_data_dir() -> PathBuf {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
            skiff_controllers::run(client, controllers.options(leader_elect), shutdown).await;
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
        if !matches!(d.as_str(), "scheduler" | "controllers" | "agent") {
            anyhow::bail!("--disable: unknown component {d:?} (scheduler, controllers)");
        }
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    // The kubeconfig names certificate files; kubectl resolves relative
    // paths against the kubeconfig's folder, so they must be absolute.
    let data_dir = std::path::absolute(&data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
    let store = skiff_store::SqliteStore::open(data_dir.join("state.db"), Default::default()).context("opening the store")?;
    let cfg = skiff_apiserver::Config {
        data_dir: data_dir.clone(),
        bind_address: args.bind_address,
        secure_port: args.secure_port,
        token_auth_file: args.token_auth_file.clone(),
        compaction_interval: std::time::Duration::from_secs(args.compaction_interval.max(1)),
        default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
    };
    let server = skiff_apiserver::ApiServer::bind(cfg, Arc::new(store)).await.context("starting the API server")?;
    let mut components = Vec::new();
    if !args.disable.iter().any(|d| d == "scheduler") {
        let kc = data_dir.join("scheduler.kubeconfig");
        server.write_kubeconfig(&kc, "scheduler", "system:kube-scheduler", None)?;
        let client = skiff_runtime::client(&kc).await?;
        components.push(tokio::spawn(skiff_scheduler::run(client, Default::default(), shutdown.clone())));
    }
    if !args.disable.iter().any(|d| d == "controllers") {
        let kc = data_dir.join("controller-manager.kubeconfig");
        server.write_kubeconfig(&kc, "controller-manager", "system:kube-controller-manager", None)?;
        let client = skiff_runtime::client(&kc).await?;
        components.push(tokio::spawn(skiff_controllers::run(client, args.controllers.options(true), shutdown.clone())));
    }
    tracing::info!(address = %server.local_addr, kubeconfig = %server.kubeconfig.display(), "API server ready; admin kubeconfig written");
    let mut stop = shutdown.clone();
    server
        .serve(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    for c in components {
        let _ = c.await;
    }
    Ok(())
}
