//! OpenAPI v3 documents, generated from the `k8s-openapi` types' schemas.
//!
//! kubectl reads them twice: `apply --validate=strict` checks that each
//! kind's `patch` operation carries `x-kubernetes-group-version-kind` and a
//! `fieldValidation` query parameter (then leaves validation to the server),
//! and `kubectl explain` renders the kind's schema and its descriptions.

use serde_json::{json, Map, Value};

use crate::registry::{ResourceType, RESOURCES};

/// The URL path of a group version's document (`api/v1`, `apis/apps/v1`).
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn gvk(rt: &ResourceType) -> Value {
    json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}])
}

/// The group's part of kube's operation ids: `CoreV1`, `AppsV1`,
/// `RbacAuthorizationV1` (`.k8s.io` dropped, each dot-separated word
/// capitalised), `ExampleComV1` for a custom group.
fn operation_group(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() { "core" } else { rt.group.strip_suffix(".k8s.io").unwrap_or(rt.group) };
    let mut out = String::new();
    for word in group.split(['.', '-']).filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    let mut version = rt.version.chars();
    if let Some(first) = version.next() {
        out.extend(first.to_uppercase());
        out.push_str(version.as_str());
    }
    out
}

/// A query parameter, typed as kube-apiserver reads it.
fn query_param(name: &str) -> Value {
    let (ty, description) = match name {
        "allowWatchBookmarks" => ("boolean", "Asks a watch for BOOKMARK events."),
        "continue" => ("string", "The continue token of the previous page of a list."),
        "dryRun" => ("string", "`All` processes the request without persisting it."),
        "fieldManager" => ("string", "The name of the actor making the change, recorded in managedFields."),
        "fieldSelector" => ("string", "Restricts the list to objects whose fields match."),
        "fieldValidation" => ("string", "What to do with unknown or duplicate fields: Ignore, Warn or Strict."),
        "force" => ("boolean", "Server-side apply takes fields other managers own."),
        "gracePeriodSeconds" => ("integer", "Seconds before the object is deleted; 0 deletes it at once."),
        "labelSelector" => ("string", "Restricts the list to objects whose labels match."),
        "limit" => ("integer", "The most objects one page of a list holds."),
        "pretty" => ("string", "Indents the output."),
        "propagationPolicy" => ("string", "How dependents are garbage collected: Orphan, Background or Foreground."),
        "resourceVersion" => ("string", "The resourceVersion the list or watch starts from."),
        "resourceVersionMatch" => ("string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
        "sendInitialEvents" => ("boolean", "A watch starts with the current objects, then a bookmark."),
        "timeoutSeconds" => ("integer", "How long a list or watch call may last."),
        "watch" => ("boolean", "Watch for changes instead of listing."),
        _ => ("string", ""),
    };
    let mut schema = json!({"type": ty});
    if ty == "string" {
        schema["uniqueItems"] = json!(true);
    }
    json!({"name": name, "in": "query", "description": description, "schema": schema})
}

fn path_param(name: &str) -> Value {
    let description = if name == "namespace" { "object name and auth scope, such as for teams and projects" } else { "name of the object" };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

/// The media types an object answer comes in.
fn answer(description: &str, schema_ref: &str) -> Value {
    let content: Map<String, Value> = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
        .into_iter()
        .map(|c| (c.to_string(), json!({"schema": {"$ref": schema_ref}})))
        .collect();
    json!({"description": description, "content": content})
}

const LIST_PARAMS: [&str; 11] = [
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "pretty",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_PARAMS: [&str; 3] = ["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: [&str; 4] = ["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: [&str; 3] = ["dryRun", "gracePeriodSeconds", "propagationPolicy"];

const STATUS_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// One operation, as kube-apiserver documents it.
struct Operation<'a> {
    rt: &'a ResourceType,
    /// `read`, `list`, `create`, ...: the operation id's first word.
    verb: &'a str,
    /// `x-kubernetes-action`.
    action: &'a str,
    /// `Namespaced`, `ForAllNamespaces` or empty, placed as kube does.
    scope: &'a str,
    /// `Status`, `Scale` or empty.
    suffix: &'a str,
    description: String,
    params: &'a [&'a str],
    /// The request body's schema and media types.
    body: Option<(&'a str, Vec<&'a str>)>,
    /// Status codes and the schema each answers with.
    responses: Vec<(&'a str, &'a str)>,
}

impl Operation<'_> {
    fn to_json(&self) -> Value {
        let rt = self.rt;
        let (prefix, suffix) = if self.scope == "ForAllNamespaces" { ("", "ForAllNamespaces") } else { (self.scope, "") };
        let id = format!("{}{}{prefix}{}{}{suffix}", self.verb, operation_group(rt), rt.kind, self.suffix);
        let mut responses: Map<String, Value> = self
            .responses
            .iter()
            .map(|(code, schema)| {
                let description = match *code {
                    "201" => "Created",
                    "202" => "Accepted",
                    _ => "OK",
                };
                (code.to_string(), answer(description, schema))
            })
            .collect();
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        let mut o = json!({
            "operationId": id,
            "description": self.description,
            "tags": [format!("{}_{}", if rt.group.is_empty() { "core" } else { rt.group }, rt.version)],
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": gvk(rt)[0].clone(),
            "parameters": self.params.iter().map(|p| query_param(p)).collect::<Vec<_>>(),
            "responses": responses,
        });
        if let Some((schema, types)) = &self.body {
            let content: Map<String, Value> = types.iter().map(|c| (c.to_string(), json!({"schema": {"$ref": schema}}))).collect();
            o["requestBody"] = json!({"content": content, "required": self.verb != "delete" && self.verb != "deletecollection"});
        }
        o
    }
}

/// The OpenAPI v3 document of one built-in group version, or `None` if
/// not served.
pub fn group_version_document(group: &str, version: &str) -> Option<Value> {
    let rts: Vec<&ResourceType> = RESOURCES.iter().filter(|r| r.group == group && r.version == version).collect();
    document(&rts)
}

/// A custom resource's schema name, as kube-apiserver names it: the group
/// reversed, the version, the kind (`com.example.v1.Widget`).
fn custom_schema_name(rt: &ResourceType) -> String {
    let group: Vec<&str> = rt.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), rt.version, rt.kind)
}

