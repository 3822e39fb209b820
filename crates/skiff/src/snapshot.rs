//! Snapshots of a server's store (k3s's `etcd-snapshot`): `skiff snapshot
//! save|restore|ls|delete`, and scheduled ones with retention.
//!
//! Over SQLite a snapshot is a consistent copy of the database file made
//! while the server runs (`VACUUM INTO`, one read transaction); over etcd
//! it is etcd's own snapshot (the Maintenance `Snapshot` stream). Both keep
//! revisions, so a restored cluster's resourceVersions stay in order, and
//! both hold the cluster's sealed bootstrap data: a server started on a
//! restored store with the cluster's `--token` takes its CA and keys back.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::datastore::Datastore;
use crate::DatastoreArgs;

/// What `skiff snapshot` does.
#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Saves a snapshot of a server's store (running or not) to FILE, or
    /// to DATA_DIR/snapshots/ with a dated name.
    Save {
        /// Where to write it.
        file: Option<PathBuf>,
        /// The server's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        datastore: DatastoreArgs,
    },
    /// Restores a snapshot into a data directory whose store is gone: a
    /// SQLite snapshot becomes DATA_DIR/state.db, an etcd snapshot a new
    /// one-member embedded etcd (start it with `skiff server --data-dir
    /// DIR --token T`).
    Restore {
        /// The snapshot.
        file: PathBuf,
        /// The data directory to restore into.
        #[arg(long)]
        data_dir: PathBuf,
        /// For an etcd snapshot: the address the restored member serves at
        /// (default: the host's first IPv4 address).
        #[arg(long)]
        advertise_address: Option<std::net::IpAddr>,
        /// For an etcd snapshot: the member's client port.
        #[arg(long, default_value_t = 2379)]
        etcd_client_port: u16,
        /// For an etcd snapshot: the member's peer port.
        #[arg(long, default_value_t = 2380)]
        etcd_peer_port: u16,
    },
    /// Lists the snapshots in DATA_DIR/snapshots.
    Ls {
        /// The server's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Deletes snapshots from DATA_DIR/snapshots by name.
    Delete {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The server's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn snapshots_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// A new snapshot's path in DATA_DIR/snapshots.
fn dated_name(data_dir: &Path) -> PathBuf {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "skiff".into());
    let when = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    snapshots_dir(data_dir).join(format!("skiff-snapshot-{host}-{when}"))
}

/// The datastore of a data dir: the flags' etcd, the embedded etcd, or
/// SQLite.
fn datastore_of(data_dir: &Path, flags: &DatastoreArgs) -> anyhow::Result<Datastore> {
    if flags.datastore_endpoint.is_none() && crate::embedded_etcd::configured(data_dir) {
        return Ok(Datastore::Etcd(crate::embedded_etcd::client_options(data_dir)?));
    }
    Datastore::parse(flags, data_dir)
}

/// Saves a snapshot of `datastore` to `out`; returns the revision it holds.
pub async fn save(datastore: &Datastore, out: &Path) -> anyhow::Result<i64> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match datastore {
        Datastore::Sqlite(db) => {
            let (db, out) = (db.clone(), out.to_path_buf());
            Ok(tokio::task::spawn_blocking(move || skiff_store::sqlite_backup(&db, &out)).await??)
        }
        Datastore::Etcd(opts) => {
            let store = skiff_store::EtcdStore::connect(opts.clone()).await?;
            let tmp = out.with_extension("part");
            let mut file = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
            let rev = store.snapshot(&mut file).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, out).await?;
            Ok(rev)
        }
    }
}

