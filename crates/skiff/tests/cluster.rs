//! End to end: `skiff server` (API server, scheduler, controllers) with
//! `skiff sim-nodes`, driven by the real kubectl and the `kube` client:
//! Deployments converge, roll and roll back, garbage is collected, pods
//! are placed where Kubernetes would place them, failed nodes' pods are
//! replaced.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{kubectl, manifest, ok, sim_nodes, start_with, wait_for, Server};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchEvent, WatchParams};

fn lines(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn running_pods(s: &Server, selector: &str) -> Vec<String> {
    let out = ok(s, &["get", "pods", "-l", selector, "--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}"]);
    lines(&out)
}

#[test]
fn deployment_reaches_its_replicas_and_gc_removes_what_it_owned() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 3, "sim-", &[]);
    ok(&s, &["create", "deployment", "web", "--image=nginx:1", "--replicas=5"]);
    ok(&s, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(running_pods(&s, "app=web").len(), 5);
    let ips = ok(&s, &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]);
    assert!(lines(&ips).iter().all(|ip| ip.starts_with("10.42.")), "pod IPs from node podCIDRs: {ips}");
    // Every namespace has its default ServiceAccount.
    ok(&s, &["get", "serviceaccount", "default", "-n", "kube-system"]);

    ok(&s, &["delete", "deployment", "web", "--cascade=orphan"]);
    wait_for(&s, 30, |s| kubectl(s, &["get", "deployment", "web"]).2.contains("NotFound"));
    let rs = ok(&s, &["get", "rs", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.ownerReferences}"]);
    assert!(rs.trim().is_empty(), "orphaned ReplicaSet has no owner: {rs}");
    assert_eq!(running_pods(&s, "app=web").len(), 5, "orphaned pods are kept");

    // A new Deployment adopts the orphans; deleting it (background) takes
    // its ReplicaSets and pods with it.
    ok(&s, &["create", "deployment", "web", "--image=nginx:1", "--replicas=5"]);
    ok(&s, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    ok(&s, &["delete", "deployment", "web"]);
    wait_for(&s, 30, |s| ok(s, &["get", "rs,pods", "-l", "app=web", "-o", "name"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_max_unavailable_and_undo_restores() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 3, "sim-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let f = manifest(
        &dir,
        "d.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: 6
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 1, maxSurge: 1}
  selector: {matchLabels: {app: roll}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      containers: [{name: app, image: 'app:1'}]
",
    );
    ok(&s, &["apply", "-f", &f]);
    ok(&s, &["rollout", "status", "deployment/roll", "--timeout=60s"]);

    // Watch pods through the rollout: available (ready, not terminating)
    // never drops below replicas - maxUnavailable = 5.
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config")).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let list = pods.list(&kube::api::ListParams::default().labels("app=roll")).await.expect("list");
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut ready: BTreeMap<String, bool> = list.items.iter().map(|p| (p.metadata.name.clone().unwrap_or_default(), skiff_ready(p))).collect();
    let mut stream = pods.watch(&WatchParams::default().labels("app=roll").timeout(60), &rv).await.expect("watch").boxed();
    let kubeconfig = s.kubeconfig.clone();
    let roll = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::kubectl_bin()).arg("--kubeconfig").arg(&kubeconfig).args(["set", "image", "deployment/roll", "app=app:2"]).output()
    });
    let mut min_available = usize::MAX;
    let mut images_done = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !images_done {
        let ev = tokio::time::timeout_at(deadline, stream.next()).await.expect("rollout finished in time").expect("stream open").expect("event");
        match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                ready.insert(p.metadata.name.clone().unwrap_or_default(), skiff_ready(&p));
            }
            WatchEvent::Deleted(p) => {
                ready.remove(&p.metadata.name.clone().unwrap_or_default());
            }
            _ => {}
        }
        let available = ready.values().filter(|r| **r).count();
        min_available = min_available.min(available);
        let (_, images, _) = kubectl(
            &s,
            &["get", "pods", "-l", "app=roll", "-o", "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}x{end}{.items[*].spec.containers[0].image}"],
        );
        images_done = !images.contains("app:1") && images.matches("app:2").count() == 6 && available == 6;
    }
    roll.await.expect("join").expect("kubectl set image");
    assert!(min_available >= 5, "never more than maxUnavailable=1 pod down; lowest available was {min_available}");
    ok(&s, &["rollout", "status", "deployment/roll", "--timeout=60s"]);

    ok(&s, &["rollout", "undo", "deployment/roll"]);
    ok(&s, &["rollout", "status", "deployment/roll", "--timeout=60s"]);
    let image = ok(&s, &["get", "deployment/roll", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "app:1");
    let rs = ok(&s, &["get", "rs", "-l", "app=roll", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(lines(&rs).len(), 2, "undo reuses the first ReplicaSet: {rs}");
    let history = ok(&s, &["rollout", "history", "deployment/roll"]);
    assert!(history.contains('2') && history.contains('3') && !history.lines().any(|l| l.trim_start().starts_with("1 ")), "revision 1 became 3: {history}");
}

fn skiff_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[test]
fn scheduling_honours_selectors_taints_requests_and_anti_affinity() {
    let s = start_with(&[]);
    let _small = sim_nodes(&s, 2, "small-", &["--cpu", "1", "--memory", "2Gi"]);
    let _big = sim_nodes(&s, 1, "big-", &["--cpu", "16", "--memory", "64Gi"]);
    ok(&s, &["label", "node", "big-0", "disk=ssd"]);
    ok(&s, &["taint", "node", "small-1", "dedicated=gpu:NoSchedule"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = |name: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  containers: [{{name: c, image: x, resources: {{requests: {{cpu: 500m}}}}}}]\n{extra}")
    };
    ok(&s, &["apply", "-f", &manifest(&dir, "ssd.yaml", &pod("ssd", "  nodeSelector: {disk: ssd}\n"))]);
    ok(
        &s,
        &[
            "apply",
            "-f",
            &manifest(
                &dir,
                "gpu.yaml",
                &pod(
                    "gpu",
                    "  nodeSelector: {kubernetes.io/hostname: small-1}\n  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n",
                ),
            ),
        ],
    );
    let huge = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers: [{name: c, image: x, resources: {requests: {cpu: '32'}}}]\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "huge.yaml", huge)]);
    wait_for(&s, 30, |s| ok(s, &["get", "pod", "ssd", "gpu", "-o", "jsonpath={.items[*].spec.nodeName}"]).split_whitespace().count() == 2);
    assert_eq!(ok(&s, &["get", "pod", "ssd", "-o", "jsonpath={.spec.nodeName}"]), "big-0");
    assert_eq!(ok(&s, &["get", "pod", "gpu", "-o", "jsonpath={.spec.nodeName}"]), "small-1");
    // Nothing has 32 CPUs; the taint keeps small-1 out.
    wait_for(&s, 30, |s| {
        ok(s, &["get", "pod", "huge", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}"]).contains("nodes are available")
    });
    let msg = ok(&s, &["get", "pod", "huge", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}"]);
    assert_eq!(msg, "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu.");
    assert_eq!(ok(&s, &["get", "pod", "huge", "-o", "jsonpath={.status.phase}"]), "Pending");
    let events = ok(&s, &["get", "events", "--field-selector", "involvedObject.name=huge,reason=FailedScheduling", "-o", "jsonpath={.items[0].message}"]);
    assert!(events.contains("Insufficient cpu"), "{events}");
    // Required anti-affinity: one per host, the fourth stays Pending.
    let anti = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: spread\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: spread}}\n  template:\n    metadata: {labels: {app: spread}}\n    spec:\n      tolerations: [{key: dedicated, operator: Exists}]\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - {labelSelector: {matchLabels: {app: spread}}, topologyKey: kubernetes.io/hostname}\n      containers: [{name: c, image: x}]\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "anti.yaml", anti)]);
    wait_for(&s, 30, |s| lines(&ok(s, &["get", "pods", "-l", "app=spread", "-o", "jsonpath={.items[*].spec.nodeName}"])).len() == 3);
    let hosts: HashSet<String> = lines(&ok(&s, &["get", "pods", "-l", "app=spread", "-o", "jsonpath={.items[*].spec.nodeName}"])).into_iter().collect();
    assert_eq!(hosts.len(), 3, "one per node");
    wait_for(&s, 30, |s| {
        ok(s, &["get", "pods", "-l", "app=spread", "-o", "jsonpath={.items[*].status.conditions[?(@.type==\"PodScheduled\")].message}"])
            .contains("didn't match pod anti-affinity rules")
    });
}

