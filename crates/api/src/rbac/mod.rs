//! Role-based access control, network-free: what a request asks
//! ([`Attributes`], parsed from its path as kube-apiserver's
//! `RequestInfoFactory` does), whether a rule allows it, whether a set of
//! rules covers another (escalation prevention), the validation of RBAC
//! objects, and Kubernetes' bootstrap policy ([`bootstrap`]).

pub mod bootstrap;
pub mod index;

use serde_json::Value;

use crate::error::FieldError;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Who makes a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (`system:serviceaccount:NS:NAME` for ServiceAccounts).
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Extra attributes (`authentication.kubernetes.io/pod-name`, …).
    pub extra: Vec<(String, Vec<String>)>,
    /// Its uid, when known.
    pub uid: String,
}

/// What a request asks for, as an authorizer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`, …; for non-resource requests the
    /// lower-cased HTTP method.
    pub verb: String,
    /// Whether it names an API resource (else a plain path).
    pub resource_request: bool,
    /// The API group (`""` for core).
    pub group: String,
    /// The API version.
    pub version: String,
    /// The resource (`pods`).
    pub resource: String,
    /// The subresource (`log`, `status`), or empty.
    pub subresource: String,
    /// The object's name, or empty.
    pub name: String,
    /// The namespace, or empty for cluster-scoped requests.
    pub namespace: String,
    /// The URL path.
    pub path: String,
}

impl Attributes {
    /// Reads a request as kube-apiserver's `RequestInfoFactory` does:
    /// `/api/v1/…` and `/apis/GROUP/VERSION/…` name resources (the
    /// namespace from `namespaces/NS/…`, `status` and `finalize` being a
    /// namespace's own subresources), GET without a name is `list` or
    /// `watch` (`?watch=true`, or a `/watch/` prefix), DELETE without one
    /// `deletecollection`; anything else is a non-resource path.
    pub fn from_request(method: &str, path: &str, query: Option<&str>) -> Self {
        let method = method.to_ascii_uppercase();
        let mut a = Attributes { verb: method.to_ascii_lowercase(), path: path.to_string(), ..Default::default() };
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < 3 {
            return a;
        }
        let mut rest: &[&str] = match parts[0] {
            "api" => &parts[1..],
            "apis" if parts.len() >= 4 => {
                a.group = parts[1].to_string();
                &parts[2..]
            }
            _ => return a,
        };
        a.resource_request = true;
        a.version = rest[0].to_string();
        rest = &rest[1..];
        if matches!(rest.first(), Some(&"watch") | Some(&"proxy")) {
            if rest.len() < 2 {
                a.resource_request = false;
                a.group.clear();
                a.version.clear();
                return a;
            }
            a.verb = rest[0].to_string();
            rest = &rest[1..];
        } else {
            a.verb = match method.as_str() {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }
        if rest.first() == Some(&"namespaces") {
            if let Some(ns) = rest.get(1) {
                a.namespace = ns.to_string();
                if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                    rest = &rest[2..];
                }
            }
        }
        if rest.len() >= 3 && a.verb != "proxy" {
            a.subresource = rest[2].to_string();
        }
        if rest.len() >= 2 {
            a.name = rest[1].to_string();
        }
        if let Some(r) = rest.first() {
            a.resource = r.to_string();
        }
        if a.name.is_empty() && a.verb == "get" {
            let q: Vec<(String, String)> = query.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
            let watch = q.iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
            a.verb = if watch { "watch" } else { "list" }.to_string();
            // A list of one name (`fieldSelector=metadata.name=x`) is about that name.
            if let Some((_, fs)) = q.iter().find(|(k, _)| k == "fieldSelector") {
                let exact: Vec<&str> = fs.split(',').filter_map(|t| t.strip_prefix("metadata.name=").or_else(|| t.strip_prefix("metadata.name=="))).collect();
                if let [name] = exact.as_slice() {
                    if !name.is_empty() && is_path_segment(name) {
                        a.name = name.to_string();
                    }
                }
            }
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".into();
        }
        a
    }

    /// Kubernetes' wording of a refusal (`User "x" cannot list resource
    /// "secrets" in API group "" in the namespace "default"`).
    pub fn forbidden_message(&self, user: &str) -> String {
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let resource = if self.subresource.is_empty() { self.resource.clone() } else { format!("{}/{}", self.resource, self.subresource) };
        if self.namespace.is_empty() {
            format!("User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope", self.verb, self.group)
        } else {
            format!("User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}", self.verb, self.group, self.namespace)
        }
    }
}

