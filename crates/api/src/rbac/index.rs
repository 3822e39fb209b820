//! The RBAC authorizer's data: Roles, ClusterRoles and their bindings,
//! indexed by subject.

use std::collections::HashMap;

use serde_json::Value;

use super::{service_account_user, Attributes, PolicyRule, Subject, UserInfo};

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

/// The RBAC objects at one moment, indexed by subject: a decision is a
/// few hash lookups and the rules of the bindings that name the user.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    bindings: Vec<Binding>,
    by_user: HashMap<String, Vec<usize>>,
    by_group: HashMap<String, Vec<usize>>,
}

impl Index {
    /// Indexes ClusterRoles, Roles, ClusterRoleBindings and RoleBindings (JSON objects).
    pub fn build(cluster_roles: &[Value], roles: &[Value], cluster_bindings: &[Value], bindings: &[Value]) -> Self {
        let meta = |o: &Value, f: &str| o.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut ix = Index::default();
        for role in cluster_roles {
            ix.cluster_roles.insert(meta(role, "name"), PolicyRule::of_role(role));
        }
        for role in roles {
            ix.roles.insert((meta(role, "namespace"), meta(role, "name")), PolicyRule::of_role(role));
        }
        for (objects, namespaced) in [(cluster_bindings, false), (bindings, true)] {
            for b in objects {
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
                        Some(Subject::ServiceAccount(sns, n)) => ix.by_user.entry(service_account_user(&sns, &n)).or_default().push(i),
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
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> Option<String> {
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
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        self.bindings_of(user)
            .filter(|b| b.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .flat_map(|b| self.rules_of(b).iter().cloned())
            .collect()
    }

    /// The rules of a role (`namespace` set for a Role).
    pub fn role_rules(&self, cluster: bool, namespace: &str, name: &str) -> Option<&[PolicyRule]> {
        if cluster {
            self.cluster_roles.get(name).map(Vec::as_slice)
        } else {
            self.roles.get(&(namespace.to_string(), name.to_string())).map(Vec::as_slice)
        }
    }
}

