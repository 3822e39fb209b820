//! Discovery: `/api`, `/apis`, resource lists, aggregated discovery and OpenAPI v3.

use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::{ApiError, ResourceType, RESOURCES};

use crate::respond::{json_response, Resp};

/// The OpenAPI v3 documents by group-version path, with their hashes,
/// generated once on first use (they only depend on the served types).
pub(crate) fn openapi_docs() -> &'static std::collections::BTreeMap<String, (String, Bytes)> {
    static DOCS: std::sync::OnceLock<std::collections::BTreeMap<String, (String, Bytes)>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        skiff_api::registry::group_versions()
            .into_iter()
            .filter_map(|(g, v)| {
                let doc = serde_json::to_vec(&skiff_api::openapi::group_version_document(g, v)?).ok()?;
                Some((skiff_api::openapi::gv_path(g, v), (skiff_api::openapi::hash(&doc), Bytes::from(doc))))
            })
            .collect()
    })
}

/// `/openapi/v2` as JSON and as gnostic protobuf, with its ETag, made once.
fn openapi_v2() -> &'static (Bytes, Bytes, String) {
    static DOC: std::sync::OnceLock<(Bytes, Bytes, String)> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let doc = skiff_api::openapi_v2::document();
        let json = serde_json::to_vec(&doc).unwrap_or_default();
        let etag = format!("\"{}\"", skiff_api::openapi::hash(&json));
        (Bytes::from(json), Bytes::from(skiff_api::openapi_v2::to_protobuf(&doc)), etag)
    })
}

/// A resource that is answered, never stored.
struct Answered {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
}

/// Reviews (answered on create), resource metrics (`kubectl top`) and
/// component statuses (`kubectl get cs`).
const ANSWERED: &[Answered] = &[
    Answered {
        group: "",
        version: "v1",
        plural: "componentstatuses",
        kind: "ComponentStatus",
        namespaced: false,
        verbs: &["get", "list"],
        short_names: &["cs"],
    },
    Answered {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        kind: "TokenReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
    },
    Answered {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
    },
    Answered {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
    },
    Answered {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
    },
    Answered {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
    },
    Answered {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "localsubjectaccessreviews",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
        verbs: &["create"],
        short_names: &[],
    },
    Answered {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "nodes",
        kind: "NodeMetrics",
        namespaced: false,
        verbs: &["get", "list"],
        short_names: &[],
    },
    Answered { group: "metrics.k8s.io", version: "v1beta1", plural: "pods", kind: "PodMetrics", namespaced: true, verbs: &["get", "list"], short_names: &[] },
];

/// The named groups of [`ANSWERED`], each once, with its version (the
/// core group's answered resources are listed with the core group's).
fn answered_groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for a in ANSWERED.iter().filter(|a| !a.group.is_empty()) {
        if !out.contains(&(a.group, a.version)) {
            out.push((a.group, a.version));
        }
    }
    out
}

/// Verbs every served resource supports.
const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The subresources of a resource: (name, group, version, kind, verbs).
fn subresources(r: &ResourceType) -> Vec<(String, &'static str, &'static str, &'static str, Vec<&'static str>)> {
    let mut out = Vec::new();
    if r.status {
        out.push(("status".to_string(), r.group, r.version, r.kind, vec!["get", "patch", "update"]));
    }
    if r.kind == "Pod" {
        out.push(("binding".to_string(), "", "v1", "Binding", vec!["create"]));
        out.push(("eviction".to_string(), "policy", "v1", "Eviction", vec!["create"]));
        out.push(("log".to_string(), "", "v1", "Pod", vec!["get"]));
        for sub in ["exec", "attach", "portforward"] {
            out.push((sub.to_string(), "", "v1", "PodExecOptions", vec!["create", "get"]));
        }
    }
    if r.kind == "Namespace" {
        out.push(("finalize".to_string(), "", "v1", "Namespace", vec!["update"]));
    }
    if r.kind == "ServiceAccount" {
        out.push(("token".to_string(), "authentication.k8s.io", "v1", "TokenRequest", vec!["create"]));
    }
    if r.scale {
        out.push(("scale".to_string(), "autoscaling", "v1", "Scale", vec!["get", "patch", "update"]));
    }
    out
}

/// Every served resource type: the built-in ones, then the CRDs'.
struct Served<'a> {
    types: Vec<&'a ResourceType>,
}

