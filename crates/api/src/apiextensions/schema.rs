//! Structural schemas (a CustomResourceDefinition version's
//! `openAPIV3Schema`) applied to custom resources: pruning of fields the
//! schema does not declare, defaulting, and validation with kube's
//! messages and field paths.

use serde_json::{Map, Value};

use crate::FieldError;

fn flag(s: &Value, name: &str) -> bool {
    s.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The schema that applies to an object's property `key`: its entry in
/// `properties`, else an `additionalProperties` schema.
fn property_schema<'a>(s: &'a Value, key: &str) -> Option<&'a Value> {
    s.get("properties").and_then(|p| p.get(key)).or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

/// The metadata fields an embedded resource (`x-kubernetes-embedded-resource`)
/// keeps: those of ObjectMeta that a client may set.
const EMBEDDED_METADATA: &[&str] =
    &["name", "namespace", "generateName", "labels", "annotations", "finalizers", "ownerReferences", "uid", "resourceVersion", "creationTimestamp"];

/// Removes what the schema does not declare (and nulls of fields that are
/// not `nullable`), recording the unknown fields' paths in `unknown`.
/// `root` marks the top level, where apiVersion, kind and metadata are the
/// API machinery's and not pruned here.
pub fn prune(v: &mut Value, s: &Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    if flag(s, "x-kubernetes-int-or-string") {
        return;
    }
    match v {
        Value::Object(map) => {
            let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(s, "x-kubernetes-embedded-resource");
            let has_additional = s.get("additionalProperties").is_some_and(|a| a.is_object() || a == &Value::Bool(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let keep_meta = (root || embedded) && matches!(key.as_str(), "apiVersion" | "kind" | "metadata");
                if keep_meta {
                    if embedded && key == "metadata" {
                        if let Some(Value::Object(m)) = map.get_mut("metadata") {
                            let mkeys: Vec<String> = m.keys().cloned().collect();
                            for mk in mkeys {
                                if !EMBEDDED_METADATA.contains(&mk.as_str()) {
                                    m.remove(&mk);
                                    unknown.push(format!("{}.{mk}", child(path, "metadata")));
                                }
                            }
                        }
                    }
                    continue;
                }
                let p = child(path, &key);
                match property_schema(s, &key) {
                    Some(ps) => {
                        let null_dropped = map.get(&key).is_some_and(Value::is_null) && !flag(ps, "nullable");
                        if null_dropped {
                            map.remove(&key);
                        } else if let Some(item) = map.get_mut(&key) {
                            prune(item, ps, &p, false, unknown);
                        }
                    }
                    None if preserve || has_additional => {}
                    None => {
                        map.remove(&key);
                        unknown.push(p);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, is, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the schema's `default`s where a property is missing, from the
/// outside in (a defaulted object gets its own properties' defaults too).
pub fn default(v: &mut Value, s: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (key, ps) in props {
                    if !map.contains_key(key) {
                        if let Some(d) = ps.get("default") {
                            map.insert(key.clone(), d.clone());
                        }
                    }
                }
                for (key, ps) in props {
                    if let Some(item) = map.get_mut(key) {
                        default(item, ps);
                    }
                }
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                let known = s.get("properties").and_then(Value::as_object);
                for (key, item) in map.iter_mut() {
                    if known.is_none_or(|k| !k.contains_key(key)) {
                        default(item, ap);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for item in items {
                    default(item, is);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match (want, v) {
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        (w, v) => w == type_name(v),
    }
}

/// The field path kube-openapi's validator prints for a value: the path,
/// or `body` at the top.
fn in_body(path: &str) -> String {
    if path.is_empty() {
        "body".to_string()
    } else {
        format!("{path} in body")
    }
}

/// Checks `v` against the schema `s`, adding kube's field errors.
pub fn validate(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if !flag(s, "nullable") && s.get("type").is_some() {
            let t = s["type"].as_str().unwrap_or_default();
            errs.push(FieldError::invalid(path, "null", format!("{} must be of type {t}: \"null\"", in_body(path))));
        }
        return;
    }
    if flag(s, "x-kubernetes-int-or-string") {
        if !matches!(v, Value::String(_)) && !type_matches("integer", v) {
            errs.push(FieldError::invalid(path, type_name(v), format!("{} must be of type integer-or-string: {:?}", in_body(path), type_name(v))));
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str) {
        if !type_matches(t, v) {
            errs.push(FieldError::invalid(path, type_name(v), format!("{} must be of type {t}: {:?}", in_body(path), type_name(v))));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            errs.push(FieldError::not_supported_values(path, v.clone(), allowed.clone()));
        }
    }
    match v {
        Value::String(text) => string(text, s, path, errs),
        Value::Number(n) => number(n, s, path, errs),
        Value::Array(items) => array(items, s, path, errs),
        Value::Object(map) => object(map, s, path, errs),
        Value::Bool(_) | Value::Null => {}
    }
    for (key, all) in [("allOf", true), ("anyOf", false)] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<FieldError>> = list
                .iter()
                .map(|sub| {
                    let mut e = Vec::new();
                    validate(v, sub, path, &mut e);
                    e
                })
                .collect();
            if all {
                errs.extend(results.into_iter().flatten());
            } else if !results.iter().any(Vec::is_empty) {
                errs.push(FieldError::invalid(path, v.clone(), format!("{} must validate at least one schema (anyOf)", in_body(path))));
            }
        }
    }
    if let Some(list) = s.get("oneOf").and_then(Value::as_array) {
        let passing = list
            .iter()
            .filter(|sub| {
                let mut e = Vec::new();
                validate(v, sub, path, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            errs.push(FieldError::invalid(path, v.clone(), format!("{} must validate one and only one schema (oneOf)", in_body(path))));
        }
    }
    if let Some(not) = s.get("not") {
        let mut e = Vec::new();
        validate(v, not, path, &mut e);
        if e.is_empty() {
            errs.push(FieldError::invalid(path, v.clone(), format!("{} must not validate the schema (not)", in_body(path))));
        }
    }
}

fn string(text: &str, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let chars = text.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            errs.push(FieldError::invalid(path, text, format!("{} should be at most {max} chars long", in_body(path))));
        }
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            errs.push(FieldError::invalid(path, text, format!("{} should be at least {min} chars long", in_body(path))));
        }
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
        // Patterns were compiled when the CRD was validated; one that
        // does not compile matches nothing.
        if !compiled(pattern).is_some_and(|re| re.is_match(text)) {
            errs.push(FieldError::invalid(path, text, format!("{} should match '{pattern}'", in_body(path))));
        }
    }
    if let Some(format) = s.get("format").and_then(Value::as_str) {
        if !format_ok(format, text) {
            errs.push(FieldError::invalid(path, text, format!("{} must be of type {format}: {text:?}", in_body(path))));
        }
    }
}

/// A schema's `pattern`, compiled once (a bounded cache).
fn compiled(pattern: &str) -> Option<regex::Regex> {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    static PATTERNS: OnceLock<RwLock<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(Default::default);
    if let Some(re) = patterns.read().ok().and_then(|m| m.get(pattern).cloned()) {
        return re;
    }
    let re = regex::Regex::new(pattern).ok();
    if let Ok(mut m) = patterns.write() {
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(pattern.to_string(), re.clone());
    }
    re
}

/// The string formats kube-apiserver checks for custom resources (those it
/// does not know pass, as in kube).
fn format_ok(format: &str, text: &str) -> bool {
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "byte" => crate::unbase64(text).is_some(),
        "int-or-string" => true,
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => text.split_once('/').is_some_and(|(ip, bits)| ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()),
        "uuid" => text.len() == 36 && text.chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }),
        "hostname" => crate::validation::is_dns1123_subdomain(text),
        "uri" => url::Url::parse(text).is_ok(),
        _ => true,
    }
}

/// A schema bound as kube prints it: `0`, not `0.0`.
fn bound(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn number(n: &serde_json::Number, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(x) = n.as_f64() else { return };
    let shown = Value::Number(n.clone());
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(s, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let rel = if exclusive { "greater than" } else { "greater than or equal to" };
            errs.push(FieldError::invalid(path, shown.clone(), format!("{} should be {rel} {}", in_body(path), bound(&s["minimum"]))));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(s, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let rel = if exclusive { "less than" } else { "less than or equal to" };
            errs.push(FieldError::invalid(path, shown.clone(), format!("{} should be {rel} {}", in_body(path), bound(&s["maximum"]))));
        }
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0) {
        if (x / m).fract() != 0.0 {
            errs.push(FieldError::invalid(path, shown.clone(), format!("{} should be a multiple of {}", in_body(path), bound(&s["multipleOf"]))));
        }
    }
    match s.get("format").and_then(Value::as_str) {
        Some("int32") if x < i32::MIN as f64 || x > i32::MAX as f64 => {
            errs.push(FieldError::invalid(path, shown, format!("{} must be of type int32: {:?}", in_body(path), n.to_string())));
        }
        _ => {}
    }
}

fn array(items: &[Value], s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            errs.push(FieldError::too_many(path, items.len(), max));
        }
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
        if (items.len() as u64) < min {
            errs.push(FieldError::invalid(path, Value::Array(items.to_vec()), format!("{} should have at least {min} items", in_body(path))));
        }
    }
    let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
    if flag(s, "uniqueItems") || list_type == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), item.clone()));
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> =
            s.get("x-kubernetes-list-map-keys").and_then(Value::as_array).map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let key_of = |item: &Value| -> Value {
            keys.iter().map(|k| ((*k).to_string(), item.get(*k).cloned().unwrap_or(Value::Null))).collect::<Map<String, Value>>().into()
        };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items[..i].iter().any(|o| key_of(o) == k) {
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), k));
            }
        }
    }
    if let Some(is) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate(item, is, &format!("{path}[{i}]"), errs);
        }
    }
}

