//! A real `etcd` member as a child process (Debian's `etcd-server`), as
//! k3s embeds etcd: `skiff server --cluster-init` starts and supervises
//! one, joining servers add theirs, and tests run clusters of them on
//! loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Result, StoreError};

/// The certificates a member serves and dials its peers with; clients and
/// peers must present a certificate the CA signed.
#[derive(Debug, Clone)]
pub struct MemberTls {
    /// The CA (PEM file) that signs members' and clients' certificates.
    pub ca_file: PathBuf,
    /// The member's certificate (PEM file), valid for its addresses.
    pub cert_file: PathBuf,
    /// The member's key (PEM file).
    pub key_file: PathBuf,
}

/// One member's settings.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The member's name, unique in the cluster.
    pub name: String,
    /// Where the member keeps its data.
    pub data_dir: PathBuf,
    /// The URL clients reach it at (also where it listens).
    pub client_url: String,
    /// The URL peers reach it at (also where it listens).
    pub peer_url: String,
    /// Every member's `NAME=PEER_URL`, comma-separated.
    pub initial_cluster: String,
    /// `false` when joining an existing cluster (after `MemberAdd`).
    pub existing: bool,
    /// TLS for clients and peers; plain HTTP without.
    pub tls: Option<MemberTls>,
    /// Where its output goes.
    pub log_file: PathBuf,
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The `etcd` binary: `$SKIFF_ETCD`, or `etcd` on the `PATH`.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_ETCD") {
        return Ok(PathBuf::from(p));
    }
    on_path("etcd").ok_or_else(|| {
        StoreError::Backend("etcd was not found on the PATH: install Debian's etcd-server package (apt-get install etcd-server) or set SKIFF_ETCD".into())
    })
}

/// A running member.
pub struct EtcdProcess {
    child: tokio::process::Child,
    /// Its client URL.
    pub client_url: String,
}

impl EtcdProcess {
    /// Starts the member and waits until it answers on its client port
    /// (for a new cluster's first members, until the port is open: the
    /// cluster answers once a quorum runs).
    pub async fn start(cfg: &MemberConfig) -> Result<Self> {
        let etcd = binary()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| StoreError::Backend(format!("creating {}: {e}", cfg.data_dir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log_file)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", cfg.log_file.display())))?;
        let err = log.try_clone().map_err(|e| StoreError::Backend(e.to_string()))?;
        // setpriv sets the parent-death signal without unsafe pre_exec code
        // (as for the supervised containerd): if skiff is killed, its etcd
        // goes too rather than lingering; its data is on disk.
        let mut cmd = match on_path("setpriv") {
            Some(setpriv) => {
                let mut c = tokio::process::Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&etcd);
                c
            }
            None => tokio::process::Command::new(&etcd),
        };
        cmd.arg("--name")
            .arg(&cfg.name)
            .arg("--data-dir")
            .arg(&cfg.data_dir)
            .arg("--listen-client-urls")
            .arg(&cfg.client_url)
            .arg("--advertise-client-urls")
            .arg(&cfg.client_url)
            .arg("--listen-peer-urls")
            .arg(&cfg.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&cfg.peer_url)
            .arg("--initial-cluster")
            .arg(&cfg.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(if cfg.existing { "existing" } else { "new" })
            // Lets a consistent read learn the revision it must reach even
            // when nothing it watches changes (kube-apiserver relies on it).
            .arg("--experimental-watch-progress-notify-interval=5s")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        if let Some(tls) = &cfg.tls {
            for side in ["", "peer-"] {
                cmd.arg(format!("--{side}cert-file")).arg(&tls.cert_file);
                cmd.arg(format!("--{side}key-file")).arg(&tls.key_file);
                cmd.arg(format!("--{side}trusted-ca-file")).arg(&tls.ca_file);
                cmd.arg(format!("--{side}client-cert-auth"));
            }
        }
        let child = cmd.spawn().map_err(|e| StoreError::Backend(format!("starting {}: {e}", etcd.display())))?;
        let mut me = Self { child, client_url: cfg.client_url.clone() };
        me.wait_listening(&cfg.log_file).await?;
        Ok(me)
    }

    async fn wait_listening(&mut self, log: &Path) -> Result<()> {
        let addr = self.client_url.trim_start_matches("https://").trim_start_matches("http://").to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                return Err(StoreError::Backend(format!("etcd exited ({status}) at start:\n{tail}")));
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::Backend(format!("etcd did not listen on {addr} within 30 s (see {})", log.display())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to end.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops the member: SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}
