//! Bounded work per request, on the release build: how long `/readyz`
//! and ordinary requests take while hostile requests arrive.
//!
//! Prints:
//! - `/readyz` latency (p50/p99/max, probed every 5 ms on a connection of
//!   its own) while bodies nested 10,000 and 1,000,000 levels deep, in JSON,
//!   flow and block YAML, merge, strategic-merge, JSON and apply patches,
//!   go to POST, PUT and PATCH three times over (target: under 10 ms), and
//!   how long those requests took to be refused;
//! - with 500 clients sending POST bodies a byte at a time: a reader's
//!   list and a writer's create latency (p50/p99/max; target: no wait over
//!   100 ms), and what the slow requests were answered (429 past the 200
//!   mutating places, 504 at the deadline).
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin limits`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_bench::{client, ms, start_skiff};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    if v.is_empty() {
        return "no samples".into();
    }
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)", ms(at(0.5)), ms(at(0.99)), ms(v[v.len() - 1]), v.len())
}

struct Target {
    port: u16,
    tls: tokio_rustls::TlsConnector,
}

impl Target {
    async fn connect(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        Ok(self.tls.connect(rustls_name()?, tcp).await?)
    }

    /// One whole request on a new connection; the answer's status code.
    async fn request(&self, token: &str, method: &str, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        let mut s = self.connect().await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        Ok(String::from_utf8_lossy(&answer).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    /// A POST whose 1,000-byte body comes a byte every 200 ms; the status
    /// code of its answer.
    async fn slow_post(&self, token: &str, path: &str) -> anyhow::Result<u16> {
        let s = self.connect().await?;
        let (read, mut write) = tokio::io::split(s);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        write.write_all(head.as_bytes()).await?;
        let trickle = tokio::spawn(async move {
            for _ in 0..999 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if write.write_all(b" ").await.is_err() || write.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut status = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tokio::io::BufReader::new(read).read_line(&mut status)).await;
        trickle.abort();
        Ok(status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
    }
}

fn rustls_name() -> anyhow::Result<tokio_rustls::rustls::pki_types::ServerName<'static>> {
    Ok(tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1")?)
}

/// Probes `/readyz` every 5 ms until `stop`, on its own thread and runtime.
fn probe_readyz(kubeconfig: std::path::PathBuf, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let c = client(&kubeconfig).await.expect("client");
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let _ = c.request_text(http::Request::get("/readyz").body(Vec::new()).expect("request")).await;
                samples.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            samples
        })
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "flood-token-0123456789,flood,flood-uid,\"system:authenticated\"\nuser-token-0123456789,user,user-uid,\"users\"\n")?;
    let data = dir.path().join("data");
    let server = start_skiff(
        &data,
        &["--disable", "agent,proxy,dns,cloud-controller", "--request-timeout", "4s", "--token-auth-file", tokens.to_str().unwrap_or_default()],
    )?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let url = kc.clusters.first().and_then(|c| c.cluster.as_ref()).and_then(|c| c.server.clone()).unwrap_or_default();
    let port: u16 = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).unwrap_or(0);
    let ca = std::fs::read_to_string(data.join("pki/ca.crt"))?;
    let target = Arc::new(Target { port, tls: tokio_rustls::TlsConnector::from(skiff_pki::trusting(&ca)?) });
    let admin = client(&server.kubeconfig).await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    let post =
        |path: &str, body: String| http::Request::post(path.to_string()).header("Content-Type", "application/json").body(body.into_bytes()).expect("request");
    admin.request_text(post(cms, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"target"}}"#.into())).await?;
    for (name, group) in [("users", "users"), ("flood", "system:authenticated")] {
        let binding = format!(
            r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{{"name":"bench-{name}"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"}},"subjects":[{{"kind":"Group","name":"{group}","apiGroup":"rbac.authorization.k8s.io"}}]}}"#
        );
        admin.request_text(post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)).await?;
    }
    let until = Instant::now() + Duration::from_secs(20);
    while target.request("user-token-0123456789", "GET", cms, b"").await? != 200 {
        anyhow::ensure!(Instant::now() < until, "the bench user was never allowed to list");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. Deep bodies.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = probe_readyz(server.kubeconfig.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = Vec::new();
    for _ in 0..3 {
        for depth in [10_000usize, 1_000_000] {
            let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let json = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"deep"}},"x":{nest}}}"#);
            let yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx: {nest}\n");
            let block = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx:\n{}y\n", "- ".repeat(depth));
            let patch = format!(r#"[{{"op":"add","path":"/data","value":{nest}}}]"#);
            let cases = [
                ("POST", cms.to_string(), "application/json", &json),
                ("POST", cms.to_string(), "application/yaml", &yaml),
                ("POST", cms.to_string(), "application/yaml", &block),
                ("PUT", format!("{cms}/target"), "application/json", &json),
                ("PATCH", format!("{cms}/target"), "application/merge-patch+json", &json),
                ("PATCH", format!("{cms}/target"), "application/strategic-merge-patch+json", &json),
                ("PATCH", format!("{cms}/target"), "application/json-patch+json", &patch),
                ("PATCH", format!("{cms}/deep?fieldManager=b"), "application/apply-patch+yaml", &yaml),
                ("PATCH", format!("{cms}/deep?fieldManager=b"), "application/apply-patch+yaml", &block),
            ];
            for (method, path, ct, body) in cases {
                let req = http::Request::builder().method(method).uri(path).header("Content-Type", ct).body(body.clone().into_bytes())?;
                let t = Instant::now();
                let resp = admin.send(req.map(kube::client::Body::from)).await?;
                let code = resp.status().as_u16();
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                refused.push(t.elapsed());
                anyhow::ensure!((400..500).contains(&code), "{method} {ct} at depth {depth}: {code}");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let readyz = probe.join().map_err(|_| anyhow::anyhow!("probe panicked"))?;
    println!("deep bodies (10,000 and 1,000,000 levels, 9 formats x verbs, 3 rounds): refused in {}", percentiles(refused));
    println!("  /readyz meanwhile: {}  (target: under 10 ms)", percentiles(readyz));

    // 2. 500 slow clients.
    let flood: Vec<_> = (0..500)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { target.slow_post("flood-token-0123456789", "/api/v1/namespaces/default/configmaps").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    let mut write_codes = std::collections::BTreeMap::<u16, usize>::new();
    let until = Instant::now() + Duration::from_millis(2500);
    let mut i = 0;
    while Instant::now() < until {
        let t = Instant::now();
        let code = target.request("user-token-0123456789", "GET", cms, b"").await?;
        reads.push(t.elapsed());
        anyhow::ensure!(code == 200, "a read got {code}");
        let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"during-{i}"}}}}"#);
        let t = Instant::now();
        let code = target.request("user-token-0123456789", "POST", cms, body.as_bytes()).await?;
        writes.push(t.elapsed());
        *write_codes.entry(code).or_default() += 1;
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for f in flood {
        *codes.entry(f.await??).or_default() += 1;
    }
    println!("500 clients sending POST bodies a byte every 200 ms (deadline 4 s, 200 mutating places):");
    println!("  their answers: {codes:?}");
    println!("  a reader's list meanwhile (new connection each): {}  (target: under 100 ms)", percentiles(reads));
    println!("  a writer's create meanwhile: {}, answered {write_codes:?}", percentiles(writes));
    Ok(())
}
