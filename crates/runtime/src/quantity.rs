//! Resource quantities: see [`skiff_api::quantity`] (network-free, shared
//! with the API server's admission).

pub use skiff_api::quantity::*;
