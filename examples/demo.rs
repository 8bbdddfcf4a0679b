//! The main demo: an echo server, a pool of multiplexed JSON connections, real traffic over
//! loopback TCP, and a summary.
//!
//! ```sh
//! cargo run --release --example demo
//! cargo run --release --example demo -- --requests 1000000 --concurrency 256 --pool-size 2
//! cargo run --release --example demo -- --pool-size 4 --max-streams 16
//! cargo run --release --example demo -- --servers 3 --pool-size 6 --max-streams 8
//! ```
//!
//! `--servers N` starts N echo servers and puts one pool in front of them all
//! ([`JsonManager::balanced`]): each new connection goes to the server with the fewest, and the
//! summary shows how many requests each server answered. The pool opens connections only as
//! the load needs them, so the servers share it evenly when it fills `--pool-size` (a
//! multiple of N) connections: above, 64 tasks need 8 connections of 8 streams, the pool
//! holds 6, two per server (measured: 100 101 / 100 024 / 99 875 requests).
//!
//! It starts the echo server in-process on an ephemeral loopback port, builds a
//! [`Pool`] of [`JsonManager`] connections, and sends `--requests` requests from
//! `--concurrency` tasks, each request on a [`Lease`] of its own: up to `--max-streams` leases
//! share one connection, over at most `--pool-size` connections. Every response is checked:
//! its `Uid` is the request's, its `Val` is `"server: hello, " + Val` (what the embedded echo
//! server answers) and it has a `Ts`. It prints the throughput, the latency percentiles and
//! a small histogram (measured per request, from the lease to the verified response, kept in
//! an HDR histogram: constant memory however long the run, 8-9 MB resident at 1 M and at 6 M
//! requests), how many requests each connection carried (by its local port) and the pool's
//! status, and exits with a failure status if any request failed. A run longer than two
//! seconds shows a live progress line (sent, rate, failed) on a terminal, none when piped.
//!
//! Defaults (`--pool-size 4 --max-streams 32 --concurrency 64`), measured on a 2-core machine
//! (1M requests a run, three runs each, 2026-12-03): the 64 tasks fill 2 connections of 32
//! and run at 628-634 k req/s with about 11 requests per write; 4 connections of 16 ran at
//! 600-625 k (6.7 per write), 1 connection of 64 at 453-460 k (14 per write), 1 of 16 (48
//! tasks waiting) at 174-178 k. A connection's reader and writer tasks are what run in
//! parallel here, so the load gains from a second connection on 2 cores and loses a little to
//! the smaller writes of more; the defaults keep 2 connections spare for heavier loads
//! (`--concurrency 256`: 4 connections of 64, 844-865 k). The README has the table.
#![forbid(unsafe_code)]

#[path = "support/cli.rs"]
mod cli;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli::{Flag, Spec};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pool::balance::{Balanced, Routed};
use pool::{Lease, Pool, Status};
use transport_json::server::{Server, ServerConfig};
use transport_json::{ConnectOptions, JsonManager, Message};

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
        Flag {
            name: "max-streams",
            value: Some("S"),
            default: "32",
            help: "leases (requests in flight) one connection carries at once",
        },
        Flag {
            name: "servers",
            value: Some("N"),
            default: "1",
            help: "echo servers to start, all behind the one pool",
        },
    ],
};

/// The most failures printed in full; the rest are only counted.
const SHOWN_ERRORS: usize = 5;

