//! End to end in Kubernetes' protobuf encoding, the way client-go talks:
//! bodies of every served kind, `DeleteOptions`, objects, lists, watch
//! streams and `Status` errors, checked against JSON and against the
//! independent `k8s-pb` messages.

mod common;

use bytes::Bytes;
use http_body_util::BodyExt;
use k8s_pb::api::apps::v1 as pb_apps;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{json, Value};
use skiff_api::protobuf::{CONTENT_TYPE, MAGIC};

const PB: &str = CONTENT_TYPE;
const JSON: &str = "application/json";

async fn client(s: &common::Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    kube::Client::try_from(cfg).expect("client")
}

struct Answer {
    status: u16,
    ctype: String,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON answer ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn send(c: &kube::Client, method: &str, path: &str, ctype: &str, accept: &str, body: Vec<u8>) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ctype)
        .header("Accept", accept)
        .body(kube::client::Body::from(body))
        .expect("request");
    let resp = c.send(req).await.expect("send");
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, ctype, body }
}

/// An envelope made with k8s-pb's own messages.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [MAGIC.to_vec(), u.encode_to_vec()].concat()
}

fn unwrap_envelope(b: &[u8]) -> Unknown {
    Unknown::decode(b.strip_prefix(MAGIC).expect("k8s\\0 prefix")).expect("runtime.Unknown")
}

