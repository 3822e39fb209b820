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
                let ns = meta(b, "namespace");
                let role_ref = |f: &str| b.pointer(&format!("/roleRef/{f}")).and_then(Value::as_str).unwrap_or_default().to_string();
                let i = ix.bindings.len();
                ix.bindings.push(Binding {
                    namespace: namespaced.then(|| ns.clone()),
                    name: meta(b, "name"),
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

    /// The indexes of the bindings naming this user or one of its groups
    /// (a binding naming both comes twice: harmless, and no allocation).
    fn bindings_of<'a>(&'a self, user: &'a UserInfo) -> impl Iterator<Item = usize> + 'a {
        let by_user = self.by_user.get(&user.name).into_iter().flatten().copied();
        let by_group = user.groups.iter().flat_map(|g| self.by_group.get(g).into_iter().flatten().copied());
        by_user.chain(by_group)
    }

    fn rules_of(&self, b: &Binding) -> &[PolicyRule] {
        let rules = match (&b.namespace, b.cluster_role) {
            (_, true) => self.cluster_roles.get(&b.role),
            (Some(ns), false) => self.roles.get(&(ns.clone(), b.role.clone())),
            (None, false) => None,
        };
        rules.map(Vec::as_slice).unwrap_or_default()
    }

    /// The binding (its index) that allows the user's request, if one does.
    pub fn allowing(&self, user: &UserInfo, a: &Attributes) -> Option<usize> {
        self.bindings_of(user).find(|&i| {
            let b = &self.bindings[i];
            b.namespace.as_deref().is_none_or(|ns| ns == a.namespace) && self.rules_of(b).iter().any(|r| r.allows(a))
        })
    }

    /// Why binding `i` allowed the user, in kube's words.
    pub fn reason(&self, i: usize, user: &UserInfo) -> String {
        let Some(b) = self.bindings.get(i) else { return String::new() };
        let kind = if b.namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" };
        let role_kind = if b.cluster_role { "ClusterRole" } else { "Role" };
        let at = b.namespace.as_deref().map(|ns| format!("{ns}/")).unwrap_or_default();
        format!("RBAC: allowed by {kind} \"{at}{}\" of {role_kind} \"{}\" to User \"{}\"", b.name, b.role, user.name)
    }

    /// Whether a binding of the user allows the request; the reason names it.
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> Option<String> {
        self.allowing(user, a).map(|i| self.reason(i, user))
    }

    /// Every rule that applies to the user in `namespace` (cluster-wide
    /// bindings included; `""` for cluster-wide only).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut seen: Vec<usize> = self.bindings_of(user).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter()
            .map(|i| &self.bindings[i])
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

