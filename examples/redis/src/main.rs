//! The load program: SET then GET of distinct keys from many tasks, through the pool in
//! front of a real Redis server, a primary and its replicas, or a Redis Cluster (the
//! library of this package: [`RedisManager`](redis_example::RedisManager) and
//! [`redis_example::cluster`]).
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
//!   and every replica: a `Balanced` set of `RedisManager`s named `primary`, `replica-1`, ...
//!   (`RedisManager::with_replicas`). Each new read connection goes to the endpoint with the
//!   fewest, so a pool of `n` spreads over the servers; a dead replica is ejected and its
//!   reads move to the others. The summary prints the reads each endpoint served (counted by
//!   `Routed::endpoint`) and its status.
//! - Decision: each SET is followed by `WAIT <replicas> <timeout>` on the same primary
//!   connection (`RedisConn::set_replicated`), because replication is asynchronous: without
//!   it, a GET on a replica right after the SET may miss the key. WAIT answers how many
//!   replicas acknowledged the write; fewer than asked is a failed write
//!   (`WriteError::NotReplicated`), never a silent success. It costs one more round trip
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
//! Against a Redis Cluster, `--cluster <redis://host:port>` (repeatable, or comma-separated:
//! seed nodes) replaces `--url`, and each pair goes through a `ClusterClient` (a pool per
//! node, keys spread over every slot by their names):
//!
//! ```sh
//! scripts/redis-cluster start /tmp/redis-cluster > /tmp/seeds   # the 6 nodes' URLs
//! cargo run --release -p redis-example -- $(sed 's/^/--cluster /' /tmp/seeds) --wait-replicas 1
//! scripts/redis-cluster stop /tmp/redis-cluster
//! ```
//!
//! - `--pool` is the connections per node; `--deadline <secs>` (default 5) bounds each
//!   request, retries included; `--wait-replicas <n>` (default 0) follows each SET with
//!   `WAIT n` so that a promoted replica holds every confirmed write (too few acknowledgements
//!   are written and waited for again within the deadline); `--read-from-replicas` sends
//!   GETs to the shard's replica with the fewest leases in flight.
//! - The summary ends with `errors: N  mismatches: M`, then one line per node: its role, the
//!   requests it served (a SET with its WAIT counts one), its connections and its health.
//!
//! With `--bench`, the same pairs (no `WAIT`) go through our cluster client and through the
//! `redis` crate's own (`redis::cluster_async::ClusterConnection`), in alternating rounds on
//! the same cluster (`src/load/bench/`): `--rounds <n>` (default 10) recorded rounds of
//! `--tasks` x `--requests` pairs per client, after a warm-up round each. The report gives
//! each round's rates, their medians and ratio, and each client's p50/p99 per pair; a run
//! that counted any error says so and exits with status 1. Our client runs at its builder's
//! defaults (up to 4 connections per node, the second opened once 128 requests are in flight
//! on the first) unless `--pool` is given.
//!
//! ```sh
//! cargo run --release -p redis-example -- --bench $(sed 's/^/--cluster /' /tmp/seeds)
//! ```
//!
//! The manager (`src/manager.rs`) is the part to copy. `examples/redis/tests/redis.rs` runs
//! this same manager against a `redis-server` it starts, kills and restarts, and
//! `tests/cluster.rs` the cluster client against a 6-node cluster (`cargo test -p
//! redis-example`).
//!
//! A package of its own (`examples/redis/`), so that the `redis` crate is built for this
//! program and its tests only, never for the other examples.
#![forbid(unsafe_code)]

mod load;

use std::error::Error;
use std::time::Duration;

/// The example's settings, from the command line.
pub struct Args {
    url: String,
    replicas: Vec<String>,
    /// Seeds of a Redis Cluster; when given, the run is against the cluster.
    cluster: Vec<String>,
    pool: usize,
    tasks: usize,
    requests: usize,
    /// Each cluster request's deadline, retries included.
    deadline: Duration,
    /// Replicas each SET waits for in a cluster (`WAIT`).
    wait_replicas: usize,
    /// Cluster reads go to replicas.
    read_from_replicas: bool,
    /// `--bench`: our cluster client beside the `redis` crate's.
    bench: bool,
    /// Recorded rounds of `--bench`.
    rounds: usize,
    /// `--pool` was given (the bench leaves our client's default otherwise).
    pool_given: bool,
}

