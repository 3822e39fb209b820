//! Several API servers over a real etcd cluster (three members with TLS on
//! loopback): one cluster seen through any server, watches across servers,
//! losing an etcd member or the leading server, and the `kubernetes`
//! endpoints following the live servers.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::*;

fn server_over(cluster: &EtcdCluster, ip: &str, extra: &[&str]) -> Server {
    let mut args: Vec<String> = vec!["--bind-address".into(), ip.into(), "--advertise-address".into(), ip.into()];
    args.extend(cluster.datastore_flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    start_with(&refs)
}

fn lease_holder(s: &Server, name: &str) -> String {
    kubectl(s, &["get", "lease", name, "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]).1
}

fn endpoint_ips(s: &Server) -> String {
    let (_, out, _) = kubectl(s, &["get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]);
    let mut ips: Vec<&str> = out.split_whitespace().collect();
    ips.sort();
    ips.join(" ")
}

/// The member etcd says leads (`etcdctl endpoint status`: its 5th column).
fn etcd_leader(cluster: &EtcdCluster) -> usize {
    let status = cluster.etcdctl(&["endpoint", "status"]);
    let line = status.lines().find(|l| l.split(", ").nth(4) == Some("true")).unwrap_or_else(|| panic!("no leader in {status}"));
    cluster.members.iter().position(|m| line.starts_with(&m.client_url)).expect("leader is a member")
}

#[test]
fn two_servers_over_a_three_member_etcd_share_one_cluster_and_survive_losses() {
    let Some(mut cluster) = EtcdCluster::start(3) else { return };
    let a = server_over(&cluster, "127.0.0.2", &[]);
    // The first server's controllers and scheduler lead.
    wait_for(&a, 30, |a| !lease_holder(a, "kube-controller-manager").is_empty() && !lease_holder(a, "kube-scheduler").is_empty());
    let token = std::fs::read_to_string(a.dir.path().join("token")).expect("the first server's token");
    let b = server_over(&cluster, "127.0.0.3", &["--token", token.trim()]);

    // One cluster through either server; kube's key layout in etcd.
    ok(&a, &["create", "namespace", "ha"]);
    ok(&a, &["create", "configmap", "one", "-n", "ha", "--from-literal=k=v"]);
    assert_eq!(ok(&b, &["get", "configmap", "one", "-n", "ha", "-o", "jsonpath={.data.k}"]), "v");
    ok(&b, &["create", "secret", "generic", "two", "-n", "ha", "--from-literal=p=q"]);
    assert_eq!(ok(&a, &["get", "secret", "two", "-n", "ha", "-o", "jsonpath={.data.p}"]), "cQ==");
    let keys = cluster.etcdctl(&["get", "--prefix", "/registry/configmaps/ha/", "--keys-only"]);
    assert!(keys.lines().any(|l| l == "/registry/configmaps/ha/one"), "etcdctl sees kube's layout: {keys}");
    // The second server signed nothing of its own: the first's admin
    // credentials work against it.
    let (same, _, err) = kubectl(&a, &["--server", &format!("https://127.0.0.3:{}", b.port), "get", "configmap", "one", "-n", "ha"]);
    assert!(same, "the first server's kubeconfig against the second: {err}");

    // Both servers are in the `kubernetes` endpoints.
    wait_for(&a, 20, |a| endpoint_ips(a) == "127.0.0.2 127.0.0.3");

    // A watch through A sees writes made through B, in revision order,
    // with none missing.
    let mut watch = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&a.kubeconfig)
        .args(["get", "configmaps", "-n", "ha", "-l", "batch=w", "--watch-only", "-o", "jsonpath={.metadata.name} {.metadata.resourceVersion}{\"\\n\"}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let docs: Vec<String> = (0..30)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: w{i:02}, namespace: ha, labels: {{batch: w}}}}\ndata: {{i: \"{i}\"}}\n"))
        .collect();
    ok(&b, &["apply", "-f", &manifest(&dir, "batch.yaml", &docs.join("---\n"))]);
    let mut seen = Vec::new();
    while seen.len() < 30 {
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| panic!("the watch through A stopped after {seen:?}"));
        let (name, rv) = line.split_once(' ').expect("name and resourceVersion");
        seen.push((name.to_string(), rv.parse::<i64>().expect("numeric resourceVersion")));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let names: Vec<String> = seen.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, (0..30).map(|i| format!("w{i:02}")).collect::<Vec<_>>(), "every write, in order");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "resourceVersions increase: {seen:?}");

    // kill -9 of etcd's leader: writes succeed again within 5 s and none
    // that was acknowledged is lost.
    let leader = etcd_leader(&cluster);
    cluster.kill(leader);
    let killed = Instant::now();
    let mut acknowledged = Vec::new();
    let mut first_success = None;
    for i in 0..40 {
        let name = format!("after-{i}");
        if kubectl(&a, &["create", "configmap", &name, "-n", "ha", "--request-timeout=5s"]).0 {
            first_success.get_or_insert_with(|| killed.elapsed());
            acknowledged.push(name);
        }
        if acknowledged.len() >= 20 {
            break;
        }
    }
    let resumed = first_success.expect("writes resumed after losing an etcd member");
    eprintln!("writes resumed {resumed:?} after etcd's leader was killed");
    assert!(resumed < Duration::from_secs(5), "writes resumed only after {resumed:?}");
    assert!(acknowledged.len() >= 20);
    let listed = ok(&b, &["get", "configmaps", "-n", "ha", "-o", "name"]);
    for name in &acknowledged {
        assert!(listed.lines().any(|l| l == format!("configmap/{name}")), "{name} was acknowledged but is gone: {listed}");
    }

    // kill -9 of the server whose controllers and scheduler lead: the
    // other takes over within the lease duration and a Deployment still
    // converges; the endpoints drop the dead server.
    let _nodes = sim_nodes(&b, 2, "ha-", &[]);
    let old_cm = lease_holder(&b, "kube-controller-manager");
    let old_sched = lease_holder(&b, "kube-scheduler");
    let mut a = a;
    let a_pid = a.pid();
    let _ = Command::new("kill").args(["-KILL", &a_pid.to_string()]).status();
    let lost = Instant::now();
    wait_for(&b, 25, |b| {
        let (cm, sched) = (lease_holder(b, "kube-controller-manager"), lease_holder(b, "kube-scheduler"));
        !cm.is_empty() && cm != old_cm && !sched.is_empty() && sched != old_sched
    });
    let takeover = lost.elapsed();
    eprintln!("the standby's controllers and scheduler took over {takeover:?} after the leader was killed");
    assert!(takeover < Duration::from_secs(20), "takeover took {takeover:?}");
    ok(&b, &["create", "deployment", "web", "-n", "ha", "--image=x", "--replicas=3"]);
    ok(&b, &["rollout", "status", "deployment/web", "-n", "ha", "--timeout=60s"]);
    wait_for(&b, 30, |b| endpoint_ips(b) == "127.0.0.3");
    a.stop();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The flags of a server with an embedded etcd member on `ip`.
fn embedded(ip: &str) -> Vec<String> {
    vec![
        "--bind-address".into(),
        ip.into(),
        "--advertise-address".into(),
        ip.into(),
        "--etcd-client-port".into(),
        free_port().to_string(),
        "--etcd-peer-port".into(),
        free_port().to_string(),
    ]
}


fn members(s: &Server) -> Vec<String> {
    let out = skiff(&["etcd", "member", "list", "--data-dir", &s.dir.path().display().to_string()]);
    out.lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
}


#[test]
fn cluster_init_and_two_joining_servers_make_a_three_member_control_plane_that_snapshots_and_restores() {
    if !common::etcd::have_etcd() {
        return;
    }
    // Three commands: a first server, then two that join it.
    let a_flags = [embedded("127.0.0.2"), vec!["--cluster-init".into()]].concat();
    let a = start_with(&a_flags.iter().map(String::as_str).collect::<Vec<_>>());
    let token = std::fs::read_to_string(a.dir.path().join("token")).expect("token").trim().to_string();
    let url = format!("https://127.0.0.2:{}", a.port);
    let join = |ip: &str| {
        let flags = [embedded(ip), vec!["--server".into(), url.clone(), "--token".into(), token.clone()]].concat();
        start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let b = join("127.0.0.3");
    let mut c = join("127.0.0.4");
    assert_eq!(members(&a).len(), 3, "three etcd members: {:?}", members(&a));
    ok(&a, &["create", "namespace", "snap"]);
    ok(&c, &["create", "secret", "generic", "s", "-n", "snap", "--from-literal=password=hunter2"]);
    ok(&b, &["create", "deployment", "web", "-n", "snap", "--image=x", "--replicas=2"]);
    let crd = open_crd("widgets", "widget", "Widget");
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&a, &["apply", "-f", &manifest(&dir, "crd.yaml", &crd)]);
    wait_for(&c, 30, |c| kubectl(c, &["get", "widgets", "-n", "snap"]).0);
    ok(&c, &["apply", "-f", &manifest(&dir, "w.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: snap}\nspec: {size: 3}\n")]);
    for s in [&a, &b, &c] {
        assert_eq!(ok(s, &["get", "secret", "s", "-n", "snap", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");
    }

    // Removing one server leaves a healthy two-member cluster.
    let member: serde_json::Value = serde_json::from_slice(&std::fs::read(c.dir.path().join("etcd/member.json")).expect("c's member")).expect("json");
    let c_member = member["name"].as_str().expect("name").to_string();
    assert!(members(&a).contains(&c_member));
    skiff(&["etcd", "member", "remove", &c_member, "--data-dir", &a.dir.path().display().to_string()]);
    c.stop();
    assert_eq!(members(&a).len(), 2);
    ok(&a, &["create", "configmap", "after-removal", "-n", "snap"]);
    assert!(kubectl(&b, &["get", "configmap", "after-removal", "-n", "snap"]).0);

    // A snapshot of the live cluster, restored into a new data dir.
    let kept: Vec<(Vec<&str>, (String, i64))> =
        [vec!["secret", "s", "-n", "snap"], vec!["deployment", "web", "-n", "snap"], vec!["crd", "widgets.example.com"], vec!["widget", "w1", "-n", "snap"]]
            .into_iter()
            .map(|w| {
                let got = uid_and_rv(&a, &w);
                (w, got)
            })
            .collect();
    let file = dir.path().join("etcd.snapshot");
    let saved = skiff(&["snapshot", "save", &file.display().to_string(), "--data-dir", &a.dir.path().display().to_string()]);
    assert!(saved.contains("snapshot saved"), "{saved}");
    drop(b);
    drop(a);
    let restored = tempfile::tempdir().expect("tempdir");
    let ports = embedded("127.0.0.5");
    skiff(&[
        "snapshot",
        "restore",
        &file.display().to_string(),
        "--data-dir",
        &restored.path().display().to_string(),
        "--advertise-address",
        "127.0.0.5",
        &ports[4],
        &ports[5],
        &ports[6],
        &ports[7],
    ]);
    let flags = [ports, vec!["--token".into(), token.clone()]].concat();
    let r = start_in(restored, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut highest = 0;
    for (what, (uid, rv)) in &kept {
        let (uid2, rv2) = uid_and_rv(&r, what);
        assert_eq!((&uid2, rv2), (uid, *rv), "{what:?} is back with its uid and resourceVersion");
        highest = highest.max(*rv);
    }
    ok(&r, &["create", "configmap", "after-restore", "-n", "snap"]);
    let (_, next) = uid_and_rv(&r, &["configmap", "after-restore", "-n", "snap"]);
    assert!(next > highest, "resourceVersions go on after the restored ones ({next} > {highest})");
    // The restored server kept the cluster's CA: its secrets decrypt.
    assert_eq!(ok(&r, &["get", "secret", "s", "-n", "snap", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");
}

/// Creates ConfigMaps named `PREFIX-TASK-I` from four clients until the
/// server stops answering; returns the acknowledged ones with their
/// resourceVersions.
fn write_until_refused(kubeconfig: std::path::PathBuf, prefix: String) -> Vec<(String, i64)> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config")).expect("client");
        let mut tasks = Vec::new();
        for t in 0..4 {
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client.clone(), "crash");
            let prefix = prefix.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("{prefix}-{t}-{i}");
                    let cm = k8s_openapi::api::core::v1::ConfigMap {
                        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
                        ..Default::default()
                    };
                    match tokio::time::timeout(Duration::from_secs(10), api.create(&Default::default(), &cm)).await {
                        Ok(Ok(made)) => acked.push((name, made.metadata.resource_version.unwrap_or_default().parse::<i64>().unwrap_or(0))),
                        _ => break,
                    }
                }
                acked
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("writer"));
        }
        all
    })
}

#[test]
fn kill_9_of_a_server_during_writes_over_etcd_loses_no_acknowledged_write() {
    let Some(cluster) = EtcdCluster::start(1) else { return };
    let mut s = server_over(&cluster, "127.0.0.2", &[]);
    ok(&s, &["create", "namespace", "crash"]);
    let mut previous_max = 0;
    let mut total = 0;
    for trial in 0..20 {
        let (kubeconfig, prefix) = (s.kubeconfig.clone(), format!("t{trial}"));
        let writer = std::thread::spawn(move || write_until_refused(kubeconfig, prefix));
        // A different moment in each trial.
        std::thread::sleep(Duration::from_millis(300 + (trial as u64 * 37) % 400));
        let _ = Command::new("kill").args(["-KILL", &s.pid().to_string()]).status();
        let acked = writer.join().expect("writer thread");
        s.restart();
        assert!(!acked.is_empty(), "trial {trial}: some writes were acknowledged");
        let listed =
            ok(&s, &["get", "configmaps", "-n", "crash", "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.resourceVersion}{\"\\n\"}{end}"]);
        let present: std::collections::HashMap<&str, i64> =
            listed.lines().filter_map(|l| l.split_once(' ')).map(|(n, rv)| (n, rv.parse().unwrap_or(-1))).collect();
        for (name, rv) in &acked {
            assert_eq!(present.get(name.as_str()), Some(rv), "trial {trial}: acknowledged {name} at {rv} is lost or changed");
        }
        let (min, max) = (acked.iter().map(|(_, rv)| *rv).min().unwrap_or(0), acked.iter().map(|(_, rv)| *rv).max().unwrap_or(0));
        assert!(min > previous_max, "trial {trial}: resourceVersions went back ({min} after {previous_max})");
        previous_max = max;
        total += acked.len();
    }
    eprintln!("20 kill -9 trials over etcd: {total} acknowledged writes, none lost");
}

#[test]
fn cluster_init_moves_an_existing_sqlite_store_onto_etcd_with_every_uid() {
    if !common::etcd::have_etcd() {
        return;
    }
    let mut s = start_with(&["--bind-address", "127.0.0.2"]);
    ok(&s, &["create", "namespace", "moved"]);
    ok(&s, &["create", "secret", "generic", "s", "-n", "moved", "--from-literal=k=v"]);
    ok(&s, &["create", "deployment", "web", "-n", "moved", "--image=x"]);
    let before: Vec<(String, i64)> = [vec!["secret", "s", "-n", "moved"], vec!["deployment", "web", "-n", "moved"]].iter().map(|w| uid_and_rv(&s, w)).collect();
    s.stop();
    // The same data dir, now with an embedded etcd.
    let (client, peer) = (free_port().to_string(), free_port().to_string());
    let dir = tempfile::TempDir::new().expect("tempdir");
    let data = std::mem::replace(&mut s.dir, dir);
    drop(s);
    let args = ["--bind-address", "127.0.0.2", "--cluster-init", "--etcd-client-port", &client, "--etcd-peer-port", &peer];
    let m = start_in(data, &args);
    assert!(m.dir.path().join("state.db.migrated").exists(), "the SQLite file is kept aside");
    assert!(m.dir.path().join("etcd/member.json").exists());
    for (w, (uid, _)) in [vec!["secret", "s", "-n", "moved"], vec!["deployment", "web", "-n", "moved"]].iter().zip(&before) {
        assert_eq!(&uid_and_rv(&m, w).0, uid, "{w:?} kept its uid");
    }
    assert_eq!(ok(&m, &["get", "secret", "s", "-n", "moved", "-o", "jsonpath={.data.k}"]), "dg==");
    assert_eq!(members(&m).len(), 1);
}

#[test]
fn deleting_a_servers_control_plane_node_removes_its_etcd_member() {
    if !common::etcd::have_etcd() {
        return;
    }
    let a_flags = [embedded("127.0.0.2"), vec!["--cluster-init".into()]].concat();
    let a = start_with(&a_flags.iter().map(String::as_str).collect::<Vec<_>>());
    let token = std::fs::read_to_string(a.dir.path().join("token")).expect("token").trim().to_string();
    let b_flags = [embedded("127.0.0.3"), vec!["--server".into(), format!("https://127.0.0.2:{}", a.port), "--token".into(), token]].concat();
    let b = start_with(&b_flags.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(members(&a).len(), 2);
    // A server with a node names its member after it (these run none, so
    // the test registers B's node as its kubelet would).
    let member: serde_json::Value = serde_json::from_slice(&std::fs::read(b.dir.path().join("etcd/member.json")).expect("member")).expect("json");
    let name = member["name"].as_str().expect("name").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{node-role.kubernetes.io/control-plane: \"true\"}}\n");
    ok(&a, &["create", "-f", &manifest(&dir, "node.yaml", &node)]);
    // A node that is no server's does not touch the members.
    ok(&a, &["create", "-f", &manifest(&dir, "worker.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: worker-1}\n")]);
    ok(&a, &["delete", "node", "worker-1"]);
    ok(&a, &["delete", "node", &name]);
    wait_for(&a, 30, |a| members(a).len() == 1);
    assert!(!members(&a).contains(&name));
    ok(&a, &["create", "configmap", "still-writable"]);
}
