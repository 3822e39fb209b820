//! OCI image archives built locally: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) in one tar file, which `ctr images
//! import` loads. skiff builds its pause image this way (no registry is
//! needed to start a node), and tests build their busybox images with it.
//!
//! Written here rather than with umoci + skopeo because an image of one
//! uncompressed layer is a few dozen lines of tar and JSON, and the agent
//! should not need two more programs to start.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

/// One entry of the image's single layer.
#[derive(Debug, Clone)]
enum Entry {
    File { path: String, data: Vec<u8>, mode: u32 },
    Symlink { path: String, target: String },
    Dir { path: String, mode: u32 },
}

/// An image of one layer, written as an OCI archive by [`Image::write`].
#[derive(Debug, Clone)]
pub struct Image {
    name: String,
    entries: Vec<Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
}

/// The name of the pause image the agent builds and containerd's CRI uses
/// for every pod sandbox.
pub const PAUSE_IMAGE: &str = "skiff.local/pause:3.10";

fn digest(data: &[u8]) -> String {
    let sum = Sha256::digest(data);
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Image {
    /// An empty image named `name` (`registry/repo:tag`).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            entries: vec![Entry::Dir { path: "tmp".into(), mode: 0o1777 }, Entry::Dir { path: "etc".into(), mode: 0o755 }],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        }
    }

    /// Adds a regular file.
    pub fn file(mut self, path: &str, data: Vec<u8>, mode: u32) -> Self {
        self.entries.push(Entry::File { path: path.trim_start_matches('/').into(), data, mode });
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink { path: path.trim_start_matches('/').into(), target: target.into() });
        self
    }

    /// Sets the entrypoint.
    pub fn entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the default arguments.
    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An image with a static busybox at `/bin/busybox` and a link for
    /// each of its applets in `/bin` (`sh`, `sleep`, `httpd`, …), running
    /// `sh` by default.
    pub fn busybox(name: &str, busybox: &Path) -> std::io::Result<Self> {
        let data = std::fs::read(busybox)?;
        let list = std::process::Command::new(busybox).arg("--list").output()?;
        let mut img = Self::new(name).file("bin/busybox", data, 0o755).cmd(&["sh"]);
        for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
            img = img.symlink(&format!("bin/{applet}"), "busybox");
        }
        Ok(img)
    }

    /// The pause image: busybox sleeping forever as the sandbox's first process.
    pub fn pause(busybox: &Path) -> std::io::Result<Self> {
        Ok(Self::new(PAUSE_IMAGE).file("bin/busybox", std::fs::read(busybox)?, 0o755).entrypoint(&["/bin/busybox", "sleep", "2147483647"]))
    }

    fn layer(&self) -> std::io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match e {
                Entry::File { path, data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
                Entry::Dir { path, mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
            }
        }
        tar.into_inner()
    }

    /// Writes the image as an OCI archive at `out`.
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        let layer = self.layer()?;
        let layer_digest = digest(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": oci_arch(), "os": "linux",
            "config": {"Entrypoint": self.entrypoint, "Cmd": self.cmd, "Env": self.env, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "skiff"}],
        }))?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))?;
        let tag = self.name.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.contains('/')).unwrap_or("latest");
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
                "platform": {"architecture": oci_arch(), "os": "linux"},
                "annotations": {"io.containerd.image.name": self.name, "org.opencontainers.image.ref.name": tag}}],
        }))?;
        let tmp = out.with_extension("tmp");
        let mut tar = tar::Builder::new(std::fs::File::create(&tmp)?);
        let mut add = |path: String, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            tar.append_data(&mut h, path, data)
        };
        add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json".into(), &index)?;
        for blob in [&layer, &config, &manifest] {
            add(format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]), blob)?;
        }
        tar.into_inner()?.flush()?;
        std::fs::rename(tmp, out)
    }
}

/// Imports an OCI or Docker image archive into containerd's `k8s.io`
/// namespace (the one its CRI serves) with containerd's own `ctr`.
pub async fn import(containerd_socket: &Path, archive: &Path) -> Result<String, crate::CriError> {
    let ctr = crate::which("ctr").ok_or(crate::CriError::Missing { program: "ctr".into(), package: "containerd".into() })?;
    let out = tokio::process::Command::new(ctr)
        .arg("--address")
        .arg(containerd_socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(archive)
        .output()
        .await?;
    if !out.status.success() {
        return Err(crate::CriError::Containerd(format!("importing {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The image archives in `dir` (`*.tar`), for the air-gapped import at start.
pub fn archives_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "tar")).collect()).unwrap_or_default();
    v.sort();
    v
}
