//! The Endpoints and EndpointSlice controllers (one loop): for each Service
//! with a selector, the pods it selects that have an IP become its
//! Endpoints (ready and not-ready addresses) and one EndpointSlice
//! (`kubernetes.io/service-name`), with the Service's ports resolved
//! against the pods' named container ports. Reconciled when the Service or
//! any pod it selects changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::util::{on_shutdown, retry};
use crate::Error;

const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
}

/// Runs the controller until shutdown.
pub async fn run(client: kube::Client, informers: crate::Informers, shutdown: watch::Receiver<bool>) {
    let pod_stream = informers.pods.objects();
    let pods = informers.pods.store();
    let ctx = Arc::new(Ctx { client: client.clone(), pods });
    let controller = Controller::new(Api::<Service>::all(client), watcher::Config::default());
    let services = controller.store();
    controller
        // A pod change concerns the Services in its namespace that select it.
        .watches_stream(pod_stream, move |pod: Pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            services
                .state()
                .into_iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|s| {
                    s.spec.as_ref().and_then(|sp| sp.selector.as_ref()).is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(on_shutdown(shutdown))
        .run(reconcile, retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// One Endpoints subset under construction: (ready addresses, not-ready
/// addresses, ports).
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// The container port a Service port targets on a pod (a named target
/// port resolves through the pod's container ports).
fn target_port(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == port.protocol.as_deref().unwrap_or("TCP"))
            .map(|p| p.container_port),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.clone()).filter(|s| !s.is_empty()) else { return Ok(Action::await_change()) };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    let publish_not_ready = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| p.metadata.labels.as_ref().is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v))))
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some_and(|ip| !ip.is_empty()))
        .filter(|p| !skiff_runtime::resources::pod_terminated(p))
        .collect();
    pods.sort_by_key(|p| p.metadata.name.clone());

    // Endpoints: one subset per distinct port list (pods with the same
    // resolved ports share one), ready and not-ready addresses apart.
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    let mut slice_endpoints = Vec::new();
    let mut slice_ports: Option<Vec<Value>> = None;
    for p in &pods {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        let terminating = p.metadata.deletion_timestamp.is_some();
        let ready = skiff_runtime::resources::pod_ready(p) && !terminating;
        let target = json!({"kind": "Pod", "namespace": ns, "name": p.metadata.name, "uid": p.metadata.uid});
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        // A pod whose subdomain is this Service is named by its hostname
        // (what DNS answers as HOSTNAME.SERVICE.NS.svc), as Kubernetes does.
        let hostname = p.spec.as_ref().filter(|s| s.subdomain.as_deref() == Some(name.as_str())).and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty());
        let eps: Vec<Value> = ports
            .iter()
            .filter_map(|sp| Some(json!({"name": sp.name.clone().unwrap_or_default(), "port": target_port(sp, p)?, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})))
            .collect();
        if !terminating {
            let key = eps.to_vec().iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",");
            let entry = subsets.entry(key).or_insert_with(|| (Vec::new(), Vec::new(), eps.clone()));
            let mut addr = json!({"ip": ip, "nodeName": node, "targetRef": target});
            if let Some(h) = &hostname {
                addr["hostname"] = json!(h);
            }
            if ready || publish_not_ready {
                entry.0.push(addr);
            } else {
                entry.1.push(addr);
            }
        }
        slice_ports.get_or_insert(eps);
        let mut endpoint = json!({"addresses": [ip], "conditions": {"ready": ready || publish_not_ready, "serving": skiff_runtime::resources::pod_ready(p), "terminating": terminating},
            "nodeName": node, "targetRef": target});
        if let Some(h) = hostname {
            endpoint["hostname"] = json!(h);
        }
        slice_endpoints.push(endpoint);
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ready, not_ready, ports)| {
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    let owner = json!({"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc.metadata.uid, "controller": true, "blockOwnerDeletion": true});
    let endpoints: Endpoints = serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "labels": labels}, "subsets": subsets}))?;
    let ep_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    upsert(&ep_api, &name, endpoints, |cur, new| cur.subsets == new.subsets && cur.metadata.labels == new.metadata.labels).await?;

    let mut slice_labels = labels.clone();
    slice_labels.insert("kubernetes.io/service-name".into(), name.clone());
    slice_labels.insert("endpointslice.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    let slice_ports = slice_ports.unwrap_or_else(|| {
        ports
            .iter()
            .map(|sp| json!({"name": sp.name.clone().unwrap_or_default(), "port": null, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())}))
            .collect()
    });
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": slice_labels, "ownerReferences": [owner]},
        "addressType": "IPv4", "endpoints": slice_endpoints, "ports": slice_ports}))?;
    let slice_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    upsert(&slice_api, &name, slice, |cur, new| cur.endpoints == new.endpoints && cur.ports == new.ports && cur.metadata.labels == new.metadata.labels).await?;
    Ok(Action::await_change())
}

/// Creates `obj`, or replaces the current one when `same` says it differs.
async fn upsert<K>(api: &Api<K>, name: &str, mut obj: K, same: impl Fn(&K, &K) -> bool) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        None => match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(e) if crate::util::is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Some(cur) if same(&cur, &obj) => Ok(()),
        Some(cur) => {
            obj.meta_mut().resource_version = cur.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &obj).await?;
            Ok(())
        }
    }
}
