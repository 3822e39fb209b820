//! Filter and score plugins of the default profile, one per file, each a
//! pure function of the pod, the node and (for the cluster-wide ones) a
//! per-cycle precomputation.

pub mod balanced_allocation;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;
