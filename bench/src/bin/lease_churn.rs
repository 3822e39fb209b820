//! The store under the churn k3s's SQLite layer is known to fail under:
//! 1,000 Leases renewed every 10 s (100 updates/s) through the API for a
//! given time (default 600 s), with the server's default background
//! compaction. Every minute it prints the database + WAL size beside the
//! live data (the JSON of the current Leases) and renewal latency.
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin lease_churn [-- SECONDS]`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use skiff_bench::{ms, rss_kib, start_skiff, summarize};

const LEASES: usize = 1000;

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(600);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let data = dir.path().join("skiff");
    // Further arguments go to the server, e.g. `--compaction-interval 2`.
    let extra: Vec<String> = std::env::args().skip(2).collect();
    let mut args = vec!["--disable", "scheduler,controllers,agent,proxy,dns"];
    args.extend(extra.iter().map(String::as_str));
    let skiff = start_skiff(&data, &args)?;
    let kc = kube::config::Kubeconfig::read_from(&skiff.kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for i in 0..LEASES {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("node-{i}")},
            "spec": {"holderIdentity": format!("node-{i}"), "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"}
        }))?;
        api.create(&PostParams::default(), &lease).await?;
    }
    println!("{LEASES} leases renewed every 10 s for {seconds} s; server args {extra:?} (default compaction: every 1 s)");
    println!("{:>6} {:>12} {:>10} {:>12} {:>8} {:>10} {:>10} {:>9}", "t s", "db+wal MB", "live MB", "renewals", "ratio", "p50 ms", "p99 ms", "RSS MiB");
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut next_report = Duration::from_secs(60);
    let mut lat = Vec::new();
    let mut renewals = 0u64;
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let t = Instant::now();
        api.patch(&format!("node-{}", i % LEASES), &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"renewTime": now}}))).await?;
        lat.push(t.elapsed());
        renewals += 1;
        i += 1;
        if start.elapsed() >= next_report {
            next_report += Duration::from_secs(60);
            let req = http::Request::get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").body(Vec::new())?;
            let live = client.request_text(req).await?.len() as f64 / 1e6;
            let disk = (size(&data.join("state.db")) + size(&data.join("state.db-wal"))) as f64 / 1e6;
            let f = summarize(std::mem::take(&mut lat), Duration::from_secs(60));
            let rss = rss_kib(skiff.child.id())? as f64 / 1024.0;
            println!(
                "{:>6} {:>12.2} {:>10.2} {:>12} {:>7.2}x {:>10.2} {:>10.2} {:>9.1}",
                start.elapsed().as_secs(),
                disk,
                live,
                renewals,
                disk / live,
                ms(f.p50),
                ms(f.p99),
                rss
            );
        }
    }
    Ok(())
}
