//! Encryption at rest, as kube-apiserver's `--encryption-provider-config`:
//! an `apiserver.config.k8s.io/v1` `EncryptionConfiguration` names, per
//! resource, providers (`aescbc`, `aesgcm`, `secretbox`, `identity`); the
//! first provider's first key encrypts every write, and every key of every
//! provider decrypts. Stored values carry kube's prefix
//! (`k8s:enc:aescbc:v1:KEY:`), so a value names the key that reads it.
//!
//! [`EncryptedStore`] wraps the store: everything the API server and its
//! watch cache read is plaintext, everything that reaches the disk under a
//! listed resource is not. The configuration file is re-read when it
//! changes (as kube's automatic reload does), and values not under the
//! current write key are then rewritten (kube leaves that to a storage
//! migration; doing it here is what lets `skiff secrets-encrypt` rotate
//! keys without downtime). Progress is written to a status file beside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::{json, Value};
use skiff_store::{KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

/// What goes wrong reading a configuration or a value.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The configuration file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is not a valid `EncryptionConfiguration`.
    #[error("encryption configuration: {0}")]
    Config(String),
    /// A stored value names a key the configuration lacks, or fails to decrypt.
    #[error("{0}")]
    Value(String),
}

/// One named key.
#[derive(Debug, Clone)]
struct NamedKey {
    name: String,
    secret: Vec<u8>,
}

/// A provider and its keys.
#[derive(Debug, Clone)]
enum Provider {
    AesCbc(Vec<NamedKey>),
    AesGcm(Vec<NamedKey>),
    Secretbox(Vec<NamedKey>),
    Identity,
}

impl Provider {
    fn kind(&self) -> &'static str {
        match self {
            Provider::AesCbc(_) => "aescbc",
            Provider::AesGcm(_) => "aesgcm",
            Provider::Secretbox(_) => "secretbox",
            Provider::Identity => "identity",
        }
    }

    fn keys(&self) -> &[NamedKey] {
        match self {
            Provider::AesCbc(k) | Provider::AesGcm(k) | Provider::Secretbox(k) => k,
            Provider::Identity => &[],
        }
    }
}

