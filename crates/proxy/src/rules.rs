//! The nftables rules for a set of Service ports, as data: named chains
//! with their rules, sets and maps with their elements. A sync renders the
//! whole [`Ruleset`] and hands nft either all of it (a full sync: the table
//! deleted and rebuilt in one transaction) or only what differs from the
//! ruleset last applied (a partial sync: changed chains flushed and
//! refilled, map elements added and deleted), as kube-proxy's nftables mode
//! does.
//!
//! The layout follows kube-proxy's (`services` dispatching through the
//! `service-ips` and `service-nodeports` verdict maps, one chain per
//! Service port, `mark-for-masquerade` and `masquerading`, rejects through
//! `no-endpoint-services`), with one change measured on this machine's
//! nftables (1.0.6): kube-proxy gives every endpoint its own chain and
//! picks one with an anonymous `numgen … vmap` per Service, and at 10,000
//! Services × 10 endpoints that transaction took 67 s here (anonymous sets
//! are created one by one, and a map bound to many rules makes each element
//! insert walk every binding). Here a Service port's chain picks its
//! endpoint with a cascade of `numgen random mod k 0` rules that DNAT in
//! place (as uniform as kube-proxy's pick: rule i takes 1/(n−i) of what is
//! left), and hairpin traffic is found by one `ip saddr . ip daddr` set in
//! postrouting instead of a rule per endpoint chain: 2.8 s for the same
//! ruleset.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::model::{Endpoint, ServicePort};

/// The mark that asks `masquerading` to SNAT a packet (kube-proxy's bit).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// How the rules are written.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// The nftables table (family `ip`).
    pub table: String,
    /// The pod network: traffic from outside it to a ClusterIP is masqueraded.
    pub cluster_cidr: Option<String>,
    /// Node addresses (CIDRs) NodePorts answer on; empty: every local address.
    pub nodeport_addresses: Vec<String>,
}

/// A chain: its declaration (`{ type nat hook … ; }` for base chains) and rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// The declaration, empty for a regular chain.
    pub decl: String,
    /// Its rules, in order.
    pub rules: Vec<String>,
}

/// A whole table's worth of rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name: (`set` or `map`, declaration).
    pub sets: BTreeMap<String, (&'static str, String)>,
    /// Elements by set or map name.
    pub elements: BTreeMap<String, BTreeSet<String>>,
}

impl Ruleset {
    fn chain(&mut self, name: &str) -> &mut Chain {
        self.chains.entry(name.to_string()).or_default()
    }

    fn rule(&mut self, chain: &str, rule: impl Into<String>) {
        self.chain(chain).rules.push(rule.into());
    }

    fn set(&mut self, kind: &'static str, name: &str, decl: &str) {
        self.sets.insert(name.to_string(), (kind, decl.to_string()));
        self.elements.entry(name.to_string()).or_default();
    }

    fn element(&mut self, set: &str, element: String) {
        self.elements.entry(set.to_string()).or_default().insert(element);
    }

    /// Rules and elements in total (the size figure benchmarks report).
    pub fn size(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum::<usize>() + self.elements.values().map(BTreeSet::len).sum::<usize>()
    }

    /// A transaction that replaces the table with this ruleset.
    pub fn full_script(&self, table: &str) -> String {
        let mut s = String::with_capacity(self.size() * 96);
        let t = format!("ip {table}");
        // `add` first so that `delete` never fails on a missing table.
        let _ = writeln!(s, "add table {t}\ndelete table {t}\nadd table {t}");
        for (name, (kind, decl)) in &self.sets {
            let _ = writeln!(s, "add {kind} {t} {name} {{ {decl} }}");
        }
        for (name, c) in &self.chains {
            let _ = writeln!(s, "add chain {t} {name}{}", decl_suffix(&c.decl));
        }
        for (name, c) in &self.chains {
            for r in &c.rules {
                let _ = writeln!(s, "add rule {t} {name} {r}");
            }
        }
        for (set, elems) in &self.elements {
            write_elements(&mut s, "add", &t, set, elems.iter());
        }
        s
    }

