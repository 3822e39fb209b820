//! The cluster's names, as CoreDNS's kubernetes plugin answers them,
//! built from the Service and EndpointSlice caches into one lookup table
//! (rebuilt when they change, so a query is one hash lookup).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An alias (ExternalName Services).
    Cname(String),
    /// A named port: its number and the host that serves it.
    Srv {
        /// The port.
        port: u16,
        /// The target host (a name in this zone).
        target: String,
    },
    /// A reverse name.
    Ptr(String),
}

/// Names under the cluster domain and the reverse zone, lower case, no
/// trailing dot.
#[derive(Debug, Default)]
pub struct Zone {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    records: HashMap<String, Vec<Rec>>,
    /// Names that exist without records of their own (`NS.svc.DOMAIN`):
    /// NODATA rather than NXDOMAIN.
    empty: HashSet<String>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name's records (of every type).
    Found(&'a [Rec]),
    /// A pod name (`1-2-3-4.NS.pod.DOMAIN`).
    Pod(Ipv4Addr),
    /// The name exists but has no records.
    Empty,
    /// No such name in the zone.
    NxDomain,
    /// Not ours to answer.
    NotOurs,
}

impl Zone {
    /// The zone for `domain` from the caches' contents.
    pub fn build<'a>(domain: &str, services: impl Iterator<Item = &'a Service>, slices: impl Iterator<Item = &'a EndpointSlice>) -> Self {
        let mut z = Zone { domain: domain.to_string(), ..Default::default() };
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if s.address_type != "IPv4" {
                continue;
            }
            if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                by_service.entry((s.metadata.namespace.clone().unwrap_or_default(), svc.clone())).or_default().push(s);
            }
        }
        z.empty.insert(domain.to_string());
        z.empty.insert(format!("svc.{domain}"));
        z.empty.insert(format!("pod.{domain}"));
        for svc in services {
            let (Some(name), Some(ns), Some(spec)) = (svc.metadata.name.as_deref(), svc.metadata.namespace.as_deref(), svc.spec.as_ref()) else { continue };
            let fqdn = format!("{name}.{ns}.svc.{domain}");
            z.empty.insert(format!("{ns}.svc.{domain}"));
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref() {
                    z.add(&fqdn, Rec::Cname(target.trim_end_matches('.').to_lowercase()));
                }
                continue;
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
            if !headless {
                if let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok()) {
                    z.add(&fqdn, Rec::A(ip));
                    z.add(&reverse(ip), Rec::Ptr(fqdn.clone()));
                }
                for p in spec.ports.iter().flatten() {
                    let (Some(pname), Ok(port)) = (p.name.as_deref().filter(|n| !n.is_empty()), u16::try_from(p.port)) else { continue };
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                    z.add(&format!("_{pname}._{proto}.{fqdn}"), Rec::Srv { port, target: fqdn.clone() });
                    z.empty.insert(format!("_{proto}.{fqdn}"));
                }
                continue;
            }
            // Headless: each endpoint by address, and by hostname when it has one.
            z.empty.insert(fqdn.clone());
            for s in by_service.get(&(ns.to_string(), name.to_string())).into_iter().flatten() {
                for e in &s.endpoints {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready && !publish_not_ready {
                        continue;
                    }
                    let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { continue };
                    let host = e.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string().replace('.', "-"));
                    let host_fqdn = format!("{host}.{fqdn}");
                    z.add(&fqdn, Rec::A(ip));
                    z.add(&host_fqdn, Rec::A(ip));
                    z.add(&reverse(ip), Rec::Ptr(host_fqdn.clone()));
                    for p in s.ports.iter().flatten() {
                        let (Some(pname), Some(port)) = (p.name.as_deref().filter(|n| !n.is_empty()), p.port.and_then(|p| u16::try_from(p).ok())) else {
                            continue;
                        };
                        let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                        z.add(&format!("_{pname}._{proto}.{fqdn}"), Rec::Srv { port, target: host_fqdn.clone() });
                        z.empty.insert(format!("_{proto}.{fqdn}"));
                    }
                }
            }
        }
        for recs in z.records.values_mut() {
            recs.dedup();
        }
        z
    }

    fn add(&mut self, name: &str, r: Rec) {
        let recs = self.records.entry(name.to_string()).or_default();
        if !recs.contains(&r) {
            recs.push(r);
        }
    }

    /// Looks `name` (lower case, no trailing dot) up.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        if let Some(r) = self.records.get(name) {
            return Lookup::Found(r);
        }
        if name.ends_with(".in-addr.arpa") {
            // Unknown addresses are left to the upstream servers (CoreDNS's
            // `fallthrough in-addr.arpa`).
            return Lookup::NotOurs;
        }
        let Some(rest) = name.strip_suffix(&self.domain).filter(|r| r.is_empty() || r.ends_with('.')) else { return Lookup::NotOurs };
        if self.empty.contains(name) {
            return Lookup::Empty;
        }
        // Pod records: A-B-C-D.NS.pod.DOMAIN, answered for any well-formed
        // address (CoreDNS's `pods insecure`, its default in k3s).
        let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
        if let [ip, _ns, "pod"] = labels.as_slice() {
            if let Ok(ip) = ip.replace('-', ".").parse::<Ipv4Addr>() {
                return Lookup::Pod(ip);
            }
        }
        if let [_ns, "pod"] = labels.as_slice() {
            return Lookup::Empty;
        }
        Lookup::NxDomain
    }
}

