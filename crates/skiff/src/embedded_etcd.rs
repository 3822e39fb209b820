//! An etcd member supervised by `skiff server` (k3s's embedded etcd), for a
//! highly available control plane without a separate install:
//!
//! - `skiff server --cluster-init` starts a new one-member cluster (or, on
//!   an existing SQLite data dir, moves its objects onto it);
//! - `skiff server --server https://FIRST:6443 --token T` fetches the
//!   cluster's sealed bootstrap data from a running server, adds its own
//!   member to the cluster (`MemberAdd`, then a start with
//!   `initial-cluster-state=existing`) and serves the API over it;
//! - later starts restart the member from `DATA_DIR/etcd`.
//!
//! Members and their clients use TLS with certificates from an etcd CA of
//! its own (`DATA_DIR/etcd/pki`, shared with joining servers in the
//! bootstrap data), not the cluster CA: a node's or user's client
//! certificate must not open the datastore.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use skiff_store::etcd::process::{EtcdProcess, MemberConfig, MemberTls};
use skiff_store::{EtcdOptions, Store};

/// This server's member, as kept in `DATA_DIR/etcd/member.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// The member's name (host name and a random suffix).
    pub name: String,
    /// Where clients reach it.
    pub client_url: String,
    /// Where peers reach it.
    pub peer_url: String,
    /// The client URLs of the other members when this one joined.
    #[serde(default)]
    pub peers_clients: Vec<String>,
}

/// Where the member's things are.
struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("etcd") }
    }
    fn member(&self) -> PathBuf {
        self.dir.join("member.json")
    }
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
}

/// Whether this data dir runs an embedded etcd member.
pub fn configured(data_dir: &Path) -> bool {
    Paths::new(data_dir).member().exists()
}

/// The client options of this data dir's embedded member (its own URL
/// first, then the others it knew when it joined).
pub fn client_options(data_dir: &Path) -> anyhow::Result<EtcdOptions> {
    let paths = Paths::new(data_dir);
    let member: Member = serde_json::from_slice(&std::fs::read(paths.member())?).context("reading etcd/member.json")?;
    let mut endpoints = vec![member.client_url.clone()];
    endpoints.extend(member.peers_clients.iter().filter(|u| **u != member.client_url).cloned());
    let pki = paths.pki();
    Ok(EtcdOptions {
        endpoints,
        ca_file: Some(pki.join("ca.crt")),
        cert_file: Some(pki.join("client.crt")),
        key_file: Some(pki.join("client.key")),
        ..Default::default()
    })
}

/// Ports, address and name of a new member.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The member's name: the server's node name when it runs a node (so
    /// that `kubectl delete node` of a server removes its member), else
    /// the host name with a random suffix.
    pub name: Option<String>,
    /// The address peers and other servers reach it at.
    pub advertise: IpAddr,
    /// The client port (etcd's 2379).
    pub client_port: u16,
    /// The peer port (etcd's 2380).
    pub peer_port: u16,
}

fn url(ip: IpAddr, port: u16) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, port))
}

/// The etcd CA and this member's and its clients' certificates.
fn certificates(paths: &Paths, advertise: IpAddr) -> anyhow::Result<MemberTls> {
    let pki = skiff_pki::ClusterPki::load_or_create(paths.pki()).context("the etcd CA")?;
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let names = vec![advertise.to_string(), "127.0.0.1".into(), "localhost".into(), host];
    pki.load_or_issue("member", |p| p.issue_peer("etcd", &names)).context("the etcd member certificate")?;
    pki.load_or_issue("client", |p| p.issue_client("skiff-apiserver", None)).context("the etcd client certificate")?;
    Ok(MemberTls { ca_file: paths.pki().join("ca.crt"), cert_file: paths.pki().join("member.crt"), key_file: paths.pki().join("member.key") })
}

