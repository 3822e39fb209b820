//! The certificates controllers (kube-controller-manager's `csrsigning` and
//! `csrapproving`), for `certificates.k8s.io/v1` CertificateSigningRequests:
//! the approver approves a node's request to renew its own client
//! certificate (`kubernetes.io/kube-apiserver-client-kubelet` for the
//! requester's own `system:node:NAME`) and its own serving certificate
//! (`kubernetes.io/kubelet-serving` for its name and addresses only), and
//! the signer issues, with the
//! cluster CA, every approved request of the built-in signers
//! (`kubernetes.io/kube-apiserver-client`, `…-client-kubelet`,
//! `kubernetes.io/kubelet-serving`) that meets its signer's rules, or marks
//! it Failed saying why.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use skiff_pki::{ClusterPki, RequestSubject, Usage};
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

/// Client certificates for any user.
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// A kubelet's client certificate.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// A kubelet's serving certificate.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// A year, the default of kube's `--cluster-signing-duration`.
pub const DEFAULT_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

fn has(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
}

fn condition(t: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: t.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn usages(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.spec.usages.clone().unwrap_or_default()
}

fn subject(csr: &CertificateSigningRequest) -> Option<RequestSubject> {
    skiff_pki::request_subject(&String::from_utf8_lossy(&csr.spec.request.0))
}

/// Whether a request meets its signer's rules; the error says why not.
pub fn check(signer: &str, s: &RequestSubject, usages: &[String]) -> Result<Usage, String> {
    let has = |u: &str| usages.iter().any(|x| x == u);
    let only = |allowed: &[&str]| usages.iter().all(|u| allowed.contains(&u.as_str()));
    let node = || {
        if !s.common_name.starts_with("system:node:") || s.common_name.len() == "system:node:".len() {
            return Err(format!("subject common name must begin with \"system:node:\", got {:?}", s.common_name));
        }
        if s.organizations != ["system:nodes"] {
            return Err(format!("subject organization must be [\"system:nodes\"], got {:?}", s.organizations));
        }
        Ok(())
    };
    match signer {
        CLIENT => {
            if !has("client auth") || !only(&["client auth", "digital signature", "key encipherment"]) {
                return Err("usages must include \"client auth\" and may add only \"digital signature\" and \"key encipherment\"".into());
            }
            if s.common_name.is_empty() {
                return Err("subject common name is required".into());
            }
            Ok(Usage::Client { user: s.common_name.clone(), group: s.organizations.first().cloned() })
        }
        KUBELET_CLIENT => {
            node()?;
            if !has("client auth") || !only(&["client auth", "digital signature", "key encipherment"]) {
                return Err("usages must be \"client auth\" with \"digital signature\" or \"key encipherment\"".into());
            }
            Ok(Usage::Client { user: s.common_name.clone(), group: Some("system:nodes".into()) })
        }
        KUBELET_SERVING => {
            node()?;
            if !has("server auth") || !only(&["server auth", "digital signature", "key encipherment"]) {
                return Err("usages must be \"server auth\" with \"digital signature\" or \"key encipherment\"".into());
            }
            if s.names.is_empty() {
                return Err("at least one DNS name or IP address is required".into());
            }
            Ok(Usage::Server { name: s.common_name.clone(), names: s.names.clone() })
        }
        other => Err(format!("signer {other:?} is not handled here")),
    }
}

struct Ctx {
    client: kube::Client,
    pki: Option<Arc<ClusterPki>>,
    /// The longest a signed certificate lives.
    max_seconds: u64,
}

/// Runs the approver (with `client`) and, when the cluster CA is given,
/// the signer (with `signer_client`) until shutdown.
/// Certificates live at most `max_duration`.
pub async fn run(client: kube::Client, signer_client: kube::Client, pki: Option<Arc<ClusterPki>>, max_duration: std::time::Duration, shutdown: watch::Receiver<bool>) {
    let max_seconds = max_duration.as_secs().max(60);
    let approver = Arc::new(Ctx { client: client.clone(), pki: None, max_seconds });
    let signer = Arc::new(Ctx { client: signer_client.clone(), pki, max_seconds });
    let approving = Controller::new(Api::<CertificateSigningRequest>::all(client), watcher::Config::default())
        .graceful_shutdown_on(on_shutdown(shutdown.clone()))
        .run(approve, retry, approver)
        .for_each(|_| futures::future::ready(()));
    let signing = async {
        if signer.pki.is_none() {
            return;
        }
        Controller::new(Api::<CertificateSigningRequest>::all(signer_client), watcher::Config::default())
            .graceful_shutdown_on(on_shutdown(shutdown.clone()))
            .run(sign, retry, signer.clone())
            .for_each(|_| futures::future::ready(()))
            .await
    };
    tokio::join!(approving, signing);
}

/// Approves a node's request for its own client certificate, and for its
/// own serving certificate when every name asked for is the Node's name or
/// one of the addresses it reports (what kube leaves to an external
/// approver; skiff's nodes renew their serving certificates by it).
async fn approve(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let signer = csr.spec.signer_name.as_str();
    if !matches!(signer, KUBELET_CLIENT | KUBELET_SERVING) || has(&csr, "Approved") || has(&csr, "Denied") {
        return Ok(Action::await_change());
    }
    let Some(s) = subject(&csr) else { return Ok(Action::await_change()) };
    let requester = csr.spec.username.clone().unwrap_or_default();
    let in_nodes = csr.spec.groups.as_ref().is_some_and(|g| g.iter().any(|g| g == "system:nodes"));
    if !(in_nodes && requester == s.common_name && check(signer, &s, &usages(&csr)).is_ok()) {
        return Ok(Action::await_change());
    }
    let message = if signer == KUBELET_SERVING {
        let node_name = s.common_name.trim_start_matches("system:node:");
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let Some(node) = nodes.get_opt(node_name).await? else { return Ok(Action::requeue(std::time::Duration::from_secs(5))) };
        let mut own: std::collections::HashSet<&str> = node.status.iter().flat_map(|st| st.addresses.iter().flatten()).map(|a| a.address.as_str()).collect();
        own.insert(node_name);
        if !s.names.iter().all(|n| own.contains(n.as_str())) {
            // Left for a person to approve or deny.
            return Ok(Action::await_change());
        }
        "Auto approving the kubelet serving certificate of a node for its own name and addresses."
    } else {
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    };
    let mut next = (*csr).clone();
    let status = next.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(condition("Approved", "AutoApproved", message));
    let name = csr.metadata.name.clone().unwrap_or_default();
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    match api.replace_subresource("approval", &name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if crate::util::is_conflict(&e) => Ok(Action::requeue(std::time::Duration::from_millis(100))),
        Err(e) => Err(e.into()),
    }
}

/// Issues an approved request's certificate, or marks it Failed.
async fn sign(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pki) = &ctx.pki else { return Ok(Action::await_change()) };
    let signer = csr.spec.signer_name.as_str();
    let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
    if !matches!(signer, CLIENT | KUBELET_CLIENT | KUBELET_SERVING) || !has(&csr, "Approved") || has(&csr, "Failed") || has(&csr, "Denied") || issued {
        return Ok(Action::await_change());
    }
    let mut next = (*csr).clone();
    let outcome = match subject(&csr) {
        None => Err("the request is not a valid PEM certificate request".to_string()),
        Some(s) => check(signer, &s, &usages(&csr)),
    };
    let status = next.status.get_or_insert_with(Default::default);
    match outcome {
        Ok(usage) => {
            let seconds = csr.spec.expiration_seconds.and_then(|s| u64::try_from(s).ok()).unwrap_or(ctx.max_seconds).min(ctx.max_seconds);
            let pem = pki.sign_request_for(&String::from_utf8_lossy(&csr.spec.request.0), &usage, seconds).map_err(|e| Error::Invalid(e.to_string()))?;
            status.certificate = Some(ByteString(pem.into_bytes()));
        }
        Err(why) => status.conditions.get_or_insert_with(Vec::new).push(condition("Failed", "SignerValidationFailure", &why)),
    }
    let name = csr.metadata.name.clone().unwrap_or_default();
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    match api.replace_status(&name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if crate::util::is_conflict(&e) => Ok(Action::requeue(std::time::Duration::from_millis(100))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(cn: &str, orgs: &[&str], names: &[&str]) -> RequestSubject {
        RequestSubject { common_name: cn.into(), organizations: orgs.iter().map(|s| s.to_string()).collect(), names: names.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn each_signer_holds_requests_to_its_rules() {
        let client = vec!["client auth".to_string(), "digital signature".to_string()];
        let serving = vec!["server auth".to_string()];
        assert!(check(CLIENT, &subject("alice", &["dev"], &[]), &client).is_ok());
        assert!(check(CLIENT, &subject("alice", &[], &[]), &serving).is_err(), "a client signer issues no serving certificate");
        assert!(check(KUBELET_CLIENT, &subject("system:node:n1", &["system:nodes"], &[]), &client).is_ok());
        let err = check(KUBELET_CLIENT, &subject("alice", &["system:nodes"], &[]), &client).expect_err("not a node");
        assert!(err.contains("system:node:"), "{err}");
        assert!(check(KUBELET_CLIENT, &subject("system:node:n1", &["system:masters"], &[]), &client).is_err(), "no other group");
        assert!(check(KUBELET_SERVING, &subject("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]), &serving).is_ok());
        assert!(check(KUBELET_SERVING, &subject("system:node:n1", &["system:nodes"], &[]), &serving).is_err(), "names required");
        assert!(check("example.com/x", &subject("a", &[], &[]), &client).is_err());
    }
}