/// A run longer than this shows live progress (on a terminal only).
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::parse(&SPEC);
    let requests = args.positive("requests");
    let concurrency = args.positive("concurrency");
    let pool_size = args.positive("pool-size");
    let max_streams = args.positive("max-streams");

    let mut servers = Vec::new();
    for _ in 0..args.positive("servers") {
        match Server::bind("127.0.0.1:0", ServerConfig::default()).await {
            Ok(server) => servers.push(server.spawn()),
            Err(error) => return cli::fail("demo: cannot start an echo server", &error),
        }
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let addr = addrs.join(", ");

    let options = ConnectOptions::new(addrs[0].clone())
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(10)));
    let manager = match JsonManager::balanced(&options, addrs) {
        Ok(manager) => manager,
        Err(error) => return cli::fail("demo: invalid server set", &error),
    };
    let pool = match Pool::builder(manager)
        .max_size(pool_size)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(pool) => pool,
        Err(error) => return cli::fail("demo: invalid pool settings", &error),
    };

    // Reach the server once before the run: a failure is one clear error, not one per
    // request. The other connections open during the run, only when every open one carries
    // `--max-streams` leases: the pool's status at the end says how many the load needed.
    if let Err(error) = pool.lease().await {
        return cli::fail(&format!("demo: cannot connect to {addr}"), &error);
    }

    let plural = if pool_size == 1 { "" } else { "s" };
    println!(
        "demo: echo server(s) on {addr}; pool of up to {pool_size} connection{plural}, \
         {max_streams} streams each; {requests} requests from {concurrency} tasks"
    );
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let progress = tokio::spawn(show_progress(Arc::clone(&counts), requests));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(run_task(pool.clone(), Arc::clone(&counts), requests)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(error) => return cli::fail("demo: a task panicked", &error),
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    let _ = progress.await;

    // Every lease has ended, so every connection is idle: read its counter (none is removed).
    let mut writes = 0;
    pool.retain(|conn, _| {
        writes += conn.write_batches();
        true
    });
    print_summary(&total, requests, elapsed, writes, &pool.status());
    for (n, error) in total.errors.iter().enumerate() {
        eprintln!("  error {}: {error}", n + 1);
    }

    pool.close().await;
    for server in servers {
        if let Err(error) = server.shutdown().await {
            return cli::fail("demo: a server did not stop cleanly", &error);
        }
    }
    if total.failed == 0 && total.ok == requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the tasks have done so far, shared: requests taken (the next request number) and
/// failures, for the live progress line. Answers are counted per task (`Tally`), so the hot
/// path touches no more shared counters than before.
#[derive(Default)]
struct Counts {
    next: AtomicUsize,
    failed: AtomicUsize,
}

/// What the tasks saw: answers verified, failures, and the latency of each answer.
struct Tally {
    ok: usize,
    failed: usize,
    /// The first few failures, with their whole error chain.
    errors: Vec<String>,
    /// Latencies in microseconds: constant memory however long the run (an HDR histogram,
    /// 3 significant digits, growing only with the range of values seen).
    latencies: Histogram<u64>,
    /// Requests answered on each connection, keyed by the connection's local port: a linear
    /// search, since a pool holds a handful of connections.
    per_conn: Vec<(u16, usize)>,
    /// Requests answered by each server (its address), in the same way.
    per_server: Vec<(String, usize)>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ok: 0,
            failed: 0,
            errors: Vec::new(),
            latencies: Histogram::new(3).expect("3 significant digits are valid"),
            per_conn: Vec::new(),
            per_server: Vec::new(),
        }
    }
}

impl Tally {
    fn answered_on(&mut self, port: u16, n: usize) {
        match self.per_conn.iter_mut().find(|(p, _)| *p == port) {
            Some((_, count)) => *count += n,
            None => self.per_conn.push((port, n)),
        }
    }

    fn answered_by(&mut self, server: &str, n: usize) {
        match self.per_server.iter_mut().find(|(s, _)| s == server) {
            Some((_, count)) => *count += n,
            None => self.per_server.push((server.to_owned(), n)),
        }
    }

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
        // Both grow to fit (auto-resizing), so adding never fails for a bound.
        let _ = self.latencies.add(&other.latencies);
        for (port, n) in other.per_conn {
            self.answered_on(port, n);
        }
        for (server, n) in other.per_server {
            self.answered_by(&server, n);
        }
    }
}

/// One of the `--concurrency` tasks: takes request numbers off the shared counter until all
/// are taken, and sends each one.
async fn run_task(
    pool: Pool<Balanced<JsonManager>>,
    counts: Arc<Counts>,
    requests: usize,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = counts.next.fetch_add(1, Ordering::Relaxed);
        if n >= requests {
            return tally;
        }
        let uid = n.to_string();
        let val = format!("request {n}");
        let expected = format!("server: hello, {val}");
        let sent = Instant::now();
        // A lease per request, the way a multiplexed connection is pooled: up to
        // `--max-streams` leases pipeline their requests on one connection at once, the pool
        // puts each lease on the connection with the fewest, and dropping the lease (at the
        // end of this iteration) gives its room back. A connection that died takes no new
        // lease, so no retry is needed here.
        let conn: Lease<Balanced<JsonManager>> = match pool.lease().await {
            Ok(conn) => conn,
            Err(error) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tally.fail(&uid, cli::chain(&error));
                continue;
            }
        };
        let result = conn.send(Message {
            uid: uid.clone(),
            val,
        });
        match result.await {
            Ok(resp) if resp.uid == uid && resp.val == expected && !resp.ts.is_empty() => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                // Auto-resizing: any value fits.
                let _ = tally.latencies.record(micros.max(1));
                tally.ok += 1;
                tally.answered_on(conn.local_addr().port(), 1);
                tally.answered_by(Routed::endpoint(&conn), 1);
            }
            Ok(resp) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tally.fail(&uid, format!("wrong response {resp:?}"));
            }
            Err(error) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tally.fail(&uid, cli::chain(&error));
            }
        }
    }
}

