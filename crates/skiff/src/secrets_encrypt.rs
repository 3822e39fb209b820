//! `skiff secrets-encrypt`: rotation of the keys that encrypt Secrets at
//! rest, without downtime, in k3s's steps. The running server re-reads its
//! encryption configuration when the file changes and re-encrypts what the
//! new write key does not cover; these commands only edit the file and
//! read the server's status file.
//!
//! - `prepare`: a new key is added after the current one (every server can
//!   read with it before any writes with it);
//! - `rotate`: the newest key becomes the write key (the server rewrites
//!   every Secret under it);
//! - `reencrypt`: waits until the server reports every Secret under the
//!   write key, then removes the older keys;
//! - `status`: the keys, and what the server last reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// The steps.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Step {
    /// Shows the keys and the server's last report.
    Status,
    /// Adds a new key that reads but does not yet write.
    Prepare,
    /// Makes the newest key the one that writes.
    Rotate,
    /// Waits for every Secret to be under the write key, then drops the others.
    Reencrypt,
}

fn load(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    skiff_apiserver::encryption::EncryptionConfig::parse(&text)?;
    Ok(serde_yaml::from_str(&text)?)
}

fn save(path: &Path, doc: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_yaml::to_string(doc)?;
    skiff_apiserver::encryption::EncryptionConfig::parse(&text)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The key list of the provider that writes Secrets.
fn secret_keys(doc: &mut Value) -> anyhow::Result<(&'static str, &mut Vec<Value>)> {
    let rules = doc.get_mut("resources").and_then(Value::as_array_mut).context("the configuration lists no resources")?;
    let rule = rules
        .iter_mut()
        .find(|r| r.get("resources").and_then(Value::as_array).is_some_and(|l| l.iter().any(|x| x == "secrets")))
        .context("the configuration does not encrypt secrets")?;
    let provider = rule.pointer_mut("/providers/0").context("no provider for secrets")?;
    for kind in ["aescbc", "aesgcm", "secretbox"] {
        if provider.get(kind).is_some() {
            let keys = provider.pointer_mut(&format!("/{kind}/keys")).and_then(Value::as_array_mut).context("the provider has no keys")?;
            return Ok((kind, keys));
        }
    }
    bail!("Secrets are not encrypted (the first provider is identity)")
}

fn names(keys: &[Value]) -> Vec<String> {
    keys.iter().filter_map(|k| k.get("name").and_then(Value::as_str)).map(String::from).collect()
}

/// Runs a step against the data dir of a server (or the configuration file given).
pub fn run(step: Step, data_dir: &Path, config: Option<PathBuf>, timeout: Duration) -> anyhow::Result<()> {
    let path = config.unwrap_or_else(|| skiff_apiserver::encryption_config_path(data_dir));
    let status_path = skiff_apiserver::encryption_status_path(data_dir);
    let mut doc = load(&path)?;
    match step {
        Step::Status => {
            let (kind, keys) = secret_keys(&mut doc)?;
            println!("Encryption Status: Enabled");
            println!("Provider: {kind}");
            for (i, n) in names(keys).iter().enumerate() {
                println!("{} {n}", if i == 0 { "* (writes)" } else { "  (reads) " });
            }
            match std::fs::read_to_string(&status_path) {
                Ok(s) => println!("Server report: {s}"),
                Err(_) => println!("Server report: none yet (is the server running?)"),
            }
        }
        Step::Prepare => {
            let (kind, keys) = secret_keys(&mut doc)?;
            // 32 bytes suit every provider (AES-256, XSalsa20).
            let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
            let name = skiff_apiserver::encryption::key_name();
            if names(keys).contains(&name) {
                bail!("a key named {name} exists already: prepare at most once a second");
            }
            keys.push(json!({"name": name, "secret": secret}));
            save(&path, &doc)?;
            println!("prepared {kind} key {name}: it reads now; `skiff secrets-encrypt rotate` makes it write");
        }
        Step::Rotate => {
            let (_, keys) = secret_keys(&mut doc)?;
            if keys.len() < 2 {
                bail!("no prepared key: run `skiff secrets-encrypt prepare` first");
            }
            let newest = keys.remove(keys.len() - 1);
            let name = newest.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            keys.insert(0, newest);
            save(&path, &doc)?;
            println!("key {name} now writes; the server re-encrypts every Secret under it (`skiff secrets-encrypt reencrypt` waits for that)");
        }
        Step::Reencrypt => {
            let (kind, keys) = secret_keys(&mut doc)?;
            let write = format!("k8s:enc:{kind}:v1:{}:", names(keys).first().cloned().unwrap_or_default());
            let changed = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            let deadline = Instant::now() + timeout;
            loop {
                let report: Value = std::fs::read_to_string(&status_path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
                let fresh = std::fs::metadata(&status_path).and_then(|m| m.modified()).is_ok_and(|t| t >= changed);
                let covered = report.get("writeKeys").and_then(Value::as_array).is_some_and(|w| w.iter().any(|k| k == &json!(write)));
                let others = report.get("valuesByKey").and_then(Value::as_object).is_some_and(|m| m.keys().any(|k| k.starts_with("k8s:enc:") && *k != write));
                if fresh && covered && !others {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the server has not reported every Secret under {write} within {timeout:?} (is it running with {}?)", path.display());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let dropped: Vec<String> = names(&keys[1..]);
            keys.truncate(1);
            save(&path, &doc)?;
            println!("every Secret is encrypted with {write}; removed keys: {}", if dropped.is_empty() { "none".into() } else { dropped.join(", ") });
        }
    }
    Ok(())
}
