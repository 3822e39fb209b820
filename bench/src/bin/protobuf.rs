//! Kubernetes' protobuf encoding against JSON, through the API server over
//! HTTPS, the way client-go and kubectl talk to it.
//!
//! Prints, for a list of N pods (default 10,000): bytes on the wire,
//! p50/p99 of the request, and the client's decode time (serde into
//! k8s-openapi's `PodList` for JSON, prost into k8s-pb's for protobuf),
//! then end to end (request + decode); and pod creates/s at 64 clients
//! with JSON bodies and with protobuf bodies (k8s-pb messages, answered in
//! protobuf, as client-go asks).
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin protobuf [-- N]`.

use std::time::Instant;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::List;
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kube::api::{Api, PostParams};
use prost::Message;
use skiff_bench::{client, ms, run_clients, start_skiff, summarize};

const PB: &str = "application/vnd.kubernetes.protobuf";

fn pod_json(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.0", "ports": [{"containerPort": 8080}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
}

/// The same pod as k8s-pb messages in Kubernetes' envelope, as client-go
/// writes it.
fn pod_protobuf(name: &str) -> Vec<u8> {
    let quantity = |s: &str| k8s_pb::apimachinery::pkg::api::resource::Quantity { string: Some(s.into()) };
    let pod = pb::Pod {
        metadata: Some(pb_meta::ObjectMeta {
            name: Some(name.into()),
            labels: [("app".to_string(), "bench".to_string()), ("tier".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(pb::PodSpec {
            containers: vec![pb::Container {
                name: Some("app".into()),
                image: Some("registry.local/app:1.0".into()),
                ports: vec![pb::ContainerPort { container_port: Some(8080), ..Default::default() }],
                resources: Some(pb::ResourceRequirements {
                    requests: [("cpu".to_string(), quantity("100m")), ("memory".to_string(), quantity("64Mi"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some("Pod".into()) }),
        raw: Some(pod.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [b"k8s\0".to_vec(), u.encode_to_vec()].concat()
}

async fn send(c: &kube::Client, method: &str, path: &str, ctype: &str, accept: &str, body: Vec<u8>) -> anyhow::Result<(u16, bytes::Bytes)> {
    let req = http::Request::builder().method(method).uri(path).header("Content-Type", ctype).header("Accept", accept).body(kube::client::Body::from(body))?;
    let resp = c.send(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}


#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let skiff = start_skiff(&dir.path().join("skiff"), &["--disable", "scheduler,controllers,agent,proxy,dns"])?;
    let c = client(&skiff.kubeconfig).await?;
    for ns in ["json", "protobuf"] {
        let n: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(c.clone()).create(&PostParams::default(), &n).await?;
    }

    // The store grows as the run goes on, so the two encodings take turns
    // (half their creates each turn) rather than one running after the other.
    println!("pod creates at 64 clients, {total} each, in alternating halves");
    let mut rates: std::collections::BTreeMap<&str, Vec<skiff_bench::Figures>> = Default::default();
    for (round, (ns, ctype, accept)) in
        [("json", "application/json", "application/json"), ("protobuf", PB, PB), ("protobuf", PB, PB), ("json", "application/json", "application/json")]
            .into_iter()
            .enumerate()
    {
        let c2 = c.clone();
        let s = run_clients(total / 2, 64, move |i| {
            let c = c2.clone();
            async move {
                let name = format!("p{round}-{i}");
                let body = if ctype == PB { pod_protobuf(&name) } else { pod_json(&name).to_string().into_bytes() };
                let (status, body) = send(&c, "POST", &format!("/api/v1/namespaces/{ns}/pods"), ctype, accept, body).await?;
                anyhow::ensure!(status == 201, "create: {status} {}", String::from_utf8_lossy(&body));
                Ok(())
            }
        })
        .await?;
        println!("  round {round}, {ns:>8} bodies: {:>7.0} creates/s, p50 {:.2} ms, p99 {:.2} ms", s.rate, ms(s.p50), ms(s.p99));
        rates.entry(ns).or_default().push(s);
    }
    let mean = |v: &[skiff_bench::Figures]| v.iter().map(|f| f.rate).sum::<f64>() / v.len().max(1) as f64;
    let (j, p) = (mean(&rates["json"]), mean(&rates["protobuf"]));
    println!("  mean: JSON {j:.0}/s, protobuf {p:.0}/s: protobuf / JSON {:.2}x", p / j.max(1e-9));

    let lists = 20;
    println!("\nlist of {total} pods, {lists} lists each");
    let path = "/api/v1/namespaces/json/pods";
    let mut results = Vec::new();
    for accept in ["application/json", PB] {
        let (mut req_lat, mut dec_lat, mut both) = (Vec::new(), Vec::new(), Vec::new());
        let (mut bytes, mut items) = (0, 0);
        let t = Instant::now();
        for _ in 0..lists {
            let s = Instant::now();
            let (status, body) = send(&c, "GET", path, "application/json", accept, Vec::new()).await?;
            anyhow::ensure!(status == 200, "list: {status}");
            let got = s.elapsed();
            let d = Instant::now();
            items = if accept == PB {
                let u = Unknown::decode(body.strip_prefix(b"k8s\0").ok_or_else(|| anyhow::anyhow!("not protobuf"))?)?;
                pb::PodList::decode(u.raw.unwrap_or_default().as_slice())?.items.len()
            } else {
                serde_json::from_slice::<List<Pod>>(&body)?.items.len()
            };
            dec_lat.push(d.elapsed());
            req_lat.push(got);
            both.push(s.elapsed());
            bytes = body.len();
        }
        anyhow::ensure!(items == total, "listed {items} of {total}");
        let (r, d, e) = (summarize(req_lat, t.elapsed()), summarize(dec_lat, t.elapsed()), summarize(both, t.elapsed()));
        let name = if accept == PB { "protobuf" } else { "JSON" };
        println!(
            "  {name:>8}: {:.1} MB; request p50 {:.1} ms, p99 {:.1} ms; client decode p50 {:.1} ms, p99 {:.1} ms; end to end p50 {:.1} ms, p99 {:.1} ms",
            bytes as f64 / 1e6,
            ms(r.p50),
            ms(r.p99),
            ms(d.p50),
            ms(d.p99),
            ms(e.p50),
            ms(e.p99)
        );
        results.push(e.p50);
    }
    if let [json, proto] = results[..] {
        println!("  end to end p50, JSON / protobuf: {:.2}x", json.as_secs_f64() / proto.as_secs_f64().max(1e-9));
    }
    Ok(())
}
