//! TLS bootstrap of a node joining with `skiff agent --server --token`:
//! trust the server's CA only if it is the one the token pins, have the
//! node's own keys certified with the token's secret, and write the
//! kubeconfig the kubelet then runs with. Kept under `DIR/pki`, so a
//! restarted agent starts without the server being reachable.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_api::join::{NodeCertificateRequest, NodeCertificates, NODE_CERTIFICATES_PATH};
use skiff_pki::{CertPair, JoinToken};

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The server was unreachable or refused.
    #[error("{what}: {source}")]
    Api {
        /// What was being asked.
        what: &'static str,
        /// The client's error.
        source: kube::Error,
    },
    /// The CA the server presented is not the one the token pins.
    #[error("the server's CA (sha256 {got}) is not the one the token pins ({want}): wrong server or wrong token")]
    WrongCa {
        /// The hash of what the server sent.
        got: String,
        /// The hash the token pins.
        want: String,
    },
    /// Keys, certificates or the token failed.
    #[error(transparent)]
    Pki(#[from] skiff_pki::PkiError),
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The server's answer was not what the join protocol says.
    #[error("{0}")]
    Protocol(String),
}

/// What a joined node runs with.
pub struct Credentials {
    /// Kubeconfig naming the server, its CA and the node's client certificate.
    pub kubeconfig: PathBuf,
    /// TLS for the kubelet API: the node's serving certificate; clients
    /// verified against the cluster CA.
    pub tls: Arc<rustls::ServerConfig>,
    /// The node's client and serving certificates, to renew while it runs.
    pub rotation: crate::certificates::Rotation,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), BootstrapError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| BootstrapError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut f, contents.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn client(server: &str, ca_pem: Option<&str>) -> Result<kube::Client, BootstrapError> {
    let url = server.parse().map_err(|e| BootstrapError::Protocol(format!("--server {server:?}: {e}")))?;
    let mut cfg = kube::Config::new(url);
    match ca_pem {
        Some(pem) => cfg.root_cert = Some(pem_ders(pem)?),
        // Only for /cacerts, whose answer is checked against the token's hash.
        None => cfg.accept_invalid_certs = true,
    }
    kube::Client::try_from(cfg).map_err(|source| BootstrapError::Api { what: "building a client", source })
}

fn pem_ders(pem: &str) -> Result<Vec<Vec<u8>>, BootstrapError> {
    let ders = rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| c.map(|d| d.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BootstrapError::Protocol(format!("the CA is not PEM: {e}")))?;
    if ders.is_empty() {
        return Err(BootstrapError::Protocol("the CA has no certificate".into()));
    }
    Ok(ders)
}

/// This machine's node password (`DIR/node-password`, made at the first
/// join): it proves to the server that a later join under the same node
/// name comes from the same machine.
fn node_password(dir: &Path) -> Result<String, BootstrapError> {
    let path = dir.join("node-password");
    if let Some(p) = read(&path).map(|p| p.trim().to_string()).filter(|p| !p.is_empty()) {
        return Ok(p);
    }
    let password: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    write(&path, &password, 0o600)?;
    Ok(password)
}

/// Joins the cluster at `server` (or reuses the credentials of an earlier
/// join under `dir`).
pub async fn join(server: &str, token: &JoinToken, dir: &Path, node_name: &str, addresses: &[IpAddr]) -> Result<Credentials, BootstrapError> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).map_err(|source| BootstrapError::Io { path: pki.clone(), source })?;
    let ca_path = pki.join("ca.crt");
    let tag = addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("_");
    let client_name = format!("kubelet-client-{node_name}");
    let serving_name = format!("kubelet-serving-{node_name}-{tag}");
    let file = |n: &str, ext: &str| pki.join(format!("{n}.{ext}"));
    let known = |n: &str| Some(CertPair { cert_pem: read(&file(n, "crt"))?, key_pem: read(&file(n, "key"))? });

    let ca = match read(&ca_path) {
        Some(ca) if token.pins(&ca) => ca,
        _ => {
            let req = http::Request::get("/cacerts").body(Vec::new()).map_err(|e| BootstrapError::Protocol(e.to_string()))?;
            let ca = client(server, None)?.request_text(req).await.map_err(|source| BootstrapError::Api { what: "fetching /cacerts", source })?;
            if !token.pins(&ca) {
                return Err(BootstrapError::WrongCa { got: skiff_pki::token::ca_hash(&ca), want: token.ca_hash.clone() });
            }
            write(&ca_path, &ca, 0o644)?;
            ca
        }
    };
    match (known(&client_name), known(&serving_name)) {
        (Some(_), Some(_)) => {}
        _ => {
            let (client_csr, client_key) = skiff_pki::new_request()?;
            let (serving_csr, serving_key) = skiff_pki::new_request()?;
            let ask = NodeCertificateRequest {
                node_name: node_name.to_string(),
                addresses: addresses.to_vec(),
                client_csr,
                serving_csr,
                node_password: node_password(dir)?,
            };
            let body = serde_json::to_vec(&ask).map_err(|e| BootstrapError::Protocol(e.to_string()))?;
            let req = http::Request::post(NODE_CERTIFICATES_PATH)
                .header("Content-Type", "application/json")
                .header("Authorization", format!("Bearer {}", token.secret))
                .body(body)
                .map_err(|e| BootstrapError::Protocol(e.to_string()))?;
            let signed: NodeCertificates = client(server, Some(&ca))?.request(req).await.map_err(|source| match source {
                kube::Error::Api(s) if s.code == 401 => {
                    BootstrapError::Protocol("the server refused the token's secret (401 Unauthorized): it is not this cluster's node token".into())
                }
                kube::Error::Api(s) if s.code == 403 => BootstrapError::Protocol(s.message),
                source => BootstrapError::Api { what: "having the node's certificates signed", source },
            })?;
            let c = CertPair { cert_pem: signed.client_certificate, key_pem: client_key };
            let s = CertPair { cert_pem: signed.serving_certificate, key_pem: serving_key };
            for (name, pair) in [(&client_name, &c), (&serving_name, &s)] {
                write(&file(name, "key"), &pair.key_pem, 0o600)?;
                write(&file(name, "crt"), &pair.cert_pem, 0o644)?;
            }
            tracing::info!(node = node_name, server, "joined: the node's certificates are signed");
        }
    }
    let kubeconfig = dir.join("kubelet.kubeconfig");
    let doc = skiff_pki::kubeconfig_yaml(server, &ca_path, &file(&client_name, "crt"), &file(&client_name, "key"), &format!("system:node:{node_name}"), None);
    write(&kubeconfig, &doc, 0o600)?;
    let cert = |n: &str| crate::certificates::NodeCert::load(file(n, "crt"), file(n, "key")).map_err(|e| BootstrapError::Protocol(e.to_string()));
    let (client, serving) = (cert(&client_name)?, cert(&serving_name)?);
    let tls = skiff_pki::server_tls_from(&ca, serving.slot.clone(), &[b"http/1.1"])?;
    let mut serving_names = vec![node_name.to_string()];
    serving_names.extend(addresses.iter().map(|a| a.to_string()));
    let rotation = crate::certificates::Rotation { node_name: node_name.to_string(), serving_names, client, serving };
    Ok(Credentials { kubeconfig, tls, rotation })
}