/// An object of each served kind: `name` is replaced per request.
fn samples() -> Vec<(&'static str, Value)> {
    let pod_spec = json!({"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "sleep 1"],
        "ports": [{"containerPort": 80, "name": "http"}], "env": [{"name": "A", "value": "b"}],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}},
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 3},
        "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false}}],
        "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
        "volumes": [{"name": "v", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "x", "defaultMode": 420, "optional": false}}]});
    let template = json!({"metadata": {"labels": {"app": "a"}}, "spec": pod_spec});
    let sel = json!({"matchLabels": {"app": "a"}});
    vec![
        ("api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"l": "v"}}})),
        ("api/v1/namespaces/default/pods", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "a"}}, "spec": pod_spec})),
        (
            "api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {},
            "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080, "name": "web"}]}}),
        ),
        (
            "api/v1/namespaces/default/endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"a": "b", "empty": ""},
            "binaryData": {"bin": "AAEC"}, "immutable": false}),
        ),
        ("api/v1/namespaces/default/secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}, "data": {"k": "aGk="}, "type": "Opaque"})),
        (
            "api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"labels": {"n": "1"}}, "spec": {"unschedulable": true,
            "taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ),
        (
            "api/v1/namespaces/default/events",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R", "message": "m", "type": "Normal", "count": 2,
            "firstTimestamp": "2024-01-02T03:04:05Z", "source": {"component": "test"}}),
        ),
        (
            "api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}, "automountServiceAccountToken": false}),
        ),
        (
            "api/v1/namespaces/default/persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}}),
        ),
        (
            "api/v1/persistentvolumes",
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/x"}, "persistentVolumeReclaimPolicy": "Retain"}}),
        ),
        (
            "api/v1/namespaces/default/limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "200m"}}]}}),
        ),
        ("api/v1/namespaces/default/resourcequotas", json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {}, "spec": {"hard": {"pods": "10"}}})),
        (
            "apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {},
            "spec": {"replicas": 0, "selector": sel, "template": template,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
        ),
        (
            "apis/apps/v1/namespaces/default/replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {},
            "spec": {"replicas": 0, "selector": sel, "template": template}}),
        ),
        (
            "apis/apps/v1/namespaces/default/statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {},
            "spec": {"replicas": 0, "selector": sel, "serviceName": "s", "template": template,
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}}),
        ),
        (
            "apis/apps/v1/namespaces/default/daemonsets",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {},
            "spec": {"selector": sel, "template": template, "revisionHistoryLimit": 0}}),
        ),
        (
            "apis/apps/v1/namespaces/default/controllerrevisions",
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {},
            "revision": 3, "data": {"spec": {"x": 1}}}),
        ),
        (
            "apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 0, "suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "apis/batch/v1/namespaces/default/cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {},
            "spec": {"schedule": "*/5 * * * *", "successfulJobsHistoryLimit": 0, "suspend": true,
                     "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        ),
        (
            "apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {},
            "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15, "leaseTransitions": 0, "renewTime": "2024-01-02T03:04:05.123456Z"}}),
        ),
        (
            "apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true}}],
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}]}),
        ),
        (
            "apis/events.k8s.io/v1/namespaces/default/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {},
            "eventTime": "2024-01-02T03:04:05.000001Z", "reportingController": "c", "reportingInstance": "i", "action": "A", "reason": "R",
            "type": "Warning", "regarding": {"kind": "Pod", "name": "p"}}),
        ),
        (
            "apis/storage.k8s.io/v1/storageclasses",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {},
            "provisioner": "example.com/p", "allowVolumeExpansion": false, "parameters": {"a": "b"}}),
        ),
        (
            "apis/storage.k8s.io/v1/csidrivers",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {},
            "spec": {"attachRequired": false, "podInfoOnMount": true, "tokenRequests": [{"audience": "a", "expirationSeconds": 3600}]}}),
        ),
        (
            "apis/storage.k8s.io/v1/csinodes",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {},
            "spec": {"drivers": [{"name": "csi.example.com", "nodeID": "n1", "topologyKeys": ["zone"], "allocatable": {"count": 0}}]}}),
        ),
        (
            "apis/storage.k8s.io/v1/volumeattachments",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {},
            "spec": {"attacher": "csi.example.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}),
        ),
        (
            "apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min", "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}}),
        ),
        (
            "apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 4,
                     "targetCPUUtilizationPercentage": 60}}),
        ),
        (
            "apis/networking.k8s.io/v1/namespaces/default/ingresses",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {},
            "spec": {"ingressClassName": "c", "tls": [{"hosts": ["a.example.com"], "secretName": "s"}],
                     "rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "apis/networking.k8s.io/v1/ingressclasses",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {},
            "spec": {"controller": "example.com/c", "parameters": {"apiGroup": "example.com", "kind": "P", "name": "p", "scope": "Cluster"}}}),
        ),
        (
            "apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"port": 53, "protocol": "UDP", "endPort": 100}]}],
                     "egress": [{}]}}),
        ),
        (
            "apis/node.k8s.io/v1/runtimeclasses",
            json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {}, "handler": "runc",
            "overhead": {"podFixed": {"cpu": "10m"}}, "scheduling": {"nodeSelector": {"a": "b"}}}),
        ),
        (
            "apis/policy/v1/namespaces/default/poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {},
            "spec": {"minAvailable": 0, "selector": sel}}),
        ),
        ("api/v1/namespaces/default/podtemplates", json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {}, "template": template})),
        (
            "api/v1/namespaces/default/replicationcontrollers",
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {}, "spec": {"replicas": 0, "selector": {"app": "a"}, "template": template}}),
        ),
        (
            "apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {},
            "value": 1000, "description": "d", "preemptionPolicy": "Never"}),
        ),
        (
            "apis/certificates.k8s.io/v1/certificatesigningrequests",
            json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {},
            "spec": {"request": skiff_api::base64(skiff_pki::new_request_for("pb", Some("g")).expect("csr").0.as_bytes()),
                     "signerName": "example.com/pb", "usages": ["client auth"], "expirationSeconds": 3600}}),
        ),
        (
            "apis/apiregistration.k8s.io/v1/apiservices",
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {},
            "spec": {"group": "nothing.skiff.test", "version": "v1", "service": {"namespace": "default", "name": "nothing", "port": 443},
                "insecureSkipTLSVerify": true, "groupPriorityMinimum": 100, "versionPriority": 10}}),
        ),
        // Admission configurations that select nothing (the samples after
        // them are created with them in place).
        (
            "apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {},
            "webhooks": [{"name": "m.pb.skiff.test", "clientConfig": {"url": "https://127.0.0.1:1/m", "caBundle": "AAEC"},
                "rules": [{"operations": ["CREATE"], "apiGroups": ["nothing.test"], "apiVersions": ["v1"], "resources": ["things"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"never": "x"}}, "failurePolicy": "Ignore", "sideEffects": "None",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 3, "reinvocationPolicy": "IfNeeded",
                "matchConditions": [{"name": "always", "expression": "true"}]}]}),
        ),
        (
            "apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {},
            "webhooks": [{"name": "v.pb.skiff.test", "clientConfig": {"service": {"namespace": "default", "name": "hooks", "port": 8443, "path": "/v"}},
                "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["nothing.test"], "apiVersions": ["*"], "resources": ["things/status"]}],
                "objectSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}, "failurePolicy": "Ignore",
                "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1", "v1beta1"]}]}),
        ),
        (
            "apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {},
            "spec": {"failurePolicy": "Ignore", "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {"resourceRules": [{"apiGroups": ["nothing.test"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["things"]}]},
                "variables": [{"name": "n", "expression": "object.metadata.name"}],
                "validations": [{"expression": "variables.n != ''", "message": "named", "reason": "Forbidden"}],
                "auditAnnotations": [{"key": "k", "valueExpression": "'v'"}]}}),
        ),
        (
            "apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {},
            "spec": {"policyName": "nothing", "validationActions": ["Deny", "Audit"],
                "paramRef": {"name": "p", "namespace": "default", "parameterNotFoundAction": "Allow"},
                "matchResources": {"namespaceSelector": {"matchLabels": {"a": "b"}}}}}),
        ),
        (
            "apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"labels": {"a": "b"}},
            "rules": [{"apiGroups": ["", "apps"], "resources": ["pods", "deployments/scale"], "verbs": ["get", "list"], "resourceNames": ["x"]},
                      {"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]}],
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}),
        ),
        (
            "apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}, {"kind": "ServiceAccount", "name": "bot", "namespace": "default"}]}),
        ),
        (
            "apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}),
        ),
        (
            "apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "Group", "name": "dev", "apiGroup": "rbac.authorization.k8s.io"}]}),
        ),
    ]
}

