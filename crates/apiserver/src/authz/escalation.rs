//! Escalation prevention, as kube's RBAC registry enforces it: nobody
//! creates or updates a Role or ClusterRole granting more than they hold
//! (unless granted `escalate` on it), nor binds a role whose rules they do
//! not hold (unless granted `bind` on it).

use serde_json::Value;
use skiff_api::rbac::{Attributes, PolicyRule, UserInfo};
use skiff_api::{ApiError, ResourceType};

use super::{Authorizer, Decision, MASTERS};
use crate::cache::WatchCache;

/// Checks a Role, ClusterRole or binding about to be written by `user`.
pub(crate) fn check(auth: &Authorizer, cache: &WatchCache, user: &UserInfo, rt: &ResourceType, ns: Option<&str>, obj: &Value) -> Result<(), ApiError> {
    if !matches!(rt.kind, "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding") || auth.always_allows() || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let ns = ns.unwrap_or_default();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let allowed = |verb: &str, resource: &str, name: &str| {
        let a = Attributes {
            verb: verb.into(),
            resource_request: true,
            group: skiff_api::rbac::GROUP.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        matches!(auth.authorize(cache, user, &a), Decision::Allow(_))
    };
    let index = auth.rbac.index(cache);
    let held = index.rules_for(user, ns);
    let requested: Vec<PolicyRule> = match rt.kind {
        "Role" | "ClusterRole" => {
            if allowed("escalate", rt.plural, name) {
                return Ok(());
            }
            if rt.kind == "ClusterRole" && obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                return Err(refusal(rt, name, "must have cluster-admin privileges to use the aggregationRule".into()));
            }
            PolicyRule::of_role(obj)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_kind = obj.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let role = obj.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
            let cluster = role_kind == "ClusterRole";
            if allowed("bind", if cluster { "clusterroles" } else { "roles" }, role) {
                return Ok(());
            }
            match index.role_rules(cluster, ns, role) {
                Some(rules) => rules.to_vec(),
                None => {
                    let plural = if cluster { "clusterroles" } else { "roles" };
                    return Err(ApiError::new(404, "NotFound", format!("{plural}.rbac.authorization.k8s.io {role:?} not found")));
                }
            }
        }
        _ => return Ok(()),
    };
    let missing = skiff_api::rbac::uncovered(&held, &requested);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let rules: Vec<String> = compact(missing).iter().map(compact_string).collect();
    let why = format!("user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}", user.name, groups.join(" "), rules.join("\n"));
    Err(refusal(rt, name, why))
}

fn refusal(rt: &ResourceType, name: &str, why: String) -> ApiError {
    let mut e = ApiError::forbidden(format!("{}.{} {name:?} is forbidden: {why}", rt.plural, rt.group));
    e.details = Some(serde_json::json!({"name": name, "group": rt.group, "kind": rt.plural}));
    e
}

/// Pieces that differ only in their verb become one rule.
fn compact(pieces: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for p in pieces {
        match out.iter_mut().find(|o| o.groups == p.groups && o.resources == p.resources && o.names == p.names && o.urls == p.urls) {
            Some(o) => o.verbs.extend(p.verbs.into_iter().filter(|v| !o.verbs.contains(v)).collect::<Vec<_>>()),
            None => out.push(p),
        }
    }
    out
}

/// kube's `CompactString` of a rule: `{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}`.
fn compact_string(r: &PolicyRule) -> String {
    let q = |l: &[String]| format!("[{}]", l.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" "));
    let mut parts = Vec::new();
    for (label, list) in [("APIGroups", &r.groups), ("Resources", &r.resources), ("NonResourceURLs", &r.urls), ("ResourceNames", &r.names), ("Verbs", &r.verbs)] {
        if !list.is_empty() {
            parts.push(format!("{label}:{}", q(list)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rules_read_as_kube_prints_them() {
        let piece = |verb: &str| PolicyRule { verbs: vec![verb.into()], groups: vec!["".into()], resources: vec!["pods".into()], ..Default::default() };
        let rules = compact(vec![piece("get"), piece("delete")]);
        assert_eq!(rules.len(), 1);
        assert_eq!(compact_string(&rules[0]), "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\" \"delete\"]}");
    }
}
