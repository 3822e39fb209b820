//! The OpenAPI v2 (Swagger 2.0) document at `/openapi/v2`, made from the
//! same schemas as the v3 documents, in both forms kubectl reads: JSON, and
//! the gnostic protobuf `openapi_v2.Document`
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), which
//! kubectl 1.27 and 1.28 ask for to validate `apply`, to compute strategic
//! merge patches and for `explain`.

use serde_json::{json, Map, Value};

use crate::protobuf::wire::Writer;

/// The gnostic protobuf media type of `/openapi/v2`.
pub const PROTOBUF_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// v3's `#/components/schemas/X` is v2's `#/definitions/X`; `nullable`
/// has no v2 form; a lone `allOf: [{$ref}]` (how v3 gives a reference a
/// description of its own) is a plain `$ref` beside the description, as
/// in Kubernetes' own v2 document: kubectl's v2 reader does not follow
/// `allOf`, and its strategic merge crashed on such fields.
fn schema_v2(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                match k.as_str() {
                    "allOf" if val.as_array().is_some_and(|a| a.len() == 1 && a[0].get("$ref").is_some()) => {
                        if let Some(Value::Object(r)) = val.get(0).map(schema_v2) {
                            out.extend(r);
                        }
                    }
                    "$ref" => {
                        let r = val.as_str().unwrap_or_default().replace("#/components/schemas/", "#/definitions/");
                        out.insert(k.clone(), json!(r));
                    }
                    "nullable" => {}
                    _ => {
                        out.insert(k.clone(), schema_v2(val));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(schema_v2).collect()),
        other => other.clone(),
    }
}

/// v3's `{name, in, schema: {type}}` is v2's `{name, in, type}`.
fn parameter_v2(p: &Value) -> Value {
    let mut out = json!({"name": p["name"], "in": p["in"], "required": p.get("required").cloned().unwrap_or(json!(false))});
    if let Some(d) = p.get("description") {
        out["description"] = d.clone();
    }
    for (k, v) in p.get("schema").and_then(Value::as_object).into_iter().flatten() {
        out[k.as_str()] = v.clone();
    }
    out
}

