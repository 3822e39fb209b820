//! skiff's kube-apiserver: HTTPS with client-certificate and bearer-token
//! authentication, discovery (plain and aggregated), OpenAPI v3, and every
//! REST verb of every registered resource, with lists and watches served
//! from a watch cache fed by one store watch.
//!
//! Modules: [`handler`] routes; `read`, `write`, `watch` serve the verbs;
//! `cache` is the watch cache; `discovery`, `auth`, `metrics`, `respond`
//! are what their names say.

#![deny(missing_docs)]

mod admission;
mod aggregator;
mod audit;
mod auth;
mod authz;
mod cache;
mod component_status;
mod convert;
mod crd;
mod discovery;
pub mod encryption;
mod eviction;
mod handler;
mod join;
mod limits;
mod metrics;
mod peers;
mod proxy;
mod read;
mod resource_metrics;
mod respond;
mod service_account;
pub mod shared_bootstrap;
mod watch;
mod write;

pub use audit::{AuditConfig, AuditError};
pub use auth::{TokenFile, TokenFileError};
pub use join::SERVER_BOOTSTRAP_PATH;
pub use limits::RequestLimits;
pub use authz::Mode as AuthorizationMode;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_pki::{ClusterPki, JoinToken};
use skiff_store::Store;
use tokio::net::TcpListener;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Certificates could not be made or loaded.
    #[error("pki: {0}")]
    Pki(#[from] skiff_pki::PkiError),
    /// Binding or file I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed during bootstrap.
    #[error("store: {0}")]
    Store(#[from] skiff_store::StoreError),
    /// The token file is unreadable or malformed.
    #[error("token file: {0}")]
    Tokens(#[from] TokenFileError),
    /// The audit policy is unreadable or invalid.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The encryption configuration is unreadable or invalid.
    #[error(transparent)]
    Encryption(#[from] encryption::EncryptionError),
    /// The cluster's shared bootstrap data could not be taken or published.
    #[error("bootstrap data: {0}")]
    Bootstrap(String),
}

/// How to run the API server.
#[derive(Clone)]
pub struct Config {
    /// Where certificates and the admin kubeconfig live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// HTTPS port.
    pub secure_port: u16,
    /// Extra names and addresses for the serving certificate (`--tls-san`).
    pub tls_san: Vec<String>,
    /// kube-apiserver's `--token-auth-file`: static bearer tokens.
    pub token_auth_file: Option<PathBuf>,
    /// How often the store's history is compacted; each compaction keeps
    /// at least one interval of history for watches to resume from.
    pub compaction_interval: std::time::Duration,
    /// `tolerationSeconds` of the `node.kubernetes.io/not-ready:NoExecute`
    /// toleration added to every pod (kube-apiserver's DefaultTolerationSeconds).
    pub default_not_ready_toleration_seconds: i64,
    /// The same for `node.kubernetes.io/unreachable:NoExecute`.
    pub default_unreachable_toleration_seconds: i64,
    /// The range ClusterIPs are allocated from (`--service-cidr`).
    pub service_cidr: skiff_api::cidr::Cidr,
    /// The issuer of ServiceAccount tokens (`--service-account-issuer`),
    /// also the audience tokens must name to authenticate here.
    pub service_account_issuer: String,
    /// `--authorization-mode`: the authorizers asked, in order.
    pub authorization_modes: Vec<AuthorizationMode>,
    /// Encryption at rest: kube's `--encryption-provider-config`, or with
    /// `None` and `secrets_encryption` a configuration generated under the
    /// data dir (a new AES-CBC key for Secrets, as k3s's `--secrets-encryption`).
    pub encryption_provider_config: Option<PathBuf>,
    /// Encrypt Secrets at rest when no configuration file is given.
    pub secrets_encryption: bool,
    /// The audit log (`--audit-log-path`, `--audit-policy-file`).
    pub audit: Option<AuditConfig>,
    /// How long the certificates the server issues itself live (serving,
    /// components', nodes'); one year by default. Those within 90 days of
    /// their end are renewed at start.
    pub certificate_lifetime: Option<std::time::Duration>,
    /// How long the certificates signed for joining nodes live (the
    /// controller manager's `--cluster-signing-duration`); by default as
    /// `certificate_lifetime`.
    pub node_certificate_lifetime: Option<std::time::Duration>,
    /// The address other hosts and pods reach this server at, published in
    /// the `kubernetes` endpoints (`--advertise-address`); by default the
    /// bound address, or the host's first IPv4 one when bound to all.
    pub advertise_address: Option<IpAddr>,
    /// The server token and the etcd client URLs a further server joins
    /// (`skiff server --server URL --token T`); `None` over SQLite.
    pub server_join: Option<(String, Vec<String>)>,
    /// When this is the cluster's first server: the store (unwrapped) and
    /// the server token to publish the shared bootstrap data with, before
    /// the server reports ready.
    pub publish_bootstrap: Option<(Arc<dyn Store>, String)>,
    /// The deadline and in-flight limits of every request
    /// (`--request-timeout`, `--max-requests-inflight`,
    /// `--max-mutating-requests-inflight`).
    pub request_limits: RequestLimits,
}

/// Where the generated encryption configuration lives in a data dir.
pub fn encryption_config_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("encryption-config.yaml")
}

/// Where the server records which keys hold the stored values.
pub fn encryption_status_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("encryption-status.json")
}

/// k3s's and kubeadm's default `--service-account-issuer`.
pub const DEFAULT_SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A bound, ready-to-serve API server.
pub struct ApiServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<handler::State>,
    shutdown: tokio::sync::watch::Sender<bool>,
    compaction_interval: std::time::Duration,
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Path of the admin kubeconfig written for this server.
    pub kubeconfig: PathBuf,
    pki: Arc<ClusterPki>,
    pki_dir: PathBuf,
    server: String,
    /// The encrypting store, its configuration file and status file.
    encryption: Option<(Arc<encryption::EncryptedStore>, PathBuf, PathBuf)>,
    /// This server's lease name (`kube-system/apiserver-…`).
    identity: String,
    /// Where clients reach this server, published in the `kubernetes` endpoints.
    advertise: Option<(IpAddr, u16)>,
}