impl<'a> Served<'a> {
    fn new(custom: &'a crate::crd::Snapshot) -> Self {
        Self { types: RESOURCES.iter().chain(custom.types.iter()).collect() }
    }

    /// The group versions, in discovery order: the core group first, the
    /// built-in groups, then custom groups, each group's versions by
    /// Kubernetes' version priority.
    fn group_versions(&self) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for r in &self.types {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        let builtin = skiff_api::registry::group_versions();
        let mut custom: Vec<(&str, &str)> = out.iter().filter(|gv| !builtin.contains(gv)).copied().collect();
        let mut groups: Vec<&str> = Vec::new();
        for (g, _) in &custom {
            if !groups.contains(g) {
                groups.push(g);
            }
        }
        custom.sort_by(|a, b| {
            let (ia, ib) = (groups.iter().position(|g| *g == a.0), groups.iter().position(|g| *g == b.0));
            ia.cmp(&ib).then_with(|| skiff_api::apiextensions::compare_versions(a.1, b.1))
        });
        builtin.into_iter().filter(|gv| out.contains(gv)).chain(custom).collect()
    }

    fn of(&self, group: &str, version: &str) -> Vec<&'a ResourceType> {
        self.types.iter().filter(|r| r.group == group && r.version == version).copied().collect()
    }
}

/// `GET /api/{v}` or `/apis/{g}/{v}`: an `APIResourceList`.
#[cfg(test)]
pub(crate) fn resource_list(group: &str, version: &str) -> Result<Resp, ApiError> {
    resource_list_of(&Served::new(&Default::default()), group, version)
}

fn resource_list_of(served: &Served, group: &str, version: &str) -> Result<Resp, ApiError> {
    let answered: Vec<Value> = ANSWERED
        .iter()
        .filter(|a| a.group == group && a.version == version)
        .map(|a| json!({"name": a.plural, "singularName": "", "namespaced": a.namespaced, "kind": a.kind, "verbs": a.verbs, "shortNames": a.short_names}))
        .collect();
    let rts = served.of(group, version);
    if rts.is_empty() && answered.is_empty() {
        return Err(ApiError::no_such_path());
    }
    // A group version may hold both (the core group's componentstatuses).
    let mut resources: Vec<Value> = answered;
    for r in &rts {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS, "shortNames": r.short_names, "categories": r.categories,
        }));
        for (sub, g, v, kind, verbs) in subresources(r) {
            let mut e = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if g != r.group || v != r.version {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            resources.push(e);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json_response(200, &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})))
}

/// The aggregated discovery version the client asked for first (`v2` or
/// `v2beta1`, which kubectl 1.27–1.29 send), if it asked for it at all.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let part = part.trim();
        if !part.contains("as=APIGroupDiscoveryList") || !part.contains("g=apidiscovery.k8s.io") {
            if part.starts_with("application/json") {
                return None;
            }
            continue;
        }
        if part.contains("v=v2beta1") {
            return Some("v2beta1");
        }
        if part.contains("v=v2") {
            return Some("v2");
        }
    }
    None
}

