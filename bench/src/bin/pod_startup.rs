//! Pod startup latency on a real node: `skiff server` with its agent
//! (containerd + runc + the CNI bridge), the image already present.
//!
//! Prints create → Running (as a client watching the pods sees it) for
//! pods created one at a time and for 30 created at once, p50/p99; beside
//! them the runtime's own time for the same work through CRI alone, one at
//! a time and 30 at once (RunPodSandbox + CreateContainer + StartContainer,
//! no API server or kubelet in front); how soon a container's exit shows
//! in its pod's status; how soon a logged line reaches `logs -f`; then the RSS of skiff (API server, controllers,
//! scheduler and agent in one process) and of its containerd, idle.
//!
//! Needs root and Debian's containerd, runc, containernetworking-plugins
//! and busybox-static. Run: `cargo build --release -p skiff && cargo run
//! --release -p skiff-bench --bin pod_startup`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use skiff_bench::{ms, rss_kib, start_skiff, summarize};
use skiff_cri::api;

const IMAGE: &str = "skiff.local/busybox:1";

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "startup"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}]}
    }))?)
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())))
}

/// Waits, watching the pods (no polling), until each named pod has all
/// its containers running; returns each one's time since `start`.
async fn wait_running(pods: &Api<Pod>, names: &[String], start: Instant) -> anyhow::Result<Vec<Duration>> {
    use futures::TryStreamExt;
    let mut done: HashMap<String, Duration> = HashMap::new();
    let wc = kube::runtime::watcher::Config::default().labels("bench=startup");
    let mut events = std::pin::pin!(kube::runtime::watcher(pods.clone(), wc));
    while done.len() < names.len() {
        let left = Duration::from_secs(120).saturating_sub(start.elapsed());
        let ev = match tokio::time::timeout(left, events.try_next()).await {
            Err(_) => bail!("only {} of {} pods Running after 120 s", done.len(), names.len()),
            Ok(ev) => ev?.context("the pod watch ended")?,
        };
        if let kube::runtime::watcher::Event::Apply(p) | kube::runtime::watcher::Event::InitApply(p) = ev {
            let name = p.metadata.name.clone().unwrap_or_default();
            if names.contains(&name) && running(&p) {
                done.entry(name).or_insert_with(|| start.elapsed());
            }
        }
    }
    Ok(done.into_values().collect())
}

/// Waits, watching, until the pod reaches `phase`.
async fn wait_phase(pods: &Api<Pod>, name: &str, phase: &str) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let wc = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(kube::runtime::watcher(pods.clone(), wc));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ev = match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), events.try_next()).await {
            Err(_) => bail!("{name} not {phase} after 60 s"),
            Ok(ev) => ev?.context("the pod watch ended")?,
        };
        if let kube::runtime::watcher::Event::Apply(p) | kube::runtime::watcher::Event::InitApply(p) = ev {
            if p.status.and_then(|s| s.phase).as_deref() == Some(phase) {
                return Ok(());
            }
        }
    }
}

