//! [`RedisManager`]: the pool's [`Manager`] for Redis, whose connection ([`RedisConn`]) is
//! the `redis` crate's async multiplexed connection.
//!
//! Decision: a connection shared by leases can have its writes coalesced
//! ([`RedisManager::coalesce_writes`], see `coalesce`). The crate's connection already sends,
//! in one write, every command queued when its writer task runs; but on tokio's
//! multi-threaded runtime a task woken by the one running goes next on that worker (its
//! "LIFO slot"), so the writer, woken by the first caller's command, runs before the other
//! callers ready to run have queued theirs, and most commands go out alone: the servers then
//! read and answer them one or two at a time (in the cluster's bench, 0.85-0.90 server reads
//! per SET+GET pair, against 0.36-0.39 for the crate's cluster client, whose one routing task
//! queues many commands in one poll). Coalesced, the writer lets the tasks ready now run
//! first, once, before it writes (0.26-0.32 reads per pair).

mod coalesce;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pool::Manager;
use pool::balance::{Balanced, SetError};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, FromRedisValue, RedisError, RedisResult};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use coalesce::Coalesce;

/// Makes pooled Redis connections: each is one multiplexed connection of the `redis` crate,
/// wrapped in a [`RedisConn`] that remembers whether it failed and when it last answered.
///
/// Its connections can be held by one caller ([`Pool::get`](pool::Pool::get)) or shared by
/// many ([`Pool::lease`](pool::Pool::lease)): [`RedisConn::query`] takes `&self`, and a
/// connection that failed under a lease takes no new one
/// ([`Manager::is_broken_shared`]).
#[derive(Debug, Clone)]
pub struct RedisManager {
    /// The server's client, or why the `redis` crate made none: every connect returns that
    /// error (see [`tcp`](RedisManager::tcp)).
    client: Result<redis::Client, RedisError>,
    /// The server, as `host:port`.
    addr: String,
    response_timeout: Duration,
    ping_after: Duration,
    readonly: bool,
    coalesce_writes: bool,
}

