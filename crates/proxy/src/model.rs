//! What the rules are made from: each Service port with the endpoints that
//! may serve it on this node, read from the Service and EndpointSlice
//! caches the way kube-proxy reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use skiff_nftables::Protocol;

/// The protocol of a Service or EndpointSlice port (`TCP` when unset).
pub fn parse_protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The target port (a named `targetPort` resolved per endpoint).
    pub port: u16,
    /// On this node.
    pub local: bool,
    /// The EndpointSlice's `ready` condition (unset counts as ready).
    pub ready: bool,
    /// `serving` (unset: as ready).
    pub serving: bool,
    /// `terminating`.
    pub terminating: bool,
}

/// One port of one Service, with everything its rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port-name` (the port number when unnamed).
    pub id: String,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The ClusterIP (none for headless Services).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The node port (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `spec.healthCheckNodePort` (LoadBalancer Services with external policy Local).
    pub health_check_node_port: Option<u16>,
    /// Every endpoint the slices name for this port.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A ClusterIP Service port with `endpoints` and every other setting at
    /// its default (for tests and benchmarks; the proxy reads them from the
    /// API with [`service_ports`]).
    pub fn cluster(id: &str, cluster_ip: Ipv4Addr, port: u16, protocol: Protocol, endpoints: Vec<Endpoint>) -> Self {
        let mut parts = id.split('/');
        Self {
            id: id.to_string(),
            namespace: parts.next().unwrap_or_default().to_string(),
            name: parts.next().unwrap_or_default().to_string(),
            cluster_ip: Some(cluster_ip),
            port,
            protocol,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            affinity_seconds: None,
            external_local: false,
            internal_local: false,
            health_check_node_port: None,
            endpoints,
        }
    }

    /// Whether anything outside the cluster network reaches this port.
    pub fn is_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    /// The endpoints traffic goes to, from `candidates`: the ready ones, or,
    /// when none is, the serving ones that are terminating (kube-proxy's
    /// fallback that lets connections drain during a rollout).
    fn usable<'a>(candidates: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
        let ready: Vec<&Endpoint> = candidates.clone().filter(|e| e.ready).collect();
        if !ready.is_empty() {
            return ready;
        }
        candidates.filter(|e| e.serving && e.terminating).collect()
    }

    /// Endpoints for traffic to the ClusterIP (only local ones under
    /// `internalTrafficPolicy: Local`).
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        Self::usable(self.endpoints.iter().filter(|e| !self.internal_local || e.local))
    }

    /// Endpoints for traffic from outside (only local ones under
    /// `externalTrafficPolicy: Local`).
    pub fn external_endpoints(&self) -> Vec<&Endpoint> {
        Self::usable(self.endpoints.iter().filter(|e| !self.external_local || e.local))
    }

    /// The local endpoints a health check reports.
    pub fn local_endpoint_count(&self) -> usize {
        Self::usable(self.endpoints.iter().filter(|e| e.local)).len()
    }
}