/// A running, supervised member: restarted when it exits, stopped by
/// [`Embedded::stop`].
pub struct Embedded {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Embedded {
    /// Stops the member (SIGTERM) and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

async fn supervise(cfg: MemberConfig) -> anyhow::Result<Embedded> {
    let mut process = EtcdProcess::start(&cfg).await.context("starting the embedded etcd")?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut started = tokio::time::Instant::now();
        let mut quick_exits = 0;
        loop {
            tokio::select! {
                status = process.wait() => {
                    // A member removed from its cluster exits at once at
                    // every start: give up after a few in a row.
                    quick_exits = if started.elapsed() < Duration::from_secs(10) { quick_exits + 1 } else { 0 };
                    if quick_exits >= 5 {
                        tracing::error!(status = ?status, "the embedded etcd keeps exiting at start (removed from its cluster?); not restarting it");
                        let _ = stopped.changed().await;
                        return;
                    }
                    tracing::warn!(status = ?status, "the embedded etcd exited; restarting it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let stopping = *stopped.borrow();
                    if stopping {
                        return;
                    }
                    started = tokio::time::Instant::now();
                    match EtcdProcess::start(&MemberConfig { existing: true, ..cfg.clone() }).await {
                        Ok(p) => process = p,
                        Err(e) => tracing::error!(error = %e, "the embedded etcd did not restart"),
                    }
                }
                _ = stopped.changed() => {
                    process.stop().await;
                    return;
                }
            }
        }
    });
    Ok(Embedded { stop, task })
}

fn member_config(paths: &Paths, member: &Member, tls: MemberTls, initial_cluster: String, existing: bool) -> MemberConfig {
    MemberConfig {
        name: member.name.clone(),
        data_dir: paths.data(),
        client_url: member.client_url.clone(),
        peer_url: member.peer_url.clone(),
        initial_cluster,
        existing,
        tls: Some(tls),
        log_file: paths.dir.join("etcd.log"),
    }
}

fn new_member(listen: &Listen) -> Member {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "skiff".into());
    let suffix: String = (0..4).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    Member {
        name: listen.name.clone().unwrap_or_else(|| format!("{host}-{suffix}")),
        client_url: url(listen.advertise, listen.client_port),
        peer_url: url(listen.advertise, listen.peer_port),
        peers_clients: Vec::new(),
    }
}

fn save(paths: &Paths, member: &Member) -> anyhow::Result<()> {
    std::fs::create_dir_all(&paths.dir)?;
    std::fs::write(paths.member(), serde_json::to_vec_pretty(member)?)?;
    Ok(())
}

/// Restarts this data dir's member, or starts a new one-member cluster
/// (`--cluster-init`).
pub async fn start_or_init(data_dir: &Path, listen: Listen) -> anyhow::Result<Embedded> {
    let paths = Paths::new(data_dir);
    if configured(data_dir) {
        let member: Member = serde_json::from_slice(&std::fs::read(paths.member())?).context("reading etcd/member.json")?;
        let tls = certificates(&paths, listen.advertise)?;
        // The data dir holds the membership; the initial cluster is only
        // read on a member's first start.
        let initial = format!("{}={}", member.name, member.peer_url);
        return supervise(member_config(&paths, &member, tls, initial, true)).await;
    }
    skiff_store::etcd::process::binary().map_err(|e| anyhow::anyhow!("{e}"))?;
    let member = new_member(&listen);
    let tls = certificates(&paths, listen.advertise)?;
    let initial = format!("{}={}", member.name, member.peer_url);
    let embedded = supervise(member_config(&paths, &member, tls, initial, false)).await?;
    save(&paths, &member)?;
    tracing::info!(member = %member.name, client = %member.client_url, "started a new etcd cluster (--cluster-init)");
    Ok(embedded)
}

/// What a running server hands a joining one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerBootstrap {
    bootstrap: String,
    etcd_endpoints: Vec<String>,
}

