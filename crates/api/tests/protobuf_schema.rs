//! Generates `src/protobuf/schema.txt`, the table that drives skiff's one
//! generic protobuf path, and fails when the committed table is stale.
//!
//! Field numbers and wire types come from the `k8s-pb` crate's prost
//! messages (generated from Kubernetes' `generated.proto` files); JSON names
//! and which fields are required come from the `k8s-openapi` schemas the
//! server already serves. Nothing per kind is written by hand, except the
//! short list below of optional fields that are Go pointers, whose zero
//! value is a value rather than "unset".
//!
//! Regenerate with `SKIFF_REGENERATE=1 cargo test -p skiff-api --test protobuf_schema`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Optional scalars that Go declares as pointers: the server keeps their
/// zero (`replicas: 0`, `gracePeriodSeconds: 0`, `automountServiceAccountToken:
/// false`, `storageClassName: ""`), where for non-pointer fields Go's
/// marshaller writes a zero that JSON's `omitempty` would have left out.
const POINTER_SCALARS: &[&str] = &[
    "core.v1.PodSpec.terminationGracePeriodSeconds",
    "core.v1.PodSpec.activeDeadlineSeconds",
    "core.v1.PodSpec.automountServiceAccountToken",
    "core.v1.PodSpec.shareProcessNamespace",
    "core.v1.PodSpec.enableServiceLinks",
    "core.v1.PodSpec.setHostnameAsFQDN",
    "core.v1.PodSpec.hostUsers",
    "core.v1.PodSpec.priority",
    "core.v1.PodSecurityContext.runAsUser",
    "core.v1.PodSecurityContext.runAsGroup",
    "core.v1.PodSecurityContext.runAsNonRoot",
    "core.v1.PodSecurityContext.fsGroup",
    "core.v1.SecurityContext.runAsUser",
    "core.v1.SecurityContext.runAsGroup",
    "core.v1.SecurityContext.runAsNonRoot",
    "core.v1.SecurityContext.privileged",
    "core.v1.SecurityContext.readOnlyRootFilesystem",
    "core.v1.SecurityContext.allowPrivilegeEscalation",
    "core.v1.Probe.terminationGracePeriodSeconds",
    "core.v1.ConfigMapVolumeSource.defaultMode",
    "core.v1.ConfigMapVolumeSource.optional",
    "core.v1.SecretVolumeSource.defaultMode",
    "core.v1.SecretVolumeSource.optional",
    "core.v1.ProjectedVolumeSource.defaultMode",
    "core.v1.DownwardAPIVolumeSource.defaultMode",
    "core.v1.KeyToPath.mode",
    "core.v1.DownwardAPIVolumeFile.mode",
    "core.v1.ConfigMapKeySelector.optional",
    "core.v1.SecretKeySelector.optional",
    "core.v1.ConfigMapEnvSource.optional",
    "core.v1.SecretEnvSource.optional",
    "core.v1.ConfigMapProjection.optional",
    "core.v1.SecretProjection.optional",
    "core.v1.ServiceAccountTokenProjection.expirationSeconds",
    "core.v1.ServiceSpec.allocateLoadBalancerNodePorts",
    "core.v1.ClientIPConfig.timeoutSeconds",
    "core.v1.PersistentVolumeClaimSpec.storageClassName",
    "core.v1.PersistentVolumeClaimSpec.volumeAttributesClassName",
    "core.v1.ServiceAccount.automountServiceAccountToken",
    "core.v1.ConfigMap.immutable",
    "core.v1.Secret.immutable",
    "core.v1.TopologySpreadConstraint.minDomains",
    "core.v1.ContainerStatus.started",
    "apps.v1.DeploymentSpec.replicas",
    "apps.v1.DeploymentSpec.revisionHistoryLimit",
    "apps.v1.DeploymentSpec.progressDeadlineSeconds",
    "apps.v1.ReplicaSetSpec.replicas",
    "core.v1.ReplicationControllerSpec.replicas",
    "apps.v1.StatefulSetSpec.replicas",
    "apps.v1.StatefulSetSpec.revisionHistoryLimit",
    "apps.v1.RollingUpdateStatefulSetStrategy.partition",
    "apps.v1.DaemonSetSpec.revisionHistoryLimit",
    "batch.v1.JobSpec.parallelism",
    "batch.v1.JobSpec.completions",
    "batch.v1.JobSpec.activeDeadlineSeconds",
    "batch.v1.JobSpec.backoffLimit",
    "batch.v1.JobSpec.ttlSecondsAfterFinished",
    "batch.v1.JobSpec.manualSelector",
    "batch.v1.JobSpec.suspend",
    "batch.v1.JobSpec.backoffLimitPerIndex",
    "batch.v1.JobSpec.maxFailedIndexes",
    "batch.v1.JobStatus.ready",
    "batch.v1.JobStatus.terminating",
    "batch.v1.CronJobSpec.startingDeadlineSeconds",
    "batch.v1.CronJobSpec.suspend",
    "batch.v1.CronJobSpec.successfulJobsHistoryLimit",
    "batch.v1.CronJobSpec.failedJobsHistoryLimit",
    "meta.v1.DeleteOptions.gracePeriodSeconds",
    "meta.v1.DeleteOptions.orphanDependents",
    "meta.v1.DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential",
    "meta.v1.ObjectMeta.deletionGracePeriodSeconds",
    "meta.v1.OwnerReference.controller",
    "meta.v1.OwnerReference.blockOwnerDeletion",
    "meta.v1.ListMeta.remainingItemCount",
    "discovery.v1.EndpointConditions.ready",
    "discovery.v1.EndpointConditions.serving",
    "discovery.v1.EndpointConditions.terminating",
    "discovery.v1.EndpointPort.port",
    "discovery.v1.EndpointPort.name",
    "authentication.v1.TokenRequestSpec.expirationSeconds",
    "storage.v1.StorageClass.allowVolumeExpansion",
    "coordination.v1.LeaseSpec.leaseDurationSeconds",
    "coordination.v1.LeaseSpec.leaseTransitions",
    "networking.v1.NetworkPolicyPort.endPort",
    "storage.v1.CSIDriverSpec.attachRequired",
    "storage.v1.CSIDriverSpec.podInfoOnMount",
    "storage.v1.CSIDriverSpec.storageCapacity",
    "storage.v1.CSIDriverSpec.requiresRepublish",
    "storage.v1.CSIDriverSpec.seLinuxMount",
    "storage.v1.CSIDriverSpec.nodeAllocatableUpdatePeriodSeconds",
    "storage.v1.CSIDriverSpec.serviceAccountTokenInSecrets",
    "storage.v1.TokenRequest.expirationSeconds",
    "storage.v1.VolumeNodeResources.count",
    "autoscaling.v2.HorizontalPodAutoscalerSpec.minReplicas",
    "autoscaling.v2.HPAScalingRules.stabilizationWindowSeconds",
    "autoscaling.v2.MetricTarget.averageUtilization",
    "autoscaling.v2.MetricValueStatus.averageUtilization",
    "autoscaling.v2.HorizontalPodAutoscalerStatus.observedGeneration",
];

