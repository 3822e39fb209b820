//! Shared by the end-to-end tests: a `skiff server` of their own in a temp
//! dir on a free port, and kubectl pointed at it.

#![allow(dead_code)]

pub mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `skiff server` this test started (and alone stops, by pid).
pub struct Server {
    child: Child,
    /// The admin kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
    /// The HTTPS port.
    pub port: u16,
    args: Vec<String>,
    /// The data dir (kept across restarts).
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Marks a server that runs its node agent (real containerd): without it,
/// test servers run the control plane only.
pub const WITH_AGENT: &str = "--with-agent";

/// Marks a server that runs its service proxy (it programs the host's
/// nftables, in a table of its own), cluster DNS and cloud controller:
/// without it, test servers run none of them.
pub const WITH_PROXY: &str = "--with-proxy";

/// Marks a server that runs its cloud controller (it programs nothing on
/// the host), without the proxy and DNS.
pub const WITH_CLOUD: &str = "--with-cloud-controller";

fn spawn(dir: &Path, port: u16, args: &[String]) -> Child {
    let _ = std::fs::remove_file(dir.join("admin.kubeconfig"));
    let with_agent = args.iter().any(|a| a == WITH_AGENT);
    let with_proxy = args.iter().any(|a| a == WITH_PROXY);
    let with_cloud = with_proxy || args.iter().any(|a| a == WITH_CLOUD);
    let disabled: Vec<&str> =
        [(!with_agent).then_some("agent"), (!with_proxy).then_some("proxy"), (!with_proxy).then_some("dns"), (!with_cloud).then_some("cloud-controller")]
            .into_iter()
            .flatten()
            .collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // Loopback unless the test gives an address (of a veth it made).
    let bind = if has("--bind-address") { vec![] } else { vec!["--bind-address", "127.0.0.1"] };
    // A test's own node needs no pod network to other nodes; a vxlan
    // device of its would be left in the host's network namespace.
    let network = if with_agent && !has("--flannel-backend") { vec!["--flannel-backend", "none"] } else { vec![] };
    let args: Vec<&String> = args.iter().filter(|a| *a != WITH_AGENT && *a != WITH_PROXY && *a != WITH_CLOUD).collect();
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(dir)
        .args(bind)
        .args(["--secure-port", &port.to_string()])
        .args(network)
        .args(if disabled.is_empty() { vec![] } else { vec!["--disable".to_string(), disabled.join(",")] })
        .args(args)
        .stderr(Stdio::null())
        .stdout(match std::env::var_os("SKIFF_TEST_SERVER_LOG") {
            // Debugging aid: the server's log appended to the file named.
            Some(f) => std::fs::OpenOptions::new().create(true).append(true).open(f).map(Stdio::from).unwrap_or_else(|_| Stdio::null()),
            None => Stdio::null(),
        })
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn skiff");
    let kubeconfig = dir.join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "skiff server did not write its kubeconfig");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Starts a server with extra flags.
pub fn start_with(args: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let child = spawn(dir.path(), port, &args);
    Server { child, kubeconfig: dir.path().join("admin.kubeconfig"), port, args, dir }
}

/// Starts a server with extra flags in a data dir the caller prepared.
pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
    let port = free_port();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let child = spawn(dir.path(), port, &args);
    Server { child, kubeconfig: dir.path().join("admin.kubeconfig"), port, args, dir }
}

/// Starts a server with default flags.
pub fn start() -> Server {
    start_with(&[])
}

impl Server {
    /// Kills the server (SIGKILL) and starts it again on the same data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.dir.path(), self.port, &self.args);
    }

    /// Kills the server (SIGKILL) and starts it again on the same data
    /// without its node agent: the node's containers are left as they are,
    /// and pods can be changed behind the node's back.
    pub fn restart_without_agent(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let args: Vec<String> = self.args.iter().filter(|a| *a != WITH_AGENT).cloned().collect();
        self.child = spawn(self.dir.path(), self.port, &args);
    }

    /// Stops the server (SIGTERM, then waits for it to exit), and leaves it
    /// stopped.
    pub fn stop(&mut self) {
        // Once it has exited its pid may be another process's: signal it
        // only while it is ours and running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        }
        let _ = self.child.wait();
    }

    /// Stops the server as an operator does (SIGTERM, then waits for it to
    /// exit) and starts it again on the same data.
    pub fn stop_and_start(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        self.child = spawn(self.dir.path(), self.port, &self.args);
    }

    /// Starts a stopped server again on the same data and port.
    pub fn start_again(&mut self) {
        self.child = spawn(self.dir.path(), self.port, &self.args);
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub fn kubectl_bin() -> &'static str {
    if Path::new("/usr/bin/kubectl").exists() {
        "/usr/bin/kubectl"
    } else {
        "kubectl"
    }
}