fn schema_name_of(rt: &ResourceType) -> String {
    if rt.custom.is_some() {
        custom_schema_name(rt)
    } else {
        (rt.schema_name)()
    }
}

/// The OpenAPI v3 document of the resource types of one group version
/// (built-in, or a CRD's: its schema, with ObjectMeta for `metadata`).
pub fn document(rts: &[&ResourceType]) -> Option<Value> {
    if rts.is_empty() {
        return None;
    }
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut custom_schemas = Map::new();
    for rt in rts {
        let name = schema_name_of(rt);
        match &rt.custom {
            None => {
                let _ = (rt.schema)(&mut generator);
            }
            Some(c) => {
                let meta = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
                let mut schema = c.schema.clone().unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
                if let Some(props) = schema.as_object_mut().map(|o| o.entry("properties").or_insert_with(|| json!({}))).and_then(Value::as_object_mut) {
                    props.insert(
                        "apiVersion".into(),
                        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
                    );
                    props.insert(
                        "kind".into(),
                        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
                    );
                    props.insert("metadata".into(), serde_json::to_value(&meta).unwrap_or_default());
                }
                custom_schemas.insert(name.clone(), schema);
            }
        }
        paths_of(rt, &name, &mut paths);
    }
    // What the operations refer to besides the kinds themselves.
    let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
    let _ = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    if rts.iter().any(|rt| rt.scale) {
        let _ = generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    }
    let mut schemas = generator.take_definitions(true);
    annotate_patch_strategies(&mut schemas);
    annotate_enums(&mut schemas);
    schemas.extend(custom_schemas);
    for rt in rts {
        schemas.insert(list_schema_name(rt), list_schema(rt));
    }
    for rt in rts {
        if let Some(s) = schemas.get_mut(&schema_name_of(rt)).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-group-version-kind".into(), gvk(rt));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn list_schema_name(rt: &ResourceType) -> String {
    format!("{}List", schema_name_of(rt))
}

/// `<Kind>List`: kube's list of a kind (no Rust type carries its schema).
fn list_schema(rt: &ResourceType) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", rt.kind, rt.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "items": {"type": "array", "description": format!("List of {}.", rt.plural),
                "items": {"$ref": format!("#/components/schemas/{}", schema_name_of(rt))}},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"description": "Standard list metadata.",
                "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}]},
        },
        "x-kubernetes-group-version-kind": [{"group": rt.group, "version": rt.version, "kind": format!("{}List", rt.kind)}],
    })
}

