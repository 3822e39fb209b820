//! Which store a server runs over (`--datastore-endpoint`, as k3s names
//! it): embedded SQLite by default, or an etcd cluster several servers
//! share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use skiff_store::Store;

use crate::DatastoreArgs;

/// A server's store.
#[derive(Clone)]
pub enum Datastore {
    /// The embedded SQLite database at this path.
    Sqlite(PathBuf),
    /// An etcd cluster.
    Etcd(skiff_store::EtcdOptions),
}

impl Datastore {
    /// Reads the flags: `sqlite://PATH`, or etcd client URLs
    /// (`http(s)://host:port`, comma-separated).
    pub fn parse(args: &DatastoreArgs, data_dir: &Path) -> anyhow::Result<Self> {
        Self::from_flags(
            args.datastore_endpoint.as_deref(),
            data_dir,
            args.datastore_cafile.clone(),
            args.datastore_certfile.clone(),
            args.datastore_keyfile.clone(),
        )
    }

    /// The same from the flags' values.
    pub fn from_flags(endpoint: Option<&str>, data_dir: &Path, ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> anyhow::Result<Self> {
        let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else { return Ok(Self::Sqlite(data_dir.join("state.db"))) };
        if let Some(path) = endpoint.strip_prefix("sqlite://") {
            return Ok(Self::Sqlite(if path.is_empty() { data_dir.join("state.db") } else { PathBuf::from(path) }));
        }
        let endpoints: Vec<String> = endpoint.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        for e in &endpoints {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                anyhow::bail!("--datastore-endpoint: {e:?} is neither sqlite://PATH nor an etcd client URL (https://host:2379)");
            }
        }
        Ok(Self::Etcd(skiff_store::EtcdOptions { endpoints, ca_file: ca, cert_file: cert, key_file: key, ..Default::default() }))
    }

    /// Opens the store.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Self::Sqlite(path) => {
                Arc::new(skiff_store::SqliteStore::open(path, Default::default()).with_context(|| format!("opening the store {}", path.display()))?)
            }
            Self::Etcd(opts) => {
                Arc::new(skiff_store::EtcdStore::connect(opts.clone()).await.with_context(|| format!("connecting to etcd at {}", opts.endpoints.join(",")))?)
            }
        })
    }
}

/// The server token: the one given, else the one kept in `DATA_DIR/token`,
/// else a new random one written there.
pub fn server_token(given: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("token");
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        if std::fs::read_to_string(&path).map(|s| s.trim() != t).unwrap_or(true) {
            write_secret(&path, t)?;
        }
        return Ok(t.to_string());
    }
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let bytes: [u8; 24] = rand::random();
    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_secret(&path, &t)?;
    Ok(t)
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    Ok(())
}
