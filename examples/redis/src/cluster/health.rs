//! [`Health`]: which nodes are ejected after failed connects, and the requests each node
//! served.
//!
//! A node whose connects fail twice in a row is ejected for a backoff that doubles with
//! each ejection in a row (from `first` to `max`, jittered by up to a quarter): requests
//! routed to it meanwhile do not wait for a connect that will fail (or hang until the
//! connect timeout) but ask for a fresh slot map and back off. When the backoff ends,
//! requests go to it again, and the first connect that succeeds clears its record. Other
//! nodes are never held up: the record is per node, looked at under a short lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::slots::Node;

/// Connect failures in a row that eject a node.
const EJECT_AFTER: u32 = 2;

/// What is known of one node.
#[derive(Debug, Default)]
struct Record {
    /// Connect failures since its last success.
    failures: u32,
    /// Ejections since its last success.
    ejections: u32,
    /// While set and in the future, the node takes no request.
    ejected_until: Option<Instant>,
    /// Requests it answered.
    served: u64,
}

/// A node's health, as [`ClusterClient::status`](crate::cluster::ClusterClient::status) tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// The node.
    pub node: Node,
    /// Requests it answered (a `SET` with its `WAIT` counts as one).
    pub served: u64,
    /// Connect failures since its last success.
    pub failures: u32,
    /// When its ejection ends, if it is ejected now.
    pub ejected_until: Option<Instant>,
}

/// The health of every node the client used.
pub struct Health {
    first: Duration,
    max: Duration,
    records: Mutex<HashMap<Node, Record>>,
}

impl Health {
    /// No record yet; ejections last from `first` to `max`.
    pub fn new(first: Duration, max: Duration) -> Health {
        Health {
            first,
            max,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(until)` while `node` is ejected.
    pub fn admit(&self, node: &Node) -> Result<(), Instant> {
        let records = self.lock();
        match records.get(node).and_then(|r| r.ejected_until) {
            Some(until) if until > Instant::now() => Err(until),
            _ => Ok(()),
        }
    }

    /// A connect to `node` failed; returns how long it is now ejected for, when this
    /// failure ejected it.
    pub fn connect_failed(&self, node: &Node) -> Option<Duration> {
        let now = Instant::now();
        let mut records = self.lock();
        let record = records.entry(node.clone()).or_default();
        record.failures += 1;
        let ejected = record.ejected_until.is_some_and(|until| until > now);
        if ejected || record.failures < EJECT_AFTER {
            return None;
        }
        let doubled = self.first.saturating_mul(1 << record.ejections.min(16));
        let backoff = jitter(doubled.min(self.max));
        record.ejections += 1;
        record.ejected_until = Some(now + backoff);
        Some(backoff)
    }

    /// `node` answered a request: its failures are forgotten.
    pub fn served(&self, node: &Node) {
        let mut records = self.lock();
        let record = records.entry(node.clone()).or_default();
        record.served += 1;
        record.failures = 0;
        record.ejections = 0;
        record.ejected_until = None;
    }

    /// Every node's record, sorted by node.
    pub fn report(&self) -> Vec<NodeHealth> {
        let now = Instant::now();
        let mut report: Vec<NodeHealth> = self
            .lock()
            .iter()
            .map(|(node, record)| NodeHealth {
                node: node.clone(),
                served: record.served,
                failures: record.failures,
                ejected_until: record.ejected_until.filter(|until| *until > now),
            })
            .collect();
        report.sort_by(|a, b| a.node.cmp(&b.node));
        report
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Node, Record>> {
        // Plain counters: a panic under the lock leaves nothing half-updated that matters.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `base` less up to a quarter of it, at random.
pub fn jitter(base: Duration) -> Duration {
    base.mul_f64(1.0 - random_fraction() / 4.0)
}

/// A number in [0, 1) from the standard library's per-process random hash keys: enough for
/// jitter, no dependency.
pub fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn two_failed_connects_eject_a_node_for_a_backoff_that_grows() {
        let health = Health::new(Duration::from_millis(100), Duration::from_millis(300));
        let node = Node::new("127.0.0.1", 7000);
        assert_eq!(health.connect_failed(&node), None);
        assert!(health.admit(&node).is_ok());
        let first = health.connect_failed(&node).expect("ejected");
        assert!(first > Duration::from_millis(74) && first <= Duration::from_millis(100));
        assert!(health.admit(&node).is_err());
        // A failure while ejected does not extend it.
        assert_eq!(health.connect_failed(&node), None);
        tokio::time::advance(first).await;
        assert!(health.admit(&node).is_ok());
        let second = health.connect_failed(&node).expect("ejected again");
        assert!(second > Duration::from_millis(149), "{second:?}");
        tokio::time::advance(second).await;
        let third = health.connect_failed(&node).expect("ejected again");
        assert!(third <= Duration::from_millis(300), "capped: {third:?}");
        health.served(&node);
        assert!(health.admit(&node).is_ok());
        let report = health.report();
        assert_eq!(report[0].served, 1);
        assert_eq!(report[0].failures, 0);
    }

    #[test]
    fn other_nodes_are_not_ejected() {
        let health = Health::new(Duration::from_secs(1), Duration::from_secs(2));
        let (a, b) = (Node::new("a", 1), Node::new("b", 2));
        health.connect_failed(&a);
        health.connect_failed(&a);
        assert!(health.admit(&a).is_err());
        assert!(health.admit(&b).is_ok());
    }
}
