//! The node's half of the local-path provisioner: the controller manager
//! makes and deletes the PersistentVolumes, and only the node can remove
//! the data of one that is gone. (k3s's provisioner runs a helper pod per
//! deletion for this; the kubelet already runs on every node.)
//!
//! The local-path volumes of this node are directories
//! `pvc-<uid>_<namespace>_<claim>` under its storage root, named after
//! their PersistentVolume. Once the volume cache is synced, and after every
//! volume deletion, each directory whose volume no longer exists is
//! removed. A volume kept by the Retain policy (Released) still exists, so
//! its data stays.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::watch;

/// The storage root of the node whose agent data dir is `agent_dir`.
pub fn root(agent_dir: &Path) -> PathBuf {
    let dir = agent_dir.join("storage");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Removes the data of deleted local-path volumes under `root` until shutdown.
pub async fn run(client: kube::Client, root: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let volumes = Informer::<PersistentVolume>::start(Api::all(client), watcher::Config::default(), shutdown.clone());
    let (store, mut events) = (volumes.store(), volumes.changes().boxed());
    let mut synced = false;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = shutdown.changed() => return,
        };
        match ev {
            Some(Change::Synced) => synced = true,
            Some(Change::Deleted(_)) if synced => {}
            Some(_) => continue,
            None => return,
        }
        let (store, root) = (store.clone(), root.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || sweep(&root, &store)).await {
            tracing::warn!(error = %e, "local-path sweep failed");
        }
    }
}

/// The PersistentVolume a local-path directory belongs to.
fn volume_of(dir_name: &str) -> Option<&str> {
    dir_name.split_once('_').map(|(pv, _)| pv).filter(|pv| pv.starts_with("pvc-"))
}

fn sweep(root: &Path, volumes: &Store<PersistentVolume>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pv) = volume_of(&name) else { continue };
        if volumes.get(&ObjectRef::new(pv)).is_some() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => tracing::info!(volume = pv, path = %entry.path().display(), "removed the data of a deleted local-path volume"),
            Err(e) => tracing::warn!(error = %e, path = %entry.path().display(), "removing a deleted local-path volume's data"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_name_their_volume() {
        assert_eq!(volume_of("pvc-1234_default_data"), Some("pvc-1234"));
        assert_eq!(volume_of("pvc-1234"), None, "not a local-path volume directory");
        assert_eq!(volume_of("default_data"), None, "the layout before volumes were provisioned");
    }
}
