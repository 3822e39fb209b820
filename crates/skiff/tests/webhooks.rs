//! End to end: admission webhooks and ValidatingAdmissionPolicies with the
//! real kubectl. The webhook server is the test's own (Python, HTTPS with a
//! certificate from a CA the test makes), reached by URL and through a
//! Service; policies are CEL with params.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectl, manifest, ok};

/// The test's webhook server, stopped by pid when dropped.
struct HookServer {
    child: Child,
    port: u16,
    ca_bundle: String,
}

impl Drop for HookServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_ready() -> bool {
    let have = Command::new("python3").args(["-c", "import ssl, http.server"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and python3 is missing");
        eprintln!("skipping: needs python3");
    }
    have
}

/// Starts one of the test's HTTPS servers (`tests/python/SCRIPT`) with a
/// serving certificate for `names`, signed by a CA made here: its
/// arguments are the certificate, the key, `extra`, and the file it writes
/// its port to.
fn python_server(dir: &Path, tag: &str, script: &str, names: &[&str], extra: &[String]) -> HookServer {
    let pki = skiff_pki::ClusterPki::load_or_create(dir.join(format!("{tag}-ca"))).expect("a CA");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let pair = pki.issue_server(tag, &names).expect("serving certificate");
    let (cert, key, port_file) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.key")), dir.join(format!("{tag}.port")));
    std::fs::write(&cert, &pair.cert_pem).expect("cert");
    std::fs::write(&key, &pair.key_pem).expect("key");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let child = Command::new("python3").arg(script).arg(&cert).arg(&key).args(extra).arg(&port_file).stdout(Stdio::null()).spawn().expect("python3");
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
            break p;
        }
        assert!(Instant::now() < deadline, "{tag}: the test's server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    HookServer { child, port, ca_bundle: skiff_api::base64(pki.ca_cert_pem().as_bytes()) }
}

/// Starts the webhook server with a serving certificate for 127.0.0.1 and
/// `hooks.hooked.svc`, signed by a CA made here.
fn hook_server(dir: &Path) -> HookServer {
    python_server(dir, "hooks", "webhook_server.py", &["127.0.0.1", "hooks.hooked.svc"], &[])
}

fn configmap(dir: &tempfile::TempDir, name: &str, ns: &str, labels: &str) -> String {
    manifest(
        dir,
        &format!("{ns}-{name}.yaml"),
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\ndata: {{a: b}}\n"),
    )
}

#[test]
fn webhooks_deny_and_mutate_by_url_and_service_and_fail_closed_or_open() {
    if !python_ready() {
        return;
    }
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hooks = hook_server(dir.path());
    let port = hooks.port;
    ok(&s, &["create", "namespace", "hooked"]);
    ok(&s, &["label", "namespace", "hooked", "webhook=on"]);
    ok(&s, &["create", "namespace", "plain"]);
    // The Service the mutating webhook is reached through: no selector,
    // its EndpointSlice points at the test's server.
    let service = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: hooks, namespace: hooked}}
spec:
  ports: [{{port: 8443, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: hooks-1, namespace: hooked, labels: {{kubernetes.io/service-name: hooks}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
ports: [{{name: "", port: {port}, protocol: TCP}}]
"#
    );
    ok(&s, &["apply", "-f", &manifest(&dir, "service.yaml", &service)]);
    let configs = format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: test-validate}}
webhooks:
- name: deny.skiff.test
  clientConfig: {{url: "https://127.0.0.1:{port}/validate", caBundle: {ca}}}
  rules: [{{operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}]
  namespaceSelector: {{matchLabels: {{webhook: "on"}}}}
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: test-mutate}}
webhooks:
- name: label.skiff.test
  clientConfig:
    service: {{namespace: hooked, name: hooks, port: 8443, path: /mutate}}
    caBundle: {ca}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}]
  namespaceSelector: {{matchLabels: {{webhook: "on"}}}}
  matchConditions:
  - name: not-kube-root-ca
    expression: "object.metadata.name != 'kube-root-ca.crt'"
  sideEffects: None
  admissionReviewVersions: [v1]