/// Resources (`secrets`, `deployments.apps`, `*.apps`, `*.*`) and their providers.
#[derive(Debug, Clone)]
struct Rule {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

impl Rule {
    fn covers(&self, group: &str, plural: &str) -> bool {
        self.resources.iter().any(|r| {
            let (res, grp) = r.split_once('.').unwrap_or((r.as_str(), ""));
            (res == "*" || res == plural) && (grp == "*" || grp == group)
        })
    }
}

/// A parsed `EncryptionConfiguration`.
#[derive(Debug, Clone, Default)]
pub struct EncryptionConfig {
    rules: Vec<Rule>,
}

/// `/registry/{group|core}/{plural}/…` → (group, plural).
fn resource_of(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.strip_prefix("/registry/")?.splitn(3, '/');
    let group = parts.next()?;
    let plural = parts.next()?;
    Some((if group == "core" { "" } else { group }, plural))
}

const PREFIX: &[u8] = b"k8s:enc:";

impl EncryptionConfig {
    /// Parses kube's `EncryptionConfiguration` (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, EncryptionError> {
        let bad = |m: String| EncryptionError::Config(m);
        let doc: Value = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if doc.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
            return Err(bad("kind must be EncryptionConfiguration".into()));
        }
        let mut rules = Vec::new();
        for (i, r) in doc.get("resources").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let resources: Vec<String> = r.get("resources").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
            if resources.is_empty() {
                return Err(bad(format!("resources[{i}].resources: Required value")));
            }
            let mut providers = Vec::new();
            for (j, p) in r.get("providers").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let keys = |kind: &str, sizes: &[usize]| -> Result<Vec<NamedKey>, EncryptionError> {
                    let mut out = Vec::new();
                    for (k, key) in p.pointer(&format!("/{kind}/keys")).and_then(Value::as_array).into_iter().flatten().enumerate() {
                        let at = format!("resources[{i}].providers[{j}].{kind}.keys[{k}]");
                        let name = key.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| bad(format!("{at}.name: Required value")))?;
                        if name.contains(':') {
                            return Err(bad(format!("{at}.name: Invalid value: {name:?}: should not contain ':'")));
                        }
                        let secret = key.get("secret").and_then(Value::as_str).unwrap_or_default();
                        let secret = base64::engine::general_purpose::STANDARD
                            .decode(secret)
                            .map_err(|e| bad(format!("{at}.secret: Invalid value: secrets must be base64 encoded: {e}")))?;
                        if !sizes.contains(&secret.len()) {
                            return Err(bad(format!("{at}.secret: Invalid value: {} bytes: {kind} keys must be {sizes:?} bytes", secret.len())));
                        }
                        out.push(NamedKey { name: name.to_string(), secret });
                    }
                    if out.is_empty() {
                        return Err(bad(format!("resources[{i}].providers[{j}].{kind}.keys: Required value")));
                    }
                    Ok(out)
                };
                let provider = if p.get("aescbc").is_some() {
                    Provider::AesCbc(keys("aescbc", &[16, 24, 32])?)
                } else if p.get("aesgcm").is_some() {
                    Provider::AesGcm(keys("aesgcm", &[16, 32])?)
                } else if p.get("secretbox").is_some() {
                    Provider::Secretbox(keys("secretbox", &[32])?)
                } else if p.get("identity").is_some() {
                    Provider::Identity
                } else {
                    return Err(bad(format!("resources[{i}].providers[{j}]: one of aescbc, aesgcm, secretbox or identity is required")));
                };
                providers.push(provider);
            }
            if providers.is_empty() {
                return Err(bad(format!("resources[{i}].providers: Required value")));
            }
            rules.push(Rule { resources, providers });
        }
        Ok(Self { rules })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        let (group, plural) = resource_of(key)?;
        self.rules.iter().find(|r| r.covers(group, plural))
    }

    /// The prefix values of `key` are written under (`None`: plaintext).
    pub fn write_prefix(&self, key: &str) -> Option<String> {
        let p = self.rule(key)?.providers.first()?;
        let k = p.keys().first()?;
        Some(format!("k8s:enc:{}:v1:{}:", p.kind(), k.name))
    }

    /// Encrypts a value about to be stored under `key`.
    pub fn encrypt(&self, key: &str, plain: &[u8]) -> Result<Bytes, EncryptionError> {
        let Some(provider) = self.rule(key).and_then(|r| r.providers.first()) else { return Ok(Bytes::copy_from_slice(plain)) };
        let Some(k) = provider.keys().first() else { return Ok(Bytes::copy_from_slice(plain)) };
        let mut out = format!("k8s:enc:{}:v1:{}:", provider.kind(), k.name).into_bytes();
        let fail = |e: &dyn std::fmt::Display| EncryptionError::Value(format!("encrypting {key}: {e}"));
        match provider {
            Provider::AesCbc(_) => out.extend(cbc_encrypt(&k.secret, plain).map_err(|e| fail(&e))?),
            Provider::AesGcm(_) => {
                let nonce: [u8; 12] = rand::random();
                out.extend_from_slice(&nonce);
                out.extend(gcm(&k.secret, &nonce, plain, key.as_bytes(), true).map_err(|e| fail(&e))?);
            }
            Provider::Secretbox(_) => {
                use crypto_secretbox::aead::Aead as _;
                let nonce: [u8; 24] = rand::random();
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&k.secret).map_err(|e| fail(&e))?;
                out.extend_from_slice(&nonce);
                out.extend(cipher.encrypt(&nonce.into(), plain).map_err(|e| fail(&e))?);
            }
            Provider::Identity => return Ok(Bytes::copy_from_slice(plain)),
        }
        Ok(Bytes::from(out))
    }

    /// Decrypts a stored value of `key` with whichever configured key it names.
    pub fn decrypt(&self, key: &str, stored: &[u8]) -> Result<Bytes, EncryptionError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(Bytes::copy_from_slice(stored)) };
        let fail = |m: String| EncryptionError::Value(format!("decrypting {key}: {m}"));
        // kind:v1:name:payload
        let mut fields = rest.splitn(4, |b| *b == b':');
        let (Some(kind), Some(_version), Some(name), Some(payload)) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
            return Err(fail("malformed prefix".into()));
        };
        let (kind, name) = (String::from_utf8_lossy(kind), String::from_utf8_lossy(name));
        let provider_key = self
            .rules
            .iter()
            .flat_map(|r| r.providers.iter())
            .filter(|p| p.kind() == kind)
            .flat_map(|p| p.keys().iter().map(move |k| (p, k)))
            .find(|(_, k)| k.name == name);
        let Some((provider, k)) = provider_key else { return Err(fail(format!("no {kind} key named {name:?} is configured"))) };
        let plain = match provider {
            Provider::AesCbc(_) => cbc_decrypt(&k.secret, payload).map_err(fail)?,
            Provider::AesGcm(_) => {
                if payload.len() < 12 {
                    return Err(fail("short value".into()));
                }
                gcm(&k.secret, &payload[..12], &payload[12..], key.as_bytes(), false).map_err(fail)?
            }
            Provider::Secretbox(_) => {
                use crypto_secretbox::aead::Aead as _;
                if payload.len() < 24 {
                    return Err(fail("short value".into()));
                }
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&k.secret).map_err(|e| fail(e.to_string()))?;
                let nonce: [u8; 24] = payload[..24].try_into().map_err(|_| fail("short value".into()))?;
                cipher.decrypt(&nonce.into(), &payload[24..]).map_err(|e| fail(e.to_string()))?
            }
            Provider::Identity => payload.to_vec(),
        };
        Ok(Bytes::from(plain))
    }

    /// The key prefixes (`/registry/core/secrets/`) of the served resources
    /// this configuration encrypts.
    fn encrypted_prefixes(&self) -> Vec<String> {
        skiff_api::RESOURCES
            .iter()
            .filter(|rt| self.rule(&rt.key_prefix()).is_some_and(|r| r.providers.first().is_some_and(|p| !matches!(p, Provider::Identity))))
            .map(|rt| rt.key_prefix())
            .collect()
    }
}