/// One group of an `APIGroupDiscoveryList`.
fn discovery_group(served: &Served, group: &str) -> Value {
    let versions: Vec<Value> = served
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let resources: Vec<Value> = served
                .of(g, v)
                .into_iter()
                .map(|r| {
                    let subs: Vec<Value> = subresources(r)
                        .into_iter()
                        .map(|(sub, sg, sv, kind, verbs)| json!({"subresource": sub, "responseKind": {"group": sg, "version": sv, "kind": kind}, "verbs": verbs}))
                        .collect();
                    json!({
                        "resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": r.singular,
                        "verbs": VERBS, "shortNames": r.short_names, "categories": r.categories, "subresources": subs,
                    })
                })
                .chain(ANSWERED.iter().filter(|a| a.group == g && a.version == v).map(|a| {
                    json!({"resource": a.plural, "responseKind": {"group": g, "version": v, "kind": a.kind},
                        "scope": if a.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": "", "verbs": a.verbs, "shortNames": a.short_names, "categories": [], "subresources": []})
                }))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery groups of the versions other servers serve, from
/// the resource lists their backends last answered.
fn remote_groups(remote: &[crate::aggregator::RemoteVersion]) -> Vec<Value> {
    let mut by_group: Vec<(&str, Vec<Value>)> = Vec::new();
    for r in remote {
        let list = r.resources.as_ref().and_then(|d| d["resources"].as_array()).cloned().unwrap_or_default();
        let resources: Vec<Value> = list
            .iter()
            .filter(|x| !x["name"].as_str().unwrap_or_default().contains('/'))
            .map(|x| {
                let name = x["name"].as_str().unwrap_or_default();
                let subs: Vec<Value> = list
                    .iter()
                    .filter_map(|s| {
                        let (parent, sub) = s["name"].as_str()?.split_once('/')?;
                        (parent == name).then(|| json!({"subresource": sub, "responseKind": {"group": r.group, "version": r.version, "kind": s["kind"]}, "verbs": s["verbs"]}))
                    })
                    .collect();
                json!({"resource": name, "responseKind": {"group": r.group, "version": r.version, "kind": x["kind"]},
                    "scope": if x["namespaced"] == true { "Namespaced" } else { "Cluster" }, "singularResource": x["singularName"],
                    "verbs": x["verbs"], "shortNames": x.get("shortNames").cloned().unwrap_or(json!([])), "categories": x.get("categories").cloned().unwrap_or(json!([])),
                    "subresources": subs})
            })
            .collect();
        let version = json!({"version": r.version, "resources": resources, "freshness": "Current"});
        match by_group.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => vs.push(version),
            None => by_group.push((&r.group, vec![version])),
        }
    }
    by_group.into_iter().map(|(g, versions)| json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})).collect()
}

