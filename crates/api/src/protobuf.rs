//! Decoding of Kubernetes protobuf request bodies into JSON.
//!
//! kubectl ≥ 1.32 sends `create namespace|configmap|secret|deployment` as
//! `application/vnd.kubernetes.protobuf` and does not fall back to JSON.
//! `k8s-pb` has the prost messages, but no mapping to Kubernetes' JSON form,
//! and converting its whole type tree by hand would be larger than this: a
//! table of the messages those commands send (field numbers and JSON names
//! from Kubernetes' `generated.proto`) drives a small wire-format reader.
//! A field the table does not know is an error, never silently dropped.

use serde_json::{json, Map, Value};

use crate::base64;

/// The magic prefix of Kubernetes' protobuf envelope.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum T {
    Str,
    Int,
    Bool,
    /// A pointer int (`*int32`): present only when set, zero included.
    OptInt,
    /// A pointer bool.
    OptBool,
    Bytes,
    Msg(&'static [F]),
    /// A message with one `string` field 1 (Quantity).
    Quantity,
    /// metav1.Time: seconds = 1, nanos = 2.
    Time,
    /// intstr.IntOrString: type = 1, intVal = 2, strVal = 3.
    IntOrString,
    MapStr,
    MapBytes,
    MapQuantity,
}