/// A field as k8s-pb declares it.
struct PbField {
    snake: String,
    tag: u32,
    /// `string`, `int32`, …, a message's definition name, or `map:K:V`.
    ty: String,
    repeated: bool,
}

fn k8s_pb_source() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        // Not --offline: cargo metadata resolves every platform's packages, and a
        // build downloads only this one's.
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata answers JSON");
    let pkg = meta["packages"].as_array().into_iter().flatten().find(|p| p["name"] == "k8s-pb").expect("k8s-pb is a dependency");
    Path::new(pkg["manifest_path"].as_str().expect("manifest path")).parent().expect("crate dir").join("src")
}

/// `api/core/v1` → `io.k8s.api.core.v1` (the OpenAPI definition prefix).
fn package_of(rel: &[String]) -> String {
    let mut out = String::from("io.k8s");
    for part in rel {
        out.push('.');
        out.push_str(&part.replace('_', "-"));
    }
    out
}

/// Resolves a prost type path (`super::super::meta::v1::ObjectMeta`,
/// `Container`) from module `module` to a definition name.
fn resolve(module: &[String], path: &str) -> String {
    let path = path.trim().trim_start_matches("::prost::alloc::boxed::Box<").trim_end_matches('>');
    let mut parts: Vec<&str> = path.split("::").map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = module.to_vec();
    while parts.first() == Some(&"super") {
        parts.remove(0);
        base.pop();
    }
    base.extend(parts.iter().map(|s| s.to_string()));
    let name = base.pop().expect("type name");
    format!("{}.{}", package_of(&base), name)
}

fn scalar(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "string" => "string",
        "bool" => "bool",
        "int32" => "int32",
        "int64" => "int64",
        "double" => "double",
        "bytes" => "bytes",
        _ => return None,
    })
}