/// The addresses of this host's interfaces that are up, except loopback
/// and the pod bridges and veths skiff itself creates.
fn host_addresses() -> Vec<IpAddr> {
    let Ok(ifaces) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    ifaces
        .filter(|i| !i.interface_name.starts_with("skiff") && !i.interface_name.starts_with("veth") && !i.interface_name.starts_with("cni"))
        .filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())).or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .filter(|ip| !ip.is_loopback() && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .collect()
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl ApiServer {
    /// Makes or loads the certificates, binds the port, bootstraps the
    /// default namespaces and writes the admin kubeconfig.
    pub async fn bind(cfg: Config, store: Arc<dyn Store>) -> Result<Self, ServerError> {
        let config_path = match (&cfg.encryption_provider_config, cfg.secrets_encryption) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => {
                let p = encryption_config_path(&cfg.data_dir);
                if !p.exists() {
                    write_private(&p, encryption::generate_config().as_bytes())?;
                }
                Some(p)
            }
            (None, false) => None,
        };
        let (store, encryption) = match config_path {
            Some(path) => {
                let enc = encryption::EncryptedStore::new(store, encryption::EncryptionConfig::load(&path)?);
                (enc.clone() as Arc<dyn Store>, Some((enc, path, encryption_status_path(&cfg.data_dir))))
            }
            None => (store, None),
        };
        let pki_dir = cfg.data_dir.join("pki");
        let mut pki = ClusterPki::load_or_create(&pki_dir)?;
        if let Some(lifetime) = cfg.certificate_lifetime {
            pki = pki.with_leaf_lifetime(lifetime);
        }
        let pki = Arc::new(pki);
        // What in-cluster clients dial: the `kubernetes` Service by name and ClusterIP.
        let mut names = vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            cfg.service_cidr.nth(1).to_string(),
            host_name(),
        ];
        if cfg.bind_address.is_unspecified() {
            // Agents on other machines dial one of this host's addresses.
            names.extend(host_addresses().iter().map(|a| a.to_string()));
        } else {
            names.push(cfg.bind_address.to_string());
        }
        names.extend(cfg.tls_san.iter().cloned());
        let serving = pki.load_or_issue("apiserver", |p| p.issue_server("kube-apiserver", &names))?;
        let tls = pki.server_tls(&serving, &[b"http/1.1"])?;
        let listener = TcpListener::bind((cfg.bind_address, cfg.secure_port)).await?;
        let local_addr = listener.local_addr()?;
        let tokens = match &cfg.token_auth_file {
            Some(p) => TokenFile::load(p)?,
            None => TokenFile::default(),
        };
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let cache = cache::WatchCache::start(store.clone(), shutdown_rx.clone()).await?;
        let state = Arc::new(handler::State {
            store,
            cache,
            metrics: metrics::Metrics::new(),
            tokens,
            shutdown: shutdown_rx,
            toleration_seconds: (cfg.default_not_ready_toleration_seconds, cfg.default_unreachable_toleration_seconds),
            allocations: tokio::sync::Mutex::new(()),
            quota_lock: tokio::sync::Mutex::new(()),
            kubelet_tls: Some(
                pki.client_tls(&pki.load_or_issue("apiserver-kubelet-client", |p| p.issue_client("kube-apiserver-kubelet-client", Some("system:masters")))?)?,
            ),
            join: join::Join {
                pki: pki.clone(),
                token: JoinToken::load_or_create(&cfg.data_dir.join("node-token"), pki.ca_cert_pem())?,
                node_lifetime: cfg.node_certificate_lifetime,
                server: cfg.server_join.clone(),
            },
            service_cidr: cfg.service_cidr,
            service_accounts: skiff_pki::ServiceAccountKey::load_or_create(&pki_dir, &cfg.service_account_issuer)?,
            api_audiences: vec![cfg.service_account_issuer.clone()],
            authorizer: authz::Authorizer::new(cfg.authorization_modes.clone()),
            auditor: cfg.audit.as_ref().map(audit::Auditor::start).transpose()?,
            crds: crd::CustomResources::default(),
            webhooks: Arc::new(admission::webhook::WebhookClient::new(pki.ca_cert_pem())),
            aggregator: Default::default(),
            in_flight: limits::InFlight::new(&cfg.request_limits),
            request_timeout: cfg.request_limits.timeout,
        });
        // The address pods reach this server at: the one it is bound to, or
        // when bound to every address the host's first IPv4 one (as
        // kube-apiserver's --advertise-address defaults); none on loopback.
        let advertise = if let Some(a) = cfg.advertise_address {
            Some(a)
        } else if cfg.bind_address.is_unspecified() {
            host_addresses().into_iter().find(IpAddr::is_ipv4)
        } else {
            Some(cfg.bind_address).filter(|a| !a.is_loopback())
        };
        handler::bootstrap(&state, local_addr.port()).await?;
        let advertise = advertise.map(|a| (a, local_addr.port()));
        let identity = peers::identity(&host_name(), &local_addr.to_string(), &cfg.data_dir);
        aggregator::bootstrap(&state).await?;
        authz::policy::reconcile(&state).await?;
        let host = if cfg.bind_address.is_unspecified() { "127.0.0.1".to_string() } else { cfg.bind_address.to_string() };
        let server = format!("https://{host}:{}", local_addr.port());
        let kubeconfig = cfg.data_dir.join("admin.kubeconfig");
        let me = Self {
            listener,
            tls: tokio_rustls::TlsAcceptor::from(tls),
            state,
            shutdown,
            compaction_interval: cfg.compaction_interval,
            local_addr,
            kubeconfig: kubeconfig.clone(),
            pki,
            pki_dir,
            server,
            encryption,
            identity,
            advertise,
        };
        // The first server of a cluster publishes its CA and keys for the
        // servers that join, before anyone can see it ready (its kubeconfig).
        if let Some((store, token)) = &cfg.publish_bootstrap {
            shared_bootstrap::publish(store.as_ref(), &cfg.data_dir, token).await?;
        }
        me.write_kubeconfig(&kubeconfig, "admin", "admin", Some("system:masters"))?;
        Ok(me)
    }

    /// Writes a kubeconfig for a component: a client certificate for `user`
    /// (in `group`) signed by the cluster CA, and this server's address.
    pub fn write_kubeconfig(&self, path: &std::path::Path, cert_name: &str, user: &str, group: Option<&str>) -> Result<(), ServerError> {
        self.pki.load_or_issue(cert_name, |p| p.issue_client(user, group))?;
        let p = |f: &str| self.pki_dir.join(f);
        let doc =
            skiff_pki::kubeconfig_yaml(&self.server, &p("ca.crt"), &p(&format!("{cert_name}.crt")), &p(&format!("{cert_name}.key")), user, Some("default"));
        // Written whole or not at all: whoever waits for the file (scripts,
        // tests) never reads half of it.
        let tmp = path.with_extension("kubeconfig.tmp");
        std::fs::write(&tmp, doc)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The serving certificate of a kubelet's API, for the node's name and
    /// address and signed by the cluster CA, issued when missing or near
    /// its end: its name in the PKI directory (`NAME.crt`, `NAME.key`).
    pub fn kubelet_serving(&self, node_name: &str, node_ip: IpAddr) -> Result<String, ServerError> {
        let names = vec![node_name.to_string(), node_ip.to_string(), "127.0.0.1".into(), "localhost".into()];
        let name = format!("kubelet-{node_name}-{node_ip}");
        self.pki.load_or_issue(&name, |p| p.issue_server(node_name, &names))?;
        Ok(name)
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        tokio::spawn(compactor(self.state.store.clone(), self.state.cache.clone(), self.compaction_interval, self.shutdown.subscribe()));
        tokio::spawn(crd::status::run(self.state.clone()));
        tokio::spawn(aggregator::run(self.state.clone()));
        let peers = tokio::spawn(peers::run(self.state.clone(), self.identity.clone(), self.advertise, self.shutdown.subscribe()));
        if let Some((store, config, status)) = &self.encryption {
            tokio::spawn(store.clone().follow(config.clone(), status.clone(), self.shutdown.subscribe()));
        }
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut shutdown => {
                    // Ends watches, the watch cache's follower and the
                    // compactor; this server leaves the endpoints.
                    self.shutdown.send_replace(true);
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), peers).await;
                    return;
                }
            };
            let Ok((tcp, peer)) = accepted else { continue };
            let (tls, state) = (self.tls.clone(), self.state.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else { return };
                let identity = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| skiff_pki::identity_of(c.as_ref()));
                let svc = hyper::service::service_fn(move |req| {
                    let (state, identity) = (state.clone(), identity.clone());
                    async move { Ok::<_, std::convert::Infallible>(handler::handle(&state, identity, Some(peer.ip()), req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
            });
        }
    }
}

/// Writes a file only its owner reads (a key).
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Compacts the store every `interval` up to the revision it had one
/// interval earlier, as kube-apiserver does with etcd, and never past what
/// the watch cache has applied: watches resume from the watch cache's own
/// history, so the store needs only enough to feed the cache, and under
/// churn the database stays near the size of the live data.
async fn compactor(store: Arc<dyn Store>, cache: Arc<cache::WatchCache>, interval: std::time::Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut previous = store.current_revision();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let target = previous.min(cache.revision());
        previous = store.current_revision();
        if target > store.compacted_revision() {
            if let Err(e) = store.compact(target).await {
                tracing::warn!(error = %e, revision = target, "compaction failed");
            }
        }
    }
}
