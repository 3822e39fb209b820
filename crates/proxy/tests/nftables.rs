//! The rendered rules against the real nftables, in network namespaces
//! the test makes (nothing on the host is touched): what the proxy sends
//! over netlink is what nft itself makes of the same transaction's text
//! (`nft list ruleset` reads the same) for every kind of Service port; a
//! partial sync and the proxy's incremental path leave what a full sync
//! leaves; a refused transaction changes nothing. Root-only; under `CI=true` a
//! missing prerequisite fails instead of skipping.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use skiff_proxy::model::{Endpoint, Protocol, ServicePort};
use skiff_proxy::nft::{NftError, Op, Transaction};
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
    fn new(suffix: &str) -> Self {
        let name = format!("skiff-proxy-test-{}-{suffix}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("ip netns add");
        assert!(out.status.success(), "ip netns add: {}", String::from_utf8_lossy(&out.stderr));
        Self(name)
    }

    /// Runs `f` on a thread inside the namespace.
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("the namespace's file");
                // Only this thread moves into the namespace.
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("the netlink thread")
        })
    }

    /// Applies `tx` over netlink from inside the namespace.
    fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
        self.inside(|| tx.apply_blocking())
    }

    /// Runs `nft ARGS` inside the namespace.
    fn nft_cmd(&self, args: &[&str]) {
        let out = Command::new("ip").args(["netns", "exec", &self.0, "nft"]).args(args).output().expect("nft");
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Applies `tx`'s text with nft itself.
    fn nft(&self, tx: &Transaction) -> Result<(), String> {
        let mut child =
            Command::new("ip").args(["netns", "exec", &self.0, "nft", "-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("nft");
        child.stdin.take().expect("stdin").write_all(tx.to_string().as_bytes()).expect("write");
        let out = child.wait_with_output().expect("nft");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`skiff_proxy::nft::netlink::look`] at `table`'s `services` chain, from inside.
    fn look(&self, table: &str) -> Option<skiff_proxy::nft::netlink::TableLook> {
        self.inside(|| skiff_proxy::nft::netlink::look(table, "services").expect("look"))
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

/// Applies `tx` over netlink in `ours` and with nft in `nfts`, and checks
/// that the kernel holds the same in both.
fn same_as_nft(ours: &Netns, nfts: &Netns, tx: &Transaction) -> String {
    ours.apply(tx).unwrap_or_else(|e| panic!("netlink: {e}\n{tx}"));
    nfts.nft(tx).unwrap_or_else(|e| panic!("nft: {e}\n{tx}"));
    let (listed, theirs) = (ours.list(), nfts.list());
    if listed != theirs {
        let lines = |s: &str| s.lines().map(str::to_string).collect::<std::collections::BTreeSet<_>>();
        let (a, b) = (lines(&listed), lines(&theirs));
        panic!("netlink and nft differ: only by netlink {:#?}, only by nft {:#?}\nfor\n{tx}", a.difference(&b).collect::<Vec<_>>(), b.difference(&a).collect::<Vec<_>>());
    }
    listed
}

#[test]
fn every_kind_of_service_port_programs_as_nft_would_and_partial_syncs_agree_with_full_ones() {
    if !can_run() {
        return;
    }
    let (ours, nfts) = (Netns::new("a"), Netns::new("b"));
    let cfg = RuleConfig {
        table: "skiff-proxy-test".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
        nodeport_addresses: vec!["192.0.2.0/24".parse().unwrap(), "198.51.100.7/32".parse().unwrap(), "172.16.0.0/12".parse().unwrap()],
    };
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
    let mut sctp = port("default/sctp/sctp/80", [10, 43, 0, 25]);
    sctp.protocol = Protocol::Sctp;
    let ports = vec![plain.clone(), sticky, np, local, empty, sctp];
    let full = render(&ports, &cfg);
    let listed = same_as_nft(&ours, &nfts, &full.full(&cfg.table));
    assert!(listed.contains("table ip skiff-proxy-test"), "{listed}");
    assert!(listed.contains("dnat to 10.42.0.5:8080"), "{listed}");
    assert!(listed.contains("10.43.0.20 . tcp . 80 . 1 : 10.42.1.5 . 8080"), "{listed}");
    assert!(listed.contains("update @affinity-default/sticky/tcp/80-10.42.0.5-8080"), "{listed}");
    assert!(listed.contains("10.43.0.24 . tcp . 80 : goto reject-chain"), "{listed}");
    // Applying it again (a restart's full sync) replaces it in place.
    same_as_nft(&ours, &nfts, &full.full(&cfg.table));

    // One endpoint gone, one Service gone: a partial sync.
    let mut fewer = plain;
    fewer.endpoints.truncate(1);
    let after_port = fewer.clone();
    let after = render(&[fewer], &cfg);
    // (Not through nft: nft 1.0.6 cannot load the `pick-N` rule into its
    // cache, "conflicting protocols specified: ip vs. th", which commands
    // that change rules need; `nft list` reads it well.)
    ours.apply(&after.diff(&full, &cfg.table).expect("partial")).expect("the partial sync applies");
    let listed = ours.list();
    assert!(!listed.contains("10.42.1.5"), "the removed endpoint is gone: {listed}");
    assert!(!listed.contains("sticky"), "the removed Service is gone: {listed}");
    // What the kernel holds is what a full sync of `after` would hold.
    let fresh = Netns::new("c");
    fresh.apply(&after.full(&cfg.table)).expect("full");
    assert_eq!(fresh.list(), listed, "partial and full syncs agree");

    // The same through the proxy's incremental path, from a fresh table.
    let incremental = Netns::new("d");
    let (mut applied, tx) = skiff_proxy::rules::Applied::full(&ports, &cfg);
    incremental.apply(&tx).expect("full");
    let partial = applied.partial(std::slice::from_ref(&after_port)).expect("partial");
    assert!(!partial.to_string().contains("nat-prerouting"), "only what changed: {partial}");
    incremental.apply(&partial).expect("the incremental partial sync applies");
    let look = incremental.look(&cfg.table).expect("the table is there");
    assert_eq!(look.chains as usize, applied.objects(), "the kernel counts the chains and sets the proxy expects");
    assert!(look.rules >= 2, "{look:?}");
    assert!(applied.partial(&[after_port]).is_some_and(|t| t.is_empty()), "nothing changed, nothing to do");
    assert_eq!(incremental.list(), listed, "and so does the incremental path");

    // Changes from outside show in a look: a flushed chain, a table made
    // again, a table gone.
    incremental.nft_cmd(&["flush", "chain", "ip", &cfg.table, "services"]);
    assert_eq!(incremental.look(&cfg.table).map(|l| l.rules), Some(0));
    incremental.nft_cmd(&["delete", "table", "ip", &cfg.table]);
    assert_eq!(incremental.look(&cfg.table), None, "a deleted table");
    incremental.apply(&after.full(&cfg.table)).expect("full");
    assert_ne!(incremental.look(&cfg.table).map(|l| l.handle), Some(look.handle), "a table made again has a new handle");
}

#[test]
fn a_refused_transaction_changes_nothing_and_says_which_operation() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("e");
    let mut tx = Transaction::new("skiff-proxy-refused");
    tx.push(Op::AddTable);
    tx.push(Op::AddChain { name: "kept-out".into(), hook: None });
    tx.push(Op::DeleteChain("no-such-chain".into()));
    let err = ns.apply(&tx).expect_err("deleting a missing chain is refused");
    let msg = err.to_string();
    assert!(msg.contains("delete chain ip skiff-proxy-refused no-such-chain") && msg.contains("No such file"), "{msg}");
    assert!(!ns.list().contains("skiff-proxy-refused"), "nothing of it was applied: {}", ns.list());
}
