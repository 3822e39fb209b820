//! End-to-end tests of the node: `skiff server` with its agent, which
//! supervises a real containerd (runc, CNI bridge) and runs pods as
//! containers. Images are built from the machine's busybox-static and
//! imported air-gapped (dropped into `agent/images/` before start).
//!
//! These need root and Debian's containerd, runc, containernetworking-plugins
//! and busybox-static. Under `CI=true` a missing prerequisite fails the test;
//! elsewhere the test says so and returns.

mod common;
mod hosts;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{kubectl, manifest, ok, Server, WITH_AGENT};

const IMAGE: &str = "skiff.local/busybox:1";

fn prerequisites() -> Option<String> {
    let mut missing = skiff_cri::containerd::missing();
    if skiff_cri::which("busybox").is_none() {
        missing.push("busybox (busybox-static)".into());
    }
    for (program, package) in [("docker-registry", "docker-registry"), ("skopeo", "skopeo")] {
        if skiff_cri::which(program).is_none() {
            missing.push(format!("{program} (Debian package {package})"));
        }
    }
    if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))) {
        missing.push("root".into());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// A server with its node agent; deletes its pods before it stops, so no
/// container outlives the test.
struct Node {
    s: Server,
    name: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Workloads first: their controllers would start new pods for the
        // ones deleted, which would outlive the test.
        let workloads = "deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs,replicationcontrollers";
        let _ = kubectl(&self.s, &["delete", workloads, "--all", "-A", "--cascade=orphan", "--wait=true", "--timeout=30s"]);
        let _ = kubectl(&self.s, &["delete", "pods", "--all", "-A", "--grace-period=1", "--wait=true", "--timeout=60s"]);
        // Stopped before its network goes, so that no proxy sync puts a
        // table back after it is deleted.
        self.s.stop();
        // The node's bridge would outlive the test, and a later cluster given
        // the same pod range would find its routes taken.
        let agent = self.s.dir.path().join("agent");
        skiff_kubelet::network::remove(&agent);
        if let Ok(dir) = std::path::absolute(&agent) {
            let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &skiff_proxy::table_for(&dir)]).output();
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can run nodes; under CI=true it must.
fn can_run_nodes() -> bool {
    if let Some(missing) = prerequisites() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and the node e2e prerequisites are missing: {missing}");
        eprintln!("skipping: the node e2e tests need {missing}");
        return false;
    }
    true
}

/// A cluster CIDR and node name of this test's own: parallel tests never
/// share addresses, routes or nodes.
fn unique_cluster() -> (String, String) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let octet = 64 + (std::process::id() * 7 + n * 13) % 64;
    (format!("10.{octet}.0.0/16"), format!("node-{}-{n}", std::process::id()))
}

/// Puts the busybox test image where an agent with data dir `agent_dir`
/// imports it at start.
fn stage_images(agent_dir: &std::path::Path) {
    let images = agent_dir.join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    skiff_cri::oci::Image::busybox(IMAGE, &skiff_cri::which("busybox").expect("busybox"))
        .and_then(|i| i.write(&images.join("busybox.tar")))
        .expect("build the busybox image");
}

/// An image with the machine's kubectl (a static binary) beside busybox,
/// for clients inside pods.
const KUBECTL_IMAGE: &str = "skiff.local/kubectl:1";

fn stage_kubectl_image(agent_dir: &std::path::Path) {
    let kubectl = std::fs::read(common::kubectl_bin()).expect("read kubectl");
    skiff_cri::oci::Image::busybox(KUBECTL_IMAGE, &skiff_cri::which("busybox").expect("busybox"))
        .map(|i| i.file("bin/kubectl", kubectl, 0o755))
        .and_then(|i| i.write(&agent_dir.join("images").join("kubectl.tar")))
        .expect("build the kubectl image");
}

fn node_ready(s: &Server, name: &str) -> bool {
    jsonpath(s, &["node", name], "{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
}

/// Starts a node, or returns None (outside CI) when the machine cannot run one.
fn node() -> Option<Node> {
    node_with(&[])
}

/// Starts a node with extra server flags.
fn node_with(extra: &[&str]) -> Option<Node> {
    if !can_run_nodes() {
        return None;
    }
    let (cidr, name) = unique_cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    stage_images(&dir.path().join("agent"));
    let mut args = vec![WITH_AGENT, "--cluster-cidr", &cidr, "--node-name", &name, "--kubelet-port", "0"];
    args.extend_from_slice(extra);
    let s = common::start_in(dir, &args);
    common::wait_for(&s, 60, |s| node_ready(s, &name));
    Some(Node { s, name })
}

fn jsonpath(s: &Server, what: &[&str], path: &str) -> String {
    let mut args: Vec<&str> = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &p]);
    kubectl(s, &args).1
}

fn wait_until(s: &Server, secs: u64, what: &str, check: impl Fn(&Server) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check(s) {
        if Instant::now() > deadline {
            let (_, pods, _) = kubectl(s, &["get", "pods", "-o", "wide"]);
            let (_, events, _) = kubectl(s, &["get", "events", "--sort-by=.lastTimestamp"]);
            panic!("{what}: not reached in {secs} s\n{pods}\n{events}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl apply -f` of a manifest given as text.
fn apply(s: &Server, yaml: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    ok(s, &["apply", "-f", &manifest(&dir, "manifest.yaml", yaml)]);
}

fn phase(s: &Server, pod: &str) -> String {
    jsonpath(s, &["pod", pod], "{.status.phase}")
}

#[test]
fn a_pod_runs_and_kubectl_logs_shows_its_output() {
    let Some(n) = node() else { return };
    let s = &n.s;
    let runtime = jsonpath(s, &["node", &n.name], "{.status.nodeInfo.containerRuntimeVersion}");
    assert!(runtime.starts_with("containerd://"), "{runtime}");
    let row = ok(s, &["get", "node", &n.name, "--no-headers"]);
    assert!(row.split_whitespace().nth(2) == Some("control-plane"), "the server's node shows its role: {row}");
    ok(s, &["run", "hello", &format!("--image={IMAGE}"), "--restart=Never", "--", "sh", "-c", "echo hello from $(hostname); echo second line"]);
    wait_until(s, 60, "pod Succeeded", |s| phase(s, "hello") == "Succeeded");
    let logs = ok(s, &["logs", "hello"]);
    assert_eq!(logs, "hello from hello\nsecond line\n");
    assert_eq!(ok(s, &["logs", "hello", "--tail=1"]), "second line\n");
    let ip = jsonpath(s, &["pod", "hello"], "{.status.podIP}");
    assert!(ip.starts_with("10."), "pod IP from the node's podCIDR: {ip}");
    assert_eq!(jsonpath(s, &["pod", "hello"], "{.status.containerStatuses[0].state.terminated.reason}"), "Completed");
    let (success, _, err) = kubectl(s, &["logs", "hello", "--previous"]);
    assert!(!success && err.contains("previous terminated container"), "{err}");
    // `logs -f` streams each line as it is written and ends when the container does.
    ok(s, &["run", "ticker", &format!("--image={IMAGE}"), "--restart=Never", "--", "sh", "-c", "echo tick 1; sleep 2; echo tick 2; sleep 2; echo tick 3"]);
    wait_until(s, 60, "ticker running", |s| phase(s, "ticker") != "Pending");
    let mut follow = std::process::Command::new(common::kubectl_bin())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().expect("stdout")));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push((lines.next().and_then(Result::ok).unwrap_or_default(), Instant::now()));
    }
    assert_eq!(seen.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["tick 1", "tick 2", "tick 3"]);
    assert!(seen[2].1 - seen[0].1 >= Duration::from_millis(1500), "lines arrive as they are written, not at the end");
    let deadline = Instant::now() + Duration::from_secs(10);
    while follow.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "kubectl logs -f did not end after the container exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = seen[2].1.elapsed();
    assert!(lines.next().is_none(), "nothing after the last line");
    eprintln!("logs -f ended {ended:?} after the last line");
    // Services existing when a container starts show up as link variables,
    // and the `kubernetes` Service always does (in-cluster clients read it).
    ok(s, &["create", "service", "clusterip", "web-front", "--tcp=8080:80"]);
    ok(s, &["run", "envs", &format!("--image={IMAGE}"), "--restart=Never", "--", "sh", "-c", "env | grep -E '^(KUBERNETES|WEB_FRONT)_' | sort"]);
    wait_until(s, 60, "env pod Succeeded", |s| phase(s, "envs") == "Succeeded");
    let env = ok(s, &["logs", "envs"]);
    let kubernetes_ip = jsonpath(s, &["service", "kubernetes"], "{.spec.clusterIP}");
    let web_ip = jsonpath(s, &["service", "web-front"], "{.spec.clusterIP}");
    for line in [
        format!("KUBERNETES_SERVICE_HOST={kubernetes_ip}"),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        format!("KUBERNETES_PORT_443_TCP=tcp://{kubernetes_ip}:443"),
        format!("WEB_FRONT_SERVICE_HOST={web_ip}"),
        "WEB_FRONT_SERVICE_PORT=8080".to_string(),
        "WEB_FRONT_SERVICE_PORT_8080_80=8080".to_string(),
        format!("WEB_FRONT_PORT=tcp://{web_ip}:8080"),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from:\n{env}");
    }
    // A host-network pod sees the node's interfaces and name, and reports the node's IP.
    let host_net = r#"{"spec":{"hostNetwork":true}}"#;
    ok(
        s,
        &[
            "run",
            "hostnet",
            &format!("--image={IMAGE}"),
            "--restart=Never",
            "--overrides",
            host_net,
            "--",
            "sh",
            "-c",
            "hostname; cat /proc/net/dev | grep -c :",
        ],
    );
    wait_until(s, 60, "host-network pod Succeeded", |s| phase(s, "hostnet") == "Succeeded");
    let node_ip = jsonpath(s, &["node", &n.name], "{.status.addresses[?(@.type==\"InternalIP\")].address}");
    assert_eq!(jsonpath(s, &["pod", "hostnet"], "{.status.podIP}"), node_ip);
    let out = ok(s, &["logs", "hostnet"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(host.trim()), "{out}");
    let host_ifaces = std::fs::read_to_string("/proc/net/dev").expect("net dev").lines().filter(|l| l.contains(':')).count();
    let seen: usize = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    // The pod sees the host's interfaces (others may come and go meanwhile: other tests' veths).
    assert!(seen > 2 && seen.abs_diff(host_ifaces) <= 8, "pod saw {seen} interfaces, host has {host_ifaces}");
}

#[test]
fn containers_share_localhost_and_see_config_maps_secrets_and_env() {
    let Some(n) = node() else { return };
    let s = &n.s;
    ok(s, &["create", "configmap", "web", "--from-literal=index.html=served over localhost", "--from-literal=greeting=hi"]);
    ok(s, &["create", "secret", "generic", "creds", "--from-literal=password=s3cret"]);
    apply(
        s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: duo, labels: {{app: duo}}}}
spec:
  volumes:
  - {{name: site, configMap: {{name: web}}}}
  - {{name: creds, secret: {{secretName: creds}}}}
  containers:
  - name: server
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumeMounts: [{{name: site, mountPath: /www}}]
  - name: client
    image: {IMAGE}
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: web, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: MESSAGE, value: "$(GREETING) from $(POD_NAME)"}}
    volumeMounts: [{{name: creds, mountPath: /creds, readOnly: true}}]
    command: ["sh", "-c", "echo $MESSAGE; echo pw=$PASSWORD; cat /creds/password; echo; until timeout 2 wget -q -O - http://127.0.0.1:8080/index.html; do sleep 0.2; done; echo; sleep 3600"]