/// The paths of one resource type, with the operations kube-apiserver
/// documents on each (the deprecated `/watch/` paths left out).
fn paths_of(rt: &ResourceType, schema_name: &str, paths: &mut Map<String, Value>) {
    let object = format!("#/components/schemas/{schema_name}");
    let list = format!("#/components/schemas/{}", list_schema_name(rt));
    let scale = "#/components/schemas/io.k8s.api.autoscaling.v1.Scale".to_string();
    let kind = rt.kind;
    let scope = if rt.namespaced { "Namespaced" } else { "" };
    // Custom resources take no strategic merge patch (415), as in kube.
    let mut patch_types = vec!["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json"];
    if rt.custom.is_none() {
        patch_types.push("application/strategic-merge-patch+json");
    }
    // A Pod or Namespace answers a delete with itself (it goes away
    // gracefully); other kinds with a Status once gone.
    let deleted = if matches!(kind, "Pod" | "Namespace") && rt.custom.is_none() { object.as_str() } else { STATUS_REF };
    let base = format!("/{}", gv_path(rt.group, rt.version));
    let collection = if rt.namespaced { format!("{base}/namespaces/{{namespace}}/{}", rt.plural) } else { format!("{base}/{}", rt.plural) };
    let item = format!("{collection}/{{name}}");
    let mut item_params = vec![path_param("name")];
    let mut collection_params = vec![];
    if rt.namespaced {
        item_params.push(path_param("namespace"));
        collection_params.push(path_param("namespace"));
    }
    item_params.push(query_param("pretty"));
    collection_params.push(query_param("pretty"));
    let op = |verb: &'static str, action: &'static str, suffix: &'static str, description: String| Operation {
        rt,
        verb,
        action,
        scope,
        suffix,
        description,
        params: &[],
        body: None,
        responses: vec![],
    };
    let mut coll = json!({"parameters": collection_params});
    coll["get"] =
        Operation { params: &LIST_PARAMS, responses: vec![("200", &list)], ..op("list", "list", "", format!("list or watch objects of kind {kind}")) }
            .to_json();
    coll["post"] = Operation {
        params: &WRITE_PARAMS,
        body: Some((&object, vec!["application/json", "application/yaml"])),
        responses: vec![("200", &object), ("201", &object), ("202", &object)],
        ..op("create", "post", "", format!("create a {kind}"))
    }
    .to_json();
    coll["delete"] = Operation {
        params: &[
            "continue",
            "dryRun",
            "fieldSelector",
            "gracePeriodSeconds",
            "labelSelector",
            "limit",
            "propagationPolicy",
            "resourceVersion",
            "resourceVersionMatch",
            "timeoutSeconds",
        ],
        body: Some((DELETE_OPTIONS_REF, vec!["application/json"])),
        responses: vec![("200", STATUS_REF)],
        ..op("deletecollection", "deletecollection", "", format!("delete collection of {kind}"))
    }
    .to_json();
    paths.insert(collection, coll);

    let mut one = json!({"parameters": item_params.clone()});
    one["get"] = Operation { responses: vec![("200", &object)], ..op("read", "get", "", format!("read the specified {kind}")) }.to_json();
    one["put"] = Operation {
        params: &WRITE_PARAMS,
        body: Some((&object, vec!["application/json", "application/yaml"])),
        responses: vec![("200", &object), ("201", &object)],
        ..op("replace", "put", "", format!("replace the specified {kind}"))
    }
    .to_json();
    one["patch"] = Operation {
        params: &PATCH_PARAMS,
        body: Some((PATCH_REF, patch_types.clone())),
        responses: vec![("200", &object), ("201", &object)],
        ..op("patch", "patch", "", format!("partially update the specified {kind}"))
    }
    .to_json();
    one["delete"] = Operation {
        params: &DELETE_PARAMS,
        body: Some((DELETE_OPTIONS_REF, vec!["application/json"])),
        responses: vec![("200", deleted), ("202", deleted)],
        ..op("delete", "delete", "", format!("delete a {kind}"))
    }
    .to_json();
    paths.insert(item.clone(), one);

    for (sub, suffix, schema) in [("status", "Status", &object), ("scale", "Scale", &scale)] {
        if (sub == "status" && !rt.status) || (sub == "scale" && !rt.scale) {
            continue;
        }
        let mut s = json!({"parameters": item_params.clone()});
        s["get"] = Operation { responses: vec![("200", schema)], ..op("read", "get", suffix, format!("read {sub} of the specified {kind}")) }.to_json();
        s["put"] = Operation {
            params: &WRITE_PARAMS,
            body: Some((schema, vec!["application/json", "application/yaml"])),
            responses: vec![("200", schema), ("201", schema)],
            ..op("replace", "put", suffix, format!("replace {sub} of the specified {kind}"))
        }
        .to_json();
        s["patch"] = Operation {
            params: &PATCH_PARAMS,
            body: Some((PATCH_REF, patch_types.clone())),
            responses: vec![("200", schema), ("201", schema)],
            ..op("patch", "patch", suffix, format!("partially update {sub} of the specified {kind}"))
        }
        .to_json();
        paths.insert(format!("{item}/{sub}"), s);
    }

    if rt.namespaced {
        let mut all = json!({});
        all["get"] = Operation {
            scope: "ForAllNamespaces",
            params: &LIST_PARAMS,
            responses: vec![("200", &list)],
            ..op("list", "list", "", format!("list or watch objects of kind {kind}"))
        }
        .to_json();
        paths.insert(format!("{base}/{}", rt.plural), all);
    }
}

