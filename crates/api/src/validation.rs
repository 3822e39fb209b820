//! Validation of objects on create and update, with Kubernetes' field paths
//! and wording. Type errors are caught earlier, by decoding into the
//! `k8s-openapi` type; this checks what types cannot say.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::FieldError;
use crate::registry::ResourceType;
use crate::selector::LabelSelector;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

const PATH_SEGMENT_MSG: &str = "may not be '.' or '..', and may not contain '/' or '%'";

/// A name that is one URL path segment (kube's `IsValidPathSegmentName`).
fn is_path_segment(s: &str) -> bool {
    s != "." && s != ".." && !s.contains('/') && !s.contains('%')
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 63 && is_alnum_lower(b[0]) && is_alnum_lower(b[b.len() - 1]) && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty() && is_alnum_lower(b[0]) && is_alnum_lower(b[b.len() - 1]) && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
        })
}

/// RFC 1035 label: like an RFC 1123 label but starting with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label or annotation key: `[prefix/]name`.
pub fn validate_qualified_name(field: &str, key: &str, errs: &mut Vec<FieldError>) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            errs.push(FieldError::invalid(field, key, format!("prefix part {DNS1123_SUBDOMAIN_MSG}")));
            return;
        }
    }
    if !is_name_part(name) {
        let detail = if name.len() > 63 { "name part must be no more than 63 characters".to_string() } else { QUALIFIED_NAME_MSG.to_string() };
        errs.push(FieldError::invalid(field, key, detail));
    }
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_name_part(v)
}

fn validate_labels(field: &str, labels: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(map) = labels.and_then(Value::as_object) else { return };
    for (k, v) in map {
        validate_qualified_name(field, k, errs);
        let v = v.as_str().unwrap_or_default();
        if !is_label_value(v) {
            let detail = if v.len() > 63 { "must be no more than 63 characters" } else { LABEL_VALUE_MSG };
            errs.push(FieldError::invalid(field, v, detail));
        }
    }
}

/// What a resource's names must look like.
fn name_rule(kind: &str) -> (fn(&str) -> bool, &'static str) {
    match kind {
        "Namespace" => (is_dns1123_label, DNS1123_LABEL_MSG),
        "Service" => (is_dns1035_label, DNS1035_LABEL_MSG),
        // RBAC names are path segments (`system:controller:…`).
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => (is_path_segment, PATH_SEGMENT_MSG),
        _ => (is_dns1123_subdomain, DNS1123_SUBDOMAIN_MSG),
    }
}

fn validate_metadata(rt: &ResourceType, obj: &Value, errs: &mut Vec<FieldError>) {
    let meta = obj.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        let (ok, msg) = name_rule(rt.kind);
        if !ok(name) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    validate_labels("metadata.labels", meta.and_then(|m| m.get("labels")), errs);
    if let Some(ann) = meta.and_then(|m| m.get("annotations")).and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            validate_qualified_name("metadata.annotations", k, errs);
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError::forbidden("metadata.annotations", "may not be more than 262144 bytes"));
        }
    }
}

/// The usages a certificate request may ask for (kube's `KeyUsage`s).
/// The values validation accepts for enum-like string fields. The OpenAPI
/// documents carry the same lists as `enum` (`openapi::ENUMS`), so what
/// a schema-driven client reads is what the server enforces.
pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
/// A Service port's `protocol`.
pub const SERVICE_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// A container's `imagePullPolicy`.
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
/// A pod's `dnsPolicy`.
pub const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
/// A pod's `restartPolicy` (workloads' templates allow subsets).
pub const POD_RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
/// A PriorityClass's `preemptionPolicy`.
pub const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];
/// A StorageClass's `reclaimPolicy`.
pub const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
/// A StorageClass's `volumeBindingMode`.
pub const VOLUME_BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];

