//! End to end: `skiff server` in a temp dir on a free port, driven by the
//! real kubectl through the admin kubeconfig the server writes.

mod common;

use common::{kubectl, kubectl_bin, manifest, ok, start};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    // The root CA publisher gives every namespace its kube-root-ca.crt
    // within a second; it has no tier label.
    common::wait_for(&s, 5, |s| kubectl(s, &["get", "cm", "kube-root-ca.crt", "-n", "demo"]).0);
    let ca = ok(&s, &["get", "cm", "kube-root-ca.crt", "-n", "demo", "-o", "jsonpath={.data.ca\\.crt}"]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(ok(&s, &["get", "cm", "-n", "demo", "-l", "tier!=web", "-o", "name"]).trim(), "configmap/kube-root-ca.crt");
    ok(&s, &["delete", "cm", "kube-root-ca.crt", "-n", "demo"]);
    common::wait_for(&s, 5, |s| kubectl(s, &["get", "cm", "kube-root-ca.crt", "-n", "demo"]).0);
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
    let manifest = |image: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: c\n        image: {image}\n")
    };
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
    assert!(!ok(&s, &["get", "cm", "-o", "name"]).contains("configmap/cfg"));
    // --validate=warn: created, with the server's warning printed.
    let (success, out, err) = kubectl(&s, &["create", "--validate=warn", "-f", f]);
    assert!(success, "{err}");
    assert!(out.contains("configmap/cfg created"), "{out}");
    assert!(err.contains(r#"unknown field "metadata.bogus""#), "{err}");
}

#[test]
fn scale_and_status_subresources() {
    // The API alone: no deployment controller writing status meanwhile.
    let s = common::start_with(&["--disable", "scheduler,controllers"]);
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
    let b = &manifest(
        &dir,
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"apiVersion":"v1","kind":"Node","name":"node-a"}}"#,
    );
    ok(&s, &["create", "--raw", "/api/v1/namespaces/default/pods/p/binding", "-f", b]);
    assert_eq!(ok(&s, &["get", "pod", "p", "-o", "jsonpath={.spec.nodeName} {.status.conditions[?(@.type==\"PodScheduled\")].status}"]), "node-a True");
    // A second binding is a conflict, and the pod stays where it is.
    let (success, _, err) = kubectl(&s, &["create", "--raw", "/api/v1/namespaces/default/pods/p/binding", "-f", b]);
    assert!(!success && err.contains("already assigned"), "{err}");
    assert_eq!(ok(&s, &["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]), "node-a");
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox}]
";

#[test]
fn server_side_apply_conflicts_until_forced() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = manifest(&dir, "d.yaml", DEPLOY);
    assert!(ok(&s, &["apply", "--server-side", "-f", &f]).contains("serverside-applied"));
    ok(&s, &["scale", "deploy/web", "--replicas=5"]);
    let (success, _, err) = kubectl(&s, &["apply", "--server-side", "-f", &f]);
    assert!(!success, "a field another manager owns conflicts");
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    assert_eq!(ok(&s, &["get", "deploy/web", "-o", "jsonpath={.spec.replicas}"]), "5", "nothing written on conflict");
    ok(&s, &["apply", "--server-side", "--force-conflicts", "-f", &f]);
    assert_eq!(ok(&s, &["get", "deploy/web", "-o", "jsonpath={.spec.replicas}"]), "2");
    let managers = ok(&s, &["get", "deploy/web", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].operation}"]);
    assert!(managers.contains("Apply"), "{managers}");
}