/// String fields whose values validation restricts to a list: each
/// schema's property gets that list as its `enum`.
const ENUMS: &[(&str, &str, &[&str])] = {
    use crate::validation::*;
    &[
        ("io.k8s.api.core.v1.ServiceSpec", "type", SERVICE_TYPES),
        ("io.k8s.api.core.v1.ServicePort", "protocol", SERVICE_PROTOCOLS),
        ("io.k8s.api.core.v1.Container", "imagePullPolicy", PULL_POLICIES),
        ("io.k8s.api.core.v1.PodSpec", "dnsPolicy", DNS_POLICIES),
        ("io.k8s.api.core.v1.PodSpec", "restartPolicy", POD_RESTART_POLICIES),
        ("io.k8s.api.scheduling.v1.PriorityClass", "preemptionPolicy", PREEMPTION_POLICIES),
        ("io.k8s.api.storage.v1.StorageClass", "reclaimPolicy", RECLAIM_POLICIES),
        ("io.k8s.api.storage.v1.StorageClass", "volumeBindingMode", VOLUME_BINDING_MODES),
    ]
};

fn annotate_enums(schemas: &mut Map<String, Value>) {
    for (def, property, values) in ENUMS {
        if let Some(p) = schemas.get_mut(*def).and_then(|s| s.pointer_mut(&format!("/properties/{property}"))).and_then(Value::as_object_mut) {
            p.insert("enum".into(), json!(values));
        }
    }
}

/// Marks list fields with the strategic-merge metadata kubectl reads from
/// the schema (`x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`)
/// to compute `apply` patches; it comes from the same table the server's
/// strategic merge uses, so client and server agree.
fn annotate_patch_strategies(schemas: &mut Map<String, Value>) {
    for (def, schema) in schemas.iter_mut() {
        let container = def.ends_with(".Container") || def.ends_with(".EphemeralContainer");
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else { continue };
        for (name, prop) in props.iter_mut() {
            if prop.get("type").and_then(Value::as_str) != Some("array") {
                continue;
            }
            let key = match name.as_str() {
                "ports" if container => Some("containerPort"),
                "ports" if def.ends_with(".ServiceSpec") => Some("port"),
                "ports" => None,
                other => crate::patch::merge_key(other, &[]),
            };
            if let (Some(key), Some(p)) = (key, prop.as_object_mut()) {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            } else if name == "finalizers" && def.ends_with(".ObjectMeta") {
                if let Some(p) = prop.as_object_mut() {
                    p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                }
            }
        }
    }
}

/// A short, stable hash of a document, for the `?hash=` kubectl caches by.
pub fn hash(doc: &[u8]) -> String {
    // FNV-1a; a cache key, not a security boundary.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in doc {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_document_has_what_kubectl_checks() {
        let doc = group_version_document("apps", "v1").expect("served");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
        let schema = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert!(schema["properties"]["spec"].is_object());
        assert!(group_version_document("nope", "v1").is_none());
        let core = group_version_document("", "v1").expect("served");
        assert_eq!(core["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["type"]["enum"], json!(crate::validation::SERVICE_TYPES));
        assert_eq!(core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["dnsPolicy"]["enum"], json!(crate::validation::DNS_POLICIES));
    }
}
