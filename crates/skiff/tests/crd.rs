//! End to end: CustomResourceDefinitions with the real kubectl. A CRD is
//! served as soon as it is Established; its objects are validated against
//! its schema (kube's messages), pruned, defaulted, printed with its
//! columns, scaled, served in every version, collected when their owner
//! goes, and deleted with their CRD.

mod common;

use common::{kubectl, manifest, ok, wait_for};

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    deprecationWarning: example.com/v1beta1 Widget is old; use example.com/v1
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
    selectableFields: [{jsonPath: .spec.color}]
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        description: A widget made to order.
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [color]
            x-kubernetes-validations:
            - rule: "self.replicas <= 5 || self.color == 'red'"
              messageExpression: "'only red widgets may have ' + string(self.replicas) + ' replicas'"
            - rule: "oldSelf.color != 'blue' || self.color == 'blue'"
              message: a blue widget stays blue
            properties:
              replicas: {type: integer, minimum: 0, default: 1}
              color: {type: string, enum: [red, green, blue], description: The colour of the widget.}
              size: {type: string, pattern: '^[0-9]+(cm|m)$'}
              tags: {type: array, maxItems: 2, items: {type: string}}
              extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
              conditions:
                type: array
                items: {type: object, properties: {type: {type: string}, status: {type: string}}}
"#;

