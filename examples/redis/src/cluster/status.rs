//! [`ClusterStatus`]: a snapshot of a client's counters and of each node's health and pool.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::{ClusterClient, NodeHealth};

impl ClusterClient {
    /// Counters, and each node's health and pool.
    pub fn status(&self) -> ClusterStatus {
        let c = &self.inner.counters;
        let nodes = self.inner.health.report();
        let pools = nodes
            .iter()
            .map(|h| self.inner.pools.status(&h.node))
            .collect();
        ClusterStatus {
            requests: c.requests.get(),
            retries: c.retries.get(),
            moved: c.moved.get(),
            asked: c.asked.get(),
            timeouts: c.timeouts.get(),
            connection_failures: c.connection_failures.get(),
            refreshes: c.refreshes.get(),
            refresh_failures: c.refresh_failures.get(),
            generation: self.inner.map().generation(),
            nodes,
            pools,
        }
    }
}

/// A snapshot of a client: [`ClusterClient::status`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// Requests started.
    pub requests: u64,
    /// Retries after a backoff.
    pub retries: u64,
    /// `MOVED` answers followed.
    pub moved: u64,
    /// `ASK` answers followed.
    pub asked: u64,
    /// Requests that ran out of time.
    pub timeouts: u64,
    /// Connections that failed under a command.
    pub connection_failures: u64,
    /// Refreshes of the slot map run (the first one included).
    pub refreshes: u64,
    /// Refreshes no node answered.
    pub refresh_failures: u64,
    /// The current map's generation.
    pub generation: u64,
    /// Each node the client sent requests to, sorted.
    pub nodes: Vec<NodeHealth>,
    /// The status of each of those nodes' pools, in the same order.
    pub pools: Vec<Option<pool::Status>>,
}

/// The client's event counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: Counter,
    pub(crate) retries: Counter,
    pub(crate) moved: Counter,
    pub(crate) asked: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) connection_failures: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) refresh_failures: Counter,
}

/// One counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