fn is_path_segment(s: &str) -> bool {
    s != "." && s != ".." && !s.contains('/') && !s.contains('%')
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// Verbs, `*` for all.
    pub verbs: Vec<String>,
    /// API groups, `*` for all.
    pub groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*`, `*/scale`).
    pub resources: Vec<String>,
    /// Names it is limited to (none: every name).
    pub names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/api/*`, `*`).
    pub urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default()
}

impl PolicyRule {
    /// Reads a rule from its JSON form.
    pub fn from_json(v: &Value) -> Self {
        PolicyRule {
            verbs: strings(v.get("verbs")),
            groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            names: strings(v.get("resourceNames")),
            urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn of_role(role: &Value) -> Vec<Self> {
        role.get("rules").and_then(Value::as_array).map(|r| r.iter().map(Self::from_json).collect()).unwrap_or_default()
    }

    /// A rule of the bootstrap policy.
    pub fn from_bootstrap(r: &bootstrap::Rule) -> Self {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule { verbs: own(r.verbs), groups: own(r.groups), resources: own(r.resources), names: own(r.names), urls: own(r.urls) }
    }

    /// The rule as JSON.
    pub fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("verbs".into(), self.verbs.clone().into());
        for (key, list) in [("apiGroups", &self.groups), ("resources", &self.resources), ("resourceNames", &self.names), ("nonResourceURLs", &self.urls)] {
            if !list.is_empty() {
                o.insert(key.into(), list.clone().into());
            }
        }
        Value::Object(o)
    }

    /// Whether this rule allows the request (kube's `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.urls.iter().any(|u| url_matches(u, &a.path));
        }
        if !has(&self.groups, &a.group) {
            return false;
        }
        let combined = if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
        let resource_ok = self.resources.iter().any(|r| {
            r == "*" || *r == combined || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
        });
        resource_ok && (self.names.is_empty() || self.names.contains(&a.name))
    }
}

/// A list holds the value or the wildcard.
fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// `*`, the path itself, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*" || rule == path || rule.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
}

/// Whether `owner` rules grant everything `requested` rules do (kube's
/// `validation.Covers`): each requested rule is split into single verbs,
/// groups, resources, names and URLs, and each piece must be allowed by
/// one owner rule. Returns the pieces that are not.
pub fn uncovered(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in requested {
        for piece in breakdown(rule) {
            if !owner.iter().any(|o| covers(o, &piece)) {
                missing.push(piece);
            }
        }
    }
    missing
}

fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.urls {
            out.push(PolicyRule { verbs: one(verb), urls: one(url), ..Default::default() });
        }
        for group in &rule.groups {
            for resource in &rule.resources {
                if rule.names.is_empty() {
                    out.push(PolicyRule { verbs: one(verb), groups: one(group), resources: one(resource), ..Default::default() });
                }
                for name in &rule.names {
                    out.push(PolicyRule { verbs: one(verb), groups: one(group), resources: one(resource), names: one(name), urls: Vec::new() });
                }
            }
        }
    }
    out
}

fn covers(owner: &PolicyRule, piece: &PolicyRule) -> bool {
    let all = |list: &[String], wanted: &[String]| wanted.iter().all(|w| has(list, w));
    if !all(&owner.verbs, &piece.verbs) {
        return false;
    }
    if !piece.urls.is_empty() {
        return piece.urls.iter().all(|u| owner.urls.iter().any(|o| url_matches(o, u)));
    }
    let resources_ok = piece.resources.iter().all(|r| {
        owner.resources.iter().any(|o| o == "*" || o == r || r.split_once('/').is_some_and(|(_, sub)| o.strip_prefix("*/") == Some(sub)))
    });
    let names_ok = owner.names.is_empty() || piece.names.iter().all(|n| owner.names.contains(n)) && !piece.names.is_empty();
    all(&owner.groups, &piece.groups) && resources_ok && names_ok
}

/// A binding's subject, read from JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user by name.
    User(String),
    /// A group by name.
    Group(String),
    /// A ServiceAccount: its namespace and name.
    ServiceAccount(String, String),
}

impl Subject {
    /// Reads a subject; a ServiceAccount without a namespace is in the
    /// binding's (`binding_ns`).
    pub fn from_json(v: &Value, binding_ns: &str) -> Option<Self> {
        let name = v.get("name").and_then(Value::as_str)?.to_string();
        match v.get("kind").and_then(Value::as_str)? {
            "User" => Some(Subject::User(name)),
            "Group" => Some(Subject::Group(name)),
            "ServiceAccount" => {
                let ns = v.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(binding_ns);
                Some(Subject::ServiceAccount(ns.to_string(), name))
            }
            _ => None,
        }
    }

