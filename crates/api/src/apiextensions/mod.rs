//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): what a CRD
//! serves, its validation and defaults, the names it may take, and the
//! Tables of its objects.

pub mod schema;

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::registry::{intern, intern_list, ResourceType};
use crate::FieldError;

/// The API group of CustomResourceDefinitions.
pub const GROUP: &str = "apiextensions.k8s.io";

/// The finalizer that keeps a CRD until all its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One served version of a CustomResourceDefinition, as the API server
/// applies it to that version's objects.
#[derive(Debug)]
pub struct CustomVersion {
    /// The CRD's name (`plural.group`).
    pub crd: String,
    /// The version objects are stored in.
    pub storage_version: String,
    /// `openAPIV3Schema`, if the version has one.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
    /// The `scale` subresource's paths.
    pub scale: Option<ScalePaths>,
    /// The warning a deprecated version gives.
    pub deprecation: Option<String>,
    /// The CRD is being deleted: no new objects.
    pub terminating: bool,
    /// `spec.conversion` (`None` or a webhook's `clientConfig`).
    pub conversion: Option<Value>,
    /// `selectableFields`, as field selector names (`spec.color`).
    pub selectable_fields: Vec<String>,
}

/// One of `additionalPrinterColumns`.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type of the cells.
    pub type_: String,
    /// OpenAPI format.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 shows by default, more with `-o wide`).
    pub priority: i64,
    /// Kubernetes JSONPath of the cell's value, e.g. `.spec.replicas`.
    pub json_path: String,
}

/// The `scale` subresource: where replicas and the selector live.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    /// `specReplicasPath`, as a JSON pointer.
    pub spec_replicas: String,
    /// `statusReplicasPath`, as a JSON pointer.
    pub status_replicas: String,
    /// `labelSelectorPath`, as a JSON pointer.
    pub label_selector: Option<String>,
}

/// The map lists (`x-kubernetes-list-type: map`) a schema declares, by
/// field name, with their first key: what server-side apply merges them
/// by (see `patch::with_list_keys`).
pub fn list_keys(schema: &Value) -> Vec<(&'static str, &'static str)> {
    fn walk(s: &Value, name: Option<&str>, out: &mut Vec<(&'static str, &'static str)>) {
        if let (Some(n), Some("map")) = (name, s["x-kubernetes-list-type"].as_str()) {
            if let Some(k) = s["x-kubernetes-list-map-keys"].as_array().and_then(|k| k.first()).and_then(Value::as_str) {
                out.push((intern(n), intern(k)));
            }
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, ps) in props {
                walk(ps, Some(k), out);
            }
        }
        if let Some(items) = s.get("items") {
            walk(items, None, out);
        }
        if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
            walk(ap, None, out);
        }
    }
    let mut out = Vec::new();
    walk(schema, None, &mut out);
    out
}

/// The map-list keys of a resource type's objects (none for built-ins).
pub fn list_keys_of(rt: &ResourceType) -> Vec<(&'static str, &'static str)> {
    rt.custom.as_ref().and_then(|c| c.schema.as_ref()).map(list_keys).unwrap_or_default()
}

/// `.spec.replicas` as the JSON pointer `/spec/replicas`.
pub fn pointer(path: &str) -> String {
    path.split('.').filter(|s| !s.is_empty()).fold(String::new(), |p, s| format!("{p}/{s}"))
}

