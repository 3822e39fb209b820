use super::*;

fn field(num: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    match wire {
        2 => w.bytes(num, payload),
        _ => w.varint_field(num, u64::from(payload[0])),
    }
    w.into_inner()
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let tm = [field(1, 2, api_version.as_bytes()), field(2, 2, kind.as_bytes())].concat();
    [MAGIC.to_vec(), field(1, 2, &tm), field(2, 2, raw)].concat()
}

#[test]
fn decodes_a_configmap_envelope() {
    let meta = field(1, 2, b"cfg");
    let entry = [field(1, 2, b"k"), field(2, 2, b"v")].concat();
    let cm = [field(1, 2, &meta), field(2, 2, &entry)].concat();
    let v = decode(&envelope("v1", "ConfigMap", &cm)).expect("decode");
    assert_eq!(v, json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"}));
}

#[test]
fn go_zero_values_are_dropped_unless_the_field_is_a_pointer_or_required() {
    // Go writes `nodeName: ""` and `hostNetwork: false` (non-pointers) and
    // `terminationGracePeriodSeconds: 0` (a pointer that was set).
    let container = [field(1, 2, b"c"), field(2, 2, b"busybox"), field(16, 0, &[0])].concat();
    let spec = [field(2, 2, &container), field(10, 2, b""), field(11, 0, &[0]), field(4, 0, &[0])].concat();
    let pod = [field(1, 2, &field(1, 2, b"p")), field(2, 2, &spec), field(3, 2, b"")].concat();
    let v = decode(&envelope("v1", "Pod", &pod)).expect("decode");
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {},
               "spec": {"containers": [{"name": "c", "image": "busybox"}], "terminationGracePeriodSeconds": 0}})
    );
}

#[test]
fn every_kind_round_trips_between_json_and_protobuf() {
    let objects = [
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "namespace": "ns", "labels": {"a": "b"}, "creationTimestamp": "2024-05-06T07:08:09Z",
                            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u", "controller": true}]},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                        "template": {"metadata": {"labels": {"a": "b"}},
                                     "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                                              "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                                                              "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2}}]}}},
               "status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2024-05-06T07:08:10Z"}]}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "aGVsbG8="}, "type": "Opaque"}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
               "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15, "renewTime": "2024-05-06T07:08:09.123456Z", "leaseTransitions": 0}}),
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
               "preconditions": {"uid": "u"}}),
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": "m", "reason": "NotFound", "code": 404,
               "details": {"name": "x", "kind": "pods"}, "metadata": {}}),
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
               "items": [{"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}}]}),
    ];
    for obj in objects {
        let bytes = encode(&obj).unwrap_or_else(|| panic!("{} encodes", obj["kind"]));
        let back = decode(&bytes).expect("decode");
        assert_eq!(back, obj, "round trip of {}", obj["kind"]);
    }
}

#[test]
fn watch_events_are_length_prefixed_watch_event_messages() {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let frame = encode_watch_event("ADDED", &obj).expect("encode");
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - 4);
    let ev = message(&frame[4..], "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent", 0).expect("decode").expect("event");
    assert_eq!(ev, json!({"type": "ADDED", "object": obj}));
}

#[test]
fn hostile_bodies_are_refused_not_followed() {
    // 100,000 nested `spec.template.spec`-like messages.
    let mut nested = Vec::new();
    for _ in 0..100_000 {
        let mut w = Writer::default();
        w.bytes(1, &nested);
        nested = w.into_inner();
        if nested.len() > 1 << 20 {
            break;
        }
    }
    assert!(decode(&envelope("apps/v1", "Deployment", &nested)).is_err());
    assert!(decode(&envelope("v1", "Nope", b"")).expect_err("unknown").contains("no kind \"Nope\""));
    assert!(decode(b"k8s\0\x0a\xff").is_err());
    assert!(decode(b"{}").is_err());
}

#[test]
fn durations_use_go_notation() {
    for (ns, s) in [(0, "0s"), (1_500_000_000, "1.5s"), (3_600_000_000_000 + 60_000_000_000, "1h1m0s"), (2_000_000, "2ms")] {
        assert_eq!(go_duration(ns), s);
        assert_eq!(parse_go_duration(s), Some(ns));
    }
}
