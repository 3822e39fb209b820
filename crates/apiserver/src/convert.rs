//! Version conversion of objects served in another version than they are
//! stored in: custom resources (their CRD's `None` strategy, or a
//! ConversionReview to its webhook) and built-in types with a conversion
//! in the registry (`autoscaling/v1` HPAs). Reads, lists and watches
//! convert to the served version, writes to the stored one.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::{ApiError, ResourceType};

use crate::cache::WatchCache;

/// Converts custom resources between the versions of their CRD: `None`
/// changes `apiVersion`; `Webhook` sends a ConversionReview (v1) to the
/// CRD's conversion webhook. Cheap to clone (watches keep one).
#[derive(Clone)]
pub(crate) struct Converter {
    client: Arc<crate::admission::webhook::WebhookClient>,
    cache: Arc<WatchCache>,
}

/// Whether objects of this type may be stored in another version than
/// the one served: custom resources, and built-in types with a conversion.
pub(crate) fn converts(rt: &ResourceType) -> bool {
    rt.custom.is_some() || rt.conversion.is_some()
}

/// How long a conversion webhook may take.
const CONVERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Converter {
    /// The converter of this server.
    pub(crate) fn of(state: &crate::handler::State) -> Self {
        Self { client: state.webhooks.clone(), cache: state.cache.clone() }
    }

    /// `objs` in `to` (an apiVersion of `rt`'s group); those already in it
    /// are left as they are.
    pub(crate) async fn convert(&self, rt: &ResourceType, mut objs: Vec<Value>, to: &str) -> Result<Vec<Value>, ApiError> {
        let need: Vec<usize> = (0..objs.len()).filter(|i| objs[*i].get("apiVersion").and_then(Value::as_str) != Some(to)).collect();
        if need.is_empty() {
            return Ok(objs);
        }
        if let Some(c) = rt.conversion {
            let f = if to == rt.api_version() { c.to_served } else { c.to_storage };
            for i in need {
                objs[i] = f(std::mem::take(&mut objs[i]));
            }
            return Ok(objs);
        }
        let Some(custom) = &rt.custom else { return Ok(objs) };
        let Some(cc) = custom.conversion.as_ref().and_then(|c| c.pointer("/webhook/clientConfig")) else {
            for i in need {
                objs[i]["apiVersion"] = json!(to);
            }
            return Ok(objs);
        };
        let gvk = format!("{to}, Kind={}", rt.kind);
        let failed = |why: String| ApiError::internal(format!("conversion webhook for {gvk} failed: {why}"));
        let uid = uuid::Uuid::new_v4().to_string();
        let sent: Vec<Value> = need.iter().map(|i| objs[*i].clone()).collect();
        let review = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": uid, "desiredAPIVersion": to, "objects": sent}});
        let answer = self.client.review(&self.cache, cc, &review, CONVERSION_TIMEOUT).await.map_err(failed)?;
        let response = &answer["response"];
        if response["uid"].as_str() != Some(uid.as_str()) {
            return Err(failed(format!("expected response.uid={uid:?}, got {:?}", response["uid"].as_str().unwrap_or(""))));
        }
        if response.pointer("/result/status").and_then(Value::as_str) != Some("Success") {
            let why = response.pointer("/result/message").and_then(Value::as_str).unwrap_or("the webhook did not say Success");
            return Err(failed(why.to_string()));
        }
        let converted = response["convertedObjects"].as_array().cloned().unwrap_or_default();
        if converted.len() != need.len() {
            return Err(failed(format!("expected {} converted objects, got {}", need.len(), converted.len())));
        }
        for (i, mut c) in need.into_iter().zip(converted) {
            if c.get("apiVersion").and_then(Value::as_str) != Some(to) {
                return Err(failed(format!("invalid ConversionReview: converted object has apiVersion {:?}, want {to:?}", c["apiVersion"])));
            }
            // A webhook may change labels and annotations only.
            let mut meta = objs[i]["metadata"].clone();
            for f in ["labels", "annotations"] {
                match c.pointer(&format!("/metadata/{f}")) {
                    Some(v) => meta[f] = v.clone(),
                    None => {
                        if let Some(m) = meta.as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            c["metadata"] = meta;
            objs[i] = c;
        }
        Ok(objs)
    }

    /// An object as `rt`'s version shows it.
    pub(crate) async fn served(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        Ok(self.convert(rt, vec![obj], &rt.api_version()).await?.pop().unwrap_or(Value::Null))
    }

    /// Stored JSON of objects (lists, watches) in `rt`'s version.
    pub(crate) async fn served_bytes(&self, rt: &ResourceType, items: Vec<Bytes>) -> Result<Vec<Bytes>, ApiError> {
        if !converts(rt) {
            return Ok(items);
        }
        // Stored JSON is compact serde_json: an object already in the
        // served version says so in exactly these bytes.
        let marker = format!("\"apiVersion\":\"{}\"", rt.api_version());
        let in_version = |b: &Bytes| b.windows(marker.len()).any(|w| w == marker.as_bytes());
        if items.iter().all(in_version) {
            return Ok(items);
        }
        let objs: Vec<Value> = items.iter().map(|b| serde_json::from_slice(b).unwrap_or(Value::Null)).collect();
        let converted = self.convert(rt, objs, &rt.api_version()).await?;
        Ok(converted.iter().map(|v| Bytes::from(v.to_string())).collect())
    }

    /// An object's JSON as it is stored: in the storage version.
    pub(crate) async fn stored(&self, rt: &ResourceType, obj: &Value) -> Result<Bytes, ApiError> {
        let storage = rt.custom.as_ref().map(|c| c.storage_version.as_str()).or(rt.conversion.map(|c| c.storage_version));
        match storage.filter(|v| *v != rt.version) {
            Some(v) => {
                let to = format!("{}/{v}", rt.group);
                let out = self.convert(rt, vec![obj.clone()], &to).await?;
                storable(rt, out.first().unwrap_or(&Value::Null))
            }
            None => storable(rt, obj),
        }
    }
}

/// An object as `rt`'s version shows it (custom resources are converted).
pub(crate) async fn served(state: &crate::handler::State, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
    if !converts(rt) {
        return Ok(obj);
    }
    Converter::of(state).served(rt, obj).await
}

/// Stored JSON of objects in `rt`'s version.
pub(crate) async fn served_bytes(state: &crate::handler::State, rt: &ResourceType, items: Vec<Bytes>) -> Result<Vec<Bytes>, ApiError> {
    if !converts(rt) {
        return Ok(items);
    }
    Converter::of(state).served_bytes(rt, items).await
}

/// An object's JSON as it is stored.
pub(crate) async fn stored(state: &crate::handler::State, rt: &ResourceType, obj: &Value) -> Result<Bytes, ApiError> {
    if !converts(rt) {
        return storable(rt, obj);
    }
    Converter::of(state).stored(rt, obj).await
}

/// The bytes an object is stored as, if it can be read back: every reader
/// decodes stored objects with serde_json, which stops at 128 levels, and
/// the managed fields the server adds mirror the object's fields a few
/// levels further down. So a deep custom resource, within the limit as it
/// came, can be past it as it would be stored (it was stored, and then
/// every read of it failed).
fn storable(rt: &ResourceType, obj: &Value) -> Result<Bytes, ApiError> {
    let depth = skiff_api::patch::nesting(obj);
    if depth > skiff_api::patch::MAX_NESTING {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: the object, with its managedFields, nests {depth} levels deep, past the limit of {}",
                rt.qualified(),
                skiff_api::patch::MAX_NESTING
            ),
        ));
    }
    Ok(Bytes::from(obj.to_string()))
}
