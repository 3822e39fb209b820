//! The admission plugins Kubernetes enables by default, through kubectl:
//! PodSecurity (enforce refuses, warn warns, in kube's words), LimitRanger
//! (defaults and bounds) and ResourceQuota (refusals with kube's message,
//! and the quota controller's `status.used`).

mod common;

use common::{kubectl, ok, Server};

fn apply(s: &Server, yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = common::manifest(&dir, "m.yaml", yaml);
    kubectl(s, &["apply", "-f", &f])
}

const PRIVILEGED: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: root, namespace: NS}\nspec:\n  containers: [{name: c, image: busybox, securityContext: {privileged: true}}]\n";
const HARDENED: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: hard, namespace: NS}\nspec:\n  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}\n  containers: [{name: c, image: busybox, securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}}]\n";

#[test]
fn pod_security_enforces_and_warns_per_namespace_labels() {
    let s = common::start_with(&["--disable", "scheduler"]);
    ok(&s, &["create", "namespace", "strict"]);
    ok(&s, &["label", "namespace", "strict", "pod-security.kubernetes.io/enforce=restricted"]);
    let (created, _, err) = apply(&s, &PRIVILEGED.replace("NS", "strict"));
    assert!(!created, "a privileged pod in a restricted namespace");
    assert!(err.contains("pods \"root\" is forbidden: violates PodSecurity \"restricted:latest\": "), "{err}");
    assert!(err.contains("privileged (container \"c\" must not set securityContext.privileged=true)"), "{err}");
    assert!(err.contains("runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)"), "{err}");
    let (created, _, err) = apply(&s, &HARDENED.replace("NS", "strict"));
    assert!(created, "a hardened pod passes restricted: {err}");

    ok(&s, &["create", "namespace", "lenient"]);
    ok(&s, &["label", "namespace", "lenient", "pod-security.kubernetes.io/warn=baseline", "pod-security.kubernetes.io/warn-version=v1.33"]);
    let (created, _, err) = apply(&s, &PRIVILEGED.replace("NS", "lenient"));
    assert!(created, "warn does not refuse: {err}");
    assert!(err.contains("Warning: would violate PodSecurity \"baseline:v1.33\": privileged (container \"c\" must not set securityContext.privileged=true)"), "{err}");
    // Templates warn too; enforce leaves workloads to their pods.
    ok(&s, &["label", "namespace", "strict", "pod-security.kubernetes.io/warn=restricted"]);
    let (created, _, err) = kubectl(&s, &["create", "deployment", "web", "--image=busybox", "-n", "strict"]);
    assert!(created && err.contains("would violate PodSecurity \"restricted:latest\""), "{err}");
}

#[test]
fn limit_ranges_default_and_bound_containers() {
    let s = common::start_with(&["--disable", "scheduler"]);
    ok(&s, &["create", "namespace", "limited"]);
    let (made, _, err) = apply(
        &s,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: lr, namespace: limited}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 200m}\n    max: {cpu: \"1\"}\n    min: {memory: 16Mi}\n",
    );
    assert!(made, "{err}");
    let (made, _, err) = apply(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: plain, namespace: limited}\nspec:\n  containers: [{name: c, image: busybox}]\n");
    assert!(made, "{err}");
    let res = ok(&s, &["get", "pod", "plain", "-n", "limited", "-o", "jsonpath={.spec.containers[0].resources}"]);
    let res: serde_json::Value = serde_json::from_str(&res).expect("json");
    assert_eq!(res["limits"]["cpu"], "500m", "{res}");
    assert_eq!(res["limits"]["memory"], "128Mi", "{res}");
    assert_eq!(res["requests"]["cpu"], "200m", "{res}");
    assert_eq!(res["requests"]["memory"], "128Mi", "the default request follows the default limit: {res}");
    let note = ok(&s, &["get", "pod", "plain", "-n", "limited", "-o", "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}"]);
    assert!(note.starts_with("LimitRanger plugin set: ") && note.contains("container c"), "{note}");
    let (made, _, err) = apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: greedy, namespace: limited}\nspec:\n  containers: [{name: c, image: busybox, resources: {limits: {cpu: \"2\", memory: 8Mi}}}]\n",
    );
    assert!(!made, "over the maximum");
    assert!(err.contains("pods \"greedy\" is forbidden: [minimum memory usage per Container is 16Mi, but request is 8Mi"), "{err}");
    assert!(err.contains("maximum cpu usage per Container is 1, but limit is 2"), "{err}");
}

#[test]
fn quotas_refuse_what_exceeds_them_and_report_usage() {
    let s = common::start_with(&["--disable", "scheduler"]);
    ok(&s, &["create", "namespace", "quoted"]);
    ok(&s, &["create", "quota", "q", "-n", "quoted", "--hard=pods=2,requests.cpu=1,services.nodeports=1"]);
    let pod = |name: &str, cpu: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: quoted}}\nspec:\n  containers: [{{name: c, image: busybox, resources: {{requests: {{cpu: {cpu}}}}}}}]\n")
    };
    assert!(apply(&s, &pod("a", "300m")).0);
    assert!(apply(&s, &pod("b", "300m")).0);
    let (made, _, err) = apply(&s, &pod("c", "100m"));
    assert!(!made && err.contains("pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"), "{err}");
    ok(&s, &["delete", "pod", "b", "-n", "quoted", "--wait=false", "--grace-period=0", "--force"]);
    let (made, _, err) = apply(&s, &pod("d", "800m"));
    assert!(!made && err.contains("exceeded quota: q, requested: requests.cpu=800m, used: requests.cpu=300m, limited: requests.cpu=1"), "{err}");
    let (made, _, err) = apply(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: e, namespace: quoted}\nspec:\n  containers: [{name: c, image: busybox}]\n");
    assert!(!made && err.contains("failed quota: q: must specify requests.cpu for: c"), "{err}");
    let (made, _, err) = kubectl(&s, &["create", "service", "nodeport", "np", "--tcp=80:80", "--tcp=81:81", "-n", "quoted"]);
    assert!(!made && err.contains("requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"), "{err}");
    // The quota controller reports what is used.
    common::wait_for(&s, 20, |s| {
        let used = kubectl(s, &["get", "quota", "q", "-n", "quoted", "-o", "jsonpath={.status.used.pods} {.status.used.requests\\.cpu}"]).1;
        used == "1 300m"
    });
    let table = ok(&s, &["describe", "quota", "q", "-n", "quoted"]);
    assert!(table.contains("pods") && table.contains("requests.cpu"), "{table}");
}
