//! The wire types of a node joining a cluster (`skiff agent --server
//! --token`): what the agent sends to have its certificates signed, and
//! what it gets back. Served by the API server, used by the kubelet.

use serde::{Deserialize, Serialize};

/// The path of the signing endpoint.
pub const NODE_CERTIFICATES_PATH: &str = "/v1-skiff/node-certificates";

/// A node's request to have its certificates signed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificateRequest {
    /// The Node's name.
    pub node_name: String,
    /// The node's addresses, for the serving certificate.
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
    /// PEM certificate request for the node's API client certificate.
    pub client_csr: String,
    /// PEM certificate request for the kubelet API's serving certificate.
    pub serving_csr: String,
    /// The machine's node password (k3s's `/etc/rancher/node/password`):
    /// the first join under a name records it, later joins under that name
    /// must present it, so a token holder cannot take over another
    /// machine's node name.
    #[serde(default)]
    pub node_password: String,
}

/// The Secret in `kube-system` that holds a node name's password hash.
pub fn node_password_secret(node_name: &str) -> String {
    format!("{node_name}.node-password.skiff")
}

/// The signed certificates.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificates {
    /// PEM client certificate: `system:node:<name>`, group `system:nodes`.
    pub client_certificate: String,
    /// PEM serving certificate for the kubelet API.
    pub serving_certificate: String,
}