/// What two creates of the same object may differ in.
fn comparable(mut v: Value, name: &str) -> Value {
    let uid = v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("-").to_string();
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in ["creationTimestamp", "resourceVersion", "uid"] {
            m.remove(k);
        }
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                e.as_object_mut().map(|o| o.remove("time"));
            }
        }
    }
    // Allocated by the server or a controller, each object its own.
    for at in ["/spec", "/metadata/managedFields/0/fieldsV1/f:spec"] {
        if let Some(s) = v.pointer_mut(at).and_then(Value::as_object_mut) {
            for k in ["clusterIP", "clusterIPs", "podCIDR", "podCIDRs", "f:podCIDR", "f:podCIDRs"] {
                s.remove(k);
            }
        }
    }
    serde_json::from_str(&v.to_string().replace(&uid, "UID").replace(name, "NAME")).expect("JSON")
}

#[tokio::test]
async fn every_served_kind_is_stored_the_same_from_protobuf_as_from_json() {
    // The API alone: no controller writes status between the two reads.
    let s = common::start_with(&["--disable", "scheduler,controllers"]);
    let c = client(&s).await;
    // (CustomResourceDefinitions have their own test: their names are fixed.)
    assert_eq!(samples().len(), skiff_api::RESOURCES.len() - 1, "a sample per served kind");
    for (i, (path, obj)) in samples().into_iter().enumerate() {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let (mut jname, mut pname) = (format!("k{i}-json"), format!("k{i}-pb"));
        let mut j = obj.clone();
        let mut p = obj.clone();
        if kind == "APIService" {
            // Its name is its version and group.
            j["spec"]["group"] = json!(format!("{jname}.skiff.test"));
            p["spec"]["group"] = json!(format!("{pname}.skiff.test"));
            (jname, pname) = (format!("v1.{jname}.skiff.test"), format!("v1.{pname}.skiff.test"));
        }
        j["metadata"]["name"] = json!(jname);
        p["metadata"]["name"] = json!(pname);
        let a = send(&c, "POST", &format!("/{path}"), JSON, JSON, j.to_string().into_bytes()).await;
        assert_eq!(a.status, 201, "JSON create of {kind}: {}", String::from_utf8_lossy(&a.body));
        let pb = skiff_api::protobuf::encode(&p).unwrap_or_else(|| panic!("{kind} has a protobuf message"));
        let b = send(&c, "POST", &format!("/{path}"), PB, JSON, pb).await;
        assert_eq!(b.status, 201, "protobuf create of {kind}: {}", String::from_utf8_lossy(&b.body));
        let from_json = send(&c, "GET", &format!("/{path}/{jname}"), JSON, JSON, vec![]).await.json();
        let from_pb = send(&c, "GET", &format!("/{path}/{pname}"), JSON, JSON, vec![]).await.json();
        // (An APIService's group is in its name, and its status the
        // availability controller's: compared without them.)
        let same_group = |mut v: Value| {
            if kind == "APIService" {
                v["spec"]["group"] = json!("GROUP");
                v.as_object_mut().map(|o| o.remove("status"));
            }
            v
        };
        assert_eq!(
            comparable(same_group(from_pb.clone()), &pname),
            comparable(same_group(from_json.clone()), &jname),
            "{kind} stored from protobuf and from JSON"
        );

        // A replace in protobuf, with the resourceVersion read (controllers
        // may write some kinds, Nodes say, in between: read again then).
        let mut upd = from_pb.clone();
        let mut a = None;
        for _ in 0..10 {
            upd["metadata"]["labels"] = json!({"updated": "yes"});
            let r = send(&c, "PUT", &format!("/{path}/{pname}"), PB, JSON, skiff_api::protobuf::encode(&upd).expect("encode")).await;
            if r.status != 409 {
                a = Some(r);
                break;
            }
            upd = send(&c, "GET", &format!("/{path}/{pname}"), JSON, JSON, vec![]).await.json();
        }
        let a = a.expect("an update without a conflict in 10 tries");
        assert_eq!(a.status, 200, "protobuf update of {kind}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["metadata"]["labels"], json!({"updated": "yes"}), "{kind} updated");

        // Deleted with protobuf DeleteOptions whose precondition is wrong,
        // then right: both are read from the protobuf body.
        let wrong = pb_meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(pb_meta::Preconditions { uid: Some("not-it".into()), resource_version: None }),
            ..Default::default()
        };
        let a = send(&c, "DELETE", &format!("/{path}/{pname}"), PB, JSON, envelope("v1", "DeleteOptions", wrong.encode_to_vec())).await;
        assert_eq!(a.status, 409, "{kind} delete with a wrong uid precondition: {}", String::from_utf8_lossy(&a.body));
        let uid = from_pb.pointer("/metadata/uid").and_then(Value::as_str).map(String::from);
        let right = pb_meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(pb_meta::Preconditions { uid, resource_version: None }),
            ..Default::default()
        };
        let a = send(&c, "DELETE", &format!("/{path}/{pname}"), PB, JSON, envelope("v1", "DeleteOptions", right.encode_to_vec())).await;
        assert_eq!(a.status, 200, "{kind} protobuf delete: {}", String::from_utf8_lossy(&a.body));
    }
}

