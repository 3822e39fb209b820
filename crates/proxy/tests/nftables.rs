//! The rendered rules against the real nftables, in a network namespace
//! the test makes (nothing on the host is touched): a full sync, a partial
//! one, and rules for every kind of Service port are accepted by nft, and
//! the ruleset read back holds what was asked. Root-only; under `CI=true`
//! a missing prerequisite fails instead of skipping.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use skiff_proxy::model::{Endpoint, Protocol, ServicePort};
use skiff_proxy::rules::{render, RuleConfig};

fn can_run() -> bool {
    let ok = nix_is_root() && Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("root and nft are required under CI=true");
    }
    ok
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A network namespace removed when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("skiff-proxy-test-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("ip netns add");
        assert!(out.status.success(), "ip netns add: {}", String::from_utf8_lossy(&out.stderr));
        Self(name)
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        let mut child =
            Command::new("ip").args(["netns", "exec", &self.0, "nft", "-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("nft");
        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("nft");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn list(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.0, "nft", "list", "ruleset"]).output().expect("nft list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

fn ep(ip: [u8; 4], local: bool) -> Endpoint {
    Endpoint { ip: Ipv4Addr::from(ip), port: 8080, local, ready: true, serving: true, terminating: false }
}

fn port(id: &str, ip: [u8; 4]) -> ServicePort {
    ServicePort::cluster(id, Ipv4Addr::from(ip), 80, Protocol::Tcp, vec![ep([10, 42, 0, 5], true), ep([10, 42, 1, 5], false)])
}

#[test]
fn every_kind_of_service_port_is_accepted_by_nftables_and_a_partial_sync_applies() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let cfg = RuleConfig { table: "skiff-proxy-test".into(), cluster_cidr: Some("10.42.0.0/16".into()), nodeport_addresses: vec![] };
    let plain = port("default/plain/tcp/80", [10, 43, 0, 20]);
    let mut sticky = port("default/sticky/tcp/80", [10, 43, 0, 21]);
    sticky.affinity_seconds = Some(60);
    let mut np = port("default/np/udp/53", [10, 43, 0, 22]);
    np.protocol = Protocol::Udp;
    np.node_port = Some(30053);
    let mut local = port("default/local/tcp/http", [10, 43, 0, 23]);
    local.node_port = Some(30080);
    local.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
    local.external_ips = vec![Ipv4Addr::new(192, 0, 2, 11)];
    local.external_local = true;
    local.health_check_node_port = Some(32000);
    let mut empty = port("default/empty/tcp/80", [10, 43, 0, 24]);
    empty.endpoints.clear();
    empty.node_port = Some(30081);
    let ports = vec![plain.clone(), sticky, np, local, empty];
    let full = render(&ports, &cfg);
    ns.nft(&full.full_script(&cfg.table)).expect("the full ruleset applies");
    let listed = ns.list();
    assert!(listed.contains("table ip skiff-proxy-test"), "{listed}");
    assert!(listed.contains("dnat to 10.42.0.5:8080"), "{listed}");
    assert!(listed.contains("update @affinity-default/sticky/tcp/80-10.42.0.5-8080"), "{listed}");
    assert!(listed.contains("10.43.0.24 . tcp . 80 : goto reject-chain"), "{listed}");
    // Applying it again (a restart's full sync) replaces it in place.
    ns.nft(&full.full_script(&cfg.table)).expect("a second full sync applies");

    // One endpoint gone, one Service gone: a partial sync.
    let mut fewer = plain;
    fewer.endpoints.truncate(1);
    let after_port = fewer.clone();
    let after = render(&[fewer], &cfg);
    let diff = after.diff_script(&full, &cfg.table).expect("partial");
    ns.nft(&diff).expect("the partial sync applies");
    let listed = ns.list();
    assert!(!listed.contains("10.42.1.5"), "the removed endpoint is gone: {listed}");
    assert!(!listed.contains("sticky"), "the removed Service is gone: {listed}");
    assert!(listed.contains("dnat to 10.42.0.5:8080"), "{listed}");
    // The same through the proxy's incremental path, from a fresh table.
    let ns3 = Netns(format!("{}-c", ns.0));
    let _ = Command::new("ip").args(["netns", "add", &ns3.0]).output();
    let (mut applied, script) = skiff_proxy::rules::Applied::full(&ports, &cfg);
    ns3.nft(&script).expect("full");
    let partial = applied.partial(std::slice::from_ref(&after_port)).expect("partial");
    assert!(!partial.contains("nat-prerouting"), "only what changed: {partial}");
    ns3.nft(&partial).expect("the incremental partial sync applies");
    assert_eq!(applied.partial(&[after_port]).as_deref(), Some(""), "nothing changed, nothing to do");
    // What the kernel holds is what a full sync of `after` would hold.
    let ns2 = Netns(format!("{}-b", ns.0));
    let _ = Command::new("ip").args(["netns", "add", &ns2.0]).output();
    ns2.nft(&after.full_script(&cfg.table)).expect("full");
    assert_eq!(ns.list(), ns2.list(), "partial and full syncs agree");
    assert_eq!(ns3.list(), ns2.list(), "and so does the incremental path");
}