#[test]
fn namespace_deletion_removes_its_content() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 1, "sim-", &[]);
    ok(&s, &["create", "namespace", "team"]);
    ok(&s, &["create", "deployment", "app", "--image=x", "--replicas=2", "-n", "team"]);
    ok(&s, &["create", "configmap", "cfg", "-n", "team", "--from-literal=a=b"]);
    ok(&s, &["rollout", "status", "deployment/app", "-n", "team", "--timeout=60s"]);
    ok(&s, &["delete", "namespace", "team", "--timeout=60s"]);
    let (found, _, err) = kubectl(&s, &["get", "namespace", "team"]);
    assert!(!found && err.contains("NotFound"), "{err}");
    let left = ok(&s, &["get", "pods,rs,deploy,cm", "-n", "team", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn failed_nodes_go_not_ready_and_their_pods_are_replaced() {
    let s = start_with(&["--node-monitor-grace-period", "3", "--default-unreachable-toleration-seconds", "2", "--default-not-ready-toleration-seconds", "2"]);
    let fast = ["--lease-duration-seconds", "2"];
    let mut doomed = sim_nodes(&s, 2, "doomed-", &fast);
    ok(&s, &["create", "deployment", "svc", "--image=x", "--replicas=4"]);
    ok(&s, &["rollout", "status", "deployment/svc", "--timeout=60s"]);
    let _healthy = sim_nodes(&s, 2, "healthy-", &fast);
    doomed.kill();
    wait_for(&s, 30, |s| {
        let st = ok(s, &["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}"]);
        st.contains("doomed-0=Unknown") && st.contains("doomed-1=Unknown")
    });
    let taints = ok(&s, &["get", "node", "doomed-0", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(taints.contains("node.kubernetes.io/unreachable"), "{taints}");
    wait_for(&s, 60, |s| {
        let out = ok(
            s,
            &[
                "get",
                "pods",
                "-l",
                "app=svc",
                "-o",
                "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.spec.nodeName}{\" \"}{.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ],
        );
        out.lines().filter(|l| l.starts_with("healthy-") && l.trim_end().split(' ').count() == 1).count() == 4
    });
}

#[test]
fn two_schedulers_never_bind_a_pod_twice() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 3, "sim-", &[]);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["scheduler", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("second scheduler");
    ok(&s, &["create", "deployment", "many", "--image=x", "--replicas=40"]);
    ok(&s, &["rollout", "status", "deployment/many", "--timeout=60s"]);
    let _ = second.kill();
    let _ = second.wait();
    let scheduled = ok(&s, &["get", "events", "--field-selector", "reason=Scheduled", "-o", "jsonpath={range .items[*]}{.involvedObject.name}{\"\\n\"}{end}"]);
    let names: Vec<&str> = scheduled.lines().filter(|l| l.starts_with("many-")).collect();
    let unique: HashSet<&&str> = names.iter().collect();
    assert_eq!(names.len(), 40, "one Scheduled event per pod");
    assert_eq!(unique.len(), 40, "no pod scheduled twice");
    let holder = ok(&s, &["get", "lease", "kube-scheduler", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(!holder.is_empty());
}

#[test]
fn statefulset_creates_in_order_and_deletes_in_reverse() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 2, "sim-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sts = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: x, volumeMounts: [{name: www, mountPath: /data}]}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
";
    ok(&s, &["apply", "-f", &manifest(&dir, "sts.yaml", sts)]);
    let names = |s: &Server| -> Vec<String> {
        let mut v = lines(&ok(s, &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]));
        v.sort();
        v
    };
    let prefix = |v: &[String]| v.iter().enumerate().all(|(i, n)| *n == format!("web-{i}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = names(&s);
        assert!(prefix(&v), "pods appear in ordinal order: {v:?}");
        if v.len() == 3 && running_pods(&s, "app=web").len() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "statefulset did not reach 3");
        std::thread::sleep(Duration::from_millis(30));
    }
    let pvcs = ok(&s, &["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(lines(&pvcs).len(), 3, "{pvcs}");
    assert!(pvcs.contains("www-web-0") && pvcs.contains("www-web-2"));
    // The default class provisions each claim a local volume on the node its
    // first pod was scheduled to, and binds them.
    assert!(ok(&s, &["get", "storageclass"]).contains("local-path (default)"));
    wait_for(&s, 30, |s| ok(s, &["get", "pvc", "-o", "jsonpath={.items[*].status.phase}"]) == "Bound Bound Bound");
    for i in 0..3 {
        let pv = ok(&s, &["get", "pvc", &format!("www-web-{i}"), "-o", "jsonpath={.spec.volumeName}"]);
        let node = ok(&s, &["get", "pod", &format!("web-{i}"), "-o", "jsonpath={.spec.nodeName}"]);
        let pinned = ok(&s, &["get", "pv", &pv, "-o", "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"]);
        assert_eq!(pinned, node, "{pv} lives on the node of web-{i}");
        let row = ok(&s, &["get", "pv", &pv, "--no-headers"]);
        assert!(row.contains("1Gi") && row.contains("RWO") && row.contains("Delete") && row.contains(&format!("default/www-web-{i}")), "{row}");
    }
    assert_eq!(ok(&s, &["get", "pod", "web-1", "-o", "jsonpath={.spec.hostname}.{.spec.subdomain}"]), "web-1.web");
    ok(&s, &["scale", "statefulset", "web", "--replicas=0"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = names(&s);
        assert!(prefix(&v), "pods go from the highest ordinal down: {v:?}");
        if v.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "statefulset did not scale to 0");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(lines(&ok(&s, &["get", "pvc", "-o", "name"])).len(), 3, "claims are kept on scale-down");
}

#[test]
fn daemonset_covers_untainted_nodes_and_follows_new_ones() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 3, "sim-", &[]);
    ok(&s, &["taint", "node", "sim-2", "dedicated=db:NoSchedule"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ds = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: x}]
";
    ok(&s, &["apply", "-f", &manifest(&dir, "ds.yaml", ds)]);
    let nodes_of = |s: &Server| -> Vec<String> {
        let mut v = lines(&ok(s, &["get", "pods", "-l", "app=agent", "--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].spec.nodeName}"]));
        v.sort();
        v
    };
    wait_for(&s, 30, |s| nodes_of(s) == ["sim-0", "sim-1"]);
    ok(&s, &["rollout", "status", "daemonset/agent", "--timeout=30s"]);
    let _more = sim_nodes(&s, 1, "extra-", &[]);
    wait_for(&s, 30, |s| nodes_of(s) == ["extra-0", "sim-0", "sim-1"]);
    assert_eq!(ok(&s, &["get", "ds", "agent", "-o", "jsonpath={.status.desiredNumberScheduled}"]), "3");
}

#[test]
fn jobs_complete_and_services_get_endpoints() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 2, "sim-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = "apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: x, command: ['true']}]
";
    ok(&s, &["apply", "-f", &manifest(&dir, "job.yaml", job)]);
    ok(&s, &["wait", "--for=condition=complete", "job/three", "--timeout=30s"]);
    assert_eq!(ok(&s, &["get", "job", "three", "-o", "jsonpath={.status.succeeded}"]), "3");
    assert!(ok(&s, &["get", "job", "three"]).contains("Complete"));

    ok(&s, &["create", "deployment", "api", "--image=x", "--replicas=2", "--port=8080"]);
    ok(&s, &["expose", "deployment", "api", "--port=80", "--target-port=8080"]);
    ok(&s, &["rollout", "status", "deployment/api", "--timeout=30s"]);
    // The endpoints controller creates the object after the Service: NotFound is "not yet".
    wait_for(&s, 30, |s| lines(&kubectl(s, &["get", "endpoints", "api", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]).1).len() == 2);
    let port = ok(&s, &["get", "endpoints", "api", "-o", "jsonpath={.subsets[0].ports[0].port}"]);
    assert_eq!(port, "8080");
    let slice = ok(&s, &["get", "endpointslices", "-l", "kubernetes.io/service-name=api", "-o", "jsonpath={.items[0].endpoints[*].addresses[0]}"]);
    assert_eq!(lines(&slice).len(), 2, "{slice}");
    let ip = ok(&s, &["get", "svc", "api", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10.43."), "{ip}");
    ok(&s, &["scale", "deployment", "api", "--replicas=1"]);
    wait_for(&s, 30, |s| lines(&ok(s, &["get", "endpoints", "api", "-o", "jsonpath={.subsets[*].addresses[*].ip}"])).len() == 1);
}

#[test]
fn cronjob_spawns_jobs_on_schedule() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 1, "sim-", &[]);
    ok(&s, &["create", "cronjob", "tick", "--image=x", "--schedule=* * * * *", "--", "true"]);
    // The next minute boundary is at most 60 s away.
    wait_for(&s, 75, |s| !ok(s, &["get", "jobs", "-o", "name"]).trim().is_empty());
    let job = ok(&s, &["get", "jobs", "-o", "jsonpath={.items[0].metadata.name}"]);
    assert!(job.starts_with("tick-"), "{job}");
    ok(&s, &["wait", "--for=condition=complete", &format!("job/{job}"), "--timeout=30s"]);
    wait_for(&s, 10, |s| !ok(s, &["get", "cronjob", "tick", "-o", "jsonpath={.status.lastScheduleTime}"]).is_empty());
}

#[test]
fn a_higher_priority_pod_preempts_a_lower_one() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 1, "small-", &["--cpu", "2"]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Priority comes from a PriorityClass (Priority admission refuses a
    // pod that sets the number itself).
    let classes = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 0\n---\n\
                   apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: vip}\nvalue: 1000\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "classes.yaml", classes)]);
    let pod = |name: &str, class: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  priorityClassName: {class}\n  containers: [{{name: c, image: x, resources: {{requests: {{cpu: '1'}}}}}}]\n")
    };
    ok(&s, &["apply", "-f", &manifest(&dir, "low1.yaml", &pod("low1", "low"))]);
    ok(&s, &["apply", "-f", &manifest(&dir, "low2.yaml", &pod("low2", "low"))]);
    wait_for(&s, 30, |s| lines(&ok(s, &["get", "pods", "--field-selector=status.phase=Running", "-o", "name"])).len() == 2);
    ok(&s, &["apply", "-f", &manifest(&dir, "vip.yaml", &pod("vip", "vip"))]);
    assert_eq!(ok(&s, &["get", "pod", "vip", "-o", "jsonpath={.spec.priority}"]), "1000");
    wait_for(&s, 60, |s| ok(s, &["get", "pod", "vip", "-o", "jsonpath={.status.phase}"]) == "Running");
    let left = lines(&ok(&s, &["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]));
    assert_eq!(left.len(), 2, "exactly one low-priority pod was preempted: {left:?}");
    let events = ok(&s, &["get", "events", "--field-selector", "reason=Preempted", "-o", "jsonpath={.items[*].message}"]);
    assert!(events.contains("Preempted by pod"), "{events}");
}

#[test]
fn finished_pods_beyond_the_threshold_are_collected() {
    let s = start_with(&["--terminated-pod-gc-threshold", "2"]);
    let _nodes = sim_nodes(&s, 1, "sim-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: five}\nspec:\n  completions: 5\n  parallelism: 5\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: x, command: ['true']}]\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "job.yaml", job)]);
    ok(&s, &["wait", "--for=condition=complete", "job/five", "--timeout=30s"]);
    wait_for(&s, 30, |s| lines(&ok(s, &["get", "pods", "--field-selector=status.phase=Succeeded", "-o", "name"])).len() == 2);
    // (The Job's own count is taken from the pods it sees: without job-tracking
    // finalizers a pod collected early can be missed, so it is not asserted.)
}

#[test]
fn a_job_whose_pods_fail_stops_at_its_backoff_limit() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 1, "sim-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: doomed}\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: x, command: ['false']}]\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "job.yaml", job)]);
    ok(&s, &["wait", "--for=condition=failed", "job/doomed", "--timeout=30s"]);
    let reason = ok(&s, &["get", "job", "doomed", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}"]);
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(ok(&s, &["get", "job", "doomed", "-o", "jsonpath={.status.failed}"]), "2", "backoffLimit 1: the second failure ends it");
    let exit = ok(&s, &["get", "pods", "-l", "job-name=doomed", "-o", "jsonpath={.items[0].status.containerStatuses[0].state.terminated.exitCode}"]);
    assert_eq!(exit, "1");
}

#[test]
fn claims_bind_to_fitting_volumes_and_volumes_are_reclaimed_by_policy() {
    let s = start_with(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let objs = "\
apiVersion: v1
kind: PersistentVolume
metadata: {name: small}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /tmp/skiff-test-small}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: big}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  storageClassName: manual
  hostPath: {path: /tmp/skiff-test-big}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: wants-2g}
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 2Gi}}
";
    ok(&s, &["apply", "-f", &manifest(&dir, "pv.yaml", objs)]);
    // The smallest volume that fits: 1Gi is too small, so the 10Gi one.
    wait_for(&s, 30, |s| ok(s, &["get", "pvc", "wants-2g", "-o", "jsonpath={.status.phase}/{.spec.volumeName}"]) == "Bound/big");
    assert_eq!(ok(&s, &["get", "pv", "big", "-o", "jsonpath={.status.phase}/{.spec.claimRef.name}"]), "Bound/wants-2g");
    assert_eq!(ok(&s, &["get", "pvc", "wants-2g", "-o", "jsonpath={.status.capacity.storage}"]), "10Gi");
    let table = ok(&s, &["get", "pvc", "wants-2g"]);
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"], "{table}");
    assert!(table.lines().nth(1).is_some_and(|r| r.contains("Bound") && r.contains("big") && r.contains("10Gi") && r.contains("RWO") && r.contains("manual")), "{table}");
    wait_for(&s, 30, |s| ok(s, &["get", "pv", "small", "-o", "jsonpath={.status.phase}"]) == "Available");
    // The claim's spec is fixed once bound, but for its request.
    let (success, _, err) = kubectl(&s, &["patch", "pvc", "wants-2g", "--type=merge", "-p", r#"{"spec":{"accessModes":["ReadOnlyMany"]}}"#]);
    assert!(!success && err.contains("spec is immutable after creation"), "{err}");
    // A volume kept (Retain, the default for volumes made by hand) is
    // Released when its claim goes.
    ok(&s, &["delete", "pvc", "wants-2g"]);
    wait_for(&s, 30, |s| ok(s, &["get", "pv", "big", "-o", "jsonpath={.status.phase}"]) == "Released");
    // A claim that names no class gets the default one; one of a class that
    // does not exist waits, and says why.
    let claims = "\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: defaulted}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nowhere}
spec:
  storageClassName: fast-ssd
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
";
    ok(&s, &["apply", "-f", &manifest(&dir, "pvc.yaml", claims)]);
    assert_eq!(ok(&s, &["get", "pvc", "defaulted", "-o", "jsonpath={.spec.storageClassName}"]), "local-path");
    wait_for(&s, 30, |s| {
        ok(s, &["get", "events", "--field-selector", "involvedObject.name=nowhere", "-o", "jsonpath={.items[*].message}"])
            .contains("storageclass.storage.k8s.io \"fast-ssd\" not found")
    });
    assert_eq!(ok(&s, &["get", "pvc", "nowhere", "-o", "jsonpath={.status.phase}"]), "Pending");
    // local-path waits for the first pod to be scheduled.
    wait_for(&s, 30, |s| {
        ok(s, &["get", "events", "--field-selector", "involvedObject.name=defaulted", "-o", "jsonpath={.items[*].reason}"]).contains("WaitForFirstConsumer")
    });
    assert_eq!(ok(&s, &["get", "pvc", "defaulted", "-o", "jsonpath={.status.phase}"]), "Pending");
    let (success, _, err) = kubectl(&s, &["apply", "-f", &manifest(&dir, "bad.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bad}\nspec: {resources: {requests: {storage: 1Gi}}}\n")]);
    assert!(!success && err.contains("spec.accessModes: Required value"), "{err}");
}

#[test]
fn pods_wait_for_their_claims_and_go_where_their_volumes_are() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 3, "vol-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = |name: &str, claim: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: x}}]\n  volumes: [{{name: v, persistentVolumeClaim: {{claimName: {claim}}}}}]\n")
    };
    // A claim that does not exist yet holds the pod back, and says so.
    ok(&s, &["apply", "-f", &manifest(&dir, "early.yaml", &pod("early", "later"))]);
    wait_for(&s, 30, |s| {
        ok(s, &["get", "pod", "early", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}"])
            .contains("persistentvolumeclaim \"later\" not found")
    });
    assert_eq!(ok(&s, &["get", "pod", "early", "-o", "jsonpath={.spec.nodeName}"]), "");
    // Once it does (local-path waits for this first consumer), the pod is
    // scheduled and the volume provisioned on its node.
    let claim = |name: &str, class: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  {class}accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n")
    };
    ok(&s, &["apply", "-f", &manifest(&dir, "later.yaml", &claim("later", ""))]);
    wait_for(&s, 30, |s| ok(s, &["get", "pvc", "later", "-o", "jsonpath={.status.phase}"]) == "Bound");
    let node = ok(&s, &["get", "pod", "early", "-o", "jsonpath={.spec.nodeName}"]);
    let pv = ok(&s, &["get", "pvc", "later", "-o", "jsonpath={.spec.volumeName}"]);
    assert_eq!(ok(&s, &["get", "pv", &pv, "-o", "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"]), node);
    // A pod using a bound local volume goes to the volume's node, whichever
    // of the three that is.
    let static_pv = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: on-vol-2}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  storageClassName: pinned\n  local: {path: /mnt/disk}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [vol-2]}]}]\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "pv.yaml", static_pv)]);
    ok(&s, &["apply", "-f", &manifest(&dir, "pinned.yaml", &claim("pinned", "storageClassName: pinned\n  "))]);
    wait_for(&s, 30, |s| ok(s, &["get", "pvc", "pinned", "-o", "jsonpath={.status.phase}"]) == "Bound");
    for i in 0..3 {
        let name = format!("user-{i}");
        ok(&s, &["apply", "-f", &manifest(&dir, &format!("{name}.yaml"), &pod(&name, "pinned"))]);
    }
    wait_for(&s, 30, |s| ok(s, &["get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"]).split_whitespace().count() == 4);
    for i in 0..3 {
        assert_eq!(ok(&s, &["get", "pod", &format!("user-{i}"), "-o", "jsonpath={.spec.nodeName}"]), "vol-2");
    }
}

