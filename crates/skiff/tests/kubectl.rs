//! End to end: `skiff server` in a temp dir on a free port, driven by the
//! real kubectl through the admin kubeconfig the server writes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // End only the process this test started, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(["--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn skiff");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "skiff server did not write its kubeconfig");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, kubeconfig, _dir: dir }
}

fn kubectl_bin() -> &'static str {
    if Path::new("/usr/bin/kubectl").exists() {
        "/usr/bin/kubectl"
    } else {
        "kubectl"
    }
}

fn kubectl(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl must be installed (CI installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes a manifest into `dir` and returns its path for `-f`.
fn manifest(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write manifest");
    path.to_string_lossy().into_owned()
}

fn ok(s: &Server, args: &[&str]) -> String {
    let (success, out, err) = kubectl(s, args);
    assert!(success, "kubectl {args:?} failed: {err}");
    out
}

#[test]
fn kubectl_creates_gets_and_deletes() {
    let s = start();
    let ns = ok(&s, &["get", "namespaces", "-o", "name"]);
    for want in ["namespace/default", "namespace/kube-system"] {
        assert!(ns.contains(want), "{ns}");
    }
    assert_eq!(ok(&s, &["create", "namespace", "demo"]).trim(), "namespace/demo created");
    ok(&s, &["create", "configmap", "cfg", "-n", "demo", "--from-literal=greeting=hello"]);
    let table = ok(&s, &["get", "configmaps", "-n", "demo"]);
    assert!(table.starts_with("NAME") && table.contains("DATA") && table.contains("cfg"), "{table}");
    assert_eq!(ok(&s, &["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.greeting}"]), "hello");
    // Merge patch and strategic merge patch through kubectl.
    ok(&s, &["patch", "cm", "cfg", "-n", "demo", "--type=merge", "-p", r#"{"data":{"greeting":"hi"}}"#]);
    assert_eq!(ok(&s, &["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.greeting}"]), "hi");
    ok(&s, &["label", "cm", "cfg", "-n", "demo", "tier=web"]);
    assert_eq!(ok(&s, &["get", "cm", "-n", "demo", "-l", "tier=web", "-o", "name"]).trim(), "configmap/cfg");
    assert_eq!(ok(&s, &["get", "cm", "-n", "demo", "-l", "tier!=web", "-o", "name"]).trim(), "");
    // A pod is defaulted like Kubernetes does it.
    ok(&s, &["run", "p", "--image=busybox:1.36"]);
    let pod: serde_json::Value = serde_json::from_str(&ok(&s, &["get", "pod", "p", "-o", "json"])).expect("json");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["status"]["phase"], "Pending");
    let wide = ok(&s, &["get", "pods", "-o", "wide"]);
    assert!(wide.contains("NODE") && wide.contains("Pending"), "{wide}");
    ok(&s, &["delete", "pod", "p"]);
    let (found, _, err) = kubectl(&s, &["get", "pod", "p"]);
    assert!(!found && err.contains(r#"pods "p" not found"#), "{err}");
    ok(&s, &["delete", "cm", "cfg", "-n", "demo"]);
}

#[test]
fn bad_input_gets_a_status_and_nothing_is_stored() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = manifest(&dir, "bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: a\n");
    let (success, _, err) = kubectl(&s, &["create", "-f", &bad]);
    assert!(!success);
    assert!(err.contains(r#"Pod "Bad_Name" is invalid"#) && err.contains("spec.containers[0].image: Required value"), "{err}");
    assert_eq!(ok(&s, &["get", "pods", "-o", "name"]).trim(), "");
    let (success, _, err) = kubectl(&s, &["create", "configmap", "x", "-n", "nope", "--from-literal=a=b"]);
    assert!(!success && err.contains(r#"namespaces "nope" not found"#), "{err}");
    // The server keeps serving.
    ok(&s, &["get", "ns", "default"]);
}

#[test]
fn kubectl_apply_creates_then_is_unchanged_then_configures() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deploy.yaml");
    let manifest = |image: &str| format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: c\n        image: {image}\n");
    let f = file.to_str().expect("utf8");
    std::fs::write(&file, manifest("nginx:1.25")).expect("write");
    assert_eq!(ok(&s, &["apply", "-f", f]).trim(), "deployment.apps/web created");
    assert_eq!(ok(&s, &["apply", "-f", f]).trim(), "deployment.apps/web unchanged");
    std::fs::write(&file, manifest("nginx:1.26")).expect("write");
    assert_eq!(ok(&s, &["apply", "-f", f]).trim(), "deployment.apps/web configured");
    assert_eq!(
        ok(&s, &["get", "deploy", "web", "-o", "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].image} {.spec.strategy.type}"]),
        "2 nginx:1.26 RollingUpdate"
    );
    let table = ok(&s, &["get", "deploy"]);
    assert!(table.contains("READY") && table.contains("UP-TO-DATE") && table.contains("web"), "{table}");
}

#[test]
fn unknown_fields_are_refused_under_strict_and_warned_otherwise() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = &manifest(&dir, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  bogus: 1\ndata:\n  a: b\n");
    // kubectl's default --validate=strict asks the server for Strict.
    let (success, _, err) = kubectl(&s, &["create", "-f", f]);
    assert!(!success && err.contains(r#"strict decoding error: unknown field "metadata.bogus""#), "{err}");
    assert_eq!(ok(&s, &["get", "cm", "-o", "name"]).trim(), "");
    // --validate=warn: created, with the server's warning printed.
    let (success, out, err) = kubectl(&s, &["create", "--validate=warn", "-f", f]);
    assert!(success, "{err}");
    assert!(out.contains("configmap/cfg created"), "{out}");
    assert!(err.contains(r#"unknown field "metadata.bogus""#), "{err}");
}

#[test]
fn scale_and_status_subresources() {
    let s = start();
    ok(&s, &["create", "deployment", "web", "--image=nginx:1.25", "--replicas=2"]);
    assert_eq!(ok(&s, &["scale", "deployment", "web", "--replicas=5"]).trim(), "deployment.apps/web scaled");
    assert_eq!(ok(&s, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]), "5 2");
    // A status write changes status only; a main-resource write never changes status.
    ok(&s, &["patch", "deploy", "web", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":5,"readyReplicas":3},"spec":{"replicas":1}}"#]);
    assert_eq!(ok(&s, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.status.readyReplicas}"]), "5 3");
    ok(&s, &["patch", "deploy", "web", "--type=merge", "-p", r#"{"status":{"readyReplicas":0}}"#]);
    assert_eq!(ok(&s, &["get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}"]), "3");
    let (success, _, err) = kubectl(&s, &["scale", "deployment", "web", "--replicas=-1"]);
    assert!(!success, "negative replicas must be refused: {err}");
}

#[test]
fn kubectl_get_watch_streams_changes() {
    let s = start();
    ok(&s, &["create", "configmap", "a", "--from-literal=k=1"]);
    let mut w = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["get", "configmaps", "-w", "--request-timeout=20s", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl -w");
    std::thread::sleep(Duration::from_millis(500));
    ok(&s, &["create", "configmap", "b", "--from-literal=k=1"]);
    ok(&s, &["delete", "configmap", "a"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = w.kill();
    let out = w.wait_with_output().expect("output");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    // The initial list, then the create and the delete as they happened.
    assert!(lines.len() >= 3, "{lines:?}");
    assert_eq!(lines[0], "configmap/a");
    assert!(lines.contains(&"configmap/b".to_string()), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| *l == "configmap/a").count(), 2, "{lines:?}");
}

#[test]
fn pod_binding_assigns_a_node_once() {
    let s = start();
    ok(&s, &["run", "p", "--image=busybox:1.36"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let b = &manifest(&dir, "binding.json", r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"apiVersion":"v1","kind":"Node","name":"node-a"}}"#);
    ok(&s, &["create", "--raw", "/api/v1/namespaces/default/pods/p/binding", "-f", b]);
    assert_eq!(
        ok(&s, &["get", "pod", "p", "-o", "jsonpath={.spec.nodeName} {.status.conditions[?(@.type==\"PodScheduled\")].status}"]),
        "node-a True"
    );
    // A second binding is a conflict, and the pod stays where it is.
    let (success, _, err) = kubectl(&s, &["create", "--raw", "/api/v1/namespaces/default/pods/p/binding", "-f", b]);
    assert!(!success && err.contains("already assigned"), "{err}");
    assert_eq!(ok(&s, &["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]), "node-a");
}