const CERTIFICATE_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn certificate_signing_request(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match spec.get("request").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("spec.request", "")),
        Some(b64) => {
            let pem = crate::unbase64(b64).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") && !pem.contains("-----BEGIN NEW CERTIFICATE REQUEST-----") {
                errs.push(FieldError::invalid("spec.request", "[]byte{...}", "PEM block type must be CERTIFICATE REQUEST"));
            }
        }
    }
    match spec.get("signerName").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("spec.signerName", "")),
        Some(name) => {
            let mut inner = Vec::new();
            validate_qualified_name("spec.signerName", name, &mut inner);
            if !name.contains('/') || !inner.is_empty() {
                errs.push(FieldError::invalid("spec.signerName", name, "must be a fully qualified domain and path of the form 'example.com/signer-name'"));
            }
        }
    }
    let usages = spec.get("usages").and_then(Value::as_array).cloned().unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages", "usages must be provided"));
    }
    for (i, u) in usages.iter().enumerate() {
        let u = u.as_str().unwrap_or_default();
        if !CERTIFICATE_USAGES.contains(&u) {
            errs.push(FieldError::not_supported(format!("spec.usages[{i}]"), u, CERTIFICATE_USAGES));
        }
    }
    if let Some(secs) = spec.get("expirationSeconds").and_then(Value::as_i64) {
        if secs < 600 {
            errs.push(FieldError::invalid("spec.expirationSeconds", secs, "may not specify a duration less than 600 seconds (10 minutes)"));
        }
    }
}