"#,
        ca = hooks.ca_bundle
    );
    ok(&s, &["apply", "-f", &manifest(&dir, "configs.yaml", &configs)]);
    let table = ok(&s, &["get", "validatingwebhookconfigurations"]);
    assert!(table.contains("WEBHOOKS") && table.contains("test-validate"), "{table}");
    let defaulted = ok(
        &s,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "test-mutate",
            "-o",
            "jsonpath={.webhooks[0].failurePolicy} {.webhooks[0].reinvocationPolicy} {.webhooks[0].timeoutSeconds}",
        ],
    );
    assert_eq!(defaulted, "Fail Never 10");

    // Denied, with the webhook's message and code.
    let (success, _, err) = kubectl(&s, &["create", "-f", &configmap(&dir, "bad", "hooked", "deny: \"true\"")]);
    assert!(!success, "a denied object was stored");
    assert!(err.contains(r#"admission webhook "deny.skiff.test" denied the request: objects labelled deny=true are not allowed here"#), "{err}");
    assert!(err.contains("Forbidden"), "the webhook's code (403): {err}");
    // Server-side dry run asks the webhooks too (their side effects are None).
    let (success, _, err) = kubectl(&s, &["create", "--dry-run=server", "-f", &configmap(&dir, "bad", "hooked", "deny: \"true\"")]);
    assert!(!success && err.contains("denied the request"), "{err}");

    // Mutated through the Service, with the validating webhook's warning.
    let (success, _, err) = kubectl(&s, &["create", "-f", &configmap(&dir, "changed", "hooked", "mutate: \"true\"")]);
    assert!(success, "{err}");
    assert!(err.contains("Warning: the test webhook saw CREATE configmaps/changed"), "{err}");
    assert_eq!(ok(&s, &["-n", "hooked", "get", "configmap", "changed", "-o", "jsonpath={.metadata.labels.mutated-by}"]), "webhook");

    // Updates are admitted too.
    let (success, _, err) = kubectl(&s, &["-n", "hooked", "label", "configmap", "changed", "deny=true"]);
    assert!(!success && err.contains("denied the request"), "{err}");

    // Outside the selected namespaces nothing is called.
    ok(&s, &["create", "-f", &configmap(&dir, "bad", "plain", "deny: \"true\", mutate: \"true\"")]);
    assert_eq!(ok(&s, &["-n", "plain", "get", "configmap", "bad", "-o", "jsonpath={.metadata.labels.mutated-by}"]), "");

    // The server goes away: failurePolicy Fail refuses, Ignore lets through.
    let _ = hooks.child.kill();
    let _ = hooks.child.wait();
    let (success, _, err) = kubectl(&s, &["create", "-f", &configmap(&dir, "down", "hooked", "")]);
    assert!(!success, "created while a Fail webhook was down");
    assert!(err.contains(r#"failed calling webhook "label.skiff.test""#) && err.contains("InternalError"), "{err}");
    for kind in ["mutatingwebhookconfiguration/test-mutate", "validatingwebhookconfiguration/test-validate"] {
        ok(&s, &["patch", kind, "--type", "json", "-p", r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#]);
    }
    ok(&s, &["create", "-f", &configmap(&dir, "down", "hooked", "deny: \"true\"")]);
}

#[test]
fn validating_admission_policies_check_objects_against_their_params() {
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replica-limit.skiff.test}
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}]
  variables:
  - name: limit
    expression: "int(params.data.maxReplicas)"
  validations:
  - expression: "object.spec.replicas <= variables.limit"
    messageExpression: "'replicas must be at most ' + string(variables.limit)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replica-limit-binding}
spec:
  policyName: replica-limit.skiff.test
  validationActions: [Deny]
  paramRef: {name: limits, namespace: default, parameterNotFoundAction: Deny}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: named.skiff.test}
spec:
  matchConstraints:
    resourceRules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}]
  validations:
  - expression: "object.metadata.name.startsWith('web-')"
    message: deployments should be named web-*
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: named-binding}
spec:
  policyName: named.skiff.test
  validationActions: [Warn]