/// Whether a CRD's condition of this type is `True`.
pub fn condition(crd: &Value, ty: &str) -> bool {
    crd.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// The version objects are stored in.
pub fn storage_version(crd: &Value) -> Option<&str> {
    versions(crd).iter().find(|v| v["storage"] == true).and_then(|v| v["name"].as_str())
}

fn versions(crd: &Value) -> &[Value] {
    crd.pointer("/spec/versions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default()
}

/// The resource types an Established CRD serves, one per served version,
/// under its accepted names.
pub fn served_types(crd: &Value) -> Vec<ResourceType> {
    if !condition(crd, "Established") {
        return Vec::new();
    }
    let names = crd.pointer("/status/acceptedNames").filter(|n| n.get("plural").is_some()).or_else(|| crd.pointer("/spec/names"));
    let Some(names) = names else { return Vec::new() };
    let name = |k: &str| names.get(k).and_then(Value::as_str).unwrap_or_default();
    let (plural, kind) = (name("plural"), name("kind"));
    let singular = if name("singular").is_empty() { kind.to_lowercase() } else { name("singular").to_string() };
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
    let Some(storage) = storage_version(crd) else { return Vec::new() };
    let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let conversion = crd.pointer("/spec/conversion").filter(|c| c["strategy"] == "Webhook").cloned();
    let mut out: Vec<ResourceType> = versions(crd)
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: c["name"].as_str().unwrap_or_default().to_string(),
                            type_: c["type"].as_str().unwrap_or("string").to_string(),
                            format: c["format"].as_str().unwrap_or_default().to_string(),
                            description: c["description"].as_str().unwrap_or_default().to_string(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: pointer(s["specReplicasPath"].as_str().unwrap_or(".spec.replicas")),
                status_replicas: pointer(s["statusReplicasPath"].as_str().unwrap_or(".status.replicas")),
                label_selector: s["labelSelectorPath"].as_str().map(pointer),
            });
            let deprecation = (v["deprecated"] == true)
                .then(|| v["deprecationWarning"].as_str().map(String::from).unwrap_or_else(|| format!("{group}/{version} {kind} is deprecated")));
            let custom = CustomVersion {
                crd: crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                storage_version: storage.to_string(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                columns,
                scale: scale.clone(),
                deprecation,
                terminating,
                conversion: conversion.clone(),
                selectable_fields: v["selectableFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["jsonPath"].as_str().map(|p| p.trim_start_matches('.').to_string()))
                    .collect(),
            };
            Some(ResourceType {
                group: intern(group),
                version: intern(version),
                plural: intern(plural),
                singular: intern(&singular),
                kind: intern(kind),
                namespaced,
                short_names: intern_list(&strings(names.get("shortNames"))),
                categories: intern_list(&strings(names.get("categories"))),
                status: v.pointer("/subresources/status").is_some(),
                scale: scale.is_some(),
                normalize: normalize_custom,
                schema: no_schema,
                schema_name: no_schema_name,
                custom: Some(Arc::new(custom)),
                conversion: None,
            })
        })
        .collect();
    out.sort_by(|a, b| compare_versions(a.version, b.version));
    out
}

/// A custom resource's metadata goes through ObjectMeta (type errors are
/// 400s, unknown metadata fields dropped); the rest is the schema's.
fn normalize_custom(mut v: Value) -> Result<Value, String> {
    let meta = v.get("metadata").cloned().unwrap_or(json!({}));
    let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta = serde_json::from_value(meta).map_err(|e| e.to_string())?;
    v["metadata"] = serde_json::to_value(typed).map_err(|e| e.to_string())?;
    Ok(v)
}

fn no_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    gen.subschema_for::<Value>()
}

fn no_schema_name() -> String {
    String::new()
}

