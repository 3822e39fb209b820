//! Authorization: kube-apiserver's `--authorization-mode` chain (`Node`,
//! `RBAC`, or `AlwaysAllow`), asked for every request after
//! authentication and impersonation; the first authorizer with an opinion
//! decides, and a request nobody allows gets 403 with Kubernetes' wording.
//! `system:masters` is allowed everything before the chain, as kube's
//! privileged-group authorizer does.

pub(crate) mod escalation;
pub(crate) mod impersonation;
pub(crate) mod node;
pub(crate) mod policy;
pub(crate) mod rbac;
pub(crate) mod reviews;

use skiff_api::rbac::{Attributes, UserInfo};
use skiff_api::ApiError;

use crate::cache::WatchCache;

/// The group that is never refused.
pub(crate) const MASTERS: &str = "system:masters";

/// Why a request was allowed, put in words only when asked (reviews, the
/// audit log): the decision itself allocates nothing.
#[derive(Debug, Clone)]
pub(crate) enum Reason {
    /// No words (AlwaysAllow, the Node authorizer).
    Plain,
    /// The privileged group.
    Masters,
    /// An RBAC binding of the index.
    Rbac(std::sync::Arc<rbac::Index>, usize),
}

impl Reason {
    /// The reason in kube's words.
    pub(crate) fn text(&self, user: &UserInfo) -> String {
        match self {
            Reason::Plain => String::new(),
            Reason::Masters => format!("{MASTERS} may do anything"),
            Reason::Rbac(index, i) => index.reason(*i, user),
        }
    }
}

/// One authorizer's answer.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Allowed; the reason says by what.
    Allow(Reason),
    /// No opinion; the reason, if any, is told to the client on refusal.
    NoOpinion(String),
}

/// An authorization mode (`--authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything is allowed (kube's `AlwaysAllow`).
    AlwaysAllow,
    /// The Node authorizer.
    Node,
    /// Role-based access control.
    Rbac,
}

impl Mode {
    /// Parses `--authorization-mode`'s comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Mode>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| match m {
                "AlwaysAllow" => Ok(Mode::AlwaysAllow),
                "Node" => Ok(Mode::Node),
                "RBAC" => Ok(Mode::Rbac),
                other => Err(format!("unknown authorization mode {other:?} (AlwaysAllow, Node, RBAC)")),
            })
            .collect()
    }
}

/// The chain of authorizers.
pub(crate) struct Authorizer {
    modes: Vec<Mode>,
    pub(crate) rbac: rbac::Rbac,
}

impl Authorizer {
    /// A chain of the given modes, in order.
    pub(crate) fn new(modes: Vec<Mode>) -> Self {
        Self { modes, rbac: rbac::Rbac::new() }
    }

    /// Whether the chain lets everyone do everything.
    pub(crate) fn always_allows(&self) -> bool {
        self.modes.contains(&Mode::AlwaysAllow)
    }

    /// Asks the chain (`system:masters` first, as kube's privileged-group authorizer).
    pub(crate) fn authorize(&self, cache: &WatchCache, user: &UserInfo, a: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Decision::Allow(Reason::Masters);
        }
        let mut reasons = Vec::new();
        for mode in &self.modes {
            let d = match mode {
                Mode::AlwaysAllow => Decision::Allow(Reason::Plain),
                Mode::Node => node::authorize(cache, user, a),
                Mode::Rbac => {
                    let index = self.rbac.index(cache);
                    match index.allowing(user, a) {
                        Some(i) => Decision::Allow(Reason::Rbac(index, i)),
                        None => Decision::NoOpinion(String::new()),
                    }
                }
            };
            match d {
                Decision::NoOpinion(why) => {
                    if !why.is_empty() {
                        reasons.push(why);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }

    /// `Ok` when the request is allowed, else kube's 403.
    pub(crate) fn check(&self, cache: &WatchCache, user: &UserInfo, a: &Attributes) -> Result<(), ApiError> {
        match self.authorize(cache, user, a) {
            Decision::Allow(_) => Ok(()),
            Decision::NoOpinion(why) => Err(forbidden(user, a, &why)),
        }
    }
}

/// kube's 403 for a refused request: `secrets "x" is forbidden: User "u"
/// cannot get resource "secrets" in API group "" in the namespace "d"`,
/// with the authorizers' reasons after a colon.
pub(crate) fn forbidden(user: &UserInfo, a: &Attributes, why: &str) -> ApiError {
    let mut cause = a.forbidden_message(&user.name);
    if !why.is_empty() {
        cause = format!("{cause}: {why}");
    }
    let qualified = if a.group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.group) };
    let message = match (a.resource_request, a.name.is_empty()) {
        (false, _) => format!("forbidden: {cause}"),
        (true, true) => format!("{qualified} is forbidden: {cause}"),
        (true, false) => format!("{qualified} {:?} is forbidden: {cause}", a.name),
    };
    let mut e = ApiError::forbidden(message);
    if a.resource_request {
        e.details = Some(serde_json::json!({"name": a.name, "group": a.group, "kind": a.resource}));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_kubes_message_and_details() {
        let u = UserInfo { name: "bob".into(), ..Default::default() };
        let a = Attributes::from_request("GET", "/api/v1/namespaces/default/secrets/db", None);
        let e = forbidden(&u, &a, "");
        assert_eq!(e.code, 403);
        assert_eq!(e.message, "secrets \"db\" is forbidden: User \"bob\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"");
        let a = Attributes::from_request("GET", "/apis/apps/v1/deployments", None);
        assert_eq!(
            forbidden(&u, &a, "").message,
            "deployments.apps is forbidden: User \"bob\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let a = Attributes::from_request("GET", "/logs", None);
        assert_eq!(forbidden(&u, &a, "").message, "forbidden: User \"bob\" cannot get path \"/logs\"");
        assert_eq!(Mode::parse_list("Node,RBAC"), Ok(vec![Mode::Node, Mode::Rbac]));
        assert!(Mode::parse_list("ABAC").is_err());
    }
}
