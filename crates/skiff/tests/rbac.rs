//! Authorization end to end, with the real kubectl: users from bearer
//! tokens and client certificates, Roles and ClusterRoles with verbs,
//! subresources, resourceNames and non-resource URLs, aggregated roles,
//! escalation prevention, impersonation, the access reviews behind
//! `kubectl auth can-i`, anonymous requests, and the Node authorizer.

mod common;

use common::{kubectl, kubectl_bin, ok, Server};
use std::process::Command;
use std::time::{Duration, Instant};

/// kubectl as the holder of `token` (no kubeconfig of the admin's).
fn as_token(s: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let server = format!("https://127.0.0.1:{}", s.port);
    let ca = s.dir.path().join("pki/ca.crt");
    let mut cmd = Command::new(kubectl_bin());
    cmd.args(["--kubeconfig", "/dev/null", "--server", &server, "--certificate-authority"]).arg(&ca);
    if !token.is_empty() {
        cmd.args(["--token", token]);
    }
    let out = cmd.args(args).output().expect("kubectl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Retries `check` for a few seconds: bindings take effect once the
/// server's watch cache has them (milliseconds), as in kube.
fn eventually(what: &str, check: impl Fn() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn can_i(s: &Server, args: &[&str]) -> String {
    let (_, out, _) = kubectl(s, &[&["auth", "can-i"], args].concat());
    out.trim().to_string()
}

const TOKENS: &str = "alice-token,alice,1001,\"dev\"\nbob-token,bob,1002\nnode-1-token,system:node:n1,1003,\"system:nodes\"\n";

fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    common::start_in(dir, &["--disable", "scheduler", "--token-auth-file", tokens.to_str().expect("utf-8")])
}

#[test]
fn roles_and_bindings_grant_exactly_what_they_name() {
    let s = start();
    // Nothing is granted yet: kube's 403, kube's words.
    let (allowed, _, err) = as_token(&s, "alice-token", &["get", "pods"]);
    assert!(!allowed && err.contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""), "{err}");
    ok(&s, &["create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods"]);
    ok(&s, &["create", "role", "one-config", "--verb=get", "--resource=configmaps", "--resource-name=one"]);
    ok(&s, &["create", "role", "log-reader", "--verb=get", "--resource=pods/log"]);
    ok(&s, &["create", "rolebinding", "alice-pods", "--role=pod-reader", "--user=alice"]);
    ok(&s, &["create", "rolebinding", "dev-config", "--role=one-config", "--group=dev"]);
    ok(&s, &["create", "rolebinding", "bob-logs", "--role=log-reader", "--user=bob"]);
    ok(&s, &["create", "configmap", "one", "--from-literal=a=1"]);
    ok(&s, &["create", "configmap", "two", "--from-literal=a=2"]);
    ok(&s, &["create", "namespace", "other"]);

    // Tables, as kubectl prints them.
    let table = ok(&s, &["get", "rolebinding", "alice-pods", "-o", "wide"]);
    assert!(table.contains("Role/pod-reader") && table.contains("alice"), "{table}");
    assert!(ok(&s, &["get", "role"]).contains("CREATED AT"));

    eventually("alice lists pods", || {
        let (allowed, _, err) = as_token(&s, "alice-token", &["get", "pods"]);
        if allowed {
            Ok(())
        } else {
            Err(err)
        }
    });
    // Verbs: reading is not deleting.
    let (allowed, _, err) = as_token(&s, "alice-token", &["delete", "pod", "web"]);
    assert!(!allowed && err.contains("pods \"web\" is forbidden: User \"alice\" cannot delete resource \"pods\""), "{err}");
    // Namespaces: a RoleBinding grants in its namespace only.
    let (allowed, _, err) = as_token(&s, "alice-token", &["get", "pods", "-n", "other"]);
    assert!(!allowed && err.contains("in the namespace \"other\""), "{err}");
    // resourceNames, through the group: one ConfigMap, not another, and no list.
    assert!(as_token(&s, "alice-token", &["get", "configmap", "one"]).0);
    let (allowed, _, err) = as_token(&s, "alice-token", &["get", "configmap", "two"]);
    assert!(!allowed && err.contains("configmaps \"two\" is forbidden"), "{err}");
    assert!(!as_token(&s, "alice-token", &["get", "configmaps"]).0);
    // Subresources: pods/log is not pods.
    assert_eq!(can_i(&s, &["get", "pods", "--subresource=log", "--as=bob"]), "yes");
    assert_eq!(can_i(&s, &["get", "pods", "--as=bob"]), "no");

    // kubectl auth can-i, via SelfSubjectAccessReview (and --as).
    assert_eq!(can_i(&s, &["list", "pods", "--as=alice"]), "yes");
    assert_eq!(can_i(&s, &["delete", "pods", "--as=alice"]), "no");
    assert_eq!(can_i(&s, &["list", "pods", "-n", "other", "--as=alice"]), "no");
    assert_eq!(can_i(&s, &["get", "configmaps/one", "--as=alice", "--as-group=dev"]), "yes");
    let (_, yes, _) = as_token(&s, "alice-token", &["auth", "can-i", "watch", "pods"]);
    assert_eq!(yes.trim(), "yes");
    // ... and --list, via SelfSubjectRulesReview.
    let (listed, rules, err) = as_token(&s, "alice-token", &["auth", "can-i", "--list"]);
    assert!(listed, "{err}");
    let pods = rules.lines().find(|l| l.starts_with("pods ")).unwrap_or_default();
    assert!(pods.contains("[get list watch]"), "{rules}");
    assert!(rules.lines().any(|l| l.starts_with("configmaps") && l.contains("[one]")), "{rules}");
    assert!(rules.contains("selfsubjectaccessreviews.authorization.k8s.io"), "system:basic-user: {rules}");

    // Non-resource URLs: /metrics through system:monitoring.
    let (allowed, _, err) = as_token(&s, "bob-token", &["get", "--raw", "/metrics"]);
    assert!(!allowed && err.contains("User \"bob\" cannot get path \"/metrics\""), "{err}");
    ok(&s, &["create", "clusterrolebinding", "bob-metrics", "--clusterrole=system:monitoring", "--user=bob"]);
    eventually("bob reads /metrics", || if as_token(&s, "bob-token", &["get", "--raw", "/metrics"]).0 { Ok(()) } else { Err("refused".into()) });
    // Discovery is open to every authenticated user (system:discovery).
    let (allowed, out, err) = as_token(&s, "bob-token", &["api-resources", "--api-group=rbac.authorization.k8s.io"]);
    assert!(allowed && out.contains("clusterrolebindings"), "{err}");
    // whoami, with the groups the server adds.
    let (_, me, _) = as_token(&s, "alice-token", &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(me.contains("dev") && me.contains("system:authenticated"), "{me}");

    // Anonymous (no credential at all; curl, as kubectl always offers
    // one): the public-info paths answer; everything else is 401.
    let anonymous = |path: &str| {
        let url = format!("https://127.0.0.1:{}{path}", s.port);
        let ca = s.dir.path().join("pki/ca.crt");
        let out = Command::new("curl").args(["-s", "-w", " %{http_code}", "--cacert"]).arg(&ca).arg(&url).output().expect("curl (CI installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(anonymous("/healthz"), "ok 200");
    assert!(anonymous("/version").ends_with(" 200"));
    let refused = anonymous("/api/v1/namespaces");
    assert!(refused.ends_with(" 401") && refused.contains("\"reason\":\"Unauthorized\""), "{refused}");

    // Bad objects: kube's validation.
    let broken = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: broken}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: x}\nsubjects: [{kind: ServiceAccount, name: bot}]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let (created, _, err) = kubectl(&s, &["create", "-f", &common::manifest(&dir, "broken.yaml", broken)]);
    assert!(!created && err.contains("roleRef.kind: Unsupported value: \"Role\""), "a ClusterRoleBinding cannot name a Role: {err}");
    assert!(err.contains("subjects[0].namespace: Required value"), "{err}");
}

#[test]
fn nobody_grants_more_than_they_hold_and_impersonation_is_authorized() {
    let s = start();
    // alice may manage Roles and RoleBindings in default, and read pods.
    ok(&s, &["create", "role", "rbac-manager", "--verb=get,list,create,update,patch,delete", "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io"]);
    ok(&s, &["create", "role", "pod-reader", "--verb=get,list", "--resource=pods"]);
    ok(&s, &["create", "rolebinding", "alice-rbac", "--role=rbac-manager", "--user=alice"]);
    ok(&s, &["create", "rolebinding", "alice-pods", "--role=pod-reader", "--user=alice"]);
    eventually("alice manages roles", || if as_token(&s, "alice-token", &["get", "roles"]).0 { Ok(()) } else { Err("refused".into()) });

    // What she holds she may hand on.
    let (made, _, err) = as_token(&s, "alice-token", &["create", "role", "sub-reader", "--verb=get", "--resource=pods"]);
    assert!(made, "{err}");
    let (made, _, err) = as_token(&s, "alice-token", &["create", "rolebinding", "bob-reads", "--role=sub-reader", "--user=bob"]);
    assert!(made, "{err}");
    // Not more: kube's refusal names the rules she lacks.
    let (made, _, err) = as_token(&s, "alice-token", &["create", "role", "deleter", "--verb=get,delete", "--resource=pods"]);
    assert!(!made, "escalation through a role");
    assert!(err.contains("roles.rbac.authorization.k8s.io \"deleter\" is forbidden: user \"alice\""), "{err}");
    assert!(err.contains("is attempting to grant RBAC permissions not currently held"), "{err}");
    assert!(err.contains("{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"), "{err}");
    let (made, _, err) = as_token(&s, "alice-token", &["create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob"]);
    assert!(!made && err.contains("is attempting to grant RBAC permissions not currently held"), "escalation through a binding: {err}");
    // ... unless granted `bind` on that role.
    ok(&s, &["create", "role", "admin-binder", "--verb=bind", "--resource=clusterroles.rbac.authorization.k8s.io", "--resource-name=admin"]);
    ok(&s, &["create", "rolebinding", "alice-binds", "--role=admin-binder", "--user=alice"]);
    eventually("bind lets alice bind admin", || {
        let (made, _, err) = as_token(&s, "alice-token", &["create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob"]);
        if made {
            Ok(())
        } else {
            Err(err)
        }
    });
    // The admin ClusterRole holds the aggregated rules (the aggregation
    // controller filled them): bob now edits in default.
    eventually("bob, admin of default, creates a deployment", || {
        let (made, _, err) = as_token(&s, "bob-token", &["create", "deployment", "web", "--image=nginx"]);
        if made {
            Ok(())
        } else {
            Err(err)
        }
    });

    // Impersonation needs the `impersonate` verb.
    let (allowed, _, err) = as_token(&s, "alice-token", &["get", "pods", "--as=bob"]);
    assert!(!allowed && err.contains("users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"), "{err}");
    ok(&s, &["create", "clusterrole", "impersonator", "--verb=impersonate", "--resource=users", "--resource-name=bob"]);
    ok(&s, &["create", "clusterrolebinding", "alice-impersonates", "--clusterrole=impersonator", "--user=alice"]);
    eventually("alice acts as bob", || {
        let (_, me, err) = as_token(&s, "alice-token", &["auth", "whoami", "--as=bob", "-o", "jsonpath={.status.userInfo.username}"]);
        if me == "bob" {
            Ok(())
        } else {
            Err(err)
        }
    });
    // As bob she has bob's rights, not hers, and no group she did not name.
    let (allowed, _, _) = as_token(&s, "alice-token", &["get", "deployments", "--as=bob"]);
    assert!(allowed, "bob reads deployments in default");
    let (allowed, _, err) = as_token(&s, "alice-token", &["get", "pods", "--as=bob", "--as-group=dev"]);
    assert!(!allowed && err.contains("cannot impersonate resource \"groups\""), "{err}");
}

#[test]
fn aggregated_cluster_roles_follow_their_labelled_sources() {
    let s = start();
    let view_rules = || ok(&s, &["get", "clusterrole", "view", "-o", "jsonpath={.rules[*].resources}"]);
    // The aggregation controller fills `view` shortly after start.
    common::wait_for(&s, 20, |_| view_rules().contains("configmaps"));
    // kubectl create clusterrole checks discovery; a manifest may name a
    // group that does not exist yet (a CRD's, installed later).
    let widgets = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: widget-viewer}\nrules: [{apiGroups: [example.com], resources: [widgets], verbs: [get, list]}]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&s, &["create", "-f", &common::manifest(&dir, "widgets.yaml", widgets)]);
    ok(&s, &["label", "clusterrole", "widget-viewer", "rbac.authorization.k8s.io/aggregate-to-view=true"]);
    eventually("view aggregates widgets", || if view_rules().contains("widgets") { Ok(()) } else { Err(view_rules()) });
    assert!(ok(&s, &["get", "clusterrole", "edit", "-o", "jsonpath={.rules[*].resources}"]).contains("widgets"), "edit aggregates view's sources");
    ok(&s, &["delete", "clusterrole", "widget-viewer"]);
    eventually("view drops widgets", || if !view_rules().contains("widgets") { Ok(()) } else { Err(view_rules()) });
}

