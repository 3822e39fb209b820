//! The garbage collector: a graph of owners and dependents built from
//! watches on every kind that owns or is owned. When an owner is gone its
//! dependents are deleted (or just unlinked when another owner remains);
//! an owner deleted with `propagationPolicy=Orphan` first has its
//! dependents unlinked, one deleted with `Foreground` first has its
//! dependents deleted; then the GC removes the `orphan` /
//! `foregroundDeletion` finalizer and the API server completes the delete.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::json;
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::watch;

/// The kinds the collector follows: (group, version, kind, plural, namespaced).
const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Node", "nodes", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "Endpoints", "endpoints", true),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "ReplicationController", "replicationcontrollers", true),
    ("", "v1", "PodTemplate", "podtemplates", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true),
];

/// How often discovery is read again for new kinds (kube's GC resyncs
/// its monitors as often); a dependent naming an owner of an unknown kind
/// makes it read at once.
const REDISCOVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// One kind the collector follows.
#[derive(Clone)]
struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

impl Kind {
    fn api_version(&self) -> &str {
        &self.ar.api_version
    }
}

/// The kinds followed: the built-in ones, then those discovery adds
/// (custom resources), append-only so a node's index stays valid.
#[derive(Clone, Default)]
struct Kinds(Vec<Kind>);

impl Kinds {
    fn builtin() -> Self {
        Self(
            KINDS
                .iter()
                .map(|(g, v, k, plural, namespaced)| Kind { ar: ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural), namespaced: *namespaced })
                .collect(),
        )
    }

    fn find(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.0.iter().position(|k| k.ar.kind == kind && k.api_version() == api_version)
    }
}

/// Custom kinds discovery lists that the collector does not follow yet:
/// deletable, listable and watchable ones of groups that are not built in.
async fn discover(client: &kube::Client, known: &Kinds) -> Result<Vec<Kind>, kube::Error> {
    use kube::discovery::{verbs, Discovery, Scope};
    // The built-in groups' kinds that own or are owned are in KINDS.
    let builtin: HashSet<&str> = skiff_api::registry::group_versions().into_iter().map(|(g, _)| g).collect();
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        if builtin.contains(group.name()) {
            continue;
        }
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v));
            if usable && known.find(&ar.api_version, &ar.kind).is_none() {
                out.push(Kind { ar, namespaced: caps.scope == Scope::Namespaced });
            }
        }
    }
    Ok(out)
}

/// One object in the graph.
#[derive(Debug, Clone)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// Owners whose dependents are being handled (avoids repeating calls).
    in_progress: HashSet<String>,
}

impl Graph {
    fn upsert(&mut self, uid: String, node: Node) {
        self.unlink(&uid);
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    fn unlink(&mut self, uid: &str) {
        if let Some(old) = self.nodes.get(uid) {
            for o in &old.owners {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
            }
        }
    }

    fn remove(&mut self, uid: &str) -> Option<Node> {
        self.unlink(uid);
        self.in_progress.remove(uid);
        self.nodes.remove(uid)
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents.get(uid).into_iter().flatten().filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone()))).collect()
    }
}

/// What to do, computed under the graph and done afterwards.
enum Work {
    Delete { uid: String, node: Node, propagation: &'static str },
    Unlink { node: Node, owner: String },
    Unfinalize { uid: String, node: Node, finalizer: &'static str },
    VerifyOwner { uid: String, node: Node, owner: OwnerReference },
}

/// What the collector watches of every object: its metadata.
type Meta = PartialObjectMeta<DynamicObject>;

/// One kind's changes, tagged with the kind's index.
type Feed = futures::stream::BoxStream<'static, (usize, Change<Meta>)>;

/// A kind's metadata informer and its feed, tagged with the kind's index.
fn follow(
    client: &kube::Client,
    i: usize,
    kind: &Kind,
    shutdown: &watch::Receiver<bool>,
) -> (std::sync::Arc<Informer<Meta>>, Feed) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), &kind.ar);
    let inf = Informer::start_with(api, kind.ar.clone(), watcher::Config::default(), shutdown.clone());
    let feed = inf.changes().map(move |c| (i, c)).boxed();
    (inf, feed)
}