/// Checks a new object (`old = None`) or an update of `old`.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    if let Some(c) = rt.conversion {
        // Checked in the stored version.
        let stored = (c.to_storage)(obj.clone());
        let old = old.map(|o| (c.to_storage)(o.clone()));
        let storage = crate::registry::find(rt.group, c.storage_version, rt.plural).unwrap_or(rt);
        if !std::ptr::eq(storage, rt) {
            return validate(storage, &stored, old.as_ref());
        }
    }
    let mut errs = Vec::new();
    validate_metadata(rt, obj, &mut errs);
    if let Some(custom) = &rt.custom {
        if let Some(s) = &custom.schema {
            crate::apiextensions::schema::validate(obj, s, "", &mut errs);
            // CEL rules see well-typed values only, as in kube.
            if errs.is_empty() {
                crate::apiextensions::schema::validate_rules(obj, old, s, "", &mut errs);
            }
        }
        return errs;
    }
    let spec = obj.get("spec");
    match rt.kind {
        "CustomResourceDefinition" => crate::apiextensions::validate(obj, old, &mut errs),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => crate::admissionregistration::validate_webhooks(obj, &mut errs),
        "ValidatingAdmissionPolicy" => crate::admissionregistration::validate_policy(obj, &mut errs),
        "ValidatingAdmissionPolicyBinding" => crate::admissionregistration::validate_binding(obj, &mut errs),
        "APIService" => crate::apiregistration::validate(obj, &mut errs),
        "Pod" => {
            if let Some(spec) = spec {
                pod_spec("spec", spec, &mut errs, POD_RESTART_POLICIES);
            } else {
                errs.push(FieldError::required("spec.containers", ""));
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workload(spec, &mut errs, &["Always"], true);
        }
        "Job" => {
            workload(spec, &mut errs, &["OnFailure", "Never"], false);
        }
        "CronJob" => {
            let schedule = spec.and_then(|s| s.get("schedule")).and_then(Value::as_str).unwrap_or_default();
            if schedule.is_empty() {
                errs.push(FieldError::required("spec.schedule", ""));
            } else if !valid_schedule(schedule) {
                errs.push(FieldError::invalid("spec.schedule", schedule, "unparseable cron schedule"));
            }
            let jt = spec.and_then(|s| s.pointer("/jobTemplate/spec"));
            let mut inner = Vec::new();
            workload(jt, &mut inner, &["OnFailure", "Never"], false);
            errs.extend(inner.into_iter().map(|mut e| {
                e.field = format!("spec.jobTemplate.{}", e.field);
                e
            }));
        }
        "Service" => service(spec, &mut errs),
        "ReplicationController" => {
            let selector = spec.and_then(|s| s.get("selector")).and_then(Value::as_object).cloned().unwrap_or_default();
            let labels = spec.and_then(|s| s.pointer("/template/metadata/labels")).and_then(Value::as_object).cloned().unwrap_or_default();
            if selector.is_empty() {
                errs.push(FieldError::required("spec.selector", ""));
            } else if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                errs.push(FieldError::invalid("spec.template.metadata.labels", Value::Object(labels.clone()), "`selector` does not match template `labels`"));
            }
            match spec.and_then(|s| s.pointer("/template/spec")) {
                Some(ps) => pod_spec("spec.template.spec", ps, &mut errs, &["Always"]),
                None => errs.push(FieldError::required("spec.template", "")),
            }
        }
        "PodTemplate" => match obj.pointer("/template/spec") {
            Some(ps) => pod_spec("template.spec", ps, &mut errs, POD_RESTART_POLICIES),
            None => errs.push(FieldError::required("template.spec.containers", "")),
        },
        "Role" | "ClusterRole" => crate::rbac::validate_role(rt.kind == "Role", obj, &mut errs),
        "CertificateSigningRequest" => certificate_signing_request(obj, &mut errs),
        "RoleBinding" | "ClusterRoleBinding" => crate::rbac::validate_binding(rt.kind == "RoleBinding", obj, &mut errs),
        "Ingress" => crate::networking::ingress(obj, &mut errs),
        "IngressClass" => crate::networking::ingress_class(obj, &mut errs),
        "NetworkPolicy" => crate::networking::network_policy(obj, &mut errs),
        "RuntimeClass" => crate::networking::runtime_class(obj, &mut errs),
        "HorizontalPodAutoscaler" => crate::autoscaling::validate(obj, &mut errs),
        "VolumeAttachment" => {
            for f in ["attacher", "nodeName"] {
                if obj.pointer(&format!("/spec/{f}")).and_then(Value::as_str).unwrap_or_default().is_empty() {
                    errs.push(FieldError::required(format!("spec.{f}"), ""));
                }
            }
            let pv = obj.pointer("/spec/source/persistentVolumeName").is_some_and(|v| !v.is_null());
            let inline = obj.pointer("/spec/source/inlineVolumeSpec").is_some_and(|v| !v.is_null());
            if pv == inline {
                errs.push(FieldError::invalid(
                    "spec.source",
                    obj.pointer("/spec/source").cloned().unwrap_or(Value::Null),
                    "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
                ));
            }
        }
        "PriorityClass" => {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            match obj.get("value").and_then(Value::as_i64) {
                None => errs.push(FieldError::required("value", "")),
                // Above a billion is kept for the system classes.
                Some(v) if v > 1_000_000_000 && !name.starts_with("system-") => {
                    errs.push(FieldError::invalid("value", v, "must be less than or equal to 1000000000"))
                }
                Some(_) => {}
            }
            if let Some(p) = obj.get("preemptionPolicy").and_then(Value::as_str) {
                if !PREEMPTION_POLICIES.contains(&p) {
                    errs.push(FieldError::not_supported("preemptionPolicy", p, PREEMPTION_POLICIES));
                }
            }
        }
        "StorageClass" => {
            if obj.get("provisioner").and_then(Value::as_str).unwrap_or_default().is_empty() {
                errs.push(FieldError::required("provisioner", ""));
            }
            if let Some(p) = obj.get("reclaimPolicy").and_then(Value::as_str) {
                if !RECLAIM_POLICIES.contains(&p) {
                    errs.push(FieldError::not_supported("reclaimPolicy", p, RECLAIM_POLICIES));
                }
            }
            if let Some(m) = obj.get("volumeBindingMode").and_then(Value::as_str) {
                if !VOLUME_BINDING_MODES.contains(&m) {
                    errs.push(FieldError::not_supported("volumeBindingMode", m, VOLUME_BINDING_MODES));
                }
            }
        }
        "PersistentVolumeClaim" => {
            if spec.and_then(|s| s.get("accessModes")).and_then(Value::as_array).is_none_or(Vec::is_empty) {
                errs.push(FieldError::required("spec.accessModes", "at least 1 access mode is required"));
            }
            if spec.and_then(|s| s.pointer("/resources/requests/storage")).is_none() {
                errs.push(FieldError::required("spec.resources[storage]", ""));
            }
        }
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(map) = obj.get(field).and_then(Value::as_object) {
                    for k in map.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                            && k != "."
                            && k != "..";
                        if !ok {
                            errs.push(FieldError::invalid(format!("{field}[{k}]"), k.as_str(), CONFIG_KEY_MSG));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        immutability(rt, obj, old, &mut errs);
    }
    errs
}

/// A five-field cron expression (or an `@every`-style macro).
pub fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix("TZ=").map_or(s, |rest| rest.split_once(' ').map_or("", |(_, r)| r));
    if s.starts_with('@') {
        return matches!(s, "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly");
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5 && fields.iter().all(|f| f.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'*' | b'/' | b',' | b'-' | b'?')))
}

