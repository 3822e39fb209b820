//! The `skiff` binary: one executable for every component.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Runs the control plane (today: the API server over the embedded store).
    Server {
        /// Where the store, certificates and kubeconfig live.
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
        /// Seconds between compactions of the store's history.
        #[arg(long, default_value_t = 60)]
        compaction_interval: u64,
    },
}

fn default_data_dir() -> PathBuf {
    // Root gets the system location, like k3s; others their own.
    if std::env::var("USER").is_ok_and(|u| u == "root") || std::env::var("HOME").is_ok_and(|h| h == "/root") {
        PathBuf::from("/var/lib/skiff")
    } else {
        std::env::var("HOME").map(|h| PathBuf::from(h).join(".local/share/skiff")).unwrap_or_else(|_| PathBuf::from("skiff-data"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    match Cli::parse().command {
        Command::Server { data_dir, bind_address, secure_port, token_auth_file, compaction_interval } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            // The kubeconfig names certificate files; kubectl resolves relative
            // paths against the kubeconfig's folder, so they must be absolute.
            let data_dir = std::path::absolute(&data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
            let store = skiff_store::SqliteStore::open(data_dir.join("state.db"), Default::default()).context("opening the store")?;
            let cfg = skiff_apiserver::Config {
                data_dir,
                bind_address,
                secure_port,
                token_auth_file,
                compaction_interval: std::time::Duration::from_secs(compaction_interval.max(1)),
            };
            let server = skiff_apiserver::ApiServer::bind(cfg, Arc::new(store)).await.context("starting the API server")?;
            tracing::info!(address = %server.local_addr, kubeconfig = %server.kubeconfig.display(), "API server ready; admin kubeconfig written");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            server.serve(shutdown).await;
            Ok(())
        }
    }
}
