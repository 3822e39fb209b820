//! How a node joins: the two endpoints `skiff agent --server --token`
//! uses before it has any credential (k3s's bootstrap, in its token
//! format; Kubernetes' own TLS bootstrap needs the certificates API).
//!
//! - `GET /cacerts` answers the cluster CA to anyone: it is public, and the
//!   agent checks it against the hash its token pins before trusting it.
//! - `POST /v1-skiff/node-certificates` signs a node's two certificate
//!   requests (client: `system:node:<name>` in `system:nodes`; serving: the
//!   kubelet API's names and addresses) for a caller presenting the token's
//!   secret as bearer token. Private keys never leave the node.

use hyper::{Method, Request};
use skiff_api::join::{NodeCertificateRequest, NodeCertificates, NODE_CERTIFICATES_PATH};
use skiff_api::ApiError;
use skiff_pki::{ClusterPki, JoinToken, Usage};

use crate::auth::{bearer, Bearer};
use crate::respond::{json_response, Resp};

/// What the join endpoints need: the CA that signs and the token's secret.
pub(crate) struct Join {
    pub(crate) pki: std::sync::Arc<ClusterPki>,
    pub(crate) token: JoinToken,
    /// How long a node's certificates live (`None`: as the CA's own).
    pub(crate) node_lifetime: Option<std::time::Duration>,
    /// The server token further servers present, and the etcd client URLs
    /// they join (only a server over etcd serves its bootstrap data).
    pub(crate) server: Option<(String, Vec<String>)>,
}

/// Where a further control-plane server fetches the cluster's sealed
/// bootstrap data and the etcd members to join (k3s's
/// `/v1-k3s/server-bootstrap`), presenting the server token.
pub const SERVER_BOOTSTRAP_PATH: &str = "/v1-skiff/server-bootstrap";

/// Whether `path` is one of the join endpoints (served without a credential).
pub(crate) fn is_join_path(path: &str) -> bool {
    path == "/cacerts" || path == NODE_CERTIFICATES_PATH || path == SERVER_BOOTSTRAP_PATH
}

/// Serves a join endpoint.
pub(crate) async fn serve(state: &crate::handler::State, req: Request<crate::handler::ReqBody>) -> Result<Resp, ApiError> {
    let join = &state.join;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/cacerts") => Ok(hyper::Response::builder()
            .status(200)
            .header("Content-Type", "application/x-pem-file")
            .body(crate::respond::full(bytes::Bytes::from(join.pki.ca_cert_pem().to_string())))
            .map_err(|e| ApiError::internal(e.to_string()))?),
        (&Method::POST, NODE_CERTIFICATES_PATH) => {
            let authorized = matches!(bearer(req.headers()), Bearer::Token(t) if skiff_pki::token::secrets_equal(t, &join.token.secret));
            if !authorized {
                return Err(ApiError::unauthorized());
            }
            let body = crate::handler::read_body(req).await?;
            let ask: NodeCertificateRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("node certificate request: {e}")))?;
            if !skiff_api::validation::is_dns1123_subdomain(&ask.node_name) {
                return Err(ApiError::bad_request(format!(
                    "nodeName: Invalid value: {:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                    ask.node_name
                )));
            }
            claim_node_name(state, &ask.node_name, &ask.node_password).await?;
            let client = Usage::Client { user: format!("system:node:{}", ask.node_name), group: Some("system:nodes".into()) };
            let mut names = vec![ask.node_name.clone()];
            names.extend(ask.addresses.iter().map(|a| a.to_string()));
            let serving = Usage::Server { name: ask.node_name.clone(), names };
            let sign = |csr: &str, what: &Usage, field: &str| {
                match join.node_lifetime {
                    Some(l) => join.pki.sign_request_for(csr, what, l.as_secs().max(60)),
                    None => join.pki.sign_request(csr, what),
                }
                .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
            };
            let signed = NodeCertificates {
                client_certificate: sign(&ask.client_csr, &client, "clientCsr")?,
                serving_certificate: sign(&ask.serving_csr, &serving, "servingCsr")?,
            };
            tracing::info!(node = %ask.node_name, "signed a joining node's certificates");
            Ok(json_response(201, &serde_json::to_value(&signed).map_err(|e| ApiError::internal(e.to_string()))?))
        }
        (&Method::GET, SERVER_BOOTSTRAP_PATH) => {
            let Some((token, etcd)) = &join.server else { return Err(ApiError::no_such_path()) };
            let authorized = matches!(bearer(req.headers()), Bearer::Token(t) if skiff_pki::token::secrets_equal(t, token));
            if !authorized {
                return Err(ApiError::unauthorized());
            }
            let sealed = state
                .store
                .get(&crate::shared_bootstrap::key_of(token))
                .await
                .map_err(crate::respond::store_unavailable)?
                .ok_or_else(|| ApiError::unavailable("the cluster's bootstrap data is not published yet"))?;
            use base64::Engine;
            let body = serde_json::json!({
                "bootstrap": base64::engine::general_purpose::STANDARD.encode(&sealed.value),
                "etcdEndpoints": etcd,
            });
            tracing::info!("handed the bootstrap data to a joining server");
            Ok(json_response(200, &body))
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

/// A node name belongs to the first machine that joins under it: its
/// password's hash is kept in a Secret (`kube-system/NAME.node-password.skiff`,
/// encrypted at rest like every Secret), and a later join under that name
/// must present the same password (k3s's node-password check).
async fn claim_node_name(state: &crate::handler::State, node: &str, password: &str) -> Result<(), ApiError> {
    use skiff_store::StoreError;
    if password.len() < 16 {
        return Err(ApiError::bad_request("nodePassword: Required value: a joining node presents its node password (16 characters or more)"));
    }
    let rt = skiff_api::registry::find("", "v1", "secrets").ok_or_else(ApiError::no_such_path)?;
    let name = skiff_api::join::node_password_secret(node);
    let key = rt.key(Some("kube-system"), &name);
    let hash = skiff_pki::token::sha256_hex(password);
    let stored = state.store.get(&key).await.map_err(|e| crate::respond::store_err(rt, &name, e))?;
    match stored {
        Some(kv) => {
            let secret: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let have = secret.pointer("/data/hash").and_then(serde_json::Value::as_str).and_then(skiff_api::unbase64).unwrap_or_default();
            if skiff_pki::token::secrets_equal(&String::from_utf8_lossy(&have), &hash) {
                Ok(())
            } else {
                tracing::warn!(node, "refused a join under a node name another machine holds");
                Err(ApiError::forbidden(format!(
                    "node {node:?} is already held by another machine: its node password does not match (if the machine was replaced, delete the Secret kube-system/{name})"
                )))
            }
        }
        None => {
            let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "skiff.io/node-password",
                "metadata": {"name": name, "namespace": "kube-system", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": crate::respond::now()},
                "data": {"hash": skiff_api::base64(hash.as_bytes())}});
            match state.store.create(&key, bytes::Bytes::from(secret.to_string())).await {
                Ok(_) => Ok(()),
                // Two joins racing for one name: the loser checks again.
                Err(StoreError::AlreadyExists(_)) => Box::pin(claim_node_name(state, node, password)).await,
                Err(e) => Err(crate::respond::store_err(rt, &name, e)),
            }
        }
    }
}
