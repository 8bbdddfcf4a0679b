//! The cluster client's errors: [`ClusterError`] for a request, [`ConnectError`] for
//! building a client, [`TopologyError`] for one node asked for its view of the cluster.

use std::fmt;
use std::time::Duration;

use pool::PoolError;
use redis::RedisError;

use crate::cluster::slots::Node;
use crate::cluster::topology::ParseError;

/// Why a request failed. Each variant names the node concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The request's deadline (retries included) passed; `last` says what failed before.
    #[error("no answer within the request's deadline of {deadline:?} (last tried {node})")]
    Timeout {
        /// The deadline of the request.
        deadline: Duration,
        /// The node of the last attempt.
        node: Node,
        /// Why the attempt before the deadline failed, when one did; `None` when the
        /// deadline passed while the last attempt waited (for a lease or for the reply).
        #[source]
        last: Option<Box<ClusterError>>,
    },
    /// The connection failed after the command was sent, and the command is not safe to
    /// repeat: it may or may not have run.
    #[error(
        "the connection to {node} failed after the command was sent: it may or may not have run"
    )]
    OutcomeUnknown {
        /// The node the command went to.
        node: Node,
        /// How the connection failed.
        #[source]
        source: RedisError,
    },
    /// The node answered with an error no retry can fix (`WRONGTYPE`, `ERR ...`,
    /// `CROSSSLOT`).
    #[error("{node} refused the command")]
    Server {
        /// The node that answered.
        node: Node,
        /// Its answer.
        #[source]
        source: RedisError,
    },
    /// No shard serves the key's slot, even in a map fetched after the request found it
    /// uncovered.
    #[error("slot {slot} has no node in the cluster (uncovered slots: {uncovered})")]
    Uncovered {
        /// The key's slot.
        slot: u16,
        /// Every slot range no node serves, as `0-5460 16000-16383`.
        uncovered: String,
    },
    /// The command could not be sent: the pool of the node gave no connection.
    #[error("no connection to {node}")]
    Connect {
        /// The node.
        node: Node,
        /// Why its pool gave none.
        #[source]
        source: PoolError<RedisError>,
    },
    /// The node is ejected after failed connects, until its backoff ends.
    #[error("{node} is ejected after failed connects for {remaining:?} more")]
    Ejected {
        /// The node.
        node: Node,
        /// How long its ejection lasts from when the request looked.
        remaining: Duration,
    },
    /// The node answered with an error that asks to try again later (`TRYAGAIN`,
    /// `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `READONLY` on a demoted primary).
    #[error("{node} asked to try again")]
    Busy {
        /// The node that answered.
        node: Node,
        /// Its answer.
        #[source]
        source: RedisError,
    },
    /// A connection failed under a command that is safe to repeat (it was retried).
    #[error("the connection to {node} failed")]
    Connection {
        /// The node.
        node: Node,
        /// How the connection failed.
        #[source]
        source: RedisError,
    },
    /// `WAIT` counted fewer replicas acknowledging the write than asked.
    #[error("the write reached {acked} of {asked} replicas of {node}")]
    NotReplicated {
        /// The primary written to.
        node: Node,
        /// Replicas asked for.
        asked: usize,
        /// Replicas that acknowledged.
        acked: usize,
    },
    /// A `MOVED` or `ASK` redirection that does not name a node.
    #[error("{node} redirected the request to an unreadable address: {detail:?}")]
    BadRedirect {
        /// The node that redirected.
        node: Node,
        /// What it said.
        detail: String,
    },
}

impl ClusterError {
    /// The node the error concerns (`None` for an uncovered slot).
    pub fn node(&self) -> Option<&Node> {
        match self {
            ClusterError::Timeout { node, .. }
            | ClusterError::OutcomeUnknown { node, .. }
            | ClusterError::Server { node, .. }
            | ClusterError::Connect { node, .. }
            | ClusterError::Ejected { node, .. }
            | ClusterError::Busy { node, .. }
            | ClusterError::Connection { node, .. }
            | ClusterError::NotReplicated { node, .. }
            | ClusterError::BadRedirect { node, .. } => Some(node),
            ClusterError::Uncovered { .. } => None,
        }
    }

    /// True for [`ClusterError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClusterError::Timeout { .. })
    }
}

/// Why one node could not tell its view of the cluster (`CLUSTER NODES`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// No connection to it.
    #[error("{node}: no connection")]
    Connect {
        /// The node.
        node: Node,
        /// Why its pool gave none.
        #[source]
        source: PoolError<RedisError>,
    },
    /// A Redis server without cluster support (`cluster-enabled no`).
    #[error("{node} is not a cluster node")]
    NotCluster {
        /// The node.
        node: Node,
        /// Its answer to `CLUSTER NODES`.
        #[source]
        source: RedisError,
    },
    /// It answered with bytes that are not the Redis protocol.
    #[error("{node} answered with something that is not the Redis protocol")]
    NotRedis {
        /// The node.
        node: Node,
        /// What the reply's parser said.
        #[source]
        source: RedisError,
    },
    /// It answered `CLUSTER NODES` with another error, or the connection failed.
    #[error("{node} failed to answer CLUSTER NODES")]
    Failed {
        /// The node.
        node: Node,
        /// The error.
        #[source]
        source: RedisError,
    },
    /// Its answer is not a `CLUSTER NODES` reply.
    #[error("{node} answered CLUSTER NODES with something else")]
    Garbage {
        /// The node.
        node: Node,
        /// What is wrong with the answer.
        #[source]
        source: ParseError,
    },
    /// It did not answer in time.
    #[error("{node} did not answer CLUSTER NODES within {after:?}")]
    Timeout {
        /// The node.
        node: Node,
        /// The time it was given.
        after: Duration,
    },
}

/// Why [`ClusterClient`](crate::cluster::ClusterClient) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No seed URL was given.
    #[error("no seed node given")]
    NoSeeds,
    /// A seed is not a `redis://host:port` URL.
    #[error("seed {url:?} is not a redis://host:port URL")]
    Url {
        /// The seed as given.
        url: String,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Settings(String),
    /// No seed told its view of the cluster; each one's failure is listed.
    #[error("no seed node answered as a cluster node: {}", Failures(.0))]
    Seeds(Vec<TopologyError>),
}

/// Each failure with its causes, `; `-separated.
struct Failures<'a>(&'a [TopologyError]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            // Each cause once (the `redis` crate repeats its source in its own text), on one
            // line.
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(error);
            while let Some(inner) = cause {
                let inner_text = inner.to_string();
                if !text.contains(&inner_text) {
                    text = format!("{text}: {inner_text}");
                }
                cause = inner.source();
            }
            f.write_str(&text.replace('\n', " "))?;
        }
        Ok(())
    }
}