"#
        ),
    );
    wait_until(s, 60, "both containers ready", |s| jsonpath(s, &["pod", "duo"], "{.status.containerStatuses[*].ready}") == "true true");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubectl(s, &["logs", "duo", "-c", "client"]).1.contains("served over localhost") {
        if Instant::now() > deadline {
            let (_, client, _) = kubectl(s, &["logs", "duo", "-c", "client"]);
            let (_, server, _) = kubectl(s, &["logs", "duo", "-c", "server"]);
            let (_, netstat, _) = kubectl(s, &["exec", "duo", "-c", "server", "--", "sh", "-c", "netstat -ltn; ip addr"]);
            panic!("client output not reached in 30 s\nclient: {client}\nserver: {server}\n{netstat}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = ok(s, &["logs", "duo", "-c", "client"]);
    assert_eq!(logs, "hi from duo\npw=s3cret\ns3cret\nserved over localhost\n");
    // A configMap update reaches the running container's volume.
    ok(s, &["patch", "configmap", "web", "--type=merge", "-p", r#"{"data":{"index.html":"updated"}}"#]);
    wait_until(s, 60, "configMap update in the volume", |s| {
        let ip = jsonpath(s, &["pod", "duo"], "{.status.podIP}");
        std::process::Command::new("busybox")
            .args(["wget", "-q", "-O", "-", &format!("http://{ip}:8080/index.html")])
            .output()
            .is_ok_and(|o| o.stdout == b"updated")
    });
    // kubectl picks the first container when none is named, and says so.
    let (success, _, err) = kubectl(s, &["logs", "duo"]);
    assert!(success && err.contains("Defaulted container \"server\""), "{err}");
}

#[test]
fn probes_restart_unhealthy_containers_and_gate_readiness() {
    let Some(n) = node() else { return };
    let s = &n.s;
    apply(
        s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: flaky
    image: {IMAGE}
    command: ["sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600"]
    livenessProbe: {{exec: {{command: ["cat", "/tmp/healthy"]}}, periodSeconds: 1, failureThreshold: 2}}
  - name: slow
    image: {IMAGE}
    command: ["sh", "-c", "sleep 4; touch /tmp/ready; sleep 3600"]
    readinessProbe: {{exec: {{command: ["cat", "/tmp/ready"]}}, periodSeconds: 1}}
"#
        ),
    );
    wait_until(s, 30, "slow container running", |s| jsonpath(s, &["pod", "probed"], "{.status.containerStatuses[?(@.name==\"slow\")].started}") == "true");
    assert_eq!(jsonpath(s, &["pod", "probed"], "{.status.conditions[?(@.type==\"Ready\")].status}"), "False", "not ready before the readiness probe passes");
    wait_until(s, 30, "slow container ready", |s| jsonpath(s, &["pod", "probed"], "{.status.containerStatuses[?(@.name==\"slow\")].ready}") == "true");
    wait_until(s, 60, "liveness restarts", |s| {
        jsonpath(s, &["pod", "probed"], "{.status.containerStatuses[?(@.name==\"flaky\")].restartCount}").parse::<i32>().unwrap_or(0) >= 1
    });
    let events = ok(s, &["get", "events", "--field-selector", "involvedObject.name=probed"]);
    assert!(events.contains("Liveness probe failed") && events.contains("will be restarted"), "{events}");
}

#[test]
fn a_memory_hog_is_oom_killed_and_a_missing_image_backs_off() {
    let Some(n) = node() else { return };
    let s = &n.s;
    apply(
        s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: {IMAGE}
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]
    resources: {{limits: {{memory: 32Mi}}}}
"#
        ),
    );
    ok(s, &["run", "ghost", "--image=skiff.local/does-not-exist:1", "--restart=Never"]);
    wait_until(s, 60, "hog killed", |s| phase(s, "hog") == "Failed");
    assert_eq!(jsonpath(s, &["pod", "hog"], "{.status.containerStatuses[0].state.terminated.reason}"), "OOMKilled");
    wait_until(s, 60, "pull back-off", |s| {
        let r = jsonpath(s, &["pod", "ghost"], "{.status.containerStatuses[0].state.waiting.reason}");
        r == "ImagePullBackOff" || r == "ErrImagePull"
    });
    assert_eq!(phase(s, "ghost"), "Pending");
    let msg = jsonpath(s, &["pod", "ghost"], "{.status.containerStatuses[0].state.waiting.message}");
    assert!(msg.contains("skiff.local/does-not-exist:1"), "{msg}");
}

#[test]
fn deletion_runs_pre_stop_and_ends_within_the_grace_period() {
    let Some(n) = node() else { return };
    let s = &n.s;
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = dir.path().join("marks");
    std::fs::create_dir_all(&mark).expect("mark dir");
    apply(
        s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 3
  volumes: [{{name: marks, hostPath: {{path: {mark}}}}}]
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    lifecycle: {{preStop: {{exec: {{command: ["sh", "-c", "echo stopping > /marks/prestop"]}}}}}}
"#,
            mark = mark.display()
        ),
    );
    wait_until(s, 60, "running", |s| phase(s, "stubborn") == "Running");
    let started = Instant::now();
    ok(s, &["delete", "pod", "stubborn", "--wait=true", "--timeout=30s"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "a container ignoring SIGTERM is killed when its 3 s grace runs out; took {took:?}");
    assert!(took >= Duration::from_secs(2), "the grace period is honoured; took {took:?}");
    assert_eq!(std::fs::read_to_string(mark.join("prestop")).expect("preStop ran"), "stopping\n");
}

#[test]
fn lifecycle_hooks_exec_http_and_sleep_and_a_failed_post_start_kills_the_container() {
    let Some(n) = node() else { return };
    let s = &n.s;
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = dir.path().join("marks");
    std::fs::create_dir_all(&mark).expect("mark dir");
    // busybox httpd runs /cgi-bin scripts: the preStop GET leaves a mark.
    let web = r#"mkdir -p /www/cgi-bin; printf '#!/bin/sh\necho $HTTP_USER_AGENT > /marks/prestop\necho Content-Type: text/plain\necho\necho ok\n' > /www/cgi-bin/stop; chmod +x /www/cgi-bin/stop; httpd -p 8080 -h /www; trap 'exit 0' TERM; while true; do sleep 1; done"#;
    apply(
        s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: marks, hostPath: {{path: {mark}}}}}]
  containers:
  - name: web
    image: {IMAGE}
    command: ["sh", "-c", {web:?}]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo started > /marks/poststart"]}}}}
      preStop: {{httpGet: {{path: /cgi-bin/stop, port: 8080}}}}
  - name: pause
    image: {IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    lifecycle: {{preStop: {{sleep: {{seconds: 3}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: broken}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sleep", "3600"]
    lifecycle: {{postStart: {{exec: {{command: ["sh", "-c", "echo no; exit 7"]}}}}}}
"#,
            mark = mark.display()
        ),
    );
    wait_until(s, 60, "running", |s| jsonpath(s, &["pod", "hooked"], "{.status.containerStatuses[*].ready}") == "true true");
    assert_eq!(std::fs::read_to_string(mark.join("poststart")).expect("postStart ran"), "started\n");
    // A failing postStart hook is an event and kills the container, which restarts.
    wait_until(s, 60, "broken restarted", |s| jsonpath(s, &["pod", "broken"], "{.status.containerStatuses[0].restartCount}").parse::<u32>().unwrap_or(0) >= 1);
    let events = ok(s, &["get", "events", "--field-selector", "involvedObject.name=broken,reason=FailedPostStartHook", "-o", "jsonpath={.items[*].message}"]);
    assert!(events.contains("Exec lifecycle hook ([sh -c echo no; exit 7]) for Container \"c\" in Pod \"broken_default("), "{events}");
    assert!(events.contains("exited with 7: no"), "{events}");
    // Deletion: the HTTP preStop hook reaches the container; the sleep hook holds its container ~3 s.
    let started = Instant::now();
    ok(s, &["delete", "pod", "hooked", "--wait=true", "--timeout=30s"]);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(15), "preStop sleep of 3 s, grace 20 s; deletion took {took:?}");
    let agent = std::fs::read_to_string(mark.join("prestop")).expect("the preStop GET reached httpd");
    assert!(agent.starts_with("kube-lifecycle/"), "{agent}");
}

#[test]
fn the_security_context_sets_users_groups_a_read_only_root_and_capabilities() {
    let Some(n) = node() else { return };
    let s = &n.s;
    apply(
        s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: confined}}
spec:
  restartPolicy: Never
  securityContext: {{supplementalGroups: [4000]}}
  containers:
  - name: user
    image: {IMAGE}
    command: ["sh", "-c", "id -u; id -g; id -G; touch /x 2>&1; grep NoNewPrivs /proc/self/status"]
    securityContext: {{runAsUser: 1000, runAsGroup: 3000, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}}
  - name: caps
    image: {IMAGE}
    command: ["sh", "-c", "grep CapEff /proc/self/status"]
    securityContext: {{capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}}}
"#
        ),
    );
    wait_until(s, 60, "finished", |s| phase(s, "confined") == "Succeeded");
    let user = ok(s, &["logs", "confined", "-c", "user"]);
    let lines: Vec<&str> = user.lines().collect();
    assert_eq!(lines.first(), Some(&"1000"), "{user}");
    assert_eq!(lines.get(1), Some(&"3000"), "{user}");
    assert!(lines.get(2).is_some_and(|g| g.split(' ').any(|g| g == "4000")), "supplemental group: {user}");
    assert!(user.contains("Read-only file system"), "{user}");
    assert!(user.contains("NoNewPrivs:\t1"), "{user}");
    // NET_BIND_SERVICE is capability 10: only that bit is left.
    assert_eq!(ok(s, &["logs", "confined", "-c", "caps"]).trim(), "CapEff:\t0000000000000400");
}

