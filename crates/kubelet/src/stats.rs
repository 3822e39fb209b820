//! Resource usage: the kubelet's `/stats/summary` (the Summary API shape,
//! `stats/v1alpha1`, that metrics-server reads), built on request from the
//! runtime's container stats (CRI `ListContainerStats`) and the node's
//! `/proc`. Rates (`usageNanoCores`) come from two cumulative CPU samples:
//! the previous request's when it is recent enough, else two taken a
//! quarter second apart — no background sampling loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_cri::{api, Runtime};

use crate::spec::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};

/// Linux's USER_HZ: /proc/stat counts in hundredths of a second.
const NANOS_PER_JIFFY: u64 = 10_000_000;
/// A previous sample younger than this is too close for a steady rate.
const MIN_WINDOW: Duration = Duration::from_millis(500);
/// A previous sample older than this says little about now.
const MAX_WINDOW: Duration = Duration::from_secs(60);
/// The gap between two fresh samples when there is no usable previous one.
const FRESH_WINDOW: Duration = Duration::from_millis(250);

/// Cumulative CPU time of everything a summary reports, at one instant.
#[derive(Clone)]
struct Sample {
    at: Instant,
    node_cpu_ns: u64,
    containers: HashMap<String, u64>,
}

/// One running container's figures.
struct ContainerUsage {
    id: String,
    pod: (String, String, String),
    name: String,
    cpu_ns: u64,
    working_set: u64,
    usage: u64,
}

/// The summary source of one node.
pub struct Stats {
    node_name: String,
    previous: Mutex<Option<Sample>>,
}

fn proc_stat_busy_ns(stat: &str) -> u64 {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy * NANOS_PER_JIFFY
}

fn meminfo_kib(meminfo: &str, key: &str) -> u64 {
    meminfo.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

fn rate(now: u64, before: u64, window: Duration) -> u64 {
    let secs = window.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (now.saturating_sub(before) as f64 / secs) as u64
}

impl Stats {
    /// A summary source for the node `node_name`.
    pub fn new(node_name: &str) -> Self {
        Self { node_name: node_name.to_string(), previous: Mutex::new(None) }
    }

    async fn containers(rt: &Runtime) -> Result<Vec<ContainerUsage>, tonic::Status> {
        let stats = rt.runtime.clone().list_container_stats(api::ListContainerStatsRequest { filter: None }).await?.into_inner().stats;
        Ok(stats
            .into_iter()
            .filter_map(|s| {
                let attrs = s.attributes?;
                let label = |k: &str| attrs.labels.get(k).cloned().unwrap_or_default();
                let pod = (label(POD_NAMESPACE), label(POD_NAME), label(POD_UID));
                if pod.1.is_empty() {
                    return None;
                }
                let memory = s.memory.unwrap_or_default();
                Some(ContainerUsage {
                    id: attrs.id,
                    name: label(CONTAINER_NAME),
                    pod,
                    cpu_ns: s.cpu.and_then(|c| c.usage_core_nano_seconds).map(|v| v.value).unwrap_or(0),
                    working_set: memory.working_set_bytes.map(|v| v.value).unwrap_or(0),
                    usage: memory.usage_bytes.map(|v| v.value).unwrap_or(0),
                })
            })
            .collect())
    }

    async fn sample(rt: &Runtime) -> Result<(Sample, Vec<ContainerUsage>), tonic::Status> {
        let containers = Self::containers(rt).await?;
        let node_cpu_ns = proc_stat_busy_ns(&tokio::fs::read_to_string("/proc/stat").await.unwrap_or_default());
        let sample = Sample { at: Instant::now(), node_cpu_ns, containers: containers.iter().map(|c| (c.id.clone(), c.cpu_ns)).collect() };
        Ok((sample, containers))
    }

    /// The summary: node CPU and memory, and each running pod's containers.
    pub async fn summary(&self, rt: &Runtime) -> Result<Value, tonic::Status> {
        let usable = |p: &Option<Sample>| p.clone().filter(|p| (MIN_WINDOW..=MAX_WINDOW).contains(&p.at.elapsed()));
        let before = match usable(&self.previous.lock().map(|p| p.clone()).unwrap_or(None)) {
            Some(p) => p,
            None => {
                let (first, _) = Self::sample(rt).await?;
                tokio::time::sleep(FRESH_WINDOW).await;
                first
            }
        };
        let (now, containers) = Self::sample(rt).await?;
        let window = now.at.duration_since(before.at);
        if let Ok(mut p) = self.previous.lock() {
            *p = Some(now.clone());
        }
        let time = skiff_runtime::now();
        let meminfo = tokio::fs::read_to_string("/proc/meminfo").await.unwrap_or_default();
        let (total, available) = (meminfo_kib(&meminfo, "MemTotal") * 1024, meminfo_kib(&meminfo, "MemAvailable") * 1024);
        let node = json!({
            "nodeName": self.node_name,
            "cpu": {"time": time, "usageNanoCores": rate(now.node_cpu_ns, before.node_cpu_ns, window), "usageCoreNanoSeconds": now.node_cpu_ns},
            "memory": {"time": time, "availableBytes": available, "usageBytes": total - available, "workingSetBytes": total - available},
        });
        let mut pods: std::collections::BTreeMap<(String, String, String), Vec<Value>> = Default::default();
        for c in containers {
            // A container new since the first sample started from zero.
            let cores = rate(c.cpu_ns, before.containers.get(&c.id).copied().unwrap_or(0), window);
            pods.entry(c.pod.clone()).or_default().push(json!({
                "name": c.name,
                "cpu": {"time": time, "usageNanoCores": cores, "usageCoreNanoSeconds": c.cpu_ns},
                "memory": {"time": time, "workingSetBytes": c.working_set, "usageBytes": c.usage},
            }));
        }
        let pods: Vec<Value> = pods
            .into_iter()
            .map(|((namespace, name, uid), containers)| {
                let sum = |path: &str| containers.iter().filter_map(|c| c.pointer(path).and_then(Value::as_u64)).sum::<u64>();
                json!({
                    "podRef": {"name": name, "namespace": namespace, "uid": uid},
                    "containers": containers,
                    "cpu": {"time": time, "usageNanoCores": sum("/cpu/usageNanoCores"), "usageCoreNanoSeconds": sum("/cpu/usageCoreNanoSeconds")},
                    "memory": {"time": time, "workingSetBytes": sum("/memory/workingSetBytes"), "usageBytes": sum("/memory/usageBytes")},
                })
            })
            .collect();
        Ok(json!({"node": node, "pods": pods}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_parse() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(proc_stat_busy_ns(stat), (100 + 5 + 50 + 3 + 2 + 1) * NANOS_PER_JIFFY);
        let meminfo = "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    4096 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), 16384);
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), 4096);
        assert_eq!(meminfo_kib(meminfo, "Nope"), 0);
        assert_eq!(rate(3_000_000_000, 1_000_000_000, Duration::from_secs(2)), 1_000_000_000);
        assert_eq!(rate(1, 5, Duration::from_secs(1)), 0, "a counter that went back (restart) is not negative");
    }
}
