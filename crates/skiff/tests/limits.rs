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
        // A JSON patch whose operations, each shallow, would together nest
        // the object past what can be stored: an add at a deep path, and
        // copies of the object into its own depths (each doubling it).
        let deep = |n: usize| format!("{}{{}}{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let deep_path = format!("/x{}", "/a".repeat(100));
        let builds: Vec<String> =
            vec![format!(r#"[{{"op":"add","path":"/x","value":{}}},{{"op":"add","path":"{deep_path}","value":{}}}]"#, deep(120), deep(120)), {
                let mut ops = vec![format!(r#"{{"op":"add","path":"/x","value":{}}}"#, deep(100))];
                let mut at = "/x".to_string() + &"/a".repeat(99);
                for _ in 0..12 {
                    ops.push(format!(r#"{{"op":"copy","from":"/x","path":"{at}/b"}}"#));
                    at = format!("{at}/b{}", "/a".repeat(99));
                }
                format!("[{}]", ops.join(","))
            }];
        for body in builds {
            let t = Instant::now();
            let (code, answer) = send(&c, "PATCH", &format!("{cms}/target"), "application/json-patch+json", body.into_bytes()).await;
            assert!((400..500).contains(&code), "a deep-building JSON patch: {code} {}", &answer[..answer.len().min(300)]);
            assert!(answer.contains("past the limit"), "{answer}");
            assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        }
        let worst = slowest.await.expect("probe");
        eprintln!("slowest /readyz while deep bodies arrived: {worst:?}");
        // 10 ms is the target for an optimized server; a debug build on two
        // cores, with this test encrypting megabytes beside it, gets 200.
        let bound = if cfg!(debug_assertions) { Duration::from_millis(200) } else { Duration::from_millis(10) };
        assert!(worst < bound, "/readyz took {worst:?}");
    });
    // Nothing was stored, and the target is as it was.
    let names = common::ok(&s, &["get", "configmaps", "-o", "name"]);
    assert!(!names.contains("deep"), "{names}");
    assert_eq!(common::ok(&s, &["get", "configmap", "target", "-o", "jsonpath={.data}"]), "");
}

/// One HTTPS connection of the test's own, trusting the server's CA:
/// kube's client sends whole bodies, and a slow client is what this
/// test plays.
async fn connect(s: &common::Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = std::fs::read_to_string(s.dir.path().join("pki/ca.crt")).expect("ca");
    let tls = tokio_rustls::TlsConnector::from(skiff_pki::trusting(&ca).expect("tls"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tls.connect(name, tcp).await.expect("handshake")
}

/// Sends a POST whose 1,000-byte body arrives one byte every 200 ms, and
/// returns the status code of the answer and when it came.
async fn slow_post(s: &common::Server, token: &str, path: &str) -> (u16, Duration) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = connect(s).await;
    let started = Instant::now();
    let (read, mut write) = tokio::io::split(stream);
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{");
    write.write_all(head.as_bytes()).await.expect("head");
    let trickle = tokio::spawn(async move {
        for _ in 0..999 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b" ").await.is_err() || write.flush().await.is_err() {
                return;
            }
        }
    });
    let mut status = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tokio::io::BufReader::new(read).read_line(&mut status)).await;
    trickle.abort();
    assert!(read.is_ok(), "a slow request got no answer in 20 s");
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, started.elapsed())
}

/// Sends one whole request on a new connection; returns the status code
/// and the `Retry-After` header of the answer.
async fn whole_request(s: &common::Server, token: &str, method: &str, path: &str, body: &[u8]) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect(s).await;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body).await.expect("body");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let retry_after = answer
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("retry-after: ").or_else(|| l.strip_prefix("Retry-After: ")))
        .map(|v| v.trim().to_string());
    (code, retry_after)
}

