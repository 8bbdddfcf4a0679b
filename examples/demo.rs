//! The main demo: an echo server, a pool of multiplexed JSON connections, real traffic over
//! loopback TCP, and a summary.
//!
//! ```sh
//! cargo run --release --example demo
//! cargo run --release --example demo -- --requests 1000000 --concurrency 256 --pool-size 2
//! ```
//!
//! It starts the echo server in-process on an ephemeral loopback port, builds a
//! [`Pool`] of [`JsonManager`] connections, and sends `--requests` requests from
//! `--concurrency` tasks. Every response is checked: its `Uid` is the request's and its `Val`
//! is `"server: hello, " + Val`. It prints the throughput, the latency percentiles (measured
//! per request, from checkout to verified response) and the pool's status, and exits with a
//! failure status if any request failed.
#![forbid(unsafe_code)]

#[path = "support/cli.rs"]
mod cli;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli::{Flag, Spec};
use pool::{IdleOrder, Pool, PoolError, Status};
use transport_json::server::{Server, ServerConfig};
use transport_json::{Conn, ConnectOptions, Error, JsonManager, Message};

static SPEC: Spec = Spec {
    name: "demo",
    about: "Echo server + pool of multiplexed JSON connections + traffic, then a summary.",
    flags: &[
        Flag {
            name: "requests",
            value: Some("N"),
            default: "200000",
            help: "requests to send in all",
        },
        Flag {
            name: "concurrency",
            value: Some("C"),
            default: "64",
            help: "tasks sending at once",
        },
        Flag {
            name: "pool-size",
            value: Some("P"),
            default: "4",
            help: "connections in the pool (max_size)",
        },
    ],
};

/// The most failures printed in full; the rest are only counted.
const SHOWN_ERRORS: usize = 5;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::parse(&SPEC);
    let requests = args.positive("requests");
    let concurrency = args.positive("concurrency");
    let pool_size = args.positive("pool-size");

    let server = match Server::bind("127.0.0.1:0", ServerConfig::default()).await {
        Ok(server) => server.spawn(),
        Err(error) => return cli::fail("demo: cannot start the echo server", &error),
    };
    let addr = server.local_addr();

    let options = ConnectOptions::new(addr.to_string())
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(10)));
    let pool = match Pool::builder(JsonManager::new(options))
        .max_size(pool_size)
        // FIFO hands the idle connections out in turn, so the load spreads over all of them.
        .idle_order(IdleOrder::Fifo)
        .wait_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(pool) => pool,
        Err(error) => return cli::fail("demo: invalid pool settings", &error),
    };

    // Open every connection up front (all checked out at once, then returned), so the run
    // measures traffic, not connects. The handles are kept only to read counters at the end.
    let warm = futures::future::try_join_all((0..pool_size).map(|_| pool.get())).await;
    let conns: Vec<Conn> = match warm {
        Ok(guards) => guards.iter().map(|guard| Conn::clone(guard)).collect(),
        Err(error) => return cli::fail(&format!("demo: cannot connect to {addr}"), &error),
    };

    let plural = if pool_size == 1 { "" } else { "s" };
    println!(
        "demo: echo server on {addr}; pool of {pool_size} connection{plural}; \
         {requests} requests from {concurrency} tasks"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(run_task(pool.clone(), Arc::clone(&next), requests)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(error) => return cli::fail("demo: a task panicked", &error),
        }
    }
    let elapsed = started.elapsed();

    let writes: u64 = conns.iter().map(Conn::write_batches).sum();
    drop(conns);
    print_summary(&total, requests, elapsed, writes, &pool.status());
    for (n, error) in total.errors.iter().enumerate() {
        eprintln!("  error {}: {error}", n + 1);
    }

    pool.close().await;
    if let Err(error) = server.shutdown().await {
        return cli::fail("demo: the server did not stop cleanly", &error);
    }
    if total.failed == 0 && total.ok == requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the tasks saw: answers verified, failures, and the latency of each answer.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    /// The first few failures, with their whole error chain.
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

impl Tally {
    fn fail(&mut self, uid: &str, error: String) {
        self.failed += 1;
        if self.errors.len() < SHOWN_ERRORS {
            self.errors.push(format!("request {uid}: {error}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        let room = SHOWN_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        self.latencies.extend(other.latencies);
    }
}

/// One of the `--concurrency` tasks: takes request numbers off the shared counter until all
/// are taken, and sends each one.
async fn run_task(pool: Pool<JsonManager>, next: Arc<AtomicUsize>, requests: usize) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= requests {
            return tally;
        }
        let uid = n.to_string();
        let val = format!("request {n}");
        let expected = format!("server: hello, {val}");
        let sent = Instant::now();
        let result = match checkout(&pool).await {
            Ok(conn) => conn
                .send(Message {
                    uid: uid.clone(),
                    val,
                })
                .await
                .map_err(|error| cli::chain(&error)),
            Err(error) => Err(cli::chain(&error)),
        };
        match result {
            Ok(resp) if resp.uid == uid && resp.val == expected && !resp.ts.is_empty() => {
                tally.latencies.push(sent.elapsed());
                tally.ok += 1;
            }
            Ok(resp) => tally.fail(&uid, format!("wrong response {resp:?}")),
            Err(error) => tally.fail(&uid, error),
        }
    }
}

/// Takes a connection for one request the way this transport is meant to be pooled.
///
/// A [`Conn`] multiplexes: any number of requests may be in flight on it at once. So a task
/// does not hold its pool guard while it waits for the response (that would allow only
/// `--pool-size` requests in flight, one per connection). It checks a connection out, clones
/// the handle (an `Arc`), and returns the guard at once; the request then pipelines with the
/// other tasks' requests on that connection, and the pool acts as the set of connections the
/// load is spread over, each still checked and replaced by the pool when it breaks.
///
/// A connection that closed while idle reports itself broken, so the pool never hands it
/// out: no retry is needed here.
async fn checkout(pool: &Pool<JsonManager>) -> Result<Conn, PoolError<Error>> {
    let guard = pool.get().await?;
    Ok(Conn::clone(&guard))
}

fn print_summary(total: &Tally, requests: usize, elapsed: Duration, writes: u64, status: &Status) {
    let mut latencies = total.latencies.clone();
    latencies.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        total.ok as f64 / secs
    } else {
        0.0
    };
    println!(
        "requests    {requests} sent, {} answered and verified, {} failed",
        total.ok, total.failed
    );
    println!("elapsed     {elapsed:.2?}");
    println!("throughput  {rate:.0} req/s");
    println!(
        "latency     p50 {:.1?}  p99 {:.1?}  max {:.1?}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
    );
    if writes > 0 {
        println!(
            "client      {writes} batched writes, {:.1} requests per write",
            requests as f64 / writes as f64
        );
    }
    let c = &status.counters;
    println!(
        "pool        max {} size {} idle {} in use {} waiting {}; \
         created {} closed {} broken {} check failures {} timeouts {}",
        status.max_size,
        status.size,
        status.idle,
        status.in_use,
        status.waiting,
        c.created,
        c.closed,
        c.broken,
        c.check_failures,
        c.timeouts,
    );
}

/// The nearest-rank percentile of sorted samples; zero when there are none.
fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
