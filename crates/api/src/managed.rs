//! Field management: `metadata.managedFields` (the `FieldsV1` format) and
//! server-side apply with ownership conflicts, following Kubernetes'
//! structured-merge-diff semantics for the shapes built-in types use
//! (maps, lists keyed by a merge key, sets of scalars, atomic lists).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::patch::{merge_key, strategic_merge};

/// A path to one owned field: encoded `FieldsV1` elements such as
/// `f:spec`, `k:{"name":"web"}`, `v:"x"` and `.` (the list item itself).
pub type FieldPath = Vec<String>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the fields were written in.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: String,
    /// The subresource written through, if any.
    pub subresource: String,
    /// The fields it owns.
    pub fields: FieldSet,
}

/// One ownership conflict found by an apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The manager that owns the field.
    pub manager: String,
    /// Its API version.
    pub api_version: String,
    /// The field, rendered like `.spec.replicas`.
    pub field: String,
}

/// Metadata fields that are never owned.
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// The leaf fields `v` sets.
pub fn fields_of(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        for (k, child) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    if let Some(meta) = child.as_object() {
                        for (mk, mv) in meta.iter().filter(|(k, _)| !UNOWNED_META.contains(&k.as_str())) {
                            walk(mk, mv, &mut vec!["f:metadata".into()], &mut out);
                        }
                    }
                }
                _ => walk(k, child, &mut Vec::new(), &mut out),
            }
        }
    }
    out
}

fn walk(field: &str, v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    prefix.push(format!("f:{field}"));
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                walk(k, c, prefix, out);
            }
        }
        Value::Array(items) if field == "finalizers" => {
            for i in items {
                let mut p = prefix.clone();
                p.push(format!("v:{i}"));
                out.insert(p);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => match merge_key(field, items) {
            Some(mk) => {
                for item in items {
                    let key = item.get(mk).cloned().unwrap_or(Value::Null);
                    let mut kp = prefix.clone();
                    kp.push(format!("k:{}", json!({ mk: key })));
                    let mut dot = kp.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    if let Some(im) = item.as_object() {
                        for (k, c) in im {
                            walk(k, c, &mut kp, out);
                        }
                    }
                }
            }
            None => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
    prefix.pop();
}

fn find_item<'a>(items: &'a [Value], key: &str) -> Option<(usize, &'a Value)> {
    let want: Map<String, Value> = serde_json::from_str(key).ok()?;
    items.iter().enumerate().find(|(_, i)| want.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// The value at `path` in `v`, if set.
pub fn get_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            cur = find_item(cur.as_array()?, k)?.1;
        } else if let Some(val) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(val).ok()?;
            return cur.as_array()?.iter().find(|x| **x == want);
        } else if el == "." {
            return Some(cur);
        }
    }
    Some(cur)
}

/// Removes the field at `path` from `v`.
pub fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let (target, last) = if last == "." {
        match parents.split_last() {
            Some((item, grand)) => (grand, item),
            None => return,
        }
    } else {
        (parents, last)
    };
    let mut cur = v;
    for el in target {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let idx = cur.as_array().and_then(|a| find_item(a, k)).map(|(i, _)| i);
            match idx {
                Some(i) => cur.get_mut(i),
                None => None,
            }
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let idx = cur.as_array().and_then(|a| find_item(a, k)).map(|(i, _)| i);
        if let (Some(i), Some(a)) = (idx, cur.as_array_mut()) {
            a.remove(i);
        }
    } else if let Some(val) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(val), cur.as_array_mut()) {
            a.retain(|x| *x != want);
        }
    }
}

/// Encodes a field set as a `FieldsV1` object.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let entry = cur.entry(el.clone()).or_insert_with(|| json!({}));
            match entry.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