/// Deletes the benchmark's pods and waits until the runtime has no
/// sandbox left, so that the next phase does not share the machine with
/// this one's teardown (pods deleted with grace 0 leave the API at once,
/// while the kubelet still stops their sandboxes).
async fn clear(pods: &Api<Pod>, socket: &std::path::Path) -> anyhow::Result<()> {
    let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    pods.delete_collection(&dp, &ListParams::default().labels("bench=startup")).await?;
    let rt = skiff_cri::Runtime::connect(socket).await?;
    let t = Instant::now();
    loop {
        let left = pods.list(&ListParams::default().labels("bench=startup")).await?.items.len();
        let sandboxes = rt.runtime.clone().list_pod_sandbox(api::ListPodSandboxRequest { filter: None }).await?.into_inner().items.len();
        if left == 0 && sandboxes == 0 {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("after 120 s, {left} pods and {sandboxes} sandboxes are left");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the runtime alone takes for one pod through CRI: its sandbox
/// (RunPodSandbox, with its CNI address), and sandbox + create + start.
struct RuntimeTimes {
    sandbox: Duration,
    running: Duration,
}

/// The same work through CRI alone (no API server or kubelet in front):
/// sandbox, create, start, for `n` pods one at a time or all at once; each
/// pod's `running` is counted from the start of the run when all go at
/// once (as create → Running is), from its own start otherwise.
async fn runtime_alone(socket: &std::path::Path, logs: &std::path::Path, n: usize, at_once: bool) -> anyhow::Result<Vec<RuntimeTimes>> {
    let rt = skiff_cri::Runtime::connect(socket).await?;
    let one = |i: usize, t0: Instant| {
        let (rt, logs) = (rt.clone(), logs.to_path_buf());
        async move {
            let uid = format!("bench-{i}-{}", std::process::id());
            let config = api::PodSandboxConfig {
                metadata: Some(api::PodSandboxMetadata { name: format!("cri-{i}"), uid: uid.clone(), namespace: "bench".into(), attempt: 0 }),
                hostname: format!("cri-{i}"),
                log_directory: logs.join(&uid).display().to_string(),
                labels: [("bench".to_string(), "cri".to_string())].into(),
                linux: Some(api::LinuxPodSandboxConfig { cgroup_parent: format!("/skiff/pod{uid}"), ..Default::default() }),
                ..Default::default()
            };
            std::fs::create_dir_all(logs.join(&uid))?;
            let t = Instant::now();
            let req = api::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
            let id = rt.runtime.clone().run_pod_sandbox(req).await?.into_inner().pod_sandbox_id;
            let sandbox = t.elapsed();
            let c = api::ContainerConfig {
                metadata: Some(api::ContainerMetadata { name: "c".into(), attempt: 0 }),
                image: Some(api::ImageSpec { image: IMAGE.into(), ..Default::default() }),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "c.log".into(),
                ..Default::default()
            };
            let req = api::CreateContainerRequest { pod_sandbox_id: id.clone(), config: Some(c), sandbox_config: Some(config) };
            let cid = rt.runtime.clone().create_container(req).await?.into_inner().container_id;
            rt.runtime.clone().start_container(api::StartContainerRequest { container_id: cid }).await?;
            let running = if at_once { t0.elapsed() } else { t.elapsed() };
            anyhow::Ok((id, RuntimeTimes { sandbox, running }))
        }
    };
    let mut made = Vec::new();
    if at_once {
        let t0 = Instant::now();
        made = futures::future::try_join_all((0..n).map(|i| one(i, t0))).await?;
    } else {
        for i in 0..n {
            made.push(one(i, Instant::now()).await?);
        }
    }
    let mut times = Vec::new();
    for (id, t) in made {
        rt.runtime.clone().stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
        rt.runtime.clone().remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id }).await?;
        times.push(t);
    }
    Ok(times)
}

fn containerd_pid(config: &std::path::Path) -> Option<u32> {
    let want = config.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read_to_string(e.path().join("cmdline")).ok()?;
        (cmd.starts_with("containerd\0") || cmd.contains("/containerd\0")).then_some(())?;
        cmd.contains(&want).then_some(pid)
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let missing = skiff_cri::containerd::missing();
    if !missing.is_empty() {
        bail!("this benchmark needs {}", missing.join(", "));
    }
    let busybox = skiff_cri::which("busybox").context("busybox-static is needed")?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("skiff");
    std::fs::create_dir_all(data.join("agent/images"))?;
    skiff_cri::oci::Image::busybox(IMAGE, &busybox)?.write(&data.join("agent/images/busybox.tar"))?;
    let skiff = start_skiff(
        &data,
        &["--disable", "proxy,dns", "--flannel-backend", "none", "--kubelet-port", "0", "--cluster-cidr", "10.99.0.0/16", "--node-name", "bench-node"],
    )?;
    let client = skiff_runtime::client(&skiff.kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let t = Instant::now();
    loop {
        let ready = nodes
            .get_opt("bench-node")
            .await?
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("node not Ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("node Ready {:.0} ms after the server answered", ms(t.elapsed()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let socket = data.join("agent/containerd/containerd.sock");
    // Warm-up: the first pod pays for the image's first unpack and the bridge.
    pods.create(&PostParams::default(), &pod("warmup")?).await?;
    wait_running(&pods, &["warmup".into()], Instant::now()).await?;
    clear(&pods, &socket).await?;

    let mut one = Vec::new();
    for i in 0..10 {
        let name = format!("one-{i}");
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)?).await?;
        one.extend(wait_running(&pods, &[name], t).await?);
    }
    let f = summarize(one, Duration::from_secs(1));
    println!("one at a time (10 pods): create → Running p50 {:.0} ms, p99 {:.0} ms", ms(f.p50), ms(f.p99));
    clear(&pods, &socket).await?;

    let names: Vec<String> = (0..30).map(|i| format!("batch-{i}")).collect();
    let t = Instant::now();
    let creates = names.iter().map(|n| {
        let pods = pods.clone();
        let n = n.clone();
        async move { pods.create(&PostParams::default(), &pod(&n)?).await.map_err(anyhow::Error::from) }
    });
    futures::future::try_join_all(creates).await?;
    let lat = wait_running(&pods, &names, t).await?;
    let all = t.elapsed();
    let f = summarize(lat, all);
    println!("30 at once: create → Running p50 {:.0} ms, p99 {:.0} ms, all Running after {:.0} ms", ms(f.p50), ms(f.p99), ms(all));
    clear(&pods, &socket).await?;

    // A container's exit reaching its pod's status: a pod that runs `sleep
    // 2`, from Running seen to Succeeded seen, less the 2 s it sleeps.
    let mut exits = Vec::new();
    for i in 0..5 {
        let name = format!("exit-{i}");
        let mut p = pod(&name)?;
        if let Some(spec) = p.spec.as_mut() {
            spec.restart_policy = Some("Never".into());
            spec.containers[0].command = Some(vec!["sleep".into(), "2".into()]);
        }
        pods.create(&PostParams::default(), &p).await?;
        wait_running(&pods, std::slice::from_ref(&name), Instant::now()).await?;
        let running_at = Instant::now();
        wait_phase(&pods, &name, "Succeeded").await?;
        exits.push(running_at.elapsed().saturating_sub(Duration::from_secs(2)));
    }
    let f = summarize(exits, Duration::from_secs(1));
    println!("container exit → pod Succeeded seen (5 pods, `sleep 2`): p50 {:.0} ms, p99 {:.0} ms", ms(f.p50), ms(f.p99));
    clear(&pods, &socket).await?;

    // A line a container writes reaching a `logs -f` client: the CRI log
    // stamps each line when containerd reads it, and the follower (through
    // the API server and the kubelet) sees it some time later.
    {
        use futures::{AsyncBufReadExt, StreamExt};
        let mut p = pod("talker")?;
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].command = Some(vec!["sh".into(), "-c".into(), "while true; do echo line; sleep 0.1; done".into()]);
        }
        pods.create(&PostParams::default(), &p).await?;
        wait_running(&pods, &["talker".into()], Instant::now()).await?;
        // Only lines written from now on: the backlog says nothing of the follower.
        let params = kube::api::LogParams { follow: true, timestamps: true, tail_lines: Some(0), ..Default::default() };
        let from = chrono::Utc::now();
        let mut lines = pods.log_stream("talker", &params).await?.lines();
        let mut lags = Vec::new();
        while lags.len() < 50 {
            let Some(line) = lines.next().await.transpose()? else { bail!("the log stream ended") };
            let seen = chrono::Utc::now();
            let Some(stamp) = line.split_whitespace().next().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else { continue };
            if stamp < from {
                continue;
            }
            lags.push((seen - stamp.with_timezone(&chrono::Utc)).to_std().unwrap_or_default());
        }
        let f = summarize(lags, Duration::from_secs(1));
        println!("log line written → seen by a `logs -f` client (50 lines): p50 {:.1} ms, p99 {:.1} ms", f.p50.as_secs_f64() * 1e3, f.p99.as_secs_f64() * 1e3);
        clear(&pods, &socket).await?;
    }

    for (label, n, at_once) in [("10, one at a time", 10, false), ("30 at once", 30, true)] {
        let times = runtime_alone(&socket, &data.join("agent/logs"), n, at_once).await?;
        let (sb, all): (Vec<Duration>, Vec<Duration>) = times.into_iter().map(|t| (t.sandbox, t.running)).unzip();
        let (sb, all) = (summarize(sb, Duration::from_secs(1)), summarize(all, Duration::from_secs(1)));
        println!(
            "containerd through CRI alone ({label}): RunPodSandbox p50 {:.0} ms p99 {:.0} ms; sandbox + create + start p50 {:.0} ms p99 {:.0} ms",
            ms(sb.p50),
            ms(sb.p99),
            ms(all.p50),
            ms(all.p99)
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let skiff_rss = rss_kib(skiff.child.id())? as f64 / 1024.0;
    let ctd = containerd_pid(&data.join("agent/containerd/config.toml")).map(|p| rss_kib(p).unwrap_or(0) as f64 / 1024.0);
    println!(
        "idle RSS: skiff (control plane + agent) {skiff_rss:.1} MiB; its containerd {}",
        ctd.map(|r| format!("{r:.1} MiB")).unwrap_or_else(|| "not found".into())
    );
    drop(skiff);
    skiff_kubelet::network::remove(&data.join("agent"));
    Ok(())
}