#[test]
fn discovery_explain_describe_and_annotate() {
    let s = start();
    let res = ok(&s, &["api-resources"]);
    for line in ["deployments", "deploy", "apps/v1", "statefulsets", "sts", "endpointslices", "leases"] {
        assert!(res.contains(line), "api-resources lists {line}: {res}");
    }
    // No RBAC yet: an authenticated user may do everything, and says so.
    assert_eq!(ok(&s, &["auth", "can-i", "create", "pods"]).trim(), "yes");
    let explain = ok(&s, &["explain", "deployment.spec.strategy"]);
    assert!(explain.contains("rollingUpdate"), "{explain}");
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&s, &["apply", "-f", &manifest(&dir, "d.yaml", DEPLOY)]);
    ok(&s, &["annotate", "deploy/web", "team=storage"]);
    let described = ok(&s, &["describe", "deployment", "web"]);
    assert!(described.contains("team: storage") || described.contains("team=storage"), "{described}");
    assert!(described.contains("Replicas:") && described.contains("2 desired"), "{described}");
    let all = ok(&s, &["get", "all"]);
    assert!(all.contains("deployment.apps/web"), "get all uses categories: {all}");
    ok(&s, &["create", "namespace", "other"]);
    ok(&s, &["create", "configmap", "cfg", "-n", "other", "--from-literal=a=b"]);
    let everywhere = ok(&s, &["get", "cm", "-A"]);
    assert!(everywhere.contains("other") && everywhere.contains("cfg"), "{everywhere}");
    let by_field = ok(&s, &["get", "ns", "--field-selector", "metadata.name=other", "-o", "name"]);
    assert_eq!(by_field.trim(), "namespace/other");
    // `--sort-by` asks for Table rows carrying whole objects
    // (`includeObject=Object`) and sorts on a field outside the metadata.
    ok(&s, &["create", "configmap", "second", "-n", "other", "--from-literal=rank=2"]);
    ok(&s, &["create", "configmap", "first", "-n", "other", "--from-literal=rank=1"]);
    ok(&s, &["label", "cm", "-n", "other", "first", "second", "ranked=yes"]);
    let sorted = ok(&s, &["get", "cm", "-n", "other", "-l", "ranked=yes", "--sort-by=.data.rank"]);
    let names: Vec<&str> = sorted.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["first", "second"], "{sorted}");
}

#[test]
fn every_kubectl_version_discovers_and_lists() {
    let s = start();
    for minor in 27..=33 {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}");
        if !std::path::Path::new(&bin).exists() {
            assert!(std::env::var("CI").is_err(), "{bin} is missing under CI");
            continue;
        }
        let (success, out, err) = common::kubectl_with(&bin, &s, &["get", "deploy,sts,cm,ns", "-A"]);
        assert!(success, "kubectl 1.{minor}: {err}");
        assert!(out.contains("kube-system"), "kubectl 1.{minor}: {out}");
        let (success, out, err) = common::kubectl_with(&bin, &s, &["api-resources", "--api-group=apps"]);
        assert!(success && out.contains("deployments"), "kubectl 1.{minor} api-resources: {out} {err}");
    }
}

