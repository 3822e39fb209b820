//! Bounded work per request: bodies nested 10,000 and 1,000,000 levels
//! deep, in each text format and to each write verb, are refused at once
//! with a 4xx Status, nothing is stored, and the server stays responsive.

mod common;

use std::time::{Duration, Instant};

async fn client(s: &common::Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    kube::Client::try_from(cfg).expect("client")
}

async fn send(c: &kube::Client, method: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, String) {
    let req = http::Request::builder().method(method).uri(path).header("Content-Type", ct).body(body).expect("request");
    let resp = c.send(req.map(kube::client::Body::from)).await.expect("an answer");
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn deeply_nested_bodies_are_refused_at_once_in_every_format() {
    let s = common::start();
    common::ok(&s, &["create", "configmap", "target"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = client(&s).await;
        // /readyz keeps answering quickly while the deep bodies arrive.
        let probe = c.clone();
        let slowest = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                let t = Instant::now();
                let req = http::Request::get("/readyz").body(Vec::new()).expect("request");
                let _ = probe.request_text(req).await;
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        });
        let cms = "/api/v1/namespaces/default/configmaps";
        for depth in [10_000usize, 1_000_000] {
            let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let json = |name: &str| format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"x":{nest}}}"#).into_bytes();
            let yaml = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\nx: {nest}\n").into_bytes();
            let block = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\nx:\n{}y\n", "- ".repeat(depth)).into_bytes();
            let patch = format!(r#"[{{"op":"add","path":"/data","value":{nest}}}]"#).into_bytes();
            let cases: Vec<(&str, String, &str, Vec<u8>)> = vec![
                ("POST", cms.to_string(), "application/json", json("deep-post")),
                ("POST", cms.to_string(), "application/yaml", yaml("deep-post-yaml")),
                ("POST", cms.to_string(), "application/yaml", block("deep-post-block")),
                ("PUT", format!("{cms}/target"), "application/json", json("target")),
                ("PUT", format!("{cms}/target"), "application/yaml", yaml("target")),
                ("PATCH", format!("{cms}/target"), "application/merge-patch+json", json("target")),
                ("PATCH", format!("{cms}/target"), "application/strategic-merge-patch+json", json("target")),
                ("PATCH", format!("{cms}/target"), "application/json-patch+json", patch.clone()),
                ("PATCH", format!("{cms}/deep-apply?fieldManager=t"), "application/apply-patch+yaml", yaml("deep-apply")),
                ("PATCH", format!("{cms}/deep-apply-block?fieldManager=t"), "application/apply-patch+yaml", block("deep-apply-block")),
            ];
            for (method, path, ct, body) in cases {
                let t = Instant::now();
                let (code, answer) = send(&c, method, &path, ct, body).await;
                let took = t.elapsed();
                assert!((400..500).contains(&code), "{method} {ct} at depth {depth}: {code} {}", &answer[..answer.len().min(300)]);
                assert!(answer.contains("\"kind\":\"Status\""), "a Status: {}", &answer[..answer.len().min(300)]);
                assert!(took < Duration::from_secs(1), "{method} {ct} at depth {depth} took {took:?}");
            }
        }
        let worst = slowest.await.expect("probe");
        eprintln!("slowest /readyz while deep bodies arrived: {worst:?}");
        assert!(worst < Duration::from_millis(200), "/readyz took {worst:?}");
    });
    // Nothing was stored, and the target is as it was.
    let names = common::ok(&s, &["get", "configmaps", "-o", "name"]);
    assert!(!names.contains("deep"), "{names}");
    assert_eq!(common::ok(&s, &["get", "configmap", "target", "-o", "jsonpath={.data}"]), "");
}
