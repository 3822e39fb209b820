//! Who may use the kubelet API, decided as kube's kubelet decides with
//! `--authentication-token-webhook` and `--authorization-mode Webhook`:
//! a caller is the identity of its client certificate (signed by the
//! cluster CA) or of its bearer token (a TokenReview asks the API server),
//! and each request is a SubjectAccessReview for verb × `nodes/<sub>` on
//! this node (`nodes/proxy` for exec, logs of containers and the rest;
//! `nodes/stats`, `nodes/metrics`, `nodes/log`, `nodes/spec` by path).
//! `system:masters` (the API server's kubelet client) is allowed without
//! asking. Answers are kept for 30 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, PostParams};

/// A caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its UID (token callers).
    pub uid: Option<String>,
}

/// What a request asks, in the attributes a SubjectAccessReview carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ask {
    /// `get`, `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// The subresource of `nodes`.
    pub subresource: &'static str,
}

/// The attributes of a request to `path` with `method`, as kube's
/// kubelet maps them.
pub fn ask(method: &hyper::Method, path: &str) -> Ask {
    let verb = match *method {
        hyper::Method::POST => "create",
        hyper::Method::PUT => "update",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let subresource = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        _ => "proxy",
    };
    Ask { verb, subresource }
}

/// The kubelet's authenticator and authorizer.
pub struct Auth {
    client: kube::Client,
    node_name: String,
    decisions: Mutex<HashMap<(Caller, Ask), (bool, Instant)>>,
    tokens: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
}

/// How long an answer is kept.
const KEEP: Duration = Duration::from_secs(30);

impl Auth {
    /// Asks the API server through `client` (the node's credentials).
    pub fn new(client: kube::Client, node_name: &str) -> Self {
        Self { client, node_name: node_name.to_string(), decisions: Mutex::default(), tokens: Mutex::default() }
    }

    /// The caller a bearer token stands for (`None`: not a valid token).
    pub async fn token(&self, token: &str) -> Option<Caller> {
        if let Some((c, at)) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
            if at.elapsed() < KEEP {
                return c.clone();
            }
        }
        let review: TokenReview = serde_json::from_value(serde_json::json!({"spec": {"token": token}})).ok()?;
        let answer = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await;
        let caller = match answer {
            Ok(r) => r.status.filter(|s| s.authenticated == Some(true)).and_then(|s| s.user).map(|u| Caller {
                user: u.username.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                uid: u.uid,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "a TokenReview for the kubelet API failed");
                return None;
            }
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, (_, at)| at.elapsed() < KEEP);
        tokens.insert(token.to_string(), (caller.clone(), Instant::now()));
        caller
    }

    /// Whether `caller` may do `ask` on this node.
    pub async fn allowed(&self, caller: &Caller, ask: &Ask) -> bool {
        if caller.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        let key = (caller.clone(), ask.clone());
        if let Some((ok, at)) = self.decisions.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if at.elapsed() < KEEP {
                return *ok;
            }
        }
        let review = serde_json::json!({"spec": {
            "user": caller.user, "groups": caller.groups, "uid": caller.uid,
            "resourceAttributes": {"verb": ask.verb, "group": "", "version": "v1", "resource": "nodes", "subresource": ask.subresource, "name": self.node_name}
        }});
        let Ok(review) = serde_json::from_value::<SubjectAccessReview>(review) else { return false };
        let ok = match Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &review).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "a SubjectAccessReview for the kubelet API failed");
                return false;
            }
        };
        let mut decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        decisions.retain(|_, (_, at)| at.elapsed() < KEEP);
        decisions.insert(key, (ok, Instant::now()));
        ok
    }
}

/// The kubelet's refusal, worded as kube's.
pub fn forbidden(caller: &Caller, ask: &Ask) -> String {
    format!("Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])", caller.user, ask.verb, ask.subresource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources_as_the_kubelet_maps_them() {
        assert_eq!(ask(&hyper::Method::GET, "/stats/summary"), Ask { verb: "get", subresource: "stats" });
        assert_eq!(ask(&hyper::Method::POST, "/exec/default/web/c"), Ask { verb: "create", subresource: "proxy" });
        assert_eq!(ask(&hyper::Method::GET, "/containerLogs/default/web/c"), Ask { verb: "get", subresource: "proxy" });
        assert_eq!(ask(&hyper::Method::GET, "/metrics/cadvisor"), Ask { verb: "get", subresource: "metrics" });
        assert_eq!(ask(&hyper::Method::GET, "/logs/"), Ask { verb: "get", subresource: "log" });
        let c = Caller { user: "alice".into(), groups: vec![], uid: None };
        assert_eq!(forbidden(&c, &ask(&hyper::Method::GET, "/stats/summary")), "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[stats])");
    }
}
