//! Response helpers: JSON bodies, Status errors, warnings.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use serde_json::{json, Value};
use skiff_api::{ApiError, ResourceType};
use skiff_store::StoreError;

/// The response type of every handler.
pub(crate) type Resp = Response<UnsyncBoxBody<Bytes, std::convert::Infallible>>;

/// A body of bytes.
pub(crate) fn full(b: Bytes) -> UnsyncBoxBody<Bytes, std::convert::Infallible> {
    Full::new(b).boxed_unsync()
}

tokio::task_local! {
    /// Whether the request being served asked for protobuf first (client-go).
    /// Every JSON answer passes [`json_response`] or [`bytes_response`],
    /// which then answer protobuf when the object's kind has a message.
    pub(crate) static PROTOBUF: bool;
}

fn wants_protobuf() -> bool {
    PROTOBUF.try_with(|p| *p).unwrap_or(false)
}

/// A JSON response (protobuf for a client that asked for it, when the
/// object's kind has a message).
pub(crate) fn json_response(code: u16, v: &Value) -> Resp {
    if wants_protobuf() {
        if let Some(pb) = skiff_api::protobuf::encode(v) {
            return protobuf_response(code, Bytes::from(pb));
        }
    }
    json_bytes(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

/// A response whose body is already JSON (protobuf for a client that asked
/// for it, when the body is an object whose kind has a message).
pub(crate) fn bytes_response(code: u16, body: Bytes) -> Resp {
    if wants_protobuf() {
        if let Some(pb) = serde_json::from_slice::<Value>(&body).ok().and_then(|v| skiff_api::protobuf::encode(&v)) {
            return protobuf_response(code, Bytes::from(pb));
        }
    }
    json_bytes(code, body)
}

fn json_bytes(code: u16, body: Bytes) -> Resp {
    Response::builder().status(code).header("Content-Type", "application/json").body(full(body)).unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A response whose body is already Kubernetes' protobuf.
pub(crate) fn protobuf_response(code: u16, body: Bytes) -> Resp {
    Response::builder()
        .status(code)
        .header("Content-Type", skiff_api::protobuf::CONTENT_TYPE)
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A `Status` response for an error.
pub(crate) fn error(e: &ApiError) -> Resp {
    let mut resp = json_response(e.code, &e.to_status());
    // A client told to come back later is told when, as kube does.
    if let Some(secs) = e.details.as_ref().and_then(|d| d.get("retryAfterSeconds")).and_then(Value::as_u64) {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("Retry-After", v);
        }
    }
    resp
}

/// Maps a store error to the API error a client sees.
pub(crate) fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(rt, name),
        StoreError::AlreadyExists(_) => ApiError::already_exists(rt, name),
        StoreError::Conflict { .. } => ApiError::conflict(rt, name),
        StoreError::Compacted { requested, compacted } => ApiError::expired(format!("too old resource version: {requested} ({compacted})")),
        other => store_unavailable(other),
    }
}

/// A store error that is not about one object: the backend is slow,
/// overloaded or gone (etcd), answered as kube-apiserver answers its
/// storage errors.
pub(crate) fn store_unavailable(e: StoreError) -> ApiError {
    match e {
        StoreError::Timeout(m) => ApiError::timeout(format!("Timeout: request did not complete within the allowed duration: {m}"), 2),
        StoreError::TooManyRequests(m) => ApiError::too_many_requests(m, 1),
        StoreError::Unavailable(m) => ApiError::unavailable(m),
        other => ApiError::internal(other.to_string()),
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Adds `Warning: 299 - "…"` headers, which kubectl prints.
pub(crate) fn with_warnings(mut resp: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("299 - {w:?}")) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

pub(crate) fn with_rv(value: &[u8], rev: i64) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(value).map_err(|e| ApiError::internal(e.to_string()))?;
    v["metadata"]["resourceVersion"] = json!(rev.to_string());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_or_overloaded_store_is_answered_as_kube_apiserver_answers() {
        let timeout = store_unavailable(StoreError::Timeout("etcdserver: request timed out".into()));
        assert_eq!((timeout.code, timeout.reason), (504, "Timeout"));
        let resp = error(&timeout);
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers().get("Retry-After").and_then(|v| v.to_str().ok()), Some("2"));
        let busy = store_unavailable(StoreError::TooManyRequests("etcdserver: too many requests".into()));
        assert_eq!((busy.code, busy.reason, busy.message.as_str()), (429, "TooManyRequests", "etcdserver: too many requests"));
        assert_eq!(error(&busy).headers().get("Retry-After").and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(store_unavailable(StoreError::Unavailable("no member".into())).code, 503);
        assert_eq!(error(&ApiError::internal("x")).headers().get("Retry-After"), None);
    }
}