const USAGE: &str =
    "usage: redis-example [--url redis://127.0.0.1:6379] [--replica URL[,URL...]]... \
     [--pool 8] [--tasks 64] [--requests 200]
       redis-example --cluster URL[,URL...]... [--deadline 5] [--wait-replicas 0] \
     [--read-from-replicas] [--pool 8] [--tasks 64] [--requests 200]
       redis-example --bench --cluster URL[,URL...]... [--rounds 10] [--tasks 64] \
     [--requests 200] [--pool N] [--deadline 5]";

/// Flags of the cluster run only.
const CLUSTER_ONLY: [&str; 3] = ["--deadline", "--wait-replicas", "--read-from-replicas"];

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "redis://127.0.0.1:6379".to_owned(),
        replicas: Vec::new(),
        cluster: Vec::new(),
        pool: 8,
        tasks: 64,
        requests: 200,
        deadline: Duration::from_secs(5),
        wait_replicas: 0,
        read_from_replicas: false,
        bench: false,
        rounds: 10,
        pool_given: false,
    };
    let mut given = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        given.push(flag.clone());
        // Switches: flags that take no value.
        match flag.as_str() {
            "--read-from-replicas" => {
                args.read_from_replicas = true;
                continue;
            }
            "--bench" => {
                args.bench = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} needs a positive number, got {value:?}"))
        };
        let urls = |into: &mut Vec<String>| {
            for url in value.split(',').map(str::trim) {
                if url.is_empty() {
                    return Err(format!("{flag} needs URLs, got {value:?}"));
                }
                into.push(url.to_owned());
            }
            Ok(())
        };
        match flag.as_str() {
            "--url" => args.url = value.clone(),
            "--replica" => urls(&mut args.replicas)?,
            "--cluster" => urls(&mut args.cluster)?,
            "--pool" => args.pool = number()?,
            "--tasks" => args.tasks = number()?,
            "--requests" => args.requests = number()?,
            "--rounds" => args.rounds = number()?,
            "--deadline" => {
                let secs = value.parse::<f64>().ok().filter(|s| *s > 0.0 && *s < 1e6);
                let secs =
                    secs.ok_or_else(|| format!("--deadline needs seconds, got {value:?}"))?;
                args.deadline = Duration::from_secs_f64(secs);
            }
            "--wait-replicas" => {
                args.wait_replicas = value
                    .parse()
                    .map_err(|_| format!("--wait-replicas needs a number, got {value:?}"))?;
            }
            other => return Err(format!("unknown flag {other}; try --help")),
        }
    }
    let has = |flag: &str| given.iter().any(|g| g == flag);
    args.pool_given = has("--pool");
    if args.bench {
        if args.cluster.is_empty() {
            return Err("--bench measures cluster clients: give --cluster".to_owned());
        }
        if let Some(flag) = ["--wait-replicas", "--read-from-replicas"]
            .iter()
            .find(|f| has(f))
        {
            return Err(format!(
                "{flag} does not go with --bench (no WAIT, reads on primaries)"
            ));
        }
    } else if has("--rounds") {
        return Err("--rounds needs --bench".to_owned());
    }
    if args.cluster.is_empty() {
        if let Some(flag) = CLUSTER_ONLY.iter().find(|f| has(f)) {
            return Err(format!("{flag} needs --cluster"));
        }
    } else if has("--url") || has("--replica") {
        return Err("--cluster runs against a cluster: drop --url and --replica".to_owned());
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if args.bench {
        load::run_bench(&args).await;
        Ok(())
    } else if args.cluster.is_empty() {
        load::single::run(&args).await
    } else {
        load::cluster::run(&args).await
    }
}