fn workload(spec: Option<&Value>, errs: &mut Vec<FieldError>, restart: &[&'static str], needs_selector: bool) {
    let Some(spec) = spec else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64) {
        if r < 0 {
            errs.push(FieldError::invalid("spec.replicas", r, "must be greater than or equal to 0"));
        }
    }
    let labels = spec.pointer("/template/metadata/labels");
    match spec.get("selector") {
        Some(sel) if !sel.is_null() => match LabelSelector::from_label_selector(sel) {
            Ok(s) if s.is_empty() => errs.push(FieldError::invalid("spec.selector", sel.clone(), "empty selector is invalid for deployment")),
            Ok(s) => {
                let empty = serde_json::Map::new();
                let map = labels.and_then(Value::as_object).unwrap_or(&empty);
                if !s.matches_map(map) {
                    errs.push(FieldError::invalid("spec.template.metadata.labels", Value::Object(map.clone()), "`selector` does not match template `labels`"));
                }
            }
            Err(e) => errs.push(FieldError::invalid("spec.selector", sel.clone(), e)),
        },
        _ if needs_selector => errs.push(FieldError::required("spec.selector", "")),
        _ => {}
    }
    validate_labels("spec.template.metadata.labels", labels, errs);
    match spec.pointer("/template/spec") {
        // A StatefulSet's claim templates are volumes its pods will have.
        Some(ps) if spec.get("volumeClaimTemplates").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) => {
            let mut with_claims = ps.clone();
            let mut vols: Vec<Value> = ps.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
            for t in spec.get("volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten() {
                if let Some(n) = t.pointer("/metadata/name").and_then(Value::as_str) {
                    if !vols.iter().any(|v| v.get("name").and_then(Value::as_str) == Some(n)) {
                        vols.push(serde_json::json!({"name": n, "persistentVolumeClaim": {"claimName": n}}));
                    }
                }
            }
            with_claims["volumes"] = Value::Array(vols);
            pod_spec("spec.template.spec", &with_claims, errs, restart)
        }
        Some(ps) => pod_spec("spec.template.spec", ps, errs, restart),
        None => errs.push(FieldError::required("spec.template.spec.containers", "")),
    }
}

fn service(spec: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec else { return };
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SERVICE_TYPES));
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec.get("ports").and_then(Value::as_array);
    if ty != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if ty == "ExternalName" && spec.get("externalName").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    let mut names = BTreeSet::new();
    let multi = ports.is_some_and(|p| p.len() > 1);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let f = format!("spec.ports[{i}]");
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(format!("{f}.port"), port, "must be between 1 and 65535, inclusive"));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if multi && name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name"), ""));
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{f}.name"), name));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !SERVICE_PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(format!("{f}.protocol"), proto, SERVICE_PROTOCOLS));
        }
    }
}

