//! A container's environment: `env` (values, `$(VAR)` references, and
//! `valueFrom` configMapKeyRef / secretKeyRef / fieldRef / resourceFieldRef)
//! and `envFrom`, resolved as the kubelet does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret};
use kube::api::Api;

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
pub async fn resolve(client: &kube::Client, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut cms: HashMap<String, Option<ConfigMap>> = HashMap::new();
    let mut secrets: HashMap<String, Option<Secret>> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
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