/// Kubernetes' version priority: `v2` > `v1` > `v1beta2` > `v1beta1` >
/// `v1alpha1` > versions not shaped like these (alphabetically).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (level, n) = if let Some(n) = tail.strip_prefix("beta") { (1, n) } else { (0, tail.strip_prefix("alpha")?) };
        Some((major, level, n.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, la, na)), Some((mb, lb, nb))) => lb.cmp(&la).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Defaults of a CRD (as kube's `SetDefaults_CustomResourceDefinition`).
pub fn defaults(crd: &mut Value) {
    if crd.pointer("/spec/conversion").is_none() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
    let Some(names) = crd.pointer_mut("/spec/names").and_then(Value::as_object_mut) else { return };
    if names.get("singular").and_then(Value::as_str).is_none_or(str::is_empty) {
        if let Some(kind) = names.get("kind").and_then(Value::as_str) {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
    }
    if names.get("listKind").and_then(Value::as_str).is_none_or(str::is_empty) {
        if let Some(kind) = names.get("kind").and_then(Value::as_str) {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
}

/// Validates a CRD (the checks kube's `ValidateCustomResourceDefinition`
/// makes that clients run into).
pub fn validate(crd: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec.pointer("/names/plural").and_then(Value::as_str).unwrap_or_default();
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !crate::validation::is_dns1123_subdomain(group) {
        errs.push(FieldError::invalid("spec.group", group, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
    } else if group.split('.').count() < 2 {
        errs.push(FieldError::invalid("spec.group", group, "should be a domain with at least one dot"));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
    }
    for (field, required) in [("plural", true), ("singular", false), ("kind", true), ("listKind", false)] {
        let v = spec.pointer(&format!("/names/{field}")).and_then(Value::as_str).unwrap_or_default();
        if v.is_empty() {
            if required {
                errs.push(FieldError::required(format!("spec.names.{field}"), ""));
            }
            continue;
        }
        let ok =
            if matches!(field, "kind" | "listKind") { crate::validation::is_dns1035_label(&v.to_lowercase()) } else { crate::validation::is_dns1035_label(v) };
        if !ok {
            errs.push(FieldError::invalid(
                format!("spec.names.{field}"),
                v,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
    }
    for (i, s) in strings(spec.pointer("/names/shortNames")).iter().enumerate() {
        if !crate::validation::is_dns1035_label(s) {
            errs.push(FieldError::invalid(format!("spec.names.shortNames[{i}]"), s.as_str(), "must be a DNS-1035 label"));
        }
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => errs.push(FieldError::not_supported("spec.scope", other, &["Cluster", "Namespaced"])),
        None => errs.push(FieldError::required("spec.scope", "")),
    }
    let vs = versions(crd);
    if vs.is_empty() {
        errs.push(FieldError::invalid("spec.versions", json!([]), "must have exactly one version marked as storage version"));
    } else {
        let storage = vs.iter().filter(|v| v["storage"] == true).count();
        if storage != 1 {
            errs.push(FieldError::invalid(
                "spec.versions",
                json!(vs.iter().map(|v| v["name"].clone()).collect::<Vec<_>>()),
                "must have exactly one version marked as storage version",
            ));
        }
        if !vs.iter().any(|v| v["served"] == true) {
            errs.push(FieldError::invalid(
                "spec.versions",
                json!(vs.iter().map(|v| v["name"].clone()).collect::<Vec<_>>()),
                "must have at least one version marked as served",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, v) in vs.iter().enumerate() {
            let n = v["name"].as_str().unwrap_or_default();
            if n.is_empty() {
                errs.push(FieldError::required(format!("spec.versions[{i}].name"), ""));
            } else if !crate::validation::is_dns1035_label(n) {
                errs.push(FieldError::invalid(format!("spec.versions[{i}].name"), n, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"));
            }
            if seen.contains(&n) {
                errs.push(FieldError::duplicate(format!("spec.versions[{i}].name"), n));
            }
            seen.push(n);
            match v.pointer("/schema/openAPIV3Schema") {
                None => errs.push(FieldError::required(format!("spec.versions[{i}].schema.openAPIV3Schema"), "schemas are required")),
                Some(s) => structural(s, &format!("spec.versions[{i}].schema.openAPIV3Schema"), true, errs),
            }
            if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
                for (j, c) in cols.iter().enumerate() {
                    let p = format!("spec.versions[{i}].additionalPrinterColumns[{j}]");
                    if c["name"].as_str().is_none_or(str::is_empty) {
                        errs.push(FieldError::required(format!("{p}.name"), ""));
                    }
                    if c["jsonPath"].as_str().is_none_or(str::is_empty) {
                        errs.push(FieldError::required(format!("{p}.jsonPath"), ""));
                    }
                    if let Some(t) = c["type"].as_str() {
                        if !matches!(t, "integer" | "number" | "string" | "boolean" | "date") {
                            errs.push(FieldError::not_supported(format!("{p}.type"), t, &["boolean", "date", "integer", "number", "string"]));
                        }
                    } else {
                        errs.push(FieldError::required(format!("{p}.type"), ""));
                    }
                }
            }
            let selectable = v["selectableFields"].as_array().cloned().unwrap_or_default();
            if selectable.len() > 8 {
                errs.push(FieldError::too_many(format!("spec.versions[{i}].selectableFields"), selectable.len(), 8));
            }
            for (j, f) in selectable.iter().enumerate() {
                let path = f["jsonPath"].as_str().unwrap_or_default();
                let at = format!("spec.versions[{i}].selectableFields[{j}].jsonPath");
                if path.is_empty() {
                    errs.push(FieldError::required(at, ""));
                    continue;
                }
                // The field must be a scalar the schema declares.
                let declared = path.trim_start_matches('.').split('.').try_fold(v.pointer("/schema/openAPIV3Schema"), |s, k| Some(s.and_then(|s| s.get("properties")).and_then(|p| p.get(k))));
                match declared.flatten().and_then(|s| s["type"].as_str()) {
                    Some("string" | "integer" | "boolean") => {}
                    Some(_) => errs.push(FieldError::invalid(at, path, "must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed.")),
                    None => errs.push(FieldError::invalid(at, path, "is an invalid path: does not refer to a declared field")),
                }
            }
            if let Some(sc) = v.pointer("/subresources/scale") {
                for f in ["specReplicasPath", "statusReplicasPath"] {
                    let p = sc[f].as_str().unwrap_or_default();
                    if p.is_empty() {
                        errs.push(FieldError::required(format!("spec.versions[{i}].subresources.scale.{f}"), ""));
                    } else if !p.starts_with('.') || p.contains('[') {
                        errs.push(FieldError::invalid(
                            format!("spec.versions[{i}].subresources.scale.{f}"),
                            p,
                            "should be a json path under either .spec or .status",
                        ));
                    }
                }
            }
        }
    }
    match spec.pointer("/conversion/strategy").and_then(Value::as_str) {
        None | Some("None") => {}
        Some("Webhook") => {
            if spec.pointer("/conversion/webhook/clientConfig").is_none() {
                errs.push(FieldError::required("spec.conversion.webhook.clientConfig", "required when strategy is set to Webhook"));
            }
        }
        Some(other) => errs.push(FieldError::not_supported("spec.conversion.strategy", other, &["None", "Webhook"])),
    }
    if let Some(old) = old {
        if old["spec"]["scope"] != spec["scope"] && condition(old, "Established") {
            errs.push(FieldError::invalid("spec.scope", spec["scope"].clone(), "field is immutable"));
        }
        if old["spec"]["group"] != spec["group"] {
            errs.push(FieldError::invalid("spec.group", spec["group"].clone(), "field is immutable"));
        }
        // A version that holds stored objects cannot be dropped.
        for stored in strings(old.pointer("/status/storedVersions")) {
            if !vs.iter().any(|v| v["name"] == stored.as_str()) {
                errs.push(FieldError::invalid(
                    "status.storedVersions",
                    json!(strings(old.pointer("/status/storedVersions"))),
                    format!("must appear in spec.versions: {stored}"),
                ));
            }
        }
    }
}

/// The structural-schema rules a client is likely to break: every node
/// has a type (unless it preserves unknown fields or is int-or-string),
/// and the top level is an object.
fn structural(s: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    let int_or_string = s["x-kubernetes-int-or-string"] == true;
    let t = s["type"].as_str();
    if root && t != Some("object") {
        errs.push(FieldError::invalid(format!("{path}.type"), s["type"].clone(), "must be object at the root"));
    }
    if t.is_none() && !preserve && !int_or_string && s.get("properties").is_none() {
        errs.push(FieldError::required(format!("{path}.type"), "must not be empty for specified object fields"));
    }
    if let Some(p) = s["pattern"].as_str() {
        if regex::Regex::new(p).is_err() {
            errs.push(FieldError::invalid(format!("{path}.pattern"), p, "must be a valid regular expression"));
        }
    }
    if let Some(rules) = s["x-kubernetes-validations"].as_array() {
        for (i, rule) in rules.iter().enumerate() {
            let p = format!("{path}.x-kubernetes-validations[{i}]");
            for (field, expr) in [("rule", rule["rule"].as_str()), ("messageExpression", rule["messageExpression"].as_str())] {
                match expr.map(crate::cel::compile) {
                    // Syntax kube parses and this CEL does not: the rule is skipped.
                    Some(Err(e)) if !crate::cel::unsupported(&e) => errs.push(FieldError::invalid(format!("{p}.{field}"), expr.unwrap_or_default(), e)),
                    _ => {}
                }
            }
            if rule["rule"].as_str().is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("{p}.rule"), ""));
            }
        }
    }
    if s.get("properties").is_some() && s.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false)) {
        errs.push(FieldError::forbidden(format!("{path}.additionalProperties"), "additionalProperties and properties are mutual exclusive"));
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, ps) in props {
            structural(ps, &format!("{path}.properties[{k}]"), false, errs);
        }
    }
    if let Some(items) = s.get("items") {
        structural(items, &format!("{path}.items"), false, errs);
    } else if t == Some("array") {
        errs.push(FieldError::required(format!("{path}.items"), "must be specified"));
    }
    if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
        structural(ap, &format!("{path}.additionalProperties"), false, errs);
    }
}

/// Names one CRD wants that another already holds: kube's
/// NamingConditionController refuses them (`NamesAccepted=False`).
pub fn name_conflict(crd: &Value, others: &[Value]) -> Option<String> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
    let me = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let names = |c: &Value| -> (Vec<String>, String) {
        let n = c.pointer("/status/acceptedNames").filter(|n| n.get("plural").is_some()).or_else(|| c.pointer("/spec/names")).cloned().unwrap_or_default();
        let mut resources: Vec<String> = ["plural", "singular"].iter().filter_map(|k| n[*k].as_str().map(String::from)).collect();
        resources.extend(strings(n.get("shortNames")));
        let kinds = [n["kind"].as_str(), n["listKind"].as_str()].into_iter().flatten().map(String::from).collect::<Vec<_>>();
        (resources, kinds.join(","))
    };
    let spec = crd.pointer("/spec/names").cloned().unwrap_or_default();
    let (wanted, _) = names(&json!({"spec": {"names": spec}}));
    let kind = spec["kind"].as_str().unwrap_or_default();
    for other in others.iter().filter(|o| o.pointer("/spec/group").and_then(Value::as_str) == Some(group)) {
        if other.pointer("/metadata/name").and_then(Value::as_str) == Some(me) {
            continue;
        }
        let (taken, kinds) = names(other);
        if let Some(n) = wanted.iter().find(|w| taken.contains(w)) {
            return Some(format!("{n:?} is already in use"));
        }
        if kinds.split(',').any(|k| k == kind) {
            return Some(format!("{kind:?} is already in use"));
        }
    }
    None
}

/// A Table of custom resources with the CRD's printer columns (Name and
/// Age when it declares none).
pub fn table(
    columns: &[PrinterColumn],
    objects: &[&Value],
    include: crate::table::IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let age = PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    };
    let columns: Vec<PrinterColumn> = if columns.is_empty() { vec![age] } else { columns.to_vec() };
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0})];
    defs.extend(columns.iter().map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})));
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            cells.extend(columns.iter().map(|c| cell(o, c, now)));
            crate::table::row(cells, o, include)
        })
        .collect();
    crate::table::envelope(defs, rows, resource_version, continue_token)
}