/// Joins the cluster of the server at `server`: takes its bootstrap data,
/// adds a member for this server and starts it.
pub async fn join(data_dir: &Path, listen: Listen, server: &str, token: &str) -> anyhow::Result<Embedded> {
    if configured(data_dir) {
        return start_or_init(data_dir, listen).await;
    }
    skiff_store::etcd::process::binary().map_err(|e| anyhow::anyhow!("{e}"))?;
    let fetched = fetch_bootstrap(server, token).await?;
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD.decode(&fetched.bootstrap).context("the bootstrap data is not base64")?;
    skiff_apiserver::shared_bootstrap::unseal_into(&sealed, data_dir, token)?;
    let paths = Paths::new(data_dir);
    let mut member = new_member(&listen);
    let tls = certificates(&paths, listen.advertise)?;
    let pki = paths.pki();
    let existing = skiff_store::EtcdStore::connect(EtcdOptions {
        endpoints: fetched.etcd_endpoints.clone(),
        ca_file: Some(pki.join("ca.crt")),
        cert_file: Some(pki.join("client.crt")),
        key_file: Some(pki.join("client.key")),
        ..Default::default()
    })
    .await
    .with_context(|| format!("connecting to the cluster's etcd at {}", fetched.etcd_endpoints.join(",")))?;
    // etcd refuses a new member until its leader has heard from every
    // member for a few seconds (a member that just joined, say): retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let members = loop {
        match existing.member_add(vec![member.peer_url.clone()]).await {
            Ok((_, members)) => break members,
            Err(e) if e.to_string().contains("unhealthy cluster") && tokio::time::Instant::now() < deadline => {
                tracing::info!("etcd: the cluster is settling; adding this member again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("adding this server's etcd member"),
        }
    };
    let initial: Vec<String> = members
        .iter()
        .flat_map(|m| {
            let name = if m.name.is_empty() { member.name.clone() } else { m.name.clone() };
            m.peer_ur_ls.iter().map(move |p| format!("{name}={p}")).collect::<Vec<_>>()
        })
        .collect();
    member.peers_clients = members.iter().flat_map(|m| m.client_ur_ls.clone()).chain(fetched.etcd_endpoints.clone()).collect();
    member.peers_clients.sort();
    member.peers_clients.dedup();
    let embedded = supervise(member_config(&paths, &member, tls, initial.join(","), true)).await?;
    save(&paths, &member)?;
    tracing::info!(member = %member.name, client = %member.client_url, "joined the etcd cluster");
    Ok(embedded)
}

async fn fetch_bootstrap(server: &str, token: &str) -> anyhow::Result<ServerBootstrap> {
    let uri: http::Uri = server.parse().with_context(|| format!("--server {server:?}"))?;
    let mut cfg = kube::Config::new(uri);
    // The answer is sealed under the token: whoever made it knew the
    // token, so the server's certificate need not be known yet.
    cfg.accept_invalid_certs = true;
    cfg.auth_info.token = Some(token.to_string().into());
    let client = kube::Client::try_from(cfg).context("a client for --server")?;
    let req = http::Request::get(skiff_apiserver::SERVER_BOOTSTRAP_PATH).body(Vec::new())?;
    let body = client.request_text(req).await.with_context(|| format!("fetching the bootstrap data from {server}"))?;
    serde_json::from_str(&body).context("the server's bootstrap answer")
}

/// Moves every object of an existing SQLite store onto the new etcd (k3s
/// does this at `--cluster-init`), values as they are, so uids and
/// everything else are kept; the SQLite file is renamed `state.db.migrated`.
pub async fn migrate_sqlite(data_dir: &Path, etcd: &dyn skiff_store::Store) -> anyhow::Result<usize> {
    let db = data_dir.join("state.db");
    if !db.exists() {
        return Ok(0);
    }
    let sqlite = skiff_store::SqliteStore::open(&db, Default::default()).context("opening the SQLite store to migrate")?;
    let mut opts = skiff_store::ListOptions { limit: 1000, ..Default::default() };
    let mut moved = 0;
    loop {
        let page = sqlite.list("/", opts.clone()).await?;
        for kv in &page.items {
            match etcd.create(&kv.key, kv.value.clone()).await {
                Ok(_) | Err(skiff_store::StoreError::AlreadyExists(_)) => moved += 1,
                Err(e) => return Err(e).with_context(|| format!("migrating {}", kv.key)),
            }
        }
        opts.revision = Some(page.revision);
        opts.start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    drop(sqlite);
    std::fs::rename(&db, data_dir.join("state.db.migrated"))?;
    tracing::info!(objects = moved, "moved the SQLite store onto etcd");
    Ok(moved)
}

/// Restores an etcd snapshot as this data dir's new one-member embedded
/// etcd (etcd's own `snapshot restore`, which keeps revisions); returns the
/// snapshot's revision.
pub async fn restore(file: &Path, data_dir: &Path, listen: Listen) -> anyhow::Result<i64> {
    if configured(data_dir) || data_dir.join("state.db").exists() {
        anyhow::bail!("{} already has a store: restore into a data directory without one", data_dir.display());
    }
    let paths = Paths::new(data_dir);
    let member = new_member(&listen);
    // etcd ≥ 3.5 moved the offline commands to etcdutl.
    let tool = ["etcdutl", "etcdctl"]
        .into_iter()
        .find(|t| std::process::Command::new(t).arg("version").output().is_ok_and(|o| o.status.success()))
        .ok_or_else(|| anyhow::anyhow!("restoring an etcd snapshot needs etcdutl or etcdctl (Debian's etcd-client package)"))?;
    let status = tokio::process::Command::new(tool).env("ETCDCTL_API", "3").args(["snapshot", "status", "-w", "json"]).arg(file).output().await?;
    anyhow::ensure!(status.status.success(), "{} is not an etcd snapshot: {}", file.display(), String::from_utf8_lossy(&status.stderr).trim());
    let rev = serde_json::from_slice::<serde_json::Value>(&status.stdout).ok().and_then(|v| v["revision"].as_i64()).unwrap_or(0);
    let out = tokio::process::Command::new(tool)
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(file)
        .arg("--name")
        .arg(&member.name)
        .arg("--data-dir")
        .arg(paths.data())
        .arg("--initial-cluster")
        .arg(format!("{}={}", member.name, member.peer_url))
        .arg("--initial-advertise-peer-urls")
        .arg(&member.peer_url)
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "etcd snapshot restore failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    save(&paths, &member)?;
    Ok(rev)
}

/// Removes a member. As with adding, etcd refuses while its leader has not
/// heard from every member for a few seconds: retried for a minute.
async fn remove_member(store: &skiff_store::EtcdStore, id: u64) -> skiff_store::Result<Vec<skiff_store::etcd::pb::Member>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.member_remove(id).await {
            Err(e) if e.to_string().contains("unhealthy cluster") && tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_secs(1)).await,
            done => return done,
        }
    }
}