    /// Whether the subject names this user (`system:serviceaccount:NS:NAME`
    /// for ServiceAccounts).
    pub fn applies_to(&self, user: &UserInfo) -> bool {
        match self {
            Subject::User(n) => *n == user.name,
            Subject::Group(g) => user.groups.iter().any(|ug| ug == g),
            Subject::ServiceAccount(ns, n) => user.name == service_account_user(ns, n),
        }
    }
}

/// The user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Checks a Role (`namespaced`) or ClusterRole's rules, with kube's wording.
pub fn validate_role(namespaced: bool, obj: &Value, errs: &mut Vec<FieldError>) {
    for (i, rule) in obj.get("rules").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let r = PolicyRule::from_json(rule);
        let field = |f: &str| format!("rules[{i}].{f}");
        if r.verbs.is_empty() {
            errs.push(FieldError::required(field("verbs"), "verbs must contain at least one value"));
        }
        if !r.urls.is_empty() {
            let urls = rule.get("nonResourceURLs").cloned().unwrap_or(Value::Null);
            if namespaced {
                errs.push(FieldError::invalid(field("nonResourceURLs"), urls.clone(), "namespaced rules cannot apply to non-resource URLs"));
            }
            if !r.groups.is_empty() || !r.resources.is_empty() || !r.names.is_empty() {
                errs.push(FieldError::invalid(field("nonResourceURLs"), urls, "rules cannot apply to both regular resources and non-resource URLs"));
            }
            continue;
        }
        if r.groups.is_empty() {
            errs.push(FieldError::required(field("apiGroups"), "resource rules must supply at least one api group"));
        }
        if r.resources.is_empty() {
            errs.push(FieldError::required(field("resources"), "resource rules must supply at least one resource"));
        }
    }
    if let Some(agg) = obj.get("aggregationRule").filter(|a| !a.is_null()) {
        if agg.get("clusterRoleSelectors").and_then(Value::as_array).is_none_or(Vec::is_empty) {
            errs.push(FieldError::required("aggregationRule.clusterRoleSelectors", "at least one clusterRoleSelector required if aggregationRule is non-nil"));
        }
    }
}

