//! The scheduler's view of the cluster: nodes and the pods bound (or
//! assumed bound) to them, with what they request, updated from watches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_runtime::resources::{node_allocatable, pod_requests, Resources};

/// A pod as the scheduler accounts it on a node.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its requests.
    pub requests: Resources,
    /// Its requests with Kubernetes' non-zero defaults (for scoring).
    pub nonzero: Resources,
    /// Host ports it uses: (protocol, hostIP, port).
    pub ports: Vec<(String, String, i32)>,
}

impl PodInfo {
    /// Accounts a pod.
    pub fn new(pod: Arc<Pod>) -> Self {
        let requests = pod_requests(&pod);
        let mut nonzero = requests;
        // As kube-scheduler: containers with no request count as 100m / 200Mi when scoring.
        if nonzero.cpu == 0 {
            nonzero.cpu = 100;
        }
        if nonzero.memory == 0 {
            nonzero.memory = 200 << 20;
        }
        let ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let hp = p.host_port.filter(|h| *h > 0)?;
                Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()), hp))
            })
            .collect();
        Self { pod, requests, nonzero, ports }
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("")
    }
}

/// One node and what is on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// What it offers.
    pub allocatable: Resources,
    /// What its pods request.
    pub requested: Resources,
    /// The same with non-zero defaults.
    pub nonzero_requested: Resources,
    /// Its pods by uid.
    pub pods: HashMap<String, PodInfo>,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> Self {
        let allocatable = node_allocatable(&node);
        Self { node, allocatable, requested: Resources::default(), nonzero_requested: Resources::default(), pods: HashMap::new() }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// A node label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.node.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
    }

    pub(crate) fn add(&mut self, uid: String, info: PodInfo) {
        self.remove(&uid);
        self.requested = self.requested.plus(&info.requests);
        self.nonzero_requested = self.nonzero_requested.plus(&info.nonzero);
        self.pods.insert(uid, info);
    }

    pub(crate) fn remove(&mut self, uid: &str) -> bool {
        match self.pods.remove(uid) {
            Some(old) => {
                self.requested = self.requested.minus(&old.requests);
                self.nonzero_requested = self.nonzero_requested.minus(&old.nonzero);
                true
            }
            None => false,
        }
    }
}

/// Nodes by name, and where each bound pod is.
#[derive(Debug, Default)]
pub struct Cache {
    /// Nodes in a stable order (for rotating the search start).
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pod_node: HashMap<String, String>,
    /// Pods on nodes the cache does not know (yet).
    orphans: HashMap<String, (String, PodInfo)>,
}

impl Cache {
    /// Adds or updates a node.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.index.get(&name) {
            Some(&i) => {
                self.nodes[i].allocatable = node_allocatable(&node);
                self.nodes[i].node = node;
            }
            None => {
                self.index.insert(name.clone(), self.nodes.len());
                let mut info = NodeInfo::new(node);
                let waiting: Vec<String> = self.orphans.iter().filter(|(_, (n, _))| *n == name).map(|(u, _)| u.clone()).collect();
                for uid in waiting {
                    if let Some((_, p)) = self.orphans.remove(&uid) {
                        info.add(uid, p);
                    }
                }
                self.nodes.push(info);
            }
        }
    }

    /// Removes a node.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let removed = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name().to_string();
            self.index.insert(moved, i);
        }
        for (uid, p) in removed.pods {
            self.orphans.insert(uid, (name.to_string(), p));
        }
    }

    /// Records a pod as bound (or assumed bound) to `node`.
    pub fn add_pod(&mut self, node: &str, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.remove_pod(&uid);
        let info = PodInfo::new(pod);
        match self.index.get(node) {
            Some(&i) => self.nodes[i].add(uid.clone(), info),
            None => {
                self.orphans.insert(uid.clone(), (node.to_string(), info));
            }
        }
        self.pod_node.insert(uid, node.to_string());
    }

    /// Forgets a pod.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        self.orphans.remove(uid);
        match self.pod_node.remove(uid).and_then(|n| self.index.get(&n).copied()) {
            Some(i) => self.nodes[i].remove(uid),
            None => false,
        }
    }

    /// The node a pod is accounted on.
    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.pod_node.get(uid).map(String::as_str)
    }
}