/// Runs the collector until shutdown.
pub async fn run(client: kube::Client, mut shutdown: watch::Receiver<bool>) {
    // Metadata only: the graph needs owners, finalizers and names. The
    // informers' feeds are merged into one, each change tagged with its kind.
    let mut kinds = Kinds::builtin();
    let mut informers = Vec::new();
    let mut rx = futures::stream::SelectAll::new();
    for (i, k) in kinds.0.iter().enumerate() {
        let (inf, feed) = follow(&client, i, k, &shutdown);
        informers.push(inf);
        rx.push(feed);
    }
    let mut graph = Graph::default();
    let mut synced: HashSet<usize> = HashSet::new();
    let mut rediscover = tokio::time::interval(REDISCOVERY);
    let mut unknown_owner = false;
    loop {
        let (kind, ev) = tokio::select! {
            m = rx.next() => match m { Some(m) => m, None => break },
            _ = rediscover.tick() => {
                unknown_owner = false;
                match discover(&client, &kinds).await {
                    Ok(new) => {
                        for k in new {
                            let i = kinds.0.len();
                            tracing::debug!(kind = %k.ar.kind, api_version = %k.ar.api_version, "garbage collector follows a new kind");
                            let (inf, feed) = follow(&client, i, &k, &shutdown);
                            informers.push(inf);
                            rx.push(feed);
                            kinds.0.push(k);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "garbage collector discovery failed"),
                }
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let mut work = Vec::new();
        match ev {
            Change::Synced => {
                synced.insert(kind);
                if synced.len() == kinds.0.len() {
                    // Everything known: look for dependents of owners that are gone.
                    let uids: Vec<String> = graph.nodes.keys().cloned().collect();
                    for uid in uids {
                        absent_owners(&graph, &uid, &mut work);
                    }
                }
            }
            Change::Applied(obj) => {
                let uid = obj.metadata.uid.clone().unwrap_or_default();
                let node = Node {
                    kind,
                    namespace: obj.metadata.namespace.clone(),
                    name: obj.metadata.name.clone().unwrap_or_default(),
                    owners: obj.metadata.owner_references.clone().unwrap_or_default(),
                    deleting: obj.metadata.deletion_timestamp.is_some(),
                    finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
                };
                // Owners before and after: one that lost this dependent may now be done.
                let mut owners: Vec<String> = node.owners.iter().map(|o| o.uid.clone()).collect();
                owners.extend(graph.nodes.get(&uid).into_iter().flat_map(|n| n.owners.iter().map(|o| o.uid.clone())));
                // An owner of a kind not followed yet: look at discovery now.
                if !unknown_owner && node.owners.iter().any(|o| kinds.find(&o.api_version, &o.kind).is_none()) {
                    unknown_owner = true;
                    rediscover.reset_immediately();
                }
                graph.upsert(uid.clone(), node);
                attend(&mut graph, &uid, &mut work);
                if synced.len() == kinds.0.len() {
                    absent_owners(&graph, &uid, &mut work);
                }
                for o in owners {
                    attend(&mut graph, &o, &mut work);
                }
            }
            Change::Deleted(obj) => {
                let uid = obj.metadata.uid.clone().unwrap_or_default();
                if let Some(gone) = graph.remove(&uid) {
                    for (duid, d) in graph.dependents_of(&uid) {
                        orphaned(&graph, duid, d, &uid, &mut work);
                    }
                    for o in gone.owners {
                        attend(&mut graph, &o.uid, &mut work);
                    }
                }
            }
        }
        for w in work {
            let (client, kinds) = (client.clone(), kinds.clone());
            tokio::spawn(async move {
                if let Err(e) = perform(&client, &kinds, w).await {
                    tracing::debug!(error = %e, "gc action failed");
                }
            });
        }
    }
}

/// A dependent whose owner `owner` is gone: unlink it if another owner
/// remains, else delete it.
fn orphaned(graph: &Graph, uid: String, node: Node, owner: &str, work: &mut Vec<Work>) {
    let others_alive = node.owners.iter().any(|o| o.uid != owner && graph.nodes.contains_key(&o.uid));
    if others_alive {
        work.push(Work::Unlink { node, owner: owner.to_string() });
    } else if !node.deleting {
        work.push(Work::Delete { uid, node, propagation: "Background" });
    }
}

/// Dependents whose owners are not in the graph get their owners checked
/// with a live read before anything is deleted.
fn absent_owners(graph: &Graph, uid: &str, work: &mut Vec<Work>) {
    let Some(node) = graph.nodes.get(uid) else { return };
    for o in &node.owners {
        if !graph.nodes.contains_key(&o.uid) {
            work.push(Work::VerifyOwner { uid: uid.to_string(), node: node.clone(), owner: o.clone() });
        }
    }
}

/// An owner being deleted with the orphan or foreground finalizer.
fn attend(graph: &mut Graph, uid: &str, work: &mut Vec<Work>) {
    let Some(node) = graph.nodes.get(uid).cloned() else { return };
    if !node.deleting {
        return;
    }
    let deps = graph.dependents_of(uid);
    if node.finalizers.iter().any(|f| f == "orphan") {
        if deps.is_empty() {
            work.push(Work::Unfinalize { uid: uid.to_string(), node, finalizer: "orphan" });
        } else if graph.in_progress.insert(uid.to_string()) {
            for (_, d) in deps {
                work.push(Work::Unlink { node: d, owner: uid.to_string() });
            }
        }
    } else if node.finalizers.iter().any(|f| f == "foregroundDeletion") {
        let blocking: Vec<&(String, Node)> =
            deps.iter().filter(|(_, d)| d.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true))).collect();
        if blocking.is_empty() {
            work.push(Work::Unfinalize { uid: uid.to_string(), node, finalizer: "foregroundDeletion" });
        } else {
            for (duid, d) in deps {
                if !d.deleting {
                    work.push(Work::Delete { uid: duid, node: d, propagation: "Foreground" });
                }
            }
        }
    }
}

fn api_for(client: &kube::Client, kinds: &Kinds, node: &Node) -> Api<DynamicObject> {
    let kind = &kinds.0[node.kind];
    match (&node.namespace, kind.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &kind.ar),
        _ => Api::all_with(client.clone(), &kind.ar),
    }
}