/// What `skiff etcd member …` does.
#[derive(clap::Subcommand)]
pub enum MemberCommand {
    /// Lists the embedded etcd's members.
    List,
    /// Removes a member by name (a server taken out of the control plane);
    /// the others go on as a smaller cluster.
    Remove {
        /// The member's name (`skiff etcd member list`).
        name: String,
    },
}

/// Runs `skiff etcd member …` against this data dir's embedded etcd.
pub async fn member(data_dir: &Path, command: MemberCommand) -> anyhow::Result<()> {
    anyhow::ensure!(configured(data_dir), "{} runs no embedded etcd (skiff server --cluster-init)", data_dir.display());
    let store = skiff_store::EtcdStore::connect(client_options(data_dir)?).await?;
    let members = store.members().await?;
    match command {
        MemberCommand::List => {
            println!("{:<24} {:<18} {:<32} PEER", "NAME", "ID", "CLIENT");
            for m in members {
                println!("{:<24} {:<18x} {:<32} {}", m.name, m.id, m.client_ur_ls.join(","), m.peer_ur_ls.join(","));
            }
        }
        MemberCommand::Remove { name } => {
            let m = members.iter().find(|m| m.name == name).ok_or_else(|| anyhow::anyhow!("no etcd member is named {name:?}"))?;
            let left = remove_member(&store, m.id).await?;
            println!("removed {name}; {} member(s) left", left.len());
        }
    }
    Ok(())
}

/// Removes the etcd member of a server whose Node is deleted (`kubectl
/// delete node` of a control-plane node, as k3s does): members of servers
/// that run a node are named after it. Every server watches; the first
/// removal wins and the others find the member gone. Ends at shutdown.
pub async fn remove_members_of_deleted_nodes(data_dir: PathBuf, client: kube::Client, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let events = kube::runtime::watcher(nodes, Default::default());
    tokio::pin!(events);
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = shutdown.changed() => return,
        };
        let Some(Ok(kube::runtime::watcher::Event::Delete(node))) = event else {
            if event.is_none() {
                return;
            }
            continue;
        };
        // Only a control-plane node (a server's own) names a member.
        let control_plane = node.metadata.labels.as_ref().is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"));
        let Some(name) = node.metadata.name.filter(|_| control_plane) else { continue };
        let Ok(opts) = client_options(&data_dir) else { continue };
        let Ok(store) = skiff_store::EtcdStore::connect(opts).await else { continue };
        let Ok(members) = store.members().await else { continue };
        let Some(member) = members.iter().find(|m| m.name == name) else { continue };
        if members.len() < 2 {
            tracing::warn!(node = %name, "the node of the only etcd member was deleted; its member stays");
            continue;
        }
        match remove_member(&store, member.id).await {
            Ok(left) => tracing::info!(node = %name, members = left.len(), "removed the etcd member of a deleted server node"),
            Err(e) => tracing::warn!(node = %name, error = %e, "removing the etcd member of a deleted node"),
        }
    }
}