/// Parses one k8s-pb module: message name → fields.
fn parse_module(module: &[String], src: &str) -> Vec<(String, Vec<PbField>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<PbField>)> = None;
    let mut pending: Option<String> = None;
    // rustfmt may wrap a field's type over several lines: join each
    // declaration up to its trailing comma.
    let mut decl = String::new();
    for line in src.lines().map(str::trim) {
        if line.starts_with("///") || line.is_empty() || line.starts_with("#[derive") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub struct ") {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let name = rest.trim_end_matches(" {").trim_end_matches('{').trim().to_string();
            current = Some((name, Vec::new()));
            continue;
        }
        if line.starts_with("#[prost(") {
            pending = Some(line.to_string());
            continue;
        }
        if pending.is_some() {
            decl.push_str(line);
            if !decl.ends_with(',') || decl.matches('<').count() != decl.matches('>').count() {
                continue;
            }
            let attr = pending.take().expect("pending attribute");
            let d = std::mem::take(&mut decl).replace(",>", ">");
            let (name, ty) = d.trim_start_matches("pub ").split_once(':').expect("field declaration");
            let snake = name.trim().trim_start_matches("r#").to_string();
            let ty = ty.trim().trim_end_matches(',');
            let tag: u32 = attr.split("tag = \"").nth(1).and_then(|s| s.split('"').next()).and_then(|s| s.parse().ok()).expect("tag");
            let inner = attr.trim_start_matches("#[prost(").trim_end_matches(")]");
            let kind = inner.split([',', ' ']).next().unwrap_or_default();
            let repeated = inner.contains("repeated");
            let field_ty = if kind == "btree_map" {
                let kv = inner.split('"').nth(1).expect("map types");
                let (k, v) = kv.split_once(',').expect("map key, value");
                let v = v.trim();
                let v = if v == "message" {
                    let inner_ty = ty.rsplit_once(',').map(|(_, v)| v).expect("map value type").trim().trim_end_matches('>');
                    resolve(module, inner_ty)
                } else {
                    scalar(v).expect("map value scalar").to_string()
                };
                format!("map:{}:{}", k.trim(), v)
            } else if kind == "message" {
                let inner_ty = ty
                    .trim_start_matches("::core::option::Option<")
                    .trim_start_matches("::prost::alloc::vec::Vec<")
                    .strip_suffix('>')
                    .unwrap_or_else(|| panic!("wrapped message type: {d:?} {attr}"));
                resolve(module, inner_ty)
            } else {
                scalar(kind).unwrap_or_else(|| panic!("unknown prost kind {kind} in {attr}")).to_string()
            };
            if let Some((_, fields)) = current.as_mut() {
                fields.push(PbField { snake, tag, ty: field_ty, repeated });
            }
        }
    }
    if let Some(done) = current.take() {
        out.push(done);
    }
    out
}

