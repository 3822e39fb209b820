//! What skiff's API clients (scheduler, controllers, simulated nodes) share:
//! a client from a kubeconfig, leader election on a `coordination.k8s.io`
//! Lease, an event recorder, and the resource arithmetic of pods.

#![deny(missing_docs)]

pub mod events;
pub mod informer;
pub mod leader;
pub mod quantity;
pub mod resources;
pub mod selectors;

use std::path::Path;

/// Errors of the shared runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// An API call failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A stable 32-bit hash of a path (FNV-1a; std's hasher is seeded per
/// run): what names a node's host-wide resources (its bridge, its proxy
/// table) after its data directory, so several nodes on one machine never
/// share one.
pub fn path_hash(path: &Path) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in path.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// An API client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, RuntimeError> {
    let err = |message: String| RuntimeError::Kubeconfig { path: kubeconfig.display().to_string(), message };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(RuntimeError::Kube)
}

/// The cluster CA (PEM) that a kubeconfig's current context trusts, as
/// kube-controller-manager's `--root-ca-file` gives it: what the root CA
/// publisher hands to pods. `None` when the kubeconfig names none.
pub fn kubeconfig_ca_pem(kubeconfig: &Path) -> Result<Option<String>, RuntimeError> {
    use base64::Engine;
    let err = |message: String| RuntimeError::Kubeconfig { path: kubeconfig.display().to_string(), message };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let context = kc.current_context.as_deref().and_then(|c| kc.contexts.iter().find(|n| n.name == c)).and_then(|n| n.context.as_ref());
    let Some(cluster) = context.and_then(|c| kc.clusters.iter().find(|n| n.name == c.cluster)).and_then(|n| n.cluster.as_ref()) else {
        return Ok(None);
    };
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| err(format!("certificate-authority-data: {e}")))?;
        return String::from_utf8(pem).map(Some).map_err(|e| err(format!("certificate-authority-data: {e}")));
    }
    match &cluster.certificate_authority {
        Some(file) => std::fs::read_to_string(file).map(Some).map_err(|e| err(format!("certificate-authority {file}: {e}"))),
        None => Ok(None),
    }
}

/// RFC 3339 with microseconds, as `MicroTime` fields want.
pub fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// RFC 3339 with seconds, as `Time` fields want.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