#[test]
fn a_node_reads_only_what_its_pods_use_and_writes_only_itself() {
    let s = start();
    for node in ["n1", "n2"] {
        let yaml = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n");
        let dir = tempfile::tempdir().expect("tempdir");
        let f = common::manifest(&dir, "node.yaml", &yaml);
        ok(&s, &["create", "-f", &f]);
    }
    ok(&s, &["create", "secret", "generic", "mine", "--from-literal=k=v"]);
    ok(&s, &["create", "secret", "generic", "theirs", "--from-literal=k=v"]);
    ok(&s, &["create", "configmap", "mine-cm", "--from-literal=k=v"]);
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: on-n1}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox, env: [{name: K, valueFrom: {secretKeyRef: {name: mine, key: k}}}]}]\n  volumes: [{name: v, configMap: {name: mine-cm}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: on-n2}\nspec:\n  nodeName: n2\n  containers: [{name: c, image: busybox, envFrom: [{secretRef: {name: theirs}}]}]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&s, &["create", "-f", &common::manifest(&dir, "pods.yaml", pods)]);
    let node = |args: &[&str]| as_token(&s, "node-1-token", args);
    eventually("n1 reads its pod's secret", || if node(&["get", "secret", "mine"]).0 { Ok(()) } else { Err(node(&["get", "secret", "mine"]).2) });
    assert!(node(&["get", "configmap", "mine-cm"]).0, "its pod's ConfigMap");
    let (allowed, _, err) = node(&["get", "secret", "theirs"]);
    assert!(!allowed && err.contains("no relationship found between node 'n1' and this object"), "{err}");
    let (allowed, _, err) = node(&["get", "secrets"]);
    assert!(!allowed, "no node lists every secret: {err}");
    // Its own Node, not another's.
    assert!(node(&["label", "node", "n1", "mine=yes"]).0, "n1 labels itself");
    let (allowed, _, err) = node(&["label", "node", "n2", "mine=yes"]);
    assert!(!allowed && err.contains("forbidden"), "{err}");
    // Nodes and pods are readable; a pod bound elsewhere is not its to delete.
    assert!(node(&["get", "pods", "-A"]).0);
    let (allowed, _, err) = node(&["delete", "pod", "on-n2"]);
    assert!(!allowed && err.contains("forbidden"), "{err}");
    // A pod it may create is a mirror pod bound to itself (NodeRestriction).
    let plain = "apiVersion: v1\nkind: Pod\nmetadata: {name: sneaky}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n";
    let (allowed, _, err) = node(&["create", "-f", &common::manifest(&dir, "sneaky.yaml", plain)]);
    assert!(!allowed && err.contains("can only create mirror pods"), "{err}");
}