    /// A transaction that turns `old` (the ruleset in the kernel) into this
    /// one; `None` when only a full sync can (a set's declaration changed).
    pub fn diff_script(&self, old: &Ruleset, table: &str) -> Option<String> {
        diff_pairs(&[(old, self)], table, None)
    }

    /// Adds `other`'s chains, sets and elements (names never collide: each
    /// Service port's are its own).
    fn merge(&mut self, other: &Ruleset) {
        for (n, c) in &other.chains {
            self.chains.insert(n.clone(), c.clone());
        }
        for (n, d) in &other.sets {
            self.sets.insert(n.clone(), d.clone());
        }
        for (n, e) in &other.elements {
            self.elements.entry(n.clone()).or_default().extend(e.iter().cloned());
        }
    }
}

/// How many Service ports need each element: one two ports share (a pod
/// behind two Services has one hairpin element) stays until both are gone.
type Refs = HashMap<(String, String), u32>;

/// The transaction that turns each pair's old half into its new half.
/// Phases run across all pairs (sets and chains added, elements deleted
/// and added, chains and sets removed), so that nothing is referred to
/// before it exists or removed while referred to. With `refs`, an element
/// is added only when its first user appears and deleted when its last
/// goes.
fn diff_pairs(pairs: &[(&Ruleset, &Ruleset)], table: &str, mut refs: Option<&mut Refs>) -> Option<String> {
    let t = format!("ip {table}");
    let mut s = String::new();
    for (old, new) in pairs {
        for (name, (kind, decl)) in &new.sets {
            match old.sets.get(name) {
                Some((k, d)) if k == kind && d == decl => {}
                Some(_) => return None,
                None => {
                    let _ = writeln!(s, "add {kind} {t} {name} {{ {decl} }}");
                }
            }
        }
    }
    for (old, new) in pairs {
        for (name, c) in &new.chains {
            match old.chains.get(name) {
                Some(o) if o.decl != c.decl => return None,
                Some(o) if o.rules == c.rules => {}
                found => {
                    let _ = match found {
                        Some(_) => writeln!(s, "flush chain {t} {name}"),
                        None => writeln!(s, "add chain {t} {name}{}", decl_suffix(&c.decl)),
                    };
                    for r in &c.rules {
                        let _ = writeln!(s, "add rule {t} {name} {r}");
                    }
                }
            }
        }
    }
    let empty = BTreeSet::new();
    let mut added: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (old, new) in pairs {
        for (set, elems) in &new.elements {
            let before = old.elements.get(set).unwrap_or(&empty);
            for e in elems.iter().filter(|e| !before.contains(*e)) {
                let first = match refs.as_deref_mut() {
                    None => true,
                    Some(r) => {
                        let n = r.entry((set.clone(), e.clone())).or_insert(0);
                        *n += 1;
                        *n == 1
                    }
                };
                if first {
                    added.entry(set).or_default().push(e);
                }
            }
        }
    }
    let mut deleted: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (old, new) in pairs {
        for (set, elems) in &old.elements {
            // A set that goes takes its elements along.
            let set_goes = old.sets.contains_key(set) && !new.sets.contains_key(set);
            let now = new.elements.get(set).unwrap_or(&empty);
            for e in elems.iter().filter(|e| !now.contains(*e)) {
                let last = match refs.as_deref_mut() {
                    None => true,
                    Some(r) => {
                        let key = (set.clone(), e.clone());
                        let n = r.get_mut(&key).map(|n| {
                            *n = n.saturating_sub(1);
                            *n
                        });
                        if n == Some(0) {
                            r.remove(&key);
                        }
                        n.unwrap_or(0) == 0
                    }
                };
                if last && !set_goes {
                    deleted.entry(set).or_default().push(e);
                }
            }
        }
    }
    for (set, elems) in deleted {
        write_elements(&mut s, "delete", &t, set, elems.into_iter());
    }
    for (set, elems) in added {
        write_elements(&mut s, "add", &t, set, elems.into_iter());
    }
    // Chains and sets that are gone: nothing refers to them any more
    // (their referrers were rewritten above).
    for (old, new) in pairs {
        for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            let _ = writeln!(s, "flush chain {t} {name}");
        }
    }
    for (old, new) in pairs {
        for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            let _ = writeln!(s, "delete chain {t} {name}");
        }
        for (name, (kind, _)) in old.sets.iter().filter(|(n, _)| !new.sets.contains_key(*n)) {
            let _ = writeln!(s, "delete {kind} {t} {name}");
        }
    }
    Some(s)
}