#[test]
fn custom_resources_are_validated_pruned_defaulted_printed_scaled_and_deleted_with_their_crd() {
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&s, &["apply", "--server-side", "-f", &manifest(&dir, "crd.yaml", WIDGETS)]);
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "20s", "crd/widgets.example.com"]);
    let status = ok(&s, &["get", "crd", "widgets.example.com", "-o", "jsonpath={.status.acceptedNames.kind} {.status.storedVersions}"]);
    assert_eq!(status, r#"Widget ["v1"]"#);
    let resources = ok(&s, &["api-resources", "--api-group", "example.com"]);
    assert!(resources.contains("widgets") && resources.contains("wd") && resources.contains("Widget"), "{resources}");

    // Unknown fields: refused under kubectl's strict validation, pruned
    // otherwise (but kept under preserve-unknown-fields).
    let w1 =
        manifest(&dir, "w1.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {color: red, bogus: 1, extra: {any: {thing: 1}}}\n");
    let (success, _, err) = kubectl(&s, &["apply", "-f", &w1]);
    assert!(!success && err.contains(r#"Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "spec.bogus""#), "{err}");
    let (success, _, err) = kubectl(&s, &["apply", "--validate=false", "-f", &w1]);
    assert!(success, "{err}");
    let spec = ok(&s, &["get", "widget", "w1", "-o", "jsonpath={.spec}"]);
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("spec json");
    assert_eq!(spec, serde_json::json!({"color": "red", "replicas": 1, "extra": {"any": {"thing": 1}}}), "pruned and defaulted");
    assert_eq!(ok(&s, &["get", "widget", "w1", "-o", "jsonpath={.metadata.generation}"]), "1");

    // Schema validation with kube's field paths and wording.
    let bad = manifest(
        &dir,
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {color: pink, replicas: -1, size: big, tags: [a, b, c]}\n",
    );
    let (success, _, err) = kubectl(&s, &["create", "-f", &bad]);
    assert!(!success, "an invalid widget was stored");
    for want in [
        r#"The Widget "bad" is invalid"#,
        r#"spec.color: Unsupported value: "pink": supported values: "red", "green", "blue""#,
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
        r#"spec.size: Invalid value: "big": spec.size in body should match '^[0-9]+(cm|m)$'"#,
        "spec.tags: Too many: 3: must have at most 2 items",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    let (success, _, err) =
        kubectl(&s, &["create", "-f", &manifest(&dir, "nocolor.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: nocolor}\nspec: {}\n")]);
    assert!(!success && err.contains("spec.color: Required value"), "{err}");
    let (found, _, _) = kubectl(&s, &["get", "widget", "bad"]);
    assert!(!found, "nothing half-written is stored");

    // CEL rules, with their messages; transition rules on updates.
    let (success, _, err) = kubectl(
        &s,
        &[
            "create",
            "-f",
            &manifest(&dir, "many.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: many}\nspec: {color: green, replicas: 6}\n"),
        ],
    );
    assert!(!success && err.contains(r#"spec: Invalid value: "object": only red widgets may have 6 replicas"#), "{err}");

    // Strategic merge patch does not apply to custom resources (415);
    // merge patch does, and bumps the generation; status does not.
    let (success, _, err) = kubectl(&s, &["patch", "widget", "w1", "-p", r#"{"spec":{"color":"blue"}}"#]);
    assert!(!success && err.contains("application/strategic-merge-patch+json is not supported"), "{err}");
    ok(&s, &["patch", "widget", "w1", "--type", "merge", "-p", r#"{"spec":{"color":"blue"}}"#]);
    ok(
        &s,
        &[
            "patch",
            "widget",
            "w1",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"replicas":1,"selector":"app=w1","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
    );
    assert_eq!(ok(&s, &["get", "widget", "w1", "-o", "jsonpath={.metadata.generation} {.status.replicas}"]), "2 1");
    let (success, _, err) = kubectl(&s, &["patch", "widget", "w1", "--type", "merge", "-p", r#"{"spec":{"color":"green"}}"#]);
    assert!(!success && err.contains(r#"spec: Invalid value: "object": a blue widget stays blue"#), "{err}");
    // The main resource leaves status alone.
    ok(&s, &["patch", "widget", "w1", "--type", "merge", "-p", r#"{"status":{"replicas":7}}"#]);
    assert_eq!(ok(&s, &["get", "widget", "w1", "-o", "jsonpath={.status.replicas}"]), "1");

    // The scale subresource, through the CRD's paths.
    ok(&s, &["scale", "widget", "w1", "--replicas", "3"]);
    assert_eq!(ok(&s, &["get", "widget", "w1", "-o", "jsonpath={.spec.replicas}"]), "3");
    let scale = ok(&s, &["get", "--raw", "/apis/example.com/v1/namespaces/default/widgets/w1/scale"]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale json");
    assert_eq!((scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some(3), Some("app=w1")), "{scale}");

    // The CRD's printer columns, also in `kubectl get all` (category all).
    let table = ok(&s, &["get", "wd"]);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], vec!["NAME", "REPLICAS", "COLOR", "READY"], "{table}");
    assert_eq!(lines[1], vec!["w1", "3", "blue", "True"], "{table}");
    let all = ok(&s, &["get", "all"]);
    assert!(all.contains("widget.example.com/w1"), "{all}");

    // The other version: the same object, with its apiVersion, and the
    // deprecation warning.
    let (success, out, err) = kubectl(&s, &["get", "widgets.v1beta1.example.com", "w1", "-o", "jsonpath={.apiVersion} {.spec.color}"]);
    assert!(success, "{err}");
    assert_eq!(out, "example.com/v1beta1 blue");
    assert!(err.contains("example.com/v1beta1 Widget is old; use example.com/v1"), "{err}");

    // kubectl explain reads the CRD's OpenAPI document.
    let explain = ok(&s, &["explain", "widget.spec.color"]);
    assert!(explain.contains("The colour of the widget."), "{explain}");

    // Watches see custom resources change.
    let watch = std::process::Command::new(common::kubectl_bin())
        .args(["--kubeconfig", &s.kubeconfig.display().to_string(), "get", "widgets", "--watch-only", "-o", "name", "--request-timeout", "8s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ok(&s, &["create", "-f", &manifest(&dir, "w2.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {color: green}\n")]);
    let out = watch.wait_with_output().expect("watch output");
    assert!(String::from_utf8_lossy(&out.stdout).contains("widget.example.com/w2"), "{}", String::from_utf8_lossy(&out.stdout));

    // selectableFields: field selectors on the CRD's fields, in lists and watches.
    assert_eq!(ok(&s, &["get", "widgets", "--field-selector", "spec.color=blue", "-o", "name"]).trim(), "widget.example.com/w1");
    assert_eq!(ok(&s, &["get", "widgets", "--field-selector", "spec.color!=blue,metadata.name=w2", "-o", "name"]).trim(), "widget.example.com/w2");
    let (success, _, err) = kubectl(&s, &["get", "widgets", "--field-selector", "spec.size=1m"]);
    assert!(!success && err.contains("field label not supported: spec.size"), "{err}");

    // The garbage collector follows custom kinds: a ConfigMap owned by a
    // widget goes with it.
    let uid = ok(&s, &["get", "widget", "w2", "-o", "jsonpath={.metadata.uid}"]);
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w2-config\n  ownerReferences: [{{apiVersion: example.com/v1, kind: Widget, name: w2, uid: {uid}}}]\ndata: {{a: b}}\n"
    );
    ok(&s, &["create", "-f", &manifest(&dir, "owned.yaml", &owned)]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    ok(&s, &["delete", "widget", "w2"]);
    wait_for(&s, 40, |s| !kubectl(s, &["get", "configmap", "w2-config"]).0);

    // A second CRD may not take names the first holds.
    let clash = WIDGETS
        .replace("widgets.example.com", "gadgets.example.com")
        .replace("plural: widgets, singular: widget, kind: Widget", "plural: gadgets, singular: gadget, kind: Gadget");
    ok(&s, &["apply", "-f", &manifest(&dir, "clash.yaml", &clash)]);
    wait_for(&s, 10, |s| {
        kubectl(s, &["get", "crd", "gadgets.example.com", "-o", "jsonpath={.status.conditions[?(@.type==\"NamesAccepted\")].message}"]).1
            == r#""wd" is already in use"#
    });
    let (served, _, _) = kubectl(&s, &["get", "--raw", "/apis/example.com/v1/gadgets"]);
    assert!(!served, "a CRD whose names are not accepted is not served");

    // Objects in a namespace go with it.
    ok(&s, &["create", "namespace", "shop"]);
    ok(&s, &["-n", "shop", "create", "-f", &manifest(&dir, "w3.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3}\nspec: {color: red}\n")]);
    ok(&s, &["delete", "namespace", "shop", "--timeout", "60s"]);
    let left = ok(&s, &["get", "--raw", "/apis/example.com/v1/widgets"]);
    assert!(!left.contains("\"w3\""), "{left}");

    // Deleting the CRD deletes every widget, then the CRD, then the API.
    ok(&s, &["delete", "crd", "widgets.example.com", "--timeout", "60s"]);
    // (kubectl's discovery cache may still name the type: then the list is a 404.)
    let (served, _, err) = kubectl(&s, &["get", "widgets"]);
    assert!(
        !served && (err.contains("the server doesn't have a resource type \"widgets\"") || err.contains("the server could not find the requested resource")),
        "{err}"
    );
    let (served, _, _) = kubectl(&s, &["get", "--raw", "/apis/example.com/v1/widgets"]);
    assert!(!served, "the API of a deleted CRD is gone");
    ok(&s, &["apply", "-f", &manifest(&dir, "again.yaml", WIDGETS)]);
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "20s", "crd/widgets.example.com"]);
    let fresh = ok(&s, &["get", "widgets", "-o", "name"]);
    assert_eq!(fresh.trim(), "", "objects of a deleted CRD do not come back with a new one");
}

/// kopf (the Python operator framework, from PyPI) runs an operator over a
/// CRD against skiff: its create, update and delete handlers fire, it
/// patches their results into the status subresource, adopts what it
/// makes (the garbage collector removes it with its owner), and keeps its
/// peering object's status, with its own peering CRDs.
#[test]
fn a_kopf_operator_handles_its_custom_resources() {
    let have = std::process::Command::new("python3").args(["-c", "import kopf, kubernetes"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and python3 with `kopf` and `kubernetes` (pip install kopf kubernetes) is missing");
        eprintln!("skipping: needs python3 with kopf (pip install kopf)");
        return;
    }
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    ok(&s, &["apply", "-f", &here.join("kopf_crds.yaml").display().to_string()]);
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "20s", "crd", "--all"]);
    ok(&s, &["apply", "-f", &manifest(&dir, "peering.yaml", "apiVersion: kopf.dev/v1\nkind: KopfPeering\nmetadata: {name: default, namespace: default}\n")]);

    struct Operator(std::process::Child);
    impl Drop for Operator {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = dir.path().join("operator.log");
    let operator = Operator(
        std::process::Command::new("python3")
            .args(["-m", "kopf", "run", "--verbose", "-n", "default", "--peering", "default"])
            .arg(here.join("kopf_operator.py"))
            .env("KUBECONFIG", &s.kubeconfig)
            .stdout(std::process::Stdio::null())
            // kopf logs to stderr.
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run kopf"),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Its peering: the operator announces itself in the KopfPeering's status.
    wait_for(&s, 30, |s| kubectl(s, &["get", "kopfpeering", "default", "-o", "jsonpath={.status}"]).1.contains("lastseen"));

    ok(&s, &["create", "-f", &manifest(&dir, "g1.yaml", "apiVersion: demo.skiff.dev/v1\nkind: Greeting\nmetadata: {name: g1}\nspec: {name: world}\n")]);
    wait_for(&s, 30, |s| kubectl(s, &["get", "configmap", "greeting-g1", "-o", "jsonpath={.data.text}"]).1 == "hello, world");
    wait_for(&s, 30, |s| kubectl(s, &["get", "greeting", "g1", "-o", "jsonpath={.status.create_fn.message}"]).1 == "hello, world");
    let table = ok(&s, &["get", "gr"]);
    assert!(table.contains("hello, world"), "the CRD's column shows the status kopf wrote: {table}");
    let finalizers = ok(&s, &["get", "greeting", "g1", "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(finalizers.contains("kopf.zalando.org/KopfFinalizerMarker"), "{finalizers}");

    ok(&s, &["patch", "greeting", "g1", "--type", "merge", "-p", r#"{"spec":{"salutation":"hi"}}"#]);
    wait_for(&s, 30, |s| kubectl(s, &["get", "configmap", "greeting-g1", "-o", "jsonpath={.data.text}"]).1 == "hi, world");
    wait_for(&s, 30, |s| kubectl(s, &["get", "greeting", "g1", "-o", "jsonpath={.status.update_fn.message}"]).1 == "hi, world");

    ok(&s, &["delete", "greeting", "g1", "--timeout", "30s"]);
    assert_eq!(ok(&s, &["get", "configmap", "farewell-g1", "-o", "jsonpath={.data.text}"]), "goodbye, g1", "the delete handler ran before the object went");
    wait_for(&s, 40, |s| !kubectl(s, &["get", "configmap", "greeting-g1"]).0);
    let text = log_text();
    for want in ["Creation is processed: 1 succeeded; 0 failed", "Updating is processed: 1 succeeded; 0 failed", "Deletion is processed: 1 succeeded; 0 failed"]
    {
        assert!(text.contains(want), "missing {want:?} in the operator's log:\n{text}");
    }
    drop(operator);
}

/// A bundle of twelve CRDs shaped as projects ship them (controller-gen
/// style: descriptions, several versions, CEL rules, printer columns,
/// status and scale subresources, preserve-unknown-fields, int-or-string,
/// list maps), applied with `kubectl apply --server-side`; an object of
/// each validated, pruned, defaulted, listed with its columns, explained,
/// and (where it has scale) scaled; deleting the bundle removes every
/// object.
#[test]
fn a_bundle_of_crds_applies_serves_and_deletes_with_its_objects() {
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = ["Database", "Cache", "Queue", "Topic", "Bucket", "Certificate", "Issuer", "Route", "Gateway", "Backup", "Restore", "Dashboard"];
    let mut bundle = String::new();
    let mut objects = String::new();
    for (i, kind) in kinds.iter().enumerate() {
        let plural = format!("{}s", kind.to_lowercase());
        let group = format!("g{i}.bundle.skiff.test");
        let scope = if i % 4 == 3 { "Cluster" } else { "Namespaced" };
        bundle.push_str(&format!(
            r#"---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
  annotations: {{controller-gen.kubebuilder.io/version: v0.17.3}}
spec:
  group: {group}
  scope: {scope}
  names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular}, shortNames: [b{i}], categories: [bundle]}}
  versions:
  - name: v1alpha1
    served: true
    storage: false
    deprecated: true
    schema:
      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale: {{specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}}
    additionalPrinterColumns:
    - {{name: Size, type: string, jsonPath: .spec.size}}
    - {{name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}}
    - {{name: Age, type: date, jsonPath: .metadata.creationTimestamp}}
    schema:
      openAPIV3Schema:
        description: {kind} is the Schema for the {plural} API.
        type: object
        properties:
          apiVersion: {{type: string}}
          kind: {{type: string}}
          metadata: {{type: object}}
          spec:
            description: {kind}Spec defines the desired state of {kind}.
            type: object
            required: [size]
            x-kubernetes-validations:
            - {{rule: "!has(self.maxReplicas) || self.replicas <= self.maxReplicas", message: replicas may not exceed maxReplicas}}
            properties:
              size: {{type: string, enum: [small, medium, large], description: How big the {singular} is.}}
              replicas: {{type: integer, format: int32, minimum: 0, default: 1}}
              maxReplicas: {{type: integer, format: int32}}
              port: {{anyOf: [{{type: integer}}, {{type: string}}], x-kubernetes-int-or-string: true}}
              config: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
              endpoints:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{type: string}}
                    url: {{type: string, pattern: '^https?://'}}
          status:
            type: object
            properties:
              replicas: {{type: integer}}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {{type: string}}
                    status: {{type: string}}
"#,
            singular = kind.to_lowercase()
        ));
        let ns = if scope == "Namespaced" { "\n  namespace: default" } else { "" };
        objects.push_str(&format!(
            "---\napiVersion: {group}/v1\nkind: {kind}\nmetadata:\n  name: one{ns}\nspec:\n  size: small\n  port: http\n  config: {{anything: [1, 2]}}\n  endpoints: [{{name: a, url: 'https://a'}}]\n  extra: pruned\n"
        ));
    }
    let crds = manifest(&dir, "bundle.yaml", &bundle);
    let out = ok(&s, &["apply", "--server-side", "-f", &crds]);
    assert_eq!(out.lines().count(), kinds.len(), "{out}");
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "30s", "crd", "-l", "!nothing"]);
    let objs = manifest(&dir, "objects.yaml", &objects);
    let out = ok(&s, &["apply", "--server-side", "--validate=false", "-f", &objs]);
    assert_eq!(out.lines().count(), kinds.len(), "{out}");

    let listed = ok(&s, &["get", "bundle", "-A", "--no-headers"]);
    assert_eq!(listed.lines().count(), kinds.len(), "the category lists every kind:\n{listed}");
    for (i, kind) in kinds.iter().enumerate() {
        let plural = format!("{}s.g{i}.bundle.skiff.test", kind.to_lowercase());
        let obj = ok(&s, &["get", &plural, "one", "-o", "json"]);
        let obj: serde_json::Value = serde_json::from_str(&obj).expect("json");
        assert_eq!(obj["spec"]["replicas"], 1, "{kind} defaulted");
        assert!(obj["spec"].get("extra").is_none(), "{kind} pruned");
        assert_eq!(obj["spec"]["config"]["anything"], serde_json::json!([1, 2]), "{kind} kept what preserve-unknown-fields keeps");
        let row = ok(&s, &["get", &plural, "one"]);
        assert!(row.starts_with("NAME") && row.contains("SIZE") && row.contains("small"), "{row}");
        let explain = ok(&s, &["explain", &format!("{plural}.spec.size")]);
        assert!(explain.contains(&format!("How big the {} is.", kind.to_lowercase())), "{explain}");
    }
    // Server-side apply merges a map list by its key: two managers' endpoints.
    let other = "apiVersion: g3.bundle.skiff.test/v1\nkind: Topic\nmetadata: {name: one}\nspec:\n  size: small\n  endpoints: [{name: b, url: 'https://b'}]\n";
    ok(&s, &["apply", "--server-side", "--field-manager", "other", "-f", &manifest(&dir, "other.yaml", other)]);
    assert_eq!(ok(&s, &["get", "b3", "one", "-o", "jsonpath={.spec.endpoints[*].name}"]), "a b");
    ok(&s, &["scale", "databases.g0.bundle.skiff.test", "one", "--replicas", "3"]);
    assert_eq!(ok(&s, &["get", "b0", "one", "-o", "jsonpath={.spec.replicas}"]), "3");
    let (success, _, err) = kubectl(&s, &["patch", "b1", "one", "--type", "merge", "-p", r#"{"spec":{"replicas":5,"maxReplicas":2}}"#]);
    assert!(!success && err.contains("replicas may not exceed maxReplicas"), "{err}");
    let (success, _, err) = kubectl(&s, &["patch", "b2", "one", "--type", "merge", "-p", r#"{"spec":{"size":"huge"}}"#]);
    assert!(!success && err.contains(r#"spec.size: Unsupported value: "huge""#), "{err}");

    ok(&s, &["delete", "-f", &crds, "--timeout", "90s"]);
    for i in 0..kinds.len() {
        let (served, _, _) = kubectl(&s, &["get", "--raw", &format!("/apis/g{i}.bundle.skiff.test/v1")]);
        assert!(!served, "g{i} still served");
    }
    ok(&s, &["apply", "--server-side", "-f", &crds]);
    ok(&s, &["wait", "--for", "condition=Established", "--timeout", "30s", "crd", "-l", "!nothing"]);
    let left = ok(&s, &["get", "bundle", "-A", "--no-headers"]);
    assert_eq!(left.trim(), "", "no object outlived its CRD: {left}");
}
