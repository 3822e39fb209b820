//! NodeResourcesFit: a pod fits where allocatable minus what bound pods
//! request covers its requests (init containers and overhead included);
//! scores by LeastAllocated (CPU and memory weighted equally).

use crate::cache::{NodeInfo, PodInfo};

/// Filter: every insufficient resource is a reason.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    let (want, have, used) = (&pod.requests, &node.allocatable, &node.requested);
    if used.pods + 1 > have.pods {
        reasons.push("Too many pods".to_string());
    }
    if want.cpu > 0 && used.cpu + want.cpu > have.cpu {
        reasons.push("Insufficient cpu".into());
    }
    if want.memory > 0 && used.memory + want.memory > have.memory {
        reasons.push("Insufficient memory".into());
    }
    if want.ephemeral_storage > 0 && used.ephemeral_storage + want.ephemeral_storage > have.ephemeral_storage {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

fn least(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * 100 / capacity
}

/// Score 0–100: the free share after placing the pod, averaged over CPU
/// and memory.
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = least(node.nonzero_requested.cpu + pod.nonzero.cpu, node.allocatable.cpu);
    let mem = least(node.nonzero_requested.memory + pod.nonzero.memory, node.allocatable.memory);
    (cpu + mem) / 2
}
