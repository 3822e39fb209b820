//! skiff's kube-controller-manager: each controller is a reconcile loop
//! (kube-runtime's `Controller`: informers, a deduplicating work queue,
//! rate-limited retries) over the API, in its own folder, as in
//! Kubernetes' `pkg/controller/*`. All run under one leader-election Lease.

#![deny(missing_docs)]

pub mod certificates;
pub mod clusterroleaggregation;
pub mod credentials;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbagecollector;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podautoscaler;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod rootcacert;
pub mod serviceaccount;
pub mod statefulset;
mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_runtime::informer::Informer;
use tokio::sync::watch;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialized.
    #[error(transparent)]
    Serde(#[from] serde_json::Error),
    /// Something the object says is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// How the controller manager runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hold the `kube-system/kube-controller-manager` Lease while running.
    pub leader_elect: bool,
    /// Identity for leader election.
    pub identity: String,
    /// The range node podCIDRs come from (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// A node whose Lease is older than this is NotReady (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// Finished pods kept before PodGC deletes the oldest (0 = never).
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA (PEM) published to every namespace as
    /// `kube-root-ca.crt`; `None` publishes nothing.
    pub root_ca: Option<String>,
    /// Each controller under its own ServiceAccount
    /// (`--use-service-account-credentials`); `None`: all as the manager.
    pub credentials: Option<credentials::Credentials>,
    /// The cluster CA's directory (`ca.crt`, `ca.key`), with which the
    /// certificates API's built-in signers issue; `None`: no signing.
    pub cluster_signing: Option<std::path::PathBuf>,
    /// The longest a certificate the built-in signers issue lives
    /// (`--cluster-signing-duration`, a year by default): a request's
    /// `expirationSeconds` may only shorten it.
    pub cluster_signing_duration: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Self {
            leader_elect: true,
            identity: format!("{host}_{}", rand::random::<u32>()),
            cluster_cidr: "10.42.0.0/16".into(),
            node_monitor_grace_period: Duration::from_secs(40),
            terminated_pod_gc_threshold: 12_500,
            root_ca: None,
            credentials: None,
            cluster_signing: None,
            cluster_signing_duration: certificates::DEFAULT_DURATION,
        }
    }
}

/// The informers the controllers share: one watch and cache per kind.
#[derive(Clone)]
pub struct Informers {
    /// Every pod.
    pub pods: Arc<Informer<Pod>>,
    /// Every node.
    pub nodes: Arc<Informer<Node>>,
    /// Every ReplicaSet.
    pub replicasets: Arc<Informer<ReplicaSet>>,
    /// Every Job.
    pub jobs: Arc<Informer<Job>>,
}

impl Informers {
    /// Starts the shared watches.
    pub fn start(client: &kube::Client, shutdown: &watch::Receiver<bool>) -> Self {
        let cfg = kube::runtime::watcher::Config::default;
        Self {
            pods: Informer::start(kube::Api::all(client.clone()), cfg(), shutdown.clone()),
            nodes: Informer::start(kube::Api::all(client.clone()), cfg(), shutdown.clone()),
            replicasets: Informer::start(kube::Api::all(client.clone()), cfg(), shutdown.clone()),
            jobs: Informer::start(kube::Api::all(client.clone()), cfg(), shutdown.clone()),
        }
    }
}