/// 500 clients that send their bodies a byte at a time cannot hold up
/// anyone else: past 200 mutating requests in flight the rest are turned
/// away at once with a 429 and `Retry-After`, reads have their own places,
/// and each slow request ends at the deadline with a 504 `Timeout`.
#[test]
fn slow_requests_do_not_hold_up_others_and_end_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "flood-token-0123456789,flood,flood-uid,\"flooders\"\nreader-token-0123456789,reader,reader-uid,\"readers\"\n").expect("tokens");
    let s = common::start_with(&["--request-timeout", "4s", "--token-auth-file", tokens.to_str().expect("path")]);
    common::ok(&s, &["create", "clusterrolebinding", "flooders", "--clusterrole=edit", "--group=flooders"]);
    common::ok(&s, &["create", "clusterrolebinding", "readers", "--clusterrole=edit", "--group=readers"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let s = std::sync::Arc::new(s);
        let cms = "/api/v1/namespaces/default/configmaps";
        // A reader's client: a normal kube client with the reader's token.
        let reader = {
            let mut cfg = kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig"), &Default::default())
                .await
                .expect("config");
            cfg.auth_info = kube::config::AuthInfo { token: Some("reader-token-0123456789".to_string().into()), ..Default::default() };
            kube::Client::try_from(cfg).expect("client")
        };
        // The bindings take effect once the authorizer's cache has them
        // (and the aggregated `edit` role its rules).
        let until = Instant::now() + Duration::from_secs(20);
        while reader.request_text(http::Request::get(cms).body(Vec::new()).expect("request")).await.is_err() {
            assert!(Instant::now() < until, "the reader was never allowed to list");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let flood: Vec<_> = (0..500)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { slow_post(&s, "flood-token-0123456789", "/api/v1/namespaces/default/configmaps").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // While the slow bodies trickle in: reads, a write and /readyz.
        let mut worst_read = Duration::ZERO;
        let mut write_answers = Vec::new();
        for i in 0..10 {
            let t = Instant::now();
            let list = reader.request_text(http::Request::get(cms).body(Vec::new()).expect("request")).await;
            worst_read = worst_read.max(t.elapsed());
            assert!(list.is_ok(), "a read was refused during the flood: {list:?}");
            let t = Instant::now();
            let _ = reader.request_text(http::Request::get("/readyz").body(Vec::new()).expect("request")).await.expect("readyz");
            worst_read = worst_read.max(t.elapsed());
            let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"during-{i}"}}}}"#).into_bytes();
            // Sent on a connection of its own: kube's client would retry a
            // 429 by itself and hide it.
            let t = Instant::now();
            let (code, retry_after) = whole_request(&s, "reader-token-0123456789", "POST", cms, &body).await;
            write_answers.push((code, retry_after, t.elapsed()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut codes = std::collections::BTreeMap::<u16, usize>::new();
        let mut timed_out_after = Vec::new();
        for f in flood {
            let (code, took) = f.await.expect("slow client");
            *codes.entry(code).or_default() += 1;
            if code == 504 {
                timed_out_after.push(took);
            }
        }
        eprintln!("answers to the 500 slow requests: {codes:?}");
        assert_eq!(codes.keys().copied().filter(|c| *c != 429 && *c != 504).count(), 0, "{codes:?}");
        let timed_out = codes.get(&504).copied().unwrap_or(0);
        assert!(timed_out > 0 && timed_out <= 200, "{timed_out} slow requests were in flight at once (limit 200)");
        let (first, last) = (timed_out_after.iter().min().copied().unwrap_or_default(), timed_out_after.iter().max().copied().unwrap_or_default());
        eprintln!("504s came after {first:?} to {last:?}");
        assert!(first >= Duration::from_millis(3900) && last < Duration::from_secs(8), "504s at {first:?}..{last:?} for a 4 s deadline");

        eprintln!("slowest read while 500 slow requests were open: {worst_read:?}; writes: {write_answers:?}");
        assert!(worst_read < Duration::from_millis(100), "a read waited {worst_read:?}");
        for (code, retry_after, took) in &write_answers {
            assert!(*took < Duration::from_millis(100), "a write waited {took:?}");
            assert!(*code == 201 || (*code == 429 && retry_after.as_deref() == Some("1")), "a write got {code} {retry_after:?}");
        }

        // The places are free again: the reader's write goes through.
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#.to_vec();
        let req = http::Request::post(cms).header("Content-Type", "application/json").body(body).expect("request");
        assert_eq!(reader.send(req.map(kube::client::Body::from)).await.expect("an answer").status().as_u16(), 201);

        // A request's own `?timeout=` shortens the deadline.
        let (code, took) = slow_post(&s, "reader-token-0123456789", "/api/v1/namespaces/default/configmaps?timeout=1s").await;
        assert_eq!(code, 504);
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");

        // A watch outlives the deadline: it is long-running.
        let t = Instant::now();
        let req = http::Request::get(format!("{cms}?watch=true&timeoutSeconds=6")).body(Vec::new()).expect("request");
        let resp = reader.send(req.map(kube::client::Body::from)).await.expect("a watch");
        assert_eq!(resp.status().as_u16(), 200);
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert!(t.elapsed() >= Duration::from_millis(5500), "the watch ended after {:?}", t.elapsed());
        let s = std::sync::Arc::try_unwrap(s).ok();
        drop(s);
    });
}

