//! API errors, rendered as Kubernetes `Status` objects with Kubernetes'
//! codes, reasons and message shapes.

use serde_json::{json, Value};

use crate::registry::ResourceType;

/// What is wrong with one field (Kubernetes' `field.ErrorType`).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// The value is malformed.
    Invalid(Value),
    /// The value is not one of the supported ones.
    NotSupported(Value, Vec<Value>),
    /// The change or value is not allowed.
    Forbidden,
    /// The value repeats one that must be unique.
    Duplicate(Value),
    /// The value is too long.
    TooLong(Value, usize),
    /// A list has more items than allowed.
    TooMany(usize, u64),
}

/// One field error, as `field.Error` renders it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// Why, in words; may be empty.
    pub detail: String,
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl FieldError {
    /// A missing required field.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Required, detail: detail.into() }
    }
    /// A malformed value.
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Invalid(value.into()), detail: detail.into() }
    }
    /// An unsupported value.
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&'static str]) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::NotSupported(value.into(), supported.iter().map(|s| Value::from(*s)).collect()), detail: String::new() }
    }
    /// A value outside a list of supported values of any JSON type (a
    /// custom resource's `enum`).
    pub fn not_supported_values(field: impl Into<String>, value: impl Into<Value>, supported: Vec<Value>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::NotSupported(value.into(), supported), detail: String::new() }
    }
    /// Too many items in a list.
    pub fn too_many(field: impl Into<String>, actual: usize, max: u64) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::TooMany(actual, max), detail: String::new() }
    }
    /// A forbidden value or change.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Forbidden, detail: detail.into() }
    }
    /// A duplicated value.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Duplicate(value.into()), detail: String::new() }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::TooLong(..) => "FieldValueTooLong",
            FieldErrorKind::TooMany(..) => "FieldValueTooMany",
        }
    }

    /// The message without the field path (the `message` of a cause).
    pub fn body(&self) -> String {
        let mut s = match &self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Invalid(v) => format!("Invalid value: {}", render_value(v)),
            FieldErrorKind::NotSupported(v, supported) => {
                let list: Vec<String> = supported.iter().map(render_value).collect();
                format!("Unsupported value: {}: supported values: {}", render_value(v), list.join(", "))
            }
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {}", render_value(v)),
            FieldErrorKind::TooMany(actual, max) => format!("Too many: {actual}: must have at most {max} items"),
            FieldErrorKind::TooLong(v, max) => {
                format!("Too long: may not be more than {max} bytes (value {})", render_value(v))
            }
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// An error answered to a client as a `Status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when there are any.
    pub details: Option<Value>,
}

fn details(rt: &ResourceType, name: &str) -> Value {
    json!({"name": name, "group": rt.group, "kind": rt.plural})
}

impl ApiError {
    /// A plain error with a code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }
    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    /// 404 NotFound for an object.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self { details: Some(details(rt, name)), ..Self::new(404, "NotFound", format!("{} {name:?} not found", rt.qualified())) }
    }
    /// 404 NotFound for a path that serves nothing.
    pub fn no_such_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }
    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource ({method})"))
    }
    /// 405 MethodNotAllowed, with the reason.
    pub fn method_not_allowed_because(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    /// 409 AlreadyExists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self { details: Some(details(rt, name)), ..Self::new(409, "AlreadyExists", format!("{} {name:?} already exists", rt.qualified())) }
    }
    /// 409 Conflict: the object changed since the client read it.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::conflict_with(rt, name, "the object has been modified; please apply your changes to the latest version and try again")
    }
    /// 409 Conflict with a given explanation.
    pub fn conflict_with(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self { details: Some(details(rt, name)), ..Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} {name:?}: {why}", rt.qualified())) }
    }
    /// 410 Gone (reason `Expired`): a resource version or continue token is
    /// older than what is retained.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }
    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"))
    }
    /// 422 Invalid with field errors.
    pub fn invalid(rt: &ResourceType, name: &str, errors: Vec<FieldError>) -> Self {
        let list = if errors.len() == 1 { errors[0].to_string() } else { format!("[{}]", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")) };
        let causes: Vec<Value> = errors.iter().map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field})).collect();
        Self {
            details: Some(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})),
            ..Self::new(422, "Invalid", format!("{} {name:?} is invalid: {list}", rt.kind))
        }
    }
    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }
    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }
    /// 504 Timeout: the request may or may not have taken effect; retry
    /// after `retry_after` seconds.
    pub fn timeout(message: impl Into<String>, retry_after: u32) -> Self {
        Self { details: Some(json!({"retryAfterSeconds": retry_after})), ..Self::new(504, "Timeout", message) }
    }
    /// 429 TooManyRequests, with the seconds to wait (sent as `Retry-After`).
    pub fn too_many_requests(message: impl Into<String>, retry_after: u32) -> Self {
        Self { details: Some(json!({"retryAfterSeconds": retry_after})), ..Self::new(429, "TooManyRequests", message) }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
