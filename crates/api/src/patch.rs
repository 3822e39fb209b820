//! The four PATCH flavours: JSON patch (RFC 6902) and JSON merge patch
//! (RFC 7386) through the `json-patch` crate, and Kubernetes' strategic merge
//! patch, which no maintained crate implements, so it is written here.

use serde_json::{Map, Value};

/// The deepest nesting of arrays and objects an object may have: what
/// serde_json reads back (its recursion limit), so that every stored
/// object can be decoded again.
pub const MAX_NESTING: usize = 127;

/// How deeply `v` nests arrays and objects (a scalar 0, `[]` 1); without
/// recursion, so any value can be measured.
pub fn nesting(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(depth + 1);
                stack.extend(a.iter().map(|c| (c, depth + 1)));
            }
            Value::Object(m) => {
                deepest = deepest.max(depth + 1);
                stack.extend(m.values().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Applies an RFC 6902 JSON patch, all of it or none.
///
/// Unlike the other patches, a JSON patch can make an object deeper than
/// any body it came in: an `add` at a deep path, or a `copy` of the
/// object into itself, which doubles its depth each time (and cloning or
/// dropping such a value recurses as deep). So each operation is checked
/// before it runs: the depth of what it puts at its path, plus the path's
/// own length, stays within [`MAX_NESTING`].
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    use json_patch::PatchOperation as Op;
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    let mut patched = doc.clone();
    for (i, op) in p.0.iter().enumerate() {
        let placed = match op {
            Op::Add(a) => Some((a.path.count(), nesting(&a.value))),
            Op::Replace(r) => Some((r.path.count(), nesting(&r.value))),
            Op::Copy(c) => Some((c.path.count(), patched.pointer(c.from.as_str()).map_or(0, nesting))),
            Op::Move(m) => Some((m.path.count(), patched.pointer(m.from.as_str()).map_or(0, nesting))),
            Op::Remove(_) | Op::Test(_) => None,
        };
        if let Some((at, depth)) = placed {
            if at + depth > MAX_NESTING {
                return Err(format!("operation {i} would nest the object {} levels deep, past the limit of {MAX_NESTING}", at + depth));
            }
        }
        json_patch::patch(&mut patched, std::slice::from_ref(op)).map_err(|e| e.to_string())?;
    }
    *doc = patched;
    Ok(())
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

thread_local! {
    /// Keys of the lists a custom resource's schema declares as
    /// `x-kubernetes-list-type: map` (by field name), while its managed
    /// fields are computed on this thread.
    static LIST_KEYS: std::cell::RefCell<Vec<(&'static str, &'static str)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a schema's map-list keys (field name, key) known to
/// [`merge_key`]: what server-side apply merges a custom resource's
/// lists by. `f` runs on this thread, start to end.
pub fn with_list_keys<R>(keys: Vec<(&'static str, &'static str)>, f: impl FnOnce() -> R) -> R {
    if keys.is_empty() {
        return f();
    }
    let before = LIST_KEYS.with(|k| std::mem::replace(&mut *k.borrow_mut(), keys));
    let out = f();
    LIST_KEYS.with(|k| *k.borrow_mut() = before);
    out
}

/// The merge key of a list field under strategic merge, from the Kubernetes
/// types' `patchMergeKey` tags (or a custom resource schema's list-map
/// key, see [`with_list_keys`]). `items` (the patch's items) tell container
/// ports (`containerPort`) from service ports (`port`).
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    if let Some(key) = LIST_KEYS.with(|k| k.borrow().iter().find(|(f, _)| *f == field).map(|(_, key)| *key)) {
        return Some(key);
    }
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "hostAliases" | "podIPs" | "hostIPs" => "ip",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars that strategic merge unions instead of replacing.
fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch to `doc`.
pub fn strategic_merge(doc: &mut Value, patch: &Value) -> Result<(), String> {
    match (doc.as_object_mut(), patch.as_object()) {
        (Some(d), Some(p)) => merge_map(d, p),
        (_, Some(p)) => {
            let mut m = Map::new();
            merge_map(&mut m, p)?;
            *doc = Value::Object(m);
            Ok(())
        }
        _ => Err("strategic merge patch must be a JSON object".into()),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().filter(|i| i.get("$patch").is_none()).map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_map(doc: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = match strip_directives(&Value::Object(patch.clone())) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            return Ok(());
        }
        Some("delete") => {
            doc.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    for (key, pv) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (doc.get_mut(field), pv.as_array()) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            // $setElementOrder/… only orders; $retainKeys is handled below.
            continue;
        }
        match pv {
            Value::Null => {
                doc.remove(key);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    doc.remove(key);
                    continue;
                }
                match doc.get_mut(key) {
                    Some(Value::Object(dm)) => merge_map(dm, pm)?,
                    _ => {
                        let mut m = Map::new();
                        merge_map(&mut m, pm)?;
                        doc.insert(key.clone(), Value::Object(m));
                    }
                }
            }
            Value::Array(items) => {
                let merged = merge_list(key, doc.get(key), items)?;
                doc.insert(key.clone(), merged);
            }
            scalar => {
                doc.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        doc.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(field: &str, current: Option<&Value>, items: &[Value]) -> Result<Value, String> {
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Ok(strip_directives(&Value::Array(items.to_vec())));
    }
    let mut out: Vec<Value> = current.and_then(Value::as_array).cloned().unwrap_or_default();
    if is_primitive_merge_list(field) {
        for i in items {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(mk) = merge_key(field, items) else {
        return Ok(strip_directives(&Value::Array(items.to_vec())));
    };
    for item in items {
        let Some(im) = item.as_object() else {
            return Ok(strip_directives(&Value::Array(items.to_vec())));
        };
        let key = im.get(mk);
        let pos = key.and_then(|k| out.iter().position(|o| o.get(mk) == Some(k)));
        if im.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = pos {
                out.remove(p);
            }
            continue;
        }
        match pos {
            Some(p) => {
                if let Some(om) = out[p].as_object_mut() {
                    merge_map(om, im)?;
                }
            }
            None => {
                let mut m = Map::new();
                merge_map(&mut m, im)?;
                out.push(Value::Object(m));
            }
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_nesting_limit_is_what_serde_json_reads_back() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let at_limit: Value = serde_json::from_str(&nested(MAX_NESTING)).expect("readable at the limit");
        assert_eq!(nesting(&at_limit), MAX_NESTING);
        assert!(serde_json::from_str::<Value>(&nested(MAX_NESTING + 1)).is_err());
        assert_eq!(nesting(&json!({"a": [1, {"b": {}}], "c": 2})), 4);
        assert_eq!(nesting(&json!("scalar")), 0);
    }

    #[test]
    fn a_json_patch_cannot_nest_an_object_past_the_limit() {
        let deep = |n: usize| (0..n).fold(json!({}), |v, _| json!({"a": v}));
        let doc = json!({"metadata": {"name": "x"}});
        // An add whose path and value together go past the limit.
        let path: String = "/x".to_string() + &"/a".repeat(60);
        let mut d = doc.clone();
        let ops = json!([{"op": "add", "path": "/x", "value": deep(100)}, {"op": "add", "path": path, "value": deep(100)}]);
        let err = json_patch(&mut d, &ops).expect_err("too deep");
        assert!(err.contains("operation 1") && err.contains("past the limit"), "{err}");
        assert_eq!(d, doc, "nothing of a refused patch is applied");
        // Copying a subtree into its own depths (each such copy doubles the
        // depth): a shallow one goes, a deep one is refused.
        let mut d = json!({"x": deep(70)});
        json_patch(&mut d, &json!([{"op": "copy", "from": "/x", "path": "/x/a/b"}])).expect("within the limit");
        let deeper = "/x".to_string() + &"/a".repeat(60) + "/b";
        let err = json_patch(&mut d, &json!([{"op": "copy", "from": "/x", "path": deeper}])).expect_err("too deep");
        assert!(err.contains("past the limit"), "{err}");
        assert!(nesting(&d) <= MAX_NESTING);
        // Within the limit, patches apply as before.
        let mut d = doc.clone();
        json_patch(&mut d, &json!([{"op": "add", "path": "/data", "value": {"k": "v"}}, {"op": "copy", "from": "/data", "path": "/more"}])).expect("patch");
        assert_eq!(d["more"]["k"], "v");
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]
        }});
        strategic_merge(&mut doc, &patch).expect("patch");
        assert_eq!(doc["spec"]["containers"][0]["image"], "a:2");
        assert_eq!(doc["spec"]["containers"][0]["env"].as_array().map(Vec::len), Some(2));
        assert_eq!(doc["spec"]["containers"][1]["image"], "b:1");
    }

    #[test]
    fn strategic_merge_directives() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                             "spec": {"containers": [{"name": "a"}, {"name": "b"}], "args": ["1", "2"]}});
        let patch = json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]},
                           "spec": {"containers": [{"name": "b", "$patch": "delete"}], "args": ["3"]}});
        strategic_merge(&mut doc, &patch).expect("patch");
        assert_eq!(doc["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(doc["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(doc["spec"]["containers"], json!([{"name": "a"}]));
        assert_eq!(doc["spec"]["args"], json!(["3"]), "lists without a merge key are replaced");
    }

    #[test]
    fn merge_and_json_patch() {
        let mut doc = json!({"a": {"b": 1, "c": 2}});
        merge_patch(&mut doc, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}}));
        json_patch(&mut doc, &json!([{"op": "replace", "path": "/a/c", "value": 5}])).expect("patch");
        assert_eq!(doc["a"]["c"], 5);
        assert!(json_patch(&mut doc, &json!([{"op": "test", "path": "/a/c", "value": 6}])).is_err());
    }
}
