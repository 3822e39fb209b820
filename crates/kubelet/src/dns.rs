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

    /// The words after `keyword` (`search`, `options`) in the host's file.
    fn host_words(&self, keyword: &str) -> Vec<String> {
        self.host_resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix(keyword))
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
            searches.extend(s.host_words("search"));
            api::DnsConfig { servers: s.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
        }
        _ => api::DnsConfig { servers: s.host_nameservers(), searches: s.host_words("search"), options: s.host_words("options") },
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

/// The kubelet-managed `/etc/hosts` of `pod` at `pod_ip`, as the kubelet
/// writes it: loopback and IPv6 names, the pod's own address with its
/// hostname (and FQDN under a subdomain), then `hostAliases`. `None` for
/// host-network pods, which see the node's file.
pub fn hosts_file(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network.unwrap_or(false) {
        return None;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let hostname = spec.hostname.clone().or_else(|| pod.metadata.name.clone()).unwrap_or_default();
    let hostname: String = hostname.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string();
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match spec.subdomain.as_deref().filter(|d| !d.is_empty()) {
        Some(sub) => s.push_str(&format!("{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}\n")),
        None => s.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    let aliases = spec.host_aliases.iter().flatten().filter(|a| !a.ip.is_empty()).collect::<Vec<_>>();
    if !aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            s.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.iter().flatten().cloned().collect::<Vec<_>>().join("\t")));
        }
    }
    Some(s)
}

#[cfg(test)]
mod hosts_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hosts_file_names_the_pod_and_its_aliases() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"containers": [], "hostname": "web-0", "subdomain": "web", "hostAliases": [{"ip": "192.0.2.7", "hostnames": ["foo", "bar"]}]}}))
        .expect("pod");
        let h = hosts_file(&pod, "10.42.0.5", "cluster.local").expect("a file");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{h}");
        assert!(h.contains("10.42.0.5\tweb-0.web.default.svc.cluster.local\tweb-0\n"), "{h}");
        assert!(h.ends_with("# Entries added by HostAliases.\n192.0.2.7\tfoo\tbar\n"), "{h}");
        let host: Pod = serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {"containers": [], "hostNetwork": true}})).expect("pod");
        assert!(hosts_file(&host, "192.0.2.2", "cluster.local").is_none());
    }
}