/// The ports of every Service, from the caches' contents, sorted by id.
pub fn service_ports<'a>(services: impl Iterator<Item = &'a Service>, slices: impl Iterator<Item = &'a EndpointSlice>, node_name: &str) -> Vec<ServicePort> {
    // Slices by the Service they belong to.
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) else { continue };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let external_ips: Vec<Ipv4Addr> = spec.external_ips.iter().flatten().filter_map(|i| i.parse().ok()).collect();
        let load_balancer_ips: Vec<Ipv4Addr> = if ty == "LoadBalancer" {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let t = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
            t.map_or(10_800, |t| t.clamp(1, 86_400) as u32)
        });
        let external = matches!(ty, "NodePort" | "LoadBalancer") || !external_ips.is_empty();
        let external_local = external && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let health_check_node_port =
            if ty == "LoadBalancer" && external_local { spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()) } else { None };
        let slices = by_service.get(&(ns.clone(), name.clone())).map(Vec::as_slice).unwrap_or(&[]);
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = parse_protocol(p.protocol.as_deref()) else { continue };
            let Ok(port) = u16::try_from(p.port) else { continue };
            let port_name = p.name.clone().unwrap_or_default();
            let node_port = if matches!(ty, "NodePort" | "LoadBalancer") { p.node_port.and_then(|n| u16::try_from(n).ok()) } else { None };
            let mut endpoints: BTreeSet<Endpoint> = BTreeSet::new();
            for s in slices {
                // The slice port this Service port maps to: the one of the same name.
                let Some(sp) = s
                    .ports
                    .iter()
                    .flatten()
                    .find(|sp| sp.name.as_deref().unwrap_or("") == port_name && parse_protocol(sp.protocol.as_deref()) == Some(protocol))
                else {
                    continue;
                };
                let Some(target) = sp.port.and_then(|p| u16::try_from(p).ok()) else { continue };
                for e in &s.endpoints {
                    let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { continue };
                    let c = e.conditions.as_ref();
                    let ready = c.and_then(|c| c.ready).unwrap_or(true);
                    endpoints.insert(Endpoint {
                        ip,
                        port: target,
                        local: e.node_name.as_deref() == Some(node_name),
                        ready,
                        serving: c.and_then(|c| c.serving).unwrap_or(ready),
                        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    });
                }
            }
            let label = if port_name.is_empty() { port.to_string() } else { port_name.clone() };
            out.push(ServicePort {
                id: format!("{ns}/{name}/{}/{label}", protocol.nft()),
                namespace: ns.clone(),
                name: name.clone(),
                cluster_ip,
                port,
                protocol,
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                affinity_seconds,
                external_local,
                internal_local,
                health_check_node_port,
                endpoints: dedupe(endpoints),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// One entry per address and port (two slices may list one pod while it
/// moves between them); a ready copy wins.
fn dedupe(endpoints: BTreeSet<Endpoint>) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for e in endpoints {
        match by_addr.get(&(e.ip, e.port)) {
            Some(old) if old.ready => {}
            _ => {
                by_addr.insert((e.ip, e.port), e);
            }
        }
    }
    by_addr.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    #[test]
    fn named_target_ports_resolve_per_slice_and_ready_endpoints_win() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}));
        let a = slice(json!({"metadata": {"name": "web-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                          {"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "n2"}]}));
        let b = slice(json!({"metadata": {"name": "web-b", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.1.7"], "nodeName": "n2"}]}));
        let ports = service_ports([&s].into_iter(), [&a, &b].into_iter(), "n1");
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.id, "default/web/tcp/http");
        let used: Vec<(String, u16, bool)> = p.cluster_endpoints().iter().map(|e| (e.ip.to_string(), e.port, e.local)).collect();
        assert_eq!(used, vec![("10.42.0.5".into(), 8080, true), ("10.42.1.7".into(), 9090, false)], "the terminating one is left out");
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 80}]}}));
        let a = slice(json!({"metadata": {"name": "web-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                          {"addresses": ["10.42.0.7"], "conditions": {"ready": false, "serving": false, "terminating": true}}]}));
        let ports = service_ports([&s].into_iter(), [&a].into_iter(), "n1");
        let used: Vec<String> = ports[0].cluster_endpoints().iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(used, vec!["10.42.0.6"]);
    }

    #[test]
    fn traffic_policies_keep_to_local_endpoints() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.20", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                     "ports": [{"port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}));
        let a = slice(json!({"metadata": {"name": "web-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.6"], "nodeName": "n1"}, {"addresses": ["10.42.1.6"], "nodeName": "n2"}]}));
        let ports = service_ports([&s].into_iter(), [&a].into_iter(), "n1");
        let p = &ports[0];
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.load_balancer_ips, vec![Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(p.health_check_node_port, Some(32000));
        assert_eq!(p.cluster_endpoints().len(), 2);
        assert_eq!(p.external_endpoints().len(), 1);
        assert_eq!(p.local_endpoint_count(), 1);
    }
}
