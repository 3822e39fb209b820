//! Kubernetes API machinery for skiff, free of any network code (like
//! kube-core): the registry of served resources, defaulting, validation,
//! selectors, the patch flavours, field management and server-side apply,
//! server-side printing (Tables), OpenAPI documents and protobuf decoding.

#![deny(missing_docs)]

pub mod defaults;
pub mod error;
pub mod join;
pub mod managed;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod storage;
pub mod table;
pub mod validation;

pub use error::{ApiError, FieldError};
pub use registry::{ResourceType, RESOURCES};

/// The Kubernetes version whose API (types from `k8s-openapi`'s `v1_33`)
/// skiff serves.
pub const KUBERNETES_VERSION: &str = "v1.33.0";
/// Its minor version, as `/version` reports it.
pub const KUBERNETES_MINOR: &str = "33";

/// Standard (RFC 4648, padded) base64: how Kubernetes' JSON carries bytes.
/// Small enough that a dependency would cost more than it saves.
pub fn base64(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