/// Validates a pod spec at `path`.
pub fn pod_spec(path: &str, spec: &Value, errs: &mut Vec<FieldError>, restart: &[&'static str]) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    let volumes: BTreeSet<&str> =
        spec.get("volumes").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.get("name").and_then(Value::as_str)).collect();
    for (i, v) in spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.volumes[{i}].name"), ""));
        } else if !is_dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{path}.volumes[{i}].name"), name, DNS1123_LABEL_MSG));
        }
    }
    for field in ["initContainers", "containers"] {
        for (i, c) in spec.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let f = format!("{path}.{field}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                errs.push(FieldError::required(format!("{f}.name"), ""));
            } else if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{f}.name"), name, DNS1123_LABEL_MSG));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{f}.name"), name));
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                errs.push(FieldError::required(format!("{f}.image"), ""));
            }
            if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
                if !PULL_POLICIES.contains(&p) {
                    errs.push(FieldError::not_supported(format!("{f}.imagePullPolicy"), p, PULL_POLICIES));
                }
            }
            for (j, p) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(format!("{f}.ports[{j}].containerPort"), port, "must be between 1 and 65535, inclusive"));
                }
            }
            for (j, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                if !volumes.contains(name) {
                    errs.push(FieldError::not_found_volume(format!("{f}.volumeMounts[{j}].name"), name));
                }
                if m.get("mountPath").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{f}.volumeMounts[{j}].mountPath"), ""));
                }
            }
            for (j, e) in c.get("env").and_then(Value::as_array).into_iter().flatten().enumerate() {
                if e.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{f}.env[{j}].name"), ""));
                }
            }
        }
    }
    if let Some(r) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !restart.contains(&r) {
            errs.push(FieldError::not_supported(format!("{path}.restartPolicy"), r, restart));
        }
    } else if restart.len() < 3 {
        errs.push(FieldError::required(format!("{path}.restartPolicy"), ""));
    }
    if let Some(dns) = spec.get("dnsPolicy").and_then(Value::as_str) {
        if !DNS_POLICIES.contains(&dns) {
            errs.push(FieldError::not_supported(format!("{path}.dnsPolicy"), dns, DNS_POLICIES));
        }
    }
}

impl FieldError {
    /// A reference to a volume that does not exist (Kubernetes' NotFound
    /// field error).
    fn not_found_volume(field: String, name: &str) -> Self {
        FieldError { field, kind: crate::error::FieldErrorKind::Invalid(Value::from(name)), detail: "volume not found".into() }
    }
}

fn immutable(field: &str, new: Option<&Value>, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    if norm(new) != norm(old) {
        errs.push(FieldError::invalid(field, new.cloned().unwrap_or(Value::Null), "field is immutable"));
    }
}

