//! [`NodePools`]: one pool of multiplexed connections per cluster node, leased per request.
//!
//! This file is the only one of the cluster client that builds or holds a `pool::Pool`. It
//! stands in for `pool::keyed::KeyedPool<Node, RedisManager>` (one pool per key under one
//! cap across keys, built with `KeyedPool::builder(|node: &Node| manager_for(node))
//! .max_size(n).max_total(m).max_streams(s).wait_timeout(d).build()`, used as
//! `kp.lease(&node).await` and `kp.status(&node)`), which is not written yet: swapping it in
//! changes this file alone, since the rest of the client calls only [`NodePools::lease`],
//! [`NodePools::status`], [`NodePools::retain`] and [`NodePools::close`]. Until then there is
//! no cap across nodes (`max_total`): each node's pool has its own `max_size`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pool::{Lease, Pool, PoolError, Status};
use redis::RedisError;

use crate::RedisManager;
use crate::cluster::slots::Node;

/// How each node's pool and connections are set up.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections per node.
    pub max_size: usize,
    /// Leases sharing one connection.
    pub max_streams: usize,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// How long a command waits for its reply before its connection counts as failed.
    pub response_timeout: Duration,
    /// The longest a lease may wait in line; each request also bounds it by its deadline.
    pub wait_timeout: Duration,
    /// `READONLY` on every connection, so that replicas serve reads.
    pub readonly: bool,
}

/// One pool per node, made on the node's first lease.
pub struct NodePools {
    settings: PoolSettings,
    /// Invariant: each pool's manager connects to its key's address.
    pools: Mutex<HashMap<Node, Pool<RedisManager>>>,
    /// Set by [`close`](NodePools::close): no pool is made any more.
    closed: AtomicBool,
}

impl NodePools {
    /// No pool yet.
    pub fn new(settings: PoolSettings) -> NodePools {
        NodePools {
            settings,
            pools: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// The pool of `node`, made now if it has none.
    fn pool(&self, node: &Node) -> Result<Pool<RedisManager>, PoolError<RedisError>> {
        if let Some(pool) = self.lock().get(node) {
            return Ok(pool.clone());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        // Built outside the lock; if two callers race, the first one stored wins.
        let manager = RedisManager::new(&node.url())
            .map_err(PoolError::Connect)?
            .response_timeout(self.settings.response_timeout)
            .ping_after(Duration::from_secs(1))
            .readonly(self.settings.readonly);
        let made = Pool::builder(manager)
            .max_size(self.settings.max_size)
            .max_streams(self.settings.max_streams)
            .connect_timeout(self.settings.connect_timeout)
            .check_timeout(self.settings.response_timeout)
            .wait_timeout(self.settings.wait_timeout)
            // A failed connect comes back at once: the client decides whether to retry,
            // eject the node or refresh the slot map, within the request's deadline.
            .fail_fast(true)
            .name(node.addr())
            .build()
            .expect("settings are checked when the client is built");
        let mut pools = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        Ok(pools.entry(node.clone()).or_insert(made).clone())
    }

    /// A lease on a connection to `node`. Waits only on that node's pool, never on another
    /// node's: a node whose connects hang holds up its own callers alone.
    ///
    /// # Errors
    /// As [`Pool::lease`]; [`PoolError::Connect`] also when the node's address is not a
    /// valid Redis URL.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Pool::lease`].
    pub async fn lease(&self, node: &Node) -> Result<Lease<RedisManager>, PoolError<RedisError>> {
        let pool = self.pool(node)?;
        pool.lease().await
    }

    /// The status of `node`'s pool, if it has one.
    pub fn status(&self, node: &Node) -> Option<Status> {
        let pool = self.lock().get(node).cloned();
        pool.map(|pool| pool.status())
    }

    /// Every node with a pool.
    pub fn nodes(&self) -> Vec<Node> {
        self.lock().keys().cloned().collect()
    }

    /// Forgets the pools of the nodes `keep` refuses (nodes that left the cluster); each
    /// closes in a task of its own, its connections as their last leases end.
    pub fn retain(&self, keep: impl Fn(&Node) -> bool) {
        let mut gone = Vec::new();
        self.lock().retain(|node, pool| {
            let kept = keep(node);
            if !kept {
                gone.push(pool.clone());
            }
            kept
        });
        for pool in gone {
            tokio::spawn(async move { pool.close().await });
        }
    }

    /// Closes every pool; new leases fail with [`PoolError::Closed`].
    ///
    /// # Cancel safety
    /// Each pool's close goes on as [`Pool::close`] does once started.
    pub async fn close(&self) {
        let pools: Vec<_> = {
            let pools = self.lock();
            // Set under the lock, so that no pool is stored after this snapshot.
            self.closed.store(true, Ordering::Release);
            pools.values().cloned().collect()
        };
        for pool in pools {
            pool.close().await;
        }
    }

    /// True once [`close`](NodePools::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Node, Pool<RedisManager>>> {
        // A panic under this lock leaves the map as it was: no invariant to repair.
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