impl RedisManager {
    /// A manager for the server at `url` (`redis://host:port/db`). Opens nothing yet.
    ///
    /// Defaults: a reply must come within 2 s, and `check` pings a connection that has not
    /// answered anything for 1 s.
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL.
    pub fn new(url: &str) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let addr = client.get_connection_info().addr().to_string();
        Ok(RedisManager::with_client(Ok(client), addr))
    }

    /// A manager for the server at `host` and `port` over TCP (database 0, no password),
    /// with the defaults of [`new`](RedisManager::new). Opens nothing yet.
    ///
    /// Infallible, for an address a program did not write (a Redis Cluster node's, from
    /// `CLUSTER NODES` or a `MOVED` reply): no URL is parsed. The `redis` crate makes its
    /// client only through a fallible conversion, which refuses no host and port today;
    /// should a later version refuse one, each connect returns its error rather than this
    /// constructor panicking.
    pub fn tcp(host: &str, port: u16) -> Self {
        let client = redis::Client::open((host, port));
        RedisManager::with_client(client, format!("{host}:{port}"))
    }

    /// The defaults, with this client.
    fn with_client(client: RedisResult<redis::Client>, addr: String) -> Self {
        RedisManager {
            client,
            addr,
            response_timeout: Duration::from_secs(2),
            ping_after: Duration::from_secs(1),
            readonly: false,
            coalesce_writes: false,
        }
    }

    /// The server this manager connects to, as `host:port`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Sends `READONLY` on each new connection, so that a Redis Cluster replica serves reads
    /// of its primary's slots instead of redirecting them (`MOVED`). Harmless on a primary.
    /// Default: off.
    pub fn readonly(mut self, readonly: bool) -> Self {
        self.readonly = readonly;
        self
    }

    /// Coalesces the writes of each connection: when a command is queued, the connection's
    /// writer waits one turn of the scheduler (the tasks ready to run now run first) and
    /// then sends every command queued meanwhile in one write. For connections shared by
    /// leases ([`Pool::lease`](pool::Pool::lease)), whose callers run concurrently: fewer,
    /// larger writes, and fewer reads for the server. A connection held by one caller
    /// ([`Pool::get`](pool::Pool::get)) has one command to send at a time and gains
    /// nothing. Applies to TCP addresses (the manager opens the socket itself); a Unix
    /// socket is connected by the `redis` crate, uncoalesced. Default: off.
    pub fn coalesce_writes(mut self, coalesce: bool) -> Self {
        self.coalesce_writes = coalesce;
        self
    }

    /// How long a command waits for its reply before it fails (and its connection with it).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// `check` sends a PING only when the connection has not answered anything for this long;
    /// a connection that answered more recently is known to be alive.
    pub fn ping_after(mut self, idle: Duration) -> Self {
        self.ping_after = idle;
        self
    }

    /// One manager over this server, named `primary`, and its `replicas` (URLs), named
    /// `replica-1`, `replica-2`, ... in order, each with this manager's settings. Pool it for
    /// reads: each new connection goes to the endpoint with the fewest connections, and a
    /// failing endpoint is ejected (see [`Balanced`]). Replicas refuse writes (`READONLY`),
    /// so writes take a pool of the primary alone.
    ///
    /// # Errors
    /// [`ReplicaSetError::Url`] when a replica URL is not a valid Redis URL.
    pub fn with_replicas(
        self,
        replicas: &[impl AsRef<str>],
    ) -> Result<Balanced<RedisManager>, ReplicaSetError> {
        let mut endpoints = vec![("primary".to_owned(), self.clone())];
        for (i, url) in replicas.iter().enumerate() {
            let url = url.as_ref();
            let client = redis::Client::open(url).map_err(|source| ReplicaSetError::Url {
                url: url.to_owned(),
                source,
            })?;
            let manager = RedisManager {
                addr: client.get_connection_info().addr().to_string(),
                client: Ok(client),
                ..self.clone()
            };
            endpoints.push((format!("replica-{}", i + 1), manager));
        }
        Ok(Balanced::from_endpoints(endpoints)?)
    }
}

/// Why [`RedisManager::with_replicas`] cannot make its set.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    /// A replica URL is not a valid Redis URL.
    #[error("invalid replica URL {url:?}")]
    Url {
        /// The URL given.
        url: String,
        /// Why the `redis` crate refused it.
        #[source]
        source: RedisError,
    },
    /// The set refused an endpoint.
    #[error("cannot build the endpoint set")]
    Set(#[from] SetError),
}

/// Why a replicated write ([`RedisConn::set_replicated`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The SET or the WAIT failed on the primary's connection.
    #[error("the write failed on the primary")]
    Redis(#[from] RedisError),
    /// WAIT ended with fewer replicas acknowledging the write than asked: the write is on
    /// the primary, but a read on a replica may not see it yet.
    #[error("the write reached {acked} of {asked} replicas within {timeout:?}")]
    NotReplicated {
        /// Replicas asked for.
        asked: usize,
        /// Replicas that acknowledged, as WAIT answered.
        acked: usize,
        /// The WAIT timeout.
        timeout: Duration,
    },
}

impl Manager for RedisManager {
    type Connection = RedisConn;
    type Error = RedisError;

