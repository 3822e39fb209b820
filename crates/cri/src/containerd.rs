//! A containerd supervised by the agent: its own config, root, state and
//! socket under the agent's directory, so it never collides with a system
//! containerd or with another skiff on the machine; the CRI plugin on, with
//! the locally built pause image and skiff's CNI directories.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::{which, CriError, Runtime};

/// Where and how containerd runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// containerd's directory: `config.toml`, `root/`, `state/`, the socket and its log.
    pub dir: PathBuf,
    /// The CNI plugins' directory.
    pub cni_bin_dir: PathBuf,
    /// The CNI configuration directory skiff writes the pod network into.
    pub cni_conf_dir: PathBuf,
    /// The image every pod sandbox runs.
    pub sandbox_image: String,
    /// containerd's registry hosts directory (`<host[:port]>/hosts.toml`,
    /// containerd's own format): mirrors, CAs, plain-HTTP registries.
    pub registry_config_dir: PathBuf,
    /// Keep containers' OOM score adjustments at or above containerd's own:
    /// needed where root lacks CAP_SYS_RESOURCE (some VMs and sandboxes),
    /// or runc fails every sandbox trying to lower it. See [`can_lower_oom_score`].
    pub restrict_oom_score_adj: bool,
}

/// Whether this process may lower OOM score adjustments (it holds
/// CAP_SYS_RESOURCE), as containerd does for pod sandboxes (-998).
pub fn can_lower_oom_score() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Programs a node needs, each with the Debian package that has it.
const PREREQUISITES: &[(&str, &str)] = &[("containerd", "containerd"), ("runc", "runc"), ("ctr", "containerd")];

/// Where Debian's and upstream's CNI plugins live.
pub const CNI_BIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// The first CNI plugin directory that has the plugins skiff's pod network uses.
pub fn cni_bin_dir() -> Option<PathBuf> {
    CNI_BIN_DIRS.iter().map(PathBuf::from).find(|d| ["bridge", "host-local", "loopback", "portmap"].iter().all(|p| d.join(p).is_file()))
}

/// What is missing on this machine to run pods, as `program (package)`
/// phrases; empty when everything is there.
pub fn missing() -> Vec<String> {
    let mut v: Vec<String> = PREREQUISITES.iter().filter(|(p, _)| which(p).is_none()).map(|(p, pkg)| format!("{p} (Debian package {pkg})")).collect();
    if cni_bin_dir().is_none() {
        v.push("the CNI plugins bridge, host-local, loopback and portmap (Debian package containernetworking-plugins)".into());
    }
    v.dedup();
    v
}

impl Config {
    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's configuration (format version 2, containerd 1.6/1.7).
    pub fn render(&self) -> String {
        let d = |p: &Path| p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            r#"# Written by skiff; rewritten at every start.
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = {restrict}

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registries}"
"#,
            registries = d(&self.registry_config_dir),
            root = d(&self.dir.join("root")),
            state = d(&self.dir.join("state")),
            sock = d(&self.socket()),
            pause = self.sandbox_image,
            cni_bin = d(&self.cni_bin_dir),
            cni_conf = d(&self.cni_conf_dir),
            restrict = self.restrict_oom_score_adj,
        )
    }
}

/// Lets containerd pull from `host` (`name[:port]`) over plain HTTP, as
/// docker's `insecure-registries` does: writes `dir/<host>/hosts.toml`.
pub fn allow_plain_http(dir: &Path, host: &str) -> Result<(), CriError> {
    let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')) && !host.contains("..");
    if !valid {
        return Err(CriError::Containerd(format!("insecure registry {host:?}: want host[:port]")));
    }
    let d = dir.join(host);
    std::fs::create_dir_all(&d)?;
    std::fs::write(
        d.join("hosts.toml"),
        format!("# Written by skiff (--insecure-registry): plain HTTP.\nserver = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )?;
    Ok(())
}

/// A running containerd, child of this process. It is killed when this
/// process dies (parent-death signal), as k3s does; the containers it
/// started live on in their shims and are found again at the next start.
pub struct Containerd {
    child: tokio::process::Child,
    /// Its CRI socket.
    pub socket: PathBuf,
}

impl Containerd {
    /// Writes the config, starts containerd and waits until its CRI answers.
    pub async fn start(cfg: &Config) -> Result<(Self, Runtime), CriError> {
        let bin = which("containerd").ok_or(CriError::Missing { program: "containerd".into(), package: "containerd".into() })?;
        for d in [&cfg.dir, &cfg.cni_conf_dir] {
            std::fs::create_dir_all(d)?;
        }
        let config = cfg.dir.join("config.toml");
        std::fs::write(&config, cfg.render())?;
        let socket = cfg.socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(cfg.dir.join("containerd.log"))?;
        // setpriv sets the parent-death signal without unsafe pre_exec code:
        // if skiff is killed, containerd goes too rather than lingering.
        let mut cmd = match which("setpriv") {
            Some(setpriv) => {
                let mut c = tokio::process::Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&bin);
                c
            }
            None => tokio::process::Command::new(&bin),
        };
        cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let tail = std::fs::read_to_string(cfg.dir.join("containerd.log")).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(CriError::Containerd(format!("exited with {status}: {}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))));
            }
            if socket.exists() {
                if let Ok(rt) = Runtime::connect(&socket).await {
                    return Ok((Self { child, socket }, rt));
                }
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(CriError::Containerd(format!("its socket {} did not answer within 30 s", socket.display())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until containerd exits (it should not).
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops containerd (its shims and containers keep running).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_everything_into_the_agent_directory() {
        let cfg = Config {
            dir: "/var/lib/skiff/agent/containerd".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            cni_conf_dir: "/var/lib/skiff/agent/etc/cni/net.d".into(),
            sandbox_image: "skiff.local/pause:3.10".into(),
            registry_config_dir: "/var/lib/skiff/agent/certs.d".into(),
            restrict_oom_score_adj: true,
        };
        let text = cfg.render();
        assert!(text.contains(r#"address = "/var/lib/skiff/agent/containerd/containerd.sock""#), "{text}");
        assert!(text.contains(r#"root = "/var/lib/skiff/agent/containerd/root""#));
        assert!(text.contains(r#"sandbox_image = "skiff.local/pause:3.10""#));
        assert!(text.contains(r#"conf_dir = "/var/lib/skiff/agent/etc/cni/net.d""#));
        assert!(text.contains(r#"config_path = "/var/lib/skiff/agent/certs.d""#));
        assert!(text.contains("restrict_oom_score_adj = true"));
    }
}
