//! The scheduling queue: active pods ordered by priority then arrival;
//! unschedulable pods parked until a cluster event may let them fit (or 5
//! minutes pass); failed ones back off (1 s doubling to 10 s).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// Pods waiting to be scheduled, by uid.
#[derive(Debug, Default)]
pub struct Queue {
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    queued: HashSet<String>,
    unschedulable: HashMap<String, Instant>,
    backoff: BTreeSet<(Instant, String)>,
    attempts: HashMap<String, u32>,
    priority: HashMap<String, i32>,
    seq: u64,
}

impl Queue {
    /// Adds a pod to the active queue unless it is already waiting anywhere.
    pub fn add(&mut self, uid: &str, priority: i32) {
        self.priority.insert(uid.to_string(), priority);
        if self.queued.contains(uid) || self.unschedulable.contains_key(uid) || self.backoff.iter().any(|(_, u)| u == uid) {
            return;
        }
        self.push(uid.to_string());
    }

    fn push(&mut self, uid: String) {
        self.seq += 1;
        let p = self.priority.get(&uid).copied().unwrap_or(0);
        self.queued.insert(uid.clone());
        self.active.push((p, Reverse(self.seq), uid));
    }

    /// The next pod to schedule.
    pub fn pop(&mut self) -> Option<String> {
        while let Some((_, _, uid)) = self.active.pop() {
            if self.queued.remove(&uid) {
                return Some(uid);
            }
        }
        None
    }

    /// Whether any pod is ready to be scheduled.
    pub fn has_active(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Parks a pod that fits nowhere.
    pub fn unschedulable(&mut self, uid: &str) {
        *self.attempts.entry(uid.to_string()).or_default() += 1;
        self.unschedulable.insert(uid.to_string(), Instant::now());
    }

    fn backoff_for(&self, uid: &str) -> Duration {
        let n = self.attempts.get(uid).copied().unwrap_or(1).saturating_sub(1).min(10);
        (INITIAL_BACKOFF * 2u32.pow(n)).min(MAX_BACKOFF)
    }

    /// Retries a pod after its backoff (a failed binding).
    pub fn retry(&mut self, uid: &str) {
        *self.attempts.entry(uid.to_string()).or_default() += 1;
        let at = Instant::now() + self.backoff_for(uid);
        self.backoff.insert((at, uid.to_string()));
    }

    /// A cluster event (a node or a freed pod) may let parked pods fit:
    /// they return after their backoff.
    pub fn move_all_unschedulable(&mut self) {
        let parked: Vec<String> = self.unschedulable.drain().map(|(u, _)| u).collect();
        for uid in parked {
            let at = Instant::now() + self.backoff_for(&uid);
            self.backoff.insert((at, uid));
        }
    }

    /// Moves pods whose backoff ended (and long-parked ones) to active.
    pub fn flush(&mut self) {
        let now = Instant::now();
        while let Some((at, uid)) = self.backoff.first().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop_first();
            self.push(uid);
        }
        let stale: Vec<String> = self.unschedulable.iter().filter(|(_, t)| now.duration_since(**t) >= MAX_UNSCHEDULABLE).map(|(u, _)| u.clone()).collect();
        for uid in stale {
            self.unschedulable.remove(&uid);
            self.push(uid);
        }
    }

    /// When `flush` next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let b = self.backoff.first().map(|(t, _)| *t);
        let u = self.unschedulable.values().min().map(|t| *t + MAX_UNSCHEDULABLE);
        match (b, u) {
            (Some(b), Some(u)) => Some(b.min(u)),
            (b, u) => b.or(u),
        }
    }

    /// Forgets a pod (bound, deleted or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.queued.remove(uid);
        self.unschedulable.remove(uid);
        self.backoff.retain(|(_, u)| u != uid);
        self.attempts.remove(uid);
        self.priority.remove(uid);
    }

    /// Forgets everything (after a re-list).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let mut q = Queue::default();
        q.add("low", 0);
        q.add("high", 1000);
        q.add("low2", 0);
        assert_eq!(q.pop().as_deref(), Some("high"));
        assert_eq!(q.pop().as_deref(), Some("low"));
        assert_eq!(q.pop().as_deref(), Some("low2"));
        assert_eq!(q.pop(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_return_after_a_cluster_event_and_backoff() {
        let mut q = Queue::default();
        q.add("p", 0);
        assert_eq!(q.pop().as_deref(), Some("p"));
        q.unschedulable("p");
        q.add("p", 0); // an update while parked does not requeue it
        assert!(!q.has_active());
        q.move_all_unschedulable();
        q.flush();
        assert!(!q.has_active(), "still backing off");
        tokio::time::advance(Duration::from_millis(1100)).await;
        q.flush();
        assert_eq!(q.pop().as_deref(), Some("p"));
    }
}
