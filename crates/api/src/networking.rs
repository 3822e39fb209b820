//! `networking.k8s.io/v1` and `node.k8s.io/v1`: Ingress, IngressClass,
//! NetworkPolicy and RuntimeClass validation and defaults, worded as
//! kube-apiserver words its errors. NetworkPolicies are stored and
//! validated; nothing enforces them yet.

use serde_json::{json, Value};

use crate::error::FieldError;
use crate::validation::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};

/// The annotation that makes an IngressClass the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Ingress validation.
pub fn ingress(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let rules = spec.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    if rules.is_empty() && spec.get("defaultBackend").is_none() {
        errs.push(FieldError::invalid("spec", spec.clone(), "either `defaultBackend` or `rules` must be specified"));
    }
    if let Some(b) = spec.get("defaultBackend") {
        backend("spec.defaultBackend", b, errs);
    }
    if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str) {
        if !is_dns1123_subdomain(class) {
            errs.push(FieldError::invalid("spec.ingressClassName", class, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
        }
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(host) = rule.get("host").and_then(Value::as_str) {
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.push(FieldError::invalid(format!("{at}.host"), host, "must be a DNS name, not an IP address"));
            } else if !is_dns1123_subdomain(host.strip_prefix("*.").unwrap_or(host)) {
                errs.push(FieldError::invalid(format!("{at}.host"), host, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
            }
        }
        let Some(http) = rule.get("http") else { continue };
        let paths = http.get("paths").and_then(Value::as_array).cloned().unwrap_or_default();
        if paths.is_empty() {
            errs.push(FieldError::required(format!("{at}.http.paths"), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{j}]");
            let path = p.get("path").and_then(Value::as_str).unwrap_or_default();
            match p.get("pathType").and_then(Value::as_str) {
                None => errs.push(FieldError::required(format!("{at}.pathType"), "pathType must be specified")),
                Some("Exact" | "Prefix") if !path.starts_with('/') => errs.push(FieldError::invalid(format!("{at}.path"), path, "must be an absolute path")),
                Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                Some(other) => errs.push(FieldError::not_supported(format!("{at}.pathType"), other, &["Exact", "ImplementationSpecific", "Prefix"])),
            }
            match p.get("backend") {
                Some(b) => backend(&format!("{at}.backend"), b, errs),
                None => errs.push(FieldError::required(format!("{at}.backend"), "")),
            }
        }
    }
    for (i, tls) in spec.get("tls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, h) in tls.get("hosts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let h = h.as_str().unwrap_or_default();
            if !is_dns1123_subdomain(h.strip_prefix("*.").unwrap_or(h)) {
                errs.push(FieldError::invalid(format!("spec.tls[{i}].hosts[{j}]"), h, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
}

fn backend(at: &str, b: &Value, errs: &mut Vec<FieldError>) {
    match (b.get("service"), b.get("resource")) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(at, b.clone(), "cannot set both resource and service backends")),
        (None, None) => errs.push(FieldError::invalid(at, b.clone(), "resource or service backend is required")),
        (Some(svc), None) => {
            match svc.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(format!("{at}.service.name"), "")),
                Some(n) if !is_dns1035_label(n) => errs.push(FieldError::invalid(format!("{at}.service.name"), n, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character")),
                Some(_) => {}
            }
            let port = svc.get("port").cloned().unwrap_or(json!({}));
            match (port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()), port.get("number").and_then(Value::as_i64)) {
                (Some(_), Some(_)) => errs.push(FieldError::invalid(format!("{at}.service.port"), port.clone(), "cannot set both port name & port number")),
                (None, None) => errs.push(FieldError::invalid(format!("{at}.service.port"), port.clone(), "port name or number is required")),
                (None, Some(n)) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(format!("{at}.service.port.number"), n, "must be between 1 and 65535, inclusive")),
                _ => {}
            }
        }
        (None, Some(r)) => {
            for f in ["kind", "name"] {
                if r.get(f).and_then(Value::as_str).unwrap_or_default().is_empty() {
                    errs.push(FieldError::required(format!("{at}.resource.{f}"), ""));
                }
            }
        }
    }
}

/// IngressClass validation.
pub fn ingress_class(obj: &Value, errs: &mut Vec<FieldError>) {
    match obj.pointer("/spec/controller").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("spec.controller", "")),
        Some(c) if c.len() > 250 => errs.push(FieldError::invalid("spec.controller", c, "must be no more than 250 characters")),
        Some(_) => {}
    }
    if let Some(p) = obj.pointer("/spec/parameters") {
        for f in ["kind", "name"] {
            if p.get(f).and_then(Value::as_str).unwrap_or_default().is_empty() {
                errs.push(FieldError::required(format!("spec.parameters.{f}"), ""));
            }
        }
        if let Some(scope) = p.get("scope").and_then(Value::as_str) {
            if !matches!(scope, "Cluster" | "Namespace") {
                errs.push(FieldError::not_supported("spec.parameters.scope", scope, &["Cluster", "Namespace"]));
            }
        }
    }
}

/// NetworkPolicy validation.
pub fn network_policy(obj: &Value, errs: &mut Vec<FieldError>) {
    for (i, t) in obj.pointer("/spec/policyTypes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let t = t.as_str().unwrap_or_default();
        if !matches!(t, "Ingress" | "Egress") {
            errs.push(FieldError::not_supported(format!("spec.policyTypes[{i}]"), t, &["Egress", "Ingress"]));
        }
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in obj.pointer(&format!("/spec/{dir}")).and_then(Value::as_array).into_iter().flatten().enumerate() {
            for (j, port) in rule.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                if let Some(p) = port.get("protocol").and_then(Value::as_str) {
                    if !matches!(p, "TCP" | "UDP" | "SCTP") {
                        errs.push(FieldError::not_supported(format!("spec.{dir}[{i}].ports[{j}].protocol"), p, &["SCTP", "TCP", "UDP"]));
                    }
                }
            }
            for (j, peer) in rule.get(peers).and_then(Value::as_array).into_iter().flatten().enumerate() {
                let Some(block) = peer.get("ipBlock") else { continue };
                let at = format!("spec.{dir}[{i}].{peers}[{j}].ipBlock");
                let cidr = block.get("cidr").and_then(Value::as_str).unwrap_or_default();
                if parse_cidr(cidr).is_none() {
                    errs.push(FieldError::invalid(format!("{at}.cidr"), cidr, "must be a valid CIDR (e.g. 10.0.0.0/16 or fd00::/8)"));
                }
                for (k, e) in block.get("except").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let e = e.as_str().unwrap_or_default();
                    if parse_cidr(e).is_none() {
                        errs.push(FieldError::invalid(format!("{at}.except[{k}]"), e, "must be a valid CIDR (e.g. 10.0.0.0/16 or fd00::/8)"));
                    }
                }
            }
        }
    }
}

fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let ip: std::net::IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    (len <= if ip.is_ipv4() { 32 } else { 128 }).then_some((ip, len))
}

/// NetworkPolicy defaults: `policyTypes` from the rules given, ports TCP.
pub fn network_policy_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if spec.get("policyTypes").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        let egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
        spec.insert("policyTypes".into(), if egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) });
    }
    for dir in ["ingress", "egress"] {
        for rule in spec.get_mut(dir).and_then(Value::as_array_mut).into_iter().flatten() {
            for port in rule.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = port.as_object_mut() {
                    p.entry("protocol").or_insert_with(|| json!("TCP"));
                }
            }
        }
    }
}

/// RuntimeClass validation.
pub fn runtime_class(obj: &Value, errs: &mut Vec<FieldError>) {
    match obj.get("handler").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("handler", "")),
        Some(h) if !is_dns1123_label(h) => errs.push(FieldError::invalid("handler", h, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(f: fn(&Value, &mut Vec<FieldError>), v: Value) -> Vec<String> {
        let mut errs = Vec::new();
        f(&v, &mut errs);
        errs.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect()
    }

    #[test]
    fn an_ingress_needs_rules_or_a_default_backend_and_well_formed_paths() {
        let e = errors(ingress, json!({"spec": {}}));
        assert!(e[0].contains("either `defaultBackend` or `rules` must be specified"), "{e:?}");
        let bad = json!({"spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80, "name": "http"}}}},
            {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        let e = errors(ingress, bad);
        assert!(e.iter().any(|e| e.starts_with("spec.rules[0].host") && e.contains("not an IP")), "{e:?}");
        assert!(e.iter().any(|e| e.starts_with("spec.rules[0].http.paths[0].path") && e.contains("absolute")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("cannot set both port name & port number")), "{e:?}");
        assert!(e.iter().any(|e| e.starts_with("spec.rules[0].http.paths[1].pathType")), "{e:?}");
        let good = json!({"spec": {"rules": [{"host": "*.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}});
        assert!(errors(ingress, good).is_empty());
    }

    #[test]
    fn network_policies_default_their_types_and_check_blocks() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        network_policy_defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let e = errors(network_policy, json!({"spec": {"policyTypes": ["Sideways"], "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}}));
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
