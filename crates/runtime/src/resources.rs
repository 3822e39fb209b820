//! Pod resource arithmetic shared by the scheduler and the controllers.

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::quantity::{cpu_millis, value};

/// Requested (or allocatable) resources: CPU in millicores, memory and
/// ephemeral storage in bytes, and a pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Bytes.
    pub ephemeral_storage: i64,
    /// Pods.
    pub pods: i64,
}

impl Resources {
    fn add(&mut self, o: &Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
    }

    fn max(&mut self, o: &Resources) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
    }

    /// Adds `o` to these.
    pub fn plus(mut self, o: &Resources) -> Self {
        self.add(o);
        self
    }

    /// Subtracts `o` from these.
    pub fn minus(mut self, o: &Resources) -> Self {
        self.cpu -= o.cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        self
    }
}

fn from_map(m: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Resources {
    let mut r = Resources::default();
    if let Some(m) = m {
        for (k, q) in m {
            match k.as_str() {
                "cpu" => r.cpu = cpu_millis(&q.0).unwrap_or(0),
                "memory" => r.memory = value(&q.0).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = value(&q.0).unwrap_or(0),
                "pods" => r.pods = value(&q.0).unwrap_or(0),
                _ => {}
            }
        }
    }
    r
}

/// What a pod asks the scheduler for: the larger of the sum of its app
/// containers' requests (sidecar init containers included) and its largest
/// init container, plus overhead; one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else { return Resources { pods: 1, ..Default::default() } };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref())));
    }
    let mut init_max = Resources::default();
    let mut sidecars = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            init_max.max(&sidecars.plus(&r));
        }
    }
    sum.max(&init_max);
    sum.add(&from_map(spec.overhead.as_ref()));
    sum.pods = 1;
    sum
}

/// What a node offers pods.
pub fn node_allocatable(node: &Node) -> Resources {
    let st = node.status.as_ref();
    from_map(st.and_then(|s| s.allocatable.as_ref()).or(st.and_then(|s| s.capacity.as_ref())))
}

/// Whether a pod counts as ready (its `Ready` condition is `True`).
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod has finished (Succeeded or Failed).
pub fn pod_terminated(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Whether a pod is being deleted.
pub fn deleting<K: kube::Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_containers_count_as_their_maximum() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "500m"}}}],
            "overhead": {"cpu": "100m"}}}))
        .expect("pod");
        let r = pod_requests(&pod);
        assert_eq!(r.cpu, 2100);
        assert_eq!(r.memory, 2 << 30);
        assert_eq!(r.pods, 1);
    }
}