fn cbc_encrypt(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    use cbc::cipher::{BlockEncryptMut, KeyIvInit};
    let iv: [u8; 16] = rand::random();
    let body = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv).map_err(|e| e.to_string())?.encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &iv).map_err(|e| e.to_string())?.encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv).map_err(|e| e.to_string())?.encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain),
    };
    Ok([iv.as_slice(), &body].concat())
}

fn cbc_decrypt(key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit};
    if data.len() < 32 || !data.len().is_multiple_of(16) {
        return Err("the value is not a whole number of AES blocks".into());
    }
    let (iv, body) = data.split_at(16);
    let bad = |e: cbc::cipher::block_padding::UnpadError| e.to_string();
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv).map_err(|e| e.to_string())?.decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(body).map_err(bad),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv).map_err(|e| e.to_string())?.decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(body).map_err(bad),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv).map_err(|e| e.to_string())?.decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(body).map_err(bad),
    }
}

/// AES-GCM with the storage key as authenticated data (a value copied to
/// another key does not decrypt).
fn gcm(key: &[u8], nonce: &[u8], data: &[u8], aad: &[u8], encrypt: bool) -> Result<Vec<u8>, String> {
    let payload = Payload { msg: data, aad };
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    let result = if key.len() == 16 {
        let c = aes_gcm::Aes128Gcm::new_from_slice(key).map_err(|e| e.to_string())?;
        if encrypt {
            c.encrypt(nonce, payload)
        } else {
            c.decrypt(nonce, payload)
        }
    } else {
        let c = aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|e| e.to_string())?;
        if encrypt {
            c.encrypt(nonce, payload)
        } else {
            c.decrypt(nonce, payload)
        }
    };
    result.map_err(|e| e.to_string())
}

/// A fresh configuration encrypting Secrets with a new random AES-CBC key
/// (k3s's `--secrets-encryption` default), still reading plaintext.
pub fn generate_config() -> String {
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    config_yaml(&[(key_name(), secret)])
}