/// One cell: the JSONPath's first result; dates as ages, as kube does;
/// nothing (`<none>` in kubectl) when the path finds nothing.
fn cell(o: &Value, c: &PrinterColumn, now: chrono::DateTime<chrono::Utc>) -> Value {
    use jsonpath_rust::JsonPath;
    let path = format!("${}", c.json_path.trim_start_matches('$').trim_start_matches(['{']).trim_end_matches('}'));
    let found: Vec<Value> = o.query(&path).map(|r| r.into_iter().cloned().collect()).unwrap_or_default();
    let Some(first) = found.into_iter().next() else { return Value::Null };
    if c.type_ == "date" {
        if let Some(t) = first.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) {
            return json!(crate::table::human_duration((now - t.with_timezone(&chrono::Utc)).num_seconds().max(0)));
        }
    }
    match (c.type_.as_str(), &first) {
        ("string", Value::String(_)) | ("integer", Value::Number(_)) | ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => first,
        (_, Value::String(s)) => json!(s),
        (_, other) => json!(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                 "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}})
    }

    #[test]
    fn an_established_crd_serves_each_version_with_its_names() {
        let types = served_types(&crd());
        assert_eq!(types.iter().map(|t| t.version).collect::<Vec<_>>(), vec!["v1", "v1beta1"]);
        let v1 = &types[0];
        assert_eq!((v1.group, v1.plural, v1.kind, v1.namespaced, v1.status, v1.scale), ("example.com", "widgets", "Widget", true, true, true));
        assert_eq!(v1.short_names, &["wd"]);
        let custom = v1.custom.as_ref().expect("custom");
        assert_eq!(custom.scale.as_ref().map(|s| s.spec_replicas.as_str()), Some("/spec/size"));
        assert_eq!(custom.storage_version, "v1");
        let mut not_yet = crd();
        not_yet["status"] = json!({});
        assert!(served_types(&not_yet).is_empty());
    }

    #[test]
    fn versions_sort_as_kube_sorts_them() {
        let mut v = vec!["v1alpha1", "foo", "v1", "v2beta1", "v1beta2", "v2", "v1beta1", "bar"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]);
    }

    #[test]
    fn crd_validation_names_the_field() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("widgets.other.com");
        bad["spec"]["versions"][0]["storage"] = json!(true);
        let mut errs = Vec::new();
        validate(&bad, None, &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|t| t.starts_with("metadata.name: Invalid value: \"widgets.other.com\"")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("must have exactly one version marked as storage version")), "{text:?}");
    }

    #[test]
    fn taken_names_conflict() {
        let mut other = crd();
        other["metadata"]["name"] = json!("gadgets.example.com");
        other["spec"]["names"] = json!({"plural": "gadgets", "kind": "Gadget", "shortNames": ["wd"]});
        assert_eq!(name_conflict(&crd(), &[other]).as_deref(), Some("\"wd\" is already in use"));
    }

    #[test]
    fn printer_columns_fill_cells() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"size": 3}});
        let t = table(&served_types(&crd())[0].custom.as_ref().expect("custom").columns, &[&obj], crate::table::IncludeObject::None, "1", None);
        assert_eq!(t["rows"][0]["cells"], json!(["a", 3]));
        assert_eq!(t["columnDefinitions"][1]["name"], "Size");
    }
}