fn norm(s: &str) -> String {
    s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            let mut c = part.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

/// Every OpenAPI definition the server knows: the served kinds and the
/// API's own request and response kinds.
fn definitions() -> serde_json::Map<String, Value> {
    use k8s_openapi::api::policy::v1 as policy;
    use k8s_openapi::api::{authentication::v1 as authn, authorization::v1 as authz, autoscaling::v1 as autoscaling, core::v1 as core};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut all = serde_json::Map::new();
    for (g, v) in skiff_api::registry::group_versions() {
        let doc = skiff_api::openapi::group_version_document(g, v).expect("served document");
        if let Some(s) = doc["components"]["schemas"].as_object() {
            all.extend(s.clone());
        }
    }
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let _ = generator.subschema_for::<meta::DeleteOptions>();
    let _ = generator.subschema_for::<meta::Status>();
    let _ = generator.subschema_for::<meta::WatchEvent<core::Pod>>();
    let _ = generator.subschema_for::<meta::APIResourceList>();
    let _ = generator.subschema_for::<autoscaling::Scale>();
    let _ = generator.subschema_for::<policy::Eviction>();
    let _ = generator.subschema_for::<core::Binding>();
    let _ = generator.subschema_for::<authn::TokenRequest>();
    let _ = generator.subschema_for::<authn::TokenReview>();
    let _ = generator.subschema_for::<authn::SelfSubjectReview>();
    let _ = generator.subschema_for::<authz::SubjectAccessReview>();
    let _ = generator.subschema_for::<authz::SelfSubjectAccessReview>();
    let _ = generator.subschema_for::<authz::LocalSubjectAccessReview>();
    let _ = generator.subschema_for::<authz::SelfSubjectRulesReview>();
    for (k, v) in generator.take_definitions(true) {
        all.entry(k).or_insert(v);
    }
    all
}

fn generate() -> String {
    let src = k8s_pb_source();
    let defs = definitions();
    let by_norm: HashMap<String, &String> = defs.keys().map(|k| (norm(k), k)).collect();
    let pointers: Vec<String> = POINTER_SCALARS.iter().map(|p| p.to_string()).collect();
    // Every stable message first: an embedded struct is recognised by its
    // own fields.
    let mut parsed: Vec<(String, String, Vec<PbField>)> = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read k8s-pb dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().and_then(|n| n.to_str()) != Some("mod.rs") {
                continue;
            }
            let rel: Vec<String> =
                path.parent().expect("dir").strip_prefix(&src).expect("under src").iter().map(|s| s.to_string_lossy().into_owned()).collect();
            // Stable versions and the machinery only: alpha and beta groups
            // are not served.
            let version = rel.last().map(String::as_str).unwrap_or_default();
            let machinery = rel.first().map(String::as_str) == Some("apimachinery");
            if !(machinery || version == "v1" || version == "v2") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            for (name, fields) in parse_module(&rel, &text) {
                let pb_def = format!("{}.{}", package_of(&rel), name);
                parsed.push((pb_def, name, fields));
            }
        }
    }
    let pb_fields: HashMap<String, Vec<String>> = parsed.iter().map(|(d, _, fs)| (norm(d), fs.iter().map(|f| norm(&f.snake)).collect())).collect();
    let mut lines = BTreeMap::new();
    {
        {
            for (pb_def, _name, fields) in parsed {
                // prost renames `APIGroup` to `ApiGroup`: find the real
                // name among the served definitions.
                let def = by_norm.get(&norm(&pb_def)).map(|s| s.to_string()).unwrap_or(pb_def);
                let schema = defs.get(&def);
                let props: HashMap<String, String> =
                    schema.and_then(|s| s["properties"].as_object()).map(|p| p.keys().map(|k| (norm(k), k.clone())).collect()).unwrap_or_default();
                let required: Vec<&str> =
                    schema.and_then(|s| s["required"].as_array()).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                let short = def.rsplitn(4, '.').take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(".");
                let mut line = def.clone();
                for f in fields {
                    let json = props.get(&norm(&f.snake)).cloned().unwrap_or_else(|| lower_camel(&f.snake));
                    let ty = if f.ty.starts_with("io.") { by_norm.get(&norm(&f.ty)).map(|s| s.to_string()).unwrap_or(f.ty.clone()) } else { f.ty.clone() };
                    let ty = if let Some(rest) = ty.strip_prefix("map:") {
                        let (k, v) = rest.split_once(':').expect("map");
                        let v = by_norm.get(&norm(v)).map(|s| s.to_string()).unwrap_or(v.to_string());
                        format!("map:{k}:{v}")
                    } else {
                        ty
                    };
                    let keep_zero = required.contains(&json.as_str()) || pointers.contains(&format!("{short}.{json}"));
                    // Go's embedded structs (`json:",inline"`: Probe's
                    // ProbeHandler, Volume's VolumeSource) are a message
                    // field in protobuf and their fields inline in JSON.
                    let nested: Vec<String> = defs
                        .get(&ty)
                        .and_then(|s| s["properties"].as_object())
                        .map(|p| p.keys().map(|k| norm(k)).collect())
                        .or_else(|| pb_fields.get(&norm(&ty)).cloned())
                        .unwrap_or_default();
                    // (k8s-pb may know a field or two newer than k8s-openapi's schemas.)
                    let shared = nested.iter().filter(|k| props.contains_key(*k)).count();
                    let inline = !props.contains_key(&norm(&f.snake)) && !nested.is_empty() && shared * 10 >= nested.len() * 8;
                    let flags = format!("{}{}{}", if f.repeated { "*" } else { "" }, if keep_zero { "!" } else { "" }, if inline { "^" } else { "" });
                    line.push_str(&format!(" {json}={}:{ty}{flags}", f.tag));
                }
                lines.insert(def, line);
            }
        }
    }
    let mut out = String::from(
        "# @generated by crates/api/tests/protobuf_schema.rs from the k8s-pb messages and the k8s-openapi schemas; do not edit.\n\
         # <definition> <jsonName>=<field number>:<type>[*: repeated][!: zero is a value][^: inline in JSON]\n",
    );
    for line in lines.values() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn the_committed_protobuf_schema_is_generated_from_k8s_pb() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protobuf/schema.txt");
    let fresh = generate();
    for p in POINTER_SCALARS {
        let (msg, field) = p.rsplit_once('.').expect("message.field");
        let found = fresh.lines().any(|l| {
            l.split(' ').next().is_some_and(|d| d.ends_with(&format!(".{msg}")))
                && l.split(' ').any(|f| f.starts_with(&format!("{field}=")) && f.ends_with('!'))
        });
        assert!(found, "pointer field {p} is not in the generated schema, or not marked as one");
    }
    if std::env::var_os("SKIFF_REGENERATE").is_some() {
        std::fs::write(&path, &fresh).expect("write schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == fresh, "{} is stale: run SKIFF_REGENERATE=1 cargo test -p skiff-api --test protobuf_schema", path.display());
}
