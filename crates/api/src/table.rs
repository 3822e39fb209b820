//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get`
//! asks for, with the columns Kubernetes' printers give each kind.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Kubernetes' `duration.HumanDuration`: `45s`, `3m12s`, `5h`, `3d4h`, `2y`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let d = h / 24;
        if d % 365 == 0 {
            format!("{}y", d / 365)
        } else {
            format!("{}y{}d", d / 365, d % 365)
        }
    } else {
        format!("{}y", h / 24 / 365)
    }
}

fn age(ts: Option<&Value>, now: DateTime<Utc>) -> String {
    ts.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| human_duration((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

struct Col(&'static str, &'static str, u8);

fn columns(kind: &str) -> Vec<Col> {
    let c = |n, t, p| Col(n, t, p);
    match kind {
        "Pod" => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Status", "string", 0),
            c("Restarts", "string", 0),
            c("Age", "string", 0),
            c("IP", "string", 1),
            c("Node", "string", 1),
            c("Nominated Node", "string", 1),
            c("Readiness Gates", "string", 1),
        ],
        "Deployment" => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            c("Name", "string", 0),
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "StatefulSet" => vec![c("Name", "string", 0), c("Ready", "string", 0), c("Age", "string", 0), c("Containers", "string", 1), c("Images", "string", 1)],
        "DaemonSet" => vec![
            c("Name", "string", 0),
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Node Selector", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "Service" => vec![
            c("Name", "string", 0),
            c("Type", "string", 0),
            c("Cluster-IP", "string", 0),
            c("External-IP", "string", 0),
            c("Port(s)", "string", 0),
            c("Age", "string", 0),
            c("Selector", "string", 1),
        ],
        "Namespace" => vec![c("Name", "string", 0), c("Status", "string", 0), c("Age", "string", 0)],
        "Node" => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Roles", "string", 0),
            c("Age", "string", 0),
            c("Version", "string", 0),
            c("Internal-IP", "string", 1),
            c("External-IP", "string", 1),
            c("OS-Image", "string", 1),
            c("Kernel-Version", "string", 1),
            c("Container-Runtime", "string", 1),
        ],
        "ConfigMap" => vec![c("Name", "string", 0), c("Data", "string", 0), c("Age", "string", 0)],
        "Secret" => vec![c("Name", "string", 0), c("Type", "string", 0), c("Data", "string", 0), c("Age", "string", 0)],
        "Endpoints" => vec![c("Name", "string", 0), c("Endpoints", "string", 0), c("Age", "string", 0)],
        "Event" => vec![c("Last Seen", "string", 0), c("Type", "string", 0), c("Reason", "string", 0), c("Object", "string", 0), c("Message", "string", 0)],
        "Job" => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Completions", "string", 0),
            c("Duration", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "CronJob" => vec![
            c("Name", "string", 0),
            c("Schedule", "string", 0),
            c("Timezone", "string", 0),
            c("Suspend", "boolean", 0),
            c("Active", "integer", 0),
            c("Last Schedule", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "Lease" => vec![c("Name", "string", 0), c("Holder", "string", 0), c("Age", "string", 0)],
        "ServiceAccount" => vec![c("Name", "string", 0), c("Secrets", "string", 0), c("Age", "string", 0)],
        "PersistentVolumeClaim" => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Volume", "string", 0),
            c("Capacity", "string", 0),
            c("Access Modes", "string", 0),
            c("StorageClass", "string", 0),
            c("VolumeAttributesClass", "string", 0),
            c("Age", "string", 0),
            c("VolumeMode", "string", 1),
        ],
        "PersistentVolume" => vec![
            c("Name", "string", 0),
            c("Capacity", "string", 0),
            c("Access Modes", "string", 0),
            c("Reclaim Policy", "string", 0),
            c("Status", "string", 0),
            c("Claim", "string", 0),
            c("StorageClass", "string", 0),
            c("VolumeAttributesClass", "string", 0),
            c("Reason", "string", 0),
            c("Age", "string", 0),
            c("VolumeMode", "string", 1),
        ],
        "StorageClass" => vec![
            c("Name", "string", 0),
            c("Provisioner", "string", 0),
            c("ReclaimPolicy", "string", 0),
            c("VolumeBindingMode", "string", 0),
            c("AllowVolumeExpansion", "string", 0),
            c("Age", "string", 0),
        ],
        "ComponentStatus" => vec![c("Name", "string", 0), c("Status", "string", 0), c("Message", "string", 0), c("Error", "string", 0)],
        "Ingress" => vec![c("Name", "string", 0), c("Class", "string", 0), c("Hosts", "string", 0), c("Address", "string", 0), c("Ports", "string", 0), c("Age", "string", 0)],
        "IngressClass" => vec![c("Name", "string", 0), c("Controller", "string", 0), c("Parameters", "string", 0), c("Age", "string", 0)],
        "NetworkPolicy" => vec![c("Name", "string", 0), c("Pod-Selector", "string", 0), c("Age", "string", 0)],
        "RuntimeClass" => vec![c("Name", "string", 0), c("Handler", "string", 0), c("Age", "string", 0)],
        "HorizontalPodAutoscaler" => vec![
            c("Name", "string", 0),
            c("Reference", "string", 0),
            c("Targets", "string", 0),
            c("MinPods", "string", 0),
            c("MaxPods", "integer", 0),
            c("Replicas", "integer", 0),
            c("Age", "string", 0),
        ],
        "CSIDriver" => vec![
            c("Name", "string", 0),
            c("AttachRequired", "boolean", 0),
            c("PodInfoOnMount", "boolean", 0),
            c("StorageCapacity", "boolean", 0),
            c("TokenRequests", "string", 0),
            c("RequiresRepublish", "boolean", 0),
            c("Modes", "string", 0),
            c("Age", "string", 0),
        ],
        "CSINode" => vec![c("Name", "string", 0), c("Drivers", "integer", 0), c("Age", "string", 0)],
        "VolumeAttachment" => vec![c("Name", "string", 0), c("Attacher", "string", 0), c("PV", "string", 0), c("Node", "string", 0), c("Attached", "boolean", 0), c("Age", "string", 0)],
        "PriorityClass" => {
            vec![c("Name", "string", 0), c("Value", "integer", 0), c("Global-Default", "boolean", 0), c("Age", "string", 0), c("PreemptionPolicy", "string", 0)]
        }
        "PodTemplate" => vec![c("Template", "string", 0), c("Containers", "string", 0), c("Images", "string", 0), c("Pod Labels", "string", 0)],
        "PodDisruptionBudget" => vec![
            c("Name", "string", 0),
            c("Min Available", "string", 0),
            c("Max Unavailable", "string", 0),
            c("Allowed Disruptions", "integer", 0),
            c("Age", "string", 0),
        ],
        "Role" | "ClusterRole" => vec![c("Name", "string", 0), c("Created At", "date", 0)],
        "CertificateSigningRequest" => vec![
            c("Name", "string", 0),
            c("Age", "string", 0),
            c("SignerName", "string", 0),
            c("Requestor", "string", 0),
            c("RequestedDuration", "string", 0),
            c("Condition", "string", 0),
        ],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            c("Name", "string", 0),
            c("Role", "string", 0),
            c("Age", "string", 0),
            c("Users", "string", 1),
            c("Groups", "string", 1),
            c("ServiceAccounts", "string", 1),
        ],
        "CustomResourceDefinition" => vec![c("Name", "string", 0), c("Created At", "date", 0)],
        "APIService" => vec![c("Name", "string", 0), c("Service", "string", 0), c("Available", "string", 0), c("Age", "string", 0)],
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => vec![c("Name", "string", 0), c("Webhooks", "integer", 0), c("Age", "string", 0)],
        "ValidatingAdmissionPolicy" => vec![c("Name", "string", 0), c("Validations", "integer", 0), c("ParamKind", "string", 0), c("Age", "string", 0)],
        "ValidatingAdmissionPolicyBinding" => vec![c("Name", "string", 0), c("PolicyName", "string", 0), c("ParamRef", "string", 0), c("Age", "string", 0)],
        _ => vec![c("Name", "string", 0), c("Age", "string", 0)],
    }
}

/// Access modes as `kubectl get` abbreviates them (`RWO,ROX`).
fn access_modes(modes: Option<&Value>) -> String {
    let short: Vec<String> = modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| match m.as_str() {
            Some("ReadWriteOnce") => "RWO".to_string(),
            Some("ReadOnlyMany") => "ROX".to_string(),
            Some("ReadWriteMany") => "RWX".to_string(),
            Some("ReadWriteOncePod") => "RWOP".to_string(),
            _ => s(Some(m)),
        })
        .collect();
    short.join(",")
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(o) => o.to_string(),
    }
}