/// With one mutating place, held by a slow client: another user's write
/// is turned away with a 429 at once, an administrator's (system:masters)
/// goes through, as in kube, and a bad `?timeout=` is a 400.
#[test]
fn system_masters_are_not_counted_and_a_bad_timeout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "slow-token-0123456789,slow,slow-uid,\"slowpokes\"\n").expect("tokens");
    let s = common::start_with(&["--max-mutating-requests-inflight", "1", "--request-timeout", "5s", "--token-auth-file", tokens.to_str().expect("path")]);
    common::ok(&s, &["create", "clusterrolebinding", "slowpokes", "--clusterrole=edit", "--group=slowpokes"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let s = std::sync::Arc::new(s);
        let cms = "/api/v1/namespaces/default/configmaps";
        let until = Instant::now() + Duration::from_secs(20);
        while whole_request(&s, "slow-token-0123456789", "GET", cms, b"").await.0 != 200 {
            assert!(Instant::now() < until, "the user was never allowed to list");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let holder = {
            let s = s.clone();
            tokio::spawn(async move { slow_post(&s, "slow-token-0123456789", "/api/v1/namespaces/default/configmaps").await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"second"}}"#;
        let (code, retry_after) = whole_request(&s, "slow-token-0123456789", "POST", cms, body).await;
        assert_eq!((code, retry_after.as_deref()), (429, Some("1")), "the second write of a user");
        // The administrator's kubeconfig (system:masters) is not counted.
        common::ok(&s, &["create", "configmap", "by-admin"]);
        let (code, _) = whole_request(&s, "slow-token-0123456789", "GET", "/readyz", b"").await;
        assert_eq!(code, 200, "/readyz while the place is held");
        let (code, _) = whole_request(&s, "slow-token-0123456789", "GET", &format!("{cms}?timeout=soon"), b"").await;
        assert_eq!(code, 400, "a timeout that is not a duration");
        let (code, took) = holder.await.expect("holder");
        assert_eq!(code, 504, "the slow write after {took:?}");
    });
}

/// CEL a client writes (a CRD's rules, a ValidatingAdmissionPolicy's
/// expressions) cannot make the server recurse as deep as it nests: deep
/// expressions are refused with a 422 naming the field, and the server
/// stays up (one such rule used to overflow a runtime thread's stack and
/// abort the whole process).
#[test]
fn deeply_nested_cel_is_refused_and_the_server_stays_up() {
    let s = common::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = client(&s).await;
        let parens = format!("{}self.a{} > 0", "(".repeat(10_000), ")".repeat(10_000));
        let chain = format!("self.a{} > 0", " + 1".repeat(5_000));
        for (i, rule) in [parens, chain].into_iter().enumerate() {
            let crd = serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("deeps{i}.example.com")},
                "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": format!("deeps{i}"), "singular": format!("deep{i}"), "kind": format!("Deep{i}")},
                    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "integer"}},
                            "x-kubernetes-validations": [{"rule": rule.clone()}]}}}}}]}
            });
            let t = Instant::now();
            let (code, answer) = send(&c, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", crd.to_string().into_bytes()).await;
            assert_eq!(code, 422, "{}", &answer[..answer.len().min(300)]);
            assert!(answer.contains("x-kubernetes-validations[0].rule") && answer.contains("past the limit"), "{}", &answer[..answer.len().min(300)]);
            assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
            let policy = serde_json::json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": format!("deep-{i}")},
                "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
                    "validations": [{"expression": rule.replace("self.a", "object.data.size()")}]}
            });
            let (code, answer) = send(&c, "POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", "application/json", policy.to_string().into_bytes()).await;
            assert_eq!(code, 422, "{}", &answer[..answer.len().min(300)]);
            assert!(answer.contains("past the limit"), "{}", &answer[..answer.len().min(300)]);
        }
    });
    assert_eq!(common::ok(&s, &["get", "--raw", "/readyz"]), "ok");
    assert!(common::ok(&s, &["get", "crd", "-o", "name"]).trim().is_empty());
}

/// A custom resource that keeps unknown fields can be as deep as a body
/// may be, but the managed fields the server adds mirror it further down:
/// an object that could not be read back once stored is refused with a
/// 422, nothing is stored, and a deep one within the limit round-trips.
#[test]
fn objects_that_could_not_be_read_back_are_not_stored() {
    let s = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let crd = common::manifest(
        &dir,
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: blobs.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: blobs, singular: blob, kind: Blob}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    );
    common::ok(&s, &["apply", "-f", &crd]);
    common::wait_for(&s, 20, |s| common::kubectl(s, &["get", "blobs"]).0);
    let blob = |name: &str, depth: usize| {
        let spec = (0..depth).fold(serde_json::json!({}), |v, _| serde_json::json!({"a": v}));
        let obj = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Blob", "metadata": {"name": name}, "spec": spec});
        common::manifest(&dir, &format!("{name}.json"), &obj.to_string())
    };
    let (shallow, deep) = (blob("within", 118), blob("past", 124));
    common::ok(&s, &["apply", "--server-side", "--field-manager=one", "-f", &shallow]);
    common::ok(&s, &["apply", "--server-side", "--field-manager=two", "-f", &shallow]);
    let read = common::ok(&s, &["get", "blob", "within", "-o", "json", "--show-managed-fields"]);
    assert!(read.contains("\"one\"") && read.contains("\"two\""), "{}", &read[..read.len().min(300)]);
    for how in [vec!["apply", "--server-side", "--field-manager=one", "-f", deep.as_str()], vec!["create", "-f", deep.as_str()]] {
        let (success, _, err) = common::kubectl(&s, &how);
        assert!(!success && err.contains("is invalid") && err.contains("past the limit of 127"), "{how:?}: {err}");
    }
    assert_eq!(common::ok(&s, &["get", "blobs", "-o", "name"]).trim(), "blob.example.com/within");
}
