//! What every API server of one cluster must hold alike, kept in the store
//! for the servers that share it (k3s's "bootstrap data"): the cluster CA,
//! the ServiceAccount signing key, the node join token and the generated
//! encryption configuration. The first server publishes them; each further
//! server over the same store (etcd) takes them before it starts, so tokens
//! and certificates one issues the others accept.
//!
//! They are sealed with AES-256-GCM under a key derived from the server
//! token (PBKDF2-HMAC-SHA256, as k3s does), so the store alone does not
//! give away the CA key; a server with another token cannot read them and
//! says so.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use skiff_store::{Store, StoreError};

use crate::ServerError;

/// The files shared, relative to the data directory.
const SHARED: &[&str] = &[
    "pki/ca.crt",
    "pki/ca.key",
    "pki/service-account.key",
    "node-token",
    "encryption-config.yaml",
    // The embedded etcd's own CA (`skiff server --cluster-init`).
    "etcd/pki/ca.crt",
    "etcd/pki/ca.key",
];

const SALT: &[u8] = b"skiff-bootstrap";
const ROUNDS: u32 = 100_000;

/// The store key of the sealed files for one token: named by a hash of
/// the token, so servers with different tokens never read each other's.
pub(crate) fn key_of(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("/bootstrap/{hex}")
}

fn cipher(token: &str) -> aes_gcm::Aes256Gcm {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(token.as_bytes(), SALT, ROUNDS, &mut key);
    aes_gcm::Aes256Gcm::new(&key.into())
}

fn err(m: impl std::fmt::Display) -> ServerError {
    ServerError::Bootstrap(m.to_string())
}

/// Writes the shared files from the store into `data_dir` when another
/// server published them. Returns whether it found them (if not, this is
/// the cluster's first server and must [`publish`] after it starts).
/// Files this server already has are kept: it may have rotated a key since.
pub async fn take(store: &dyn Store, data_dir: &Path, token: &str) -> Result<bool, ServerError> {
    let Some(kv) = store.get(&key_of(token)).await? else { return Ok(false) };
    unseal_into(&kv.value, data_dir, token)?;
    Ok(true)
}

/// Opens sealed bootstrap data (from the store, or fetched from a server
/// a new member joins through) and writes the files `data_dir` lacks.
pub fn unseal_into(sealed: &[u8], data_dir: &Path, token: &str) -> Result<(), ServerError> {
    if sealed.len() < 12 {
        return Err(err("the shared bootstrap data is damaged"));
    }
    let (nonce, body) = sealed.split_at(12);
    let plain = cipher(token)
        .decrypt(aes_gcm::Nonce::from_slice(nonce), body)
        .map_err(|_| err("the server token does not open the cluster's bootstrap data (give this server the first server's --token)"))?;
    let files: Map<String, Value> = serde_json::from_slice(&plain).map_err(err)?;
    for (name, content) in files {
        if !SHARED.contains(&name.as_str()) {
            continue;
        }
        let path = data_dir.join(&name);
        if path.exists() {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(content.as_str().unwrap_or_default()).map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::write_private(&path, &bytes)?;
    }
    Ok(())
}

/// Publishes the shared files of `data_dir` (the first server's, made at
/// its start) for the servers that join later.
pub async fn publish(store: &dyn Store, data_dir: &Path, token: &str) -> Result<(), ServerError> {
    let mut files = Map::new();
    for name in SHARED {
        if let Ok(bytes) = std::fs::read(data_dir.join(name)) {
            files.insert(name.to_string(), json!(base64::engine::general_purpose::STANDARD.encode(bytes)));
        }
    }
    let plain = serde_json::to_vec(&Value::Object(files)).map_err(err)?;
    let nonce: [u8; 12] = rand::random();
    let body = cipher(token).encrypt(aes_gcm::Nonce::from_slice(&nonce), plain.as_slice()).map_err(err)?;
    let mut sealed = nonce.to_vec();
    sealed.extend(body);
    match store.create(&key_of(token), Bytes::from(sealed)).await {
        Ok(_) => Ok(()),
        // Two first servers raced: the other's keys are the cluster's, and
        // this one's would not open what it wrote.
        Err(StoreError::AlreadyExists(_)) => {
            Err(err("another server published the cluster's bootstrap data while this one started; start this server again to take it"))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_server_takes_what_the_first_published_and_a_wrong_token_is_refused() {
        let store = skiff_store::MemoryStore::new();
        let (a, b, c) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        std::fs::create_dir_all(a.path().join("pki")).expect("mkdir");
        std::fs::write(a.path().join("pki/ca.crt"), "CA CERT").expect("write");
        std::fs::write(a.path().join("pki/ca.key"), "CA KEY").expect("write");
        std::fs::write(a.path().join("node-token"), "K10abc::node:secret").expect("write");
        assert!(!take(&store, a.path(), "tok").await.expect("take"));
        publish(&store, a.path(), "tok").await.expect("publish");
        assert!(take(&store, b.path(), "tok").await.expect("take"));
        assert_eq!(std::fs::read_to_string(b.path().join("pki/ca.key")).expect("read"), "CA KEY");
        assert_eq!(std::fs::read_to_string(b.path().join("node-token")).expect("read"), "K10abc::node:secret");
        // Another token names another key: nothing there.
        assert!(!take(&store, c.path(), "other").await.expect("take"));
        // The sealed value does not show the key.
        let raw = store.get(&key_of("tok")).await.expect("get").expect("present").value;
        assert!(!raw.windows(6).any(|w| w == b"CA KEY"));
    }
}
