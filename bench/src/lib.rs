//! Helpers shared by skiff's benchmarks: concurrent load with latency
//! percentiles, a real etcd to compare against, process memory.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Throughput and latency of one run.
pub struct Figures {
    /// Operations per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Figures from latencies measured over `elapsed`.
pub fn summarize(mut lat: Vec<Duration>, elapsed: Duration) -> Figures {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Figures { rate: lat.len() as f64 / elapsed.as_secs_f64(), p50: pick(0.5), p99: pick(0.99) }
}

/// Runs `total` operations from `clients` concurrent tasks.
pub async fn run_clients<F, Fut>(total: usize, clients: usize, op: F) -> anyhow::Result<Figures>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < total {
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
                i += clients;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(summarize(all, start.elapsed()))
}

/// A `kube` client from an admin kubeconfig.
pub async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running etcd, killed on drop.
pub struct Etcd(Child);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a one-member etcd with its data under `dir`; returns its client URL.
pub async fn start_etcd(dir: &std::path::Path) -> anyhow::Result<(Etcd, String)> {
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args(["--data-dir", &dir.join("etcd").to_string_lossy()])
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")?;
    let etcd = Etcd(child);
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok((etcd, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd did not become healthy")
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Puts `n` 1 KiB values into etcd from `clients` concurrent clients through
/// its v3 JSON gateway (each put is durable: etcd fsyncs before answering).
pub async fn etcd_puts(url: &str, n: usize, clients: usize, tag: &str) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let val = base64(&[b'x'; 1024]);
    let (url, tag) = (url.to_string(), tag.to_string());
    run_clients(n, clients, move |i| {
        let (http, url, val) = (http.clone(), url.clone(), val.clone());
        let key = base64(format!("/registry/pods/{tag}/p{i}").as_bytes());
        async move {
            let r = http.post(format!("{url}/v3/kv/put")).json(&serde_json::json!({"key": key, "value": val})).send().await?;
            if !r.status().is_success() {
                bail!("etcd put: {}", r.status());
            }
            Ok(())
        }
    })
    .await
}

fn base64(b: &[u8]) -> String {
    skiff_api::base64(b)
}

/// Started-here `skiff server`, killed on drop.
pub struct Skiff {
    /// The process.
    pub child: Child,
    /// Its admin kubeconfig.
    pub kubeconfig: std::path::PathBuf,
    /// Time from spawn to its port accepting with the kubeconfig written.
    pub ready_after: Duration,
}

impl Drop for Skiff {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the release `skiff server` next to this benchmark's binary.
pub fn start_skiff(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<Skiff> {
    let bin = std::env::current_exe()?.with_file_name("skiff");
    if !bin.exists() {
        bail!("build it first: cargo build --release -p skiff ({} missing)", bin.display());
    }
    let port = free_port()?;
    let t = Instant::now();
    let child = Command::new(&bin)
        .args(["server", "--data-dir"])
        .arg(dir)
        .args(["--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let kubeconfig = dir.join("admin.kubeconfig");
    let mut s = Skiff { child, kubeconfig, ready_after: Duration::ZERO };
    loop {
        if s.kubeconfig.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("server not ready after 20 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    s.ready_after = t.elapsed();
    Ok(s)
}

/// Runs this benchmark inside a network namespace of its own (made here,
/// removed after): the rules it programs and the traffic it sends never
/// touch the host's. Returns `true` in the child (go on), `false` in the
/// parent (the child has run; exit).
pub fn in_own_netns() -> anyhow::Result<bool> {
    if std::env::var_os("SKIFF_BENCH_NETNS").is_some() {
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
        if !up.success() {
            bail!("ip link set lo up failed");
        }
        return Ok(true);
    }
    let name = format!("skiff-bench-{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &name]).status().context("ip netns add (root and iproute2 needed)")?;
    if !made.success() {
        bail!("ip netns add {name} failed (root needed)");
    }
    let status =
        Command::new("ip").args(["netns", "exec", &name]).arg(std::env::current_exe()?).args(std::env::args().skip(1)).env("SKIFF_BENCH_NETNS", &name).status();
    let _ = Command::new("ip").args(["netns", "delete", &name]).status();
    if !status?.success() {
        bail!("the benchmark failed");
    }
    Ok(false)
}

/// The pod the API benchmarks create: labels, one container with a port
/// and requests (defaulting, validation and admission all have work).
pub fn bench_pod(name: &str) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.0", "ports": [{"containerPort": 8080}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))?)
}
