//! NodeResourcesBalancedAllocation: prefers nodes whose CPU and memory
//! would be used in equal shares after placing the pod.

use crate::cache::{NodeInfo, PodInfo};

/// Score 0–100: 100 × (1 − the standard deviation of the two shares).
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let frac = |used: i64, cap: i64| if cap <= 0 { 1.0 } else { (used as f64 / cap as f64).min(1.0) };
    let cpu = frac(node.nonzero_requested.cpu + pod.nonzero.cpu, node.allocatable.cpu);
    let mem = frac(node.nonzero_requested.memory + pod.nonzero.memory, node.allocatable.memory);
    // For two values the standard deviation is half their distance.
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * 100.0) as i64
}
