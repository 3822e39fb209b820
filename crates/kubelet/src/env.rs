//! A container's environment: `env` (values, `$(VAR)` references, and
//! `valueFrom` configMapKeyRef / secretKeyRef / fieldRef / resourceFieldRef)
//! and `envFrom`, resolved as the kubelet does, plus the Docker-link style
//! variables of the namespace's Services (`enableServiceLinks`) and of the
//! `kubernetes` Service, which in-cluster clients read.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret, Service};
use kube::api::Api;
use kube::runtime::reflector::Store;

/// The variables one Service contributes (`FOO_SERVICE_HOST`,
/// `FOO_SERVICE_PORT[_NAME]`, `FOO_PORT[_80_TCP[_PROTO|_PORT|_ADDR]]`), or
/// none for headless and ExternalName Services.
pub fn service_vars(svc: &Service) -> Vec<(String, String)> {
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    if ip.is_empty() || ip == "None" || spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    let name = upper(svc.metadata.name.as_deref().unwrap_or_default());
    let ports = spec.ports.clone().unwrap_or_default();
    let mut out = vec![(format!("{name}_SERVICE_HOST"), ip.clone())];
    let url = |p: &k8s_openapi::api::core::v1::ServicePort| format!("{}://{ip}:{}", p.protocol.as_deref().unwrap_or("TCP").to_lowercase(), p.port);
    if let Some(first) = ports.first() {
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        out.push((format!("{name}_PORT"), url(first)));
    }
    for p in &ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{name}_SERVICE_PORT_{}", upper(pn)), p.port.to_string()));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP").to_uppercase();
        let prefix = format!("{name}_PORT_{}_{proto}", p.port);
        out.push((prefix.clone(), url(p)));
        out.push((format!("{prefix}_PROTO"), proto.to_lowercase()));
        out.push((format!("{prefix}_PORT"), p.port.to_string()));
        out.push((format!("{prefix}_ADDR"), ip.clone()));
    }
    out
}

/// The service variables a pod's containers get: the namespace's Services
/// unless `enableServiceLinks: false`, and always the `kubernetes` Service;
/// read from the kubelet's Service cache (a watch, as the kubelet's Service
/// informer), never from an API call per container.
async fn service_env(services: &Store<Service>, pod: &Pod) -> Result<Vec<(String, String)>, String> {
    if tokio::time::timeout(std::time::Duration::from_secs(10), services.wait_until_ready()).await.map_or(true, |r| r.is_err()) {
        return Err("services have not yet been read from the API server".into());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut chosen: Vec<std::sync::Arc<Service>> = services
        .state()
        .into_iter()
        .filter(|s| {
            let (sns, name) = (s.metadata.namespace.as_deref().unwrap_or(""), s.metadata.name.as_deref().unwrap_or(""));
            (links && sns == ns) || (sns == "default" && name == "kubernetes")
        })
        .collect();
    chosen.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
    Ok(chosen.iter().flat_map(|s| service_vars(s)).collect())
}

/// The downward API's value for `path` (`metadata.name`, `status.podIP`, …).
pub fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let pairs = |map: &Option<std::collections::BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let sub = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|k| k.strip_prefix("['"))
            .and_then(|k| k.strip_suffix("']"))
            .map(|k| map.as_ref().and_then(|m| m.get(k)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => m.name.clone()?,
        "metadata.namespace" => m.namespace.clone()?,
        "metadata.uid" => m.uid.clone()?,
        "metadata.labels" => pairs(&m.labels),
        "metadata.annotations" => pairs(&m.annotations),
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" => status?.host_ip.clone()?,
        "status.hostIPs" => status?.host_ips.iter().flatten().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","),
        "status.podIP" => status?.pod_ip.clone()?,
        "status.podIPs" => status?.pod_ips.iter().flatten().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","),
        p => sub("metadata.labels", &m.labels).or_else(|| sub("metadata.annotations", &m.annotations)).or_else(|| (p.is_empty()).then(String::new))?,
    })
}

/// A `resourceFieldRef`'s value: the container's request or limit, in the
/// selector's divisor (default 1; CPU rounds up, as Kubernetes does).
pub fn resource_value(pod: &Pod, default_container: &str, r: &ResourceFieldSelector) -> Option<String> {
    let name = r.container_name.as_deref().filter(|n| !n.is_empty()).unwrap_or(default_container);
    let c = pod.spec.as_ref()?.containers.iter().find(|c| c.name == name)?;
    let res = c.resources.as_ref();
    let (kind, what) = r.resource.split_once('.')?;
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let q = map.and_then(|m| m.get(what)).map(|q| q.0.clone());
    let is_cpu = what == "cpu";
    // An unset limit reads as the node's allocatable; an unset request as 0.
    let milli = match q {
        Some(q) => skiff_runtime::quantity::parse_milli(&q)?,
        None if kind == "limits" && is_cpu => std::thread::available_parallelism().map(|n| n.get() as i128 * 1000).unwrap_or(1000),
        None if kind == "limits" => crate::node::Facts::gather(std::path::Path::new("/")).memory as i128 * 1000,
        None => 0,
    };
    let divisor = r.divisor.as_ref().and_then(|d| skiff_runtime::quantity::parse_milli(&d.0)).filter(|d| *d > 0).unwrap_or(1000);
    Some(((milli + divisor - 1) / divisor).to_string())
}