/// `kubectl drain` (kubectl 1.33: protobuf DeleteOptions and Evictions)
/// stops at a PodDisruptionBudget's limit with Kubernetes' message and
/// completes once the budget allows; `cordon` taints the node.
#[test]
fn drain_waits_for_the_disruption_budget_and_cordon_taints_the_node() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 3, "sim-", &[]);
    ok(&s, &["create", "deployment", "web", "--image=nginx:1", "--replicas=4"]);
    ok(&s, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    ok(&s, &["create", "pdb", "web", "--selector=app=web", "--min-available=4"]);
    wait_for(&s, 10, |s| ok(s, &["get", "pdb", "web", "-o", "jsonpath={.status.currentHealthy}"]) == "4");
    let table = ok(&s, &["get", "pdb", "web"]);
    assert!(table.contains("MIN AVAILABLE") && table.contains("ALLOWED DISRUPTIONS"), "{table}");
    let described = ok(&s, &["describe", "pdb", "web"]);
    for want in ["Allowed disruptions:  0", "Current:              4", "Desired:              4", "Total:                4"] {
        assert!(described.contains(want), "{want:?} in {described}");
    }
    let node = ok(&s, &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].spec.nodeName}"]);
    let kubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
    let kubectl = if std::path::Path::new(kubectl).exists() { kubectl } else { common::kubectl_bin() };
    let mut drain = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["drain", &node, "--timeout=60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl drain");
    // The budget allows nothing yet: the drain keeps being refused.
    std::thread::sleep(Duration::from_secs(3));
    let taints = ok(&s, &["get", "node", &node, "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(taints.contains("node.kubernetes.io/unschedulable"), "cordoned: {taints}");
    if let Some(status) = drain.try_wait().expect("drain status") {
        let out = drain.wait_with_output().expect("drain output");
        let pdb = ok(&s, &["get", "pdb", "web", "-o", "jsonpath={.status}"]);
        panic!("drain must wait for the budget; it ended ({status}): {} {}\n{pdb}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(running_pods(&s, "app=web").len(), 4, "no pod was evicted past the budget");
    // Two more replicas (on the other nodes) make room for the drain.
    ok(&s, &["scale", "deployment", "web", "--replicas=6"]);
    let out = drain.wait_with_output().expect("drain output");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "drain: {stdout} {stderr}");
    assert!(stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."), "{stderr}");
    assert!(stdout.contains(&format!("node/{node} drained")), "{stdout}");
    let on_node = ok(&s, &["get", "pods", "-l", "app=web", "--field-selector", &format!("spec.nodeName={node}"), "-o", "name"]);
    assert!(on_node.trim().is_empty(), "drained node runs no pod: {on_node}");
    ok(&s, &["uncordon", &node]);
    wait_for(&s, 10, |s| !ok(s, &["get", "node", &node, "-o", "jsonpath={.spec.taints[*].key}"]).contains("unschedulable"));
}

/// A ReplicationController keeps its replicas (the ReplicaSet controller's
/// loop), scales through its scale subresource, and takes its pods along
/// when deleted.
#[test]
fn a_replication_controller_keeps_its_pods() {
    let s = start_with(&[]);
    let _nodes = sim_nodes(&s, 2, "sim-", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {app: legacy}}\n    spec: {containers: [{name: c, image: x}]}\n";
    ok(&s, &["apply", "-f", &manifest(&dir, "rc.yaml", rc)]);
    // The selector and labels default to the template's.
    assert_eq!(ok(&s, &["get", "rc", "legacy", "-o", "jsonpath={.spec.selector.app} {.metadata.labels.app}"]), "legacy legacy");
    wait_for(&s, 30, |s| running_pods(s, "app=legacy").len() == 3);
    wait_for(&s, 10, |s| ok(s, &["get", "rc", "legacy", "-o", "jsonpath={.status.readyReplicas}"]) == "3");
    let table = ok(&s, &["get", "rc", "legacy"]);
    assert!(table.contains("DESIRED") && table.lines().nth(1).is_some_and(|l| l.split_whitespace().take(4).collect::<Vec<_>>() == ["legacy", "3", "3", "3"]), "{table}");
    // A pod deleted behind its back is replaced; a scale-down is followed.
    let victim = running_pods(&s, "app=legacy")[0].clone();
    ok(&s, &["delete", "pod", &victim, "--wait=false"]);
    wait_for(&s, 30, |s| running_pods(s, "app=legacy").len() == 3 && !running_pods(s, "app=legacy").contains(&victim));
    ok(&s, &["scale", "rc", "legacy", "--replicas=1"]);
    wait_for(&s, 30, |s| running_pods(s, "app=legacy").len() == 1);
    let owner = ok(&s, &["get", "pods", "-l", "app=legacy", "-o", "jsonpath={.items[0].metadata.ownerReferences[0].kind}"]);
    assert_eq!(owner, "ReplicationController");
    ok(&s, &["delete", "rc", "legacy"]);
    wait_for(&s, 30, |s| ok(s, &["get", "pods", "-l", "app=legacy", "-o", "name"]).trim().is_empty());
}