#[test]
fn restarting_the_node_keeps_running_containers() {
    let Some(mut n) = node() else { return };
    ok(&n.s, &["run", "steady", &format!("--image={IMAGE}"), "--", "sleep", "3600"]);
    wait_until(&n.s, 60, "running", |s| phase(s, "steady") == "Running");
    let id = jsonpath(&n.s, &["pod", "steady"], "{.status.containerStatuses[0].containerID}");
    n.s.restart();
    wait_until(&n.s, 60, "node ready again", |s| jsonpath(s, &["node", &n.name], "{.status.conditions[?(@.type==\"Ready\")].status}") == "True");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(jsonpath(&n.s, &["pod", "steady"], "{.status.containerStatuses[0].containerID}"), id, "the same container, not a new one");
    assert_eq!(jsonpath(&n.s, &["pod", "steady"], "{.status.containerStatuses[0].restartCount}"), "0");
    assert_eq!(phase(&n.s, "steady"), "Running");
    // A pod deleted while its node was down has its containers removed
    // when the node is back, with no other event on the node to prompt it
    // (no container has exited on it).
    let socket = n.s.dir.path().join("agent/containerd/containerd.sock");
    // The runtime's tasks, once the node's containerd answers.
    let tasks = |socket: &std::path::Path| {
        let out = std::process::Command::new("ctr").arg("-a").arg(socket).args(["-n", "k8s.io", "tasks", "ls", "-q"]).output().expect("ctr");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let steady = id.trim_start_matches("containerd://").to_string();
    assert!(tasks(&socket).is_some_and(|t| t.contains(&steady)), "the container runs");
    let pid = container_pid(&socket, &steady);
    n.s.restart_without_agent();
    common::wait_for(&n.s, 30, |s| kubectl(s, &["get", "pod", "steady"]).0);
    ok(&n.s, &["delete", "pod", "steady", "--force", "--grace-period=0"]);
    n.s.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tasks(&socket).is_none_or(|t| t.contains(&steady)) || std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the deleted pod's container (pid {pid}) still runs 20 s after its node came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // And the restarted node still runs new pods.
    ok(&n.s, &["run", "after", &format!("--image={IMAGE}"), "--restart=Never", "--", "echo", "after restart"]);
    wait_until(&n.s, 60, "new pod done", |s| phase(s, "after") == "Succeeded");
    assert_eq!(ok(&n.s, &["logs", "after"]), "after restart\n");
}

#[test]
fn exec_cp_attach_and_port_forward_reach_the_container() {
    let Some(n) = node() else { return };
    let s = &n.s;
    ok(
        s,
        &[
            "run",
            "box",
            &format!("--image={IMAGE}"),
            "--",
            "sh",
            "-c",
            "mkdir -p /www; echo served > /www/index.html; httpd -p 8080 -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        ],
    );
    wait_until(s, 60, "running", |s| phase(s, "box") == "Running");
    // The exit code comes back through kubectl, from today's WebSocket client and from SPDY (1.27).
    for bin in [common::kubectl_bin(), "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"] {
        if !std::path::Path::new(bin).exists() && bin != common::kubectl_bin() {
            continue;
        }
        let (success, out, err) = common::kubectl_with(bin, s, &["exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert!(!success, "{bin}: a failing command fails kubectl");
        assert_eq!(out, "out\n", "{bin}");
        assert!(err.contains("err\n") && err.contains("command terminated with exit code 3"), "{bin}: {err}");
    }
    let out = std::process::Command::new(common::kubectl_bin())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["exec", "-i", "box", "--", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"through stdin\n")?;
            c.wait_with_output()
        })
        .expect("kubectl exec -i");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "THROUGH STDIN\n");
    // kubectl cp is tar over exec, both ways.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("up.txt");
    std::fs::write(&local, "copied up\n").expect("write");
    ok(s, &["cp", &local.display().to_string(), "box:/tmp/up.txt"]);
    assert_eq!(ok(s, &["exec", "box", "--", "cat", "/tmp/up.txt"]), "copied up\n");
    let back = dir.path().join("down.txt");
    ok(s, &["cp", "box:/tmp/up.txt", &back.display().to_string()]);
    assert_eq!(std::fs::read_to_string(&back).expect("copied down"), "copied up\n");
    // attach streams the running container's output.
    let attach = std::process::Command::new("timeout")
        .args(["5", common::kubectl_bin(), "--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(["attach", "box"])
        .output()
        .expect("kubectl attach");
    assert!(String::from_utf8_lossy(&attach.stdout).contains("tick "), "{}", String::from_utf8_lossy(&attach.stderr));
    // `kubectl run -i --rm` of a command that is done before kubectl can
    // attach still prints its output: the attach is refused, and kubectl
    // falls back to the logs.
    // (An attach let in just before the container exits, after it wrote,
    // sees nothing: kube-apiserver and the kubelet have the same race,
    // which a loaded machine can hit; so two runs of three must print.)
    let mut printed = Vec::new();
    for i in 0..3 {
        let name = format!("quick-{i}");
        let (success, out, err) = kubectl(s, &["run", &name, &format!("--image={IMAGE}"), "--rm", "-i", "--restart=Never", "--", "echo", "quick output"]);
        assert!(success, "run {i}: {out}\n{err}");
        printed.push((out.lines().any(|l| l == "quick output"), out, err));
    }
    assert!(printed.iter().filter(|p| p.0).count() >= 2, "kubectl run -i printed its output: {printed:?}");
    // port-forward reaches busybox httpd in the pod, from today's kubectl (SPDY
    // tunneled in WebSocket, served without falling back) and 1.29's (SPDY).
    for (bin, port) in [(common::kubectl_bin(), 0), ("/usr/lib/google-cloud-sdk/bin/kubectl.1.29", 1)] {
        if !std::path::Path::new(bin).exists() {
            continue;
        }
        let local_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port() + port;
        let log = dir.path().join(format!("port-forward-{port}.log"));
        let mut pf = std::process::Command::new(bin)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(["port-forward", "-v=4", "pod/box", &format!("{local_port}:8080")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("kubectl port-forward");
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            let got = std::process::Command::new("timeout")
                .args(["3", "busybox", "wget", "-q", "-O", "-", &format!("http://127.0.0.1:{local_port}/index.html")])
                .output();
            if let Some(o) = got.ok().filter(|o| o.status.success()) {
                break String::from_utf8_lossy(&o.stdout).into_owned();
            }
            assert!(Instant::now() < deadline, "{bin}: port-forward never answered");
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = pf.kill();
        let _ = pf.wait();
        assert_eq!(body, "served\n", "{bin}");
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!said.contains("fallback to secondary dialer"), "{bin} had to fall back: {said}");
    }
}

#[test]
fn the_python_client_reads_logs_execs_and_port_forwards() {
    let Some(n) = node() else { return };
    let s = &n.s;
    ok(
        s,
        &[
            "run",
            "web",
            &format!("--image={IMAGE}"),
            "--",
            "sh",
            "-c",
            "mkdir -p /www; echo served > /www/index.html; httpd -p 8080 -h /www; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        ],
    );
    wait_until(s, 60, "running", |s| phase(s, "web") == "Running" && kubectl(s, &["logs", "web"]).1.contains("tick 1"));
    let kubeconfig = s.kubeconfig.display().to_string();
    common::python_client("node.py", &[&kubeconfig, "default", "web"]);
}

/// A `skiff agent` process that joined a server with its token.
struct JoinedAgent {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for JoinedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        skiff_kubelet::network::remove(self.dir.path());
        if let Ok(dir) = std::path::absolute(self.dir.path()) {
            let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &skiff_proxy::table_for(&dir)]).output();
        }
    }
}

fn agent(s: &Server, dir: &std::path::Path, token: &str, name: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
    // No proxy and no pod network: this test's agents share the host's
    // nftables and routes with others.
    c.args([
        "agent",
        "--server",
        &format!("https://127.0.0.1:{}", s.port),
        "--token",
        token,
        "--node-name",
        name,
        "--kubelet-port",
        "0",
        "--disable",
        "proxy",
        "--flannel-backend",
        "none",
        // Tests' agents run side by side: each its own balancer port.
        "--lb-server-port",
        "0",
        "--data-dir",
    ])
    .arg(dir);
    c
}

#[test]
fn an_agent_joins_with_the_servers_token_and_runs_pods() {
    if !can_run_nodes() {
        return;
    }
    let (cidr, name) = unique_cluster();
    let s = common::start_with(&["--cluster-cidr", &cidr]);
    let token = std::fs::read_to_string(s.dir.path().join("node-token")).expect("the server writes DATA_DIR/node-token");
    let token = token.trim();
    assert!(token.starts_with("K10") && token.contains("::node:"), "{token}");
    let dir = tempfile::tempdir().expect("agent dir");

    // A wrong secret is refused, and so is a token pinning another CA.
    let wrong_secret = format!("{}::node:not-the-secret", token.split("::").next().expect("hash"));
    let out = agent(&s, dir.path(), &wrong_secret, &name).output().expect("run agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refused the token"), "{err}");
    let other_ca = format!("K10{}::node:x", "0".repeat(64));
    let out = agent(&s, dir.path(), &other_ca, &name).output().expect("run agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not the one the token pins"), "{err}");
    assert!(kubectl(&s, &["get", "node", &name]).2.contains("NotFound"), "no node registered without a valid token");

    stage_images(dir.path());
    let child = agent(&s, dir.path(), token, &name).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().expect("spawn agent");
    let joined = JoinedAgent { child, dir };
    wait_until(&s, 60, "joined node Ready", |s| node_ready(s, &name));
    // The node holds its own keys and the CA certificate, never the CA's key.
    let pki = joined.dir.path().join("pki");
    assert!(pki.join("ca.crt").exists() && !pki.join("ca.key").exists());
    let kubeconfig = std::fs::read_to_string(joined.dir.path().join("kubelet.kubeconfig")).expect("the agent writes its kubeconfig");
    assert!(kubeconfig.contains(&format!("system:node:{name}")), "{kubeconfig}");
    // The joined node runs a pod, and its kubelet API (serving certificate
    // signed at join) answers `kubectl logs` through the API server.
    ok(
        &s,
        &[
            "run",
            "joined",
            &format!("--image={IMAGE}"),
            "--restart=Never",
            "--overrides",
            &format!(r#"{{"spec":{{"nodeName":"{name}"}}}}"#),
            "--",
            "echo",
            "hello from a joined node",
        ],
    );
    wait_until(&s, 60, "pod Succeeded", |s| phase(s, "joined") == "Succeeded");
    assert_eq!(ok(&s, &["logs", "joined"]), "hello from a joined node\n");
    let _ = kubectl(&s, &["delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    drop(joined);
}

#[test]
fn a_joined_kubelet_renews_its_certificates_while_its_pods_run() {
    if !can_run_nodes() {
        return;
    }
    let (cidr, name) = unique_cluster();
    // Nodes' certificates live 40 s: renewed 22–34 s after they are issued.
    let s = common::start_with(&["--cluster-cidr", &cidr, "--cluster-signing-duration", "40s"]);
    let token = std::fs::read_to_string(s.dir.path().join("node-token")).expect("node-token");
    let dir = tempfile::tempdir().expect("agent dir");
    stage_images(dir.path());
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
    let child = agent(&s, dir.path(), token.trim(), &name).stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("spawn agent");
    let joined = JoinedAgent { child, dir };
    wait_until(&s, 60, "joined node Ready", |s| node_ready(s, &name));
    let joined_at = Instant::now();
    let pki = joined.dir.path().join("pki");
    let client_file = pki.join(format!("kubelet-client-{name}.crt"));
    let serving_file = std::fs::read_dir(&pki)
        .expect("pki dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&format!("kubelet-serving-{name}")) && f.to_string_lossy().ends_with(".crt")))
        .expect("the serving certificate file");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let (first_client, first_serving) = (read(&client_file), read(&serving_file));
    let on_node = format!(r#"{{"spec":{{"nodeName":"{name}"}}}}"#);
    ok(&s, &["run", "ticker", &format!("--image={IMAGE}"), "--overrides", &on_node, "--", "sh", "-c", "while true; do echo tick; sleep 1; done"]);
    wait_until(&s, 60, "ticker Running", |s| phase(s, "ticker") == "Running");
    let renewed = |_: &Server| read(&client_file) != first_client && read(&serving_file) != first_serving;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !renewed(&s) {
        assert!(
            Instant::now() < deadline,
            "both certificates renewed within 60 s; the agent said: {}\nrequests: {}",
            read(&joined.dir.path().join("agent.log")),
            kubectl(&s, &["get", "csr", "-o", "yaml"]).1
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Through the certificates API: the node asked, the built-in approver
    // and signer answered.
    let csrs = ok(&s, &["get", "csr", "-o", "jsonpath={range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[0].type}{\"\\n\"}{end}"]);
    for signer in ["kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"] {
        assert!(csrs.contains(&format!("{signer} system:node:{name} Approved")), "{csrs}");
    }
    // Past the end of the certificates it joined with, nothing restarted:
    // the pod runs on, `kubectl logs` reaches the kubelet (which presents a
    // renewed serving certificate), and a new pod runs there.
    let past = Duration::from_secs(45).saturating_sub(joined_at.elapsed());
    std::thread::sleep(past);
    assert_eq!(phase(&s, "ticker"), "Running");
    assert!(jsonpath(&s, &["pod", "ticker"], "{.status.containerStatuses[0].restartCount}") == "0", "the pod never restarted");
    assert!(ok(&s, &["logs", "ticker", "--tail=1"]).contains("tick"));
    assert!(node_ready(&s, &name), "the node stays Ready");
    ok(&s, &["run", "later", &format!("--image={IMAGE}"), "--restart=Never", "--overrides", &on_node, "--", "echo", "after renewal"]);
    wait_until(&s, 60, "later Succeeded", |s| phase(s, "later") == "Succeeded");
    assert_eq!(ok(&s, &["logs", "later"]), "after renewal\n");
    let _ = kubectl(&s, &["delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    drop(joined);
}

#[test]
fn the_kubelet_api_asks_the_api_server_who_may_use_it() {
    let Some(n) = node() else { return };
    let s = &n.s;
    let port = jsonpath(s, &["node", &n.name], "{.status.daemonEndpoints.kubeletEndpoint.Port}");
    // A caller the API server vouches for by token, with or without a role
    // on nodes' kubelet API.
    ok(s, &["create", "serviceaccount", "scraper"]);
    ok(s, &["create", "serviceaccount", "nobody"]);
    ok(s, &["create", "clusterrolebinding", "scraper", "--clusterrole=system:kubelet-api-admin", "--serviceaccount=default:scraper"]);
    let call = |token: Option<&str>, path: &str| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sk", "-o", "-", "-w", "\n%{http_code}", &format!("https://127.0.0.1:{port}{path}")]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = c.output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let scraper = ok(s, &["create", "token", "scraper"]);
    let nobody = ok(s, &["create", "token", "nobody"]);
    assert!(call(None, "/stats/summary").ends_with("401"), "no credential: 401");
    assert!(call(Some("not-a-token"), "/stats/summary").ends_with("401"), "a token the API server does not know: 401");
    let refused = call(Some(nobody.trim()), "/stats/summary");
    assert!(refused.ends_with("403") && refused.contains("Forbidden (user=system:serviceaccount:default:nobody, verb=get, resource=nodes, subresource(s)=[stats])"), "{refused}");
    let answered = call(Some(scraper.trim()), "/stats/summary");
    assert!(answered.ends_with("200") && answered.contains(&format!("\"nodeName\":\"{}\"", n.name)), "{answered}");
    // The API server's own path to the kubelet is untouched.
    assert!(ok(s, &["get", "--raw", &format!("/api/v1/nodes/{}/proxy/stats/summary", n.name)]).contains("nodeName"));
}

/// Debian's `docker-registry` serving from a temp dir on a free loopback port.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> Registry {
    let dir = tempfile::tempdir().expect("registry dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = dir.path().join("config.yml");
    let yaml = format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", dir.path().join("data").display());
    std::fs::write(&config, yaml).expect("registry config");
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn docker-registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, port, _dir: dir }
}

#[test]
fn a_pod_pulls_its_image_from_a_registry() {
    if !can_run_nodes() {
        return;
    }
    let reg = registry();
    let host = format!("127.0.0.1:{}", reg.port);
    // An image pushed with skopeo, never imported into the node.
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("pushed.tar");
    skiff_cri::oci::Image::busybox("skiff.local/pushed:1", &skiff_cri::which("busybox").expect("busybox"))
        .and_then(|i| i.write(&archive))
        .expect("build image");
    let image = format!("{host}/team/pushed:1");
    let push = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", archive.display()), &format!("docker://{image}")])
        .output()
        .expect("skopeo");
    assert!(push.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&push.stderr));

    let Some(n) = node_with(&["--insecure-registry", &host]) else { return };
    let s = &n.s;
    ok(s, &["run", "pulled", &format!("--image={image}"), "--image-pull-policy=Always", "--restart=Never", "--", "echo", "pulled from the registry"]);
    wait_until(s, 60, "pulled pod Succeeded", |s| phase(s, "pulled") == "Succeeded");
    assert_eq!(ok(s, &["logs", "pulled"]), "pulled from the registry\n");
    let events =
        ok(s, &["get", "events", "--field-selector", "involvedObject.name=pulled", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}"]);
    assert!(events.contains(&format!("Pulling: Pulling image \"{image}\"")), "{events}");
    assert!(events.lines().any(|l| l.starts_with("Pulled: Successfully pulled image")), "{events}");
    // A tag the registry does not have: the runtime's message comes back.
    ok(s, &["run", "absent", &format!("--image={host}/team/pushed:absent"), "--restart=Never"]);
    wait_until(s, 60, "pull failure reported", |s| {
        let waiting = jsonpath(s, &["pod", "absent"], "{.status.containerStatuses[0].state.waiting.reason}");
        waiting == "ErrImagePull" || waiting == "ImagePullBackOff"
    });
    // The runtime's own words are in the Failed event (the waiting message
    // moves on to "Back-off pulling image" once back-off starts).
    let failed = ok(s, &["get", "events", "--field-selector", "involvedObject.name=absent,reason=Failed", "-o", "jsonpath={.items[*].message}"]);
    assert!(failed.contains("Failed to pull image") && failed.contains("pushed:absent") && failed.contains("not found"), "{failed}");
}

/// The millicores in a `kubectl top` CPU cell (`250m`, or whole cores `1`).
fn millicores(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => cell.parse::<u64>().map(|c| c * 1000).unwrap_or(0),
    }
}

#[test]
fn an_hpa_scales_a_cpu_burning_deployment_up_and_back_down() {
    let Some(n) = node() else { return };
    let s = &n.s;
    apply(
        s,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {IMAGE}
        command: ["sh", "-c", "while true; do :; done"]
        resources: {{requests: {{cpu: 50m}}, limits: {{cpu: 150m}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: burn}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: burn}}
  minReplicas: 1
  maxReplicas: 3
  metrics: [{{type: Resource, resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}}}]
  behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}
"#
        ),
    );
    // Each pod burns up to 150m against a 50m request: ~300 %, six times the
    // target; the HPA goes to its maximum.
    wait_until(s, 120, "scaled up to 3", |s| jsonpath(s, &["deploy", "burn"], "{.spec.replicas}") == "3");
    wait_until(s, 60, "the HPA reports its reading", |s| {
        let util = jsonpath(s, &["hpa", "burn"], "{.status.currentMetrics[0].resource.current.averageUtilization}");
        util.parse::<i64>().is_ok_and(|u| u > 50)
    });
    let conditions = jsonpath(s, &["hpa", "burn"], "{range .status.conditions[*]}{.type}={.status}/{.reason} {end}");
    assert!(conditions.contains("ScalingActive=True/ValidMetricFound") && conditions.contains("ScalingLimited=True/TooManyReplicas"), "{conditions}");
    // The next sync reports the 3 replicas it made.
    wait_until(s, 40, "kubectl get hpa shows 3 replicas", |s| {
        let row = ok(s, &["get", "hpa", "burn"]);
        row.contains("Deployment/burn") && row.contains("/50%") && row.contains("   1         3         3")
    });
    // The load stops: back to the minimum.
    ok(s, &["patch", "deploy", "burn", "--type=json", "-p", r#"[{"op": "replace", "path": "/spec/template/spec/containers/0/command", "value": ["sleep", "3600"]}]"#]);
    wait_until(s, 180, "scaled back down to 1", |s| jsonpath(s, &["deploy", "burn"], "{.spec.replicas}") == "1");
}

#[test]
fn runtime_classes_choose_the_runtime_handler_and_add_their_overhead() {
    let Some(n) = node() else { return };
    let s = &n.s;
    apply(
        s,
        &format!(
            r#"
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {{name: plain}}
handler: runc
overhead: {{podFixed: {{cpu: 10m, memory: 1Mi}}}}
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {{name: sandboxed}}
handler: kata
---
apiVersion: v1
kind: Pod
metadata: {{name: plain}}
spec:
  runtimeClassName: plain
  restartPolicy: Never
  containers: [{{name: c, image: {IMAGE}, command: ["echo", "on runc"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: sandboxed}}
spec:
  runtimeClassName: sandboxed
  containers: [{{name: c, image: {IMAGE}, command: ["sleep", "60"]}}]
"#
        ),
    );
    wait_until(s, 60, "plain Succeeded", |s| phase(s, "plain") == "Succeeded");
    assert_eq!(ok(s, &["logs", "plain"]), "on runc\n");
    assert_eq!(jsonpath(s, &["pod", "plain"], "{.spec.overhead.cpu}"), "10m", "the class's overhead is the pod's");
    // A handler the runtime does not have: the sandbox is refused, and says why.
    wait_until(s, 60, "the sandbox refused", |s| {
        let events = ok(s, &["get", "events", "--field-selector", "involvedObject.name=sandboxed", "-o", "jsonpath={.items[*].message}"]);
        events.contains("Failed to create pod sandbox") && events.contains("kata")
    });
    assert_eq!(phase(s, "sandboxed"), "Pending");
    // A class that does not exist: refused at admission, as kube words it.
    let (created, _, err) = kubectl(s, &["run", "nowhere", &format!("--image={IMAGE}"), "--overrides", r#"{"spec":{"runtimeClassName":"nope"}}"#]);
    assert!(!created && err.contains(r#"pods "nowhere" is forbidden: pod rejected: RuntimeClass "nope" not found"#), "{err}");
}

#[test]
fn kubectl_debug_adds_an_ephemeral_container_to_a_running_pod() {
    let Some(n) = node() else { return };
    let s = &n.s;
    ok(s, &["run", "target", &format!("--image={IMAGE}"), "--", "sleep", "3600"]);
    wait_until(s, 60, "target Running", |s| phase(s, "target") == "Running");
    // Through the pods/ephemeralcontainers subresource, as kubectl sends it.
    ok(s, &["debug", "target", &format!("--image={IMAGE}"), "-c", "debugger", "--", "sh", "-c", "echo from the debugger"]);
    wait_until(s, 60, "the debugger ran", |s| {
        jsonpath(s, &["pod", "target"], "{.status.ephemeralContainerStatuses[0].state.terminated.exitCode}") == "0"
    });
    assert_eq!(ok(s, &["logs", "target", "-c", "debugger"]), "from the debugger\n");
    assert_eq!(phase(s, "target"), "Running", "the pod runs on, its container untouched");
    assert_eq!(jsonpath(s, &["pod", "target"], "{.status.containerStatuses[0].restartCount}"), "0");
    // Interactive: stdin reaches the ephemeral container through attach.
    let mut child = std::process::Command::new(common::kubectl_bin())
        .args(["--kubeconfig", &s.kubeconfig.display().to_string(), "debug", "-i", "target", &format!("--image={IMAGE}"), "-c", "shell", "--", "sh"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl debug -i");
    // Output from before the attach is lost (as with any attach): ask
    // until the answer comes back, then leave.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let mut said = Vec::new();
    for _ in 0..30 {
        use std::io::Write;
        let _ = stdin.write_all(b"echo attached to $(hostname)\n");
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            said.push(line);
            break;
        }
    }
    {
        use std::io::Write;
        let _ = stdin.write_all(b"exit\n");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("kubectl debug -i");
    assert!(said.iter().any(|l| l == "attached to target"), "{said:?} {}", String::from_utf8_lossy(&out.stderr));
    // What an ephemeral container may not have, and what may not change.
    let (patched, _, err) = kubectl(
        s,
        &["patch", "pod", "target", "--subresource=ephemeralcontainers", "--type=strategic", "-p", &format!(r#"{{"spec":{{"ephemeralContainers":[{{"name":"bad","image":"{IMAGE}","ports":[{{"containerPort":80}}]}}]}}}}"#)],
    );
    assert!(!patched && err.contains("spec.ephemeralContainers[2].ports: Forbidden: cannot be set for an Ephemeral Container"), "{err}");
    let (patched, _, err) = kubectl(s, &["patch", "pod", "target", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/ephemeralContainers"}]"#]);
    assert!(patched || err.contains("Forbidden"), "{err}");
    assert_eq!(jsonpath(s, &["pod", "target"], "{.spec.ephemeralContainers[*].name}"), "debugger shell", "only the subresource changes them");
}

#[test]
fn kubectl_top_reports_node_and_pod_usage() {
    let Some(n) = node() else { return };
    let s = &n.s;
    ok(s, &["run", "burner", &format!("--image={IMAGE}"), "--", "sh", "-c", "while true; do :; done"]);
    ok(s, &["run", "idler", &format!("--image={IMAGE}"), "--", "sleep", "3600"]);
    wait_until(s, 60, "running", |s| phase(s, "burner") == "Running" && phase(s, "idler") == "Running");
    // kubectl finds metrics.k8s.io in discovery and reads NodeMetrics.
    let top = ok(s, &["top", "node"]);
    let row: Vec<&str> = top.lines().find(|l| l.starts_with(&n.name)).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    assert_eq!(row.len(), 5, "NAME CPU(cores) CPU% MEMORY(bytes) MEMORY%: {top}");
    assert!(millicores(row[1]) > 0 && row[2].ends_with('%') && row[3].ends_with("Mi") && row[4].ends_with('%'), "{top}");
    // The busy loop shows as most of a core; the sleeper as next to none.
    let top = ok(s, &["top", "pod"]);
    let cpu = |pod: &str| top.lines().find(|l| l.starts_with(pod)).and_then(|l| l.split_whitespace().nth(1)).map(millicores);
    assert!(cpu("burner").is_some_and(|m| m >= 300), "{top}");
    assert!(cpu("idler").is_some_and(|m| m < 100), "{top}");
    let by_label = ok(s, &["top", "pod", "-l", "run=idler", "--containers"]);
    assert!(by_label.contains("idler") && !by_label.contains("burner"), "{by_label}");
    let (success, _, err) = kubectl(s, &["top", "pod", "nonexistent"]);
    assert!(!success && err.contains("not found"), "{err}");
    // The node proxy reaches the same kubelet API.
    let summary: serde_json::Value =
        serde_json::from_str(&ok(s, &["get", "--raw", &format!("/api/v1/nodes/{}/proxy/stats/summary", n.name)])).expect("summary is JSON");
    assert_eq!(summary["node"]["nodeName"], n.name.as_str(), "{summary}");
    assert!(summary["pods"].as_array().is_some_and(|p| p.iter().any(|p| p["podRef"]["name"] == "burner")), "{summary}");
    assert_eq!(ok(s, &["get", "--raw", &format!("/api/v1/nodes/{}/proxy/healthz", n.name)]).trim(), "ok");
    let (success, _, err) = kubectl(s, &["get", "--raw", "/api/v1/nodes/nonexistent/proxy/healthz"]);
    assert!(!success && err.contains("not found"), "{err}");
}

#[test]
fn a_claim_gets_a_local_volume_whose_data_outlives_its_pods() {
    let Some(n) = node() else { return };
    let s = &n.s;
    let pod = |name: &str, cmd: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {IMAGE}\n    command: [sh, -c, '{cmd}']\n    volumeMounts: [{{name: data, mountPath: /data}}]\n  volumes:\n  - name: data\n    persistentVolumeClaim: {{claimName: data}}\n"
        )
    };
    apply(s, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 100Mi}}\n");
    apply(s, &pod("writer", "echo kept > /data/file"));
    wait_until(s, 60, "writer Succeeded", |s| phase(s, "writer") == "Succeeded");
    assert_eq!(jsonpath(s, &["pvc", "data"], "{.status.phase}"), "Bound");
    let pv = jsonpath(s, &["pvc", "data"], "{.spec.volumeName}");
    let path = jsonpath(s, &["pv", &pv], "{.spec.hostPath.path}");
    assert!(path.starts_with(&s.dir.path().join("agent/storage").display().to_string()), "the volume lives in the node's storage dir: {path}");
    assert_eq!(std::fs::read_to_string(std::path::Path::new(&path).join("file")).expect("the file on the node"), "kept\n");
    ok(s, &["delete", "pod", "writer"]);
    apply(s, &pod("reader", "cat /data/file; sleep 3600"));
    wait_until(s, 60, "reader Running", |s| phase(s, "reader") == "Running");
    wait_until(s, 10, "reader read the file", |s| kubectl(s, &["logs", "reader"]).1 == "kept\n");
    // A claim in use is kept (Terminating) until its pod is gone.
    ok(s, &["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!jsonpath(s, &["pvc", "data"], "{.metadata.deletionTimestamp}").is_empty(), "the claim is Terminating");
    assert_eq!(jsonpath(s, &["pvc", "data"], "{.metadata.finalizers}"), r#"["kubernetes.io/pvc-protection"]"#);
    assert!(std::path::Path::new(&path).join("file").exists(), "the data stays while a pod uses it");
    // The class reclaims with Delete: the volume goes with its claim.
    ok(s, &["delete", "pod", "reader", "--grace-period=1"]);
    wait_until(s, 30, "claim gone", |s| !kubectl(s, &["get", "pvc", "data"]).0);
    wait_until(s, 30, "volume deleted", |s| !kubectl(s, &["get", "pv", &pv]).0);
    // And the node removes its data.
    wait_until(s, 30, "volume data removed", |_| !std::path::Path::new(&path).exists());
}

/// A container's process, by the pid its containerd gives
/// (`ctr tasks ls`: TASK PID STATUS).
fn container_pid(socket: &std::path::Path, id: &str) -> u32 {
    let out = std::process::Command::new("ctr").arg("-a").arg(socket).args(["-n", "k8s.io", "tasks", "ls"]).output().expect("ctr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("the container's pid")
}

/// Whether a process runs (a zombie, waiting for a reaper, does not).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X")
}

#[test]
fn killall_removes_what_a_stopped_node_leaves_behind() {
    let Some(mut n) = node() else { return };
    ok(&n.s, &["run", "left", &format!("--image={IMAGE}"), "--", "sleep", "3600"]);
    wait_until(&n.s, 60, "running", |s| phase(s, "left") == "Running");
    let dir = n.s.dir.path().to_path_buf();
    let socket = dir.join("agent/containerd/containerd.sock");
    let id = jsonpath(&n.s, &["pod", "left"], "{.status.containerStatuses[0].containerID}").trim_start_matches("containerd://").to_string();
    let pid = container_pid(&socket, &id);
    let bridge = skiff_kubelet::network::bridge_name(&dir.join("agent"));
    let links = std::process::Command::new("ip").args(["-o", "link", "show", "master", &bridge]).output().expect("ip");
    let veths: Vec<String> =
        String::from_utf8_lossy(&links.stdout).lines().filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string())).collect();
    assert!(!veths.is_empty(), "the pod has a veth on the node's bridge");
    let netns = pod_netns(pid);
    assert!(netns.is_some(), "the pod's network namespace is one of containerd's /run/netns/cni-*");
    let pod_cidr = jsonpath(&n.s, &["nodes"], "{.items[0].spec.podCIDR}");
    let table = std::process::Command::new("nft").args(["list", "table", "ip", &bridge]).output().expect("nft");
    let rules = String::from_utf8_lossy(&table.stdout);
    assert!(rules.contains(&format!("ip saddr {pod_cidr}")) && rules.contains("masquerade"), "the kubelet's masquerade table: {rules}");
    // A stopped node's containers keep running, on purpose.
    n.s.stop();
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(pid), "the container outlives the server");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff")).args(["killall", "--data-dir"]).arg(&dir).output().expect("skiff killall");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "killall: {said} {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        assert!(Instant::now() < deadline, "the container (pid {pid}) still runs after killall: {said}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let link = std::process::Command::new("ip").args(["link", "show", &bridge]).output().expect("ip");
    assert!(!link.status.success(), "the bridge {bridge} is gone");
    for v in &veths {
        let link = std::process::Command::new("ip").args(["link", "show", v]).output().expect("ip");
        assert!(!link.status.success(), "the pod's veth {v} is gone");
    }
    let cached = std::fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{bridge}-")))
        .count();
    assert_eq!(cached, 0, "libcni's cached results of the node's network are gone");
    let table = std::process::Command::new("nft").args(["list", "table", "ip", &bridge]).output().expect("nft");
    assert!(!table.status.success(), "the nftables table {bridge} is gone");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let left: Vec<&str> = mounts.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| std::path::Path::new(m).starts_with(&dir))).collect();
    assert!(left.is_empty(), "no mount under the data dir: {left:?}");
    let netns = netns.expect("checked above");
    assert!(!netns.exists(), "the pod's network namespace {} is gone", netns.display());
}

/// The `/run/netns` entry of a process's network namespace.
fn pod_netns(pid: u32) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?.ino();
    std::fs::read_dir("/run/netns").ok()?.flatten().map(|e| e.path()).find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == ino))
}

/// A DNS server of the test's own on a loopback address: `outside.example`
/// is 192.0.2.99, anything else NXDOMAIN. Stands in for the node's upstream
/// resolver (`--resolv-conf`), so no query leaves the machine.
fn upstream_dns() -> std::net::Ipv4Addr {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{rdata::A, RData, Record};
    let ip = std::net::Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8 + 1, 1);
    let sock = std::net::UdpSocket::bind((ip, 53)).expect("bind the test's upstream DNS");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_available = true;
            r.queries = q.queries.clone();
            match q.queries.first() {
                Some(qq) if qq.name().to_ascii() == "outside.example." => {
                    r.add_answer(Record::from_rdata(qq.name().clone(), 60, RData::A(A(std::net::Ipv4Addr::new(192, 0, 2, 99)))));
                }
                _ => r.metadata.response_code = ResponseCode::NXDomain,
            }
            if let Ok(b) = r.to_vec() {
                let _ = sock.send_to(&b, peer);
            }
        }
    });
    ip
}

/// A plain HTTP GET to a loopback port: the whole response.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(c, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// An nftables table of someone else's, which the proxy must never touch.
struct ForeignTable(String);

impl Drop for ForeignTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &self.0]).output();
    }
}

fn nft_list(table: &str) -> String {
    let out = std::process::Command::new("nft").args(["list", "table", "ip", table]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl exec POD -- sh -c SCRIPT`: (success, stdout + stderr, seconds).
fn sh(s: &Server, pod: &str, script: &str) -> (bool, String, f64) {
    let t = Instant::now();
    let (ok, out, err) = kubectl(s, &["exec", pod, "--", "sh", "-c", script]);
    (ok, format!("{out}{err}"), t.elapsed().as_secs_f64())
}

/// One HTTP request from `pod` to `host:port` (busybox's wget crashes
/// here; nc does not): the answering pod's name and the client address it saw.
fn who(s: &Server, pod: &str, host: &str, port: &str) -> String {
    sh(s, pod, &format!("printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | tail -1")).1.trim().to_string()
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: skiff.local/busybox:1
        command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $(hostname) $REMOTE_ADDR\\n' > /www/cgi-bin/who && chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-internal}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: sql, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: db, image: skiff.local/busybox:1, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: outside.example}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  hostAliases: [{ip: 192.0.2.7, hostnames: [alias.example]}]
  containers: [{name: c, image: skiff.local/busybox:1, command: ["sleep", "3600"]}]
"#;

#[test]
fn services_reach_pods_by_name_and_address_through_the_proxy_and_cluster_dns() {
    if !can_run_nodes() {
        return;
    }
    if skiff_cri::which("nft").is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and nft is missing");
        return;
    }
    let upstream = upstream_dns();
    let conf = tempfile::tempdir().expect("tempdir");
    let resolv = conf.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {upstream}\n")).expect("resolv.conf");
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let service_cidr = format!("10.{}.0.0/16", 128 + (std::process::id() * 5 + n * 11) % 64);
    let healthz = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let healthz_addr = format!("127.0.0.1:{healthz}");
    // Someone else's table, with a rule: syncs and cleanup leave it be.
    let foreign = ForeignTable(format!("skiff-test-foreign-{}", std::process::id()));
    let made = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let script = format!("add table ip {t}\nadd chain ip {t} c\nadd rule ip {t} c ip daddr 192.0.2.1 counter accept\n", t = foreign.0);
            c.stdin.take().expect("stdin").write_all(script.as_bytes())?;
            c.wait()
        })
        .expect("nft");
    assert!(made.success());
    let resolv_arg = resolv.display().to_string();
    let Some(mut node) = node_with(&[
        common::WITH_PROXY,
        "--service-cidr",
        &service_cidr,
        "--resolv-conf",
        &resolv_arg,
        "--healthz-bind-address",
        &healthz_addr,
        "--lb-address-pool",
        "198.51.100.0/28",
    ]) else {
        return;
    };
    let s = &node.s;
    let agent_dir = s.dir.path().join("agent");
    let table = skiff_proxy::table_for(&std::path::absolute(&agent_dir).expect("absolute"));
    apply(s, WEB);
    wait_until(s, 90, "web, db and client ready", |s| {
        let ready = jsonpath(s, &["pods"], "{range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}");
        ready.lines().filter(|l| *l == "True").count() == 5
    });
    let cluster_ip = jsonpath(s, &["svc", "web"], "{.spec.clusterIP}");
    let dns_ip = jsonpath(s, &["svc", "kube-dns", "-n", "kube-system"], "{.spec.clusterIP}");
    assert_eq!(dns_ip, service_cidr.replace("0.0/16", "0.10"), "kube-dns sits at the service range's 10th address");

    // Rules and names follow within a sync or two of the endpoints.
    wait_until(s, 30, "web answers by name", |s| who(s, "client", "web", "80").starts_with("web-"));
    // By name, by FQDN and by ClusterIP; the answers spread over all 3 pods.
    let mut answered = std::collections::BTreeSet::new();
    for i in 0..45 {
        let host = ["web", "web.default.svc.cluster.local", cluster_ip.as_str()][i % 3];
        let w = who(s, "client", host, "80");
        assert!(w.starts_with("web-"), "{host}: {w}");
        answered.insert(w.split(' ').next().unwrap_or_default().to_string());
    }
    assert_eq!(answered.len(), 3, "every endpoint answers: {answered:?}");
    // A plain ClusterIP Service is data in the proxy's maps (no chain of
    // its own): it answers and spreads as well.
    let internal_ip = jsonpath(s, &["svc", "web-internal"], "{.spec.clusterIP}");
    let mut answered = std::collections::BTreeSet::new();
    for i in 0..30 {
        let host = ["web-internal", internal_ip.as_str()][i % 2];
        let w = who(s, "client", host, "80");
        assert!(w.starts_with("web-"), "{host}: {w}");
        answered.insert(w.split(' ').next().unwrap_or_default().to_string());
    }
    assert_eq!(answered.len(), 3, "every endpoint answers web-internal: {answered:?}");

    // DNS: a headless StatefulSet's pod, SRV, ExternalName, NXDOMAIN, forwarding.
    let db0 = jsonpath(s, &["pod", "db-0"], "{.status.podIP}");
    let (_, out, _) = sh(s, "client", "nslookup -type=a db-0.db.default.svc.cluster.local");
    assert!(out.contains(&db0), "web-0.web style names resolve to the pod: {out}");
    let (_, out, _) = sh(s, "client", "nslookup -type=srv _http._tcp.web.default.svc.cluster.local");
    assert!(out.contains("80 web.default.svc.cluster.local"), "{out}");
    let (_, out, _) = sh(s, "client", "nslookup -type=cname ext.default.svc.cluster.local");
    assert!(out.contains("outside.example"), "ExternalName is a CNAME: {out}");
    let (_, out, _) = sh(s, "client", "nslookup -type=a nothere.default.svc.cluster.local");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let (_, out, _) = sh(s, "client", "nslookup -type=a outside.example");
    assert!(out.contains("192.0.2.99"), "outside names go to --resolv-conf's server: {out}");
    let (_, resolv_conf, _) = sh(s, "client", "cat /etc/resolv.conf");
    assert!(
        resolv_conf.contains(&format!("nameserver {dns_ip}")) && resolv_conf.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv_conf}"
    );
    assert!(resolv_conf.contains("ndots:5"), "{resolv_conf}");
    // The kubelet-managed /etc/hosts: the pod's address and name, its FQDN
    // under a subdomain, and hostAliases.
    let client_ip = jsonpath(s, &["pod", "client"], "{.status.podIP}");
    let (_, hosts, _) = sh(s, "client", "cat /etc/hosts");
    assert!(hosts.contains(&format!("{client_ip}\tclient")) && hosts.contains("192.0.2.7\talias.example"), "{hosts}");
    let (_, hosts, _) = sh(s, "db-0", "cat /etc/hosts");
    assert!(hosts.contains(&format!("{db0}\tdb-0.db.default.svc.cluster.local\tdb-0")), "{hosts}");

    // A NodePort on an address of this node's own (its pod bridge).
    let node_port = jsonpath(s, &["svc", "web"], "{.spec.ports[0].nodePort}");
    let pod_cidr = jsonpath(s, &["node", &node.name], "{.spec.podCIDR}");
    let gateway = pod_cidr.replace("0/24", "1");
    let w = who(s, "client", &gateway, &node_port);
    assert!(w.starts_with("web-"), "NodePort {gateway}:{node_port}: {w}");

    // A LoadBalancer Service gets an address from the pool, and answers there
    // (DNATed on this node: the packet never leaves it).
    apply(s, "apiVersion: v1\nkind: Service\nmetadata: {name: web-lb}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n");
    wait_until(s, 30, "web-lb has an ingress address", |s| jsonpath(s, &["svc", "web-lb"], "{.status.loadBalancer.ingress[0].ip}").starts_with("198.51.100."));
    let lb_ip = jsonpath(s, &["svc", "web-lb"], "{.status.loadBalancer.ingress[0].ip}");
    wait_until(s, 30, "web-lb answers on its ingress address", |s| who(s, "client", &lb_ip, "80").starts_with("web-"));

    // Hairpin: a pod reaches itself through its own Service.
    let web0 = jsonpath(s, &["pods", "-l", "app=web"], "{.items[0].metadata.name}");
    let (_, out, _) = sh(s, &web0, &format!("for i in $(seq 40); do printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 | tail -1; done"));
    assert!(out.lines().any(|l| l.starts_with(&web0)), "{web0} reached itself: {out}");
    let (_, out, _) = sh(s, &web0, &format!("for i in $(seq 40); do printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {internal_ip} 80 | tail -1; done"));
    assert!(out.lines().any(|l| l.starts_with(&web0)), "{web0} reached itself through web-internal: {out}");

    // sessionAffinity: ClientIP sticks to one endpoint.
    ok(s, &["patch", "svc", "web", "-p", r#"{"spec":{"sessionAffinity":"ClientIP"}}"#]);
    std::thread::sleep(Duration::from_secs(2));
    let (_, out, _) =
        sh(s, "client", &format!("for i in $(seq 12); do printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 | tail -1; done"));
    let stuck: std::collections::BTreeSet<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(stuck.len(), 1, "ClientIP affinity: {out}");
    ok(s, &["patch", "svc", "web", "-p", r#"{"spec":{"sessionAffinity":"None"}}"#]);

    // Someone else flushes the proxy's table: the proxy notices within its
    // check period and writes it again in full.
    let flushed = std::process::Command::new("nft").args(["flush", "table", "ip", &table]).output().expect("nft");
    assert!(flushed.status.success(), "{}", String::from_utf8_lossy(&flushed.stderr));
    let at = Instant::now();
    wait_until(s, 30, "web-internal answers again after its table was flushed from outside", |s| who(s, "client", &internal_ip, "80").starts_with("web-"));
    eprintln!("rules back {:.1} s after the flush", at.elapsed().as_secs_f64());

    // The proxy's own endpoints.
    let health = http_get(healthz, "/healthz");
    assert!(health.lines().next().is_some_and(|l| l.contains(" 200 ")) && health.contains("\"lastUpdated\""), "{health}");
    let metrics = http_get(healthz, "/metrics");
    for m in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_network_programming_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    ] {
        assert!(metrics.contains(m), "{m} in {metrics}");
    }

    // Scaled to 0, the Service refuses at once; a pod turning Ready is served again within seconds.
    ok(s, &["scale", "deploy", "web", "--replicas=0"]);
    wait_until(s, 60, "web's endpoints gone", |s| {
        !jsonpath(s, &["endpointslices", "-l", "kubernetes.io/service-name=web"], "{.items[*].endpoints[*].addresses}").contains('.')
    });
    std::thread::sleep(Duration::from_millis(1200));
    let (_, out, _) = sh(s, "client", &format!("time nc -w 5 {cluster_ip} 80 </dev/null"));
    assert!(out.contains("refused"), "no endpoints: refused, not dropped: {out}");
    let real: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("real"))
        .and_then(|t| t.trim().trim_start_matches("0m").trim().trim_end_matches('s').parse().ok())
        .unwrap_or(99.0);
    assert!(real < 1.0, "refused within 1 s, not after a timeout: {out}");
    let (_, out, _) = sh(s, "client", &format!("nc -w 5 {internal_ip} 80 </dev/null"));
    assert!(out.contains("refused"), "web-internal without endpoints refuses too: {out}");
    ok(s, &["scale", "deploy", "web", "--replicas=1"]);
    wait_until(s, 60, "a web pod ready", |s| {
        jsonpath(s, &["pods", "-l", "app=web"], "{.items[*].status.conditions[?(@.type==\"Ready\")].status}").contains("True")
    });
    let ready_at = Instant::now();
    let (_, out, _) = sh(s, "client", &format!("i=0; until printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {cluster_ip} 80 2>/dev/null | grep -q web; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.05; done; echo tries=$i"));
    let served_after = ready_at.elapsed().as_secs_f64();
    assert!(!out.contains("tries=101"), "served again after Ready: {out}");
    eprintln!("served {served_after:.2} s after the test saw Ready ({out})");
    assert!(served_after < 4.0, "served within seconds of Ready: {served_after:.2} s");

    // The proxy's table is its own; someone else's is untouched.
    let rules = nft_list(&table);
    assert!(rules.contains("service-default/web/tcp/http") && rules.contains("chain pick-1"), "the proxy's table holds the Services: {rules}");
    assert!(nft_list(&foreign.0).contains("ip daddr 192.0.2.1"), "another table is untouched by syncs");
    // Removing the proxy: the pods go first (the server deletes them), then
    // the server, so no sync runs after the cleanup.
    ok(s, &["delete", "deploy,statefulset", "--all"]);
    ok(s, &["delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    node.s.stop();
    let cleanup = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["proxy", "--cleanup", "--data-dir"])
        .arg(&agent_dir)
        .output()
        .expect("skiff proxy --cleanup");
    assert!(cleanup.status.success(), "{}", String::from_utf8_lossy(&cleanup.stderr));
    assert!(nft_list(&table).is_empty(), "cleanup removes the proxy's table");
    assert!(nft_list(&foreign.0).contains("ip daddr 192.0.2.1"), "and nothing else");
}

/// A `skiff agent` in a test host's network namespace: a node of its own
/// on the test's L2 segment, with its own containerd, bridge, proxy
/// rules and pod network device.
struct HostAgent {
    child: std::process::Child,
    dir: tempfile::TempDir,
    host: hosts::Host,
    name: String,
    args: Vec<String>,
}

impl HostAgent {
    fn spawn(host: &hosts::Host, args: &[String]) -> std::process::Child {
        host.command(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn agent")
    }

    /// Kills the agent (its containers keep running) and starts it again.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start(&mut self) {
        self.child = Self::spawn(&self.host, &self.args);
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its containers and mounts, inside its namespace (where its
        // bridge, table and device also go with the namespace).
        let _ = self.host.run(env!("CARGO_BIN_EXE_skiff"), &["killall", "--data-dir", &self.dir.path().display().to_string()]);
    }
}

/// Joins a node running in `host` to `s` (which it reaches at
/// `server_ip`), with pod network `backend`.
fn host_agent(s: &Server, server_ip: &str, host: hosts::Host, name: &str, backend: &str, cidr: &str, extra: &[&str]) -> HostAgent {
    let token = std::fs::read_to_string(s.dir.path().join("node-token")).expect("node-token");
    let dir = tempfile::tempdir().expect("agent dir");
    stage_images(dir.path());
    stage_kubectl_image(dir.path());
    let server = format!("https://{server_ip}:{}", s.port);
    let ip = host.ip.to_string();
    let mut args: Vec<String> = ["agent", "--server", &server, "--token", token.trim(), "--node-name", name, "--kubelet-port", "0"]
        .into_iter()
        .chain(["--node-ip", &ip, "--flannel-backend", backend, "--cluster-cidr", cidr])
        .chain(extra.iter().copied())
        .map(String::from)
        .collect();
    args.extend(["--data-dir".to_string(), dir.path().display().to_string()]);
    let child = HostAgent::spawn(&host, &args);
    HostAgent { child, dir, host, name: name.to_string(), args }
}

/// An HTTP request from a test host that is no node (an outside client).
fn who_from(host: &hosts::Host, ip: &str, port: &str) -> String {
    let script = format!("printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {ip} {port} | busybox tail -1");
    String::from_utf8_lossy(&host.run("busybox", &["sh", "-c", &script]).stdout).trim().to_string()
}

const ACROSS_NODES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: NODE_B
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: skiff.local/busybox:1
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $(hostname) $REMOTE_ADDR\\n' > /www/cgi-bin/who && chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
  - name: echo
    image: skiff.local/busybox:1
    command: ["nc", "-ll", "-p", "9000", "-e", "cat"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: echo, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: default-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: default}]
---
apiVersion: v1
kind: Pod
metadata: {name: incluster}
spec:
  nodeName: NODE_A
  terminationGracePeriodSeconds: 1
  containers: [{name: kubectl, image: skiff.local/kubectl:1, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: NODE_A
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: skiff.local/busybox:1, command: ["sleep", "3600"]}]
"#;

/// Two nodes as test hosts on one segment, a third host as an outside
/// client: a pod on A reaches a pod on B by pod IP and through a Service
/// whose only endpoint is on B, keeping its own address (no NAT between
/// pods); an outside client's address is kept by `externalTrafficPolicy:
/// Local` and masqueraded otherwise; B leaving removes A's route to it.
fn pods_on_two_nodes_reach_each_other(backend: &str) {
    if !can_run_nodes() {
        return;
    }
    let mut lan = hosts::Lan::new();
    let (a, b, outside) = (lan.host(), lan.host(), lan.host());
    let (cidr, name) = unique_cluster();
    let gateway = lan.gateway().to_string();
    let s = common::start_with(&[common::WITH_CLOUD, "--bind-address", &gateway, "--cluster-cidr", &cidr]);
    let (a_ip, b_ip) = (a.ip.to_string(), b.ip.to_string());
    // A waits for the cloud controller to initialize it.
    let na = host_agent(&s, &gateway, a, &format!("{name}-a"), backend, &cidr, &["--cloud-provider", "external"]);
    let nb = host_agent(&s, &gateway, b, &format!("{name}-b"), backend, &cidr, &[]);
    wait_until(&s, 90, "both nodes Ready", |s| node_ready(s, &na.name) && node_ready(s, &nb.name));
    wait_until(&s, 30, "A initialized by the cloud controller", |s| {
        jsonpath(s, &["node", &na.name], "{.spec.providerID}") == format!("skiff://{}", na.name)
            && !jsonpath(s, &["node", &na.name], "{.spec.taints}").contains("node.cloudprovider.kubernetes.io/uninitialized")
    });
    assert_eq!(jsonpath(&s, &["node", &na.name], "{.status.addresses[?(@.type==\"InternalIP\")].address}"), a_ip, "the address the kubelet was given");
    assert_eq!(jsonpath(&s, &["node", &na.name], "{.metadata.labels.node\\.kubernetes\\.io/instance-type}"), "skiff");
    assert_eq!(jsonpath(&s, &["node", &nb.name], "{.spec.providerID}"), "", "B has no cloud provider");
    apply(&s, &ACROSS_NODES.replace("NODE_A", &na.name).replace("NODE_B", &nb.name));
    wait_until(&s, 90, "pods Ready", |s| jsonpath(s, &["pods"], "{.items[*].status.conditions[?(@.type==\"Ready\")].status}") == "True True True");
    let web_ip = jsonpath(&s, &["pod", "web"], "{.status.podIP}");
    let client_ip = jsonpath(&s, &["pod", "client"], "{.status.podIP}");
    let cluster_ip = jsonpath(&s, &["svc", "web"], "{.spec.clusterIP}");

    // Each node published its end under flannel's annotation names.
    let ann = |n: &str, key: &str| jsonpath(&s, &["node", n], &format!("{{.metadata.annotations.flannel\\.alpha\\.coreos\\.com/{key}}}"));
    assert_eq!(ann(&nb.name, "backend-type"), backend);
    assert_eq!(ann(&nb.name, "public-ip"), b_ip);
    if backend == "vxlan" {
        assert!(ann(&nb.name, "backend-data").contains("\"VtepMAC\""), "{}", ann(&nb.name, "backend-data"));
    }

    // Pod to pod across nodes, by pod IP and through the Service: the
    // server sees the client pod's own address.
    let seen = who(&s, "client", &web_ip, "8080");
    assert!(seen.starts_with("web ") && seen.contains(&client_ip), "{backend}: pod IP {web_ip} from {client_ip}: {seen:?}");
    let seen = who(&s, "client", &cluster_ip, "80");
    assert!(seen.starts_with("web ") && seen.contains(&client_ip), "{backend}: ClusterIP {cluster_ip} from {client_ip}: {seen:?}");

    // In-cluster clients: kubectl in a pod, with nothing but what the
    // ServiceAccount admission mounted (a token bound to the pod, the CA,
    // the namespace) and the `kubernetes` Service's address in its
    // environment, reaches the API server through the proxy as the pod's
    // ServiceAccount; the token dies with the pod.
    let inside = |args: &str| sh(&s, "incluster", &format!("kubectl {args}"));
    let (ok_whoami, whoami, _) = inside("auth whoami");
    assert!(ok_whoami && whoami.contains("system:serviceaccount:default:default"), "{backend}: whoami in a pod: {whoami}");
    let (ok_get, got, _) = inside("get pod web -o jsonpath={.status.podIP}");
    assert!(ok_get && got.trim() == web_ip, "{backend}: the API from a pod: {got}");
    // Only what its RoleBinding (view, in default) grants.
    let (ok_secrets, refused, _) = inside("get secrets");
    assert!(
        !ok_secrets && refused.contains("User \"system:serviceaccount:default:default\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""),
        "{backend}: secrets from a viewer: {refused}"
    );
    let (ok_other, refused, _) = inside("get pods -n kube-system");
    assert!(!ok_other && refused.contains("forbidden"), "{backend}: another namespace: {refused}");
    // The official Python client too, with in-cluster settings
    // (`load_incluster_config`) read from the pod, run in its network
    // namespace: it reaches `kubernetes.default.svc`'s address as the pod.
    let id = jsonpath(&s, &["pod", "incluster"], "{.status.containerStatuses[0].containerID}").trim_start_matches("containerd://").to_string();
    let pid = container_pid(&na.dir.path().join("containerd/containerd.sock"), &id).to_string();
    let netns = format!("--net=/proc/{pid}/ns/net");
    common::python_client_via(&["nsenter", &netns], "incluster.py", &[&pid, "incluster"]);
    let token = sh(&s, "incluster", "cat /var/run/secrets/kubernetes.io/serviceaccount/token").1;
    let api = |token: &str| {
        kubectl(
            &s,
            &[
                "--token",
                token.trim(),
                "--kubeconfig",
                "/dev/null",
                "--server",
                &format!("https://{gateway}:{}", s.port),
                "--insecure-skip-tls-verify",
                "get",
                "ns",
                "default",
                "-o",
                "name",
            ],
        )
    };
    assert!(api(&token).0, "{backend}: the pod's token works from outside while the pod lives");
    ok(&s, &["delete", "pod", "incluster", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    let (accepted, _, refused) = api(&token);
    assert!(!accepted && refused.contains("Unauthorized"), "{backend}: a deleted pod's token is refused: {refused}");

    // From outside: the client's address is kept where the endpoint is
    // local (externalTrafficPolicy: Local), masqueraded where it is not.
    let port = |svc: &str| jsonpath(&s, &["svc", svc], "{.spec.ports[0].nodePort}");
    let seen = who_from(&outside, &b_ip, &port("web-local"));
    assert!(seen.starts_with("web ") && seen.contains(&format!("{}]", outside.ip)), "{backend}: Local keeps the source: {seen:?}");
    let seen = who_from(&outside, &a_ip, &port("web"));
    assert!(seen.starts_with("web ") && !seen.contains(&format!("{}]", outside.ip)), "{backend}: Cluster masquerades: {seen:?}");

    // Rules and routes outlive the agent: a connection to B's pod through
    // the Service, open while A's agent is killed and started again, keeps
    // flowing, and new ones are served at once.
    let (started, _, _) = sh(
        &s,
        "client",
        &format!("mkdir -p /tmp && sh -c '(while true; do echo ping; sleep 0.1; done) | nc {cluster_ip} 9000 > /tmp/echo' </dev/null >/dev/null 2>&1 &"),
    );
    assert!(started, "{backend}: the long connection starts");
    let echoed = |s: &Server| sh(s, "client", "wc -l < /tmp/echo").1.trim().parse::<u64>().unwrap_or(0);
    wait_until(&s, 10, "echoes flowing", |s| echoed(s) > 5);
    let mut na = na;
    na.kill();
    std::thread::sleep(Duration::from_secs(2));
    na.start();
    wait_until(&s, 60, "A's kubelet serving again", |s| kubectl(s, &["exec", "client", "--", "true"]).0);
    let seen = who(&s, "client", &cluster_ip, "80");
    assert!(seen.starts_with("web "), "{backend}: a new connection right after the restart: {seen:?}");
    let before = echoed(&s);
    std::thread::sleep(Duration::from_millis(1500));
    let after = echoed(&s);
    assert!(after > before + 5, "{backend}: the connection open across the restart still flows: {before} then {after} lines");

    // B leaves: A's route to B's pods goes with it.
    let b_cidr = jsonpath(&s, &["node", &nb.name], "{.spec.podCIDR}");
    assert!(na.host.routes().contains(&b_cidr), "{backend}: A routes B's pods: {}", na.host.routes());
    ok(&s, &["delete", "pod", "web", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    let b_name = nb.name.clone();
    drop(nb);
    ok(&s, &["delete", "node", &b_name]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while na.host.routes().contains(&b_cidr) {
        assert!(Instant::now() < deadline, "{backend}: the route to a deleted node's pods stays: {}", na.host.routes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = kubectl(&s, &["delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=60s"]);
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_vxlan() {
    pods_on_two_nodes_reach_each_other("vxlan");
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_host_gw() {
    pods_on_two_nodes_reach_each_other("host-gw");
}

/// An agent joined through one API server of two (over one etcd): when
/// that server dies, its pods keep running and it goes on through the
/// other, which it learned from the `kubernetes` endpoints.
#[test]
fn an_agent_fails_over_to_another_api_server_when_its_server_dies() {
    if !can_run_nodes() {
        return;
    }
    let Some(cluster) = common::etcd::EtcdCluster::start(1) else { return };
    let (cidr, name) = unique_cluster();
    let server = |ip: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec!["--bind-address".into(), ip.into(), "--advertise-address".into(), ip.into(), "--cluster-cidr".into(), cidr.clone()];
        args.extend(cluster.datastore_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        common::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let a = server("127.0.0.2", &[]);
    let token = std::fs::read_to_string(a.dir.path().join("token")).expect("token");
    let b = server("127.0.0.3", &["--token", token.trim()]);
    wait_until(&b, 30, "both servers in the kubernetes endpoints", |b| {
        jsonpath(b, &["endpoints", "kubernetes"], "{.subsets[*].addresses[*].ip}").split_whitespace().count() == 2
    });
    let node_token = std::fs::read_to_string(a.dir.path().join("node-token")).expect("node-token");
    let dir = tempfile::tempdir().expect("agent dir");
    stage_images(dir.path());
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(["agent", "--server", &format!("https://127.0.0.2:{}", a.port), "--token", node_token.trim(), "--node-name", &name])
        .args(["--kubelet-port", "0", "--disable", "proxy", "--flannel-backend", "none", "--lb-server-port", "0", "--cluster-cidr", &cidr])
        .arg("--data-dir")
        .arg(dir.path());
    let child = cmd.stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("spawn agent");
    let joined = JoinedAgent { child, dir };
    wait_until(&b, 60, "joined node Ready", |b| node_ready(b, &name));
    let on_node = format!(r#"{{"spec":{{"nodeName":"{name}"}}}}"#);
    ok(&b, &["run", "ticker", &format!("--image={IMAGE}"), "--overrides", &on_node, "--", "sh", "-c", "while true; do echo tick; sleep 1; done"]);
    wait_until(&b, 60, "ticker Running", |b| phase(b, "ticker") == "Running");
    // The agent's balancer has learned both servers by now (it reads the
    // endpoints at once, then every 10 s).
    std::thread::sleep(Duration::from_secs(1));

    let mut a = a;
    let _ = std::process::Command::new("kill").args(["-KILL", &a.pid().to_string()]).status();
    let killed = chrono::Utc::now();
    let lost = Instant::now();
    // The node renews its Lease through B within 10 s.
    let renewed_after_kill = |b: &Server| {
        let t = jsonpath(b, &["lease", &name, "-n", "kube-node-lease"], "{.spec.renewTime}");
        chrono::DateTime::parse_from_rfc3339(&t).is_ok_and(|t| t > killed)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !renewed_after_kill(&b) {
        assert!(
            Instant::now() < deadline,
            "the node did not renew its lease through the other server within 10 s; the agent said: {}",
            std::fs::read_to_string(joined.dir.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the agent renewed its lease through the other server {:?} after its server died", lost.elapsed());
    assert!(node_ready(&b, &name));
    assert_eq!(phase(&b, "ticker"), "Running");
    assert_eq!(jsonpath(&b, &["pod", "ticker"], "{.status.containerStatuses[0].restartCount}"), "0", "the pod never restarted");
    // It still takes work through the surviving server.
    assert!(ok(&b, &["logs", "ticker", "--tail=1"]).contains("tick"));
    let _ = kubectl(&b, &["delete", "pods", "--all", "--grace-period=1", "--wait=true", "--timeout=60s"]);
    a.stop();
    drop(joined);
}