async fn perform(client: &kube::Client, kinds: &Kinds, w: Work) -> Result<(), kube::Error> {
    let ok = |r: Result<(), kube::Error>| match r {
        Err(e) if crate::util::is_not_found(&e) || crate::util::is_conflict(&e) => Ok(()),
        other => other,
    };
    match w {
        Work::Delete { uid, node, propagation } => {
            let dp = DeleteParams {
                propagation_policy: Some(match propagation {
                    "Foreground" => kube::api::PropagationPolicy::Foreground,
                    _ => kube::api::PropagationPolicy::Background,
                }),
                preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                ..Default::default()
            };
            ok(api_for(client, kinds, &node).delete(&node.name, &dp).await.map(|_| ()))
        }
        Work::Unlink { node, owner } => {
            let refs: Vec<&OwnerReference> = node.owners.iter().filter(|o| o.uid != owner).collect();
            // No owners left is no `ownerReferences` at all, as Kubernetes stores it.
            let p = if refs.is_empty() { json!({"metadata": {"ownerReferences": null}}) } else { json!({"metadata": {"ownerReferences": refs}}) };
            ok(api_for(client, kinds, &node).patch(&node.name, &PatchParams::default(), &Patch::Merge(&p)).await.map(|_| ()))
        }
        Work::Unfinalize { uid, node, finalizer } => {
            let api = api_for(client, kinds, &node);
            // Read-modify-write guarded by resourceVersion (and the uid: a
            // new object of the same name is not ours to touch).
            let Some(mut cur) = api.get_opt(&node.name).await? else { return Ok(()) };
            if cur.metadata.uid.as_deref() != Some(uid.as_str()) {
                return Ok(());
            }
            let fins: Vec<String> = cur.metadata.finalizers.clone().unwrap_or_default().into_iter().filter(|f| f != finalizer).collect();
            cur.metadata.finalizers = Some(fins);
            cur.metadata.managed_fields = None;
            ok(api.replace(&node.name, &Default::default(), &cur).await.map(|_| ()))
        }
        Work::VerifyOwner { uid, node, owner } => {
            let Some(i) = kinds.find(&owner.api_version, &owner.kind) else {
                return Ok(());
            };
            let owner_node = Node { kind: i, namespace: node.namespace.clone(), name: owner.name.clone(), owners: vec![], deleting: false, finalizers: vec![] };
            let live = api_for(client, kinds, &owner_node).get_opt(&owner.name).await?;
            if live.is_some_and(|o| o.metadata.uid.as_deref() == Some(owner.uid.as_str())) {
                return Ok(());
            }
            let others = node.owners.iter().any(|o| o.uid != owner.uid);
            if others {
                Box::pin(perform(client, kinds, Work::Unlink { node, owner: owner.uid })).await
            } else {
                Box::pin(perform(client, kinds, Work::Delete { uid, node, propagation: "Background" })).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owners: &[&str], deleting: bool, fins: &[&str]) -> Node {
        Node {
            kind: 0,
            namespace: Some("default".into()),
            name: "x".into(),
            owners: owners
                .iter()
                .map(|u| OwnerReference { uid: u.to_string(), block_owner_deletion: Some(true), controller: Some(true), ..Default::default() })
                .collect(),
            deleting,
            finalizers: fins.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn orphan_finalizer_unlinks_dependents_then_goes() {
        let mut g = Graph::default();
        g.upsert("rs".into(), node(&[], true, &["orphan"]));
        g.upsert("pod".into(), node(&["rs"], false, &[]));
        let mut work = Vec::new();
        attend(&mut g, "rs", &mut work);
        assert!(matches!(work.as_slice(), [Work::Unlink { owner, .. }] if owner == "rs"));
        g.upsert("pod".into(), node(&[], false, &[]));
        let mut work = Vec::new();
        attend(&mut g, "rs", &mut work);
        assert!(matches!(work.as_slice(), [Work::Unfinalize { finalizer: "orphan", .. }]));
    }

    #[test]
    fn foreground_deletes_blocking_dependents_first() {
        let mut g = Graph::default();
        g.upsert("d".into(), node(&[], true, &["foregroundDeletion"]));
        g.upsert("rs".into(), node(&["d"], false, &[]));
        let mut work = Vec::new();
        attend(&mut g, "d", &mut work);
        assert!(matches!(work.as_slice(), [Work::Delete { propagation: "Foreground", .. }]));
        g.remove("rs");
        let mut work = Vec::new();
        attend(&mut g, "d", &mut work);
        assert!(matches!(work.as_slice(), [Work::Unfinalize { finalizer: "foregroundDeletion", .. }]));
    }

    #[test]
    fn a_dependent_with_another_live_owner_is_only_unlinked() {
        let mut g = Graph::default();
        g.upsert("a".into(), node(&[], false, &[]));
        g.upsert("dep".into(), node(&["a", "b"], false, &[]));
        let mut work = Vec::new();
        orphaned(&g, "dep".into(), g.nodes["dep"].clone(), "b", &mut work);
        assert!(matches!(work.as_slice(), [Work::Unlink { owner, .. }] if owner == "b"));
        let mut work = Vec::new();
        g.remove("a");
        orphaned(&g, "dep".into(), g.nodes["dep"].clone(), "b", &mut work);
        assert!(matches!(work.as_slice(), [Work::Delete { propagation: "Background", .. }]));
    }
}
