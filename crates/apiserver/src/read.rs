//! Reads: get from the store, lists from the watch cache.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{table, ApiError, ResourceType};
use skiff_store::{ListOptions, StoreError};

use crate::handler::State;
use crate::respond::{bytes_response, json_response, store_err, with_rv, Resp};

/// Whether the client asked for a `Table` (kubectl get).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

/// Whether the client asked for `PartialObjectMetadata` (metadata-only
/// informers, like the garbage collector's).
pub(crate) fn wants_metadata(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=PartialObjectMetadata"))
}

/// What a Table's rows carry of their objects: the `includeObject` query
/// parameter (`None`, `Metadata`, the default, or `Object`, which kubectl
/// asks for with `--sort-by` and custom columns).
pub(crate) fn include_object(q: &HashMap<String, String>) -> Result<table::IncludeObject, ApiError> {
    match q.get("includeObject").map(String::as_str).unwrap_or("") {
        "" | "Metadata" => Ok(table::IncludeObject::Metadata),
        "None" => Ok(table::IncludeObject::None),
        "Object" => Ok(table::IncludeObject::Object),
        other => Err(ApiError::bad_request(format!("includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""))),
    }
}

/// A Table of objects of one type: the built-in columns of its kind, or a
/// CRD's printer columns.
pub(crate) fn table_of(rt: &ResourceType, objects: &[&Value], include: table::IncludeObject, rv: &str, continue_token: Option<&str>) -> Value {
    match (&rt.custom, rt.conversion) {
        (Some(c), _) => skiff_api::apiextensions::table(&c.columns, objects, include, rv, continue_token),
        // Columns are computed from the stored version's fields.
        (None, Some(c)) => {
            let stored: Vec<Value> = objects.iter().map(|o| (c.to_storage)((*o).clone())).collect();
            let mut t = table::table(rt.kind, &stored.iter().collect::<Vec<_>>(), include, rv, continue_token, chrono::Utc::now());
            // Rows carry the object as served.
            if include == table::IncludeObject::Object {
                for (row, o) in t["rows"].as_array_mut().into_iter().flatten().zip(objects) {
                    row["object"] = (*o).clone();
                }
            }
            t
        }
        (None, None) => table::table(rt.kind, objects, include, rv, continue_token, chrono::Utc::now()),
    }
}

pub(crate) async fn get(state: &State, rt: &ResourceType, ns: Option<&str>, name: &str, q: &HashMap<String, String>, accept: &str) -> Result<Resp, ApiError> {
    let kv = state.store.get(&rt.key(ns, name)).await.map_err(|e| store_err(rt, name, e))?.ok_or_else(|| ApiError::not_found(rt, name))?;
    let obj = crate::convert::served(state, rt, with_rv(&kv.value, kv.mod_revision)?).await?;
    if wants_table(accept) {
        return Ok(json_response(200, &table_of(rt, &[&obj], include_object(q)?, &kv.mod_revision.to_string(), None)));
    }
    if wants_metadata(accept) {
        return Ok(json_response(200, &table::partial_metadata(&obj)));
    }
    Ok(json_response(200, &obj))
}

/// Serves a list. Lists come from the watch cache: with no
/// `resourceVersion` after the cache has caught up with the store (a
/// consistent read), with `0` from whatever it holds, with `N` once it holds
/// at least `N`. Continuations and `resourceVersionMatch=Exact` read the
/// store at the list's revision, so every page is of one snapshot.
pub(crate) async fn list(state: &State, rt: &ResourceType, prefix: String, q: &HashMap<String, String>, accept: &str) -> Result<Resp, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse_for(q.get("fieldSelector").map_or("", String::as_str), rt).map_err(ApiError::bad_request)?;
    let limit: usize = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?.max(0) as usize,
        None => 0,
    };
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let rvm = q.get("resourceVersionMatch").map(String::as_str).unwrap_or("");
    let rv_num = if rv.is_empty() { None } else { Some(rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?) };
    let page = if let Some(c) = q.get("continue").filter(|c| !c.is_empty()) {
        let (rev, key) = c.split_once(':').ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        let rev = rev.parse::<i64>().map_err(|_| ApiError::bad_request("invalid continue token"))?;
        if !key.starts_with(&prefix) {
            return Err(ApiError::bad_request("invalid continue token"));
        }
        from_store(state, rt, &prefix, rev, Some(key.to_string()), &labels, &fields, limit).await?
    } else {
        match (rvm, rv_num) {
            ("Exact", Some(rev)) if rev > 0 => from_store(state, rt, &prefix, rev, None, &labels, &fields, limit).await?,
            ("Exact", _) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".to_string(),
                ))
            }
            ("" | "NotOlderThan", _) => {
                let at_least = match rv_num {
                    None => state.cache.store_revision().await?,
                    Some(n) => n,
                };
                match state.cache.wait_for(at_least).await {
                    Ok(()) => {
                        let snap = state.cache.list(rt, &prefix, &labels, &fields, limit);
                        let next = if snap.more { snap.items.last().map(|o| format!("{}:{}", snap.rev, o.key)) } else { None };
                        // Protobuf lists are made of the cache's encoded
                        // messages, without JSON in between.
                        if skiff_api::protobuf::accepts(accept) && !wants_table(accept) && !wants_metadata(accept) {
                            let messages: Option<Vec<(&str, &str, &Bytes)>> = snap.items.iter().map(|o| o.protobuf_message()).collect();
                            if let Some(messages) = messages {
                                let body = skiff_api::protobuf::encode_list(
                                    &rt.api_version(),
                                    &format!("{}List", rt.kind),
                                    &snap.rev.to_string(),
                                    next.as_deref(),
                                    messages.iter().map(|(_, _, m)| m.as_ref()),
                                );
                                return Ok(crate::respond::protobuf_response(200, Bytes::from(body)));
                            }
                        }
                        let items = crate::convert::served_bytes(state, rt, snap.items.iter().map(|o| o.json.clone()).collect()).await?;
                        Page { rev: snap.rev, items, next }
                    }
                    // A consistent read the cache cannot serve in time is
                    // served by the store, as kube-apiserver falls back to etcd.
                    Err(_) if rv_num.is_none() => from_store(state, rt, &prefix, at_least, None, &labels, &fields, limit).await?,
                    Err(e) => return Err(crate::watch::cache_error(e)),
                }
            }
            (other, _) => return Err(ApiError::bad_request(format!("invalid resourceVersionMatch: {other:?}"))),
        }
    };
    if wants_table(accept) {
        let objs: Vec<Value> = page.items.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect();
        let refs: Vec<&Value> = objs.iter().collect();
        return Ok(json_response(200, &table_of(rt, &refs, include_object(q)?, &page.rev.to_string(), page.next.as_deref())));
    }
    // Items are spliced in as stored JSON, not re-serialized.
    let mut meta = json!({"resourceVersion": page.rev.to_string()});
    if let Some(n) = &page.next {
        meta["continue"] = json!(n);
    }
    if wants_metadata(accept) {
        let items: Vec<Value> = page.items.iter().filter_map(|b| serde_json::from_slice::<Value>(b).ok()).map(|o| table::partial_metadata(&o)).collect();
        return Ok(json_response(200, &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items})));
    }
    let mut out = Vec::with_capacity(page.items.iter().map(|b| b.len() + 1).sum::<usize>() + 128);
    out.extend_from_slice(format!("{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[", rt.kind, rt.api_version(), meta).as_bytes());
    for (i, b) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.extend_from_slice(b"]}");
    Ok(bytes_response(200, Bytes::from(out)))
}