fn object(map: &Map<String, Value>, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errs.push(FieldError::required(child(path, r), ""));
            }
        }
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
        if map.len() as u64 > max {
            errs.push(FieldError::too_many(path, map.len(), max));
        }
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
        if (map.len() as u64) < min {
            errs.push(FieldError::invalid(path, map.len(), format!("{} should have at least {min} properties", in_body(path))));
        }
    }
    if flag(s, "x-kubernetes-embedded-resource") {
        for f in ["apiVersion", "kind"] {
            if map.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(child(path, f), "must not be empty"));
            }
        }
    }
    for (key, item) in map {
        // The top level's metadata is checked as ObjectMeta elsewhere.
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(ps) = property_schema(s, key) {
            validate(item, ps, &child(path, key), errs);
        }
    }
}

/// Evaluates the schema's CEL rules (`x-kubernetes-validations`) over a
/// custom resource: each rule sees its node as `self` and, on updates, the
/// node's old value as `oldSelf` (transition rules, those that read
/// `oldSelf`, run only where there is an old value). A failing rule is
/// reported at its node (or its `fieldPath`) with its `message`,
/// `messageExpression`, or `failed rule: RULE`, as kube reports them.
pub fn validate_rules(v: &Value, old: Option<&Value>, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        return;
    }
    if let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            let Some(expr) = rule.get("rule").and_then(Value::as_str) else { continue };
            let transition = crate::cel::reads_old_self(expr);
            if transition && old.is_none() && rule.get("optionalOldSelf") != Some(&Value::Bool(true)) {
                continue;
            }
            let null = Value::Null;
            let vars: Vec<(&str, &Value)> = if transition { vec![("self", v), ("oldSelf", old.unwrap_or(&null))] } else { vec![("self", v)] };
            let result = crate::cel::eval_bool(expr, &vars);
            match &result {
                Ok(true) => continue,
                Err(e) if crate::cel::unsupported(e) => continue,
                _ => {}
            }
            let field = match rule.get("fieldPath").and_then(Value::as_str) {
                Some(fp) => format!("{path}{fp}"),
                None => path.to_string(),
            };
            let shown = s.get("type").and_then(Value::as_str).unwrap_or(type_name(v)).to_string();
            match result {
                Ok(true) => {}
                Ok(false) => {
                    let message = rule
                        .get("messageExpression")
                        .and_then(Value::as_str)
                        .and_then(|m| crate::cel::eval_string(m, &vars).ok())
                        .filter(|m| !m.trim().is_empty())
                        .or_else(|| rule.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| format!("failed rule: {expr}"));
                    errs.push(match rule.get("reason").and_then(Value::as_str) {
                        Some("FieldValueForbidden") => FieldError::forbidden(field, message),
                        Some("FieldValueRequired") => FieldError::required(field, message),
                        Some("FieldValueDuplicate") => FieldError { detail: message, ..FieldError::duplicate(field, shown) },
                        _ => FieldError::invalid(field, shown, message),
                    });
                }
                Err(e) => errs.push(FieldError::invalid(field, shown, format!("expression '{expr}' resulted in error: {e}"))),
            }
        }
    }
    match v {
        Value::Object(map) => {
            for (key, item) in map {
                if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(ps) = property_schema(s, key) {
                    validate_rules(item, old.and_then(|o| o.get(key)), ps, &child(path, key), errs);
                }
            }
        }
        Value::Array(items) => {
            let Some(is) = s.get("items") else { return };
            // Old items are known only where a list's items have keys.
            let keys: Vec<&str> =
                s.get("x-kubernetes-list-map-keys").and_then(Value::as_array).map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let map_list = s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") && !keys.is_empty();
            let set_list = s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
            for (i, item) in items.iter().enumerate() {
                let old_item = old.and_then(Value::as_array).and_then(|olds| {
                    if map_list {
                        olds.iter().find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k)))
                    } else if set_list {
                        olds.iter().find(|o| *o == item)
                    } else {
                        None
                    }
                });
                validate_rules(item, old_item, is, &format!("{path}[{i}]"), errs);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "port": {"x-kubernetes-int-or-string": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "opt": {"type": "string", "nullable": true}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}})
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_preserved() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "bogus": 1,
            "spec": {"size": 2, "junk": true, "extra": {"any": {"thing": 1}}, "labels": {"a": "b"}, "opt": null, "mode": null}});
        let mut unknown = Vec::new();
        prune(&mut v, &schema(), "", true, &mut unknown);
        assert_eq!(unknown, vec!["bogus".to_string(), "spec.junk".to_string()]);
        assert_eq!(v["spec"]["extra"]["any"]["thing"], 1);
        assert_eq!(v["spec"]["labels"]["a"], "b");
        assert!(v["spec"].get("opt").is_some(), "nullable nulls stay");
        assert!(v["spec"].get("mode").is_none(), "other nulls go");
        assert_eq!(v["metadata"]["name"], "a");
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let mut v = json!({"spec": {"size": 5}});
        default(&mut v, &schema());
        assert_eq!(v["spec"], json!({"size": 5, "mode": "fast"}));
    }

    #[test]
    fn validation_speaks_kube() {
        let mut float_bounds = schema();
        float_bounds["properties"]["spec"]["properties"]["size"]["minimum"] = json!(1.0);
        let mut errs = Vec::new();
        validate(&json!({"spec": {"size": 0}}), &float_bounds, "", &mut errs);
        assert_eq!(errs[0].to_string(), "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1");
        let v = json!({"spec": {"size": 0, "mode": "medium", "name": "ABCDEFG", "tags": ["a", "b", "c"], "port": true}, "status": {"ready": "yes"}});
        let mut errs = Vec::new();
        validate(&v, &schema(), "", &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text.contains(&"spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1".to_string()), "{text:?}");
        assert!(text.contains(&"spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"".to_string()), "{text:?}");
        assert!(
            text.contains(&"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should at most 5 chars long".replace("should at", "should be at")),
            "{text:?}"
        );
        assert!(text.contains(&"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'".to_string()), "{text:?}");
        assert!(text.contains(&"spec.tags: Too many: 3: must have at most 2 items".to_string()), "{text:?}");
        assert!(text.contains(&"status.ready: Invalid value: \"string\": status.ready in body must be of type boolean: \"string\"".to_string()), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("spec.port: Invalid value")), "{text:?}");
        let mut errs = Vec::new();
        validate(&json!({"spec": {}}), &schema(), "", &mut errs);
        assert_eq!(errs[0].to_string(), "spec.size: Required value");
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cel_rules_report_their_messages_and_transition_rules_need_the_old_value() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= self.max", "messageExpression": "'replicas ' + string(self.replicas) + ' over ' + string(self.max)"},
                {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"},
                {"rule": "self.replicas >= 0", "fieldPath": ".replicas", "reason": "FieldValueForbidden"}],
            "properties": {"replicas": {"type": "integer"}, "max": {"type": "integer"}, "mode": {"type": "string"}}}}});
        let mut errs = Vec::new();
        validate_rules(&json!({"spec": {"replicas": 7, "max": 5, "mode": "a"}}), None, &s, "", &mut errs);
        assert_eq!(errs.iter().map(ToString::to_string).collect::<Vec<_>>(), vec!["spec: Invalid value: \"object\": replicas 7 over 5".to_string()]);
        let mut errs = Vec::new();
        let old = json!({"spec": {"replicas": 1, "max": 5, "mode": "a"}});
        validate_rules(&json!({"spec": {"replicas": -1, "max": 5, "mode": "b"}}), Some(&old), &s, "", &mut errs);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec!["spec: Invalid value: \"object\": mode is immutable".to_string(), "spec.replicas: Forbidden: failed rule: self.replicas >= 0".to_string()]
        );
        // kube's CEL libraries this CEL lacks: the rule is skipped, not failed.
        let kube_lib = json!({"type": "object", "x-kubernetes-validations": [{"rule": "isURL(self.u)"}, {"rule": "self.?u.orValue('') != ''"}], "properties": {"u": {"type": "string"}}});
        let mut errs = Vec::new();
        validate_rules(&json!({"u": "not a url"}), None, &kube_lib, "", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }
}
