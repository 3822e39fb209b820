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
}

/// Whether `path` is one of the join endpoints (served without a credential).
pub(crate) fn is_join_path(path: &str) -> bool {
    path == "/cacerts" || path == NODE_CERTIFICATES_PATH
}

/// Serves a join endpoint.
pub(crate) async fn serve(join: &Join, req: Request<hyper::body::Incoming>) -> Result<Resp, ApiError> {
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
            let client = Usage::Client { user: format!("system:node:{}", ask.node_name), group: Some("system:nodes".into()) };
            let mut names = vec![ask.node_name.clone()];
            names.extend(ask.addresses.iter().map(|a| a.to_string()));
            let serving = Usage::Server { name: ask.node_name.clone(), names };
            let sign = |csr: &str, what: &Usage, field: &str| join.pki.sign_request(csr, what).map_err(|e| ApiError::bad_request(format!("{field}: {e}")));
            let signed = NodeCertificates {
                client_certificate: sign(&ask.client_csr, &client, "clientCsr")?,
                serving_certificate: sign(&ask.serving_csr, &serving, "servingCsr")?,
            };
            tracing::info!(node = %ask.node_name, "signed a joining node's certificates");
            Ok(json_response(201, &serde_json::to_value(&signed).map_err(|e| ApiError::internal(e.to_string()))?))
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}
