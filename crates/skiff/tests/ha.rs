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
