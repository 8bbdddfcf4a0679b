//! The load program: SET then GET of distinct keys from many tasks, through the pool in
//! front of a real Redis server (the [`RedisManager`] of this package's library).
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
//! The manager (`src/manager.rs`) is the part to copy. `examples/redis/tests/redis.rs` runs
//! this same manager against a `redis-server` it starts, kills and restarts (`cargo test -p
//! redis-example`).
//!
//! A package of its own (`examples/redis/`), so that the `redis` crate is built for this
//! program and its test only, never for the other examples.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};

use pool::Pool;
use pool::balance::{Balanced, Routed};
use redis_example::{RedisConn, RedisManager, WriteError};

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
    let conn = pools.writes.get().await.map_err(|e| e.to_string())?;
    conn.set_replicated(key, value, 60, pools.replicas, WAIT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let Some(read_pool) = &pools.reads else {
        return conn.get(key).await.map_err(|e| e.to_string());
    };
    drop(conn);
    let conn = read_pool.get().await.map_err(|e| e.to_string())?;
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
async fn replicas_ready(conn: &RedisConn, replicas: usize, run: u128) -> Result<(), WriteError> {
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
    let conn = match writes.get().await {
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
        && let Err(error) = replicas_ready(&conn, args.replicas.len(), run).await
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