/// Runs `skiff snapshot …`.
pub async fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file, data_dir, datastore } => {
            let data_dir = data_dir.unwrap_or_else(crate::default_data_dir);
            let out = file.unwrap_or_else(|| dated_name(&data_dir));
            let rev = save(&datastore_of(&data_dir, &datastore)?, &out).await?;
            println!("snapshot saved: {} (revision {rev})", out.display());
            Ok(())
        }
        SnapshotCommand::Restore { file, data_dir, advertise_address, etcd_client_port, etcd_peer_port } => {
            let listen = crate::embedded_etcd::Listen {
                name: None,
                advertise: advertise_address.unwrap_or_else(skiff_kubelet::default_node_ip),
                client_port: etcd_client_port,
                peer_port: etcd_peer_port,
            };
            restore(&file, &data_dir, listen).await
        }
        SnapshotCommand::Ls { data_dir } => {
            let dir = snapshots_dir(&data_dir.unwrap_or_else(crate::default_data_dir));
            println!("{:<60} {:>12} CREATED", "NAME", "SIZE");
            for (name, size, created) in list(&dir)? {
                println!("{name:<60} {size:>12} {created}");
            }
            Ok(())
        }
        SnapshotCommand::Delete { names, data_dir } => {
            let dir = snapshots_dir(&data_dir.unwrap_or_else(crate::default_data_dir));
            for name in names {
                if name.contains('/') || name.starts_with('.') {
                    anyhow::bail!("{name:?} is not a snapshot name");
                }
                std::fs::remove_file(dir.join(&name)).with_context(|| format!("deleting snapshot {name}"))?;
                println!("deleted {name}");
            }
            Ok(())
        }
    }
}

/// The snapshots in `dir`, oldest first: name, size, creation time.
fn list(dir: &Path) -> anyhow::Result<Vec<(String, u64, String)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(found) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("skiff-snapshot-") || name.ends_with(".part") {
            continue;
        }
        let meta = e.metadata()?;
        let created: chrono::DateTime<chrono::Utc> = meta.modified()?.into();
        found.push((name, meta.len(), created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    found.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
    Ok(found)
}

async fn restore(file: &Path, data_dir: &Path, listen: crate::embedded_etcd::Listen) -> anyhow::Result<()> {
    let mut head = [0u8; 16];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let _ = f.read(&mut head)?;
    }
    std::fs::create_dir_all(data_dir)?;
    if &head == b"SQLite format 3\0" {
        let db = data_dir.join("state.db");
        if db.exists() || crate::embedded_etcd::configured(data_dir) {
            anyhow::bail!("{} already has a store: restore into a data directory without one (move state.db or etcd/ away first)", data_dir.display());
        }
        let rev = skiff_store::sqlite_revision(file)?;
        std::fs::copy(file, &db).with_context(|| format!("writing {}", db.display()))?;
        println!("restored revision {rev} into {}; start it with `skiff server --data-dir {} --token TOKEN`", db.display(), data_dir.display());
        return Ok(());
    }
    let rev = crate::embedded_etcd::restore(file, data_dir, listen).await?;
    println!(
        "restored an etcd snapshot (revision {rev}) as a one-member embedded etcd in {}; start it with `skiff server --data-dir {} --token TOKEN`",
        data_dir.join("etcd").display(),
        data_dir.display()
    );
    Ok(())
}

/// Takes snapshots on a cron schedule (`--snapshot-schedule-cron`) into
/// DATA_DIR/snapshots and keeps the newest `retention`, until shutdown.
pub async fn schedule(datastore: Datastore, data_dir: PathBuf, cron: String, retention: usize, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let schedule = match croner::Cron::new(&cron).with_seconds_optional().parse() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, cron, "--snapshot-schedule-cron does not parse; no scheduled snapshots");
            return;
        }
    };
    loop {
        let now = chrono::Utc::now();
        let Ok(next) = schedule.find_next_occurrence(&now, false) else { return };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let out = dated_name(&data_dir);
        match save(&datastore, &out).await {
            Ok(rev) => tracing::info!(snapshot = %out.display(), revision = rev, "scheduled snapshot saved"),
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot failed"),
        }
        if retention > 0 {
            if let Ok(all) = list(&snapshots_dir(&data_dir)) {
                for (name, _, _) in all.iter().take(all.len().saturating_sub(retention)) {
                    let _ = std::fs::remove_file(snapshots_dir(&data_dir).join(name));
                }
            }
        }
    }
}
