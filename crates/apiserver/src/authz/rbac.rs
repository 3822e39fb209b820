//! The RBAC authorizer: Roles, ClusterRoles and their bindings, read from
//! the watch cache into an index by subject that is rebuilt only when one
//! of the four kinds changed, so a decision is a few hash lookups and the
//! rules of the bindings that name the user.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use skiff_api::rbac::{Attributes, PolicyRule, Subject, UserInfo};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::ResourceType;

use crate::cache::WatchCache;

/// One binding, as the index keeps it.
#[derive(Debug)]
struct Binding {
    /// `Some(ns)` for a RoleBinding.
    namespace: Option<String>,
    /// The binding's name, for the reason of a decision.
    name: String,
    /// `roleRef.kind` is ClusterRole.
    cluster_role: bool,
    /// `roleRef.name`.
    role: String,
}

/// The RBAC objects at one moment, indexed by subject.
#[derive(Debug, Default)]
pub(crate) struct Index {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    bindings: Vec<Binding>,
    by_user: HashMap<String, Vec<usize>>,
    by_group: HashMap<String, Vec<usize>>,
}

impl Index {
    fn build(cache: &WatchCache, kinds: &[&'static ResourceType; 4]) -> Self {
        let objects = |rt: &ResourceType| -> Vec<Value> {
            cache.list(rt, &rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0).items.iter().map(|o| o.object()).collect()
        };
        let meta = |o: &Value, f: &str| o.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut ix = Index::default();
        for role in objects(kinds[0]) {
            ix.cluster_roles.insert(meta(&role, "name"), PolicyRule::of_role(&role));
        }
        for role in objects(kinds[1]) {
            ix.roles.insert((meta(&role, "namespace"), meta(&role, "name")), PolicyRule::of_role(&role));
        }
        for (rt, namespaced) in [(kinds[2], false), (kinds[3], true)] {
            for b in objects(rt) {
                let ns = meta(&b, "namespace");
                let role_ref = |f: &str| b.pointer(&format!("/roleRef/{f}")).and_then(Value::as_str).unwrap_or_default().to_string();
                let i = ix.bindings.len();
                ix.bindings.push(Binding {
                    namespace: namespaced.then(|| ns.clone()),
                    name: meta(&b, "name"),
                    cluster_role: role_ref("kind") == "ClusterRole",
                    role: role_ref("name"),
                });
                for s in b.get("subjects").and_then(Value::as_array).into_iter().flatten() {
                    match Subject::from_json(s, &ns) {
                        Some(Subject::User(u)) => ix.by_user.entry(u).or_default().push(i),
                        Some(Subject::ServiceAccount(sns, n)) => ix.by_user.entry(skiff_api::rbac::service_account_user(&sns, &n)).or_default().push(i),
                        Some(Subject::Group(g)) => ix.by_group.entry(g).or_default().push(i),
                        None => {}
                    }
                }
            }
        }
        ix
    }

    /// The bindings naming this user or one of its groups, each once.
    fn bindings_of<'a>(&'a self, user: &UserInfo) -> impl Iterator<Item = &'a Binding> + 'a {
        let mut seen: Vec<usize> = self.by_user.get(&user.name).into_iter().flatten().copied().collect();
        for g in &user.groups {
            seen.extend(self.by_group.get(g).into_iter().flatten().copied());
        }
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter().filter_map(|i| self.bindings.get(i))
    }

    fn rules_of(&self, b: &Binding) -> &[PolicyRule] {
        let rules = match (&b.namespace, b.cluster_role) {
            (_, true) => self.cluster_roles.get(&b.role),
            (Some(ns), false) => self.roles.get(&(ns.clone(), b.role.clone())),
            (None, false) => None,
        };
        rules.map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether a binding of the user allows the request; the reason names it.
    pub(crate) fn allows(&self, user: &UserInfo, a: &Attributes) -> Option<String> {
        for b in self.bindings_of(user) {
            if b.namespace.as_deref().is_some_and(|ns| ns != a.namespace) {
                continue;
            }
            if self.rules_of(b).iter().any(|r| r.allows(a)) {
                let (kind, role_kind) = if b.namespace.is_some() { ("RoleBinding", "Role") } else { ("ClusterRoleBinding", "ClusterRole") };
                let role_kind = if b.cluster_role { "ClusterRole" } else { role_kind };
                let at = b.namespace.as_deref().map(|ns| format!("{}/", ns)).unwrap_or_default();
                return Some(format!("RBAC: allowed by {kind} \"{at}{}\" of {role_kind} \"{}\" to User \"{}\"", b.name, b.role, user.name));
            }
        }
        None
    }

    /// Every rule that applies to the user in `namespace` (cluster-wide
    /// bindings included; `""` for cluster-wide only).
    pub(crate) fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        self.bindings_of(user)
            .filter(|b| b.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .flat_map(|b| self.rules_of(b).iter().cloned())
            .collect()
    }

    /// The rules of a role (`namespace` set for a Role).
    pub(crate) fn role_rules(&self, cluster: bool, namespace: &str, name: &str) -> Option<&[PolicyRule]> {
        if cluster {
            self.cluster_roles.get(name).map(Vec::as_slice)
        } else {
            self.roles.get(&(namespace.to_string(), name.to_string())).map(Vec::as_slice)
        }
    }
}

/// The RBAC authorizer's view: the index, rebuilt when the watch cache's
/// RBAC resources moved past the revisions it was built at.
pub(crate) struct Rbac {
    kinds: Option<[&'static ResourceType; 4]>,
    current: RwLock<(Vec<i64>, Arc<Index>)>,
}

impl Rbac {
    /// An authorizer with an empty index.
    pub(crate) fn new() -> Self {
        let find = |plural| skiff_api::registry::find(skiff_api::rbac::GROUP, "v1", plural);
        let kinds = match (find("clusterroles"), find("roles"), find("clusterrolebindings"), find("rolebindings")) {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        };
        Self { kinds, current: RwLock::new((Vec::new(), Arc::new(Index::default()))) }
    }

    /// The index as of the cache's latest RBAC changes.
    pub(crate) fn index(&self, cache: &WatchCache) -> Arc<Index> {
        let Some(kinds) = &self.kinds else { return Arc::new(Index::default()) };
        let revs: Vec<i64> = kinds.iter().map(|rt| cache.resource_revision(rt)).collect();
        if let Ok(cur) = self.current.read() {
            if cur.0 == revs {
                return cur.1.clone();
            }
        }
        let fresh = Arc::new(Index::build(cache, kinds));
        if let Ok(mut cur) = self.current.write() {
            *cur = (revs, fresh.clone());
        }
        fresh
    }
}