/// One field: number, JSON name, type, repeated.
type F = (u32, &'static str, T, bool);

const OWNER_REF: &[F] = &[
    (1, "kind", T::Str, false),
    (3, "name", T::Str, false),
    (4, "uid", T::Str, false),
    (5, "apiVersion", T::Str, false),
    (6, "controller", T::OptBool, false),
    (7, "blockOwnerDeletion", T::OptBool, false),
];
const OBJECT_META: &[F] = &[
    (1, "name", T::Str, false),
    (2, "generateName", T::Str, false),
    (3, "namespace", T::Str, false),
    (4, "selfLink", T::Str, false),
    (5, "uid", T::Str, false),
    (6, "resourceVersion", T::Str, false),
    (7, "generation", T::Int, false),
    (8, "creationTimestamp", T::Time, false),
    (9, "deletionTimestamp", T::Time, false),
    (10, "deletionGracePeriodSeconds", T::OptInt, false),
    (11, "labels", T::MapStr, false),
    (12, "annotations", T::MapStr, false),
    (13, "ownerReferences", T::Msg(OWNER_REF), true),
    (14, "finalizers", T::Str, true),
];
const LABEL_SELECTOR_REQ: &[F] = &[(1, "key", T::Str, false), (2, "operator", T::Str, false), (3, "values", T::Str, true)];
const LABEL_SELECTOR: &[F] = &[(1, "matchLabels", T::MapStr, false), (2, "matchExpressions", T::Msg(LABEL_SELECTOR_REQ), true)];
const CONTAINER_PORT: &[F] = &[
    (1, "name", T::Str, false),
    (2, "hostPort", T::Int, false),
    (3, "containerPort", T::Int, false),
    (4, "protocol", T::Str, false),
    (5, "hostIP", T::Str, false),
];
const ENV_VAR: &[F] = &[(1, "name", T::Str, false), (2, "value", T::Str, false)];
const RESOURCES: &[F] = &[(1, "limits", T::MapQuantity, false), (2, "requests", T::MapQuantity, false)];
const CONTAINER: &[F] = &[
    (1, "name", T::Str, false),
    (2, "image", T::Str, false),
    (3, "command", T::Str, true),
    (4, "args", T::Str, true),
    (5, "workingDir", T::Str, false),
    (6, "ports", T::Msg(CONTAINER_PORT), true),
    (7, "env", T::Msg(ENV_VAR), true),
    (8, "resources", T::Msg(RESOURCES), false),
    (13, "terminationMessagePath", T::Str, false),
    (14, "imagePullPolicy", T::Str, false),
    (16, "stdin", T::Bool, false),
    (17, "stdinOnce", T::Bool, false),
    (18, "tty", T::Bool, false),
    (20, "terminationMessagePolicy", T::Str, false),
];
const POD_SPEC: &[F] = &[
    (2, "containers", T::Msg(CONTAINER), true),
    (3, "restartPolicy", T::Str, false),
    (4, "terminationGracePeriodSeconds", T::OptInt, false),
    (5, "activeDeadlineSeconds", T::OptInt, false),
    (6, "dnsPolicy", T::Str, false),
    (7, "nodeSelector", T::MapStr, false),
    (8, "serviceAccountName", T::Str, false),
    (9, "serviceAccount", T::Str, false),
    (10, "nodeName", T::Str, false),
    (11, "hostNetwork", T::Bool, false),
    (16, "hostname", T::Str, false),
    (17, "subdomain", T::Str, false),
    (19, "schedulerName", T::Str, false),
    (20, "initContainers", T::Msg(CONTAINER), true),
];
const POD_TEMPLATE: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(POD_SPEC), false)];
const ROLLING_UPDATE: &[F] = &[(1, "maxUnavailable", T::IntOrString, false), (2, "maxSurge", T::IntOrString, false)];
const STRATEGY: &[F] = &[(1, "type", T::Str, false), (2, "rollingUpdate", T::Msg(ROLLING_UPDATE), false)];
const DEPLOYMENT_SPEC: &[F] = &[
    (1, "replicas", T::OptInt, false),
    (2, "selector", T::Msg(LABEL_SELECTOR), false),
    (3, "template", T::Msg(POD_TEMPLATE), false),
    (4, "strategy", T::Msg(STRATEGY), false),
    (5, "minReadySeconds", T::Int, false),
    (6, "revisionHistoryLimit", T::OptInt, false),
    (7, "paused", T::Bool, false),
    (9, "progressDeadlineSeconds", T::OptInt, false),
];
/// Status of a new object is ignored by the server, so it is read loosely.
const ANY_STATUS: &[F] = &[];
const DEPLOYMENT: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(DEPLOYMENT_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const JOB_SPEC: &[F] = &[
    (1, "parallelism", T::OptInt, false),
    (2, "completions", T::OptInt, false),
    (3, "activeDeadlineSeconds", T::OptInt, false),
    (4, "selector", T::Msg(LABEL_SELECTOR), false),
    (5, "manualSelector", T::OptBool, false),
    (6, "template", T::Msg(POD_TEMPLATE), false),
    (7, "backoffLimit", T::OptInt, false),
    (8, "ttlSecondsAfterFinished", T::OptInt, false),
    (9, "completionMode", T::Str, false),
    (10, "suspend", T::OptBool, false),
    (12, "backoffLimitPerIndex", T::OptInt, false),
    (13, "maxFailedIndexes", T::OptInt, false),
    (14, "podReplacementPolicy", T::Str, false),
    (15, "managedBy", T::Str, false),
];
const JOB: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(JOB_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const JOB_TEMPLATE: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(JOB_SPEC), false)];
const CRONJOB_SPEC: &[F] = &[
    (1, "schedule", T::Str, false),
    (2, "startingDeadlineSeconds", T::OptInt, false),
    (3, "concurrencyPolicy", T::Str, false),
    (4, "suspend", T::OptBool, false),
    (5, "jobTemplate", T::Msg(JOB_TEMPLATE), false),
    (6, "successfulJobsHistoryLimit", T::OptInt, false),
    (7, "failedJobsHistoryLimit", T::OptInt, false),
    (8, "timeZone", T::Str, false),
];
const CRONJOB: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(CRONJOB_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const SERVICE_PORT: &[F] = &[
    (1, "name", T::Str, false),
    (2, "protocol", T::Str, false),
    (3, "port", T::Int, false),
    (4, "targetPort", T::IntOrString, false),
    (5, "nodePort", T::Int, false),
    (6, "appProtocol", T::Str, false),
];
const SERVICE_SPEC: &[F] = &[
    (1, "ports", T::Msg(SERVICE_PORT), true),
    (2, "selector", T::MapStr, false),
    (3, "clusterIP", T::Str, false),
    (4, "type", T::Str, false),
    (5, "externalIPs", T::Str, true),
    (7, "sessionAffinity", T::Str, false),
    (8, "loadBalancerIP", T::Str, false),
    (9, "loadBalancerSourceRanges", T::Str, true),
    (10, "externalName", T::Str, false),
    (11, "externalTrafficPolicy", T::Str, false),
    (12, "healthCheckNodePort", T::Int, false),
    (13, "publishNotReadyAddresses", T::Bool, false),
    (17, "ipFamilyPolicy", T::Str, false),
    (18, "clusterIPs", T::Str, true),
    (19, "ipFamilies", T::Str, true),
    (20, "allocateLoadBalancerNodePorts", T::OptBool, false),
    (21, "loadBalancerClass", T::Str, false),
    (22, "internalTrafficPolicy", T::Str, false),
    (23, "trafficDistribution", T::Str, false),
];
const SERVICE: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(SERVICE_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const LOCAL_OBJECT_REF: &[F] = &[(1, "name", T::Str, false)];
const OBJECT_REF: &[F] = &[
    (1, "kind", T::Str, false),
    (2, "namespace", T::Str, false),
    (3, "name", T::Str, false),
    (4, "uid", T::Str, false),
    (5, "apiVersion", T::Str, false),
    (6, "resourceVersion", T::Str, false),
    (7, "fieldPath", T::Str, false),
];
const SERVICE_ACCOUNT: &[F] = &[
    (1, "metadata", T::Msg(OBJECT_META), false),
    (2, "secrets", T::Msg(OBJECT_REF), true),
    (3, "imagePullSecrets", T::Msg(LOCAL_OBJECT_REF), true),
    (4, "automountServiceAccountToken", T::OptBool, false),
];
const PDB_SPEC: &[F] = &[
    (1, "minAvailable", T::IntOrString, false),
    (2, "selector", T::Msg(LABEL_SELECTOR), false),
    (3, "maxUnavailable", T::IntOrString, false),
    (4, "unhealthyPodEvictionPolicy", T::Str, false),
];
const PDB: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(PDB_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const QUOTA_SPEC: &[F] = &[(1, "hard", T::MapQuantity, false), (2, "scopes", T::Str, true)];
const QUOTA: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(QUOTA_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const RESOURCE_ATTRIBUTES: &[F] = &[
    (1, "namespace", T::Str, false),
    (2, "verb", T::Str, false),
    (3, "group", T::Str, false),
    (4, "version", T::Str, false),
    (5, "resource", T::Str, false),
    (6, "subresource", T::Str, false),
    (7, "name", T::Str, false),
    (8, "fieldSelector", T::Msg(ANY_STATUS), false),
    (9, "labelSelector", T::Msg(ANY_STATUS), false),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[(1, "path", T::Str, false), (2, "verb", T::Str, false)];
const SSAR_SPEC: &[F] = &[(1, "resourceAttributes", T::Msg(RESOURCE_ATTRIBUTES), false), (2, "nonResourceAttributes", T::Msg(NON_RESOURCE_ATTRIBUTES), false)];
const SSAR: &[F] = &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(SSAR_SPEC), false), (3, "status", T::Msg(ANY_STATUS), false)];
const NAMESPACE_SPEC: &[F] = &[(1, "finalizers", T::Str, true)];
const NAMESPACE_STATUS: &[F] = &[(1, "phase", T::Str, false)];
const NAMESPACE: &[F] =
    &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "spec", T::Msg(NAMESPACE_SPEC), false), (3, "status", T::Msg(NAMESPACE_STATUS), false)];
const CONFIGMAP: &[F] =
    &[(1, "metadata", T::Msg(OBJECT_META), false), (2, "data", T::MapStr, false), (3, "binaryData", T::MapBytes, false), (4, "immutable", T::OptBool, false)];
const SECRET: &[F] = &[
    (1, "metadata", T::Msg(OBJECT_META), false),
    (2, "data", T::MapBytes, false),
    (3, "type", T::Str, false),
    (4, "stringData", T::MapStr, false),
    (5, "immutable", T::OptBool, false),
];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIGMAP,
        ("batch/v1", "Job") => JOB,
        ("batch/v1", "CronJob") => CRONJOB,
        ("v1", "Service") => SERVICE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "ResourceQuota") => QUOTA,
        ("policy/v1", "PodDisruptionBudget") => PDB,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SSAR,
        ("v1", "Secret") => SECRET,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    /// Next (field number, wire type), or `None` at the end.
    fn tag(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some(((t >> 3) as u32, (t & 7) as u8)))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(format!("unsupported wire type {w}")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
}

