//! The tokens controller (kube-controller-manager's `serviceaccount-token`):
//! a Secret of type `kubernetes.io/service-account-token` made by hand
//! with the annotation `kubernetes.io/service-account.name` is filled with
//! a token of that ServiceAccount, the cluster CA and the namespace. The
//! token is a TokenRequest bound to the Secret (kube signs a never-expiring
//! legacy JWT; bound to the Secret, this one dies with it just as a legacy
//! token does, and lives 2³² seconds otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

/// The Secret type.
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

struct Ctx {
    client: kube::Client,
    ca: Option<String>,
}

/// Runs the controller until shutdown; `ca` is the cluster CA (PEM) put in each Secret.
pub async fn run(client: kube::Client, ca: Option<String>, shutdown: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx { client: client.clone(), ca });
    Controller::new(Api::<Secret>::all(client), watcher::Config::default().fields(&format!("type={TOKEN_TYPE}")))
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let filled = secret.data.as_ref().is_some_and(|d| d.get("token").is_some_and(|t| !t.0.is_empty()));
    if filled || secret.metadata.deletion_timestamp.is_some() || secret.type_.as_deref() != Some(TOKEN_TYPE) {
        return Ok(Action::await_change());
    }
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let Some(account) = annotations.get(NAME_ANNOTATION).filter(|a| !a.is_empty()) else { return Ok(Action::await_change()) };
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(sa) = accounts.get_opt(account).await? else {
        // The account may come later; its creation does not wake this
        // Secret, so look again in a while.
        return Ok(Action::requeue(std::time::Duration::from_secs(5)));
    };
    let sa_uid = sa.metadata.uid.clone().unwrap_or_default();
    if annotations.get(UID_ANNOTATION).is_some_and(|u| !u.is_empty() && *u != sa_uid) {
        // Made for an account of that name that no longer exists.
        return Ok(Action::await_change());
    }
    let req = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(1 << 32),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(name.clone()),
                uid: secret.metadata.uid.clone(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts.create_token_request(account, &PostParams::default(), &req).await?.status.map(|s| s.token).unwrap_or_default();
    if token.is_empty() {
        return Err(Error::Invalid(format!("the token request for {ns}/{account} answered no token")));
    }
    let mut next = (*secret).clone();
    let data = next.data.get_or_insert_with(BTreeMap::new);
    data.insert("token".into(), ByteString(token.into_bytes()));
    data.insert("namespace".into(), ByteString(ns.clone().into_bytes()));
    if let Some(ca) = &ctx.ca {
        data.insert("ca.crt".into(), ByteString(ca.clone().into_bytes()));
    }
    next.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(UID_ANNOTATION.into(), sa_uid);
    match Api::<Secret>::namespaced(ctx.client.clone(), &ns).replace(&name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if crate::util::is_conflict(&e) => Ok(Action::requeue(std::time::Duration::from_millis(100))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
