//! The pool in front of a real Redis server: a [`Manager`] whose connection is the `redis`
//! crate's async multiplexed connection.
//!
//! ```sh
//! redis-server --port 6379 --save "" --appendonly no &
//! cargo run --release -p redis-example -- --url redis://127.0.0.1:6379
//! ```
//!
//! Flags: `--url <redis://host:port>` (default `redis://127.0.0.1:6379`), `--pool <n>`
//! connections (default 8), `--tasks <n>` concurrent tasks (default 64), `--requests <n>`
//! SET+GET pairs per task (default 200), `--replica <redis://host:port>` (repeatable, or
//! comma-separated) replicas of the `--url` server. Every key is written with a 60 s expiry,
//! so the run leaves nothing behind.
//!
//! With replicas, writes and reads take two pools:
//!
//! ```sh
//! redis-server --port 6380 --save "" --appendonly no --replicaof 127.0.0.1 6379 &
//! cargo run --release -p redis-example -- --url redis://127.0.0.1:6379 --replica redis://127.0.0.1:6380
//! ```
//!
//! - Writes go to a pool of the primary alone; reads go to one pool in front of the primary
//!   and every replica: a [`Balanced`] set of [`RedisManager`]s named `primary`,
//!   `replica-1`, ... ([`RedisManager::with_replicas`]). Each new read connection goes to the
//!   endpoint with the fewest, so a pool of `n` spreads over the servers; a dead replica is
//!   ejected and its reads move to the others. The summary prints the reads each endpoint
//!   served (counted by [`Routed::endpoint`]) and its status.
//! - Decision: each SET is followed by `WAIT <replicas> <timeout>` on the same primary
//!   connection ([`RedisConn::set_replicated`]), because replication is asynchronous: without
//!   it, a GET on a replica right after the SET may miss the key. WAIT answers how many
//!   replicas acknowledged the write; fewer than asked is a failed write
//!   ([`WriteError::NotReplicated`]), never a silent success. It costs one more round trip
//!   per write and stalls writes while a replica is down, which is the price of
//!   read-your-writes on replicas; a program that tolerates stale reads drops the WAIT.
//! - Before the run, one write waits for every replica (10 s at most), since a replica
//!   started just before may still be in its first sync (a primary with default settings
//!   starts it after 5 s); a replica that never acknowledges stops the program with a hint.
//! - WAIT counts the primary's replicas, whichever they are: it does not tell whether the
//!   `--replica` URLs are those replicas. A dead one is ejected (its reads go to the others,
//!   and the summary shows it ejected); a server that is not a replica shows as mismatches.
//! - Decision: the WAIT timeout (1 s) stays under the connection's reply timeout (2 s), so a
//!   slow replica is reported as `NotReplicated`, not as a reply timeout that would discard a
//!   healthy primary connection.
//!
//! The manager is the part to copy. `examples/redis/tests/redis.rs` runs this same manager
//! against a `redis-server` it starts, kills and restarts (`cargo test -p redis-example`).
//!
//! A package of its own (`examples/redis/`), so that the `redis` crate is built for this
//! program and its test only, never for the other examples.
#![forbid(unsafe_code)]

use std::error::Error;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use pool::balance::{Balanced, Routed, SetError};
use pool::{Manager, Pool};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, RedisResult};

/// Makes pooled Redis connections: each is one multiplexed connection of the `redis` crate,
/// wrapped in a [`RedisConn`] that remembers whether it failed and when it last answered.
#[derive(Debug, Clone)]
pub struct RedisManager {
    client: redis::Client,
    response_timeout: Duration,
    ping_after: Duration,
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
        Ok(RedisManager {
            client: redis::Client::open(url)?,
            response_timeout: Duration::from_secs(2),
            ping_after: Duration::from_secs(1),
        })
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
                client,
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
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(RedisConn {
            conn,
            last_reply: Instant::now(),
            failed: false,
        })
    }

    // Free when the connection answered recently, one PING round trip otherwise. A
    // connection that already failed is refused without any I/O.
    async fn check(&self, conn: &mut RedisConn) -> RedisResult<()> {
        if conn.failed {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection failed earlier",
            )));
        }
        if conn.last_reply.elapsed() < self.ping_after {
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
        conn.failed
    }

    // The default `close` (drop) is right: dropping the last handle of a multiplexed
    // connection stops its driver task and closes the socket.
}