"#;
    ok(&s, &["apply", "-f", &manifest(&dir, "policy.yaml", policy)]);
    let table = ok(&s, &["get", "validatingadmissionpolicies"]);
    assert!(table.contains("VALIDATIONS") && table.contains("v1/ConfigMap"), "{table}");

    // No params yet: parameterNotFoundAction Deny.
    let (success, _, err) = kubectl(&s, &["create", "deployment", "web-a", "--image=busybox", "--replicas=2"]);
    assert!(!success && err.contains("no params found for policy binding"), "{err}");
    ok(&s, &["create", "configmap", "limits", "--from-literal=maxReplicas=3"]);
    let (success, _, err) = kubectl(&s, &["create", "deployment", "web-a", "--image=busybox", "--replicas=5"]);
    assert!(!success, "a deployment over the limit was created");
    assert!(
        err.contains("ValidatingAdmissionPolicy 'replica-limit.skiff.test' with binding 'replica-limit-binding' denied request: replicas must be at most 3"),
        "{err}"
    );
    let (success, _, err) = kubectl(&s, &["create", "deployment", "web-a", "--image=busybox", "--replicas=2"]);
    assert!(success, "{err}");
    let (success, _, err) = kubectl(&s, &["patch", "deployment", "web-a", "--type", "merge", "-p", r#"{"spec":{"replicas":4}}"#]);
    assert!(!success && err.contains("replicas must be at most 3"), "{err}");
    // A Warn binding warns and lets through.
    let (success, _, err) = kubectl(&s, &["create", "deployment", "api", "--image=busybox", "--replicas=1"]);
    assert!(success, "{err}");
    assert!(
        err.contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'named.skiff.test' with binding 'named-binding': deployments should be named web-*"
        ),
        "{err}"
    );
    // The params changed: the limit follows.
    ok(&s, &["patch", "configmap", "limits", "--type", "merge", "-p", r#"{"data":{"maxReplicas":"10"}}"#]);
    ok(&s, &["patch", "deployment", "web-a", "--type", "merge", "-p", r#"{"spec":{"replicas":4}}"#]);
    // A policy whose CEL does not compile is refused.
    let bad = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: bad.skiff.test}\nspec:\n  matchConstraints:\n    resourceRules: [{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [pods]}]\n  validations: [{expression: \"object.spec.replicas <=\"}]\n";
    let (success, _, err) = kubectl(&s, &["apply", "-f", &manifest(&dir, "bad.yaml", bad)]);
    assert!(!success && err.contains("spec.validations[0].expression") && err.contains("compilation failed"), "{err}");
}

/// API aggregation: an APIService sends its group version to the test's
/// extension server (Python, HTTPS, trusting the front-proxy certificate by
/// the CA `extension-apiserver-authentication` names), which kubectl then
/// discovers and lists through skiff, as the requester; when the server
/// goes, the APIService turns unavailable and requests get 503.
#[test]
fn an_apiservice_proxies_its_group_to_an_extension_server() {
    if !python_ready() {
        return;
    }
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The local APIServices, one per built-in group version.
    let local = ok(&s, &["get", "apiservices"]);
    assert!(local.lines().any(|l| l.starts_with("v1.apps ") && l.contains("Local") && l.contains("True")), "{local}");
    assert!(local.contains("v1beta1.metrics.k8s.io"), "{local}");

    let client_ca =
        ok(&s, &["-n", "kube-system", "get", "configmap", "extension-apiserver-authentication", "-o", "jsonpath={.data.requestheader-client-ca-file}"]);
    let allowed =
        ok(&s, &["-n", "kube-system", "get", "configmap", "extension-apiserver-authentication", "-o", "jsonpath={.data.requestheader-allowed-names}"]);
    let allowed: Vec<String> = serde_json::from_str(&allowed).expect("allowed names");
    std::fs::write(dir.path().join("client-ca.crt"), client_ca).expect("client ca");
    let client_ca_file = dir.path().join("client-ca.crt").display().to_string();
    let server = python_server(dir.path(), "wardle", "aggregated_server.py", &["wardle.wardle.svc", "127.0.0.1"], &[client_ca_file, allowed[0].clone()]);
    let port = server.port;
    let manifests = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: wardle}}
---
apiVersion: v1
kind: Service
metadata: {{name: wardle, namespace: wardle}}
spec:
  ports: [{{port: 443, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: wardle-1, namespace: wardle, labels: {{kubernetes.io/service-name: wardle}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
ports: [{{name: "", port: {port}, protocol: TCP}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1.wardle.skiff.test}}
spec:
  group: wardle.skiff.test
  version: v1
  service: {{namespace: wardle, name: wardle, port: 443}}
  caBundle: {ca}
  groupPriorityMinimum: 2000
  versionPriority: 200
"#,
        ca = server.ca_bundle
    );
    ok(&s, &["apply", "-f", &manifest(&dir, "wardle.yaml", &manifests)]);
    common::wait_for(&s, 30, |s| kubectl(s, &["get", "apiservice", "v1.wardle.skiff.test", "-o", "jsonpath={.status.conditions[0].status}"]).1 == "True");
    let row = ok(&s, &["get", "apiservice", "v1.wardle.skiff.test"]);
    assert!(row.contains("wardle/wardle") && row.contains("True"), "{row}");

    // Discovery and requests go through skiff to the extension server, as the requester.
    let list = ok(&s, &["get", "flunders"]);
    assert!(list.contains("flunder-1"), "{list}");
    let who = ok(&s, &["get", "fl", "flunder-2", "-o", "jsonpath={.metadata.annotations.remote-user} {.metadata.annotations.remote-groups}"]);
    assert!(who.starts_with("admin ") && who.contains("system:masters") && who.contains("system:authenticated"), "{who}");
    let raw = ok(&s, &["get", "--raw", "/apis/wardle.skiff.test/v1"]);
    assert!(raw.contains("\"flunders\""), "{raw}");
    let groups = ok(&s, &["api-versions"]);
    assert!(groups.lines().any(|l| l == "wardle.skiff.test/v1"), "{groups}");
    // Its OpenAPI document is served with the others: kubectl explain reads it.
    let roots = ok(&s, &["get", "--raw", "/openapi/v3"]);
    assert!(roots.contains("apis/wardle.skiff.test/v1"), "{roots}");
    let explain = ok(&s, &["explain", "flunders"]);
    assert!(explain.contains("A flunder, served by the wardle server."), "{explain}");

    // The extension server goes away.
    drop(server);
    common::wait_for(&s, 40, |s| {
        kubectl(s, &["get", "apiservice", "v1.wardle.skiff.test", "-o", "jsonpath={.status.conditions[0].reason}"]).1 == "FailedDiscoveryCheck"
    });
    let (success, _, err) = kubectl(&s, &["get", "--raw", "/apis/wardle.skiff.test/v1/namespaces/default/flunders"]);
    assert!(!success && (err.contains("ServiceUnavailable") || err.contains("error trying to reach service")), "{err}");
}

/// A CRD with two versions of different shape, converted by the test's
/// conversion webhook: objects are stored in the storage version whichever
/// version they were written in, and read in whichever version is asked
/// for, in gets, lists and watches; without the webhook, reads in the
/// other version fail with kube's message.
#[test]
fn a_conversion_webhook_converts_between_crd_versions() {
    if !python_ready() {
        return;
    }
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hooks = hook_server(dir.path());
    let crd = format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: shapes.convert.skiff.test}}
spec:
  group: convert.skiff.test
  scope: Namespaced
  names: {{plural: shapes, singular: shape, kind: Shape}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1]
      clientConfig: {{url: "https://127.0.0.1:{port}/convert", caBundle: {ca}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{size: {{type: string}}}}}}
  - name: v2
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              length: {{type: object, properties: {{value: {{type: integer}}, unit: {{type: string}}}}}}
"#,
        port = hooks.port,
        ca = hooks.ca_bundle
    );
    ok(&s, &["apply", "-f", &manifest(&dir, "crd.yaml", &crd)]);
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "20s", "crd/shapes.convert.skiff.test"]);
    ok(&s, &["apply", "-f", &manifest(&dir, "a.yaml", "apiVersion: convert.skiff.test/v1\nkind: Shape\nmetadata: {name: a}\nspec: {size: 10cm}\n")]);
    ok(
        &s,
        &[
            "apply",
            "-f",
            &manifest(&dir, "b.yaml", "apiVersion: convert.skiff.test/v2\nkind: Shape\nmetadata: {name: b}\nspec: {length: {value: 3, unit: m}}\n"),
        ],
    );

    // Each read in the version asked for, whatever it was written in.
    let v2 = ok(&s, &["get", "shapes.v2.convert.skiff.test", "a", "-o", "jsonpath={.apiVersion} {.spec.length.value}{.spec.length.unit}"]);
    assert_eq!(v2, "convert.skiff.test/v2 10cm");
    let v1 = ok(&s, &["get", "shapes.v1.convert.skiff.test", "b", "-o", "jsonpath={.apiVersion} {.spec.size}"]);
    assert_eq!(v1, "convert.skiff.test/v1 3m", "stored in v1");
    let list = ok(&s, &["get", "--raw", "/apis/convert.skiff.test/v2/namespaces/default/shapes"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("list");
    let units: Vec<&str> = list["items"].as_array().expect("items").iter().filter_map(|i| i.pointer("/spec/length/unit").and_then(|u| u.as_str())).collect();
    assert_eq!(units, vec!["cm", "m"], "{list}");
    // A watch in v2 sees a v1 write converted.
    let watch = Command::new(common::kubectl_bin())
        .args([
            "--kubeconfig",
            &s.kubeconfig.display().to_string(),
            "get",
            "shapes.v2.convert.skiff.test",
            "--watch-only",
            "-o",
            "jsonpath={.spec.length.value}{\"\\n\"}",
            "--request-timeout",
            "8s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(1500));
    ok(&s, &["patch", "shapes.v1.convert.skiff.test", "a", "--type", "merge", "-p", r#"{"spec":{"size":"42cm"}}"#]);
    let out = watch.wait_with_output().expect("watch output");
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "42"), "{}", String::from_utf8_lossy(&out.stdout));

    // Without the webhook, reads in the other version fail.
    let _ = hooks.child.kill();
    let _ = hooks.child.wait();
    let (success, _, err) = kubectl(&s, &["get", "shapes.v2.convert.skiff.test", "a"]);
    assert!(!success && err.contains("conversion webhook for convert.skiff.test/v2, Kind=Shape failed"), "{err}");
    assert_eq!(ok(&s, &["get", "shapes.v1.convert.skiff.test", "a", "-o", "jsonpath={.spec.size}"]), "42cm", "the storage version needs no webhook");
}