fn immutability(rt: &ResourceType, new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    match rt.kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            immutable("spec.selector", new.pointer("/spec/selector"), old.pointer("/spec/selector"), errs);
        }
        "Job" => {
            immutable("spec.selector", new.pointer("/spec/selector"), old.pointer("/spec/selector"), errs);
            immutable("spec.completionMode", new.pointer("/spec/completionMode"), old.pointer("/spec/completionMode"), errs);
        }
        "Service" if old.pointer("/spec/clusterIP").and_then(Value::as_str).is_some_and(|ip| !ip.is_empty()) => {
            immutable("spec.clusterIP", new.pointer("/spec/clusterIP"), old.pointer("/spec/clusterIP"), errs);
        }
        "ConfigMap" | "Secret" if old.get("immutable") == Some(&Value::Bool(true)) => {
            for f in ["data", "binaryData"] {
                if new.get(f) != old.get(f) {
                    errs.push(FieldError::forbidden(f, "field is immutable when `immutable` is set"));
                }
            }
            if new.get("immutable") != old.get("immutable") {
                errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
            }
        }
        "Pod" => pod_update(new, old, errs),
        "CertificateSigningRequest" => {
            if new.get("spec") != old.get("spec") {
                errs.push(FieldError::forbidden("spec", "field is immutable"));
            }
            // A certificate, once issued, stays; an answer, once given, stays.
            if old.pointer("/status/certificate").is_some_and(|c| !c.is_null()) && new.pointer("/status/certificate") != old.pointer("/status/certificate") {
                errs.push(FieldError::forbidden("status.certificate", "updates may not modify existing certificate content"));
            }
            let answered = |v: &Value, t: &str| {
                v.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c.get("type").and_then(Value::as_str) == Some(t)))
            };
            for t in ["Approved", "Denied"] {
                if answered(old, t) && !answered(new, t) {
                    errs.push(FieldError::forbidden("status.conditions", format!("updates may not remove a condition of type {t:?}")));
                }
            }
            if answered(new, "Approved") && answered(new, "Denied") {
                errs.push(FieldError::invalid("status.conditions", "Approved, Denied", "Approved and Denied conditions are mutually exclusive"));
            }
        }
        "RoleBinding" | "ClusterRoleBinding" if new.get("roleRef") != old.get("roleRef") => {
            errs.push(FieldError::invalid("roleRef", new.get("roleRef").cloned().unwrap_or(Value::Null), "cannot change roleRef"));
        }
        "IngressClass" => immutable("spec.controller", new.pointer("/spec/controller"), old.pointer("/spec/controller"), errs),
        "RuntimeClass" => immutable("handler", new.get("handler"), old.get("handler"), errs),
        "VolumeAttachment" if new.get("spec") != old.get("spec") => {
            errs.push(FieldError::invalid("spec", new.get("spec").cloned().unwrap_or(Value::Null), "field is immutable"));
        }
        "CSIDriver" => {
            // storageCapacity and the rest may change.
            for f in ["attachRequired", "podInfoOnMount", "volumeLifecycleModes"] {
                immutable(&format!("spec.{f}"), new.pointer(&format!("/spec/{f}")), old.pointer(&format!("/spec/{f}")), errs);
            }
        }
        "PriorityClass" => {
            immutable("value", new.get("value"), old.get("value"), errs);
            immutable("preemptionPolicy", new.get("preemptionPolicy"), old.get("preemptionPolicy"), errs);
        }
        "StorageClass" => {
            for f in ["provisioner", "parameters", "reclaimPolicy"] {
                if new.get(f) != old.get(f) {
                    errs.push(FieldError::forbidden(f, format!("updates to {f} are forbidden.")));
                }
            }
            immutable("volumeBindingMode", new.get("volumeBindingMode"), old.get("volumeBindingMode"), errs);
        }
        "PersistentVolumeClaim" => {
            // Only a larger request, and the binder filling in the volume,
            // may change.
            let strip = |spec: Option<&Value>, volume_name_settable: bool| {
                let mut s = spec.cloned().unwrap_or(Value::Null);
                if let Some(o) = s.as_object_mut() {
                    o.remove("volumeAttributesClassName");
                    if volume_name_settable {
                        o.remove("volumeName");
                    }
                }
                if let Some(r) = s.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
                s
            };
            let unbound = old.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or_default().is_empty();
            if strip(new.get("spec"), unbound) != strip(old.get("spec"), unbound) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        _ => {}
    }
}

