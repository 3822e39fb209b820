//! ServiceAccount tokens, as kube-apiserver serves them: the TokenRequest
//! subresource (`serviceaccounts/NAME/token`, `kubectl create token`),
//! authentication of the tokens it issued (the ServiceAccount, and the pod
//! or Secret a token is bound to, must still exist with the uid the token
//! names: a deleted pod's token is refused), TokenReview, and the OpenID
//! discovery documents that publish the signing key.

use serde_json::{json, Value};
use skiff_api::ApiError;
use skiff_pki::service_account::{Claims, KubernetesClaim, ObjectRef};
use skiff_pki::CertIdentity;

use crate::handler::State;
use crate::respond::{json_response, Resp};

/// kube-apiserver's shortest allowed token life.
const MIN_EXPIRATION: i64 = 600;
/// The default token life of a TokenRequest.
const DEFAULT_EXPIRATION: i64 = 3600;
/// The longest allowed (kube's limit is 2^32 seconds).
const MAX_EXPIRATION: i64 = 1 << 32;

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The stored object `plural`/`name` in `ns`, if there is one.
async fn stored(state: &State, plural: &str, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    let Some(rt) = skiff_api::registry::find("", "v1", plural) else { return Ok(None) };
    let kv = state.store.get(&rt.key(Some(ns), name)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()
}

/// The identity of a token this server issued, when it is valid for one
/// of `audiences` and everything it names still exists.
pub(crate) async fn authenticate(state: &State, token: &str, audiences: &[String]) -> Option<CertIdentity> {
    // Only what looks like a JWT is worth a signature check.
    if token.split('.').count() != 3 {
        return None;
    }
    let claims = state.service_accounts.verify(token)?;
    if !claims.aud.iter().any(|a| audiences.contains(a)) {
        return None;
    }
    let k = &claims.kubernetes;
    let sa = stored(state, "serviceaccounts", &k.namespace, &k.serviceaccount.name).await.ok()??;
    if uid(&sa) != k.serviceaccount.uid {
        return None;
    }
    for (plural, bound) in [("pods", &k.pod), ("secrets", &k.secret)] {
        if let Some(b) = bound {
            let obj = stored(state, plural, &k.namespace, &b.name).await.ok()??;
            if uid(&obj) != b.uid {
                return None;
            }
        }
    }
    Some(CertIdentity {
        user: claims.sub.clone(),
        groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{}", k.namespace), "system:authenticated".into()],
    })
}

/// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`.
pub(crate) async fn token_request(state: &State, ns: &str, name: &str, mut req: Value) -> Result<Resp, ApiError> {
    let sa_rt = skiff_api::registry::find("", "v1", "serviceaccounts").ok_or_else(ApiError::no_such_path)?;
    let sa = stored(state, "serviceaccounts", ns, name).await?.ok_or_else(|| ApiError::not_found(sa_rt, name))?;
    let invalid = |field: &str, value: Value, detail: &str| {
        ApiError::new(422, "Invalid", format!("TokenRequest.authentication.k8s.io {name:?} is invalid: {field}: Invalid value: {value}: {detail}"))
    };
    let spec = req.get("spec").cloned().unwrap_or(json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => v.as_i64().ok_or_else(|| invalid("spec.expirationSeconds", v.clone(), "must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid("spec.expirationSeconds", json!(expiration), "may not specify a duration less than 10 minutes"));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid("spec.expirationSeconds", json!(expiration), "may not specify a duration larger than 2^32 seconds"));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => state.api_audiences.clone(),
    };
    let mut kube = KubernetesClaim {
        namespace: ns.to_string(),
        serviceaccount: ObjectRef { name: name.to_string(), uid: uid(&sa).to_string() },
        pod: None,
        secret: None,
        node: None,
    };
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or_default();
        let bname = bound.get("name").and_then(Value::as_str).unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => return Err(invalid("spec.boundObjectRef.kind", json!(other), "supported values: \"Pod\", \"Secret\"")),
        };
        let rt = skiff_api::registry::find("", "v1", plural).ok_or_else(ApiError::no_such_path)?;
        let obj = stored(state, plural, ns, bname).await?.ok_or_else(|| ApiError::not_found(rt, bname))?;
        if let Some(want) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            if want != uid(&obj) {
                return Err(ApiError::conflict_with(rt, bname, &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated")));
            }
        }
        let r = ObjectRef { name: bname.to_string(), uid: uid(&obj).to_string() };
        if kind == "Pod" {
            if let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                let node_uid = match skiff_api::registry::find("", "v1", "nodes") {
                    Some(nrt) => state.store.get(&nrt.key(None, node)).await.ok().flatten().and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()),
                    None => None,
                };
                kube.node = Some(ObjectRef { name: node.to_string(), uid: node_uid.as_ref().map(uid).unwrap_or_default().to_string() });
            }
            kube.pod = Some(r);
        } else {
            kube.secret = Some(r);
        }
    }
    let now = now_secs();
    let claims = Claims {
        iss: state.service_accounts.issuer().to_string(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: kube,
    };
    let token = state.service_accounts.sign(&claims).map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration);
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(json_response(201, &req))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub(crate) async fn token_review(state: &State, mut review: Value) -> Result<Resp, ApiError> {
    let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default().to_string();
    if token.is_empty() {
        return Err(ApiError::new(422, "Invalid", "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value: token must not be empty"));
    }
    let asked: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let audiences = if asked.is_empty() { state.api_audiences.clone() } else { asked.clone() };
    let user = match state.tokens.user(&token) {
        Some(u) if asked.is_empty() => Some(u.clone()),
        _ => authenticate(state, &token, &audiences).await,
    };
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    review["status"] = match user {
        Some(u) => json!({"authenticated": true, "user": {"username": u.user, "groups": u.groups}, "audiences": audiences}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Ok(json_response(201, &review))
}

/// `/.well-known/openid-configuration` and `/openid/v1/jwks`.
pub(crate) fn discovery(state: &State, path: &str) -> Option<Resp> {
    let doc = match path {
        ".well-known/openid-configuration" => state.service_accounts.openid_configuration(),
        "openid/v1/jwks" => state.service_accounts.jwks(),
        _ => return None,
    };
    let mut r = json_response(200, &doc);
    if path == "openid/v1/jwks" {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/jwk-set+json"));
    }
    Some(r)
}
