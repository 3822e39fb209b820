//! End to end with the official Python client (`kubernetes` on PyPI)
//! against the API server: the requests it sends (bodies without
//! apiVersion/kind, strategic-merge and JSON patches, watches from a
//! list's resourceVersion, the scale subresource) and the Status codes and
//! reasons it raises. The assertions live in `tests/python/api.py`.

mod common;

#[test]
fn the_python_client_creates_patches_watches_and_reads_errors() {
    let s = common::start();
    let kubeconfig = s.kubeconfig.display().to_string();
    common::python_client("api.py", &[&kubeconfig]);
}