fn operation_v2(op: &Value, path_params: &[Value]) -> Value {
    let mut out = Map::new();
    for k in ["operationId", "description", "tags", "x-kubernetes-action", "x-kubernetes-group-version-kind"] {
        if let Some(v) = op.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    let mut params: Vec<Value> = path_params.to_vec();
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        params.push(parameter_v2(p));
    }
    if let Some(content) = op.pointer("/requestBody/content").and_then(Value::as_object) {
        out.insert("consumes".into(), json!(content.keys().collect::<Vec<_>>()));
        let schema = content.values().next().and_then(|c| c.get("schema")).map(schema_v2).unwrap_or(json!({"type": "object"}));
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    out.insert("parameters".into(), json!(params));
    out.insert("produces".into(), json!(["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]));
    out.insert("schemes".into(), json!(["https"]));
    let mut responses = Map::new();
    for (code, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let schema = r.pointer("/content/application~1json/schema").map(schema_v2);
        let mut resp = json!({"description": r.get("description").cloned().unwrap_or(json!("OK"))});
        if let Some(s) = schema {
            resp["schema"] = s;
        }
        responses.insert(code.clone(), resp);
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

/// The Swagger 2.0 document of every served group version.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (g, v) in crate::registry::group_versions() {
        let Some(doc) = crate::openapi::group_version_document(g, v) else { continue };
        for (name, s) in doc.pointer("/components/schemas").and_then(Value::as_object).into_iter().flatten() {
            definitions.entry(name.clone()).or_insert_with(|| schema_v2(s));
        }
        for (path, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
            let path_params: Vec<Value> = item.get("parameters").and_then(Value::as_array).into_iter().flatten().map(parameter_v2).collect();
            let mut out = Map::new();
            for (verb, op) in item.as_object().into_iter().flatten().filter(|(k, _)| *k != "parameters") {
                out.insert(verb.clone(), operation_v2(op, &path_params));
            }
            paths.insert(path.clone(), Value::Object(out));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
            "description": "Bearer Token authentication"}},
        "security": [{"BearerToken": []}],
    })
}

/// A gnostic `Any`: the value as YAML text (JSON is YAML).
fn any(v: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(2, v.to_string().as_bytes());
    w.into_inner()
}

fn named(name: &str, value: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(1, name.as_bytes());
    w.bytes(2, value);
    w.into_inner()
}

fn vendor_extensions(w: &mut Writer, field: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        w.bytes(field, &named(k, &any(v)));
    }
}

/// gnostic `Schema`.
fn schema_pb(s: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    let Some(m) = s.as_object() else { return w.into_inner() };
    let str_field = |w: &mut Writer, n: u32, k: &str| {
        if let Some(v) = m.get(k).and_then(Value::as_str) {
            w.bytes(n, v.as_bytes());
        }
    };
    str_field(&mut w, 1, "$ref");
    str_field(&mut w, 2, "format");
    str_field(&mut w, 3, "title");
    str_field(&mut w, 4, "description");
    if let Some(d) = m.get("default") {
        w.bytes(5, &any(d));
    }
    for (n, k) in [(6, "multipleOf"), (7, "maximum"), (9, "minimum")] {
        if let Some(v) = m.get(k).and_then(Value::as_f64) {
            w.fixed64_field(n, v.to_bits());
        }
    }
    for (n, k) in [(8, "exclusiveMaximum"), (10, "exclusiveMinimum"), (16, "uniqueItems"), (27, "readOnly")] {
        if m.get(k).and_then(Value::as_bool) == Some(true) {
            w.varint_field(n, 1);
        }
    }
    for (n, k) in [(11, "maxLength"), (12, "minLength"), (14, "maxItems"), (15, "minItems"), (17, "maxProperties"), (18, "minProperties")] {
        if let Some(v) = m.get(k).and_then(Value::as_i64) {
            w.varint_field(n, v as u64);
        }
    }
    str_field(&mut w, 13, "pattern");
    for r in m.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        w.bytes(19, r.as_bytes());
    }
    for e in m.get("enum").and_then(Value::as_array).into_iter().flatten() {
        w.bytes(20, &any(e));
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Writer::default();
            a.varint_field(2, u64::from(*b));
            w.bytes(21, &a.into_inner());
        }
        Some(s @ Value::Object(_)) => {
            let mut a = Writer::default();
            a.bytes(1, &schema_pb(s));
            w.bytes(21, &a.into_inner());
        }
        _ => {}
    }
    if let Some(t) = m.get("type") {
        let mut ti = Writer::default();
        for v in t.as_array().cloned().unwrap_or_else(|| vec![t.clone()]).iter().filter_map(Value::as_str) {
            ti.bytes(1, v.as_bytes());
        }
        w.bytes(22, &ti.into_inner());
    }
    if let Some(items) = m.get("items") {
        let mut ii = Writer::default();
        for i in items.as_array().cloned().unwrap_or_else(|| vec![items.clone()]) {
            ii.bytes(1, &schema_pb(&i));
        }
        w.bytes(23, &ii.into_inner());
    }
    for a in m.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        w.bytes(24, &schema_pb(a));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        let mut p = Writer::default();
        for (k, v) in props {
            p.bytes(1, &named(k, &schema_pb(v)));
        }
        w.bytes(25, &p.into_inner());
    }
    if let Some(e) = m.get("example") {
        w.bytes(30, &any(e));
    }
    vendor_extensions(&mut w, 31, m);
    w.into_inner()
}

