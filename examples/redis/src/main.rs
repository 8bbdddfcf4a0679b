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
//! SET+GET pairs per task (default 200). Every key is written with a 60 s expiry, so the run
//! leaves nothing behind.
//!
//! The manager is the part to copy. `examples/redis/tests/redis.rs` runs this same manager
//! against a `redis-server` it starts, kills and restarts (`cargo test -p redis-example`).
//!
//! A package of its own (`examples/redis/`), so that the `redis` crate is built for this
//! program and its test only, never for the other examples.
#![forbid(unsafe_code)]

use std::error::Error;
use std::time::{Duration, Instant};

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

    /// True once a command failed on this connection; the pool then discards it.
    pub fn is_failed(&self) -> bool {
        self.failed
    }
}

/// The example's settings, from the command line.
struct Args {
    url: String,
    pool: usize,
    tasks: usize,
    requests: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "redis://127.0.0.1:6379".to_owned(),
        pool: 8,
        tasks: 64,
        requests: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(
                "usage: redis [--url redis://127.0.0.1:6379] [--pool 8] [--tasks 64] [--requests 200]"
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
            "--pool" => args.pool = number()?,
            "--tasks" => args.tasks = number()?,
            "--requests" => args.requests = number()?,
            other => return Err(format!("unknown flag {other}; try --help")),
        }
    }
    Ok(args)
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    pairs: usize,
    errors: usize,
    mismatches: usize,
    latencies: Vec<Duration>,
}

/// SET then GET of distinct keys, `requests` times, each pair through its own checkout.
async fn run_task(pool: Pool<RedisManager>, task: usize, requests: usize, run: u128) -> Tally {
    let mut tally = Tally::default();
    for i in 0..requests {
        let key = format!("mux-pool:example:{run}:{task}:{i}");
        let value = format!("value-{task}-{i}");
        let started = Instant::now();
        let outcome = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            conn.set(&key, &value, 60)
                .await
                .map_err(|e| e.to_string())?;
            conn.get(&key).await.map_err(|e| e.to_string())
        }
        .await;
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
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
    let pool = Pool::builder(manager)
        .max_size(args.pool)
        .connect_timeout(Duration::from_secs(2))
        .check_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(5))
        .build()?;

    // Fail fast, with a hint, when nothing listens at the URL.
    if let Err(error) = pool.get().await {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(inner) = cause {
            text = format!("{text}: {inner}");
            cause = inner.source();
        }
        eprintln!(
            "could not reach Redis at {}: {text}\nstart one with `redis-server` or pass --url",
            args.url
        );
        std::process::exit(1);
    }

    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| tokio::spawn(run_task(pool.clone(), task, args.requests, run)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.pairs += tally.pairs;
        total.errors += tally.errors;
        total.mismatches += tally.mismatches;
        total.latencies.extend(tally.latencies);
    }
    let elapsed = started.elapsed();
    total.latencies.sort_unstable();

    let status = pool.status();
    println!("redis at {}", args.url);
    println!(
        "{} tasks x {} SET+GET pairs through a pool of {} in {:.2?}",
        args.tasks, args.requests, args.pool, elapsed
    );
    println!(
        "pairs read back: {}  errors: {}  mismatches: {}",
        total.pairs, total.errors, total.mismatches
    );
    println!(
        "throughput: {:.0} commands/s  checkout+SET+GET latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        (total.pairs * 2) as f64 / elapsed.as_secs_f64(),
        percentile(&total.latencies, 0.50),
        percentile(&total.latencies, 0.99),
        percentile(&total.latencies, 1.0),
    );
    println!(
        "pool: size {} idle {}  created {} closed {} broken {} check failures {} waited {}",
        status.size,
        status.idle,
        status.counters.created,
        status.counters.closed,
        status.counters.broken,
        status.counters.check_failures,
        status.counters.waited,
    );
    pool.close().await;
    if total.errors > 0 || total.mismatches > 0 {
        std::process::exit(1);
    }
    Ok(())
}