/// A pooled Redis connection: runs commands and records whether the connection failed.
///
/// Use [`query`](RedisConn::query) (or [`set`](RedisConn::set) / [`get`](RedisConn::get))
/// rather than the inner connection, so that a failure is noticed and the pool discards the
/// connection when it comes back.
pub struct RedisConn {
    conn: MultiplexedConnection,
    last_reply: Instant,
    failed: bool,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("last_reply", &self.last_reply)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
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
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        // Take the raw reply first, so that a conversion error is not mistaken for a broken
        // connection (the crate reports both as parse errors).
        let reply = cmd.query_async::<redis::Value>(&mut self.conn).await;
        match reply {
            Ok(value) => {
                self.last_reply = Instant::now();
                Ok(redis::from_redis_value(value)?)
            }
            Err(error) => {
                if error.is_io_error() || error.is_unrecoverable_error() {
                    self.failed = true;
                } else {
                    // The server answered with an error: the connection itself is fine.
                    self.last_reply = Instant::now();
                }
                Err(error)
            }
        }
    }

    /// `SET key value EX ttl_secs`.
    ///
    /// # Errors
    /// As [`query`](RedisConn::query).
    ///
    /// # Cancel safety
    /// As [`query`](RedisConn::query); the write may still happen.
    pub async fn set(&mut self, key: &str, value: &str, ttl_secs: u64) -> RedisResult<()> {
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
    pub async fn get(&mut self, key: &str) -> RedisResult<Option<String>> {
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
        &mut self,
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
        &mut self,
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
        self.failed
    }
}

/// The example's settings, from the command line.
struct Args {
    url: String,
    replicas: Vec<String>,
    pool: usize,
    tasks: usize,
    requests: usize,
}

/// How long a write waits for its replicas (`WAIT`); under the 2 s reply timeout.
const WAIT_TIMEOUT: Duration = Duration::from_secs(1);

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "redis://127.0.0.1:6379".to_owned(),
        replicas: Vec::new(),
        pool: 8,
        tasks: 64,
        requests: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(
                "usage: redis [--url redis://127.0.0.1:6379] [--replica URL[,URL...]]... \
                 [--pool 8] [--tasks 64] [--requests 200]"
                    .to_owned(),
            );
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} needs a positive number, got {value:?}"))
        };
        match flag.as_str() {
            "--url" => args.url = value.clone(),
            "--replica" => {
                for url in value.split(',').map(str::trim) {
                    if url.is_empty() {
                        return Err(format!("--replica needs URLs, got {value:?}"));
                    }
                    args.replicas.push(url.to_owned());
                }
            }
            "--pool" => args.pool = number()?,
            "--tasks" => args.tasks = number()?,
            "--requests" => args.requests = number()?,
            other => return Err(format!("unknown flag {other}; try --help")),
        }
    }
    for (i, url) in args.replicas.iter().enumerate() {
        if *url == args.url || args.replicas[..i].contains(url) {
            return Err(format!(
                "{url} is given twice (--url and --replica must differ)"
            ));
        }
    }
    Ok(args)
}

/// Where a task sends its commands.
#[derive(Clone)]
struct Pools {
    /// The primary: every SET (and, without replicas, every GET).
    writes: Pool<RedisManager>,
    /// With replicas: the primary and the replicas, for GETs.
    reads: Option<Pool<Balanced<RedisManager>>>,
    /// How many replicas each SET waits for.
    replicas: usize,
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    pairs: usize,
    errors: usize,
    mismatches: usize,
    latencies: Vec<Duration>,
    /// GETs answered, by endpoint name (with replicas only).
    reads: BTreeMap<String, usize>,
}