/// gnostic `Parameter`: a body parameter or a query/path one.
fn parameter_pb(p: &Value) -> Vec<u8> {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
    let mut param = Writer::default();
    if s("in") == "body" {
        let mut b = Writer::default();
        b.bytes(2, s("name").as_bytes());
        b.bytes(3, b"body");
        if required {
            b.varint_field(4, 1);
        }
        b.bytes(5, &schema_pb(&p["schema"]));
        param.bytes(1, &b.into_inner());
    } else {
        // Query (3) and path (4) sub-schemas: required 1, in 2,
        // description 3, name 4, then type (6 for query, 5 for path) and
        // uniqueItems (20, 19).
        let path = s("in") == "path";
        let mut q = Writer::default();
        if required {
            q.varint_field(1, 1);
        }
        q.bytes(2, s("in").as_bytes());
        if !s("description").is_empty() {
            q.bytes(3, s("description").as_bytes());
        }
        q.bytes(4, s("name").as_bytes());
        let ty = s("type");
        q.bytes(if path { 5 } else { 6 }, if ty.is_empty() { b"string".as_slice() } else { ty.as_bytes() });
        if p.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            q.varint_field(if path { 19 } else { 20 }, 1);
        }
        let mut nb = Writer::default();
        nb.bytes(if path { 4 } else { 3 }, &q.into_inner());
        param.bytes(2, &nb.into_inner());
    }
    let mut item = Writer::default();
    item.bytes(1, &param.into_inner());
    item.into_inner()
}

fn operation_pb(op: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    let strs = |w: &mut Writer, n: u32, k: &str| {
        for t in op.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            w.bytes(n, t.as_bytes());
        }
    };
    strs(&mut w, 1, "tags");
    if let Some(d) = op.get("description").and_then(Value::as_str) {
        w.bytes(3, d.as_bytes());
    }
    if let Some(id) = op.get("operationId").and_then(Value::as_str) {
        w.bytes(5, id.as_bytes());
    }
    strs(&mut w, 6, "produces");
    strs(&mut w, 7, "consumes");
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        w.bytes(8, &parameter_pb(p));
    }
    let mut responses = Writer::default();
    for (code, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let mut resp = Writer::default();
        resp.bytes(1, r.get("description").and_then(Value::as_str).unwrap_or_default().as_bytes());
        if let Some(s) = r.get("schema") {
            let mut si = Writer::default();
            si.bytes(1, &schema_pb(s));
            resp.bytes(2, &si.into_inner());
        }
        let mut rv = Writer::default();
        rv.bytes(1, &resp.into_inner());
        responses.bytes(1, &named(code, &rv.into_inner()));
    }
    w.bytes(9, &responses.into_inner());
    strs(&mut w, 10, "schemes");
    if let Some(m) = op.as_object() {
        vendor_extensions(&mut w, 13, m);
    }
    w.into_inner()
}

/// The document as gnostic's `openapi_v2.Document` protobuf.
pub fn to_protobuf(doc: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(1, b"2.0");
    let mut info = Writer::default();
    info.bytes(1, doc.pointer("/info/title").and_then(Value::as_str).unwrap_or_default().as_bytes());
    info.bytes(2, doc.pointer("/info/version").and_then(Value::as_str).unwrap_or_default().as_bytes());
    w.bytes(2, &info.into_inner());
    let mut paths = Writer::default();
    for (path, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
        let mut pi = Writer::default();
        for (n, verb) in [(2, "get"), (3, "put"), (4, "post"), (5, "delete"), (8, "patch")] {
            if let Some(op) = item.get(verb) {
                pi.bytes(n, &operation_pb(op));
            }
        }
        paths.bytes(2, &named(path, &pi.into_inner()));
    }
    w.bytes(8, &paths.into_inner());
    let mut defs = Writer::default();
    for (name, s) in doc.get("definitions").and_then(Value::as_object).into_iter().flatten() {
        defs.bytes(1, &named(name, &schema_pb(s)));
    }
    w.bytes(9, &defs.into_inner());
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_document_refers_to_definitions_and_carries_kinds() {
        let doc = document();
        let deploy = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deploy["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert_eq!(deploy["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
        let text = doc.to_string();
        assert!(!text.contains("#/components/schemas/"), "every $ref is a v2 one");
        assert!(!text.contains("\"allOf\":[{\"$ref\""), "references are plain $refs");
        let meta = &doc["definitions"]["io.k8s.api.core.v1.PodTemplateSpec"]["properties"]["metadata"];
        assert_eq!(meta["$ref"], "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation")));
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(!to_protobuf(&doc).is_empty());
    }
}
