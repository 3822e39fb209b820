//! skiff's kube-controller-manager: each controller is a reconcile loop
//! (kube-runtime's `Controller`: informers, a deduplicating work queue,
//! rate-limited retries) over the API, in its own folder, as in
//! Kubernetes' `pkg/controller/*`. All run under one leader-election Lease.

#![deny(missing_docs)]

pub mod clusterroleaggregation;
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
                tokio::join!(
                    replicaset::run::<k8s_openapi::api::apps::v1::ReplicaSet>(client.clone(), i.clone(), shutdown.clone()),
                    replicaset::run::<k8s_openapi::api::core::v1::ReplicationController>(client.clone(), i.clone(), shutdown.clone()),
                    deployment::run(client.clone(), i.clone(), shutdown.clone()),
                    job::run(client.clone(), i.clone(), shutdown.clone()),
                    cronjob::run(client.clone(), i.clone(), shutdown.clone()),
                    daemonset::run(client.clone(), i.clone(), shutdown.clone()),
                    statefulset::run(client.clone(), i.clone(), shutdown.clone()),
                    endpoints::run(client.clone(), i.clone(), shutdown.clone()),
                    podgc::run(client.clone(), i.clone(), opts.terminated_pod_gc_threshold, shutdown.clone()),
                    persistentvolume::run(client.clone(), i.clone(), shutdown.clone()),
                    garbagecollector::run(client.clone(), shutdown.clone()),
                    namespace::run(client.clone(), i.clone(), shutdown.clone()),
                    serviceaccount::run(client.clone(), shutdown.clone()),
                    clusterroleaggregation::run(client.clone(), shutdown.clone()),
                    disruption::run(client.clone(), i.clone(), shutdown.clone()),
                    resourcequota::run(client.clone(), i.clone(), shutdown.clone()),
                    async {
                        if let Some(ca) = opts.root_ca.clone() {
                            rootcacert::run(client.clone(), ca, shutdown.clone()).await;
                        }
                    },
                    nodeipam::run(client.clone(), &opts.cluster_cidr, shutdown.clone()),
                    nodelifecycle::run(client.clone(), i.clone(), opts.node_monitor_grace_period, shutdown.clone()),
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