/// Live progress for a long run: after [`PROGRESS_AFTER`], a line on standard error with the
/// requests sent, the failures and the rate, redrawn five times a second. Hidden when standard
/// error is not a terminal (piped, CI), so the summary stays the only output there. Ends when
/// aborted (the run is over).
async fn show_progress(counts: Arc<Counts>, requests: usize) {
    const EVERY: Duration = Duration::from_millis(200);
    tokio::time::sleep(PROGRESS_AFTER).await;
    let bar = ProgressBar::with_draw_target(Some(requests as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} sent  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Cleared when the task is aborted and the bar dropped.
    let bar = ClearOnDrop(bar);
    let mut before = (counts.next.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::time::sleep(EVERY).await;
        let now = (
            counts.next.load(Ordering::Relaxed).min(requests),
            Instant::now(),
        );
        let rate = (now.0 - before.0.min(now.0)) as f64 / (now.1 - before.1).as_secs_f64();
        before = now;
        bar.0.set_message(format!(
            "{rate:.0} req/s  {} failed",
            counts.failed.load(Ordering::Relaxed)
        ));
        bar.0.set_position(now.0 as u64);
    }
}

/// A progress bar that clears its line when dropped.
struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn print_summary(total: &Tally, requests: usize, elapsed: Duration, writes: u64, status: &Status) {
    let latencies = &total.latencies;
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
    let at = |q: f64| Duration::from_micros(latencies.value_at_quantile(q));
    println!(
        "latency     p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  p99.9 {:.1?}  max {:.1?}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        Duration::from_micros(latencies.max()),
    );
    print_histogram(latencies);
    if writes > 0 {
        println!(
            "client      {writes} batched writes, {:.1} requests per write",
            requests as f64 / writes as f64
        );
    }
    let mut spread = total.per_conn.clone();
    spread.sort_unstable();
    let counts: Vec<String> = spread
        .iter()
        .map(|(port, n)| format!(":{port} {n}"))
        .collect();
    let most = spread.iter().map(|&(_, n)| n).max().unwrap_or(0);
    let least = spread.iter().map(|&(_, n)| n).min().unwrap_or(0);
    let ratio = if least > 0 {
        most as f64 / least as f64
    } else {
        0.0
    };
    println!(
        "spread      requests per connection (local port, count): {}; max/min {ratio:.2}x \
         over {} of {} connections",
        counts.join(", "),
        spread.len(),
        status.size,
    );
    if total.per_server.len() > 1 {
        let mut servers = total.per_server.clone();
        servers.sort_unstable();
        let counts: Vec<String> = servers.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let most = servers.iter().map(|&(_, n)| n).max().unwrap_or(0);
        let least = servers.iter().map(|&(_, n)| n).min().unwrap_or(0);
        let ratio = if least > 0 {
            most as f64 / least as f64
        } else {
            0.0
        };
        println!(
            "servers     requests per server: {}; max/min {ratio:.2}x",
            counts.join(", ")
        );
    }
    let c = &status.counters;
    println!(
        "pool        max {} size {} idle {} in use {} leases {} waiting {}; \
         created {} closed {} broken {} check failures {} timeouts {}",
        status.max_size,
        status.size,
        status.idle,
        status.in_use,
        status.leases,
        status.waiting,
        c.created,
        c.closed,
        c.broken,
        c.check_failures,
        c.timeouts,
    );
}

/// A small latency histogram: one row per doubling of the latency, from the fastest answer
/// to the slowest, with the share of answers in it.
fn print_histogram(latencies: &Histogram<u64>) {
    let total = latencies.len();
    if total == 0 {
        return;
    }
    let first = latencies.min().max(1);
    let rows: Vec<(u64, u64)> = latencies
        .iter_log(first, 2.0)
        .map(|step| (step.value_iterated_to(), step.count_since_last_iteration()))
        .collect();
    let most = rows.iter().map(|&(_, n)| n).max().unwrap_or(1).max(1);
    for (upto, n) in rows {
        let width = usize::try_from(n * 40 / most).unwrap_or(40);
        println!(
            "  <= {:>9.1?} {:>5.1}% {}",
            Duration::from_micros(upto),
            n as f64 * 100.0 / total as f64,
            "#".repeat(width),
        );
    }
}
