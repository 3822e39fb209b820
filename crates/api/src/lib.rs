//! Kubernetes API machinery for skiff, free of any network code (like
//! kube-core): the registry of served resources, defaulting, validation,
//! selectors, the patch flavours, field management and server-side apply,
//! server-side printing (Tables), OpenAPI documents and protobuf decoding.

#![deny(missing_docs)]

pub mod admissionregistration;
pub mod apiextensions;
pub mod apiregistration;
pub mod autoscaling;
pub mod cel;
pub mod cidr;
pub mod defaults;
pub mod error;
pub mod join;
pub mod managed;
pub mod networking;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod pod_security;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod selector;
pub mod storage;
pub mod table;
pub mod validation;
pub mod yaml;

pub use error::{ApiError, FieldError};
pub use registry::{ResourceType, RESOURCES};

/// The Kubernetes version whose API (types from `k8s-openapi`'s `v1_33`)
/// skiff serves.
pub const KUBERNETES_VERSION: &str = "v1.33.0";
/// Its minor version, as `/version` reports it.
pub const KUBERNETES_MINOR: &str = "33";

/// Standard (RFC 4648, padded) base64: how Kubernetes' JSON carries bytes.
pub fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The bytes of standard base64 text, or `None` if it is not base64.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
