//! A pod's `/etc/resolv.conf`, per its `dnsPolicy` and `dnsConfig`, as the
//! kubelet composes it (handed to the runtime in the sandbox config, which
//! writes the file).

use k8s_openapi::api::core::v1::Pod;
use skiff_cri::api;

/// Kubernetes' limits on what a resolv.conf may carry.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The node's DNS settings (`--cluster-dns`, `--cluster-domain`, `--resolv-conf`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The cluster DNS Service's addresses (empty: no cluster DNS).
    pub cluster_dns: Vec<String>,
    /// The cluster domain.
    pub cluster_domain: String,
    /// The host's resolv.conf contents (for `Default` and the search list).
    pub host_resolv_conf: String,
}

impl Settings {
    fn host_nameservers(&self) -> Vec<String> {
        // Loopback servers mean nothing inside a pod's network namespace.
        self.host_resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|s| s.trim().to_string())
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|a| !a.is_loopback()))
            .collect()
    }

    fn host_searches(&self) -> Vec<String> {
        self.host_resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("search"))
            .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn host_options(&self) -> Vec<String> {
        self.host_resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("options"))
            .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }
}

/// The DNS config of `pod`'s sandbox.
pub fn config(pod: &Pod, s: &Settings) -> api::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => !s.cluster_dns.is_empty(),
        // A host-network pod with ClusterFirst gets the node's resolv.conf.
        "ClusterFirst" => !host_network && !s.cluster_dns.is_empty(),
        _ => false,
    };
    let mut cfg = match policy {
        "None" => api::DnsConfig::default(),
        _ if cluster => {
            let d = &s.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(s.host_searches());
            api::DnsConfig { servers: s.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
        }
        _ => api::DnsConfig { servers: s.host_nameservers(), searches: s.host_searches(), options: s.host_options() },
    };
    // dnsConfig merges in: nameservers and searches appended (deduplicated),
    // options overriding by name.
    if let Some(dc) = spec.dns_config.as_ref() {
        for n in dc.nameservers.iter().flatten() {
            if !cfg.servers.contains(n) {
                cfg.servers.push(n.clone());
            }
        }
        for sd in dc.searches.iter().flatten() {
            if !cfg.searches.contains(sd) {
                cfg.searches.push(sd.clone());
            }
        }
        for o in dc.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = opt.split(':').next().unwrap_or_default().to_string();
            cfg.options.retain(|x| x.split(':').next() != Some(name.as_str()));
            cfg.options.push(opt);
        }
    }
    cfg.servers.truncate(MAX_NAMESERVERS);
    cfg.searches.truncate(MAX_SEARCHES);
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n".into(),
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec})).expect("pod")
    }

    #[test]
    fn cluster_first_points_at_cluster_dns_with_the_namespace_search_path() {
        let c = config(&pod(json!({"containers": []})), &settings());
        assert_eq!(c.servers, vec!["10.43.0.10"]);
        assert_eq!(c.searches, vec!["team.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]);
        assert_eq!(c.options, vec!["ndots:5"]);
    }

    #[test]
    fn default_and_host_network_use_the_node_without_loopback() {
        let c = config(&pod(json!({"containers": [], "dnsPolicy": "Default"})), &settings());
        assert_eq!(c.servers, vec!["192.0.2.53"]);
        let c = config(&pod(json!({"containers": [], "hostNetwork": true})), &settings());
        assert_eq!(c.servers, vec!["192.0.2.53"], "ClusterFirst on the host network falls back to Default");
        let c = config(&pod(json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})), &settings());
        assert_eq!(c.servers, vec!["10.43.0.10"]);
    }

    #[test]
    fn none_takes_dns_config_and_options_override_by_name() {
        let c = config(
            &pod(
                json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            ),
            &settings(),
        );
        assert_eq!(
            (c.servers, c.searches, c.options),
            (vec!["1.1.1.1".to_string()], vec!["a.example".to_string()], vec!["ndots:2".to_string(), "edns0".to_string()])
        );
        let c = config(&pod(json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})), &settings());
        assert_eq!(c.options, vec!["ndots:1"]);
    }
}
