//! What skiff's API clients (scheduler, controllers, simulated nodes) share:
//! a client from a kubeconfig, leader election on a `coordination.k8s.io`
//! Lease, an event recorder, and the resource arithmetic of pods.

#![deny(missing_docs)]

pub mod events;
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

/// An API client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, RuntimeError> {
    let err = |message: String| RuntimeError::Kubeconfig { path: kubeconfig.display().to_string(), message };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(RuntimeError::Kube)
}

/// RFC 3339 with microseconds, as `MicroTime` fields want.
pub fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// RFC 3339 with seconds, as `Time` fields want.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
