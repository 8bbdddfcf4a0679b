//! The run against one server, or a primary and its replicas (`--url`, `--replica`).

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};

use pool::Pool;
use pool::balance::{Balanced, Routed};
use redis_example::{RedisConn, RedisManager, WriteError};

use crate::Args;
use crate::load::{Tally, chain, percentile, run_id};

/// How long a write waits for its replicas (`WAIT`); under the 2 s reply timeout.
const WAIT_TIMEOUT: Duration = Duration::from_secs(1);

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

/// Runs the load and prints its summary; exits with status 1 when a pair failed.
///
/// # Errors
/// An invalid URL or pool setting.
pub async fn run(args: &Args) -> Result<(), Box<dyn Error>> {
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
    let run = run_id();
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
        total.add(task.await?);
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