fn int(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_unset(x: String) -> String {
    or_default(x, "<unset>")
}

fn or_default(x: String, default: &str) -> String {
    if x.is_empty() {
        default.into()
    } else {
        x
    }
}

fn or_none(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

fn containers_images(tpl: Option<&Value>) -> (String, String) {
    let cs = tpl.and_then(|t| t.get("containers")).and_then(Value::as_array);
    let names: Vec<String> = cs.into_iter().flatten().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.into_iter().flatten().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: Option<&Value>) -> String {
    sel.and_then(|s| crate::selector::LabelSelector::from_label_selector(s).ok())
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn map_selector(sel: Option<&Value>) -> String {
    let parts: Vec<String> = sel.and_then(Value::as_object).into_iter().flatten().map(|(k, v)| format!("{k}={}", s(Some(v)))).collect();
    or_none(parts.join(","))
}

/// The pod STATUS column, following kubectl's printer: the phase, overridden
/// by the pod's reason, the first waiting or terminated container, and
/// `Terminating` while being deleted.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod.pointer("/status/phase"));
    if let Some(r) = pod.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    for cs in statuses.into_iter().flatten().rev() {
        if let Some(w) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = w.to_string();
        } else if let Some(t) = cs.pointer("/state/terminated/reason").and_then(Value::as_str) {
            reason = t.to_string();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = if pod.pointer("/status/reason").and_then(Value::as_str) == Some("NodeLost") { "Unknown".into() } else { "Terminating".into() };
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

fn cells(kind: &str, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(o.pointer("/metadata/name")));
    let created = age(o.pointer("/metadata/creationTimestamp"), now);
    let spec = o.get("spec");
    let st = o.get("status");
    let g = |p: &str| o.pointer(p);
    match kind {
        "Pod" => {
            let statuses = g("/status/containerStatuses").and_then(Value::as_array);
            let total = g("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = statuses.into_iter().flatten().filter(|c| c.get("ready") == Some(&Value::Bool(true))).count();
            let restarts: i64 = statuses.into_iter().flatten().map(|c| int(c.get("restartCount"))).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(created),
                json!(or_none(s(g("/status/podIP")))),
                json!(or_none(s(g("/spec/nodeName")))),
                json!(or_none(s(g("/status/nominatedNodeName")))),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (c, i) = containers_images(g("/spec/template/spec"));
            vec![
                name,
                json!(format!("{}/{}", int(g("/status/readyReplicas")), int(g("/spec/replicas")))),
                json!(int(g("/status/updatedReplicas"))),
                json!(int(g("/status/availableReplicas"))),
                json!(created),
                json!(c),
                json!(i),
                json!(selector_string(g("/spec/selector"))),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (c, i) = containers_images(g("/spec/template/spec"));
            let selector = if kind == "ReplicationController" { map_selector(g("/spec/selector")) } else { selector_string(g("/spec/selector")) };
            vec![
                name,
                json!(int(g("/spec/replicas"))),
                json!(int(g("/status/replicas"))),
                json!(int(g("/status/readyReplicas"))),
                json!(created),
                json!(c),
                json!(i),
                json!(selector),
            ]
        }
        "StatefulSet" => {
            let (c, i) = containers_images(g("/spec/template/spec"));
            vec![name, json!(format!("{}/{}", int(g("/status/readyReplicas")), int(g("/spec/replicas")))), json!(created), json!(c), json!(i)]
        }
        "DaemonSet" => {
            let (c, i) = containers_images(g("/spec/template/spec"));
            vec![
                name,
                json!(int(g("/status/desiredNumberScheduled"))),
                json!(int(g("/status/currentNumberScheduled"))),
                json!(int(g("/status/numberReady"))),
                json!(int(g("/status/updatedNumberScheduled"))),
                json!(int(g("/status/numberAvailable"))),
                json!(map_selector(g("/spec/template/spec/nodeSelector"))),
                json!(created),
                json!(c),
                json!(i),
                json!(selector_string(g("/spec/selector"))),
            ]
        }
        "Service" => {
            let ty = s(g("/spec/type"));
            let ports: Vec<String> = g("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let np = p.get("nodePort").and_then(Value::as_i64).map(|n| format!(":{n}")).unwrap_or_default();
                    format!("{}{np}/{}", int(p.get("port")), s(p.get("protocol")))
                })
                .collect();
            let external: Vec<String> = g("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| s(i.get("ip")).to_string())
                .chain(g("/spec/externalIPs").and_then(Value::as_array).into_iter().flatten().map(|v| s(Some(v))))
                .collect();
            let ext = if ty == "ExternalName" {
                s(g("/spec/externalName"))
            } else if external.is_empty() {
                if ty == "LoadBalancer" {
                    "<pending>".into()
                } else {
                    "<none>".into()
                }
            } else {
                external.join(",")
            };
            let cip = s(g("/spec/clusterIP"));
            vec![name, json!(ty), json!(or_none(cip)), json!(ext), json!(or_none(ports.join(","))), json!(created), json!(map_selector(g("/spec/selector")))]
        }
        "Namespace" => vec![name, json!(s(g("/status/phase"))), json!(created)],
        "Node" => {
            let ready = g("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                .map(|c| if c.get("status").and_then(Value::as_str) == Some("True") { "Ready" } else { "NotReady" })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if g("/spec/unschedulable") == Some(&Value::Bool(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = g("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
                .collect();
            let addr = |t: &str| {
                g("/status/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                    .map(|a| s(a.get("address")))
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                name,
                json!(status),
                json!(or_none(roles.join(","))),
                json!(created),
                json!(s(g("/status/nodeInfo/kubeletVersion"))),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(or_none(s(g("/status/nodeInfo/osImage")))),
                json!(or_none(s(g("/status/nodeInfo/kernelVersion")))),
                json!(or_none(s(g("/status/nodeInfo/containerRuntimeVersion")))),
            ]
        }
        "ConfigMap" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len()) + o.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(n.to_string()), json!(created)]
        }
        "Secret" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(s(o.get("type"))), json!(n.to_string()), json!(created)]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in o.get("subsets").and_then(Value::as_array).into_iter().flatten() {
                for a in sub.get("addresses").and_then(Value::as_array).into_iter().flatten() {
                    for p in sub.get("ports").and_then(Value::as_array).into_iter().flatten() {
                        eps.push(format!("{}:{}", s(a.get("ip")), int(p.get("port"))));
                    }
                }
            }
            let shown = if eps.len() > 3 { format!("{} + {} more...", eps[..3].join(","), eps.len() - 3) } else { eps.join(",") };
            vec![name, json!(or_none(shown)), json!(created)]
        }
        "Event" => {
            let last = o.get("lastTimestamp").filter(|v| !v.is_null()).or_else(|| o.get("eventTime")).or_else(|| o.pointer("/metadata/creationTimestamp"));
            let obj = o.get("involvedObject").or_else(|| o.get("regarding"));
            let kind_name = obj.map(|i| format!("{}/{}", s(i.get("kind")).to_lowercase(), s(i.get("name")))).unwrap_or_default();
            vec![json!(age(last, now)), json!(s(o.get("type"))), json!(s(o.get("reason"))), json!(kind_name), json!(s(o.get("message")).trim_end())]
        }
        "Job" => {
            let (c, i) = containers_images(g("/spec/template/spec"));
            let conds: Vec<&Value> = st.and_then(|s| s.get("conditions")).and_then(Value::as_array).into_iter().flatten().collect();
            let has =
                |t: &str| conds.iter().any(|c| c.get("type").and_then(Value::as_str) == Some(t) && c.get("status").and_then(Value::as_str) == Some("True"));
            let complete = ["Complete", "Failed", "Suspended"].into_iter().find(|t| has(t)).map(String::from);
            let status = match complete.as_deref() {
                Some("Complete") => "Complete".to_string(),
                Some("Failed") => "Failed".to_string(),
                Some("Suspended") => "Suspended".to_string(),
                _ => "Running".to_string(),
            };
            let completions = match spec.and_then(|s| s.get("completions")).and_then(Value::as_i64) {
                Some(n) => format!("{}/{n}", int(g("/status/succeeded"))),
                None => format!("{}/1 of {}", int(g("/status/succeeded")), int(g("/spec/parallelism"))),
            };
            let dur = match (g("/status/startTime").and_then(Value::as_str), g("/status/completionTime").and_then(Value::as_str)) {
                (Some(a), Some(b)) => match (DateTime::parse_from_rfc3339(a), DateTime::parse_from_rfc3339(b)) {
                    (Ok(a), Ok(b)) => human_duration((b - a).num_seconds()),
                    _ => String::new(),
                },
                (Some(a), None) => DateTime::parse_from_rfc3339(a).map(|a| human_duration((now - a.with_timezone(&Utc)).num_seconds())).unwrap_or_default(),
                _ => String::new(),
            };
            vec![name, json!(status), json!(completions), json!(dur), json!(created), json!(c), json!(i), json!(selector_string(g("/spec/selector")))]
        }
        "CronJob" => {
            let (c, i) = containers_images(g("/spec/jobTemplate/spec/template/spec"));
            let active = g("/status/active").and_then(Value::as_array).map_or(0, Vec::len);
            let last = g("/status/lastScheduleTime").map(|t| age(Some(t), now)).unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(s(g("/spec/schedule"))),
                json!(or_none(s(g("/spec/timeZone")))),
                json!(g("/spec/suspend") == Some(&Value::Bool(true))),
                json!(active),
                json!(last),
                json!(created),
                json!(c),
                json!(i),
                json!(selector_string(g("/spec/jobTemplate/spec/selector"))),
            ]
        }
        "Lease" => vec![name, json!(or_none(s(g("/spec/holderIdentity")))), json!(created)],
        "Role" | "ClusterRole" => vec![name, json!(s(g("/metadata/creationTimestamp")))],
        "CertificateSigningRequest" => {
            let mut conditions: Vec<String> =
                g("/status/conditions").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.get("type").and_then(Value::as_str)).map(String::from).collect();
            if g("/status/certificate").is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty())) {
                conditions.push("Issued".into());
            }
            let condition = if conditions.is_empty() { "Pending".to_string() } else { conditions.join(",") };
            let duration = g("/spec/expirationSeconds").and_then(Value::as_i64).map(human_duration).unwrap_or_else(|| "<none>".into());
            vec![name, json!(created), json!(s(g("/spec/signerName"))), json!(s(g("/spec/username"))), json!(duration), json!(condition)]
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = g("/subjects").and_then(Value::as_array).cloned().unwrap_or_default();
            let of = |kind: &str| -> String {
                let names: Vec<String> = subjects
                    .iter()
                    .filter(|x| x.get("kind").and_then(Value::as_str) == Some(kind))
                    .map(|x| match kind {
                        "ServiceAccount" => format!("{}/{}", s(x.get("namespace")), s(x.get("name"))),
                        _ => s(x.get("name")),
                    })
                    .collect();
                names.join(", ")
            };
            let role = format!("{}/{}", s(g("/roleRef/kind")), s(g("/roleRef/name")));
            vec![name, json!(role), json!(created), json!(of("User")), json!(of("Group")), json!(of("ServiceAccount"))]
        }
        "ServiceAccount" => vec![name, json!(g("/secrets").and_then(Value::as_array).map_or(0, Vec::len).to_string()), json!(created)],
        "PersistentVolumeClaim" => vec![
            name,
            json!(s(g("/status/phase"))),
            json!(s(g("/spec/volumeName"))),
            json!(s(g("/status/capacity/storage"))),
            json!(access_modes(g("/status/accessModes"))),
            json!(or_none(s(g("/spec/storageClassName")))),
            json!(or_unset(s(g("/spec/volumeAttributesClassName")))),
            json!(created),
            json!(s(g("/spec/volumeMode"))),
        ],
        "PersistentVolume" => {
            let claim = match (g("/spec/claimRef/namespace"), g("/spec/claimRef/name")) {
                (Some(ns), Some(n)) => format!("{}/{}", s(Some(ns)), s(Some(n))),
                _ => String::new(),
            };
            vec![
                name,
                json!(s(g("/spec/capacity/storage"))),
                json!(access_modes(g("/spec/accessModes"))),
                json!(s(g("/spec/persistentVolumeReclaimPolicy"))),
                json!(s(g("/status/phase"))),
                json!(claim),
                json!(s(g("/spec/storageClassName"))),
                json!(or_unset(s(g("/spec/volumeAttributesClassName")))),
                json!(s(g("/status/reason"))),
                json!(created),
                json!(s(g("/spec/volumeMode"))),
            ]
        }
        "StorageClass" => {
            let default = o.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class").and_then(Value::as_str) == Some("true");
            let name = if default { json!(format!("{} (default)", s(o.pointer("/metadata/name")))) } else { name };
            vec![
                name,
                json!(s(g("/provisioner"))),
                json!(or_default(s(g("/reclaimPolicy")), "Delete")),
                json!(or_default(s(g("/volumeBindingMode")), "Immediate")),
                json!(g("/allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false).to_string()),
                json!(created),
            ]
        }
        "ComponentStatus" => {
            let c = g("/conditions/0");
            let healthy = c.and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True");
            vec![
                name,
                json!(if healthy { "Healthy" } else { "Unhealthy" }),
                json!(s(c.and_then(|c| c.get("message")))),
                json!(s(c.and_then(|c| c.get("error")))),
            ]
        }
        "PriorityClass" => vec![
            name,
            json!(g("/value").and_then(Value::as_i64).unwrap_or(0)),
            json!(g("/globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            json!(created),
            json!(s(g("/preemptionPolicy"))),
        ],
        "PodTemplate" => {
            let cs = g("/template/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
            let names: Vec<String> = cs.iter().map(|c| s(c.get("name"))).collect();
            let images: Vec<String> = cs.iter().map(|c| s(c.get("image"))).collect();
            let labels: Vec<String> = g("/template/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            vec![name, json!(names.join(",")), json!(images.join(",")), json!(if labels.is_empty() { "<none>".to_string() } else { labels.join(",") })]
        }
        "PodDisruptionBudget" => {
            let int_or_str = |v: Option<&Value>| match v {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => "N/A".to_string(),
            };
            vec![
                name,
                json!(int_or_str(g("/spec/minAvailable"))),
                json!(int_or_str(g("/spec/maxUnavailable"))),
                json!(g("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0)),
                json!(created),
            ]
        }
        "Ingress" => {
            let rules = g("/spec/rules").and_then(Value::as_array).cloned().unwrap_or_default();
            // The first three hosts, as kubectl prints them.
            let hosts: Vec<String> = rules.iter().take(3).map(|r| s(r.get("host"))).filter(|h| !h.is_empty()).collect();
            let hosts = match (hosts.is_empty(), rules.len() > 3) {
                (true, _) => "*".to_string(),
                (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - 3),
                (false, false) => hosts.join(","),
            };
            let ports = if g("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) { "80, 443" } else { "80" };
            vec![name, json!(or_none(s(g("/spec/ingressClassName")))), json!(hosts), json!(load_balancer(g("/status/loadBalancer/ingress"))), json!(ports), json!(created)]
        }
        "IngressClass" => {
            let params = g("/spec/parameters").map_or_else(
                || "<none>".to_string(),
                |p| {
                    let group = p.get("apiGroup").and_then(Value::as_str).map(|g| format!(".{g}")).unwrap_or_default();
                    format!("{}{group}/{}", s(p.get("kind")), s(p.get("name")))
                },
            );
            vec![name, json!(s(g("/spec/controller"))), json!(params), json!(created)]
        }
        "NetworkPolicy" => vec![name, json!(selector_string(g("/spec/podSelector"))), json!(created)],
        "RuntimeClass" => vec![name, json!(s(g("/handler"))), json!(created)],
        "HorizontalPodAutoscaler" => {
            let target = format!("{}/{}", s(g("/spec/scaleTargetRef/kind")), s(g("/spec/scaleTargetRef/name")));
            let min = g("/spec/minReplicas").and_then(Value::as_i64).map_or_else(|| "<unset>".to_string(), |m| m.to_string());
            vec![
                name,
                json!(target),
                json!(crate::autoscaling::targets(o)),
                json!(min),
                json!(int(g("/spec/maxReplicas"))),
                json!(int(g("/status/currentReplicas"))),
                json!(created),
            ]
        }
        "CSIDriver" => {
            let flag = |p: &str, default: bool| json!(g(p).and_then(Value::as_bool).unwrap_or(default));
            let tokens: Vec<String> = g("/spec/tokenRequests").and_then(Value::as_array).into_iter().flatten().map(|t| s(t.get("audience"))).collect();
            let modes: Vec<String> = g("/spec/volumeLifecycleModes").and_then(Value::as_array).into_iter().flatten().map(|m| s(Some(m))).collect();
            vec![
                name,
                flag("/spec/attachRequired", true),
                flag("/spec/podInfoOnMount", false),
                flag("/spec/storageCapacity", false),
                json!(or_unset(tokens.join(","))),
                flag("/spec/requiresRepublish", false),
                json!(or_unset(modes.join(","))),
                json!(created),
            ]
        }
        "CSINode" => vec![name, json!(g("/spec/drivers").and_then(Value::as_array).map_or(0, Vec::len)), json!(created)],
        "VolumeAttachment" => vec![
            name,
            json!(s(g("/spec/attacher"))),
            json!(s(g("/spec/source/persistentVolumeName"))),
            json!(s(g("/spec/nodeName"))),
            json!(g("/status/attached").and_then(Value::as_bool).unwrap_or(false)),
            json!(created),
        ],
        "CustomResourceDefinition" => vec![name, o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)],
        "APIService" => {
            let service = match g("/spec/service").filter(|s| !s.is_null()) {
                Some(svc) => format!("{}/{}", s(svc.get("namespace")), s(svc.get("name"))),
                None => "Local".to_string(),
            };
            let cond = g("/status/conditions").and_then(Value::as_array).and_then(|c| c.iter().find(|c| c["type"] == "Available")).cloned();
            let available = match cond {
                Some(c) if c["status"] == "True" => "True".to_string(),
                Some(c) => format!("{} ({})", s(c.get("status")), s(c.get("reason"))),
                None => "Unknown".to_string(),
            };
            vec![name, json!(service), json!(available), json!(created)]
        }
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            vec![name, json!(g("/webhooks").and_then(Value::as_array).map_or(0, Vec::len)), json!(created)]
        }
        "ValidatingAdmissionPolicy" => {
            let param = g("/spec/paramKind").map(|p| format!("{}/{}", s(p.get("apiVersion")), s(p.get("kind")))).unwrap_or_else(|| "<unset>".into());
            vec![name, json!(g("/spec/validations").and_then(Value::as_array).map_or(0, Vec::len)), json!(param), json!(created)]
        }
        "ValidatingAdmissionPolicyBinding" => {
            let param = g("/spec/paramRef").map(|p| {
                let ns = s(p.get("namespace"));
                let n = s(p.get("name"));
                if ns.is_empty() { n } else { format!("{ns}/{n}") }
            });
            vec![name, json!(s(g("/spec/policyName"))), json!(param.unwrap_or_else(|| "<unset>".into())), json!(created)]
        }
        _ => vec![name, json!(created)],
    }
}

/// A load balancer's addresses as the server prints them (kube's wide
/// form): IPs and host names joined with commas.
fn load_balancer(ingress: Option<&Value>) -> String {
    let all: Vec<String> = ingress
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| if i.get("ip").is_some() { s(i.get("ip")) } else { s(i.get("hostname")) })
        .filter(|a| !a.is_empty())
        .collect();
    all.join(",")
}

/// The `PartialObjectMetadata` Kubernetes puts in a row by default.
pub fn partial_metadata(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

/// What a Table row carries of its object (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// Builds a Table of `objects` of `kind`.
pub fn table(kind: &str, objects: &[&Value], include: IncludeObject, resource_version: &str, continue_token: Option<&str>, now: DateTime<Utc>) -> Value {
    let defs: Vec<Value> = columns(kind)
        .into_iter()
        .map(|Col(n, t, p)| {
            let format = if n == "Name" { "name" } else { "" };
            json!({"name": n, "type": t, "format": format, "description": describe(n), "priority": p})
        })
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(cells(kind, o, now), o, include)).collect();
    envelope(defs, rows, resource_version, continue_token)
}

/// A Table row: its cells and as much of its object as asked for.
pub fn row(cells: Vec<Value>, object: &Value, include: IncludeObject) -> Value {
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(object),
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

/// A Table of column definitions and rows.
pub fn envelope(columns: Vec<Value>, rows: Vec<Value>, resource_version: &str, continue_token: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

fn describe(col: &str) -> &'static str {
    match col {
        "Name" => "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "Age" => "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (400 * 86400, "400d"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    #[test]
    fn pod_row_has_kubernetes_columns() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table("Pod", &[&pod], IncludeObject::Metadata, "5", None, Utc::now());
        assert_eq!(t["rows"][0]["cells"][1], "1/2");
        assert_eq!(t["rows"][0]["cells"][2], "CrashLoopBackOff");
        assert_eq!(t["rows"][0]["cells"][3], "3");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
    }
}