/// Pods allow only a few spec changes once created.
/// Ephemeral containers are only added: those there stay as they are, and
/// a new one has a unique name, an image, and none of what an ephemeral
/// container may not have (ports, probes, lifecycle, resources), as kube's
/// ValidatePodEphemeralContainersUpdate says.
fn ephemeral_containers(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let list = |v: &Value| v.pointer("/spec/ephemeralContainers").and_then(Value::as_array).cloned().unwrap_or_default();
    let (now, before) = (list(new), list(old));
    for b in &before {
        let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
        match now.iter().find(|n| n.get("name") == b.get("name")) {
            None => errs.push(FieldError::forbidden("spec.ephemeralContainers", format!("existing ephemeral containers {name:?} may not be removed"))),
            Some(n) if n != b => {
                errs.push(FieldError::forbidden("spec.ephemeralContainers", format!("existing ephemeral containers {name:?} may not be changed")))
            }
            Some(_) => {}
        }
    }
    let mut names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| new.pointer(&format!("/spec/{f}")).and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    for (i, c) in now.iter().enumerate() {
        let at = format!("spec.ephemeralContainers[{i}]");
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(format!("{at}.name"), ""));
        } else if names.iter().any(|n| n == name) {
            errs.push(FieldError::duplicate(format!("{at}.name"), name));
        }
        names.push(name.to_string());
        if before.iter().any(|b| b.get("name") == c.get("name")) {
            continue;
        }
        if c.get("image").and_then(Value::as_str).unwrap_or_default().is_empty() {
            errs.push(FieldError::required(format!("{at}.image"), ""));
        }
        for f in ["ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources", "restartPolicy"] {
            if c.get(f).is_some_and(|v| !v.is_null() && v != &serde_json::json!({}) && v != &serde_json::json!([])) {
                errs.push(FieldError::forbidden(format!("{at}.{f}"), "cannot be set for an Ephemeral Container"));
            }
        }
    }
}

fn pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    ephemeral_containers(new, old, errs);
    let strip = |spec: Option<&Value>| -> Value {
        let mut s = spec.cloned().unwrap_or(Value::Null);
        if let Some(o) = s.as_object_mut() {
            o.remove("ephemeralContainers");
        }
        for field in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = s.get_mut(field) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            for f in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates"] {
                o.remove(f);
            }
            // nodeName is set through the binding subresource.
            if o.get("nodeName").is_some_and(|n| !n.is_null()) {
                o.remove("nodeName");
            }
        }
        s
    };
    let (mut n, mut o) = (strip(new.get("spec")), strip(old.get("spec")));
    if old.pointer("/spec/nodeName").is_none() {
        if let Some(m) = n.as_object_mut() {
            m.remove("nodeName");
        }
        if let Some(m) = o.as_object_mut() {
            m.remove("nodeName");
        }
    }
    if n != o {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    let names = |v: &Value, f: &str| -> Vec<Value> {
        v.pointer(&format!("/spec/{f}")).and_then(Value::as_array).into_iter().flatten().map(|c| c["name"].clone()).collect()
    };
    for f in ["containers", "initContainers"] {
        if names(new, f) != names(old, f) && errs.is_empty() {
            errs.push(FieldError::forbidden(format!("spec.{f}"), "may not add or remove containers"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use serde_json::json;

    #[test]
    fn names_follow_rfc1123() {
        assert!(is_dns1123_subdomain("web-0.example"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1035_label("1abc"));
    }

    #[test]
    fn pod_errors_name_their_fields() {
        let pods = find("", "v1", "pods").expect("pods");
        let errs = validate(
            pods,
            &json!({"metadata": {"name": "Bad_Name"}, "spec": {"restartPolicy": "Always", "containers": [{"name": "a"}, {"name": "a", "image": "x"}]}}),
            None,
        );
        let rendered: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(rendered.iter().any(|e| e.starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")), "{rendered:?}");
        assert!(rendered.contains(&"spec.containers[0].image: Required value".to_string()), "{rendered:?}");
        assert!(rendered.contains(&"spec.containers[1].name: Duplicate value: \"a\"".to_string()), "{rendered:?}");
    }

    #[test]
    fn deployment_selector_must_match_and_is_immutable() {
        let d = find("apps", "v1", "deployments").expect("deployments");
        let obj = |app: &str| json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}});
        assert!(validate(d, &obj("web"), None).is_empty());
        let errs = validate(d, &obj("other"), None);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        let errs = validate(d, &obj("web"), Some(&json!({"spec": {"selector": {"matchLabels": {"app": "old"}}}})));
        assert_eq!(errs[0].to_string().split(": ").last(), Some("field is immutable"));
    }
}
