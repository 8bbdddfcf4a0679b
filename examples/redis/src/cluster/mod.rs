//! A Redis Cluster client: a pool of multiplexed connections per node under one cap across
//! nodes (a [`pool::keyed::KeyedPool`]), one slot map shared by every caller and refreshed
//! in the background, and requests that follow `MOVED` and `ASK` and retry within their own
//! deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use redis_example::cluster::ClusterClient;
//!
//! let client = ClusterClient::builder(["redis://127.0.0.1:7000"]).connect().await?;
//! client.set("greeting", "hello", 60, 1).await?; // SET, then WAIT 1
//! assert_eq!(client.get("greeting").await?.as_deref(), Some("hello"));
//! # Ok(())
//! # }
//! ```
//!
//! What each file holds: [`slots`] the hash slot of a key and the [`SlotMap`]; [`topology`]
//! `CLUSTER NODES` replies and how several become one map; `refresh` when and how the map is
//! refreshed; `route` one request's way from key to answer (its table of answers and what
//! each does); `health` node ejection; [`pools`] the per-node pools, how they are built and
//! how a departed node's connections end; `builder` the settings and the start; `status` the
//! counters; [`error`] the errors.
//!
//! # Decisions
//! Figures from the package's tests (`tests/cluster*.rs`, a 6-node cluster made by
//! `scripts/redis-cluster` on the same 2 shared cores as the debug-built tests), but where
//! the load program's `--bench` is named (a release build beside the `redis` crate's own
//! `cluster_async` client, 64 tasks of `SET`+`GET`, alternating rounds; see BENCHMARKS.md).
//! - One pool per node, leased per request (`max_streams` requests share a connection):
//!   a request waits only on its node's pool, so a dead or silent node holds up its own
//!   requests alone. Measured: with a primary stopped (SIGSTOP) for 3 s, its requests end as
//!   [`ClusterError::Timeout`] at their 1 s deadline (18-24 of them) and the other shards
//!   serve 1.2-1.7x their rate before (the stopped node's CPU freed); 64 tasks over 2
//!   connections per node at most (`max_size` 2), however many requests wait.
//! - A node's requests share one connection (`max_streams` 128 by default; a second opens
//!   only once 128 are in flight on the first) whose writes are coalesced
//!   ([`RedisManager::coalesce_writes`](crate::RedisManager::coalesce_writes)): the commands
//!   of the callers ready at once go out in one write, and the server reads them at once.
//!   Each caller queues its own command on the connection, and on tokio's multi-threaded
//!   runtime the connection's writer otherwise runs between callers and sends most commands
//!   alone (the `redis` crate's cluster client batches through its one routing task, which
//!   forwards many commands in one poll). Measured with `--bench`, 2-5 runs each at load
//!   6-7: with 4 connections of 32 streams, uncoalesced, 0.78-0.87x redis-rs's rate and a
//!   worse p99 (1.08-1.32x), the servers reading 0.85-0.90 times per pair against
//!   0.36-0.39; coalesced alone, 1.04-1.20x and 0.57 reads (a burst past 32 in flight
//!   had opened a second connection per node, and leases placed on the least leased then
//!   halve every batch from then on); 128 streams alone, 0.97x and 0.56 reads; both,
//!   1.14-1.57x, 0.26-0.32 reads, p99 0.72-0.95x redis-rs's; with 1 or 4 tasks, 1.15-1.16x.
//! - All the node pools are one [`pool::keyed::KeyedPool`]: besides `max_size` per node,
//!   `max_total` caps the client's connections across nodes (16 × `max_size` by default), and
//!   a node that finds it taken is served by closing another node's idle connection.
//!   Measured: 24 tasks of SET+GET over every slot with `max_size` 4, `max_total` 6 and
//!   `max_streams` 2 (the 3 primaries could take 12): at most 6 client connections across
//!   the six servers, and 4 on one, 4 800 pairs in 3.0-4.2 s with no error, 13-16
//!   connections made as the first refresh's idle ones (on the replicas) were closed for
//!   the primaries. A node that leaves the cluster is not closed by the refresh that drops
//!   it: its connections end once idle for `idle_timeout` (60 s by default) and its pool is
//!   forgotten after another one, so no request in flight on it is ever cut.
//! - The slot map is an immutable value behind a mutex held only to clone an `Arc`: a
//!   request routes, retries and redirects with no lock held, and a refresh swaps the whole
//!   map in one move. No request ever waits for a refresh, but one whose slot is uncovered.
//!   (The `redis` crate's async cluster client refreshes while it holds the write lock of
//!   its connection map, asking one node after another, so a request that needs a
//!   connection meanwhile waits for the whole refresh.)
//! - Refreshes are single-flight and spaced (see `refresh`); a `MOVED` sends its request to
//!   the node named at once rather than after the refresh, and an `ASK` never refreshes
//!   (the slot's owner has not changed yet). Measured: a slot migrated under 16 tasks,
//!   3 200-4 300 `ASK` followed and 32-49 `MOVED`, made 1 refresh.
//! - The newest configuration epoch wins each slot, over several nodes' `CLUSTER NODES`
//!   (see [`topology`]): the cluster's own rule, so a node that missed a failover does not
//!   route writes to the demoted primary.
//! - Every request has its own deadline (`deadline`, 5 s by default), retries and waits
//!   included; there is no retry count (a count says nothing of how long a caller waits). A failure that may have run the command (the
//!   connection died after sending) is retried only for commands marked repeatable (`GET`,
//!   `SET` of a value with its `WAIT`); any other fails with
//!   [`ClusterError::OutcomeUnknown`].
//! - `ASKING` and the command go in one pipeline: on a connection shared by other leases,
//!   a command of another lease between the two would take the `ASKING` flag.
//! - A `SET` whose `WAIT` counted too few replicas is written and waited for again until the
//!   deadline, so that with `wait_replicas` set, every write the client confirms is held by
//!   that many replicas (and survives its primary's failover). `WAIT` blocks its connection
//!   (at the default `max_streams`, its node's one connection) for every lease on it, so its
//!   timeout stays short (1 s, and never past the deadline); a lower `max_streams` spreads
//!   `WAIT`s over more connections. Yet one coalesced connection per node serves them
//!   faster: 64 tasks x 200 `SET`+`WAIT 1` then `GET` on a replica (the load program's
//!   `--wait-replicas 1 --read-from-replicas`, release) took 1.00-1.12 s, against
//!   1.11-1.54 s over 2 uncoalesced connections per node. Measured: a primary killed
//!   under 24 tasks of `SET`+`WAIT 1` then `GET` (deadline 10 s), its replica promoted
//!   3.5-4.6 s later and the killed node started again as its replica: 0 errors,
//!   0 mismatches, the shard back at half its rate within 100 ms of the promotion, the
//!   other shards at 0.8-1.1x their rate before (1.1-1.5 k pairs/s each with coalesced
//!   writes, against 0.7-1.0 k and 1.1-1.3x uncoalesced).
//! - A failed connect counts against the node; two in a row eject it for 100 ms, doubling
//!   to 2 s (see `health`), so requests for a dead node back off and look for a new map
//!   instead of each waiting for a connect that fails or hangs.
//! - Replicas are read after `READONLY`, sent on every connection of a client that reads
//!   from replicas (harmless on a primary; a pool is per node, not per role, since roles
//!   change at a failover). A client that does not read from replicas sends none, so a
//!   demoted primary answers its reads with `MOVED` rather than stale data.
//! - The cluster needs `cluster-require-full-coverage no` for a dead shard not to stop the
//!   others: with the default, every node answers `CLUSTERDOWN` from the moment the dead
//!   primary is flagged failed until its replica is promoted (seen: a healthy shard served
//!   nothing for 500 ms). `scripts/redis-cluster` sets it.
mod builder;
pub mod error;
mod health;
pub mod pools;
mod refresh;
mod route;
pub mod slots;
mod status;
pub mod topology;

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use redis::{Cmd, Value};
use tokio::sync::watch;

