//! The pool as a tower `Service`: an echo server, a [`PoolService`] wrapped in tower's
//! concurrency limit, retry and timeout layers, real traffic over loopback TCP, and a summary.
//!
//! ```sh
//! cargo run --release --example tower
//! cargo run --release --example tower -- --requests 100000 --concurrency 128 --timeout 0.5
//! ```
//!
//! It starts the echo server in-process on an ephemeral loopback port, builds a [`Pool`] of
//! [`JsonManager`] connections and the stack
//!
//! ```text
//! concurrency_limit(--limit)  at most this many calls in flight, over every clone
//!   retry(RetryTransient)          again (up to --retries times) after a timeout or a closed connection
//!     timeout(--timeout)      each attempt on its own clock
//!       PoolService           poll_ready reserves a lease; the call holds it until the answer
//! ```
//!
//! and sends `--requests` requests from `--concurrency` tasks, each with a clone of the
//! stack. Every answer is checked (`Val` is `"server: hello, " + Val`). It prints the
//! throughput, how many attempts were retried, the pool's status, and exits with a failure
//! status if any request failed.
#![forbid(unsafe_code)]

#[path = "support/cli.rs"]
mod cli;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli::{Flag, Spec};
use pool::Pool;
use tower::retry::Policy;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use transport_json::server::{Server, ServerConfig};
use transport_json::{ConnectOptions, JsonManager, Message, PoolService, Resp, ServiceError};

static SPEC: Spec = Spec {
    name: "tower",
    about: "Echo server + pool as a tower Service (concurrency limit, retry, timeout) + traffic.",
    flags: &[
        Flag {
            name: "requests",
            value: Some("N"),
            default: "20000",
            help: "requests to send in all",
        },
        Flag {
            name: "concurrency",
            value: Some("C"),
            default: "64",
            help: "tasks sending at once, each with a clone of the service",
        },
        Flag {
            name: "limit",
            value: Some("L"),
            default: "64",
            help: "calls in flight at once over all tasks (tower's concurrency_limit)",
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
            default: "16",
            help: "leases (requests in flight) one connection carries at once",
        },
        Flag {
            name: "timeout",
            value: Some("SECS"),
            default: "1",
            help: "time for one attempt (tower's timeout)",
        },
        Flag {
            name: "retries",
            value: Some("R"),
            default: "2",
            help: "attempts after the first, on a timeout or a closed connection",
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
    let limit = args.positive("limit");
    let pool_size = args.positive("pool-size");
    let max_streams = args.positive("max-streams");
    let timeout = args.seconds("timeout");
    let retries: usize = args.parsed("retries");

    let server = match Server::bind("127.0.0.1:0", ServerConfig::default()).await {
        Ok(server) => server.spawn(),
        Err(error) => return cli::fail("tower: cannot start the echo server", &error),
    };
    let addr = server.local_addr();
    // No request timeout of the connection's own: tower's timeout layer bounds each attempt.
    let options = ConnectOptions::new(addr.to_string())
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(None);
    let pool = match Pool::builder(JsonManager::new(options))
        .max_size(pool_size)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(pool) => pool,
        Err(error) => return cli::fail("tower: invalid pool settings", &error),
    };

    let retried = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .concurrency_limit(limit)
        .retry(RetryTransient {
            left: retries,
            retried: Arc::clone(&retried),
        })
        .timeout(timeout)
        .service(PoolService::new(pool.clone()));

    println!(
        "tower: echo server on {addr}; pool of up to {pool_size} connections, {max_streams} \
         streams each; limit {limit}, timeout {timeout:?}, {retries} retries; {requests} \
         requests from {concurrency} tasks"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(run_task(service.clone(), Arc::clone(&next), requests)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(error) => return cli::fail("tower: a task panicked", &error),
        }
    }
    let elapsed = started.elapsed();

    let status = pool.status();
    let rate = total.ok as f64 / elapsed.as_secs_f64();
    println!(
        "tower: {} ok, {} failed in {elapsed:.2?} ({rate:.0} req/s); {} attempts retried",
        total.ok,
        total.failed,
        retried.load(Ordering::Relaxed)
    );
    println!(
        "pool: {} connections ({} created), {} leases now, {} broken, {} timeouts, \
         {} waits in line",
        status.size,
        status.counters.created,
        status.leases,
        status.counters.broken,
        status.counters.timeouts,
        status.counters.waited
    );
    for (n, error) in total.errors.iter().enumerate() {
        eprintln!("  error {}: {error}", n + 1);
    }

    drop(service);
    pool.close().await;
    if let Err(error) = server.shutdown().await {
        return cli::fail("tower: the server did not stop cleanly", &error);
    }
    if total.failed == 0 && total.ok == requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Retries a request (up to `left` more times) whose attempt timed out or whose connection
/// closed under it. The echo is safe to repeat; a request that is not must not be retried
/// after a timeout, since the server may have handled it.
#[derive(Clone)]
struct RetryTransient {
    left: usize,
    /// Attempts retried, over every clone of the policy.
    retried: Arc<AtomicUsize>,
}

impl Policy<Message, Resp, BoxError> for RetryTransient {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Message,
        result: &mut Result<Resp, BoxError>,
    ) -> Option<Self::Future> {
        let Err(error) = result else {
            return None;
        };
        let timed_out = error.is::<tower::timeout::error::Elapsed>();
        let closed = error
            .downcast_ref::<ServiceError>()
            .is_some_and(ServiceError::is_retryable);
        if self.left == 0 || !(timed_out || closed) {
            return None;
        }
        self.left -= 1;
        self.retried.fetch_add(1, Ordering::Relaxed);
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Message) -> Option<Message> {
        Some(req.clone())
    }
}

/// What the tasks saw: answers verified and failures.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    /// The first few failures, with their whole error chain.
    errors: Vec<String>,
}

impl Tally {
    fn fail(&mut self, n: usize, error: String) {
        self.failed += 1;
        if self.errors.len() < SHOWN_ERRORS {
            self.errors.push(format!("request {n}: {error}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        let room = SHOWN_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
    }
}

/// One of the `--concurrency` tasks: takes request numbers off the shared counter until all
/// are taken, and sends each through its clone of the service.
async fn run_task<S>(mut service: S, next: Arc<AtomicUsize>, requests: usize) -> Tally
where
    S: Service<Message, Response = Resp, Error = BoxError>,
{
    let mut tally = Tally::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= requests {
            return tally;
        }
        let val = format!("request {n}");
        let expected = format!("server: hello, {val}");
        let message = Message {
            uid: String::new(),
            val,
        };
        // `ready` waits for room (a lease reserved by the pool, a permit of the limit);
        // `call` then sends at once.
        let result = match service.ready().await {
            Ok(ready) => ready.call(message).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(resp) if resp.val == expected => tally.ok += 1,
            Ok(resp) => tally.fail(n, format!("unexpected answer {:?}", resp.val)),
            Err(error) => tally.fail(n, cli::chain(&*error)),
        }
    }
}
