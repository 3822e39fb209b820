//! `/metrics`: request counts and latencies in Prometheus text format,
//! named as kube-apiserver names them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of one request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, …
    pub(crate) verb: String,
    /// Resource plural, or empty for non-resource paths.
    pub(crate) resource: String,
    /// HTTP status code.
    pub(crate) code: String,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LatencyLabels {
    /// Kubernetes verb.
    pub(crate) verb: String,
    /// Resource plural.
    pub(crate) resource: String,
}

/// The API server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    store_revision: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("apiserver_request", "Counter of apiserver requests broken out by verb, resource and HTTP response code.", requests.clone());
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0])
        });
        registry.register("apiserver_request_duration_seconds", "Response latency distribution in seconds for each verb and resource.", latency.clone());
        let store_revision = Gauge::default();
        registry.register("skiff_store_revision", "The store's current revision.", store_revision.clone());
        Self { registry, requests, latency, store_revision }
    }

    /// Records one finished request.
    pub(crate) fn observe(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() }).inc();
        if verb != "watch" {
            self.latency.get_or_create(&LatencyLabels { verb: verb.into(), resource: resource.into() }).observe(seconds);
        }
    }

    /// The text exposition.
    pub(crate) fn render(&self, store_revision: i64) -> String {
        self.store_revision.set(store_revision);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_verb_resource_and_code() {
        let m = Metrics::new();
        m.observe("list", "pods", 200, 0.01);
        m.observe("list", "pods", 200, 0.02);
        let text = m.render(7);
        assert!(text.contains(r#"apiserver_request_total{verb="list",resource="pods",code="200"} 2"#), "{text}");
        assert!(text.contains("skiff_store_revision 7"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_bucket"), "{text}");
    }
}