fn map_entry(b: &[u8], value: T) -> Result<(String, Value), String> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), json!(""));
    while let Some((f, w)) = r.tag()? {
        match (f, w) {
            (1, 2) => k = string(r.bytes()?)?,
            (2, 2) => {
                let raw = r.bytes()?;
                v = match value {
                    T::Bytes => json!(base64(raw)),
                    T::Quantity => message(raw, &[(1, "string", T::Str, false)])?.get("string").cloned().unwrap_or(json!("")),
                    _ => json!(string(raw)?),
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn scalar(r: &mut Reader<'_>, wire: u8, ty: T, name: &str) -> Result<Value, String> {
    Ok(match (ty, wire) {
        (T::Str, 2) => json!(string(r.bytes()?)?),
        (T::Bytes, 2) => json!(base64(r.bytes()?)),
        (T::Int | T::OptInt, 0) => json!(r.varint()? as i64),
        (T::Bool | T::OptBool, 0) => json!(r.varint()? != 0),
        (T::Msg(schema), 2) => message(r.bytes()?, schema)?,
        (T::Quantity, 2) => message(r.bytes()?, &[(1, "s", T::Str, false)])?.get("s").cloned().unwrap_or(json!("0")),
        (T::Time, 2) => {
            let t = message(r.bytes()?, &[(1, "s", T::Int, false), (2, "n", T::Int, false)])?;
            let secs = t.get("s").and_then(Value::as_i64).unwrap_or(0);
            // Go's zero time (or an unset one) is null in JSON.
            if secs <= 0 {
                Value::Null
            } else {
                json!(chrono::DateTime::from_timestamp(secs, 0).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            }
        }
        (T::IntOrString, 2) => {
            let v = message(r.bytes()?, &[(1, "type", T::Int, false), (2, "i", T::Int, false), (3, "s", T::Str, false)])?;
            if v.get("type").and_then(Value::as_i64) == Some(1) {
                v.get("s").cloned().unwrap_or(json!(""))
            } else {
                v.get("i").cloned().unwrap_or(json!(0))
            }
        }
        _ => return Err(format!("field {name:?} has an unexpected wire type {wire}")),
    })
}

fn message(b: &[u8], schema: &[F]) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((num, wire)) = r.tag()? {
        let Some(&(_, name, ty, repeated)) = schema.iter().find(|f| f.0 == num) else {
            if schema.is_empty() {
                // A message read loosely (status of a new object).
                r.skip(wire)?;
                continue;
            }
            // Go's marshaller emits non-pointer fields even when they hold
            // their zero value, which means "unset": skip those. A field
            // this table lacks that carries data is refused, never dropped.
            let zero = match wire {
                0 => r.varint()? == 0,
                2 => r.bytes()?.is_empty(),
                w => {
                    r.skip(w)?;
                    false
                }
            };
            if zero {
                continue;
            }
            return Err(format!("protobuf field {num} is not supported by this server; send JSON"));
        };
        match ty {
            T::MapStr | T::MapBytes | T::MapQuantity => {
                let vt = match ty {
                    T::MapBytes => T::Bytes,
                    T::MapQuantity => T::Quantity,
                    _ => T::Str,
                };
                let (k, v) = map_entry(r.bytes()?, vt)?;
                out.entry(name).or_insert_with(|| json!({}))[k] = v;
            }
            _ if repeated => {
                let v = scalar(&mut r, wire, ty, name)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(v);
                }
            }
            _ => {
                let v = scalar(&mut r, wire, ty, name)?;
                // Go's marshaller writes non-pointer fields even at their
                // zero value, which `omitempty` leaves out of JSON: drop
                // them, so protobuf and JSON bodies store the same object.
                let zero = matches!(ty, T::Str | T::Int | T::Bool | T::Time) && (v == json!("") || v == json!(0) || v == json!(false) || v.is_null());
                if !zero {
                    out.insert(name.to_string(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body (envelope included) into the object's
/// JSON form, with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("protobuf body lacks the k8s\\0 prefix")?;
    let mut r = Reader { buf: rest };
    let (mut type_meta, mut raw) = (Value::Null, &[][..]);
    while let Some((num, wire)) = r.tag()? {
        match (num, wire) {
            (1, 2) => type_meta = message(r.bytes()?, &[(1, "apiVersion", T::Str, false), (2, "kind", T::Str, false)])?,
            (2, 2) => raw = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    let api_version = type_meta.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = type_meta.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let schema = schema_for(&api_version, &kind).ok_or_else(|| format!("protobuf bodies of {api_version}, Kind={kind} are not supported; send JSON"))?;
    let mut obj = message(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | u32::from(wire)) as u8];
        if wire == 2 {
            out.push(payload.len() as u8);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = field(1, 2, b"cfg");
        let entry = [field(1, 2, b"k"), field(2, 2, b"v")].concat();
        let cm = [field(1, 2, &meta), field(2, 2, &entry)].concat();
        let tm = [field(1, 2, b"v1"), field(2, 2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, 2, &tm), field(2, 2, &cm)].concat();
        let v = decode(&body).expect("decode");
        assert_eq!(v, json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"}));
    }

    #[test]
    fn zero_valued_unknown_fields_are_skipped_but_data_is_refused() {
        let tm = [field(1, 2, b"v1"), field(2, 2, b"Namespace")].concat();
        let zero = [field(1, 2, &field(1, 2, b"ns")), field(9, 0, &[0])].concat();
        let body = [MAGIC.to_vec(), field(1, 2, &tm), field(2, 2, &zero)].concat();
        assert_eq!(decode(&body).expect("decode")["metadata"]["name"], "ns");
        let data = [field(1, 2, &field(1, 2, b"ns")), field(9, 0, &[1])].concat();
        let body = [MAGIC.to_vec(), field(1, 2, &tm), field(2, 2, &data)].concat();
        assert!(decode(&body).unwrap_err().contains("field 9"));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(base64(b""), "");
    }
}
