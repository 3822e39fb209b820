//! CustomResourceDefinitions in the API server (kube's
//! apiextensions-apiserver, in process): the custom resource types served,
//! read from the watch cache's CRDs so every API server over one store
//! serves the same, their OpenAPI documents, and version conversion of
//! their objects. `status` keeps each CRD's conditions and removes its
//! objects when it is deleted.

pub(crate) mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{ApiError, ResourceType};

use crate::cache::WatchCache;

/// The CustomResourceDefinition resource type.
pub(crate) fn crd_type() -> Option<&'static ResourceType> {
    skiff_api::registry::find(skiff_api::apiextensions::GROUP, "v1", "customresourcedefinitions")
}

/// The custom resource types served at one revision of the CRDs.
#[derive(Default)]
pub(crate) struct Snapshot {
    /// The CRDs' cache revision this was made at.
    rev: i64,
    /// Every served version of every Established CRD.
    pub(crate) types: Vec<ResourceType>,
    /// OpenAPI v3 documents of the custom group versions, by path, with hashes.
    pub(crate) docs: BTreeMap<String, (String, Bytes)>,
}

/// The served custom resource types, remade when the CRDs change.
#[derive(Default)]
pub(crate) struct CustomResources {
    current: RwLock<Arc<Snapshot>>,
}

impl CustomResources {
    /// The types served now (as the watch cache has the CRDs).
    pub(crate) fn snapshot(&self, cache: &WatchCache) -> Arc<Snapshot> {
        let Some(crd_rt) = crd_type() else { return Arc::default() };
        let rev = cache.resource_revision(crd_rt);
        if let Ok(cur) = self.current.read() {
            if cur.rev == rev {
                return cur.clone();
            }
        }
        let crds = cache.list(crd_rt, &crd_rt.key_prefix(), &LabelSelector::default(), &FieldSelector::default(), 0);
        let mut types = Vec::new();
        for c in &crds.items {
            types.extend(skiff_api::apiextensions::served_types(&c.object()));
        }
        let mut by_gv: BTreeMap<(&str, &str), Vec<&ResourceType>> = BTreeMap::new();
        for t in &types {
            by_gv.entry((t.group, t.version)).or_default().push(t);
        }
        let docs = by_gv
            .into_iter()
            .filter_map(|((g, v), rts)| {
                let doc = serde_json::to_vec(&skiff_api::openapi::document(&rts)?).ok()?;
                Some((skiff_api::openapi::gv_path(g, v), (skiff_api::openapi::hash(&doc), Bytes::from(doc))))
            })
            .collect();
        let snap = Arc::new(Snapshot { rev, types, docs });
        if let Ok(mut cur) = self.current.write() {
            *cur = snap.clone();
        }
        snap
    }

    /// The custom resource type at `group/version/plural`, if served.
    pub(crate) fn find(&self, cache: &WatchCache, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.snapshot(cache).types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }
}

/// Converts custom resources between the versions of their CRD: `None`
/// changes `apiVersion`; `Webhook` sends a ConversionReview (v1) to the
/// CRD's conversion webhook. Cheap to clone (watches keep one).
#[derive(Clone)]
pub(crate) struct Converter {
    client: Arc<crate::admission::webhook::WebhookClient>,
    cache: Arc<WatchCache>,
    ca: Arc<str>,
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
        Self { client: state.webhooks.clone(), cache: state.cache.clone(), ca: Arc::from(state.join.pki.ca_cert_pem()) }
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
        let answer = self.client.review(&self.cache, &self.ca, cc, &review, CONVERSION_TIMEOUT).await.map_err(failed)?;
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
                Ok(Bytes::from(out.first().cloned().unwrap_or(Value::Null).to_string()))
            }
            None => Ok(Bytes::from(obj.to_string())),
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
        return Ok(Bytes::from(obj.to_string()));
    }
    Converter::of(state).stored(rt, obj).await
}