#[tokio::test]
async fn k8s_pb_messages_are_read_and_answered_in_protobuf() {
    let s = common::start();
    let c = client(&s).await;
    // A Deployment built with k8s-pb, as Go's marshaller writes it: every
    // non-pointer field present, zero or not.
    let container = pb_core::Container {
        name: Some("c".into()),
        image: Some("busybox".into()),
        working_dir: Some(String::new()),
        stdin: Some(false),
        ports: vec![pb_core::ContainerPort { container_port: Some(80), host_port: Some(0), name: Some(String::new()), ..Default::default() }],
        ..Default::default()
    };
    let labels: std::collections::BTreeMap<String, String> = [("app".to_string(), "pb".to_string())].into();
    let d = pb_apps::Deployment {
        metadata: Some(pb_meta::ObjectMeta {
            name: Some("pb".into()),
            namespace: Some(String::new()),
            generate_name: Some(String::new()),
            ..Default::default()
        }),
        spec: Some(pb_apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(pb_meta::LabelSelector { match_labels: labels.clone(), ..Default::default() }),
            template: Some(pb_core::PodTemplateSpec {
                metadata: Some(pb_meta::ObjectMeta { labels, ..Default::default() }),
                spec: Some(pb_core::PodSpec { containers: vec![container], node_name: Some(String::new()), host_network: Some(false), ..Default::default() }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let a = send(&c, "POST", "/apis/apps/v1/namespaces/default/deployments", PB, PB, envelope("apps/v1", "Deployment", d.encode_to_vec())).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.ctype, PB, "the answer is protobuf, as asked");
    let u = unwrap_envelope(&a.body);
    assert_eq!(u.type_meta.as_ref().and_then(|t| t.kind.as_deref()), Some("Deployment"));
    let got = pb_apps::Deployment::decode(u.raw.unwrap_or_default().as_slice()).expect("a Deployment message");
    let spec = got.spec.expect("spec");
    assert_eq!(spec.replicas, Some(0), "replicas: 0 is kept (a pointer)");
    assert_eq!(spec.revision_history_limit, Some(10), "defaulted");
    let pod = spec.template.and_then(|t| t.spec).expect("pod spec");
    assert_eq!(pod.containers[0].image.as_deref(), Some("busybox"));
    assert_eq!(pod.containers[0].termination_message_path.as_deref(), Some("/dev/termination-log"), "container defaults");
    assert!(got.metadata.and_then(|m| m.uid).is_some_and(|u| !u.is_empty()));

    // Go's zero values were not stored as values.
    let j = send(&c, "GET", "/apis/apps/v1/namespaces/default/deployments/pb", JSON, JSON, vec![]).await.json();
    let spec = &j["spec"]["template"]["spec"];
    assert!(spec.get("nodeName").is_none() && spec["containers"][0].get("workingDir").is_none(), "{spec}");
    assert!(spec["containers"][0]["ports"][0].get("hostPort").is_none(), "{spec}");

    // A list in protobuf.
    let a = send(&c, "GET", "/apis/apps/v1/namespaces/default/deployments", JSON, PB, vec![]).await;
    assert_eq!(a.ctype, PB);
    let list = pb_apps::DeploymentList::decode(unwrap_envelope(&a.body).raw.unwrap_or_default().as_slice()).expect("a DeploymentList");
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.and_then(|m| m.resource_version).is_some_and(|rv| !rv.is_empty()));

    // An error is a protobuf Status.
    let a = send(&c, "GET", "/api/v1/namespaces/default/pods/missing", JSON, "application/vnd.kubernetes.protobuf, */*", vec![]).await;
    assert_eq!(a.status, 404);
    let st = pb_meta::Status::decode(unwrap_envelope(&a.body).raw.unwrap_or_default().as_slice()).expect("a Status");
    assert_eq!((st.reason.as_deref(), st.code), (Some("NotFound"), Some(404)));
    assert_eq!(st.message.as_deref(), Some("pods \"missing\" not found"));

    // A client that asks for JSON still gets JSON.
    let a = send(&c, "GET", "/api/v1/namespaces/default/pods/missing", JSON, JSON, vec![]).await;
    assert_eq!(a.json()["reason"], "NotFound");
}

#[tokio::test]
async fn protobuf_watches_stream_length_prefixed_watch_events() {
    let s = common::start();
    let c = client(&s).await;
    let req = http::Request::builder()
        .uri("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=10")
        .header("Accept", PB)
        .body(kube::client::Body::empty())
        .expect("request");
    let resp = c.send(req).await.expect("watch");
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/vnd.kubernetes.protobuf;stream=watch"));
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"a": "b"}});
    let a = send(&c, "POST", "/api/v1/namespaces/default/configmaps", JSON, JSON, cm.to_string().into_bytes()).await;
    assert_eq!(a.status, 201);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let frame = loop {
        if buf.len() >= 4 {
            let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() >= 4 + n {
                break buf[4..4 + n].to_vec();
            }
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.expect("an event in time").expect("frame").expect("data");
        if let Ok(d) = chunk.into_data() {
            buf.extend_from_slice(&d);
        }
    };
    let ev = pb_meta::WatchEvent::decode(frame.as_slice()).expect("a WatchEvent");
    assert_eq!(ev.r#type.as_deref(), Some("ADDED"));
    let raw = ev.object.and_then(|o| o.raw).expect("the object");
    let got = pb_core::ConfigMap::decode(unwrap_envelope(&raw).raw.unwrap_or_default().as_slice()).expect("a ConfigMap");
    assert_eq!(got.metadata.and_then(|m| m.name).as_deref(), Some("watched"));
    assert_eq!(got.data.get("a").map(String::as_str), Some("b"));
}

/// A CRD sent as protobuf (as client-go's apiextensions clientset sends it
/// in Kubernetes' e2e suite) is stored as the same CRD sent as JSON: the
/// schema's JSON values (defaults, enums) included.
#[tokio::test]
async fn a_crd_is_stored_the_same_from_protobuf_as_from_json() {
    let s = common::start_with(&["--disable", "scheduler,controllers"]);
    let c = client(&s).await;
    let crd = |group: &str| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": format!("things.{group}")},
            "spec": {"group": group, "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing", "shortNames": ["th"]},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1, "default": 2},
                                       "mode": {"type": "string", "enum": ["a", "b"], "pattern": "^[ab]$"},
                                       "any": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                       "list": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}}}}}}}]}})
    };
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let a = send(&c, "POST", path, JSON, JSON, crd("json.example.com").to_string().into_bytes()).await;
    assert_eq!(a.status, 201, "JSON create: {}", String::from_utf8_lossy(&a.body));
    let pb = skiff_api::protobuf::encode(&crd("pb.example.com")).expect("a CRD has a protobuf message");
    let b = send(&c, "POST", path, PB, JSON, pb).await;
    assert_eq!(b.status, 201, "protobuf create: {}", String::from_utf8_lossy(&b.body));
    let spec_of = |v: Value| {
        let mut spec = v["spec"].clone();
        spec["group"] = json!("GROUP");
        spec
    };
    let from_json = send(&c, "GET", &format!("{path}/things.json.example.com"), JSON, JSON, vec![]).await.json();
    let from_pb = send(&c, "GET", &format!("{path}/things.pb.example.com"), JSON, JSON, vec![]).await.json();
    assert_eq!(spec_of(from_pb), spec_of(from_json.clone()));
    assert_eq!(from_json.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/mode/enum"), Some(&json!(["a", "b"])));
    // And read back as protobuf, it decodes to the same object.
    let read = send(&c, "GET", &format!("{path}/things.json.example.com"), JSON, PB, vec![]).await;
    let decoded = skiff_api::protobuf::decode(&read.body).expect("protobuf answer");
    assert_eq!(spec_of(decoded), spec_of(from_json));
}