/// One SET then GET of `key`: on one checkout without replicas; with them, the SET and its
/// WAIT on a primary connection, then the GET on a read connection, counted by endpoint.
async fn set_get(
    pools: &Pools,
    key: &str,
    value: &str,
    reads: &mut BTreeMap<String, usize>,
) -> Result<Option<String>, String> {
    let mut conn = pools.writes.get().await.map_err(|e| e.to_string())?;
    conn.set_replicated(key, value, 60, pools.replicas, WAIT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let Some(read_pool) = &pools.reads else {
        return conn.get(key).await.map_err(|e| e.to_string());
    };
    drop(conn);
    let mut conn = read_pool.get().await.map_err(|e| e.to_string())?;
    let read = conn.get(key).await.map_err(|e| e.to_string())?;
    let endpoint = Routed::endpoint(&conn);
    match reads.get_mut(endpoint) {
        Some(count) => *count += 1,
        None => {
            reads.insert(endpoint.to_owned(), 1);
        }
    }
    Ok(read)
}

/// SET then GET of distinct keys, `requests` times.
async fn run_task(pools: Pools, task: usize, requests: usize, run: u128) -> Tally {
    let mut tally = Tally::default();
    for i in 0..requests {
        let key = format!("mux-pool:example:{run}:{task}:{i}");
        let value = format!("value-{task}-{i}");
        let started = Instant::now();
        let outcome = set_get(&pools, &key, &value, &mut tally.reads).await;
        tally.latencies.push(started.elapsed());
        match outcome {
            Ok(Some(read)) if read == value => tally.pairs += 1,
            Ok(_) => tally.mismatches += 1,
            Err(error) => {
                if tally.errors == 0 {
                    eprintln!("task {task}: {error}");
                }
                tally.errors += 1;
            }
        }
    }
    tally
}

/// How many times [`replicas_ready`] writes and waits `WAIT_TIMEOUT` before it gives up.
const READY_ATTEMPTS: usize = 10;

/// Writes a key on `conn` (the primary) and waits for `replicas` to acknowledge it, again
/// while they do not, `READY_ATTEMPTS` times at most (10 s): a replica started just before
/// the run may still be in its first sync, which a primary with default settings starts
/// only after 5 s (`repl-diskless-sync-delay`), and whose writes a diskless primary streams
/// only after the replica's next acknowledgement (up to 1 s more).
async fn replicas_ready(
    conn: &mut RedisConn,
    replicas: usize,
    run: u128,
) -> Result<(), WriteError> {
    let key = format!("mux-pool:example:{run}:ready");
    let mut attempt = 1;
    loop {
        match conn
            .set_replicated(&key, "1", 60, replicas, WAIT_TIMEOUT)
            .await
        {
            Ok(()) => return Ok(()),
            Err(WriteError::NotReplicated { acked, .. }) if attempt < READY_ATTEMPTS => {
                if attempt == 1 {
                    eprintln!(
                        "waiting for {replicas} replica(s) to acknowledge a write ({acked} did); \
                         a new replica's first sync takes a few seconds"
                    );
                }
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// An error with its causes, on one line; a cause whose text already ends the line (the
/// `redis` crate repeats its source in its own message) is not repeated.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text = format!("{text}: {inner_text}");
        }
        cause = inner.source();
    }
    text
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let manager = RedisManager::new(&args.url)?;
    let reads = if args.replicas.is_empty() {
        None
    } else {
        let balanced = manager.clone().with_replicas(&args.replicas)?;
        Some(
            Pool::builder(balanced)
                .max_size(args.pool)
                .connect_timeout(Duration::from_secs(2))
                .check_timeout(Duration::from_secs(1))
                .wait_timeout(Duration::from_secs(5))
                .build()?,
        )
    };
    let writes = Pool::builder(manager)
        .max_size(args.pool)
        .connect_timeout(Duration::from_secs(2))
        .check_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(5))
        .build()?;

    // Fail fast, with a hint, when nothing listens at the URL.
    let mut conn = match writes.get().await {
        Ok(conn) => conn,
        Err(error) => {
            eprintln!(
                "could not reach Redis at {}: {}\nstart one with `redis-server` or pass --url",
                args.url,
                chain(&error)
            );
            std::process::exit(1);
        }
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // And when the replicas do not acknowledge writes, rather than every write of the run
    // failing `NotReplicated` after `WAIT_TIMEOUT`.
    if !args.replicas.is_empty()
        && let Err(error) = replicas_ready(&mut conn, args.replicas.len(), run).await
    {
        eprintln!(
            "{} does not replicate to {} replica(s): {}\nstart them with `redis-server \
             --replicaof <host> <port>`",
            args.url,
            args.replicas.len(),
            chain(&error)
        );
        std::process::exit(1);
    }
    drop(conn);

    let pools = Pools {
        writes: writes.clone(),
        reads: reads.clone(),
        replicas: args.replicas.len(),
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| tokio::spawn(run_task(pools.clone(), task, args.requests, run)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.pairs += tally.pairs;
        total.errors += tally.errors;
        total.mismatches += tally.mismatches;
        total.latencies.extend(tally.latencies);
        for (endpoint, count) in tally.reads {
            *total.reads.entry(endpoint).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    total.latencies.sort_unstable();

    let status = writes.status();
    println!("redis at {}", args.url);
    let what = if args.replicas.is_empty() {
        "SET+GET pairs".to_owned()
    } else {
        format!(
            "SET+WAIT {} then GET on primary or replica",
            args.replicas.len()
        )
    };
    println!(
        "{} tasks x {} {what} through pools of {} in {:.2?}",
        args.tasks, args.requests, args.pool, elapsed
    );
    println!(
        "pairs read back: {}  errors: {}  mismatches: {}",
        total.pairs, total.errors, total.mismatches
    );
    let commands = if args.replicas.is_empty() { 2 } else { 3 };
    println!(
        "throughput: {:.0} commands/s  latency per pair (checkouts included) p50 {:.2?} p99 {:.2?} max {:.2?}",
        (total.pairs * commands) as f64 / elapsed.as_secs_f64(),
        percentile(&total.latencies, 0.50),
        percentile(&total.latencies, 0.99),
        percentile(&total.latencies, 1.0),
    );
    println!(
        "pool{}: size {} idle {}  created {} closed {} broken {} check failures {} waited {}",
        if reads.is_some() { " (writes)" } else { "" },
        status.size,
        status.idle,
        status.counters.created,
        status.counters.closed,
        status.counters.broken,
        status.counters.check_failures,
        status.counters.waited,
    );
    if let Some(reads) = &reads {
        for endpoint in reads.manager().endpoints() {
            let ejected = match endpoint.ejected_until {
                Some(until) if until > tokio::time::Instant::now() => "ejected",
                Some(_) => "ejected, probe due",
                None => "healthy",
            };
            println!(
                "reads on {}: {}  ({ejected}; {} connections, {} failures)",
                endpoint.name,
                total.reads.get(&endpoint.name).copied().unwrap_or(0),
                endpoint.live,
                endpoint.failures,
            );
        }
        reads.close().await;
    }
    writes.close().await;
    if total.errors > 0 || total.mismatches > 0 {
        std::process::exit(1);
    }
    Ok(())
}