/// Runs every controller until `shutdown` flips to true.
pub async fn run(client: kube::Client, opts: Options, shutdown: watch::Receiver<bool>) {
    let work = {
        let (client, opts, shutdown) = (client.clone(), opts.clone(), shutdown.clone());
        move || {
            let (client, opts, shutdown) = (client.clone(), opts.clone(), shutdown.clone());
            async move {
                let i = Informers::start(&client, &shutdown);
                // Each controller's client: its ServiceAccount's, or the manager's.
                let as_account = |name: &'static str| {
                    let (client, creds, shutdown) = (client.clone(), opts.credentials.clone(), shutdown.clone());
                    async move {
                        let Some(creds) = creds else { return client };
                        match creds.client_for(&client, name, shutdown).await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::error!(controller = name, error = %e, "no credentials for the controller: it acts as the controller manager");
                                client
                            }
                        }
                    }
                };
                // nodeipam and nodelifecycle are both kube's node-controller: one account, one token.
                let node_controller = as_account("node-controller").await;
                tokio::join!(
                    async { replicaset::run::<k8s_openapi::api::apps::v1::ReplicaSet>(as_account("replicaset-controller").await, i.clone(), shutdown.clone()).await },
                    async {
                        replicaset::run::<k8s_openapi::api::core::v1::ReplicationController>(as_account("replication-controller").await, i.clone(), shutdown.clone()).await
                    },
                    async { deployment::run(as_account("deployment-controller").await, i.clone(), shutdown.clone()).await },
                    async { job::run(as_account("job-controller").await, i.clone(), shutdown.clone()).await },
                    async { cronjob::run(as_account("cronjob-controller").await, i.clone(), shutdown.clone()).await },
                    async { daemonset::run(as_account("daemon-set-controller").await, i.clone(), shutdown.clone()).await },
                    async { statefulset::run(as_account("statefulset-controller").await, i.clone(), shutdown.clone()).await },
                    async { endpoints::run(as_account("endpoint-controller").await, i.clone(), shutdown.clone()).await },
                    async { podgc::run(as_account("pod-garbage-collector").await, i.clone(), opts.terminated_pod_gc_threshold, shutdown.clone()).await },
                    async { persistentvolume::run(as_account("persistent-volume-binder").await, i.clone(), shutdown.clone()).await },
                    async { garbagecollector::run(as_account("generic-garbage-collector").await, shutdown.clone()).await },
                    async { namespace::run(as_account("namespace-controller").await, i.clone(), shutdown.clone()).await },
                    async { serviceaccount::run(as_account("service-account-controller").await, shutdown.clone()).await },
                    // kube runs the tokens controller with the manager's own client.
                    serviceaccount::tokens::run(client.clone(), opts.root_ca.clone(), shutdown.clone()),
                    async { clusterroleaggregation::run(as_account("clusterrole-aggregation-controller").await, shutdown.clone()).await },
                    async { disruption::run(as_account("disruption-controller").await, i.clone(), shutdown.clone()).await },
                    async { podautoscaler::run(as_account("horizontal-pod-autoscaler").await, i.clone(), shutdown.clone()).await },
                    async { resourcequota::run(as_account("resourcequota-controller").await, i.clone(), shutdown.clone()).await },
                    async {
                        if let Some(ca) = opts.root_ca.clone() {
                            rootcacert::run(as_account("root-ca-cert-publisher").await, ca, shutdown.clone()).await;
                        }
                    },
                    nodeipam::run(node_controller.clone(), &opts.cluster_cidr, shutdown.clone()),
                    async {
                        let pki = match &opts.cluster_signing {
                            Some(dir) => match skiff_pki::ClusterPki::load_or_create(dir) {
                                Ok(p) => Some(Arc::new(p)),
                                Err(e) => {
                                    tracing::error!(dir = %dir.display(), error = %e, "the cluster CA cannot sign: certificate requests stay unissued");
                                    None
                                }
                            },
                            None => None,
                        };
                        let c = as_account("certificate-controller").await;
                        certificates::run(c.clone(), c, pki, opts.cluster_signing_duration, shutdown.clone()).await
                    },
                    nodelifecycle::run(node_controller, i.clone(), opts.node_monitor_grace_period, shutdown.clone()),
                );
            }
        }
    };
    if opts.leader_elect {
        skiff_runtime::leader::lead(client, "kube-system", "kube-controller-manager", &opts.identity, Default::default(), shutdown, work).await;
    } else {
        work().await;
    }
}