/// A key name from the time it was made (`aescbckey-20261206T210000Z`).
pub fn key_name() -> String {
    format!("aescbckey-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))
}

/// The configuration for Secrets with these AES-CBC keys (the first writes).
pub fn config_yaml(keys: &[(String, String)]) -> String {
    let keys: Vec<Value> = keys.iter().map(|(n, s)| json!({"name": n, "secret": s})).collect();
    let doc = json!({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
        "resources": [{"resources": ["secrets"], "providers": [{"aescbc": {"keys": keys}}, {"identity": {}}]}]});
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// The store as the API server sees it: values of encrypted resources are
/// encrypted on the way in and decrypted on the way out.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    config: Arc<RwLock<Arc<EncryptionConfig>>>,
}

impl EncryptedStore {
    /// Wraps `inner` with `config`.
    pub fn new(inner: Arc<dyn Store>, config: EncryptionConfig) -> Arc<Self> {
        Arc::new(Self { inner, config: Arc::new(RwLock::new(Arc::new(config))) })
    }

    fn config(&self) -> Arc<EncryptionConfig> {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        kv.value = self.config().decrypt(&kv.key, &kv.value).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(kv)
    }

    fn seal(&self, key: &str, value: &[u8]) -> Result<Bytes, StoreError> {
        self.config().encrypt(key, value).map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Rewrites every value of an encrypted resource that is not under the
    /// current write key; returns (values rewritten, values per key prefix).
    async fn migrate(&self) -> Result<(usize, std::collections::BTreeMap<String, usize>), StoreError> {
        let config = self.config();
        let mut rewritten = 0;
        let mut by_key = std::collections::BTreeMap::new();
        for prefix in config.encrypted_prefixes() {
            let Some(want) = config.write_prefix(&prefix) else { continue };
            let mut after = None;
            loop {
                let page = self.inner.list(&prefix, ListOptions { start_after: after.clone(), limit: 500, ..Default::default() }).await?;
                for kv in &page.items {
                    if kv.value.starts_with(want.as_bytes()) {
                        *by_key.entry(want.clone()).or_insert(0) += 1;
                        continue;
                    }
                    let plain = config.decrypt(&kv.key, &kv.value).map_err(|e| StoreError::Backend(e.to_string()))?;
                    let sealed = config.encrypt(&kv.key, &plain).map_err(|e| StoreError::Backend(e.to_string()))?;
                    match self.inner.update(&kv.key, sealed, kv.mod_revision).await {
                        // A write that raced us was encrypted with the same key.
                        Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => rewritten += 1,
                        Err(e) => return Err(e),
                    }
                    *by_key.entry(want.clone()).or_insert(0) += 1;
                }
                if !page.more {
                    break;
                }
                after = page.items.last().map(|kv| kv.key.clone());
            }
        }
        Ok((rewritten, by_key))
    }

    /// Follows the configuration file: re-reads it when it changes, then
    /// rewrites what the new write key does not cover, and records the
    /// outcome in `status` (JSON: the write keys, the values per key, when).
    pub async fn follow(self: Arc<Self>, path: PathBuf, status: PathBuf, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = None;
        let mut pending = true;
        // The report is recounted once a minute too, so it follows Secrets
        // created since the last configuration change.
        let mut counted = std::time::Instant::now();
        loop {
            if counted.elapsed() >= Duration::from_secs(60) {
                pending = true;
            }
            let now = mtime(&path);
            if now != seen {
                seen = now;
                match EncryptionConfig::load(&path) {
                    Ok(c) => {
                        if let Ok(mut cur) = self.config.write() {
                            *cur = Arc::new(c);
                        }
                        pending = true;
                        tracing::info!(path = %path.display(), "encryption configuration loaded");
                    }
                    Err(e) => tracing::error!(error = %e, "the encryption configuration did not change: its new version is invalid"),
                }
            }
            if pending {
                match self.migrate().await {
                    Ok((rewritten, by_key)) => {
                        pending = false;
                        counted = std::time::Instant::now();
                        let config = self.config();
                        let writes: Vec<String> = config.encrypted_prefixes().iter().filter_map(|p| config.write_prefix(p)).collect();
                        let doc = json!({"writeKeys": writes, "valuesByKey": by_key, "rewritten": rewritten, "at": chrono::Utc::now().to_rfc3339()});
                        let tmp = status.with_extension("tmp");
                        if std::fs::write(&tmp, doc.to_string()).and_then(|_| std::fs::rename(&tmp, &status)).is_err() {
                            tracing::warn!(path = %status.display(), "writing the encryption status failed");
                        }
                        if rewritten > 0 {
                            tracing::info!(rewritten, "values re-encrypted under the current key");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "re-encrypting stored values failed; retrying"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Store for EncryptedStore {
    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
        let key = key.to_string();
        Box::pin(async move { self.inner.get(&key).await?.map(|kv| self.open(kv)).transpose() })
    }

    fn list(&self, prefix: &str, opts: ListOptions) -> BoxFuture<'_, Result<ListResult, StoreError>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let mut r = self.inner.list(&prefix, opts).await?;
            r.items = r.items.into_iter().map(|kv| self.open(kv)).collect::<Result<_, _>>()?;
            Ok(r)
        })
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let sealed = self.seal(&key, &value)?;
            let mut kv = self.inner.create(&key, sealed).await?;
            kv.value = value;
            Ok(kv)
        })
    }

    fn update(&self, key: &str, value: Bytes, expected: Revision) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let sealed = self.seal(&key, &value)?;
            let mut kv = self.inner.update(&key, sealed, expected).await?;
            kv.value = value;
            Ok(kv)
        })
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        let key = key.to_string();
        Box::pin(async move { self.open(self.inner.delete(&key, expected).await?) })
    }

    fn watch(&self, prefix: &str, from: Revision) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let stream = self.inner.watch(&prefix, from).await?;
            // Each event is opened with the configuration of the moment (a
            // reload keeps every key that may still be in use).
            let config = self.config.clone();
            Ok(stream
                .map(move |ev| {
                    ev.and_then(|mut e| {
                        if e.kind == skiff_store::EventKind::Progress {
                            return Ok(e);
                        }
                        let c = config.read().map(|c| c.clone()).unwrap_or_default();
                        e.kv.value = c.decrypt(&e.kv.key, &e.kv.value).map_err(|err| StoreError::Backend(err.to_string()))?;
                        Ok(e)
                    })
                })
                .boxed())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.compact(revision)
    }

    fn fresh_revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        self.inner.fresh_revision()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(provider: &str, keys: &[(&str, usize)]) -> EncryptionConfig {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(n, len)| json!({"name": n, "secret": base64::engine::general_purpose::STANDARD.encode(vec![n.len() as u8; *len])}))
            .collect();
        let doc = json!({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets", "*.apps"], "providers": [{provider: {"keys": keys}}, {"identity": {}}]}]});
        EncryptionConfig::parse(&doc.to_string()).expect("parses")
    }

    #[test]
    fn every_provider_round_trips_and_names_its_key() {
        let key = "/registry/core/secrets/default/db";
        for (provider, len) in [("aescbc", 32), ("aescbc", 16), ("aesgcm", 32), ("aesgcm", 16), ("secretbox", 32)] {
            let c = config(provider, &[("k1", len)]);
            let sealed = c.encrypt(key, b"{\"data\":{\"password\":\"hunter2\"}}").expect("encrypts");
            assert!(sealed.starts_with(format!("k8s:enc:{provider}:v1:k1:").as_bytes()), "{provider}");
            assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "{provider}: no plaintext");
            assert_eq!(&c.decrypt(key, &sealed).expect("decrypts")[..], b"{\"data\":{\"password\":\"hunter2\"}}", "{provider}");
        }
    }

    #[test]
    fn only_listed_resources_are_encrypted_and_plaintext_still_reads() {
        let c = config("aescbc", &[("k1", 32)]);
        assert_eq!(&c.encrypt("/registry/core/configmaps/default/x", b"{}").expect("ok")[..], b"{}");
        assert!(c.encrypt("/registry/apps/deployments/default/x", b"{}").expect("ok").starts_with(b"k8s:enc:"), "*.apps");
        assert_eq!(&c.decrypt("/registry/core/secrets/default/old", b"{\"a\":1}").expect("reads")[..], b"{\"a\":1}");
        assert_eq!(c.write_prefix("/registry/core/secrets/a/b").as_deref(), Some("k8s:enc:aescbc:v1:k1:"));
        assert!(c.encrypted_prefixes().contains(&"/registry/core/secrets/".to_string()));
    }

    #[test]
    fn rotation_reads_old_values_until_their_key_is_removed() {
        let key = "/registry/core/secrets/default/db";
        let old = config("aescbc", &[("old", 32)]);
        let sealed = old.encrypt(key, b"v").expect("ok");
        let both = config("aescbc", &[("new", 32), ("old", 32)]);
        assert_eq!(&both.decrypt(key, &sealed).expect("the old key still reads")[..], b"v");
        assert!(both.encrypt(key, b"v").expect("ok").starts_with(b"k8s:enc:aescbc:v1:new:"));
        let new_only = config("aescbc", &[("new", 32)]);
        let err = new_only.decrypt(key, &sealed).expect_err("the old key is gone");
        assert!(err.to_string().contains("no aescbc key named \"old\""), "{err}");
        // AES-GCM binds a value to its key: moved elsewhere, it fails.
        let gcm = config("aesgcm", &[("g", 32)]);
        let sealed = gcm.encrypt(key, b"v").expect("ok");
        assert!(gcm.decrypt("/registry/core/secrets/default/other", &sealed).is_err());
    }

    #[test]
    fn bad_configurations_are_refused_with_the_field() {
        let err = EncryptionConfig::parse("kind: EncryptionConfiguration\nresources: [{resources: [secrets], providers: [{aescbc: {keys: [{name: k, secret: c2hvcnQ=}]}}]}]\n")
            .expect_err("a 5-byte key");
        assert!(err.to_string().contains("resources[0].providers[0].aescbc.keys[0].secret"), "{err}");
        assert!(EncryptionConfig::parse(&generate_config()).is_ok(), "the generated one parses");
    }
}