/// Serves the discovery and OpenAPI paths, or `None` for other paths;
/// `custom`: the custom resource types served now.
pub(crate) fn serve(segs: &[&str], accept: &str, custom: &crate::crd::Snapshot, remote: &[crate::aggregator::RemoteVersion]) -> Option<Result<Resp, ApiError>> {
    let served = Served::new(custom);
    let aggregated = |groups: Vec<Value>, version: &str| {
        let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": groups});
        let mut r = json_response(200, &body);
        if let Ok(ct) = hyper::header::HeaderValue::from_str(&format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")) {
            r.headers_mut().insert("Content-Type", ct);
        }
        r
    };
    Some(Ok(match segs {
        ["api"] => match aggregated_version(accept) {
            Some(v) => aggregated(vec![discovery_group(&served, "")], v),
            None => json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
            ),
        },
        ["apis"] => {
            let mut names: Vec<&str> = Vec::new();
            for (g, _) in served.group_versions() {
                if !g.is_empty() && !names.contains(&g) {
                    names.push(g);
                }
            }
            match aggregated_version(accept) {
                Some(v) => {
                    let mut groups: Vec<Value> = names.into_iter().map(|g| discovery_group(&served, g)).collect();
                    groups.extend(remote_groups(remote));
                    groups.extend(answered_groups().into_iter().filter(|(g, _)| !remote.iter().any(|r| r.group == *g)).map(|(g, ver)| {
                        let resources: Vec<Value> = ANSWERED
                            .iter()
                            .filter(|a| a.group == g)
                            .map(|a| json!({"resource": a.plural, "responseKind": {"group": g, "version": ver, "kind": a.kind},
                                "scope": if a.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": "", "verbs": a.verbs, "shortNames": a.short_names, "categories": [], "subresources": []}))
                            .collect();
                        json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": [{"version": ver, "freshness": "Current", "resources": resources}]})
                    }));
                    aggregated(groups, v)
                }
                None => {
                    let gvs = served.group_versions();
                    let mut groups: Vec<Value> = names
                        .iter()
                        .filter(|g| !g.is_empty())
                        .map(|g| {
                            let versions: Vec<Value> =
                                gvs.iter().filter(|(gg, _)| gg == g).map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
                            json!({"name": g, "preferredVersion": versions.first().cloned(), "versions": versions})
                        })
                        .collect();
                    groups.extend(answered_groups().into_iter().filter(|(g, _)| !remote.iter().any(|r| r.group == *g)).map(|(g, v)| {
                        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                        json!({"name": g, "versions": [gv], "preferredVersion": gv})
                    }));
                    let mut remote_names: Vec<&str> = Vec::new();
                    for r in remote {
                        if !remote_names.contains(&r.group.as_str()) {
                            remote_names.push(&r.group);
                        }
                    }
                    for g in remote_names {
                        let versions: Vec<Value> = remote.iter().filter(|r| r.group == g).map(|r| json!({"groupVersion": format!("{g}/{}", r.version), "version": r.version})).collect();
                        groups.push(json!({"name": g, "preferredVersion": versions.first().cloned(), "versions": versions}));
                    }
                    json_response(200, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
                }
            }
        }
        ["api", v] => return Some(resource_list_of(&served, "", v)),
        ["apis", g] => {
            let mut versions: Vec<Value> = remote.iter().filter(|r| r.group == *g).map(|r| json!({"groupVersion": format!("{g}/{}", r.version), "version": r.version})).collect();
            if versions.is_empty() {
                versions = served
                    .group_versions()
                    .into_iter()
                    .chain(answered_groups())
                    .filter(|(gg, _)| gg == g)
                    .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
            }
            let Some(pref) = versions.first().cloned() else { return Some(Err(ApiError::no_such_path())) };
            json_response(200, &json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": versions, "preferredVersion": pref}))
        }
        ["apis", g, v] => return Some(resource_list_of(&served, g, v)),
        ["openapi", "v2"] => {
            let (json, pb, etag) = openapi_v2();
            // As kube-apiserver: the gnostic type is not a valid media type
            // for Go's mime parser, so its answer is labelled octet-stream.
            let (ctype, body) = if accept.contains(skiff_api::openapi_v2::PROTOBUF_TYPE) {
                ("application/octet-stream", pb.clone())
            } else {
                ("application/json", json.clone())
            };
            hyper::Response::builder()
                .status(200)
                .header("Content-Type", ctype)
                .header("ETag", etag.as_str())
                .header("Vary", "Accept")
                .body(crate::respond::full(body))
                .unwrap_or_else(|_| hyper::Response::new(crate::respond::full(Bytes::new())))
        }
        ["openapi", "v3"] => {
            let remote_docs = remote.iter().filter_map(|r| r.openapi.as_ref().map(|d| (skiff_api::openapi::gv_path(&r.group, &r.version), d)));
            let paths: serde_json::Map<String, Value> = openapi_docs()
                .iter()
                .chain(custom.docs.iter())
                .map(|(gv, d)| (gv.clone(), d))
                .chain(remote_docs)
                .map(|(gv, (hash, _))| (gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")})))
                .collect();
            json_response(200, &json!({"paths": paths}))
        }
        ["openapi", "v3", gv @ ..] => {
            let gv = gv.join("/");
            let remote_doc = remote.iter().find(|r| skiff_api::openapi::gv_path(&r.group, &r.version) == gv).and_then(|r| r.openapi.as_ref());
            match openapi_docs().get(&gv).or_else(|| custom.docs.get(&gv)).or(remote_doc) {
                Some((_, doc)) => crate::respond::bytes_response(200, doc.clone()),
                None => return Some(Err(ApiError::no_such_path())),
            }
        }
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_chosen_by_the_first_acceptable_type() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        assert_eq!(aggregated_version("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"), Some("v2beta1"));
        assert_eq!(aggregated_version("application/json, */*"), None);
        assert_eq!(aggregated_version(""), None);
    }

    #[test]
    fn the_core_list_holds_stored_and_answered_resources() {
        let resp = resource_list("", "v1").expect("core list");
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(resp.into_body())).expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("json");
        let names: Vec<&str> = v["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
        assert!(names.contains(&"configmaps") && names.contains(&"componentstatuses") && names.contains(&"pods/eviction"), "{names:?}");
        assert_eq!(v["groupVersion"], "v1");
    }

    #[test]
    fn apps_group_declares_scale_as_autoscaling() {
        let g = discovery_group(&Served::new(&Default::default()), "apps");
        let deploy = g["versions"][0]["resources"].as_array().and_then(|r| r.iter().find(|r| r["resource"] == "deployments")).cloned().unwrap_or_default();
        let scale = deploy["subresources"].as_array().and_then(|s| s.iter().find(|s| s["subresource"] == "scale")).cloned().unwrap_or_default();
        assert_eq!(scale["responseKind"], json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
        assert_eq!(deploy["scope"], "Namespaced");
        assert!(deploy["shortNames"].as_array().is_some_and(|s| s.contains(&json!("deploy"))));
    }
}
