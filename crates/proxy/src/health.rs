//! `/healthz` and `/metrics` on kube-proxy's port, and the per-Service
//! health checks (`healthCheckNodePort`) that tell a load balancer which
//! nodes have local endpoints of an `externalTrafficPolicy: Local` Service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::model::ServicePort;

/// What `/healthz` and `/metrics` report.
pub struct State {
    registry: Registry,
    sync_duration: Histogram,
    programming: Histogram,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    full_syncs: Counter,
    partial_syncs: Counter,
    last_updated: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl State {
    /// Registers the metrics, named as kube-proxy names them.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", sync_duration.clone());
        let programming = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds (from a change seen to its rules applied)",
            programming.clone(),
        );
        let last_sync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced", last_sync.clone());
        let full_syncs = Counter::default();
        registry.register("kubeproxy_sync_full_proxy_rules", "Full syncs (the table rebuilt)", full_syncs.clone());
        let partial_syncs = Counter::default();
        registry.register("kubeproxy_sync_partial_proxy_rules", "Partial syncs (only what changed)", partial_syncs.clone());
        Self { registry, sync_duration, programming, last_sync, full_syncs, partial_syncs, last_updated: Mutex::new(None) }
    }

    /// Records a successful sync that took `took`, `since` after the oldest change it applied.
    pub fn synced(&self, took: Duration, since: Duration, full: bool) {
        self.sync_duration.observe(took.as_secs_f64());
        self.programming.observe(since.as_secs_f64());
        let now = chrono::Utc::now();
        self.last_sync.set(now.timestamp_millis() as f64 / 1000.0);
        if full {
            self.full_syncs.inc();
        } else {
            self.partial_syncs.inc();
        }
        *self.last_updated.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    fn healthz(&self) -> (StatusCode, String) {
        let last = *self.last_updated.lock().unwrap_or_else(|e| e.into_inner());
        let now = chrono::Utc::now();
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let body = serde_json::json!({"lastUpdated": last.map(fmt).unwrap_or_default(), "currentTime": fmt(now), "nodeEligible": true}).to_string();
        // Healthy once the rules have been written.
        (if last.is_some() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/healthz` and `/metrics` on `addr` until shutdown. A port
/// already taken (another proxy on this machine) is logged, not fatal.
pub async fn serve(addr: SocketAddr, state: std::sync::Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "not serving the proxy's /healthz and /metrics");
            return;
        }
    };
    let (h, m) = (state.clone(), state);
    let app = Router::new()
        .route("/healthz", get(move || async move { h.healthz() }))
        .route("/livez", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.metrics()) }));
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
}

/// What a Service health check answers: namespace, name, local endpoints.
type CheckInfo = (String, String, usize);

/// A running health check server and what it answers.
struct CheckServer {
    info: watch::Sender<CheckInfo>,
    task: tokio::task::JoinHandle<()>,
}

/// One health check server per `healthCheckNodePort`.
pub struct ServiceChecks {
    servers: Mutex<HashMap<u16, CheckServer>>,
    shutdown: watch::Receiver<bool>,
}

impl ServiceChecks {
    /// None yet.
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        Self { servers: Mutex::new(HashMap::new()), shutdown }
    }

    /// Starts, updates and stops servers to match `ports`.
    pub fn update(&self, ports: &[ServicePort]) {
        let mut want: HashMap<u16, CheckInfo> = HashMap::new();
        for p in ports {
            if let Some(hc) = p.health_check_node_port {
                let e = want.entry(hc).or_insert_with(|| (p.namespace.clone(), p.name.clone(), 0));
                e.2 = e.2.max(p.local_endpoint_count());
            }
        }
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|port, server| {
            let keep = want.contains_key(port);
            if !keep {
                server.task.abort();
            }
            keep
        });
        for (port, info) in want {
            match servers.get(&port) {
                Some(server) => {
                    server.info.send_if_modified(|cur| {
                        let changed = *cur != info;
                        *cur = info.clone();
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(info);
                    let task = tokio::spawn(serve_check(port, rx, self.shutdown.clone()));
                    servers.insert(port, CheckServer { info: tx, task });
                }
            }
        }
    }
}

impl Drop for ServiceChecks {
    fn drop(&mut self) {
        for (_, server) in self.servers.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            server.task.abort();
        }
    }
}

/// kube-proxy's answer: 200 with the local endpoint count while there is
/// one, 503 when there is none (the load balancer then skips this node).
async fn serve_check(port: u16, info: watch::Receiver<CheckInfo>, mut shutdown: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(port, error = %e, "cannot serve a Service health check");
            return;
        }
    };
    let app = Router::new().fallback(move || {
        let (ns, name, n) = info.borrow().clone();
        async move {
            let body = serde_json::json!({"service": {"namespace": ns, "name": name}, "localEndpoints": n, "serviceProxyHealthy": true}).to_string();
            (if n > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
        }
    });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
}