#[test]
fn bearer_tokens_authenticate_and_metrics_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,alice,1001,\"dev,ops\"\n").expect("tokens");
    let s = common::start_with(&["--token-auth-file", tokens.to_str().expect("utf-8 path")]);
    let server = format!("https://127.0.0.1:{}", s.port);
    let ca = s.dir.path().join("pki/ca.crt");
    let run = |token: &str, args: &[&str]| {
        let out = Command::new(kubectl_bin())
            .args(["--server", &server, "--certificate-authority", ca.to_str().expect("utf-8"), "--token", token])
            .args(args)
            .output()
            .expect("kubectl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Authenticated is not authorized: RBAC refuses, in kube's words,
    // until a binding names one of alice's groups.
    let (success, _, err) = run("s3cret", &["get", "ns", "-o", "name"]);
    assert!(
        !success && err.contains("namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    let (success, _, err) = run("wrong", &["get", "ns"]);
    assert!(!success && err.contains("Unauthorized"), "{err}");
    ok(&s, &["create", "clusterrolebinding", "ops-view", "--clusterrole=view", "--group=ops"]);
    ok(&s, &["create", "clusterrolebinding", "ops-metrics", "--clusterrole=system:monitoring", "--group=ops"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let (success, out, err) = run("s3cret", &["get", "ns", "-o", "name"]);
        if success {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "the binding never took effect: {err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(out.contains("namespace/default"), "{out}");
    let (success, metrics, err) = run("s3cret", &["get", "--raw", "/metrics"]);
    assert!(success, "{err}");
    assert!(metrics.contains("apiserver_request_total{verb=\"list\",resource=\"namespaces\",code=\"200\"}"), "{metrics}");
}

#[test]
fn delete_collection_and_namespace_termination() {
    // The API alone: without the namespace controller a deleted namespace
    // stays Terminating, so its refusal of new content can be observed.
    let s = common::start_with(&["--disable", "scheduler,controllers"]);
    ok(&s, &["create", "configmap", "one", "--from-literal=a=b"]);
    ok(&s, &["create", "configmap", "two", "--from-literal=a=b"]);
    ok(&s, &["label", "cm", "one", "two", "tier=x"]);
    let out = ok(&s, &["get", "--raw", "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dx"]);
    assert!(out.contains("\"one\"") && out.contains("\"two\""));
    // kubectl has no deletecollection verb; the raw API does.
    let (success, _, err) = kubectl(&s, &["delete", "--raw", "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dx"]);
    assert!(success, "{err}");
    assert_eq!(ok(&s, &["get", "cm", "-l", "tier=x", "-o", "name"]).trim(), "");
    ok(&s, &["create", "namespace", "doomed"]);
    ok(&s, &["delete", "namespace", "doomed", "--wait=false"]);
    assert_eq!(ok(&s, &["get", "ns", "doomed", "-o", "jsonpath={.status.phase}"]), "Terminating");
    let (success, _, err) = kubectl(&s, &["create", "configmap", "late", "-n", "doomed"]);
    assert!(!success && err.contains("being terminated"), "{err}");
    // The namespaces every cluster needs cannot be deleted (a fuzzer did).
    for ns in ["default", "kube-system", "kube-public"] {
        let (success, _, err) = kubectl(&s, &["delete", "namespace", ns, "--wait=false"]);
        assert!(!success && err.contains(&format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")), "{err}");
        assert_eq!(ok(&s, &["get", "ns", ns, "-o", "jsonpath={.status.phase}"]), "Active");
    }
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = start();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(s.dir.path())
        .args(["--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("second server");
    assert!(!out.status.success(), "two writers on one database must not both run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    // The first keeps serving.
    ok(&s, &["get", "namespaces", "default"]);
}

#[test]
fn a_server_stopped_with_sigterm_hands_its_leader_leases_over_at_once() {
    let mut s = common::start();
    let holder = |s: &common::Server, lease: &str| kubectl(s, &["get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.holderIdentity}"]).1;
    common::wait_for(&s, 10, |s| !holder(s, "kube-scheduler").is_empty() && !holder(s, "kube-controller-manager").is_empty());
    let before = (holder(&s, "kube-scheduler"), holder(&s, "kube-controller-manager"));
    s.stop_and_start();
    // Leases last 15 s and are renewed every 2 s: without the stopped server
    // giving them up, the takeover needs at least 13 s.
    common::wait_for(&s, 10, |s| {
        let now = (holder(s, "kube-scheduler"), holder(s, "kube-controller-manager"));
        !now.0.is_empty() && !now.1.is_empty() && now.0 != before.0 && now.1 != before.1
    });
}

/// kubectl 1.27 and 1.28 read `/openapi/v2` (gnostic protobuf) to validate
/// `apply`, to compute its strategic merge patch and for `explain`.
#[test]
fn kubectl_1_27_and_1_28_apply_explain_and_diff_with_openapi_v2() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = |value: &str, replicas: u32| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: {value}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  \
             template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n        ports: [{{containerPort: 80}}]\n"
        )
    };
    for minor in [27, 28] {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}");
        if !std::path::Path::new(&bin).exists() {
            assert!(std::env::var("CI").is_err(), "{bin} is missing under CI");
            continue;
        }
        let run = |args: &[&str]| {
            let (success, out, err) = common::kubectl_with(&bin, &s, args);
            assert!(success, "kubectl 1.{minor} {args:?}: {out} {err}");
            out
        };
        let _ = common::kubectl_with(&bin, &s, &["delete", "cm/applied", "deploy/web", "--ignore-not-found"]);
        let f = common::manifest(&dir, &format!("v{minor}.yaml"), &doc("one", 2));
        let out = run(&["apply", "-f", &f]);
        assert!(out.contains("configmap/applied created") && out.contains("deployment.apps/web created"), "1.{minor}: {out}");
        let out = run(&["apply", "-f", &f]);
        assert!(out.contains("configmap/applied unchanged") && out.contains("deployment.apps/web unchanged"), "1.{minor}: {out}");
        let f = common::manifest(&dir, &format!("v{minor}.yaml"), &doc("two", 3));
        let out = run(&["apply", "-f", &f]);
        assert!(out.contains("configmap/applied configured") && out.contains("deployment.apps/web configured"), "1.{minor}: {out}");
        assert_eq!(run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
        let out = run(&["explain", "deployment.spec.template"]);
        assert!(out.contains("PodTemplateSpec"), "1.{minor} explain: {out}");
        // diff exits 1 when it finds a difference.
        let f = common::manifest(&dir, &format!("v{minor}.yaml"), &doc("three", 3));
        let (_, out, err) = common::kubectl_with(&bin, &s, &["diff", "-f", &f]);
        assert!(out.contains("-  a: two") && out.contains("+  a: three"), "1.{minor} diff: {out} {err}");
    }
}

/// kubectl 1.32 and 1.33 send `create <generator>` bodies (and deletes'
/// DeleteOptions) as protobuf, and do not fall back to JSON.
#[test]
fn kubectl_generators_send_protobuf_and_every_served_group_applies() {
    let s = start();
    for minor in [32, 33] {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}");
        if !std::path::Path::new(&bin).exists() {
            assert!(std::env::var("CI").is_err(), "{bin} is missing under CI");
            continue;
        }
        let ns = format!("gen{minor}");
        let run = |args: &[&str]| {
            let mut all = vec!["-n", ns.as_str()];
            all.extend_from_slice(args);
            let (success, out, err) = common::kubectl_with(&bin, &s, &all);
            assert!(success, "kubectl 1.{minor} {args:?}: {out} {err}");
            out
        };
        let (success, _, err) = common::kubectl_with(&bin, &s, &["create", "namespace", &ns, "-v=8"]);
        assert!(success, "{err}");
        assert!(err.contains("application/vnd.kubernetes.protobuf"), "kubectl 1.{minor} sends protobuf: {err}");
        run(&["create", "configmap", "c", "--from-literal=a=b"]);
        run(&["create", "secret", "generic", "s", "--from-literal=a=b"]);
        run(&["create", "secret", "docker-registry", "r", "--docker-server=registry.local", "--docker-username=u", "--docker-password=p"]);
        run(&["create", "deployment", "d", "--image=busybox", "--replicas=0", "--port=80"]);
        run(&["create", "job", "j", "--image=busybox", "--", "true"]);
        run(&["create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"]);
        run(&["create", "service", "clusterip", "ci", "--tcp=80:8080"]);
        run(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
        run(&["create", "service", "loadbalancer", "lb", "--tcp=80:8080"]);
        run(&["create", "service", "externalname", "en", "--external-name=example.com"]);
        run(&["create", "quota", "q", "--hard=pods=5"]);
        run(&["create", "pdb", "pdb", "--selector=app=x", "--min-available=1"]);
        run(&["create", "serviceaccount", "sa"]);
        assert_eq!(run(&["get", "deploy", "d", "-o", "jsonpath={.spec.replicas}"]), "0", "replicas: 0 survives protobuf");
        assert_eq!(run(&["get", "secret", "s", "-o", "jsonpath={.data.a}"]), "Yg==");
        assert_eq!(run(&["get", "svc", "en", "-o", "jsonpath={.spec.externalName}"]), "example.com");
        assert_eq!(run(&["get", "svc", "np", "-o", "jsonpath={.spec.externalTrafficPolicy}"]), "Cluster");
        run(&["delete", "configmap", "c"]);
        let (found, _, _) = common::kubectl_with(&bin, &s, &["get", "configmap", "c", "-n", &ns]);
        assert!(!found, "deleted");
    }
    // One file across every served group.
    let dir = tempfile::tempdir().expect("tempdir");
    let f = manifest(
        &dir,
        "groups.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: g}\ndata: {a: b}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: g}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: g}}\n  template:\n    metadata: {labels: {app: g}}\n    spec: {containers: [{name: c, image: busybox}]}\n---\n\
         apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: g}\nspec:\n  schedule: '0 0 * * *'\n  suspend: true\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}\n---\n\
         apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: g}\nspec: {holderIdentity: me}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: g}\naddressType: IPv4\nendpoints: [{addresses: [10.1.2.3]}]\n---\n\
         apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: g}\neventTime: '2024-01-01T00:00:00.000000Z'\nreportingController: me\nreportingInstance: me\naction: A\nreason: R\ntype: Normal\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: g}\nprovisioner: example.com/none\n---\n\
         apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: g}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: g}}}\n",
    );
    for round in ["created", "unchanged"] {
        let out = ok(&s, &["apply", "-f", &f]);
        assert_eq!(out.lines().filter(|l| l.ends_with(round)).count(), 8, "{round}: {out}");
    }
}

/// Priority admission: a pod's PriorityClass becomes its priority; a class
/// that does not exist is refused, as kube-apiserver refuses it.
#[test]
fn priority_classes_set_pod_priority_and_unknown_ones_are_refused() {
    let s = common::start_with(&["--disable", "scheduler,controllers"]);
    let classes = ok(&s, &["get", "priorityclasses", "-o", "name"]);
    assert!(classes.contains("system-node-critical") && classes.contains("system-cluster-critical"), "{classes}");
    let dir = tempfile::tempdir().expect("tempdir");
    let f = manifest(&dir, "pc.yaml", "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\npreemptionPolicy: Never\n");
    ok(&s, &["apply", "-f", &f]);
    let table = ok(&s, &["get", "pc", "high"]);
    assert!(table.contains("VALUE") && table.contains("1000"), "{table}");
    let pod = |name: &str, class: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: {class}\n  containers: [{{name: c, image: busybox}}]\n");
    ok(&s, &["apply", "-f", &manifest(&dir, "p1.yaml", &pod("p1", "high"))]);
    assert_eq!(ok(&s, &["get", "pod", "p1", "-o", "jsonpath={.spec.priority} {.spec.preemptionPolicy}"]), "1000 Never");
    let (success, _, err) = kubectl(&s, &["apply", "-f", &manifest(&dir, "p2.yaml", &pod("p2", "missing"))]);
    assert!(!success && err.contains("no PriorityClass with name missing was found"), "{err}");
    // Value is immutable.
    let (success, _, err) = kubectl(&s, &["patch", "pc", "high", "--type=merge", "-p", r#"{"value":5}"#]);
    assert!(!success && err.contains("value"), "{err}");
    // `kubectl get cs`: the store answers; no scheduler runs here, so its
    // leader Lease is missing.
    let (success, cs, err) = kubectl(&s, &["get", "cs"]);
    assert!(success && err.contains("v1 ComponentStatus is deprecated in v1.19+"), "{cs} {err}");
    let row = |name: &str| cs.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(row("etcd-0").contains("Healthy") && !row("etcd-0").contains("Unhealthy"), "{cs}");
    assert!(row("scheduler").contains("Unhealthy") && row("scheduler").contains("kube-scheduler"), "{cs}");
    // PodTemplates are served, with kube's table.
    let f = manifest(&dir, "pt.yaml", "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: t}\ntemplate:\n  metadata: {labels: {a: b}}\n  spec: {containers: [{name: c, image: busybox}]}\n");
    ok(&s, &["apply", "-f", &f]);
    let table = ok(&s, &["get", "podtemplates"]);
    assert!(table.contains("CONTAINERS") && table.contains("busybox") && table.contains("a=b"), "{table}");
}

/// networking.k8s.io, node.k8s.io, autoscaling/v2 and the CSI objects of
/// storage.k8s.io: applied with kubectl, defaulted, printed with kube's
/// columns, and refused with kube's messages; an Ingress without a class
/// gets the default IngressClass.
#[test]
fn ingresses_network_policies_runtime_classes_hpas_and_csi_objects_apply_print_and_validate() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = manifest(
        &dir,
        "more.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}\nspec: {controller: k8s.io/ingress-nginx}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n  tls: [{hosts: [a.example.com], secretName: tls}]\n  rules:\n  - host: a.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n  - host: b.example.com\n    http: {paths: [{path: /api, pathType: Exact, backend: {service: {name: api, port: {name: http}}}}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  egress: [{ports: [{port: 53, protocol: UDP}]}]\n---\n\
         apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: runc}\nhandler: runc\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.example.com}\nspec: {}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    );
    let out = ok(&s, &["apply", "-f", &f]);
    assert_eq!(out.lines().filter(|l| l.ends_with("created")).count(), 6, "{out}");
    let again = ok(&s, &["apply", "-f", &f]);
    assert_eq!(again.lines().filter(|l| l.ends_with("unchanged")).count(), 6, "{again}");
    let ing = ok(&s, &["get", "ingress", "web"]);
    assert!(ing.starts_with("NAME   CLASS   HOSTS                         ADDRESS   PORTS     AGE"), "{ing}");
    assert!(ing.contains("web    nginx   a.example.com,b.example.com             80, 443"), "the default class, both hosts, TLS ports: {ing}");
    assert_eq!(ok(&s, &["get", "networkpolicy", "db", "-o", "jsonpath={.spec.policyTypes}"]), r#"["Ingress","Egress"]"#);
    assert!(ok(&s, &["get", "netpol"]).contains("db     app=db"), "POD-SELECTOR");
    assert!(ok(&s, &["get", "runtimeclass"]).contains("runc   runc"), "HANDLER");
    assert_eq!(ok(&s, &["get", "csidriver", "csi.example.com", "-o", "jsonpath={.spec.attachRequired} {.spec.volumeLifecycleModes}"]), r#"true ["Persistent"]"#);
    assert!(ok(&s, &["get", "ingressclass"]).contains("nginx   k8s.io/ingress-nginx   <none>"), "CONTROLLER, PARAMETERS");

    // kubectl autoscale makes an autoscaling/v2 HPA; TARGETS as kubectl prints it.
    ok(&s, &["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=60"]);
    let hpa = ok(&s, &["get", "hpa", "web"]);
    assert!(hpa.contains("Deployment/web   cpu: <unknown>/60%   2         5         0"), "{hpa}");
    assert!(ok(&s, &["get", "all"]).contains("horizontalpodautoscaler.autoscaling/web"), "hpa is in `all`");

    // Refusals, worded as kube-apiserver's.
    let bad = manifest(
        &dir,
        "bad.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules: [{host: 10.0.0.1, http: {paths: [{path: api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n",
    );
    let (created, _, err) = kubectl(&s, &["create", "-f", &bad]);
    assert!(!created, "{err}");
    assert!(err.contains(r#"spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address"#), "{err}");
    assert!(err.contains(r#"spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path"#), "{err}");
    let worse = manifest(
        &dir,
        "worse.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: worse}\nspec: {scaleTargetRef: {kind: Deployment, name: web}, minReplicas: 4, maxReplicas: 3}\n",
    );
    let (_, _, err) = kubectl(&s, &["create", "-f", &worse]);
    assert!(err.contains("spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`"), "{err}");
    // autoscaling/v1: stored as v2, each read in the version asked for.
    let v1 = manifest(
        &dir,
        "v1.yaml",
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: old}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, maxReplicas: 4, targetCPUUtilizationPercentage: 60}\n",
    );
    ok(&s, &["apply", "-f", &v1]);
    let as_v2 = ok(&s, &["get", "horizontalpodautoscalers.v2.autoscaling", "old", "-o", "jsonpath={.spec.minReplicas} {.spec.metrics[0].resource.target.averageUtilization}"]);
    assert_eq!(as_v2, "1 60", "defaulted and converted");
    let as_v1 = ok(&s, &["get", "horizontalpodautoscalers.v1.autoscaling", "old", "-o", "jsonpath={.apiVersion} {.spec.targetCPUUtilizationPercentage}"]);
    assert_eq!(as_v1, "autoscaling/v1 60");
    ok(&s, &["patch", "horizontalpodautoscalers.v1.autoscaling", "old", "--type=merge", "-p", r#"{"spec":{"targetCPUUtilizationPercentage":75}}"#]);
    let row = ok(&s, &["get", "hpa", "old", "--no-headers"]);
    assert!(row.contains("cpu: <unknown>/75%"), "{row}");
    let (_, _, err) = kubectl(&s, &["patch", "horizontalpodautoscalers.v1.autoscaling", "old", "--type=merge", "-p", r#"{"spec":{"maxReplicas":0}}"#]);
    assert!(err.contains("spec.maxReplicas: Invalid value: 0: must be greater than 0"), "{err}");
    let (_, _, err) = kubectl(&s, &["patch", "ingressclass", "nginx", "--type=merge", "-p", r#"{"spec":{"controller":"example.com/other"}}"#]);
    assert!(err.contains("spec.controller: Invalid value") && err.contains("field is immutable"), "{err}");
    assert!(!kubectl(&s, &["get", "ingress", "bad"]).0, "nothing stored");
}