pub use builder::Builder;
pub use error::{ClusterError, ConnectError, TopologyError};
pub use health::NodeHealth;
pub use slots::{Node, Shard, SlotMap};
pub use status::ClusterStatus;

use builder::Settings;
use health::Health;
use pools::NodePools;
use refresh::RefreshState;
use route::{Call, Op};
use status::Counters;

/// A Redis Cluster client; clones share the pools and the slot map.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

/// What every part of the client shares.
pub(crate) struct Inner {
    settings: Settings,
    seeds: Vec<Node>,
    pools: NodePools,
    health: Health,
    /// The current map; replaced whole by a refresh, never changed in place.
    map: Mutex<Arc<SlotMap>>,
    refresh: Mutex<RefreshState>,
    /// Counts refreshes ended (installed a map or not), for a request that waits for one.
    refreshes_ended: watch::Sender<u64>,
    counters: Counters,
}

impl ClusterClient {
    /// A builder for a client of the cluster that `seeds` (`redis://host:port`) belong to.
    pub fn builder<S: AsRef<str>>(seeds: impl IntoIterator<Item = S>) -> Builder {
        Builder::new(seeds.into_iter().map(|s| s.as_ref().to_owned()).collect())
    }

    /// `GET key` on the key's primary (or a replica, when reading from replicas); retried
    /// after any failure within the deadline.
    ///
    /// # Errors
    /// [`ClusterError`]: a timeout (with the last failure), an uncovered slot, an error
    /// reply.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is left behind but the reply, dropped when it comes.
    pub async fn get(&self, key: &str) -> Result<Option<String>, ClusterError> {
        let call = Call {
            read: true,
            repeatable: true,
        };
        let value = self
            .run(key, &Op::Cmd(redis::cmd("GET").arg(key)), call)
            .await?;
        match value {
            Value::Nil => Ok(None),
            other => redis::from_redis_value(other)
                .map(Some)
                .map_err(|source| self.reply_error(key, source.into())),
        }
    }

