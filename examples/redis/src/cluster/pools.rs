//! [`NodePools`]: one pool of multiplexed connections per cluster node, leased per request,
//! all under one cap: a [`KeyedPool`] keyed by [`Node`].
//!
//! This file is the only one of the cluster client that builds the pools; the rest of the
//! client calls [`KeyedPool::lease`], [`KeyedPool::status`], [`KeyedPool::close`] and
//! [`KeyedPool::is_closed`].
//!
//! - A node's pool is made on its first lease, with a manager of the node's host and port
//!   ([`RedisManager::tcp`]): no address a server sends can make that fail or panic.
//! - Each connection coalesces its writes ([`RedisManager::coalesce_writes`]): its leases
//!   run concurrently, and the commands of those ready at once go out in one write.
//! - Each node has at most `max_size` connections, and all nodes together at most
//!   `max_total`, counting connects in flight. A node whose callers find `max_total` taken
//!   waits, within each request's deadline, for a connection of another node to end: an idle
//!   one is closed for it at once, else the first whose last lease ends.
//! - A failed connect comes back at once (`fail_fast`): the client decides whether to retry,
//!   eject the node or refresh the slot map, within the request's deadline.
//! - A node that left the cluster (dropped from the slot map by a refresh) gets no new
//!   request, and nothing closes its pool at once: each of its connections closes at its first
//!   failure, or once idle for `idle_timeout` (its last lease ended; found by the pool's round
//!   every half `idle_timeout`), or sooner when another node needs its slot under
//!   `max_total`; its pool is forgotten once it has held nothing for another `idle_timeout`.
//!   No request in flight is cut.

use std::time::Duration;

use pool::BuildError;
use pool::keyed::KeyedPool;

use crate::RedisManager;
use crate::cluster::slots::Node;

/// The pools of every node.
pub type NodePools = KeyedPool<Node, RedisManager>;

/// How each node's pool and connections are set up.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections per node.
    pub max_size: usize,
    /// Connections across all nodes; `None` for 16 × `max_size`.
    pub max_total: Option<usize>,
    /// Leases sharing one connection.
    pub max_streams: usize,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// How long a command waits for its reply before its connection counts as failed.
    pub response_timeout: Duration,
    /// The longest a lease may wait in line; each request also bounds it by its deadline.
    pub wait_timeout: Duration,
    /// How long a connection stays open idle, and a node's pool held with nothing in it.
    pub idle_timeout: Duration,
    /// `READONLY` on every connection, so that replicas serve reads.
    pub readonly: bool,
}

impl PoolSettings {
    /// `max_total`, or its default: room for 16 nodes at `max_size` each.
    pub fn max_total(&self) -> usize {
        self.max_total
            .unwrap_or_else(|| self.max_size.saturating_mul(16))
    }
}

/// The pools of every node, each made on its node's first lease.
///
/// # Errors
/// As [`KeyedBuilder::build`](pool::keyed::KeyedBuilder::build): a `max_size` above
/// `max_total`, or a zero.
pub fn node_pools(settings: &PoolSettings) -> Result<NodePools, BuildError> {
    let PoolSettings {
        response_timeout,
        readonly,
        ..
    } = *settings;
    KeyedPool::builder(move |node: &Node| {
        RedisManager::tcp(node.host(), node.port())
            .response_timeout(response_timeout)
            .ping_after(Duration::from_secs(1))
            .readonly(readonly)
            .coalesce_writes(true)
    })
    .max_size(settings.max_size)
    .max_total(settings.max_total())
    .max_streams(settings.max_streams)
    .connect_timeout(settings.connect_timeout)
    .check_timeout(response_timeout)
    .wait_timeout(settings.wait_timeout)
    .idle_timeout(Some(settings.idle_timeout))
    .fail_fast(true)
    .name_keys(|node: &Node| node.addr().to_owned())
    .build()
}