/// One page of a list: JSON objects, the revision, the continue token.
struct Page {
    rev: i64,
    items: Vec<Bytes>,
    next: Option<String>,
}

/// A page read from the store at `rev`, filtered by the selectors.
#[allow(clippy::too_many_arguments)]
async fn from_store(
    state: &State,
    rt: &ResourceType,
    prefix: &str,
    rev: i64,
    mut start_after: Option<String>,
    labels: &LabelSelector,
    fields: &FieldSelector,
    limit: usize,
) -> Result<Page, ApiError> {
    let mut items = Vec::new();
    let mut next = None;
    loop {
        let page = state.store.list(prefix, ListOptions { revision: Some(rev), start_after: start_after.clone(), limit }).await.map_err(|e| match e {
            StoreError::Compacted { .. } => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ),
            e => store_err(rt, "", e),
        })?;
        for kv in &page.items {
            let obj = with_rv(&kv.value, kv.mod_revision)?;
            if labels.matches(&obj) && fields.matches(&obj) {
                items.push(Bytes::from(serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?));
            }
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        if limit > 0 && items.len() >= limit {
            next = start_after.as_ref().map(|k| format!("{rev}:{k}"));
            break;
        }
    }
    let items = crate::convert::served_bytes(state, rt, items).await?;
    Ok(Page { rev, items, next })
}