    /// `SET key value EX ttl_secs`, then, when `replicas` is above 0, `WAIT replicas` on the
    /// same connection: `Ok` means the value is on the primary and on that many replicas.
    /// Repeatable (the same value is written again): retried after any failure, a `WAIT`
    /// short of replicas included, within the deadline.
    ///
    /// # Errors
    /// As [`get`](ClusterClient::get); [`ClusterError::NotReplicated`] as the source of a
    /// timeout when the replicas never acknowledged.
    ///
    /// # Cancel safety
    /// Cancel safe, but the write may still happen.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        ttl_secs: u64,
        replicas: usize,
    ) -> Result<(), ClusterError> {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value).arg("EX").arg(ttl_secs);
        let op = Op::SetWait {
            set: &set,
            replicas,
            wait: self.inner.settings.wait_timeout,
        };
        let call = Call {
            read: false,
            repeatable: true,
        };
        self.run(key, &op, call).await.map(drop)
    }

    /// Any command on the primary of `key`'s slot. Not repeatable: when the connection
    /// fails after sending it, it fails with [`ClusterError::OutcomeUnknown`].
    ///
    /// # Errors
    /// As [`get`](ClusterClient::get), and [`ClusterError::OutcomeUnknown`].
    ///
    /// # Cancel safety
    /// Cancel safe, but the command may still run.
    pub async fn query(&self, key: &[u8], cmd: &Cmd) -> Result<Value, ClusterError> {
        let call = Call {
            read: false,
            repeatable: false,
        };
        self.inner.run(key, &Op::Cmd(cmd), call).await
    }

    /// As [`query`](ClusterClient::query), for a command safe to run twice: retried after
    /// a connection failed under it.
    ///
    /// # Errors
    /// As [`get`](ClusterClient::get).
    ///
    /// # Cancel safety
    /// Cancel safe, but the command may still run.
    pub async fn query_repeatable(&self, key: &[u8], cmd: &Cmd) -> Result<Value, ClusterError> {
        let call = Call {
            read: false,
            repeatable: true,
        };
        self.inner.run(key, &Op::Cmd(cmd), call).await
    }

    async fn run(&self, key: &str, op: &Op<'_>, call: Call) -> Result<Value, ClusterError> {
        self.inner.run(key.as_bytes(), op, call).await
    }

    /// A reply of the wrong type, as a server error of the key's node.
    fn reply_error(&self, key: &str, source: redis::RedisError) -> ClusterError {
        let map = self.inner.map();
        let node = map
            .shard(slots::slot(key.as_bytes()))
            .map(|s| s.primary.clone());
        ClusterError::Server {
            node: node.unwrap_or_else(|| Node::new("?", 0)),
            source,
        }
    }

    /// The current slot map.
    pub fn slot_map(&self) -> Arc<SlotMap> {
        self.inner.map()
    }

    /// The slot ranges the current map leaves without a node.
    pub fn uncovered(&self) -> Vec<RangeInclusive<u16>> {
        self.inner.map().uncovered()
    }

    /// Closes every node's pool; requests fail from now on.
    ///
    /// # Cancel safety
    /// As [`pool::keyed::KeyedPool::close`].
    pub async fn close(&self) {
        self.inner.pools.close().await;
    }
}
