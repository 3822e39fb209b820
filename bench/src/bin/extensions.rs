//! API extensions: custom resources against ConfigMaps, and what an
//! admission webhook adds to a request.
//!
//! Prints:
//! - creates/s (p50/p99) at 64 clients of a custom resource whose CRD has
//!   a structural schema (types, enum, pattern, bounds, defaults) and a CEL
//!   rule, beside ConfigMap creates of the same fields in the same run (both
//!   sent as `DynamicObject`s, so the client side costs the same), and the
//!   ratio (target ≥ 85 %);
//! - ConfigMap create latency from one client without and with one
//!   validating webhook (HTTPS on loopback, a Rust server here that allows
//!   everything), the webhook's own handling time, and the latency added
//!   beyond it (target < 2 ms at p99).
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin extensions [-- N]`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use skiff_bench::{client, ms, run_clients, start_skiff, summarize, Figures};

const CLIENTS: usize = 64;


fn crd() -> anyhow::Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": "widgets.bench.skiff.dev"},
        "spec": {"group": "bench.skiff.dev", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["color", "size"],
                        "x-kubernetes-validations": [{"rule": "self.replicas <= self.maxReplicas", "message": "too many"}],
                        "properties": {
                            "color": {"type": "string", "enum": ["red", "green", "blue"]},
                            "size": {"type": "string", "pattern": "^[0-9]+(cm|m)$"},
                            "replicas": {"type": "integer", "minimum": 0, "default": 1},
                            "maxReplicas": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                            "owner": {"type": "string", "maxLength": 63},
                            "tags": {"type": "array", "maxItems": 8, "items": {"type": "string"}}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}
    }))?)
}

fn widget(name: &str) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "bench.skiff.dev/v1", "kind": "Widget", "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"color": "red", "size": "10cm", "replicas": 3, "owner": "team-a", "tags": ["a", "b", "c"]}
    }))?)
}

/// A ConfigMap in the same client representation as the custom resources
/// (`DynamicObject`), so both sides pay the same client-side encoding.
fn configmap_dynamic(name: &str) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "bench"}},
        "data": {"color": "red", "size": "10cm", "replicas": "3", "owner": "team-a", "tags": "a,b,c"}
    }))?)
}

fn configmap(name: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "data": {"color": "red", "size": "10cm", "replicas": "3", "owner": "team-a", "tags": "a,b,c"}
    }))?)
}

fn line(what: &str, f: &Figures) {
    println!("{what}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms", f.rate, ms(f.p50), ms(f.p99));
}

/// A webhook that allows everything, timing its own handling of each review.
async fn webhook(dir: &std::path::Path) -> anyhow::Result<(u16, String, Arc<Mutex<Vec<Duration>>>)> {
    let pki = skiff_pki::ClusterPki::load_or_create(dir.join("hook-ca"))?;
    let pair = pki.issue_server("hook", &["127.0.0.1".to_string()])?;
    let tls = pki.server_tls(&pair, &[b"http/1.1"])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let own = Arc::new(Mutex::new(Vec::new()));
    let timing = own.clone();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, timing) = (acceptor.clone(), timing.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let timing = timing.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let t = Instant::now();
                        let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        let answer = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "response": {"uid": review["request"]["uid"], "allowed": true}});
                        let out = Bytes::from(answer.to_string());
                        if let Ok(mut v) = timing.lock() {
                            v.push(t.elapsed());
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(out)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    });
    let ca = skiff_api::base64(pki.ca_cert_pem().as_bytes());
    Ok((port, ca, own))
}

/// ConfigMap creates one at a time, their latencies.
async fn sequential(cms: &Api<ConfigMap>, tag: &str, n: usize) -> anyhow::Result<Figures> {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        cms.create(&PostParams::default(), &configmap(&format!("{tag}-{i}"))?).await?;
        lat.push(t.elapsed());
    }
    Ok(summarize(lat, start.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let skiff = start_skiff(&dir.path().join("skiff"), &["--disable", "scheduler,controllers,agent,proxy,dns"])?;
    let c = client(&skiff.kubeconfig).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.create(&PostParams::default(), &crd()?).await?;
    let t = Instant::now();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("bench.skiff.dev", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    while widgets.list(&Default::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("CRD created → its resource served: {:.1} ms", ms(t.elapsed()));

    // Warm up both paths, then measure alternately (ConfigMaps, custom
    // resources, ConfigMaps again) so drift in the store shows.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..200 {
        cms.create(&PostParams::default(), &configmap(&format!("warm-{i}"))?).await?;
        widgets.create(&PostParams::default(), &widget(&format!("warm-{i}"))?).await?;
    }
    let cm_ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps");
    let dyn_cms: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &cm_ar);
    let run_cms = |tag: &'static str| {
        let cms = dyn_cms.clone();
        run_clients(total, CLIENTS, move |i| {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &configmap_dynamic(&format!("{tag}-{i}"))?).await?;
                Ok(())
            }
        })
    };
    let cm1 = run_cms("a").await?;
    line(&format!("ConfigMap creates, {CLIENTS} clients"), &cm1);
    let w = widgets.clone();
    let cr = run_clients(total, CLIENTS, move |i| {
        let w = w.clone();
        async move {
            w.create(&PostParams::default(), &widget(&format!("w-{i}"))?).await?;
            Ok(())
        }
    })
    .await?;
    line(&format!("custom resource creates (schema + CEL), {CLIENTS} clients"), &cr);
    let cm2 = run_cms("b").await?;
    line(&format!("ConfigMap creates again, {CLIENTS} clients"), &cm2);
    let cm_rate = (cm1.rate + cm2.rate) / 2.0;
    println!("custom resources / ConfigMaps: {:.1} % (target ≥ 85 %)", 100.0 * cr.rate / cm_rate);

    // Webhook overhead, one client.
    let n = (total / 5).max(500);
    let plain = sequential(&cms, "plain", n).await?;
    line("ConfigMap create, 1 client, no webhook", &plain);
    let (port, ca, own) = webhook(dir.path()).await?;
    let config: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "bench"},
        "webhooks": [{"name": "allow.bench.skiff.dev", "clientConfig": {"url": format!("https://127.0.0.1:{port}/allow"), "caBundle": ca},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail"}]
    }))?;
    let vwc = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration"),
        "validatingwebhookconfigurations",
    );
    Api::<DynamicObject>::all_with(c.clone(), &vwc).create(&PostParams::default(), &config).await?;
    // Until the configuration is in the server's cache, creates pass without it.
    while own.lock().map(|v| v.is_empty()).unwrap_or(true) {
        cms.create(&PostParams::default(), &configmap(&format!("probe-{}", uuid_like()))?).await?;
    }
    if let Ok(mut v) = own.lock() {
        v.clear();
    }
    let hooked = sequential(&cms, "hooked", n).await?;
    line("ConfigMap create, 1 client, one validating webhook", &hooked);
    let own = own.lock().map(|v| v.clone()).unwrap_or_default();
    let own = summarize(own, Duration::from_secs(1));
    println!("the webhook's own handling: p50 {:.3} ms, p99 {:.3} ms", ms(own.p50), ms(own.p99));
    let added = |a: Duration, b: Duration, o: Duration| ms(a.saturating_sub(b).saturating_sub(o));
    println!(
        "added by the webhook beyond its own time: p50 {:.2} ms, p99 {:.2} ms (target < 2 ms at p99)",
        added(hooked.p50, plain.p50, own.p50),
        added(hooked.p99, plain.p99, own.p99)
    );
    Ok(())
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