/// The rules in the kernel, per Service port, so that a partial sync
/// renders and compares only the ports that changed (at 10,000 Services,
/// rendering everything to change one endpoint took 120 ms).
pub struct Applied {
    cfg: RuleConfig,
    ports: HashMap<String, (ServicePort, Ruleset)>,
    refs: Refs,
}

impl Applied {
    /// Everything rendered: the state and the full transaction that makes it.
    pub fn full(ports: &[ServicePort], cfg: &RuleConfig) -> (Self, String) {
        let mut whole = Ruleset::default();
        base(&mut whole, cfg);
        let mut map = HashMap::with_capacity(ports.len());
        let mut refs = Refs::new();
        for p in ports {
            let f = render_port(p, cfg);
            for (set, elems) in &f.elements {
                for e in elems {
                    *refs.entry((set.clone(), e.clone())).or_insert(0) += 1;
                }
            }
            whole.merge(&f);
            map.insert(p.id.clone(), (p.clone(), f));
        }
        (Self { cfg: cfg.clone(), ports: map, refs }, whole.full_script(&cfg.table))
    }

    /// The partial transaction from what is applied to `ports`, or `None`
    /// when only a full sync can; the state assumes it is applied.
    pub fn partial(&mut self, ports: &[ServicePort]) -> Option<String> {
        let mut changed: Vec<(String, Option<(ServicePort, Ruleset)>)> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::with_capacity(ports.len());
        for p in ports {
            seen.insert(&p.id);
            match self.ports.get(&p.id) {
                Some((old, _)) if old == p => {}
                _ => changed.push((p.id.clone(), Some((p.clone(), render_port(p, &self.cfg))))),
            }
        }
        changed.extend(self.ports.keys().filter(|id| !seen.contains(id.as_str())).map(|id| (id.clone(), None)));
        let empty = Ruleset::default();
        let pairs: Vec<(&Ruleset, &Ruleset)> =
            changed.iter().map(|(id, new)| (self.ports.get(id).map_or(&empty, |(_, f)| f), new.as_ref().map_or(&empty, |(_, f)| f))).collect();
        let script = diff_pairs(&pairs, &self.cfg.table, Some(&mut self.refs))?;
        for (id, new) in changed {
            match new {
                Some(n) => {
                    self.ports.insert(id, n);
                }
                None => {
                    self.ports.remove(&id);
                }
            }
        }
        Some(script)
    }

    /// Rules and elements in total.
    pub fn size(&self) -> usize {
        self.ports.values().map(|(_, f)| f.size()).sum()
    }
}

fn decl_suffix(decl: &str) -> String {
    if decl.is_empty() {
        String::new()
    } else {
        format!(" {{ {decl} }}")
    }
}

/// Elements in commands of at most 1,000 (nft parses one long line slowly).
fn write_elements<'a>(s: &mut String, verb: &str, t: &str, set: &str, elems: impl Iterator<Item = &'a String>) {
    let elems: Vec<&String> = elems.collect();
    for chunk in elems.chunks(1000) {
        let list: Vec<&str> = chunk.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(s, "{verb} element {t} {set} {{ {} }}", list.join(", "));
    }
}

/// The chain of one Service port (ClusterIP traffic).
pub fn service_chain(p: &ServicePort) -> String {
    format!("service-{}", p.id)
}

fn external_chain(p: &ServicePort) -> String {
    format!("external-{}", p.id)
}

fn local_chain(p: &ServicePort) -> String {
    format!("local-{}", p.id)
}

fn affinity_set(p: &ServicePort, e: &Endpoint) -> String {
    format!("affinity-{}-{}-{}", p.id, e.ip, e.port)
}