/// Expands `$(NAME)` from `vars`; `$$` escapes; unknown references stay as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let (Some(inner), Some(end)) = (after.strip_prefix('('), after.find(')')) {
            let name = &inner[..end - 1];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end]),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Resolves the container's environment in order. An error is the message
/// of the `CreateContainerConfigError` the container then waits in.
pub async fn resolve(client: &kube::Client, services: &Store<Service>, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut cms: HashMap<String, Option<ConfigMap>> = HashMap::new();
    let mut secrets: HashMap<String, Option<Secret>> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    // Service variables can be referenced as $(VAR) and fill in whatever
    // env and envFrom leave unset.
    let services = service_env(services, pod).await?;
    let mut vars: HashMap<String, String> = services.iter().cloned().collect();
    let set = |out: &mut Vec<(String, String)>, vars: &mut HashMap<String, String>, k: String, v: String| {
        vars.insert(k.clone(), v.clone());
        out.retain(|(n, _)| *n != k);
        out.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, &ns, &r.name, &mut cms).await? {
                Some(cm) => {
                    for (k, v) in cm.data.clone().unwrap_or_default() {
                        set(&mut out, &mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, &ns, &r.name, &mut secrets).await? {
                Some(s) => {
                    for (k, v) in s.data.clone().unwrap_or_default() {
                        set(&mut out, &mut vars, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or(""), &vars),
            Some(src) => {
                if let Some(r) = &src.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match config_map(client, &ns, &r.name, &mut cms).await? {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                        },
                        None if optional => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &src.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match secret(client, &ns, &r.name, &mut secrets).await? {
                        Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if optional => continue,
                            None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                        },
                        None if optional => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(f) = &src.field_ref {
                    field_value(pod, &f.field_path).unwrap_or_default()
                } else if let Some(r) = &src.resource_field_ref {
                    resource_value(pod, &c.name, r).unwrap_or_default()
                } else {
                    String::new()
                }
            }
        };
        set(&mut out, &mut vars, e.name.clone(), value);
    }
    for (k, v) in services {
        if !out.iter().any(|(n, _)| *n == k) {
            out.push((k, v));
        }
    }
    Ok(out)
}

async fn config_map<'a>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    cache: &'a mut HashMap<String, Option<ConfigMap>>,
) -> Result<&'a Option<ConfigMap>, String> {
    if !cache.contains_key(name) {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await.map_err(|e| e.to_string())?;
        cache.insert(name.to_string(), cm);
    }
    Ok(&cache[name])
}

async fn secret<'a>(client: &kube::Client, ns: &str, name: &str, cache: &'a mut HashMap<String, Option<Secret>>) -> Result<&'a Option<Secret>, String> {
    if !cache.contains_key(name) {
        let s = Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await.map_err(|e| e.to_string())?;
        cache.insert(name.to_string(), s);
    }
    Ok(&cache[name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_kubernetes() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
    }

    #[test]
    fn services_become_link_variables() {
        let svc: Service = serde_json::from_value(serde_json::json!({"metadata": {"name": "my-db"},
            "spec": {"clusterIP": "10.43.0.7", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}))
        .expect("service");
        let vars: HashMap<String, String> = service_vars(&svc).into_iter().collect();
        for (k, v) in [
            ("MY_DB_SERVICE_HOST", "10.43.0.7"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_SQL", "5432"),
            ("MY_DB_PORT", "tcp://10.43.0.7:5432"),
            ("MY_DB_PORT_5432_TCP", "tcp://10.43.0.7:5432"),
            ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.43.0.7"),
            ("MY_DB_PORT_53_UDP", "udp://10.43.0.7:53"),
        ] {
            assert_eq!(vars.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(vars.len(), 12);
        let headless: Service =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}})).expect("service");
        assert!(service_vars(&headless).is_empty());
    }

    #[test]
    fn downward_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "n", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}}]}}))
        .expect("pod");
        assert_eq!(field_value(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(field_value(&pod, "metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(field_value(&pod, "metadata.labels").as_deref(), Some("app=\"web\""));
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("node-a"));
        let r = |res: &str, div: Option<&str>| ResourceFieldSelector {
            container_name: None,
            resource: res.into(),
            divisor: div.map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
        };
        assert_eq!(resource_value(&pod, "c", &r("limits.memory", None)).as_deref(), Some("67108864"));
        assert_eq!(resource_value(&pod, "c", &r("limits.cpu", None)).as_deref(), Some("1"));
        assert_eq!(resource_value(&pod, "c", &r("limits.cpu", Some("1m"))).as_deref(), Some("250"));
    }
}