/// Runs kubectl against the server: (success, stdout, stderr).
pub fn kubectl(s: &Server, args: &[&str]) -> (bool, String, String) {
    kubectl_with(kubectl_bin(), s, args)
}

/// Runs a given kubectl binary against the server.
pub fn kubectl_with(bin: &str, s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin).arg("--kubeconfig").arg(&s.kubeconfig).args(args).output().expect("kubectl must be installed (CI installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes a manifest into `dir` and returns its path for `-f`.
pub fn manifest(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write manifest");
    path.to_string_lossy().into_owned()
}

/// Runs kubectl and insists it succeeds.
pub fn ok(s: &Server, args: &[&str]) -> String {
    let (success, out, err) = kubectl(s, args);
    assert!(success, "kubectl {args:?} failed: {err}");
    out
}

/// A running `skiff sim-nodes` this test started.
pub struct SimNodes {
    child: Child,
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimNodes {
    /// Kills the process (SIGKILL): its nodes stop renewing their leases.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `skiff sim-nodes` against the server and waits until its nodes
/// are Ready.
pub fn sim_nodes(s: &Server, count: usize, prefix: &str, extra: &[&str]) -> SimNodes {
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["sim-nodes", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(["--count", &count.to_string(), "--prefix", prefix])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sim-nodes");
    let nodes = SimNodes { child };
    wait_for(s, 30, |s| {
        let (_, out, _) =
            kubectl(s, &["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"]);
        out.lines().filter(|l| l.starts_with(prefix) && l.ends_with("True")).count() == count
    });
    nodes
}

/// Polls `check` every 100 ms until it holds; panics after `secs`.
pub fn wait_for(s: &Server, secs: u64, check: impl Fn(&Server) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check(s) {
        assert!(Instant::now() < deadline, "condition not reached in {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs one of the official Python client's scripts in `tests/python/`
/// with `args` and insists it exits 0 (each script asserts what it sees
/// and names what differed). Returns false, saying why, when python3 or
/// the `kubernetes` package is missing; under `CI=true` that fails.
pub fn python_client(script: &str, args: &[&str]) -> bool {
    python_client_via(&[], script, args)
}

/// [`python_client`] started through `launcher` (e.g. `nsenter --net=…`,
/// to run it in a pod's network namespace).
pub fn python_client_via(launcher: &[&str], script: &str, args: &[&str]) -> bool {
    let have = Command::new("python3").args(["-c", "import kubernetes"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and python3 with the `kubernetes` package (pip install kubernetes) is missing");
        eprintln!("skipping: needs python3 with the `kubernetes` package (pip install kubernetes)");
        return false;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = Command::new("timeout").arg("120").args(launcher).arg("python3").arg(&path).args(args).output().expect("run python3");
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Runs the `skiff` binary (a CLI command: snapshot, etcd, …) and insists
/// it succeeds; returns what it printed.
pub fn skiff(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff")).args(args).output().expect("run skiff");
    assert!(out.status.success(), "skiff {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An object's uid and resourceVersion (`what`: kubectl get's arguments).
pub fn uid_and_rv(s: &Server, what: &[&str]) -> (String, i64) {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "jsonpath={.metadata.uid} {.metadata.resourceVersion}"]);
    let out = ok(s, &args);
    let (uid, rv) = out.split_once(' ').expect("uid and resourceVersion");
    (uid.to_string(), rv.parse().expect("numeric resourceVersion"))
}

/// A namespaced CRD `PLURAL.example.com` (kind `KIND`, version v1) whose
/// objects keep any fields.
pub fn open_crd(plural: &str, singular: &str, kind: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: {plural}, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"
    )
}