/// Decodes a `FieldsV1` object into a field set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    rec(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// Reads `metadata.managedFields`.
pub fn read_entries(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes `metadata.managedFields`, dropping entries that own nothing.
pub fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Renders a field path the way apply conflicts name fields
/// (`.spec.containers[name="web"].image`).
pub fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

fn entry_mut<'a>(entries: &'a mut Vec<ManagedEntry>, manager: &str, operation: &str, api_version: &str, subresource: &str, now: &str) -> &'a mut ManagedEntry {
    let pos = entries.iter().position(|e| e.manager == manager && e.operation == operation && e.subresource == subresource);
    let i = match pos {
        Some(i) => i,
        None => {
            entries.push(ManagedEntry {
                manager: manager.into(),
                operation: operation.into(),
                api_version: api_version.into(),
                time: now.into(),
                subresource: subresource.into(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let e = &mut entries[i];
    e.time = now.into();
    e.api_version = api_version.into();
    e
}

/// Records that `manager` wrote `new` over `old` with a non-apply write:
/// it now owns every field it changed, and nobody owns removed fields.
pub fn track_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str, subresource: &str, now: &str) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_fields = fields_of(new);
    let changed: FieldSet = new_fields.iter().filter(|p| old.is_none_or(|o| get_at(o, p) != get_at(new, p))).cloned().collect();
    for e in entries.iter_mut() {
        e.fields.retain(|p| new_fields.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let e = entry_mut(&mut entries, manager, "Update", api_version, subresource, now);
        e.fields.extend(changed);
    }
    write_entries(new, &entries);
}

/// Server-side apply of `applied` by `manager` over `current` (`None` when
/// the object does not exist yet). Returns the merged object with its
/// managed fields, or the conflicts when `force` is false.
pub fn apply(current: Option<&Value>, applied: &Value, manager: &str, api_version: &str, force: bool, now: &str) -> Result<Value, Vec<Conflict>> {
    let mut entries = current.map(read_entries).unwrap_or_default();
    let applied_fields = fields_of(applied);
    let empty = json!({});
    let cur = current.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    let mut forced: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in e.fields.intersection(&applied_fields) {
            if p.last().is_some_and(|l| l == ".") {
                continue;
            }
            if get_at(cur, p) != get_at(applied, p) {
                conflicts.push(Conflict { manager: e.manager.clone(), api_version: e.api_version.clone(), field: render_path(p) });
                forced.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, p) in forced {
        entries[i].fields.remove(&p);
    }
    let mut new = cur.clone();
    // Fields this manager applied before but no longer does are removed,
    // unless someone else also owns them.
    let previous: FieldSet = entries.iter().find(|e| e.manager == manager && e.operation == "Apply").map(|e| e.fields.clone()).unwrap_or_default();
    let mut dropped: Vec<&FieldPath> = previous
        .difference(&applied_fields)
        .filter(|p| !entries.iter().any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(*p)))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut new, p);
    }
    let mut to_merge = applied.clone();
    if let Some(m) = to_merge.as_object_mut() {
        m.remove("status");
    }
    if strategic_merge(&mut new, &to_merge).is_err() {
        new = to_merge;
    }
    let e = entry_mut(&mut entries, manager, "Apply", api_version, "", now);
    e.fields = applied_fields;
    write_entries(&mut new, &entries);
    Ok(new)
}

/// The message Kubernetes gives a failed apply.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {:?} using {}: {}", c.manager, c.api_version, c.field);
    }
    let mut s = format!("Apply failed with {} conflicts: ", conflicts.len());
    let mut last_mgr = None;
    for c in conflicts {
        if last_mgr != Some((&c.manager, &c.api_version)) {
            s.push_str(&format!("conflicts with {:?} using {}:", c.manager, c.api_version));
            last_mgr = Some((&c.manager, &c.api_version));
        }
        s.push_str(&format!("\n- {}", c.field));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = fields_of(&deploy(1, "x"));
        let v1 = to_fields_v1(&set);
        assert!(v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"].get(".").is_some());
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_conflicts_then_forces() {
        let a = apply(None, &deploy(1, "x"), "alice", "apps/v1", false, "t").expect("create");
        // Same manager, new value: no conflict.
        let a = apply(Some(&a), &deploy(2, "x"), "alice", "apps/v1", false, "t").expect("reapply");
        assert_eq!(a["spec"]["replicas"], 2);
        // Another manager changing the same field conflicts.
        let err = apply(Some(&a), &deploy(3, "x"), "bob", "apps/v1", false, "t").unwrap_err();
        assert_eq!(conflict_message(&err), "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas");
        // Agreeing on a value is shared ownership, not a conflict.
        let shared = apply(Some(&a), &deploy(2, "x"), "bob", "apps/v1", false, "t").expect("shared");
        assert_eq!(read_entries(&shared).len(), 2);
        let forced = apply(Some(&a), &deploy(3, "x"), "bob", "apps/v1", true, "t").expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let alice = read_entries(&forced).into_iter().find(|e| e.manager == "alice").expect("alice");
        assert!(!alice.fields.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped() {
        let a = apply(None, &deploy(1, "x"), "alice", "apps/v1", false, "t").expect("create");
        let mut less = deploy(1, "x");
        less["metadata"].as_object_mut().map(|m| m.remove("labels"));
        let b = apply(Some(&a), &less, "alice", "apps/v1", false, "t").expect("apply");
        assert!(b.pointer("/metadata/labels/app").is_none());
    }

    #[test]
    fn updates_take_ownership() {
        let a = apply(None, &deploy(1, "x"), "alice", "apps/v1", false, "t").expect("create");
        let mut b = a.clone();
        b["spec"]["replicas"] = json!(5);
        track_update(Some(&a), &mut b, "kubectl-scale", "apps/v1", "", "t");
        let err = apply(Some(&b), &deploy(1, "x"), "alice", "apps/v1", false, "t").unwrap_err();
        assert_eq!(err[0].manager, "kubectl-scale");
    }
}