    // Cancel safety: dropping this future (the pool's connect timeout) drops the half-made
    // connection and its socket; nothing is left behind. The connect timeout is the pool's
    // (`Builder::connect_timeout`), so the crate's own is turned off.
    async fn connect(&self) -> RedisResult<RedisConn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(Some(self.response_timeout));
        let client = self.client.as_ref().map_err(RedisError::clone)?;
        let info = client.get_connection_info();
        let (conn, driver) = match info.addr() {
            ConnectionAddr::Tcp(host, port) if self.coalesce_writes => {
                // The crate's own connect spawns its writer over its own socket: to
                // coalesce, open the socket here (with the client's TCP_NODELAY; a URL sets
                // no other TCP option) and spawn the writer ourselves.
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(info.tcp_settings().nodelay())?;
                let stream = Coalesce::new(stream);
                let (conn, driver) =
                    MultiplexedConnection::new_with_config(info.redis_settings(), stream, config)
                        .await?;
                (conn, Some(tokio::spawn(driver).abort_handle()))
            }
            _ => {
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                (conn, None)
            }
        };
        let conn = RedisConn {
            conn,
            driver,
            opened: Instant::now(),
            last_reply: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        };
        if self.readonly {
            let _: redis::Value = conn.query(&redis::cmd("READONLY")).await?;
        }
        Ok(conn)
    }

    // Free when the connection answered recently, one PING round trip otherwise. A
    // connection that already failed is refused without any I/O.
    async fn check(&self, conn: &mut RedisConn) -> RedisResult<()> {
        if conn.is_failed() {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection failed earlier",
            )));
        }
        if conn.last_reply().elapsed() < self.ping_after {
            return Ok(());
        }
        let pong: String = conn.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("PING answered {pong:?}"),
            )))
        }
    }

    // Reads the flag `RedisConn::query` keeps: no I/O.
    fn is_broken(&self, conn: &mut RedisConn) -> bool {
        conn.is_failed()
    }

    // The same flag, for a connection shared by leases: one that failed under a lease takes
    // no new lease.
    fn is_broken_shared(&self, conn: &RedisConn) -> bool {
        conn.is_failed()
    }

    // The default `close` (drop) is right: dropping the last handle of a multiplexed
    // connection stops its driver task and closes the socket.
}

/// A pooled Redis connection: runs commands and records whether the connection failed.
///
/// Use [`query`](RedisConn::query) (or [`set`](RedisConn::set) / [`get`](RedisConn::get))
/// rather than the inner connection, so that a failure is noticed and the pool discards the
/// connection when it comes back. Every method takes `&self`: a multiplexed connection
/// carries the commands of many leases at once, each on its own clone of the handle (a
/// few `Arc` counts).
pub struct RedisConn {
    conn: MultiplexedConnection,
    /// The task that writes and reads the socket, when this manager spawned it (coalesced
    /// writes): stopped when the connection is dropped, as the crate stops its own when
    /// its last handle goes. Every other handle is a clone within one of our calls.
    driver: Option<AbortHandle>,
    /// When the connection was made; `last_reply` counts from it.
    opened: Instant,
    /// Nanoseconds from `opened` to the last reply.
    last_reply: AtomicU64,
    failed: AtomicBool,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("last_reply", &self.last_reply())
            .field("failed", &self.is_failed())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisConn {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
    }
}