/// Checks a RoleBinding (`namespaced`) or ClusterRoleBinding, with kube's wording.
pub fn validate_binding(namespaced: bool, obj: &Value, errs: &mut Vec<FieldError>) {
    let role_ref = obj.get("roleRef");
    let field = |f: &str| role_ref.and_then(|r| r.get(f)).and_then(Value::as_str).unwrap_or_default();
    if field("apiGroup") != GROUP {
        errs.push(FieldError::not_supported("roleRef.apiGroup", field("apiGroup"), &[GROUP]));
    }
    let kinds: &[&'static str] = if namespaced { &["ClusterRole", "Role"] } else { &["ClusterRole"] };
    if !kinds.contains(&field("kind")) {
        errs.push(FieldError::not_supported("roleRef.kind", field("kind"), kinds));
    }
    if field("name").is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else if !is_path_segment(field("name")) {
        errs.push(FieldError::invalid("roleRef.name", field("name"), "may not be '.' or '..', and may not contain '/' or '%'"));
    }
    for (i, s) in obj.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let get = |f: &str| s.get(f).and_then(Value::as_str).unwrap_or_default();
        let at = |f: &str| format!("subjects[{i}].{f}");
        if get("name").is_empty() {
            errs.push(FieldError::required(at("name"), ""));
        }
        match get("kind") {
            "ServiceAccount" => {
                if !get("apiGroup").is_empty() {
                    errs.push(FieldError::not_supported(at("apiGroup"), get("apiGroup"), &[""]));
                }
                if !namespaced && get("namespace").is_empty() {
                    errs.push(FieldError::required(at("namespace"), ""));
                }
            }
            "User" | "Group" => {
                if get("apiGroup") != GROUP {
                    errs.push(FieldError::not_supported(at("apiGroup"), get("apiGroup"), &[GROUP]));
                }
            }
            other => errs.push(FieldError::not_supported(at("kind"), other, &["ServiceAccount", "User", "Group"])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    #[test]
    fn request_paths_read_as_kube_apiserver_reads_them() {
        let a = Attributes::from_request("GET", "/api/v1/namespaces/default/pods", Some("watch=true"));
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_str(), a.resource_request), ("watch", "pods", "default", true));
        let a = Attributes::from_request("GET", "/api/v1/namespaces/default/pods/web/log", None);
        assert_eq!((a.verb.as_str(), a.name.as_str(), a.subresource.as_str()), ("get", "web", "log"));
        let a = Attributes::from_request("DELETE", "/apis/apps/v1/namespaces/x/deployments", None);
        assert_eq!((a.verb.as_str(), a.group.as_str(), a.resource.as_str()), ("deletecollection", "apps", "deployments"));
        let a = Attributes::from_request("GET", "/api/v1/namespaces/kube-system", None);
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.namespace.as_str()), ("namespaces", "kube-system", "kube-system"));
        let a = Attributes::from_request("PUT", "/api/v1/namespaces/gone/finalize", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.subresource.as_str()), ("update", "namespaces", "finalize"));
        let a = Attributes::from_request("GET", "/api/v1/nodes", Some("fieldSelector=metadata.name%3Dn1"));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "n1"));
        let a = Attributes::from_request("GET", "/apis/apps/v1", None);
        assert!(!a.resource_request && a.verb == "get" && a.path == "/apis/apps/v1");
        let a = Attributes::from_request("POST", "/healthz", None);
        assert!(!a.resource_request && a.verb == "post");
    }

    #[test]
    fn refusals_read_as_kubernetes_words_them() {
        let a = Attributes::from_request("GET", "/api/v1/namespaces/default/secrets", None);
        assert_eq!(a.forbidden_message("x"), "User \"x\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"");
        let a = Attributes::from_request("GET", "/apis/apps/v1/deployments", None);
        assert_eq!(a.forbidden_message("x"), "User \"x\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope");
        let a = Attributes::from_request("GET", "/metrics", None);
        assert_eq!(a.forbidden_message("x"), "User \"x\" cannot get path \"/metrics\"");
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_names_and_urls() {
        let pods = Attributes::from_request("GET", "/api/v1/namespaces/d/pods/web", None);
        let log = Attributes::from_request("GET", "/api/v1/namespaces/d/pods/web/log", None);
        let scale = Attributes::from_request("PUT", "/apis/apps/v1/namespaces/d/deployments/web/scale", None);
        let r = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(r.allows(&pods) && !r.allows(&log), "pods does not cover pods/log");
        assert!(rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]})).allows(&log));
        assert!(rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})).allows(&log));
        assert!(rule(json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]})).allows(&scale));
        assert!(!rule(json!({"verbs": ["update"], "apiGroups": [""], "resources": ["*/scale"]})).allows(&scale), "wrong group");
        assert!(rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]})).allows(&pods));
        assert!(!rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["db"]})).allows(&pods));
        let list = Attributes::from_request("GET", "/api/v1/namespaces/d/pods", None);
        assert!(!rule(json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]})).allows(&list), "names never allow a list of all");
        let healthz = Attributes::from_request("GET", "/healthz/etcd", None);
        assert!(rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]})).allows(&healthz));
        assert!(!rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})).allows(&healthz));
        assert!(!rule(json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]})).allows(&healthz), "resource rules never allow paths");
    }

    #[test]
    fn covering_splits_rules_into_pieces() {
        let owner = vec![
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"]})),
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]})),
        ];
        assert!(uncovered(&owner, &[rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "configmaps"]}))]).is_empty());
        assert!(uncovered(&owner, &[rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}))]).is_empty());
        let missing = uncovered(&owner, &[rule(json!({"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}))]);
        assert_eq!(missing, vec![rule(json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}))]);
        assert_eq!(uncovered(&owner, &[rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}))]).len(), 1, "a name is not all names");
        let admin = vec![rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})), rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}))];
        assert!(uncovered(&admin, &owner).is_empty());
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let u = UserInfo { name: "system:serviceaccount:d:bot".into(), groups: vec!["system:serviceaccounts".into()], ..Default::default() };
        assert!(Subject::from_json(&json!({"kind": "ServiceAccount", "name": "bot"}), "d").is_some_and(|s| s.applies_to(&u)));
        assert!(!Subject::from_json(&json!({"kind": "ServiceAccount", "name": "bot", "namespace": "e"}), "d").is_some_and(|s| s.applies_to(&u)));
        assert!(Subject::from_json(&json!({"kind": "Group", "name": "system:serviceaccounts"}), "").is_some_and(|s| s.applies_to(&u)));
    }

    #[test]
    fn objects_are_validated_with_kubes_wording() {
        let mut errs = Vec::new();
        validate_role(true, &json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}, {"verbs": [], "apiGroups": [""]}]}), &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|e| e.contains("rules[0].nonResourceURLs") && e.contains("namespaced rules cannot apply to non-resource URLs")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("rules[1].verbs: Required value")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("rules[1].resources: Required value")), "{text:?}");
        let mut errs = Vec::new();
        validate_binding(false, &json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "s"}]}), &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|e| e.contains("roleRef.kind: Unsupported value: \"Role\"")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("subjects[0].namespace: Required value")), "{text:?}");
    }
}
