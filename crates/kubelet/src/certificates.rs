//! The node's certificates renewing themselves while it runs (the
//! kubelet's `--rotate-certificates` and `--rotate-server-certificates`):
//! at 70–90 % of a certificate's life the kubelet makes a new key, asks
//! for a certificate with a `certificates.k8s.io/v1`
//! CertificateSigningRequest (`kubernetes.io/kube-apiserver-client-kubelet`
//! for its client certificate, `kubernetes.io/kubelet-serving` for the
//! kubelet API's), waits for the controller manager to approve and sign
//! it, writes the pair over the old files (a restart starts with it) and
//! puts it in the [`CertSlot`] its TLS configurations present, so every
//! new connection uses it; nothing restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::client::ConfigExt;
use skiff_pki::{CertPair, CertSlot};
use tokio::sync::watch;

/// Why a certificate could not be loaded or renewed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A key, certificate or request failed.
    #[error(transparent)]
    Pki(#[from] skiff_pki::PkiError),
    /// An API call failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The request was denied, failed or never signed.
    #[error("certificate signing request {name}: {why}")]
    NotIssued {
        /// The request's name.
        name: String,
        /// What happened.
        why: String,
    },
    /// The kubeconfig is unusable.
    #[error("{0}")]
    Kubeconfig(String),
}

/// One of the node's certificates: the slot its TLS configurations read,
/// and the files it lives in.
#[derive(Clone)]
pub struct NodeCert {
    /// What TLS presents.
    pub slot: Arc<CertSlot>,
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
}

impl NodeCert {
    /// Loads the pair from its files.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, CertError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| CertError::Io { path: p.to_path_buf(), source });
        let pair = CertPair { cert_pem: read(&cert)?, key_pem: read(&key)? };
        Ok(Self { slot: CertSlot::new(&pair)?, cert, key })
    }

    /// Writes `pair` over the files (each replaced whole), then presents it.
    fn install(&self, pair: &CertPair) -> Result<(), CertError> {
        write(&self.key, &pair.key_pem, 0o600)?;
        write(&self.cert, &pair.cert_pem, 0o644)?;
        self.slot.replace(pair)?;
        Ok(())
    }
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("rotating");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut f, contents.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// An API client for the server and CA that `kubeconfig` names, presenting
/// whatever `client_cert` holds at each new connection.
pub async fn client(kubeconfig: &Path, client_cert: &NodeCert) -> Result<kube::Client, CertError> {
    let bad = |e: &dyn std::fmt::Display| CertError::Kubeconfig(format!("{}: {e}", kubeconfig.display()));
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| bad(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| bad(&e))?;
    let ca = skiff_runtime::kubeconfig_ca_pem(kubeconfig).map_err(|e| bad(&e))?.ok_or_else(|| bad(&"names no certificate authority"))?;
    let tls = skiff_pki::client_tls_from(&ca, client_cert.slot.clone())?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, tls));
    // Idle connections go after 30 s, so that few outlive a renewal.
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| bad(&e))?)
        .layer(config.extra_headers_layer().map_err(|e| bad(&e))?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// What the kubelet renews.
#[derive(Clone)]
pub struct Rotation {
    /// The node's name.
    pub node_name: String,
    /// The names its serving certificate is for (the node's name and addresses).
    pub serving_names: Vec<String>,
    /// Its client certificate.
    pub client: NodeCert,
    /// Its serving certificate.
    pub serving: NodeCert,
}

/// The signer of the node's client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelets' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// How long the kubelet waits for a request to be signed before it asks again.
const SIGNING_TIMEOUT: Duration = Duration::from_secs(300);

/// When `pair` is due: at 70–90 % (by `fraction`) of its life.
fn due(pair: &CertPair, fraction: f64) -> Duration {
    let (Some(start), Some(end)) = (skiff_pki::not_before(&pair.cert_pem), skiff_pki::not_after(&pair.cert_pem)) else { return Duration::ZERO };
    let at = start as f64 + (end - start) as f64 * fraction;
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    Duration::from_secs_f64((at - now).max(0.0))
}

fn fraction() -> f64 {
    0.7 + 0.2 * rand::random::<f64>()
}

/// Renews the node's certificates as they come due, until shutdown.
pub async fn rotate(client: kube::Client, rotation: Rotation, mut shutdown: watch::Receiver<bool>) {
    let mut fractions = [fraction(), fraction()];
    // At least this long between two requests, so that a certificate due
    // at once (a clock far off, a signer issuing short ones) never spins.
    let mut floor = Duration::ZERO;
    loop {
        let waits = [due(&rotation.client.slot.pair(), fractions[0]), due(&rotation.serving.slot.pair(), fractions[1])];
        let which = usize::from(waits[1] < waits[0]);
        tokio::select! {
            _ = tokio::time::sleep(waits[which].max(floor)) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        let serving = which == 1;
        match renew(&client, &rotation, serving).await {
            Ok(pair) => {
                let until = skiff_pki::not_after(&pair.cert_pem).and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()).unwrap_or_default();
                tracing::info!(node = %rotation.node_name, certificate = if serving { "serving" } else { "client" }, until, "renewed the node's certificate");
                fractions[which] = fraction();
                floor = Duration::from_secs(2);
            }
            Err(e) => {
                tracing::warn!(node = %rotation.node_name, error = %e, serving, "renewing the node's certificate failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
                }
            }
        }
    }
}

/// Asks for, waits for and installs one new certificate.
async fn renew(client: &kube::Client, rotation: &Rotation, serving: bool) -> Result<CertPair, CertError> {
    let cn = format!("system:node:{}", rotation.node_name);
    let (request, key_pem) = if serving {
        skiff_pki::new_request_naming(&cn, Some("system:nodes"), &rotation.serving_names)?
    } else {
        skiff_pki::new_request_for(&cn, Some("system:nodes"))?
    };
    let (signer, usage) = if serving { (KUBELET_SERVING_SIGNER, "server auth") } else { (KUBELET_CLIENT_SIGNER, "client auth") };
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": "csr-"},
        "spec": {"request": skiff_api::base64(request.as_bytes()), "signerName": signer, "usages": ["digital signature", usage]}
    }))
    .map_err(|e| CertError::Kubeconfig(e.to_string()))?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    let settled = |c: Option<&CertificateSigningRequest>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                || s.conditions.iter().flatten().any(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        })
    };
    let done = tokio::time::timeout(SIGNING_TIMEOUT, kube::runtime::wait::await_condition(api, &name, settled))
        .await
        .map_err(|_| CertError::NotIssued { name: name.clone(), why: format!("not signed within {} s", SIGNING_TIMEOUT.as_secs()) })?
        .map_err(|e| CertError::NotIssued { name: name.clone(), why: e.to_string() })?;
    let status = done.and_then(|c| c.status).unwrap_or_default();
    let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) else {
        let why = status.conditions.iter().flatten().filter(|c| c.status == "True").map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default())).collect::<Vec<_>>().join("; ");
        return Err(CertError::NotIssued { name, why });
    };
    let pair = CertPair { cert_pem: String::from_utf8_lossy(&cert.0).into_owned(), key_pem };
    let target = if serving { &rotation.serving } else { &rotation.client };
    target.install(&pair)?;
    Ok(pair)
}