/// The rules for `ports` (sorted by id, as [`crate::model::service_ports`] gives them).
pub fn render(ports: &[ServicePort], cfg: &RuleConfig) -> Ruleset {
    let mut r = Ruleset::default();
    base(&mut r, cfg);
    for p in ports {
        r.merge(&render_port(p, cfg));
    }
    r
}

/// One Service port's chains, sets and elements.
fn render_port(p: &ServicePort, cfg: &RuleConfig) -> Ruleset {
    let mut r = Ruleset::default();
    render_into(&mut r, p, cfg);
    r
}

fn render_into(r: &mut Ruleset, p: &ServicePort, cfg: &RuleConfig) {
    let Some(cluster_ip) = p.cluster_ip else { return };
    let proto = p.protocol.nft();
    let cluster_eps = p.cluster_endpoints();
    let svc = service_chain(p);
    let key = |ip: Ipv4Addr| format!("{ip} . {proto} . {}", p.port);
    r.element("cluster-ips", cluster_ip.to_string());
    for e in &p.endpoints {
        // Hairpin: a pod reaching itself through its Service.
        r.element("hairpin", format!("{} . {}", e.ip, e.ip));
    }
    if cluster_eps.is_empty() {
        // Refused at once, not dropped. Under internalTrafficPolicy
        // Local with endpoints elsewhere only, kube-proxy drops.
        let verdict = if p.internal_local && !p.endpoints.is_empty() { "drop" } else { "goto reject-chain" };
        r.element("no-endpoint-services", format!("{} : {verdict}", key(cluster_ip)));
    } else {
        if let Some(cidr) = &cfg.cluster_cidr {
            r.rule(&svc, format!("ip daddr {cluster_ip} {proto} dport {} ip saddr != {cidr} jump mark-for-masquerade", p.port));
        }
        pick(r, &svc, p, &cluster_eps);
        r.element("service-ips", format!("{} : goto {svc}", key(cluster_ip)));
    }
    if !p.is_external() {
        return;
    }
    let ext_eps = p.external_endpoints();
    let ext = external_chain(p);
    let has_ext = if p.external_local {
        // Local policy: the client's address is kept and only local
        // endpoints serve; traffic from this host is masqueraded, and
        // pods (already inside) may use any endpoint.
        r.rule(&ext, "fib saddr type local jump mark-for-masquerade");
        if let (Some(cidr), false) = (&cfg.cluster_cidr, cluster_eps.is_empty()) {
            r.rule(&ext, format!("ip saddr {cidr} goto {svc}"));
        }
        if ext_eps.is_empty() {
            r.rule(&ext, "drop");
        } else {
            let local = local_chain(p);
            pick(r, &local, p, &ext_eps);
            r.rule(&ext, format!("goto {local}"));
        }
        true
    } else if ext_eps.is_empty() {
        false
    } else {
        r.rule(&ext, "jump mark-for-masquerade");
        r.rule(&ext, format!("goto {svc}"));
        true
    };
    for ip in p.external_ips.iter().chain(&p.load_balancer_ips) {
        if has_ext {
            r.element("service-ips", format!("{} : goto {ext}", key(*ip)));
        } else {
            r.element("no-endpoint-services", format!("{} : goto reject-chain", key(*ip)));
        }
    }
    if let Some(np) = p.node_port {
        if has_ext {
            r.element("service-nodeports", format!("{proto} . {np} : goto {ext}"));
        } else {
            r.element("no-endpoint-nodeports", format!("{proto} . {np} : goto reject-chain"));
        }
    }
}

/// The rules of `chain` that DNAT to one of `eps`: an affinity match per
/// endpoint (ClientIP), then the random cascade.
fn pick(r: &mut Ruleset, chain: &str, p: &ServicePort, eps: &[&Endpoint]) {
    let proto = p.protocol.nft();
    let n = eps.len();
    if let Some(timeout) = p.affinity_seconds {
        for e in eps {
            let set = affinity_set(p, e);
            r.set("set", &set, &format!("type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ;"));
            r.rule(chain, format!("ip saddr @{set} update @{set} {{ ip saddr }} meta l4proto {proto} dnat ip to {}:{}", e.ip, e.port));
        }
    }
    for (i, e) in eps.iter().enumerate() {
        let choose = if i + 1 < n { format!("numgen random mod {} 0 ", n - i) } else { String::new() };
        let remember = if p.affinity_seconds.is_some() { format!("update @{} {{ ip saddr }} ", affinity_set(p, e)) } else { String::new() };
        r.rule(chain, format!("{choose}{remember}meta l4proto {proto} dnat ip to {}:{}", e.ip, e.port));
    }
}