impl RedisConn {
    /// Runs one command and converts its reply.
    ///
    /// # Errors
    /// A server error reply (`WRONGTYPE ...`) or a reply of another type than `T` leave the
    /// connection healthy. An I/O error, a reply timeout or a protocol error mark it failed:
    /// the pool discards it when it comes back, and later checks refuse it.
    ///
    /// # Cancel safety
    /// Cancel safe: the multiplexed connection drops the reply of a request whose future is
    /// gone, and the connection stays usable.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        // Take the raw reply first, so that a conversion error is not mistaken for a broken
        // connection (the crate reports both as parse errors).
        let reply = cmd
            .query_async::<redis::Value>(&mut self.conn.clone())
            .await;
        Ok(redis::from_redis_value(self.record(reply)?)?)
    }

    /// Runs the commands of `pipe` back to back (one write, no other lease's command in
    /// between), and returns the replies of those not ignored.
    ///
    /// # Errors
    /// As [`query`](RedisConn::query); a server error reply to any command of the pipeline
    /// is the error.
    ///
    /// # Cancel safety
    /// As [`query`](RedisConn::query).
    pub async fn query_pipeline(&self, pipe: &redis::Pipeline) -> RedisResult<Vec<redis::Value>> {
        let reply = pipe
            .query_async::<Vec<redis::Value>>(&mut self.conn.clone())
            .await;
        self.record(reply)
    }

    /// Notes a reply: its time, or the connection's failure.
    fn record<T>(&self, reply: RedisResult<T>) -> RedisResult<T> {
        match &reply {
            Err(error) if error.is_io_error() || error.is_unrecoverable_error() => {
                self.failed.store(true, Ordering::Relaxed);
            }
            // A value, or an error the server answered: the connection itself is fine.
            _ => {
                let since = self.opened.elapsed().as_nanos();
                self.last_reply
                    .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        }
        reply
    }

    /// When the connection last answered anything (its opening counts as an answer).
    pub fn last_reply(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last_reply.load(Ordering::Relaxed))
    }

    /// `SET key value EX ttl_secs`.
    ///
    /// # Errors
    /// As [`query`](RedisConn::query).
    ///
    /// # Cancel safety
    /// As [`query`](RedisConn::query); the write may still happen.
    pub async fn set(&self, key: &str, value: &str, ttl_secs: u64) -> RedisResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("EX").arg(ttl_secs);
        let _: redis::Value = self.query(&cmd).await?;
        Ok(())
    }

    /// `GET key`: `None` when the key does not exist.
    ///
    /// # Errors
    /// As [`query`](RedisConn::query).
    ///
    /// # Cancel safety
    /// As [`query`](RedisConn::query).
    pub async fn get(&self, key: &str) -> RedisResult<Option<String>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// `WAIT replicas timeout`: waits until `replicas` replicas acknowledged every write made
    /// on this connection so far, or `timeout` passed, and returns how many did (at least
    /// `replicas` on success). A zero `timeout` counts as 1 ms, since `WAIT n 0` would block
    /// for ever. Keep `timeout` under the manager's
    /// [`response_timeout`](RedisManager::response_timeout), or the reply timeout fires
    /// first and the connection is discarded.
    ///
    /// # Errors
    /// [`WriteError::NotReplicated`] when fewer than `replicas` acknowledged within
    /// `timeout`; [`WriteError::Redis`] as [`query`](RedisConn::query) (on a replica, WAIT
    /// is refused with a server error).
    ///
    /// # Cancel safety
    /// As [`query`](RedisConn::query); the replicas may still acknowledge.
    pub async fn wait_replicas(
        &self,
        replicas: usize,
        timeout: Duration,
    ) -> Result<usize, WriteError> {
        let millis = timeout.as_millis().max(1);
        let acked: usize = self
            .query(redis::cmd("WAIT").arg(replicas).arg(millis as u64))
            .await?;
        if acked < replicas {
            return Err(WriteError::NotReplicated {
                asked: replicas,
                acked,
                timeout,
            });
        }
        Ok(acked)
    }

    /// `SET key value EX ttl_secs`, then, when `replicas` is above 0,
    /// [`wait_replicas`](RedisConn::wait_replicas)`(replicas, timeout)`: once this returns
    /// `Ok`, a GET on any of those replicas sees the value.
    ///
    /// # Errors
    /// As [`set`](RedisConn::set) and [`wait_replicas`](RedisConn::wait_replicas). After
    /// [`WriteError::NotReplicated`] the value is on the primary.
    ///
    /// # Cancel safety
    /// As [`query`](RedisConn::query); the write may still happen and replicate.
    pub async fn set_replicated(
        &self,
        key: &str,
        value: &str,
        ttl_secs: u64,
        replicas: usize,
        timeout: Duration,
    ) -> Result<(), WriteError> {
        self.set(key, value, ttl_secs).await?;
        if replicas > 0 {
            self.wait_replicas(replicas, timeout).await?;
        }
        Ok(())
    }

    /// True once a command failed on this connection; the pool then discards it.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_of_any_host_and_port_is_made_without_a_url() {
        for (host, port) in [("127.0.0.1", 7000), ("::1", 7001), ("localhost", 7002)] {
            let manager = RedisManager::tcp(host, port);
            assert_eq!(manager.addr(), format!("{host}:{port}"));
            assert!(manager.client.is_ok(), "{manager:?}");
        }
    }
}