/// `d.c.b.a.in-addr.arpa` for `a.b.c.d`.
pub fn reverse(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let svcs: Vec<Service> = vec![
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80}]}}))
            .unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]}}))
            .unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "Example.COM."}}))
            .unwrap(),
        ];
        let slices: Vec<EndpointSlice> = vec![serde_json::from_value(json!({"metadata": {"name": "db-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "db"}}, "addressType": "IPv4", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.7"], "hostname": "db-0"}, {"addresses": ["10.42.0.8"], "conditions": {"ready": false}}]}))
        .unwrap()];
        Zone::build("cluster.local", svcs.iter(), slices.iter())
    }

    #[test]
    fn services_headless_endpoints_srv_cname_ptr_and_pods() {
        let z = zone();
        assert_eq!(z.lookup("web.default.svc.cluster.local"), Lookup::Found(&[Rec::A(Ipv4Addr::new(10, 43, 0, 20))]));
        assert_eq!(
            z.lookup("_http._tcp.web.default.svc.cluster.local"),
            Lookup::Found(&[Rec::Srv { port: 80, target: "web.default.svc.cluster.local".into() }])
        );
        assert_eq!(z.lookup("db.default.svc.cluster.local"), Lookup::Found(&[Rec::A(Ipv4Addr::new(10, 42, 0, 7))]), "only the ready endpoint");
        assert_eq!(z.lookup("db-0.db.default.svc.cluster.local"), Lookup::Found(&[Rec::A(Ipv4Addr::new(10, 42, 0, 7))]));
        assert_eq!(z.lookup("ext.default.svc.cluster.local"), Lookup::Found(&[Rec::Cname("example.com".into())]));
        assert_eq!(z.lookup("20.0.43.10.in-addr.arpa"), Lookup::Found(&[Rec::Ptr("web.default.svc.cluster.local".into())]));
        assert_eq!(z.lookup("10-42-0-9.default.pod.cluster.local"), Lookup::Pod(Ipv4Addr::new(10, 42, 0, 9)));
        assert_eq!(z.lookup("default.svc.cluster.local"), Lookup::Empty);
        assert_eq!(z.lookup("nope.default.svc.cluster.local"), Lookup::NxDomain);
        assert_eq!(z.lookup("example.com"), Lookup::NotOurs);
        assert_eq!(z.lookup("9.9.9.9.in-addr.arpa"), Lookup::NotOurs);
        assert_eq!(z.lookup("notcluster.local"), Lookup::NotOurs, "a suffix match must be on a label boundary");
    }
}
