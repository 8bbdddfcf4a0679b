//! [`Side`]: the two cluster clients measured side by side, and the request each one runs:
//! `SET key value EX 60`, then `GET key`.

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis_example::cluster::{ClusterClient, ClusterError};

/// Each key expires after this many seconds, so a run leaves nothing behind.
pub const TTL_SECS: u64 = 60;

/// A pair that takes longer has hung: it is counted as [`PairError::Hung`], never waited
/// for past this.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(10);

/// One of the two clients under measurement; a clone per task.
#[derive(Clone)]
pub enum Side {
    /// Our [`ClusterClient`]: a pool of multiplexed connections per node, a lease per
    /// command.
    Ours(ClusterClient),
    /// The `redis` crate's [`ClusterConnection`] at its defaults: one multiplexed connection
    /// per node behind one task that routes every command; each task holds a clone, as its
    /// documentation says to share it.
    Theirs(ClusterConnection),
}

/// Why a pair failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// Our client's `SET` or `GET` failed.
    #[error(transparent)]
    Ours(#[from] ClusterError),
    /// The redis crate's `SET` or `GET` failed.
    #[error(transparent)]
    Theirs(#[from] redis::RedisError),
    /// The pair took longer than [`PAIR_TIMEOUT`].
    #[error("a SET+GET pair took longer than {0:?}")]
    Hung(Duration),
}

impl Side {
    /// Its name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Side::Ours(_) => "ours",
            Side::Theirs(_) => "redis-rs",
        }
    }

    /// `SET key value EX 60`, then `GET key`: what the `GET` read.
    ///
    /// # Errors
    /// [`PairError`]: either command failed, or the pair took over [`PAIR_TIMEOUT`].
    ///
    /// # Cancel safety
    /// Cancel safe, as each client's commands: dropped, the `SET` may still be written and
    /// the replies are dropped when they come.
    pub async fn pair(&mut self, key: &str, value: &str) -> Result<Option<String>, PairError> {
        let pair = async {
            match self {
                Side::Ours(client) => {
                    client.set(key, value, TTL_SECS, 0).await?;
                    Ok(client.get(key).await?)
                }
                Side::Theirs(conn) => {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(TTL_SECS)
                        .exec_async(conn)
                        .await?;
                    Ok(redis::cmd("GET").arg(key).query_async(conn).await?)
                }
            }
        };
        tokio::time::timeout(PAIR_TIMEOUT, pair)
            .await
            .unwrap_or(Err(PairError::Hung(PAIR_TIMEOUT)))
    }

    /// Closes our client's pools; the redis crate's connection closes with its last clone.
    ///
    /// # Cancel safety
    /// As [`ClusterClient::close`].
    pub async fn close(self) {
        if let Side::Ours(client) = self {
            client.close().await;
        }
    }
}