#[test]
fn a_node_name_belongs_to_the_machine_that_joined_first() {
    let s = start();
    let token = skiff_pki::JoinToken::parse(std::fs::read_to_string(s.dir.path().join("node-token")).expect("node-token").trim()).expect("token");
    let server = format!("https://127.0.0.1:{}", s.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let join = |dir: &std::path::Path, name: &str| {
        rt.block_on(skiff_kubelet::bootstrap::join(&server, &token, dir, name, &["127.0.0.1".parse().expect("ip")])).map(|_| ()).map_err(|e| e.to_string())
    };
    let (first, second) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    join(first.path(), "worker").expect("the first machine joins");
    // Its certificates were made once; a new machine asks anew.
    std::fs::remove_dir_all(first.path().join("pki")).expect("forget the certificates");
    join(first.path(), "worker").expect("the same machine (same node password) joins again");
    let err = join(second.path(), "worker").expect_err("another machine under the same name");
    assert!(err.contains("node \"worker\" is already held by another machine"), "{err}");
    join(second.path(), "worker-2").expect("another machine under its own name");
    // The record is a Secret, encrypted at rest like the others.
    ok(&s, &["get", "secret", "-n", "kube-system", "worker.node-password.skiff"]);
}

#[test]
fn the_audit_log_records_requests_at_the_policys_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: None\n  userGroups: [system:nodes, system:serviceaccounts]\n\
         - level: None\n  users: [system:kube-controller-manager, system:kube-scheduler, system:apiserver]\n\
         - level: RequestResponse\n  resources: [{group: \"\", resources: [configmaps]}]\n\
         - level: Metadata\n",
    )
    .expect("policy");
    let log = dir.path().join("audit/audit.log");
    let args = [
        "--disable",
        "scheduler",
        "--token-auth-file",
        tokens.to_str().expect("utf-8"),
        "--audit-policy-file",
        policy.to_str().expect("utf-8"),
        "--audit-log-path",
        log.to_str().expect("utf-8"),
    ];
    let s = common::start_in(tempfile::tempdir().expect("data"), &args);
    ok(&s, &["create", "configmap", "audited", "--from-literal=k=v"]);
    ok(&s, &["get", "pods"]);
    let (allowed, _, _) = as_token(&s, "bob-token", &["get", "secrets"]);
    assert!(!allowed);
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| -> Option<serde_json::Value> { events().into_iter().find(|e| pred(e)) };
    common::wait_for(&s, 10, |_| find(&|e| e["user"]["username"] == "bob").is_some());
    let create = find(&|e| e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps").expect("the create is recorded");
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["stage"], "ResponseComplete");
    assert_eq!(create["level"], "RequestResponse");
    assert_eq!(create["user"]["username"], "admin");
    assert_eq!(create["objectRef"]["name"], "audited", "{create}");
    assert_eq!(create["objectRef"]["namespace"], "default");
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["requestObject"]["data"]["k"], "v", "the request body at RequestResponse");
    assert_eq!(create["responseObject"]["metadata"]["name"], "audited", "the answer at RequestResponse");
    assert_eq!(create["sourceIPs"][0], "127.0.0.1");
    assert!(create["userAgent"].as_str().is_some_and(|a| a.starts_with("kubectl")), "{create}");
    ok(&s, &["create", "serviceaccount", "metadata-only"]);
    common::wait_for(&s, 10, |_| find(&|e| e["objectRef"]["resource"] == "serviceaccounts" && e["verb"] == "create").is_some());
    let sa = find(&|e| e["objectRef"]["resource"] == "serviceaccounts" && e["verb"] == "create").expect("recorded");
    assert_eq!(sa["level"], "Metadata");
    assert_eq!(sa["objectRef"]["name"], "metadata-only", "a create's name at Metadata level: {sa}");
    assert!(sa.get("responseObject").is_none(), "{sa}");
    let list = find(&|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods").expect("the list is recorded");
    assert_eq!(list["level"], "Metadata");
    assert!(list.get("responseObject").is_none() && list.get("requestObject").is_none(), "Metadata carries no bodies: {list}");
    let refused = find(&|e| e["user"]["username"] == "bob").expect("the refusal is recorded");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(refused["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert!(events().iter().all(|e| e["stage"] != "RequestReceived"), "omitted stage");
    assert!(events().iter().all(|e| e["user"]["username"] != "system:kube-controller-manager"), "None level");
}

#[test]
fn controllers_act_as_their_own_service_accounts_and_legacy_token_secrets_are_filled() {
    let s = start();
    // Each controller has its account and acts through it: a Deployment
    // still gets its ReplicaSet and pods (deployment-controller,
    // replicaset-controller), while the manager itself may only read.
    ok(&s, &["create", "deployment", "web", "--image=busybox", "--replicas=2"]);
    common::wait_for(&s, 30, |s| kubectl(s, &["get", "pods", "-l", "app=web", "-o", "name"]).1.lines().count() == 2);
    let accounts = ok(&s, &["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    for sa in ["deployment-controller", "replicaset-controller", "namespace-controller", "generic-garbage-collector"] {
        assert!(accounts.contains(&format!("serviceaccount/{sa}")), "{sa}: {accounts}");
    }
    assert_eq!(can_i(&s, &["create", "pods", "--as=system:kube-controller-manager"]), "no", "the manager writes nothing itself");
    assert_eq!(can_i(&s, &["create", "pods", "--as=system:serviceaccount:kube-system:replicaset-controller"]), "yes");
    assert_eq!(can_i(&s, &["create", "deployments.apps", "--as=system:serviceaccount:kube-system:replicaset-controller"]), "no");

    // A legacy token Secret made by hand is filled, authenticates as its
    // account, and its token dies with it.
    ok(&s, &["create", "serviceaccount", "bot"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: bot-token, annotations: {kubernetes.io/service-account.name: bot}}\ntype: kubernetes.io/service-account-token\n";
    ok(&s, &["create", "-f", &common::manifest(&dir, "secret.yaml", secret)]);
    common::wait_for(&s, 20, |s| !kubectl(s, &["get", "secret", "bot-token", "-o", "jsonpath={.data.token}"]).1.is_empty());
    let token = ok(&s, &["get", "secret", "bot-token", "-o", "jsonpath={.data.token}"]);
    let token = String::from_utf8(skiff_api::unbase64(&token).expect("base64")).expect("utf-8");
    assert!(!ok(&s, &["get", "secret", "bot-token", "-o", "jsonpath={.data.ca\\.crt}"]).is_empty(), "the CA is there too");
    let (_, me, err) = as_token(&s, &token, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(me, "system:serviceaccount:default:bot", "{err}");
    ok(&s, &["delete", "secret", "bot-token"]);
    let (allowed, _, err) = as_token(&s, &token, &["auth", "whoami"]);
    assert!(!allowed && err.contains("Unauthorized"), "the token dies with its Secret: {err}");
}

fn csr_yaml(name: &str, csr_pem: &str, signer: &str, usages: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {}\n  signerName: {signer}\n  usages: [{usages}]\n  expirationSeconds: 86400\n",
        skiff_api::base64(csr_pem.as_bytes())
    )
}

#[test]
fn certificate_signing_requests_are_approved_signed_and_usable() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (csr, key) = skiff_pki::new_request_for("carol", Some("ops")).expect("request");
    ok(&s, &["create", "-f", &common::manifest(&dir, "carol.yaml", &csr_yaml("carol", &csr, "kubernetes.io/kube-apiserver-client", "client auth"))]);
    let row = ok(&s, &["get", "csr", "carol"]);
    assert!(row.contains("kubernetes.io/kube-apiserver-client") && row.contains("admin") && row.contains("Pending") && row.contains("24h"), "{row}");
    // Approving takes `update` on certificatesigningrequests/approval.
    let (approved, _, err) = as_token(&s, "alice-token", &["certificate", "approve", "carol"]);
    assert!(!approved && err.contains("forbidden"), "{err}");
    ok(&s, &["certificate", "approve", "carol"]);
    common::wait_for(&s, 20, |s| !kubectl(s, &["get", "csr", "carol", "-o", "jsonpath={.status.certificate}"]).1.is_empty());
    assert!(ok(&s, &["get", "csr", "carol"]).contains("Approved,Issued"));
    let cert = ok(&s, &["get", "csr", "carol", "-o", "jsonpath={.status.certificate}"]);
    let cert = String::from_utf8(skiff_api::unbase64(&cert).expect("base64")).expect("pem");
    let (cert_file, key_file) = (dir.path().join("carol.crt"), dir.path().join("carol.key"));
    std::fs::write(&cert_file, cert).expect("write");
    std::fs::write(&key_file, key).expect("write");
    let out = Command::new(kubectl_bin())
        .args(["--kubeconfig", "/dev/null", "--server", &format!("https://127.0.0.1:{}", s.port), "--certificate-authority"])
        .arg(s.dir.path().join("pki/ca.crt"))
        .arg("--client-certificate")
        .arg(&cert_file)
        .arg("--client-key")
        .arg(&key_file)
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
        .output()
        .expect("kubectl");
    let me = String::from_utf8_lossy(&out.stdout);
    assert!(me.starts_with("carol ") && me.contains("ops"), "the issued certificate authenticates: {me} {}", String::from_utf8_lossy(&out.stderr));

    // Denied: no certificate. A signer's rules broken: Failed, saying why.
    let (other, _) = skiff_pki::new_request_for("dave", None).expect("request");
    ok(&s, &["create", "-f", &common::manifest(&dir, "dave.yaml", &csr_yaml("dave", &other, "kubernetes.io/kube-apiserver-client", "client auth"))]);
    ok(&s, &["certificate", "deny", "dave"]);
    let (fake, _) = skiff_pki::new_request_for("alice", Some("system:nodes")).expect("request");
    ok(&s, &["create", "-f", &common::manifest(&dir, "fake.yaml", &csr_yaml("fake-node", &fake, "kubernetes.io/kube-apiserver-client-kubelet", "client auth"))]);
    ok(&s, &["certificate", "approve", "fake-node"]);
    common::wait_for(&s, 20, |s| kubectl(s, &["get", "csr", "fake-node"]).1.contains("Failed"));
    let why = ok(&s, &["get", "csr", "fake-node", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].message}"]);
    assert!(why.contains("system:node:"), "{why}");
    assert!(ok(&s, &["get", "csr", "dave"]).contains("Denied"));
    assert!(ok(&s, &["get", "csr", "dave", "-o", "jsonpath={.status.certificate}"]).is_empty(), "a denied request gets no certificate");

    // A node renewing its own client certificate is approved and issued by itself.
    let (renewal, _) = skiff_pki::new_request_for("system:node:n1", Some("system:nodes")).expect("request");
    let (made, _, err) = as_token(
        &s,
        "node-1-token",
        &["create", "-f", &common::manifest(&dir, "renew.yaml", &csr_yaml("n1-renewal", &renewal, "kubernetes.io/kube-apiserver-client-kubelet", "client auth, digital signature"))],
    );
    assert!(made, "{err}");
    common::wait_for(&s, 20, |s| kubectl(s, &["get", "csr", "n1-renewal"]).1.contains("Approved,Issued"));
    let reason = ok(&s, &["get", "csr", "n1-renewal", "-o", "jsonpath={.status.conditions[0].reason}"]);
    assert_eq!(reason, "AutoApproved");
}

#[test]
fn server_certificates_renew_near_their_end_and_on_rotate() {
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let serving = |s: &Server| std::fs::read_to_string(s.dir.path().join("pki/apiserver.crt")).expect("apiserver.crt");
    let works = |s: &Server| kubectl(s, &["get", "ns", "default", "-o", "name"]).0;
    // Ten-minute certificates are always within 90 days of their end:
    // every start renews them, and clients keep working.
    let mut short = common::start_with(&["--disable", "scheduler,controllers", "--certificate-lifetime", "10m"]);
    let first = serving(&short);
    let end = skiff_pki::not_after(&first).expect("not after");
    assert!((end - now() - 600).abs() < 120, "a ten-minute certificate: ends in {} s", end - now());
    short.stop_and_start();
    common::wait_for(&short, 20, works);
    assert_ne!(serving(&short), first, "renewed at start");

    // One-year certificates stay across restarts, until `certificate rotate`.
    let mut s = common::start_with(&["--disable", "scheduler,controllers"]);
    let first = serving(&s);
    assert!(skiff_pki::not_after(&first).expect("end") - now() > 300 * 86_400);
    s.stop_and_start();
    common::wait_for(&s, 20, works);
    assert_eq!(serving(&s), first, "a fresh certificate is kept");
    s.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff")).args(["certificate", "rotate", "--data-dir"]).arg(s.dir.path()).output().expect("skiff certificate rotate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("apiserver") && !said.contains("ca,"), "{said}");
    assert!(s.dir.path().join("pki/ca.crt").exists(), "the CA stays");
    s.restart();
    common::wait_for(&s, 20, works);
    assert_ne!(serving(&s), first, "rotated");
}
