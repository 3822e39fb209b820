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

fn param(name: &str, location: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": {"type": "string", "uniqueItems": true}})
}

fn op(rt: &ResourceType, verb: &str, action: &str, params: &[&str], body: bool, schema_ref: &str) -> Value {
    let mut o = json!({
        "operationId": format!("{verb}{}", rt.kind),
        "description": format!("{verb} the specified {}", rt.kind),
        "tags": [rt.api_version()],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt)[0].clone(),
        "parameters": params.iter().map(|p| param(p, "query", false)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}},
    });
    if body {
        let ct = if action == "patch" {
            vec!["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
        } else {
            vec!["application/json"]
        };
        let content: Map<String, Value> = ct
            .into_iter()
            .map(|c| (c.to_string(), json!({"schema": if action == "patch" { json!({"type": "object"}) } else { json!({"$ref": schema_ref}) }})))
            .collect();
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
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
                    props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                    props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                    props.insert("metadata".into(), serde_json::to_value(&meta).unwrap_or_default());
                }
                custom_schemas.insert(name.clone(), schema);
            }
        }
        let schema_ref = format!("#/components/schemas/{name}");
        let base = format!("/{}", gv_path(rt.group, rt.version));
        let (collection, item) = if rt.namespaced {
            (format!("{base}/namespaces/{{namespace}}/{}", rt.plural), format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural))
        } else {
            (format!("{base}/{}", rt.plural), format!("{base}/{}/{{name}}", rt.plural))
        };
        let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
        let mut path_params = vec![param("name", "path", true)];
        if rt.namespaced {
            path_params.push(param("namespace", "path", true));
        }
        paths.insert(
            item.clone(),
            json!({
                "parameters": path_params,
                "get": op(rt, "read", "get", &["pretty"], false, &schema_ref),
                "put": op(rt, "replace", "put", &write, true, &schema_ref),
                "patch": op(rt, "patch", "patch", &["dryRun", "fieldManager", "fieldValidation", "force", "pretty"], true, &schema_ref),
                "delete": op(rt, "delete", "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"], false, &schema_ref),
            }),
        );
        let mut coll = json!({
            "get": op(rt, "list", "list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"], false, &schema_ref),
            "post": op(rt, "create", "post", &write, true, &schema_ref),
        });
        if rt.namespaced {
            coll["parameters"] = json!([param("namespace", "path", true)]);
        }
        paths.insert(collection, coll);
        for sub in ["status", "scale"].into_iter().filter(|s| (*s == "status" && rt.status) || (*s == "scale" && rt.scale)) {
            paths.insert(
                format!("{item}/{sub}"),
                json!({
                    "get": op(rt, "read", "get", &["pretty"], false, &schema_ref),
                    "put": op(rt, "replace", "put", &write, true, &schema_ref),
                    "patch": op(rt, "patch", "patch", &["dryRun", "fieldManager", "fieldValidation", "force"], true, &schema_ref),
                }),
            );
        }
    }
    let mut schemas = generator.take_definitions(true);
    annotate_patch_strategies(&mut schemas);
    schemas.extend(custom_schemas);
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
    }
}