/// The chains, sets and maps every table has.
fn base(r: &mut Ruleset, cfg: &RuleConfig) {
    r.set("map", "service-ips", "type ipv4_addr . inet_proto . inet_service : verdict ;");
    r.set("map", "service-nodeports", "type inet_proto . inet_service : verdict ;");
    r.set("map", "no-endpoint-services", "type ipv4_addr . inet_proto . inet_service : verdict ;");
    r.set("map", "no-endpoint-nodeports", "type inet_proto . inet_service : verdict ;");
    r.set("set", "cluster-ips", "type ipv4_addr ;");
    r.set("set", "hairpin", "type ipv4_addr . ipv4_addr ;");
    let hook = |r: &mut Ruleset, name: &str, decl: &str| r.chain(name).decl = decl.to_string();
    hook(r, "nat-prerouting", "type nat hook prerouting priority dstnat ;");
    hook(r, "nat-output", "type nat hook output priority -100 ;");
    hook(r, "nat-postrouting", "type nat hook postrouting priority srcnat ;");
    // Refusals, as kube-proxy places them: a Service port without
    // endpoints (never DNATed, so still addressed to the Service) in the
    // input, forward and output paths; an address in the service range
    // that no Service port matched, after DNAT.
    hook(r, "filter-input", "type filter hook input priority -110 ;");
    hook(r, "filter-forward", "type filter hook forward priority -110 ;");
    hook(r, "filter-output", "type filter hook output priority -110 ;");
    hook(r, "filter-output-post-dnat", "type filter hook output priority -90 ;");
    r.rule("nat-prerouting", "jump services");
    r.rule("nat-output", "jump services");
    r.rule("nat-postrouting", "jump masquerading");
    r.rule("filter-input", "ct state new jump service-endpoints-check");
    r.rule("filter-forward", "ct state new jump service-endpoints-check");
    r.rule("filter-forward", "ct state new jump cluster-ips-check");
    r.rule("filter-output", "ct state new jump service-endpoints-check");
    r.rule("filter-output-post-dnat", "ct state new jump cluster-ips-check");
    r.rule("cluster-ips-check", "ip daddr @cluster-ips jump reject-chain");
    r.rule("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
    r.rule("service-endpoints-check", format!("{} meta l4proto . th dport vmap @no-endpoint-nodeports", nodeport_match(cfg)));
    // A TCP reset for TCP: refused at once, where an ICMP error would be
    // subject to the host's ICMP rate limit (one a second per peer).
    r.rule("reject-chain", "meta l4proto tcp reject with tcp reset");
    r.rule("reject-chain", "reject");
    r.rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips");
    r.rule("services", format!("{} meta l4proto . th dport vmap @service-nodeports", nodeport_match(cfg)));
    r.rule("mark-for-masquerade", format!("meta mark set meta mark or {MASQUERADE_MARK:#x}"));
    r.rule("masquerading", "ct status dnat ip saddr . ip daddr @hairpin masquerade");
    r.rule("masquerading", format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"));
    r.rule("masquerading", format!("meta mark set meta mark xor {MASQUERADE_MARK:#x}"));
    r.rule("masquerading", "masquerade fully-random");
}

/// The match for traffic to a NodePort: a local address (in
/// `--nodeport-addresses` when given), never loopback, as kube-proxy's
/// nftables mode.
fn nodeport_match(cfg: &RuleConfig) -> String {
    let mut m = "fib daddr type local ip daddr != 127.0.0.0/8".to_string();
    if !cfg.nodeport_addresses.is_empty() {
        let _ = write!(m, " ip daddr {{ {} }}", cfg.nodeport_addresses.join(", "));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn port(id: &str, ip: [u8; 4], eps: &[[u8; 4]]) -> ServicePort {
        let eps = eps.iter().map(|e| Endpoint { ip: Ipv4Addr::from(*e), port: 8080, local: true, ready: true, serving: true, terminating: false }).collect();
        ServicePort::cluster(id, Ipv4Addr::from(ip), 80, Protocol::Tcp, eps)
    }

    fn cfg() -> RuleConfig {
        RuleConfig { table: "t".into(), cluster_cidr: Some("10.42.0.0/16".into()), nodeport_addresses: vec![] }
    }

    #[test]
    fn a_service_picks_uniformly_by_a_cascade_and_one_without_endpoints_rejects() {
        let r = render(
            &[port("default/web/tcp/80", [10, 43, 0, 5], &[[10, 42, 0, 1], [10, 42, 0, 2], [10, 42, 0, 3]]), port("default/none/tcp/80", [10, 43, 0, 6], &[])],
            &cfg(),
        );
        let c = &r.chains["service-default/web/tcp/80"].rules;
        assert_eq!(
            c,
            &vec![
                "ip daddr 10.43.0.5 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade".to_string(),
                "numgen random mod 3 0 meta l4proto tcp dnat ip to 10.42.0.1:8080".into(),
                "numgen random mod 2 0 meta l4proto tcp dnat ip to 10.42.0.2:8080".into(),
                "meta l4proto tcp dnat ip to 10.42.0.3:8080".into(),
            ]
        );
        assert!(r.elements["service-ips"].contains("10.43.0.5 . tcp . 80 : goto service-default/web/tcp/80"));
        assert!(r.elements["no-endpoint-services"].contains("10.43.0.6 . tcp . 80 : goto reject-chain"));
        assert!(!r.chains.contains_key("service-default/none/tcp/80"));
    }

    #[test]
    fn a_shared_endpoint_keeps_its_element_until_its_last_service_goes() {
        let a = port("default/a/tcp/80", [10, 43, 0, 5], &[[10, 42, 0, 1]]);
        let b = port("default/b/tcp/80", [10, 43, 0, 6], &[[10, 42, 0, 1]]);
        let (mut applied, _) = Applied::full(&[a.clone(), b.clone()], &cfg());
        let d = applied.partial(&[b]).expect("partial");
        assert!(!d.contains("hairpin"), "b still needs the pod's hairpin element: {d}");
        assert!(d.contains("delete chain ip t service-default/a/tcp/80"), "{d}");
        let d = applied.partial(&[]).expect("partial");
        assert!(d.contains("delete element ip t hairpin { 10.42.0.1 . 10.42.0.1 }"), "{d}");
        let d = applied.partial(&[a]).expect("partial");
        assert!(d.contains("add element ip t hairpin { 10.42.0.1 . 10.42.0.1 }") && d.contains("add chain ip t service-default/a/tcp/80"), "{d}");
    }

    #[test]
    fn an_endpoint_change_is_a_small_diff() {
        let before = render(&[port("default/web/tcp/80", [10, 43, 0, 5], &[[10, 42, 0, 1], [10, 42, 0, 2]])], &cfg());
        let after = render(&[port("default/web/tcp/80", [10, 43, 0, 5], &[[10, 42, 0, 1]])], &cfg());
        let d = after.diff_script(&before, "t").expect("a partial sync");
        assert!(d.contains("flush chain ip t service-default/web/tcp/80\n"), "{d}");
        assert!(d.contains("delete element ip t hairpin { 10.42.0.2 . 10.42.0.2 }"), "{d}");
        assert!(!d.contains("nat-prerouting"), "unchanged chains are left alone: {d}");
        assert_eq!(before.diff_script(&before, "t").as_deref(), Some(""), "no change, no commands");
        let gone = render(&[], &cfg());
        let d = gone.diff_script(&before, "t").expect("a partial sync");
        assert!(d.contains("delete element ip t service-ips { 10.43.0.5 . tcp . 80 : goto service-default/web/tcp/80 }"), "{d}");
        assert!(d.find("delete element ip t service-ips").unwrap() < d.find("delete chain ip t service-default/web/tcp/80").unwrap(), "{d}");
    }
}
