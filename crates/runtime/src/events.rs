//! Recording core/v1 Events, as client-go's event recorder does: one Event
//! per occurrence, named after the object, written without blocking the
//! caller (a failed event write is logged, never fatal).

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, PostParams};
use kube::Resource;

/// Writes Events on behalf of one component.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: String,
    /// Events already written, by (object uid, type, reason, message): a
    /// repeat bumps `count` and `lastTimestamp` of the first one, as
    /// client-go's event correlator does, instead of piling up objects.
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Written>>>,
}

/// An event already written: (name, namespace, count).
type Written = (String, String, i32);

/// Distinct events remembered for aggregation before the memory is reset.
const REMEMBERED: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something may be wrong.
    Warning,
}

impl Recorder {
    /// A recorder for `component` (e.g. `default-scheduler`).
    pub fn new(client: kube::Client, component: &str) -> Self {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Self { client, component: component.into(), host, seen: Default::default() }
    }

    /// Records an event about `obj`, in the background.
    pub fn record<K: Resource<DynamicType = ()>>(&self, obj: &K, ty: EventType, reason: &str, message: &str) {
        let meta = obj.meta();
        let reference = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..Default::default()
        };
        self.record_ref(reference, ty, reason, message);
    }

    /// Records an event about the object `reference` names, in the background.
    pub fn record_ref(&self, reference: ObjectReference, ty: EventType, reason: &str, message: &str) {
        let ns = reference.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", reference.name.clone().unwrap_or_default(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: kube::api::ObjectMeta { name: Some(name), namespace: Some(ns.clone()), ..Default::default() },
            involved_object: reference,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(match ty {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            source: Some(k8s_openapi::api::core::v1::EventSource { component: Some(self.component.clone()), host: None }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let key = format!("{}\u{0}{:?}\u{0}{reason}\u{0}{message}", event.involved_object.uid.clone().unwrap_or_default(), event.type_);
        let repeat = self.seen.lock().ok().and_then(|mut seen| {
            if let Some((name, ns, count)) = seen.get_mut(&key) {
                *count += 1;
                return Some((name.clone(), ns.clone(), *count));
            }
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            seen.insert(key.clone(), (event.metadata.name.clone().unwrap_or_default(), ns.clone(), 1));
            None
        });
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            let result = match repeat {
                Some((name, _, count)) => {
                    let patch = serde_json::json!({"count": count, "lastTimestamp": crate::now()});
                    api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.map(|_| ())
                }
                None => api.create(&PostParams::default(), &event).await.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "event not recorded");
            }
        });
    }
}
